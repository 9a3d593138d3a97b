"""Caffe layers that route or reshape blobs: Concat, Slice, Split, Flatten, Reshape, Permute,
Crop, Dropout, Eltwise, Softmax, ArgMax, Tile, Reduction, ShuffleChannel."""

from __future__ import annotations

import numpy as np

from ...ir import DType
from .context import LayerContext, f32, rule

__all__: list[str] = []


@rule("Concat")
def _concat(ctx: LayerContext):
    p = ctx.param("concat")
    x = ctx.input()
    axis = p.get("axis") if p.has("axis") or not p.has("concat_dim") else p.get("concat_dim")
    if len(ctx.inputs) == 1:
        return [x]
    return [ctx.op("concat", *ctx.inputs, axis=ctx.axis(axis, x.rank))]


@rule("Slice")
def _slice(ctx: LayerContext):
    p = ctx.param("slice")
    x = ctx.input()
    axis = ctx.axis(p.get("axis") if p.has("axis") or not p.has("slice_dim") else p.get("slice_dim"), x.rank)
    n_tops = len(ctx.layer.list("top"))
    size = int(x.shape[axis])
    points = [int(q) for q in p.list("slice_point")]
    if points:
        if len(points) != n_tops - 1 or any(b <= a for a, b in zip([0] + points, points)) or points[-1] >= size:
            raise ctx.fail(f"slice_point {points} does not cut axis {axis} (size {size}) into {n_tops} tops")
    else:
        if size % n_tops:
            raise ctx.fail(f"axis {axis} of size {size} does not split evenly into {n_tops} tops")
        points = [size // n_tops * i for i in range(1, n_tops)]
    bounds = [0] + points + [size]
    return [ctx.op("slice", x, starts=(lo,), stops=(hi,), steps=(1,), axes=(axis,))
            for lo, hi in zip(bounds, bounds[1:])]


@rule("Split")
def _split(ctx: LayerContext):
    return [ctx.input()] * len(ctx.layer.list("top"))


@rule("Dropout")
def _dropout(ctx: LayerContext):
    return [ctx.input()]  # inference: Caffe's dropout scales at training time, so the test phase is identity


@rule("Flatten")
def _flatten(ctx: LayerContext):
    p = ctx.param("flatten")
    x = ctx.input()
    start, end = ctx.axis(p.get("axis"), x.rank), ctx.axis(p.get("end_axis"), x.rank)
    shape = tuple(x.shape[:start]) + (int(np.prod(x.shape[start:end + 1])),) + tuple(x.shape[end + 1:])
    return [ctx.op("reshape", x, shape=shape)]


@rule("Reshape")
def _reshape(ctx: LayerContext):
    p = ctx.param("reshape")
    x = ctx.input()
    dims = [int(d) for d in p.get("shape").list("dim")]
    axis = p.get("axis")
    start = axis + x.rank + 1 if axis < 0 else axis
    n = p.get("num_axes")
    end = x.rank if n == -1 else start + n
    if not 0 <= start <= end <= x.rank:
        raise ctx.fail(f"axis {axis} and num_axes {n} do not fit a blob of rank {x.rank}")
    middle = []
    for i, d in enumerate(dims):
        if d == 0:
            if start + i >= x.rank:
                raise ctx.fail(f"dim {i} is 0 (copy) but the bottom has no axis {start + i}")
            middle.append(int(x.shape[start + i]))
        else:
            middle.append(d)
    shape = list(x.shape[:start]) + middle + list(x.shape[end:])
    total = int(np.prod(x.shape))
    if shape.count(-1) > 1:
        raise ctx.fail("more than one dim is -1")
    if -1 in shape:
        known = int(np.prod([d for d in shape if d != -1]))
        if known == 0 or total % known:
            raise ctx.fail(f"shape {dims} does not fit the bottom's {total} values")
        shape[shape.index(-1)] = total // known
    if int(np.prod(shape)) != total:
        raise ctx.fail(f"shape {shape} holds {int(np.prod(shape))} values, the bottom {list(x.shape)} has {total}")
    return [ctx.op("reshape", x, shape=tuple(shape))]


@rule("Permute")
def _permute(ctx: LayerContext):
    x = ctx.input()
    order = [int(o) for o in ctx.param("permute").list("order")]
    for i in range(x.rank):  # axes left out keep their order after the given ones
        if i not in order:
            order.append(i)
    if sorted(order) != list(range(x.rank)):
        raise ctx.fail(f"order {order} is not a permutation of the {x.rank} axes")
    if order == list(range(x.rank)):
        return [x]
    return [ctx.op("transpose", x, perm=tuple(order))]


@rule("Crop")
def _crop(ctx: LayerContext):
    p = ctx.param("crop")
    x, ref = ctx.input(0), ctx.input(1)
    axis = ctx.axis(p.get("axis"), x.rank)
    offsets = [int(o) for o in p.list("offset")]
    n = x.rank - axis
    if len(offsets) not in (0, 1, n):
        raise ctx.fail(f"offset has {len(offsets)} values; give 0, 1 or {n}")
    offsets = (offsets * n if len(offsets) == 1 else offsets) or [0] * n
    axes, starts, stops = [], [], []
    for i, off in zip(range(axis, x.rank), offsets):
        size = int(ref.shape[i])
        if off + size > int(x.shape[i]):
            raise ctx.fail(f"offset {off} + size {size} overruns axis {i} of size {x.shape[i]}")
        axes.append(i)
        starts.append(off)
        stops.append(off + size)
    return [ctx.op("slice", x, starts=tuple(starts), stops=tuple(stops), steps=(1,) * len(axes), axes=tuple(axes))]


@rule("Eltwise")
def _eltwise(ctx: LayerContext):
    p = ctx.param("eltwise")
    xs = ctx.inputs
    if len(xs) < 2:
        raise ctx.fail(f"needs at least 2 bottoms, has {len(xs)}")
    shapes = {tuple(x.shape) for x in xs}
    if len(shapes) > 1:
        raise ctx.fail(f"bottoms have different shapes {sorted(list(s) for s in shapes)}")
    op = p.get("operation")
    coeff = [float(c) for c in p.list("coeff")]
    if coeff and (op != "SUM" or len(coeff) != len(xs)):
        raise ctx.fail(f"coeff needs operation SUM and one value per bottom ({len(xs)}), got {len(coeff)}")
    terms = [x if c == 1.0 else ctx.op("mul", x, f32(ctx, c)) for x, c in zip(xs, coeff or [1.0] * len(xs))]
    name = {"SUM": "add", "PROD": "mul", "MAX": "max"}[op]
    y = terms[0]
    for t in terms[1:]:
        y = ctx.op(name, y, t)
    return [y]


@rule("Softmax")
def _softmax(ctx: LayerContext):
    x = ctx.input()
    return [ctx.op("softmax", x, axis=ctx.axis(ctx.param("softmax").get("axis"), x.rank))]


@rule("ArgMax")
def _argmax(ctx: LayerContext):
    p = ctx.param("argmax")
    x = ctx.input()
    k = int(p.get("top_k"))
    if k < 1:
        raise ctx.fail(f"top_k {k} must be at least 1")
    with_values = p.get("out_max_val")
    if p.has("axis"):
        axis = ctx.axis(p.get("axis"), x.rank)
        values, idx = ctx.ops("topk", x, k=k, axis=axis, largest=True)
        idx = ctx.cast(idx, DType.f32)
        return [values if with_values else idx]
    # over the flattened trailing dims of each item: N x 1 x k, or N x 2 x k with the values
    flat = ctx.op("reshape", x, shape=(x.shape[0], int(np.prod(x.shape[1:]))))
    values, idx = ctx.ops("topk", flat, k=k, axis=1, largest=True)
    idx = ctx.op("unsqueeze", ctx.cast(idx, DType.f32), axes=(1,))
    if not with_values:
        return [idx]
    return [ctx.op("concat", idx, ctx.op("unsqueeze", values, axes=(1,)), axis=1)]


@rule("Tile")
def _tile(ctx: LayerContext):
    p = ctx.param("tile")
    x = ctx.input()
    axis = ctx.axis(p.get("axis"), x.rank)
    if not p.has("tiles") or int(p.get("tiles")) < 1:
        raise ctx.fail("tile_param needs tiles >= 1")
    n = int(p.get("tiles"))
    return [ctx.op("concat", *[x] * n, axis=axis) if n > 1 else x]


@rule("Reduction")
def _reduction(ctx: LayerContext):
    """SUM / ASUM / SUMSQ / MEAN over every axis from ``axis`` on, times coeff."""
    p = ctx.param("reduction")
    x = ctx.input()
    axis = ctx.axis(p.get("axis"), x.rank) if x.rank else 0
    op = p.get("operation")
    y = {"ASUM": lambda: ctx.op("abs", x), "SUMSQ": lambda: ctx.op("mul", x, x)}.get(op, lambda: x)()
    y = ctx.op("reduce_mean" if op == "MEAN" else "reduce_sum", y, axes=tuple(range(axis, x.rank)), keepdims=False)
    coeff = float(p.get("coeff"))
    return [y if coeff == 1.0 else ctx.op("mul", y, f32(ctx, coeff))]


@rule("ShuffleChannel")
def _shuffle_channel(ctx: LayerContext):
    x = ctx.input()
    g = int(ctx.param("shuffle_channel").get("group"))
    c = int(x.shape[1])
    if g < 1 or c % g:
        raise ctx.fail(f"group {g} does not divide the {c} channels")
    rest = tuple(x.shape[2:])
    y = ctx.op("reshape", x, shape=(x.shape[0], g, c // g) + rest)
    y = ctx.op("transpose", y, perm=(0, 2, 1) + tuple(range(3, 3 + len(rest))))
    return [ctx.op("reshape", y, shape=(x.shape[0], c) + rest)]
