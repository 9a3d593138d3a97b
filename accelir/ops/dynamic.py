"""Ops whose output sizes the data decides: unbacked dims (accelir/unbacked.py).

Two families, both with ONNX's semantics (the ONNX import is what makes them, and the
onnxruntime lowering emits the same ONNX op):

- selections: ``nonzero``, ``unique``, ``compress``, ``non_max_suppression``; their counts
  have an upper bound when the input's size is static;
- run-time-shaped forms of the shape ops, whose shape-like operand (a reshape's shape, a
  slice's starts, TopK's k) is a tensor value: ``reshape_dynamic``, ``expand_dynamic``,
  ``slice_dynamic``, ``tile_dynamic``, ``pad_dynamic``, ``range_dynamic``, ``topk_dynamic``,
  ``constant_of_shape``.

They are ops of their own rather than an optional operand of ``reshape`` / ``slice`` /
``topk``: the passes that read those ops' static ``shape`` / ``starts`` / ``k`` attributes
(folding, layout, fusion) then keep their one meaning, and a run-time-shaped node is
simply an op no such pass matches, which is what "opaque" asks for.

Each node names the dims it introduces in its ``syms`` attribute; a dim the op does not
change keeps its input's dim.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from .. import dims as D
from ..types import DType, TensorType
from .reduce import stable_order
from .registry import REGISTRY, AttrSpec, OpDef, TypeRuleError, norm_axis, register
from .resize import RESIZE_COORDS, crop_and_resize, onnx_resize_targets, onnx_roi

ATTR = "syms"  # the attribute naming the unbacked dims a node introduces (accelir/unbacked.py)
_SYMS = {ATTR: AttrSpec("symbols", ())}


def symbols_attr(op: str, attrs: Mapping[str, Any], n: int) -> tuple[str, ...]:
    """A type rule's view of its ``syms`` attribute: exactly ``n`` symbols, or a TypeRuleError."""
    syms = tuple(attrs.get(ATTR, ()))
    if len(syms) != n:
        raise TypeRuleError(f"{op}: needs {n} unbacked dim symbol(s) in attribute {ATTR!r}, "
                            f"got {list(syms)} (build the node with Graph.make, which names them)")
    return syms


# The input whose run-time value decides each op's output size (errors name it; default 0).
DECIDED_BY: dict[str, int] = {"compress": 1, "non_max_suppression": 1, "reshape_dynamic": 1, "range_dynamic": 1,
                              "expand_dynamic": 1, "slice_dynamic": 1, "tile_dynamic": 1, "pad_dynamic": 1,
                              "topk_dynamic": 1, "reduce_dynamic": 1, "resize_dynamic": 1,
                              "squeeze_dynamic": 1, "unsqueeze_dynamic": 1, "split_dynamic": 1}


def _numel(t: TensorType) -> int | None:
    n = D.dim_prod(t.shape)
    return n if type(n) is int else None


def _int_operand(op: str, what: str, t: TensorType, rank: int = 1) -> None:
    if t.dtype not in (DType.i32, DType.i64):
        raise TypeRuleError(f"{op}: {what} must be i32 or i64, got {t.dtype}")
    if t.rank != rank:
        raise TypeRuleError(f"{op}: {what} must have rank {rank}, got {t}")


def _static_length(op: str, what: str, t: TensorType) -> int:
    _int_operand(op, what, t)
    if type(t.shape[0]) is not int:
        raise TypeRuleError(f"{op}: the length of {what} sets the output rank and must be static, got {t}")
    return t.shape[0]


def _fixed(n: int):
    return lambda types, attrs: n


def _rank_of_input(types, attrs) -> int:
    return types[0].rank


DATA_DEPENDENT_OPS: list[str] = []  # every op of this module


def _reg(name: str, rule, ref, unbacked, *, bounds=None, min_inputs=1, max_inputs=1, attrs=None, doc=""):
    DATA_DEPENDENT_OPS.append(name)
    register(OpDef(name, rule, ref, min_inputs=min_inputs, max_inputs=max_inputs,
                   attrs={**(attrs or {}), **_SYMS}, unbacked=unbacked, bounds=bounds, doc=doc))


