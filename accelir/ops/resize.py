"""``resize``: nearest / linear / cubic interpolation along some axes (ONNX Resize, torch interpolate).

One op serves both frontends: ONNX's ``Resize`` and torch's ``upsample_*`` differ only in
where each output samples the input (the coordinate transformation) and in how nearest
rounds, and both are attributes here. The semantics is ONNX Resize-19's without
``tf_crop_and_resize`` (whose region of interest and extrapolation the ONNX import writes
out in core ops). Each axis is interpolated separately, as the kernels of both do, by
*taps*: for each output index, the input indices it reads and their weights.

``scales`` are the factors the coordinate formulas divide by. They differ from
``sizes / input`` when a caller gives a scale whose product with the input is not whole
(torch ``scale_factor=1.5`` on 5 pixels gives 7 outputs sampled at ``i / 1.5``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..types import DType, TensorType
from .registry import AttrSpec, OpDef, TypeRuleError, np_dtype_compute, register

if TYPE_CHECKING:  # decompositions are handed a Builder; ir imports the ops, not the reverse
    from ..ir import Builder, Value

__all__ = ["onnx_resize_targets", "onnx_roi", "crop_and_resize", "resize_taps", "nearest_index", "taps_bytes", "RESIZE_MODES", "RESIZE_COORDS", "NEAREST_MODES"]

RESIZE_MODES = ("nearest", "linear", "cubic")
RESIZE_COORDS = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "half_pixel_symmetric")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _cubic_kernel(a: float) -> Callable[[np.ndarray], np.ndarray]:
    def k(t: np.ndarray) -> np.ndarray:
        t = np.abs(t)
        near = ((a + 2) * t - (a + 3)) * t * t + 1
        far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
        return np.where(t <= 1, near, np.where(t < 2, far, 0.0))
    return k


def source_coords(mode: str, out: int, size: int, scale: float, roi: tuple[float, float] = (0.0, 1.0),
                  dtype: type = np.float64) -> np.ndarray:
    """Where each output index samples the input (ONNX Resize's coordinate_transformation_mode;
    ``tf_crop_and_resize`` reads ``roi``), computed in ``dtype`` (float32: as kernels compute it)."""
    i = np.arange(out, dtype=dtype)
    scale = dtype(scale)
    out_f = scale * size  # ONNX's formulas use the unrounded output width
    if mode == "align_corners":
        return np.zeros(out) if out_f == 1 else i * (size - 1) / (out_f - 1)
    if mode == "asymmetric":
        return i / scale
    if mode == "tf_crop_and_resize":
        lo, hi = roi
        if out_f == 1:
            return np.full(out, (hi - lo) * (size - 1) / 2 + lo * (size - 1))
        return i * (hi - lo) * (size - 1) / (out_f - 1) + lo * (size - 1)
    if mode == "pytorch_half_pixel":
        return np.full(out, -0.5) if out_f == 1 else (i + 0.5) / scale - 0.5
    if mode == "half_pixel":
        return (i + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        offset = size / 2 * (1 - out / (scale * size))
        return offset + (i + 0.5) / scale - 0.5
    raise ValueError(f"unknown coordinate_transformation_mode {mode!r}")


def _nearest_index(x: np.ndarray, mode: str) -> np.ndarray:
    if mode == "round_prefer_floor":
        return np.ceil(x - 0.5)
    if mode == "round_prefer_ceil":
        return np.floor(x + 0.5)
    if mode == "floor":
        return np.floor(x)
    if mode == "ceil":
        return np.ceil(x)
    raise ValueError(f"unknown nearest_mode {mode!r}")


def _kernel(attrs: dict[str, Any], scale: float) -> tuple[Callable | None, float, float]:
    """The interpolation kernel (None for nearest), its support, and its stretch (antialias)."""
    if attrs["mode"] == "nearest":
        return None, 0.5, 1.0
    kernel, support = ((lambda t: np.clip(1 - np.abs(t), 0, None)), 1) if attrs["mode"] == "linear" \
        else (_cubic_kernel(attrs["cubic_a"]), 2)
    return kernel, support, (min(scale, 1.0) if attrs["antialias"] else 1.0)


def nearest_index(size: int, out: int, scale: float, attrs: dict[str, Any], dtype: type = np.float64) -> np.ndarray:
    """The input index each output reads in nearest mode, its coordinates computed in ``dtype``."""
    x = source_coords(attrs["coord"], out, size, scale, dtype=dtype)
    return np.clip(_nearest_index(x, attrs["nearest_mode"]), 0, size - 1).astype(np.int64)


def taps_bytes(out: int, scale: float, attrs: dict[str, Any], itemsize: int) -> int:
    """About how many bytes one axis's tap tables take: a row has at most
    ceil(2 * support / stretch) + 1 taps of nonzero weight."""
    _, support, s = _kernel(attrs, scale)
    return out * (int(math.ceil(2 * support / s)) + 1) * (8 + itemsize)


def resize_taps(size: int, out: int, scale: float, attrs: dict[str, Any],
                roi: tuple[float, float] = (0.0, 1.0)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One axis's interpolation as taps: for each output, the input indices it reads
    ([out, taps]) and their weights, and the mask of outputs that take the extrapolation
    value (tf_crop_and_resize outside the input). Taps, not an [out, size] matrix, so the
    tables grow with the output and the kernel's reach only."""
    kernel, support, s = _kernel(attrs, scale)
    x = source_coords(attrs["coord"], out, size, scale, roi)
    outside = (x < 0) | (x > size - 1) if attrs["coord"] == "tf_crop_and_resize" else np.zeros(out, bool)
    if kernel is None:
        idx = nearest_index(size, out, scale, attrs)[:, None]
        wts = np.ones((out, 1))
    else:
        reach = int(math.ceil(support / s)) + 1
        cols, weights = [], []
        for off in range(-reach, reach + 1):
            j = np.floor(x).astype(np.int64) + off
            wt = kernel((j - x) * s)
            if attrs["exclude_outside"]:
                wt = np.where((j >= 0) & (j < size), wt, 0.0)
            if np.any(wt != 0):  # taps no output uses are left out
                cols.append(np.clip(j, 0, size - 1))
                weights.append(wt)
        idx = np.stack(cols, 1) if cols else np.zeros((out, 1), np.int64)
        wts = np.stack(weights, 1) if weights else np.zeros((out, 1))
        if attrs["antialias"] or attrs["exclude_outside"]:
            total = wts.sum(1, keepdims=True)
            wts = wts / np.where(total == 0, 1, total)
    wts[outside] = 0.0
    return idx, wts, outside


