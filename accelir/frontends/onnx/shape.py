"""ONNX shape rules: Shape, Reshape, Slice, Split, Pad, Range, ... and Gather / Scatter."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ... import dims as D
from ...ir import DType, Value
from ...ops.registry import broadcast_shapes
from ..decompositions import crop_negative_pads, triangle, wrap_pad
from .context import (HUGE, DynamicValueError, NodeContext, OnnxImportError, fits_import_budget, norm_axis,
                      onnx_dtype, reshape, rule, static_dims)

__all__: list[str] = []


def _dim_tensor(ctx: NodeContext, d: D.Dim) -> Value:
    """A 1-element i64 tensor holding dim ``d`` (a symbolic dim is counted at run time)."""
    if type(d) is int:
        return ctx.const(np.array([d], np.int64))
    ones = ctx.op("broadcast_to", ctx.scalar(1, DType.i64), shape=(d,))
    return ctx.op("reduce_sum", ones, axes=(0,), keepdims=True)


def _shape_value(ctx: NodeContext, dims: Sequence[D.Dim]) -> Value:
    if all(type(d) is int for d in dims):
        return ctx.const(np.array(dims, np.int64).reshape(len(dims)))
    parts = [_dim_tensor(ctx, d) for d in dims]
    out = parts[0] if len(parts) == 1 else ctx.op("concat", *parts, axis=0)
    ctx.imp.known[id(out)] = np.array(list(dims), dtype=object)
    return out


@rule("Shape")
def _shape(ctx: NodeContext):
    shape = ctx.input(0).shape
    rank = len(shape)
    start = ctx.attr("start", 0)
    end = ctx.attr("end", rank)
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = min(max(end + rank if end < 0 else end, 0), rank)
    return [_shape_value(ctx, shape[start:end])]


@rule("Size")
def _size(ctx: NodeContext):
    n = D.dim_prod(ctx.input(0).shape)
    if type(n) is int:
        return [ctx.const(np.array(n, np.int64))]
    out = ctx.op("reshape", _dim_tensor(ctx, n), shape=())
    ctx.imp.known[id(out)] = np.array(n, dtype=object)
    return [out]


@rule("Reshape")
def _reshape_rule(ctx: NodeContext):
    x = ctx.input(0)
    allowzero = ctx.attr("allowzero", 0)
    if ctx.dynamic(1):
        return [ctx.op("reshape_dynamic", x, ctx.input(1), allowzero=bool(allowzero))]
    target = list(ctx.ints(1, "shape"))
    for i, d in enumerate(target):
        if d == 0 and not allowzero:
            if i >= x.rank:
                raise OnnxImportError(f"{ctx.label}: shape entry {i} is 0 (copy) but the input has rank {x.rank}")
            target[i] = x.shape[i]
    if target.count(-1) > 1:
        raise OnnxImportError(f"{ctx.label}: shape {target} has more than one -1")
    if -1 in target:
        k = target.index(-1)
        # cancel the dims both sides share, so symbolic ones need no division
        have = list(x.shape)
        rest = []
        for i, d in enumerate(target):
            if i == k:
                continue
            if d in have:
                have.remove(d)
            else:
                rest.append(d)
        total, rest_n = D.dim_prod(have), D.dim_prod(rest)
        if type(rest_n) is not int:
            raise ctx.unsupported(f"inferring the -1 of shape {target} from {x.type} needs a symbolic division")
        if type(total) is int and (rest_n == 0 or total % rest_n):
            raise OnnxImportError(f"{ctx.label}: cannot reshape {x.type} to {target}")
        target[k] = D.dim_floordiv(total, rest_n)
    return [reshape(ctx, x, target)]


@rule("Flatten")
def _flatten(ctx: NodeContext):
    x = ctx.input(0)
    ax = ctx.attr("axis", 1)
    ax = ax + x.rank if ax < 0 else ax
    return [reshape(ctx, x, (D.dim_prod(x.shape[:ax]), D.dim_prod(x.shape[ax:])))]


@rule("Squeeze")
def _squeeze(ctx: NodeContext):
    x = ctx.input(0)
    if ctx.dynamic(1):
        return [ctx.op("squeeze_dynamic", x, ctx.input(1))]
    axes = ctx.axes(1)
    if axes is None:
        if any(_data_dependent(ctx, d) for d in x.shape):
            raise DynamicValueError("Squeeze without axes drops a data-dependent dim exactly when the data make it "
                                    "1, which sets the result's rank; give Squeeze its axes")
        axes = tuple(i for i, d in enumerate(x.shape) if d == 1)
    return [ctx.op("squeeze", x, axes=tuple(norm_axis(ctx, a, x.rank) for a in axes)) if axes else x]


@rule("Unsqueeze")
def _unsqueeze(ctx: NodeContext):
    if ctx.dynamic(1):
        return [ctx.op("unsqueeze_dynamic", ctx.input(0), ctx.input(1))]
    axes = ctx.axes(1)
    return [ctx.op("unsqueeze", ctx.input(0), axes=axes)]


@rule("Transpose")
def _transpose(ctx: NodeContext):
    x = ctx.input(0)
    perm = tuple(ctx.attr("perm", range(x.rank - 1, -1, -1)))
    return [x if perm == tuple(range(x.rank)) else ctx.op("transpose", x, perm=perm)]


@rule("Expand")
def _expand(ctx: NodeContext):
    x = ctx.input(0)
    if ctx.dynamic(1):
        return [ctx.op("expand_dynamic", x, ctx.input(1))]
    out = broadcast_shapes(x.shape, ctx.ints(1, "shape"), op=ctx.label)
    return [x if out == tuple(x.shape) else ctx.op("broadcast_to", x, shape=out)]


@rule("Concat")
def _concat(ctx: NodeContext):
    vals = [v for v in ctx.inputs if v is not None]
    ax = norm_axis(ctx, ctx.attr("axis"), vals[0].rank)
    # ONNX allows empty operands; the IR's concat does too, but they add nothing
    nonempty = [v for v in vals if v.shape[ax] != 0] or vals[:1]
    return [nonempty[0] if len(nonempty) == 1 else ctx.op("concat", *nonempty, axis=ax)]


def _data_dependent(ctx: NodeContext, d: D.Dim) -> bool:
    """Whether dim ``d`` names a symbol no graph input carries: an unbacked dim, which the data decides."""
    carried = {s for v in ctx.imp.main.inputs for dim in v.shape for s in D.symbols(dim)}
    return bool(D.symbols(d) - carried)


def _slice_axis(ctx: NodeContext, x: Value, ax: int, start: D.Dim, stop: D.Dim, step: int) -> Value:
    """x[start:stop:step] on one axis with ONNX's clamping (negative steps flip the axis)."""
    dim = x.shape[ax]

    def norm(v: D.Dim, lo: int, hi_off: int) -> D.Dim:
        if isinstance(v, str):
            return v
        if v >= HUGE // 4:
            return D.dim_add(dim, hi_off)
        if v <= -HUGE // 4:
            return lo
        if v < 0:
            v = D.dim_add(dim, v)
        if type(v) is int and type(dim) is int:
            v = min(max(v, lo), dim + hi_off)
        elif type(v) is int:
            v = max(v, lo)
        return v

    if step == 0:
        raise OnnxImportError(f"{ctx.label}: slice step 0")
    if step > 0:
        s, e = norm(start, 0, 0), norm(stop, 0, 0)
        if type(s) is int and type(e) is int and e < s:
            e = s
        if s == 0 and e == dim and step == 1:
            return x
        if type(start) is int and type(stop) is int and _data_dependent(ctx, dim):
            # a size the data decides may be below any bound: clamp at run time, to a size of its own
            bounds = [ctx.const(np.asarray([v], np.int64), DType.i64) for v in (start, stop, step)]
            return ctx.op("slice_dynamic", x, *bounds, axes=(ax,))
        return ctx.op("slice", x, starts=(s,), stops=(e,), steps=(step,), axes=(ax,))
    if type(dim) is not int:
        raise ctx.unsupported("negative slice steps need a static dim")
    s, e = norm(start, 0, -1), norm(stop, -1, -1)
    # in flipped coordinates index i becomes dim - 1 - i
    fs, fe = dim - 1 - s, dim - 1 - e
    fe = max(fe, fs)
    flipped = ctx.op("reverse", x, axes=(ax,))
    if fs == 0 and fe == dim and step == -1:
        return flipped
    return ctx.op("slice", flipped, starts=(fs,), stops=(fe,), steps=(-step,), axes=(ax,))


