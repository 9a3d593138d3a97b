"""SSD's DetectionOutput layer against two oracles: OpenCV's dnn (``cv2.dnn.readNetFromCaffe``) on
files written through accelir's schema, and a numpy transcription of Caffe's own loops
(DetectionOutputLayer::Forward_cpu, DecodeBBox, ApplyNMSFast, JaccardOverlap), which also pins
the row order and the tie rules that OpenCV does not share (see accelir/frontends/caffe/detection.py).
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest

import accelir
from accelir.accuracy import DEFAULT_BUDGETS, measure
from accelir.frontends.caffe import CaffeError, capture_caffe
from accelir.interpreter import interpret

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # benchmarks/ is a folder of the repo, not of the installed package
    sys.path.insert(0, str(ROOT))
from benchmarks.caffe_nets import (DETECTION_DEFAULTS, as_opencv_detections, layer,  # noqa: E402
                                   mobilenet_ssd_net, opencv_forward, rng, write_net)

BUDGET = DEFAULT_BUDGETS["fp32"]
F32_MAX = float(np.finfo(np.float32).max)


# ----- Caffe's DetectionOutput, written out ------------------------------------------------

def _size(b) -> np.float32:
    if b[2] < b[0] or b[3] < b[1]:
        return np.float32(0)
    return np.float32((b[2] - b[0]) * (b[3] - b[1]))


def _jaccard(a, b) -> np.float32:
    if b[0] > a[2] or b[2] < a[0] or b[1] > a[3] or b[3] < a[1]:
        return np.float32(0)
    w = np.float32(min(a[2], b[2]) - max(a[0], b[0]))
    h = np.float32(min(a[3], b[3]) - max(a[1], b[1]))
    if w > 0 and h > 0:
        inter = np.float32(w * h)
        return np.float32(inter / (_size(a) + _size(b) - inter))
    return np.float32(0)


def _decode(prior, var, pred, code_type, in_target):
    v = np.ones(4, np.float32) if in_target else var
    s = (v * pred).astype(np.float32)
    if code_type == "CORNER":
        return (prior + s).astype(np.float32)
    pw, ph = np.float32(prior[2] - prior[0]), np.float32(prior[3] - prior[1])
    size = np.array([pw, ph, pw, ph], np.float32)
    if code_type == "CORNER_SIZE":
        return (prior + s * size).astype(np.float32)
    cx, cy = (prior[0] + prior[2]) / np.float32(2), (prior[1] + prior[3]) / np.float32(2)
    x, y = s[0] * pw + cx, s[1] * ph + cy
    w, h = np.exp(s[2]) * pw, np.exp(s[3]) * ph
    return np.array([x - w / 2, y - h / 2, x + w / 2, y + h / 2], np.float32)


def _nms_fast(boxes, scores, threshold, nms_threshold, top_k):
    cand = sorted(((s, i) for i, s in enumerate(scores) if s > threshold), key=lambda t: -t[0])  # stable
    if top_k > -1:
        cand = cand[:top_k]
    kept: list[int] = []
    for _, i in cand:
        if all(_jaccard(boxes[i], boxes[k]) <= nms_threshold for k in kept):
            kept.append(i)
    return kept


def caffe_detection_output(loc, conf, prior, *, num_classes, share_location=True, background_label_id=0,
                           nms_param=None, code_type="CORNER", keep_top_k=-1, variance_encoded_in_target=False,
                           confidence_threshold=None):
    """Caffe's DetectionOutputLayer forward (SSD fork), loop for loop, in float32.  Where Caffe's
    keep_top_k sort is unstable, equal scores keep (label, NMS order): accelir's stated rule."""
    nms = {"nms_threshold": 0.3, "top_k": -1, **(nms_param or {})}
    num, priors = loc.shape[0], prior.shape[2] // 4
    loc_classes = 1 if share_location else num_classes
    threshold = -F32_MAX if confidence_threshold is None else np.float32(confidence_threshold)
    flat = prior.reshape(-1)
    rows = []
    for i in range(num):
        pred = loc[i].reshape(priors, loc_classes, 4)
        score = conf[i].reshape(priors, num_classes)
        decoded = [[_decode(flat[p * 4:p * 4 + 4], flat[(priors + p) * 4:(priors + p) * 4 + 4], pred[p, c],
                            code_type, variance_encoded_in_target) for p in range(priors)]
                   for c in range(loc_classes)]
        indices = {c: _nms_fast(decoded[0 if share_location else c], score[:, c], threshold,
                                nms["nms_threshold"], nms["top_k"])
                   for c in range(num_classes) if c != background_label_id}
        if keep_top_k > -1 and sum(len(v) for v in indices.values()) > keep_top_k:
            pairs = sorted(((score[idx, c], c, idx) for c in sorted(indices) for idx in indices[c]),
                           key=lambda t: -t[0])[:keep_top_k]
            indices = {}
            for _, c, idx in pairs:
                indices.setdefault(c, []).append(idx)
        for c in sorted(indices):
            for idx in indices[c]:
                rows.append([i, c, score[idx, c], *decoded[0 if share_location else c][idx]])
    if not rows:
        rows = [[i] + [-1] * 6 for i in range(num)]
    return np.asarray(rows, np.float32).reshape(1, 1, -1, 7)


