"""Generation with a flax decoder's cache: optimize(module.bind(variables)) and cm.generate() against a jax loop.

The decoders are written here: 2 layers, width 32, vocab 100, nn.MultiHeadDotProductAttention with
decode=True (flax's cache collection: cached_key / cached_value [batch, 64, heads, depth] and a
cache_index), learned positions, weights drawn wide enough that greedy decoding does not settle on
one token; the same in flax.nnx, and one in plain jax with an explicit cache pytree.  The oracle is a
plain jax loop over the model's own step (``module.apply(..., mutable=["cache"])``, the nnx module,
the apply function), its cache made by flax for the batch: the prompt fed one token at a time
through the cache, as flax's decoding loops feed it, then argmax.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import accelir
from accelir import AccelirError, InputError
from accelir.errors import CaptureError
from accelir.frontends.jax.generation import capture_flax_decoder
from accelir.generation_flax import CacheDecoder, FlaxGenerationModel

VOCAB, CAPACITY, NEW, PROMPT = 100, 64, 24, 7
BACKENDS = ("onnxruntime", "xla")
_wide = nn.initializers.normal(0.5)


def _forward(ids, mask, positions):
    """The decoder's body, called inside a compact __call__ (its submodules belong to that module)."""
    x = nn.Embed(VOCAB, 32, embedding_init=_wide)(ids)
    if positions is not None:
        x = x + nn.Embed(CAPACITY, 32, embedding_init=_wide)(positions)
    attend = None if mask is None else mask[:, None, None, :].astype(bool)
    for _ in range(2):
        h = nn.MultiHeadDotProductAttention(num_heads=2, decode=True, kernel_init=_wide)(nn.LayerNorm()(x), mask=attend)
        x = x + h
        x = x + nn.Dense(32, kernel_init=_wide)(nn.gelu(nn.Dense(64, kernel_init=_wide)(nn.LayerNorm()(x))))
    return nn.Dense(VOCAB, kernel_init=_wide)(nn.LayerNorm()(x))


class Decoder(nn.Module):
    """Takes a mask over the cache's slots and positions (transformers' flax convention)."""

    @nn.compact
    def __call__(self, input_ids, attention_mask, position_ids):
        return _forward(input_ids, attention_mask, position_ids)


class MaskFreeDecoder(nn.Module):
    """Takes the ids only: no way to hide padding."""

    @nn.compact
    def __call__(self, input_ids):
        return _forward(input_ids, None, None)


def init(module: nn.Module, inputs: int = 1, batch: int = 1) -> dict:
    """Variables for a cache of CAPACITY slots (the length of the ids init sees); ``inputs``: how many
    [batch, CAPACITY] int arrays the module's __call__ takes (ids, mask, positions)."""
    full = jnp.zeros((batch, CAPACITY), jnp.int32)
    return module.init(jax.random.PRNGKey(0), *[full] * inputs)


_bound: dict[str, nn.Module] = {}
_compiled: dict[tuple[str, str], FlaxGenerationModel] = {}


def bound(kind: str = "masked") -> nn.Module:
    if kind not in _bound:
        module = Decoder() if kind == "masked" else MaskFreeDecoder()
        _bound[kind] = module.bind(init(module, 3 if kind == "masked" else 1))
    return _bound[kind]


def compiled(backend: str, kind: str = "masked") -> FlaxGenerationModel:
    if (backend, kind) not in _compiled:
        cm = accelir.optimize(bound(kind), (prompt(1)[0],), backend=backend)
        assert isinstance(cm, FlaxGenerationModel)
        _compiled[backend, kind] = cm
    return _compiled[backend, kind]


def prompt(batch: int) -> tuple[jax.Array, jax.Array]:
    """int32 ids (3..99) and a mask; batch 3 is left-padded (3, 1, 0 pads)."""
    rng = np.random.default_rng(batch)
    ids = rng.integers(3, VOCAB, (batch, PROMPT)).astype(np.int32)
    mask = np.ones((batch, PROMPT), np.int32)
    if batch == 3:
        mask[0, :3] = 0
        mask[1, :1] = 0
        ids[mask == 0] = 0
    return jnp.asarray(ids), jnp.asarray(mask)


def greedy_loop(step, cache, ids, mask, new: int) -> np.ndarray:
    """Greedy decoding in plain jax: ``step(cache, ids [batch, 1], mask, positions) -> (logits [batch, vocab],
    cache)`` takes the prompt one token per call, then the argmax fed back; the mask spans the cache's
    slots (1 on the tokens so far), positions skip the pads."""
    ids, mask = np.asarray(ids), np.asarray(mask)
    slots = np.zeros((ids.shape[0], CAPACITY), np.int32)
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)
    tokens = ids
    for t in range(ids.shape[1] + new - 1):
        slots[:, t] = mask[:, t] if t < ids.shape[1] else 1
        pos = positions[:, t:t + 1] if t < ids.shape[1] else positions[:, -1:] + t - ids.shape[1] + 1
        logits, cache = step(cache, tokens[:, t:t + 1], slots.copy(), pos)  # jax may read a numpy input later
        if t >= ids.shape[1] - 1:
            tokens = np.concatenate([tokens, np.asarray(logits).argmax(-1)[:, None].astype(np.int32)], axis=1)
    return tokens


