"""Caffe's normalisation and affine layers: BatchNorm, Scale, Bias, LRN, MVN, Normalize (SSD)."""

from __future__ import annotations

import numpy as np

from ...ir import Value
from .context import LayerContext, channel_shape, f32, rule

__all__: list[str] = []


@rule("BatchNorm")
def _batch_norm(ctx: LayerContext):
    """y = (x - mean / s) / sqrt(var / s + eps), s the moving-average scale factor of blob 2
    (0 means 1/s = 0), folded into one multiply and add per channel."""
    x = ctx.input()
    c = int(x.shape[1]) if x.rank > 1 else 1
    eps = float(ctx.param("batch_norm").get("eps"))
    mean = ctx.blob_array(0, (c,), "bias").astype(np.float64)
    var = ctx.blob_array(1, (c,), "positive").astype(np.float64)
    s = float(ctx.blob_array(2, (1,), "positive")[0]) if ctx.blobs is not None else 1.0
    factor = 0.0 if s == 0 else 1.0 / s
    inv = 1.0 / np.sqrt(var * factor + eps)
    shape = channel_shape(x, 1, 1)
    scale = ctx.b.const(inv.astype(np.float32).reshape(shape), name=f"{ctx.name}.scale")
    shift = ctx.b.const((-mean * factor * inv).astype(np.float32).reshape(shape), name=f"{ctx.name}.shift")
    return [ctx.op("add", ctx.op("mul", x, scale), shift)]


def _param_axes(ctx: LayerContext, x: Value, axis: int, num_axes: int) -> tuple[int, int]:
    a = ctx.axis(axis, x.rank)
    n = x.rank - a if num_axes == -1 else num_axes
    if a + n > x.rank:
        raise ctx.fail(f"axis {axis} with num_axes {num_axes} runs past the bottom's rank {x.rank}")
    return a, n


def _broadcast_operand(ctx: LayerContext, x: Value, axis: int, num_axes: int, blob: int, init: str,
                       label: str) -> Value:
    """Scale's / Bias's second operand: bottom[1] if given, else blob ``blob``, shaped to broadcast."""
    if len(ctx.inputs) > 1 and blob == 0:
        y = ctx.input(1)
        a = ctx.axis(axis, x.rank) if y.rank else 0
        if tuple(y.shape) != tuple(x.shape[a:a + y.rank]):
            raise ctx.fail(f"bottom 1 has shape {list(y.shape)}, which does not match axes {a}.. of "
                           f"{list(x.shape)}")
        return ctx.op("reshape", y, shape=channel_shape(x, a, y.rank)) if y.rank else y
    a, n = _param_axes(ctx, x, axis, num_axes)
    arr = ctx.blob_array(blob, tuple(int(d) for d in x.shape[a:a + n]), init)
    return ctx.b.const(arr.reshape(channel_shape(x, a, n)), name=f"{ctx.name}.{label}")


@rule("Scale")
def _scale(ctx: LayerContext):
    p = ctx.param("scale")
    x = ctx.input()
    axis, n = p.get("axis"), p.get("num_axes")
    y = ctx.op("mul", x, _broadcast_operand(ctx, x, axis, n, 0, "scale", "scale"))
    if p.get("bias_term"):
        if len(ctx.inputs) > 1:
            bias = _bias_blob(ctx, x, axis, ctx.input(1).rank)
        else:
            bias = _broadcast_operand(ctx, x, axis, n, 1, "bias", "bias")
        y = ctx.op("add", y, bias)
    return [y]


def _bias_blob(ctx: LayerContext, x: Value, axis: int, n: int) -> Value:
    """Scale with two bottoms and bias_term: the bias is blob 0, over the axes bottom[1] covers."""
    a = ctx.axis(axis, x.rank)
    arr = ctx.blob_array(0, tuple(int(d) for d in x.shape[a:a + n]), "bias")
    return ctx.b.const(arr.reshape(channel_shape(x, a, n)), name=f"{ctx.name}.bias")


@rule("Bias")
def _bias(ctx: LayerContext):
    p = ctx.param("bias")
    x = ctx.input()
    return [ctx.op("add", x, _broadcast_operand(ctx, x, p.get("axis"), p.get("num_axes"), 0, "bias", "bias"))]


@rule("LRN")
def _lrn(ctx: LayerContext):
    p = ctx.param("lrn")
    x = ctx.input()
    if x.rank != 4:
        raise ctx.fail(f"LRN takes a 4-d N x C x H x W blob, got rank {x.rank}")
    size = int(p.get("local_size"))
    if size % 2 == 0:
        raise ctx.fail(f"local_size {size} must be odd")
    alpha, beta, k = float(p.get("alpha")), float(p.get("beta")), float(p.get("k"))
    half = (size - 1) // 2
    sq = ctx.op("mul", x, x)
    n, c, h, w = (int(d) for d in x.shape)
    if p.get("norm_region") == "ACROSS_CHANNELS":
        # scale = k + alpha / size * (sum of squares over a window of channels)
        s = ctx.op("reshape", sq, shape=(n, 1, c, h * w))
        s = ctx.op("avg_pool", s, kernel=(size, 1), stride=(1, 1), padding=((half, half), (0, 0)),
                   count_include_pad=True)
        s = ctx.op("reshape", s, shape=(n, c, h, w))
        scale = ctx.op("add", ctx.op("mul", s, f32(ctx, alpha)), f32(ctx, k))
    else:
        # WITHIN_CHANNEL: 1 + alpha * (mean of squares over a size x size window, padding counted)
        s = ctx.op("avg_pool", sq, kernel=(size, size), stride=(1, 1), padding=((half, half), (half, half)),
                   count_include_pad=True)
        scale = ctx.op("add", ctx.op("mul", s, f32(ctx, alpha)), f32(ctx, 1.0))
    return [ctx.op("mul", x, ctx.op("pow", scale, f32(ctx, -beta)))]


@rule("Normalize")
def _normalize(ctx: LayerContext):
    """SSD's L2 normalisation: x / sqrt(sum x^2 + eps) over C x H x W (across_spatial) or over C,
    times a learned scale (one, or one per channel)."""
    p = ctx.param("norm")
    x = ctx.input()
    axes = tuple(range(1, x.rank)) if p.get("across_spatial") else (1,)
    total = ctx.op("reduce_sum", ctx.op("mul", x, x), axes=axes, keepdims=True)
    norm = ctx.op("sqrt", ctx.op("add", total, f32(ctx, float(p.get("eps")))))
    y = ctx.op("div", x, norm)
    shared = p.get("channel_shared")
    scale = ctx.blob_array(0, (1,) if shared else (int(x.shape[1]),), "scale")
    return [ctx.op("mul", y, ctx.b.const(scale.reshape(() if shared else channel_shape(x, 1, 1)),
                                         name=f"{ctx.name}.scale"))]


@rule("MVN")
def _mvn(ctx: LayerContext):
    """Mean (and variance) normalisation over H x W, or C x H x W with across_channels: Caffe divides
    by sqrt(var) + eps, not sqrt(var + eps)."""
    p = ctx.param("mvn")
    x = ctx.input()
    axes = tuple(range(1 if p.get("across_channels") else 2, x.rank))
    centred = ctx.op("sub", x, ctx.op("reduce_mean", x, axes=axes, keepdims=True))
    if not p.get("normalize_variance"):
        return [centred]
    var = ctx.op("reduce_mean", ctx.op("mul", centred, centred), axes=axes, keepdims=True)
    return [ctx.op("div", centred, ctx.op("add", ctx.op("sqrt", var), f32(ctx, float(p.get("eps")))))]
