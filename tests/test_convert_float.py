"""convert_float16 / convert_bfloat16: IR text in, exact IR text out; the kept ops, positions and
signature; and the converted graph on the interpreter, ONNX Runtime and XLA against eager torch
computing the same mix of precisions."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

import accelir
from accelir.accuracy import measure
from accelir.errors import AccelirError
from accelir.lowering.jax.runner import JaxModule
from accelir.lowering.onnxruntime import OnnxRuntimeModule
from accelir.passes import ConvertFloat, convert_bfloat16, convert_float16, get_pass

MLP = """
graph main(%x: f32[4,8], %w: f32[8,8], %g: f32[8], %b: f32[8]) -> (f32[4,8]) {
  %0 = matmul(%x, %w) : f32[4,8]
  %1 = gelu(%0) {approximate="none"} : f32[4,8]
  %2 = layer_norm(%1, %g, %b) {axis=-1, epsilon=1e-05} : f32[4,8]
  %3 = softmax(%2) {axis=-1} : f32[4,8]
  %4 = mul(%3, %1) : f32[4,8]
  return %4
}
"""

MLP_F16 = """
graph main(%x: f32[4,8], %w: f32[8,8], %g: f32[8], %b: f32[8]) -> (f32[4,8]) {
  %5 = cast(%w) {dtype=f16} : f16[8,8]
  %6 = cast(%x) {dtype=f16} : f16[4,8]
  %0 = matmul(%6, %5) : f16[4,8]
  %1 = gelu(%0) {approximate="none"} : f16[4,8]
  %1_1 = cast(%1) {dtype=f32} : f32[4,8]
  %2 = layer_norm(%1_1, %g, %b) {axis=-1, epsilon=1e-05} : f32[4,8]
  %3 = softmax(%2) {axis=-1} : f32[4,8]
  %7 = cast(%3) {dtype=f16} : f16[4,8]
  %4 = mul(%7, %1) : f16[4,8]
  %4_1 = cast(%4) {dtype=f32} : f32[4,8]
  return %4_1
}
"""


def _text(t: str) -> str:
    return textwrap.dedent(t).strip("\n") + "\n"


def _convert(p, text: str) -> accelir.Graph:
    g = accelir.parse(_text(text))
    p(g)
    accelir.verify(g)
    return g


def test_registered_under_both_names():
    assert get_pass("convert_float16") is convert_float16 and convert_float16.dtype == "f16"
    assert get_pass("convert_bfloat16") is convert_bfloat16 and convert_bfloat16.dtype == "bf16"


def test_whole_graph_low_but_norm_and_softmax():
    g = _convert(convert_float16, MLP)
    assert str(g) == _text(MLP_F16)


def test_converting_again_is_a_no_op():
    g = _convert(convert_float16, MLP)
    assert convert_float16(g) is False
    assert str(g) == _text(MLP_F16)


def test_constants_converted_once_integers_untouched():
    g = _convert(convert_float16, """
        graph main(%x: f32[2,3], %i: i64[2,3]) -> (f32[2,3], i64[2,3], i64[2,3]) {
          %c = constant() {name="c", value=[[1.0, 2.0, 3.0]]} : f32[1,3]
          %0 = mul(%x, %c) : f32[2,3]
          %1 = cast(%i) {dtype=f32} : f32[2,3]
          %2 = add(%0, %1) : f32[2,3]
          %3 = exp(%2) : f32[2,3]
          %4 = cast(%3) {dtype=i64} : i64[2,3]
          %5 = add(%3, %c) : f32[2,3]
          %6 = add(%i, %i) : i64[2,3]
          return %5, %4, %6
        }""")
    # the f32 constant is gone: only its f16 twin, converted here, remains; f32 -> i64 stays f32
    assert str(g) == _text("""
        graph main(%x: f32[2,3], %i: i64[2,3]) -> (f32[2,3], i64[2,3], i64[2,3]) {
          %7 = cast(%x) {dtype=f16} : f16[2,3]
          %8 = constant() {name="c_f16", value=[[1.0, 2.0, 3.0]]} : f16[1,3]
          %0 = mul(%7, %8) : f16[2,3]
          %1 = cast(%i) {dtype=f16} : f16[2,3]
          %2 = add(%0, %1) : f16[2,3]
          %2_1 = cast(%2) {dtype=f32} : f32[2,3]
          %3 = exp(%2_1) : f32[2,3]
          %9 = cast(%3) {dtype=f16} : f16[2,3]
          %4 = cast(%3) {dtype=i64} : i64[2,3]
          %5 = add(%9, %8) : f16[2,3]
          %5_1 = cast(%5) {dtype=f32} : f32[2,3]
          %6 = add(%i, %i) : i64[2,3]
          return %5_1, %4, %6
        }""")


def test_kept_positions_stay_f32_and_stay_kept():
    g = _convert(ConvertFloat("bf16", keep=frozenset({0})), MLP)  # position 0: the matmul
    assert str(g).splitlines()[1:5] == [
        "  %0 = matmul(%x, %w) : f32[4,8]",
        "  %5 = cast(%0) {dtype=bf16} : bf16[4,8]",
        "  %1 = gelu(%5) {approximate=\"none\"} : bf16[4,8]",
        "  %1_1 = cast(%1) {dtype=f32} : f32[4,8]",
    ]
    assert convert_bfloat16(g) is False  # the matmul moved, but its mark keeps it f32


def test_keep_ops_and_no_io_types():
    g = _convert(ConvertFloat("bf16", keep_ops=frozenset(), keep_io_types=False), MLP)
    assert str(g) == _text("""
        graph main(%x: bf16[4,8], %w: bf16[8,8], %g: bf16[8], %b: bf16[8]) -> (bf16[4,8]) {
          %0 = matmul(%x, %w) : bf16[4,8]
          %1 = gelu(%0) {approximate="none"} : bf16[4,8]
          %2 = layer_norm(%1, %g, %b) {axis=-1, epsilon=1e-05} : bf16[4,8]
          %3 = softmax(%2) {axis=-1} : bf16[4,8]
          %4 = mul(%3, %1) : bf16[4,8]
          return %4
        }""")


def test_unknown_dtype_is_refused():
    with pytest.raises(AccelirError, match="f16, bf16"):
        ConvertFloat("f8")


# ----- numerics: the converted graph against eager torch in the same precisions ----------------

def _torch_mlp(args: list[np.ndarray], low: torch.dtype) -> np.ndarray:
    """MLP_F16's mix in eager torch: matmul and gelu in ``low``, norm and softmax in f32, mul in ``low``."""
    x, w, gamma, beta = (torch.from_numpy(a) for a in args)
    h = torch.nn.functional.gelu(x.to(low) @ w.to(low))
    n = torch.nn.functional.layer_norm(h.float(), (8,), gamma, beta, eps=1e-5)
    return (torch.softmax(n, -1).to(low) * h).float().numpy()


