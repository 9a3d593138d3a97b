"""Each fusion fires on real captured models: GPT-2, BERT, ViT and ResNet through the
torch frontend, a flax transformer through the jax frontend (tiny configs).

Every test counts the fused ops after the level-2 pipeline and checks the optimised
graph, run by the interpreter, against the framework's own output; the flax model is
also grouped into elementwise fusion regions (the XLA path) and checked the same way.
"""

from __future__ import annotations

import collections

import numpy as np
import pytest

import accelir
from accelir import PassManager
from accelir.passes import get_pass, pipeline
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

FUSED = ("gelu", "silu", "softmax", "layer_norm", "rms_norm", "skip_layer_norm", "skip_rms_norm", "attention",
         "linear", "fused_conv", "conv", "batch_norm", "matmul", "dot_general")


def _optimise(g: accelir.Graph) -> dict[str, int]:
    PassManager(pipeline(2)).run(g)
    accelir.verify(g)
    hist = g.op_histogram()
    return {k: hist[k] for k in FUSED if k in hist}


def _activations(g: accelir.Graph) -> dict[str, int]:
    return dict(collections.Counter(n.attrs["activation"] for n in g.nodes if n.op in ("linear", "fused_conv")))


def _check(g: accelir.Graph, inputs: list, want) -> None:
    got = accelir.run_graph(g, [np.asarray(x) for x in inputs])[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_gpt2(impl: str) -> None:
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=32, use_cache=False,
                                     attn_implementation=impl)
    model = transformers.GPT2Model(config).eval()
    ids = torch.randint(0, 100, (2, 8))
    mask = torch.ones(2, 8, dtype=torch.long)
    g = accelir.capture(model, (ids,), example_kwargs={"attention_mask": mask})
    # 2 blocks: ln_1, ln_2 each and ln_f all read a residual sum; the MLP's tanh GELU joins its linear
    assert _optimise(g) == {"skip_layer_norm": 5, "attention": 2, "linear": 8}
    assert _activations(g) == {"none": 6, "gelu_tanh": 2}
    assert all(n.inputs[0].rank == 3 for n in g.nodes if n.op == "linear")  # addmm's flattening is undone
    _check(g, [ids, mask], model(ids, attention_mask=mask).last_hidden_state.detach().numpy())


def test_bert_eager_attention() -> None:
    config = transformers.BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                     intermediate_size=128, vocab_size=100, attn_implementation="eager")
    model = transformers.BertModel(config).eval()
    ids = torch.randint(0, 100, (2, 8))
    g = accelir.capture(model, (ids,))
    # q, k and v stay three linears: each feeds the fused attention through its head split alone
    assert _optimise(g) == {"skip_layer_norm": 5, "attention": 2, "linear": 13}
    assert _activations(g) == {"none": 10, "gelu": 2, "tanh": 1}
    _check(g, [ids], model(ids).last_hidden_state.detach().numpy())


def test_vit() -> None:
    config = transformers.ViTConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128,
                                    image_size=32, patch_size=8)
    model = transformers.ViTModel(config).eval()
    pixels = torch.randn(1, 3, 32, 32)
    g = accelir.capture(model, (pixels,))
    assert _optimise(g) == {"conv": 1, "skip_layer_norm": 5, "attention": 2, "linear": 13}
    assert _activations(g) == {"none": 10, "gelu": 2, "tanh": 1}
    # the mask ViT builds from the sequence length alone keeps every key: the attention goes without it
    assert [len(n.inputs) for n in g.nodes if n.op == "attention"] == [3, 3]
    _check(g, [pixels], model(pixels).last_hidden_state.detach().numpy())


def test_resnet_folds_batch_norm_and_relu() -> None:
    config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    model = transformers.ResNetModel(config).eval()
    with torch.no_grad():  # non-trivial running statistics, so folding them is not a no-op
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    pixels = torch.randn(1, 3, 32, 32)
    g = accelir.capture(model, (pixels,))
    assert g.op_histogram()["batch_norm"] == 6
    # the stem and each first conv of a block end in relu; the second convs and the
    # shortcut feed the residual add, which keeps its own relu
    assert _optimise(g) == {"fused_conv": 3, "conv": 3}
    assert _activations(g) == {"relu": 3}
    _check(g, [pixels], model(pixels).last_hidden_state.detach().numpy())


def test_flax_transformer() -> None:
    jax = pytest.importorskip("jax")
    nn = pytest.importorskip("flax.linen")
    jnp = jax.numpy

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x, mask):
            h = nn.LayerNorm()(x)
            x = x + nn.MultiHeadDotProductAttention(num_heads=4)(h, h, mask=mask)
            h = nn.Dense(4 * x.shape[-1])(nn.LayerNorm()(x))
            return x + nn.Dense(x.shape[-1])(nn.gelu(h))

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):
            mask = nn.make_causal_mask(jnp.ones(x.shape[:2]))
            for _ in range(2):
                x = Block()(x, mask)
            return nn.silu(nn.Dense(16)(nn.RMSNorm()(x)))

    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 32)), jnp.float32)
    model = Model()
    params = model.init(jax.random.PRNGKey(0), x)
    # non-trivial norm scales and biases, so they survive simplification and are fused too
    rng = np.random.default_rng(1)
    params = jax.tree_util.tree_map(lambda p: p + 0.1 * rng.standard_normal(p.shape).astype(np.float32), params)

    def f(x):
        return model.apply(params, x)

    g = accelir.capture(f, (x,))
    before = len(g)
    grouped = g.copy()
    assert get_pass("fuse_elementwise")(grouped)
    accelir.verify(grouped)
    assert grouped.op_histogram()["fusion"] >= 10
    _check(grouped, [x], np.asarray(f(x)))
    counts = _optimise(g)
    # the q, k, v head projections (3-D DenseGeneral kernels, their bias added after the head split) are
    # matmuls of one input: each layer's three become one packed linear
    assert counts == {"layer_norm": 1, "skip_layer_norm": 3, "skip_rms_norm": 1, "attention": 2, "linear": 9}
    assert _activations(g) == {"none": 6, "gelu_tanh": 2, "silu": 1}
    assert len(g) < before / 3
    _check(g, [x], np.asarray(f(x)))
