"""Caffe's resizing layers: Interp (DeepLab / PSPNet, bilinear with corners aligned) and the
nearest-neighbour Upsample of the YOLOv3 ports.  Both are separable, so each is two matmuls
with constant interpolation matrices: rows, then columns."""

from __future__ import annotations

import numpy as np

from ...ir import Value
from .context import LayerContext, rule

__all__: list[str] = []


def bilinear_matrix(n_in: int, n_out: int, begin: int = 0, used: int | None = None) -> np.ndarray:
    """[n_out, n_in]: Caffe's caffe_cpu_interp2 along one axis (corners aligned) over input rows
    ``begin .. begin + used``."""
    used = n_in if used is None else used
    m = np.zeros((n_out, n_in), np.float64)
    scale = (used - 1) / (n_out - 1) if n_out > 1 else 0.0
    for i in range(n_out):
        pos = scale * i
        lo = int(pos)
        hi = lo + (1 if lo < used - 1 else 0)
        frac = pos - lo
        m[i, begin + lo] += 1 - frac
        m[i, begin + hi] += frac
    return m.astype(np.float32)


def _resize(ctx: LayerContext, x: Value, rows: np.ndarray, cols: np.ndarray) -> Value:
    y = ctx.op("matmul", ctx.b.const(rows, name=f"{ctx.name}.rows"), x)
    return ctx.op("matmul", y, ctx.b.const(np.ascontiguousarray(cols.T), name=f"{ctx.name}.cols"))


@rule("Interp")
def _interp(ctx: LayerContext):
    p = ctx.param("interp")
    x = ctx.input()
    if x.rank != 4:
        raise ctx.fail(f"Interp takes a 4-d N x C x H x W blob, got rank {x.rank}")
    h_in, w_in = int(x.shape[2]), int(x.shape[3])
    beg, end = int(p.get("pad_beg")), int(p.get("pad_end"))
    if beg > 0 or end > 0:
        raise ctx.fail("pad_beg and pad_end must be <= 0 (they crop the input)")
    h_used, w_used = h_in + beg + end, w_in + beg + end
    zoom, shrink = int(p.get("zoom_factor")), int(p.get("shrink_factor"))
    if p.has("height") and p.has("width"):
        h_out, w_out = int(p.get("height")), int(p.get("width"))
    elif len(ctx.inputs) > 1:  # the size of a second bottom
        h_out, w_out = int(ctx.input(1).shape[2]), int(ctx.input(1).shape[3])
    else:
        for name, factor in (("zoom_factor", zoom), ("shrink_factor", shrink)):
            if factor < 1:
                raise ctx.fail(f"{name} {factor} must be at least 1")
        h_out, w_out = h_used, w_used
        if shrink != 1:
            h_out, w_out = (h_out - 1) // shrink + 1, (w_out - 1) // shrink + 1
        if zoom != 1:
            h_out, w_out = h_out + (h_out - 1) * (zoom - 1), w_out + (w_out - 1) * (zoom - 1)
    if min(h_out, w_out, h_used, w_used) < 1:
        raise ctx.fail(f"the output size {h_out} x {w_out} (from input {h_in} x {w_in}) is empty")
    return [_resize(ctx, x, bilinear_matrix(h_in, h_out, -beg, h_used), bilinear_matrix(w_in, w_out, -beg, w_used))]


@rule("Upsample")
def _upsample(ctx: LayerContext):
    x = ctx.input()
    if x.rank != 4 or len(ctx.inputs) != 1:
        raise ctx.fail("only the nearest-neighbour Upsample of one N x C x H x W bottom (upsample_param { scale }) "
                       "is supported")
    s = int(ctx.param("upsample").get("scale"))
    if s < 1:
        raise ctx.fail(f"scale {s} must be at least 1")
    h, w = int(x.shape[2]), int(x.shape[3])
    rows = np.repeat(np.eye(h, dtype=np.float32), s, axis=0)
    cols = np.repeat(np.eye(w, dtype=np.float32), s, axis=0)
    return [_resize(ctx, x, rows, cols)]