def register_data_dependent(name: str, rule, ref, unbacked, *, decided_by: int = 0, **kw: Any) -> None:
    """Registers an op of this family defined in another module (accelir/ops/runtime_sized.py), so
    that the lowerings and the errors that walk ``DATA_DEPENDENT_OPS`` and ``DECIDED_BY`` meet it."""
    if decided_by:
        DECIDED_BY[name] = decided_by
    _reg(name, rule, ref, unbacked, **kw)


# ----- selections --------------------------------------------------------------------

def _nonzero_rule(types, attrs):
    (x,) = types
    if x.rank == 0:
        raise TypeRuleError("nonzero: needs rank >= 1 (unsqueeze a scalar first)")
    (u,) = symbols_attr("nonzero", attrs, 1)
    return [TensorType(DType.i64, (x.rank, u))]


def _nonzero_ref(inputs, attrs, regions):
    return [np.asarray(np.nonzero(inputs[0]), dtype=np.int64).reshape(inputs[0].ndim, -1)]


_reg("nonzero", _nonzero_rule, _nonzero_ref, _fixed(1), bounds=lambda types, attrs: [(0, _numel(types[0]))],
     doc="the indices of the nonzero elements, one column per element in row-major order (ONNX NonZero)")


def _unique_extent(x: TensorType, axis: int | None) -> D.Dim:
    return D.dim_prod(x.shape) if axis is None else x.shape[norm_axis("unique", axis, x.rank)]


def _unique_rule(types, attrs):
    (x,) = types
    (u,) = symbols_attr("unique", attrs, 1)
    axis = attrs["axis"]
    if axis is None:
        y = (u,)
    else:
        ax = norm_axis("unique", axis, x.rank)
        y = tuple(u if i == ax else d for i, d in enumerate(x.shape))
    n = _unique_extent(x, axis)
    return [TensorType(x.dtype, y), TensorType(DType.i64, (u,)), TensorType(DType.i64, (n,)),
            TensorType(DType.i64, (u,))]


