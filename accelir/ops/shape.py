"""Shape and data-movement ops: reshape, transpose, broadcast_to, squeeze, unsqueeze,
slice, reverse, concat, pad, gather forms, scatter forms, dynamic slices, iota and
constant.

Shape-valued attributes (``dims`` kind) may hold symbolic dims; the interpreter
substitutes their run-time values before calling a reference.
"""

from __future__ import annotations

import numpy as np

from .. import dims as D
from ..types import DType, TensorType
from .registry import AttrSpec, OpDef, TypeRuleError, broadcast_shapes, norm_axis, register, same_dtype

__all__ = ["slice_output_dim", "inverse_perm"]


def _numel_equal(a, b) -> bool:
    pa, pb = D.dim_prod(a), D.dim_prod(b)
    if pa == pb:
        return True
    # symbolic products that differ only by an unknown factor cannot be proven wrong
    return not (type(pa) is int and type(pb) is int)


# ----- constant ----------------------------------------------------------------------

def _constant_rule(types, attrs):
    raise TypeRuleError("constant: its type comes from its array; build it with Graph.const")


def _constant_ref(inputs, attrs, regions):
    raise RuntimeError("the interpreter evaluates constants from Graph.constants")


register(OpDef("constant", _constant_rule, _constant_ref, min_inputs=0, max_inputs=0,
               attrs={"name": AttrSpec("str")}, doc="the array Graph.constants[name]"))


# ----- reshape / transpose / broadcast ----------------------------------------------

def _reshape_rule(types, attrs):
    (t,) = types
    shape = attrs["shape"]
    for d in shape:
        if type(d) is int and d < 0:
            raise TypeRuleError(f"reshape: target dims must be explicit and non-negative, got {shape}")
    if not _numel_equal(t.shape, shape):
        raise TypeRuleError(f"reshape: cannot reshape {t} to {list(shape)}: element counts differ")
    return [TensorType(t.dtype, shape)]


def _reshape_ref(inputs, attrs, regions):
    return [inputs[0].reshape(attrs["shape"])]


register(OpDef("reshape", _reshape_rule, _reshape_ref, attrs={"shape": AttrSpec("dims")},
               doc="same elements in row-major order, new shape (explicit dims, symbolic allowed)"))


def inverse_perm(perm) -> tuple[int, ...]:
    """The permutation that undoes ``perm``: transposing by ``perm`` then by this is the identity."""
    out = [0] * len(perm)
    for k, p in enumerate(perm):
        out[p] = k
    return tuple(out)


def _transpose_rule(types, attrs):
    (t,) = types
    perm = attrs["perm"]
    if sorted(perm) != list(range(t.rank)):
        raise TypeRuleError(f"transpose: perm {list(perm)} is not a permutation of rank {t.rank}")
    return [TensorType(t.dtype, tuple(t.shape[p] for p in perm))]


register(OpDef("transpose", _transpose_rule, lambda i, a, r: [np.transpose(i[0], a["perm"])],
               attrs={"perm": AttrSpec("ints")}, doc="out.shape[i] = x.shape[perm[i]]"))


def _broadcast_rule(types, attrs):
    (t,) = types
    shape = attrs["shape"]
    if len(shape) < t.rank:
        raise TypeRuleError(f"broadcast_to: cannot broadcast {t} to lower rank {list(shape)}")
    for i, d in enumerate(t.shape):
        tgt = shape[len(shape) - t.rank + i]
        if d != 1 and d != tgt and type(d) is int and type(tgt) is int:
            raise TypeRuleError(f"broadcast_to: cannot broadcast {t} to {list(shape)}")
    return [TensorType(t.dtype, shape)]


register(OpDef("broadcast_to", _broadcast_rule, lambda i, a, r: [np.broadcast_to(i[0], a["shape"])],
               attrs={"shape": AttrSpec("dims")}, doc="numpy broadcast to shape (leading dims may be added)"))


def _squeeze_rule(types, attrs):
    (t,) = types
    axes = {norm_axis("squeeze", a, t.rank) for a in attrs["axes"]}
    for a in axes:
        if t.shape[a] != 1:
            raise TypeRuleError(f"squeeze: dim {a} of {t} is not 1")
    return [TensorType(t.dtype, tuple(d for i, d in enumerate(t.shape) if i not in axes))]


