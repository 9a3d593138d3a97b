"""Quantised tensors as ONNX defines them: ``quantize_linear``, ``dequantize_linear``,
``dynamic_quantize_linear``, ``matmul_integer``, ``conv_integer``, ``qlinear_matmul``, ``qlinear_conv``.

A quantised model imported from ONNX keeps these as ops, not as the float arithmetic they
stand for: the ONNX lowering writes them back as the same ONNX ops (so ONNX Runtime runs
its integer kernels and its QDQ fusions find their groups), and every other backend runs
their decompositions into core ops.  The IR has no quantised types: an 8-bit tensor is a
plain ``u8`` / ``i8`` tensor and a scale a float tensor.  Optional ONNX inputs are explicit
here: a missing zero point is a zero of the quantised type, so each op has a fixed arity.

Arithmetic, as ONNX Runtime's CPU kernels do it, so that integer results agree bit for bit:

- quantise: ``saturate(round_half_even(x / scale) + zero_point)``, the division in x's float
  type (f16 / bf16 in f32; x and scale share it), the sum in f32;
- dequantise: ``(x - zero_point) * scale`` in f32 (f64 for f64 scales);
- integer products: ``(a - a_zero_point) @ (b - b_zero_point)`` exactly, in i32;
- requantise (the ``qlinear_*`` ops): the i32 accumulator (plus the i32 bias) times
  ``a_scale * b_scale / y_scale`` in f32, rounded half to even, plus the output zero point,
  saturated;
- ``dynamic_quantize_linear``: u8 with ``scale = (max(x, 0) - min(x, 0)) / 255`` (1 where that
  is 0) and ``zero_point = round(clip(-min(x, 0) / scale, 0, 255))``.

Scales and zero points are per tensor (a scalar or one element), per axis (1-D along
``axis``) or, for quantise / dequantise, blocked (``block_size`` elements along ``axis``
share one; the parameter has x's rank).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .. import dims as D
from ..types import DType, TensorType
from .linalg import CONV_ATTRS, conv_params, conv_reference, conv_type_rule
from .registry import AttrSpec, OpDef, TypeRuleError, norm_axis, register

__all__ = ["QUANTIZED_DTYPES", "QDQ_OPS"]

QUANTIZED_DTYPES = (DType.u8, DType.i8, DType.u16, DType.i16, DType.i32)
_QUANTIZE_TO = (DType.u8, DType.i8, DType.u16, DType.i16)  # ONNX quantises to no i32 (whose range f32 cannot hold)
_AXIS_ATTRS = {"axis": AttrSpec("int", 1), "block_size": AttrSpec("int", 0)}


def _range_of(dt: DType) -> tuple[int, int]:
    info = np.iinfo(dt.numpy)
    return int(info.min), int(info.max)


def _is_scalar_like(t: TensorType) -> bool:
    return t.rank == 0 or (t.rank == 1 and t.shape[0] == 1)


# ----- type rules --------------------------------------------------------------------

def _check_param(op: str, what: str, p: TensorType, x: TensorType, axis: int, block: int) -> None:
    """A scale or zero point is per tensor, per axis (1-D, x.shape[axis] long) or blocked."""
    if _is_scalar_like(p):
        return
    if block < 0:
        raise TypeRuleError(f"{op}: block_size must be >= 0, got {block}")
    ax = norm_axis(op, axis, x.rank)
    if not block:
        if p.rank != 1 or (type(p.shape[0]) is int and type(x.shape[ax]) is int and p.shape[0] != x.shape[ax]):
            raise TypeRuleError(f"{op}: {what} {p} must be a scalar or 1-D of x's dim {ax} ({x.shape[ax]})")
        return
    if p.rank != x.rank:
        raise TypeRuleError(f"{op}: a blocked {what} must have x's rank {x.rank}, got {p}")


def _same_layout(op: str, scale: TensorType, zp: TensorType) -> None:
    if zp.shape != scale.shape and not (_is_scalar_like(zp) and _is_scalar_like(scale)):
        raise TypeRuleError(f"{op}: zero_point {zp} and scale {scale} differ in shape")


def _quantize_rule(types, attrs):
    x, scale, zp = types
    if not x.dtype.is_float or scale.dtype is not x.dtype:
        raise TypeRuleError(f"quantize_linear: x and scale must be one float dtype, got {x.dtype} and {scale.dtype}")
    if zp.dtype not in _QUANTIZE_TO:
        raise TypeRuleError(f"quantize_linear: zero_point must be one of {', '.join(map(str, _QUANTIZE_TO))}, "
                            f"got {zp.dtype}")
    _same_layout("quantize_linear", scale, zp)
    _check_param("quantize_linear", "scale", scale, x, attrs["axis"], attrs["block_size"])
    return [TensorType(zp.dtype, x.shape)]


def _dequantize_rule(types, attrs):
    x, scale, zp = types
    if x.dtype not in QUANTIZED_DTYPES or zp.dtype is not x.dtype:
        raise TypeRuleError(f"dequantize_linear: x and zero_point must be one quantised dtype, got {x.dtype} "
                            f"and {zp.dtype}")
    if not scale.dtype.is_float:
        raise TypeRuleError(f"dequantize_linear: scale must be float, got {scale.dtype}")
    _same_layout("dequantize_linear", scale, zp)
    _check_param("dequantize_linear", "scale", scale, x, attrs["axis"], attrs["block_size"])
    return [TensorType(scale.dtype, x.shape)]


def _eight_bit(op: str, *types: TensorType) -> None:
    for t in types:
        if t.dtype not in (DType.u8, DType.i8):
            raise TypeRuleError(f"{op}: quantised operands must be u8 or i8, got {t.dtype}")


def _matmul_integer_rule(types, attrs):
    a, b, a_zp, b_zp = types
    _eight_bit("matmul_integer", a, b)
    if a_zp.dtype is not a.dtype or b_zp.dtype is not b.dtype:
        raise TypeRuleError("matmul_integer: each zero point must have its operand's dtype")
    if a_zp.rank > 1 or b_zp.rank > 1:
        raise TypeRuleError("matmul_integer: zero points must be scalars or 1-D (per row of a, per column of b)")
    from .registry import get
    (out,) = get("matmul").type_rule([TensorType(DType.i32, a.shape), TensorType(DType.i32, b.shape)], {})
    return [out]


def _conv_integer_rule(types, attrs):
    x, w, x_zp, w_zp = types
    _eight_bit("conv_integer", x, w)
    if x_zp.dtype is not x.dtype or w_zp.dtype is not w.dtype or not _is_scalar_like(x_zp) or w_zp.rank > 1:
        raise TypeRuleError("conv_integer: x_zero_point must be a scalar of x's dtype, w_zero_point a scalar or "
                            "1-D (per output channel) of w's dtype")
    (out,) = conv_type_rule([TensorType(DType.f32, x.shape), TensorType(DType.f32, w.shape)], attrs,
                            op="conv_integer")
    return [TensorType(DType.i32, out.shape)]


def _check_qlinear_params(op: str, types: Sequence[TensorType]) -> None:
    a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp = types[:8]
    _eight_bit(op, a, b, y_zp)
    for s in (a_scale, b_scale, y_scale):
        if s.dtype is not DType.f32 or s.rank > 1:
            raise TypeRuleError(f"{op}: scales must be f32 scalars or 1-D, got {s}")
    if a_zp.dtype is not a.dtype or b_zp.dtype is not b.dtype:
        raise TypeRuleError(f"{op}: each zero point must have its operand's dtype")
    if not _is_scalar_like(y_scale) or not _is_scalar_like(y_zp):
        raise TypeRuleError(f"{op}: the output scale and zero point must be per tensor")


def _qlinear_matmul_rule(types, attrs):
    _check_qlinear_params("qlinear_matmul", types)
    a, b, y_zp = types[0], types[3], types[7]
    out = _matmul_integer_rule([a, b, types[2], types[5]], attrs)[0]
    return [TensorType(y_zp.dtype, out.shape)]


def _qlinear_conv_rule(types, attrs):
    _check_qlinear_params("qlinear_conv", types)
    x, w, y_zp = types[0], types[3], types[7]
    if len(types) == 9 and (types[8].dtype is not DType.i32 or types[8].rank != 1):
        raise TypeRuleError(f"qlinear_conv: bias must be i32 [{w.shape[0]}], got {types[8]}")
    out = _conv_integer_rule([x, w, types[2], types[5]], attrs)[0]
    return [TensorType(y_zp.dtype, out.shape)]


def _dynamic_quantize_rule(types, attrs):
    (x,) = types
    if x.dtype is not DType.f32:
        raise TypeRuleError(f"dynamic_quantize_linear: x must be f32, got {x.dtype}")
    return [TensorType(DType.u8, x.shape), TensorType(DType.f32, ()), TensorType(DType.u8, ())]


# ----- references --------------------------------------------------------------------

def _spread(p: np.ndarray, shape: tuple[int, ...], axis: int, block: int) -> np.ndarray:
    """A scale or zero point laid out to broadcast against a tensor of ``shape``."""
    if p.ndim == 0 or (p.size == 1 and p.ndim == 1):
        return p.reshape(())
    ax = axis % len(shape)
    if not block:
        return p.reshape(tuple(p.shape[0] if i == ax else 1 for i in range(len(shape))))
    return np.take(np.repeat(p, block, axis=ax), np.arange(shape[ax]), axis=ax)


def _saturate(v: np.ndarray, dt: DType) -> np.ndarray:
    lo, hi = _range_of(dt)
    return np.clip(v, lo, hi).astype(dt.numpy)


def quantize_array(x: np.ndarray, scale: np.ndarray, zp: np.ndarray, out: DType) -> np.ndarray:
    """``saturate(round(x / scale) + zp)``; scale and zp already spread to x."""
    compute = np.float64 if x.dtype == np.float64 else np.float32
    q = np.round(x.astype(compute) / scale.astype(compute))
    return _saturate(q + zp.astype(compute), out)


def _quantize_ref(inputs, attrs, regions):
    x, scale, zp = inputs
    axis, block = attrs["axis"], attrs["block_size"]
    return [quantize_array(x, _spread(scale, x.shape, axis, block), _spread(zp, x.shape, axis, block),
                      DType.from_numpy(zp.dtype))]


def _dequantize_ref(inputs, attrs, regions):
    x, scale, zp = inputs
    axis, block = attrs["axis"], attrs["block_size"]
    wide = np.float64 if scale.dtype == np.float64 else np.float32
    centred = x.astype(np.int64) - _spread(zp, x.shape, axis, block).astype(np.int64)
    y = centred.astype(wide) * _spread(scale, x.shape, axis, block).astype(wide)
    return [y.astype(scale.dtype)]


def _centred(v: np.ndarray, zp: np.ndarray, per_row: bool) -> np.ndarray:
    """``v - zp`` in i64; a 1-D zero point of ``a`` holds one value per row."""
    zp = zp.astype(np.int64)
    if zp.ndim == 1 and zp.size > 1 and per_row:
        zp = zp.reshape(-1, 1)
    elif zp.size == 1:
        zp = zp.reshape(())
    return v.astype(np.int64) - zp


def _matmul_integer(a, b, a_zp, b_zp) -> np.ndarray:
    return np.matmul(_centred(a, a_zp, True), _centred(b, b_zp, False)).astype(np.int32)


def _conv_integer(x, w, x_zp, w_zp, attrs) -> np.ndarray:
    stride, padding, dilation, lhs = conv_params("conv_integer", attrs, x.ndim - 2)
    wz = w_zp.astype(np.int64)
    wz = wz.reshape((-1,) + (1,) * (w.ndim - 1)) if wz.size > 1 else wz.reshape(())
    xc, wc = x.astype(np.int64) - x_zp.astype(np.int64).reshape(()), w.astype(np.int64) - wz
    return conv_reference(xc, wc, None, stride, padding, dilation, attrs["groups"], lhs).astype(np.int32)


def _shaped(p: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A per-tensor parameter as a scalar, a per-row / per-column / per-channel one as ``shape``."""
    return p.reshape(()) if p.size == 1 else p.reshape(shape)


