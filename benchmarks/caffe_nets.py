"""Caffe nets written through accelir's own schema, shared by the Caffe tests and ``benchmarks/caffe.py``.

A net is described as the values of a ``NetParameter`` (``accelir.frontends.caffe.encode``'s
form); layer weights are numpy arrays under ``"blobs"``.  ``write_net`` writes the deploy
prototxt (no blobs) and the caffemodel (with them), so OpenCV's own Caffe reader, given the
same files, checks the schema against the real format.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from accelir.frontends.caffe import encode, to_text


def blob(a: np.ndarray, legacy: bool = False) -> dict:
    a = np.asarray(a, np.float32)
    if legacy:  # the V1 form: num / channels / height / width, padded with leading 1s
        dims = (1,) * (4 - a.ndim) + a.shape
        return dict(zip(("num", "channels", "height", "width"), dims)) | {"data": a.ravel()}
    return {"shape": {"dim": list(a.shape)}, "data": a.ravel()}


def layer(name: str, type: str, bottom: str | Sequence[str], top: str | Sequence[str] | None = None,
          blobs: Sequence[np.ndarray] = (), **params: Any) -> dict:
    out = {"name": name, "type": type, "bottom": [bottom] if isinstance(bottom, str) else list(bottom),
           "top": [top or name] if top is None or isinstance(top, str) else list(top)}
    out.update(params)
    if blobs:
        out["blobs"] = [blob(b) for b in blobs]
    return out


def write_net(directory: str, layers: list[dict], inputs: dict[str, Sequence[int]], name: str = "net",
              v1: bool = False) -> tuple[str, str]:
    """deploy.prototxt and net.caffemodel in ``directory``; returns their paths."""
    key = "layers" if v1 else "layer"
    head: dict[str, Any] = {"name": name, "input": list(inputs)}
    if v1:
        head["input_dim"] = [d for s in inputs.values() for d in s]
    else:
        head["input_shape"] = [{"dim": list(s)} for s in inputs.values()]
    deploy = {**head, key: [{k: v for k, v in l.items() if k != "blobs"} for l in layers]}
    proto, model = os.path.join(directory, "deploy.prototxt"), os.path.join(directory, "net.caffemodel")
    with open(proto, "w") as f:
        f.write(to_text(deploy))
    with open(model, "wb") as f:
        f.write(encode({"name": name, key: [{k: v for k, v in l.items() if k in ("name", "type", "blobs")}
                                            for l in layers]}))
    return proto, model


def opencv_forward(proto: str, model: str, inputs: dict[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
    import cv2
    net = cv2.dnn.readNetFromCaffe(proto, model)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    for name, x in inputs.items():
        net.setInput(x, name)
    return [np.array(o) for o in net.forward(list(outputs))]


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def conv(name: str, bottom: str, c_in: int, c_out: int, k: int, r: np.random.Generator, stride: int = 1,
         pad: int = 0, group: int = 1, bias: bool = True, top: str | None = None) -> dict:
    w = r.standard_normal((c_out, c_in // group, k, k)).astype(np.float32) / np.sqrt(c_in // group * k * k)
    blobs = [w] + ([r.standard_normal(c_out).astype(np.float32) * 0.1] if bias else [])
    p = {"num_output": c_out, "kernel_size": [k], "stride": [stride], "pad": [pad], "group": group,
         "bias_term": bias}
    return layer(name, "Convolution", bottom, top, blobs, convolution_param=p)


def batch_norm_scale(name: str, bottom: str, c: int, r: np.random.Generator) -> list[dict]:
    """Caffe's BatchNorm (moving averages times a scale factor) followed by an in-place Scale with bias."""
    factor = np.float32(r.uniform(0.5, 2.0))
    stats = [r.standard_normal(c).astype(np.float32) * 0.1 * factor,
             r.uniform(0.5, 1.5, c).astype(np.float32) * factor, np.array([factor], np.float32)]
    return [layer(f"{name}_bn", "BatchNorm", bottom, bottom, stats, batch_norm_param={"eps": 1e-5}),
            layer(f"{name}_scale", "Scale", bottom, bottom,
                  [r.uniform(0.5, 1.5, c).astype(np.float32), r.standard_normal(c).astype(np.float32) * 0.1],
                  scale_param={"bias_term": True})]


