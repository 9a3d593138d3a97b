"""The Caffe frontend against OpenCV's own Caffe reader (``cv2.dnn.readNetFromCaffe``) on files
written through accelir's schema, and against numpy where OpenCV reads a layer differently from
Caffe.  Every net runs on both accelir backends within the fp32 budget of ``accelir.accuracy``.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest

import accelir
from accelir.accuracy import DEFAULT_BUDGETS, measure
from accelir.frontends.caffe import CaffeError, capture_caffe, decode, encode, parse_text

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # benchmarks/ is a folder of the repo, not of the installed package
    sys.path.insert(0, str(ROOT))
from benchmarks.caffe_nets import (batch_norm_scale, blob, conv, layer, mobilenet_ssd_net,  # noqa: E402
                                   opencv_forward, resnet_block_net, rng, write_net)

BUDGET = DEFAULT_BUDGETS["fp32"]
BACKENDS = ("onnxruntime", "xla")


def _close(want, got, what=""):
    errors = measure(want, got)
    assert BUDGET.met(errors), f"{what}: {errors} breaks {BUDGET}"


def _check_net(tmp_path, layers, inputs, outputs, *, v1=False, oracle="opencv", reference=None):
    """accelir on both backends against OpenCV (and/or a numpy reference) on the same files."""
    proto, model = write_net(str(tmp_path), layers, {k: v.shape for k, v in inputs.items()}, v1=v1)
    xs = tuple(inputs.values())
    wants = []
    if oracle == "opencv":
        wants.append(("opencv", opencv_forward(proto, model, inputs, outputs)))
    if reference is not None:
        wants.append(("numpy", [np.asarray(r, np.float32) for r in reference(*xs)]))
    for backend in BACKENDS:
        cm = accelir.optimize(proto, xs, caffemodel=model, backend=backend)
        got = cm(*xs)
        got = got if isinstance(got, list) else [got]
        names = [v.name for v in cm.source_graph.outputs]
        assert len(got) == len(outputs), f"outputs {names}, expected {outputs}"
        for who, want in wants:
            _close(want, got, f"{backend} against {who}")
    return proto, model


def _x(shape, seed=1, low=None):
    a = rng(seed).standard_normal(shape).astype(np.float32)
    return np.abs(a) + low if low is not None else a


# ----- layer families ----------------------------------------------------------------

@pytest.mark.parametrize("params", [
    dict(num_output=6, kernel_size=[3], pad=[1], stride=[2]),
    dict(num_output=6, kernel_h=3, kernel_w=1, pad_h=1, pad_w=0, stride_h=1, stride_w=2, bias_term=False),
    dict(num_output=6, kernel_size=[3], dilation=[2], pad=[2], group=3),
])
def test_convolution(tmp_path, params):
    r = rng(0)
    kh, kw = (params["kernel_h"], params["kernel_w"]) if "kernel_h" in params else (3, 3)
    g = params.get("group", 1)
    blobs = [r.standard_normal((6, 6 // g, kh, kw)).astype(np.float32)]
    if params.get("bias_term", True):
        blobs.append(r.standard_normal(6).astype(np.float32))
    _check_net(tmp_path, [layer("conv", "Convolution", "data", "conv", blobs, convolution_param=params)],
               {"data": _x((2, 6, 9, 8))}, ["conv"])


def test_deconvolution(tmp_path):
    r = rng(0)
    w, b = r.standard_normal((4, 3, 4, 4)).astype(np.float32), r.standard_normal(6).astype(np.float32)
    params = dict(num_output=6, kernel_size=[4], stride=[2], pad=[1], group=2)
    _check_net(tmp_path, [layer("up", "Deconvolution", "data", "up", [w, b], convolution_param=params)],
               {"data": _x((1, 4, 5, 5))}, ["up"])


@pytest.mark.parametrize("params, shape", [(dict(num_output=5), (2, 3, 4, 4)),
                                           (dict(num_output=5, axis=2), (2, 3, 4, 6)),
                                           (dict(num_output=5, transpose=True), (2, 12))])
def test_inner_product(tmp_path, params, shape):
    r = rng(0)
    k = int(np.prod(shape[params.get("axis", 1):]))
    w = r.standard_normal((k, 5) if params.get("transpose") else (5, k)).astype(np.float32)
    layers = [layer("fc", "InnerProduct", "data", "fc", [w, r.standard_normal(5).astype(np.float32)],
                    inner_product_param=params)]
    x = _x(shape)

    def reference(x):
        axis = params.get("axis", 1)
        flat = x.reshape(x.shape[:axis] + (-1,))
        return [flat @ (w if params.get("transpose") else w.T) + layers[0]["blobs"][1]["data"]]
    # OpenCV ignores InnerProduct's transpose flag: numpy is the reference there
    _check_net(tmp_path, layers, {"data": x}, ["fc"], reference=reference,
               oracle=None if params.get("transpose") else "opencv")


def caffe_pool_reference(x, method, k, s, p):
    """Caffe's PoolingLayer forward, written out: ceil-rounded output size (less one where the last
    window starts in the padding); AVE divides by the window clipped to the padded input."""
    n, c, h, w = x.shape
    def size(d):
        o = -(-(d + 2 * p - k) // s) + 1
        return o - 1 if p and (o - 1) * s >= d + p else o
    oh, ow = size(h), size(w)
    out = np.zeros((n, c, oh, ow), np.float64)
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * s - p, j * s - p
            he, we = min(hs + k, h + p), min(ws + k, w + p)
            count = (he - hs) * (we - ws)
            win = x[:, :, max(hs, 0):min(he, h), max(ws, 0):min(we, w)]
            out[:, :, i, j] = win.max(axis=(2, 3)) if method == "MAX" else win.sum(axis=(2, 3)) / count
    return out


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("k, s, p, size", [(3, 2, 0, 8), (3, 2, 1, 8), (2, 2, 1, 7), (3, 3, 1, 10)])
def test_pooling_ceil_rounding_and_padding(tmp_path, method, k, s, p, size):
    x = _x((2, 3, size, size + 1))
    params = {"pool": method, "kernel_size": [k], "stride": [s], "pad": [p]}
    _check_net(tmp_path, [layer("pool", "Pooling", "data", "pool", pooling_param=params)], {"data": x}, ["pool"],
               reference=lambda x: [caffe_pool_reference(x, method, k, s, p)])


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_global_pooling(tmp_path, method):
    _check_net(tmp_path, [layer("pool", "Pooling", "data", "pool", pooling_param={"pool": method,
                                                                                   "global_pooling": True})],
               {"data": _x((2, 3, 5, 7))}, ["pool"])


@pytest.mark.parametrize("type, params, positive", [
    ("ReLU", {}, False), ("ReLU", {"relu_param": {"negative_slope": 0.1}}, False),
    ("ELU", {"elu_param": {"alpha": 0.7}}, False), ("Sigmoid", {}, False), ("TanH", {}, False),
    ("AbsVal", {}, False), ("BNLL", {}, False),
    ("Power", {"power_param": {"power": 2.0, "scale": 0.5, "shift": 1.0}}, False),
    ("Power", {"power_param": {"power": 0.5, "scale": 2.0, "shift": 0.1}}, True),
    ("Exp", {"exp_param": {"base": 2.0, "scale": 0.5, "shift": 0.1}}, False),
    ("Exp", {}, False), ("Log", {}, True),
])
def test_activations(tmp_path, type, params, positive):
    _check_net(tmp_path, [layer("act", type, "data", "act", **params)],
               {"data": _x((2, 3, 4, 5), low=0.1 if positive else None)}, ["act"])


def test_log_with_base_scale_and_shift(tmp_path):
    # OpenCV's Log layer ignores log_param: numpy is the reference
    params = {"log_param": {"base": 10.0, "scale": 2.0, "shift": 0.5}}
    _check_net(tmp_path, [layer("act", "Log", "data", "act", **params)], {"data": _x((2, 3, 4, 5), low=0.1)},
               ["act"], oracle=None, reference=lambda x: [np.log10(0.5 + 2.0 * x)])


# OpenCV has no Clip or Threshold layer and ignores Swish's beta: numpy is the reference, OpenCV too where it can
@pytest.mark.parametrize("type, params, reference, oracle", [
    ("Clip", {"clip_param": {"min": -0.5, "max": 0.8}}, lambda x: np.clip(x, -0.5, 0.8), None),
    ("ReLU6", {}, lambda x: np.clip(x * 4, 0, 6) / 4, "opencv"),
    ("Swish", {"swish_param": {"beta": 1.5}}, lambda x: x / (1 + np.exp(-1.5 * x)), None),
    ("Swish", {}, lambda x: x / (1 + np.exp(-x)), "opencv"),
    ("Threshold", {"threshold_param": {"threshold": 0.3}}, lambda x: (x > 0.3).astype(np.float32), None),
])
def test_more_activations(tmp_path, type, params, reference, oracle):
    x = _x((2, 3, 4, 5))
    if type == "ReLU6":
        layers = [layer("pre", "Power", "data", "pre", power_param={"scale": 4.0}), layer("act", type, "pre", "act"),
                  layer("post", "Power", "act", "post", power_param={"scale": 0.25})]
        out = "post"
    else:
        layers, out = [layer("act", type, "data", "act", **params)], "act"
    _check_net(tmp_path, layers, {"data": x}, [out], oracle=oracle, reference=lambda x: [reference(x)])


@pytest.mark.parametrize("params", [{}, {"across_channels": True}, {"normalize_variance": False}])
def test_mvn(tmp_path, params):
    def reference(x):
        axes = (1, 2, 3) if params.get("across_channels") else (2, 3)
        c = x - x.mean(axis=axes, keepdims=True)
        if params.get("normalize_variance", True) is False:
            return [c]
        return [c / (np.sqrt((c ** 2).mean(axis=axes, keepdims=True)) + 1e-9)]
    _check_net(tmp_path, [layer("mvn", "MVN", "data", "mvn", mvn_param=params)], {"data": _x((2, 3, 4, 5))}, ["mvn"],
               reference=reference)


@pytest.mark.parametrize("operation, axis", [("SUM", 0), ("ASUM", 1), ("SUMSQ", 2), ("MEAN", -1)])
def test_reduction(tmp_path, operation, axis):
    def reference(x):
        a = axis % x.ndim
        y = {"ASUM": np.abs(x), "SUMSQ": x * x}.get(operation, x)
        axes = tuple(range(a, x.ndim))
        return [(y.mean(axis=axes) if operation == "MEAN" else y.sum(axis=axes)) * 0.5]
    params = {"operation": operation, "axis": axis, "coeff": 0.5}
    _check_net(tmp_path, [layer("red", "Reduction", "data", "red", reduction_param=params)],
               {"data": _x((2, 3, 4, 5))}, ["red"], oracle=None, reference=reference)


def test_shuffle_channel(tmp_path):
    _check_net(tmp_path, [layer("shuffle", "ShuffleChannel", "data", "shuffle", shuffle_channel_param={"group": 3})],
               {"data": _x((2, 6, 2, 3))}, ["shuffle"])


# OpenCV's Tile does not read a Caffe tile_param: numpy is the reference
def test_tile_and_shuffle_channel(tmp_path):
    layers = [layer("tile", "Tile", "data", "tile", tile_param={"axis": 2, "tiles": 3}),
              layer("shuffle", "ShuffleChannel", "tile", "shuffle", shuffle_channel_param={"group": 2})]

    def reference(x):
        t = np.tile(x, (1, 1, 3, 1))
        n, c, h, w = t.shape
        return [t.reshape(n, 2, c // 2, h, w).transpose(0, 2, 1, 3, 4).reshape(n, c, h, w)]
    _check_net(tmp_path, layers, {"data": _x((2, 6, 2, 3))}, ["shuffle"], oracle=None, reference=reference)


@pytest.mark.parametrize("shared", [False, True])
def test_prelu(tmp_path, shared):
    slope = rng(0).uniform(0.05, 0.5, 1 if shared else 3).astype(np.float32)
    _check_net(tmp_path, [layer("prelu", "PReLU", "data", "prelu", [slope], prelu_param={"channel_shared": shared})],
               {"data": _x((2, 3, 4, 4))}, ["prelu"])


def test_batch_norm_with_scale_factor_and_scale_bias(tmp_path):
    r = rng(0)
    layers = [conv("conv", "data", 3, 4, 3, r), *batch_norm_scale("conv", "conv", 4, r)]
    _check_net(tmp_path, layers, {"data": _x((2, 3, 6, 6))}, ["conv_scale"])


def test_bias_over_two_axes(tmp_path):
    # OpenCV has no Bias layer: numpy is the reference
    bias = rng(0).standard_normal((3, 4)).astype(np.float32)
    _check_net(tmp_path, [layer("bias", "Bias", "data", "bias", [bias], bias_param={"axis": 1, "num_axes": 2})],
               {"data": _x((2, 3, 4, 5))}, ["bias"], oracle=None, reference=lambda x: [x + bias[None, :, :, None]])


def test_scale_by_a_second_bottom(tmp_path):
    r = rng(0)
    layers = [layer("pool", "Pooling", "data", "pool", pooling_param={"pool": "AVE", "global_pooling": True}),
              layer("flat", "Flatten", "pool", "flat"),
              layer("scale", "Scale", ["data", "flat"], "scale", [r.standard_normal(3).astype(np.float32)],
                    scale_param={"axis": 0, "bias_term": False})]
    x = _x((2, 3, 4, 4))
    _check_net(tmp_path, layers, {"data": x}, ["scale"], oracle=None,
               reference=lambda x: [x * x.mean(axis=(2, 3), keepdims=True).reshape(2, 3, 1, 1)])


@pytest.mark.parametrize("params", [{"operation": "SUM", "coeff": [0.5, -2.0]}, {"operation": "PROD"},
                                    {"operation": "MAX"}, {"operation": "SUM"}])
def test_eltwise(tmp_path, params):
    layers = [layer("e", "Eltwise", ["a", "b"], "e", eltwise_param=params)]
    _check_net(tmp_path, layers, {"a": _x((2, 3, 4, 4)), "b": _x((2, 3, 4, 4), seed=2)}, ["e"])


def test_routing_layers(tmp_path):
    """Split, Slice (points and even), Concat, Flatten, Reshape, Permute, Dropout, Softmax, Crop."""
    layers = [layer("split", "Split", "data", ["s1", "s2"]),
              layer("slice", "Slice", "s1", ["p0", "p1", "p2"], slice_param={"axis": 1, "slice_point": [1, 3]}),
              layer("halves", "Slice", "s2", ["h0", "h1"], slice_param={"axis": 3}),
              layer("hsum", "Eltwise", ["h0", "h1"], "hsum"),
              layer("cat", "Concat", ["p2", "p0", "p1"], "cat", concat_param={"axis": 1}),
              layer("perm", "Permute", "cat", "perm", permute_param={"order": [0, 2, 3, 1]}),
              layer("drop", "Dropout", "perm", "perm", dropout_param={"dropout_ratio": 0.3}),
              layer("flat", "Flatten", "perm", "flat", flatten_param={"axis": 1, "end_axis": 2}),
              layer("resh", "Reshape", "flat", "resh", reshape_param={"shape": {"dim": [0, -1, 2]}}),
              layer("soft", "Softmax", "resh", "soft", softmax_param={"axis": 2}),
              layer("crop", "Crop", ["h0", "ref"], "crop", crop_param={"axis": 2, "offset": [1, 0]}),
              ]
    _check_net(tmp_path, layers, {"data": _x((2, 4, 4, 6)), "ref": _x((1, 1, 2, 3), seed=3)}, ["hsum", "soft", "crop"])


def caffe_lrn_reference(x, region, size, alpha, beta, k):
    """Caffe's LRNLayer: across channels x / (k + alpha / size * sum of squares over the window) ^ beta;
    within a channel x / (1 + alpha * mean of squares over size x size, padding counted) ^ beta."""
    half = (size - 1) // 2
    sq = np.pad(x.astype(np.float64) ** 2, [(0, 0), (half, half), (0, 0), (0, 0)] if region == "ACROSS_CHANNELS"
                else [(0, 0), (0, 0), (half, half), (half, half)])
    n, c, h, w = x.shape
    if region == "ACROSS_CHANNELS":
        total = sum(sq[:, i:i + c] for i in range(size))
        return x / (k + alpha / size * total) ** beta
    total = sum(sq[:, :, i:i + h, j:j + w] for i in range(size) for j in range(size))
    return x / (1 + alpha * total / (size * size)) ** beta


# OpenCV reads LRN's k as 1 whatever the prototxt says: it is the oracle where k is 1, numpy always
@pytest.mark.parametrize("region, size, alpha, beta, k", [("ACROSS_CHANNELS", 5, 0.3, 0.75, 1.0),
                                                          ("ACROSS_CHANNELS", 3, 0.3, 0.75, 2.0),
                                                          ("WITHIN_CHANNEL", 3, 0.5, 0.6, 1.0)])
def test_lrn(tmp_path, region, size, alpha, beta, k):
    params = {"norm_region": region, "local_size": size, "alpha": alpha, "beta": beta, "k": k}
    _check_net(tmp_path, [layer("lrn", "LRN", "data", "lrn", lrn_param=params)], {"data": _x((2, 7, 5, 6))}, ["lrn"],
               oracle="opencv" if k == 1.0 else None,
               reference=lambda x: [caffe_lrn_reference(x, region, size, alpha, beta, k)])


@pytest.mark.parametrize("params", [{"top_k": 1}, {"top_k": 2, "out_max_val": True}, {"axis": 1, "top_k": 1}])
def test_argmax(tmp_path, params):
    x = _x((2, 5, 3, 1))

    def reference(x):
        if "axis" in params:
            return [np.argmax(x, axis=1)[:, None].astype(np.float32)]
        flat = x.reshape(2, -1)
        order = np.argsort(-flat, axis=1, kind="stable")[:, :params["top_k"]]
        idx = order[:, None].astype(np.float32)
        if params.get("out_max_val"):
            return [np.concatenate([idx, np.take_along_axis(flat, order, 1)[:, None]], axis=1)]
        return [idx]
    # OpenCV has no ArgMax layer: numpy is the reference
    _check_net(tmp_path, [layer("arg", "ArgMax", "data", "arg", argmax_param=params)], {"data": x}, ["arg"],
               oracle=None, reference=reference)


@pytest.mark.parametrize("params", [{"across_spatial": False, "channel_shared": False},
                                    {"across_spatial": True, "channel_shared": True}])
def test_normalize(tmp_path, params):
    scale = rng(0).uniform(1, 20, 1 if params["channel_shared"] else 4).astype(np.float32)
    _check_net(tmp_path, [layer("norm", "Normalize", "data", "norm", [scale], norm_param=params)],
               {"data": _x((2, 4, 3, 5))}, ["norm"])


def test_prior_box(tmp_path):
    params = {"min_size": [20.0], "max_size": [45.0], "aspect_ratio": [2.0, 3.0], "flip": True, "clip": True,
              "variance": [0.1, 0.1, 0.2, 0.2], "step": 16.0, "offset": 0.5}
    _check_net(tmp_path, [layer("prior", "PriorBox", ["feat", "data"], "prior", prior_box_param=params)],
               {"feat": _x((1, 2, 3, 4)), "data": _x((1, 3, 48, 64), seed=2)}, ["prior"])


def caffe_interp_reference(x, h_out, w_out):
    """Caffe's caffe_cpu_interp2 (bilinear, corners aligned), written out per output pixel."""
    n, c, h, w = x.shape
    out = np.zeros((n, c, h_out, w_out), np.float64)
    for i in range(h_out):
        y = (h - 1) / (h_out - 1) * i if h_out > 1 else 0.0
        y0 = int(y)
        y1, fy = min(y0 + 1, h - 1), y - y0
        for j in range(w_out):
            xx = (w - 1) / (w_out - 1) * j if w_out > 1 else 0.0
            x0 = int(xx)
            x1, fx = min(x0 + 1, w - 1), xx - x0
            out[:, :, i, j] = ((1 - fy) * ((1 - fx) * x[:, :, y0, x0] + fx * x[:, :, y0, x1])
                               + fy * ((1 - fx) * x[:, :, y1, x0] + fx * x[:, :, y1, x1]))
    return out


