"""transformers models captured with the torch frontend and run in the interpreter.

Each model is built from a small config with random weights (full-size configs are
marked slow) and compared with eager torch on the same inputs: the relative error
of every output must be at most 1e-4 of its largest magnitude in f32 (looser in
f16 / bf16, whose rounding differs between torch's kernels and numpy).  The
output structure (ModelOutput) must come back through the signature.
"""

from __future__ import annotations

import pytest
import torch
import torch.utils._pytree as pytree

transformers = pytest.importorskip("transformers")

from accelir import run_graph, verify  # noqa: E402
from accelir.frontends.torch import capture_torch  # noqa: E402
from accelir.testing import assert_relative_close  # noqa: E402

Dim = torch.export.Dim
TOL = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 5e-2}


def text_inputs(vocab: int, batch: int = 2, seq: int = 8) -> tuple[tuple, dict]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[0, -2:] = 0  # right padding on one row exercises the attention mask
    return (ids,), {"attention_mask": mask}


def _image(batch: int = 2, size: int = 32, channels: int = 3) -> tuple[tuple, dict]:
    return (torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(2)),), {}


def gpt2():
    cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=64, use_cache=False)
    return transformers.GPT2Model(cfg), text_inputs(100)


def bert():
    cfg = transformers.BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128,
                                  vocab_size=100, max_position_embeddings=64)
    return transformers.BertModel(cfg), text_inputs(100)


def distilbert():
    cfg = transformers.DistilBertConfig(n_layers=2, dim=64, n_heads=4, hidden_dim=128, vocab_size=100,
                                        max_position_embeddings=64)
    return transformers.DistilBertModel(cfg), text_inputs(100)


def llama():
    cfg = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                                   intermediate_size=128, vocab_size=100, max_position_embeddings=64, use_cache=False)
    return transformers.LlamaModel(cfg), text_inputs(100)


def t5_encoder():
    cfg = transformers.T5Config(num_layers=2, d_model=64, num_heads=4, d_kv=16, d_ff=128, vocab_size=100)
    return transformers.T5EncoderModel(cfg), text_inputs(100)


def whisper_encoder():
    from transformers.models.whisper.modeling_whisper import WhisperEncoder
    cfg = transformers.WhisperConfig(encoder_layers=2, d_model=64, encoder_attention_heads=4, encoder_ffn_dim=128,
                                     num_mel_bins=16, max_source_positions=16, vocab_size=100, pad_token_id=0,
                                     bos_token_id=0, eos_token_id=0, decoder_start_token_id=0)
    feats = torch.randn(2, 16, 32, generator=torch.Generator().manual_seed(3))
    return WhisperEncoder(cfg), ((feats,), {})


def vit():
    cfg = transformers.ViTConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128,
                                 image_size=32, patch_size=8)
    return transformers.ViTModel(cfg), _image()


def resnet():
    cfg = transformers.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1])
    return transformers.ResNetModel(cfg), _image()


def mobilenet_v2():
    cfg = transformers.MobileNetV2Config(image_size=32, depth_multiplier=0.35)
    return transformers.MobileNetV2Model(cfg), _image()


def convnext():
    cfg = transformers.ConvNextConfig(hidden_sizes=[16, 32], depths=[1, 1], num_stages=2)
    return transformers.ConvNextModel(cfg), _image()


MODELS = {f.__name__: f for f in (gpt2, bert, distilbert, llama, t5_encoder, whisper_encoder, vit, resnet,
                                  mobilenet_v2, convnext)}


