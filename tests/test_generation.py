"""Generation with a key/value cache: optimize(causal_lm) and cm.generate() against transformers' generate.

Tiny configs (2 layers, hidden 64, vocab 100) with random weights drawn wide enough
(initializer_range 0.2) that greedy decoding does not settle on one token.  transformers'
own ``generate`` is the oracle for the tokens; eager torch for the logits.  GPT-2 (learned
positions, multi-head) and Llama (rotary, grouped-query) run by default on both backends;
Qwen2, Mistral, Phi and Gemma under ``-m slow``.  Each model is captured once per module
(``capture_causal_lm`` reuses the graphs of an unchanged model for the second backend).
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch
import transformers as T

import accelir
from accelir import AccelirError, InputError
from accelir.accuracy import DEFAULT_BUDGETS, measure
from accelir.generation import GenerationModel, in_place_cache

_COMMON = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128, vocab_size=100,
               max_position_embeddings=64, initializer_range=0.2)
ARCHS = {
    "gpt2": lambda: T.GPT2LMHeadModel(T.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=64,
                                                   initializer_range=0.2, bos_token_id=1, eos_token_id=2)),
    "llama": lambda: T.LlamaForCausalLM(T.LlamaConfig(num_key_value_heads=2, **_COMMON)),
    "qwen2": lambda: T.Qwen2ForCausalLM(T.Qwen2Config(num_key_value_heads=2, **_COMMON)),
    "mistral": lambda: T.MistralForCausalLM(T.MistralConfig(num_key_value_heads=1, **_COMMON)),
    "phi": lambda: T.PhiForCausalLM(T.PhiConfig(**_COMMON)),
    "gemma": lambda: T.GemmaForCausalLM(T.GemmaConfig(num_key_value_heads=1, head_dim=16,
                                                      **{**_COMMON, "initializer_range": 0.5})),
}
FAST = ("gpt2", "llama")
BACKENDS = ("onnxruntime", "xla")
NEW = 24

_models: dict[str, torch.nn.Module] = {}
_compiled: dict[tuple[str, str], GenerationModel] = {}


def model_of(arch: str) -> torch.nn.Module:
    if arch not in _models:
        torch.manual_seed(0)
        _models[arch] = ARCHS[arch]().eval()
    return _models[arch]


def compiled(arch: str, backend: str) -> GenerationModel:
    if (arch, backend) not in _compiled:
        cm = accelir.optimize(model_of(arch), (prompt(1)[0],), backend=backend)
        assert isinstance(cm, GenerationModel)
        _compiled[arch, backend] = cm
    return _compiled[arch, backend]


def prompt(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (avoiding the configs' special ids 0-2) and a mask; batch 3 is left-padded (3, 1, 0 pads)."""
    g = torch.Generator().manual_seed(batch)
    ids = torch.randint(3, 100, (batch, 7), generator=g)
    mask = torch.ones(batch, 7, dtype=torch.long)
    if batch == 3:
        mask[0, :3] = 0
        mask[1, :1] = 0
        ids[mask == 0] = 0
    return ids, mask


def arch_params():
    return [pytest.param(a, marks=() if a in FAST else pytest.mark.slow) for a in ARCHS]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("arch", arch_params())
def test_greedy_tokens_equal_transformers(arch, backend):
    model, cm = model_of(arch), compiled(arch, backend)
    for batch in (1, 3):
        ids, mask = prompt(batch)
        want = model.generate(ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False)
        got = cm.generate(ids, attention_mask=mask, max_new_tokens=NEW)
        assert isinstance(got, torch.Tensor) and got.dtype == torch.long
        assert got.tolist() == want.tolist(), f"batch {batch}"
    assert len(set(want[:, 7:].flatten().tolist())) > 3  # the check is not one repeated token


