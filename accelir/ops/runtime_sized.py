"""Signal and image ops whose output sizes come from run-time operands: ONNX's AffineGrid,
Col2Im, DFT, STFT and MelWeightMatrix when their size, shape, axis, length or step is a graph
input rather than a value known at import.

With those operands known, the ONNX import builds each of them from core ops (a constant
transform matrix, a scatter over a position table); that cannot be done when the operand
is a run-time value, because the matrix or the table has the size it decides.  These ops
keep the ONNX op's meaning instead: the interpreter computes them with the references
below, the onnxruntime lowering emits the ONNX op with the run-time operand, and XLA refuses
them by name like every data-dependent op (accelir/ops/dynamic.py).  The numpy helpers
(``dft_matrix``, ``mel_weight_matrix``) are also what the import-time builds use, so both
roads compute one thing.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .. import dims as D
from ..types import DType, TensorType
from .dynamic import register_data_dependent, symbols_attr
from .registry import AttrSpec, TypeRuleError

__all__ = ["dft_matrix", "mel_weight_matrix", "RUNTIME_SIZED_OPS"]

RUNTIME_SIZED_OPS = ("affine_grid_dynamic", "col2im_dynamic", "dft_dynamic", "stft_dynamic",
                     "mel_weight_matrix_dynamic")


def _scalar_int(op: str, what: str, t: TensorType) -> None:
    if t.dtype not in (DType.i32, DType.i64) or D.dim_prod(t.shape) != 1:
        raise TypeRuleError(f"{op}: {what} is one i32 / i64 value, got {t}")


def _ints(op: str, what: str, t: TensorType) -> int:
    """The static length of a 1-d integer operand (it sets the output rank)."""
    if t.dtype not in (DType.i32, DType.i64) or t.rank != 1 or type(t.shape[0]) is not int:
        raise TypeRuleError(f"{op}: {what} must be a 1-d i32 / i64 tensor of static length, got {t}")
    return t.shape[0]


def _one(a: np.ndarray) -> int:
    return int(np.asarray(a).reshape(-1)[0])


# ----- AffineGrid ---------------------------------------------------------------------

def _affine_grid_rule(types, attrs):
    theta, size = types
    k = _ints("affine_grid_dynamic", "size", size) - 2
    if k not in (2, 3) or not theta.dtype.is_float or theta.rank != 3 or tuple(theta.shape[1:]) != (k, k + 1):
        raise TypeRuleError(f"affine_grid_dynamic: theta [N, {k}, {k + 1}] of a float dtype for a size of "
                            f"{k + 2} dims, got {theta} and {size}")
    return [TensorType(theta.dtype, (theta.shape[0],) + symbols_attr("affine_grid_dynamic", attrs, k) + (k,))]


def _grid_axis(n: int, align_corners: bool) -> np.ndarray:
    """Normalised sample positions along one axis of n points, as ONNX's reference places them."""
    i = np.arange(n, dtype=np.float64)
    if align_corners:
        return -1.0 + i * (2.0 / (n - 1)) if n > 1 else np.full(n, -1.0)
    return -1.0 + (2.0 * i + 1.0) / n


def _affine_grid_ref(inputs, attrs, regions):
    theta, size = inputs
    n, _, *spatial = (int(s) for s in size)  # (N, C, [D,] H, W): the grid has no channel dim
    if n != theta.shape[0] or min(spatial) < 0:
        raise TypeRuleError(f"affine_grid_dynamic: size {[int(s) for s in size]} does not fit theta "
                            f"{list(theta.shape)}")
    axes = [_grid_axis(s, attrs["align_corners"]) for s in spatial]
    # the homogeneous points (x, y[, z], 1), x along the last spatial dim
    mesh = np.meshgrid(*axes, indexing="ij")
    points = np.stack([m.reshape(-1) for m in reversed(mesh)] + [np.ones(math.prod(spatial))], axis=1)
    grid = np.einsum("pj,nij->npi", points, theta.astype(np.float64))
    return [grid.reshape((n, *spatial, len(spatial))).astype(theta.dtype)]