_TORCH_DTYPES = {"f16": (torch.float16, 2e-3), "bf16": (torch.bfloat16, 2e-2)}


@pytest.mark.parametrize("dtype, backend", [("f16", "interpreter"), ("f16", "onnxruntime"), ("f16", "xla"),
                                            ("bf16", "interpreter"), ("bf16", "xla")])
def test_numerics_match_torch_in_the_same_precisions(dtype, backend):
    """(bf16 on onnxruntime's CPU is refused: test_bf16_on_onnxruntime_cpu_is_refused.)"""
    low, tol = _TORCH_DTYPES[dtype]
    g = _convert(ConvertFloat(dtype), MLP)
    rng = np.random.default_rng(0)
    args = [rng.standard_normal(s).astype(np.float32) for s in [(4, 8), (8, 8), (8,), (8,)]]
    run = {"interpreter": lambda: accelir.interpret(g, *args), "onnxruntime": lambda: OnnxRuntimeModule(g)(*args),
           "xla": lambda: JaxModule(g)(*args)}[backend]
    got = run()
    want = _torch_mlp(args, low)
    np.testing.assert_allclose(got[0], want, rtol=tol, atol=tol)
    # and within the precision's default budget of the f32 graph
    f32 = accelir.interpret(accelir.parse(_text(MLP)), *args)
    assert accelir.accuracy.DEFAULT_BUDGETS["fp16" if dtype == "f16" else "bf16"].met(measure(f32, got))


CONV_NORM_MATMUL = """
graph main(%x: f32[2,3,6,6], %w: f32[8,3,3,3], %g: f32[8], %b: f32[8], %m: f32[8,4]) -> (f32[36,2,4]) {
  %c = conv(%x, %w) {stride=[1, 1], padding=[[1, 1], [1, 1]], dilation=[1, 1], groups=1} : f32[2,8,6,6]
  %r = reshape(%c) {shape=[2, 8, 36]} : f32[2,8,36]
  %t = transpose(%r) {perm=[0, 2, 1]} : f32[2,36,8]
  %n = layer_norm(%t, %g, %b) {axis=-1, epsilon=1e-05} : f32[2,36,8]
  %t2 = transpose(%n) {perm=[1, 0, 2]} : f32[36,2,8]
  %y = matmul(%t2, %m) : f32[36,2,4]
  return %y
}
"""


def test_f16_conv_norm_matmul_runs_on_onnxruntime():
    """ONNX Runtime's NchwcTransformer crashed building this f16 graph's CPU session; accelir turns it
    off for models with f16 casts."""
    g = accelir.parse(_text(CONV_NORM_MATMUL))
    rng = np.random.default_rng(0)
    args = [rng.standard_normal(s).astype(np.float32) for s in [(2, 3, 6, 6), (8, 3, 3, 3), (8,), (8,), (8, 4)]]
    f32 = accelir.interpret(g, *args)
    convert_float16(g)
    x, w, gamma, beta, m = (torch.from_numpy(a) for a in args)
    h = torch.nn.functional.conv2d(x.half(), w.half(), padding=1).reshape(2, 8, 36).transpose(1, 2)
    n = torch.nn.functional.layer_norm(h.float(), (8,), gamma, beta, eps=1e-5).half().transpose(0, 1)
    want = (n @ m.half()).float().numpy()
    for run in (OnnxRuntimeModule(g), JaxModule(g)):
        got = run(*args)
        np.testing.assert_allclose(got[0], want, rtol=5e-3, atol=5e-3)
        assert accelir.accuracy.DEFAULT_BUDGETS["fp16"].met(measure(f32, got))