def _unique_ref(inputs, attrs, regions):
    x = inputs[0]
    axis = attrs["axis"]
    data = x.reshape(-1) if axis is None else x
    ax = 0 if axis is None else axis % x.ndim
    y, first, inverse, counts = np.unique(data, axis=None if axis is None else ax, return_index=True,
                                          return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    if not attrs["sorted"]:  # ONNX: in order of first occurrence
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        y, first, counts, inverse = np.take(y, order, axis=ax), first[order], counts[order], rank[inverse]
    return [y, first.astype(np.int64), inverse.astype(np.int64), counts.astype(np.int64)]


def _unique_bounds(types, attrs):
    n = _unique_extent(types[0], attrs["axis"])
    return [(min(1, n), n) if type(n) is int else (0, None)]


_reg("unique", _unique_rule, _unique_ref, _fixed(1), bounds=_unique_bounds,
     attrs={"axis": AttrSpec("optional_int", None), "sorted": AttrSpec("bool", True)},
     doc="the distinct elements (or slices along axis), sorted or in order of first occurrence, with "
         "the index of each one's first occurrence, the inverse map and the counts (ONNX Unique)")


def _compress_rule(types, attrs):
    x, cond = types
    if cond.dtype is not DType.bool or cond.rank != 1:
        raise TypeRuleError(f"compress: the condition must be a 1-d bool tensor, got {cond}")
    (u,) = symbols_attr("compress", attrs, 1)
    axis = attrs["axis"]
    if axis is None:
        return [TensorType(x.dtype, (u,))]
    ax = norm_axis("compress", axis, x.rank)
    return [TensorType(x.dtype, tuple(u if i == ax else d for i, d in enumerate(x.shape)))]


def _compress_ref(inputs, attrs, regions):
    x, cond = inputs
    axis = attrs["axis"]
    n = x.size if axis is None else x.shape[axis % x.ndim]
    if cond.shape[0] > n:
        raise TypeRuleError(f"compress: the condition has {cond.shape[0]} entries for {n} elements")
    return [np.compress(cond, x, axis=axis)]


def _compress_bounds(types, attrs):
    x, cond = types
    n = _unique_extent(x, attrs["axis"])
    hi = [d for d in (n, cond.shape[0]) if type(d) is int]
    return [(0, min(hi) if hi else None)]


_reg("compress", _compress_rule, _compress_ref, _fixed(1), bounds=_compress_bounds, min_inputs=2, max_inputs=2,
     attrs={"axis": AttrSpec("optional_int", None)},
     doc="the elements (or slices along axis) where the condition holds (ONNX Compress)")


def _nms_rule(types, attrs):
    boxes, scores = types[0], types[1]
    if boxes.rank != 3 or scores.rank != 3 or not boxes.dtype.is_float or scores.dtype != boxes.dtype:
        raise TypeRuleError(f"non_max_suppression: boxes [batch, boxes, 4] and scores [batch, classes, boxes] "
                            f"of one float dtype, got {boxes} and {scores}")
    if len(types) > 2:
        _int_operand("non_max_suppression", "max_output_boxes_per_class", types[2], types[2].rank)
    for t in types[3:]:
        if t.dtype is not boxes.dtype or D.dim_prod(t.shape) != 1:
            raise TypeRuleError(f"non_max_suppression: thresholds are one {boxes.dtype} value, got {t}")
    (u,) = symbols_attr("non_max_suppression", attrs, 1)
    return [TensorType(DType.i64, (u, 3))]


def _nms_corners(b: np.ndarray, center: bool) -> np.ndarray:
    """Boxes as (y_min, x_min, y_max, x_max)."""
    if center:
        xc, yc, w, h = b[:, 0], b[:, 1], b[:, 2] / 2, b[:, 3] / 2
        return np.stack([yc - h, xc - w, yc + h, xc + w], axis=1)
    return np.stack([np.minimum(b[:, 0], b[:, 2]), np.minimum(b[:, 1], b[:, 3]),
                     np.maximum(b[:, 0], b[:, 2]), np.maximum(b[:, 1], b[:, 3])], axis=1)


def _suppresses(a: np.ndarray, b: np.ndarray, iou: float) -> bool:
    h = min(a[2], b[2]) - max(a[0], b[0])
    w = min(a[3], b[3]) - max(a[1], b[1])
    if h <= 0 or w <= 0:
        return False
    inter = h * w
    area_a, area_b = (a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])
    union = area_a + area_b - inter
    return area_a > 0 and area_b > 0 and union > 0 and inter / union > iou


def _scalar(inputs: Sequence[np.ndarray], i: int, default: float | None) -> float | None:
    return float(np.asarray(inputs[i]).reshape(-1)[0]) if len(inputs) > i and np.asarray(inputs[i]).size else default


def _nms_ref(inputs, attrs, regions):
    boxes, scores = inputs[0].astype(np.float64), inputs[1].astype(np.float64)
    max_out = max(int(_scalar(inputs, 2, 0)), 0)
    iou = _scalar(inputs, 3, 0.0)
    threshold = _scalar(inputs, 4, None)
    picked: list[tuple[int, int, int]] = []
    for bi in range(boxes.shape[0]):
        corners = _nms_corners(boxes[bi], attrs["center_point_box"] == 1)
        for ci in range(scores.shape[1]):
            s = scores[bi, ci]
            kept: list[int] = []
            for i in np.argsort(-s, kind="stable"):
                if len(kept) >= max_out or (threshold is not None and not s[i] > threshold):
                    break
                if not any(_suppresses(corners[i], corners[k], iou) for k in kept):
                    kept.append(int(i))
            picked += [(bi, ci, k) for k in kept]
    return [np.asarray(picked, dtype=np.int64).reshape(-1, 3)]


def _nms_bounds(types, attrs):
    boxes, scores = types[0], types[1]
    n = D.dim_mul(scores.shape[0], scores.shape[1])
    n = D.dim_mul(n, boxes.shape[1])
    return [(0, n if type(n) is int else None)]


_reg("non_max_suppression", _nms_rule, _nms_ref, _fixed(1), bounds=_nms_bounds, min_inputs=2, max_inputs=5,
     attrs={"center_point_box": AttrSpec("int", 0, (0, 1))},
     doc="(batch, class, box) of the boxes kept per batch and class, by score, dropping those whose IoU "
         "with a kept one exceeds the threshold (ONNX NonMaxSuppression: boxes, scores, "
         "[max_output_boxes_per_class, iou_threshold, score_threshold])")


