"""jax rules: the integer-quantised contractions ``dynamic_quant_linear`` and ``matmul_nbits``.

``dynamic_quant_linear`` quantises x with the arithmetic of ``accelir.ops.quant`` (onnxruntime's
DynamicQuantizeLinear), then contracts int8 by int8 in a ``dot_general`` accumulating in int32: the
uint8 activations are shifted to int8 (``q - 128``) and the shift comes back as
``(128 - zp) * sum_k w[k, n]``, so the integer result is the reference's bit for bit.

``matmul_nbits`` unpacks its weights to ``jnp.int4`` / ``int8`` and dequantises them inside the jitted
function, so XLA fuses the dequantisation into the producer of the dot.  At accuracy level 4 it first
rounds x to int8 per block as onnxruntime's CPU kernel does (``accelir.ops.quant``'s
``quantize_activation_blocks``, the same f32 steps), then multiplies the rounded x in f32: the same
products as onnxruntime's integer sums, added in another order.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from accelir.ops.quant import ACCURACY_INT8, nbits_blocks

from .context import apply_activation, register_lowering


def _quantize_activation(x):
    """(q - 128 as int8, zero point as int32, scale): DynamicQuantizeLinear in jnp, f32 throughout."""
    f32 = jnp.float32
    lo = jnp.minimum(jnp.min(x), f32(0))
    hi = jnp.maximum(jnp.max(x), f32(0))
    scale = jnp.where(hi == lo, f32(1), (hi - lo) / f32(255))
    zp = jnp.round(jnp.clip(f32(0) - lo / scale, f32(0), f32(255)))
    q = jnp.clip(jnp.round(x / scale) + zp, f32(0), f32(255))
    return (q.astype(jnp.int32) - 128).astype(jnp.int8), zp.astype(jnp.int32), scale


@register_lowering("dynamic_quant_linear")
def _dynamic_quant_linear(ctx, x, w, w_scale, bias=None, *, activation):
    xq, zp, scale = _quantize_activation(x)
    acc = lax.dot_general(xq, w, (((x.ndim - 1,), (0,)), ((), ())), preferred_element_type=jnp.int32)
    acc = acc + (128 - zp) * jnp.sum(w.astype(jnp.int32), axis=0)
    y = acc.astype(jnp.float32) * (scale * w_scale)
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


@register_lowering("matmul_nbits")
def _matmul_nbits(ctx, x, b, scales, *rest, bits, block_size, zero_points, accuracy_level, activation):
    rest = list(rest)
    zp = rest.pop(0) if zero_points else None
    bias = rest.pop(0) if rest else None
    n, nb, _ = b.shape
    k = x.shape[-1]
    if zp is None:
        # symmetric: q - 2^(bits-1) fits the signed type of the width, int4 for 4 bits
        signed = (_unpack(b, bits, block_size).astype(jnp.int16) - (1 << (bits - 1)))
        w = signed.astype(jnp.int4 if bits == 4 else jnp.int8).astype(jnp.float32)
    else:
        zps = _unpack(zp, bits, nb).astype(jnp.float32)[..., None]
        w = _unpack(b, bits, block_size).astype(jnp.uint8).astype(jnp.float32) - zps
    w = (w * scales[..., None]).reshape(n, nb * block_size)[:, :k]
    if accuracy_level == ACCURACY_INT8:
        x = _round_activation(x, block_size)
    y = lax.dot_general(x, w, (((x.ndim - 1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
    if bias is not None:
        y = y + bias
    return apply_activation(ctx, y, activation)