def _requantize(acc: np.ndarray, a_scale: np.ndarray, b_scale: np.ndarray, y_scale: np.ndarray,
                y_zp: np.ndarray) -> np.ndarray:
    """``saturate(round(acc * (a_scale * b_scale / y_scale)) + y_zp)`` in f32; the scales already shaped."""
    factor = (a_scale.astype(np.float32) * b_scale.astype(np.float32)) / y_scale.astype(np.float32).reshape(())
    y = np.round(acc.astype(np.float32) * factor) + y_zp.astype(np.float32).reshape(())
    return _saturate(y, DType.from_numpy(y_zp.dtype))


def _qlinear_matmul_ref(inputs, attrs, regions):
    a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp = inputs
    acc = _matmul_integer(a, b, a_zp, b_zp)
    # a per-row a_scale runs down the rows, a per-column b_scale along the columns
    return [_requantize(acc, _shaped(a_scale, (-1, 1)), _shaped(b_scale, (-1,)), y_scale, y_zp)]


def _qlinear_conv_ref(inputs, attrs, regions):
    x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp = inputs[:8]
    acc = _conv_integer(x, w, x_zp, w_zp, attrs).astype(np.int64)
    channel = (-1,) + (1,) * (x.ndim - 2)
    if len(inputs) == 9:
        acc = acc + inputs[8].astype(np.int64).reshape(channel)
    return [_requantize(acc, x_scale.reshape(()), _shaped(w_scale, channel), y_scale, y_zp)]


