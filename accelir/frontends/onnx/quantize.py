"""ONNX quantisation ops as the IR's quantised ops (``accelir.ops.qdq``): ``QuantizeLinear``,
``DequantizeLinear``, ``DynamicQuantizeLinear``, ``MatMulInteger``, ``ConvInteger``,
``QLinearMatMul`` and ``QLinearConv``.

A quantised model stays quantised: a QDQ pair is a ``quantize_linear`` and a
``dequantize_linear`` node, an integer kernel its own node, not the float arithmetic they
stand for (the ops' decompositions hold that, for the backends without the kernels).  The
ONNX lowering writes the same ops back.  ONNX's optional inputs become explicit: a missing
zero point is a zero of the quantised type, a missing QuantizeLinear zero point a u8 zero
(or one of ``output_dtype``).  Per-tensor, per-axis and blocked (opset 21) scales are all
kept as they are.
"""

from __future__ import annotations

import numpy as np

from ...ir import DType, Value
from ...ops.qdq import QUANTIZED_DTYPES
from .context import NodeContext, conv_attrs, onnx_dtype, rule

__all__: list[str] = []


def _zeros_like(ctx: NodeContext, p: Value, dt: DType) -> Value:
    """A zero point of ``dt`` in the shape of the scale ``p`` (ONNX's default zero point)."""
    if not all(type(d) is int for d in p.shape):
        raise ctx.unsupported(f"a scale of symbolic shape {list(p.shape)} without a zero point")
    return ctx.const(np.zeros(p.shape, dt.numpy))


def _quantized(ctx: NodeContext, dt: DType, what: str) -> DType:
    if dt not in QUANTIZED_DTYPES:
        raise ctx.unsupported(f"{what} of type {dt}: accelir's quantised ops take "
                              f"{', '.join(map(str, QUANTIZED_DTYPES))}")
    return dt


def _f32_scale(ctx: NodeContext, s: Value) -> Value:
    """A QLinear op's scale in f32, the type ONNX Runtime's integer kernels requantise in."""
    return s if s.dtype is DType.f32 else ctx.cast(s, DType.f32)


def _zero_point(ctx: NodeContext, i: int, operand: Value, scale_like: Value | None = None) -> Value:
    zp = ctx.input(i)
    if zp is None:
        return _zeros_like(ctx, scale_like, operand.dtype) if scale_like is not None else \
            ctx.const(np.zeros((), operand.dtype.numpy))
    if zp.dtype is not operand.dtype:
        raise ctx.unsupported(f"zero point of type {zp.dtype} for an operand of type {operand.dtype}")
    return zp


def _axis_attrs(ctx: NodeContext) -> dict[str, int]:
    return {"axis": int(ctx.attr("axis", 1)), "block_size": int(ctx.attr("block_size", 0))}


@rule("QuantizeLinear")
def _quantize(ctx: NodeContext):
    x, scale, zp = ctx.input(0), ctx.input(1), ctx.input(2)
    if zp is not None:
        out = zp.dtype
    elif ctx.attr("output_dtype"):
        out = onnx_dtype(ctx.attr("output_dtype"), f"{ctx.label}: its output_dtype")
    else:
        out = DType.u8
    _quantized(ctx, out, "quantising to a type")
    if ctx.attr("precision"):
        x = ctx.cast(x, onnx_dtype(ctx.attr("precision"), ctx.label))
    if x.dtype is not scale.dtype:
        scale = ctx.cast(scale, x.dtype)
    zp = zp if zp is not None else _zeros_like(ctx, scale, out)
    return [ctx.op("quantize_linear", x, scale, zp, **_axis_attrs(ctx))]


@rule("DequantizeLinear")
def _dequantize(ctx: NodeContext):
    x, scale = ctx.input(0), ctx.input(1)
    _quantized(ctx, x.dtype, "dequantising a tensor")
    zp = _zero_point(ctx, 2, x, scale)
    y = ctx.op("dequantize_linear", x, scale, zp, **_axis_attrs(ctx))
    if ctx.attr("output_dtype"):
        y = ctx.cast(y, onnx_dtype(ctx.attr("output_dtype"), f"{ctx.label}: its output_dtype"))
    return [y]


@rule("DynamicQuantizeLinear")
def _dynamic_quantize(ctx: NodeContext):
    x = ctx.input(0)
    if x.dtype is not DType.f32:
        raise ctx.unsupported(f"DynamicQuantizeLinear of {x.dtype}: ONNX defines it for f32")
    return list(ctx.ops("dynamic_quantize_linear", x))


@rule("MatMulInteger")
def _matmul_integer(ctx: NodeContext):
    a, b = ctx.input(0), ctx.input(1)
    return [ctx.op("matmul_integer", a, b, _zero_point(ctx, 2, a), _zero_point(ctx, 3, b))]


@rule("ConvInteger")
def _conv_integer(ctx: NodeContext):
    x, w = ctx.input(0), ctx.input(1)
    return [ctx.op("conv_integer", x, w, _zero_point(ctx, 2, x), _zero_point(ctx, 3, w),
                   groups=ctx.attr("group", 1), **conv_attrs(ctx, x, w.shape[2:]))]


@rule("QLinearMatMul")
def _qlinear_matmul(ctx: NodeContext):
    a, b = ctx.input(0), ctx.input(3)
    y_zp = ctx.input(7)
    if y_zp is None:
        raise ctx.unsupported("QLinearMatMul without y_zero_point: its output type is unknown")
    return [ctx.op("qlinear_matmul", a, _f32_scale(ctx, ctx.input(1)), _zero_point(ctx, 2, a), b,
                   _f32_scale(ctx, ctx.input(4)), _zero_point(ctx, 5, b), _f32_scale(ctx, ctx.input(6)), y_zp)]


@rule("QLinearConv")
def _qlinear_conv(ctx: NodeContext):
    x, w = ctx.input(0), ctx.input(3)
    y_zp = ctx.input(7)
    if y_zp is None:
        raise ctx.unsupported("QLinearConv without y_zero_point: its output type is unknown")
    inputs = [x, _f32_scale(ctx, ctx.input(1)), _zero_point(ctx, 2, x), w, _f32_scale(ctx, ctx.input(4)),
              _zero_point(ctx, 5, w), _f32_scale(ctx, ctx.input(6)), y_zp]
    if ctx.input(8) is not None:
        inputs.append(ctx.input(8))
    return [ctx.op("qlinear_conv", *inputs, groups=ctx.attr("group", 1), **conv_attrs(ctx, x, w.shape[2:]))]