# ----- run-time-shaped shape ops ------------------------------------------------------

def _reshape_dynamic_rule(types, attrs):
    x, shape = types
    return [TensorType(x.dtype, symbols_attr("reshape_dynamic", attrs,
                                             _static_length("reshape_dynamic", "shape", shape)))]


def _reshape_target(x: np.ndarray, shape: np.ndarray, allowzero: bool) -> tuple[int, ...]:
    out = [int(s) for s in shape]
    if not allowzero:
        out = [x.shape[i] if s == 0 else s for i, s in enumerate(out)]
    return tuple(out)


def _reshape_dynamic_ref(inputs, attrs, regions):
    x, shape = inputs
    return [x.reshape(_reshape_target(x, shape, attrs["allowzero"]))]


_reg("reshape_dynamic", _reshape_dynamic_rule, _reshape_dynamic_ref,
     lambda types, attrs: types[1].shape[0] if type(types[1].shape[0]) is int else 0, min_inputs=2, max_inputs=2,
     attrs={"allowzero": AttrSpec("bool", False)},
     doc="reshape to a run-time shape: 0 copies the input's dim (unless allowzero), -1 is inferred (ONNX Reshape)")


def _expand_rank(types) -> int:
    return max(types[0].rank, types[1].shape[0]) if type(types[1].shape[0]) is int else 0


def _expand_dynamic_rule(types, attrs):
    x, shape = types
    _static_length("expand_dynamic", "shape", shape)
    return [TensorType(x.dtype, symbols_attr("expand_dynamic", attrs, _expand_rank(types)))]


def _expand_dynamic_ref(inputs, attrs, regions):
    x, shape = inputs
    return [np.ascontiguousarray(np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(int(s) for s in shape))))]


_reg("expand_dynamic", _expand_dynamic_rule, _expand_dynamic_ref, lambda types, attrs: _expand_rank(types),
     min_inputs=2, max_inputs=2,
     doc="broadcast x and a run-time shape against each other (ONNX Expand)")


def _slice_axes_changed(types, attrs) -> list[int]:
    x = types[0]
    if attrs["axes"] is None:
        return list(range(x.rank))
    return sorted({norm_axis("slice_dynamic", a, x.rank) for a in attrs["axes"]})


def _slice_dynamic_rule(types, attrs):
    x = types[0]
    for what, t in zip(("starts", "ends", "axes" if attrs["axes"] is None else "steps", "steps"), types[1:]):
        _int_operand("slice_dynamic", what, t)
    changed = _slice_axes_changed(types, attrs)
    syms = iter(symbols_attr("slice_dynamic", attrs, len(changed)))
    return [TensorType(x.dtype, tuple(next(syms) if i in changed else d for i, d in enumerate(x.shape)))]


def onnx_slice(x: np.ndarray, starts, ends, axes, steps) -> np.ndarray:
    """ONNX Slice on numpy: negative starts / ends count from the end, then clamp by the step's sign."""
    idx = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        a, s, e, st = int(a) % x.ndim, int(s), int(e), int(st)
        n = x.shape[a]
        if st == 0:
            raise TypeRuleError("slice_dynamic: a step is 0")
        s, e = (s + n if s < 0 else s), (e + n if e < 0 else e)
        if st > 0:
            s, e = min(max(s, 0), n), min(max(e, 0), n)
        else:
            s, e = min(max(s, 0), n - 1), min(max(e, -1), n - 1)
        idx[a] = slice(s, None if e < 0 else e, st)
    return x[tuple(idx)]


def _slice_dynamic_ref(inputs, attrs, regions):
    x, starts, ends = inputs[:3]
    rest = list(inputs[3:])
    axes = rest.pop(0) if attrs["axes"] is None and rest else (attrs["axes"] or range(len(starts)))
    steps = rest[0] if rest else np.ones(len(starts), np.int64)
    return [np.ascontiguousarray(onnx_slice(x, starts, ends, axes, steps))]