def onnx_resize_targets(in_sizes: list[int], axes: list[int], rank: int, sizes: np.ndarray | None,
                        scales: Any, policy: str = "stretch",
                        roi: list[tuple[float, float]] | None = None) -> tuple[list[int], list[float]]:
    """ONNX Resize's output sizes and coordinate factors per resized axis, from its ``sizes``
    (with ``keep_aspect_ratio_policy``) or else its ``scales``; given for all dims or for ``axes``.
    The import calls it with values known then, ``resize_dynamic``'s reference with run-time ones."""
    if sizes is not None and np.asarray(sizes).size:
        out = [int(v) for v in np.asarray(sizes).reshape(-1)]
        out = [out[a] for a in axes] if len(out) == rank and len(axes) != rank else out
        ratios = [o / i for o, i in zip(out, in_sizes)]
        if policy != "stretch":
            r = min(ratios) if policy == "not_larger" else max(ratios)
            ratios = [r] * len(axes)
            out = [int(math.floor(r * i + 0.5)) for i in in_sizes]
        return out, ratios
    factors = [float(v) for v in np.asarray(scales).reshape(-1)]
    factors = [factors[a] for a in axes] if len(factors) == rank and len(axes) != rank else factors
    roi = roi or [(0.0, 1.0)] * len(axes)
    return [int(math.floor(i * (hi - lo) * sc)) for i, sc, (lo, hi) in zip(in_sizes, factors, roi)], factors


def onnx_roi(values: Any, axes: list[int], rank: int) -> list[tuple[float, float]]:
    """ONNX Resize's region of interest (all starts, then all ends; for all dims or for ``axes``)
    as a (start, end) pair per resized axis."""
    r = [float(v) for v in np.asarray(values).reshape(-1)]
    k = len(r) // 2
    return [(r[i], r[i + k]) for i in (axes if k == rank else range(k))]


def crop_and_resize(x: np.ndarray, plan: list[tuple[int, int, int, float, tuple[float, float]]],
                    attrs: dict[str, Any], extrapolation: float) -> np.ndarray:
    """tf_crop_and_resize on numpy: per (axis, size, out, scale, roi), the weighted taps, and the
    extrapolation value where an output samples outside the input."""
    y = x
    for a, size, out, sc, rr in plan:
        idx, wts, outside = resize_taps(size, out, sc, attrs, rr)
        taps = idx.shape[1]
        g = np.take(y, idx.reshape(-1), axis=a).reshape(y.shape[:a] + (out, taps) + y.shape[a + 1:])
        w = wts.astype(y.dtype).reshape((out, taps) + (1,) * (y.ndim - a - 1))
        y = (g * w).sum(axis=a + 1, dtype=y.dtype)
        if outside.any():
            y = y + (outside * extrapolation).astype(y.dtype).reshape((out,) + (1,) * (y.ndim - a - 1))
    return y


