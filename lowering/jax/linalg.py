"""jax rules: matmul, dot_general, conv and pooling (convs channels-last)."""

from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp
from jax import lax

from accelir.ops.linalg import conv_params, pool_output_dim

from .layout import Permuted, channels_last, held, in_layout, kernel_last, logical, parts, physical, with_data
from .context import HALF_DTYPES, apply_activation, register_lowering

# ----- rules: contractions, conv, pooling --------------------------------------------

def _accumulator(dtype) -> Any:
    return jnp.float32 if jnp.dtype(dtype) in HALF_DTYPES else None


@register_lowering("matmul")
def _matmul(ctx, a, b):
    return jnp.matmul(a, b, preferred_element_type=_accumulator(a.dtype))


@register_lowering("dot_general")
def _dot_general(ctx, a, b, *, lhs_contracting, rhs_contracting, lhs_batch, rhs_batch):
    return lax.dot_general(a, b, ((lhs_contracting, rhs_contracting), (lhs_batch, rhs_batch)),
                           preferred_element_type=_accumulator(a.dtype))


def _conv(x, w, bias, attrs: Mapping[str, Any]) -> Permuted:
    """The conv channels-last: data [N, *S, C] and kernel [*K, I, O], which is how XLA's
    CPU backend runs it; the result is held channels-last for the next layout-aware op."""
    n = x.ndim - 2
    stride, padding, dilation, lhs_dilation = conv_params("conv", attrs, n)
    spatial = tuple(range(1, n + 1))
    numbers = lax.ConvDimensionNumbers(lhs_spec=(0, n + 1, *spatial), rhs_spec=(n + 1, n, *range(n)),
                                       out_spec=(0, n + 1, *spatial))
    last = channels_last(n + 2)
    y = lax.conv_general_dilated(in_layout(x, last), in_layout(w, kernel_last(n + 2)), window_strides=stride,
                                 padding=padding, lhs_dilation=lhs_dilation, rhs_dilation=dilation,
                                 dimension_numbers=numbers, feature_group_count=attrs["groups"],
                                 preferred_element_type=_accumulator(x.dtype))
    if bias is not None:
        y = y + logical(bias).astype(y.dtype)
    return Permuted(y, last)


@register_lowering("conv", layout=True)
def _conv_rule(ctx, x, w, bias=None, **attrs):
    return _conv(x, w, bias, attrs)


@register_lowering("fused_conv", upcast=True, layout=True)
def _fused_conv(ctx, x, w, bias=None, *, activation, **attrs):
    return with_data(_conv(x, w, bias, attrs), lambda y: apply_activation(ctx, y, activation))


def _pool_window(x, kernel, stride, padding, dilation, ceil_mode):
    """reduce_window geometry in [N, C, *S] order: window, strides, padding (ceil mode's
    extra on the high side), dilation, and the output shape when ceil mode needs the result cut."""
    n = len(kernel)
    stride = stride or (1,) * n
    padding = padding or ((0, 0),) * n
    dilation = dilation or (1,) * n
    extra = [0] * n
    cut = None
    if ceil_mode:
        cut = []
        for i, k in enumerate(kernel):
            size = x.shape[2 + i]
            lo, hi = padding[i]
            out = pool_output_dim(size, k, stride[i], lo, hi, dilation[i], True)
            extra[i] = max(0, (out - 1) * stride[i] + dilation[i] * (k - 1) + 1 - (size + lo + hi))
            cut.append(out)
        cut = tuple(x.shape[:2]) + tuple(cut)
    pads = ((0, 0), (0, 0)) + tuple((lo, hi + e) for (lo, hi), e in zip(padding, extra))
    return (1, 1) + tuple(kernel), (1, 1) + tuple(stride), pads, (1, 1) + tuple(dilation), padding, extra, cut


def _cut(y, cut, perm):
    if cut is None:
        return y
    return lax.slice(y, (0,) * y.ndim, physical(cut, perm))


@register_lowering("max_pool", layout=True)
def _max_pool(ctx, x, *, kernel, stride, padding, dilation, ceil_mode):
    data, perm = parts(x)
    window, strides, pads, dil, _, _, cut = _pool_window(x, kernel, stride, padding, dilation, ceil_mode)
    low = -jnp.inf if jnp.issubdtype(x.dtype, jnp.floating) else jnp.iinfo(x.dtype).min
    window, strides, pads, dil = (physical(t, perm) for t in (window, strides, pads, dil))
    y = lax.reduce_window(data, jnp.asarray(low, x.dtype), lax.max, window, strides, pads, window_dilation=dil)
    return held(_cut(y, cut, perm), perm)


@register_lowering("avg_pool", upcast=True, layout=True)
def _avg_pool(ctx, x, *, kernel, stride, padding, dilation, ceil_mode, count_include_pad):
    data, perm = parts(x)
    window, strides, pads, dil, padding, extra, cut = _pool_window(x, kernel, stride, padding, dilation, ceil_mode)
    window, strides, dil = (physical(t, perm) for t in (window, strides, dil))
    zero = jnp.zeros((), x.dtype)
    total = lax.reduce_window(data, zero, lax.add, window, strides, physical(pads, perm), window_dilation=dil)
    spatial = tuple(x.shape[2:])
    if count_include_pad:
        # the zero padding counts, the ceil-mode overhang does not
        ones = (1, 1) + tuple(s + lo + hi for s, (lo, hi) in zip(spatial, padding))
        count_pads = ((0, 0), (0, 0)) + tuple((0, e) for e in extra)
    else:
        ones = (1, 1) + spatial
        count_pads = pads
    count = lax.reduce_window(jnp.ones(physical(ones, perm), x.dtype), zero, lax.add, window, strides,
                              physical(count_pads, perm), window_dilation=dil)
    return held(_cut(total / count, cut, perm), perm)
