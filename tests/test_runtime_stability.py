"""Runs that must give the same, finite answer in every process.

XLA's results may hang on things a single in-process test never varies: where the
allocator puts a buffer, what memory a fused library kernel happens to read, which
thread drops a buffer last while the interpreter exits.  So the models the XLA path is
tested with run here in several fresh processes (with glibc's MALLOC_PERTURB_ filling
freed and new heap memory with a pattern, so a read of such memory shows), each checked
against ONNX Runtime or eager torch, and a script that uses both backends must exit
with 0 every time.  The numeric faults found this way have in-process tests as well.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import helper

import accelir

from onnx_single_node import onnxruntime_outputs

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
LIGHT_MODELS = sorted(f[:-5] for f in os.listdir(LIGHT) if f.startswith("light_") and f.endswith(".onnx"))


def _model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    model = helper.make_model(helper.make_graph(nodes, "m", inputs, outputs, list(initializers)),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _f32(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape)


def test_reduce_of_a_conv_with_constant_filled_weights():
    """reduce(conv(x, broadcast(w))) (the light_* models' tail: ConstantOfShape weights,
    Conv, GlobalAveragePool) fused into one YNNPACK kernel gave NaN or garbage."""
    fill = helper.make_tensor("v", onnx.TensorProto.FLOAT, [1], [0.02])
    shape = helper.make_tensor("wshape", onnx.TensorProto.INT64, [4], [96, 512, 1, 1])
    model = _model([helper.make_node("ConstantOfShape", ["wshape"], ["w"], value=fill),
                    helper.make_node("Conv", ["x", "w"], ["c"]),
                    helper.make_node("GlobalAveragePool", ["c"], ["y"])],
                   [_f32("x", [1, 512, 13, 13])], [_f32("y", [1, 96, 1, 1])], [shape])
    x = np.random.default_rng(0).random((1, 512, 13, 13), dtype=np.float32)
    want = onnxruntime_outputs(model, {"x": x})[0]
    got = np.asarray(accelir.optimize(model, (x,), backend="xla", level=0)(x)[0])
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_of_a_scaled_input_with_large_values(op):
    """softmax(x * c) of a uniform row with |x| ~ 1e11: XLA computed x * c once rounded (for
    the max) and once fused into an FMA (for exp(x - max)), off by more than exp's range."""
    c = helper.make_tensor("c", onnx.TensorProto.FLOAT, [], [1 / 169])
    model = _model([helper.make_node("Mul", ["x", "c"], ["s"]), helper.make_node(op, ["s"], ["y"], axis=-1)],
                   [_f32("x", [1, 1000])], [_f32("y", [1, 1000])], [c])
    values = np.random.default_rng(0).random(24, dtype=np.float32) * np.float32(1.2e12)
    cm = accelir.optimize(model, (np.full((1, 1000), values[0]),), backend="xla", level=0)
    for v in values:
        x = np.full((1, 1000), v)
        got = np.asarray(cm(x)[0])
        assert np.isfinite(got).all(), f"x = {v}"
        np.testing.assert_allclose(got, onnxruntime_outputs(model, {"x": x})[0], rtol=1e-6)


# ----- the models, each in fresh processes -------------------------------------------

def _run_light(name: str, level: int) -> dict:
    """The XLA run of a light_* model against ONNX Runtime."""
    path = os.path.join(LIGHT, name + ".onnx")
    model = onnx.load(path)
    inits = {t.name for t in model.graph.initializer}
    (inp,) = [i for i in model.graph.input if i.name not in inits]
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    want = onnxruntime_outputs(model, {inp.name: x})
    got = [np.asarray(y) for y in accelir.optimize(path, (x,), backend="xla", level=level)(x)]
    return _compare(got, want)


def _run_gpt2(level: int) -> dict:
    """A small GPT-2 (random weights, fixed seed) on XLA against eager torch."""
    import torch
    from transformers import GPT2Config, GPT2Model
    torch.manual_seed(0)
    model = GPT2Model(GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=64, vocab_size=512,
                                 use_cache=False)).eval()
    ids = torch.randint(0, 512, (1, 16))
    with torch.no_grad():
        want = model(ids).last_hidden_state.numpy()
    got = accelir.optimize(model, (ids,), backend="xla", level=level)(ids).last_hidden_state.numpy()
    return _compare([got], [want])