# OpenCV sizes a shrink_factor-only Interp as empty: numpy is the reference there
@pytest.mark.parametrize("params, shape, out", [({"zoom_factor": 2}, (1, 2, 3, 4), (5, 7)),
                                                ({"height": 7, "width": 5}, (2, 3, 4, 6), (7, 5)),
                                                ({"shrink_factor": 2}, (1, 2, 7, 9), (4, 5))])
def test_interp(tmp_path, params, shape, out):
    _check_net(tmp_path, [layer("interp", "Interp", "data", "interp", interp_param=params)], {"data": _x(shape)},
               ["interp"], oracle=None if "shrink_factor" in params else "opencv",
               reference=lambda x: [caffe_interp_reference(x, *out)])


def test_upsample_nearest(tmp_path):
    # OpenCV reads no upsample_param: numpy is the reference
    _check_net(tmp_path, [layer("up", "Upsample", "data", "up", upsample_param={"scale": 2})],
               {"data": _x((1, 3, 2, 3))}, ["up"], oracle=None,
               reference=lambda x: [x.repeat(2, axis=2).repeat(2, axis=3)])


# ----- nets ---------------------------------------------------------------------------

def test_resnet_block_net(tmp_path):
    _check_net(tmp_path, resnet_block_net(rng(0)), {"data": _x((2, 3, 32, 32))}, ["prob"])


