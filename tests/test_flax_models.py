"""flax models through the JAX frontend, checked with the interpreter against jax.jit (tiny configs)."""

from __future__ import annotations

import numpy as np
import pytest

import jax
import flax.linen as nn
from flax import nnx

import accelir

from test_frontend_jax import assert_close, capture_and_check

RNG = np.random.default_rng(1)
KEY = jax.random.PRNGKey(0)


class MLP(nn.Module):
    features: tuple = (16, 16, 4)

    @nn.compact
    def __call__(self, x):
        for k, f in enumerate(self.features):
            x = nn.Dense(f)(x)
            if k + 1 < len(self.features):
                x = nn.relu(x)
        return x


class ResBlock(nn.Module):
    channels: int

    @nn.compact
    def __call__(self, x):
        y = nn.Conv(self.channels, (3, 3), padding="SAME", use_bias=False)(x)
        y = nn.BatchNorm(use_running_average=True)(y)
        y = nn.relu(y)
        y = nn.Conv(self.channels, (3, 3), padding="SAME", use_bias=False)(y)
        y = nn.BatchNorm(use_running_average=True)(y)
        return nn.relu(x + y)


class CNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(8, (3, 3), strides=(2, 2))(x)
        x = nn.BatchNorm(use_running_average=True)(x)
        x = nn.relu(x)
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = ResBlock(8)(x)
        x = nn.avg_pool(x, (2, 2), strides=(1, 1), padding="SAME")
        x = x.mean(axis=(1, 2))
        return nn.Dense(10)(x)


class EncoderBlock(nn.Module):
    heads: int = 2
    mlp: int = 32

    @nn.compact
    def __call__(self, x, mask=None):
        h = nn.LayerNorm()(x)
        h = nn.MultiHeadDotProductAttention(num_heads=self.heads, deterministic=True, dropout_rate=0.1)(
            h, h, mask=mask)
        x = x + nn.Dropout(0.1, deterministic=True)(h)
        h = nn.LayerNorm()(x)
        h = nn.Dense(self.mlp)(h)
        h = nn.gelu(h)
        h = nn.Dense(x.shape[-1])(h)
        return x + h


class ScanLayer(nn.Module):
    @nn.compact
    def __call__(self, x, mask):
        return EncoderBlock()(x, mask), None


class Decoder(nn.Module):
    vocab: int = 17
    dim: int = 16
    layers: int = 2

    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(self.vocab, self.dim)(tokens)
        mask = nn.make_causal_mask(tokens)
        stack = nn.scan(ScanLayer, variable_axes={"params": 0}, split_rngs={"params": True},
                        in_axes=nn.broadcast, length=self.layers)
        x, _ = stack()(x, mask)
        x = nn.LayerNorm()(x)
        return x @ self.variables["params"]["Embed_0"]["embedding"].T


def init_variables(model, *args):
    """Random variables of the model's shapes (variances positive); eval_shape spares an XLA compile."""
    def draw(path, s):
        if "var" in jax.tree_util.keystr(path):
            return RNG.uniform(0.5, 1.5, s.shape).astype(s.dtype)
        return (0.3 * RNG.standard_normal(s.shape)).astype(s.dtype)
    return jax.tree_util.tree_map_with_path(draw, jax.eval_shape(model.init, KEY, *args))


def test_mlp():
    x = RNG.standard_normal((3, 8)).astype(np.float32)
    m = MLP()
    v = init_variables(m, x)
    g = capture_and_check(m.apply, v, x)
    assert g.op_histogram()["matmul"] == 3