_reg("slice_dynamic", _slice_dynamic_rule, _slice_dynamic_ref,
     lambda types, attrs: len(_slice_axes_changed(types, attrs)),
     min_inputs=3, max_inputs=5, attrs={"axes": AttrSpec("optional_ints", None)},
     doc="ONNX Slice with run-time starts and ends (x, starts, ends, [axes when not an attribute], [steps])")


def _tile_dynamic_rule(types, attrs):
    x, reps = types
    if _static_length("tile_dynamic", "repeats", reps) != x.rank:
        raise TypeRuleError(f"tile_dynamic: needs one repeat per dim ({x.rank}), got {reps}")
    return [TensorType(x.dtype, symbols_attr("tile_dynamic", attrs, x.rank))]


def _tile_dynamic_ref(inputs, attrs, regions):
    x, reps = inputs
    return [np.tile(x, tuple(int(r) for r in reps))]


_reg("tile_dynamic", _tile_dynamic_rule, _tile_dynamic_ref, _rank_of_input, min_inputs=2, max_inputs=2,
     doc="repeat x a run-time number of times along each dim (ONNX Tile)")


_PAD_MODES = ("constant", "reflect", "edge", "wrap")


def _pad_axes_changed(types, attrs) -> list[int]:
    if len(types) == 4:  # run-time axes: any dim may change
        return list(range(types[0].rank))
    return _slice_axes_changed(types, attrs)


def _pad_dynamic_rule(types, attrs):
    x, pads = types[0], types[1]
    _int_operand("pad_dynamic", "pads", pads)
    if len(types) > 2 and types[2].dtype is not x.dtype:
        raise TypeRuleError(f"pad_dynamic: the pad value must be {x.dtype}, got {types[2]}")
    changed = _pad_axes_changed(types, attrs)
    syms = iter(symbols_attr("pad_dynamic", attrs, len(changed)))
    return [TensorType(x.dtype, tuple(next(syms) if i in changed else d for i, d in enumerate(x.shape)))]


def _pad_dynamic_ref(inputs, attrs, regions):
    x, pads = inputs[0], [int(p) for p in inputs[1]]
    value = inputs[2].reshape(-1)[0] if len(inputs) > 2 and inputs[2].size else np.zeros((), x.dtype)
    axes = inputs[3] if len(inputs) == 4 else attrs["axes"] if attrs["axes"] is not None else range(x.ndim)
    axes = [int(a) % x.ndim for a in axes]
    k = len(axes)
    if len(pads) != 2 * k:
        raise TypeRuleError(f"pad_dynamic: needs {2 * k} pads for {k} axes, got {len(pads)}")
    widths = [(0, 0)] * x.ndim
    crop = [slice(None)] * x.ndim
    for i, a in enumerate(axes):
        lo, hi = pads[i], pads[i + k]
        widths[a] = (max(lo, 0), max(hi, 0))
        crop[a] = slice(-min(lo, 0), x.shape[a] + min(hi, 0))
    x = x[tuple(crop)]
    if attrs["mode"] == "constant":
        return [np.pad(x, widths, mode="constant", constant_values=value)]
    return [np.pad(x, widths, mode=attrs["mode"])]


_reg("pad_dynamic", _pad_dynamic_rule, _pad_dynamic_ref, lambda types, attrs: len(_pad_axes_changed(types, attrs)),
     min_inputs=2, max_inputs=4,
     attrs={"mode": AttrSpec("str", "constant", _PAD_MODES), "axes": AttrSpec("optional_ints", None)},
     doc="ONNX Pad with run-time pads (all begins, then all ends; negative ones crop), an optional value "
         "and, as a fourth operand, run-time axes (else the axes attribute, else all)")


def _range_dynamic_rule(types, attrs):
    dt = types[0].dtype
    if any(t.dtype is not dt or t.rank != 0 for t in types) or dt is DType.bool:
        raise TypeRuleError(f"range_dynamic: start, limit and delta are scalars of one numeric dtype, got "
                            f"{', '.join(str(t) for t in types)}")
    return [TensorType(dt, symbols_attr("range_dynamic", attrs, 1))]


def _range_dynamic_ref(inputs, attrs, regions):
    start, limit, delta = (x[()] for x in inputs)
    n = max(int(np.ceil((limit - start) / delta)), 0)
    return [(start + np.arange(n) * delta).astype(inputs[0].dtype)]