def dynamic_quantization_params(lo: float, hi: float) -> tuple[np.float32, np.uint8]:
    """The u8 scale and zero point ONNX Runtime's DynamicQuantizeLinear picks for values in [lo, hi]."""
    lo, hi = np.float32(min(lo, 0.0)), np.float32(max(hi, 0.0))
    scale = np.float32(1.0) if hi == lo else np.float32((hi - lo) / np.float32(255))
    zp = np.round(np.clip(np.float32(0) - lo / scale, 0, 255))
    return scale, np.uint8(zp)


def _dynamic_quantize_ref(inputs, attrs, regions):
    (x,) = inputs
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    scale, zp = dynamic_quantization_params(lo, hi)
    return [quantize_array(x, np.asarray(scale), np.asarray(zp), DType.u8), np.asarray(scale, np.float32),
            np.asarray(zp, np.uint8)]


# ----- decompositions (the other backends' lowering) ---------------------------------

def _spread_value(b, p, x, axis: int, block: int):
    """``_spread`` in IR ops."""
    if _is_scalar_like(p.type):
        return b.op("reshape", p, shape=()) if p.rank else p
    ax = norm_axis("quantize", axis, x.rank)
    if not block:
        return b.op("reshape", p, shape=tuple(p.shape[0] if i == ax else 1 for i in range(x.rank)))
    n = p.shape[ax]
    spread = b.op("unsqueeze", p, axes=(ax + 1,))
    spread = b.op("broadcast_to", spread, shape=p.shape[:ax + 1] + (block,) + p.shape[ax + 1:])
    spread = b.op("reshape", spread, shape=p.shape[:ax] + (D.dim_mul(n, block),) + p.shape[ax + 1:])
    if not (type(n) is int and type(x.shape[ax]) is int and n * block == x.shape[ax]):
        spread = b.op("slice", spread, starts=(0,), stops=(x.shape[ax],), axes=(ax,))
    return spread


