"""ONNX signal ops on the IR: ``DFT`` and ``STFT`` as one matmul with a cos / sin matrix
(built at import; the complex axis is ONNX's trailing [real, imag] dim), and
``MelWeightMatrix`` as the constant it is.

A DFT along an axis of length ``L`` to ``n`` points is a linear map from the ``L x c_in``
input values (``c_in`` = 1 real or 2 complex) to the ``K x c_out`` outputs, so padding,
truncation, one-sided output, the inverse's ``1/n`` and the inverse of a one-sided
spectrum (Hermitian symmetry: ``irfft``) all live in the matrix.  Angles are reduced
modulo ``n`` before the trig functions, so large ``j * k`` loses no accuracy.
"""

from __future__ import annotations

import math

import numpy as np

from ... import dims as D
from ...ir import DType, TensorType, Value
from ...ops.runtime_sized import dft_matrix, mel_weight_matrix
from .context import (IMPORT_VALUE_BYTES, NodeContext, OnnxImportError, fits_import_budget, norm_axis, onnx_dtype,
                      reshape, rule, select_on_runtime_axis, static_dims)

__all__ = ["dft_matrix", "dft_operator"]


def dft_operator(ctx: NodeContext, length: int, n: int, c_in: int, inverse: bool, onesided: bool) -> Value:
    """``dft_matrix`` as a constant when it fits the import budget, else the same matrix
    computed at run time from iotas (a 4096-point DFT's matrix takes 268 MB)."""
    irfft = inverse and onesided
    m = min(length, n // 2 + 1 if irfft else n)
    k_out = n if inverse or not onesided else n // 2 + 1
    c_out = 1 if irfft else 2
    if fits_import_budget((length * c_in, k_out * c_out), DType.f64):
        return ctx.const(dft_matrix(length, n, c_in, inverse, onesided))
    f64 = DType.f64
    j = ctx.op("iota", shape=(m, k_out), axis=0, dtype=DType.i64)
    k = ctx.op("iota", shape=(m, k_out), axis=1, dtype=DType.i64)
    turns = ctx.op("rem", ctx.op("mul", j, k), ctx.scalar(n, DType.i64))
    theta = ctx.op("mul", ctx.cast(turns, f64), ctx.scalar(2 * np.pi / n, f64))
    cos, sin = ctx.op("cos", theta), ctx.op("sin", theta)
    scale = ctx.scalar(1.0 / n if inverse else 1.0, f64)
    cos, sin = ctx.op("mul", cos, scale), ctx.op("mul", sin, scale)
    if irfft:
        single = ctx.op("or", ctx.op("eq", j, ctx.scalar(0, DType.i64)),
                        ctx.op("eq", ctx.op("add", j, j), ctx.scalar(n, DType.i64)))
        weight = ctx.op("where", single, ctx.scalar(1.0, f64), ctx.scalar(2.0, f64))
        cos, sin = ctx.op("mul", cos, weight), ctx.op("mul", sin, weight)
        blocks = [[cos], [ctx.op("neg", sin)]]
    else:
        sign = 1.0 if inverse else -1.0
        signed_sin = ctx.op("mul", sin, ctx.scalar(sign, f64))
        blocks = [[cos, signed_sin], [ctx.op("neg", signed_sin), cos]]
    rows = [ctx.op("concat", *[ctx.op("unsqueeze", b, axes=(2,)) for b in row], axis=2) for row in blocks[:c_in]]
    mat = ctx.op("concat", *[ctx.op("unsqueeze", r, axes=(1,)) for r in rows], axis=1)  # [m, c_in, K, c_out]
    if length > m:  # input points past the transform's length are truncated: zero rows
        mat = ctx.op("pad", mat, pads=((0, length - m), (0, 0), (0, 0), (0, 0)), mode="constant", value=0.0)
    return reshape(ctx, mat, (length * c_in, k_out * c_out))


def _apply_linear_axis(ctx: NodeContext, x: Value, axis: int, mat: Value, c_out: int) -> Value:
    """Applies ``mat`` to the (axis, last) dims of ``x`` and puts the result back in place."""
    rank = x.rank
    rest = [i for i in range(rank - 1) if i != axis]
    y = x
    if axis != rank - 2:
        y = ctx.op("transpose", y, perm=tuple(rest) + (axis, rank - 1))
    lead = tuple(x.shape[i] for i in rest)
    y = reshape(ctx, y, lead + (D.dim_mul(x.shape[axis], x.shape[-1]),))
    # summed in f64 like ONNX's reference (an FFT in complex128): outputs that cancel to zero stay near zero
    y = ctx.op("dot_general", ctx.cast(y, DType.f64), mat, lhs_contracting=(len(lead),), rhs_contracting=(0,))
    y = ctx.cast(y, x.dtype)
    k_out = mat.shape[1] // c_out
    y = reshape(ctx, y, lead + (k_out, c_out))
    if axis != rank - 2:
        perm = list(range(len(lead)))
        perm.insert(axis, len(lead))
        y = ctx.op("transpose", y, perm=tuple(perm) + (len(lead) + 1,))
    return y


def _static(ctx: NodeContext, d: D.Dim, what: str) -> int:
    return static_dims(ctx, (d,), what, "transform matrix")[0]


@rule("DFT")
def _dft(ctx: NodeContext):
    x = ctx.input(0)
    if not x.dtype.is_float:
        raise ctx.unsupported(f"a DFT of {x.dtype}")
    if ctx.opset >= 20 and ctx.dynamic(2) and not ctx.dynamic(1) and _same_type_on_every_axis(ctx, x):
        # the transform along each axis, the one asked for selected: every backend runs it
        return [select_on_runtime_axis(ctx, 2, x.rank, lambda a: _dft_along(ctx, x, a) if a < x.rank - 1 else None)]
    if ctx.dynamic(1) or (ctx.opset >= 20 and ctx.dynamic(2)):
        return [_dft_at_run_time(ctx, x)]
    if ctx.opset >= 20:
        axis = int(ctx.values(2, "axis").item()) if ctx.input(2) is not None else -2
    else:
        axis = ctx.attr("axis", 1)
    axis = norm_axis(ctx, axis, x.rank)
    if axis == x.rank - 1:
        raise ctx.unsupported("a transform over the trailing [real, imag] dim")
    return [_dft_along(ctx, x, axis)]


def _dft_points(ctx: NodeContext, length: int) -> int:
    """The transform's length: the dft_length input, else the axis's (irfft: the full spectrum's)."""
    if ctx.input(1) is not None:
        return int(ctx.values(1, "dft_length").item())
    return 2 * (length - 1) if ctx.attr("inverse", 0) and ctx.attr("onesided", 0) else length


def _same_type_on_every_axis(ctx: NodeContext, x: Value) -> bool:
    """Whether the transform gives one result type whichever axis the run-time input picks (a
    full complex spectrum of as many points as the axis has), so it can be selected at run time."""
    if any(type(d) is not int for d in x.shape) or x.shape[-1] not in (1, 2):
        return False
    if ctx.attr("onesided", 0):  # a half spectrum (or, inverse, a real signal from one): sizes change
        return False
    return all(_dft_points(ctx, length) == length for length in x.shape[:-1])


def _dft_at_run_time(ctx: NodeContext, x: Value) -> Value:
    """``dft_dynamic``: the axis or the length is a run-time value, and the result's sizes depend on it."""
    if ctx.opset >= 20:
        axis = ctx.input(2) if ctx.input(2) is not None else ctx.const(np.asarray(-2, np.int64))
    else:
        axis = ctx.const(np.asarray(ctx.attr("axis", 1), np.int64))
    ins = [x, reshape(ctx, axis, ())] + ([reshape(ctx, ctx.input(1), ())] if ctx.input(1) is not None else [])
    return ctx.op("dft_dynamic", *ins, inverse=bool(ctx.attr("inverse", 0)), onesided=bool(ctx.attr("onesided", 0)))


def _dft_along(ctx: NodeContext, x: Value, axis: int) -> Value:
    inverse, onesided = bool(ctx.attr("inverse", 0)), bool(ctx.attr("onesided", 0))
    length = _static(ctx, x.shape[axis], "signal length")
    n = _dft_points(ctx, length)
    c_in = _static(ctx, x.shape[-1], "complex dim")
    if c_in not in (1, 2) or n <= 0:
        raise ctx.unsupported(f"a trailing dim of {c_in} (1: real, 2: complex) with {n} points")
    mat = dft_operator(ctx, length, n, c_in, inverse, onesided)
    return _apply_linear_axis(ctx, x, axis, mat, 1 if inverse and onesided else 2)


def _frame_starts(ctx: NodeContext, frames: int, step: int, width: int, length: int, clip: bool) -> Value:
    """[frames, width]: the sample each frame position reads (f * step + i; with ``clip``,
    positions past the end read sample 0, to be masked), a constant when it fits the import
    budget, else computed at run time."""
    if fits_import_budget((frames, width), DType.i64):
        starts = np.arange(frames, dtype=np.int64)[:, None] * step + np.arange(width, dtype=np.int64)[None, :]
        return ctx.const(np.where(starts < length, starts, 0) if clip else starts)
    f = ctx.op("iota", shape=(frames, width), axis=0, dtype=DType.i64)
    i = ctx.op("iota", shape=(frames, width), axis=1, dtype=DType.i64)
    starts = ctx.op("add", ctx.op("mul", f, ctx.scalar(step, DType.i64)), i)
    if not clip:
        return starts
    inside = ctx.op("lt", starts, ctx.scalar(length, DType.i64))
    return ctx.op("where", inside, starts, ctx.scalar(0, DType.i64))


def _stft_at_run_time(ctx: NodeContext, x: Value, window: Value | None) -> Value:
    """``stft_dynamic``: the frame step or length is a run-time value, so the frame count (and with a
    run-time length, the bins) are; no window is a window of ones of the frame's length."""
    if window is None:
        if ctx.input(3) is None:
            frame_length = ctx.const(np.asarray([_static(ctx, x.shape[1], "signal length")], np.int64))
        else:
            frame_length = reshape(ctx, ctx.input(3), (1,))
        window = ctx.op("constant_of_shape", frame_length, value=1.0, dtype=x.dtype)
    step = reshape(ctx, ctx.input(1), ())
    return ctx.op("stft_dynamic", x, step, window, onesided=bool(ctx.attr("onesided", 1)))


@rule("STFT")
def _stft(ctx: NodeContext):
    x, window = ctx.input(0), ctx.input(2)
    if ctx.dynamic(1) or ctx.dynamic(3):
        return [_stft_at_run_time(ctx, x, window)]
    step = int(ctx.values(1, "frame_step").item())
    length = _static(ctx, x.shape[1], "signal length")
    if ctx.input(3) is not None:
        frame = int(ctx.values(3, "frame_length").item())
    else:
        frame = _static(ctx, window.shape[0], "window length") if window is not None else length
    width = _static(ctx, window.shape[0], "window length") if window is not None else frame
    frames = 1 + (length - frame) // step
    if frames <= 0 or step <= 0:
        raise ctx.unsupported(f"{frames} frames of {frame} samples every {step}")
    # frame f holds samples f*step ... f*step+width-1; those past the end read zero
    y = ctx.op("gather", x, _frame_starts(ctx, frames, step, width, length, clip=True), axis=1)
    if window is not None:
        y = ctx.op("mul", y, reshape(ctx, window, (1, 1, width, 1)))
    if (frames - 1) * step + width > length:
        inside = ctx.op("lt", _frame_starts(ctx, frames, step, width, length, clip=False),
                        ctx.scalar(length, DType.i64))
        y = ctx.op("mul", y, reshape(ctx, ctx.cast(inside, x.dtype), (1, frames, width, 1)))
    c_in = _static(ctx, x.shape[-1], "complex dim")
    mat = dft_operator(ctx, width, frame, c_in, False, bool(ctx.attr("onesided", 1)))
    return [_apply_linear_axis(ctx, y, 2, mat, 2)]


@rule("MelWeightMatrix")
def _mel_weight_matrix(ctx: NodeContext):
    if any(ctx.dynamic(i) for i in range(5)):  # its sizes are known at run time: computed there
        dt = onnx_dtype(ctx.attr("output_datatype", 1), f"{ctx.label}: its output_datatype")
        return [ctx.op("mel_weight_matrix_dynamic", *(reshape(ctx, ctx.input(i), ()) for i in range(5)), dtype=dt)]
    bins, dft_length = (int(ctx.values(i, what).item()) for i, what in ((0, "num_mel_bins"), (1, "dft_length")))
    rate = ctx.values(2, "sample_rate").item()
    lo, hi = (float(ctx.values(i, what).item()) for i, what in ((3, "lower_edge_hertz"), (4, "upper_edge_hertz")))
    dt = onnx_dtype(ctx.attr("output_datatype", 1), f"{ctx.label}: its output_datatype")
    shape = (dft_length // 2 + 1, bins)
    if min(shape) < 0 or not fits_import_budget(shape, dt):
        raise OnnxImportError(f"{ctx.label}: its output {TensorType(dt, shape)} takes "
                              f"{math.prod(shape) * dt.itemsize:,} bytes, over the {IMPORT_VALUE_BYTES:,} bytes a "
                              "value computed at import may take")
    return [ctx.const(mel_weight_matrix(bins, dft_length, rate, lo, hi).astype(dt.numpy))]