_reg("range_dynamic", _range_dynamic_rule, _range_dynamic_ref, _fixed(1), min_inputs=3, max_inputs=3,
     doc="start, start + delta, ... below limit, from run-time scalars (ONNX Range)")


def _topk_dynamic_rule(types, attrs):
    x, k = types
    if x.rank == 0:
        raise TypeRuleError("topk_dynamic: input must have rank >= 1")
    _int_operand("topk_dynamic", "k", k, k.rank)
    if D.dim_prod(k.shape) != 1:
        raise TypeRuleError(f"topk_dynamic: k is one value, got {k}")
    ax = norm_axis("topk_dynamic", attrs["axis"], x.rank)
    (u,) = symbols_attr("topk_dynamic", attrs, 1)
    shape = tuple(u if i == ax else d for i, d in enumerate(x.shape))
    return [TensorType(x.dtype, shape), TensorType(DType.i64, shape)]


def _topk_dynamic_ref(inputs, attrs, regions):
    x, k = inputs
    axis = attrs["axis"] % x.ndim
    k = int(k.reshape(-1)[0])
    if not 0 <= k <= x.shape[axis]:
        raise TypeRuleError(f"topk_dynamic: k={k} out of range for dim {x.shape[axis]}")
    order = np.take(stable_order(x, axis, attrs["largest"]), np.arange(k), axis=axis)
    return [np.take_along_axis(x, order, axis), order.astype(np.int64)]


_reg("topk_dynamic", _topk_dynamic_rule, _topk_dynamic_ref, _fixed(1),
     bounds=lambda types, attrs: [(0, types[0].shape[attrs["axis"] % types[0].rank])
                                  if type(types[0].shape[attrs["axis"] % types[0].rank]) is int else (0, None)],
     min_inputs=2, max_inputs=2, attrs={"axis": AttrSpec("int", -1), "largest": AttrSpec("bool", True)},
     doc="topk with a run-time k: the k largest (or smallest) along axis, sorted, ties by lower index")


def _cos_rule(types, attrs):
    (shape,) = types
    n = _static_length("constant_of_shape", "shape", shape)
    if attrs["bound"] is not None and attrs["bound"] < 0:
        raise TypeRuleError(f"constant_of_shape: bound {attrs['bound']} is not a size; a bound is 0 or more")
    return [TensorType(attrs["dtype"], symbols_attr("constant_of_shape", attrs, n))]


def _cos_ref(inputs, attrs, regions):
    shape = tuple(int(s) for s in inputs[0])
    if attrs["bound"] is not None and not all(0 <= s <= attrs["bound"] for s in shape):
        raise TypeRuleError(f"constant_of_shape: shape {list(shape)} is outside its bound 0..{attrs['bound']}")
    return [np.full(shape, attrs["value"], dtype=attrs["dtype"].numpy)]


def _cos_bounds(types, attrs):
    n = types[0].shape[0] if types[0].rank == 1 and type(types[0].shape[0]) is int else 0
    return [(0, attrs["bound"])] * n


_reg("constant_of_shape", _cos_rule, _cos_ref,
     lambda types, attrs: types[0].shape[0] if types[0].rank == 1 and type(types[0].shape[0]) is int else 0,
     bounds=_cos_bounds,
     attrs={"value": AttrSpec("float", 0.0), "dtype": AttrSpec("dtype", DType.f32),
            "bound": AttrSpec("optional_int", None)},
     doc="a tensor of a run-time shape filled with value (ONNX ConstantOfShape); bound, when given, is a "
         "known upper bound of every dim (a size torch.export bounds), which XLA pads to")


_REDUCTIONS = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min, "prod": np.prod}


def _reduce_rank(types, attrs) -> int:
    x, axes = types
    n = axes.shape[0] if axes.rank == 1 else None
    if type(n) is not int:
        return 0
    if attrs["keepdims"] or (n == 0 and attrs["noop_with_empty_axes"]):
        return x.rank
    return x.rank - n if n else 0