def resnet_block_net(r: np.random.Generator, c: int = 16, blocks: Sequence[tuple[int, int]] = ((16, 1), (32, 2)),
                     classes: int = 10) -> list[dict]:
    """A ResNet-shaped net: stem conv / BN / ReLU / max pool, bottleneck-free basic blocks with
    projection shortcuts, global average pool, InnerProduct, Softmax."""
    layers = [conv("conv1", "data", 3, c, 3, r, pad=1, bias=False), *batch_norm_scale("conv1", "conv1", c, r),
              layer("conv1_relu", "ReLU", "conv1", "conv1"),
              layer("pool1", "Pooling", "conv1", "pool1", pooling_param={"pool": "MAX", "kernel_size": [3],
                                                                        "stride": [2]})]
    x, c_in = "pool1", c
    for i, (c_out, stride) in enumerate(blocks):
        b = f"res{i}"
        layers += [conv(f"{b}_a", x, c_in, c_out, 3, r, stride=stride, pad=1, bias=False),
                   *batch_norm_scale(f"{b}_a", f"{b}_a", c_out, r), layer(f"{b}_a_relu", "ReLU", f"{b}_a", f"{b}_a"),
                   conv(f"{b}_b", f"{b}_a", c_out, c_out, 3, r, pad=1, bias=False),
                   *batch_norm_scale(f"{b}_b", f"{b}_b", c_out, r)]
        short = x
        if stride != 1 or c_in != c_out:
            layers += [conv(f"{b}_proj", x, c_in, c_out, 1, r, stride=stride, bias=False),
                       *batch_norm_scale(f"{b}_proj", f"{b}_proj", c_out, r)]
            short = f"{b}_proj"
        layers += [layer(b, "Eltwise", [short, f"{b}_b"], b), layer(f"{b}_relu", "ReLU", b, b)]
        x, c_in = b, c_out
    w = r.standard_normal((classes, c_in)).astype(np.float32) / np.sqrt(c_in)
    layers += [layer("pool5", "Pooling", x, "pool5", pooling_param={"pool": "AVE", "global_pooling": True}),
               layer("fc", "InnerProduct", "pool5", "fc", [w, r.standard_normal(classes).astype(np.float32)],
                     inner_product_param={"num_output": classes}),
               layer("prob", "Softmax", "fc", "prob")]
    return layers


# Caffe's defaults of detection_output_param fields that OpenCV's reader requires spelled out
DETECTION_DEFAULTS = {"share_location": True, "background_label_id": 0, "code_type": "CORNER"}


def mobilenet_ssd_net(r: np.random.Generator, width: int = 8, stages: int = 3, classes: int = 4,
                      image: int = 64, extra: Sequence[int] = (), heads: int = 2,
                      detection: dict | None = None) -> tuple[list[dict], list[str]]:
    """A MobileNet-SSD-shaped net: depthwise-separable stages (grouped 3x3 + 1x1, BN, ReLU; each stage one
    stride-2 block and ``extra[i]`` stride-1 ones), and on the last ``heads`` feature maps SSD heads:
    loc / conf convolutions, Permute, Flatten, PriorBox, concatenated.  With ``detection`` (the
    ``detection_output_param`` values; ``num_classes`` is filled in) the net ends as a deployed SSD
    does, with DetectionOutput; else its outputs are the layer's three bottoms."""
    layers = [conv("conv0", "data", 3, width, 3, r, stride=2, pad=1, bias=False),
              *batch_norm_scale("conv0", "conv0", width, r), layer("conv0_relu", "ReLU", "conv0", "conv0")]
    x, c = "conv0", width
    features = []
    for i in range(stages):
        for j in range(1 + (extra[i] if i < len(extra) else 0)):
            dw, pw = f"conv{i + 1}_{j}_dw", f"conv{i + 1}_{j}"
            c_out = 2 * c if j == 0 else c
            layers += [conv(dw, x, c, c, 3, r, stride=2 if j == 0 else 1, pad=1, group=c, bias=False),
                       *batch_norm_scale(dw, dw, c, r), layer(f"{dw}_relu", "ReLU", dw, dw),
                       conv(pw, dw, c, c_out, 1, r, bias=False), *batch_norm_scale(pw, pw, c_out, r),
                       layer(f"{pw}_relu", "ReLU", pw, pw)]
            x, c = pw, c_out
        features.append((x, c))
    locs, confs, priors = [], [], []
    for j, (f, fc) in enumerate(features[-heads:]):
        n_priors = 4  # min size, sqrt(min * max), aspect ratio 2 and 1/2
        for kind, per in (("loc", 4), ("conf", classes)):
            name = f"{f}_mbox_{kind}"
            layers += [conv(name, f, fc, n_priors * per, 3, r, pad=1),
                       layer(f"{name}_perm", "Permute", name, f"{name}_perm", permute_param={"order": [0, 2, 3, 1]}),
                       layer(f"{name}_flat", "Flatten", f"{name}_perm", f"{name}_flat", flatten_param={"axis": 1})]
            (locs if kind == "loc" else confs).append(f"{name}_flat")
        size = image * (0.2 + 0.7 * j / max(heads - 1, 1))
        layers.append(layer(f"{f}_mbox_priorbox", "PriorBox", [f, "data"], f"{f}_mbox_priorbox",
                            prior_box_param={"min_size": [size], "max_size": [size * 1.5], "aspect_ratio": [2.0],
                                             "flip": True, "clip": False, "variance": [0.1, 0.1, 0.2, 0.2],
                                             "offset": 0.5}))
        priors.append(f"{f}_mbox_priorbox")
    layers += [layer("mbox_loc", "Concat", locs, "mbox_loc", concat_param={"axis": 1}),
               layer("mbox_conf", "Concat", confs, "mbox_conf", concat_param={"axis": 1}),
               layer("mbox_conf_reshape", "Reshape", "mbox_conf", "mbox_conf_reshape",
                     reshape_param={"shape": {"dim": [0, -1, classes]}}),
               layer("mbox_conf_softmax", "Softmax", "mbox_conf_reshape", "mbox_conf_softmax",
                     softmax_param={"axis": 2}),
               layer("mbox_conf_flatten", "Flatten", "mbox_conf_softmax", "mbox_conf_flatten",
                     flatten_param={"axis": 1}),
               layer("mbox_priorbox", "Concat", priors, "mbox_priorbox", concat_param={"axis": 2})]
    bottoms = ["mbox_loc", "mbox_conf_flatten", "mbox_priorbox"]
    if detection is None:
        return layers, bottoms
    params = {"num_classes": classes, **DETECTION_DEFAULTS, **detection}
    return layers + [layer("detection_out", "DetectionOutput", bottoms, "detection_out",
                           detection_output_param=params)], ["detection_out"]