@pytest.mark.parametrize("backend", BACKENDS)
def test_call_gives_the_models_logits_and_cache(backend):
    model, cm = model_of("llama"), compiled("llama", backend)
    ids, mask = prompt(3)
    with torch.no_grad():
        ref = model(ids, attention_mask=mask, position_ids=torch.clamp(mask.cumsum(-1) - 1, min=0))
    out = cm(ids, attention_mask=mask)
    assert type(out).__name__ == "CausalLMOutputWithPast"
    budget = DEFAULT_BUDGETS["fp32"]
    errors = measure([ref.logits[mask.bool()]], [out.logits[mask.bool()]])
    assert budget.met(errors), errors
    ref_k = ref.past_key_values.layers[1].keys
    assert out.past_key_values.layers[1].keys.shape == ref_k.shape
    assert budget.met(measure([ref_k], [out.past_key_values.layers[1].keys]))


def test_cache_shapes_are_symbolic_in_the_ir():
    cm = compiled("llama", "onnxruntime")
    decode = str(cm.decode_graph).splitlines()[0]
    # the decode step takes any number of new tokens: one while generating, the prompt over an empty past
    assert "%input_ids: i64[batch,seq], %attention_mask: i64[batch,past+seq]" in decode
    assert "%past_key_0: f32[batch,2,past,16]" in decode and "%past_value_1: f32[batch,2,past,16]" in decode
    assert "-> (f32[batch,seq,100], f32[batch,2,past+seq,16]" in decode
    prefill = str(cm.graph).splitlines()[0]
    assert "%input_ids: i64[batch,seq]" in prefill and "f32[batch,2,seq,16]" in prefill
    # on onnxruntime every layer's decode attention is fused into GroupQueryAttention, the present
    # keys / values its outputs
    fused = [n for n in cm.decode_graph.nodes if n.op == "group_query_attention"]
    assert len(fused) == 2 and not [n for n in cm.decode_graph.nodes if n.op == "attention"]
    # on XLA it reads the past concatenated with the new keys / values (grouped-query heads repeated by
    # reshape / broadcast), once per layer: the form the in-place cache write rewrites
    attentions = [n for n in compiled("llama", "xla").decode_graph.nodes if n.op == "attention"]
    assert len(attentions) == 2
    for layer, node in enumerate(attentions):
        for operand, kind in ((node.inputs[1], "key"), (node.inputs[2], "value")):
            while operand.producer.op in ("reshape", "broadcast", "broadcast_to", "expand", "unsqueeze"):
                operand = operand.producer.inputs[0]
            assert operand.producer.op == "concat" and operand.name == f"present_{kind}_{layer}"
            assert operand.producer.inputs[0].name == f"past_{kind}_{layer}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_sampling_is_reproducible_and_draws_like_transformers(backend):
    model, cm = model_of("llama"), compiled("llama", backend)
    ids, mask = prompt(3)
    options = dict(do_sample=True, temperature=0.7, top_k=20, top_p=0.9, max_new_tokens=12)
    torch.manual_seed(5)
    want = model.generate(ids, attention_mask=mask, **options)
    torch.manual_seed(5)
    got = cm.generate(ids, attention_mask=mask, **options)
    assert got.tolist() == want.tolist()  # the same warpers and draws as transformers
    first = cm.generate(ids, attention_mask=mask, seed=11, **options)
    again = cm.generate(ids, attention_mask=mask, generator=torch.Generator().manual_seed(11), **options)
    other = cm.generate(ids, attention_mask=mask, seed=12, **options)
    assert first.tolist() == again.tolist() and first.tolist() != other.tolist()


def test_eos_padding_min_new_tokens_and_streamer_follow_transformers():
    model, cm = model_of("llama"), compiled("llama", "onnxruntime")
    ids, mask = prompt(3)
    greedy = model.generate(ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False)
    eos = int(greedy[1, 7 + 4])  # ends sequence 1 after five tokens
    for options in (dict(eos_token_id=eos, pad_token_id=1), dict(eos_token_id=eos, pad_token_id=1, min_new_tokens=8)):
        want = model.generate(ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False, **options)
        got = cm.generate(ids, attention_mask=mask, max_new_tokens=NEW, **options)
        assert got.tolist() == want.tolist(), options

    class Recorder:
        def __init__(self):
            self.calls = []

        def put(self, value):
            self.calls.append(("put", value.tolist()))

        def end(self):
            self.calls.append(("end", None))

    ref, mine = Recorder(), Recorder()
    one = ids[2:]
    model.generate(one, max_new_tokens=6, do_sample=False, streamer=ref)
    out = cm.generate(one, max_new_tokens=6, streamer=mine)
    assert mine.calls == ref.calls and len(mine.calls) == 8
    assert [t for kind, v in mine.calls[1:-1] for t in v] == out[0, 7:].tolist()


