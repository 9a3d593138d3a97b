"""aten rules for dtype changes, identities and tensor creation (full, arange, tril / triu)."""

from __future__ import annotations

from ...ir import DType
from ..decompositions import triangle
from .context import full, full_like_type, rule

__all__: list[str] = []


# ----- dtype and identity ------------------------------------------------------------

@rule("_to_copy", "to", "type_as", "_to_dtype", "clone", "contiguous", "alias", "detach", "lift_fresh_copy",
      "lift_fresh", "_conj", "conj", "resolve_conj", "resolve_neg", "positive", "dropout", "feature_dropout",
      "alpha_dropout", "view_as", "_unsafe_view_as")
def _identity(ctx, a):
    if ctx.name.endswith("dropout") and a.get("train") and a.get("p", 0) > 0:
        raise ctx.unsupported("dropout in training mode is random; call model.eval() before capture")
    x = ctx.value(a["self"] if "self" in a else a["input"])
    x = ctx.cast(x, ctx.out_dtype)
    if ctx.name == "view_as":
        return ctx.b.op("reshape", x, shape=ctx.out_shape)
    return x


@rule("copy")
def _copy(ctx, a):
    """``self``'s shape and dtype holding ``src`` (broadcast); ``copy_`` is its in-place variant."""
    src = ctx.cast(ctx.value(a["src"]), ctx.out_dtype)
    shape = ctx.out_shape
    return src if src.shape == shape else ctx.b.op("broadcast_to", src, shape=shape)


@rule("native_dropout")
def _native_dropout(ctx, a):
    if a.get("train") and a["p"] > 0:
        raise ctx.unsupported("dropout in training mode is random; call model.eval() before capture")
    x = ctx.value(a["input"])
    return x, full_like_type(ctx, 1, ctx.out_types()[1])


# ----- creation ----------------------------------------------------------------------

@rule("full", "zeros", "ones", "empty", "full_like", "zeros_like", "ones_like", "empty_like", "new_full",
      "new_zeros", "new_ones", "new_empty", "scalar_tensor", "fill", "empty_strided", "new_empty_strided")
def _creation(ctx, a):
    name = ctx.name
    if name in ("full", "full_like", "new_full"):
        value = a["fill_value"]
    elif name == "scalar_tensor":
        value = a["s"]
    elif name == "fill":
        value = a["value"]
    elif "ones" in name:
        value = 1
    else:
        value = 0
    return full(ctx, value)


@rule("arange")
def _arange(ctx, a):
    start = ctx.scalar_of(a.get("start", 0))
    step = ctx.scalar_of(a.get("step", 1))
    n = ctx.out_shape[0]
    dt = ctx.out_dtype
    idx = ctx.b.op("iota", shape=(n,), dtype=DType.i64 if not dt.is_float else dt)
    idx = ctx.cast(idx, dt)
    if step != 1:
        idx = ctx.b.op("mul", idx, ctx.operand(step, dt))
    if start != 0:
        idx = ctx.b.op("add", idx, ctx.operand(start, dt))
    return idx


@rule("eye")
def _eye(ctx, a):
    """torch.eye(n[, m]): true where the row index equals the column index, in torch's dtype."""
    n, m = ctx.out_shape
    rows = ctx.b.op("iota", shape=(n, 1), axis=0, dtype=DType.i64)
    cols = ctx.b.op("iota", shape=(1, m), axis=1, dtype=DType.i64)
    return ctx.cast(ctx.b.op("eq", rows, cols), ctx.out_dtype)


@rule("tril", "triu")
def _tri(ctx, a):
    x = ctx.value(a["self"])
    return triangle(ctx.b, x, int(a["diagonal"]), upper=ctx.name == "triu")
