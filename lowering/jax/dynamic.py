"""The data-dependent ops (accelir/ops/dynamic.py) on XLA: padded to an upper bound, or refused.

XLA compiles static shapes; these ops' output sizes come from run-time values.  Where the
input shapes bound the size (``padding.PRODUCERS``: NonZero, Compress, Unique,
NonMaxSuppression, TopK and Slice with run-time operands) the rule computes a buffer of the bound's size and
records the valid length (``ctx.set_length``); the graph's consumers of such a dim run on the
buffer as it is, or through the masked rules below (``register_padded``), and the runner
slices the outputs (lowering/jax/padding.py says which nodes may do what).  The other ops
have no bound: ``check_lowerable`` refuses them before tracing, and their rules here say the
same where a node reaches the lowering by another road.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from accelir.ops.dynamic import DATA_DEPENDENT_OPS
from accelir.unbacked import introduced

from .context import JAX_DTYPES, JAX_RULES, RuleContext, register_lowering, register_padded
from .padding import PRODUCERS, no_bound, unbacked_axes
from .reduce import positive_axes

_I64 = jnp.int64


def _refuse(ctx, *args, **attrs):
    raise no_bound(ctx.node)


for _op in DATA_DEPENDENT_OPS:
    if _op not in PRODUCERS:
        register_lowering(_op)(_refuse)


# ----- masks -------------------------------------------------------------------------

def _valid(ctx: RuleContext, i: int, shape: tuple[int, ...], axes: Any = None) -> Any:
    """Where input ``i`` (held in ``shape``) holds its value rather than padding, along its unbacked
    axes (those in ``axes`` only, when given); None when no such axis is padded."""
    mask = None
    for ax, sym in unbacked_axes(ctx.node.inputs[i].type, ctx.lowering.lengths).items():
        if axes is not None and ax not in axes:
            continue
        m = lax.broadcasted_iota(_I64, shape, ax) < ctx.length(sym)
        mask = m if mask is None else mask & m
    return mask


def _extreme(dtype: Any, high: bool) -> Any:
    """The dtype's highest (or lowest) value: padding that a min (max) passes over."""
    dtype = jnp.dtype(dtype)
    if dtype == jnp.bool_:
        return high
    if jnp.issubdtype(dtype, jnp.floating):
        return np.inf if high else -np.inf
    info = jnp.iinfo(dtype)
    return info.max if high else info.min


def _sort_fill(dtype: Any, descending: bool) -> Any:
    """What padding holds to sort after every value: NaN, not +inf, ascending (a NaN value sorts after
    +inf, and a tie keeps the lower index, the value's)."""
    if jnp.issubdtype(jnp.dtype(dtype), jnp.floating):
        return -np.inf if descending else np.nan
    return _extreme(dtype, not descending)


def _fill(x: Any, mask: Any, value: Any) -> Any:
    return x if mask is None else jnp.where(mask, x, jnp.asarray(value, x.dtype))


def _set_lengths(ctx: RuleContext, *lengths: Any) -> None:
    for sym, n in zip(introduced(ctx.node), lengths):
        ctx.set_length(sym, jnp.asarray(n, _I64).reshape(()))


# ----- producers ---------------------------------------------------------------------

@register_lowering("nonzero")
def _nonzero(ctx, x, **attrs):
    x = _fill(x, _valid(ctx, 0, x.shape), 0)
    found = x != 0
    _set_lengths(ctx, jnp.sum(found, dtype=_I64))
    return jnp.stack(jnp.nonzero(found, size=x.size, fill_value=0)).astype(_I64)


@register_lowering("compress")
def _compress(ctx, x, cond, *, axis, **attrs):
    data, ax = (x.reshape(-1), 0) if axis is None else (x, axis % x.ndim)
    cond = _fill(cond, _valid(ctx, 1, cond.shape), False)
    bound = min(data.shape[ax], cond.shape[0])
    cond = cond[:bound]
    sym = unbacked_axes(ctx.node.inputs[0].type, ctx.lowering.lengths).get(ax) if axis is not None or x.ndim == 1 \
        else None
    if sym is not None:  # x's own length caps the selection (a flattened x is 1-d or static: padding.py)
        cond = cond & (jnp.arange(bound, dtype=_I64) < ctx.length(sym))
    _set_lengths(ctx, jnp.sum(cond, dtype=_I64))
    return jnp.take(data, jnp.nonzero(cond, size=bound, fill_value=0)[0], axis=ax)


