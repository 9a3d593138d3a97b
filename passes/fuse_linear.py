"""Fuse matmul + bias + activation into the ``linear`` composite.

Rewrites::

    add(matmul(x, w), b)                      -> linear(x, w, b)            (w [K, N], b along N only)
    add(dot_general(x, w), b)                 -> linear(x, w, b)            (contracting x's last dim, w's first)
    act(linear(x, w, b))                      -> linear(x, w, b) {activation=act}
    act(matmul(x, w))                         -> linear(x, w) {activation=act}
    reshape(linear(reshape(x, [M, K]), ..), [*lead, N]) -> linear(reshape(x, [*lead, K]), ..)   (torch addmm)

The last keeps the batch dims through the linear (prod(lead) = M), so an activation
or norm after it sees the same shape as before; the inner reshape disappears when x
already is ``[*lead, K]``.  ``act`` is relu, gelu (erf or tanh), silu, sigmoid or tanh; run after ``fuse_gelu``
and ``fuse_silu`` so their decomposed forms are already composites.
"""

from __future__ import annotations

from accelir.dims import dim_prod
from accelir.ir import Builder, Node, Value

from .pattern import P, Match, Op, Rule, RulePass, Var
from .recognizers import ACTIVATION_OF, as_param, param_shape_ok
from .registry import register_pass

__all__ = ["fuse_linear", "LINEAR_RULES"]


def _matmul_operands(node: Node) -> tuple[Value, Value] | str:
    """(x, w) of a matmul / dot_general that computes ``x @ w`` with a 2-D ``w``; else why not."""
    x, w = node.inputs
    if w.rank != 2:
        return f"the weight has rank {w.rank}, not 2"
    if node.op == "dot_general":
        a = node.attrs
        if a["lhs_batch"] or a["rhs_batch"]:
            return "the dot_general has batch dims"
        if a["lhs_contracting"] != (x.rank - 1,) or a["rhs_contracting"] != (0,):
            return "the dot_general does not contract x's last dim with w's first"
    elif x.rank < 1:
        return "x is a scalar"
    return x, w


def _bias(m: Match, b: Builder) -> Value | None:
    mm = m.node("mm")
    got = _matmul_operands(mm)
    if isinstance(got, str):
        return m.reject(f"linear: {got}")
    x, w = got
    y = m.root.output
    bias = m["bias"]
    if y.type != mm.output.type or not param_shape_ok(bias, y, (y.rank - 1,)):
        return m.reject(f"linear: the bias {bias.type} does not vary along the output features only")
    return b.op("linear", x, w, as_param(b, bias, 1))


def _activation(m: Match, b: Builder) -> Value | None:
    act = ACTIVATION_OF.get((m.root.op, tuple(sorted(m.root.attrs.items()))))
    if act is None:
        return None
    mm = m.node("mm")
    if mm.op == "linear":
        if mm.attrs["activation"] != "none":
            return None
        return b.op("linear", *mm.inputs, activation=act)
    got = _matmul_operands(mm)
    if isinstance(got, str):
        return m.reject(f"linear: {got}")
    return b.op("linear", *got, activation=act)


def _flatten(m: Match, b: Builder) -> Value | None:
    lin = m.node("lin")
    flat = lin.inputs[0]
    if flat.producer is None or flat.producer.op != "reshape" or flat.rank != 2:
        return None
    src = flat.producer.inputs[0]
    y = m.root.output
    lead = tuple(y.shape[:-1])
    if y.rank < 2 or dim_prod(lead) != flat.shape[0]:
        return None
    x = src if tuple(src.shape) == lead + (flat.shape[1],) else b.op("reshape", src, shape=lead + (flat.shape[1],))
    return b.op("linear", x, *lin.inputs[1:], activation=lin.attrs["activation"])


_MATMUL = Op(("matmul", "dot_general"), any_operands=True, name="mm", single_use=True)
_ACTIVATIONS = tuple(sorted({op for op, _ in ACTIVATION_OF}))

LINEAR_RULES = (
    Rule("linear_bias", P.add(_MATMUL, Var("bias")), _bias),
    Rule("linear_activation", Op(_ACTIVATIONS, Op(("linear", "matmul", "dot_general"), any_operands=True, name="mm",
                                                  single_use=True)), _activation),
    Rule("linear_flatten", P.reshape(Op("linear", any_operands=True, name="lin", single_use=True)), _flatten),
)

fuse_linear = register_pass("fuse_linear")(RulePass("fuse_linear", LINEAR_RULES))