def test_onnxruntime_keeps_the_cache_in_ortvalues():
    import onnxruntime
    cm = compiled("llama", "onnxruntime")
    ids, mask = prompt(1)
    cm.generate(ids, attention_mask=mask, max_new_tokens=5)
    present = cm._stepper.present
    assert len(present) == 4 and all(isinstance(v, onnxruntime.OrtValue) for v in present)
    # one buffer per cache tensor at the capacity (7 + 5 tokens, rounded up to 64, the position limit),
    # the past and the present of every step
    assert present[0].shape() == [1, 2, 64, 16]
    assert [v.data_ptr() for v in present] == [v.data_ptr() for v in cm._stepper.buffers]


def test_onnxruntime_steps_bind_the_cache_once_and_read_back_only_the_logits(monkeypatch):
    # the buffers are every run's past and present: one io binding for the generation, each run rebinding
    # the token feeds and writing its logits into an array of its own; no cache tensor comes back to Python
    cm = compiled("llama", "onnxruntime")
    steps = cm._stepper
    ids, mask = prompt(1)
    want = cm.generate(ids, attention_mask=mask, max_new_tokens=5)
    made, read_back = [], []
    io_binding = steps.decode_session.io_binding

    def counted():
        binding = io_binding()
        get_outputs = binding.get_outputs
        binding.get_outputs = lambda: read_back.append(1) or get_outputs()
        made.append(binding)
        return binding
    monkeypatch.setattr(steps.decode_session, "io_binding", counted)
    assert torch.equal(cm.generate(ids, attention_mask=mask, max_new_tokens=5), want)
    assert len(made) == 1 and not read_back
    filled = ids.shape[1] + 4
    one = steps.decode(ids[:, -1:].numpy(), np.ones((1, filled + 1), np.int64), np.full((1, 1), filled))
    held = one.copy()
    two = steps.decode(ids[:, -2:-1].numpy(), np.ones((1, filled + 2), np.int64), np.full((1, 1), filled + 1))
    # a later step writes its own logits and leaves the ones a caller holds as they were
    assert np.array_equal(one, held) and np.isfinite(two).all() and not np.array_equal(one, two)


def test_xla_reuses_one_compiled_step_and_a_fixed_capacity_buffer():
    cm = compiled("llama", "xla")
    ids, mask = prompt(3)
    ids, mask = ids[1:], mask[1:]  # batch 2: a shape no other test compiles
    steps = cm._stepper._step
    before = steps._cache_size()
    cm.generate(ids, attention_mask=mask, max_new_tokens=NEW)
    assert steps._cache_size() == before + 1  # one compiled step for all 23 decode steps
    # 7 + 24 tokens -> capacity 64 (the position limit); batch and heads merged, as the attention reads them
    assert cm._stepper.buffers[0].shape == (2 * 2, 64, 16)
    cm.generate(ids, attention_mask=mask, max_new_tokens=10)
    assert steps._cache_size() == before + 1
    # the step writes the new token into the donated buffers (in place) and attends over them: no concat
    old, filled = cm._stepper.buffers, cm._stepper.filled
    cm._stepper.decode(ids[:, -1:].numpy(), np.ones((2, filled + 1), np.int64), np.full((2, 1), filled))
    assert all(b.is_deleted() for b in old)
    step_graph = in_place_cache(cm.decode_graph)
    assert step_graph.op_histogram().get("dynamic_update_slice") == 4 and "concat" not in {
        n.op for n in step_graph.nodes if n.outputs[0].name and n.outputs[0].name.startswith("present")}
    assert str(step_graph).splitlines()[0].endswith(
        "%cache_index: i64[], %cache_key_0: f32[2*batch,past+seq,16], %cache_value_0: f32[2*batch,past+seq,16], "
        "%cache_key_1: f32[2*batch,past+seq,16], %cache_value_1: f32[2*batch,past+seq,16]) -> (f32[batch,seq,100], "
        "f32[2*batch,past+seq,16], f32[2*batch,past+seq,16], f32[2*batch,past+seq,16], f32[2*batch,past+seq,16]) {")


