"""aten indexing rules: embedding, index_select, gather, take_along_dim, advanced indexing."""

from __future__ import annotations

from ...ir import DType
from ...ops.registry import broadcast_shapes
from .context import rule, wrap_axis

__all__: list[str] = []


# ----- indexing ----------------------------------------------------------------------

@rule("embedding")
def _embedding(ctx, a):
    return ctx.b.op("gather", ctx.value(a["weight"]), ctx.value(a["indices"]), axis=0)


@rule("index_select")
def _index_select(ctx, a):
    x = ctx.value(a["self"])
    if x.rank == 0:
        return x
    return ctx.b.op("gather", x, ctx.value(a["index"]), axis=wrap_axis(a["dim"], x.rank))


@rule("gather")
def _gather(ctx, a):
    x = ctx.value(a["self"])
    return ctx.b.op("take_along_axis", x, ctx.value(a["index"]), axis=wrap_axis(a["dim"], x.rank))


@rule("take_along_dim")
def _take_along_dim(ctx, a):
    x, idx = ctx.value(a["self"]), ctx.value(a["indices"])
    if a.get("dim") is None:
        x = ctx.b.op("reshape", x, shape=(x.type.numel,))
        idx = ctx.b.op("reshape", idx, shape=(idx.type.numel,))
        return ctx.b.op("take_along_axis", x, idx, axis=0)
    ax = wrap_axis(a["dim"], x.rank)
    common = list(broadcast_shapes(tuple(1 if i == ax else d for i, d in enumerate(x.shape)),
                                   tuple(1 if i == ax else d for i, d in enumerate(idx.shape))))
    xs, ids = list(common), list(common)
    xs[ax], ids[ax] = x.shape[ax], idx.shape[ax]
    x = ctx.b.op("broadcast_to", x, shape=tuple(xs)) if tuple(xs) != x.shape else x
    idx = ctx.b.op("broadcast_to", idx, shape=tuple(ids)) if tuple(ids) != idx.shape else idx
    return ctx.b.op("take_along_axis", x, idx, axis=ax)


@rule("index")
def _index(ctx, a):
    """x[i0, i1, ...] with index tensors (None keeps a dim): gather for one index, else
    gather_nd over the indexed dims moved to the front."""
    x = ctx.value(a["self"])
    indices = list(a["indices"])
    pos = [i for i, t in enumerate(indices) if t is not None]
    vals = [ctx.value(indices[i]) for i in pos]
    if any(v.dtype is DType.bool for v in vals):
        raise ctx.unsupported("boolean mask indexing has a data-dependent shape; use torch.where instead")
    if len(pos) == 1:
        return ctx.b.op("gather", x, vals[0], axis=pos[0])
    bshape = broadcast_shapes(*(v.shape for v in vals))
    vals = [ctx.cast(v if v.shape == bshape else ctx.b.op("broadcast_to", v, shape=bshape), DType.i64)
            for v in vals]
    stacked = ctx.b.op("concat", *[ctx.b.op("unsqueeze", v, axes=(len(bshape),)) for v in vals],
                       axis=len(bshape))
    rest = [i for i in range(x.rank) if i not in pos]
    perm = tuple(pos + rest)
    xt = x if perm == tuple(range(x.rank)) else ctx.b.op("transpose", x, perm=perm)
    y = ctx.b.op("gather_nd", xt, stacked)
    contiguous = pos == list(range(pos[0], pos[-1] + 1))
    if contiguous and pos[0] > 0:
        nb, lead = len(bshape), pos[0]
        perm = tuple(range(nb, nb + lead)) + tuple(range(nb)) + tuple(range(nb + lead, y.rank))
        y = ctx.b.op("transpose", y, perm=perm)
    return y