def test_bf16_encoder_block():
    import jax.numpy as jnp
    x = RNG.standard_normal((2, 5, 16)).astype(jnp.bfloat16)

    class Bf16Block(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.MultiHeadDotProductAttention(num_heads=2, dtype=jnp.bfloat16, deterministic=True)(
                nn.LayerNorm(dtype=jnp.bfloat16)(x))
            return x + nn.Dense(16, dtype=jnp.bfloat16)(nn.gelu(nn.Dense(32, dtype=jnp.bfloat16)(x + h)))
    m = Bf16Block()
    v = init_variables(m, x)
    g = capture_and_check(m.apply, v, x, rel=2e-2)
    assert any(n.output.type.dtype.value == "bf16" for n in g if n.op == "matmul")


def test_cnn_batchnorm_pool_residual():
    x = RNG.standard_normal((2, 16, 16, 3)).astype(np.float32)
    m = CNN()
    v = init_variables(m, x)
    g = capture_and_check(m.apply, v, x, rel=2e-5)
    hist = g.op_histogram()
    assert hist["conv"] == 3 and hist["max_pool"] == 1 and hist["avg_pool"] == 1


def test_cnn_params_frozen_and_symbolic_batch():
    x = RNG.standard_normal((2, 16, 16, 3)).astype(np.float32)
    m = CNN()
    v = init_variables(m, x)
    g = capture_and_check(m.apply, v, x, params_as_constants=True, symbolic_shapes=(None, "n, 16, 16, 3"),
                          rel=2e-5)
    assert [i.name for i in g.inputs] == ["arg1"] and g.inputs[0].type.shape == ("n", 16, 16, 3)
    x3 = RNG.standard_normal((3, 16, 16, 3)).astype(np.float32)
    assert_close(accelir.run_graph(g, [x3]), m.apply(v, x3), 2e-5)


def test_conv_transpose_group_norm_rms_norm_circular_depthwise():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            y = nn.ConvTranspose(4, (3, 3), strides=(2, 2))(x)
            y = nn.RMSNorm()(nn.GroupNorm(num_groups=2)(y))
            return nn.Conv(4, (3, 3), feature_group_count=4, padding="CIRCULAR")(y)
    x = RNG.standard_normal((2, 5, 5, 4)).astype(np.float32)
    m = Net()
    capture_and_check(m.apply, init_variables(m, x), x, rel=3e-5)


def test_transformer_encoder_block():
    x = RNG.standard_normal((2, 5, 16)).astype(np.float32)
    mask = np.tril(np.ones((2, 1, 5, 5), bool))
    m = EncoderBlock()
    v = init_variables(m, x, mask)
    capture_and_check(m.apply, v, x, mask)


def test_scanned_decoder_with_causal_mask():
    tokens = RNG.integers(0, 17, (2, 6)).astype(np.int32)
    m = Decoder()
    v = init_variables(m, tokens)
    g = capture_and_check(m.apply, v, tokens)
    assert g.op_histogram()["scan"] == 1
    scan = next(n for n in g if n.op == "scan")
    assert scan.attrs["length"] == 2 and any(n.op == "softmax" or n.op == "exp" for n in scan.regions[0])
    # provenance reaches into regions and through jax's jitted helpers
    body = list(scan.regions[0])
    assert any(n.meta.get("module", "").endswith("EncoderBlock_0/LayerNorm_0") for n in body)
    assert all(n.meta.get("source", "").startswith("test_flax_models.py:") for n in g if n.op == "gather")


def test_scanned_decoder_dynamic_batch_and_seq():
    tokens = RNG.integers(0, 17, (2, 6)).astype(np.int32)
    m = Decoder()
    v = init_variables(m, tokens)
    g = capture_and_check(m.apply, v, tokens, symbolic_shapes=(None, "b, s"))
    assert g.outputs[0].type.shape == ("b", "s", 17)
    t2 = RNG.integers(0, 17, (3, 4)).astype(np.int32)
    sig = g.meta["signature"]
    assert_close(accelir.run_graph(g, sig.flatten(v, t2)), m.apply(v, t2))


class NnxModel(nnx.Module):
    def __init__(self, rngs):
        self.proj = nnx.Linear(8, 16, rngs=rngs)
        self.norm = nnx.LayerNorm(16, rngs=rngs)
        self.conv = nnx.Conv(1, 4, (3,), rngs=rngs)
        self.out = nnx.Linear(16, 4, rngs=rngs)

    def __call__(self, x):
        h = self.norm(nnx.gelu(self.proj(x)))
        c = self.conv(h[..., None]).max(-1)
        return self.out(h + c)


def test_nnx_module_closed_over_and_split():
    model = NnxModel(nnx.Rngs(0))
    x = RNG.standard_normal((3, 8)).astype(np.float32)
    g = capture_and_check(model, x)
    assert len(g.inputs) == 1
    graphdef, state = nnx.split(model)

    def pure(state, x):
        return nnx.merge(graphdef, state)(x)
    g2 = capture_and_check(pure, state, x)
    assert len(g2.inputs) == 1 + len(jax.tree_util.tree_leaves(state))
    assert any("proj" in (i.name or "") for i in g2.inputs)


@pytest.mark.slow
def test_full_size_scanned_decoder():
    tokens = RNG.integers(0, 1000, (1, 32)).astype(np.int32)
    m = Decoder(vocab=1000, dim=768, layers=12)
    v = init_variables(m, tokens)
    g = capture_and_check(m.apply, v, tokens, params_as_constants=True, rel=1e-4)
    assert g.op_histogram()["scan"] == 1
