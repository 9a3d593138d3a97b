"""Integer quantisation: the arithmetic of dynamic_quant_linear / matmul_nbits against onnxruntime's
own kernels and independent numpy references, their lowerings on both backends, and the passes
quantize_dynamic / quantize_weights as IR text in, IR text out plus numerics."""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import accelir
from accelir.accuracy import measure
from accelir import DType, Graph, TensorType
from accelir.errors import AccelirError
from accelir.lowering.jax import JaxModule
from accelir.lowering.onnx import to_onnx
from accelir.lowering.onnxruntime import OnnxRuntimeModule
from accelir.ops.quant import (dequantize_nbits, pack_nbits, quantize_activation_blocks, quantize_blockwise,
                               quantize_dynamic_activation, quantize_per_channel, round_activation_blocks,
                               unpack_nbits)
from accelir.passes import QuantizeDynamic, QuantizeWeights, get_pass, pass_name

RUNNERS = {"onnxruntime": OnnxRuntimeModule, "xla": JaxModule}


def _session(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _activations(rng: np.random.Generator) -> list[np.ndarray]:
    """Inputs that exercise the range rules: mixed signs, all positive, all negative, all zero, one value,
    a huge outlier, values on the quantisation grid (ties)."""
    base = rng.standard_normal((6, 33)).astype(np.float32)
    grid = (np.arange(-20, 20, dtype=np.float32) * 0.5)[None]
    return [base, np.abs(base) + 1, -np.abs(base) - 0.5, np.zeros((3, 4), np.float32), np.full((2, 2), 3.5, np.float32),
            np.concatenate([base[0], [1e6]]).astype(np.float32)[None], grid, base * 1e-30]


# ----- the arithmetic ----------------------------------------------------------------------

def test_activation_quantisation_is_onnxruntimes_bit_for_bit():
    sess = _session([helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"])],
                    [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                    [helper.make_tensor_value_info(n, t, None) for n, t in
                     (("q", TensorProto.UINT8), ("s", TensorProto.FLOAT), ("z", TensorProto.UINT8))])
    for x in _activations(np.random.default_rng(0)):
        q, s, z = sess.run(None, {"x": x})
        rq, rs, rz = quantize_dynamic_activation(x)
        np.testing.assert_array_equal(rq, q)
        assert (rs, rz) == (s, z)


def test_per_channel_weights_are_symmetric_int8():
    w = np.random.default_rng(1).standard_normal((16, 5)).astype(np.float32)
    w[:, 3] = 0
    q, scale = quantize_per_channel(w)
    assert q.dtype == np.int8 and np.abs(q).max() == 127 and (q[:, 3] == 0).all()
    np.testing.assert_array_equal(np.abs(q).max(axis=0)[[0, 1, 2, 4]], 127)
    assert np.all(np.abs(q * scale - w) <= scale / 2 + 1e-7)


def _blocks_by_loop(values: np.ndarray, bits: int) -> np.ndarray:
    """The MatMulNBits byte layout written out element by element: for 4 bits value 2i of a row in the
    low nibble of byte i, value 2i + 1 in the high nibble."""
    per = 8 // bits
    rows = values.reshape(-1, values.shape[-1])
    out = np.zeros((rows.shape[0], -(-rows.shape[1] // per)), np.uint8)
    for r in range(rows.shape[0]):
        for i, v in enumerate(rows[r]):
            out[r, i // per] |= int(v) << (bits * (i % per))
    return out.reshape(values.shape[:-1] + (out.shape[1],))


@pytest.mark.parametrize("bits,width", [(4, 32), (4, 7), (8, 16)])
def test_pack_nbits_is_the_block_layout(bits, width):
    values = np.random.default_rng(2).integers(0, 1 << bits, (3, 2, width)).astype(np.uint8)
    packed = pack_nbits(values, bits)
    np.testing.assert_array_equal(packed, _blocks_by_loop(values, bits))
    np.testing.assert_array_equal(unpack_nbits(packed, bits, width), values)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", [4, 8])
def test_blockwise_quantisation_error_is_half_a_step(bits, symmetric):
    w = np.random.default_rng(3).standard_normal((70, 6)).astype(np.float32)
    q, scales, zp = quantize_blockwise(w, bits, 32, symmetric)
    assert q.shape == (6, 96) and scales.shape == (6, 3) and q.max() < (1 << bits)
    deq = (q.reshape(6, 3, 32).astype(np.float32) - zp[..., None]) * scales[..., None]
    err = np.abs(deq.reshape(6, 96)[:, :70].T - w)
    step = np.repeat(np.abs(scales), 32, axis=1)[:, :70].T
    # symmetric maps a block's extreme to -2^(bits-1), so the far end of the other side clips by up to a step
    assert np.all(err <= (step if symmetric else step / 2) + 1e-6)
    assert np.mean(err <= step / 2 + 1e-6) > 0.95


def _nbits_operands(w: np.ndarray, bits: int, block: int, symmetric: bool) -> list[np.ndarray]:
    """b, scales[, zero points] of ``w`` [K, N] in MatMulNBits' layout, as quantize_weights makes them."""
    n = w.shape[1]
    q, scales, zp = quantize_blockwise(w, bits, block, symmetric)
    nb = scales.shape[1]
    return [pack_nbits(q.reshape(n, nb, block), bits), scales] + ([] if symmetric else [pack_nbits(zp, bits)])


def _ort_matmul_nbits(x: np.ndarray, operands: list[np.ndarray], bits: int, block: int, level: int) -> np.ndarray:
    """onnxruntime's MatMulNBits built by hand over the packed operands."""
    k, n = x.shape[-1], operands[0].shape[0]
    names = ["b", "s", "zp"][:len(operands)]
    inits = [numpy_helper.from_array(a if i == 0 else a.reshape(-1), name) for i, (name, a) in
             enumerate(zip(names, operands))]
    sess = _session([helper.make_node("MatMulNBits", ["x", *names], ["y"], domain="com.microsoft", K=k, N=n,
                                      bits=bits, block_size=block, accuracy_level=level)],
                    [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                    [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return sess.run(None, {"x": x})[0]


def _nbits_graph(operands: list[np.ndarray], k: int, bits: int, block: int, level: int) -> Graph:
    g = Graph("g")
    x = g.add_input(TensorType(DType.f32, ("m", k)), "x")
    ins = [g.add_input(TensorType.of(a)) for a in operands]
    g.set_outputs([g.apply("matmul_nbits", x, *ins, bits=bits, block_size=block, zero_points=len(operands) == 3,
                           accuracy_level=level)])
    return g


#: level 4's sums, in another order than onnxruntime's, agree within this part of sum |x_rounded| |w|
LEVEL4_RTOL = 1e-5


def _level4_close(got: np.ndarray, want: np.ndarray, x: np.ndarray, w: np.ndarray, block: int) -> np.ndarray:
    """Where ``got`` and ``want`` differ by more than LEVEL4_RTOL of the sum of magnitudes of the product."""
    bound = np.abs(round_activation_blocks(x, block)).astype(np.float64) @ np.abs(w).astype(np.float64)
    return np.abs(got.astype(np.float64) - want) <= LEVEL4_RTOL * bound + 1e-30


@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize("accuracy_level", [0, 1, 4])
@pytest.mark.parametrize("bits,block,symmetric", [(4, 32, True), (4, 64, False), (4, 128, True), (8, 32, False)])
def test_matmul_nbits_reference_matches_onnxruntimes_kernel(bits, block, symmetric, accuracy_level, m):
    """The op's reference against MatMulNBits built by hand: equal at accuracy levels 0 and 1 (f32
    arithmetic); at level 4 (x rounded to int8 per block) within LEVEL4_RTOL of the sum of magnitudes,
    which the reference without that rounding misses by far (so the bound sees the rounding)."""
    rng = np.random.default_rng(4)
    k, n = 200, 24
    w = rng.standard_normal((k, n)).astype(np.float32)
    x = rng.standard_normal((m, k)).astype(np.float32)
    operands = _nbits_operands(w, bits, block, symmetric)
    want = _ort_matmul_nbits(x, operands, bits, block, accuracy_level)
    got = accelir.interpret(_nbits_graph(operands, k, bits, block, accuracy_level), x, *operands)[0]
    if accuracy_level < 2:
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)
        return
    wq = dequantize_nbits(operands[0], operands[1], operands[2] if len(operands) == 3 else None, bits, block, k)
    assert _level4_close(got, want, x, wq, block).all()
    unrounded = accelir.interpret(_nbits_graph(operands, k, bits, block, 0), x, *operands)[0]
    assert _level4_close(unrounded, want, x, wq, block).mean() < 0.2


def test_level4_rounds_x_to_int8_per_block_as_onnxruntime_does():
    """The int8 values of x at level 4, read back through an identity weight (exact in int4), equal
    quantize_activation_blocks' bit for bit: ties round half to even, 127 / amax is one division, an
    all-zero block gives zeros, a partial last block takes its own maximum."""
    k, block = 72, 32  # two whole blocks and a partial one of 8
    rng = np.random.default_rng(11)
    rows = [rng.standard_normal(k), rng.standard_normal(k) * 1e-3, np.zeros(k)]
    ties = np.zeros(k)  # amax 127: x * (127 / amax) is x itself, so these land exactly on .5
    ties[:32] = np.arange(32) - 15.5
    ties[31] = 127.0
    ties[32:64] = rng.standard_normal(32)
    ties[64:] = [0.5, 1.5, 2.5, -0.5, -2.5, 3.5, -126.5, 127.0]
    rows.append(ties)
    outlier = rng.standard_normal(k)
    outlier[40] = 1e4
    rows.append(outlier)
    x = np.stack(rows).astype(np.float32)
    eye = np.eye(k, dtype=np.float32)
    operands = _nbits_operands(eye, 4, block, True)
    np.testing.assert_array_equal(dequantize_nbits(operands[0], operands[1], None, 4, block, k), eye)
    y = _ort_matmul_nbits(x, operands, 4, block, 4)
    q, scale = quantize_activation_blocks(x, block)
    per_column = np.repeat(scale, block, axis=1)[:, :k]
    read = np.rint(np.divide(y, per_column, out=np.zeros_like(y), where=per_column > 0)).astype(np.int64)
    np.testing.assert_array_equal(read, q.reshape(len(rows), -1)[:, :k])
    assert q[3, 0, :3].tolist() == [-16, -14, -14] and q[3, 2, :6].tolist() == [0, 2, 2, 0, -2, 4]


# ----- the lowerings -------------------------------------------------------------------------

def _dynamic_graph(w: np.ndarray, bias: np.ndarray | None) -> tuple[Graph, np.ndarray, np.ndarray]:
    q, scale = quantize_per_channel(w)
    g = Graph("g")
    x = g.add_input(TensorType(DType.f32, ("b", 5, w.shape[0])), "x")
    ops = [x, g.const(q, name="w_i8"), g.const(scale, name="w_scale")]
    if bias is not None:
        ops.append(g.const(bias, name="bias"))
    g.set_outputs([g.apply("dynamic_quant_linear", *ops)])
    return g, q, scale


@pytest.mark.parametrize("backend", sorted(RUNNERS))
def test_dynamic_int8_lowering_is_the_integer_reference_bit_for_bit(backend):
    """The int32 accumulator, read back from the rescaled output, equals numpy's integer product of
    x quantised by onnxruntime's rules with the int8 weight; the float result is the op's reference."""
    rng = np.random.default_rng(5)
    w = (rng.standard_normal((96, 40)) * 0.05).astype(np.float32)
    g, q, scale = _dynamic_graph(w, None)
    runner = RUNNERS[backend](g)
    for x in (rng.standard_normal((2, 5, 96)).astype(np.float32), np.abs(rng.standard_normal((1, 5, 96))).astype(np.float32)):
        got = np.asarray(runner(x)[0])
        xq, xs, xz = quantize_dynamic_activation(x)
        acc = np.matmul(xq.astype(np.int64) - int(xz), q.astype(np.int64))
        np.testing.assert_array_equal(np.rint(got / (xs * scale)).astype(np.int64), acc)
        np.testing.assert_allclose(got, accelir.interpret(g, x)[0], rtol=1e-6, atol=1e-6)
        assert measure([x @ w], [got]).cosine > 0.999


def test_dynamic_int8_lowers_to_one_onnxruntime_kernel_and_to_standard_onnx():
    w = np.random.default_rng(6).standard_normal((16, 8)).astype(np.float32)
    g, _, _ = _dynamic_graph(w, np.ones(8, np.float32))
    assert [n.op_type for n in to_onnx(g).graph.node] == ["DynamicQuantizeMatMul"]
    std = to_onnx(g, target="standard")
    onnx.checker.check_model(std, full_check=True)
    assert [n.op_type for n in std.graph.node] == ["DynamicQuantizeLinear", "MatMulInteger", "Cast", "Mul", "Mul", "Add"]
    x = np.random.default_rng(7).standard_normal((2, 5, 16)).astype(np.float32)
    np.testing.assert_array_equal(OnnxRuntimeModule(std)(x)[0], OnnxRuntimeModule(g)(x)[0])


def _nbits_runner(backend: str, g: Graph):
    """``g`` run by ``backend``, or (``"standard"``) its decomposition in standard ONNX by onnxruntime."""
    if backend == "standard":
        model = to_onnx(g, target="standard")
        assert "MatMulNBits" not in {n.op_type for n in model.graph.node}
        return OnnxRuntimeModule(model)
    return RUNNERS[backend](g)


@pytest.mark.parametrize("backend", [*sorted(RUNNERS), "standard"])
@pytest.mark.parametrize("accuracy_level", [0, 4])
@pytest.mark.parametrize("bits,block,symmetric", [(4, 32, True), (4, 64, False), (8, 128, True)])
def test_matmul_nbits_lowering_matches_the_reference(backend, bits, block, symmetric, accuracy_level):
    """Each lowering gives the op's reference: at level 4 the int8 rounding of x too (XLA and the standard
    decomposition round x themselves), within LEVEL4_RTOL; the unrounded product is well outside it."""
    rng = np.random.default_rng(8)
    w = rng.standard_normal((130, 12)).astype(np.float32)
    g = Graph("g")
    x = g.add_input(TensorType(DType.f32, ("b", 130)), "x")
    g.set_outputs([g.apply("linear", x, g.const(w, name="w"), g.const(np.ones(12, np.float32), name="bias"),
                           activation="relu")])
    QuantizeWeights(bits=bits, block_size=block, symmetric=symmetric, accuracy_level=accuracy_level)(g)
    assert [n.op for n in g.nodes if n.op != "constant"] == ["matmul_nbits"]
    xs = rng.standard_normal((3, 130)).astype(np.float32)
    got = np.asarray(_nbits_runner(backend, g)(xs)[0])
    want = accelir.interpret(g, xs)[0]
    if accuracy_level == 0:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    else:
        node = next(n for n in g.nodes if n.op == "matmul_nbits")
        operands = [g.constants[v.producer.attrs["name"]] for v in node.inputs[1:3 if symmetric else 4]]
        wq = dequantize_nbits(*operands[:2], None if symmetric else operands[2], bits, block, 130)
        assert _level4_close(got, want, xs, wq, block).all()
        unrounded = accelir.interpret(_nbits_graph(operands, 130, bits, block, 0), xs, *operands)[0]
        assert _level4_close(np.maximum(unrounded + 1, 0), want, xs, wq, block)[want > 0].mean() < 0.2
    if backend == "onnxruntime":
        assert [n.op_type for n in to_onnx(g).graph.node if n.op_type != "Reshape"] == ["MatMulNBits", "Relu"]


@pytest.mark.parametrize("backend", ["reference", *sorted(RUNNERS)])
@pytest.mark.parametrize("quantise", [QuantizeDynamic(), QuantizeWeights(bits=4, block_size=32),
                                      QuantizeWeights(bits=4, block_size=32, accuracy_level=4)],
                         ids=["int8", "int4", "int4-level4"])
def test_quantised_layers_take_an_empty_batch(backend, quantise):
    """A batch of no rows gives no rows, as the float layer does: no reduction over the empty x is
    left without an identity, no reshape has a length to infer from nothing."""
    w = np.random.default_rng(15).standard_normal((72, 12)).astype(np.float32)
    g = Graph("g")
    x = g.add_input(TensorType(DType.f32, ("b", 72)), "x")
    g.set_outputs([g.apply("linear", x, g.const(w, name="w"), activation="none")])
    quantise(g)
    empty = np.zeros((0, 72), np.float32)
    got = accelir.interpret(g, empty)[0] if backend == "reference" else np.asarray(RUNNERS[backend](g)(empty)[0])
    assert got.shape == (0, 12) and got.dtype == np.float32


# ----- the passes ----------------------------------------------------------------------------

SRC = """
graph main(%x: f32[b,4]) -> (f32[b,2], f32[b,2]) {
  %w = constant() {name="w", value=[[0.5, -1.0], [0.25, 0.0], [-0.125, 0.5], [1.0, 0.75]]} : f32[4,2]
  %bias = constant() {name="bias", value=[0.1, -0.2]} : f32[2]
  %0 = linear(%x, %w, %bias) {activation="relu"} : f32[b,2]
  %1 = matmul(%x, %w) : f32[b,2]
  return %0, %1
}
"""

DYNAMIC = """
graph main(%x: f32[b,4]) -> (f32[b,2], f32[b,2]) {
  %bias = constant() {name="bias", value=[0.1, -0.2]} : f32[2]
  %0 = constant() {name="w_i8", value=[[64, -127], [32, 0], [-16, 64], [127, 95]]} : i8[4,2]
  %1 = constant() {name="w_scale", value=[0.007874016, 0.007874016]} : f32[2]
  %2 = dynamic_quant_linear(%x, %0, %1, %bias) {activation="relu"} : f32[b,2]
  %3 = constant() {name="w_i8", value=[[64, -127], [32, 0], [-16, 64], [127, 95]]} : i8[4,2]
  %4 = constant() {name="w_scale", value=[0.007874016, 0.007874016]} : f32[2]
  %5 = dynamic_quant_linear(%x, %3, %4) {activation="none"} : f32[b,2]
  return %2, %5
}
"""  # one weight read twice is quantised once: both nodes read the same constants


def _parse(text: str) -> Graph:
    return accelir.parse(text)


def _text(g: Graph) -> str:
    return str(g).strip()


def _check_numerics(before: Graph, after: Graph, cosine: float) -> None:
    x = np.random.default_rng(9).standard_normal((6, 4)).astype(np.float32)
    errors = measure(accelir.interpret(before, x), accelir.interpret(after, x))
    assert errors.cosine > cosine, errors


def test_quantize_dynamic_text():
    g = _parse(SRC)
    assert get_pass("quantize_dynamic")(g) is True
    accelir.verify(g)
    assert _text(g) == DYNAMIC.strip()
    _check_numerics(_parse(SRC), g, 0.999)


def test_chained_layers_read_the_quantised_layer_before():
    text = """
graph main(%x: f32[3,4]) -> (f32[3,2]) {
  %w = constant() {name="w", value=[[0.5, -1.0, 0.1, 0.2], [0.25, 0.0, 0.3, 0.4], [-0.125, 0.5, 0.6, 0.7], [1.0, 0.75, 0.8, 0.9]]} : f32[4,4]
  %v = constant() {name="v", value=[[0.5, -1.0], [0.25, 0.0], [-0.125, 0.5], [1.0, 0.75]]} : f32[4,2]
  %0 = linear(%x, %w) {activation="gelu"} : f32[3,4]
  %1 = matmul(%0, %v) : f32[3,2]
  return %1
}"""
    for p in (QuantizeDynamic(), QuantizeWeights()):
        g = _parse(text)
        assert p(g) is True
        accelir.verify(g)
        ops = [n for n in g.nodes if n.op != "constant"]
        assert ops[1].inputs[0] is ops[0].outputs[0]


def test_quantize_dynamic_keeps_the_given_positions_and_never_quantises_twice():
    g = _parse(SRC)
    positions = [i for i, n in enumerate(g.nodes) if n.op in ("linear", "matmul")]
    assert QuantizeDynamic(keep=frozenset({positions[1]}))(g) is True
    assert [n.op for n in g.nodes if n.op != "constant"] == ["dynamic_quant_linear", "matmul"]
    before = _text(g)
    assert QuantizeDynamic()(g) is False and QuantizeWeights()(g) is False
    assert _text(g) == before


def test_quantize_dynamic_leaves_non_constant_weights_and_other_dtypes():
    text = """
graph main(%x: f32[3,4], %w: f32[4,2], %h: f16[3,4], %v: f16[4,2]) -> (f32[3,2], f16[3,2]) {
  %0 = matmul(%x, %w) : f32[3,2]
  %1 = matmul(%h, %v) : f16[3,2]
  return %0, %1
}"""
    g = _parse(text)
    assert QuantizeDynamic()(g) is False
    assert _text(g) == text.strip()


def test_quantisation_passes_leave_a_weight_holding_inf_or_nan_in_float():
    text = """
graph main(%x: f32[3,4]) -> (f32[3,2]) {
  %v = constant() {name="v", value=[[0.5, -1.0], [0.25, 0.0], [-0.125, 0.5], [1.0, 0.75]]} : f32[4,2]
  %0 = matmul(%x, %v) : f32[3,2]
  return %0
}"""
    for bad in (np.inf, np.nan):
        for p in (QuantizeDynamic(), QuantizeWeights()):
            g = _parse(text)
            g.constants["v"] = g.constants["v"].copy()
            g.constants["v"][1, 0] = bad
            assert p(g) is False
            assert [n.op for n in g.nodes] == ["constant", "matmul"]


def test_quantize_weights_text():
    rng = np.random.default_rng(10)
    w = rng.standard_normal((40, 3)).astype(np.float32)
    g = Graph("main")
    x = g.add_input(TensorType(DType.f32, ("b", 40)), "x")
    g.set_outputs([g.apply("matmul", x, g.const(w, name="w"))])
    before = g.copy()
    assert get_pass("quantize_weights")(g) is True
    accelir.verify(g)
    text = _text(g)
    lines = text.splitlines()
    assert lines[2].startswith('  %1 = constant() {name="w_scale", value=[[')
    assert lines[1:2] + lines[3:5] == [
        '  %0 = constant() {name="w_q4"} : u8[3,2,16]',
        '  %2 = matmul_nbits(%x, %0, %1) {bits=4, block_size=32, zero_points=false, accuracy_level=0, '
        'activation="none"} : f32[b,3]',
        '  return %2']
    q, scales, _ = quantize_blockwise(w, 4, 32, True)
    np.testing.assert_array_equal(g.constants["w_q4"], _blocks_by_loop(q.reshape(3, 2, 32), 4))
    np.testing.assert_array_equal(g.constants["w_scale"], scales)
    xs = rng.standard_normal((5, 40)).astype(np.float32)
    assert measure(accelir.interpret(before, xs), accelir.interpret(g, xs)).cosine > 0.99


def test_quantize_weights_with_zero_points_and_options():
    g = _parse(SRC)
    QuantizeWeights(bits=8, block_size=64, symmetric=False, accuracy_level=4)(g)
    ops = [n for n in g.nodes if n.op == "matmul_nbits"]
    assert len(ops) == 2
    assert dict(ops[0].attrs) == {"bits": 8, "block_size": 64, "zero_points": True, "accuracy_level": 4,
                                  "activation": "relu"}
    assert [v.type for v in ops[0].inputs[1:]] == [TensorType(DType.u8, (2, 1, 64)), TensorType(DType.f32, (2, 1)),
                                                   TensorType(DType.u8, (2, 1)), TensorType(DType.f32, (2,))]
    _check_numerics(_parse(SRC), g, 0.9999)


@pytest.mark.parametrize("options,word", [({"bits": 3}, "bits"), ({"block_size": 48}, "block_size"),
                                          ({"accuracy_level": 7}, "accuracy_level")])
def test_quantize_weights_refuses_bad_options(options, word):
    with pytest.raises(AccelirError, match=word):
        QuantizeWeights(**options)


def test_passes_are_registered_and_named():
    assert pass_name(QuantizeWeights(bits=8)) == "quantize_weights" and pass_name(QuantizeDynamic(keep=frozenset({1}))) == "quantize_dynamic"


def test_xla_contracts_int8_into_int32_and_holds_int4_weights():
    rng = np.random.default_rng(11)
    w = rng.standard_normal((64, 32)).astype(np.float32)
    g = Graph("g")
    x = g.add_input(TensorType(DType.f32, (2, 64)), "x")
    g.set_outputs([g.apply("matmul", x, g.const(w, name="w")), g.apply("linear", x, g.const(w, name="v"))])
    QuantizeDynamic(keep=frozenset({3}))(g)
    assert [n.op for n in g.nodes if n.op != "constant"] == ["dynamic_quant_linear", "linear"]
    h = _linear_graph(w)
    QuantizeWeights()(h)
    from accelir.lowering.jax import stablehlo
    text = stablehlo(g, [np.zeros((2, 64), np.float32)])
    # the weight stays int8; XLA:CPU has no fast integer dot, so the contraction runs as exact float32
    # slices whose integer sums are added in int32, and no widened copy of the weight is made
    assert "tensor<64x32xi8>" in text and "tensor<2x32xi32>" in text
    assert not [w for w in ("64x32xi32", "64x32xi64", "32xi64") if w in text], text
    text4 = stablehlo(h, [np.zeros((2, 64), np.float32)])
    assert "xi4>" in text4 and "-> tensor<2x32xf32>" in text4


@pytest.mark.parametrize("k", [2048, 1000, 97])
def test_xla_int8_contraction_is_exact_where_float32_sums_would_round(k):
    """Activations at the top of the uint8 range against weights of one sign per column: the integer
    sum (k * 255 * 127 at most) passes 2^24, beyond which a float32 dot of K terms rounds.  The scales
    are powers of two (x in steps of 1/16 from 0 to 255/16, weights +-127/8), so the output is the
    accumulator rounded once to float32 and scaled by 2^-7 exactly: the sliced float32 dots must give
    the int32 accumulator exactly.  K = 97 has no slice length worth it and runs as an int32 dot."""
    rng = np.random.default_rng(12)
    signs = np.stack([np.ones(k), -np.ones(k), rng.choice([-1.0, 1.0], k)], axis=1)
    g, q, scale = _dynamic_graph((signs * 127 / 8).astype(np.float32), None)
    x = np.where(rng.random((1, 5, k)) < 0.9, 255 / 16, 0.0).astype(np.float32)
    x[0, 0, 0] = 0.0
    xq, xs, xz = quantize_dynamic_activation(x)
    assert xs == 1 / 16 and xz == 0 and np.all(scale == 1 / 8)
    acc = np.matmul(xq.astype(np.int64), q.astype(np.int64))
    assert np.abs(acc).max() > 2 ** 24 or k < 518
    got = np.asarray(JaxModule(g)(x)[0])
    np.testing.assert_array_equal(got * np.float32(128), acc.astype(np.float32))


def _compiled_hlo(g: Graph, x: np.ndarray) -> str:
    import jax
    from accelir.lowering.jax import to_jax
    fn = to_jax(g)
    return jax.jit(fn.apply).lower(fn.device_params(), x).compile().as_text()


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_xla_converts_quantised_weights_a_block_at_a_time(precision):
    """XLA:CPU cannot convert inside a dot: a quantised weight converted whole (to float32, or int8 to
    int32 for an integer dot) was written to memory and read back each call.  The compiled program
    converts blocks of it next to their dots, so no wider array as large as the weight exists; the
    result is the reference's (int8: bit for bit)."""
    rng = np.random.default_rng(13)
    k, n = 1024, 400  # int8: slices of 512 by 384 columns; int4: blocks of 192 rows
    w = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
    x = rng.standard_normal((1, 5, k)).astype(np.float32)
    if precision == "int8":
        g, q, scale = _dynamic_graph(w, None)
    else:
        g = Graph("g")
        xin = g.add_input(TensorType(DType.f32, ("b", 5, k)), "x")
        g.set_outputs([g.apply("linear", xin, g.const(w, name="w"), activation="none")])
        QuantizeWeights(bits=4, block_size=32)(g)
        assert [n.op for n in g.nodes if n.op != "constant"] == ["matmul_nbits"]
    text = _compiled_hlo(g, x)
    shapes = re.findall(r"= (?:f32|s16|s32|s64)\[([0-9,]+)\]", text)  # the weight widened whole
    assert not [s for s in shapes if np.prod([int(d) for d in s.split(",")]) >= k * n], text
    got = np.asarray(JaxModule(g)(x)[0])
    if precision == "int8":
        xq, xs, xz = quantize_dynamic_activation(x)
        acc = np.matmul(xq.astype(np.int64) - int(xz), q.astype(np.int64))
        np.testing.assert_array_equal(np.rint(got / (xs * scale)).astype(np.int64), acc)
    np.testing.assert_allclose(got, accelir.interpret(g, x)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_xla_widens_a_layers_weight_only_once_the_layer_before_is_done(precision):
    """Each weight block's conversion is gated on the layer's x, so XLA cannot schedule the second
    layer's widened weight at the program's start, beside the first's: in the compiled order every block
    of the second weight is made after the first layer's output (f32[5,512])."""
    rng = np.random.default_rng(14)
    w1, w2 = ((rng.standard_normal(s) * 0.05).astype(np.float32) for s in ((1024, 512), (512, 256)))
    g = Graph("g")
    x = g.add_input(TensorType(DType.f32, ("b", 1024)), "x")
    h = g.apply("linear", x, g.const(w1, name="w1"), activation="relu")
    g.set_outputs([g.apply("linear", h, g.const(w2, name="w2"), activation="none")])
    (QuantizeDynamic() if precision == "int8" else QuantizeWeights(bits=4, block_size=32))(g)
    text = _compiled_hlo(g, rng.standard_normal((5, 1024)).astype(np.float32))
    entry = text[text.index("ENTRY"):]
    shapes = [m.group(1) for m in re.finditer(r"= (f32\[[0-9,]+\])\S* fusion\(", entry)]
    second = "f32[512,256]" if precision == "int8" else "f32[256,512]"  # a block of w2 widened
    assert second in shapes and "f32[5,512]" in shapes, shapes
    assert shapes.index(second) > max(i for i, s in enumerate(shapes) if s == "f32[5,512]"), shapes


def _linear_graph(w: np.ndarray) -> Graph:
    g = Graph("g")
    x = g.add_input(TensorType(DType.f32, (2, 64)), "x")
    g.set_outputs([g.apply("linear", x, g.const(w, name="w"))])
    return g


def test_matmul_nbits_with_a_symbolic_k_is_a_lowering_error_naming_the_node():
    g = Graph("g")
    x = g.add_input(TensorType(DType.f32, (2, "k")), "x")
    b = g.const(np.zeros((3, 2, 16), np.uint8), name="b")
    s = g.const(np.ones((3, 2), np.float32), name="s")
    g.set_outputs([g.apply("matmul_nbits", x, b, s)])
    with pytest.raises(accelir.LoweringError, match=r"matmul_nbits.*static K and N, got K='k'"):
        to_onnx(g)
