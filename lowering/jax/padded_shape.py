"""Slices, joins and reshapes along padded axes on XLA (padding.DERIVING), and the sizes they meet.

On a padded buffer (lowering/jax/padding.py) the valid entries of an axis sized by data are its
front, and a dim computed from such sizes (``u0+u1``) is held in a buffer of its upper bound
(lowering/jax/padded_dims.py).  These rules keep that so:

- a slice whose start or stop is computed from data-dependent dims (the second part of a split
  by ``.tolist()`` sizes starts where the first ends; a table cut at ``max // 64 + 1``) gathers
  its rows from the start read at run time, into a buffer of the result's bound;
- a join along a padded axis packs each part's valid rows after the previous part's, by a gather
  from the parts laid end to end;
- a reshape merging a padded axis with the static axes after it moves no entry; its buffer must
  be the merged dim's, or it is refused by name;
- where an elementwise op or a broadcast takes a static size to be a padded one (a join of a
  split's parts against the whole), the buffer is cut or padded to the output's;
- a scatter drops the entries in the padding of its indices.

The sizes a node assumes (a slice within its axis, a size taken to be another: a join's parts
adding up to the whole) are checked at run time (``RuleContext.require``), as torch's own checks
would raise.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax.numpy as jnp
from jax import lax

from accelir.ops import registry

from .context import JAX_RULES, RuleContext, register_padded, rule_for
from .padded_dims import buffer_size, mentions, run_time_value
from .padding import refusal, unbacked_axes

_I64 = jnp.int64


def _value(ctx: RuleContext, d: Any) -> Any:
    """Dim ``d`` at run time (traced where it is computed from data-dependent dims)."""
    return run_time_value(d, ctx.lowering.lengths, ctx.bindings)


def _size(ctx: RuleContext, d: Any) -> int:
    """The size of the buffer holding dim ``d``."""
    return buffer_size(d, ctx.lowering.lengths, ctx.bindings)


@register_padded("slice")
def _slice(ctx, x, *, starts, stops, steps, axes):
    """Axes with run-time bounds gather from their start; the others slice as usual (their bounds are
    static, or the whole of a padded axis: padding.py refuses other slices of one)."""
    node, lengths = ctx.node, ctx.lowering.lengths
    a = node.attrs
    fixed = [k for k in range(len(axes))
             if not (mentions(a["starts"][k], lengths) or mentions(a["stops"][k], lengths))]
    x = JAX_RULES["slice"](ctx, x, starts=[starts[k] for k in fixed], stops=[stops[k] for k in fixed],
                           steps=[steps[k] for k in fixed] if steps else (), axes=[axes[k] for k in fixed])
    for k, ax in enumerate(axes):
        if k in fixed:
            continue
        ax %= x.ndim
        step = steps[k] if steps else 1
        start, stop, n = (jnp.asarray(_value(ctx, d), _I64)
                          for d in (a["starts"][k], a["stops"][k], node.inputs[0].shape[ax]))
        ctx.require((0 <= start) & (start <= stop) & (stop <= n),
                    f"its bounds on axis {ax} ({a['starts'][k]}:{a['stops'][k]}) fall outside the axis of size "
                    f"{node.inputs[0].shape[ax]}, which torch refuses; keep the sizes the data give within it")
        size = _size(ctx, node.outputs[0].shape[ax])
        idx = jnp.clip(start + jnp.arange(size, dtype=_I64) * step, 0, x.shape[ax] - 1)
        x = jnp.take(x, idx, axis=ax)
    return x


@register_padded("concat")
def _concat(ctx, *xs, axis):
    """Parts along a padded axis are laid end to end, then each output row gathered from its part's
    row: output row ``j`` of part ``i`` is that part's row ``j - offset_i``, ``offset_i`` the valid
    rows before it.  Rows past the last part are padding (row 0)."""
    node, lengths = ctx.node, ctx.lowering.lengths
    ax = axis % xs[0].ndim
    whole = node.outputs[0].shape
    xs = _aligned(ctx, xs, whole, [_size(ctx, d) for d in whole], skip=ax)  # the other axes, taken equal
    dims = [v.shape[ax] for v in node.inputs]
    if not any(d in lengths for d in dims):
        return JAX_RULES["concat"](ctx, *xs, axis=axis)
    out = whole[ax]
    rows = jnp.arange(_size(ctx, out), dtype=_I64)
    src = jnp.zeros_like(rows)
    offset, base = jnp.zeros((), _I64), 0
    for x, d in zip(xs, dims):
        n = jnp.asarray(_value(ctx, d), _I64)
        src = jnp.where((rows >= offset) & (rows < offset + n), base + rows - offset, src)
        offset, base = offset + n, base + x.shape[ax]
    return jnp.take(jnp.concatenate(xs, axis=ax), src, axis=ax)


@register_padded("reshape")
def _reshape(ctx, x, *, shape):
    """The buffer reshapes as the value does where each padded axis keeps its place (padding.py); the
    merged axis's buffer must then be the merged dim's own, which holds for the dims torch gives."""
    if x.size != math.prod(int(d) for d in shape):
        raise refusal(ctx.node, f"its buffer of shape {tuple(x.shape)} does not reshape to {tuple(shape)}, the "
                                "buffer sizes of its data-dependent dims")
    return jnp.reshape(x, shape)


# ----- a static size the type rule takes to be a padded one, or the other way ----------

def _aligned(ctx: RuleContext, xs: Sequence[Any], out: Sequence[Any], sizes: Sequence[int],
             skip: int | None = None) -> list:
    """Each input resized, axis by axis (but ``skip``), to the buffer of the output dim it is broadcast to
    where the type rule took the two to be equal (``64`` and ``u0+u1+u2+u3``: torch's split checks that
    the parts add up to the whole): checked at run time, then the buffer padded or cut to the output's,
    its valid rows the same."""
    lengths = ctx.lowering.lengths
    fixed = []
    for i, (v, x) in enumerate(zip(ctx.node.inputs, xs)):
        lead = len(out) - v.rank
        for k, a in enumerate(v.shape):
            o = out[lead + k]
            if lead + k == skip or a == o or a == 1 or not (mentions(a, lengths) or mentions(o, lengths)):
                continue
            ctx.require(jnp.asarray(_value(ctx, a)) == jnp.asarray(_value(ctx, o)),
                        f"dim {k} of input {i} ({a}) differs from {o} at run time, though the graph takes them "
                        "to be equal (torch checks it where the model computes them); feed data for which they agree")
            size, have = sizes[lead + k], x.shape[k]
            if have > size:
                x = lax.slice_in_dim(x, 0, size, axis=k)
            elif have < size:
                x = jnp.pad(x, [(0, size - have if j == k else 0) for j in range(x.ndim)])
        fixed.append(x)
    return fixed


def _elementwise(op: str):
    """``op``'s own rule on its inputs aligned to its output (the rule itself needs no padded form)."""
    def rule(ctx, *xs, **attrs):
        out = ctx.node.outputs[0].shape
        return rule_for(op)(ctx, *_aligned(ctx, xs, out, [_size(ctx, d) for d in out]), **attrs)
    return rule


