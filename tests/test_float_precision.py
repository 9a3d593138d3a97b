"""find_float_precision: the nodes kept in f32 by value (overflow, then a bisection against the
budget), checked against eager torch in float32; and the backends' refusal of a precision they
cannot run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import accelir
from accelir.accuracy import Budget, measure
from accelir.api import build_runner
from accelir.errors import AccelirError
from accelir.float_precision import check_precision_backend, find_float_precision
from accelir.passes import ConvertFloat

# a layer norm as the jax frontend sees it: mean, centre, square, mean, rsqrt
DECOMPOSED_LAYER_NORM = """
graph main(%x: f32[4,16]) -> (f32[4,16]) {
  %m = reduce_mean(%x) {axes=[1], keepdims=true} : f32[4,1]
  %d = sub(%x, %m) : f32[4,16]
  %sq = mul(%d, %d) : f32[4,16]
  %var = reduce_mean(%sq) {axes=[1], keepdims=true} : f32[4,1]
  %eps = constant() {name="eps", value=1e-05} : f32[]
  %ve = add(%var, %eps) : f32[4,1]
  %r = rsqrt(%ve) : f32[4,1]
  %y = mul(%d, %r) : f32[4,16]
  return %y
}
"""


def _large_rows(seed: int = 0) -> np.ndarray:
    """Rows whose deviations reach ~1000: their squares (~1e6) overflow f16's 65504."""
    return (np.random.default_rng(seed).standard_normal((4, 16)) * 400).astype(np.float32)


def _torch_layer_norm(x: np.ndarray) -> np.ndarray:
    return torch.nn.functional.layer_norm(torch.from_numpy(x), (16,), eps=1e-5).numpy()


def test_layer_norm_over_large_values_stays_f32():
    x = _large_rows()
    g = accelir.parse(DECOMPOSED_LAYER_NORM)
    want = [_torch_layer_norm(x)]
    # no op keep-list: only the values decide; converted blindly the square overflows to inf (and the
    # output to 0)
    blind = g.copy()
    ConvertFloat("f16", keep_ops=frozenset())(blind)
    with np.errstate(over="ignore"):
        assert measure(want, accelir.interpret(blind, x)).cosine < 0.5
    found = find_float_precision(g, [x], "f16", keep_ops=frozenset())
    assert "%sq" in found.kept_names()
    sq = next(layer for layer in found.layers if layer.name == "%sq")
    assert sq.kept and "exceeds f16's 65504" in sq.reason
    got = accelir.interpret(found.graph, x)
    assert Budget.parse(None, "fp16").met(measure(want, got))
    assert found.errors == measure(accelir.interpret(g, x), got)


def test_fused_layer_norm_is_kept_by_the_op_list():
    g = accelir.parse("""
        graph main(%x: f32[4,16], %g: f32[16], %b: f32[16]) -> (f32[4,16]) {
          %y = layer_norm(%x, %g, %b) {axis=-1, epsilon=1e-05} : f32[4,16]
          %z = relu(%y) : f32[4,16]
          return %z
        }""")
    x, gamma, beta = _large_rows(1), np.ones(16, np.float32), np.zeros(16, np.float32)
    found = find_float_precision(g, [x, gamma, beta], "f16")
    norm = found.layers[0]
    assert (norm.op, norm.kept, norm.reason) == ("layer_norm", True, "keep-list")
    # the input exceeds no limit: nothing kept by value, the relu computes in f16
    assert found.kept == () and str(found.graph).count("relu(") == 1 and "f16" in str(found.graph)
    want = torch.relu(torch.from_numpy(_torch_layer_norm(x))).numpy()
    assert Budget.parse(None, "fp16").met(measure([want], accelir.interpret(found.graph, x, gamma, beta)))


def test_overflowing_matmul_is_kept_and_named():
    g = accelir.parse("""
        graph main(%x: f32[4,64], %w: f32[64,16], %v: f32[16,8]) -> (f32[4,8]) {
          %scores = matmul(%x, %w) : f32[4,16]
          %t = tanh(%scores) : f32[4,16]
          %out = matmul(%t, %v) : f32[4,8]
          return %out
        }""")
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((4, 64)) * 60).astype(np.float32)
    w = (rng.standard_normal((64, 16)) * 60).astype(np.float32)
    v = rng.standard_normal((16, 8)).astype(np.float32)
    found = find_float_precision(g, [x, w, v], "f16")
    assert found.kept_names() == ["%scores", "%t"]  # the matmul, and the tanh that reads its result
    assert "%out = matmul(%1, %0) : f16[4,8]" in str(found.graph)
    with torch.no_grad():
        want = (torch.tanh(torch.from_numpy(x) @ torch.from_numpy(w)) @ torch.from_numpy(v)).numpy()
    assert Budget.parse(None, "fp16").met(measure([want], accelir.interpret(found.graph, x, w, v)))
    # bf16 has f32's range: nothing overflows there
    assert find_float_precision(g, [x, w, v], "bf16").kept == ()
    # small example inputs overflow nothing; a calibration tuple with the large ones does
    small = [x / 60, w / 60, v]
    assert find_float_precision(g, small, "f16").kept == ()
    graph, kept, layers = find_float_precision(g, small, "f16", calibration=[(x, w, v)])
    assert kept == found.kept and [layer.name for layer in layers if layer.kept] == ["%scores", "%t"]
    assert graph is not g and str(graph) == str(found.graph)