register_data_dependent(
    "affine_grid_dynamic", _affine_grid_rule, _affine_grid_ref, lambda types, attrs: types[1].shape[0] - 2
    if types[1].rank == 1 and type(types[1].shape[0]) is int else 0, decided_by=1, min_inputs=2, max_inputs=2,
    attrs={"align_corners": AttrSpec("bool", False)},
    doc="the sampling grid of a batch of affine maps theta [N, 2, 3] / [N, 3, 4] over a run-time size "
        "(N, C, H, W) / (N, C, D, H, W), in [-1, 1] coordinates (ONNX AffineGrid)")


# ----- Col2Im ------------------------------------------------------------------------

def _col2im_rule(types, attrs):
    x, image, block = types
    k = _ints("col2im_dynamic", "image_shape", image)
    if _ints("col2im_dynamic", "block_shape", block) != k or x.rank != 3:
        raise TypeRuleError(f"col2im_dynamic: input [N, C * prod(block), L] with image and block shapes of one "
                            f"length, got {x}, {image} and {block}")
    for name in ("strides", "dilations"):
        if len(attrs[name]) != k:
            raise TypeRuleError(f"col2im_dynamic: {k} {name}, got {list(attrs[name])}")
    if len(attrs["pads"]) != 2 * k:
        raise TypeRuleError(f"col2im_dynamic: {2 * k} pads, got {list(attrs['pads'])}")
    return [TensorType(x.dtype, (x.shape[0],) + symbols_attr("col2im_dynamic", attrs, k + 1))]


