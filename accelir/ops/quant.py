"""Integer-quantised contractions: ``dynamic_quant_linear`` (int8) and ``matmul_nbits`` (blockwise int4 / int8).

``dynamic_quant_linear(x, w, w_scale[, bias]) {activation}``: ``x`` f32 ``[..., K]`` is quantised at
run time exactly as onnxruntime's ``DynamicQuantizeLinear`` does (uint8, asymmetric, one scale and
zero point for the whole tensor); ``w`` is i8 ``[K, N]``, symmetric (zero point 0) with one scale per
output channel ``w_scale`` f32 ``[N]``.  The product accumulates in int32 and is rescaled to f32 by
``x_scale * w_scale[n]``; the bias and activation follow, as in ``linear``.

``matmul_nbits(x, b, scales[, zero_points][, bias]) {bits, block_size, zero_points, accuracy_level,
activation}``: the weight ``[K, N]`` is held in onnxruntime's ``MatMulNBits`` layout, transposed and
cut into blocks of ``block_size`` along K: ``b`` u8 ``[N, n_blocks, block_size * bits / 8]`` (for 4
bits element ``2i`` of a block in the low nibble of byte ``i``, ``2i + 1`` in the high one),
``scales`` f32 ``[N, n_blocks]``, ``zero_points`` u8 ``[N, ceil(n_blocks * bits / 8)]`` packed the
same way (absent: the symmetric zero point ``2^(bits-1)``).  Weight ``k, n`` is
``(q - zp) * scale`` of its block; the reference dequantises and multiplies in f32, which is
onnxruntime's arithmetic at ``accuracy_level`` 0 and 1 (levels 2 and 3 let a CPU with f16 / bf16
kernels compute in those; the reference stays f32, as onnxruntime does on x86).  At level 4
(``ACCURACY_INT8``) onnxruntime's CPU kernel (MLAS, CompInt8) also quantises ``x`` to int8, per row
and per block of ``block_size`` along K, symmetric: ``amax = max|block|``, ``scale = amax / 127``,
``q = round_half_even(x * (127 / amax))`` (0 for an all-zero block), all in f32, then multiplies
integers and rescales by ``scale * w_scale`` per block.  The reference, the decomposition and the
XLA lowering round ``x`` exactly so (:func:`quantize_activation_blocks`) and multiply the rounded
``q * scale`` by the dequantised weight in f32: the same sum in exact arithmetic, so they differ
from onnxruntime by the order of f32 additions only: about 1e-7 of the sum of magnitudes
``|x_rounded| @ |W|`` in the tests, which hold them within 1e-5 of it (without the rounding of x
the difference is ~4e-4 of it).

The helpers ``quantize_dynamic_activation``, ``quantize_per_channel``, ``quantize_blockwise``,
``quantize_activation_blocks``, ``pack_nbits`` and ``unpack_nbits`` are what the passes and the
lowerings use, so the numbers a test checks are those the toolkit computes.
"""

from __future__ import annotations

import math

import numpy as np

from ..types import DType, TensorType
from .activations import ACTIVATIONS, activation
from .qdq import dynamic_quantization_params, quantize_array
from .registry import AttrSpec, OpDef, TypeRuleError, register

__all__ = ["QUANT_OPS", "quantize_dynamic_activation", "quantize_per_channel", "quantize_blockwise",
           "pack_nbits", "unpack_nbits", "dequantize_nbits", "nbits_blocks", "dynamic_quant_accumulate",
           "ACCURACY_INT8", "quantize_activation_blocks", "round_activation_blocks"]

#: The ops a quantisation pass leaves; quantising a graph holding them again changes nothing.
QUANT_OPS = ("dynamic_quant_linear", "matmul_nbits")

_F32 = np.float32

#: ``matmul_nbits``' accuracy level at which onnxruntime's CPU kernel quantises ``x`` to int8 per block
ACCURACY_INT8 = 4


# ----- the arithmetic ------------------------------------------------------------------

