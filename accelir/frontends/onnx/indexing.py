"""ONNX ops that move elements to computed positions, as IR gathers and scatters:
``ReverseSequence`` and ``TensorScatter``; and ``Det`` of small matrices as a gather over
the permutations.  (MaxPool's ``Indices``, ``MaxUnpool`` and ``Col2Im`` live in
``pooling``, with the window arithmetic they share.)
"""

from __future__ import annotations

import itertools

import numpy as np

from ...ir import DType
from .context import NodeContext, norm_axis, reshape, reverse_prefixes, rule

__all__: list[str] = []


@rule("ReverseSequence")
def _reverse_sequence(ctx: NodeContext):
    x = ctx.input(0)
    time_axis = norm_axis(ctx, ctx.attr("time_axis", 0), x.rank)
    batch_axis = norm_axis(ctx, ctx.attr("batch_axis", 1), x.rank)
    return [reverse_prefixes(ctx, x, ctx.input(1), time_axis, batch_axis)]


@rule("TensorScatter")
def _tensor_scatter(ctx: NodeContext):
    cache, update, where = ctx.input(0), ctx.input(1), ctx.input(2)
    axis = norm_axis(ctx, ctx.attr("axis", -2), cache.rank)
    if axis == 0:
        raise ctx.unsupported("axis 0: the write position is per batch row (dim 0)")
    # row b writes update[b, ..., s, ...] to position write_indices[b] + s (modulo the length if circular)
    pos = ctx.op("iota", shape=update.shape, axis=axis, dtype=DType.i64)
    if where is not None:
        start = reshape(ctx, ctx.cast(where, DType.i64), (cache.shape[0],) + (1,) * (cache.rank - 1))
        pos = ctx.op("add", pos, start)
    if ctx.attr("mode", "linear") == "circular":
        pos = ctx.op("rem", pos, ctx.scalar(cache.shape[axis], DType.i64))
    return [ctx.op("scatter_elements", cache, pos, update, axis=axis)]


@rule("Det")
def _det(ctx: NodeContext):
    """Leibniz's sum over permutations (small static matrices): sum_p sign(p) prod_i a[i, p(i)]."""
    x = ctx.input(0)
    size = x.shape[-1]
    if type(size) is not int or x.shape[-2] != size or size > 5:
        raise ctx.unsupported(f"a determinant of {x.type}: static square matrices up to 5x5 only")
    perms = list(itertools.permutations(range(size)))
    table = np.array([[i * size + p[i] for i in range(size)] for p in perms], np.int64)
    signs = np.array([(-1) ** sum(p[i] > p[j] for i in range(size) for j in range(i + 1, size)) for p in perms])
    lead = tuple(x.shape[:-2])
    flat = reshape(ctx, x, lead + (size * size,))
    terms = ctx.op("gather", flat, ctx.const(table.reshape(-1)), axis=len(lead))
    terms = ctx.op("reduce_prod", reshape(ctx, terms, lead + table.shape), axes=(len(lead) + 1,))
    return [ctx.op("reduce_sum", ctx.op("mul", terms, ctx.const(signs.astype(x.dtype.numpy))),
                   axes=(len(lead),))]
