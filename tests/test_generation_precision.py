"""Reduced precision on the generation path: optimize(causal_lm, precision=...) and cm.generate().

Quantised tokens differ from float32 eager's, so the oracles are independent runs of the same
quantisation: the exported quantised pair decoded by plain onnxruntime against accelir's XLA step
(in-place cache, int4 dequantised by jax), int8 tokens of accelir's two backends against each
other, and the first step's logits against eager float32 within the budget.  Tiny configs with
wide random weights (initializer_range 0.2), so greedy decoding does not settle on one token.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
import transformers as T

import accelir
from accelir import InputError
from accelir.accuracy import Budget, measure
from accelir.generation_precision import GenerationPrecision, shared_constant_bytes
from accelir.ir import Graph
from accelir.precision import PrecisionError, int4_accuracy_level

NEW = 16
_COMMON = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128, vocab_size=100,
               max_position_embeddings=64, initializer_range=0.2)
ARCHS = {
    "gpt2": lambda: T.GPT2LMHeadModel(T.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=64,
                                                   initializer_range=0.2, bos_token_id=1, eos_token_id=2)),
    "llama": lambda: T.LlamaForCausalLM(T.LlamaConfig(num_key_value_heads=2, **_COMMON)),
}
LOOSE = {"cosine": 0.5}  # every layer quantised: the tests check the quantised model, not the search

_models: dict[str, torch.nn.Module] = {}
_compiled: dict[tuple, accelir.CompiledModel] = {}


def model_of(arch: str) -> torch.nn.Module:
    if arch not in _models:
        torch.manual_seed(0)
        _models[arch] = ARCHS[arch]().eval()
    return _models[arch]


def prompt() -> torch.Tensor:
    return torch.randint(3, 100, (1, 7), generator=torch.Generator().manual_seed(1))


def compiled(arch: str, backend: str, precision: str, accuracy=None) -> accelir.CompiledModel:
    key = (arch, backend, precision, str(accuracy))
    if key not in _compiled:
        _compiled[key] = accelir.optimize(model_of(arch), (prompt(),), backend=backend, precision=precision,
                                          accuracy=accuracy)
    return _compiled[key]


def quantised_ops(g: Graph) -> int:
    return sum(n.op in ("matmul_nbits", "dynamic_quant_linear") for n in g.nodes)


def plain_onnxruntime_greedy(prefill_path: str, decode_path: str, ids: np.ndarray, new: int) -> list[int]:
    """Greedy decoding of an exported pair with onnxruntime's own API, as the README shows it."""
    pre, dec = ort.InferenceSession(prefill_path), ort.InferenceSession(decode_path)
    mask = np.ones_like(ids)
    pos = np.arange(ids.shape[1], dtype=np.int64)[None]
    logits, *cache = pre.run(None, {"input_ids": ids, "attention_mask": mask, "position_ids": pos})
    tokens = []
    for _ in range(new):
        token = logits[:, -1].argmax(-1)[:, None].astype(np.int64)
        tokens.append(int(token[0, 0]))
        mask = np.concatenate([mask, np.ones((1, 1), np.int64)], axis=1)
        pos = pos[:, -1:] + 1
        feeds = {"input_ids": token, "attention_mask": mask, "position_ids": pos}
        feeds.update({i.name: c for i, c in zip(dec.get_inputs()[3:], cache)})
        logits, *cache = dec.run(None, feeds)
    return tokens


@pytest.mark.parametrize("arch", ARCHS)
def test_int4_xla_tokens_equal_the_exported_pair_on_plain_onnxruntime(arch, tmp_path):
    cm = compiled(arch, "xla", "int4", LOOSE)
    assert quantised_ops(cm.graph) == quantised_ops(cm.decode_graph) > 0
    assert all(n.attrs["bits"] == 4 for n in cm.decode_graph.nodes if n.op == "matmul_nbits")
    ids = prompt()
    got = cm.generate(ids, max_new_tokens=NEW)[0, 7:].tolist()
    path = str(tmp_path / "lm.onnx")
    cm.export(path)
    want = plain_onnxruntime_greedy(path, str(tmp_path / "lm.decode.onnx"), ids.numpy(), NEW)
    assert got == want
    assert len(set(got)) > 3  # not one repeated token