def _hlo_shape(line: str) -> tuple[int, ...] | None:
    """The dims of the array an HLO instruction line produces (None for tuples and scalars' absence)."""
    match = re.match(r"\s*(?:ROOT )?%\S+ = [a-z0-9]+\[([0-9,]*)\]", line)
    return tuple(int(d) for d in match.group(1).split(",") if d) if match else None


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_xla_step_writes_each_cache_buffer_once_in_place_and_copies_none(arch):
    """The compiled decode step's HLO: every instruction that makes an array of at least a cache buffer's
    size over its capacity and head dim (a copy, a transpose, a second write, grouped-query heads repeated
    from the kv heads) is one fused in-place write of a buffer, one per buffer.  A copy of the cache each
    step made XLA's per-token time grow with the cache's capacity."""
    cm = compiled(arch, "xla")
    ids, mask = prompt(1)
    cm.generate(ids, attention_mask=mask, max_new_tokens=3)
    st = cm._stepper
    shape = st.buffers[0].shape  # [batch * kv heads, capacity, head_dim]: gpt2 [4, 64, 16], llama [2, 64, 16]
    full = np.zeros((1, st.capacity), np.int64)
    full[:, :st.filled + 1] = 1
    with st.x64_scope(st.needs_x64):
        text = st._step.lower(st.dec_params, st.buffers, ids[:, -1:].numpy(), full, np.full((1, 1), st.filled),
                              np.int64(st.filled)).compile().as_text()
    computations = dict(re.findall(r"\n(?:ENTRY )?(%\S+) [^\n]*\{\n(.*?)\n\}", text, re.S))
    entry = text[text.index("\nENTRY"):].split("\n}")[0].splitlines()[1:]
    size = int(np.prod(shape))
    cache_sized = [line for line in entry if (dims := _hlo_shape(line)) is not None and int(np.prod(dims)) >= size
                   and shape[1] in dims and shape[2] in dims and " parameter(" not in line and " bitcast(" not in line]
    assert len(cache_sized) == len(st.buffers), "\n".join(cache_sized)
    for line in cache_sized:
        called = re.search(r"calls=(%[\w.-]+)", line)
        root = [s for s in computations[called.group(1)].splitlines() if "ROOT" in s] if called else [line]
        assert called and "dynamic-update-slice(" in root[0], line


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_xla_step_reads_the_linear_weights_by_rows_in_place(arch):
    """The XLA prefill and step hold every linear weight [out features, in features] (a one-token step's
    matrix-vector products stream each output's weights as one row: GPT-2 small 10% faster a token), shared
    by the two; Llama's nn.Linear weights lie so in the model and are used where they lie, not copied.  In the
    step's HLO no weight is transposed or copied into the IR's [in, out]."""
    model, cm = model_of(arch), compiled(arch, "xla")
    ids, mask = prompt(1)
    cm.generate(ids, attention_mask=mask, max_new_tokens=3)
    st = cm._stepper
    fn = cm._runner.function
    rows = {k: fn.params[k] for k, perm in fn.layouts.items() if perm == (1, 0)}
    # every layer's linears (Llama's q, k, v merged into one) and the lm head
    assert len(rows) == (4 if arch == "gpt2" else 5) * 2 + 1
    shared = {id(v) for v in st.dec_params.values()}
    assert all(id(st.pre_params[k]) in shared for k in fn.params)  # one device copy for the prefill and the step
    if arch == "llama":
        weights = {p.data_ptr(): p for p in model.parameters()}
        own = {k: a for k, a in rows.items() if "merged" not in k}  # all but the q / k / v the passes merged
        assert len(own) == 4 * 2 + 1
        for k, a in own.items():
            assert a.flags.c_contiguous and a.__array_interface__["data"][0] in weights, k
    full = np.zeros((1, st.capacity), np.int64)
    full[:, :st.filled + 1] = 1
    with st.x64_scope(st.needs_x64):
        text = st._step.lower(st.dec_params, st.buffers, ids[:, -1:].numpy(), full, np.full((1, 1), st.filled),
                              np.int64(st.filled)).compile().as_text()
    held = {a.shape for a in rows.values() if a.shape[0] != a.shape[1]}
    made = {dims for line in text.splitlines() if (dims := _hlo_shape(line)) is not None and " parameter(" not in line}
    assert held and not {(n, k) for k, n in held} & made  # no [in, out] copy of a weight ...
    params = {dims for line in text.splitlines() if " parameter(" in line and (dims := _hlo_shape(line))}
    assert held <= params  # ... which go in as held


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_inputs_are_clear_errors_before_the_runtime(backend):
    cm = compiled("gpt2", backend)
    ids, _ = prompt(1)
    with pytest.raises(InputError, match=r"prompt \(7 tokens\) plus max_new_tokens \(60\).*max_position_embeddings "
                                         r"\(64\)"):
        cm.generate(ids, max_new_tokens=60)
    with pytest.raises(InputError, match="token ids must be integers.*float32"):
        cm.generate(ids.float(), max_new_tokens=2)
    with pytest.raises(InputError, match=r"token id 100 is outside the vocabulary \[0, 100\)"):
        cm.generate(torch.tensor([[5, 100]]), max_new_tokens=2)
    with pytest.raises(InputError, match="attention_mask: shape"):
        cm.generate(ids, attention_mask=torch.ones(1, 3, dtype=torch.long), max_new_tokens=2)
    with pytest.raises(InputError, match=r"input_ids: expected token ids shaped \[batch, sequence\], got shape \[0, 7\]"):
        cm.generate(ids[:0], max_new_tokens=2)
    with pytest.raises(InputError, match=r"attention_mask: expected 0 \(padding\) and 1 \(token\) only, got values \[9\]"):
        cm.generate(ids, attention_mask=torch.full_like(ids, 9), max_new_tokens=2)
    with pytest.raises(AccelirError, match="backend='auto': a causal LM generates on 'onnxruntime' or 'xla'"):
        accelir.optimize(model_of("gpt2"), (ids,), backend="auto")
    with pytest.raises(AccelirError, match=r"optimize\(passes=...\): .*no_such_pass"):
        accelir.optimize(model_of("gpt2"), (ids,), backend=backend, passes=["no_such_pass"])