def _cast(b, v, dt: DType):
    return v if v.dtype is dt else b.op("cast", v, dtype=dt)


def _saturate_value(b, v, out: DType):
    lo, hi = _range_of(out)
    v = b.op("min", b.op("max", v, b.scalar(lo, v)), b.scalar(hi, v))
    return b.op("cast", v, dtype=out)


def _quantize_values(b, x, scale, zp, out: DType):
    compute = DType.f64 if x.dtype is DType.f64 else DType.f32
    q = b.op("round", b.op("div", _cast(b, x, compute), _cast(b, scale, compute)))
    return _saturate_value(b, b.op("add", q, _cast(b, zp, compute)), out)


def _quantize_decompose(b, inputs, attrs):
    x, scale, zp = inputs
    axis, block = attrs["axis"], attrs["block_size"]
    return [_quantize_values(b, x, _spread_value(b, scale, x, axis, block), _spread_value(b, zp, x, axis, block),
                             zp.dtype)]


def _dequantize_decompose(b, inputs, attrs):
    x, scale, zp = inputs
    axis, block = attrs["axis"], attrs["block_size"]
    wide = DType.f64 if scale.dtype is DType.f64 else DType.f32
    centred = b.op("sub", _cast(b, x, DType.i32), _cast(b, _spread_value(b, zp, x, axis, block), DType.i32))
    y = b.op("mul", _cast(b, centred, wide), _cast(b, _spread_value(b, scale, x, axis, block), wide))
    return [_cast(b, y, scale.dtype)]