@rule("Slice")
def _slice(ctx: NodeContext):
    x = ctx.input(0)
    if ctx.opset < 10:
        starts, ends = ctx.attr("starts"), ctx.attr("ends")
        axes = ctx.attr("axes", range(len(starts)))
        steps = [1] * len(starts)
    elif any(ctx.dynamic(i) for i in range(1, 5)):
        return [_slice_dynamic(ctx, x)]
    else:
        starts, ends = ctx.ints(1, "starts"), ctx.ints(2, "ends")
        axes = ctx.axes(3) or tuple(range(len(starts)))
        steps = ctx.ints(4, "steps") if ctx.input(4) is not None else (1,) * len(starts)
    if any(isinstance(s, str) for s in steps):
        raise DynamicValueError("its steps depend on symbolic dims")
    for st, en, ax, step in zip(starts, ends, axes, steps):
        x = _slice_axis(ctx, x, norm_axis(ctx, int(ax), x.rank), st, en, int(step))
    return [x]


def _slice_dynamic(ctx: NodeContext, x: Value) -> Value:
    """Slice with run-time starts, ends, axes or steps; axes known at import stay an attribute,
    so the dims they leave alone keep their size."""
    ins = [x, ctx.input(1), ctx.input(2)]
    if ctx.dynamic(3):
        axes = None
        ins.append(ctx.input(3))
    elif ctx.input(3) is not None:
        axes = ctx.axes(3)
    else:
        axes = tuple(range(static_dims(ctx, ctx.input(1).shape, "starts length", "slice")[0]))
    if ctx.input(4) is not None:
        ins.append(ctx.input(4))
    return ctx.op("slice_dynamic", *ins, axes=axes)