def quantize_dynamic_activation(x: np.ndarray) -> tuple[np.ndarray, np.float32, np.uint8]:
    """``x`` as onnxruntime's DynamicQuantizeLinear quantises it: (uint8 values, scale, zero point).

    The range is widened to hold 0; scale = (max - min) / 255 (1 for a zero range); the zero
    point is ``round_half_even(clip(-min / scale, 0, 255))``; each value is
    ``clip(round_half_even(x / scale) + zp, 0, 255)``, all in f32 as its kernel computes: the
    arithmetic of the ``dynamic_quantize_linear`` op (``accelir.ops.qdq``), shared with it.
    """
    x = np.asarray(x, dtype=_F32)
    scale, zp = dynamic_quantization_params(*((float(x.min()), float(x.max())) if x.size else (0.0, 0.0)))
    with np.errstate(all="ignore"):
        q = quantize_array(x, np.asarray(scale), np.asarray(zp), DType.u8)
    return q, scale, zp


def quantize_per_channel(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A [K, N] weight as symmetric int8 with one scale per output channel (column): (q, scale).

    scale = max|w[:, n]| / 127 (1 for an all-zero column), q in [-127, 127]."""
    w = np.asarray(w, dtype=_F32)
    amax = np.max(np.abs(w), axis=0)
    scale = np.where(amax > 0, amax / _F32(127.0), _F32(1.0)).astype(_F32)
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return q, scale


def nbits_blocks(k: int, block_size: int) -> int:
    return -(-k // block_size)


def quantize_blockwise(w: np.ndarray, bits: int, block_size: int,
                       symmetric: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A [K, N] weight in blocks of ``block_size`` along K: (q u8 [N, K_padded], scales f32 [N, n_blocks],
    zero points u8 [N, n_blocks]), q and zero points unsigned in [0, 2^bits).

    Symmetric: zero point 2^(bits-1), scale = max|block| / 2^(bits-1) (so the block's extreme maps
    to -2^(bits-1), the wider side of the range, as onnxruntime's quantizer does).  Asymmetric: the
    block's [min, max] (widened to hold 0) over the whole range.  K is padded with zeros to whole blocks.
    """
    w = np.asarray(w, dtype=_F32)
    k, n = w.shape
    nb = nbits_blocks(k, block_size)
    blocks = np.zeros((n, nb * block_size), _F32)
    blocks[:, :k] = w.T
    blocks = blocks.reshape(n, nb, block_size)
    qmax = (1 << bits) - 1
    if symmetric:
        half = 1 << (bits - 1)
        idx = np.argmax(np.abs(blocks), axis=2)
        extreme = np.take_along_axis(blocks, idx[..., None], axis=2)[..., 0]
        scale = (extreme / _F32(-half)).astype(_F32)
        zp = np.full((n, nb), half, np.uint8)
    else:
        lo = np.minimum(blocks.min(axis=2), 0)
        hi = np.maximum(blocks.max(axis=2), 0)
        scale = ((hi - lo) / _F32(qmax)).astype(_F32)
        safe = np.where(scale == 0, _F32(1), scale)
        zp = np.clip(np.rint(-lo / safe), 0, qmax).astype(np.uint8)
    safe = np.where(scale == 0, _F32(1), scale).astype(_F32)
    q = np.clip(np.rint(blocks / safe[..., None]) + zp[..., None].astype(_F32), 0, qmax).astype(np.uint8)
    return q.reshape(n, nb * block_size), scale, zp


def quantize_activation_blocks(x: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``x`` [..., K] as onnxruntime's MatMulNBits rounds it at accuracy level 4: (q i8 [..., n_blocks,
    block_size], scale f32 [..., n_blocks]).  Per block of ``block_size`` along K (the last one padded
    with zeros): ``scale = amax / 127`` and ``q = round_half_even(x * (127 / amax))``, in f32, as MLAS's
    QuantizeARow_CompInt8 computes them (``127 / amax`` in one division, not ``1 / scale``: the two
    differ by an ulp, enough to move a value on a rounding tie); an all-zero block gives q = 0."""
    x = np.asarray(x, dtype=_F32)
    k = x.shape[-1]
    nb = nbits_blocks(k, block_size)
    xb = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, nb * block_size - k)]).reshape(x.shape[:-1] + (nb, block_size))
    amax = np.max(np.abs(xb), axis=-1)
    with np.errstate(all="ignore"):
        inv = np.where(amax != 0, _F32(127) / amax, _F32(0)).astype(_F32)
        q = np.rint(xb * inv[..., None]).astype(np.int8)
    return q, (amax / _F32(127)).astype(_F32)


def round_activation_blocks(x: np.ndarray, block_size: int) -> np.ndarray:
    """``x`` after level 4's rounding, back in f32: ``q * scale`` of :func:`quantize_activation_blocks`."""
    q, scale = quantize_activation_blocks(x, block_size)
    k = np.shape(x)[-1]
    # the padded length spelled out, not -1: numpy cannot infer it for an empty batch
    return (q.astype(_F32) * scale[..., None]).reshape(q.shape[:-2] + (q.shape[-2] * q.shape[-1],))[..., :k]