# ----- helpers -------------------------------------------------------------------------------

def ssd_inputs(seed, *, batch=1, priors=40, classes=4, loc_classes=1, loc_scale=1.0, variances=2, ties=False):
    """Random SSD head outputs: location predictions, softmax confidences, valid prior boxes with variances."""
    r = rng(seed)
    loc = (r.standard_normal((batch, priors * loc_classes * 4)) * loc_scale).astype(np.float32)
    logits = r.standard_normal((batch, priors, classes)) * 2
    conf = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    if ties:  # few distinct scores, and priors repeated, so equal scores and equal boxes abound
        conf = np.round(conf * 5) / 5
    xy = r.uniform(0, 0.8, (priors, 2))
    wh = r.uniform(0.1, 0.4, (priors, 2))
    boxes = np.concatenate([xy, xy + wh], 1)
    if ties:
        boxes[priors // 2:] = boxes[:priors - priors // 2]
    var = np.tile([0.1, 0.1, 0.2, 0.2], (priors, 1))
    prior = np.stack([boxes.reshape(-1), var.reshape(-1)])[:variances][None]
    return loc, conf.reshape(batch, -1).astype(np.float32), prior.astype(np.float32)


def _write(tmp_path, inputs, params):
    params = {**DETECTION_DEFAULTS, **params}  # OpenCV's reader needs them spelled out
    names = ("loc", "conf", "prior")
    layers = [layer("det", "DetectionOutput", list(names), "det", detection_output_param=params)]
    return write_net(str(tmp_path), layers, {n: x.shape for n, x in zip(names, inputs)})


def _same_rows(want, got, what):
    assert got.shape == want.shape, f"{what}: {got.shape[2]} rows, the oracle has {want.shape[2]}"
    np.testing.assert_array_equal(got[..., :2], want[..., :2], err_msg=f"{what}: image ids or labels differ")
    errors = measure([want], [got])
    assert BUDGET.met(errors), f"{what}: {errors} breaks {BUDGET}"


def _run(proto, model, inputs):
    cm = accelir.optimize(proto, inputs, caffemodel=model, backend="onnxruntime")
    return np.asarray(cm(*inputs))


# ----- against OpenCV and Caffe -------------------------------------------------------------

CASES = {
    "center_size, top_k, keep_top_k binds": (
        dict(seed=0),
        dict(num_classes=4, nms_param={"nms_threshold": 0.45, "top_k": 10}, code_type="CENTER_SIZE",
             keep_top_k=6, confidence_threshold=0.3)),
    "corner, a location per class, batch 2, inverted boxes": (
        dict(seed=1, batch=2, loc_classes=4, loc_scale=4.0),
        dict(num_classes=4, share_location=False, nms_param={"nms_threshold": 0.3}, code_type="CORNER",
             keep_top_k=40, confidence_threshold=0.4)),
    "variance in target, background in the middle": (
        dict(seed=2, classes=5, variances=1),
        dict(num_classes=5, background_label_id=2, nms_param={"nms_threshold": 0.5, "top_k": 20},
             code_type="CENTER_SIZE", keep_top_k=30, variance_encoded_in_target=True, confidence_threshold=0.25)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_detection_output_matches_opencv_and_caffe(tmp_path, case):
    data, params = CASES[case]
    inputs = ssd_inputs(**data, classes=params["num_classes"]) if "classes" not in data else ssd_inputs(**data)
    proto, model = _write(tmp_path, inputs, params)
    got = _run(proto, model, inputs)
    want = caffe_detection_output(*inputs, **params)
    assert want.shape[2] >= 4 and (want[..., 1] >= 0).all(), "the case should detect several boxes"
    _same_rows(want, got, "onnxruntime against Caffe's loops")
    opencv = opencv_forward(proto, model, dict(zip(("loc", "conf", "prior"), inputs)), ["det"])[0]
    _same_rows(opencv, as_opencv_detections(got, opencv.shape[2]), "onnxruntime against OpenCV")
    if "inverted" in case:  # CORNER decoding of large offsets: Caffe's size-0 boxes are among the detections
        rows = got.reshape(-1, 7)
        assert ((rows[:, 5] < rows[:, 3]) | (rows[:, 6] < rows[:, 4])).any()
    if "binds" in case:
        assert got.shape[2] == params["keep_top_k"]


def test_corner_size_follows_caffe(tmp_path):
    # OpenCV's dnn reads CORNER_SIZE as CORNER (and its prototxt parser rejects the name): Caffe's loops only
    inputs = ssd_inputs(3)
    params = dict(num_classes=4, nms_param={"nms_threshold": 0.45, "top_k": 15}, code_type="CORNER_SIZE",
                  keep_top_k=12, confidence_threshold=0.3)
    proto, model = _write(tmp_path, inputs, params)
    want = caffe_detection_output(*inputs, **params)
    assert want.shape[2] >= 4
    _same_rows(want, _run(proto, model, inputs), "onnxruntime against Caffe's loops")


@pytest.mark.parametrize("batch", [1, 2])
def test_ties_and_order_follow_the_stated_rules(tmp_path, batch):
    # equal scores at the top_k and keep_top_k cuts, equal boxes, and no confidence threshold (Caffe: -FLT_MAX)
    inputs = ssd_inputs(4, batch=batch, priors=24, ties=True)
    params = dict(num_classes=4, nms_param={"nms_threshold": 0.6, "top_k": 7}, code_type="CENTER_SIZE", keep_top_k=9)
    proto, model = _write(tmp_path, inputs, params)
    want = caffe_detection_output(*inputs, **params)
    scores = want[0, 0, :, 2]
    assert len(scores) == 9 * batch and len(np.unique(scores)) < len(scores), "the case should hold ties"
    _same_rows(want, _run(proto, model, inputs), "onnxruntime against Caffe's loops")
    _same_rows(want, interpret(capture_caffe(proto, caffemodel=model), *inputs)[0], "interpreter against Caffe")


def test_nothing_detected_gives_caffes_placeholder_row_per_image(tmp_path):
    inputs = ssd_inputs(5, batch=2)
    params = dict(num_classes=4, nms_param={"nms_threshold": 0.45}, keep_top_k=5, confidence_threshold=0.999)
    proto, model = _write(tmp_path, inputs, params)
    got = _run(proto, model, inputs)
    np.testing.assert_array_equal(got, [[[[0, -1, -1, -1, -1, -1, -1], [1, -1, -1, -1, -1, -1, -1]]]])
    np.testing.assert_array_equal(caffe_detection_output(*inputs, **params), got)
    opencv = opencv_forward(proto, model, dict(zip(("loc", "conf", "prior"), inputs)), ["det"])[0]
    np.testing.assert_array_equal(as_opencv_detections(got, opencv.shape[2]), opencv)  # OpenCV: zero rows


def test_mobilenet_ssd_net_ends_with_detection_output(tmp_path):
    params = {"nms_param": {"nms_threshold": 0.45, "top_k": 30}, "code_type": "CENTER_SIZE", "keep_top_k": 10,
              "confidence_threshold": 0.3}
    layers, outputs = mobilenet_ssd_net(rng(0), detection=params)
    proto, model = write_net(str(tmp_path), layers, {"data": (1, 3, 64, 64)})
    x = rng(1).standard_normal((1, 3, 64, 64)).astype(np.float32)
    got = _run(proto, model, (x,))
    opencv = opencv_forward(proto, model, {"data": x}, outputs)[0]
    bottoms = opencv_forward(proto, model, {"data": x}, ["mbox_loc", "mbox_conf_flatten", "mbox_priorbox"])
    want = caffe_detection_output(*bottoms, num_classes=4, **params)
    assert want.shape[2] >= 3
    _same_rows(want, got, "onnxruntime against Caffe's loops on OpenCV's bottoms")
    _same_rows(opencv, as_opencv_detections(got, opencv.shape[2]), "onnxruntime against OpenCV")


def test_xla_runs_it_compiled_once_at_every_row_count(tmp_path):
    """The rows are a join of each image's detections and its placeholder row, their count the data's: XLA
    runs the join on padded buffers, one program for every count (nothing detected included)."""
    inputs = ssd_inputs(0, batch=2)
    params = dict(num_classes=4, keep_top_k=5, confidence_threshold=0.3)
    proto, model = _write(tmp_path, inputs, params)
    cm = accelir.optimize(proto, inputs, caffemodel=model, backend="xla")
    first_blank = inputs[1].copy()
    first_blank[0] = 0  # the first image detects nothing: its placeholder row, then the second's rows
    counts = set()
    for args in (inputs, (inputs[0], first_blank, inputs[2]), (inputs[0], np.zeros_like(inputs[1]), inputs[2])):
        want = caffe_detection_output(*args, **params)
        _same_rows(want, np.asarray(cm(*args)), "xla against Caffe's loops")
        counts.add(want.shape[2])
    assert len(counts) == 3, counts


@pytest.mark.parametrize("params, data, message", [
    (dict(num_classes=4, nms_param={"eta": 0.9}), {}, r"nms_param.eta 0.9.*only eta 1"),
    (dict(num_classes=4, nms_param={"nms_threshold": -0.1}), {}, r"nms_threshold -0.1 must be at least 0"),
    (dict(num_classes=4, nms_param={"top_k": 0}), {}, r"nms_param.top_k 0 keeps no detection"),
    (dict(num_classes=4, keep_top_k=0), {}, r"keep_top_k 0 keeps no detection"),
    (dict(keep_top_k=5), {}, r"sets no num_classes"),
    (dict(num_classes=1), {}, r"leaves no class to detect"),
    (dict(num_classes=5), {}, r"confidence bottom f32\[1,160\] holds 160 values per image; 40 priors need 200"),
    (dict(num_classes=4, share_location=False), {}, r"location bottom .* 40 priors need 640"),
    (dict(num_classes=4), {"variances": 1}, r"holds no variances"),
])
def test_bad_parameters_and_bottoms_are_caffe_errors(tmp_path, params, data, message):
    proto, model = _write(tmp_path, ssd_inputs(0, **data), params)
    with pytest.raises(CaffeError, match=r"layer 'det' \(DetectionOutput, .*deploy.prototxt:\d+\): .*" + message):
        capture_caffe(proto, caffemodel=model)
