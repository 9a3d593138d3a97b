"""SSD's DetectionOutput layer, as Caffe's DetectionOutputLayer (the SSD fork) computes it.

The layer decodes the location predictions against the prior boxes (CORNER, CENTER_SIZE or
CORNER_SIZE, variances from the priors or already in the predictions), keeps per class the
boxes scoring above ``confidence_threshold`` (at most ``nms_param.top_k`` of them, best
first), suppresses per class every box whose IoU with a better kept box exceeds
``nms_threshold``, and keeps per image the ``keep_top_k`` best detections over all classes.
How many rows that leaves is decided by the data, so the output's row count is an unbacked
dim (accelir/unbacked.py): onnxruntime runs the layer, XLA refuses it naming the NMS node.

The output is Caffe's blob ``[1, 1, N, 7]``, one row ``(image_id, label, score, xmin, ymin,
xmax, ymax)`` per detection, and its rows are in Caffe's order:

- image by image; within an image label by label, ascending; within a label by descending
  score, equal scores by the lower prior index (Caffe sorts the candidates stably);
- ``keep_top_k`` keeps an image's best scores over all its labels; among equal scores the
  lower label, then the lower prior index, is kept (Caffe's unstable sort leaves that open);
- when no image has any detection, one row ``(image_id, -1, -1, -1, -1, -1, -1)`` per image;
- boxes are not clipped, and a box whose xmax < xmin or ymax < ymin has size 0: it overlaps
  nothing, so it suppresses nothing and is never suppressed.

OpenCV's dnn reads the same layer into other rows: each image's detections by descending
score, then zero rows up to ``keep_top_k * batch``.  Its first N rows, once accelir's rows are
ordered by (image, descending score), are accelir's N rows.  Without ``confidence_threshold``
OpenCV keeps scores above 0, Caffe (and accelir) every score above -FLT_MAX.  OpenCV reads
CORNER_SIZE as CORNER; accelir follows Caffe.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...ir import DType, Value
from .context import LayerContext, f32, rule

__all__: list[str] = []

_NO_THRESHOLD = -float(np.finfo(np.float32).max)  # Caffe's confidence_threshold when the prototxt sets none
_CODE_TYPES = ("CORNER", "CENTER_SIZE", "CORNER_SIZE")


@dataclass(frozen=True)
class _Config:
    """The layer's parameters, checked; ``labels`` are the classes detected (all but the background)."""

    classes: int
    labels: tuple[int, ...]
    share_location: bool
    code_type: str
    variance_in_target: bool
    confidence_threshold: float
    nms_threshold: float
    top_k: int | None
    keep_top_k: int | None

    @property
    def loc_classes(self) -> int:
        return 1 if self.share_location else self.classes


def _config(ctx: LayerContext) -> _Config:
    p = ctx.param("detection_output")
    nms = p.get("nms_param")
    if not p.has("num_classes") or p.get("num_classes") < 1:
        raise ctx.fail("detection_output_param sets no num_classes (Caffe requires it)")
    classes, background = int(p.get("num_classes")), int(p.get("background_label_id"))
    labels = tuple(c for c in range(classes) if c != background)
    if not labels:
        raise ctx.fail(f"num_classes {classes} with background_label_id {background} leaves no class to detect")
    if float(nms.get("eta")) != 1.0:
        raise ctx.fail(f"nms_param.eta {nms.get('eta')}: only eta 1 (plain NMS) is supported, not adaptive NMS; "
                       "remove eta or set it to 1")
    nms_threshold = float(nms.get("nms_threshold"))
    if nms_threshold < 0:
        raise ctx.fail(f"nms_param.nms_threshold {nms_threshold} must be at least 0")
    top_k = int(nms.get("top_k")) if nms.has("top_k") and int(nms.get("top_k")) > -1 else None
    keep_top_k = int(p.get("keep_top_k")) if int(p.get("keep_top_k")) > -1 else None
    for name, k in (("nms_param.top_k", top_k), ("keep_top_k", keep_top_k)):
        if k == 0:
            raise ctx.fail(f"{name} 0 keeps no detection; set it to -1 (no limit) or a positive count")
    code_type = str(p.get("code_type"))
    if code_type not in _CODE_TYPES:
        raise ctx.fail(f"code_type {code_type} is not one of {', '.join(_CODE_TYPES)}")
    threshold = float(p.get("confidence_threshold")) if p.has("confidence_threshold") else _NO_THRESHOLD
    return _Config(classes, labels, bool(p.get("share_location")), code_type,
                   bool(p.get("variance_encoded_in_target")), threshold, nms_threshold, top_k, keep_top_k)


def _per_image(x: Value) -> int:
    return int(np.prod([int(d) for d in x.shape[1:]]))