def pack_nbits(values: np.ndarray, bits: int) -> np.ndarray:
    """Pack unsigned ``bits``-bit values along the last axis into bytes, the first value in the low bits."""
    values = np.asarray(values, dtype=np.uint8)
    if bits == 8:
        return values.copy()
    per = 8 // bits
    pad = (-values.shape[-1]) % per
    if pad:
        values = np.concatenate([values, np.zeros(values.shape[:-1] + (pad,), np.uint8)], axis=-1)
    groups = values.reshape(values.shape[:-1] + (-1, per))
    out = np.zeros(groups.shape[:-1], np.uint8)
    for i in range(per):
        out |= (groups[..., i] & ((1 << bits) - 1)) << (i * bits)
    return out


def unpack_nbits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """The first ``count`` ``bits``-bit values of each row of ``packed`` (the inverse of pack_nbits)."""
    packed = np.asarray(packed, dtype=np.uint8)
    if bits == 8:
        return packed[..., :count]
    per = 8 // bits
    parts = [(packed >> (i * bits)) & ((1 << bits) - 1) for i in range(per)]
    return np.stack(parts, axis=-1).reshape(packed.shape[:-1] + (-1,))[..., :count]


def dequantize_nbits(b: np.ndarray, scales: np.ndarray, zero_points: np.ndarray | None, bits: int,
                     block_size: int, k: int) -> np.ndarray:
    """The f32 [K, N] weight that ``matmul_nbits``'s packed operands hold."""
    n, nb, _ = b.shape
    q = unpack_nbits(b.reshape(n, nb, -1), bits, block_size).astype(_F32)  # [N, nb, block]
    if zero_points is None:
        zp = np.full((n, nb), 1 << (bits - 1), _F32)
    else:
        zp = unpack_nbits(zero_points, bits, nb).astype(_F32)
    w = (q - zp[..., None]) * scales.astype(_F32)[..., None]
    return np.ascontiguousarray(w.reshape(n, nb * block_size)[:, :k].T)


# ----- dynamic_quant_linear -----------------------------------------------------------

def _check_x_bias(op: str, x: TensorType, n, bias: TensorType | None) -> None:
    if x.dtype is not DType.f32 or x.rank < 1:
        raise TypeRuleError(f"{op}: x must be f32[..., K], got {x}")
    if bias is not None and (bias.dtype is not DType.f32 or bias.shape != (n,)):
        raise TypeRuleError(f"{op}: bias must be f32[{n}], got {bias}")


def _dynamic_rule(types, attrs):
    x, w, s = types[:3]
    bias = types[3] if len(types) == 4 else None
    if w.dtype is not DType.i8 or w.rank != 2:
        raise TypeRuleError(f"dynamic_quant_linear: w must be i8[K, N], got {w}")
    k, n = w.shape
    _check_x_bias("dynamic_quant_linear", x, n, bias)
    if type(x.shape[-1]) is int and type(k) is int and x.shape[-1] != k:
        raise TypeRuleError(f"dynamic_quant_linear: x [..., {x.shape[-1]}] does not match w [{k}, {n}]")
    if s.dtype is not DType.f32 or s.shape != (n,):
        raise TypeRuleError(f"dynamic_quant_linear: w_scale must be f32[{n}], got {s}")
    return [TensorType(DType.f32, x.shape[:-1] + (n,))]


