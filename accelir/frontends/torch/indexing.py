"""aten indexing rules: embedding, index_select, gather, take_along_dim, advanced indexing, index_put."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ... import dims as D
from ...ir import DType, Value
from ...ops.registry import broadcast_shapes
from .context import NodeContext, rule, wrap_axis

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
        if len(pos) != 1:
            raise ctx.unsupported("a boolean mask mixed with other indices is not supported; index with the "
                                  "mask alone, or use torch.where")
        return _select_by_mask(ctx, x, vals[0], pos[0])
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


def _select_by_mask(ctx: NodeContext, x: Value, mask: Value, at: int) -> Value:
    """x[..., mask] with the mask over dims at, at+1, ...: those dims flattened into one, compressed by
    the flattened mask. The result's size there is data-dependent (an unbacked dim)."""
    k = mask.rank
    shape = x.shape[:at] + (D.dim_prod(x.shape[at:at + k]),) + x.shape[at + k:]
    flat_x = x if k == 1 else ctx.b.op("reshape", x, shape=shape)
    flat_mask = mask if k == 1 else ctx.b.op("reshape", mask, shape=(D.dim_prod(mask.shape),))
    return ctx.name_unbacked(ctx.b.op("compress", flat_x, flat_mask, axis=at))


@rule("masked_select")
def _masked_select(ctx, a):
    """The entries of x where the mask holds, both broadcast together, in row-major order."""
    x, mask = ctx.value(a["self"]), ctx.value(a["mask"])
    common = tuple(broadcast_shapes(x.shape, mask.shape))
    x = x if x.shape == common else ctx.b.op("broadcast_to", x, shape=common)
    mask = mask if mask.shape == common else ctx.b.op("broadcast_to", mask, shape=common)
    n = (D.dim_prod(common),)
    flat_x = x if x.shape == n else ctx.b.op("reshape", x, shape=n)
    flat_mask = mask if mask.shape == n else ctx.b.op("reshape", mask, shape=n)
    return ctx.name_unbacked(ctx.b.op("compress", flat_x, flat_mask, axis=0))


def _nonzero_rows(ctx: NodeContext, x: Value) -> Value:
    """The IR's nonzero (one row per dim, one column per hit); a 0-d x as its one entry."""
    return ctx.b.op("nonzero", x if x.rank else ctx.b.op("reshape", x, shape=(1,)))


@rule("nonzero")
def _nonzero(ctx, a):
    """torch's nonzero is ONNX's transposed: one row per nonzero entry (with no columns for a 0-d x)."""
    x = ctx.value(a["self"])
    hits = ctx.b.op("transpose", _nonzero_rows(ctx, x), perm=(1, 0))
    if x.rank == 0:
        hits = ctx.b.op("slice", hits, starts=(0,), stops=(0,), steps=(1,), axes=(1,))
    return ctx.name_unbacked(hits)


@rule("nonzero_numpy")
def _nonzero_numpy(ctx, a):
    """nonzero(as_tuple=True): one index tensor per dim (one for a 0-d x)."""
    rows = _nonzero_rows(ctx, ctx.value(a["self"]))
    outs = tuple(ctx.b.op("squeeze", ctx.b.op("slice", rows, starts=(i,), stops=(i + 1,), steps=(1,), axes=(0,)),
                          axes=(0,)) for i in range(rows.shape[0]))
    ctx.name_unbacked(outs[0], ctx.val[0])
    return outs


@rule("_unique2")
def _unique2(ctx, a):
    """torch.unique without dim: the sorted distinct values, the inverse map in x's shape and the
    counts; an output not asked for is empty, as torch returns it."""
    if not a.get("sorted", True):
        raise ctx.unsupported("unique(sorted=False) returns torch's own order; use sorted=True")
    x = ctx.value(a["self"])
    y, _, inverse, counts = ctx.b.ops("unique", x, axis=None, sorted=True)
    ctx.name_unbacked(y, ctx.val[0])
    empty = ctx.const(np.zeros(0, np.int64), DType.i64)
    inverse = ctx.b.op("reshape", inverse, shape=x.shape) if a.get("return_inverse", False) else empty
    return y, inverse, counts if a.get("return_counts", False) else empty