@jax.jit
def _linen_step(variables, ids, mask, positions):
    logits, mutated = Decoder().apply(variables, ids, mask, positions, mutable=["cache"])
    return logits[:, -1], mutated["cache"]


def reference(ids, mask, new: int) -> np.ndarray:
    """The linen decoder's greedy tokens, from a cache flax's init makes for the batch."""
    params = bound().variables["params"]
    cache = init(Decoder(), 3, batch=ids.shape[0])["cache"]
    return greedy_loop(lambda c, *inputs: _linen_step({"params": params, "cache": c}, *inputs), cache, ids, mask, new)


def test_the_reference_loop_hides_left_padding():
    """The oracle's own check: each left-padded row decodes as its prompt alone does."""
    ids, mask = prompt(3)
    padded = reference(ids, mask, NEW)
    for row in range(3):
        start = int(PROMPT - np.asarray(mask[row]).sum())
        alone = reference(ids[row:row + 1, start:], mask[row:row + 1, start:], NEW)
        assert padded[row, PROMPT:].tolist() == alone[0, PROMPT - start:].tolist(), row
    assert len(set(padded[:, PROMPT:].flatten().tolist())) > 10  # not one repeated token


@pytest.mark.parametrize("backend", BACKENDS)
def test_greedy_tokens_equal_the_jax_loop(backend):
    cm = compiled(backend)
    for batch in (1, 3):
        ids, mask = prompt(batch)
        got = cm.generate(ids, attention_mask=mask, max_new_tokens=NEW)
        assert isinstance(got, jax.Array) and got.dtype == jnp.int32 and got.shape == (batch, PROMPT + NEW)
        assert np.asarray(got).tolist() == reference(ids, mask, NEW).tolist(), f"batch {batch}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_row_of_padding_only_gives_the_tokens_of_the_jax_loop(backend):
    """A row masked everywhere attends with equal weights in flax (its mask's fill is finfo.min), so its tokens
    are the loop's too; the other rows are unaffected."""
    ids = np.array([[5, 6, 7, 8], [0, 0, 0, 0], [0, 0, 9, 10]], np.int32)  # batch 3: batch 2 is another test's
    mask = (ids > 0).astype(np.int32)
    got = compiled(backend).generate(jnp.asarray(ids), attention_mask=jnp.asarray(mask), max_new_tokens=3)
    assert np.asarray(got).tolist() == reference(ids, mask, 3).tolist()


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_prompt_goes_in_one_runtime_call(backend, monkeypatch):
    """The prefill graph is the step scanned over the prompt (one scan node, the prompt's length symbolic):
    a generation makes one call for the prompt and one per new token after the first, whatever the
    prompt's length, with the tokens of the loop that feeds the prompt token by token."""
    cm = compiled(backend)
    header = str(cm.prefill_graph).splitlines()[0]
    assert "(%input_ids: i32[batch,seq], %attention_mask: i32[batch,64], %position_ids: i32[batch,seq], " in header
    assert header.endswith("-> (f32[batch,1,100], i32[], f32[batch,64,2,16], f32[batch,64,2,16], i32[], "
                           "f32[batch,64,2,16], f32[batch,64,2,16]) {")
    assert cm.prefill_graph.op_histogram().get("scan") == 1
    scan = next(n for n in cm.prefill_graph if n.op == "scan")
    assert scan.attrs["num_consts"] == 1  # the mask; the weights are constants of the body, as in the step
    stepper = cm._stepper
    calls = []
    if backend == "onnxruntime":
        run = stepper._run
        monkeypatch.setattr(stepper, "_run", lambda session, *a: calls.append(
            "prefill" if session is stepper.prefill_session else "step") or run(session, *a))
    else:
        for name in ("_prefill", "_step"):
            monkeypatch.setattr(stepper, name, (lambda fn, name: lambda *a: calls.append(name[1:]) or fn(*a))(
                getattr(stepper, name), name))
    rng = np.random.default_rng(5)
    for length in (1, 12):
        ids = jnp.asarray(rng.integers(3, VOCAB, (3, length)).astype(np.int32))
        mask = jnp.ones((3, length), jnp.int32).at[0, :length // 2].set(0)
        calls.clear()
        got = cm.generate(ids, attention_mask=mask, max_new_tokens=6)
        assert calls == ["prefill"] + ["step"] * 5, length
        assert np.asarray(got).tolist() == reference(ids, mask, 6).tolist(), length


def test_xla_prompts_of_nearby_lengths_share_one_compiled_prefill():
    """The XLA prefill (the step scanned over the prompt) is compiled per prompt shape: prompts of 5 and 11
    tokens are left-padded to 16 (mask 0, positions skipping the pads), one compile for both, the tokens the
    loop's; a prompt with no room left for pads before the capacity runs at its own length."""
    cm = compiled("xla")
    prefill = cm._stepper._prefill
    rng = np.random.default_rng(9)
    sizes = []
    for length, new in ((5, 6), (11, 6), (61, 3)):  # batch 4: a shape no other test compiles
        ids = jnp.asarray(rng.integers(3, VOCAB, (4, length)).astype(np.int32))
        mask = jnp.ones((4, length), jnp.int32).at[1, :2].set(0)
        got = cm.generate(ids, attention_mask=mask, max_new_tokens=new)
        assert np.asarray(got).tolist() == reference(ids, mask, new).tolist(), length
        sizes.append(prefill._cache_size())
    assert sizes[1] == sizes[0] and sizes[2] == sizes[1] + 1
    assert cm._stepper.padding == 0  # 61 + 3 tokens fill the 64 slots: no room to pad 61 to 64


def _infinite_mask_attention(query, key, value, bias=None, mask=None, **kwargs):
    """flax's attention with the mask as a -inf bias, as hand-written jax decoders often mask: a row that sees
    no slot gives NaN."""
    return nn.dot_product_attention(query, key, value, bias=jnp.where(mask, 0.0, -jnp.inf).astype(query.dtype),
                                    **kwargs)


class InfiniteMaskDecoder(nn.Module):
    """The masked decoder, its attention masking with -inf."""

    @nn.compact
    def __call__(self, input_ids, attention_mask, position_ids):
        x = nn.Embed(VOCAB, 32, embedding_init=_wide)(input_ids) + \
            nn.Embed(CAPACITY, 32, embedding_init=_wide)(position_ids)
        for _ in range(2):
            x = x + nn.MultiHeadDotProductAttention(num_heads=2, decode=True, kernel_init=_wide,
                                                    attention_fn=_infinite_mask_attention)(
                nn.LayerNorm()(x), mask=attention_mask[:, None, None, :].astype(bool))
        return nn.Dense(VOCAB, kernel_init=_wide)(nn.LayerNorm()(x))


def test_xla_prompts_of_a_module_masking_with_infinity_are_not_left_padded():
    """Left pads see no slot: under a -inf mask their keys and values are NaN from the second layer on, which
    would reach the prompt's tokens (0 * NaN); the prompt runs unpadded instead, its tokens the jax loop's."""
    module = InfiniteMaskDecoder()
    variables = init(module, 3)

    @jax.jit
    def step(cache, ids, mask, positions):
        logits, mutated = module.apply({"params": variables["params"], "cache": cache}, ids, mask, positions,
                                       mutable=["cache"])
        return logits[:, -1], mutated["cache"]

    cm = accelir.optimize(module.bind(variables), (prompt(1)[0],), backend="xla")
    ids, mask = prompt(1)
    want = greedy_loop(step, init(module, 3)["cache"], ids, mask, 8)
    for _ in range(2):  # the second prompt goes unpadded at once
        assert np.asarray(cm.generate(ids, attention_mask=mask, max_new_tokens=8)).tolist() == want.tolist()
        assert cm._stepper.padding == 0 and not cm._stepper.can_pad


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_model_without_a_mask_generates_unpadded_prompts_and_refuses_padded_ones(backend):
    cm = compiled(backend, "mask-free")
    ids, _ = prompt(1)
    got = cm.generate(np.asarray(ids), max_new_tokens=5)  # numpy in, numpy out
    assert isinstance(got, np.ndarray) and got.shape == (1, PROMPT + 5)
    want = ids
    variables = bound("mask-free").variables
    apply = jax.jit(lambda v, x: MaskFreeDecoder().apply(v, x, mutable=["cache"]))
    cache = variables["cache"]
    for t in range(PROMPT + 4):
        logits, mutated = apply({"params": variables["params"], "cache": cache}, want[:, t:t + 1])
        cache = mutated["cache"]
        if t >= PROMPT - 1:
            want = jnp.concatenate([want, logits[:, -1].argmax(-1)[:, None].astype(jnp.int32)], axis=1)
    assert got.tolist() == np.asarray(want).tolist()
    ids, mask = prompt(3)
    with pytest.raises(InputError, match="attention_mask has padding.*takes no attention_mask"):
        cm.generate(ids, attention_mask=mask, max_new_tokens=2)


def test_the_cache_is_explicit_in_the_ir_and_written_in_place():
    cm = compiled("onnxruntime")
    header = str(cm.graph).splitlines()[0]
    assert header.startswith("graph step(%input_ids: i32[batch,1], %attention_mask: i32[batch,64], "
                             "%position_ids: i32[batch,1], ")
    for layer in (0, 1):
        path = f"cache.MultiHeadDotProductAttention_{layer}"
        assert f"%{path}.cache_index: i32[]" in header
        for kind in ("key", "value"):
            assert f"%{path}.cached_{kind}: f32[batch,64,2,16]" in header
    assert header.endswith("-> (f32[batch,1,100], i32[], f32[batch,64,2,16], f32[batch,64,2,16], i32[], "
                           "f32[batch,64,2,16], f32[batch,64,2,16]) {")
    for backend in BACKENDS:  # the model writes one token's keys / values into each buffer, and attends over it
        ops = compiled(backend).graph.op_histogram()
        assert ops.get("dynamic_update_slice") == 4 and ops.get("attention") == 2 and "softmax" not in ops


def test_onnxruntime_keeps_the_cache_in_ortvalues():
    import onnxruntime
    cm = compiled("onnxruntime")
    ids, mask = prompt(1)
    cm.generate(ids, attention_mask=mask, max_new_tokens=5)
    present = cm._stepper.present
    assert len(present) == 6 and all(isinstance(v, onnxruntime.OrtValue) for v in present)
    assert present[1].shape() == [1, CAPACITY, 2, 16] and int(present[0].numpy()) == PROMPT + 4


def test_xla_reuses_one_compiled_step_and_donates_the_cache():
    cm = compiled("xla")
    ids, mask = prompt(3)
    ids, mask = ids[1:], mask[1:]  # batch 2: a shape no other test compiles
    step = cm._stepper._step
    before = step._cache_size()
    cm.generate(ids, attention_mask=mask, max_new_tokens=NEW)
    assert step._cache_size() == before + 1  # one compiled step for the prompt and every new token
    old = cm._stepper.buffers
    # the cache index: the prompt's 7 tokens left-padded to 16 (the prefill's bucket), then 23 steps
    assert cm._stepper.padding == 9 and int(old[0]) == 9 + PROMPT + NEW - 1 and old[1].shape == (2, CAPACITY, 2, 16)
    cm._stepper.decode(np.asarray(ids[:, -1:]), np.ones((2, PROMPT + NEW), np.int64), np.full((2, 1), PROMPT + NEW - 1))
    assert all(b.is_deleted() for b in old)  # donated: XLA wrote the step's cache over them


@pytest.mark.parametrize("backend", BACKENDS)
def test_sampling_is_reproducible(backend):
    cm = compiled(backend)
    ids, mask = prompt(3)
    options = dict(do_sample=True, temperature=0.7, top_k=20, top_p=0.9, max_new_tokens=12)
    first = cm.generate(ids, attention_mask=mask, seed=11, **options)
    again = cm.generate(ids, attention_mask=mask, generator=torch.Generator().manual_seed(11), **options)
    other = cm.generate(ids, attention_mask=mask, seed=12, **options)
    assert np.asarray(first).tolist() == np.asarray(again).tolist()
    assert np.asarray(first).tolist() != np.asarray(other).tolist()
    assert np.asarray(first)[:, :PROMPT].tolist() == np.asarray(ids).tolist()


def test_eos_pads_finished_rows_and_the_streamer_gets_each_step():
    cm = compiled("onnxruntime")
    ids, mask = prompt(3)
    greedy = reference(ids, mask, NEW)
    eos = int(greedy[1, PROMPT + 4])  # ends row 1 after five tokens
    got = np.asarray(cm.generate(ids, attention_mask=mask, max_new_tokens=NEW, eos_token_id=eos, pad_token_id=1))
    for row in range(3):
        new = greedy[row, PROMPT:].tolist()
        end = new.index(eos) + 1 if eos in new else NEW
        want = new[:end] + [1] * (NEW - end)
        assert got[row, PROMPT:PROMPT + len(want)].tolist() == want[:got.shape[1] - PROMPT], row
    assert got[1, PROMPT + 5:].tolist() == [1] * (got.shape[1] - PROMPT - 5)

    class Recorder:
        def __init__(self):
            self.calls = []

        def put(self, value):
            self.calls.append(value.tolist())

        def end(self):
            self.calls.append("end")

    streamer = Recorder()
    out = cm.generate(ids[2:], max_new_tokens=6, streamer=streamer)
    assert streamer.calls[0] == np.asarray(ids[2:]).tolist() and streamer.calls[-1] == "end"
    assert [t for step in streamer.calls[1:-1] for t in step] == np.asarray(out)[0, PROMPT:].tolist()


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_inputs_are_clear_errors_before_the_runtime(backend):
    cm = compiled(backend)
    ids, mask = prompt(1)
    with pytest.raises(InputError, match=r"prompt \(7 tokens\) plus max_new_tokens \(60\) is 67 tokens, over the "
                                         r"model's cache capacity \(64,"):
        cm.generate(ids, max_new_tokens=60)
    with pytest.raises(InputError, match=r"prompt \(70 tokens\) plus max_new_tokens \(1\) is 71 tokens, over the "
                                         r"model's cache capacity \(64,"):  # before the prefill graph runs
        cm.generate(jnp.ones((1, 70), jnp.int32), max_new_tokens=1)
    with pytest.raises(InputError, match="token ids must be integers.*float32"):
        cm.generate(ids.astype(jnp.float32), max_new_tokens=2)
    with pytest.raises(InputError, match=r"token id 100 is outside the vocabulary \[0, 100\)"):
        cm.generate(jnp.array([[5, 100]], jnp.int32), max_new_tokens=2)
    with pytest.raises(InputError, match=r"token id -1 is outside the vocabulary"):
        cm.generate(jnp.array([[-1, 5]], jnp.int32), max_new_tokens=2)
    with pytest.raises(AccelirError, match="backend='auto': a flax decoder generates on 'onnxruntime' or 'xla'"):
        accelir.optimize(bound(), (ids,), backend="auto")


def test_generate_without_torch_says_to_install_it(monkeypatch):
    import sys
    cm = compiled("onnxruntime")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(AccelirError, match="torch is not installed: pip install 'accelir\\[torch\\]'"):
        cm.generate(prompt(1)[0], max_new_tokens=2)


def test_a_module_without_a_cache_says_what_is_missing():
    module = Decoder()
    variables = init(module, 3)
    params_only = module.bind({"params": variables["params"]})
    with pytest.raises(CaptureError, match="variables hold no 'cache' collection \\(they hold params\\); build its "
                                           "attention with decode=True"):
        capture_flax_decoder(params_only)
    with pytest.raises(CaptureError, match="Decoder is not bound to its variables; pass module.bind\\(variables\\)"):
        capture_flax_decoder(module)

    class Plain(nn.Module):  # no decode cache at all: optimize() takes it as a plain jax callable
        @nn.compact
        def __call__(self, input_ids):
            return nn.Dense(VOCAB)(nn.Embed(VOCAB, 8)(input_ids))

    plain = Plain().bind(Plain().init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32)))
    ids = jnp.zeros((1, 4), jnp.int32)
    cm = accelir.optimize(plain, (ids,))
    assert not isinstance(cm, FlaxGenerationModel)
    with pytest.raises(AccelirError, match="generate\\(\\) needs a key/value cache path.*'cache' collection"):
        cm.generate(ids, max_new_tokens=2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_calling_the_model_runs_one_step_like_apply(backend):
    from accelir.accuracy import DEFAULT_BUDGETS, measure
    cm = compiled(backend)
    ids, mask = prompt(3)
    variables = bound().variables
    cache = [np.asarray(x) + np.float32(0.1) * (x.ndim > 0) for x in jax.tree_util.tree_leaves(variables["cache"])]
    cache = [np.broadcast_to(x, (3,) + x.shape[1:]) if x.ndim else np.int32(5) for x in cache]  # five slots filled
    slots = np.zeros((3, CAPACITY), np.int32)
    slots[:, :6] = 1
    inputs = [np.asarray(ids)[:, 5:6], slots, np.full((3, 1), 5, np.int32)]
    outs = cm(*inputs, *cache)
    tree = jax.tree_util.tree_structure(variables["cache"])
    want, mutated = Decoder().apply({"params": variables["params"], "cache": jax.tree_util.tree_unflatten(tree, cache)},
                                    *inputs, mutable=["cache"])
    want = [want, *jax.tree_util.tree_leaves(mutated["cache"])]
    assert len(outs) == len(want) == 7
    errors = measure([np.asarray(w) for w in want], [np.asarray(o) for o in outs])
    assert DEFAULT_BUDGETS["fp32"].met(errors), errors
    assert int(outs[1]) == 6


def test_export_writes_the_step_graph_and_plain_onnxruntime_runs_it(tmp_path):
    import onnxruntime as ort
    cm = compiled("onnxruntime")
    path = str(tmp_path / "decoder.onnx")
    assert cm.export(path) == path
    session = ort.InferenceSession(path)
    names = [i.name for i in session.get_inputs()]
    assert names[:4] == ["input_ids", "attention_mask", "position_ids",
                         "cache.MultiHeadDotProductAttention_0.cache_index"]
    ids, mask = prompt(1)
    cache = [np.asarray(x) for x in jax.tree_util.tree_leaves(bound().variables["cache"])]
    slots = np.zeros((1, CAPACITY), np.int32)
    tokens = list(np.asarray(ids)[0])
    for t in range(PROMPT + 3):
        slots[0, t] = 1
        logits, *cache = session.run(None, dict(zip(names, [np.array([[tokens[t]]], np.int32), slots,
                                                            np.array([[t]], np.int32), *cache])))
        if t >= PROMPT - 1:
            tokens.append(int(logits[0, -1].argmax()))
    assert tokens == reference(ids, mask, 4)[0].tolist()


class NnxDecoder(nnx.Module):
    """The same decoder in flax.nnx: its nnx.MultiHeadAttention layers hold nnx.Cache state after init_cache."""

    def __init__(self, rngs: nnx.Rngs):
        self.embed = nnx.Embed(VOCAB, 32, embedding_init=_wide, rngs=rngs)
        self.positions = nnx.Embed(CAPACITY, 32, embedding_init=_wide, rngs=rngs)
        self.layers = nnx.List([nnx.MultiHeadAttention(num_heads=2, in_features=32, decode=True, kernel_init=_wide,
                                                       rngs=rngs) for _ in range(2)])
        self.norm = nnx.LayerNorm(32, rngs=rngs)
        self.head = nnx.Linear(32, VOCAB, kernel_init=_wide, rngs=rngs)

    def __call__(self, input_ids, attention_mask, position_ids):
        x = self.embed(input_ids) + self.positions(position_ids)
        for layer in self.layers:
            x = x + layer(x, mask=attention_mask[:, None, None, :].astype(bool))
        return self.head(self.norm(x))

    def init_cache(self, batch: int) -> None:
        for layer in self.layers:
            layer.init_cache((batch, CAPACITY, 32))


def nnx_reference(model: NnxDecoder, ids, mask, new: int) -> np.ndarray:
    """Greedy decoding with a copy of the nnx model, its cache made by flax's init_cache for the batch."""
    model = nnx.clone(model)
    model.init_cache(ids.shape[0])
    last = nnx.jit(lambda m, *inputs: m(*inputs)[:, -1])
    return greedy_loop(lambda cache, *inputs: (last(model, *inputs), None), None, ids, mask, new)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_nnx_decoder_gives_the_tokens_of_its_own_loop(backend):
    model = NnxDecoder(nnx.Rngs(0))
    with pytest.raises(CaptureError, match="NnxDecoder holds no nnx.Cache state; .*call its init_cache"):
        capture_flax_decoder(model)
    model.init_cache(1)
    used = nnx.clone(model)
    used(prompt(1)[0][:, :1], jnp.ones((1, CAPACITY), jnp.int32), jnp.zeros((1, 1), jnp.int32))
    with pytest.raises(CaptureError, match="cache is not empty: layers.0.cache_index is 1; pass the module with "
                                           "the cache init / init_cache made"):
        accelir.optimize(used, (prompt(1)[0],), backend=backend)
    cm = accelir.optimize(model, (prompt(1)[0],), backend=backend)
    assert isinstance(cm, FlaxGenerationModel)
    assert "%cache.layers.1.cached_key: f32[batch,64,2,16]" in str(cm.graph).splitlines()[0]
    for batch in (1, 3):
        ids, mask = prompt(batch)
        want = nnx_reference(model, ids, mask, 12)
        assert np.asarray(cm.generate(ids, attention_mask=mask, max_new_tokens=12)).tolist() == want.tolist()
    assert len(set(want[:, PROMPT:].flatten().tolist())) > 5


def jax_params() -> dict:
    """A decoder in plain jax (no flax), its cache an explicit pytree: per layer keys and values [batch, 64, 2,
    16], one shared write index."""
    k = iter(jax.random.split(jax.random.PRNGKey(3), 8))
    normal = lambda *shape: jax.random.normal(next(k), shape) * 0.5  # noqa: E731
    return {"embed": normal(VOCAB, 32), "positions": normal(CAPACITY, 32), "head": normal(32, VOCAB),
            "layers": [{"qkv": normal(32, 96), "out": normal(32, 32)} for _ in range(2)]}


def jax_init_cache(batch: int) -> dict:
    return {"index": jnp.zeros((), jnp.int32),
            "layers": [{"k": jnp.zeros((batch, CAPACITY, 2, 16)), "v": jnp.zeros((batch, CAPACITY, 2, 16))}
                       for _ in range(2)]}


def jax_apply(params, cache, input_ids, attention_mask, position_ids):
    x = params["embed"][input_ids] + params["positions"][position_ids]
    visible = attention_mask[:, None, None, :] > 0
    index, layers = cache["index"], []
    for p, c in zip(params["layers"], cache["layers"]):
        q, k, v = (t.reshape(x.shape[0], 1, 2, 16) for t in jnp.split(x @ p["qkv"], 3, axis=-1))
        keys = jax.lax.dynamic_update_slice(c["k"], k, (0, index, 0, 0))
        values = jax.lax.dynamic_update_slice(c["v"], v, (0, index, 0, 0))
        scores = jnp.where(visible, jnp.einsum("bqhd,bkhd->bhqk", q, keys) / 4.0, -1e9)
        x = x + jnp.tanh(jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, -1), values).reshape(x.shape) @ p["out"])
        layers.append({"k": keys, "v": values})
    return jnp.tanh(x) @ params["head"], {"index": index + 1, "layers": layers}


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_explicit_cache_pytree_gives_the_tokens_of_its_own_loop(backend):
    params = jax_params()
    with pytest.raises(CaptureError, match="no cached_key / cached_value leaf"):  # leaves named k / v
        accelir.optimize(CacheDecoder(jax_apply, params, jax_init_cache), (prompt(1)[0],), backend=backend)
    cm = accelir.optimize(CacheDecoder(jax_apply, params, jax_init_cache, capacity=CAPACITY), (prompt(1)[0],),
                          backend=backend)
    assert isinstance(cm, FlaxGenerationModel)
    header = str(cm.graph).splitlines()[0]
    assert "%cache.index: i32[], %cache.layers.0.k: f32[batch,64,2,16]" in header
    step = jax.jit(lambda cache, *inputs: (lambda out: (out[0][:, -1], out[1]))(jax_apply(params, cache, *inputs)))
    for batch in (1, 3):
        ids, mask = prompt(batch)
        want = greedy_loop(step, jax_init_cache(batch), ids, mask, 12)
        assert np.asarray(cm.generate(ids, attention_mask=mask, max_new_tokens=12)).tolist() == want.tolist()
    assert len(set(want[:, PROMPT:].flatten().tolist())) > 5

    def drops_a_layer(params, cache, input_ids, attention_mask, position_ids):
        logits, new = jax_apply(params, cache, input_ids, attention_mask, position_ids)
        return logits, {"index": new["index"], "layers": new["layers"][:1]}
    with pytest.raises(CaptureError, match="returned a cache of another structure than it took"):
        accelir.optimize(CacheDecoder(drops_a_layer, params, jax_init_cache, capacity=CAPACITY), (prompt(1)[0],),
                         backend=backend)