@pytest.mark.parametrize("arch", ARCHS)
def test_int8_tokens_agree_between_onnxruntime_and_xla(arch):
    ort_cm, xla_cm = compiled(arch, "onnxruntime", "int8"), compiled(arch, "xla", "int8")
    for cm in (ort_cm, xla_cm):
        assert isinstance(cm.report.precision, GenerationPrecision)
        assert quantised_ops(cm.graph) == quantised_ops(cm.decode_graph) > 0
    ids = prompt()
    assert ort_cm.generate(ids, max_new_tokens=NEW).tolist() == xla_cm.generate(ids, max_new_tokens=NEW).tolist()


@pytest.mark.parametrize("backend", ["onnxruntime", "xla"])
@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_first_step_logits_within_the_budget_of_float32_eager(precision, backend):
    model = model_of("llama")
    cm = compiled("llama", backend, precision, None if precision == "int8" else LOOSE)
    ids = prompt()
    with torch.no_grad():
        want = model(ids).logits
    errors = measure([want], [cm(ids).logits])
    budget = Budget.parse(None, precision) if precision == "int8" else Budget.parse(LOOSE)
    assert budget.met(errors), errors
    assert errors.max_abs > 1e-4  # quantised: not the float32 model
    report = cm.report.precision
    assert report.decode.samples == report.prefill.samples == 1 and budget.met(report.decode.errors)
    # the reported error (against accelir's float32 graph) is the error against eager float32
    assert abs(report.prefill.errors.cosine - errors.cosine) < 1e-4


@pytest.mark.parametrize("backend", ["onnxruntime", "xla"])
def test_int4_runs_both_graphs_at_the_backends_accuracy_level(backend):
    cm = compiled("llama", backend, "int4", LOOSE)
    for g in (cm.graph, cm.decode_graph):
        assert {n.attrs["accuracy_level"] for n in g.nodes if n.op == "matmul_nbits"} == {
            int4_accuracy_level(backend, "cpu")}


def test_both_graphs_hold_one_copy_of_the_quantised_weights():
    cm = compiled("llama", "xla", "int4", LOOSE)
    quantised = {name: a for name, a in cm.decode_graph.constants.items() if a.dtype == np.uint8}
    assert quantised and cm.report.precision.shared_bytes >= sum(a.nbytes for a in quantised.values())
    assert shared_constant_bytes(cm.graph, cm.decode_graph) == cm.report.precision.shared_bytes
    # the XLA step puts them on the device once: the decode step reads the prefill's device arrays
    steps = cm._stepper
    placed = [k for k, a in steps.dec_params.items() if a.dtype == np.uint8]  # packed int4 blocks
    assert len(placed) == len(quantised)
    assert all(steps.dec_params[k] is steps.pre_params[k] for k in placed)


def test_a_layer_kept_in_float_is_kept_in_both_graphs():
    cm = compiled("llama", "onnxruntime", "int4")  # the default budget keeps some layers on this model
    report = cm.report.precision
    assert report.prefill.kept and sorted(report.prefill.kept) == sorted(report.decode.kept)
    assert quantised_ops(cm.graph) == quantised_ops(cm.decode_graph) == len(report.layers) - len(report.kept)


def test_a_budget_only_float32_meets_is_a_precision_error_naming_layers():
    with pytest.raises(PrecisionError, match=r"unless every layer stays in float32; the layers that break it.*"
                                             r"model\.model\.layers\."):
        accelir.optimize(model_of("llama"), (prompt(),), precision="int4", accuracy={"cosine": 0.9999999})


def test_fp16_on_onnxruntime_gives_the_float_tokens():
    model, cm = model_of("llama"), compiled("llama", "onnxruntime", "fp16")
    assert any(n.op == "cast" for n in cm.decode_graph.nodes)
    ids = prompt()
    want = model.generate(ids, max_new_tokens=NEW, do_sample=False)
    assert cm.generate(ids, max_new_tokens=NEW).tolist() == want.tolist()