def dynamic_quant_accumulate(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.float32]:
    """The int32 accumulator ``sum_k (xq - zp) * w`` of ``x`` quantised at run time, and ``x``'s scale."""
    q, scale, zp = quantize_dynamic_activation(x)
    acc = np.matmul(q.astype(np.int32) - np.int32(zp), w.astype(np.int32))
    return acc.astype(np.int32), scale


def _dynamic_ref(inputs, attrs, regions):
    x, w, w_scale = inputs[:3]
    acc, scale = dynamic_quant_accumulate(x, w)
    y = acc.astype(_F32) * (scale * w_scale.astype(_F32))
    if len(inputs) == 4:
        y = y + inputs[3]
    with np.errstate(all="ignore"):
        return [activation(attrs["activation"]).reference(y.astype(_F32)).astype(_F32)]


register(OpDef("dynamic_quant_linear", _dynamic_rule, _dynamic_ref, min_inputs=3, max_inputs=4,
               attrs={"activation": AttrSpec("str", "none", ACTIVATIONS)},
               doc="activation(dequant(quant_u8(x) @ w_i8) + bias): x quantised per tensor at run time "
                   "(DynamicQuantizeLinear), w symmetric int8 per output channel, int32 accumulation"))


# ----- matmul_nbits -------------------------------------------------------------------

_NBITS_ATTRS = {"bits": AttrSpec("int", 4, (4, 8)), "block_size": AttrSpec("int", 32, (16, 32, 64, 128, 256)),
                "zero_points": AttrSpec("bool", False), "accuracy_level": AttrSpec("int", 0, (0, 1, 2, 3, 4)),
                "activation": AttrSpec("str", "none", ACTIVATIONS)}


def _nbits_parts(types, attrs):
    """(x, b, scales, zero_points | None, bias | None) of a matmul_nbits node's operands."""
    x, b, s = types[:3]
    rest = list(types[3:])
    zp = rest.pop(0) if attrs["zero_points"] and rest else None
    bias = rest.pop(0) if rest else None
    if rest or (attrs["zero_points"] and zp is None):
        raise TypeRuleError("matmul_nbits: operands are x, b, scales, zero_points (when zero_points=True), bias")
    return x, b, s, zp, bias


def _nbits_rule(types, attrs):
    x, b, s, zp, bias = _nbits_parts(types, attrs)
    bits, block = attrs["bits"], attrs["block_size"]
    if b.dtype is not DType.u8 or b.rank != 3 or b.shape[2] != block * bits // 8:
        raise TypeRuleError(f"matmul_nbits: b must be u8[N, n_blocks, {block * bits // 8}], got {b}")
    n, nb = b.shape[0], b.shape[1]
    _check_x_bias("matmul_nbits", x, n, bias)
    k = x.shape[-1]
    if type(k) is int and type(nb) is int and nbits_blocks(k, block) != nb:
        raise TypeRuleError(f"matmul_nbits: K={k} needs {nbits_blocks(k, block)} blocks of {block}, b has {nb}")
    if s.dtype is not DType.f32 or s.shape != (n, nb):
        raise TypeRuleError(f"matmul_nbits: scales must be f32[{n}, {nb}], got {s}")
    if zp is not None and (zp.dtype is not DType.u8 or zp.shape != (n, math.ceil(nb * bits / 8))):
        raise TypeRuleError(f"matmul_nbits: zero_points must be u8[{n}, {math.ceil(nb * bits / 8)}], got {zp}")
    return [TensorType(DType.f32, x.shape[:-1] + (n,))]