@register_lowering("topk_dynamic")
def _topk_dynamic(ctx, x, k, *, axis, largest, **attrs):
    ax = axis % x.ndim
    mask = _valid(ctx, 0, x.shape, {ax})
    values, order = JAX_RULES["sort"](ctx, _fill(x, mask, _sort_fill(x.dtype, largest)), axis=ax,
                                      descending=largest)
    valid = x.shape[ax] if mask is None else ctx.length(ctx.node.inputs[0].shape[ax])
    k = k.reshape(-1)[0].astype(_I64)
    ctx.require((k >= 0) & (k <= valid), "k is negative or larger than the axis it selects from, which "
                "onnxruntime and torch refuse; keep k within the axis length")
    _set_lengths(ctx, jnp.clip(k, 0, valid))
    return [values, order]


def _slice_bounds(s: Any, e: Any, st: Any, n: Any) -> tuple[Any, Any]:
    """ONNX Slice's start and length on a dim of length ``n``: negative starts and ends count from the end,
    then clamp by the step's sign (as ``accelir.ops.dynamic.onnx_slice``); a step of 0 selects nothing."""
    s, e = jnp.where(s < 0, s + n, s), jnp.where(e < 0, e + n, e)
    up = st > 0
    s = jnp.where(up, jnp.clip(s, 0, n), jnp.clip(s, 0, n - 1))
    e = jnp.where(up, jnp.clip(e, 0, n), jnp.clip(e, -1, n - 1))
    span, stride = jnp.where(up, e - s, s - e), jnp.maximum(jnp.abs(st), 1)
    return s, jnp.where(st == 0, 0, jnp.maximum((span + stride - 1) // stride, 0))


@register_lowering("constant_of_shape")  # in place of _refuse: padded where it has a bound
def _constant_of_shape(ctx, shape, *, value, dtype, bound, **attrs):
    """A buffer of the bound along each dim, each dim's valid length read from ``shape`` (a size torch.export
    bounds, read with ``.item()``); a size past the bound is the model's own check failing (``require``)."""
    if bound is None or ctx.lowering.lengths is None:
        raise no_bound(ctx.node)
    sizes = shape.reshape(-1).astype(_I64)
    ctx.require(jnp.all((sizes >= 0) & (sizes <= bound)), f"a size is outside 0..{bound}, the range torch.export "
                "recorded for it (the model's own checks refuse it); keep the data within that range")
    _set_lengths(ctx, *(jnp.clip(sizes[i], 0, bound) for i in range(sizes.shape[0])))
    return jnp.full((bound,) * sizes.shape[0], value, JAX_DTYPES[dtype])


@register_lowering("slice_dynamic")
def _slice_dynamic(ctx, x, starts, ends, *rest, axes, **attrs):
    """Each sliced dim gathered from its run-time start by its step, to the dim's own size (the bound)."""
    rest = list(rest)
    k = starts.shape[0]
    wanted = rest.pop(0) if axes is None and rest else jnp.asarray(tuple(axes or range(k)), _I64)
    wanted = wanted.astype(_I64) % x.ndim
    steps = rest[0] if rest else jnp.ones(k, _I64)
    padded = unbacked_axes(ctx.node.inputs[0].type, ctx.lowering.lengths)
    lengths = []
    for a, d in enumerate(ctx.node.outputs[0].shape):
        if d not in introduced(ctx.node):
            continue
        n = ctx.length(padded[a]) if a in padded else x.shape[a]
        hit = wanted == a
        found = jnp.any(hit)

        def pick(v: Any, default: Any) -> Any:
            return jnp.where(found, jnp.sum(jnp.where(hit, v.astype(_I64), 0)), default)

        st = pick(steps, 1)
        s, length = _slice_bounds(pick(starts, 0), pick(ends, n), st, n)
        idx = jnp.clip(s + jnp.arange(x.shape[a], dtype=_I64) * st, 0, x.shape[a] - 1)
        x = jnp.take(x, idx, axis=a)
        lengths.append(length)
    _set_lengths(ctx, *lengths)
    return x


def _unique_flat(data: Any, valid: Any) -> tuple[Any, Any, Any, Any, Any]:
    """numpy's sorted unique of the valid entries of 1-d ``data`` (NaNs one value, as ``equal_nan``),
    padded to ``data``'s size: values, first indices, the inverse map, counts, and how many there are.
    A stable sort by (padding, value) puts each value's first index first and the padding last."""
    n = data.shape[0]
    keys = data.astype(jnp.uint8) if data.dtype == jnp.bool_ else data
    pad, v, pos = lax.sort(((~valid).astype(jnp.uint8), keys, jnp.arange(n, dtype=_I64)), num_keys=2,
                           is_stable=True)
    same = v[1:] == v[:-1]
    if jnp.issubdtype(v.dtype, jnp.floating):
        same = same | (jnp.isnan(v[1:]) & jnp.isnan(v[:-1]))
    ok = pad == 0
    start = ok & jnp.concatenate([jnp.ones(1, bool), ~same])
    group = jnp.cumsum(start, dtype=_I64) - 1
    slot = jnp.where(start, group, n)  # n: dropped
    y = jnp.zeros(n, data.dtype).at[slot].set(v.astype(data.dtype), mode="drop")
    first = jnp.zeros(n, _I64).at[slot].set(pos, mode="drop")
    counts = jnp.zeros(n, _I64).at[jnp.where(ok, group, n)].add(1, mode="drop")
    inverse = jnp.zeros(n, _I64).at[pos].set(jnp.where(ok, group, 0))
    return y, first, inverse, counts, jnp.sum(start, dtype=_I64)


@register_lowering("unique")
def _unique(ctx, x, *, axis, sorted, **attrs):
    if axis is None:  # a padded x is 1-d here (padding.py): its padding is left out
        mask = _valid(ctx, 0, x.shape)
        y, first, inverse, counts, count = _unique_flat(x.reshape(-1), jnp.ones(x.size, bool) if mask is None
                                                        else mask.reshape(-1))
        ax, n = 0, x.size
    else:
        ax = axis % x.ndim
        n = x.shape[ax]
        y, first, inverse, counts = jnp.unique(x, axis=ax, size=n, return_index=True, return_inverse=True,
                                               return_counts=True)
        inverse = inverse.reshape(-1)
        count = jnp.sum(counts > 0, dtype=_I64)
    if not sorted:  # ONNX: in order of first occurrence; the padding (counts 0) last
        slot = jnp.arange(n, dtype=_I64)
        order = jnp.argsort(jnp.where(slot < count, first, n + slot), stable=True)
        rank = jnp.zeros(n, _I64).at[order].set(slot)
        y, first, counts, inverse = jnp.take(y, order, axis=ax), first[order], counts[order], rank[inverse]
    _set_lengths(ctx, count)
    return [y, first.astype(_I64), inverse.astype(_I64), counts.astype(_I64)]


def _constant_int(ctx: RuleContext, i: int) -> int | None:
    """Input ``i`` when it is a constant of the graph (its first entry), else None."""
    arr = ctx.node.inputs[i].const_value if len(ctx.node.inputs) > i else None
    return int(np.asarray(arr).reshape(-1)[0]) if arr is not None and np.size(arr) else None


def _scalar_input(rest: tuple, i: int, default: Any) -> Any:
    """Optional input ``i`` of ``rest`` (its first entry), else ``default`` as an array (None: None)."""
    if len(rest) > i and rest[i].size:
        return rest[i].reshape(-1)[0]
    return None if default is None else jnp.asarray(default)


def _corners(b: Any, center: bool) -> Any:
    """Boxes as (y_min, x_min, y_max, x_max), as ONNX NonMaxSuppression reads them."""
    if center:
        xc, yc, w, h = b[..., 0], b[..., 1], b[..., 2] / 2, b[..., 3] / 2
        return jnp.stack([yc - h, xc - w, yc + h, xc + w], axis=-1)
    return jnp.stack([jnp.minimum(b[..., 0], b[..., 2]), jnp.minimum(b[..., 1], b[..., 3]),
                      jnp.maximum(b[..., 0], b[..., 2]), jnp.maximum(b[..., 1], b[..., 3])], axis=-1)


def _suppresses(a: Any, b: Any, iou: Any) -> Any:
    """Whether box ``a`` (4,) overlaps each of ``b`` (n, 4) by more than ``iou`` (IoU)."""
    h = jnp.minimum(a[2], b[:, 2]) - jnp.maximum(a[0], b[:, 0])
    w = jnp.minimum(a[3], b[:, 3]) - jnp.maximum(a[1], b[:, 1])
    inter = h * w
    area_a, area_b = (a[2] - a[0]) * (a[3] - a[1]), (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a + area_b - inter
    ok = (h > 0) & (w > 0) & (area_a > 0) & (area_b > 0) & (union > 0)
    return ok & (inter / jnp.where(ok, union, 1) > iou)


def _nms_one(corners: Any, scores: Any, valid: Any, max_out: Any, iou: Any, threshold: Any) -> tuple[Any, Any]:
    """Greedy suppression for one batch and class: (box index in score order, kept) for every slot."""
    n = scores.shape[0]
    _, order = lax.sort((-jnp.where(valid, scores, -jnp.inf), jnp.arange(n, dtype=_I64)), num_keys=2)
    boxes, s, ok = corners[order], scores[order], valid[order]
    if threshold is not None:
        ok = ok & (s > threshold)

    def step(i, carry):
        keep, count = carry
        take = ok[i] & (count < max_out) & ~jnp.any(keep & _suppresses(boxes[i], boxes, iou))
        return keep.at[i].set(take), count + take.astype(_I64)

    keep, _ = lax.fori_loop(0, n, step, (jnp.zeros(n, bool), jnp.zeros((), _I64)))
    return order, keep


@register_lowering("non_max_suppression")
def _non_max_suppression(ctx, boxes, scores, *rest, center_point_box, **attrs):
    batch, classes, n = scores.shape
    wide = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32  # the reference's precision
    max_out = jnp.maximum(_scalar_input(rest, 0, 0).astype(_I64), 0)
    iou = _scalar_input(rest, 1, 0.0).astype(wide)
    threshold = _scalar_input(rest, 2, None)
    threshold = None if threshold is None else threshold.astype(wide)
    valid = jnp.ones(n, bool)
    for i, ax in ((0, 1), (1, 2)):  # boxes past the valid length of either input are padding
        sym = unbacked_axes(ctx.node.inputs[i].type, ctx.lowering.lengths).get(ax)
        if sym is not None:
            valid = valid & (jnp.arange(n, dtype=_I64) < ctx.length(sym))
    corners = _corners(boxes.astype(wide), center_point_box == 1)
    per_class = jax.vmap(_nms_one, in_axes=(None, 0, None, None, None, None))
    order, keep = jax.vmap(per_class, in_axes=(0, 0, None, None, None, None))(
        corners, scores.astype(wide), valid, max_out, iou, threshold)
    b = lax.broadcasted_iota(_I64, keep.shape, 0)
    c = lax.broadcasted_iota(_I64, keep.shape, 1)
    rows = jnp.stack([b, c, order], axis=-1).reshape(-1, 3)
    keep = keep.reshape(-1)
    cap = _constant_int(ctx, 2)
    bound = batch * classes * (n if cap is None else max(min(cap, n), 0))
    _set_lengths(ctx, jnp.sum(keep, dtype=_I64))
    return rows[jnp.nonzero(keep, size=bound, fill_value=0)[0]]


# ----- consumers that mix entries along a padded axis: the padding masked first ------

_IDENTITY = {"reduce_sum": lambda dt: 0, "reduce_prod": lambda dt: 1, "reduce_max": lambda dt: _extreme(dt, False),
             "reduce_min": lambda dt: _extreme(dt, True), "reduce_any": lambda dt: False,
             "reduce_all": lambda dt: True}


def _masked_reduction(op: str):
    def rule(ctx, x, *, axes, keepdims):
        mask = _valid(ctx, 0, x.shape, set(positive_axes(axes, x.ndim)))
        return JAX_RULES[op](ctx, _fill(x, mask, _IDENTITY[op](x.dtype)), axes=axes, keepdims=keepdims)
    return rule


for _op in _IDENTITY:
    register_padded(_op)(_masked_reduction(_op))


@register_padded("reduce_mean")
def _reduce_mean(ctx, x, *, axes, keepdims):
    red = positive_axes(axes, x.ndim)
    mask = _valid(ctx, 0, x.shape, set(red))
    if mask is None:
        return JAX_RULES["reduce_mean"](ctx, x, axes=axes, keepdims=keepdims)
    total = JAX_RULES["reduce_sum"](ctx, _fill(x, mask, 0), axes=axes, keepdims=keepdims)
    count = jnp.sum(jnp.broadcast_to(mask, x.shape), axis=red, keepdims=keepdims, dtype=_I64)
    return total / count.astype(total.dtype)


def _masked_arg(op: str, high: bool):
    def rule(ctx, x, *, axis, keepdims, select_last_index):
        ax = axis % x.ndim
        mask = _valid(ctx, 0, x.shape, {ax})
        if mask is None:
            return JAX_RULES[op](ctx, x, axis=axis, keepdims=keepdims, select_last_index=select_last_index)
        fn = jnp.argmax if high else jnp.argmin
        fill = _extreme(x.dtype, not high)
        if select_last_index:  # the valid entries reversed, then the padding: the first hit is the last one
            last = ctx.length(ctx.node.inputs[0].shape[ax]) - 1
            src = jnp.maximum(last - lax.broadcasted_iota(_I64, x.shape, ax), 0)
            idx = last - fn(_fill(jnp.take_along_axis(x, src, ax), mask, fill), axis=ax).astype(_I64)
        else:
            idx = fn(_fill(x, mask, fill), axis=ax).astype(_I64)
        return jnp.expand_dims(idx, ax) if keepdims else idx
    return rule


register_padded("argmax")(_masked_arg("argmax", True))
register_padded("argmin")(_masked_arg("argmin", False))


@register_padded("topk")
def _topk(ctx, x, *, k, axis, largest):
    ax = axis % x.ndim
    x = _fill(x, _valid(ctx, 0, x.shape, {ax}), _sort_fill(x.dtype, largest))
    return JAX_RULES["topk"](ctx, x, k=k, axis=axis, largest=largest)


@register_padded("sort")
def _sort(ctx, x, *, axis, descending):
    ax = axis % x.ndim
    x = _fill(x, _valid(ctx, 0, x.shape, {ax}), _sort_fill(x.dtype, descending))
    return JAX_RULES["sort"](ctx, x, axis=axis, descending=descending)


# ops along one axis whose padded entries, so filled, leave every valid result as it is
_ALONG = {"softmax": lambda dt: -np.inf, "log_softmax": lambda dt: -np.inf, "cumsum": lambda dt: 0,
          "cumprod": lambda dt: 1, "cummax": lambda dt: _extreme(dt, False), "cummin": lambda dt: _extreme(dt, True)}


def _masked_along(op: str):
    def rule(ctx, x, **attrs):
        mask = _valid(ctx, 0, x.shape, {attrs["axis"] % x.ndim}) if x.ndim else None
        return JAX_RULES[op](ctx, _fill(x, mask, _ALONG[op](x.dtype)), **attrs)
    return rule


for _op in _ALONG:
    register_padded(_op)(_masked_along(_op))


@register_padded("gather")
def _gather(ctx, x, idx, *, axis):
    """A negative index counts from the value's end, not from the end of its padded buffer."""
    ax = axis % x.ndim
    sym = unbacked_axes(ctx.node.inputs[0].type, ctx.lowering.lengths).get(ax)
    if sym is not None:
        idx = idx.astype(_I64)
        idx = jnp.where(idx < 0, idx + ctx.length(sym), idx)
    return JAX_RULES["gather"](ctx, x, idx, axis=axis)

