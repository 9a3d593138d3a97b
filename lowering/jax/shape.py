"""jax rules: constants, shape ops and data movement."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from accelir.ops.shape import inverse_perm

from .layout import held, logical, parts
from .context import JAX_DTYPES, register_lowering
from .reduce import positive_axes

# ----- rules: shape and data movement ------------------------------------------------

@register_lowering("constant")
def _constant(ctx, *, name):
    return ctx.constant(name)


register_lowering("reshape")(lambda ctx, x, *, shape: jnp.reshape(x, shape))


@register_lowering("transpose", layout=True)
def _transpose(ctx, x, *, perm):
    # no data moves: the same data is held under the composed permutation
    data, held_perm = parts(x)
    inv = inverse_perm(perm)
    return held(data, tuple(inv[p] for p in held_perm))


register_lowering("broadcast_to")(lambda ctx, x, *, shape: jnp.broadcast_to(x, shape))
register_lowering("squeeze")(lambda ctx, x, *, axes: jnp.squeeze(x, positive_axes(axes, x.ndim)))
register_lowering("reverse")(lambda ctx, x, *, axes: jnp.flip(x, positive_axes(axes, x.ndim)))


@register_lowering("concat", layout=True)
def _concat(ctx, *xs, axis):
    perms = {parts(x)[1] for x in xs}
    if len(perms) != 1:
        return jnp.concatenate([logical(x) for x in xs], axis=axis)
    perm = perms.pop()
    return held(jnp.concatenate([parts(x)[0] for x in xs], axis=inverse_perm(perm)[axis % len(perm)]), perm)


@register_lowering("unsqueeze")
def _unsqueeze(ctx, x, *, axes):
    return jnp.expand_dims(x, positive_axes(axes, x.ndim + len(axes)))


@register_lowering("slice")
def _slice(ctx, x, *, starts, stops, steps, axes):
    start = [0] * x.ndim
    limit = list(x.shape)
    stride = [1] * x.ndim
    for k, ax in enumerate(axes):
        ax %= x.ndim
        start[ax], limit[ax] = starts[k], stops[k]
        stride[ax] = steps[k] if steps else 1
    return lax.slice(x, tuple(start), tuple(limit), tuple(stride))


@register_lowering("pad")
def _pad(ctx, x, *, pads, mode, value):
    if mode == "constant":
        fill = jnp.asarray(np.asarray(value).astype(jnp.dtype(x.dtype)))
        return lax.pad(x, fill, [(lo, hi, 0) for lo, hi in pads])
    return jnp.pad(x, pads, mode=mode)


def _index(idx, size):
    """Indices as a signed type wide enough to add the dim size, negatives counted from the end."""
    wide = jax.dtypes.canonicalize_dtype(jnp.int64)
    idx = idx.astype(wide)
    return jnp.where(idx < 0, idx + size, idx)


@register_lowering("gather")
def _gather(ctx, x, idx, *, axis):
    ax = axis % x.ndim
    return jnp.take(x, _index(idx, x.shape[ax]), axis=ax, mode="clip")


@register_lowering("take_along_axis")
def _take_along_axis(ctx, x, idx, *, axis):
    ax = axis % x.ndim
    # the result has the indices' shape (torch.gather): x's other dims are cut to match
    limit = tuple(x.shape[i] if i == ax else idx.shape[i] for i in range(x.ndim))
    if limit != tuple(x.shape):
        x = lax.slice(x, (0,) * x.ndim, limit)
    return jnp.take_along_axis(x, _index(idx, x.shape[ax]), axis=ax, mode="clip")


@register_lowering("gather_nd")
def _gather_nd(ctx, x, idx, *, batch_dims):
    k = idx.shape[-1]

    def one(xb, ib):
        if k == 0:
            return jnp.broadcast_to(xb, tuple(ib.shape[:-1]) + tuple(xb.shape))
        return xb[tuple(_index(ib[..., d], xb.shape[d]) for d in range(k))]

    for _ in range(batch_dims):
        one = jax.vmap(one)
    return one(x, idx)


_SCATTER = {"none": lambda ref, u: ref.set(u), "add": lambda ref, u: ref.add(u),
            "mul": lambda ref, u: ref.multiply(u), "max": lambda ref, u: ref.max(u),
            "min": lambda ref, u: ref.min(u)}
# jax has no bool add / multiply; on bools they are logical or / and, i.e. max / min
_BOOL_SCATTER = {"add": "max", "mul": "min"}


def _scatter(x, where, upd, reduction: str):
    if x.dtype == jnp.bool_:
        reduction = _BOOL_SCATTER.get(reduction, reduction)
    return _SCATTER[reduction](x.at[where], upd)


@register_lowering("scatter_elements")
def _scatter_elements(ctx, x, idx, upd, *, axis, reduction):
    ax = axis % x.ndim
    if tuple(upd.shape) != tuple(idx.shape):
        upd = lax.slice(upd, (0,) * upd.ndim, tuple(idx.shape))
    where = [lax.broadcasted_iota(jnp.int32, idx.shape, d) for d in range(x.ndim)]
    where[ax] = _index(idx, x.shape[ax])
    return _scatter(x, tuple(where), upd, reduction)


@register_lowering("scatter_nd")
def _scatter_nd(ctx, x, idx, upd, *, reduction):
    k = idx.shape[-1]
    where = tuple(_index(idx[..., d], x.shape[d]) for d in range(k))
    return _scatter(x, where, upd, reduction)


def _starts(starts) -> list:
    # lax counts negative starts from the end; the IR (like XLA) clamps them to 0
    wide = jax.dtypes.canonicalize_dtype(jnp.int64)
    return [jnp.maximum(s.astype(wide), 0) for s in starts]


@register_lowering("dynamic_slice")
def _dynamic_slice(ctx, x, *starts, sizes):
    return lax.dynamic_slice(x, _starts(starts), sizes)


@register_lowering("dynamic_update_slice")
def _dynamic_update_slice(ctx, x, upd, *starts):
    return lax.dynamic_update_slice(x, upd, _starts(starts))


@register_lowering("iota")
def _iota(ctx, *, shape, axis, dtype):
    return lax.broadcasted_iota(JAX_DTYPES[dtype], shape, axis % len(shape))
