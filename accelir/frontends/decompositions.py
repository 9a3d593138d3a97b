"""IR idioms that several frontends need, written once.

Each function takes an :class:`~accelir.ir.Builder` (every frontend's rule context
carries one) and builds the IR for one framework idiom that has no IR op of its own.
"""

from __future__ import annotations

from typing import Sequence

from .. import dims as D
from ..ir import Builder, DType, Value

__all__ = ["python_mod", "floor_div", "triangle", "crop_negative_pads", "wrap_pad", "instance_norm"]


def _remainder_fix(b: Builder, r: Value, y: Value) -> Value:
    """Where the IR's truncating remainder ``r`` of a division by ``y`` differs in sign from
    Python's: nonzero, and of the other sign than the divisor."""
    zero = b.scalar(0, r)
    return b.op("and", b.op("ne", r, zero), b.op("ne", b.op("lt", r, zero), b.op("lt", y, zero)))


def python_mod(b: Builder, x: Value, y: Value) -> Value:
    """``x % y`` as Python, torch.remainder and ONNX Mod (fmod=0) define it: the result takes
    the divisor's sign.  The IR's ``rem`` truncates (C fmod), so add ``y`` where they differ."""
    r = b.op("rem", x, y)
    return b.op("where", _remainder_fix(b, r, y), b.op("add", r, y), r)


def floor_div(b: Builder, x: Value, y: Value) -> Value:
    """``x // y`` as Python and torch.floor_divide define it.  The IR's integer ``div``
    truncates toward zero, so step the quotient down where the remainder is nonzero and the
    signs differ; floats floor the true quotient."""
    if x.dtype.is_float:
        return b.op("floor", b.op("div", x, y))
    q = b.op("div", x, y)
    fix = _remainder_fix(b, b.op("rem", x, y), y)
    return b.op("sub", q, b.op("cast", fix, dtype=x.dtype))


def triangle(b: Builder, x: Value, k: int | Value, upper: bool) -> Value:
    """``x`` with the elements off its upper (``triu``) or lower (``tril``) triangle set to
    zero, over its last two dims; ``k`` shifts the diagonal (positive: above the main one),
    an int or a run-time i64 scalar."""
    shape2 = tuple(x.shape[-2:])
    rows = b.op("iota", shape=shape2, axis=0, dtype=DType.i64)
    cols = b.op("iota", shape=shape2, axis=1, dtype=DType.i64)
    kv = b.scalar(k, DType.i64) if isinstance(k, int) else k
    keep = b.op("ge" if upper else "le", b.op("sub", cols, rows), kv)
    return b.op("where", keep, x, b.scalar(0, x))


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


def wrap_pad(b: Builder, x: Value, pads: Sequence[tuple[int, int]]) -> Value:
    """Wrap-around padding (torch's circular, ONNX Pad's wrap): ``concat(x[-lo:], x, x[:hi])``
    on each padded dim; ``pads`` has one non-negative (lo, hi) pair per dim."""
    for ax, (lo, hi) in enumerate(pads):
        n = x.shape[ax]
        parts = []
        if lo:
            parts.append(b.op("slice", x, starts=(D.dim_sub(n, lo),), stops=(n,), axes=(ax,)))
        parts.append(x)
        if hi:
            parts.append(b.op("slice", x, starts=(0,), stops=(hi,), axes=(ax,)))
        if len(parts) > 1:
            x = b.op("concat", *parts, axis=ax)
    return x


def instance_norm(b: Builder, x: Value, scale: Value, bias: Value, eps: float) -> Value:
    """Instance normalisation of ``x`` [N, C, *spatial]: each (n, c) slice normalised over
    its spatial dims (the layer_norm composite from axis 2, so the fusions and lowerings
    see it), then scaled and shifted per channel by ``scale`` and ``bias`` [C]."""
    y = b.op("layer_norm", x, axis=2, epsilon=eps)
    shape = (scale.shape[0],) + (1,) * (x.rank - 2)
    return b.op("add", b.op("mul", y, b.op("reshape", scale, shape=shape)), b.op("reshape", bias, shape=shape))