def test_mobilenet_ssd_shaped_net(tmp_path):
    layers, outputs = mobilenet_ssd_net(rng(0))
    _check_net(tmp_path, layers, {"data": _x((1, 3, 64, 64))}, outputs)


def test_v1_layers_with_legacy_blobs_and_input_dim(tmp_path):
    r = rng(0)
    w, b = r.standard_normal((4, 3, 3, 3)).astype(np.float32), r.standard_normal(4).astype(np.float32)
    fc = r.standard_normal((5, 4 * 2 * 2)).astype(np.float32)
    layers = [{"name": "conv", "type": "CONVOLUTION", "bottom": ["data"], "top": ["conv"],
               "convolution_param": {"num_output": 4, "kernel_size": [3], "stride": [2]},
               "blobs": [blob(w, legacy=True), blob(b, legacy=True)]},
              {"name": "relu", "type": "RELU", "bottom": ["conv"], "top": ["conv"]},
              {"name": "fc", "type": "INNER_PRODUCT", "bottom": ["conv"], "top": ["fc"],
               "inner_product_param": {"num_output": 5},
               "blobs": [blob(fc, legacy=True), blob(np.zeros(5), legacy=True)]}]
    _check_net(tmp_path, layers, {"data": _x((1, 3, 5, 5))}, ["fc"], v1=True)