def _num_priors(ctx: LayerContext, cfg: _Config, loc: Value, conf: Value, prior: Value) -> int:
    """The number of priors (Caffe: the prior blob's height / 4), with the bottoms checked against it."""
    if prior.rank < 3 or int(prior.shape[2]) % 4:
        raise ctx.fail(f"the prior bottom {prior.type} is not PriorBox's [1, 2, priors * 4]")
    priors = int(prior.shape[2]) // 4
    if int(prior.shape[1]) < (1 if cfg.variance_in_target else 2):
        raise ctx.fail(f"the prior bottom {prior.type} holds no variances (channel 1), which "
                       "variance_encoded_in_target: false needs")
    if int(loc.shape[0]) != int(conf.shape[0]):
        raise ctx.fail(f"the location bottom {loc.type} and the confidence bottom {conf.type} differ in batch")
    for what, x, per in (("location", loc, cfg.loc_classes * 4), ("confidence", conf, cfg.classes)):
        if _per_image(x) != priors * per:
            raise ctx.fail(f"the {what} bottom {x.type} holds {_per_image(x)} values per image; {priors} priors "
                           f"need {priors * per}")
    return priors


def _cols(ctx: LayerContext, x: Value, lo: int, hi: int) -> Value:
    return ctx.op("slice", x, starts=(lo,), stops=(hi,), steps=(1,), axes=(x.rank - 1,))


def _decode(ctx: LayerContext, cfg: _Config, loc: Value, prior: Value, priors: int) -> Value:
    """Decoded boxes ``[batch, loc_classes, priors, 4]`` (xmin, ymin, xmax, ymax), Caffe's DecodeBBox."""
    n = int(loc.shape[0])
    pred = ctx.op("reshape", loc, shape=(n, priors, cfg.loc_classes, 4))
    flat = ctx.op("reshape", prior, shape=(int(np.prod([int(d) for d in prior.shape])),))
    corners = ctx.op("reshape", _cols(ctx, flat, 0, priors * 4), shape=(priors, 1, 4))
    if not cfg.variance_in_target:  # the variances follow the boxes in the prior blob
        pred = ctx.op("mul", pred, ctx.op("reshape", _cols(ctx, flat, priors * 4, priors * 8), shape=(priors, 1, 4)))
    if cfg.code_type == "CORNER":
        boxes = ctx.op("add", corners, pred)
    else:
        lo, hi = _cols(ctx, corners, 0, 2), _cols(ctx, corners, 2, 4)
        size = ctx.op("sub", hi, lo)
        if cfg.code_type == "CORNER_SIZE":
            boxes = ctx.op("add", corners, ctx.op("mul", pred, ctx.op("concat", size, size, axis=2)))
        else:  # CENTER_SIZE
            center = ctx.op("add", ctx.op("mul", _cols(ctx, pred, 0, 2), size),
                            ctx.op("mul", ctx.op("add", lo, hi), f32(ctx, 0.5)))
            half = ctx.op("mul", ctx.op("mul", ctx.op("exp", _cols(ctx, pred, 2, 4)), size), f32(ctx, 0.5))
            boxes = ctx.op("concat", ctx.op("sub", center, half), ctx.op("add", center, half), axis=3)
    return ctx.op("transpose", boxes, perm=(0, 2, 1, 3))


def _candidates(ctx: LayerContext, cfg: _Config, conf: Value, boxes: Value, priors: int):
    """Per (image, label) its best ``k`` scores, descending, and their boxes: ``[batch * labels, k]``
    and ``[batch * labels, k, 4]``.  A candidate's position then orders it as Caffe's NMS does."""
    n, labels = int(conf.shape[0]), len(cfg.labels)
    scores = ctx.op("transpose", ctx.op("reshape", conf, shape=(n, priors, cfg.classes)), perm=(0, 2, 1))
    if labels != cfg.classes:
        scores = ctx.op("gather", scores, ctx.const(np.asarray(cfg.labels, np.int64)), axis=1)
    k = priors if cfg.top_k is None else min(cfg.top_k, priors)
    best, index = ctx.ops("topk", scores, k=k, axis=2, largest=True)
    loc_class = np.zeros(labels, np.int64) if cfg.share_location else np.asarray(cfg.labels, np.int64)
    row = (np.arange(n, dtype=np.int64)[:, None] * cfg.loc_classes + loc_class[None, :]) * priors
    flat = ctx.op("reshape", boxes, shape=(n * cfg.loc_classes * priors, 4))
    picked = ctx.op("gather", flat, ctx.op("add", index, ctx.const(row[:, :, None])), axis=0)
    return (ctx.op("reshape", best, shape=(n * labels, k)), ctx.op("reshape", picked, shape=(n * labels, k, 4)), k)


