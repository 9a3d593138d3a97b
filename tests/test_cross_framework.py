"""One small transformer written in torch and in flax with identical weights: both captures give
the same numbers in the interpreter, and each matches its own framework."""

from __future__ import annotations

import numpy as np

import torch
import jax
import flax.linen as nn

import accelir
from accelir.frontends.jax import capture_jax
from accelir.frontends.torch import capture_torch

from test_frontend_jax import assert_close

VOCAB, DIM, HEADS, MLP, LAYERS, EPS = 23, 16, 2, 32, 2, 1e-5


class TorchBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1 = torch.nn.LayerNorm(DIM, eps=EPS)
        self.q = torch.nn.Linear(DIM, DIM)
        self.k = torch.nn.Linear(DIM, DIM)
        self.v = torch.nn.Linear(DIM, DIM)
        self.o = torch.nn.Linear(DIM, DIM)
        self.ln2 = torch.nn.LayerNorm(DIM, eps=EPS)
        self.up = torch.nn.Linear(DIM, MLP)
        self.down = torch.nn.Linear(MLP, DIM)

    def forward(self, x):
        b, s, _ = x.shape
        h = self.ln1(x)

        def heads(t):
            return t.view(b, s, HEADS, DIM // HEADS).transpose(1, 2)
        a = torch.nn.functional.scaled_dot_product_attention(heads(self.q(h)), heads(self.k(h)), heads(self.v(h)),
                                                             is_causal=True)
        x = x + self.o(a.transpose(1, 2).reshape(b, s, DIM))
        return x + self.down(torch.nn.functional.gelu(self.up(self.ln2(x))))


class TorchLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, DIM)
        self.blocks = torch.nn.ModuleList([TorchBlock() for _ in range(LAYERS)])
        self.ln = torch.nn.LayerNorm(DIM, eps=EPS)
        self.head = torch.nn.Linear(DIM, VOCAB, bias=False)

    def forward(self, tokens):
        x = self.embed(tokens)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x))


class FlaxBlock(nn.Module):
    @nn.compact
    def __call__(self, x, mask):
        h = nn.LayerNorm(epsilon=EPS, name="ln1")(x)
        h = nn.MultiHeadDotProductAttention(num_heads=HEADS, name="attn", deterministic=True)(h, h, mask=mask)
        x = x + h
        h = nn.Dense(MLP, name="up")(nn.LayerNorm(epsilon=EPS, name="ln2")(x))
        return x + nn.Dense(DIM, name="down")(nn.gelu(h, approximate=False))


class FlaxLM(nn.Module):
    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(VOCAB, DIM, name="embed")(tokens)
        mask = nn.make_causal_mask(tokens)
        for k in range(LAYERS):
            x = FlaxBlock(name=f"blocks_{k}")(x, mask)
        return nn.Dense(VOCAB, use_bias=False, name="head")(nn.LayerNorm(epsilon=EPS, name="ln")(x))


def _np(t):
    return t.detach().numpy().astype(np.float32)


def flax_params_from_torch(model: TorchLM) -> dict:
    """The torch weights laid out as the flax model's params (Dense kernels are W.T; attention splits heads)."""
    hd = DIM // HEADS

    def dense(lin, shape_in=None, shape_out=None):
        kernel = _np(lin.weight).T
        out = {"kernel": kernel.reshape(shape_in or kernel.shape)}
        if lin.bias is not None:
            out["bias"] = _np(lin.bias).reshape(shape_out or (-1,))
        return out

    def ln(m):
        return {"scale": _np(m.weight), "bias": _np(m.bias)}

    params = {"embed": {"embedding": _np(model.embed.weight)}, "ln": ln(model.ln), "head": dense(model.head)}
    for k, blk in enumerate(model.blocks):
        params[f"blocks_{k}"] = {
            "ln1": ln(blk.ln1), "ln2": ln(blk.ln2), "up": dense(blk.up), "down": dense(blk.down),
            "attn": {"query": dense(blk.q, (DIM, HEADS, hd), (HEADS, hd)),
                     "key": dense(blk.k, (DIM, HEADS, hd), (HEADS, hd)),
                     "value": dense(blk.v, (DIM, HEADS, hd), (HEADS, hd)),
                     "out": dense(blk.o, (HEADS, hd, DIM))},
        }
    return {"params": params}


def test_torch_and_flax_transformer_agree():
    torch.manual_seed(0)
    tmodel = TorchLM().eval()
    fmodel = FlaxLM()
    tokens = np.random.default_rng(0).integers(0, VOCAB, (2, 7)).astype(np.int64)
    variables = flax_params_from_torch(tmodel)
    # the flax layout of the torch weights is what flax itself would build
    shapes = jax.eval_shape(fmodel.init, jax.random.PRNGKey(0), tokens.astype(np.int32))
    assert jax.tree_util.tree_map(lambda s: s.shape, shapes) == jax.tree_util.tree_map(np.shape, variables)

    g_torch = capture_torch(tmodel, (torch.from_numpy(tokens),))
    g_flax = capture_jax(fmodel.apply, (variables, tokens.astype(np.int32)), params_as_constants=True)
    accelir.verify(g_flax)
    out_torch = accelir.run_graph(g_torch, g_torch.meta["signature"].flatten(torch.from_numpy(tokens)))[0]
    out_flax = accelir.run_graph(g_flax, [tokens.astype(np.int32)])[0]

    with torch.no_grad():
        eager = tmodel(torch.from_numpy(tokens)).numpy()
    assert_close(out_torch, eager)
    assert_close(out_flax, jax.jit(fmodel.apply)(variables, tokens.astype(np.int32)))
    assert_close(out_flax, out_torch)
    assert_close(out_flax, eager)
