"""Ops with regions: ``fusion`` (a group of elementwise ops kept as one node),
``cond``, ``while_loop`` and ``scan``.

Regions are closed: a region graph sees only its own inputs and constants, as in
MLIR's IsolatedFromAbove, so regions can be printed, verified and interpreted alone.
"""

from __future__ import annotations

from ..types import DType, TensorType
from .registry import AttrSpec, OpDef, TypeRuleError, register

__all__ = ["set_region_runner"]

# The references of these ops run their regions, which is the interpreter's job; the
# interpreter sits above the ops (it reads their references), so it hands its runner down
# when it is imported rather than being imported from here.
_region_runner = None


def set_region_runner(run) -> None:
    """Install ``run(graph, inputs) -> outputs``, which the region ops' references call."""
    global _region_runner
    _region_runner = run


def _run(region, args):
    return _region_runner(region, list(args))


def _types_match(op, what, got, want):
    if len(got) != len(want):
        raise TypeRuleError(f"{op}: {what}: expected {len(want)} values, got {len(got)}")
    for i, (a, b) in enumerate(zip(got, want)):
        if a != b:
            raise TypeRuleError(f"{op}: {what}: value {i} is {a}, expected {b}")


def _fusion_rule(types, attrs, regions):
    if len(regions) != 1:
        raise TypeRuleError("fusion: needs exactly one region")
    body = regions[0]
    _types_match("fusion", "region inputs", [v.type for v in body.inputs], list(types))
    return [v.type for v in body.outputs]


register(OpDef("fusion", _fusion_rule, lambda i, a, r: _run(r[0], i), min_inputs=0, max_inputs=None,
               attrs={"kind": AttrSpec("str", "elementwise")}, has_regions=True,
               doc="a group of ops kept together: outputs = region(inputs)"))


def _cond_rule(types, attrs, regions):
    if not regions:
        raise TypeRuleError("cond: needs at least one branch region")
    idx = types[0]
    if idx.rank != 0 or not (idx.dtype.is_int or idx.dtype is DType.bool):
        raise TypeRuleError(f"cond: the branch index must be an int or bool scalar, got {idx}")
    if idx.dtype is DType.bool and len(regions) != 2:
        raise TypeRuleError("cond: a bool predicate needs exactly two branches (false, true)")
    outs = [v.type for v in regions[0].outputs]
    for k, r in enumerate(regions):
        _types_match("cond", f"branch {k} inputs", [v.type for v in r.inputs], list(types[1:]))
        _types_match("cond", f"branch {k} outputs", [v.type for v in r.outputs], outs)
    return outs


def _cond_ref(inputs, attrs, regions):
    i = int(inputs[0])
    i = min(max(i, 0), len(regions) - 1)  # lax.switch clamps the index
    return _run(regions[i], inputs[1:])


register(OpDef("cond", _cond_rule, _cond_ref, min_inputs=1, max_inputs=None, has_regions=True,
               doc="run branch regions[index] on the operands (index clamped; bool: false, true)"))


def _while_rule(types, attrs, regions):
    if len(regions) != 2:
        raise TypeRuleError("while_loop: needs two regions (cond, body)")
    cond, body = regions
    _types_match("while_loop", "cond inputs", [v.type for v in cond.inputs], list(types))
    if len(cond.outputs) != 1 or cond.outputs[0].type != TensorType(DType.bool, ()):
        raise TypeRuleError("while_loop: cond must return one bool scalar")
    _types_match("while_loop", "body inputs", [v.type for v in body.inputs], list(types))
    _types_match("while_loop", "body outputs", [v.type for v in body.outputs], list(types))
    return list(types)


def _while_ref(inputs, attrs, regions):
    cond, body = regions
    state = list(inputs)
    while bool(_run(cond, state)[0]):
        state = _run(body, state)
    return state


register(OpDef("while_loop", _while_rule, _while_ref, min_inputs=0, max_inputs=None, has_regions=True,
               doc="state = init; while cond(state): state = body(state); returns state"))


def _scan_rule(types, attrs, regions):
    if len(regions) != 1:
        raise TypeRuleError("scan: needs one body region")
    body = regions[0]
    nc, nk, length = attrs["num_consts"], attrs["num_carry"], attrs["length"]
    consts, carry, xs = types[:nc], types[nc:nc + nk], types[nc + nk:]
    if length is None:  # the scanned operands' leading dim, which may be known only at run time
        if not xs or xs[0].rank == 0:
            raise TypeRuleError("scan: without a length it needs a scanned operand to take it from")
        length = xs[0].shape[0]
    for t in xs:
        if t.rank == 0 or t.shape[0] != length:
            raise TypeRuleError(f"scan: scanned operand {t} must have leading dim {length}")
    want_in = list(consts) + list(carry) + [t.with_shape(t.shape[1:]) for t in xs]
    _types_match("scan", "body inputs", [v.type for v in body.inputs], want_in)
    outs = [v.type for v in body.outputs]
    _types_match("scan", "body carry outputs", outs[:nk], list(carry))
    return list(carry) + [t.with_shape((length,) + t.shape) for t in outs[nk:]]


def _scan_ref(inputs, attrs, regions):
    import numpy as np
    nc, nk, length = attrs["num_consts"], attrs["num_carry"], attrs["length"]
    consts, carry, xs = inputs[:nc], list(inputs[nc:nc + nk]), inputs[nc + nk:]
    length = xs[0].shape[0] if length is None else length
    body = regions[0]
    ys: list[list] = [[] for _ in range(len(body.outputs) - nk)]
    steps = range(length - 1, -1, -1) if attrs["reverse"] else range(length)
    for i in steps:
        out = _run(body, list(consts) + carry + [x[i] for x in xs])
        carry = list(out[:nk])
        for k, y in enumerate(out[nk:]):
            ys[k].append(y)
    stacked = []
    for k, v in enumerate(body.outputs[nk:]):
        items = ys[k][::-1] if attrs["reverse"] else ys[k]
        if items:
            stacked.append(np.stack(items))
        else:
            stacked.append(np.zeros((0,) + tuple(v.type.shape), v.type.dtype.numpy))
    return carry + stacked


register(OpDef("scan", _scan_rule, _scan_ref, min_inputs=0, max_inputs=None, has_regions=True,
               attrs={"num_consts": AttrSpec("int", 0), "num_carry": AttrSpec("int", 0), "length": AttrSpec("optional_int", None),
                      "reverse": AttrSpec("bool", False)},
               doc="lax.scan: body(consts, carry, x[i]) -> (carry, y[i]); returns (carry, stacked ys); length None: "
                   "the scanned operands' leading dim (an unbacked one: a loop whose trip count is run-time data)"))
