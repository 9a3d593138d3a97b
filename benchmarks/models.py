"""The models of the peer benchmark, each built with random weights (nothing is downloaded).

torch models come from transformers config classes at their published sizes
(GPT-2 small, BERT-base, ViT-base/16, ResNet-50); jax models are a flax
transformer encoder (BERT-base sized, the one of ``examples/flax_transformer.py``)
and a flax CNN.  ``quick=True`` gives miniatures of the same architectures, so a
run of every model and system takes about a minute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["ModelSpec", "MODELS"]


@dataclass(frozen=True)
class ModelSpec:
    """``build(quick)`` returns the model (a torch module or a jax function) and its example inputs."""

    name: str
    framework: str  # "torch" or "jax"
    build: Callable[[bool], tuple[Any, tuple]]
    description: str


def _torch_seeded() -> None:
    import torch
    torch.manual_seed(0)


def _keywords(model: Any, names: tuple[str, ...]) -> Any:
    """``model`` called with positional tensors bound to the keyword arguments ``names``.

    Every system then calls the model the same way (TorchScript export fills in
    unnamed positional parameters, which transformers' config defaults then
    collide with), and language models get an explicit attention mask, as
    they do in use.
    """
    import torch

    class Keywords(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> Any:
            return self.model(**dict(zip(names, tensors)))
    return Keywords().eval()


def _text(model: Any, vocab: int, seq: int) -> tuple[Any, tuple]:
    import torch
    ids = torch.randint(0, vocab, (1, seq))
    return _keywords(model, ("input_ids", "attention_mask")), (ids, torch.ones_like(ids))


def _image(model: Any, size: int) -> tuple[Any, tuple]:
    import torch
    return _keywords(model, ("pixel_values",)), (torch.randn(1, 3, size, size),)


def _gpt2(quick: bool) -> tuple[Any, tuple]:
    from transformers import GPT2Config, GPT2Model
    _torch_seeded()
    config = (GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=1000) if quick else GPT2Config())
    # one forward pass over the whole sequence: no KV cache to return
    config.use_cache = False
    return _text(GPT2Model(config), config.vocab_size, 16 if quick else 128)


def _bert(quick: bool) -> tuple[Any, tuple]:
    from transformers import BertConfig, BertModel
    _torch_seeded()
    config = (BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                         vocab_size=1000) if quick else BertConfig())
    return _text(BertModel(config), config.vocab_size, 16 if quick else 128)


def _vit(quick: bool) -> tuple[Any, tuple]:
    from transformers import ViTConfig, ViTModel
    _torch_seeded()
    config = (ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                        image_size=32, patch_size=8) if quick else ViTConfig())
    return _image(ViTModel(config), config.image_size)


def _resnet50(quick: bool) -> tuple[Any, tuple]:
    from transformers import ResNetConfig, ResNetModel
    _torch_seeded()
    # ResNetConfig() is ResNet-50: bottleneck blocks, depths 3-4-6-3
    config = (ResNetConfig(embedding_size=8, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic")
              if quick else ResNetConfig())
    return _image(ResNetModel(config), 32 if quick else 224)


def _flax_transformer(quick: bool) -> tuple[Any, tuple]:
    from examples.flax_transformer import build_model
    forward, ids = build_model(full=not quick)
    return forward, (ids,)


def _flax_cnn(quick: bool) -> tuple[Any, tuple]:
    import flax.linen as nn
    import jax

    widths = (8, 16) if quick else (64, 128, 256, 512)
    size = 32 if quick else 224

    class CNN(nn.Module):
        @nn.compact
        def __call__(self, x: jax.Array) -> jax.Array:
            for w in widths:
                x = nn.relu(nn.Conv(w, (3, 3))(x))
                x = nn.relu(nn.Conv(w, (3, 3))(x))
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            return nn.Dense(1000)(x.mean(axis=(1, 2)))

    model = CNN()
    images = jax.random.normal(jax.random.PRNGKey(1), (1, size, size, 3))
    params = model.init(jax.random.PRNGKey(0), images)

    def forward(x: jax.Array) -> jax.Array:
        return model.apply(params, x)
    return forward, (images,)


MODELS: dict[str, ModelSpec] = {m.name: m for m in (
    ModelSpec("gpt2", "torch", _gpt2, "transformers GPT-2 small (124M), 128 tokens"),
    ModelSpec("bert", "torch", _bert, "transformers BERT-base (110M), 128 tokens"),
    ModelSpec("vit", "torch", _vit, "transformers ViT-base/16 (86M), 224x224"),
    ModelSpec("resnet50", "torch", _resnet50, "transformers ResNet-50 (25M), 224x224"),
    ModelSpec("flax_transformer", "jax", _flax_transformer, "flax encoder, BERT-base sized, 128 tokens"),
    ModelSpec("flax_cnn", "jax", _flax_cnn, "flax VGG-style CNN (8 convs), 224x224 NHWC"),
)}