def _unpack_ir(b, packed, bits: int, count: int):
    """IR nodes unpacking the ``bits``-bit values of ``packed``'s last axis to f32 (first ``count``)."""
    xi = b.op("cast", packed, dtype=DType.i32)
    if bits == 4:
        sixteen = b.scalar(16, xi)
        lo, hi = b.op("rem", xi, sixteen), b.op("div", xi, sixteen)
        pairs = b.op("concat", b.op("unsqueeze", lo, axes=(-1,)), b.op("unsqueeze", hi, axes=(-1,)), axis=-1)
        xi = b.op("reshape", pairs, shape=tuple(packed.shape[:-1]) + (2 * packed.shape[-1],))
    if xi.shape[-1] != count:
        xi = b.op("slice", xi, starts=(0,), stops=(count,), axes=(xi.rank - 1,))
    return b.op("cast", xi, dtype=DType.f32)


def _round_activation_ir(b, x, block: int):
    """IR nodes rounding ``x`` [..., K] as :func:`round_activation_blocks` does (accuracy level 4)."""
    k, lead = x.shape[-1], tuple(x.shape[:-1])
    nb = nbits_blocks(k, block)
    if k != nb * block:
        x = b.op("pad", x, pads=((0, 0),) * len(lead) + ((0, nb * block - k),))
    xb = b.op("reshape", x, shape=lead + (nb, block))
    amax = b.op("reduce_max", b.op("abs", xb), axes=(-1,), keepdims=True)
    zero = b.scalar(0.0, DType.f32)
    inv = b.op("where", b.op("eq", amax, zero), zero, b.op("div", b.scalar(127.0, DType.f32), amax))
    q = b.op("round", b.op("mul", xb, inv))
    y = b.op("reshape", b.op("mul", q, b.op("div", amax, b.scalar(127.0, DType.f32))), shape=lead + (nb * block,))
    return y if k == nb * block else b.op("slice", y, starts=(0,), stops=(k,), axes=(len(lead),))


def _nbits_decompose(b, inputs, attrs):
    """Unpack, dequantise to the f32 [K, N] weight, matmul: a backend without an int4 kernel runs this."""
    x, packed, s, zp, bias = _nbits_parts(inputs, attrs)
    if attrs["accuracy_level"] == ACCURACY_INT8:
        x = _round_activation_ir(b, x, attrs["block_size"])
    bits, block = attrs["bits"], attrs["block_size"]
    n, nb = packed.shape[0], packed.shape[1]
    q = _unpack_ir(b, packed, bits, block)  # [N, nb, block]
    if zp is None:
        zpf = b.scalar(float(1 << (bits - 1)), DType.f32)
    else:
        zpf = b.op("unsqueeze", _unpack_ir(b, zp, bits, nb), axes=(-1,))
    w = b.op("mul", b.op("sub", q, zpf), b.op("unsqueeze", s, axes=(-1,)))
    w = b.op("reshape", w, shape=(n, nb * block))
    k = x.shape[-1]
    if k != nb * block:
        w = b.op("slice", w, starts=(0,), stops=(k,), axes=(1,))
    y = b.op("matmul", x, b.op("transpose", w, perm=(1, 0)))
    if bias is not None:
        y = b.op("add", y, bias)
    a = activation(attrs["activation"])
    return [y if a.op is None else b.op(a.op, y, **dict(a.attrs))]


def _nbits_ref(inputs, attrs, regions):
    x, b, s, zp, bias = _nbits_parts(inputs, attrs)
    w = dequantize_nbits(b, s, zp, attrs["bits"], attrs["block_size"], x.shape[-1])
    if attrs["accuracy_level"] == ACCURACY_INT8:
        x = round_activation_blocks(x, attrs["block_size"])
    y = np.matmul(x.astype(_F32), w)
    if bias is not None:
        y = y + bias
    with np.errstate(all="ignore"):
        return [activation(attrs["activation"]).reference(y.astype(_F32)).astype(_F32)]


register(OpDef("matmul_nbits", _nbits_rule, _nbits_ref, min_inputs=3, max_inputs=5, attrs=_NBITS_ATTRS,
               composite=True, decompose=_nbits_decompose,
               doc="activation(x @ W + bias), W [K, N] held blockwise in bits-bit integers in MatMulNBits' "
                   "layout: (q - zero_point) * scale per block of block_size along K; at accuracy_level 4 x is "
                   "rounded to int8 per block of block_size first, as onnxruntime's CPU kernel does"))
