"""SSD's PriorBox layer: a constant of the feature and image sizes (DetectionOutput, which
decodes against these boxes, is in ``detection``)."""

from __future__ import annotations

import numpy as np

from .context import LayerContext, rule

__all__: list[str] = []


def _check_sizes(p, mins: list[float], maxs: list[float]) -> None:
    """Caffe's PriorBoxLayer checks: sizes, steps, aspect ratios and variances must be positive, and
    each max_size must exceed its min_size (else boxes are empty, inverted or divide by zero)."""
    given = {name: [float(v) for v in p.list(name)] for name in ("min_size", "aspect_ratio", "variance")}
    given.update({name: [float(p.get(name))] for name in ("img_size", "img_h", "img_w", "step", "step_h", "step_w")
                  if p.has(name)})
    for name, values in given.items():
        if any(not v > 0 for v in values):
            raise ValueError(f"{name} {values} must be positive")
    if any(mx <= mn for mn, mx in zip(mins, maxs)):
        raise ValueError(f"max_size {maxs} must exceed min_size {mins}, one by one")


def prior_boxes(p, feat_h: int, feat_w: int, img_h: int, img_w: int) -> np.ndarray:
    """SSD's PriorBoxLayer: for each cell (row-major), each prior as xmin, ymin, xmax, ymax
    normalised by the image size; then the variances.  Shape [1, 2, feat_h * feat_w * priors * 4]."""
    mins = [float(v) for v in p.list("min_size")]
    maxs = [float(v) for v in p.list("max_size")]
    _check_sizes(p, mins, maxs)
    ratios = [1.0]
    for r in (float(v) for v in p.list("aspect_ratio")):
        for q in ([r, 1.0 / r] if p.get("flip") else [r]):
            if all(abs(q - have) > 1e-6 for have in ratios):
                ratios.append(q)
    if p.has("img_h") or p.has("img_w"):
        img_h, img_w = int(p.get("img_h")), int(p.get("img_w"))
    elif p.has("img_size"):
        img_h = img_w = int(p.get("img_size"))
    if p.has("step_h") or p.has("step_w"):
        step_h, step_w = float(p.get("step_h")), float(p.get("step_w"))
    elif p.has("step"):
        step_h = step_w = float(p.get("step"))
    else:
        step_h, step_w = img_h / feat_h, img_w / feat_w
    offset = float(p.get("offset"))
    boxes = []
    for h in range(feat_h):
        for w in range(feat_w):
            cx, cy = (w + offset) * step_w, (h + offset) * step_h
            for i, m in enumerate(mins):
                sizes = [(m, m)]
                if i < len(maxs):
                    s = float(np.sqrt(m * maxs[i]))
                    sizes.append((s, s))
                sizes += [(m * np.sqrt(r), m / np.sqrt(r)) for r in ratios if abs(r - 1.0) > 1e-6]
                for bw, bh in sizes:
                    boxes.append([(cx - bw / 2) / img_w, (cy - bh / 2) / img_h,
                                  (cx + bw / 2) / img_w, (cy + bh / 2) / img_h])
    out = np.asarray(boxes, dtype=np.float32).reshape(-1)
    if p.get("clip"):
        out = np.clip(out, 0.0, 1.0)
    variance = [float(v) for v in p.list("variance")] or [0.1]
    if len(variance) not in (1, 4):
        raise ValueError(f"variance has {len(variance)} values; give 1 or 4")
    var = np.tile(np.asarray(variance * (4 if len(variance) == 1 else 1), np.float32), out.size // 4)
    return np.stack([out, var])[None]


@rule("PriorBox")
def _prior_box(ctx: LayerContext):
    feat, img = ctx.input(0), ctx.input(1)
    p = ctx.param("prior_box")
    if not p.list("min_size"):
        raise ctx.fail("sets no min_size")
    try:
        boxes = prior_boxes(p, int(feat.shape[2]), int(feat.shape[3]), int(img.shape[2]), int(img.shape[3]))
    except ValueError as e:
        raise ctx.fail(str(e)) from None
    return [ctx.b.const(boxes, name=f"{ctx.name}.priors")]