register(OpDef("squeeze", _squeeze_rule,
               lambda i, a, r: [np.squeeze(i[0], tuple(x % max(i[0].ndim, 1) for x in a["axes"]))],
               attrs={"axes": AttrSpec("ints")}, doc="drop the given size-1 dims"))


def _unsqueeze_axes(axes, rank_out):
    return sorted(norm_axis("unsqueeze", a, rank_out) for a in axes)


def _unsqueeze_rule(types, attrs):
    (t,) = types
    rank_out = t.rank + len(attrs["axes"])
    axes = _unsqueeze_axes(attrs["axes"], rank_out)
    if len(set(axes)) != len(axes):
        raise TypeRuleError(f"unsqueeze: repeated axes {attrs['axes']}")
    shape = list(t.shape)
    for a in axes:
        shape.insert(a, 1)
    return [TensorType(t.dtype, tuple(shape))]


def _unsqueeze_ref(inputs, attrs, regions):
    x = inputs[0]
    axes = _unsqueeze_axes(attrs["axes"], x.ndim + len(attrs["axes"]))
    return [np.expand_dims(x, tuple(axes))]


register(OpDef("unsqueeze", _unsqueeze_rule, _unsqueeze_ref, attrs={"axes": AttrSpec("ints")},
               doc="insert size-1 dims at the given positions of the output"))


# ----- slice / reverse / concat / pad ------------------------------------------------

