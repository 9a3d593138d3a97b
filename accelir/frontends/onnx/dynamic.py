"""ONNX ops whose output sizes the data decides: NonZero, Unique, Compress, NonMaxSuppression,
and AffineGrid when its size is a run-time value.

Each becomes the IR op of the same meaning (accelir/ops/dynamic.py), whose output carries
an unbacked dim; onnxruntime runs it, XLA pads it to its upper bound (lowering/jax/padding.py),
except AffineGrid's grid, which has no bound and which XLA refuses by name.
"""

from __future__ import annotations

import numpy as np

from ...ir import DType
from .context import NodeContext, rule

__all__: list[str] = []


@rule("NonZero")
def _nonzero(ctx: NodeContext):
    x = ctx.input(0)
    if x.rank == 0:  # ONNX reads a scalar as one element
        return [ctx.op("nonzero", ctx.op("reshape", x, shape=(1,)))]
    return [ctx.op("nonzero", x)]


@rule("Unique")
def _unique(ctx: NodeContext):
    return list(ctx.ops("unique", ctx.input(0), axis=ctx.attr("axis"), sorted=bool(ctx.attr("sorted", 1))))


@rule("Compress")
def _compress(ctx: NodeContext):
    cond = ctx.input(1)
    if cond.dtype is not DType.bool:
        cond = ctx.op("cast", cond, dtype=DType.bool)
    return [ctx.op("compress", ctx.input(0), cond, axis=ctx.attr("axis"))]


@rule("NonMaxSuppression")
def _nms(ctx: NodeContext):
    boxes, scores = ctx.input(0), ctx.input(1)
    # optional inputs are positional: an absent one before a given one takes ONNX's default
    defaults = [np.zeros(1, np.int64), np.zeros(1, boxes.dtype.numpy)]
    last = max((i for i in range(2, 5) if ctx.input(i) is not None), default=1)
    ins = [boxes, scores] + [ctx.input(i) if ctx.input(i) is not None else ctx.const(defaults[i - 2])
                             for i in range(2, last + 1)]
    return [ctx.op("non_max_suppression", *ins, center_point_box=int(ctx.attr("center_point_box", 0)))]


@rule("AffineGrid")
def _affine_grid(ctx: NodeContext):
    if not ctx.dynamic(1):
        return None  # the size is known at import: the schema's function body builds the grid from core ops
    size = ctx.input(1)
    return [ctx.op("affine_grid_dynamic", ctx.input(0), size, align_corners=bool(ctx.attr("align_corners", 0)))]
