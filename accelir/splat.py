"""Splat constants: one value repeated over a shape.

ConstantOfShape, ``Expand`` of a scalar, ``np.full`` and zeros all make arrays whose
every element is the same.  Constant folding keeps ``broadcast_to`` results as numpy
views with zero strides, so they cost one element in memory; the lowerings and the
``.npz`` writer ask :func:`splat_scalar` and write the scalar and the shape instead of
the full array (an 18 MB file of repeated values stays a few hundred bytes).
"""

from __future__ import annotations

import numpy as np

__all__ = ["splat_scalar", "SPLAT_MIN_BYTES", "SPLAT_SCAN_BYTES"]

SPLAT_MIN_BYTES = 256  # smaller arrays are cheaper written out than described
SPLAT_SCAN_BYTES = 256 * 1024 ** 2  # arrays with real strides are scanned only up to this size
_SAMPLES = 64


def splat_scalar(arr: np.ndarray, min_bytes: int = SPLAT_MIN_BYTES) -> np.ndarray | None:
    """The 0-d array of the one value ``arr`` repeats, or None when its elements differ (or it
    is under ``min_bytes``).

    A broadcast view (every dim of size > 1 has stride 0) is a splat at no cost.  Other
    arrays are compared bitwise (so NaN payloads and -0.0 count as values): a sample of
    elements first, which rejects real weights at once, then the whole array when it is at
    most ``SPLAT_SCAN_BYTES``.
    """
    if arr.ndim == 0 or arr.size < 2 or arr.nbytes < min_bytes:
        return None
    first = np.array(arr[(0,) * arr.ndim], dtype=arr.dtype)
    if all(s == 0 or n == 1 for s, n in zip(arr.strides, arr.shape)):
        return first
    if arr.nbytes > SPLAT_SCAN_BYTES or arr.dtype.itemsize not in (1, 2, 4, 8):
        return None
    bits = arr.view(np.dtype(f"u{arr.dtype.itemsize}"))
    target = first.view(bits.dtype)
    picks = tuple(np.linspace(0, n - 1, num=min(_SAMPLES, n)).astype(np.int64) for n in arr.shape)
    if not (bits[np.ix_(*picks)] == target).all() or not (bits == target).all():
        return None
    return first
