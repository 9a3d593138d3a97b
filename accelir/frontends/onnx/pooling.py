"""ONNX pooling rules: MaxPool / AveragePool / LpPool (with MaxPool's indices), the global
pools, MaxUnpool and Col2Im, which share the window arithmetic below.

The window ops need static spatial dims: their position tables (which input element
each window slot reads, or which image pixel each column entry adds to) are computed in
the graph from iotas (the fold pass makes the small ones constants), and a slot that
falls in the padding points at one extra "dump" element past the end, which is then
dropped (a scatter) or holds the identity (a gather).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ...ir import DType, Value
from .context import NodeContext, conv_attrs, reshape, rule, static_dims

__all__ = ["window_positions", "maxpool_indices"]


@rule("MaxPool", "AveragePool", "LpPool")
def _pool(ctx: NodeContext):
    x = ctx.input(0)
    kernel = tuple(ctx.attr("kernel_shape"))
    attrs = conv_attrs(ctx, x, kernel)
    common = dict(kernel=kernel, stride=attrs["stride"], padding=attrs["padding"], dilation=attrs["dilation"],
                  ceil_mode=bool(ctx.attr("ceil_mode", 0)))
    if ctx.node.op_type == "MaxPool":
        y = ctx.op("max_pool", x, **common)
        if not ctx.wants(1):
            return [y]
        return [y, maxpool_indices(ctx, x, y)]
    if ctx.node.op_type == "AveragePool":
        return [ctx.op("avg_pool", x, count_include_pad=bool(ctx.attr("count_include_pad", 0)), **common)]
    p = ctx.attr("p", 2)
    powed = ctx.op("pow", ctx.op("abs", x), ctx.scalar(p, x))
    total = ctx.op("mul", ctx.op("avg_pool", powed, count_include_pad=True, **common),
                   ctx.scalar(math.prod(kernel), x))
    return [ctx.op("pow", total, ctx.scalar(1.0 / p, x))]


@rule("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(ctx: NodeContext):
    x = ctx.input(0)
    op = "reduce_mean" if ctx.node.op_type == "GlobalAveragePool" else "reduce_max"
    return [ctx.op(op, x, axes=tuple(range(2, x.rank)), keepdims=True)]


def window_positions(ctx: NodeContext, size: Sequence[int], blocks: Sequence[int], kernel: Sequence[int],
                     stride: Sequence[int], pad_lo: Sequence[int], dilation: Sequence[int],
                     order: str = "C") -> tuple[Value, Value]:
    """For each window position (rows, row-major over ``blocks``) and kernel slot (columns,
    row-major over ``kernel``): the flat index of the pixel it covers in an image of
    ``size`` (``order`` "C" row-major, "F" column-major) and whether it lies inside.

    Computed in the graph from iotas, not at import: the tables grow with the output times
    the kernel (a 360 x 480 image pooled 2 x 2 needs 1.4 MB each)."""
    n = len(size)
    grid = tuple(blocks) + tuple(kernel)
    i64 = DType.i64
    inside: Value | None = None
    flat: Value | None = None
    for d in range(n):
        at = ctx.op("add", ctx.op("mul", ctx.op("iota", shape=grid, axis=d, dtype=i64), ctx.scalar(stride[d], i64)),
                    ctx.op("mul", ctx.op("iota", shape=grid, axis=n + d, dtype=i64), ctx.scalar(dilation[d], i64)))
        if pad_lo[d]:
            at = ctx.op("sub", at, ctx.scalar(pad_lo[d], i64))
        ok = ctx.op("and", ctx.op("ge", at, ctx.scalar(0, i64)), ctx.op("lt", at, ctx.scalar(size[d], i64)))
        inside = ok if inside is None else ctx.op("and", inside, ok)
        clipped = ctx.op("max", ctx.op("min", at, ctx.scalar(size[d] - 1, i64)), ctx.scalar(0, i64))
        step = math.prod(size[d + 1:]) if order == "C" else math.prod(size[:d])
        term = ctx.op("mul", clipped, ctx.scalar(step, i64)) if step != 1 else clipped
        flat = term if flat is None else ctx.op("add", flat, term)
    shape = (math.prod(blocks), math.prod(kernel))
    return reshape(ctx, flat, shape), reshape(ctx, inside, shape)


def maxpool_indices(ctx: NodeContext, x: Value, pooled: Value) -> Value:
    """MaxPool's Indices output: the flat index (over N, C and the spatial dims) of each
    window's first maximum in kernel order (never a padding position), spatial dims row-major
    or (storage_order 1) column-major."""
    size = static_dims(ctx, x.shape[2:], "spatial dims", "position table")
    out = static_dims(ctx, pooled.shape[2:], "pooled dims", "position table")
    kernel = tuple(ctx.attr("kernel_shape"))
    attrs = conv_attrs(ctx, x, kernel)
    lo = [p[0] for p in attrs["padding"]]
    read, inside = window_positions(ctx, size, out, kernel, attrs["stride"], lo, attrs["dilation"])
    report = read
    if ctx.attr("storage_order", 0):
        report, _ = window_positions(ctx, size, out, kernel, attrs["stride"], lo, attrs["dilation"], "F")
    rows, slots = read.shape
    pixels = math.prod(size)
    n, c = x.shape[:2]
    flat = reshape(ctx, x, (n, c, pixels))
    lowest = x.dtype.lowest
    # padding slots read a dump pixel holding the lowest value, so they never win
    dump = ctx.op("broadcast_to", ctx.scalar(lowest, x), shape=(n, c, 1))
    flat = ctx.op("concat", flat, dump, axis=2)
    table = ctx.op("where", inside, read, ctx.scalar(pixels, DType.i64))
    windows = ctx.op("gather", flat, reshape(ctx, table, (rows * slots,)), axis=2)
    windows = reshape(ctx, windows, (n, c, rows, slots))
    best = ctx.op("argmax", windows, axis=3, keepdims=True)
    # ... except where every real tap holds the lowest value too: then a padding slot may come
    # first in kernel order; the window's first real position is reported instead, as torch does
    grid = (n, c, rows, slots)
    real = ctx.op("take_along_axis", ctx.op("broadcast_to", inside, shape=grid), best, axis=3)
    first_real = ctx.op("argmax", ctx.cast(inside, DType.i32), axis=1, keepdims=True)
    best = ctx.op("where", real, best, ctx.op("broadcast_to", first_real, shape=(n, c, rows, 1)))
    spatial = ctx.op("take_along_axis", ctx.op("broadcast_to", report, shape=grid), best, axis=3)
    plane = ctx.op("iota", shape=(n, c, rows, 1), axis=0, dtype=DType.i64)
    plane = ctx.op("add", ctx.op("mul", plane, ctx.scalar(c, DType.i64)),
                   ctx.op("iota", shape=(n, c, rows, 1), axis=1, dtype=DType.i64))
    index = ctx.op("add", ctx.op("mul", plane, ctx.scalar(pixels, DType.i64)), spatial)
    return reshape(ctx, index, pooled.shape)


@rule("MaxUnpool")
def _max_unpool(ctx: NodeContext):
    x, idx = ctx.input(0), ctx.input(1)
    kernel = tuple(ctx.attr("kernel_shape"))
    k = len(kernel)
    strides = tuple(ctx.attr("strides", [1] * k))
    pads = tuple(ctx.attr("pads", [0] * (2 * k)))
    size = static_dims(ctx, x.shape, "input dims", "position table")
    # the indices address the unpooled tensor of the inferred shape; output_shape only pads its end
    inferred = size[:2] + tuple((size[2 + d] - 1) * strides[d] - pads[d] - pads[k + d] + kernel[d] for d in range(k))
    total = math.prod(inferred)
    zeros = ctx.op("broadcast_to", ctx.scalar(0, x), shape=(total,))
    y = ctx.op("scatter_nd", zeros, reshape(ctx, ctx.cast(idx, DType.i64), (math.prod(size), 1)),
               reshape(ctx, x, (math.prod(size),)))
    y = reshape(ctx, y, inferred)
    if ctx.dynamic(2):
        return [_pad_to_output_shape(ctx, y, inferred)]
    if ctx.input(2) is not None:
        want = [int(v) for v in ctx.values(2, "output_shape").reshape(-1)]
        extra = [w - i for w, i in zip(want, inferred)]
        if len(want) != len(inferred) or any(e < 0 for e in extra):
            raise ctx.unsupported(f"output_shape {want} smaller than the unpooled shape {list(inferred)}")
        if any(extra):
            y = ctx.op("pad", y, pads=tuple((0, e) for e in extra))
    return [y]


def _pad_to_output_shape(ctx: NodeContext, y: Value, inferred: Sequence[int]) -> Value:
    """MaxUnpool's ``y`` padded at the end of each spatial dim up to a run-time output_shape (input 2)."""
    shape = ctx.input(2)
    k = len(inferred) - 2
    if shape.rank != 1 or shape.shape[0] != len(inferred):
        raise ctx.unsupported(f"an output_shape {shape.type} for an output of rank {len(inferred)}")
    spatial = ctx.op("slice", ctx.cast(shape, DType.i64), starts=(2,), stops=(2 + k,), axes=(0,))
    ends = ctx.op("sub", spatial, ctx.const(np.asarray(inferred[2:], np.int64)))
    pads = ctx.op("concat", ctx.const(np.zeros(k, np.int64)), ends, axis=0)
    return ctx.op("pad_dynamic", y, pads, axes=tuple(range(2, 2 + k)))