def test_a_model_without_a_cache_path_says_what_is_missing():
    torch.manual_seed(0)
    model = T.GPT2LMHeadModel(T.GPT2Config(n_layer=1, n_embd=32, n_head=4, vocab_size=50, n_positions=16,
                                           use_cache=False)).eval()
    ids = torch.randint(0, 50, (1, 4))
    cm = accelir.optimize(model, (ids,))
    assert not isinstance(cm, GenerationModel)
    with pytest.raises(AccelirError, match="generate\\(\\) needs a key/value cache path.*use_cache=True"):
        cm.generate(ids, max_new_tokens=2)
    from accelir.errors import CaptureError
    from accelir.frontends.torch.generation import capture_causal_lm
    with pytest.raises(CaptureError, match="config has use_cache=False; set config.use_cache=True"):
        capture_causal_lm(model)


def test_export_writes_the_pair_and_plain_onnxruntime_generates_the_same_tokens(tmp_path):
    import onnxruntime as ort
    model, cm = model_of("gpt2"), compiled("gpt2", "onnxruntime")
    path = str(tmp_path / "lm.onnx")
    assert cm.export(path) == path
    assert sorted(os.listdir(tmp_path)) == ["lm.decode.onnx", "lm.onnx"]
    prefill, decode = ort.InferenceSession(path), ort.InferenceSession(str(tmp_path / "lm.decode.onnx"))
    assert [i.name for i in decode.get_inputs()][:4] == ["input_ids", "attention_mask", "position_ids", "past_key_0"]
    ids, _ = prompt(1)
    feed = {"input_ids": ids.numpy(), "attention_mask": np.ones_like(ids.numpy()),
            "position_ids": np.arange(7)[None]}
    logits, *past = prefill.run(None, feed)
    tokens = [int(logits[0, -1].argmax())]
    for step in range(5):
        feed = {"input_ids": np.array([[tokens[-1]]]), "attention_mask": np.ones((1, 8 + step), np.int64),
                "position_ids": np.array([[7 + step]])}
        feed.update({f"past_{kind}_{i // 2}": p for i, (kind, p) in enumerate(zip(["key", "value"] * 2, past))})
        logits, *past = decode.run(None, feed)
        tokens.append(int(logits[0, -1].argmax()))
    assert tokens == model.generate(ids, max_new_tokens=6, do_sample=False)[0, 7:].tolist()


