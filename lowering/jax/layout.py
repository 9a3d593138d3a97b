"""Channels-last layouts: values held transposed (:class:`Permuted`) and the helpers that move between layouts.

Convolutions run channels-last, as XLA's CPU backend runs them best (the IR is channels-first):
layout-aware rules work on Permuted values in their layout and ``transpose`` only relabels, so a
conv chain has no transposes between its convs.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax.numpy as jnp

from accelir.ops.shape import inverse_perm

# ----- layouts -----------------------------------------------------------------------

class Permuted:
    """A value held transposed: ``data`` is ``jnp.transpose(value, perm)``.

    The IR is channels-first, but XLA's CPU convolutions (and its fused conv chains) run
    channels-last.  So convolutions take and give channels-last data, ``transpose`` only
    relabels, and layout-aware rules (elementwise, pooling, reductions, batch norm,
    concat, fusion bodies) work on the data in whatever layout it is held; other rules
    see the value itself, made by one transpose.  A chain of convs then runs without
    transposes between them.  ``shape`` / ``ndim`` / ``dtype`` are the value's own.
    """

    __slots__ = ("data", "perm")

    def __init__(self, data: Any, perm: tuple[int, ...]):
        self.data = data
        self.perm = perm

    @property
    def dtype(self) -> Any:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape[k] for k in inverse_perm(self.perm))


def held(data: Any, perm: tuple[int, ...]) -> Any:
    """``data`` as held under ``perm`` (a plain array when perm is the identity)."""
    return data if perm == tuple(range(len(perm))) else Permuted(data, perm)


def parts(a: Any) -> tuple[Any, tuple[int, ...]]:
    return (a.data, a.perm) if isinstance(a, Permuted) else (a, tuple(range(a.ndim)))


def _moved(data: Any, axes: Sequence[int]) -> Any:
    """``jnp.transpose(data, axes)``; a plain reshape when only unit dims move."""
    kept = [a for a in axes if not (type(data.shape[a]) is int and data.shape[a] == 1)]
    if kept == sorted(kept):
        return jnp.reshape(data, tuple(data.shape[a] for a in axes))
    return jnp.transpose(data, axes)


def logical(a: Any) -> Any:
    """The value itself, in the IR's layout."""
    return _moved(a.data, inverse_perm(a.perm)) if isinstance(a, Permuted) else a


def in_layout(a: Any, perm: tuple[int, ...]) -> Any:
    """The data of ``a`` held under ``perm``; a lower-rank operand is first given the leading
    unit dims that broadcasting would give it."""
    data, have = parts(a)
    if len(have) < len(perm):
        data = jnp.reshape(data, (1,) * (len(perm) - len(have)) + tuple(data.shape))
        have = tuple(range(len(perm)))
    if have == perm:
        return data
    inv = inverse_perm(have)
    return _moved(data, tuple(inv[p] for p in perm))


def with_data(a: Any, fn: Callable[[Any], Any]) -> Any:
    data, perm = parts(a)
    return held(fn(data), perm)


def physical(t: Sequence[Any], perm: Sequence[int]) -> tuple:
    """A per-axis tuple of the value (window sizes, pads, limits) in the order of its data."""
    return tuple(t[p] for p in perm)


def channels_last(rank: int) -> tuple[int, ...]:
    return (0, *range(2, rank), 1)


def kernel_last(rank: int) -> tuple[int, ...]:
    """A conv weight's [O, I, *spatial] as [*spatial, I, O], the layout the channels-last convs read."""
    return (*range(2, rank), 1, 0)


def _broadcasts(a: Any, ref: Any) -> bool:
    """Whether ``a`` is broadcast against the same-or-higher-rank ``ref`` (a bias, a scale)."""
    if a.ndim < ref.ndim:
        return True
    return any(type(d) is int and d == 1 and not (type(r) is int and r == 1) for d, r in zip(a.shape, ref.shape))


def common_layout(args: Sequence[Any]) -> tuple[int, ...] | None:
    """The layout a pointwise op over ``args`` computes in: that of its transposed operands
    when they agree and every other operand is broadcast against them (re-laying that out
    costs little); else None, and the op computes in the IR's layout."""
    permuted = [a for a in args if isinstance(a, Permuted)]
    perms = {a.perm for a in permuted}
    if len(perms) != 1:
        return None
    ref = max(permuted, key=lambda a: a.ndim)
    if any(a.ndim > ref.ndim or (not isinstance(a, Permuted) and not _broadcasts(a, ref)) for a in args):
        return None
    return ref.perm
