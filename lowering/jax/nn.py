"""jax rules: composites (activations, softmax, norms, attention, linear)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from accelir.ops.shape import inverse_perm

from .layout import Permuted, held, logical, parts
from .context import apply_activation, pointwise, register_lowering

# ----- rules: composites -------------------------------------------------------------

register_lowering("gelu", upcast=True, layout=True)(
    pointwise(lambda ctx, x, *, approximate: jax.nn.gelu(x, approximate=approximate == "tanh")))
register_lowering("silu", upcast=True, layout=True)(pointwise(lambda ctx, x: jax.nn.silu(x)))
def _settled(x):
    """``x``, computed once for all its readers.

    XLA copies a cheap producer (a mean's scaling, attention's ``* scale``) into every
    fusion that reads it and there may contract it with the next op into one FMA; a
    softmax then takes its max over one rounding of x and subtracts it from another,
    and where x is large (|x| > 1e9 or so the two differ by more than exp's range) every
    exponent overflows or underflows: NaN.  A division is too costly for XLA to copy, so
    it is computed once; it divides by an exact 1 that XLA cannot fold (0 for NaN, which
    stays NaN).  optimization_barrier would say this, but XLA's CPU pipeline drops it.
    """
    return x / (x == x).astype(x.dtype)


def _softmax(x, axis: int):
    return jax.nn.softmax(_settled(x), axis=axis)


register_lowering("softmax", upcast=True)(lambda ctx, x, *, axis: _softmax(x, axis))
register_lowering("log_softmax", upcast=True)(lambda ctx, x, *, axis: jax.nn.log_softmax(_settled(x), axis=axis))


def _norm_axes(x, axis: int) -> tuple[int, ...]:
    return tuple(range(axis % x.ndim, x.ndim))


def _layer_norm_math(x, scale, bias, axis, epsilon):
    axes = _norm_axes(x, axis)
    d = x - jnp.mean(x, axis=axes, keepdims=True)
    var = jnp.mean(d * d, axis=axes, keepdims=True)
    y = d * lax.rsqrt(var + jnp.asarray(epsilon, x.dtype))
    if scale is not None:
        y = y * scale
    return y + bias if bias is not None else y


def _rms_norm_math(x, scale, axis, epsilon):
    ms = jnp.mean(x * x, axis=_norm_axes(x, axis), keepdims=True)
    y = x * lax.rsqrt(ms + jnp.asarray(epsilon, x.dtype))
    return y * scale if scale is not None else y


@register_lowering("layer_norm", upcast=True)
def _layer_norm(ctx, x, scale=None, bias=None, *, axis, epsilon):
    return _layer_norm_math(x, scale, bias, axis, epsilon)


@register_lowering("rms_norm", upcast=True)
def _rms_norm(ctx, x, scale=None, *, axis, epsilon):
    return _rms_norm_math(x, scale, axis, epsilon)


@register_lowering("skip_layer_norm", upcast=True)
def _skip_layer_norm(ctx, x, skip, scale=None, bias=None, *, axis, epsilon):
    s = x + skip
    return [_layer_norm_math(s, scale, bias, axis, epsilon), s]


@register_lowering("skip_rms_norm", upcast=True)
def _skip_rms_norm(ctx, x, skip, scale=None, *, axis, epsilon):
    s = x + skip
    return [_rms_norm_math(s, scale, axis, epsilon), s]


@register_lowering("batch_norm", upcast=True, layout=True)
def _batch_norm(ctx, x, scale, bias, mean, var, *, epsilon):
    data, perm = parts(x)
    # per-channel vectors along the axis where the data holds the channels
    shape = [1] * x.ndim
    shape[inverse_perm(perm)[1]] = -1
    scale, bias, mean, var = (logical(a).reshape(shape) for a in (scale, bias, mean, var))
    k = lax.rsqrt(var + jnp.asarray(epsilon, var.dtype)) * scale
    return held((data - mean) * k + bias, perm)


def _batched(x):
    """``x`` as ``[batch, rows, cols]``, its leading dims merged into one (a view: row-major)."""
    return x.reshape((math.prod(x.shape[:-2]),) + tuple(x.shape[-2:]))


def _contract(a, b, b_dim: int):
    """``a`` by ``b`` over ``a``'s last dim and ``b``'s ``b_dim``, batched over their common leading dims, as one three-dimensional
    ``dot_general``: neither operand is transposed, so a key / value cache is read where it lies.

    ``matmul(q, swapaxes(k))`` over 4-d operands leaves XLA:CPU a transpose of the keys and reshapes
    between the operands and the dot; a decode step then copies its whole key / value cache each step
    (the reshapes of a freshly written cache buffer cannot share its memory), a cost that grows with
    the cache's capacity.  Operands of different leading dims (broadcast heads) go through ``matmul``."""
    if a.ndim < 3 or a.shape[:-2] != b.shape[:-2]:
        return jnp.matmul(a, b if b_dim == b.ndim - 2 else jnp.swapaxes(b, -1, -2))
    out = lax.dot_general(_batched(a), _batched(b), (((2,), (b_dim - b.ndim + 3,)), ((0,), (0,))))
    return out.reshape(tuple(a.shape[:-1]) + (out.shape[-1],))


@register_lowering("attention", upcast=True)
def _attention(ctx, q, k, v, mask=None, *, scale, causal):
    if scale is None:
        d = q.shape[-1]
        scale = 1.0 / np.sqrt(d) if type(d) is int else lax.rsqrt(jnp.asarray(d, q.dtype))
    s = _contract(q, k, k.ndim - 1) * jnp.asarray(scale, q.dtype)
    neg = jnp.asarray(-jnp.inf, s.dtype)
    if causal:
        shape = (q.shape[-2], k.shape[-2])
        keep = lax.broadcasted_iota(jnp.int32, shape, 0) >= lax.broadcasted_iota(jnp.int32, shape, 1)
        s = jnp.where(keep, s, neg)
    if mask is not None:
        s = jnp.where(mask, s, neg) if mask.dtype == jnp.bool_ else s + mask
    return _contract(_softmax(s, -1), v, v.ndim - 2)


@register_lowering("linear", upcast=True, layout=True)
def _linear(ctx, x, w, bias=None, *, activation):
    x, bias = logical(x), None if bias is None else logical(bias)
    if isinstance(w, Permuted) and w.perm == (1, 0):  # held [N, K] (JaxFunction's rows_of_outputs)
        # one dot over the rows as they lie: a transpose of the weight before jnp.matmul becomes, inside XLA:CPU,
        # a copy fused into the dot's loop, slower than its dot kernel
        y = lax.dot_general(x, w.data, (((x.ndim - 1,), (1,)), ((), ())))
    else:
        y = jnp.matmul(x, logical(w))
    if bias is not None:
        y = y + bias
    return apply_activation(ctx, y, activation)