def test_bf16_on_onnxruntime_is_refused_naming_what_works():
    with pytest.raises(accelir.AccelirError, match="xla"):
        accelir.optimize(model_of("gpt2"), (prompt(),), precision="bf16")


def test_calibration_prompts_are_checked_and_used():
    model = model_of("gpt2")
    prompts = [(prompt(),), (torch.randint(3, 100, (2, 5)), torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]]))]
    cm = accelir.optimize(model, (prompt(),), precision="int8", calibration=prompts)
    assert cm.report.precision.prefill.samples == 2 == cm.report.precision.decode.samples
    with pytest.raises(InputError, match=r"calibration\[0\] input_ids: token ids must lie in the vocabulary"):
        accelir.optimize(model, (prompt(),), precision="int8", calibration=[(torch.full((1, 4), 100),)])


@pytest.mark.parametrize("precision", ["fp32", "int4"])
def test_export_writes_the_shared_weights_once(precision, tmp_path):
    """A model whose weights pass SHARED_DATA_MIN_BYTES: the decode file reads the prefill's .data."""
    torch.manual_seed(0)
    model = T.GPT2LMHeadModel(T.GPT2Config(n_layer=1, n_embd=128, n_head=4, vocab_size=4096, n_positions=64,
                                           initializer_range=0.2)).eval()
    cm = accelir.optimize(model, (prompt(),), precision=precision, accuracy=LOOSE if precision == "int4" else None)
    path = str(tmp_path / "lm.onnx")
    cm.export(path)
    files = {p.name: p.stat().st_size for p in tmp_path.iterdir()}
    assert "lm.onnx.data" in files and "lm.decode.onnx.data" not in files
    weights = sum(a.nbytes for a in cm.graph.constants.values() if a.nbytes >= 1024)
    assert files["lm.onnx.data"] < 1.1 * weights and sum(files.values()) < 1.2 * weights
    ids = prompt()
    want = cm.generate(ids, max_new_tokens=8)[0, 7:].tolist()
    assert plain_onnxruntime_greedy(path, str(tmp_path / "lm.decode.onnx"), ids.numpy(), 8) == want


def test_fp16_keeps_the_cache_writes_in_float32_for_the_xla_in_place_step():
    """Under fp16 the decode graph's cache outputs stay ``concat(past, new)`` in float32: the form the XLA
    step writes in place (a cast after it would hide it).  Measured on onnxruntime here, which is faster
    to build than XLA for the precision search; the graphs are the XLA pipeline's."""
    from accelir.generation import in_place_cache
    from accelir.generation_precision import apply_generation_precision
    float_cm = accelir.optimize(model_of("gpt2"), (prompt(),), backend="xla")
    prefill, decode = float_cm.graph.copy(), float_cm.decode_graph.copy()
    ids = prompt().numpy()
    samples = [[ids, np.ones_like(ids), np.arange(ids.shape[1])[None]]]
    report = apply_generation_precision(prefill, decode, "fp16", {"cosine": 0.99}, samples, "onnxruntime", "cpu")
    assert report.decode.errors.cosine >= 0.99 and any(n.op == "cast" for n in decode.nodes)
    for v in decode.outputs[1:]:
        assert v.producer.op == "concat" and str(v.type.dtype) == "f32", v.producer.describe()
    in_place_cache(decode)  # the XLA step's rewrite takes it


def test_layers_only_the_prefill_needs_in_float_are_kept_in_the_decode_graph_too():
    """cosine 0.93 lies between what int4 on every layer gives the prefill logits (0.903) and the decode
    step's (0.949): the decode graph alone would quantise every layer, but keeps the prefill's choice."""
    cm = compiled("llama", "onnxruntime", "int4", {"cosine": 0.93})
    report = cm.report.precision
    assert report.prefill.kept and sorted(report.decode.kept) == sorted(report.prefill.kept)
    assert quantised_ops(cm.decode_graph) == quantised_ops(cm.graph) == len(report.layers) - len(report.kept)
    assert report.decode.errors.cosine >= 0.949  # measured again with those layers in float: no worse
