"""ONNX quantisation ops decomposed into IR arithmetic: ``QuantizeLinear``,
``DequantizeLinear``, ``MatMulInteger``, ``ConvInteger``, ``QLinearMatMul`` and
``QLinearConv``.

The IR has no quantised types: an 8-bit tensor is a plain ``u8`` / ``i8`` tensor and
the scales are float tensors.  Quantising is ``clip(round(x / scale) + zero_point)``
with ONNX's rounding (half to even, the IR's ``round``) and saturation to the target
type's range; integer products accumulate in i32 like ONNX's reference.  Per-tensor,
per-axis and blocked scales (opset 21) are all broadcast to the input's shape.
"""

from __future__ import annotations

import numpy as np

from ...ir import DType, Value
from .context import NodeContext, conv_attrs, norm_axis, onnx_dtype, reshape, rule

__all__: list[str] = []


def _range_of(dt: DType) -> tuple[int, int]:
    info = np.iinfo(dt.numpy)
    return int(info.min), int(info.max)


def _quant_param(ctx: NodeContext, p: Value, x: Value, axis: int, block_size: int) -> Value:
    """A scale or zero point laid out to broadcast against ``x`` (per tensor, per axis or blocked)."""
    if p.rank == 0:
        return p
    if all(type(d) is int for d in p.shape) and int(np.prod(p.shape)) == 1:
        return reshape(ctx, p, ())
    ax = norm_axis(ctx, axis, x.rank)
    if not block_size:
        if p.rank != 1:
            raise ctx.unsupported(f"a per-axis parameter of shape {list(p.shape)}: it must be 1-D without block_size")
        return reshape(ctx, p, tuple(p.shape[0] if i == ax else 1 for i in range(x.rank)))
    if p.rank != x.rank:
        raise ctx.unsupported(f"blocked quantisation needs a parameter of rank {x.rank}, got {list(p.shape)}")
    # repeat each block's parameter block_size times along the axis, then trim a ragged last block
    n = p.shape[ax]
    spread = ctx.op("unsqueeze", p, axes=(ax + 1,))
    spread = ctx.op("broadcast_to", spread, shape=p.shape[:ax + 1] + (block_size,) + p.shape[ax + 1:])
    spread = reshape(ctx, spread, p.shape[:ax] + (n * block_size,) + p.shape[ax + 1:])
    if n * block_size != x.shape[ax]:
        spread = ctx.op("slice", spread, starts=(0,), stops=(x.shape[ax],), axes=(ax,))
    return spread


def _saturate(ctx: NodeContext, v: Value, zero_point: Value | None, out: DType) -> Value:
    """``cast(clip(v + zero_point, range of out))`` for an integral-valued float tensor ``v``."""
    if zero_point is not None:
        v = ctx.op("add", v, ctx.cast(zero_point, v.dtype))
    lo, hi = _range_of(out)
    v = ctx.op("min", ctx.op("max", v, ctx.scalar(lo, v)), ctx.scalar(hi, v))
    return ctx.cast(v, out)


@rule("QuantizeLinear")
def _quantize(ctx: NodeContext):
    x, scale, zp = ctx.input(0), ctx.input(1), ctx.input(2)
    axis, block = ctx.attr("axis", 1), ctx.attr("block_size", 0)
    if zp is not None:
        out = zp.dtype
    elif ctx.attr("output_dtype"):
        out = onnx_dtype(ctx.attr("output_dtype"), f"{ctx.label}: its output_dtype")
    else:
        out = DType.u8
    if not out.is_int:
        raise ctx.unsupported(f"quantising to {out}")
    precision = onnx_dtype(ctx.attr("precision"), ctx.label) if ctx.attr("precision") else \
        (x.dtype if x.dtype.is_float else DType.f32)
    q = ctx.op("div", ctx.cast(x, precision), ctx.cast(_quant_param(ctx, scale, x, axis, block), precision))
    # rounded in the compute type like ONNX, then widened so adding the zero point is exact
    wide = DType.f64 if precision is DType.f64 else DType.f32
    q = ctx.cast(ctx.op("round", q), wide)
    zp = _quant_param(ctx, zp, x, axis, block) if zp is not None else None
    return [_saturate(ctx, q, zp, out)]


