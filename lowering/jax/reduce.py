"""jax rules: reductions, cumulative scans, sort and top-k."""

from __future__ import annotations

from typing import Callable, Sequence

import jax.numpy as jnp
from jax import lax

from accelir.ops.shape import inverse_perm

from .layout import held, parts
from .context import Rule, register_lowering

# ----- rules: reductions, scans, sort ------------------------------------------------

def positive_axes(axes: Sequence[int], rank: int) -> tuple[int, ...]:
    return tuple(sorted({a % rank for a in axes})) if rank else ()


_REDUCTIONS = {"reduce_sum": jnp.sum, "reduce_mean": jnp.mean, "reduce_max": jnp.max, "reduce_min": jnp.min,
               "reduce_prod": jnp.prod, "reduce_any": jnp.any, "reduce_all": jnp.all}


def _reduce_rule(fn: Callable) -> Rule:
    def rule(ctx, x, *, axes, keepdims):
        data, perm = parts(x)
        logical_axes = positive_axes(axes, x.ndim)
        inv = inverse_perm(perm)
        y = fn(data, axis=tuple(sorted(inv[a] for a in logical_axes)), keepdims=keepdims)
        if keepdims:
            return held(y, perm)
        # the kept axes stay in the order the data holds them
        kept = [p for p in perm if p not in logical_axes]
        order = sorted(kept)
        return held(y, tuple(order.index(p) for p in kept))
    return rule


for _name, _fn in _REDUCTIONS.items():
    register_lowering(_name, upcast=True, layout=True)(_reduce_rule(_fn))


def _arg_rule(fn: Callable) -> Rule:
    def rule(ctx, x, *, axis, keepdims, select_last_index):
        ax = axis % x.ndim
        if select_last_index:
            idx = (x.shape[ax] - 1) - fn(jnp.flip(x, ax), axis=ax).astype(jnp.int64)
        else:
            idx = fn(x, axis=ax).astype(jnp.int64)
        return jnp.expand_dims(idx, ax) if keepdims else idx
    return rule


register_lowering("argmax", upcast=True)(_arg_rule(jnp.argmax))
register_lowering("argmin", upcast=True)(_arg_rule(jnp.argmin))

_CUMULATIVE = {"cumsum": (lax.cumsum, 0), "cumprod": (lax.cumprod, 1), "cummax": (lax.cummax, None),
               "cummin": (lax.cummin, None)}


def _cum_rule(fn: Callable, identity: int | None) -> Rule:
    def rule(ctx, x, *, axis, reverse, exclusive=False):
        if x.ndim == 0:
            return x
        ax = axis % x.ndim
        y = jnp.flip(x, ax) if reverse else x
        y = fn(y, axis=ax)
        if exclusive:
            # shift right by one along ax, filling with the identity
            config = [(0, 0, 0)] * x.ndim
            config[ax] = (1, -1, 0)
            y = lax.pad(y, jnp.asarray(identity, y.dtype), config)
        return jnp.flip(y, ax) if reverse else y
    return rule


for _name, (_fn, _ident) in _CUMULATIVE.items():
    register_lowering(_name, upcast=True)(_cum_rule(_fn, _ident))


def _stable_order(x, axis: int, descending: bool):
    """Stable sort permutation along axis (i64); descending puts NaN first and keeps ties in index order."""
    keys = x.astype(jnp.uint8) if x.dtype == jnp.bool_ else x
    iota = lax.broadcasted_iota(jnp.int64, x.shape, axis)
    if descending:
        # ascending with ties by falling index, reversed: descending with ties by rising index
        _, perm = lax.sort((keys, -iota), dimension=axis, num_keys=2)
        return -jnp.flip(perm, axis)
    _, perm = lax.sort((keys, iota), dimension=axis, num_keys=1, is_stable=True)
    return perm


@register_lowering("sort")
def _sort(ctx, x, *, axis, descending):
    ax = axis % x.ndim
    perm = _stable_order(x, ax, descending)
    return [jnp.take_along_axis(x, perm, ax), perm]


@register_lowering("topk")
def _topk(ctx, x, *, k, axis, largest):
    ax = axis % x.ndim
    perm = lax.slice_in_dim(_stable_order(x, ax, largest), 0, k, axis=ax)
    return [jnp.take_along_axis(x, perm, ax), perm]
