"""ONNX reduction and scan rules: Reduce*, ArgMax / ArgMin, TopK, CumSum / CumProd."""

from __future__ import annotations

import numpy as np

from ...ir import DType, Value
from .context import DynamicValueError, NodeContext, norm_axis, rule, select_on_runtime_axis

__all__: list[str] = []


REDUCE = {"ReduceSum": "reduce_sum", "ReduceMean": "reduce_mean", "ReduceMax": "reduce_max",
          "ReduceMin": "reduce_min", "ReduceProd": "reduce_prod"}
_BOOL_REDUCE = {"reduce_max": "reduce_any", "reduce_min": "reduce_all"}


def _reduce_axes(ctx: NodeContext, x: Value) -> tuple[int, ...] | None:
    """The reduced axes, or None for 'no reduction' (noop_with_empty_axes)."""
    axes = ctx.axes(1) if ctx.input(1) is not None else (
        tuple(ctx.attr("axes")) if ctx.attr("axes") is not None else None)
    if not axes:
        if ctx.attr("noop_with_empty_axes", 0):
            return None
        return tuple(range(x.rank))
    return tuple(norm_axis(ctx, a, x.rank) for a in axes)


@rule(*REDUCE)
def _reduce(ctx: NodeContext):
    x = ctx.input(0)
    if ctx.dynamic(1) and (x.dtype.is_float or ctx.node.op_type != "ReduceMean"):
        return [ctx.op("reduce_dynamic", x, ctx.input(1), kind=ctx.node.op_type[len("Reduce"):].lower(),
                       keepdims=bool(ctx.attr("keepdims", 1)),
                       noop_with_empty_axes=bool(ctx.attr("noop_with_empty_axes", 0)))]
    axes = _reduce_axes(ctx, x)
    if axes is None:
        return [x]
    op = REDUCE[ctx.node.op_type]
    if op == "reduce_mean" and not x.dtype.is_float:
        return None
    keepdims = bool(ctx.attr("keepdims", 1))
    if op in ("reduce_max", "reduce_min") and any(x.shape[a] == 0 for a in axes):
        # the identity of max / min over nothing: -inf / +inf (the dtype's extremes for ints, False / True)
        shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape)) if keepdims else \
            tuple(d for i, d in enumerate(x.shape) if i not in axes)
        lowest = op == "reduce_max"
        if x.dtype is DType.bool:
            ident = not lowest
        elif x.dtype.is_float:
            ident = -np.inf if lowest else np.inf
        else:
            info = np.iinfo(x.dtype.numpy)
            ident = info.min if lowest else info.max
        return [ctx.op("broadcast_to", ctx.scalar(ident, x), shape=shape)]
    if x.dtype is DType.bool:
        op = _BOOL_REDUCE.get(op, op)
    return [ctx.op(op, x, axes=axes, keepdims=keepdims)]


@rule("ArgMax", "ArgMin")
def _arg(ctx: NodeContext):
    return [ctx.op(ctx.node.op_type.lower(), ctx.input(0), axis=ctx.attr("axis", 0),
                   keepdims=bool(ctx.attr("keepdims", 1)), select_last_index=bool(ctx.attr("select_last_index", 0)))]


@rule("TopK")
def _topk(ctx: NodeContext):
    x = ctx.input(0)
    if ctx.opset >= 10 and ctx.dynamic(1):
        return list(ctx.ops("topk_dynamic", x, ctx.input(1), axis=ctx.attr("axis", -1),
                            largest=bool(ctx.attr("largest", 1))))
    k = ctx.ints(1, "k")[0] if ctx.opset >= 10 else ctx.attr("k")
    if isinstance(k, str):
        raise DynamicValueError("its k depends on symbolic dims")
    return list(ctx.ops("topk", x, k=int(k), axis=ctx.attr("axis", -1), largest=bool(ctx.attr("largest", 1))))


@rule("CumSum", "CumProd")
def _cum(ctx: NodeContext):
    op = "cumsum" if ctx.node.op_type == "CumSum" else "cumprod"
    x = ctx.input(0)
    attrs = {"exclusive": bool(ctx.attr("exclusive", 0)), "reverse": bool(ctx.attr("reverse", 0))}
    if ctx.dynamic(1):  # the scan along each axis, the one asked for selected at run time
        return [select_on_runtime_axis(ctx, 1, x.rank, lambda a: ctx.op(op, x, axis=a, **attrs))]
    axis = ctx.ints(1, "axis")[0]
    return [ctx.op(op, x, axis=int(axis), **attrs)]
