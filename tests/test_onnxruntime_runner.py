"""OnnxRuntimeModule and whole models: captured with the torch frontend, lowered to ONNX, run on
ONNX Runtime (CPU) and compared with eager torch; plus the model-level properties of to_onnx
(symbolic dims, names, provenance, fused kernels, external data, errors)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import transformers
from torch.export import Dim

import accelir
from accelir import DType, Graph, LoweringError, TensorType
from accelir.lowering.onnx import MS_DOMAIN, ONNX_RULES, default_opset, save_onnx, to_onnx, to_onnx_external
from accelir.frontends.torch import capture_torch
from accelir.lowering.onnxruntime import OnnxRuntimeModule
from accelir.testing import assert_relative_close, random_inputs
from test_torch_models import text_inputs


class SmallCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, stride=2, groups=2)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv1(x)))
        x = torch.nn.functional.max_pool2d(torch.nn.functional.gelu(self.conv2(x)), 2)
        return self.fc(x.mean(dim=(2, 3))).softmax(-1)


def _gpt2():
    cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=64, use_cache=False)
    return transformers.GPT2Model(cfg), text_inputs(100)


def _bert():
    cfg = transformers.BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128,
                                  vocab_size=100, max_position_embeddings=64)
    return transformers.BertModel(cfg), text_inputs(100)


def _cnn():
    torch.manual_seed(0)
    m = SmallCNN()
    m.bn.running_mean.normal_(0, 0.1)
    m.bn.running_var.uniform_(0.5, 1.5)
    return m, ((torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2)),), {})


MODELS = {"gpt2": _gpt2, "bert": _bert, "cnn": _cnn}


def _leaves(out) -> list[torch.Tensor]:
    return list(torch.utils._pytree.tree_leaves(out))


def _check(model, args, kwargs, target, dynamic_shapes=None, run=None):
    torch.manual_seed(0)
    model.eval()
    graph = capture_torch(model, args, dynamic_shapes, example_kwargs=kwargs)
    onnx_model = to_onnx(graph, target=target)
    if target == "standard":
        onnx.checker.check_model(onnx_model, full_check=True)
    runner = OnnxRuntimeModule(onnx_model)
    sig = graph.meta["signature"]
    run_args, run_kwargs = run or (args, kwargs)
    got = sig.unflatten(runner(*sig.flatten(*run_args, **run_kwargs)))
    with torch.no_grad():
        want = model(*run_args, **run_kwargs)
    assert all(isinstance(g, torch.Tensor) for g in _leaves(got))  # torch in, torch out
    assert_relative_close(_leaves(got), _leaves(want), 1e-4)
    return graph, onnx_model


@pytest.mark.parametrize("target", ["onnxruntime", "standard"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_matches_eager(name, target):
    model, (args, kwargs) = MODELS[name]()
    _check(model, args, kwargs, target)


@pytest.mark.parametrize("name", ["gpt2", "bert"])
def test_dynamic_batch_and_sequence(name):
    model, (args, kwargs) = MODELS[name]()
    batch, seq = Dim("batch"), Dim("seq", max=64)
    dynamic = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    _, m = _check(model, args, kwargs, "onnxruntime", dynamic, run=text_inputs(100, batch=3, seq=5))
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in m.graph.input]
    assert dims == [["batch", "seq"], ["batch", "seq"]]


def test_provenance_and_names_reach_the_onnx_nodes():
    model, (args, kwargs) = _gpt2()
    graph = capture_torch(model.eval(), args, example_kwargs=kwargs)
    m = to_onnx(graph)
    props = [{p.key: p.value for p in n.metadata_props} for n in m.graph.node]
    assert all("accelir.op" in p for p in props)
    assert any("modeling_gpt2.py:" in p.get("source", "") for p in props)
    assert any(p.get("module", "").startswith("h.") for p in props)
    assert [i.name for i in m.graph.input] == [v.name for v in graph.inputs]
    assert len(m.graph.initializer) >= 10


# ----- fused kernels ------------------------------------------------------------------

def _one_node(op: str, types: list[TensorType], **attrs) -> Graph:
    g = Graph("g")
    ins = [g.add_input(t, f"x{i}") for i, t in enumerate(types)]
    g.set_outputs(g.make(op, ins, attrs).outputs)
    return g


F32 = DType.f32


@pytest.mark.parametrize("op,types,attrs,fused", [
    ("linear", [(2, 3, 4), (4, 5), (5,)], {"activation": "gelu"}, "Gelu"),
    ("linear", [(2, 3, 4), (4, 5), (5,)], {"activation": "gelu_tanh"}, "FastGelu"),
    ("fused_conv", [(1, 2, 5, 5), (4, 2, 3, 3), (4,)], {"activation": "relu"}, "FusedConv"),
    ("silu", [(2, 3)], {}, "QuickGelu"),
    ("gelu", [(2, 3)], {}, "Gelu"),
])
def test_onnxruntime_target_uses_fused_kernels(op, types, attrs, fused):
    g = _one_node(op, [TensorType(F32, s) for s in types], **attrs)
    ort_model, std_model = to_onnx(g), to_onnx(g, target="standard")
    assert fused in {n.op_type for n in ort_model.graph.node if n.domain == MS_DOMAIN}
    assert all(n.domain == "" for n in std_model.graph.node)
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=s).astype(np.float32) for s in types]
    want = accelir.interpret(g, *xs)
    for m in (ort_model, std_model):
        for a, b in zip(OnnxRuntimeModule(m)(*xs), want):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op,types,norm", [
    ("skip_layer_norm", [(2, 3, 8), (2, 3, 8), (8,), (8,)], "LayerNormalization"),
    ("skip_rms_norm", [(2, 3, 8), (2, 3, 8), (8,)], "SimplifiedLayerNormalization"),
])
def test_skip_norms_stay_add_and_norm_on_the_cpu(op, types, norm, tmp_path):
    import onnxruntime
    g = _one_node(op, [TensorType(F32, s) for s in types])
    options = onnxruntime.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "opt.onnx")
    runner = OnnxRuntimeModule(to_onnx(g), session_options=options)
    assert [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node] == ["Add", norm]
    xs = [np.random.default_rng(0).normal(size=s).astype(np.float32) for s in types]
    for a, b in zip(runner(*xs), accelir.interpret(g, *xs)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_standard_ops_at_the_default_opset():
    assert default_opset() >= 23
    types = [TensorType(F32, (2, 2, 5, 8))] * 3
    m = to_onnx(_one_node("attention", types, causal=True), target="standard")
    assert [n.op_type for n in m.graph.node] == ["Attention"]
    m = to_onnx(_one_node("rms_norm", [TensorType(F32, (2, 8)), TensorType(F32, (8,))]), target="standard")
    assert [n.op_type for n in m.graph.node] == ["RMSNormalization"]
    m = to_onnx(_one_node("layer_norm", [TensorType(F32, (2, 8)), TensorType(F32, (8,))]), target="standard")
    assert "LayerNormalization" in {n.op_type for n in m.graph.node}


def test_older_opset_decomposes_what_it_lacks():
    types = [TensorType(F32, (2, 2, 5, 8))] * 3
    g = _one_node("attention", types, causal=True)
    m = to_onnx(g, opset=18, target="standard")
    onnx.checker.check_model(m, full_check=True)
    assert m.opset_import[0].version == 18 and "Attention" not in {n.op_type for n in m.graph.node}
    xs = [np.random.default_rng(1).normal(size=(2, 2, 5, 8)).astype(np.float32) for _ in range(3)]
    np.testing.assert_allclose(OnnxRuntimeModule(m)(*xs)[0], accelir.interpret(g, *xs)[0], rtol=1e-5, atol=1e-5)


# ----- symbolic dims --------------------------------------------------------------------

SYMBOLIC = """graph main(%x: f32[b,s,8], %y: f32[s]) -> (f32[b,s,2,4], f32[b,s,8], i64[s,b], f32[b,1]) {
  %0 = reshape(%x) {shape=["b", "s", 2, 4]} : f32[b,s,2,4]
  %1 = reshape(%x) {shape=["s", "b", 8]} : f32[s,b,8]
  %2 = reshape(%1) {shape=["b", "s", 8]} : f32[b,s,8]
  %3 = broadcast_to(%y) {shape=["b", "s", 8]} : f32[b,s,8]
  %4 = iota() {shape=["s", "b"], axis=1, dtype=i64} : i64[s,b]
  %5 = slice(%x) {starts=[0, 1], stops=["b", 2], axes=[0, 2]} : f32[b,s,1]
  %6 = reduce_sum(%5) {axes=[1]} : f32[b,1]
  %7 = add(%2, %3) : f32[b,s,8]
  return %0, %7, %4, %6
}"""


def test_symbolic_dims_are_computed_at_run_time():
    text = SYMBOLIC.replace("broadcast_to(%y) {shape", "broadcast_to(%8) {shape")
    text = text.replace('  %3 = ', '  %8 = reshape(%y) {shape=["s", 1]} : f32[s,1]\n  %3 = ')
    g = accelir.parse(text)
    m = to_onnx(g)
    assert [d.dim_param for d in m.graph.input[0].type.tensor_type.shape.dim[:2]] == ["b", "s"]
    runner = OnnxRuntimeModule(m)
    for b, s in ((2, 3), (4, 1)):
        rng = np.random.default_rng(b)
        xs = [rng.normal(size=(b, s, 8)).astype(np.float32), rng.normal(size=(s,)).astype(np.float32)]
        for got, want in zip(runner(*xs), accelir.interpret(g, *xs)):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_a_symbol_no_input_carries_is_an_error():
    g = Graph("g")
    g.add_input(TensorType(F32, (3,)), "x")
    g.set_outputs([g.apply("iota", shape=("n",), dtype=DType.f32)])
    with pytest.raises(LoweringError, match="'iota'.*symbolic dim 'n'"):
        to_onnx(g)


# ----- errors, files, the runner --------------------------------------------------------

def test_missing_rule_names_the_node(monkeypatch):
    g = _one_node("erf", [TensorType(F32, (2,))])
    next(iter(g.nodes)).meta["source"] = "model.py:7"
    monkeypatch.delitem(ONNX_RULES, "erf")
    with pytest.raises(LoweringError, match=r"'erf'.*model\.py:7.*register_lowering"):
        to_onnx(g)


def test_dtype_gap_is_refused_before_running():
    g = _one_node("conv", [TensorType(DType.f64, (1, 2, 5, 5)), TensorType(DType.f64, (3, 2, 3, 3))])
    with pytest.raises(LoweringError, match="'conv'.*no Conv kernel for f64"):
        to_onnx(g)


def test_bad_target_and_opset():
    g = _one_node("erf", [TensorType(F32, (2,))])
    with pytest.raises(LoweringError, match="target"):
        to_onnx(g, target="tvm")
    with pytest.raises(LoweringError, match="opset"):
        to_onnx(g, opset=11)


def test_external_data_round_trip(tmp_path):
    g = Graph("g")
    x = g.add_input(TensorType(F32, (4, 300)), "x")
    w = g.const(np.random.default_rng(0).normal(size=(300, 300)).astype(np.float32), name="weight")
    g.set_outputs([g.apply("matmul", x, w)])
    m = to_onnx(g)
    path = tmp_path / "m.onnx"
    save_onnx(m, path, external_data=True)
    assert (tmp_path / "m.onnx.data").stat().st_size >= 300 * 300 * 4
    assert path.stat().st_size < 10_000
    onnx.checker.check_model(str(path))
    xs = np.ones((4, 300), np.float32)
    np.testing.assert_allclose(OnnxRuntimeModule(path)(xs)[0], accelir.interpret(g, xs)[0], rtol=1e-5, atol=1e-4)
    save_onnx(m, tmp_path / "inline.onnx")
    assert not (tmp_path / "inline.onnx.data").exists()


def test_runner_takes_and_returns_torch_tensors_and_bf16():
    g = _one_node("mul", [TensorType(DType.bf16, (2, 3))] * 2)
    runner = OnnxRuntimeModule(to_onnx(g))
    a = torch.randn(2, 3).to(torch.bfloat16)
    (out,) = runner(a, a)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.bfloat16
    torch.testing.assert_close(out, a * a)
    (out,) = runner(a.float().numpy().astype(accelir.DType.bf16.numpy), a.float().numpy().astype(
        accelir.DType.bf16.numpy))
    assert out.dtype == accelir.DType.bf16.numpy


def test_runner_checks_arity():
    runner = OnnxRuntimeModule(to_onnx(_one_node("erf", [TensorType(F32, (2,))])))
    with pytest.raises(LoweringError, match="takes 1 inputs"):
        runner()


def test_cuda_without_its_provider_says_how_to_install(monkeypatch):
    import onnxruntime
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(LoweringError, match=r"accelir\[gpu\]"):
        OnnxRuntimeModule(to_onnx(_one_node("erf", [TensorType(F32, (2,))])), device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_io_binding_keeps_tensors_on_the_device():
    import onnxruntime
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed")
    g = accelir.parse("graph g(%x: f32[n,4]) -> (f32[n,4]) {\n  %0 = tanh(%x) : f32[n,4]\n  return %0\n}")
    runner = OnnxRuntimeModule(to_onnx(g), device="cuda")
    x = torch.randn(3, 4, device="cuda")
    (y,) = runner(x)
    assert y.device.type == "cuda"
    torch.testing.assert_close(y, torch.tanh(x))


# ----- attention as MultiHeadAttention ------------------------------------------------------

def _heads(g: Graph, x, n: int):
    """[B, S, N*H] -> [B, N, S, H], the head split MultiHeadAttention absorbs."""
    b, s, d = x.type.shape
    return g.apply("transpose", g.apply("reshape", x, shape=(b, s, n, d // n)), perm=(0, 2, 1, 3))


def _mha_graph(b, s, t, n=2, h=4, hv=4, mask=None, **attrs) -> Graph:
    g = Graph("g")
    q = g.add_input(TensorType(F32, (b, s, n * h)), "q")
    k = g.add_input(TensorType(F32, (b, t, n * h)), "k")
    v = g.add_input(TensorType(F32, (b, t, n * hv)), "v")
    ins = [_heads(g, q, n), _heads(g, k, n), _heads(g, v, n)]
    if mask is not None:
        ins.append(g.add_input(mask, "mask"))
    y = g.apply("attention", *ins, **attrs)
    y = g.apply("reshape", g.apply("transpose", y, perm=(0, 2, 1, 3)), shape=(b, s, n * hv))
    g.set_outputs([y])
    return g


def _random_inputs(g: Graph, sizes: dict[str, int], seed: int = 0) -> list[np.ndarray]:
    """Random inputs; a bool input is a mask in which every query keeps a key (no all-masked row)."""
    return random_inputs(g, seed, sizes=sizes, true_fraction=0.7, keep_first=True)


MHA_CASES = {
    "plain": dict(b=2, s=5, t=5),
    "cross, v head dim": dict(b=2, s=3, t=6, hv=3),
    "scale": dict(b=1, s=4, t=4, scale=0.3),
    "causal": dict(b=2, s=5, t=5, causal=True),
    "bool mask [1,1,S,T]": dict(b=2, s=4, t=4, mask=TensorType(DType.bool, (1, 1, 4, 4))),
    "bool padding [B,1,1,T]": dict(b=2, s=3, t=5, mask=TensorType(DType.bool, (2, 1, 1, 5))),
    "float mask [B,N,S,T]": dict(b=2, s=3, t=5, mask=TensorType(F32, (2, 2, 3, 5))),
    "float mask [T]": dict(b=1, s=3, t=5, mask=TensorType(F32, (5,))),
    "causal + mask": dict(b=2, s=4, t=4, causal=True, mask=TensorType(DType.bool, (2, 1, 1, 4))),
    "symbolic": dict(b="b", s="s", t="s", causal=True, mask=TensorType(DType.bool, ("b", 1, 1, "s"))),
}


@pytest.mark.parametrize("case", sorted(MHA_CASES))
def test_attention_becomes_multi_head_attention(case):
    g = _mha_graph(**MHA_CASES[case])
    model, weights = to_onnx_external(g)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("MultiHeadAttention") == 1 and "Attention" not in ops
    runner = OnnxRuntimeModule(g)
    for sizes in ({"b": 2, "s": 5}, {"b": 1, "s": 3}):
        xs = _random_inputs(g, sizes)
        np.testing.assert_allclose(runner(*xs)[0], accelir.interpret(g, *xs)[0], rtol=1e-5, atol=1e-5)
        if not any(isinstance(d, str) for v in g.inputs for d in v.type.shape):
            break


def test_attention_outside_multi_head_attention_semantics_keeps_the_standard_op():
    # causal with fewer queries than keys: MultiHeadAttention aligns the mask bottom-right, the IR top-left
    g = _mha_graph(b=1, s=3, t=5, causal=True)
    ops = [n.op_type for n in to_onnx(g).graph.node]
    assert "MultiHeadAttention" not in ops and "Attention" in ops
    xs = _random_inputs(g, {})
    np.testing.assert_allclose(OnnxRuntimeModule(g)(*xs)[0], accelir.interpret(g, *xs)[0], rtol=1e-5, atol=1e-5)
    assert "MultiHeadAttention" not in {n.op_type for n in to_onnx(_mha_graph(b=2, s=4, t=4), target="standard")
                                        .graph.node}


def _packed_qkv_graph(order=(0, 1, 2), bias=True, causal=True, expose=False, n=2, h=4) -> Graph:
    """linear(x, W [16, 3 N H]) sliced into q, k, v (as GPT-2's c_attn), split into heads, attention."""
    g = Graph("g")
    rng = np.random.default_rng(5)
    x = g.add_input(TensorType(F32, ("b", "s", 16)), "x")
    mask = g.add_input(TensorType(DType.bool, ("b", 1, 1, "s")), "mask")
    d = n * h
    ins = [x, g.const(rng.normal(size=(16, 3 * d)).astype(np.float32), name="w_qkv")]
    if bias:
        ins.append(g.const(rng.normal(size=(3 * d,)).astype(np.float32), name="b_qkv"))
    qkv = g.apply("linear", *ins)
    parts = [g.apply("slice", qkv, starts=(i * d,), stops=((i + 1) * d,), axes=(2,), steps=(1,)) for i in order]
    y = g.apply("attention", *[_heads(g, p, n) for p in parts], mask, causal=causal)
    g.set_outputs([g.apply("reshape", g.apply("transpose", y, perm=(0, 2, 1, 3)), shape=("b", "s", d))]
                  + ([qkv] if expose else []))
    return g


@pytest.mark.parametrize("order,bias,causal,expose,fused", [
    ((0, 1, 2), True, True, False, "Attention"),
    ((0, 1, 2), False, False, False, "Attention"),
    ((1, 0, 2), True, True, False, "MultiHeadAttention"),  # not q, k, v in order: the projection stays a Gemm
    ((0, 1, 2), True, True, True, "MultiHeadAttention"),  # the projection is an output too: not computed twice
])
def test_packed_qkv_projection_folds_into_attention(order, bias, causal, expose, fused):
    g = _packed_qkv_graph(order, bias, causal, expose)
    ops = [n.op_type for n in to_onnx_external(g)[0].graph.node]
    assert fused in ops and ("Gemm" in ops) == (fused == "MultiHeadAttention")
    runner = OnnxRuntimeModule(g)
    for sizes in ({"b": 2, "s": 5}, {"b": 1, "s": 3}):
        xs = _random_inputs(g, sizes)
        for got, want in zip(runner(*xs), accelir.interpret(g, *xs)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# ----- linear as Gemm, weights as they lie -----------------------------------------------------

def _linear_graph(x_shape, w: np.ndarray | None, bias: tuple | None = (20,), activation="none",
                  dtype: DType = F32) -> Graph:
    g = Graph("g")
    x = g.add_input(TensorType(dtype, x_shape), "x")
    wv = g.add_input(TensorType(dtype, (16, 20)), "w") if w is None else g.const(w, name="weight")
    ins = [x, wv]
    if bias is not None:
        ins.append(g.const((np.arange(np.prod(bias)).reshape(bias) / 7).astype(dtype.numpy), name="bias"))
    g.set_outputs([g.apply("linear", *ins, activation=activation)])
    return g


# an F-ordered view, as folding transpose(weight) leaves it; big enough to be an external initializer
_W = np.random.default_rng(3).normal(size=(20, 16)).astype(np.float32).T


@pytest.mark.parametrize("x_shape,w,bias,activation,trans_b,kernel", [
    ((6, 16), _W, (20,), "none", 1, "Gemm"),
    ((2, 3, 16), _W, (20,), "relu", 1, "Gemm"),
    ((2, 3, 16), np.ascontiguousarray(_W), (1,), "none", None, "Gemm"),
    ((6, 16), _W, None, "none", 1, "Gemm"),
    # no bias for an epilogue: the leading dims stay as they are, without Reshapes to [M, K] and back
    (("b", 3, 16), _W, None, "gelu", 1, "FusedMatMul"),
    (("b", "s", 16), np.ascontiguousarray(_W), None, "none", None, "FusedMatMul"),
    (("b", "s", 16), None, (20,), "gelu_tanh", None, "Gemm"),
])
def test_linear_is_one_matmul_kernel(x_shape, w, bias, activation, trans_b, kernel):
    g = _linear_graph(x_shape, w, bias, activation)
    model, weights = to_onnx_external(g)
    ops = [n.op_type for n in model.graph.node]
    gemm = [n for n in model.graph.node if n.op_type == kernel]
    assert len(gemm) == 1 and {"MatMul", "Gemm", "FusedMatMul"} & set(ops) == {kernel}
    assert ("Reshape" in ops) == (kernel == "Gemm" and len(x_shape) > 2)
    assert {a.name: a.i for a in gemm[0].attribute}.get("transB") == trans_b
    if w is not None:  # the initializer ORT is handed is the weight's own memory, not a copy
        assert any(np.shares_memory(a, w) for a in weights.values())
    xs = _random_inputs(g, {"b": 2, "s": 3})
    want = _torch_linear(xs[0], w if w is not None else xs[1], bias, activation)
    for runner in (OnnxRuntimeModule(g), OnnxRuntimeModule(to_onnx(g))):
        np.testing.assert_allclose(runner(*xs)[0], want, rtol=1e-5, atol=1e-5)


def _torch_linear(x: np.ndarray, w: np.ndarray, bias: tuple | None, activation: str) -> np.ndarray:
    """Eager torch's ``activation(x @ w + bias)``, ``bias`` as ``_linear_graph`` makes it."""
    y = torch.from_numpy(x) @ torch.from_numpy(np.ascontiguousarray(w))
    if bias is not None:
        y = y + torch.from_numpy((np.arange(np.prod(bias)).reshape(bias) / 7).astype(np.float32))
    act = {"none": lambda t: t, "relu": torch.relu, "gelu": torch.nn.functional.gelu,
           "gelu_tanh": lambda t: torch.nn.functional.gelu(t, approximate="tanh")}[activation]
    return act(y).numpy()


def test_session_config_entries_reach_the_session():
    g = _linear_graph((2, 16), _W, (20,))
    runner = OnnxRuntimeModule(g, threads=1, config={"session.force_spinning_stop": "1"})
    assert runner.session.get_session_options().get_session_config_entry("session.force_spinning_stop") == "1"
    with pytest.raises(LoweringError, match="nor config with session_options"):
        OnnxRuntimeModule(g, session_options=onnxruntime.SessionOptions(), config={"session.force_spinning_stop": "1"})
    with pytest.raises(LoweringError, match="'session.force_spinning_stop': 1 is not a string pair"):
        OnnxRuntimeModule(g, threads=1, config={"session.force_spinning_stop": 1})


def test_integer_linear_keeps_matmul():
    g = _linear_graph((2, 16), (np.arange(320).reshape(20, 16).T % 3).astype(np.int32), (20,), dtype=DType.i32)
    assert "Gemm" not in {n.op_type for n in to_onnx(g).graph.node}
    xs = [np.arange(32, dtype=np.int32).reshape(2, 16) % 5]
    np.testing.assert_array_equal(OnnxRuntimeModule(g)(*xs)[0], accelir.interpret(g, *xs)[0])


# ----- the runner built from a Graph ---------------------------------------------------------

def test_external_weights_stay_out_of_the_model():
    w = np.random.default_rng(0).normal(size=(300, 300)).astype(np.float32)
    g = Graph("g")
    x = g.add_input(TensorType(F32, (4, 300)), "x")
    g.set_outputs([g.apply("matmul", x, g.const(w, name="weight")), g.apply("add", x, g.const(np.float32(1.0)))])
    model, weights = to_onnx_external(g)
    assert list(weights) == ["weight"] and weights["weight"].base is w
    (stub,) = [t for t in model.graph.initializer if t.name == "weight"]
    assert stub.data_location == onnx.TensorProto.EXTERNAL and not stub.raw_data
    assert model.ByteSize() < 10_000
    xs = np.ones((4, 300), np.float32)
    for runner in (OnnxRuntimeModule(g), OnnxRuntimeModule(g, threads=1), OnnxRuntimeModule(g, session_options=(
            __import__("onnxruntime").SessionOptions()))):
        for got, want in zip(runner(xs), accelir.interpret(g, xs)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_threads_and_session_options_are_exclusive():
    import onnxruntime
    with pytest.raises(LoweringError, match="threads or session_options"):
        OnnxRuntimeModule(_one_node("erf", [TensorType(F32, (2,))]), session_options=onnxruntime.SessionOptions(),
                          threads=2)


def test_unread_initializers_and_dead_nodes_are_dropped():
    g = _mha_graph(b=1, s=4, t=4, mask=TensorType(DType.bool, (1, 1, 4, 4)))
    m = to_onnx(g)
    read = {i for n in m.graph.node for i in n.input} | {o.name for o in m.graph.output}
    assert all(any(o in read for o in n.output) for n in m.graph.node)
    assert all(t.name in read for t in m.graph.initializer)


def test_onnxruntime_runs_the_default_opset_kernels_without_inlining(tmp_path):
    import onnxruntime
    types = [TensorType(F32, (1, 2, 5, 8))] * 3
    m = to_onnx(_one_node("attention", types, causal=True), target="standard")
    options = onnxruntime.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "opt.onnx")
    OnnxRuntimeModule(m, session_options=options)
    assert [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node] == ["Attention"]


def test_batch_norms_left_to_onnxruntime_are_folded_into_its_conv_kernels(tmp_path):
    """The onnxruntime pipeline leaves conv + batch_norm for onnxruntime to fold (one copy of the
    conv weights fewer while the session is built); its session has no BatchNormalization left."""
    import onnxruntime
    model, (args, kwargs) = MODELS["cnn"]()
    model.eval()
    cm = accelir.optimize(model, args, backend="onnxruntime")
    assert "batch_norm" in cm.graph.op_histogram()
    assert "fused_conv" in accelir.optimize(model, args, backend="xla").graph.op_histogram()
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "opt.onnx")
    OnnxRuntimeModule(cm.graph, session_options=options)
    ops = {n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node}
    assert "FusedConv" in ops and "BatchNormalization" not in ops


class ConvBnBlock(torch.nn.Module):
    """A bottleneck's end: conv without bias + batch norm, the residual added, relu."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(8)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)) + x)


def _session_convs(graph: Graph, tmp_path) -> list[onnx.NodeProto]:
    """The conv nodes of onnxruntime's optimised CPU session over ``graph`` (ORT_ENABLE_EXTENDED:
    its fusions, before the machine-specific NCHWc layout)."""
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "opt.onnx")
    OnnxRuntimeModule(graph, session_options=options)
    nodes = onnx.load(options.optimized_model_filepath).graph.node
    assert "BatchNormalization" not in {n.op_type for n in nodes}
    return [n for n in nodes if n.op_type in ("Conv", "FusedConv")]


@pytest.mark.parametrize("trained", [False, True])
def test_a_batch_norm_without_shift_leaves_onnxruntime_conv_without_a_bias(tmp_path, trained):
    """A freshly initialised batch norm (mean and bias zero) after a conv without bias becomes a
    conv without bias in onnxruntime's session, as the exporters' files do, not one that adds a bias
    of zeros; trained statistics keep the bias.  Both match eager torch."""
    torch.manual_seed(0)
    model = ConvBnBlock().eval()
    if trained:
        model.bn.running_mean.normal_(0, 0.1)
    with torch.no_grad():
        model.bn.running_var.uniform_(0.5, 1.5)
        model.bn.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 8, 10, 10, generator=torch.Generator().manual_seed(1))
    cm = accelir.optimize(model, (x,), backend="onnxruntime")
    convs = _session_convs(cm.graph, tmp_path)
    assert len(convs) == 1
    assert (len(convs[0].input) > 2 and convs[0].input[2] != "") == trained
    with torch.no_grad():
        assert_relative_close(cm(x), model(x), 1e-5)


@pytest.mark.parametrize("name,fused", [("gpt2", {"Attention", "Gemm", "LayerNormalization"}),
                                        ("bert", {"MultiHeadAttention", "Gemm", "LayerNormalization"}),
                                        ("cnn", {"Conv", "BatchNormalization"})])
def test_optimized_model_matches_eager_on_fused_kernels(name, fused):
    model, (args, kwargs) = MODELS[name]()
    torch.manual_seed(0)
    model.eval()
    cm = accelir.optimize(model, args, example_kwargs=kwargs, backend="onnxruntime")
    assert fused <= {n.op_type for n in to_onnx(cm.graph).graph.node}
    with torch.no_grad():
        want = model(*args, **kwargs)
    assert_relative_close(_leaves(cm(*args, **kwargs)), _leaves(want), 1e-4)


@pytest.mark.parametrize("name", ["gpt2", "bert"])
def test_optimized_model_with_dynamic_batch_and_sequence(name):
    model, (args, kwargs) = MODELS[name]()
    model.eval()
    batch, seq = Dim("batch"), Dim("seq", max=64)
    dynamic = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    cm = accelir.optimize(model, args, example_kwargs=kwargs, dynamic_shapes=dynamic, backend="onnxruntime")
    assert {"MultiHeadAttention", "Attention"} & {n.op_type for n in to_onnx(cm.graph).graph.node}
    run_args, run_kwargs = text_inputs(100, batch=3, seq=5)
    with torch.no_grad():
        want = model(*run_args, **run_kwargs)
    assert_relative_close(_leaves(cm(*run_args, **run_kwargs)), _leaves(want), 1e-4)


def test_bf16_weights_go_to_onnxruntime_as_external_initializers():
    g = Graph("g")
    x = g.add_input(TensorType(DType.bf16, (2, 32)), "x")
    w = g.const(np.random.default_rng(0).normal(size=(32, 32)).astype(DType.bf16.numpy), name="w")
    g.set_outputs([g.apply("matmul", x, w)])
    assert list(to_onnx_external(g)[1]) == ["w"]
    xs = np.random.default_rng(1).normal(size=(2, 32)).astype(DType.bf16.numpy)
    got, want = OnnxRuntimeModule(g)(xs)[0], accelir.interpret(g, xs)[0]
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got.astype(np.float32), want.astype(np.float32))


def test_jax_inputs_give_jax_outputs_as_on_xla():
    import jax
    import jax.numpy as jnp

    def f(x, y):
        return jnp.tanh(x) * y, x.sum(axis=1)

    x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 4)), jnp.float32)
    y = jnp.asarray(np.random.default_rng(1).standard_normal((3, 4)), jnp.float32)
    want = f(x, y)
    for backend in ("onnxruntime", "xla"):
        got = accelir.optimize(f, (x, y), backend=backend)(x, y)
        assert all(isinstance(g, jax.Array) for g in got), f"{backend}: {[type(g).__name__ for g in got]}"
        for g, w in zip(got, want):
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6, atol=1e-6)
    got = accelir.optimize(f, (np.asarray(x), np.asarray(y)))(np.asarray(x), np.asarray(y))
    assert all(type(g) is np.ndarray for g in got)  # numpy in, numpy out


def test_a_session_only_rewrite_applies_to_a_model_proto_and_a_file_is_refused(tmp_path):
    # the rewrite is the session's form of the model: one given a ModelProto must not be dropped silently
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])

    def negate(model: onnx.ModelProto) -> onnx.ModelProto:
        out = onnx.ModelProto()
        out.CopyFrom(model)
        out.graph.node[0].op_type = "Neg"
        return out

    ones = np.ones(2, np.float32)
    np.testing.assert_array_equal(OnnxRuntimeModule(proto, rewrite=negate)(ones)[0], -ones)
    path = tmp_path / "m.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(LoweringError, match="rewrite"):
        OnnxRuntimeModule(str(path), rewrite=negate)