def _col2im_ref(inputs, attrs, regions):
    x, image, block = inputs
    image, block = [int(v) for v in image], [int(v) for v in block]
    k = len(image)
    strides, dil, pads = attrs["strides"], attrs["dilations"], attrs["pads"]
    blocks = [(image[d] + pads[d] + pads[k + d] - dil[d] * (block[d] - 1) - 1) // strides[d] + 1 for d in range(k)]
    slots, length = math.prod(block), math.prod(blocks)
    if min(blocks + block) < 1 or x.shape[1] % slots or x.shape[2] != length:
        raise TypeRuleError(f"col2im_dynamic: an input {list(x.shape)} that does not match {blocks} blocks of "
                            f"{block} in an image {image}")
    n, c = x.shape[0], x.shape[1] // slots
    cols = x.reshape(n, c, *block, *blocks)
    out = np.zeros((n, c, *image), dtype=np.float64)
    for kpos in np.ndindex(*block):
        for bpos in np.ndindex(*blocks):
            at = [bpos[d] * strides[d] - pads[d] + kpos[d] * dil[d] for d in range(k)]
            if all(0 <= a < s for a, s in zip(at, image)):
                out[(slice(None), slice(None), *at)] += cols[(slice(None), slice(None), *kpos, *bpos)]
    return [out.astype(x.dtype)]


register_data_dependent(
    "col2im_dynamic", _col2im_rule, _col2im_ref,
    lambda types, attrs: types[1].shape[0] + 1 if types[1].rank == 1 and type(types[1].shape[0]) is int else 0,
    decided_by=1, min_inputs=3, max_inputs=3,
    attrs={"strides": AttrSpec("ints"), "dilations": AttrSpec("ints"), "pads": AttrSpec("ints")},
    doc="sum the columns [N, C * prod(block), L] of sliding blocks back into an image [N, C, *image_shape], "
        "with run-time image and block shapes (ONNX Col2Im; pads: all begins, then all ends)")


# ----- DFT and STFT --------------------------------------------------------------------

def dft_matrix(length: int, n: int, c_in: int, inverse: bool, onesided: bool) -> np.ndarray:
    """The [length * c_in, K * c_out] f64 matrix of an ONNX DFT along an axis of ``length`` points to
    ``n`` points (K, c_out as ONNX's DFT gives them: c_in 1 real or 2 complex).  Padding,
    truncation, one-sided output, the inverse's 1 / n and the inverse of a one-sided spectrum
    (Hermitian symmetry: irfft) all live in the matrix; angles are reduced modulo n before the
    trig functions, so large j * k loses no accuracy."""
    irfft = inverse and onesided
    m = min(length, n // 2 + 1 if irfft else n)  # input points that count (the rest is truncated)
    k_out = n if inverse or not onesided else n // 2 + 1
    j = np.arange(m)[:, None]
    k = np.arange(k_out)[None, :]
    # forward: e^{-i t}; inverse: e^{+i t} / n, with t = 2 pi j k / n; rows are inputs, columns outputs
    theta = 2 * np.pi * ((j * k) % n) / n
    cos, sin = np.cos(theta), np.sin(theta)
    sign = 1.0 if inverse else -1.0
    scale = 1.0 / n if inverse else 1.0
    if irfft:
        # input bin j stands for itself and its mirror n - j: twice, except DC and Nyquist
        weight = np.where((np.arange(m) == 0) | (2 * np.arange(m) == n), 1.0, 2.0)[:, None]
        cos, sin = cos * weight, sin * weight
        # real output only: Re(X e^{+it}) = Xr cos t - Xi sin t
        blocks = {(0, 0): cos, (1, 0): -sin}
        c_out = 1
    else:
        # (Xr + i Xi)(cos t + i sign sin t)
        blocks = {(0, 0): cos, (0, 1): sign * sin, (1, 0): -sign * sin, (1, 1): cos}
        c_out = 2
    mat = np.zeros((length, c_in, k_out, c_out))
    for (ci, co), blk in blocks.items():
        if ci < c_in:
            mat[:m, ci, :, co] = blk * scale
    return mat.reshape(length * c_in, k_out * c_out)


def _dft_along(x: np.ndarray, axis: int, n: int | None, inverse: bool, onesided: bool) -> np.ndarray:
    """ONNX DFT of ``x`` (trailing [real, imag] or [real] dim) along ``axis``, in f64, then x's dtype."""
    length, c_in = x.shape[axis], x.shape[-1]
    if n is None:
        n = 2 * (length - 1) if inverse and onesided else length
    if c_in not in (1, 2) or n <= 0:
        raise TypeRuleError(f"dft_dynamic: a trailing dim of {c_in} (1: real, 2: complex) with {n} points")
    y = np.moveaxis(x.astype(np.float64), axis, -2)
    lead = y.shape[:-2]
    mat = dft_matrix(length, n, c_in, inverse, onesided)
    c_out = 1 if inverse and onesided else 2
    y = (y.reshape(*lead, length * c_in) @ mat).reshape(*lead, mat.shape[1] // c_out, c_out)
    return np.moveaxis(y, -2, axis).astype(x.dtype)


def _dft_rule(types, attrs):
    x, axis = types[:2]
    if not x.dtype.is_float or x.rank < 2:
        raise TypeRuleError(f"dft_dynamic: a float signal with a trailing [real, imag] dim, got {x}")
    for what, t in zip(("axis", "dft_length"), types[1:]):
        _scalar_int("dft_dynamic", what, t)
    c_out = 1 if attrs["inverse"] and attrs["onesided"] else 2
    return [TensorType(x.dtype, symbols_attr("dft_dynamic", attrs, x.rank - 1) + (c_out,))]


def _dft_ref(inputs, attrs, regions):
    x, axis = inputs[:2]
    a = _one(axis)
    if not -x.ndim <= a < x.ndim or a % x.ndim == x.ndim - 1:
        raise TypeRuleError(f"dft_dynamic: axis {a} of a rank-{x.ndim} signal (not its trailing complex dim)")
    n = _one(inputs[2]) if len(inputs) > 2 else None
    return [_dft_along(x, a % x.ndim, n, attrs["inverse"], attrs["onesided"])]


register_data_dependent(
    "dft_dynamic", _dft_rule, _dft_ref, lambda types, attrs: max(types[0].rank - 1, 0), decided_by=1,
    min_inputs=2, max_inputs=3, attrs={"inverse": AttrSpec("bool", False), "onesided": AttrSpec("bool", False)},
    doc="ONNX DFT along a run-time axis (x, axis, [dft_length]): the dims other than the trailing "
        "[real, imag] one may all change, so all are unbacked")


def _stft_rule(types, attrs):
    x, step, window = types
    _scalar_int("stft_dynamic", "frame_step", step)
    if not x.dtype.is_float or x.rank != 3 or x.shape[2] not in (1, 2) or window.dtype is not x.dtype \
            or window.rank != 1:
        raise TypeRuleError(f"stft_dynamic: a signal [batch, length, 1 or 2] and a window [frame_length] of one "
                            f"float dtype, got {x} and {window}")
    frame = window.shape[0]
    bins = (frame // 2 + 1 if attrs["onesided"] else frame) if type(frame) is int else None
    syms = symbols_attr("stft_dynamic", attrs, 1 if bins is not None else 2)
    return [TensorType(x.dtype, (x.shape[0], syms[0], bins if bins is not None else syms[1], 2))]


def _stft_ref(inputs, attrs, regions):
    x, step, window = inputs
    step, frame, length = _one(step), window.shape[0], x.shape[1]
    frames = 1 + (length - frame) // step if step > 0 else 0
    if frames <= 0 or frame <= 0:
        raise TypeRuleError(f"stft_dynamic: {frames} frames of {frame} samples every {step} in {length}")
    starts = np.arange(frames)[:, None] * step + np.arange(frame)[None, :]
    framed = x[:, starts, :] * window.reshape(1, 1, frame, 1)  # [batch, frames, frame, c_in]
    return [_dft_along(framed, 2, frame, False, attrs["onesided"])]


def _stft_unbacked(types: Sequence[TensorType], attrs) -> int:
    return 1 if len(types) > 2 and type(types[2].shape[0]) is int else 2


register_data_dependent(
    "stft_dynamic", _stft_rule, _stft_ref, _stft_unbacked, decided_by=1, min_inputs=3, max_inputs=3,
    attrs={"onesided": AttrSpec("bool", True)},
    doc="ONNX STFT with a run-time frame step (signal, frame_step, window): frames of the window's "
        "length, each multiplied by the window and transformed")


# ----- MelWeightMatrix -------------------------------------------------------------------

def mel_weight_matrix(bins: int, dft_length: int, rate: float, lo: float, hi: float) -> np.ndarray:
    """ONNX's MelWeightMatrix in f64: [dft_length // 2 + 1, bins] triangles, their edges spread evenly
    on the mel scale (mel = 2595 log10(1 + f / 700)) between lo and hi hertz."""
    lo_mel, hi_mel = (2595 * math.log1p(f / 700) / math.log(10) for f in (lo, hi))
    mel = np.arange(bins + 2) * ((hi_mel - lo_mel) / (bins + 2)) + lo_mel
    edges = (((dft_length + 1) * (700 * np.expm1(mel / 2595 * np.log(10)))) // rate).astype(int)
    out = np.zeros((dft_length // 2 + 1, bins))
    for i in range(bins):
        left, center, right = edges[i], edges[i + 1], edges[i + 2]
        if center == left:
            out[center, i] = 1
        else:
            out[left:center + 1, i] = (np.arange(left, center + 1) - left) / (center - left)
        if right > center:
            out[center:right, i] = (right - np.arange(center, right)) / (right - center)
    return out


def _mel_rule(types, attrs):
    for what, t in zip(("num_mel_bins", "dft_length", "sample_rate"), types[:3]):
        _scalar_int("mel_weight_matrix_dynamic", what, t)
    for t in types[3:]:
        if not t.dtype.is_float or D.dim_prod(t.shape) != 1:
            raise TypeRuleError(f"mel_weight_matrix_dynamic: the edge frequencies are one float value, got {t}")
    (rows, cols) = symbols_attr("mel_weight_matrix_dynamic", attrs, 2)
    return [TensorType(attrs["dtype"], (rows, cols))]


def _mel_ref(inputs, attrs, regions):
    bins, dft_length, rate = (_one(v) for v in inputs[:3])
    lo, hi = (float(np.asarray(v).reshape(-1)[0]) for v in inputs[3:])
    if bins < 0 or dft_length < 0 or rate <= 0:
        raise TypeRuleError(f"mel_weight_matrix_dynamic: {bins} bins of a {dft_length}-point DFT at {rate} Hz")
    return [mel_weight_matrix(bins, dft_length, rate, lo, hi).astype(attrs["dtype"].numpy)]


register_data_dependent(
    "mel_weight_matrix_dynamic", _mel_rule, _mel_ref, lambda types, attrs: 2, min_inputs=5, max_inputs=5,
    attrs={"dtype": AttrSpec("dtype", DType.f32)},
    doc="ONNX MelWeightMatrix from run-time num_mel_bins, dft_length, sample_rate and edge frequencies")