@rule("Split")
def _split(ctx: NodeContext):
    x = ctx.input(0)
    ax = norm_axis(ctx, ctx.attr("axis", 0), x.rank)
    n_out = len(ctx.node.output)
    if ctx.dynamic(1):
        return list(ctx.ops("split_dynamic", x, ctx.input(1), axis=ax, outputs=n_out))
    if ctx.input(1) is not None:
        sizes = list(ctx.ints(1, "split"))
    elif ctx.attr("split") is not None:
        sizes = list(ctx.attr("split"))
    else:
        dim = x.shape[ax]
        n = ctx.attr("num_outputs", n_out)
        if type(dim) is not int:
            if n == 1:
                return [x]
            raise ctx.unsupported("an even split of a symbolic dim")
        chunk = -(-dim // n)
        sizes = [min(chunk, dim - i * chunk) for i in range(n)]
    if _data_dependent(ctx, x.shape[ax]) and all(type(k) is int for k in sizes):
        # the sizes must add up to a count the data decides: checked at run time, as the Split kernel does
        split = ctx.const(np.asarray(sizes, np.int64), DType.i64)
        return list(ctx.ops("split_dynamic", x, split, axis=ax, outputs=n_out))
    outs, start = [], 0
    for size in sizes:
        stop = D.dim_add(start, size)
        outs.append(ctx.op("slice", x, starts=(start,), stops=(stop,), axes=(ax,)))
        start = stop
    return outs


@rule("Tile")
def _tile(ctx: NodeContext):
    x = ctx.input(0)
    if ctx.dynamic(1):
        return [ctx.op("tile_dynamic", x, ctx.input(1))]
    reps = ctx.ints(1, "repeats")
    if len(reps) != x.rank:
        raise OnnxImportError(f"{ctx.label}: {len(reps)} repeats for an input of rank {x.rank}")
    if all(r == 1 for r in reps):
        return [x]
    # [d0, d1] -> [1, d0, 1, d1] -> broadcast [r0, d0, r1, d1] -> [r0*d0, r1*d1]
    inter = tuple(v for d in x.shape for v in (1, d))
    big = tuple(v for r, d in zip(reps, x.shape) for v in (r, d))
    b = ctx.op("broadcast_to", reshape(ctx, x, inter), shape=big)
    return [reshape(ctx, b, tuple(D.dim_mul(r, d) for r, d in zip(reps, x.shape)))]


@rule("ConstantOfShape")
def _constant_of_shape(ctx: NodeContext):
    t = ctx.attrs.get("value")
    fill = ctx.imp.array(t, f"{ctx.label}: its value") if t is not None else np.zeros(1, np.float32)
    if ctx.dynamic(0):
        return [ctx.op("constant_of_shape", ctx.input(0), value=float(fill.reshape(-1)[0]),
                       dtype=DType.from_numpy(fill.dtype))]
    shape = ctx.ints(0, "shape")
    return [ctx.op("broadcast_to", ctx.const(fill.reshape(())), shape=shape)]


@rule("Constant")
def _constant(ctx: NodeContext):
    a = ctx.node.attribute[0] if len(ctx.node.attribute) == 1 else None
    if a is None:
        raise OnnxImportError(f"{ctx.label}: a Constant needs exactly one value attribute")
    scalars = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64, "value_ints": np.int64}
    if a.name == "value":
        return [ctx.const(ctx.imp.array(a.t, f"{ctx.label}: its value"))]
    if a.name in scalars:
        return [ctx.const(np.asarray(ctx.attrs[a.name], dtype=scalars[a.name]))]
    raise ctx.unsupported(f"constant attribute {a.name!r} (strings and sparse tensors are out of scope)")