def slice_output_dim(start, stop, step):
    if step == 1:
        return D.dim_sub(stop, start)
    if type(start) is int and type(stop) is int:
        return max(0, -(-(stop - start) // step))
    return D.dim_floordiv(D.dim_add(D.dim_sub(stop, start), step - 1), step)


def _slice_rule(types, attrs):
    (t,) = types
    starts, stops, steps, axes = attrs["starts"], attrs["stops"], attrs["steps"], attrs["axes"]
    if not (len(starts) == len(stops) == len(axes)) or (steps and len(steps) != len(axes)):
        raise TypeRuleError("slice: starts, stops, steps and axes differ in length")
    shape = list(t.shape)
    for k, ax in enumerate(axes):
        ax = norm_axis("slice", ax, t.rank)
        step = steps[k] if steps else 1
        start, stop, dim = starts[k], stops[k], t.shape[ax]
        if step < 1:
            raise TypeRuleError("slice: steps must be >= 1 (use reverse to flip)")
        if type(start) is int and start < 0 or type(stop) is int and stop < 0:
            raise TypeRuleError("slice: starts and stops must be normalised (0 <= start <= stop <= dim)")
        if type(start) is int and type(stop) is int and start > stop:
            raise TypeRuleError(f"slice: start {start} > stop {stop}")
        if type(stop) is int and type(dim) is int and stop > dim:
            raise TypeRuleError(f"slice: stop {stop} past dim {dim} on axis {ax}")
        shape[ax] = slice_output_dim(start, stop, step)
    return [TensorType(t.dtype, tuple(shape))]


def _slice_ref(inputs, attrs, regions):
    x = inputs[0]
    idx = [slice(None)] * x.ndim
    steps = attrs["steps"] or (1,) * len(attrs["axes"])
    for start, stop, step, ax in zip(attrs["starts"], attrs["stops"], steps, attrs["axes"]):
        idx[ax % x.ndim] = slice(start, stop, step)
    return [x[tuple(idx)]]


register(OpDef("slice", _slice_rule, _slice_ref,
               attrs={"starts": AttrSpec("dims"), "stops": AttrSpec("dims"), "steps": AttrSpec("ints", ()),
                      "axes": AttrSpec("ints")},
               doc="x[start:stop:step] on each listed axis; bounds normalised, steps >= 1"))


def _reverse_rule(types, attrs):
    (t,) = types
    for a in attrs["axes"]:
        norm_axis("reverse", a, t.rank)
    return [t]


register(OpDef("reverse", _reverse_rule, lambda i, a, r: [np.flip(i[0], tuple(a["axes"]))],
               attrs={"axes": AttrSpec("ints")}, doc="flip the given axes"))


def _concat_rule(types, attrs):
    dt = same_dtype("concat", types)
    rank = types[0].rank
    ax = norm_axis("concat", attrs["axis"], rank)
    total = 0
    for t in types:
        if t.rank != rank:
            raise TypeRuleError("concat: operands differ in rank")
        for i in range(rank):
            if i != ax and t.shape[i] != types[0].shape[i] and type(t.shape[i]) is int \
                    and type(types[0].shape[i]) is int:
                raise TypeRuleError(f"concat: dim {i} differs ({types[0].shape[i]} vs {t.shape[i]})")
        total = D.dim_add(total, t.shape[ax])
    shape = list(types[0].shape)
    shape[ax] = total
    return [TensorType(dt, tuple(shape))]


register(OpDef("concat", _concat_rule, lambda i, a, r: [np.concatenate(i, axis=a["axis"])],
               min_inputs=1, max_inputs=None, attrs={"axis": AttrSpec("int")},
               doc="join along axis"))


def _pad_rule(types, attrs):
    (t,) = types
    pads = attrs["pads"]
    if len(pads) != t.rank:
        raise TypeRuleError(f"pad: pads needs one (lo, hi) pair per dim ({t.rank}), got {len(pads)}")
    if any(lo < 0 or hi < 0 for lo, hi in pads):
        raise TypeRuleError("pad: negative padding is not supported (slice instead)")
    if attrs["mode"] == "reflect":
        for (lo, hi), d in zip(pads, t.shape):
            if type(d) is int and (lo >= d or hi >= d) and (lo or hi):
                raise TypeRuleError(f"pad: reflect padding {lo, hi} needs a dim larger than it, got {d}")
    return [TensorType(t.dtype, tuple(D.dim_add(d, lo + hi) for d, (lo, hi) in zip(t.shape, pads)))]


def _pad_ref(inputs, attrs, regions):
    x = inputs[0]
    mode = attrs["mode"]
    if mode == "constant":
        return [np.pad(x, attrs["pads"], mode="constant", constant_values=np.asarray(attrs["value"]).astype(x.dtype))]
    return [np.pad(x, attrs["pads"], mode=mode)]


register(OpDef("pad", _pad_rule, _pad_ref,
               attrs={"pads": AttrSpec("pairs"), "mode": AttrSpec("str", "constant", ("constant", "reflect", "edge")),
                      "value": AttrSpec("float", 0.0)},
               doc="pad each dim with (lo, hi) elements: a constant value, a reflection or the edge"))


# ----- gather / scatter --------------------------------------------------------------

def _index_dtype(op, t):
    if not t.dtype.is_int:
        raise TypeRuleError(f"{op}: indices must be an integer dtype, got {t.dtype}")


def _gather_rule(types, attrs):
    x, idx = types
    _index_dtype("gather", idx)
    ax = norm_axis("gather", attrs["axis"], x.rank)
    return [TensorType(x.dtype, x.shape[:ax] + idx.shape + x.shape[ax + 1:])]


def _check_bounds(op, idx, size):
    if idx.size and (idx.min() < -size or idx.max() >= size):
        raise IndexError(f"{op}: index out of range for a dim of size {size}")


def _gather_ref(inputs, attrs, regions):
    x, idx = inputs
    ax = attrs["axis"] % x.ndim
    _check_bounds("gather", idx, x.shape[ax])
    return [np.take(x, idx.astype(np.int64), axis=ax)]


register(OpDef("gather", _gather_rule, _gather_ref, min_inputs=2, max_inputs=2, attrs={"axis": AttrSpec("int", 0)},
               doc="np.take along axis (ONNX Gather, embedding lookup); negative indices count from the end"))


def _take_along_rule(types, attrs):
    x, idx = types
    _index_dtype("take_along_axis", idx)
    if x.rank != idx.rank:
        raise TypeRuleError("take_along_axis: x and indices must have the same rank")
    for d, (a, b) in enumerate(zip(x.shape, idx.shape)):
        if d != attrs["axis"] % max(x.rank, 1) and type(a) is int and type(b) is int and b > a:
            raise TypeRuleError(f"take_along_axis: indices dim {d} ({b}) exceeds x's ({a})")
    norm_axis("take_along_axis", attrs["axis"], x.rank)
    return [TensorType(x.dtype, idx.shape)]


def _take_along_ref(inputs, attrs, regions):
    x, idx = inputs
    ax = attrs["axis"] % x.ndim
    _check_bounds("take_along_axis", idx, x.shape[ax])
    idx = np.where(idx < 0, idx + x.shape[ax], idx).astype(np.int64)
    # torch.gather / GatherElements: the output has the indices' shape; other dims index x directly
    window = tuple(slice(None) if d == ax else slice(0, n) for d, n in enumerate(idx.shape))
    return [np.take_along_axis(x[window], idx, axis=ax)]


register(OpDef("take_along_axis", _take_along_rule, _take_along_ref, min_inputs=2, max_inputs=2,
               attrs={"axis": AttrSpec("int")},
               doc="out[..i..] = x[..idx[..i..]..] along axis (torch.gather, ONNX GatherElements)"))


def _gather_nd_rule(types, attrs):
    x, idx = types
    _index_dtype("gather_nd", idx)
    b = attrs["batch_dims"]
    k = idx.shape[-1] if idx.rank else None
    if type(k) is not int or idx.rank < 1 or b + k > x.rank:
        raise TypeRuleError(f"gather_nd: last indices dim must be static and <= rank - batch_dims")
    return [TensorType(x.dtype, idx.shape[:-1] + x.shape[b + k:])]


def _gather_nd_ref(inputs, attrs, regions):
    x, idx = inputs
    b = attrs["batch_dims"]
    k = idx.shape[-1]
    batch = x.shape[:b]
    nb = int(np.prod(batch, dtype=np.int64))
    xb = x.reshape((nb,) + x.shape[b:])
    ib = idx.reshape((nb, -1, k)).astype(np.int64)
    out = []
    for j in range(nb):
        ij = ib[j]
        for d in range(k):
            _check_bounds("gather_nd", ij[:, d], x.shape[b + d])
        ij = np.where(ij < 0, ij + np.asarray(x.shape[b:b + k]), ij)
        out.append(xb[j][tuple(ij.T)])
    res = np.stack(out) if out else np.zeros((0,) + x.shape[b + k:], x.dtype)
    return [res.reshape(idx.shape[:-1] + x.shape[b + k:])]


register(OpDef("gather_nd", _gather_nd_rule, _gather_nd_ref, min_inputs=2, max_inputs=2,
               attrs={"batch_dims": AttrSpec("int", 0)},
               doc="ONNX GatherND: the last indices dim indexes the leading dims of x after batch_dims"))

_REDUCTIONS = ("none", "add", "mul", "max", "min")


def _scatter_update(op, out, where, upd, reduction):
    if reduction == "none":
        out[where] = upd
    elif reduction == "add":
        np.add.at(out, where, upd)
    elif reduction == "mul":
        np.multiply.at(out, where, upd)
    elif reduction == "max":
        np.maximum.at(out, where, upd)
    else:
        np.minimum.at(out, where, upd)


def _scatter_elements_rule(types, attrs):
    x, idx, upd = types
    _index_dtype("scatter_elements", idx)
    same_dtype("scatter_elements", [x, upd])
    if not (x.rank == idx.rank == upd.rank):
        raise TypeRuleError("scatter_elements: x, indices and updates must have the same rank")
    norm_axis("scatter_elements", attrs["axis"], x.rank)
    return [x]


def _scatter_elements_ref(inputs, attrs, regions):
    x, idx, upd = inputs
    ax = attrs["axis"] % x.ndim
    _check_bounds("scatter_elements", idx, x.shape[ax])
    idx = np.where(idx < 0, idx + x.shape[ax], idx).astype(np.int64)
    out = x.copy()
    grids = list(np.indices(idx.shape, sparse=True))
    grids[ax] = idx
    _scatter_update("scatter_elements", out, tuple(grids), upd[tuple(slice(0, s) for s in idx.shape)],
                    attrs["reduction"])
    return [out]


register(OpDef("scatter_elements", _scatter_elements_rule, _scatter_elements_ref, min_inputs=3, max_inputs=3,
               attrs={"axis": AttrSpec("int"), "reduction": AttrSpec("str", "none", _REDUCTIONS)},
               doc="copy of x with out[..idx[..i..]..] (reduction)= updates[..i..] (ONNX ScatterElements)"))


def _scatter_nd_rule(types, attrs):
    x, idx, upd = types
    _index_dtype("scatter_nd", idx)
    same_dtype("scatter_nd", [x, upd])
    k = idx.shape[-1] if idx.rank else None
    if type(k) is not int or k > x.rank:
        raise TypeRuleError("scatter_nd: last indices dim must be static and <= rank of x")
    if upd.rank != idx.rank - 1 + x.rank - k:
        raise TypeRuleError("scatter_nd: updates must have shape indices.shape[:-1] + x.shape[k:]")
    return [x]


def _scatter_nd_ref(inputs, attrs, regions):
    x, idx, upd = inputs
    k = idx.shape[-1]
    out = x.copy()
    ii = idx.reshape(-1, k).astype(np.int64)
    for d in range(k):
        _check_bounds("scatter_nd", ii[:, d], x.shape[d])
    ii = np.where(ii < 0, ii + np.asarray(x.shape[:k]), ii)
    uu = upd.reshape((ii.shape[0],) + x.shape[k:])
    _scatter_update("scatter_nd", out, tuple(ii.T), uu, attrs["reduction"])
    return [out]


register(OpDef("scatter_nd", _scatter_nd_rule, _scatter_nd_ref, min_inputs=3, max_inputs=3,
               attrs={"reduction": AttrSpec("str", "none", _REDUCTIONS)},
               doc="copy of x with x[idx[i]] (reduction)= updates[i] (ONNX ScatterND); duplicates with "
                   "reduction none: the last write wins"))


def _dynamic_slice_rule(types, attrs):
    x, starts = types[0], types[1:]
    sizes = attrs["sizes"]
    if len(starts) != x.rank or len(sizes) != x.rank:
        raise TypeRuleError(f"dynamic_slice: needs one start index and one size per dim ({x.rank})")
    for s in starts:
        _index_dtype("dynamic_slice", s)
        if s.rank != 0:
            raise TypeRuleError("dynamic_slice: start indices must be scalars")
    return [TensorType(x.dtype, tuple(sizes))]


def _clamped_starts(x_shape, sizes, starts):
    return tuple(int(min(max(int(s), 0), d - z)) for s, d, z in zip(starts, x_shape, sizes))


def _dynamic_slice_ref(inputs, attrs, regions):
    x, starts = inputs[0], inputs[1:]
    st = _clamped_starts(x.shape, attrs["sizes"], starts)
    return [x[tuple(slice(s, s + z) for s, z in zip(st, attrs["sizes"]))]]


register(OpDef("dynamic_slice", _dynamic_slice_rule, _dynamic_slice_ref, min_inputs=1, max_inputs=None,
               attrs={"sizes": AttrSpec("dims")},
               doc="lax.dynamic_slice: a window of sizes at run-time starts, clamped to stay inside x"))


def _dus_rule(types, attrs):
    x, upd, starts = types[0], types[1], types[2:]
    same_dtype("dynamic_update_slice", [x, upd])
    if len(starts) != x.rank or upd.rank != x.rank:
        raise TypeRuleError("dynamic_update_slice: needs one start index per dim and an update of the same rank")
    for s in starts:
        _index_dtype("dynamic_update_slice", s)
        if s.rank != 0:
            raise TypeRuleError("dynamic_update_slice: start indices must be scalars")
    return [x]


def _dus_ref(inputs, attrs, regions):
    x, upd, starts = inputs[0], inputs[1], inputs[2:]
    st = _clamped_starts(x.shape, upd.shape, starts)
    out = x.copy()
    out[tuple(slice(s, s + z) for s, z in zip(st, upd.shape))] = upd
    return [out]


register(OpDef("dynamic_update_slice", _dus_rule, _dus_ref, min_inputs=2, max_inputs=None,
               doc="lax.dynamic_update_slice: copy of x with update written at clamped run-time starts"))


def _iota_rule(types, attrs):
    shape = attrs["shape"]
    norm_axis("iota", attrs["axis"], len(shape))
    if attrs["dtype"] is DType.bool:
        raise TypeRuleError("iota: bool is not supported")
    return [TensorType(attrs["dtype"], shape)]


def _iota_ref(inputs, attrs, regions):
    shape = attrs["shape"]
    ax = attrs["axis"] % len(shape)
    r = np.arange(shape[ax]).astype(attrs["dtype"].numpy)
    r = r.reshape(tuple(-1 if i == ax else 1 for i in range(len(shape))))
    return [np.ascontiguousarray(np.broadcast_to(r, shape))]


register(OpDef("iota", _iota_rule, _iota_ref, min_inputs=0, max_inputs=0,
               attrs={"shape": AttrSpec("dims"), "axis": AttrSpec("int", 0), "dtype": AttrSpec("dtype", DType.i64)},
               doc="0, 1, 2, ... along axis, broadcast to shape (lax.broadcasted_iota)"))
