"""IR idioms that several frontends need, written once.

Each function takes an :class:`~accelir.ir.Builder` (every frontend's rule context
carries one) and builds the IR for one framework idiom that has no IR op of its own.
"""

from __future__ import annotations

from typing import Sequence

from .. import dims as D
from ..ir import Builder, Value

__all__ = ["crop_negative_pads"]


def crop_negative_pads(b: Builder, x: Value, pads: Sequence[tuple[D.Dim, D.Dim]], first_axis: int = 0) -> Value:
    """``x`` with the elements a negative (lo, hi) padding removes dropped, on the axes from
    ``first_axis`` on (the IR's pad takes non-negative amounts only)."""
    starts, stops, axes = [], [], []
    for k, (lo, hi) in enumerate(pads):
        if lo < 0 or hi < 0:
            ax = first_axis + k
            starts.append(-lo if lo < 0 else 0)
            stops.append(D.dim_add(x.shape[ax], hi) if hi < 0 else x.shape[ax])
            axes.append(ax)
    if not axes:
        return x
    return b.op("slice", x, starts=tuple(starts), stops=tuple(stops), axes=tuple(axes))
