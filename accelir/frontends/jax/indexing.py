"""JAX frontend rules for ``gather`` and the ``scatter`` family.

lax.gather and lax.scatter are general; the forms that jnp indexing, ``jnp.take``,
``jnp.take_along_axis`` and ``.at[]`` produce map onto IR ops:

* lookups of windows (points, or static-size windows expanded into points) on some
  dims, whole (or leading) windows on the others -> ``gather`` (one indexed dim) or
  ``gather_nd`` after moving the indexed dims first;
* one indexed dim with every other dim a batching dim -> ``take_along_axis``;
* updates of points or static windows at the indices, whole windows on the other dims
  -> ``scatter_nd``;
* other batching dims (``vmap`` of indexing) become point lookups whose index is an
  iota over the matching indices dim, then take the forms above.

Out-of-bounds handling follows the equation's mode: ``CLIP`` clamps the indices,
``FILL_OR_DROP`` fills gathered rows with the fill value and drops scattered ones (the
update goes to a padding slot that is sliced off), ``PROMISE_IN_BOUNDS`` adds nothing.
Indices that are constants known to be in bounds need no guard.  Any other form
raises ``Unsupported`` with the dimension numbers.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ... import dims as D
from ...ir import DType, Value
from .context import RULES, EqnContext, Unsupported, rule, to_dims, transpose

__all__: list[str] = []


def _mode(mode: Any) -> str:
    return getattr(mode, "name", str(mode))


def _permute_labels(cx: EqnContext, x: Value, have: list, want: list) -> Value:
    return transpose(cx, x, [have.index(label) for label in want])


def _static_bounds(bounds: Sequence[Any], what: str) -> list[int]:
    if any(type(b) is not int for b in bounds):
        raise Unsupported(f"{what} along a symbolic dim (bounds {list(bounds)}) needs static dims")
    return [int(b) for b in bounds]


def _in_bounds(idx: Value, bounds: Sequence[Any]) -> bool:
    arr = idx.const_value
    if arr is None or any(type(b) is not int for b in bounds):
        return False
    return bool(arr.size == 0 or ((arr >= 0).all() and (arr < np.asarray(bounds, dtype=np.int64)).all()))


def _valid_rows(cx: EqnContext, idx: Value, hi: list[int]) -> Value:
    """bool[B]: every component of idx[..., :] within [0, hi]."""
    ok = cx.op("and", cx.op("ge", idx, cx.scalar(0, idx)), cx.op("le", idx, cx.const(np.asarray(hi), idx.dtype)))
    return cx.op("reduce_all", ok, axes=(idx.rank - 1,))


def _clamp(cx: EqnContext, idx: Value, hi: list[int]) -> Value:
    return cx.op("min", cx.op("max", idx, cx.scalar(0, idx)), cx.const(np.asarray(hi), idx.dtype))


def _default_fill(dt: DType) -> Any:
    if dt.is_float:
        return np.nan
    if dt is DType.bool:
        return True
    info = np.iinfo(dt.numpy)
    return info.min if dt.is_signed else info.max


def _gather_guard(cx: EqnContext, idx: Value, bounds: list, mode: str) -> tuple[Value, Value | None]:
    """(safe indices [B, k], bool[B] validity or None) for point lookups into dims of ``bounds``."""
    if mode == "PROMISE_IN_BOUNDS" or _in_bounds(idx, bounds):
        return idx, None
    hi = [b - 1 for b in _static_bounds(bounds, "an index guard")]
    if mode == "CLIP":
        return _clamp(cx, idx, hi), None
    if mode != "FILL_OR_DROP":
        raise Unsupported(f"gather mode {mode}")
    valid = _valid_rows(cx, idx, hi)
    safe = cx.op("where", cx.op("unsqueeze", valid, axes=(-1,)), idx, cx.scalar(0, idx))
    return safe, valid


def _fill_invalid(cx: EqnContext, out: Value, valid: Value | None, batch_positions: list[int],
                  fill_value: Any) -> Value:
    if valid is None:
        return out
    shape = [1] * out.rank
    for src, pos in enumerate(batch_positions):
        shape[pos] = valid.shape[src]
    mask = cx.op("reshape", valid, shape=tuple(shape)) if tuple(shape) != tuple(valid.shape) else valid
    fill = _default_fill(out.dtype) if fill_value is None else fill_value
    return cx.op("where", mask, out, cx.scalar(fill, out))


def _window_prefix(cx: EqnContext, x: Value, dims: Sequence[int], sizes: Sequence[Any]) -> Value:
    """x[0:size] on each listed dim whose window is smaller than the dim."""
    cut = [d for d in dims if sizes[d] != x.shape[d]]
    if not cut:
        return x
    return cx.op("slice", x, starts=tuple(0 for _ in cut), stops=tuple(sizes[d] for d in cut), axes=tuple(cut))


@rule("gather")
def _gather(cx: EqnContext, x: Value, idx: Value, *, dimension_numbers: Any, slice_sizes: Sequence[Any],
            mode: Any, fill_value: Any = None, **p: Any) -> Value:
    dn = dimension_numbers
    sizes = to_dims(slice_sizes)
    sim = [int(d) for d in dn.start_index_map]
    collapsed = {int(d) for d in dn.collapsed_slice_dims}
    if dn.operand_batching_dims:
        if _is_take_along_axis(dn, sizes, idx):
            return _gather_batched(cx, x, idx, dn, sizes, _mode(mode), fill_value)
        idx, extra = _unbatch(cx, idx, dn.operand_batching_dims, dn.start_indices_batching_dims)
        sim += extra
        collapsed |= set(extra)
    windowed = [d for d in sim if sizes[d] != 1]
    if any(type(sizes[d]) is not int for d in windowed):
        raise Unsupported(f"a gather window of symbolic size ({dn}, slice_sizes={tuple(slice_sizes)})")
    rest = [d for d in range(x.rank) if d not in sim]
    x = _window_prefix(cx, x, rest, sizes)
    xt = transpose(cx, x, sim + rest)
    # a window of w along an indexed dim must start in [0, dim - w]
    bounds = [D.dim_sub(x.shape[d], sizes[d] - 1) if d in windowed else x.shape[d] for d in sim]
    idx, valid = _gather_guard(cx, idx, bounds, _mode(mode))
    nb = idx.rank - 1
    if windowed:
        idx = _expand_windows(cx, idx, [sizes[d] if d in windowed else 1 for d in sim])
    if len(sim) == 1:
        r = cx.op("gather", xt, cx.op("squeeze", idx, axes=(idx.rank - 1,)), axis=0)
    else:
        r = cx.op("gather_nd", xt, idx)
    # r is [*batch, *windows, *rest]; collapsed rest dims go, indexed dims kept as size-1 offsets come back
    nw = len(windowed)
    drop = [nb + nw + i for i, d in enumerate(rest) if d in collapsed]
    if drop:
        r = cx.op("squeeze", r, axes=tuple(drop))
    kept_sim = [d for d in sim if d not in collapsed and d not in windowed]
    if kept_sim:
        r = cx.op("unsqueeze", r, axes=tuple(range(r.rank, r.rank + len(kept_sim))))
    have = [("b", j) for j in range(nb)] + [("o", d) for d in windowed] + \
        [("o", d) for d in rest if d not in collapsed] + [("o", d) for d in kept_sim]
    offsets = iter(("o", d) for d in range(x.rank) if d not in collapsed)
    batch = iter(("b", j) for j in range(nb))
    offset_pos = {int(d) for d in dn.offset_dims}
    want = [next(offsets) if pos in offset_pos else next(batch) for pos in range(len(have))]
    out = _permute_labels(cx, r, have, want)
    return _fill_invalid(cx, out, valid, [pos for pos in range(out.rank) if pos not in offset_pos], fill_value)


def _expand_windows(cx: EqnContext, idx: Value, windows: list[int]) -> Value:
    """[*B, k] window starts -> [*B, *W, k] point indices, one new dim per window larger than 1."""
    wide = [w for w in windows if w != 1]
    offsets = np.zeros(tuple(wide) + (len(windows),), dtype=idx.dtype.numpy)
    m = 0
    for j, w in enumerate(windows):
        if w != 1:
            shape = [1] * len(wide)
            shape[m] = w
            offsets[..., j] = np.arange(w).reshape(shape)
            m += 1
    nb = idx.rank - 1
    spread = cx.op("unsqueeze", idx, axes=tuple(range(nb, nb + len(wide))))
    return cx.op("add", spread, cx.const(offsets))


def _unbatch(cx: EqnContext, idx: Value, operand_dims: Sequence[Any], index_dims: Sequence[Any]
             ) -> tuple[Value, list[int]]:
    """Batching dims as explicit point lookups: operand dim d reads index iota(index dim j).

    Returns the indices with one more component per batching dim and those operand dims."""
    nb = idx.rank - 1
    parts = [idx]
    for j in index_dims:
        parts.append(cx.op("iota", shape=tuple(idx.shape[:nb]) + (1,), axis=int(j), dtype=idx.dtype))
    return cx.op("concat", *parts, axis=nb), [int(d) for d in operand_dims]


def _is_take_along_axis(dn: Any, sizes: tuple, idx: Value) -> bool:
    sim = [int(d) for d in dn.start_index_map]
    obd = [int(d) for d in dn.operand_batching_dims]
    sibd = [int(d) for d in dn.start_indices_batching_dims]
    extra = [j for j in range(idx.rank - 1) if j not in sibd]
    return (len(sim) == 1 and [int(d) for d in dn.collapsed_slice_dims] == sim and sizes[sim[0]] == 1
            and all(sizes[d] == 1 for d in obd) and len(extra) <= 1)


def _gather_batched(cx: EqnContext, x: Value, idx: Value, dn: Any, sizes: tuple, mode: str,
                    fill_value: Any) -> Value:
    """take_along_axis: one indexed dim, every dim but the offsets a batching dim."""
    obd = [int(d) for d in dn.operand_batching_dims]
    sibd = [int(d) for d in dn.start_indices_batching_dims]
    nb = idx.rank - 1
    extra = [j for j in range(nb) if j not in sibd]
    axis = int(dn.start_index_map[0])
    offset_dims = [d for d in range(x.rank) if d != axis and d not in obd]
    x = _window_prefix(cx, x, offset_dims, sizes)
    idx, valid = _gather_guard(cx, idx, [x.shape[axis]], mode)
    i = cx.op("squeeze", idx, axes=(nb,))
    labels = [("b", j) for j in range(nb)]
    if not extra:
        i = cx.op("unsqueeze", i, axes=(i.rank,))
        labels.append(("axis",))
    if offset_dims:
        i = cx.op("unsqueeze", i, axes=tuple(range(i.rank, i.rank + len(offset_dims))))
        labels += [("o", d) for d in offset_dims]
    op_labels = [("b", sibd[obd.index(d)]) if d in obd else ("b", extra[0]) if d == axis and extra
                 else ("axis",) if d == axis else ("o", d) for d in range(x.rank)]
    i = _permute_labels(cx, i, labels, op_labels)
    if offset_dims:
        i = cx.op("broadcast_to", i, shape=tuple(x.shape[d] if d in offset_dims else i.shape[d]
                                                for d in range(x.rank)))
    r = cx.op("take_along_axis", x, i, axis=axis)
    if not extra:
        r = cx.op("squeeze", r, axes=(axis,))
        op_labels.remove(("axis",))
    offset_pos = {int(d) for d in dn.offset_dims}
    offsets = iter(("o", d) for d in offset_dims)
    batch = iter(("b", j) for j in range(nb))
    want = [next(offsets) if pos in offset_pos else next(batch) for pos in range(len(op_labels))]
    out = _permute_labels(cx, r, op_labels, want)
    return _fill_invalid(cx, out, valid, [pos for pos in range(out.rank) if pos not in offset_pos], fill_value)


_SCATTER_REDUCTION = {"scatter": "none", "scatter-add": "add", "scatter_add": "add", "scatter-mul": "mul",
                      "scatter_mul": "mul", "scatter-min": "min", "scatter_min": "min", "scatter-max": "max",
                      "scatter_max": "max"}


def _scatter(reduction: str):
    def rule(cx: EqnContext, x: Value, idx: Value, upd: Value, *, dimension_numbers: Any, mode: Any,
             **p: Any) -> Value:
        return _scatter_nd(cx, x, idx, upd, dimension_numbers, _mode(mode), reduction)
    return rule


def _scatter_nd(cx: EqnContext, x: Value, idx: Value, upd: Value, dn: Any, mode: str, reduction: str) -> Value:
    sdims = [int(d) for d in dn.scatter_dims_to_operand_dims]
    inserted = {int(d) for d in dn.inserted_window_dims}
    uwd = [int(d) for d in dn.update_window_dims]
    if dn.operand_batching_dims:
        idx, extra = _unbatch(cx, idx, dn.operand_batching_dims, dn.scatter_indices_batching_dims)
        sdims += extra
        inserted |= set(extra)
    window_dims = [d for d in range(x.rank) if d not in inserted]
    rest = [d for d in range(x.rank) if d not in sdims]
    window_of = dict(zip(window_dims, uwd))  # operand dim -> its updates dim
    windowed = [d for d in sdims if d not in inserted]
    if (not inserted <= set(sdims) or any(upd.shape[window_of[d]] != x.shape[d] for d in rest)
            or any(type(upd.shape[window_of[d]]) is not int for d in windowed)):
        raise Unsupported(f"a scatter that is not updates of points or static windows at the indices and "
                          f"whole windows elsewhere ({dn})")
    if x.dtype is DType.bool and reduction != "none":
        raise Unsupported(f"scatter reduction {reduction!r} on bool")
    xt = transpose(cx, x, sdims + rest)
    scatter_pos = [u for u in range(upd.rank) if u not in uwd]
    ut = transpose(cx, upd, scatter_pos + [window_of[d] for d in windowed] + [window_of[d] for d in rest])
    k = len(sdims)
    sizes = [upd.shape[window_of[d]] if d in windowed else 1 for d in sdims]
    # a window of w must start in [0, dim - w]
    bounds = [x.shape[d] if w == 1 else x.shape[d] - w + 1 for d, w in zip(sdims, sizes)]
    guard = not (mode == "PROMISE_IN_BOUNDS" or _in_bounds(idx, bounds))
    if guard and mode == "CLIP":
        idx = _clamp(cx, idx, [b - 1 for b in _static_bounds(bounds, "an index guard")])
    elif guard and mode == "FILL_OR_DROP":
        # out-of-bounds windows are dropped: send them to a padding slot and cut it off afterwards
        dims = _static_bounds([x.shape[d] for d in sdims], "an index guard")
        valid = _valid_rows(cx, idx, [b - 1 for b in _static_bounds(bounds, "an index guard")])
        idx = cx.op("where", cx.op("unsqueeze", valid, axes=(-1,)), idx, cx.const(np.asarray(dims), idx.dtype))
        xt = cx.op("pad", xt, pads=tuple((0, sizes[a]) if a < k else (0, 0) for a in range(x.rank)))
    elif guard:
        raise Unsupported(f"scatter mode {mode}")
    if windowed:
        idx = _expand_windows(cx, idx, sizes)
    r = cx.op("scatter_nd", xt, idx, ut, reduction=reduction)
    if guard and mode == "FILL_OR_DROP":
        r = cx.op("slice", r, starts=(0,) * k, stops=tuple(x.shape[d] for d in sdims), axes=tuple(range(k)))
    perm = sdims + rest
    inv = [0] * len(perm)
    for i, d in enumerate(perm):
        inv[d] = i
    return transpose(cx, r, inv)


for _name, _red in _SCATTER_REDUCTION.items():
    RULES.add(_scatter(_red), _name)