def _centred_value(b, v, zp, per_row: bool):
    out = _cast(b, v, DType.i32)
    if _is_scalar_like(zp.type):
        zp = b.op("reshape", zp, shape=()) if zp.rank else zp
    elif per_row:
        zp = b.op("reshape", zp, shape=(zp.shape[0], 1))
    return b.op("sub", out, _cast(b, zp, DType.i32))


def _matmul_integer_values(b, a, b_, a_zp, b_zp):
    return b.op("matmul", _centred_value(b, a, a_zp, True), _centred_value(b, b_, b_zp, False))


def _conv_integer_values(b, x, w, x_zp, w_zp, attrs):
    """The i32 conv of zero-point-centred operands.  The IR's conv is float only: it runs in f32
    while every partial sum of 8-bit products stays below 2**24, so exactly, and in f64 otherwise."""
    terms = np.prod([d if type(d) is int else 1 << 30 for d in w.shape[1:]], dtype=np.float64)
    compute = DType.f32 if terms * 2 ** 16 < 2 ** 24 else DType.f64
    xc = _cast(b, _centred_value(b, x, x_zp, False), compute)
    wc = _cast(b, w, DType.i32)
    wz = _cast(b, w_zp, DType.i32)
    wz = b.op("reshape", wz, shape=(w_zp.shape[0],) + (1,) * (w.rank - 1)) if not _is_scalar_like(w_zp.type) \
        else (b.op("reshape", wz, shape=()) if wz.rank else wz)
    y = b.op("conv", xc, _cast(b, b.op("sub", wc, wz), compute), **attrs)
    return _cast(b, y, DType.i32)


def _matmul_integer_decompose(b, inputs, attrs):
    return [_matmul_integer_values(b, *inputs)]


def _conv_integer_decompose(b, inputs, attrs):
    return [_conv_integer_values(b, *inputs, attrs)]


def _shaped_value(b, p, shape: tuple[D.Dim, ...]):
    """``_shaped`` in IR ops."""
    if _is_scalar_like(p.type):
        return b.op("reshape", p, shape=()) if p.rank else p
    return b.op("reshape", p, shape=shape)


def _requantize_values(b, acc, a_scale, b_scale, y_scale, y_zp):
    factor = b.op("div", b.op("mul", a_scale, b_scale), _shaped_value(b, y_scale, ()))
    y = b.op("round", b.op("mul", _cast(b, acc, DType.f32), factor))
    return _saturate_value(b, b.op("add", y, _cast(b, _shaped_value(b, y_zp, ()), DType.f32)), y_zp.dtype)


def _qlinear_matmul_decompose(b, inputs, attrs):
    a, a_scale, a_zp, w, w_scale, w_zp, y_scale, y_zp = inputs
    acc = _matmul_integer_values(b, a, w, a_zp, w_zp)
    rows = _shaped_value(b, a_scale, (a_scale.shape[0], 1) if a_scale.rank else ())
    cols = _shaped_value(b, w_scale, (w_scale.shape[0],) if w_scale.rank else ())
    return [_requantize_values(b, acc, rows, cols, y_scale, y_zp)]


