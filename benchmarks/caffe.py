"""Benchmark: Caffe nets through accelir -> onnxruntime against OpenCV's dnn module on the CPU.

Two nets with random weights, written as a deploy prototxt and a caffemodel through accelir's
own Caffe schema: a ResNet-50-shaped one (bottleneck blocks 3-4-6-3, 224 x 224) and a
MobileNet-SSD-shaped one (depthwise-separable stages, SSD heads with PriorBox, DetectionOutput;
300 x 300).  For each, the conversion time (``accelir.optimize`` of the files: read, capture,
passes, ONNX Runtime session; the median of ``--convert-runs``) and OpenCV's own load time
(``cv2.dnn.readNetFromCaffe``), then the latency of one inference of each system, timed in
interleaved rounds after warm-up, the order rotating.  accelir's outputs are checked against
OpenCV's (a wrong output is flagged and not timed).  The machine's load before and after is
printed; a run under load prints no table unless ``--allow-load`` is given.

    python benchmarks/caffe.py            # full-size nets
    python benchmarks/caffe.py --quick    # small nets, one conversion, three rounds (a check that it runs)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

if not __package__:  # run as a script: make the repo root importable, as ``-m`` does
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from accelir.timing import time_interleaved  # noqa: E402
from benchmarks.caffe_nets import (as_opencv_detections, bottleneck_resnet_net, mobilenet_ssd_net, rng,  # noqa: E402
                                   write_net)
from benchmarks.conditions import add_load_arguments, check_outputs, guard_from, machine, rotated  # noqa: E402

__all__ = ["NETS", "main"]


def _resnet50(quick: bool) -> tuple[list[dict], list[str], tuple[int, ...]]:
    if quick:
        return bottleneck_resnet_net(rng(0), (1, 1, 1, 1), (8, 8, 16, 16), classes=10), ["prob"], (1, 3, 64, 64)
    return bottleneck_resnet_net(rng(0)), ["prob"], (1, 3, 224, 224)


# MobileNet-SSD's deploy settings, but for the threshold (0.25 there): random weights spread 21 classes'
# softmax flatly (scores 0.03-0.09), and 0.06 keeps about a tenth of them, so DetectionOutput has work to do
_DETECTION = {"nms_param": {"nms_threshold": 0.45, "top_k": 100}, "code_type": "CENTER_SIZE", "keep_top_k": 100,
              "confidence_threshold": 0.06}


def _mobilenet_ssd(quick: bool) -> tuple[list[dict], list[str], tuple[int, ...]]:
    if quick:
        layers, outputs = mobilenet_ssd_net(rng(0), width=8, stages=3, classes=4, image=64,
                                            detection={**_DETECTION, "confidence_threshold": 0.3})
        return layers, outputs, (1, 3, 64, 64)
    layers, outputs = mobilenet_ssd_net(rng(0), width=32, stages=6, classes=21, image=300, extra=(0, 1, 1, 5, 0, 0),
                                        heads=4, detection=_DETECTION)
    return layers, outputs, (1, 3, 300, 300)


NETS = {"resnet50-shaped": _resnet50, "mobilenet-ssd-shaped": _mobilenet_ssd}


def _opencv(proto: str, model: str, x: np.ndarray, outputs: list[str]):
    import cv2
    net = cv2.dnn.readNetFromCaffe(proto, model)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)

    def run() -> list[np.ndarray]:
        net.setInput(x)
        return [np.array(o) for o in net.forward(outputs)]
    return run


def measure(name: str, quick: bool, convert_runs: int, repeats: int) -> str:
    import cv2

    import accelir
    layers, outputs, shape = NETS[name](quick)
    x = rng(1).standard_normal(shape).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        proto, model = write_net(tmp, layers, {"data": shape})
        size = os.path.getsize(model) / 1e6
        convert, load = [], []
        cm = None
        for k in range(convert_runs):  # accelir's conversion and OpenCV's load take turns
            for system in rotated(["accelir", "opencv"], k):
                t0 = time.perf_counter()
                if system == "accelir":
                    cm = accelir.optimize(proto, (x,), caffemodel=model, backend="onnxruntime")
                    convert.append(time.perf_counter() - t0)
                else:
                    cv2.dnn.readNetFromCaffe(proto, model)
                    load.append(time.perf_counter() - t0)
        opencv = _opencv(proto, model, x, outputs)
        want = opencv()
        got = cm(x)
        got = got if isinstance(got, list) else [got]
        ends = ""
        if layers[-1]["type"] == "DetectionOutput":  # OpenCV orders and pads the rows its own way
            rows = got[0].reshape(-1, 7)
            ends = f"; ends with DetectionOutput ({int((rows[:, 1] >= 0).sum())} detections)"
            got = [as_opencv_detections(got[0], want[0].shape[2])]
        wrong = check_outputs(want, got)
        head = (f"{name}: {len(layers)} layers, {size:.1f} MB caffemodel, input {list(shape)}; "
                f"accelir conversion {statistics.median(convert) * 1e3:.0f} ms (capture "
                f"{cm.report.stages['capture'] * 1e3:.0f}, passes {cm.report.stages['passes'] * 1e3:.0f}, "
                f"session {cm.report.stages['lowering'] * 1e3:.0f}; {cm.report.nodes_before} -> "
                f"{cm.report.nodes_after} nodes), OpenCV load {statistics.median(load) * 1e3:.0f} ms{ends}")
        if wrong:
            return head + f"\n  accelir's outputs differ from OpenCV's ({wrong}): not timed"
        timings = time_interleaved({"accelir+onnxruntime": lambda: cm(x), "opencv dnn": opencv},
                                   warmup=1 if quick else 3, repeats=repeats, budget_s=20 if quick else 120)
    ours, theirs = timings["accelir+onnxruntime"], timings["opencv dnn"]
    return (head + f"\n  latency: accelir+onnxruntime {ours}, opencv dnn {theirs}; "
            f"ratio accelir / opencv {ours.median / theirs.median:.2f}x (median, {len(ours.runs)} rounds)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small nets, one conversion, three rounds: a check "
                        "that the script runs, not a measurement")
    parser.add_argument("--nets", default=",".join(NETS), help="comma-separated nets to run")
    parser.add_argument("--convert-runs", type=int, default=None, help="default 3 (1 with --quick)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 20, 3 with --quick)")
    add_load_arguments(parser)
    opts = parser.parse_args(argv)
    import cv2
    import onnxruntime
    convert_runs = opts.convert_runs or (1 if opts.quick else 3)
    repeats = opts.repeats or (3 if opts.quick else 20)
    guard = guard_from(opts, threads=os.cpu_count() or 1)
    lines = [f"settings: {machine()}; onnxruntime {onnxruntime.__version__} and OpenCV {cv2.__version__}, each with "
             f"its default CPU threads; random weights{'; --quick: small nets, not a measurement' if opts.quick else ''}"]
    with guard.watch() as load:
        for name in opts.nets.split(","):
            if name not in NETS:
                raise SystemExit(f"unknown net {name!r}; choose from {', '.join(NETS)}")
            lines.append(measure(name, opts.quick, convert_runs, repeats))
    lines[0] += f"; {load[0]}"
    print(guard.finish())
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
