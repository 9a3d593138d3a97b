"""Test helper: a transformers causal LM's decode step as a plain module, and its capture.

The step takes one new token per row, the attention mask over past + new tokens, the new
token's position and each layer's past keys / values, rebuilds the model's ``DynamicCache``
from them and returns the logits and every layer's present keys / values as tensors.  The
past length is a symbolic dim of the capture.  Tiny configs of each decoder architecture
(random weights, no downloads) live in :data:`ARCHS`.
"""

from __future__ import annotations

from typing import Callable

import torch
import transformers

import accelir


class DecodeStep(torch.nn.Module):
    """``(input_ids [B,1], attention_mask [B,P+1], position_ids [B,1], k0, v0, k1, v1, ...)`` ->
    ``(logits [B,1,V], present k0, v0, ...)``; each past k / v is ``[B, kv_heads, P, head_dim]``."""

    def __init__(self, model: transformers.PreTrainedModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids, *past):
        pairs = [(past[i], past[i + 1]) for i in range(0, len(past), 2)]
        cache = transformers.DynamicCache(pairs, config=self.model.config)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         cache=cache, use_cache=True)
        present = []
        for layer in out.past_key_values.layers:
            present += [layer.keys, layer.values]
        return (out.logits, *present)


_COMMON = dict(vocab_size=97, max_position_embeddings=128, use_cache=True)


def gpt2() -> transformers.PreTrainedModel:
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=97, n_positions=128, use_cache=True))


def llama() -> transformers.PreTrainedModel:
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=96,
        **_COMMON))


def qwen2() -> transformers.PreTrainedModel:
    return transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
        num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=1, intermediate_size=96,
        **_COMMON))


def mistral() -> transformers.PreTrainedModel:
    return transformers.MistralForCausalLM(transformers.MistralConfig(
        num_hidden_layers=2, hidden_size=64, num_attention_heads=8, num_key_value_heads=2, intermediate_size=96,
        sliding_window=None, **_COMMON))


def phi() -> transformers.PreTrainedModel:
    return transformers.PhiForCausalLM(transformers.PhiConfig(
        num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=96, partial_rotary_factor=0.5,
        **_COMMON))


def gemma() -> transformers.PreTrainedModel:
    return transformers.GemmaForCausalLM(transformers.GemmaConfig(
        num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        intermediate_size=96, **_COMMON))


ARCHS: dict[str, Callable[[], transformers.PreTrainedModel]] = {
    "gpt2": gpt2, "llama": llama, "qwen2": qwen2, "mistral": mistral, "phi": phi, "gemma": gemma}


def build(arch: str, attn: str = "sdpa") -> DecodeStep:
    """The decode step of ``arch`` with fixed random weights, in eval mode."""
    torch.manual_seed(0)
    model = ARCHS[arch]()
    model.config._attn_implementation = attn
    return DecodeStep(model.eval()).eval()


def kv_shape(step: DecodeStep) -> tuple[int, int, int]:
    """(layers, kv_heads, head_dim) of the step's model."""
    cfg = step.model.config
    layers = cfg.num_hidden_layers
    heads = cfg.num_attention_heads
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return layers, kv, head_dim


def inputs(step: DecodeStep, past: int, batch: int = 3, pad: tuple[int, ...] = (0, 2, 1), seed: int = 0
           ) -> tuple[torch.Tensor, ...]:
    """Decode-step inputs: row ``i`` is left-padded by ``min(pad[i], past)`` tokens."""
    g = torch.Generator().manual_seed(seed)
    layers, kv, hd = kv_shape(step)
    ids = torch.randint(0, step.model.config.vocab_size, (batch, 1), generator=g)
    mask = torch.ones(batch, past + 1, dtype=torch.int64)
    pos = torch.empty(batch, 1, dtype=torch.int64)
    for i in range(batch):
        p = min(pad[i % len(pad)], past)
        mask[i, :p] = 0
        pos[i, 0] = past - p
    kvs = [torch.randn(batch, kv, past, hd, generator=g) for _ in range(2 * layers)]
    return (ids, mask, pos, *kvs)


def capture(step: DecodeStep, past: int = 5, batch: int = 3) -> accelir.Graph:
    """The decode step captured with torch.export, the past length a symbolic dim ``past``."""
    P = torch.export.Dim("past", min=0, max=1024)
    layers = kv_shape(step)[0]
    shapes = (None, {1: P + 1}, None, tuple({2: P} for _ in range(2 * layers)))
    return accelir.capture(step, inputs(step, past, batch), dynamic_shapes=shapes)