def jax_prefill(params, cache, input_ids, attention_mask, position_ids):
    """jax_apply for a whole prompt at once: query i sits in slot index + i and sees the slots up to it that
    the mask keeps."""
    batch, length = input_ids.shape
    x = params["embed"][input_ids] + params["positions"][position_ids]
    index, layers = cache["index"], []
    slot = index + jnp.arange(length)
    visible = (attention_mask[:, None, None, :] > 0) & (jnp.arange(CAPACITY) <= slot[:, None])[None, None]
    for p, c in zip(params["layers"], cache["layers"]):
        q, k, v = (t.reshape(batch, length, 2, 16) for t in jnp.split(x @ p["qkv"], 3, axis=-1))
        keys = jax.lax.dynamic_update_slice(c["k"], k, (0, index, 0, 0))
        values = jax.lax.dynamic_update_slice(c["v"], v, (0, index, 0, 0))
        scores = jnp.where(visible, jnp.einsum("bqhd,bkhd->bhqk", q, keys) / 4.0, -1e9)
        x = x + jnp.tanh(jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, -1), values).reshape(x.shape) @ p["out"])
        layers.append({"k": keys, "v": values})
    return jnp.tanh(x) @ params["head"], {"index": index + length, "layers": layers}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_cache_decoder_prefills_with_its_own_prefill_fn(backend):
    """A prefill_fn taking the whole prompt becomes the prefill graph as it is (no scan), and gives the tokens
    of apply_fn's own loop."""
    params = jax_params()
    cm = accelir.optimize(CacheDecoder(jax_apply, params, jax_init_cache, capacity=CAPACITY, prefill_fn=jax_prefill),
                          (prompt(1)[0],), backend=backend)
    assert "scan" not in cm.prefill_graph.op_histogram()
    assert "%input_ids: i32[batch,seq]" in str(cm.prefill_graph).splitlines()[0]
    step = jax.jit(lambda cache, *inputs: (lambda out: (out[0][:, -1], out[1]))(jax_apply(params, cache, *inputs)))
    for batch in (1, 3):
        ids, mask = prompt(batch)
        want = greedy_loop(step, jax_init_cache(batch), ids, mask, 12)
        assert np.asarray(cm.generate(ids, attention_mask=mask, max_new_tokens=12)).tolist() == want.tolist()

    def flat_logits(params, cache, input_ids, attention_mask, position_ids):
        logits, new = jax_prefill(params, cache, input_ids, attention_mask, position_ids)
        return logits[:, -1], new
    with pytest.raises(CaptureError, match=r"prefill_fn must return logits \[batch, seq, vocab\]; it returned "
                                           r"shape \[batch, 100\]"):
        capture_flax_decoder(CacheDecoder(jax_apply, params, jax_init_cache, capacity=CAPACITY, prefill_fn=flat_logits))


