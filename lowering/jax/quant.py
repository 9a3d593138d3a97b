"""jax rules: the integer-quantised contractions ``dynamic_quant_linear`` and ``matmul_nbits``.

``dynamic_quant_linear`` quantises x with the arithmetic of ``accelir.ops.quant`` (onnxruntime's
DynamicQuantizeLinear), then contracts ``q - zp`` by the int8 weight into an int32 accumulator, the
reference's integer bit for bit.  XLA:CPU has no fast integer dot (it widens both operands to int32,
and ran GPT-2 small's int8 decode step 14x slower than float32), so the contraction runs as float32
dots over slices of K short enough that every partial sum is an integer below 2^24, which float32
holds exactly (``_EXACT_K``); the slices' exact sums are added in int32.  The same integers as an int32
dot, whatever order the dot sums in.

``matmul_nbits`` unpacks its weights to ``jnp.int4`` / ``int8`` and dequantises them inside the jitted
function, a block of rows at a time with a dot of its own (``_BLOCK``), each layer's blocks once its
input is there (``_after``).  At accuracy level 4 it first rounds x to int8 per
block as onnxruntime's CPU kernel does (``accelir.ops.quant``'s ``quantize_activation_blocks``, the
same f32 steps), then multiplies the rounded x in f32: the same products as onnxruntime's integer
sums, added in another order.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax import lax

from accelir.ops.quant import ACCURACY_INT8, nbits_blocks

from .context import apply_activation, register_lowering


def _quantize_activation(x):
    """(q - 128 as int8, zero point as int32, scale): DynamicQuantizeLinear in jnp, f32 throughout."""
    f32 = jnp.float32
    # 0 as the reductions' initial value: the range always holds 0, and an empty batch has a range
    lo = jnp.min(x, initial=f32(0))
    hi = jnp.max(x, initial=f32(0))
    scale = jnp.where(hi == lo, f32(1), (hi - lo) / f32(255))
    zp = jnp.round(jnp.clip(f32(0) - lo / scale, f32(0), f32(255)))
    q = jnp.clip(jnp.round(x / scale) + zp, f32(0), f32(255))
    return (q.astype(jnp.int32) - 128).astype(jnp.int8), zp.astype(jnp.int32), scale


#: the longest slice of K whose float32 sum of ``(q - zp) * w`` products is exact: each product is an
#: integer of magnitude at most 255 * 128, and 512 of them stay below 2^24
_EXACT_K = 512
#: below this slice length the float form's dots are too small to pay; the int32 dot runs instead
_MIN_SLICE = 64


#: the weight values one dot of a quantised contraction converts to float32 (768 KiB of them): XLA:CPU
#: cannot convert inside its dot, so each block gets a float32 copy and a dot of its own.  (The compiled
#: schedule converts all of one layer's blocks before that layer's first dot, not each next to its dot;
#: gating each block on the dot before it interleaves them, and made int4 no faster and int8 slower,
#: 1.4x at 128 rows and 7x at one, CPU time.)  Converting whole weights instead wrote and read a
#: float32 copy of every weight each step: over twelve int8 [768, 3072] weights, blocks of 0.1M, 0.2M
#: and 0.4M values and whole weights took 5.6, 4.1, 7.9 and 56 ms a pass (CPU time, one thread), the
#: same weights in float32 5.7 ms.
_BLOCK = 196608


def _after(x):
    """A boolean scalar, true for every ``x`` (NaN, inf and empty included), that XLA cannot evaluate
    before ``x`` exists.  A weight block converted under ``where(_after(x), block, 0)`` is widened once
    its layer's input is there, not at the program's start with every other layer's blocks
    (``lax.optimization_barrier`` does not survive XLA:CPU's pipeline)."""
    return jnp.all((x == x) | (x != x))


def _blocks(n: int, other: int) -> list[slice]:
    """Slices of ``n`` of about ``_BLOCK / other`` each (at least 64) for blocks of ``other`` by them."""
    step = max(64, _BLOCK // other)
    return [slice(j, min(j + step, n)) for j in range(0, n, step)]


def _exact_slice(k: int) -> int | None:
    """The longest slice of K, a divisor of it, within ``_EXACT_K`` (None if shorter than ``_MIN_SLICE``)."""
    best = max((c for c in range(1, min(k, _EXACT_K) + 1) if k % c == 0), default=1)
    return best if best >= _MIN_SLICE or best == k else None


def _integer_dot(xq, zp, w):
    """``sum_k (q[..., k] - zp) * w[k, n]`` as int32, exactly: float32 dots over slices of K (each an
    exact integer), added in int32; an int32 dot where K has no slice length that pays.  Each dot takes
    a block of the weight of about ``_BLOCK`` values (:func:`_blocks`)."""
    k, n = w.shape
    c = _exact_slice(k) if type(k) is int else None
    if c is None:
        acc = lax.dot_general(xq, w, (((xq.ndim - 1,), (0,)), ((), ())), preferred_element_type=jnp.int32)
        return acc + (128 - zp) * jnp.sum(w, axis=0, dtype=jnp.int32)
    lead = xq.shape[:-1]
    d = xq.astype(jnp.float32) + (128 - zp).astype(jnp.float32)  # q - zp, integers in [-255, 255]
    d = d.reshape((math.prod(lead), k))
    ready = _after(d)
    cols = []
    for j in _blocks(n, c):
        acc = None
        for i in range(0, k, c):
            # by lax, not the array's astype: a numpy weight (a small constant) stays int8 in the program
            block = jnp.where(ready, lax.convert_element_type(w[i:i + c, j], jnp.float32), jnp.float32(0))
            part = lax.dot_general(d[:, i:i + c], block, (((1,), (0,)), ((), ()))).astype(jnp.int32)
            acc = part if acc is None else acc + part
        cols.append(acc)
    return jnp.concatenate(cols, axis=-1).reshape(tuple(lead) + (n,))


@register_lowering("dynamic_quant_linear")
def _dynamic_quant_linear(ctx, x, w, w_scale, bias=None, *, activation):
    xq, zp, scale = _quantize_activation(x)
    y = _integer_dot(xq, zp, w).astype(jnp.float32) * (scale * w_scale)
    if bias is not None:
        y = y + bias
    return apply_activation(ctx, y, activation)


def _unpack(packed, bits: int, count: int):
    """The first ``count`` unsigned ``bits``-bit values along the last axis, as int8."""
    if bits == 8:
        return packed[..., :count]
    lo = (packed & 0x0F).astype(jnp.int8)
    hi = (packed >> 4).astype(jnp.int8)
    out = jnp.stack([lo, hi], axis=-1).reshape(packed.shape[:-1] + (2 * packed.shape[-1],))
    return out[..., :count]


def _round_activation(x, block_size: int):
    """x [..., K] rounded to int8 per block of ``block_size`` and scaled back: accuracy level 4's x."""
    f32 = jnp.float32
    k = x.shape[-1]
    nb = nbits_blocks(k, block_size)
    lead = tuple(x.shape[:-1])
    xb = jnp.pad(x, [(0, 0)] * len(lead) + [(0, nb * block_size - k)]).reshape(lead + (nb, block_size))
    amax = jnp.max(jnp.abs(xb), axis=-1, keepdims=True)
    inv = jnp.where(amax == 0, f32(0), f32(127) / amax)
    q = jnp.round(xb * inv)  # half to even, as MLAS rounds
    return (q * (amax / f32(127))).reshape(lead + (nb * block_size,))[..., :k]


def _dequantized(b, scales, zp, bits: int, block_size: int, k: int):
    """Packed rows ``b`` ([rows, blocks, packed]) as their float32 ``[rows, k]`` weight."""
    rows, nb, _ = b.shape
    if zp is None:
        # symmetric: q - 2^(bits-1) fits the signed type of the width, int4 for 4 bits
        signed = (_unpack(b, bits, block_size).astype(jnp.int16) - (1 << (bits - 1)))
        w = signed.astype(jnp.int4 if bits == 4 else jnp.int8).astype(jnp.float32)
    else:
        zps = _unpack(zp, bits, nb).astype(jnp.float32)[..., None]
        w = _unpack(b, bits, block_size).astype(jnp.uint8).astype(jnp.float32) - zps
    return (w * scales[..., None]).reshape(rows, nb * block_size)[:, :k]


@register_lowering("matmul_nbits")
def _matmul_nbits(ctx, x, b, scales, *rest, bits, block_size, zero_points, accuracy_level, activation):
    rest = list(rest)
    zp = rest.pop(0) if zero_points else None
    bias = rest.pop(0) if rest else None
    n = b.shape[0]
    k = x.shape[-1]
    lead = x.shape[:-1]
    x2 = x.reshape((math.prod(lead), k))
    if accuracy_level == ACCURACY_INT8:
        x2 = _round_activation(x2, block_size)
    ready = _after(x2)
    parts = []
    for r in _blocks(n, k):
        w = _dequantized(b[r], scales[r], None if zp is None else zp[r], bits, block_size, k)
        w = jnp.where(ready, w, jnp.float32(0))
        parts.append(lax.dot_general(x2, w, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32))
    y = jnp.concatenate(parts, axis=-1).reshape(tuple(lead) + (n,))
    if bias is not None:
        y = y + bias
    return apply_activation(ctx, y, activation)
