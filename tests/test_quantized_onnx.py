"""Quantised ONNX models keep their quantisation through import, the passes and both lowerings.

The models come from onnxruntime.quantization (quantize_static in the QDQ and QOperator formats,
per tensor and per channel, u8 and s8; quantize_dynamic) applied to a small float model; the oracle
is onnxruntime running the quantised model itself, bit for bit on every integer tensor (each
quantised intermediate is made an output of the model)."""

from __future__ import annotations

import dataclasses
import textwrap

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

import accelir
from accelir.frontends.onnx import import_onnx
from accelir.lowering.jax import JaxModule
from accelir.lowering.onnx import to_onnx
from accelir.lowering.onnxruntime import OnnxRuntimeModule
from accelir.pass_manager import PassManager
from accelir.passes import pipeline
from accelir.passes.fuse_gelu import fuse_gelu
from accelir.passes.fuse_linear import fuse_linear

INTEGER_OPS = {"QuantizeLinear", "QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger",
               "DynamicQuantizeLinear"}


def _float_model() -> onnx.ModelProto:
    """conv + relu, flatten, matmul + bias: what the quantisers rewrite into each of their forms."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32), "w1"),
             numpy_helper.from_array((rng.standard_normal(4) * 0.1).astype(np.float32), "b1"),
             numpy_helper.from_array((rng.standard_normal((64, 10)) * 0.2).astype(np.float32), "w2"),
             numpy_helper.from_array((rng.standard_normal(10) * 0.1).astype(np.float32), "b2"),
             numpy_helper.from_array(np.array([2, 64], np.int64), "shape")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Reshape", ["r", "shape"], ["f"]),
             helper.make_node("MatMul", ["f", "w2"], ["m"]), helper.make_node("Add", ["m", "b2"], ["y"])]
    graph = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


class _Calibration(CalibrationDataReader):
    def __init__(self):
        rng = np.random.default_rng(1)
        self.batches = iter([{"x": rng.standard_normal((2, 3, 4, 4)).astype(np.float32)} for _ in range(4)])

    def get_next(self):
        return next(self.batches, None)


QUANTISERS = {
    "qdq-u8": dict(quant_format=QuantFormat.QDQ),
    "qdq-per-channel": dict(quant_format=QuantFormat.QDQ, per_channel=True),
    "qdq-s8": dict(quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8),
    "qoperator": dict(quant_format=QuantFormat.QOperator, op_types_to_quantize=["Conv", "MatMul"]),
    "qoperator-per-channel": dict(quant_format=QuantFormat.QOperator, op_types_to_quantize=["Conv", "MatMul"],
                                  per_channel=True),
    "dynamic": None,
}


def _quantised(kind: str, tmp_path) -> onnx.ModelProto:
    src, dst = str(tmp_path / "float.onnx"), str(tmp_path / f"{kind}.onnx")
    onnx.save(_float_model(), src)
    if QUANTISERS[kind] is None:
        quantize_dynamic(src, dst)
    else:
        quantize_static(src, dst, _Calibration(), **QUANTISERS[kind])
    model = onnx.load(dst)
    # every integer tensor the model computes becomes an output, so the integers are compared too
    known = {o.name for o in model.graph.output}
    for node in model.graph.node:
        if node.op_type in INTEGER_OPS:
            model.graph.output.extend(helper.make_empty_tensor_value_info(o) for o in node.output
                                      if o and o not in known)
    return onnx.shape_inference.infer_shapes(model)


def _feeds():
    return np.random.default_rng(2).standard_normal((2, 3, 4, 4)).astype(np.float32)


def _onnxruntime(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def _assert_same(got, want, float_atol=0.0):
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        g = np.asarray(g)
        assert g.dtype == w.dtype, (k, g.dtype, w.dtype)
        if w.dtype.kind in "iub":
            np.testing.assert_array_equal(g, w, err_msg=f"integer output {k}")
        else:
            np.testing.assert_allclose(g, w, rtol=0, atol=float_atol, err_msg=f"float output {k}")


def _op_types(model: onnx.ModelProto) -> list[str]:
    return sorted(n.op_type for n in model.graph.node if n.op_type in INTEGER_OPS | {"DequantizeLinear"})


@pytest.mark.parametrize("kind", list(QUANTISERS))
def test_import_keeps_quantisation_and_runs_bit_for_bit(kind, tmp_path):
    model = _quantised(kind, tmp_path)
    x = _feeds()
    want = _onnxruntime(model, x)
    g = import_onnx(model)
    hist = g.op_histogram()
    # quantised ops, not their float arithmetic (which rounds)
    assert "round" not in hist, hist
    for op, ir in (("QLinearConv", "qlinear_conv"), ("ConvInteger", "conv_integer"), ("QuantizeLinear",
                   "quantize_linear"), ("DynamicQuantizeLinear", "dynamic_quantize_linear")):
        assert hist.get(ir, 0) == sum(n.op_type == op for n in model.graph.node), (op, hist)
    # the ONNX lowering writes the same quantised ops back, and they import as the same graph
    lowered = to_onnx(g)
    assert _op_types(lowered) == _op_types(model)
    assert import_onnx(lowered).op_histogram() == hist
    _assert_same(accelir.interpret(g, x), want)
    _assert_same(OnnxRuntimeModule(g)(x), want)
    # XLA runs the decompositions: the integers agree exactly, the float rescales within rounding
    _assert_same(JaxModule(g)(x), want, float_atol=1e-5)


@pytest.mark.parametrize("kind", ["qdq-u8", "qdq-per-channel", "qoperator", "dynamic"])
def test_optimize_keeps_quantised_weights_and_groups(kind, tmp_path):
    model = _quantised(kind, tmp_path)
    x = _feeds()
    g = import_onnx(model)
    before = g.op_histogram()
    PassManager(pipeline(3, "onnxruntime")).run(g)
    after = g.op_histogram()
    # no DequantizeLinear of a weight folded into a float constant, no quantised op fused away
    for op in ("dequantize_linear", "quantize_linear", "qlinear_conv", "qlinear_matmul", "conv_integer",
               "matmul_integer"):
        assert after.get(op, 0) == before.get(op, 0), (op, before, after)
    _assert_same(OnnxRuntimeModule(g)(x), _onnxruntime(model, x))


def _text(t: str) -> str:
    return textwrap.dedent(t).strip("\n") + "\n"


QDQ_LINEAR = """
graph main(%x: u8[4,8], %w: i8[8,6], %b: f32[6]) -> (u8[4,6]) {
  %s = constant() {name="s", value=0.05} : f32[]
  %zu = constant() {name="zu", value=128} : u8[]
  %zi = constant() {name="zi", value=0} : i8[]
  %xf = dequantize_linear(%x, %s, %zu) : f32[4,8]
  %wf = dequantize_linear(%w, %s, %zi) : f32[8,6]
  %m = matmul(%xf, %wf) : f32[4,6]
  %y = add(%m, %b) : f32[4,6]
  %q = quantize_linear(%y, %s, %zu) : u8[4,6]
  return %q
}
"""


PLAIN_LINEAR = """
        graph main(%x: f32[4,8], %w: f32[8,6], %b: f32[6]) -> (f32[4,6]) {
          %m = matmul(%x, %w) : f32[4,6]
          %y = add(%m, %b) : f32[4,6]
          return %y
        }"""


def test_fusion_leaves_a_qdq_group_whole():
    g = accelir.parse(_text(QDQ_LINEAR))
    text = str(g)
    verbose = dataclasses.replace(fuse_linear, verbose=True, near_misses=[])
    assert verbose(g) is False
    assert str(g) == text
    assert any("is part of a quantised (QDQ) group" in m.reason for m in verbose.near_misses), verbose.near_misses
    # the same matmul + add without the quantised ends fuses
    plain = accelir.parse(_text(PLAIN_LINEAR))
    assert fuse_linear(plain) is True and "linear(" in str(plain)


GELU_CHAIN = """
  %r2 = constant() {name="r2", value=0.7071067811865476} : f32[]
  %half = constant() {name="half", value=0.5} : f32[]
  %one = constant() {name="one", value=1.0} : f32[]
  %a = mul(%xf, %r2) : f32[4,8]
  %e = erf(%a) : f32[4,8]
  %p = add(%e, %one) : f32[4,8]
  %h = mul(%xf, %half) : f32[4,8]
  %y = mul(%h, %p) : f32[4,8]"""


def test_gelu_between_dequantize_and_quantize_is_not_fused():
    g = accelir.parse(f"""graph main(%x: u8[4,8]) -> (u8[4,8]) {{
  %s = constant() {{name="s", value=0.05}} : f32[]
  %z = constant() {{name="z", value=128}} : u8[]
  %xf = dequantize_linear(%x, %s, %z) : f32[4,8]{GELU_CHAIN}
  %q = quantize_linear(%y, %s, %z) : u8[4,8]
  return %q
}}""")
    before = str(g)
    assert fuse_gelu(g) is False and str(g) == before
    # the chain alone fuses
    free = accelir.parse(f"""graph main(%xf: f32[4,8]) -> (f32[4,8]) {{{GELU_CHAIN}
  return %y
}}""")
    assert fuse_gelu(free) is True and "gelu(" in str(free)


def test_sibling_projections_of_a_dequantized_input_stay_apart():
    from accelir.passes.fuse_parallel_linear import fuse_parallel_linear
    rng = np.random.default_rng(0)
    consts = {"w1": rng.standard_normal((8, 6)).astype(np.float32), "w2": rng.standard_normal((8, 6)).astype(np.float32)}
    body = """
  %w1 = constant() {name="w1"} : f32[8,6]
  %w2 = constant() {name="w2"} : f32[8,6]
  %a = matmul(%xf, %w1) : f32[4,6]
  %b = matmul(%xf, %w2) : f32[4,6]"""
    g = accelir.parse(f"""graph main(%x: u8[4,8]) -> (u8[4,6], u8[4,6]) {{
  %s = constant() {{name="s", value=0.05}} : f32[]
  %z = constant() {{name="z", value=128}} : u8[]
  %xf = dequantize_linear(%x, %s, %z) : f32[4,8]{body}
  %qa = quantize_linear(%a, %s, %z) : u8[4,6]
  %qb = quantize_linear(%b, %s, %z) : u8[4,6]
  return %qa, %qb
}}""", consts)
    before = str(g)
    assert fuse_parallel_linear(g) is False and str(g) == before
    free = accelir.parse(f"""graph main(%xf: f32[4,8]) -> (f32[4,6], f32[4,6]) {{{body}
  return %a, %b
}}""", consts)
    assert fuse_parallel_linear(free) is True


@pytest.mark.parametrize("backend", ["onnxruntime", "xla"])
def test_optimize_a_qdq_model_end_to_end(backend, tmp_path):
    model = _quantised("qdq-per-channel", tmp_path)
    x = _feeds()
    cm = accelir.optimize(model, (x,), backend=backend)
    assert cm.graph.op_histogram()["dequantize_linear"] == sum(n.op_type == "DequantizeLinear"
                                                               for n in model.graph.node)
    _assert_same(cm(x), _onnxruntime(model, x), float_atol=1e-5 if backend == "xla" else 0.0)


def test_blocked_quantisation_before_opset_21_lowers_through_its_decomposition():
    g = accelir.parse("""
        graph main(%x: f32[3,5], %s: f32[3,3]) -> (i8[3,5]) {
          %z = constant() {name="z", value=[[0, 1, -1], [2, 0, 0], [0, 0, 3]]} : i8[3,3]
          %q = quantize_linear(%x, %s, %z) {axis=1, block_size=2} : i8[3,5]
          return %q
        }""")
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 5)) * 50).astype(np.float32)
    s = rng.uniform(0.2, 1.0, (3, 3)).astype(np.float32)
    want = accelir.interpret(g, x, s)
    for opset, native in ((18, False), (21, True)):
        model = to_onnx(g, opset=opset)
        onnx.checker.check_model(model)
        assert ("QuantizeLinear" in _op_types(model)) is native
        np.testing.assert_array_equal(OnnxRuntimeModule(model)(x, s)[0], want[0])


def test_a_float_program_skips_the_qdq_group_walk(monkeypatch):
    """The walk over what each rewrite absorbs runs only where the program holds a quantize or
    dequantize node: a float graph's fusions never take it (it was half the passes' time on GPT-2)."""
    from accelir.passes import fuse_parallel_linear as fpl, fuse_skip_norm as fsn, pattern
    calls = []

    def counted(root):
        calls.append(root.op)
        return None
    for module in (pattern, fsn, fpl):
        monkeypatch.setattr(module, "qdq_group_member", counted)
    plain = accelir.parse(_text(PLAIN_LINEAR))
    assert fuse_linear(plain) is True and calls == []
    quantised = accelir.parse(_text(QDQ_LINEAR))
    fuse_linear(quantised)
    assert calls, "a program with QDQ nodes must check each rewrite for a QDQ group"
