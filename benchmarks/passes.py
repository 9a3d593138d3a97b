"""Pass pipeline timing: a synthetic graph at 10,000 and 100,000 nodes (growth must be
near linear: 10x the nodes, at most 12x the time) and, with ``--gpt2`` / ``--flax``,
node counts before / after level 2 and the pipeline time on GPT-2 small
(``GPT2Model(GPT2Config(use_cache=False))``, full size, random weights, 64 tokens) and a
flax transformer.

Each row gives wall and CPU seconds: on a shared machine the wall time also counts
other processes, the CPU time only this one.  Every row shows the fastest of
``--repeat`` runs, each on a fresh copy of the graph.  ``--checked`` also times the
PassManager's defaults (``verify_each=True`` with rollback snapshots).

    python benchmarks/passes.py [--sizes 10000 100000] [--gpt2] [--flax] [--level 2] [--checked] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

import accelir
from accelir.ir import DType, Graph, TensorType
from accelir.passes import pipeline

__all__ = ["synthetic_graph", "Timing", "time_pipeline", "best_of"]


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


@dataclass
class Timing:
    """One pipeline run: wall and CPU seconds, and the PassManager that ran it (its report)."""

    wall: float
    cpu: float
    pm: accelir.PassManager


def time_pipeline(g: Graph, level: int = 2, checked: bool = False) -> Timing:
    """Run the level's pipeline on ``g`` in place; ``checked`` keeps verify_each and snapshots on."""
    pm = accelir.PassManager(pipeline(level), verify_each=checked, snapshot=checked)
    t0, c0 = time.perf_counter(), time.process_time()
    pm.run(g)
    return Timing(time.perf_counter() - t0, time.process_time() - c0, pm)


def best_of(g: Graph, level: int, checked: bool, repeat: int) -> tuple[Timing, Graph]:
    """The fastest of ``repeat`` runs, each on a fresh copy of ``g``, and the graph it left."""
    runs = []
    for _ in range(max(repeat, 1)):
        h = g.copy()
        runs.append((time_pipeline(h, level, checked), h))
    return min(runs, key=lambda r: r[0].wall)


def _row(label: str, before: int, g: Graph, t: Timing) -> None:
    slow = sorted(t.pm.report.by_pass().items(), key=lambda kv: -kv[1])[:3]
    print(f"{label:<30} nodes {before:>7} -> {g.num_nodes():>6}  {t.wall:7.3f} s wall {t.cpu:7.3f} s cpu  "
          f"({t.pm.report.iterations} rounds, {len(t.pm.report.records)} pass runs; slowest: "
          + ", ".join(f"{k} {v:.3f}s" for k, v in slow) + ")", flush=True)


def bench_synthetic(sizes: list[int], level: int, checked: bool, repeat: int) -> None:
    times: dict[int, Timing] = {}
    for n in sizes:
        g = synthetic_graph(n)
        before = g.num_nodes()
        times[n], out = best_of(g, level, False, repeat)
        _row(f"synthetic {n}", before, out, times[n])
        if checked:
            t, out = best_of(g, level, True, repeat)
            _row("  with verify_each, snapshots", before, out, t)
    if len(sizes) >= 2:
        a, b = sorted(sizes)[0], sorted(sizes)[-1]
        print(f"growth: {b / a:.0f}x nodes -> {times[b].wall / times[a].wall:.1f}x wall time, "
              f"{times[b].cpu / times[a].cpu:.1f}x cpu time")


def _bench_model(label: str, g: Graph, level: int, checked: bool, repeat: int) -> None:
    before = g.num_nodes()
    t, out = best_of(g, level, False, repeat)
    _row(label, before, out, t)
    if checked:
        tc, out_checked = best_of(g, level, True, repeat)
        _row("  with verify_each, snapshots", before, out_checked, tc)
    print("  ops after:", dict(sorted(out.op_histogram().items(), key=lambda kv: -kv[1])[:12]))


def bench_gpt2(level: int, checked: bool, repeat: int) -> None:
    import torch
    from transformers import GPT2Config, GPT2Model
    torch.manual_seed(0)
    model = GPT2Model(GPT2Config(use_cache=False)).eval()
    ids = torch.randint(0, 50257, (1, 64))
    t0 = time.perf_counter()
    g = accelir.capture(model, (ids,))
    print(f"GPT-2 small captured in {time.perf_counter() - t0:.1f} s", flush=True)
    _bench_model("GPT-2 small (seq 64)", g, level, checked, repeat)


def bench_flax(level: int, checked: bool, repeat: int) -> None:
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
    _bench_model("flax transformer (4 blocks)", g, level, checked, repeat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000])
    ap.add_argument("--level", type=int, default=2)
    ap.add_argument("--gpt2", action="store_true")
    ap.add_argument("--flax", action="store_true")
    ap.add_argument("--checked", action="store_true", help="also time PassManager's verify_each and snapshots")
    ap.add_argument("--repeat", type=int, default=3, help="runs per row; the fastest is shown")
    args = ap.parse_args()
    bench_synthetic(args.sizes, args.level, args.checked, args.repeat)
    if args.gpt2:
        bench_gpt2(args.level, args.checked, args.repeat)
    if args.flax:
        bench_flax(args.level, args.checked, args.repeat)


if __name__ == "__main__":
    main()
