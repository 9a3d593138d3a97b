"""ONNX rules: reductions, cumulative scans, sort and top-k."""

from __future__ import annotations

import numpy as np

from accelir import dims as D
from accelir.ir import DType, Node, TensorType
from accelir.ops.shape import inverse_perm

from .context import LoweringContext, OnnxValue, SAME, register_lowering

# ----- reductions -----------------------------------------------------------------------

_REDUCE = {"reduce_sum": "ReduceSum", "reduce_mean": "ReduceMean", "reduce_max": "ReduceMax",
           "reduce_min": "ReduceMin", "reduce_prod": "ReduceProd", "reduce_any": "ReduceMax",
           "reduce_all": "ReduceMin"}


@register_lowering(*_REDUCE)
def _lower_reduce(ctx, node, xs):
    (x,) = xs
    axes = node.attrs["axes"]
    if not axes:
        return [x]
    if node.op == "reduce_mean" and node.outputs[0].dtype.is_float \
            and not all(D.is_static(node.inputs[0].shape[a]) for a in axes):
        return [_mean_over_run_time_size(ctx, node, x)]
    out = ctx.kernel(_REDUCE[node.op], x, ctx.ints(axes), keepdims=int(node.attrs["keepdims"]))
    return [out]


def _mean_over_run_time_size(ctx: LoweringContext, node: Node, x: OnnxValue) -> OnnxValue:
    """A mean over axes of run-time size (a selection's, which may be empty): ONNX Runtime's ReduceMean,
    nan where the count is 0 (its mean of no entries is 0; torch's and numpy's is nan, 0 / 0).  The
    kernel's own accumulation stays: a float16 sum or count past 65504 would be inf."""
    axes, t = node.attrs["axes"], node.inputs[0].type
    mean = ctx.kernel("ReduceMean", x, ctx.ints(axes), keepdims=int(node.attrs["keepdims"]))
    empty = ctx.op("Equal", ctx.scalar_dim(D.dim_prod(t.shape[a] for a in axes)), ctx.const(np.asarray(0, np.int64)))
    nan = ctx.const(np.asarray(np.nan, mean.dtype.numpy))
    return ctx.kernel("Where", empty, nan, mean, main=1)


@register_lowering("argmax", "argmin")
def _lower_arg(ctx, node, xs):
    op_type = "ArgMax" if node.op == "argmax" else "ArgMin"
    return [ctx.kernel(op_type, xs[0], result=DType.i64, axis=node.attrs["axis"],
                       keepdims=int(node.attrs["keepdims"]), select_last_index=int(node.attrs["select_last_index"]))]


@register_lowering("cumsum")
def _lower_cumsum(ctx, node, xs):
    axis = ctx.const(np.asarray(node.attrs["axis"], dtype=np.int64))
    return [ctx.kernel("CumSum", xs[0], axis, exclusive=int(node.attrs["exclusive"]),
                       reverse=int(node.attrs["reverse"]))]


_CUM_STEP = {"cumprod": "Mul", "cummax": "Max", "cummin": "Min"}


def _identity_of(op: str, dtype: DType) -> np.ndarray:
    if op == "cumprod":
        return np.asarray(1, dtype=dtype.numpy)
    if dtype.is_float:
        return np.asarray(-np.inf if op == "cummax" else np.inf, dtype=dtype.numpy)
    info = np.iinfo(dtype.numpy)
    return np.asarray(info.min if op == "cummax" else info.max, dtype=dtype.numpy)


@register_lowering("cumprod", "cummax", "cummin")
def _lower_cum_scan(ctx, node, xs):
    """A Scan over the axis moved to the front, carrying the running product / max / min."""
    t = node.inputs[0].type
    if t.rank == 0:
        return [xs[0]]
    step = _CUM_STEP[node.op]
    cdt = ctx.compute_dtype(t.dtype, step)
    axis = node.attrs["axis"] % t.rank
    perm = [axis] + [i for i in range(t.rank) if i != axis]
    inv = inverse_perm(perm)
    x = ctx.cast(xs[0], cdt)
    xt = ctx.op("Transpose", x, perm=perm)
    rest = tuple(t.shape[i] for i in perm[1:])
    init = ctx.op("Expand", ctx.const(_identity_of(node.op, cdt)), ctx.dims(rest))
    exclusive = node.attrs.get("exclusive", False)
    carry_t = TensorType(cdt, rest)

    def body(sub, ins):
        carry, xi = ins
        new = sub.op(step, carry, xi)
        return [new, carry if exclusive else new]

    g = ctx.subgraph(f"{node.op}_body", [carry_t, carry_t], body, [carry_t, carry_t])
    direction = int(node.attrs["reverse"])
    _, yt = ctx.op("Scan", init, xt, out_dtypes=(cdt, cdt), body=g, num_scan_inputs=1,
                   scan_input_directions=[direction], scan_output_directions=[direction])
    return [ctx.cast(ctx.op("Transpose", yt, perm=inv), t.dtype)]


def _topk(ctx: LoweringContext, x: OnnxValue, k: OnnxValue, axis: int, largest: bool) -> tuple[OnnxValue, ...]:
    # ONNX Runtime's TopK breaks ties by the lower index in both directions, as the IR's stable sort
    return ctx.kernel("TopK", x, k, results=(SAME, DType.i64), axis=axis, largest=int(largest), sorted=1)


@register_lowering("sort")
def _lower_sort(ctx, node, xs):
    t = node.inputs[0].type
    axis = node.attrs["axis"] % t.rank
    vals, idx = _topk(ctx, xs[0], ctx.dim(t.shape[axis]), axis, node.attrs["descending"])
    return [vals, idx]


@register_lowering("topk")
def _lower_topk(ctx, node, xs):
    t = node.inputs[0].type
    vals, idx = _topk(ctx, xs[0], ctx.ints([node.attrs["k"]]), node.attrs["axis"] % t.rank, node.attrs["largest"])
    return [vals, idx]