def _reduce_dynamic_rule(types, attrs):
    x, axes = types
    _static_length("reduce_dynamic", "axes", axes)
    if attrs["kind"] == "mean" and not x.dtype.is_float:
        raise TypeRuleError(f"reduce_dynamic: mean of {x.dtype} (needs float)")
    if attrs["kind"] in ("sum", "mean", "prod") and x.dtype is DType.bool:
        raise TypeRuleError(f"reduce_dynamic: {attrs['kind']} of bool")
    return [TensorType(x.dtype, symbols_attr("reduce_dynamic", attrs, _reduce_rank(types, attrs)))]


def _reduce_dynamic_ref(inputs, attrs, regions):
    x, axes = inputs
    axes = tuple(sorted({int(a) % x.ndim for a in axes})) if axes.size else None
    if axes is None and attrs["noop_with_empty_axes"]:
        return [x]
    kind, extra = attrs["kind"], {}
    if kind in ("max", "min"):
        info = np.finfo(x.dtype) if x.dtype.kind == "f" else np.iinfo(x.dtype) if x.dtype.kind in "iu" else None
        lowest = kind == "max"
        extra["initial"] = (not lowest if info is None else -np.inf if x.dtype.kind == "f" and lowest else
                            np.inf if x.dtype.kind == "f" else info.min if lowest else info.max)
    out = _REDUCTIONS[kind](x, axis=axes, keepdims=attrs["keepdims"], **extra)
    return [np.asarray(out).astype(x.dtype)]


_reg("reduce_dynamic", _reduce_dynamic_rule, _reduce_dynamic_ref, _reduce_rank, min_inputs=2, max_inputs=2,
     attrs={"kind": AttrSpec("str", "sum", tuple(_REDUCTIONS)), "keepdims": AttrSpec("bool", True),
            "noop_with_empty_axes": AttrSpec("bool", False)},
     doc="an ONNX reduction over run-time axes (empty: all, or none with noop_with_empty_axes); "
         "max / min over nothing give the dtype's lowest / highest")


def _resize_dynamic_rule(types, attrs):
    x, target = types[:2]
    if len(types) > 2 and (not types[2].dtype.is_float or types[2].rank != 1):
        raise TypeRuleError(f"resize_dynamic: the region of interest must be a 1-d float tensor, got {types[2]}")
    if (len(types) > 2) != (attrs["coord"] == "tf_crop_and_resize"):
        raise TypeRuleError("resize_dynamic: a region of interest goes with coord tf_crop_and_resize, and only with it")
    axes = attrs["axes"]
    want = DType.i64 if attrs["by"] == "sizes" else DType.f32
    if target.dtype is not want or target.rank != 1:
        raise TypeRuleError(f"resize_dynamic: {attrs['by']} must be a 1-d {want} tensor, got {target}")
    if any(not 0 <= a < x.rank for a in axes) or len(set(axes)) != len(axes):
        raise TypeRuleError(f"resize_dynamic: axes {list(axes)} must be distinct dims of a rank-{x.rank} input")
    if any(type(x.shape[a]) is not int for a in axes):
        raise TypeRuleError(f"resize_dynamic: resized dims must be static, got {x}")
    syms = iter(symbols_attr("resize_dynamic", attrs, len(axes)))
    return [TensorType(x.dtype, tuple(next(syms) if i in axes else d for i, d in enumerate(x.shape)))]


def _resize_dynamic_ref(inputs, attrs, regions):
    x, target = inputs[:2]
    axes = list(attrs["axes"])
    by_sizes = attrs["by"] == "sizes"
    roi = onnx_roi(inputs[2], axes, x.ndim) if len(inputs) > 2 else None
    in_sizes = [x.shape[a] for a in axes]
    sizes, scales = onnx_resize_targets(in_sizes, axes, x.ndim, target if by_sizes else None,
                                        None if by_sizes else target, attrs["policy"], roi)
    if roi is not None:
        plan = list(zip(axes, in_sizes, sizes, scales, roi))
        return [crop_and_resize(x, plan, attrs, attrs["extrapolation"]).astype(x.dtype)]
    static = {k: v for k, v in attrs.items() if k in REGISTRY["resize"].attrs}  # coord is one of resize's here
    static.update(axes=tuple(axes), sizes=tuple(sizes), scales=tuple(scales))
    return REGISTRY["resize"].reference([x], static, ())