# ----- graph shape: SSA, names, provenance, Input layers, random weights -------------

def test_in_place_layers_are_ssa_and_values_are_named_after_layers(tmp_path):
    r = rng(0)
    layers = [conv("conv1", "data", 3, 4, 3, r), layer("relu1", "ReLU", "conv1", "conv1"),
              layer("scale1", "Scale", "conv1", "conv1", [r.uniform(0.5, 1, 4).astype(np.float32)])]
    proto, model = write_net(str(tmp_path), layers, {"data": (1, 3, 5, 5)})
    g = accelir.capture(proto, caffemodel=model)
    accelir.verify(g)
    names = [n.output.name for n in g.nodes if n.op != "constant"]
    assert names[:2] == ["conv1", "relu1"] and names[-1] == "scale1", names
    relu = next(n for n in g.nodes if n.op == "relu")
    assert relu.meta["module"] == "relu1" and relu.meta["origin"] == "caffe ReLU"
    line = next(i for i, text in enumerate(open(proto).read().splitlines(), 1) if 'name: "relu1"' in text) - 1
    assert relu.meta["source"] == f"{proto}:{line}"
    assert [v.name for v in g.outputs] == ["scale1"] and [v.name for v in g.inputs] == ["data"]


def test_input_layer_and_example_inputs_set_the_shapes(tmp_path):
    text = """name: "n"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }
layer { name: "relu" type: "ReLU" bottom: "data" top: "relu" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "relu" top: "loss" include { phase: TRAIN } }
"""
    path = tmp_path / "deploy.prototxt"
    path.write_text(text)
    assert capture_caffe(path).inputs[0].type.shape == (1, 3, 4, 4)
    x = _x((2, 3, 6, 6))
    cm = accelir.optimize(str(path), (x,))
    np.testing.assert_array_equal(cm(x), np.maximum(x, 0))