@rule("Col2Im")
def _col2im(ctx: NodeContext):
    x = ctx.input(0)
    if ctx.dynamic(1) or ctx.dynamic(2):  # the output's shape is known at run time: col2im_dynamic
        k = ctx.input(1).shape[0] if ctx.input(1).rank == 1 else 0
        return [ctx.op("col2im_dynamic", x, ctx.input(1), ctx.input(2), strides=tuple(ctx.attr("strides", [1] * k)),
                       dilations=tuple(ctx.attr("dilations", [1] * k)), pads=tuple(ctx.attr("pads", [0] * (2 * k))))]
    image = tuple(int(v) for v in ctx.values(1, "image_shape").reshape(-1))
    block = tuple(int(v) for v in ctx.values(2, "block_shape").reshape(-1))
    k = len(image)
    strides = tuple(ctx.attr("strides", [1] * k))
    dil = tuple(ctx.attr("dilations", [1] * k))
    pads = tuple(ctx.attr("pads", [0] * (2 * k)))
    blocks = tuple((image[d] + pads[d] + pads[k + d] - dil[d] * (block[d] - 1) - 1) // strides[d] + 1
                   for d in range(k))
    n = x.shape[0]
    ck, length = static_dims(ctx, x.shape[1:], "column dims", "position table")
    slots = math.prod(block)
    if ck % slots or length != math.prod(blocks):
        raise ctx.unsupported(f"an input {x.type} that does not match blocks {list(blocks)} of {list(block)}")
    c = ck // slots
    at, inside = window_positions(ctx, image, blocks, block, strides, pads[:k], dil)  # [L, slots]
    pixels = math.prod(image)
    table = ctx.op("where", inside, at, ctx.scalar(pixels, DType.i64))
    table = reshape(ctx, ctx.op("transpose", table, perm=(1, 0)), (slots * length,))  # slot-major, then L
    cols = reshape(ctx, x, (n, c, slots * length))
    idx = ctx.op("broadcast_to", table, shape=(n, c, slots * length))
    canvas = ctx.op("broadcast_to", ctx.scalar(0, x), shape=(n, c, pixels + 1))
    summed = ctx.op("scatter_elements", canvas, idx, cols, axis=2, reduction="add")
    summed = ctx.op("slice", summed, starts=(0,), stops=(pixels,), axes=(2,))
    return [reshape(ctx, summed, (n, c) + image)]
