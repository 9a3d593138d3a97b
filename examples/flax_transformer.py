"""A flax transformer encoder through accelir: capture the jax function, fuse, run on XLA and ONNX Runtime.

jax traces everything down to lax primitives, so layer norm, GELU, softmax and
attention arrive as chains of elementwise ops and reductions; the level-2 passes
fuse them back into composites.  The script prints which composites the passes
found, checks both backends against ``jax.jit`` of the same function, and times
all three.

Small by default (2 layers, width 64, 16 tokens); ``--full`` (or
``ACCELIR_FULL=1``) builds a BERT-base-sized encoder (12 layers, width 768, 128
tokens).

    python examples/flax_transformer.py [--full]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Callable

import flax.linen as nn
import jax
import numpy as np

import accelir
from accelir.timing import latency_table, time_interleaved

__all__ = ["Encoder", "build_model", "main"]

_COMPOSITES = ("attention", "layer_norm", "skip_layer_norm", "gelu", "softmax", "linear", "fusion")


class Block(nn.Module):
    """Pre-norm transformer block: attention and a GELU MLP, each with a residual."""

    heads: int
    mlp: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads)(h, h)
        h = nn.LayerNorm()(x)
        h = nn.Dense(self.mlp)(h)
        return x + nn.Dense(x.shape[-1])(nn.gelu(h, approximate=False))


class Encoder(nn.Module):
    vocab: int
    width: int
    heads: int
    layers: int
    max_len: int

    @nn.compact
    def __call__(self, ids: jax.Array) -> jax.Array:
        x = nn.Embed(self.vocab, self.width)(ids)
        pos = self.param("pos", nn.initializers.normal(0.02), (self.max_len, self.width))
        x = x + pos[: ids.shape[1]]
        for _ in range(self.layers):
            x = Block(self.heads, 4 * self.width)(x)
        return nn.LayerNorm()(x)


def build_model(full: bool) -> tuple[Callable[[jax.Array], jax.Array], jax.Array]:
    """The encoder's forward function with its random parameters closed over, and a batch of token ids."""
    if full:
        model, seq = Encoder(vocab=30522, width=768, heads=12, layers=12, max_len=512), 128
    else:
        model, seq = Encoder(vocab=1000, width=64, heads=4, layers=2, max_len=64), 16
    ids = jax.random.randint(jax.random.PRNGKey(1), (1, seq), 0, model.vocab)
    params = model.init(jax.random.PRNGKey(0), ids)

    def forward(tokens: jax.Array) -> jax.Array:
        return model.apply(params, tokens)
    return forward, ids


def _composites(graph: accelir.Graph) -> str:
    hist = graph.op_histogram()
    found = [f"{op} x{hist[op]}" for op in _COMPOSITES if hist.get(op)]
    return ", ".join(found) or "none"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", default=os.environ.get("ACCELIR_FULL") == "1",
                        help="a BERT-base-sized encoder instead of the 2-layer miniature")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per system")
    args = parser.parse_args(argv)

    forward, ids = build_model(args.full)
    jitted = jax.jit(forward)
    expected = np.asarray(jitted(ids))
    tolerance = 1e-4 + 1e-3 * float(np.abs(expected).max())

    compiled = {}
    for backend in ("xla", "onnxruntime"):
        t0 = time.perf_counter()
        compiled[backend] = accelir.optimize(forward, (ids,), backend=backend)
        seconds = time.perf_counter() - t0
        out = compiled[backend](ids)  # jax in, jax out
        err = float(np.abs(np.asarray(out) - expected).max())
        print(f"{backend:12s} optimize() took {seconds:.2f} s; max abs error vs jax.jit: {err:.2e}")
        if not err <= tolerance:
            raise SystemExit(f"{backend}: outputs differ from jax.jit by {err}")

    cm = compiled["xla"]
    print(f"\nnodes: {cm.source_graph.num_nodes()} captured -> {cm.graph.num_nodes()} after level-2 passes")
    print(f"composites captured: {_composites(cm.source_graph)}")
    print(f"composites after passes: {_composites(cm.graph)}")

    timings = time_interleaved({"jax.jit": lambda: jitted(ids).block_until_ready(),
                                "accelir -> xla": lambda: compiled["xla"](ids).block_until_ready(),
                                "accelir -> onnxruntime": lambda: compiled["onnxruntime"](ids)},
                               repeats=args.repeats)
    print("\nlatency:")
    print(latency_table(timings, "jax.jit", indent="  "))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