def test_exported_decode_graph_alone_takes_a_left_padded_prompt_over_an_empty_past(tmp_path):
    # the one-file form: the prompt through lm.decode.onnx with past keys / values of length 0
    import onnxruntime as ort
    model, cm = model_of("llama"), compiled("llama", "onnxruntime")
    cm.export(str(tmp_path / "lm.onnx"))
    decode = ort.InferenceSession(str(tmp_path / "lm.decode.onnx"))
    past_names = [i.name for i in decode.get_inputs()][3:]
    ids, mask = (t.numpy() for t in prompt(3))
    empty = np.zeros((3, 2, 0, 16), np.float32)  # [batch, kv heads, 0, head dim]
    pos = np.clip(mask.cumsum(-1) - 1, 0, None)
    logits, *cache = decode.run(None, {"input_ids": ids, "attention_mask": mask, "position_ids": pos,
                                       **{name: empty for name in past_names}})
    tokens = [logits[:, -1].argmax(-1)]
    for _ in range(NEW - 1):
        mask = np.concatenate([mask, np.ones((3, 1), np.int64)], axis=1)
        pos = pos[:, -1:] + 1
        logits, *cache = decode.run(None, {"input_ids": tokens[-1][:, None], "attention_mask": mask,
                                           "position_ids": pos, **dict(zip(past_names, cache))})
        tokens.append(logits[:, -1].argmax(-1))
    ids_t, mask_t = prompt(3)
    want = model.generate(ids_t, attention_mask=mask_t, max_new_tokens=NEW, do_sample=False)[:, 7:]
    assert np.stack(tokens, axis=1).tolist() == want.tolist()