def test_v1_data_and_loss_layers_of_a_train_net(tmp_path):
    text = """name: "n"
layers { name: "data" type: DATA top: "data" top: "label" include { phase: TRAIN } }
layers { name: "data" type: DATA top: "data" top: "label" include { phase: TEST } }
layers { name: "relu" type: RELU bottom: "data" top: "relu" }
layers { name: "loss" type: SOFTMAX_LOSS bottom: "relu" bottom: "label" top: "loss" }
"""
    path = tmp_path / "train_val.prototxt"
    path.write_text(text)
    x, label = _x((2, 3)), np.zeros((2, 1), np.float32)
    g = capture_caffe(path, (x, label))
    assert [v.name for v in g.inputs] == ["data", "label"] and [v.name for v in g.outputs] == ["relu"]
    np.testing.assert_array_equal(accelir.optimize(str(path), (x, label))(x, label), np.maximum(x, 0))


def test_without_caffemodel_weights_are_random_and_fixed(tmp_path):
    layers, outputs = mobilenet_ssd_net(rng(0))
    proto, _ = write_net(str(tmp_path), layers, {"data": (1, 3, 64, 64)})
    x = _x((1, 3, 64, 64))
    a, b = accelir.optimize(proto, (x,)), accelir.optimize(proto, (x,), backend="xla")
    for u, v in zip(a(x), b(x)):
        _close([u], [v], "random weights on both backends")
    assert np.std(a(x)[0]) > 0


