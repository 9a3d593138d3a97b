"""ONNX rules: shape ops and data movement (reshape, slice, pad, gather, scatter, iota)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from accelir.ir import DType, Node

from .kernels import INT64_MIN, WIDER_DTYPES
from .context import LoweringContext, OnnxValue, SAME, register_lowering

# ----- shape and data movement ----------------------------------------------------------

@register_lowering("reshape")
def _lower_reshape(ctx, node, xs):
    src = node.inputs[0].shape
    target = list(node.attrs["shape"])
    if tuple(target) == tuple(src):
        return [xs[0]]
    if 0 not in target:
        # copy matching symbolic dims with 0 and let one remaining symbol be -1, so the shape stays a
        # constant (ONNX Runtime's fusions match on constant shapes)
        spec: list[Any] = [0 if isinstance(d, str) and i < len(src) and src[i] == d else d
                           for i, d in enumerate(target)]
        if sum(isinstance(d, str) for d in spec) <= 1:
            return [ctx.op("Reshape", xs[0], ctx.ints([-1 if isinstance(d, str) else d for d in spec]))]
    allow_zero = 1 if 0 in target else None
    return [ctx.op("Reshape", xs[0], ctx.dims(target), allowzero=allow_zero)]


@register_lowering("transpose")
def _lower_transpose(ctx, node, xs):
    return [ctx.kernel("Transpose", xs[0], perm=list(node.attrs["perm"]))]


@register_lowering("broadcast_to")
def _lower_broadcast_to(ctx, node, xs):
    if tuple(node.attrs["shape"]) == node.inputs[0].shape:
        return [xs[0]]
    return [ctx.kernel("Expand", xs[0], ctx.dims(node.attrs["shape"]))]


@register_lowering("squeeze", "unsqueeze")
def _lower_squeeze(ctx, node, xs):
    if not node.attrs["axes"]:
        return [xs[0]]
    return [ctx.kernel(node.op.capitalize(), xs[0], ctx.ints(node.attrs["axes"]))]


def slice_partition(node: Node) -> tuple[list[Node], int] | None:
    """``(slices, axis)`` where every reader of ``node``'s operand is a unit-step slice along one static
    axis and together they cut it into consecutive parts (a packed q, k, v projection, say), the slices
    in order along the axis; else None."""
    x = node.inputs[0]
    if x.rank == 0:
        return None
    parts: list[tuple[int, int, Node]] = []
    axis = None
    for s in x.users():
        a = s.attrs if s.op == "slice" else None
        if a is None or s.graph is not node.graph or len(a["axes"]) != 1 or tuple(a["steps"] or (1,)) != (1,):
            return None
        ax = a["axes"][0] % x.rank
        start, stop = a["starts"][0], a["stops"][0]
        if axis not in (None, ax) or type(start) is not int or type(stop) is not int:
            return None
        axis = ax
        parts.append((start, stop, s))
    dim = x.shape[axis]
    parts.sort(key=lambda p: (p[0], p[1]))
    if len(parts) < 2 or type(dim) is not int or parts[0][0] != 0 or parts[-1][1] != dim or \
            any(a[1] != b[0] or a[0] >= a[1] for a, b in zip(parts, parts[1:])):
        return None
    return [p[2] for p in parts], axis


@register_lowering("slice")
def _lower_slice(ctx, node, xs):
    a = node.attrs
    if not a["axes"]:
        return [xs[0]]
    done = ctx.split_outputs.pop(id(node), None)
    if done is not None:
        return [done]
    group = slice_partition(node)
    if group is not None:  # one Split for all the parts, read back as each slice is lowered
        slices, axis = group
        sizes = [s.attrs["stops"][0] - s.attrs["starts"][0] for s in slices]
        outs = ctx.kernel("Split", xs[0], ctx.ints(sizes), axis=axis, results=[SAME] * len(slices))
        for s, o in zip(slices, outs):
            ctx.split_outputs[id(s)] = o
        return [ctx.split_outputs.pop(id(node))]
    steps = a["steps"] or (1,) * len(a["axes"])
    return [ctx.kernel("Slice", xs[0], ctx.dims(a["starts"]), ctx.dims(a["stops"]), ctx.ints(a["axes"]),
                       ctx.ints(steps))]


@register_lowering("reverse")
def _lower_reverse(ctx, node, xs):
    axes = node.attrs["axes"]
    if not axes:
        return [xs[0]]
    n = len(axes)
    return [ctx.kernel("Slice", xs[0], ctx.ints([-1] * n), ctx.ints([INT64_MIN] * n), ctx.ints(axes),
                       ctx.ints([-1] * n))]


@register_lowering("concat")
def _lower_concat(ctx, node, xs):
    return [ctx.kernel("Concat", *xs, axis=node.attrs["axis"])]


@register_lowering("pad")
def _lower_pad(ctx, node, xs):
    (x,) = xs
    pads = node.attrs["pads"]
    mode = node.attrs["mode"]
    cdt = ctx.compute_dtype(x.dtype, "Pad")
    value = None
    if mode == "constant":
        value = ctx.const(np.asarray(node.attrs["value"]).astype(x.dtype.numpy).astype(cdt.numpy))
    out = ctx.op("Pad", ctx.cast(x, cdt), ctx.ints([p[0] for p in pads] + [p[1] for p in pads]), value, mode=mode)
    return [ctx.cast(out, x.dtype)]


def _index(ctx: LoweringContext, idx: OnnxValue) -> OnnxValue:
    return idx if idx.dtype in (DType.i32, DType.i64) else ctx.cast(idx, DType.i64)


@register_lowering("gather")
def _lower_gather(ctx, node, xs):
    return [ctx.kernel("Gather", xs[0], _index(ctx, xs[1]), axis=node.attrs["axis"])]


@register_lowering("take_along_axis")
def _lower_take_along_axis(ctx, node, xs):
    x_t, i_t = node.inputs[0].type, node.inputs[1].type
    ax = node.attrs["axis"] % x_t.rank
    x = xs[0]
    if any(x_t.shape[i] != i_t.shape[i] for i in range(x_t.rank) if i != ax):
        # the IR broadcasts x over the non-axis dims of the indices; GatherElements does not
        x = ctx.kernel("Expand", x, ctx.dims([1 if i == ax else d for i, d in enumerate(i_t.shape)]))
    return [ctx.kernel("GatherElements", x, _index(ctx, xs[1]), axis=ax)]


@register_lowering("gather_nd")
def _lower_gather_nd(ctx, node, xs):
    return [ctx.kernel("GatherND", xs[0], ctx.cast(xs[1], DType.i64), batch_dims=node.attrs["batch_dims"])]


_SCATTER_REDUCE_DTYPES = (DType.f32, DType.f64, DType.i32, DType.i64)


def _scatter(ctx: LoweringContext, op_type: str, x: OnnxValue, idx: OnnxValue, upd: OnnxValue, reduction: str,
             **attrs: Any) -> OnnxValue:
    """ONNX Runtime registers its scatter kernels for every dtype but implements the reductions for
    f32, f64, i32 and i64 only: compute a reduction in the nearest of those."""
    compute = None
    if reduction != "none":
        compute = next((d for d in (x.dtype,) + WIDER_DTYPES[x.dtype] if d in _SCATTER_REDUCE_DTYPES), None)
        if compute is None:
            raise ctx.error(f"onnxruntime has no {op_type} reduction {reduction!r} for {x.dtype}")
    return ctx.kernel(op_type, x, idx, upd, compute=compute, reduction=None if reduction == "none" else reduction,
                      **attrs)


@register_lowering("scatter_elements")
def _lower_scatter_elements(ctx, node, xs):
    x, idx, upd = xs
    return [_scatter(ctx, "ScatterElements", x, _index(ctx, idx), upd, node.attrs["reduction"],
                     axis=node.attrs["axis"])]


@register_lowering("scatter_nd")
def _lower_scatter_nd(ctx, node, xs):
    x, idx, upd = xs
    k = node.inputs[1].shape[-1]
    idx = ctx.cast(idx, DType.i64)
    # ScatterND takes no negative indices; count them from the end as the IR does
    sizes = ctx.op("Shape", x, dtype=DType.i64, start=0, end=k)
    neg = ctx.op("Less", idx, ctx.const(np.asarray(0, np.int64)), dtype=DType.bool)
    idx = ctx.op("Where", neg, ctx.op("Add", idx, sizes), idx)
    return [_scatter(ctx, "ScatterND", x, idx, upd, node.attrs["reduction"])]


def _clamped_starts(ctx: LoweringContext, x: OnnxValue, starts: Sequence[OnnxValue],
                    sizes: OnnxValue) -> OnnxValue:
    """The run-time start indices, clamped to [0, dim - size] as lax does."""
    st = ctx.op("Concat", *[ctx.op("Reshape", ctx.cast(s, DType.i64), ctx.ints([1])) for s in starts], axis=0)
    hi = ctx.op("Sub", ctx.op("Shape", x, dtype=DType.i64), sizes)
    return ctx.op("Min", ctx.op("Max", st, ctx.ints([0])), hi)


@register_lowering("dynamic_slice")
def _lower_dynamic_slice(ctx, node, xs):
    x = xs[0]
    sizes = ctx.dims(node.attrs["sizes"])
    st = _clamped_starts(ctx, x, xs[1:], sizes)
    return [ctx.kernel("Slice", x, st, ctx.op("Add", st, sizes))]


@register_lowering("dynamic_update_slice")
def _lower_dynamic_update_slice(ctx, node, xs):
    """Pad the update (and a mask of it) out to x's shape at the start, then select."""
    x, upd = xs[:2]
    sizes = ctx.op("Shape", upd, dtype=DType.i64)
    st = _clamped_starts(ctx, x, xs[2:], sizes)
    after = ctx.op("Sub", ctx.op("Shape", x, dtype=DType.i64), ctx.op("Add", st, sizes))
    pads = ctx.op("Concat", st, after, axis=0)
    mask = ctx.op("Expand", ctx.const(np.asarray(True)), sizes)
    mask = ctx.op("Pad", mask, pads, ctx.const(np.asarray(False)))
    cdt = ctx.compute_dtype(upd.dtype, "Pad")
    padded = ctx.cast(ctx.op("Pad", ctx.cast(upd, cdt), pads), upd.dtype)
    return [ctx.kernel("Where", mask, padded, x, main=1)]


@register_lowering("iota")
def _lower_iota(ctx, node, xs):
    shape = node.attrs["shape"]
    ax = node.attrs["axis"] % len(shape)
    dt: DType = node.attrs["dtype"]
    r = ctx.op("Range", ctx.const(np.asarray(0, np.int64)), ctx.scalar_dim(shape[ax]),
               ctx.const(np.asarray(1, np.int64)))
    r = ctx.cast(r, dt)
    if len(shape) > 1:
        r = ctx.op("Reshape", r, ctx.ints([-1 if i == ax else 1 for i in range(len(shape))]))
        r = ctx.kernel("Expand", r, ctx.dims(shape))
    return [r]
