"""Caffe layers with windows or weights: Convolution, Deconvolution, InnerProduct, Pooling."""

from __future__ import annotations

import numpy as np

from ...ir import Value
from ..decompositions import conv_transpose
from .context import LayerContext, Message, rule, spatial_param

__all__: list[str] = []


def _conv_params(ctx: LayerContext) -> tuple[Message, Value, tuple[int, ...], tuple[int, ...], tuple[int, ...],
                                              tuple[int, ...], int, int]:
    """A Convolution / Deconvolution layer's parameters, checked: the convolution_param message, the bottom,
    kernel, stride, pad, dilation, num_output and group."""
    p = ctx.param("convolution")
    x = ctx.input()
    if p.get("axis") not in (1, 1 - x.rank):
        raise ctx.fail(f"convolution over axis {p.get('axis')} is not supported (only axis 1, NCHW)")
    n = x.rank - 2
    kernel = spatial_param(ctx, p, "kernel", None, n)
    stride = spatial_param(ctx, p, "stride", 1, n)
    pad = spatial_param(ctx, p, "pad", 0, n)
    dilation = spatial_param(ctx, p, "dilation", 1, n)
    n_out, group, c = _num_output(ctx, p), int(p.get("group")), x.shape[1]
    if group < 1 or c % group or n_out % group:
        raise ctx.fail(f"group {group} does not divide the {c} input and {n_out} output channels")
    return p, x, kernel, stride, pad, dilation, n_out, group


def _num_output(ctx: LayerContext, p: Message) -> int:
    if not p.has("num_output"):
        raise ctx.fail("sets no num_output")
    n_out = int(p.get("num_output"))
    if n_out < 1:
        raise ctx.fail(f"num_output {n_out} must be at least 1")
    return n_out


def _channel_bias(ctx: LayerContext, y: Value, n_out: int, p: Message) -> Value:
    if not p.get("bias_term"):
        return y
    bias = ctx.blob(1, (n_out,), "bias", "bias")
    return ctx.op("add", y, ctx.op("reshape", bias, shape=(1, n_out) + (1,) * (y.rank - 2)))


@rule("Convolution")
def _convolution(ctx: LayerContext):
    p, x, kernel, stride, pad, dilation, n_out, group = _conv_params(ctx)
    c = x.shape[1]
    w = ctx.blob(0, (n_out, c // group) + kernel, "weight", "weight")
    inputs = [x, w]
    if p.get("bias_term"):
        inputs.append(ctx.blob(1, (n_out,), "bias", "bias"))
    return [ctx.op("conv", *inputs, stride=stride, padding=tuple((q, q) for q in pad), dilation=dilation,
                   groups=group)]


@rule("Deconvolution")
def _deconvolution(ctx: LayerContext):
    p, x, kernel, stride, pad, dilation, n_out, group = _conv_params(ctx)
    c = x.shape[1]
    w = ctx.blob(0, (c, n_out // group) + kernel, "weight", "weight")
    try:
        y = conv_transpose(ctx.b, x, w, stride, pad, dilation, (0,) * len(kernel), group)
    except NotImplementedError as e:
        raise ctx.fail(str(e)) from None
    return [_channel_bias(ctx, y, n_out, p)]


@rule("InnerProduct")
def _inner_product(ctx: LayerContext):
    p = ctx.param("inner_product")
    x = ctx.input()
    axis = ctx.axis(p.get("axis"), x.rank)
    n_out = _num_output(ctx, p)
    k = int(np.prod(x.shape[axis:]))
    if x.rank != axis + 1:
        x = ctx.op("reshape", x, shape=tuple(x.shape[:axis]) + (k,))
    transpose = p.get("transpose")
    w = ctx.blob_array(0, (k, n_out) if transpose else (n_out, k), "weight")
    w = np.ascontiguousarray(w if transpose else w.T)  # the IR's linear takes [in, out]
    inputs = [x, ctx.b.const(w, name=f"{ctx.name}.weight")]
    if p.get("bias_term"):
        inputs.append(ctx.blob(1, (n_out,), "bias", "bias"))
    return [ctx.op("linear", *inputs)]


def caffe_pool_size(size: int, k: int, s: int, p: int) -> int:
    """Caffe's pooled size: ceil rounding, less one where the last window would start in the padding."""
    out = -(-(size + 2 * p - k) // s) + 1
    if p > 0 and (out - 1) * s >= size + p:
        out -= 1
    return out


@rule("Pooling")
def _pooling(ctx: LayerContext):
    p = ctx.param("pooling")
    x = ctx.input()
    if x.rank != 4:
        raise ctx.fail(f"pooling takes a 4-d N x C x H x W blob, got rank {x.rank}")
    method = p.get("pool")
    if method not in ("MAX", "AVE"):
        raise ctx.fail(f"pool {method} is not supported (MAX and AVE are)")
    if p.get("global_pooling"):
        op = "reduce_max" if method == "MAX" else "reduce_mean"
        return [ctx.op(op, x, axes=(2, 3), keepdims=True)]
    kernel = spatial_param(ctx, p, "kernel", None)
    stride = spatial_param(ctx, p, "stride", 1)
    pad = spatial_param(ctx, p, "pad", 0)
    if any(q >= k for q, k in zip(pad, kernel)):
        raise ctx.fail(f"pad {list(pad)} must be smaller than the kernel {list(kernel)}")
    sizes = x.shape[2:]
    want = [caffe_pool_size(int(n), k, s, q) for n, k, s, q in zip(sizes, kernel, stride, pad)]
    if min(want) < 1:
        raise ctx.fail(f"kernel {list(kernel)} with pad {list(pad)} does not fit the {int(sizes[0])} x "
                       f"{int(sizes[1])} bottom")
    floor = [(int(n) + 2 * q - k) // s + 1 for n, k, s, q in zip(sizes, kernel, stride, pad)]
    attrs = dict(kernel=kernel, stride=stride, padding=tuple((q, q) for q in pad), ceil_mode=want != floor)
    if method == "MAX":
        return [ctx.op("max_pool", x, **attrs)]
    # Caffe divides by the window clipped to the padded input: the padding counts, the ceil overhang does not
    return [ctx.op("avg_pool", x, count_include_pad=True, **attrs)]