# ----- the schema against the wire format and text format ----------------------------

def test_wire_and_text_round_trip():
    net = {"name": "n", "input": ["data"], "input_dim": [1, -2, 3, 4],
           "layer": [{"name": "c", "type": "Convolution", "bottom": ["data"], "top": ["c"],
                      "convolution_param": {"num_output": 3, "kernel_size": [3, 5], "bias_term": False},
                      "blobs": [blob(np.arange(6).reshape(2, 3))]}]}
    back = decode(encode(net))
    c = back.list("layer")[0]
    assert back.get("input_dim") == [1, -2, 3, 4] and c.get("convolution_param").list("kernel_size") == [3, 5]
    assert c.get("convolution_param").get("bias_term") is False and c.get("convolution_param").get("group") == 1
    np.testing.assert_array_equal(c.list("blobs")[0].get("data"), np.arange(6, dtype=np.float32))
    from accelir.frontends.caffe import to_text
    text = parse_text(to_text({k: v for k, v in net.items() if k != "layer"}))
    assert text.get("input_dim") == [1, -2, 3, 4]


def test_a_fork_field_under_a_known_number_with_another_wire_type_is_skipped():
    # DeepLab's interp_param { height: 5 } sits under number 143, BVLC's input_param: a varint, not a message
    body = b"\x0a\x01x" + bytes([0xFA, 0x08, 0x02, 0x08, 0x05])  # name "x"; field 143 (wire 2) = {field 1: 5}
    varint = b"\x0a\x01x" + bytes([0xF8, 0x08, 0x05])              # name "x"; field 143 (wire 0) = 5
    for layer_bytes in (body, varint):
        net = decode(bytes([0xA2, 0x06, len(layer_bytes)]) + layer_bytes)
        got = net.list("layer")[0].get("input_param")
        assert got.type == "InputParameter" and not got.list("shape")


def test_text_format_features():
    m = parse_text("""# comment
name: 'a' "b"   # adjacent strings join
input: "data"; input_dim: [1, 3, 8, 8]
layer < name: "p" type: "Pooling" pooling_param { pool: AVE kernel_size: 2 } unknown_field { x: 1 y: "z" } >
""")
    assert m.get("name") == "ab" and m.get("input_dim") == [1, 3, 8, 8]
    p = m.list("layer")[0]
    assert p.line == 4 and p.get("pooling_param").get("pool") == "AVE"


# ----- errors: one line naming the layer, its type and its prototxt line -----------------

def _two_layer_net(tmp_path, second_type="ReLU"):
    r = rng(0)
    layers = [conv("conv1", "data", 3, 4, 3, r), layer("act", second_type, "conv1", "act")]
    return write_net(str(tmp_path), layers, {"data": (1, 3, 5, 5)})


def test_unknown_layer_type_names_layer_type_and_line(tmp_path):
    proto, model = _two_layer_net(tmp_path, "Swish2")
    with pytest.raises(CaffeError, match=r"layer 'act' \(Swish2, .*deploy.prototxt:\d+\): unknown layer type"):
        capture_caffe(proto, caffemodel=model)