def _suppress(ctx: LayerContext, cfg: _Config, scores: Value, boxes: Value, k: int) -> Value:
    """Caffe's ApplyNMSFast on every (image, label) row: the kept candidates' flat positions
    (row * k + position), ascending, i.e. in Caffe's output order."""
    lo, hi = _cols(ctx, boxes, 0, 2), _cols(ctx, boxes, 2, 4)
    # Caffe gives an inverted box size 0; ONNX's NMS would reorder its corners, so it becomes a point
    inverted = ctx.op("reduce_any", ctx.op("lt", hi, lo), axes=(2,), keepdims=True)
    nms_boxes = ctx.op("where", inverted, ctx.op("concat", lo, lo, axis=2), boxes)
    rows = int(scores.shape[0])
    kept = ctx.op("non_max_suppression", nms_boxes, ctx.op("reshape", scores, shape=(rows, 1, k)),
                  ctx.const(np.array([k], np.int64)), ctx.const(np.array([cfg.nms_threshold], np.float32)),
                  ctx.const(np.array([cfg.confidence_threshold], np.float32)))
    row, pos = _cols(ctx, kept, 0, 1), _cols(ctx, kept, 2, 3)
    flat = ctx.op("reshape", ctx.op("add", ctx.op("mul", row, ctx.scalar(k, DType.i64)), pos),
                  shape=(kept.shape[0],))
    return ctx.ops("sort", flat, axis=0)[0]


def _keep_top_k(ctx: LayerContext, cfg: _Config, keys: Value, scores: Value, per_image: int, images: int) -> Value:
    """The keys of each image's ``keep_top_k`` best detections (by score, then by key), still ascending."""
    count = keys.shape[0]
    score = ctx.op("gather", scores, keys, axis=0)
    order = ctx.ops("sort", score, axis=0, descending=True)[1]  # stable: equal scores keep the key order
    rank = ctx.op("iota", shape=(count,), dtype=DType.i64)
    if images > 1:
        image = ctx.op("div", keys, ctx.scalar(per_image, DType.i64))
        order = ctx.op("gather", order, ctx.ops("sort", ctx.op("gather", image, order, axis=0), axis=0)[1], axis=0)
        # a detection's rank in its image: its place in (image, score) order less the detections of earlier images
        onehot = ctx.op("eq", ctx.op("unsqueeze", image, axes=(0,)),
                        ctx.const(np.arange(images, dtype=np.int64)[:, None]))
        counts = ctx.op("reduce_sum", ctx.cast(onehot, DType.i64), axes=(1,))
        start = ctx.op("cumsum", counts, axis=0, exclusive=True)
        rank = ctx.op("sub", rank, ctx.op("gather", start, ctx.op("gather", image, order, axis=0), axis=0))
    kept = ctx.op("compress", order, ctx.op("lt", rank, ctx.scalar(cfg.keep_top_k, DType.i64)), axis=0)
    return ctx.op("gather", keys, ctx.ops("sort", kept, axis=0)[0], axis=0)


def _rows(ctx: LayerContext, cfg: _Config, keys: Value, scores: Value, boxes: Value, k: int) -> Value:
    """``[N, 7]`` rows (image_id, label, score, xmin, ymin, xmax, ymax) of the detections at ``keys``."""
    labels = len(cfg.labels)
    row = ctx.op("div", keys, ctx.scalar(k, DType.i64))
    image = ctx.cast(ctx.op("div", row, ctx.scalar(labels, DType.i64)), DType.f32)
    label = ctx.op("gather", ctx.const(np.asarray(cfg.labels, np.float32)),
                   ctx.op("rem", row, ctx.scalar(labels, DType.i64)), axis=0)
    score = ctx.op("gather", scores, keys, axis=0)
    box = ctx.op("gather", ctx.op("reshape", boxes, shape=(int(scores.shape[0]), 4)), keys, axis=0)
    column = [ctx.op("unsqueeze", v, axes=(1,)) for v in (image, label, score)]
    return ctx.op("concat", *column, box, axis=1)


def _none_found(ctx: LayerContext, rows: Value, images: int) -> Value:
    """Caffe's answer when no image has a detection: one row (image_id, -1, ...) per image."""
    placeholder = np.full((images, 7), -1, np.float32)
    placeholder[:, 0] = np.arange(images)
    empty = ctx.op("eq", ctx.dim_value(rows.shape[0]), ctx.scalar(0, DType.i64))
    count = ctx.op("mul", ctx.cast(empty, DType.i64), ctx.scalar(images, DType.i64))
    some = ctx.op("slice_dynamic", ctx.const(placeholder), ctx.const(np.zeros(1, np.int64)),
                  ctx.op("reshape", count, shape=(1,)), axes=(0,))
    return ctx.op("concat", rows, some, axis=0)


@rule("DetectionOutput")
def _detection_output(ctx: LayerContext):
    cfg = _config(ctx)
    loc, conf, prior = ctx.input(0), ctx.input(1), ctx.input(2)
    priors = _num_priors(ctx, cfg, loc, conf, prior)
    images = int(loc.shape[0])
    scores, boxes, k = _candidates(ctx, cfg, conf, _decode(ctx, cfg, loc, prior, priors), priors)
    flat_scores = ctx.op("reshape", scores, shape=(int(scores.shape[0]) * k,))
    keys = _suppress(ctx, cfg, scores, boxes, k)
    per_image = len(cfg.labels) * k
    if cfg.keep_top_k is not None and cfg.keep_top_k < per_image:
        keys = _keep_top_k(ctx, cfg, keys, flat_scores, per_image, images)
    rows = _rows(ctx, cfg, keys, flat_scores, boxes, k)
    return [ctx.op("unsqueeze", _none_found(ctx, rows, images), axes=(0, 1))]
