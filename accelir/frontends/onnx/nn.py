"""ONNX network-layer rules: MatMul, Gemm, Conv / ConvTranspose, normalisations, Dropout."""

from __future__ import annotations

import numpy as np

from ... import dims as D
from ...errors import UnsupportedOpError
from ..decompositions import instance_norm
from .context import NodeContext, conv_attrs, norm_axis, reshape, rule

__all__: list[str] = []


@rule("MatMul")
def _matmul(ctx: NodeContext):
    return [ctx.op("matmul", ctx.input(0), ctx.input(1))]


@rule("Gemm")
def _gemm(ctx: NodeContext):
    a, b, c = ctx.input(0), ctx.input(1), ctx.input(2)
    if ctx.attr("transA", 0):
        a = ctx.op("transpose", a, perm=(1, 0))
    if ctx.attr("transB", 0):
        b = ctx.op("transpose", b, perm=(1, 0))
    y = ctx.op("matmul", a, b)
    alpha, beta = ctx.attr("alpha", 1.0), ctx.attr("beta", 1.0)
    if alpha != 1.0:
        y = ctx.op("mul", y, ctx.scalar(alpha, y))
    if c is not None:
        if beta != 1.0:
            c = ctx.op("mul", c, ctx.scalar(beta, c))
        y = ctx.op("add", y, c)
    return [y]


@rule("Conv")
def _conv(ctx: NodeContext):
    x, w, b = ctx.input(0), ctx.input(1), ctx.input(2)
    attrs = conv_attrs(ctx, x, w.shape[2:])
    ins = [x, w] + ([b] if b is not None else [])
    return [ctx.op("conv", *ins, groups=ctx.attr("group", 1), **attrs)]