def as_opencv_detections(rows: np.ndarray, count: int) -> np.ndarray:
    """Caffe's (and accelir's) DetectionOutput blob laid out as OpenCV's dnn gives it: each image's rows
    by descending score, then zero rows up to ``count`` (OpenCV's keep_top_k x batch); Caffe's
    placeholder rows for "nothing detected" (label -1) are dropped."""
    r = np.asarray(rows, np.float32).reshape(-1, 7)
    r = r[r[:, 1] >= 0]
    if len(r) > count:
        raise ValueError(f"{len(r)} detections do not fit OpenCV's {count} rows")
    out = np.zeros((count, 7), np.float32)
    out[:len(r)] = r[np.lexsort((-r[:, 2], r[:, 0]))]  # stable: equal scores stay in label order
    return out.reshape(1, 1, count, 7)


def bottleneck_resnet_net(r: np.random.Generator, depths: Sequence[int] = (3, 4, 6, 3),
                          widths: Sequence[int] = (64, 128, 256, 512), classes: int = 1000) -> list[dict]:
    """A ResNet-50-shaped net: 7x7 stem, max pool, bottleneck blocks (1x1, 3x3, 1x1 at 4x width, BN + Scale,
    projection shortcuts), global average pool, InnerProduct, Softmax."""
    stem = widths[0]
    layers = [conv("conv1", "data", 3, stem, 7, r, stride=2, pad=3, bias=False),
              *batch_norm_scale("conv1", "conv1", stem, r), layer("conv1_relu", "ReLU", "conv1", "conv1"),
              layer("pool1", "Pooling", "conv1", "pool1", pooling_param={"pool": "MAX", "kernel_size": [3],
                                                                        "stride": [2]})]
    x, c_in = "pool1", stem
    for s, (depth, width) in enumerate(zip(depths, widths)):
        for i in range(depth):
            b, stride, c_out = f"res{s + 2}{chr(97 + i)}", 2 if i == 0 and s > 0 else 1, 4 * width
            layers += [conv(f"{b}_2a", x, c_in, width, 1, r, stride=stride, bias=False),
                       *batch_norm_scale(f"{b}_2a", f"{b}_2a", width, r),
                       layer(f"{b}_2a_relu", "ReLU", f"{b}_2a", f"{b}_2a"),
                       conv(f"{b}_2b", f"{b}_2a", width, width, 3, r, pad=1, bias=False),
                       *batch_norm_scale(f"{b}_2b", f"{b}_2b", width, r),
                       layer(f"{b}_2b_relu", "ReLU", f"{b}_2b", f"{b}_2b"),
                       conv(f"{b}_2c", f"{b}_2b", width, c_out, 1, r, bias=False),
                       *batch_norm_scale(f"{b}_2c", f"{b}_2c", c_out, r)]
            short = x
            if i == 0:
                layers += [conv(f"{b}_1", x, c_in, c_out, 1, r, stride=stride, bias=False),
                           *batch_norm_scale(f"{b}_1", f"{b}_1", c_out, r)]
                short = f"{b}_1"
            layers += [layer(b, "Eltwise", [short, f"{b}_2c"], b), layer(f"{b}_relu", "ReLU", b, b)]
            x, c_in = b, c_out
    w = r.standard_normal((classes, c_in)).astype(np.float32) / np.sqrt(c_in)
    return layers + [layer("pool5", "Pooling", x, "pool5", pooling_param={"pool": "AVE", "global_pooling": True}),
                     layer("fc1000", "InnerProduct", "pool5", "fc1000",
                           [w, r.standard_normal(classes).astype(np.float32) * 0.1],
                           inner_product_param={"num_output": classes}),
                     layer("prob", "Softmax", "fc1000", "prob")]