@rule("DequantizeLinear")
def _dequantize(ctx: NodeContext):
    x, scale, zp = ctx.input(0), ctx.input(1), ctx.input(2)
    axis, block = ctx.attr("axis", 1), ctx.attr("block_size", 0)
    out = onnx_dtype(ctx.attr("output_dtype"), f"{ctx.label}: its output_dtype") if ctx.attr("output_dtype") \
        else scale.dtype
    wide = DType.f64 if scale.dtype is DType.f64 else DType.f32
    y = ctx.cast(x, wide)
    if zp is not None:
        y = ctx.op("sub", y, ctx.cast(_quant_param(ctx, zp, x, axis, block), wide))
    y = ctx.op("mul", y, ctx.cast(_quant_param(ctx, scale, x, axis, block), wide))
    return [ctx.cast(y, out)]


def _centered(ctx: NodeContext, v: Value, zp: Value | None, row_axis: int | None) -> Value:
    """``v - zero_point`` in i32; a 1-D zero point of ``a`` holds one value per row (``row_axis``)."""
    out = ctx.cast(v, DType.i32)
    if zp is None:
        return out
    if zp.rank == 1 and all(type(d) is int for d in zp.shape) and zp.shape[0] == 1:
        zp = reshape(ctx, zp, ())
    elif zp.rank == 1 and row_axis is not None:
        zp = reshape(ctx, zp, (zp.shape[0], 1))
    return ctx.op("sub", out, ctx.cast(zp, DType.i32))


def _integer_product(ctx: NodeContext, a: Value, a_zp: Value | None, b: Value, b_zp: Value | None,
                     conv: bool) -> Value:
    """The i32 product of zero-point-centred operands: a matmul, or a conv (the IR's conv is float
    only: it runs in f32 while every partial sum of 8-bit products stays below 2**24, so exactly,
    and in f64 otherwise)."""
    if not conv:
        return ctx.op("matmul", _centered(ctx, a, a_zp, row_axis=a.rank - 2), _centered(ctx, b, b_zp, None))
    terms = np.prod([d if type(d) is int else 1 << 30 for d in b.shape[1:]], dtype=np.float64)
    span = 2 ** (8 * max(a.dtype.itemsize, 1) + 8 * max(b.dtype.itemsize, 1))
    compute = DType.f32 if a.dtype.itemsize == b.dtype.itemsize == 1 and terms * span < 2 ** 24 else DType.f64
    x = ctx.cast(_centered(ctx, a, a_zp, None), compute)
    w = _centered(ctx, b, None, None)
    if b_zp is not None:
        # one zero point per output channel
        shape = (b_zp.shape[0],) + (1,) * (b.rank - 1) if b_zp.rank == 1 and b_zp.shape[0] != 1 else ()
        w = ctx.op("sub", w, reshape(ctx, ctx.cast(b_zp, DType.i32), shape))
    attrs = conv_attrs(ctx, a, b.shape[2:])
    y = ctx.op("conv", x, ctx.cast(w, compute), groups=ctx.attr("group", 1), **attrs)
    return ctx.cast(y, DType.i32)


@rule("MatMulInteger", "ConvInteger")
def _integer_op(ctx: NodeContext):
    conv = ctx.node.op_type == "ConvInteger"
    return [_integer_product(ctx, ctx.input(0), ctx.input(2), ctx.input(1), ctx.input(3), conv)]


def _as_scalar_or_rows(ctx: NodeContext, p: Value, rows: bool, rank: int) -> Value:
    if p.rank == 1 and all(type(d) is int for d in p.shape) and p.shape[0] == 1:
        return reshape(ctx, p, ())
    if p.rank == 1 and rows:
        return reshape(ctx, p, (p.shape[0],) + (1,) * (rank - 1))
    return p


@rule("QLinearMatMul", "QLinearConv")
def _qlinear(ctx: NodeContext):
    conv = ctx.node.op_type == "QLinearConv"
    a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp = (ctx.input(i) for i in range(8))
    acc = _integer_product(ctx, a, a_zp, b, b_zp, conv)
    if conv and ctx.input(8) is not None:
        acc = ctx.op("add", acc, reshape(ctx, ctx.input(8), (ctx.input(8).shape[0],) + (1,) * (acc.rank - 2)))
    # the rescale factor is formed in the scales' type; ONNX's reference applies it in f64
    sa = _as_scalar_or_rows(ctx, a_scale, not conv, 2)
    sb = _as_scalar_or_rows(ctx, b_scale, conv, acc.rank - 1)
    factor = ctx.op("div", ctx.op("mul", sa, sb), _as_scalar_or_rows(ctx, y_scale, False, 1))
    y = ctx.op("round", ctx.op("mul", ctx.cast(acc, DType.f64), ctx.cast(factor, DType.f64)))
    out = y_zp.dtype if y_zp is not None else a.dtype
    zp = _as_scalar_or_rows(ctx, y_zp, False, 1) if y_zp is not None else None
    return [_saturate(ctx, y, zp, out)]