@rule("ConvTranspose")
def _conv_transpose(ctx: NodeContext):
    x, w, b = ctx.input(0), ctx.input(1), ctx.input(2)
    n = x.rank - 2
    g = ctx.attr("group", 1)
    kernel = tuple(w.shape[2:])
    if not all(type(k) is int for k in kernel) or not all(type(d) is int for d in x.shape[2:]):
        raise ctx.unsupported("symbolic spatial or kernel dims")
    strides = tuple(ctx.attr("strides", [1] * n))
    dil = tuple(ctx.attr("dilations", [1] * n))
    out_pad = tuple(ctx.attr("output_padding", [0] * n))
    spans = [d * (k - 1) + 1 for d, k in zip(dil, kernel)]
    full = [strides[i] * (x.shape[2 + i] - 1) + out_pad[i] + spans[i] for i in range(n)]
    auto = ctx.attr("auto_pad", "NOTSET")
    if ctx.attr("output_shape") is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
        want = list(ctx.attr("output_shape"))[-n:] if ctx.attr("output_shape") is not None else \
            [x.shape[2 + i] * strides[i] for i in range(n)]
        pads = []
        for i in range(n):
            total = full[i] - want[i]
            lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
            pads.append((lo, total - lo))
    elif auto == "VALID":
        pads = [(0, 0)] * n
    else:
        p = list(ctx.attr("pads", [0] * (2 * n)))
        pads = [(int(p[i]), int(p[i + n])) for i in range(n)]
    # the transposed conv is a conv of the stride-dilated input with the flipped, transposed kernel
    cin, cout_g = w.shape[0], w.shape[1]
    wk = reshape(ctx, w, (g, cin // g, cout_g) + kernel)
    wk = ctx.op("transpose", wk, perm=(0, 2, 1) + tuple(range(3, 3 + n)))
    wk = reshape(ctx, wk, (g * cout_g, cin // g) + kernel)
    wk = ctx.op("reverse", wk, axes=tuple(range(2, 2 + n)))
    conv_pad = tuple((spans[i] - 1 - pads[i][0], spans[i] - 1 - pads[i][1] + out_pad[i]) for i in range(n))
    ins = [x, wk] + ([b] if b is not None else [])
    y = ctx.op("conv", *ins, groups=g, lhs_dilation=strides, dilation=dil,
               padding=tuple((max(lo, 0), max(hi, 0)) for lo, hi in conv_pad))
    for i, (lo, hi) in enumerate(conv_pad):
        if lo < 0 or hi < 0:
            size = y.shape[2 + i]
            y = ctx.op("slice", y, starts=(max(-lo, 0),), stops=(size - max(-hi, 0),), axes=(2 + i,))
    return [y]


# ----- normalisation -----------------------------------------------------------------

@rule("BatchNormalization")
def _batch_norm(ctx: NodeContext):
    if ctx.attr("training_mode", 0) or any(ctx.wants(i) for i in range(1, 5)):
        raise ctx.unsupported("training-mode batch normalization (running statistics outputs)")
    ins = ctx.inputs[:5]
    x = ins[0]
    ins = [x] + [ctx.cast(v, x.dtype) for v in ins[1:]]
    return [ctx.op("batch_norm", *ins, epsilon=ctx.attr("epsilon", 1e-5))]


@rule("LayerNormalization")
def _layer_norm(ctx: NodeContext):
    if ctx.wants(1) or ctx.wants(2):
        return None
    x = ctx.input(0)
    ins = [x] + [v for v in ctx.inputs[1:3] if v is not None]
    return [ctx.op("layer_norm", *ins, axis=norm_axis(ctx, ctx.attr("axis", -1), x.rank),
                   epsilon=ctx.attr("epsilon", 1e-5))]


@rule("RMSNormalization")
def _rms_norm(ctx: NodeContext):
    x = ctx.input(0)
    return [ctx.op("rms_norm", x, ctx.input(1), axis=norm_axis(ctx, ctx.attr("axis", -1), x.rank),
                   epsilon=ctx.attr("epsilon", 1e-5))]


@rule("InstanceNormalization")
def _instance_norm(ctx: NodeContext):
    x, scale, bias = ctx.input(0), ctx.input(1), ctx.input(2)
    return [instance_norm(ctx.b, x, scale, bias, ctx.attr("epsilon", 1e-5))]


@rule("LpNormalization")
def _lp_norm(ctx: NodeContext):
    x = ctx.input(0)
    ax = norm_axis(ctx, ctx.attr("axis", -1), x.rank)
    if ctx.attr("p", 2) == 1:
        norm = ctx.op("reduce_sum", ctx.op("abs", x), axes=(ax,), keepdims=True)
    else:
        norm = ctx.op("sqrt", ctx.op("reduce_sum", ctx.op("mul", x, x), axes=(ax,), keepdims=True))
    zero = ctx.scalar(0, x)
    return [ctx.op("where", ctx.op("eq", norm, zero), zero, ctx.op("div", x, norm))]


@rule("LRN")
def _lrn(ctx: NodeContext):
    """x / (bias + alpha / size * sum of x^2 over the size channels around each one)^beta."""
    x = ctx.input(0)
    size = ctx.attr("size")
    alpha, beta, bias = ctx.attr("alpha", 1e-4), ctx.attr("beta", 0.75), ctx.attr("bias", 1.0)
    n, c = x.shape[:2]
    # channels become a spatial dim of a 2-D sum pool: [N, 1, C, rest]
    sq = reshape(ctx, ctx.op("mul", x, x), (n, 1, c, D.dim_prod(x.shape[2:])))
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    window = ctx.op("avg_pool", sq, kernel=(size, 1), stride=(1, 1), padding=((lo, hi), (0, 0)),
                    count_include_pad=True)
    total = reshape(ctx, window, x.shape)
    scale = ctx.op("add", ctx.scalar(bias, x), ctx.op("mul", total, ctx.scalar(alpha, x)))
    return [ctx.op("div", x, ctx.op("pow", scale, ctx.scalar(beta, x)))]


@rule("Dropout")
def _dropout(ctx: NodeContext):
    x = ctx.input(0)
    training = ctx.known(2) if ctx.input(2) is not None else np.array(False)
    if training is None or bool(np.asarray(training).item()):
        raise UnsupportedOpError(f"{ctx.label}: training-mode Dropout draws random numbers (out of scope)")
    outs = [x]
    if ctx.wants(1):
        outs.append(ctx.op("broadcast_to", ctx.const(np.array(True)), shape=x.shape))
    return outs