def _compare(got: list, want: list) -> dict:
    scale = [float(np.abs(w).max()) or 1.0 for w in want]
    return {"finite": all(bool(np.isfinite(g).all()) for g in got),
            "error": max(float(np.abs(g - w).max()) / s for g, w, s in zip(got, want, scale))}


def _chain_graph(n: int, d: int) -> accelir.Graph:
    """x0 @ x1 @ ... @ x(n-1), each input f32[d,d]."""
    t = f"f32[{d},{d}]"
    lines = [f"graph chain({', '.join(f'%x{i}: {t}' for i in range(n))}) -> ({t}) {{", f"  %y1 = matmul(%x0, %x1) : {t}"]
    lines += [f"  %y{i} = matmul(%y{i - 1}, %x{i}) : {t}" for i in range(2, n)]
    return accelir.parse("\n".join(lines + [f"  return %y{n - 1}", "}"]))


def _run_and_exit() -> None:
    """Run a graph of many torch inputs on both backends and let the process exit right after.

    XLA runs it on a worker thread that drops each input's buffer when done; were a torch
    input's owner released there (DLPack), the release would need the GIL, which the thread
    cannot have once the interpreter is exiting.  A long GIL switch interval keeps the main
    thread from handing the GIL over on request, as a busy caller would."""
    import torch
    from accelir.lowering.jax import JaxModule
    from accelir.lowering.onnxruntime import OnnxRuntimeModule

    torch.manual_seed(0)
    xs = [torch.randn(192, 192) / 192 ** 0.5 for _ in range(64)]
    want = xs[0]
    for x in xs[1:]:
        want = want @ x
    graph = _chain_graph(len(xs), 192)
    for runner in (OnnxRuntimeModule(graph), JaxModule(graph)):
        torch.testing.assert_close(runner(*xs)[0], want, rtol=1e-3, atol=1e-5)
    print(json.dumps({"exit": {"finite": True, "error": 0.0}}), flush=True)
    sys.setswitchinterval(100.0)
    runner(*xs)  # the last thing the process does: XLA's thread may still be dropping the inputs


def _worker(specs: list[str]) -> None:
    """Run each ``model:level`` spec in this process; print one JSON line of results."""
    if specs == ["exit"]:
        return _run_and_exit()
    out = {}
    for spec in specs:
        name, level = spec.rsplit(":", 1)
        out[spec] = _run_gpt2(int(level)) if name == "gpt2" else _run_light(name, int(level))
    print(json.dumps(out))


def _in_fresh_processes(specs: list[str], runs: int) -> list[dict]:
    env = dict(os.environ, MALLOC_PERTURB_="165", PYTHONPATH=os.path.dirname(__file__))
    results = []
    for run in range(runs):
        proc = subprocess.run([sys.executable, __file__, *specs], env=env, capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, f"process {run} of {runs} exited with {proc.returncode}: {proc.stderr[-3000:]}"
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return results


def _check(results: list[dict], tol: float) -> None:
    for run, result in enumerate(results):
        for spec, r in result.items():
            assert r["finite"], f"{spec}: non-finite outputs in process {run}"
            assert r["error"] <= tol, f"{spec}: relative error {r['error']:.3g} in process {run}"


def test_squeezenet_on_xla_in_fresh_processes():
    _check(_in_fresh_processes(["light_squeezenet:0", "light_squeezenet:2"], runs=3), tol=1e-4)


def test_processes_exit_cleanly_after_both_backends():
    _check(_in_fresh_processes(["exit"], runs=6), tol=0.0)


@pytest.mark.slow
def test_processes_exit_cleanly_after_both_backends_many_times():
    _check(_in_fresh_processes(["exit"], runs=40), tol=0.0)


@pytest.mark.slow
def test_xla_models_in_fresh_processes():
    specs = [f"{m}:{level}" for m in LIGHT_MODELS for level in (0, 2)] + ["gpt2:0", "gpt2:2"]
    _check(_in_fresh_processes(specs, runs=3), tol=1e-4)


if __name__ == "__main__":
    _worker(sys.argv[1:])