class _ScanBlock(nn.Module):
    @nn.compact
    def __call__(self, x, _):
        return x + nn.MultiHeadDotProductAttention(num_heads=2, decode=True)(x), None


class ScannedDecoder(nn.Module):
    """Layers under nn.scan: each cache leaf gets a leading layers' axis."""

    @nn.compact
    def __call__(self, input_ids):
        layers = nn.scan(_ScanBlock, variable_axes={"params": 0, "cache": 0}, split_rngs={"params": True}, length=2)
        x, _ = layers()(nn.Embed(VOCAB, 32)(input_ids), None)
        return nn.Dense(VOCAB)(x)


def test_a_cache_stacked_over_layers_is_refused():
    scanned = ScannedDecoder()
    with pytest.raises(CaptureError, match=r"cache is stacked over layers \(.*cache_index has shape \[2\], not a "
                                           r"scalar\): .*without nn.scan"):
        accelir.optimize(scanned.bind(init(scanned)), (prompt(1)[0],))


def test_a_step_that_does_not_fit_is_a_capture_error():
    params = jax_params()

    def flat_logits(params, cache, input_ids, attention_mask, position_ids):
        logits, new = jax_apply(params, cache, input_ids, attention_mask, position_ids)
        return logits[:, 0], new

    def needs_more(params, cache, input_ids, attention_mask, position_ids, temperature):
        return jax_apply(params, cache, input_ids, attention_mask, position_ids)

    with pytest.raises(CaptureError, match=r"must return logits \[batch, 1, vocab\]; it returned \['f32\[batch,100\]'\]"):
        capture_flax_decoder(CacheDecoder(flat_logits, params, jax_init_cache, capacity=CAPACITY))
    with pytest.raises(CaptureError, match=r"cannot capture CacheDecoder's decode step \(one token, input_ids "
                                           r"\[batch, 1\] int32, with attention_mask, position_ids\): .*temperature"):
        capture_flax_decoder(CacheDecoder(needs_more, params, jax_init_cache, capacity=CAPACITY))


