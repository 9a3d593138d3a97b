"""JAX shape rules: broadcast_in_dim, reshape, transpose, slices, concatenate, pad, iota, tile."""

from __future__ import annotations

from typing import Any

from ... import dims as D
from ..decompositions import crop_negative_pads
from .context import Unsupported, jax_dtype, rule, static_value, to_dim, to_dims, transpose

__all__: list[str] = []


# ----- shapes ------------------------------------------------------------------------

@rule("broadcast_in_dim")
def _broadcast_in_dim(cx, x, *, shape, broadcast_dimensions, **p):
    shape = to_dims(shape)
    bdims = tuple(int(d) for d in broadcast_dimensions)
    if x.rank and bdims != tuple(range(len(shape) - x.rank, len(shape))):
        inter = [1] * len(shape)
        for src, dst in enumerate(bdims):
            inter[dst] = x.shape[src]
        x = cx.op("reshape", x, shape=tuple(inter))
    return x if tuple(x.shape) == shape else cx.op("broadcast_to", x, shape=shape)


@rule("reshape")
def _reshape(cx, x, *, new_sizes, dimensions=None, **p):
    if dimensions is not None:
        x = transpose(cx, x, dimensions)
    shape = to_dims(new_sizes)
    return x if tuple(x.shape) == shape else cx.op("reshape", x, shape=shape)


@rule("transpose")
def _transpose_rule(cx, x, *, permutation, **p):
    return transpose(cx, x, permutation)


@rule("squeeze")
def _squeeze(cx, x, *, dimensions, **p):
    return cx.op("squeeze", x, axes=tuple(int(d) for d in dimensions)) if dimensions else x


@rule("rev")
def _rev(cx, x, *, dimensions, **p):
    return cx.op("reverse", x, axes=tuple(int(d) for d in dimensions)) if dimensions else x


@rule("slice")
def _slice(cx, x, *, start_indices, limit_indices, strides=None, **p):
    starts, stops, steps, axes = [], [], [], []
    for ax, (lo, hi) in enumerate(zip(start_indices, limit_indices)):
        lo, hi = to_dim(lo), to_dim(hi)
        st = int(strides[ax]) if strides else 1
        if lo == 0 and hi == x.shape[ax] and st == 1:
            continue
        starts.append(lo)
        stops.append(hi)
        steps.append(st)
        axes.append(ax)
    if not axes:
        return x
    return cx.op("slice", x, starts=tuple(starts), stops=tuple(stops), axes=tuple(axes),
                 steps=tuple(steps) if any(s != 1 for s in steps) else ())


@rule("concatenate")
def _concatenate(cx, *xs, dimension, **p):
    return xs[0] if len(xs) == 1 else cx.op("concat", *xs, axis=int(dimension))


@rule("pad")
def _pad(cx, x, value, *, padding_config, **p):
    fill = static_value(value)
    if fill is None:
        raise Unsupported("a padding value computed at run time")
    cfg = [(int(lo), int(hi), int(interior)) for lo, hi, interior in padding_config]
    if any(i for _, _, i in cfg):
        raise Unsupported("interior padding")
    if any(lo < 0 or hi < 0 for lo, hi, _ in cfg):
        x = crop_negative_pads(cx.b, x, [(lo, hi) for lo, hi, _ in cfg], first_axis=0)
    pads = tuple((max(lo, 0), max(hi, 0)) for lo, hi, _ in cfg)
    if not any(lo or hi for lo, hi in pads):
        return x
    return cx.op("pad", x, pads=pads, value=float(fill))


@rule("iota")
def _iota(cx, *, dtype, shape, dimension, **p):
    return cx.op("iota", shape=to_dims(shape), axis=int(dimension), dtype=jax_dtype(dtype))


@rule("split")
def _split(cx, x, *, sizes, axis, **p):
    axis = int(axis)
    outs = []
    start: Any = 0
    for size in sizes:
        stop = D.dim_add(start, to_dim(size))
        outs.append(cx.op("slice", x, starts=(start,), stops=(stop,), axes=(axis,)))
        start = stop
    return outs


@rule("dynamic_slice")
def _dynamic_slice(cx, x, *starts, slice_sizes, **p):
    if len(starts) != x.rank:
        raise Unsupported("dynamic_slice with dynamic slice sizes")
    return cx.op("dynamic_slice", x, *starts, sizes=to_dims(slice_sizes))


@rule("dynamic_update_slice")
def _dynamic_update_slice(cx, x, update, *starts, **p):
    return cx.op("dynamic_update_slice", x, update, *starts)


@rule("stack")
def _stack(cx, *xs, axis, **p):
    axis = int(axis)
    parts = [cx.op("unsqueeze", x, axes=(axis,)) for x in xs]
    return parts[0] if len(parts) == 1 else cx.op("concat", *parts, axis=axis)


@rule("tile")
def _tile(cx, x, *, reps, **p):
    reps = tuple(int(r) for r in reps)
    if len(reps) != x.rank:
        raise Unsupported(f"tile with {len(reps)} reps for rank {x.rank}")
    # [d0, d1, ..] -> [1, d0, 1, d1, ..] -> [r0, d0, r1, d1, ..] -> [r0*d0, r1*d1, ..]
    spread = cx.op("unsqueeze", x, axes=tuple(range(0, 2 * x.rank, 2)))
    wide = cx.op("broadcast_to", spread, shape=tuple(v for r, d in zip(reps, x.shape) for v in (r, d)))
    return cx.op("reshape", wide, shape=tuple(D.dim_mul(r, d) for r, d in zip(reps, x.shape)))


