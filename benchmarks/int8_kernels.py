"""Which ONNX form of a dynamic int8 matmul runs fastest on ONNX Runtime's CPU provider.

    python -m benchmarks.int8_kernels [--threads 1] [--repeats 60] [--quick] [--allow-load]

The three forms ``dynamic_quant_linear`` could lower to, each as a one-matmul model with the same int8
per-channel weight and bias (ORT_ENABLE_ALL, the same thread count), timed in interleaved rounds:
``DynamicQuantizeMatMul`` (com.microsoft, what the lowering emits for onnxruntime),
``DynamicQuantizeLinear`` + ``MatMulIntegerToFloat`` (com.microsoft), and the standard
``DynamicQuantizeLinear`` + ``MatMulInteger`` + Cast + Mul + Add (what ``target="standard"`` gets).
Shapes are BERT-base's projections at 128 tokens and one decode row.  The three give the same bits;
the table gives each median and its ratio to DynamicQuantizeMatMul.  ``--quick`` times a small shape
for three rounds: a check that the script runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import numpy as np

if not __package__:  # run as a script: make the repo root importable, as ``-m`` does
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.conditions import add_load_arguments, guard_from

__all__ = ["main", "FORMS"]

FORMS = ("DynamicQuantizeMatMul", "DynamicQuantizeLinear+MatMulIntegerToFloat",
         "DynamicQuantizeLinear+MatMulInteger+Cast+Mul+Add")


def _nodes(form: str) -> list[Any]:
    from onnx import TensorProto, helper
    dql = helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"])
    if form == FORMS[0]:
        return [helper.make_node("DynamicQuantizeMatMul", ["x", "w", "ws", "", "b"], ["y"], domain="com.microsoft")]
    if form == FORMS[1]:
        return [dql, helper.make_node("MatMulIntegerToFloat", ["q", "w", "s", "ws", "z", "", "b"], ["y"],
                                      domain="com.microsoft")]
    return [dql, helper.make_node("MatMulInteger", ["q", "w", "z"], ["acc"]),
            helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT), helper.make_node("Mul", ["s", "ws"], ["sc"]),
            helper.make_node("Mul", ["accf", "sc"], ["y0"]), helper.make_node("Add", ["y0", "b"], ["y"])]


def _session(form: str, k: int, weights: list[Any], threads: int) -> Any:
    from onnx import TensorProto, helper

    from benchmarks.run import ort_session
    graph = helper.make_graph(_nodes(form), "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    return ort_session(model.SerializeToString(), threads)


def run_shape(m: int, k: int, n: int, threads: int, repeats: int) -> dict[str, float]:
    """Median seconds of each form on x [m, k] times an int8 weight [k, n]; checks they agree bit for bit."""
    from onnx import numpy_helper

    from accelir.ops.quant import quantize_per_channel
    from accelir.timing import time_interleaved
    rng = np.random.default_rng(0)
    q, scale = quantize_per_channel((rng.standard_normal((k, n)) * 0.05).astype(np.float32))
    weights = [numpy_helper.from_array(q, "w"), numpy_helper.from_array(scale, "ws"),
               numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), "b")]
    x = rng.standard_normal((m, k)).astype(np.float32)
    sessions = {form: _session(form, k, weights, threads) for form in FORMS}
    outputs = [s.run(None, {"x": x})[0] for s in sessions.values()]
    if not all(np.array_equal(outputs[0], o) for o in outputs[1:]):
        raise SystemExit(f"[{m},{k}]x[{k},{n}]: the forms disagree; their timings would not compare")
    timings = time_interleaved({f: (lambda s=s: s.run(None, {"x": x})) for f, s in sessions.items()},
                               warmup=5, repeats=repeats)
    return {f: t.median for f, t in timings.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads of every session (default 1)")
    ap.add_argument("--repeats", type=int, default=60, help="timed rounds (default 60)")
    ap.add_argument("--quick", action="store_true", help="one small shape, three rounds: a check that it runs")
    add_load_arguments(ap)
    args = ap.parse_args(argv)
    guard = guard_from(args, args.threads)
    shapes = [(4, 64, 64)] if args.quick else [(128, 768, 768), (128, 768, 3072), (128, 3072, 768), (1, 768, 3072)]
    lines = ["| x @ w | " + " | ".join(FORMS) + " |", "|---|" + "---:|" * len(FORMS)]
    for m, k, n in shapes:
        with guard.watch():
            t = run_shape(m, k, n, args.threads, 3 if args.quick else args.repeats)
        base = t[FORMS[0]]
        lines.append(f"| [{m},{k}] x [{k},{n}] | " + " | ".join(f"{t[f] * 1e3:.3f} ms ({t[f] / base:.2f}x)" for f in FORMS)
                     + " |")
    print(f"dynamic int8 matmul forms on ONNX Runtime CPU, ORT_ENABLE_ALL, {args.threads} intra-op thread(s)")
    print(guard.finish())
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
