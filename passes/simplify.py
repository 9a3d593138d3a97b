"""Algebraic simplification, one pattern rule per identity:

- ``mul(x, 1) -> x``, ``div(x, 1) -> x``, ``add(x, 0) -> x``, ``sub(x, 0) -> x``
  (only when the result has x's type, i.e. the constant does not broadcast x;
  ``x + 0`` turns ``-0.0`` into ``+0.0``, which compares equal, as XLA also accepts)
- ``sub(x, x) -> 0`` for integer x (for floats ``inf - inf`` is NaN, so it stays)
- ``neg(neg(x)) -> x``, ``not(not(x)) -> x``
- ``cast(x) -> x`` to x's own dtype; ``cast(cast(x, wide), x.dtype) -> x`` when the
  middle dtype holds every value of x's dtype exactly
- ``transpose(transpose(x, p), q) -> transpose(x, p∘q)`` (or x when it is the identity)
- a chain of two ``reshape`` / ``squeeze`` / ``unsqueeze`` -> one ``reshape`` (or x)
- an op that is the identity on its operand -> the operand: ``reshape`` /
  ``broadcast_to`` to the same shape, ``transpose`` by the identity, ``squeeze`` /
  ``unsqueeze`` / ``reverse`` of no axes, a ``slice`` that takes everything, a ``pad``
  of zeros, a ``concat`` of one operand
- ``where(c, a, b)`` with a constant all-true / all-false ``c`` -> ``a`` / ``b``
  (broadcast to the result shape when needed)
- ``attention(q, k, v, mask)`` with a constant mask that keeps every key (all true, or an
  additive mask of zeros) -> ``attention(q, k, v)``: the mask broadcasts into the result's
  shape, never beyond it, so the result is the same without it.  Models that build their
  mask from the sequence length alone (transformers' ViT) fold it into such a constant, and
  the fused kernels would otherwise add it to every head's scores
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from accelir.ir import Builder, DType, Node, Value

from .pattern import Const, Match, Op, P, Rule, RulePass, Var
from .registry import register_pass

__all__ = ["RULES", "simplify"]

X = Var("x")


def _x_if_same_type(m: Match, b: Builder) -> Value | None:
    return m["x"] if m["x"].type == m.root.output.type else None


def _zeros_like(m: Match, b: Builder) -> Value | None:
    x = m["x"]
    if not x.dtype.is_int:
        return None
    zero = b.scalar(0, x)
    return zero if x.rank == 0 else b.op("broadcast_to", zero, shape=x.shape)


# dtype -> the dtypes that represent every one of its values exactly
_EXACT_WIDENINGS: dict[DType, frozenset[DType]] = {
    DType.bool: frozenset(DType) - {DType.bool},
    DType.u8: frozenset({DType.u16, DType.u32, DType.u64, DType.i16, DType.i32, DType.i64, DType.f16, DType.bf16,
                         DType.f32, DType.f64}),
    DType.i8: frozenset({DType.i16, DType.i32, DType.i64, DType.f16, DType.bf16, DType.f32, DType.f64}),
    DType.i16: frozenset({DType.i32, DType.i64, DType.f32, DType.f64}),
    DType.u16: frozenset({DType.u32, DType.u64, DType.i32, DType.i64, DType.f32, DType.f64}),
    DType.u32: frozenset({DType.u64, DType.i64, DType.f64}),
    DType.i32: frozenset({DType.i64, DType.f64}),
    DType.f16: frozenset({DType.f32, DType.f64}),
    DType.bf16: frozenset({DType.f32, DType.f64}),
    DType.f32: frozenset({DType.f64}),
}


def _cast_round_trip(m: Match, b: Builder) -> Value | None:
    x, mid = m["x"], m.node("mid").attrs["dtype"]
    if m.root.output.type != x.type or mid not in _EXACT_WIDENINGS.get(x.dtype, ()):
        return None
    return x


def _compose_transposes(m: Match, b: Builder) -> Value | None:
    p = m.node("inner").attrs["perm"]
    q = m.root.attrs["perm"]
    perm = tuple(p[i] for i in q)
    if perm == tuple(range(len(perm))):
        return m["x"]
    return b.op("transpose", m["x"], perm=perm)


def _merge_views(m: Match, b: Builder) -> Value | None:
    x, out = m["x"], m.root.output
    if x.type == out.type:
        return x
    return b.op("reshape", x, shape=out.shape)


def _where_const(m: Match, b: Builder) -> Value | None:
    c = m.const("c")
    if c.all():
        pick = m.root.inputs[1]
    elif not c.any():
        pick = m.root.inputs[2]
    else:
        return None
    out = m.root.output
    return pick if pick.type == out.type else b.op("broadcast_to", pick, shape=out.shape)


def _keeps_every_key(mask: np.ndarray) -> bool:
    """Whether an attention mask drops nothing: a bool mask all true, an additive one all zeros."""
    return bool(mask.all()) if mask.dtype == np.bool_ else not mask.any()


def _attention_without_mask(m: Match, b: Builder) -> Value | None:
    q, k, v = m.root.inputs[:3]
    return b.op("attention", q, k, v, **m.root.attrs)


def _identity(node: Node) -> bool:
    """Whether ``node`` returns its first operand unchanged."""
    a = node.attrs
    x = node.inputs[0]
    if node.outputs[0].type != x.type:
        return False
    checks: dict[str, Callable[[], bool]] = {
        "reshape": lambda: True,
        "broadcast_to": lambda: True,
        "squeeze": lambda: True,
        "unsqueeze": lambda: True,
        "transpose": lambda: a["perm"] == tuple(range(x.rank)),
        "reverse": lambda: all(x.shape[ax] == 1 for ax in a["axes"]),
        "slice": lambda: all(s == 0 for s in a["starts"]) and all(s == 1 for s in a["steps"]),
        "pad": lambda: all(lo == 0 and hi == 0 for lo, hi in a["pads"]),
        "concat": lambda: len(node.inputs) == 1,
        "cast": lambda: True,
    }
    return checks[node.op]()


IDENTITY_OPS = ("reshape", "broadcast_to", "squeeze", "unsqueeze", "transpose", "reverse", "slice", "pad",
                "concat", "cast")
VIEW_OPS = ("reshape", "squeeze", "unsqueeze")

RULES: tuple[Rule, ...] = (
    Rule("mul_one", P.mul(X, Const(1)), _x_if_same_type),
    Rule("div_one", P.div(X, Const(1)), _x_if_same_type),
    Rule("add_zero", P.add(X, Const(0)), _x_if_same_type),
    Rule("sub_zero", P.sub(X, Const(0)), _x_if_same_type),
    Rule("sub_self", P.sub(X, X), _zeros_like),
    Rule("neg_neg", P.neg(P.neg(X)), lambda m, b: m["x"]),
    Rule("not_not", Op("not", Op("not", X)), lambda m, b: m["x"]),
    Rule("identity", Op(IDENTITY_OPS, X, where=_identity), lambda m, b: m["x"]),
    Rule("cast_round_trip", P.cast(P.cast(X, name="mid")), _cast_round_trip),
    Rule("transpose_transpose", P.transpose(P.transpose(X, name="inner")), _compose_transposes),
    Rule("view_view", Op(VIEW_OPS, Op(VIEW_OPS, X)), _merge_views),
    Rule("where_const", P.where(Const(name="c"), Var(), Var()), _where_const),
    Rule("attention_keep_all_mask", P.attention(Var(), Var(), Var(), Const(name="mask", where=_keeps_every_key)),
         _attention_without_mask),
)

simplify = register_pass("simplify")(RulePass("simplify", RULES))