def test_blob_shape_mismatch_names_the_layer(tmp_path):
    r = rng(0)
    bad = layer("conv1", "Convolution", "data", "conv1", [r.standard_normal((4, 2, 3, 3)), np.zeros(4)],
                convolution_param={"num_output": 4, "kernel_size": [3]})
    proto, model = write_net(str(tmp_path), [bad], {"data": (1, 3, 5, 5)})
    with pytest.raises(CaffeError, match=r"layer 'conv1' \(Convolution, .*:\d+\): blob 0 has shape \[4, 2, 3, 3\], "
                                         r"the layer needs \[4, 3, 3, 3\]"):
        capture_caffe(proto, caffemodel=model)


@pytest.mark.parametrize("kind", ["Convolution", "Deconvolution"])
def test_conv_group_zero_is_a_caffe_error(tmp_path, kind):
    r = rng(0)
    bad = layer("conv1", kind, "data", "conv1", [r.standard_normal((4, 3, 3, 3)), np.zeros(4)],
                convolution_param={"num_output": 4, "kernel_size": [3], "group": 0})
    proto, model = write_net(str(tmp_path), [bad], {"data": (1, 3, 5, 5)})
    with pytest.raises(CaffeError, match=r"layer 'conv1' .*group 0 does not divide"):
        capture_caffe(proto, caffemodel=model)


@pytest.mark.parametrize("kind, param", [
    ("Pooling", {"pooling_param": {"pool": "MAX", "kernel_size": [2], "stride": [0]}}),
    ("Convolution", {"convolution_param": {"num_output": 4, "kernel_size": [3], "stride": [0]}}),
])
def test_zero_stride_is_a_caffe_error(tmp_path, kind, param):
    blobs = [rng(0).standard_normal((4, 3, 3, 3)), np.zeros(4)] if kind == "Convolution" else []
    proto, model = write_net(str(tmp_path), [layer("l", kind, "data", "l", blobs, **param)], {"data": (1, 3, 5, 5)})
    with pytest.raises(CaffeError, match=r"layer 'l' .*must be at least"):
        capture_caffe(proto, caffemodel=model)


def _w(*shape):
    return rng(0).standard_normal(shape).astype(np.float32)


# zero or negative sizes that Caffe's CHECKs refuse: each was taken silently (an empty or wrong blob) or
# crashed in numpy / python before
@pytest.mark.parametrize("kind, bottoms, blobs, params, message", [
    ("Convolution", "data", [_w(4, 3, 3, 3), _w(4)], {"convolution_param": {"num_output": 4, "kernel_size": [3],
                                                                             "dilation": [0]}},
     r"dilation \[0, 0\] must be at least 1"),
    ("Deconvolution", "data", [_w(3, 4, 3, 3), _w(4)], {"convolution_param": {"num_output": 4, "kernel_size": [3],
                                                                               "dilation": [1, 0]}},
     r"dilation \[1, 0\] must be at least 1"),
    ("Convolution", "data", [_w(0, 3, 3, 3)], {"convolution_param": {"num_output": 0, "kernel_size": [3],
                                                                      "bias_term": False}},
     "num_output 0 must be at least 1"),
    ("InnerProduct", "data", [_w(0, 75)], {"inner_product_param": {"num_output": 0, "bias_term": False}},
     "num_output 0 must be at least 1"),
    ("Pooling", "data", [], {"pooling_param": {"pool": "MAX", "kernel_size": [7]}},
     r"kernel \[7, 7\] with pad \[0, 0\] does not fit the 5 x 5 bottom"),
    ("ArgMax", "data", [], {"argmax_param": {"top_k": 0}}, "top_k 0 must be at least 1"),
    ("Interp", "data", [], {"interp_param": {"shrink_factor": 0}}, "shrink_factor 0 must be at least 1"),
    ("Interp", "data", [], {"interp_param": {"zoom_factor": 0}}, "zoom_factor 0 must be at least 1"),
    ("Upsample", "data", [], {"upsample_param": {"scale": 0}}, "scale 0 must be at least 1"),
    ("Slice", "data", [], {"slice_param": {"axis": 1, "slice_point": [0]}}, r"slice_point \[0\] does not cut"),
    ("PriorBox", ["data", "data"], [], {"prior_box_param": {"min_size": [0.0]}}, r"min_size \[0.0\] must be positive"),
    ("PriorBox", ["data", "data"], [], {"prior_box_param": {"min_size": [4.0], "aspect_ratio": [0.0]}},
     r"aspect_ratio \[0.0\] must be positive"),
    ("PriorBox", ["data", "data"], [], {"prior_box_param": {"min_size": [4.0], "img_size": 0}},
     r"img_size \[0.0\] must be positive"),
    ("PriorBox", ["data", "data"], [], {"prior_box_param": {"min_size": [4.0], "step": 0.0}},
     r"step \[0.0\] must be positive"),
    ("PriorBox", ["data", "data"], [], {"prior_box_param": {"min_size": [4.0], "variance": [-0.1]}},
     r"variance \[-0.1\] must be positive"),
    ("PriorBox", ["data", "data"], [], {"prior_box_param": {"min_size": [4.0], "max_size": [2.0]}},
     r"max_size \[2.0\] must exceed min_size \[4.0\]"),
])
def test_zero_and_negative_sizes_are_caffe_errors(tmp_path, kind, bottoms, blobs, params, message):
    tops = ["a", "b"] if kind == "Slice" else "l"
    proto, model = write_net(str(tmp_path), [layer("l", kind, bottoms, tops, blobs, **params)],
                             {"data": (1, 3, 5, 5)})
    with pytest.raises(CaffeError, match=rf"layer 'l' \({kind}, .*deploy.prototxt:\d+\): {message}"):
        capture_caffe(proto, caffemodel=model)