def _randomise_norm_stats(model: torch.nn.Module) -> None:
    """Fresh batch-norm statistics are 0 / 1, which would hide a wrong mean / var mapping."""
    g = torch.Generator().manual_seed(4)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def check_model(model: torch.nn.Module, args: tuple, kwargs: dict, dtype: torch.dtype = torch.float32,
                dynamic_shapes=None, run_args: tuple | None = None, run_kwargs: dict | None = None):
    torch.manual_seed(0)
    model.eval()
    _randomise_norm_stats(model)
    model.to(dtype)
    args = tuple(a.to(dtype) if a.is_floating_point() else a for a in args)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    graph = capture_torch(model, args, dynamic_shapes, example_kwargs=kwargs)
    verify(graph)
    assert graph.meta["frontend"] == "torch"
    assert not model.training
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    run_args = args if run_args is None else run_args
    run_kwargs = kwargs if run_kwargs is None else run_kwargs
    sig = graph.meta["signature"]
    outs = run_graph(graph, sig.flatten(*run_args, **run_kwargs))
    got = sig.unflatten([torch.from_numpy(o) if o.dtype.name != "bfloat16" else
                         torch.from_numpy(o.view("int16")).view(torch.bfloat16) for o in outs])
    with torch.no_grad():
        want = model(*run_args, **run_kwargs)
    assert type(got) is type(want)
    assert_relative_close(pytree.tree_leaves(got), pytree.tree_leaves(want), TOL[dtype])
    return graph


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_matches_eager(name):
    model, (args, kwargs) = MODELS[name]()
    check_model(model, args, kwargs)


@pytest.mark.parametrize("name,dtype", [("gpt2", torch.float16), ("llama", torch.bfloat16),
                                        ("bert", torch.bfloat16), ("resnet", torch.float16)])
def test_model_low_precision(name, dtype):
    model, (args, kwargs) = MODELS[name]()
    graph = check_model(model, args, kwargs, dtype=dtype)
    want = {torch.float16: "f16", torch.bfloat16: "bf16"}[dtype]
    assert any(str(v.dtype) == want for v in graph.outputs)


@pytest.mark.parametrize("name", ["gpt2", "llama", "bert"])
def test_dynamic_batch_and_sequence(name):
    model, (args, kwargs) = MODELS[name]()
    batch, seq = Dim("batch"), Dim("seq", max=64)
    dynamic = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    run_args, run_kwargs = text_inputs(100, batch=3, seq=5)
    graph = check_model(model, args, kwargs, dynamic_shapes=dynamic, run_args=run_args, run_kwargs=run_kwargs)
    assert [v.shape for v in graph.inputs] == [("batch", "seq"), ("batch", "seq")]
    assert graph.outputs[0].shape[:2] == ("batch", "seq")


def test_vit_dynamic_batch():
    model, (args, kwargs) = MODELS["vit"]()
    graph = check_model(model, args, kwargs, dynamic_shapes=({0: Dim("batch")},), run_args=_image(batch=3)[0])
    assert graph.inputs[0].shape[0] == "batch"


def test_provenance_names_modules_and_lines():
    model, (args, kwargs) = MODELS["gpt2"]()
    graph = capture_torch(model.eval(), args, example_kwargs=kwargs)
    attn = [n for n in graph.nodes if n.op == "attention"]
    assert attn and attn[0].meta["module"] == "h.0.attn"
    assert attn[0].meta["source"].startswith("modeling_gpt2.py:")
    assert attn[0].meta["origin"] == "scaled_dot_product_attention"
    assert "h.0.attn.c_attn.weight" in graph.constants


def full_size(name: str):
    if name == "gpt2":
        return transformers.GPT2Model(transformers.GPT2Config(use_cache=False)), text_inputs(50257, seq=32)
    if name == "bert":
        return transformers.BertModel(transformers.BertConfig()), text_inputs(30522, seq=32)
    if name == "llama":
        cfg = transformers.LlamaConfig(num_hidden_layers=4, hidden_size=1024, num_attention_heads=16,
                                       num_key_value_heads=4, intermediate_size=2816, use_cache=False)
        return transformers.LlamaModel(cfg), text_inputs(32000, seq=32)
    if name == "vit":
        return transformers.ViTModel(transformers.ViTConfig()), _image(batch=1, size=224)
    return transformers.ResNetModel(transformers.ResNetConfig()), _image(batch=1, size=224)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gpt2", "bert", "llama", "vit", "resnet"])
def test_full_size_model(name):
    model, (args, kwargs) = full_size(name)
    check_model(model, args, kwargs)