def test_quantised_ops_keep_their_scales():
    """A QDQ model's quantise / dequantise nodes stay f32, so its integers are the model's; the float
    op between them goes low."""
    text = _text("""
        graph main(%x: f32[2,4]) -> (u8[2,4]) {
          %s = constant() {name="s", value=0.1} : f32[]
          %z = constant() {name="z", value=128} : u8[]
          %q = quantize_linear(%x, %s, %z) : u8[2,4]
          %d = dequantize_linear(%q, %s, %z) : f32[2,4]
          %r = relu(%d) : f32[2,4]
          %y = quantize_linear(%r, %s, %z) : u8[2,4]
          return %y
        }""")
    g = accelir.parse(text)
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32) * 5
    want = accelir.interpret(g, x)
    convert_float16(g)
    accelir.verify(g)
    ops = {n.op: n for n in g.nodes}
    assert ops["quantize_linear"].inputs[0].dtype is accelir.DType.f32
    assert ops["dequantize_linear"].outputs[0].dtype is accelir.DType.f32
    assert ops["relu"].outputs[0].dtype is accelir.DType.f16
    np.testing.assert_array_equal(accelir.interpret(g, x)[0], want[0])
    np.testing.assert_array_equal(OnnxRuntimeModule(g)(x)[0], want[0])


def _small_transformer(name: str):
    from transformers import BertConfig, BertModel, GPT2Config, GPT2Model
    torch.manual_seed(0)
    if name == "bert":
        return BertModel(BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                    vocab_size=100)).eval()
    return GPT2Model(GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=100, bos_token_id=0, eos_token_id=0,
                                use_cache=False)).eval()


@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_small_transformers_within_their_budgets_on_both_backends(name):
    """Captured and fused, then converted: f16 on both backends and bf16 on XLA stay within the
    precision's default budget of eager torch in float32."""
    from accelir.api import build_runner
    from accelir.pass_manager import PassManager
    from accelir.passes import pipeline
    model = _small_transformer(name)
    ids = torch.randint(0, 100, (1, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = [model(ids).last_hidden_state.numpy()]
    g = accelir.capture(model, (ids,))
    PassManager(pipeline(2)).run(g)
    for dtype, precision, backends in (("f16", "fp16", ("onnxruntime", "xla")), ("bf16", "bf16", ("xla",))):
        low = g.copy()
        ConvertFloat(dtype)(low)
        assert sum(n.op == "linear" and n.outputs[0].dtype.value == dtype for n in low.nodes) >= 8
        for backend in backends:
            got = build_runner(low, backend, "cpu")(ids.numpy())[:1]
            errors = measure(want, got)
            assert accelir.accuracy.DEFAULT_BUDGETS[precision].met(errors), (dtype, backend, str(errors))


def test_mask_constants_saturate_instead_of_overflowing():
    """transformers' additive mask, ``(1 - mask) * finfo(f32).min``: in f16 the constant becomes
    -65504, so the unmasked positions get 0 * -65504 = 0, not 0 * -inf = NaN."""
    text = _text("""
        graph main(%x: f32[2,4], %keep: bool[2,4]) -> (f32[2,4]) {
          %low = constant() {name="low", value=-3.4028234663852886e+38} : f32[]
          %one = constant() {name="one", value=1.0} : f32[]
          %m = cast(%keep) {dtype=f32} : f32[2,4]
          %inv = sub(%one, %m) : f32[2,4]
          %bias = mul(%inv, %low) : f32[2,4]
          %s = add(%x, %bias) : f32[2,4]
          %p = softmax(%s) {axis=-1} : f32[2,4]
          return %p
        }""")
    g = accelir.parse(text)
    convert_float16(g)
    assert 'constant() {name="low_f16", value=-6.55e+04} : f16[]' in str(g)  # f16's lowest, -65504
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    keep = np.array([[True, False, True, True], [False, False, True, False]])
    want = torch.softmax(torch.from_numpy(x).masked_fill(~torch.from_numpy(keep), float("-inf")), -1).numpy()
    for got in (accelir.interpret(g, x, keep), OnnxRuntimeModule(g)(x, keep), JaxModule(g)(x, keep)):
        np.testing.assert_allclose(got[0], want, rtol=2e-3, atol=2e-3)


def test_a_node_whose_op_takes_no_low_type_is_no_change():
    # dynamic_quant_linear takes f32 x only: it stays f32, and the run reports no change, so a
    # pass manager running to a fixed point stops
    text = _text("""
        graph main(%x: f32[3,4], %w: i8[4,2], %s: f32[2]) -> (f32[3,2]) {
          %0 = dynamic_quant_linear(%x, %w, %s) {activation="none"} : f32[3,2]
          return %0
        }
        """)
    g = accelir.parse(text)
    assert convert_float16(g) is False
    assert str(g) == text