def _range_length(ctx: NodeContext, start: Any, limit: Any, delta: Any) -> int:
    """ONNX's max(ceil((limit - start) / delta), 0), exact for integers."""
    if delta == 0:
        raise OnnxImportError(f"{ctx.label}: its delta is 0")
    if all(isinstance(v, (int, np.integer)) for v in (start, limit, delta)):
        return max(-((int(start) - int(limit)) // int(delta)), 0)
    n = (float(limit) - float(start)) / float(delta)
    if not math.isfinite(n):
        raise OnnxImportError(f"{ctx.label}: start {start}, limit {limit} and delta {delta} give no finite length")
    return max(math.ceil(n), 0)


@rule("Range")
def _range(ctx: NodeContext):
    if any(ctx.dynamic(i) for i in range(3)):  # its length is known only at run time
        return [ctx.op("range_dynamic", *(reshape(ctx, v, ()) for v in ctx.inputs[:3]))]
    start, limit, delta = (ctx.values(i, what) for i, what in enumerate(("start", "limit", "delta")))
    dt = ctx.input(0).dtype
    if start.dtype == object or delta.dtype == object:
        raise DynamicValueError("its start and delta must not depend on symbolic dims")
    s, d = start.item(), delta.item()
    if limit.dtype != object:
        n: D.Dim = _range_length(ctx, s, limit.item(), d)
        if fits_import_budget((n,), dt):
            return [ctx.const(np.arange(s, limit.item(), d).astype(dt.numpy))]
    elif d <= 0:
        raise ctx.unsupported("a symbolic limit with a non-positive delta")
    else:
        s, d = int(s), int(d)
        n = D.dim_floordiv(D.dim_add(D.dim_sub(limit.item(), s), d - 1), d)
    # a symbolic or large range is computed at run time: start + i * delta
    r = ctx.op("iota", shape=(n,), axis=0, dtype=dt)
    if d != 1:
        r = ctx.op("mul", r, ctx.scalar(d, dt))
    return [ctx.op("add", r, ctx.scalar(s, dt)) if s else r]


@rule("EyeLike")
def _eyelike(ctx: NodeContext):
    x = ctx.input(0)
    dt = onnx_dtype(ctx.attr("dtype"), ctx.label) if "dtype" in ctx.attrs else x.dtype
    k = int(ctx.attr("k", 0))
    if x.rank != 2:
        raise OnnxImportError(f"{ctx.label}: EyeLike takes a 2-D input, got {x.type}")
    if fits_import_budget(x.shape, dt):
        return [ctx.const(np.eye(*x.shape, k=k, dtype=dt.numpy))]
    # a symbolic or large identity is computed at run time: 1 where col - row == k
    rows = ctx.op("iota", shape=tuple(x.shape), axis=0, dtype=DType.i64)
    cols = ctx.op("iota", shape=tuple(x.shape), axis=1, dtype=DType.i64)
    return [ctx.cast(ctx.op("eq", ctx.op("sub", cols, rows), ctx.scalar(k, DType.i64)), dt)]


@rule("Trilu")
def _trilu(ctx: NodeContext):
    x = ctx.input(0)
    if ctx.dynamic(1):  # a run-time diagonal: the mask compares against the value
        k = ctx.op("reshape", ctx.cast(ctx.input(1), DType.i64), shape=())
    else:
        k = int(ctx.values(1, "k").item()) if ctx.input(1) is not None else 0
    return [triangle(ctx.b, x, k, upper=bool(ctx.attr("upper", 1)))]


@rule("OneHot")
def _onehot(ctx: NodeContext):
    idx, values = ctx.input(0), ctx.input(2)
    rank = idx.rank + 1
    ax = norm_axis(ctx, ctx.attr("axis", -1), rank)
    if ctx.dynamic(1):  # a run-time depth: positions 0 .. depth - 1 from a run-time range
        d = ctx.op("reshape", ctx.cast(ctx.input(1), DType.i64), shape=())
        line = ctx.op("range_dynamic", ctx.scalar(0, DType.i64), d, ctx.scalar(1, DType.i64))
        pos = reshape(ctx, line, tuple(line.shape[0] if i == ax else 1 for i in range(rank)))
    else:
        depth = int(ctx.values(1, "depth").item())
        d = ctx.scalar(depth, DType.i64)
        pos = ctx.op("iota", shape=tuple(depth if i == ax else 1 for i in range(rank)), axis=ax, dtype=DType.i64)
    i64 = ctx.cast(idx, DType.i64)
    i64 = ctx.op("where", ctx.op("lt", i64, ctx.scalar(0, DType.i64)), ctx.op("add", i64, d), i64)
    hit = ctx.op("eq", ctx.op("unsqueeze", i64, axes=(ax,)), pos)
    off = ctx.op("reshape", ctx.op("slice", values, starts=(0,), stops=(1,), axes=(0,)), shape=())
    on = ctx.op("reshape", ctx.op("slice", values, starts=(1,), stops=(2,), axes=(0,)), shape=())
    return [ctx.op("where", hit, on, off)]


@rule("DepthToSpace", "SpaceToDepth")
def _depth_space(ctx: NodeContext):
    x = ctx.input(0)
    b = ctx.attr("blocksize")
    n, c, h, w = x.shape
    if ctx.node.op_type == "SpaceToDepth":
        y = reshape(ctx, x, (n, c, D.dim_floordiv(h, b), b, D.dim_floordiv(w, b), b))
        perm = (0, 3, 5, 1, 2, 4) if ctx.attr("mode", "DCR") == "DCR" else (0, 1, 3, 5, 2, 4)
        y = ctx.op("transpose", y, perm=perm)
        return [reshape(ctx, y, (n, D.dim_mul(c, b * b), D.dim_floordiv(h, b), D.dim_floordiv(w, b)))]
    cb = D.dim_floordiv(c, b * b)
    if ctx.attr("mode", "DCR") == "DCR":
        y = ctx.op("transpose", reshape(ctx, x, (n, b, b, cb, h, w)), perm=(0, 3, 4, 1, 5, 2))
    else:
        y = ctx.op("transpose", reshape(ctx, x, (n, cb, b, b, h, w)), perm=(0, 1, 4, 2, 5, 3))
    return [reshape(ctx, y, (n, cb, D.dim_mul(h, b), D.dim_mul(w, b)))]


def _pad_dynamic(ctx: NodeContext, x: Value, mode: str) -> Value:
    """Pad with run-time pads, value or axes; axes known at import stay an attribute."""
    ins = [x, ctx.input(1)]
    if ctx.dynamic(3):  # the pad value is then always given, so the operands stay positional
        value = ctx.input(2) if ctx.input(2) is not None else ctx.const(np.zeros((), x.dtype.numpy))
        return ctx.op("pad_dynamic", *ins, value, ctx.input(3), mode=mode)
    axes = ctx.axes(3)
    ins += [ctx.input(2)] if ctx.input(2) is not None else []
    return ctx.op("pad_dynamic", *ins, mode=mode, axes=None if axes is None else tuple(axes))


@rule("Pad")
def _pad(ctx: NodeContext):
    x = ctx.input(0)
    mode = ctx.attr("mode", "constant")
    if ctx.opset < 11:
        pads, value = list(ctx.attr("pads")), ctx.attr("value", 0.0)
        axes = tuple(range(x.rank))
    elif any(ctx.dynamic(i) for i in (1, 2, 3)):
        return [_pad_dynamic(ctx, x, mode)]
    else:
        pads = list(ctx.ints(1, "pads"))
        value = ctx.values(2, "constant_value").item() if ctx.input(2) is not None else 0
        axes = ctx.axes(3) or tuple(range(x.rank))
    if any(isinstance(p, str) for p in pads):
        raise DynamicValueError("its pads depend on symbolic dims")
    axes = [norm_axis(ctx, a, x.rank) for a in axes]
    n = len(axes)
    per = [(0, 0)] * x.rank
    for k, a in enumerate(axes):
        per[a] = (int(pads[k]), int(pads[k + n]))
    x = crop_negative_pads(ctx.b, x, per)
    per = [(max(lo, 0), max(hi, 0)) for lo, hi in per]
    if all(p == (0, 0) for p in per):
        return [x]
    if mode == "wrap":
        return [wrap_pad(ctx.b, x, per)]
    if mode not in ("constant", "reflect", "edge"):
        raise ctx.unsupported(f"pad mode {mode!r}")
    if isinstance(value, (bool, np.bool_)):
        value = float(value)
    return [ctx.op("pad", x, pads=tuple(per), mode=mode, value=float(value))]


# ----- gather / scatter --------------------------------------------------------------

@rule("Gather")
def _gather(ctx: NodeContext):
    return [ctx.op("gather", ctx.input(0), ctx.input(1), axis=norm_axis(ctx, ctx.attr("axis", 0), ctx.input(0).rank))]


@rule("GatherElements")
def _gather_elements(ctx: NodeContext):
    return [ctx.op("take_along_axis", ctx.input(0), ctx.input(1), axis=ctx.attr("axis", 0))]


@rule("GatherND")
def _gather_nd(ctx: NodeContext):
    return [ctx.op("gather_nd", ctx.input(0), ctx.input(1), batch_dims=ctx.attr("batch_dims", 0))]


@rule("ScatterElements", "Scatter")
def _scatter_elements(ctx: NodeContext):
    return [ctx.op("scatter_elements", ctx.input(0), ctx.input(1), ctx.input(2), axis=ctx.attr("axis", 0),
                   reduction=ctx.attr("reduction", "none"))]


@rule("ScatterND")
def _scatter_nd(ctx: NodeContext):
    return [ctx.op("scatter_nd", ctx.input(0), ctx.input(1), ctx.input(2), reduction=ctx.attr("reduction", "none"))]
