"""Pass pipeline timing: a synthetic graph at 10,000 and 100,000 nodes (growth must be
near linear: 10x the nodes, at most 12x the time) and, with ``--gpt2`` / ``--flax``,
node counts before / after level 2 and the pipeline time on GPT-2 small and a flax
transformer.

    python benchmarks/passes.py [--sizes 10000 100000] [--gpt2] [--flax] [--level 2] [--checked]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import accelir
from accelir.ir import DType, Graph, TensorType
from accelir.passes import pipeline

__all__ = ["synthetic_graph", "time_pipeline"]


def synthetic_graph(n_nodes: int, seed: int = 0) -> Graph:
    """A chain of small blocks, each with work for every cleanup pass and a gelu / softmax to fuse."""
    rng = np.random.default_rng(seed)
    g = Graph("synthetic")
    x = g.add_input(TensorType(DType.f32, (4, 16)), "x")
    half, one, zero = g.const(np.float32(0.5)), g.const(np.float32(1.0)), g.const(np.float32(0.0))
    inv_sqrt2 = g.const(np.float32(1 / np.sqrt(2)))
    v = x
    while len(g) < n_nodes:
        w = g.const(rng.standard_normal((16, 16)).astype(np.float32) * 0.1)
        h = g.apply("matmul", v, w)
        h = g.apply("add", g.apply("mul", h, one), zero)  # simplify: x * 1 + 0
        k = g.apply("add", g.const(np.float32(2.0)), g.const(np.float32(3.0)))  # fold
        dup1, dup2 = g.apply("mul", h, k), g.apply("mul", k, h)  # cse (commutative)
        h = g.apply("sub", g.apply("add", dup1, dup2), h)
        h = g.apply("neg", g.apply("neg", h))  # simplify: double negation
        gelu = g.apply("mul", g.apply("mul", h, half),
                       g.apply("add", one, g.apply("erf", g.apply("mul", h, inv_sqrt2))))
        g.apply("exp", gelu)  # dead
        m = g.apply("reduce_max", gelu, axes=(1,), keepdims=True)
        e = g.apply("exp", g.apply("sub", gelu, m))
        v = g.apply("div", e, g.apply("reduce_sum", e, axes=(1,), keepdims=True))
    g.set_outputs([v])
    return g


def time_pipeline(g: Graph, level: int = 2, verify_each: bool = False) -> tuple[float, accelir.PassManager]:
    pm = accelir.PassManager(pipeline(level), verify_each=verify_each, snapshot=False)
    t0 = time.perf_counter()
    pm.run(g)
    return time.perf_counter() - t0, pm


def _row(label: str, before: int, g: Graph, seconds: float, pm: accelir.PassManager) -> None:
    slow = sorted(pm.report.by_pass().items(), key=lambda kv: -kv[1])[:3]
    print(f"{label:<28} nodes {before:>7} -> {g.num_nodes():>7}  {seconds:7.3f} s  "
          f"({pm.report.iterations} iterations; slowest: "
          + ", ".join(f"{k} {v:.3f}s" for k, v in slow) + ")")


def bench_synthetic(sizes: list[int], level: int, checked: bool) -> None:
    times = {}
    for n in sizes:
        g = synthetic_graph(n)
        before = g.num_nodes()
        seconds, pm = time_pipeline(g, level)
        times[n] = seconds
        _row(f"synthetic {n}", before, g, seconds, pm)
        if checked:
            g2 = synthetic_graph(n)
            t0 = time.perf_counter()
            accelir.PassManager(pipeline(level)).run(g2)
            print(f"{'':<28} with verify_each and snapshots: {time.perf_counter() - t0:.3f} s")
    if len(sizes) >= 2:
        a, b = sorted(sizes)[0], sorted(sizes)[-1]
        print(f"growth: {b / a:.0f}x nodes -> {times[b] / times[a]:.1f}x time")


def bench_gpt2(level: int) -> None:
    import torch
    from transformers import GPT2Config, GPT2Model
    model = GPT2Model(GPT2Config(use_cache=False)).eval()
    ids = torch.randint(0, 50257, (1, 64))
    g = accelir.capture(model, (ids,))
    before = g.num_nodes()
    seconds, pm = time_pipeline(g, level)
    _row("GPT-2 small (seq 64)", before, g, seconds, pm)
    print("  ops after:", dict(sorted(g.op_histogram().items(), key=lambda kv: -kv[1])[:12]))


def bench_flax(level: int) -> None:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.LayerNorm()(x)
            h = nn.MultiHeadDotProductAttention(num_heads=4)(h, h)
            x = x + h
            h = nn.LayerNorm()(x)
            h = nn.Dense(256)(h)
            h = nn.gelu(h)
            return x + nn.Dense(64)(h)

    class Transformer(nn.Module):
        @nn.compact
        def __call__(self, x):
            for _ in range(4):
                x = Block()(x)
            return x

    model = Transformer()
    x = jnp.ones((2, 16, 64), jnp.float32)
    params = model.init(jax.random.PRNGKey(0), x)
    g = accelir.capture(lambda x: model.apply(params, x), (x,))
    before = g.num_nodes()
    seconds, pm = time_pipeline(g, level)
    _row("flax transformer (4 blocks)", before, g, seconds, pm)
    print("  ops after:", dict(sorted(g.op_histogram().items(), key=lambda kv: -kv[1])[:12]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000])
    ap.add_argument("--level", type=int, default=2)
    ap.add_argument("--gpt2", action="store_true")
    ap.add_argument("--flax", action="store_true")
    ap.add_argument("--checked", action="store_true", help="also time PassManager's verify_each and snapshots")
    args = ap.parse_args()
    bench_synthetic(args.sizes, args.level, args.checked)
    if args.gpt2:
        bench_gpt2(args.level)
    if args.flax:
        bench_flax(args.level)


if __name__ == "__main__":
    main()