def _axes_plan(x: TensorType, attrs: dict[str, Any]) -> list[tuple[int, int, int, float]]:
    """(axis, input size, output size, scale) of each axis that changes."""
    plan = []
    for a, out, sc in zip(attrs["axes"], attrs["sizes"], attrs["scales"]):
        size = x.shape[a]
        if size != out or sc != 1.0:
            plan.append((a, size, out, sc))
    return plan


def _resize_rule(types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    (x,) = types
    axes, sizes, scales = attrs["axes"], attrs["sizes"], attrs["scales"]
    if not (len(axes) == len(sizes) == len(scales)):
        raise TypeRuleError(f"resize: axes {list(axes)}, sizes {list(sizes)} and scales {list(scales)} differ in length")
    if len(set(axes)) != len(axes) or any(not 0 <= a < x.rank for a in axes):
        raise TypeRuleError(f"resize: axes {list(axes)} must be distinct dims of a rank-{x.rank} input")
    if any(s < 1 for s in sizes) or any(not (sc > 0 and math.isfinite(sc)) for sc in scales):
        raise TypeRuleError(f"resize: sizes {list(sizes)} must be >= 1 and scales {list(scales)} finite and > 0")
    for a in axes:
        if type(x.shape[a]) is not int:
            raise TypeRuleError(f"resize: axis {a} is the symbolic dim {x.shape[a]!r}; resized dims must be static")
    if attrs["mode"] != "nearest" and not x.dtype.is_float:
        raise TypeRuleError(f"resize: {attrs['mode']} interpolation of {x.dtype} (needs float; nearest takes any)")
    shape = list(x.shape)
    for a, out in zip(axes, sizes):
        shape[a] = out
    return [TensorType(x.dtype, tuple(shape))]


def _resize_ref(inputs: list[np.ndarray], attrs: dict[str, Any], regions: Any) -> list[np.ndarray]:
    (x,) = inputs
    dt = x.dtype
    y = x.astype(np_dtype_compute(dt), copy=False) if dt.kind == "f" else x
    for a, size, out, sc in _axes_plan(TensorType.of(x), attrs):
        idx, wts, _ = resize_taps(size, out, sc, attrs)
        g = np.take(y, idx.reshape(-1), axis=a)
        if attrs["mode"] == "nearest":
            y = g
            continue
        g = g.reshape(y.shape[:a] + idx.shape + y.shape[a + 1:])
        w = wts.astype(y.dtype).reshape(idx.shape + (1,) * (y.ndim - a - 1))
        y = (g * w).sum(axis=a + 1, dtype=y.dtype)
    return [np.asarray(y).astype(dt, copy=False)]


def _resize_decompose(b: Builder, inputs: list[Value], attrs: dict[str, Any]) -> list[Value]:
    """Per axis: gather the taps, weight them, sum them (a gather alone for nearest)."""
    (x,) = inputs
    dt = x.dtype
    compute = DType.from_numpy(np_dtype_compute(dt.numpy)) if dt.is_float else dt
    y = b.op("cast", x, dtype=compute) if compute is not dt else x
    for a, size, out, sc in _axes_plan(x.type, attrs):
        idx, wts, _ = resize_taps(size, out, sc, attrs)
        if idx.shape[1] == 1 and np.all(wts == 1):
            y = b.op("gather", y, b.const(idx[:, 0]), axis=a)
            continue
        taps = idx.shape[1]
        g = b.op("gather", y, b.const(idx.reshape(-1)), axis=a)
        g = b.op("reshape", g, shape=tuple(y.shape[:a]) + (out, taps) + tuple(y.shape[a + 1:]))
        w = b.const(wts.astype(compute.numpy).reshape((out, taps) + (1,) * (y.rank - a - 1)))
        y = b.op("reduce_sum", b.op("mul", g, w), axes=(a + 1,), keepdims=False)
    return [b.op("cast", y, dtype=dt) if y.dtype is not dt else y]


register(OpDef("resize", _resize_rule, _resize_ref, min_inputs=1, max_inputs=1,
               attrs={"axes": AttrSpec("ints"), "sizes": AttrSpec("ints"), "scales": AttrSpec("floats"),
                      "mode": AttrSpec("str", "nearest", RESIZE_MODES),
                      "coord": AttrSpec("str", "half_pixel", RESIZE_COORDS),
                      "nearest_mode": AttrSpec("str", "round_prefer_floor", NEAREST_MODES),
                      "cubic_a": AttrSpec("float", -0.75), "exclude_outside": AttrSpec("bool", False),
                      "antialias": AttrSpec("bool", False)},
               composite=True, decompose=_resize_decompose,
               doc="ONNX Resize along ``axes`` to ``sizes``: nearest / linear / cubic (Keys, cubic_a), "
                   "coordinates by ``coord`` with the factors ``scales``, antialias stretches the kernel "
                   "when shrinking; each axis on its own"))