def test_export_writes_both_files_or_neither(tmp_path):
    cm = compiled("gpt2", "onnxruntime")
    (tmp_path / "lm.decode.onnx").write_text("keep")
    with pytest.raises(accelir.errors.OutputExistsError, match="lm.decode.onnx exists"):
        cm.export(str(tmp_path / "lm.onnx"))
    assert sorted(os.listdir(tmp_path)) == ["lm.decode.onnx"]
    assert (tmp_path / "lm.decode.onnx").read_text() == "keep"
    cm.export(str(tmp_path / "lm.onnx"), overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["lm.decode.onnx", "lm.onnx"]


@pytest.mark.parametrize("suffix", [".mlir", ".hlo"])
def test_stablehlo_and_hlo_export_write_the_pair(tmp_path, suffix):
    """The decode step's StableHLO keeps batch and past symbolic; its HLO is for a past as long as the
    example prompt (static shapes)."""
    cm = compiled("gpt2", "xla")
    path = str(tmp_path / f"lm{suffix}")
    assert cm.export(path) == path
    assert sorted(os.listdir(tmp_path)) == sorted([f"lm{suffix}", f"lm.decode{suffix}"])
    decode = (tmp_path / f"lm.decode{suffix}").read_text()
    past = next(v for v in cm.decode_graph.inputs if v.name == "past_key_0").type.shape
    batch, prompt_len = cm._example_inputs[0].shape
    if suffix == ".mlir":
        assert "func.func public @main" in decode and "tensor<?x" in decode  # dynamic batch / past
    else:
        static = f"f32[{batch},{past[1]},{prompt_len},{past[3]}]"
        assert decode.startswith("HloModule") and static in decode, static


LM_FACTORY = """
import torch
import transformers


def make():
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=4, vocab_size=50, n_positions=32)
    return transformers.GPT2LMHeadModel(config).eval(), (torch.randint(0, 50, (1, 5)),)
"""


def test_bench_generate_reports_first_token_and_per_token_latency(tmp_path, capsys):
    from accelir.cli import main
    path = tmp_path / "lm_factory.py"
    path.write_text(LM_FACTORY)
    assert main(["bench", f"{path}:make", "--generate", "8", "--backends", "onnxruntime", "--repeats", "2",
                 "--warmup", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("8 new tokens after a prompt of 5, batch 1, greedy")
    assert "first token ms" in lines[1] and "per token ms" in lines[1]
    rows = {line.split("  ")[0].strip(): line.split() for line in lines[2:]}
    assert set(rows) == {"transformers generate", "accelir -> onnxruntime"}
    for row in rows.values():
        assert float(row[-4]) > 0 and float(row[-3]) > 0 and row[-1] == "yes"


def test_greedy_decoding_keeps_the_vocabulary_sized_scores_out_of_torch():
    # torch runs a copy, a clone or an argmax of a [batch, vocab] row on its thread pool, whose wake-up
    # cost GPT-2 small 7 ms of CPU a token on a loaded machine: the scores stay numpy until a token is chosen
    from torch.overrides import TorchFunctionMode

    vocab = model_of("llama").config.vocab_size

    class Record(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.seen: list[str] = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            tensors = [x for x in (*args, out) if isinstance(x, torch.Tensor)]
            if any(t.numel() >= vocab for t in tensors):
                self.seen.append(getattr(func, "__name__", repr(func)))
            return out

    cm = compiled("llama", "onnxruntime")
    ids, mask = prompt(1)
    want = model_of("llama").generate(ids, attention_mask=mask, max_new_tokens=6, min_new_tokens=6, do_sample=False,
                                      eos_token_id=5, pad_token_id=0)
    with Record() as record:
        got = cm.generate(ids, attention_mask=mask, max_new_tokens=6, min_new_tokens=6, eos_token_id=5, pad_token_id=0)
    assert record.seen == []
    assert got.tolist() == want.tolist()


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_threads_generating_on_one_model_each_get_their_own_tokens(backend):
    # each generation's cache (onnxruntime's shared buffers, XLA's capacity buffers) lives from its prompt to
    # its last step: a second thread's prompt must not replace the buffers the first one's steps read
    import threading

    model, cm = model_of("llama"), compiled("llama", backend)
    prompts = [prompt(3), prompt(1)]
    with torch.no_grad():
        want = [model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=12, min_new_tokens=12,
                               pad_token_id=0) for ids, mask in prompts]
    got: dict[int, list] = {0: [], 1: []}
    start = threading.Barrier(2)

    def run(i: int) -> None:
        ids, mask = prompts[i]
        start.wait()
        for _ in range(3):
            try:
                got[i].append(cm.generate(ids, attention_mask=mask, max_new_tokens=12, min_new_tokens=12))
            except Exception as e:  # noqa: BLE001 - reported by the assertion below
                got[i].append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(2):
        assert all(isinstance(g, torch.Tensor) and torch.equal(g, want[i]) for g in got[i]), got[i]


def test_generate_from_inside_a_generation_of_the_same_model_is_an_input_error():
    # a streamer that generates on the model it streams from would wait for its own generation's turn
    import threading

    cm = compiled("llama", "onnxruntime")
    ids, mask = prompt(1)
    seen: list = []

    class Nested:
        def put(self, tokens):
            if tokens.dim() == 1 and not seen:  # a step's tokens (the prompt comes first, 2-d)
                try:
                    cm.generate(ids, attention_mask=mask, max_new_tokens=2)
                except InputError as e:
                    seen.append(e)

        def end(self):
            pass

    worker = threading.Thread(target=lambda: cm.generate(ids, attention_mask=mask, max_new_tokens=3, streamer=Nested()),
                              daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "the nested generate() waited for its own generation"
    assert seen and "inside a generation of the same model" in str(seen[0])
    # the model generates again afterwards
    assert cm.generate(ids, attention_mask=mask, max_new_tokens=2).shape[1] == ids.shape[1] + 2