def test_reduced_precision_is_refused_for_a_flax_decoder():
    """Reduced precision is built for transformers causal LMs; a flax decoder says so instead of running float32."""
    module = MaskFreeDecoder()
    with pytest.raises(AccelirError, match=r"precision='int8': a flax decoder generates in float32 only"):
        accelir.optimize(module.bind(init(module)), (prompt(1)[0],), precision="int8")


FLAX_FACTORY = """
import flax.linen as nn
import jax
import jax.numpy as jnp


class Decoder(nn.Module):
    @nn.compact
    def __call__(self, input_ids):
        x = nn.Embed(50, 16, embedding_init=nn.initializers.normal(0.5))(input_ids)
        x = x + nn.MultiHeadDotProductAttention(num_heads=2, decode=True)(x)
        return nn.Dense(50)(x)


def make():
    module = Decoder()
    variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 32), jnp.int32))
    return module.bind(variables), (jnp.array([[3, 14, 15, 9, 2]], jnp.int32),)
"""


def test_bench_generate_times_a_flax_decoder_against_its_jax_loop(tmp_path, capsys):
    from accelir.cli import main
    path = tmp_path / "flax_factory.py"
    path.write_text(FLAX_FACTORY)
    assert main(["bench", f"{path}:make", "--generate", "6", "--repeats", "2", "--warmup", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("6 new tokens after a prompt of 5, batch 1, greedy")
    rows = {line.split("  ")[0].strip(): line.split() for line in lines[2:]}
    assert set(rows) == {"jax loop", "accelir -> onnxruntime", "accelir -> xla"}
    for row in rows.values():
        assert float(row[-4]) > 0 and float(row[-3]) > 0 and row[-1] == "yes"


def test_the_xla_step_reuses_the_prefills_device_weights():
    """The prefill (the step scanned: its weights in the scan's body, under other names) and the step hold one
    device copy of each of the model's weight matrices between them."""
    stepper = compiled("xla")._stepper
    model = [k for k in stepper.params if ".params." in k]  # the model's own arrays, not ones a pass made
    assert len(model) >= 7
    prefill = {id(a) for a in stepper.pre_params.values()}
    assert all(id(stepper.params[k]) in prefill for k in model)


def test_the_jax_loop_refuses_a_generation_longer_than_the_cache():
    """Past its cache's capacity flax's step would write every further token into the last slot (jax clamps the
    update's index) and give tokens of a model it is not: the loop refuses it, as generate does."""
    from accelir.frontends.jax.generation import jax_greedy
    namespace: dict = {}
    exec(FLAX_FACTORY, namespace)
    model, (ids,) = namespace["make"]()
    greedy = jax_greedy(model)
    assert greedy(ids, 27).shape == (1, 32)  # the capacity, 32, exactly
    with pytest.raises(InputError, match=r"the prompt \(5 tokens\) plus 28 new tokens is 33 tokens, over the "
                                         r"model's cache capacity \(32, "):
        greedy(ids, 28)