@rule("index_put")
def _index_put(ctx, a):
    """x[..., i0, i1, ...] = values (+= with accumulate), as torch.export leaves ``y[idx] = v``:
    scatter_nd over the indexed dims moved to the front, or a where for a boolean mask."""
    x = ctx.value(a["self"])
    indices = list(a["indices"]) + [None] * (x.rank - len(a["indices"]))
    pos = [d for d, i in enumerate(indices) if i is not None]
    vals = [ctx.value(indices[d]) for d in pos]
    values = ctx.cast(ctx.value(a["values"]), x.dtype)
    if any(v.dtype is DType.bool for v in vals):
        if pos != [0]:
            raise ctx.unsupported("index_put with a boolean mask after a skipped (':') dim is not supported; "
                                  "use torch.where(mask, v, y)")
        return _masked_put(ctx, x, vals, values, bool(a["accumulate"]))
    bshape = tuple(broadcast_shapes(*(v.shape for v in vals)))
    cols = []
    for d, v in zip(pos, vals):
        v = ctx.cast(v if v.shape == bshape else ctx.b.op("broadcast_to", v, shape=bshape), DType.i64)
        if type(x.shape[d]) is int:  # torch takes negative indices from the end
            neg = ctx.b.op("lt", v, ctx.const(0, DType.i64))
            v = ctx.b.op("where", neg, ctx.b.op("add", v, ctx.const(x.shape[d], DType.i64)), v)
        cols.append(ctx.b.op("unsqueeze", v, axes=(len(bshape),)))
    stacked = cols[0] if len(cols) == 1 else ctx.b.op("concat", *cols, axis=len(bshape))
    rest = [d for d in range(x.rank) if d not in pos]
    perm = tuple(pos + rest)
    xt = x if perm == tuple(range(x.rank)) else ctx.b.op("transpose", x, perm=perm)
    # torch's values are shaped as x[..., i0, i1, ...] reads: the index dims stay in place when the
    # indexed dims are adjacent, else they lead; scatter_nd wants them leading
    lead = pos[0] if pos == list(range(pos[0], pos[-1] + 1)) else 0
    read = tuple(x.shape[d] for d in rest[:lead]) + bshape + tuple(x.shape[d] for d in rest[lead:])
    if values.shape != read:
        values = ctx.b.op("broadcast_to", values, shape=read)
    if lead:
        nb = len(bshape)
        values = ctx.b.op("transpose", values, perm=tuple(range(lead, lead + nb)) + tuple(range(lead))
                          + tuple(range(lead + nb, values.rank)))
    y = ctx.b.op("scatter_nd", xt, stacked, values, reduction="add" if a["accumulate"] else "none")
    if xt is x:
        return y
    inverse = tuple(perm.index(d) for d in range(x.rank))
    return ctx.b.op("transpose", y, perm=inverse)


def _masked_put(ctx: NodeContext, x: Value, masks: list[Value], values: Value, accumulate: bool) -> Value:
    """x[mask] = values where the values do not depend on how many elements the mask selects
    (one value, or one per trailing position): a where over the mask."""
    mask = masks[0]
    rest = x.rank - mask.rank
    if values.rank == rest + 1 and values.shape[0] == 1:
        values = ctx.b.op("squeeze", values, axes=(0,))
    if len(masks) != 1 or values.rank > rest:
        raise ctx.unsupported("index_put with a boolean mask takes one mask and values that broadcast to the "
                              "dims after it (y[mask] = v); use torch.where(mask, v, y)")
    if rest:
        mask = ctx.b.op("reshape", mask, shape=mask.shape + (1,) * rest)
    if accumulate:
        values = ctx.b.op("add", x, values)
    return ctx.b.op("where", mask, values, x)


# ----- scatter family: scatter, scatter_add, scatter_reduce, index_add, index_copy --------------

_SCATTER_REDUCE = {"sum": "add", "add": "add", "prod": "mul", "multiply": "mul", "amax": "max", "amin": "min"}


def _scatter_src(ctx: NodeContext, x: Value, idx: Value, src: Any) -> Value:
    """torch's src as ONNX ScatterElements needs it: the index's shape (torch reads only that corner
    of a larger src), a scalar value broadcast to it."""
    if not ctx.is_tensor(src):
        return ctx.b.op("broadcast_to", ctx.const(src, x.dtype), shape=idx.shape)
    v = ctx.cast(ctx.value(src), x.dtype)
    if v.shape != idx.shape:
        v = ctx.b.op("slice", v, starts=(0,) * v.rank, stops=tuple(idx.shape), axes=tuple(range(v.rank)))
    return v