def _backend(name):
    if name == "interpreter":
        return None
    return lambda g, xs: build_runner(g, name, "cpu")(*xs)


@pytest.mark.parametrize("runner", ["interpreter", "onnxruntime", "xla"])
def test_bisection_keeps_the_nodes_that_break_the_budget(runner):
    # 1000 + small: f16 spaces 1000's neighbours 0.5 apart, so the cancellation loses the small part
    g = accelir.parse("""
        graph main(%x: f32[64]) -> (f32[64]) {
          %c = constant() {name="c", value=1000.0} : f32[]
          %a = add(%x, %c) : f32[64]
          %b = sub(%a, %c) : f32[64]
          %y = mul(%b, %b) : f32[64]
          return %y
        }""")
    x = (np.random.default_rng(0).standard_normal(64) * 0.1).astype(np.float32)
    assert not Budget.parse(None, "fp16").met(measure(accelir.interpret(g, x), accelir.interpret(
        _converted(g), x)))
    found = find_float_precision(g, [x], "f16", run=_backend(runner))
    assert found.kept_names() == ["%a", "%b"]
    assert [layer.reason for layer in found.layers if layer.kept] == ["lowering it breaks the budget"] * 2
    assert "%y = mul(%0, %0) : f16[64]" in str(found.graph)
    assert Budget.parse(None, "fp16").met(measure([(x.astype(np.float64) ** 2)], accelir.interpret(found.graph, x)))


def _converted(g: accelir.Graph) -> accelir.Graph:
    h = g.copy()
    ConvertFloat("f16")(h)
    return h


def test_unknown_precision_is_an_accelir_error():
    with pytest.raises(AccelirError, match="choose one of f16, bf16"):
        find_float_precision(accelir.parse(DECOMPOSED_LAYER_NORM), [_large_rows()], "f8")


MATMUL = """
graph main(%x: f32[4,8], %w: f32[8,8]) -> (f32[4,8]) {
  %0 = matmul(%x, %w) : f32[4,8]
  return %0
}
"""


def test_bf16_on_onnxruntime_cpu_is_refused():
    """precision='bf16' is refused on onnxruntime's CPU build (no bf16 matmul kernel: it would run in
    float32 between casts); a graph that is bf16 already still runs there, through those casts."""
    f32 = accelir.parse(MATMUL)
    with pytest.raises(AccelirError, match=r"bf16 on onnxruntime CPU: .* no bf16 CPU kernel for MatMul .*"
                                           r"use backend='xla' or precision='fp16'"):
        check_precision_backend(f32, "bf16", "onnxruntime", "cpu")
    check_precision_backend(f32, "bf16", "xla", "cpu")  # XLA runs bf16
    check_precision_backend(f32, "fp16", "onnxruntime", "cpu")
    g = accelir.parse(MATMUL)
    ConvertFloat("bf16")(g)
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((4, 8)).astype(np.float32), rng.standard_normal((8, 8)).astype(np.float32)
    want = (torch.from_numpy(x).bfloat16() @ torch.from_numpy(w).bfloat16()).float().numpy()
    for backend in ("xla", "onnxruntime"):
        np.testing.assert_allclose(build_runner(g, backend, "cpu")(x, w)[0], want, rtol=1e-2, atol=1e-2)


def test_f16_runs_on_onnxruntime_cpu():
    g = accelir.parse(MATMUL)
    ConvertFloat("f16")(g)
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((4, 8)).astype(np.float32), rng.standard_normal((8, 8)).astype(np.float32)
    want = (torch.from_numpy(x).half() @ torch.from_numpy(w).half()).float().numpy()
    np.testing.assert_allclose(build_runner(g, "onnxruntime", "cpu")(x, w)[0], want, rtol=2e-3, atol=2e-3)


def test_bf16_refusal_names_the_onnx_op_the_node_lowers_to():
    """dot_general lowers to Einsum: the refusal looks up (and names) Einsum's kernels."""
    g = accelir.parse("""
        graph main(%x: f32[2,3,4], %w: f32[2,4,5]) -> (f32[2,3,5]) {
          %0 = dot_general(%x, %w) {lhs_contracting=[2], rhs_contracting=[1], lhs_batch=[0], rhs_batch=[0]} : f32[2,3,5]
          return %0
        }""")
    with pytest.raises(AccelirError, match="no bf16 CPU kernel for Einsum"):
        check_precision_backend(g, "bf16", "onnxruntime", "cpu")


def test_a_runner_whose_results_vary_is_an_error_not_an_index_error():
    """A runner whose results are off whatever the precision (here: every run after the reference) leaves
    no node to blame once every candidate is kept: an AccelirError says so, not an IndexError."""
    g = accelir.parse(MATMUL)
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((8, 8)).astype(np.float32)
    calls = []

    def run(graph, args):
        calls.append(graph)
        out = [np.asarray(o) for o in accelir.interpret(graph, *args)]
        return [o + 100.0 for o in out] if len(calls) > 1 else out  # every run after the reference is off

    with pytest.raises(AccelirError, match="the difference comes from the runner"):
        find_float_precision(g, [x, w], "f16", {"max_rel": 0.5}, run=run)