_reg("resize_dynamic", _resize_dynamic_rule, _resize_dynamic_ref, lambda types, attrs: len(attrs["axes"]),
     min_inputs=2, max_inputs=3,
     attrs={"axes": AttrSpec("ints"), "by": AttrSpec("str", "scales", ("scales", "sizes")),
            "policy": AttrSpec("str", "stretch", ("stretch", "not_larger", "not_smaller")),
            **{k: v for k, v in REGISTRY["resize"].attrs.items() if k not in ("axes", "sizes", "scales")},
            "coord": AttrSpec("str", "half_pixel", RESIZE_COORDS + ("tf_crop_and_resize",)),
            "extrapolation": AttrSpec("float", 0.0)},
     doc="ONNX Resize to run-time sizes (with keep_aspect_ratio_policy) or by run-time scales, given for "
         "all dims or for axes, and with coord tf_crop_and_resize a region of interest (third operand) "
         "and an extrapolation value; the interpolation attributes are resize's")


def _squeeze_rank(types, attrs, sign: int) -> int:
    n = types[1].shape[0] if types[1].rank == 1 else None
    return types[0].rank + sign * n if type(n) is int else 0


def _squeeze_dynamic_rule(types, attrs, op="squeeze_dynamic", sign=-1):
    x, axes = types
    _static_length(op, "axes", axes)
    rank = _squeeze_rank(types, attrs, sign)
    if rank < 0:
        raise TypeRuleError(f"{op}: {axes.shape[0]} axes for a rank-{x.rank} input")
    return [TensorType(x.dtype, symbols_attr(op, attrs, rank))]


def _squeeze_dynamic_ref(inputs, attrs, regions):
    x, axes = inputs
    return [np.squeeze(x, axis=tuple(int(a) % x.ndim for a in axes))]


def _unsqueeze_dynamic_ref(inputs, attrs, regions):
    x, axes = inputs
    return [np.expand_dims(x, tuple(int(a) % (x.ndim + len(axes)) for a in axes))]


_reg("squeeze_dynamic", _squeeze_dynamic_rule, _squeeze_dynamic_ref,
     lambda types, attrs: max(_squeeze_rank(types, attrs, -1), 0), min_inputs=2, max_inputs=2,
     doc="drop the size-1 dims at run-time axes (ONNX Squeeze)")
_reg("unsqueeze_dynamic", lambda types, attrs: _squeeze_dynamic_rule(types, attrs, "unsqueeze_dynamic", 1),
     _unsqueeze_dynamic_ref, lambda types, attrs: _squeeze_rank(types, attrs, 1), min_inputs=2, max_inputs=2,
     doc="insert size-1 dims at run-time axes of the output (ONNX Unsqueeze)")


def _split_dynamic_rule(types, attrs):
    x, split = types
    _split_count(types, attrs)
    ax = norm_axis("split_dynamic", attrs["axis"], x.rank)
    syms = symbols_attr("split_dynamic", attrs, attrs["outputs"])
    return [TensorType(x.dtype, tuple(u if i == ax else d for i, d in enumerate(x.shape))) for u in syms]


def _split_dynamic_ref(inputs, attrs, regions):
    x, split = inputs
    ax = attrs["axis"] % x.ndim
    sizes = [int(s) for s in split]
    if len(sizes) != attrs["outputs"] or sum(sizes) != x.shape[ax] or min(sizes, default=0) < 0:
        raise TypeRuleError(f"split_dynamic: sizes {sizes} do not split dim {x.shape[ax]} into "
                            f"{attrs['outputs']} parts")
    return np.split(x, np.cumsum(sizes)[:-1], axis=ax)


def _split_count(types, attrs) -> int:
    n = _static_length("split_dynamic", "split", types[1])
    if attrs["outputs"] != n:
        raise TypeRuleError(f"split_dynamic: {attrs['outputs']} outputs for {n} sizes")
    return n


_reg("split_dynamic", _split_dynamic_rule, _split_dynamic_ref, _split_count,
     min_inputs=2, max_inputs=2, attrs={"axis": AttrSpec("int", 0), "outputs": AttrSpec("int")},
     doc="split along axis into parts of run-time sizes (ONNX Split with a split input)")