def _neutral(reduction: str, dt: DType) -> Any:
    """The element a reduction starts from: include_self=False writes it where an index lands."""
    if reduction in ("add", "mul"):
        return 0 if reduction == "add" else 1
    if dt is DType.bool:
        return reduction == "min"
    if dt.is_float:
        return -math.inf if reduction == "max" else math.inf
    info = np.iinfo(dt.numpy)
    return int(info.min if reduction == "max" else info.max)


def _scatter_reduced(ctx: NodeContext, x: Value, ax: int, idx: Value, src: Value, reduce: str,
                     include_self: bool) -> Value:
    if reduce == "mean":
        if not x.dtype.is_float:
            raise ctx.unsupported(f"scatter_reduce 'mean' of {x.dtype} (torch divides with floor); cast to float")
        ones = ctx.b.op("broadcast_to", ctx.const(1, x.dtype), shape=idx.shape)
        zeros = ctx.b.op("broadcast_to", ctx.const(0, x.dtype), shape=x.shape)
        count = ctx.b.op("scatter_elements", zeros, idx, ones, axis=ax, reduction="add")
        total = _scatter_reduced(ctx, x, ax, idx, src, "sum", include_self)
        if include_self:
            count = ctx.b.op("add", count, ctx.const(1, x.dtype))
        else:
            count = ctx.b.op("where", ctx.b.op("eq", count, ctx.const(0, x.dtype)), ctx.const(1, x.dtype), count)
        return ctx.b.op("div", total, count)
    reduction = _SCATTER_REDUCE[reduce]
    if not include_self:
        fill = ctx.b.op("broadcast_to", ctx.const(_neutral(reduction, x.dtype), x.dtype), shape=idx.shape)
        x = ctx.b.op("scatter_elements", x, idx, fill, axis=ax, reduction="none")
    return ctx.b.op("scatter_elements", x, idx, src, axis=ax, reduction=reduction)


@rule("scatter", "scatter_add", "scatter_reduce")
def _scatter(ctx, a):
    x0 = ctx.value(a["self"])
    x, ax = _as_1d(ctx, x0), wrap_axis(a["dim"], max(x0.rank, 1))
    idx = _as_1d(ctx, ctx.cast(ctx.value(a["index"]), DType.i64))
    src = _scatter_src(ctx, x, idx, a["src"] if "src" in a else a["value"])
    reduce = "sum" if ctx.name == "scatter_add" else a.get("reduce")
    if reduce is None:
        y = ctx.b.op("scatter_elements", x, idx, src, axis=ax, reduction="none")
    elif reduce not in _SCATTER_REDUCE and reduce != "mean":
        raise ctx.unsupported(f"scatter reduce={reduce!r}")
    else:
        y = _scatter_reduced(ctx, x, ax, idx, src, reduce, bool(a.get("include_self", True)))
    return y if x0.rank else ctx.b.op("reshape", y, shape=())


def _as_1d(ctx: NodeContext, v: Value) -> Value:
    """A 0-d operand as one element (torch scatters into and from 0-d tensors as if 1-d)."""
    return ctx.b.op("reshape", v, shape=(1,)) if v.rank == 0 else v


@rule("index_add", "index_copy", "index_reduce")
def _index_add(ctx, a):
    """x.index_add(dim, index, source): source's slices along dim go to the rows index names, as
    a scatter_elements whose indices are index broadcast along the other dims."""
    x0 = ctx.value(a["self"])
    x, ax = _as_1d(ctx, x0), wrap_axis(a["dim"], max(x0.rank, 1))
    src = _as_1d(ctx, ctx.cast(ctx.value(a["source"]), x.dtype))
    index = ctx.cast(ctx.value(a["index"]), DType.i64)
    n = index.shape[0] if index.rank else 1
    idx = ctx.b.op("reshape", index, shape=tuple(n if d == ax else 1 for d in range(x.rank)))
    idx = ctx.b.op("broadcast_to", idx, shape=src.shape)
    if ctx.name == "index_copy":
        y = ctx.b.op("scatter_elements", x, idx, src, axis=ax, reduction="none")
    elif ctx.name == "index_reduce":
        y = _scatter_reduced(ctx, x, ax, idx, src, a["reduce"], bool(a.get("include_self", True)))
    else:
        alpha = a.get("alpha", 1)
        if alpha != 1:
            src = ctx.b.op("mul", src, ctx.const(alpha, x.dtype))
        y = ctx.b.op("scatter_elements", x, idx, src, axis=ax, reduction="add")
    return y if x0.rank else ctx.b.op("reshape", y, shape=())