def test_negative_input_dim_is_a_caffe_error(tmp_path):
    proto, model = write_net(str(tmp_path), [layer("l", "ReLU", "data", "l")], {"data": (1, -1, 5, 5)})
    with pytest.raises(CaffeError, match=r"deploy.prototxt: input 'data' has a negative dim in shape \[1, -1, 5, 5\]"):
        capture_caffe(proto, caffemodel=model)


def test_bottoms_whose_shapes_do_not_fit_the_layer(tmp_path):
    proto, model = write_net(str(tmp_path), [layer("cat", "Concat", ["a", "b"], "cat", concat_param={"axis": 1})],
                             {"a": (1, 2, 3, 3), "b": (1, 2, 4, 3)})
    with pytest.raises(CaffeError, match=r"layer 'cat' \(Concat, .*deploy.prototxt:\d+\): concat: dim 2 differs"):
        capture_caffe(proto, caffemodel=model)
    proto, model = write_net(str(tmp_path), [layer("sum", "Eltwise", ["a", "b"], "sum")],
                             {"a": (1, 2, 3, 3), "b": (1, 2, 4, 3)})
    with pytest.raises(CaffeError, match=r"layer 'sum' \(Eltwise, .*\): bottoms have different shapes"):
        capture_caffe(proto, caffemodel=model)


def test_caffemodel_missing_blobs(tmp_path):
    proto, _ = _two_layer_net(tmp_path)
    other = tmp_path / "other.caffemodel"
    other.write_bytes(encode({"layer": [{"name": "something_else", "type": "ReLU"}]}))
    with pytest.raises(CaffeError, match=r"layer 'conv1' \(Convolution, .*:\d+\): the caffemodel has 0 blob"):
        capture_caffe(proto, caffemodel=other)


def test_truncated_and_corrupt_caffemodel(tmp_path):
    proto, model = _two_layer_net(tmp_path)
    data = open(model, "rb").read()
    cut = tmp_path / "cut.caffemodel"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(CaffeError, match=r"cut.caffemodel: .* at byte \d+; the file is truncated"):
        capture_caffe(proto, caffemodel=cut)
    junk = tmp_path / "junk.caffemodel"
    junk.write_bytes(b"\x0f\xff\xff" + bytes(range(40)))
    with pytest.raises(CaffeError, match="junk.caffemodel"):
        capture_caffe(proto, caffemodel=junk)


def test_prototxt_that_is_not_text_format(tmp_path):
    proto, model = _two_layer_net(tmp_path)
    with pytest.raises(CaffeError, match="not protobuf text format"):
        capture_caffe(model)  # the binary file given as the prototxt
    bad = tmp_path / "bad.prototxt"
    bad.write_text('name: "n"\nlayer {\n  name: "x" type: "ReLU" bottom: "data" top: "x" }}\n')
    with pytest.raises(CaffeError, match=r"bad.prototxt:3: expected a field name, found '}'"):
        capture_caffe(bad)
    bad.write_text('name: "n"\nlayer {\n  name: "x" type: "ReLU"\n')  # truncated
    with pytest.raises(CaffeError, match=r"bad.prototxt:4: the message opened on line 2 is not closed"):
        capture_caffe(bad)
    bad.write_text('name: "n"\nlayer { name: "x" type: "ReLU" = }\n')
    with pytest.raises(CaffeError, match=r"bad.prototxt:2: .* is not protobuf text format"):
        capture_caffe(bad)


def test_errors_are_one_line(tmp_path):
    proto, model = _two_layer_net(tmp_path, "Nope")
    with pytest.raises(CaffeError) as e:
        capture_caffe(proto, caffemodel=model)
    assert "\n" not in str(e.value)


# ----- command line --------------------------------------------------------------------

def test_command_line_writes_onnx_with_the_caffemodel_weights(tmp_path):
    import onnxruntime
    from accelir.cli import main
    layers = resnet_block_net(rng(0))
    proto, model = write_net(str(tmp_path), layers, {"data": (1, 3, 32, 32)})
    out = str(tmp_path / "net.onnx")
    assert main(["optimize", proto, "--caffemodel", model, "-o", out]) == 0
    x = _x((1, 3, 32, 32))
    session = onnxruntime.InferenceSession(out, providers=["CPUExecutionProvider"])
    got = session.run(None, {"data": x})
    _close(opencv_forward(proto, model, {"data": x}, ["prob"]), got, "net.onnx against opencv")
    assert main(["optimize", str(tmp_path / "net.onnx"), "--caffemodel", model, "-o", str(tmp_path / "x.onnx")]) == 2