def _qlinear_conv_decompose(b, inputs, attrs):
    x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp = inputs[:8]
    acc = _conv_integer_values(b, x, w, x_zp, w_zp, attrs)
    channel = (w.shape[0],) + (1,) * (x.rank - 2)
    if len(inputs) == 9:
        acc = b.op("add", acc, b.op("reshape", inputs[8], shape=(inputs[8].shape[0],) + (1,) * (x.rank - 2)))
    return [_requantize_values(b, acc, _shaped_value(b, x_scale, ()), _shaped_value(b, w_scale, channel), y_scale,
                               y_zp)]


def _dynamic_quantize_decompose(b, inputs, attrs):
    (x,) = inputs
    axes = tuple(range(x.rank))
    zero = b.scalar(0.0, x)
    lo = b.op("min", b.op("reduce_min", x, axes=axes), zero)
    hi = b.op("max", b.op("reduce_max", x, axes=axes), zero)
    span = b.op("sub", hi, lo)
    scale = b.op("where", b.op("eq", span, zero), b.scalar(1.0, x), b.op("div", span, b.scalar(255.0, x)))
    zp = b.op("round", b.op("min", b.op("max", b.op("sub", zero, b.op("div", lo, scale)), zero),
                            b.scalar(255.0, x)))
    zp = b.op("cast", zp, dtype=DType.u8)
    return [_quantize_values(b, x, scale, zp, DType.u8), scale, zp]


# ----- registration ------------------------------------------------------------------

register(OpDef("quantize_linear", _quantize_rule, _quantize_ref, min_inputs=3, max_inputs=3, attrs=dict(_AXIS_ATTRS),
               composite=True, decompose=_quantize_decompose,
               doc="ONNX QuantizeLinear: saturate(round(x / scale) + zero_point) in zero_point's dtype"))
register(OpDef("dequantize_linear", _dequantize_rule, _dequantize_ref, min_inputs=3, max_inputs=3,
               attrs=dict(_AXIS_ATTRS), composite=True, decompose=_dequantize_decompose,
               doc="ONNX DequantizeLinear: (x - zero_point) * scale in scale's dtype"))
register(OpDef("dynamic_quantize_linear", _dynamic_quantize_rule, _dynamic_quantize_ref, min_inputs=1,
               max_inputs=1, composite=True, decompose=_dynamic_quantize_decompose,
               doc="ONNX DynamicQuantizeLinear: x -> (u8 x, f32 scale, u8 zero point) over x's range and 0"))
register(OpDef("matmul_integer", _matmul_integer_rule, lambda xs, a, r: [_matmul_integer(*xs)], min_inputs=4,
               max_inputs=4, composite=True, decompose=_matmul_integer_decompose,
               doc="ONNX MatMulInteger: (a - a_zero_point) @ (b - b_zero_point) in i32"))
register(OpDef("conv_integer", _conv_integer_rule, lambda xs, a, r: [_conv_integer(*xs, a)], min_inputs=4,
               max_inputs=4, attrs=dict(CONV_ATTRS), composite=True, decompose=_conv_integer_decompose,
               doc="ONNX ConvInteger: conv(x - x_zero_point, w - w_zero_point) in i32"))
register(OpDef("qlinear_matmul", _qlinear_matmul_rule, _qlinear_matmul_ref, min_inputs=8, max_inputs=8,
               composite=True, decompose=_qlinear_matmul_decompose,
               doc="ONNX QLinearMatMul: the integer matmul requantised to y_scale / y_zero_point"))
register(OpDef("qlinear_conv", _qlinear_conv_rule, _qlinear_conv_ref, min_inputs=8, max_inputs=9,
               attrs=dict(CONV_ATTRS), composite=True, decompose=_qlinear_conv_decompose,
               doc="ONNX QLinearConv: the integer conv plus the i32 bias, requantised to y_scale / y_zero_point"))

#: The ops of this module: a fusion never swallows one, and fold_constants leaves a quantised
#: weight quantised.
QDQ_OPS: frozenset[str] = frozenset({"quantize_linear", "dequantize_linear", "dynamic_quantize_linear",
                                     "matmul_integer", "conv_integer", "qlinear_matmul", "qlinear_conv"})
