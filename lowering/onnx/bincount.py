"""ONNX rule of ``bincount`` (accelir/ops/bincount.py): a ScatterElements(reduction=add) of ones
(or of the weights) into zeros of the run-time length max(max(x) + 1, minlength)."""

from __future__ import annotations

import numpy as np
from onnx import numpy_helper

from accelir.ir import DType

from .context import register_lowering


def _full(ctx, shape, value: int, dtype: DType):
    """A tensor of the run-time ``shape`` (an i64 vector) filled with ``value``."""
    return ctx.op("ConstantOfShape", shape, dtype=dtype, value=numpy_helper.from_array(np.full(1, value, dtype.numpy)))


@register_lowering("bincount")
def _lower_bincount(ctx, node, xs):
    x = ctx.cast(xs[0], DType.i64)
    out = node.outputs[0].type.dtype
    compute = DType.i64 if len(xs) == 1 else (DType.f64 if out is DType.f64 else DType.f32)
    top = ctx.op("ReduceMax", ctx.op("Concat", x, ctx.ints([-1]), axis=0), keepdims=1)
    length = ctx.op("Max", ctx.op("Add", top, ctx.ints([1])), ctx.ints([node.attrs["minlength"]]))
    # a negative value has no bin: every index becomes `length`, out of range, so the scatter fails
    # at run time instead of counting it from the end as ScatterElements would
    low = ctx.op("ReduceMin", ctx.op("Concat", x, ctx.ints([0]), axis=0), keepdims=1)
    idx = ctx.op("Where", ctx.op("Less", low, ctx.ints([0]), dtype=DType.bool), length, x)
    if len(xs) == 1:
        upd = _full(ctx, ctx.op("Shape", x, dtype=DType.i64), 1, DType.i64)
    else:
        upd = ctx.cast(xs[1], compute)
    counts = ctx.op("ScatterElements", _full(ctx, length, 0, compute), idx, upd, axis=0, reduction="add")
    return [ctx.cast(counts, out)]
