"""JAX call and control-flow rules: calls are inlined; cond, while and scan become region nodes."""

from __future__ import annotations

from typing import Any, Sequence

from ...ir import Graph, TensorType, Value
from .context import RULES, EqnContext, open_jaxpr, rule, to_dim

__all__: list[str] = []


# ----- calls and control flow --------------------------------------------------------

def _call(param: str):
    def rule(cx: EqnContext, *args: Value, **params: Any) -> list[Value]:
        jaxpr, consts = open_jaxpr(params[param])
        return cx.inline(jaxpr, consts, args)
    return rule


for _name, _param in (("jit", "jaxpr"), ("pjit", "jaxpr"), ("closed_call", "call_jaxpr"), ("core_call", "call_jaxpr"),
                      ("remat2", "jaxpr"), ("checkpoint", "jaxpr"), ("custom_jvp_call", "call_jaxpr"),
                      ("custom_vjp_call", "call_jaxpr"), ("custom_vjp_call_jaxpr", "fun_jaxpr")):
    RULES.add(_call(_param), _name)


def _split_closure(values: Sequence[Value]) -> tuple[list[Value], list[Value]]:
    """(leading constant values, the rest) - constants are copied into regions, not threaded through."""
    k = 0
    while k < len(values) and values[k].const_value is not None:
        k += 1
    return list(values[:k]), list(values[k:])


def _types(values: Sequence[Value]) -> list[TensorType]:
    return [v.type for v in values]


@rule("cond")
def _cond(cx, index, *operands, branches, **p):
    regions = [cx.region(br, _types(operands), f"branch{k}") for k, br in enumerate(branches)]
    return list(cx.b.node("cond", [index, *operands], regions=regions).outputs)


@rule("while")
def _while(cx, *args, cond_jaxpr, body_jaxpr, cond_nconsts, body_nconsts, **p):
    cconsts, bconsts, init = args[:cond_nconsts], args[cond_nconsts:cond_nconsts + body_nconsts], \
        args[cond_nconsts + body_nconsts:]
    cfixed, cdyn = _split_closure(cconsts)
    bfixed, bdyn = _split_closure(bconsts)
    # regions are closed: run-time consts of cond and body travel in the loop state
    state = cdyn + bdyn + list(init)
    nc, nb = len(cdyn), len(bdyn)
    cond = _state_region(cx, cond_jaxpr, cfixed, state, keep=range(0, nc), carry_from=nc + nb, name="cond",
                         passthrough=False)
    body = _state_region(cx, body_jaxpr, bfixed, state, keep=range(nc, nc + nb), carry_from=nc + nb, name="body",
                         passthrough=True)
    outs = cx.b.node("while_loop", state, regions=[cond, body]).outputs
    return list(outs[nc + nb:])


def _state_region(cx: EqnContext, closed: Any, fixed: list[Value], state: list[Value], keep: range, carry_from: int,
                  name: str, passthrough: bool):
    """A while region over the whole state: reads the consts in ``keep`` and the carry; the body
    returns the consts unchanged followed by the new carry."""
    jaxpr, consts = open_jaxpr(closed)
    region = Graph(name)
    sub = cx.conv.child(region)
    ins = [region.add_input(t) for t in _types(state)]
    bound = [sub.constant(v.const_value, name="const") for v in fixed]
    args = bound + [ins[i] for i in keep] + ins[carry_from:]
    outs = sub.run(jaxpr, consts, args, cx.conv.caller)
    region.set_outputs(ins[:carry_from] + outs if passthrough else outs)
    return region


@rule("scan")
def _scan(cx, *args, jaxpr, length, reverse, num_consts, num_carry, **p):
    consts, rest = args[:num_consts], list(args[num_consts:])
    dyn = [v for v in consts if v.const_value is None]
    carry, xs = rest[:num_carry], rest[num_carry:]
    body = _scan_body(cx, jaxpr, consts, _types(carry) + [TensorType(t.dtype, t.shape[1:]) for t in _types(xs)])
    steps = to_dim(length)  # a symbolic length (a scan over a symbolic axis) is the scanned operands' dim
    node = cx.b.node("scan", [*dyn, *carry, *xs], {"num_consts": len(dyn), "num_carry": num_carry,
                                                   "length": steps if isinstance(steps, int) else None,
                                                   "reverse": bool(reverse)},
                     regions=[body])
    return list(node.outputs)


def _scan_body(cx: EqnContext, closed: Any, consts: Sequence[Value], rest: list[TensorType]) -> Graph:
    """A scan's body region: its leading invars read ``consts``, the constant ones (weights, wherever
    they stand among the run-time values) copied in, so that passes and backends see them as weights;
    the others are the region's first inputs, in order, then inputs of the ``rest`` types."""
    jaxpr, jaxpr_consts = open_jaxpr(closed)
    region = Graph("body")
    sub = cx.conv.child(region)
    threaded = iter([region.add_input(v.type) for v in consts if v.const_value is None])
    bound = [next(threaded) if v.const_value is None else sub.constant(v.const_value, name="const") for v in consts]
    region.set_outputs(sub.run(jaxpr, jaxpr_consts, bound + [region.add_input(t) for t in rest], cx.conv.caller))
    return region