for _op, _def in list(registry.REGISTRY.items()):
    if _def.elementwise:
        register_padded(_op)(_elementwise(_op))


@register_padded("broadcast_to")
def _broadcast_to(ctx, x, *, shape):
    (x,) = _aligned(ctx, [x], ctx.node.outputs[0].shape, shape)
    return jnp.broadcast_to(x, shape)


@register_padded("scatter_elements")
def _scatter_elements(ctx, x, idx, upd, *, axis, reduction):
    """Index entries in the padding of the indices' padded axes are sent past the end (dropped); a negative
    index along a padded axis of ``x`` counts from its valid end, and one outside its valid entries is
    refused at run time (counted from the buffer's end, it could land on a valid row)."""
    lengths = ctx.lowering.lengths
    ax = axis % x.ndim
    idx = idx.astype(_I64)
    valid = jnp.ones(idx.shape, bool)
    for k, d in unbacked_axes(ctx.node.inputs[1].type, lengths).items():
        valid &= lax.broadcasted_iota(_I64, idx.shape, k) < ctx.length(d)
    sym = unbacked_axes(ctx.node.inputs[0].type, lengths).get(ax)
    if sym is not None:
        n = ctx.length(sym)
        ctx.require(jnp.all(~valid | ((idx >= -n) & (idx < n))),
                    f"an index along axis {ax} falls outside its {sym} entries, which torch and onnxruntime refuse; "
                    "keep the indices within the axis")
        idx = jnp.where(idx < 0, idx + n, idx)
    idx = jnp.where(valid, idx, x.shape[ax])
    return JAX_RULES["scatter_elements"](ctx, x, idx, upd, axis=axis, reduction=reduction)
