"""Pass pipeline timing: a synthetic graph at 10,000 and 100,000 nodes (growth must be
near linear: 10x the nodes, at most 12x the time) and, with ``--gpt2`` / ``--flax``,
node counts before / after level 2 and the pipeline time on GPT-2 small
(``GPT2Model(GPT2Config(use_cache=False))``, full size, random weights, 64 tokens) and a
flax transformer.

Each row gives wall and CPU seconds: on a shared machine the wall time also counts
other processes, the CPU time only this one.  Every row shows the fastest of
``--repeat`` runs, each on a fresh copy of the graph.  ``--checked`` also times the
PassManager's defaults (``verify_each=True`` with rollback snapshots).  The output
starts with the settings (machine, threads, sizes, level, repeats, versions) and every
row carries the machine's load before and after it; a run under load prints no figures
unless ``--allow-load`` is given (see ``benchmarks/conditions.py``).

    python benchmarks/passes.py [--sizes 10000 100000] [--gpt2] [--flax] [--level 2] [--checked] [--repeat 3]
    python benchmarks/passes.py --quick     # 1,000 and 2,000 nodes, one run each: a check that it runs
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass

import numpy as np

if not __package__:  # run as a script: make the repo root importable, as ``-m`` does
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import accelir  # noqa: E402
from accelir.ir import DType, Graph, TensorType  # noqa: E402
from accelir.passes import pipeline  # noqa: E402
from benchmarks.conditions import LoadGuard, add_load_arguments, guard_from, machine  # noqa: E402

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


# every row's figures are taken under this guard, which records the load around each; the rows are
# printed at the end, once the guard has seen that the machine was quiet (or load is allowed)
GUARD = LoadGuard(allow_load=True)
ROWS: list[str] = []


def _emit(line: str) -> None:
    ROWS.append(line)
    print(line, file=sys.stderr, flush=True)  # progress; the table goes to stdout at the end


def _row(label: str, before: int, g: Graph, t: Timing, load: str) -> None:
    slow = sorted(t.pm.report.by_pass().items(), key=lambda kv: -kv[1])[:3]
    _emit(f"{label:<30} nodes {before:>7} -> {g.num_nodes():>6}  {t.wall:7.3f} s wall {t.cpu:7.3f} s cpu  "
          f"({t.pm.report.iterations} rounds, {len(t.pm.report.records)} pass runs; slowest: "
          + ", ".join(f"{k} {v:.3f}s" for k, v in slow) + f"; {load})")


def _timed_row(label: str, g: Graph, level: int, checked: bool, repeat: int) -> tuple[Timing, Graph]:
    """The best of ``repeat`` runs on copies of ``g``, printed as a row with the load around it."""
    with GUARD.watch() as load:
        t, out = best_of(g, level, checked, repeat)
    _row(label, g.num_nodes(), out, t, str(load[0]))
    return t, out


def bench_synthetic(sizes: list[int], level: int, checked: bool, repeat: int) -> None:
    times: dict[int, Timing] = {}
    for n in sizes:
        g = synthetic_graph(n)
        times[n], _ = _timed_row(f"synthetic {n}", g, level, False, repeat)
        if checked:
            _timed_row("  with verify_each, snapshots", g, level, True, repeat)
    if len(sizes) >= 2:
        a, b = sorted(sizes)[0], sorted(sizes)[-1]
        _emit(f"growth: {b / a:.0f}x nodes -> {times[b].wall / times[a].wall:.1f}x wall time, "
              f"{times[b].cpu / times[a].cpu:.1f}x cpu time")


def _bench_model(label: str, g: Graph, level: int, checked: bool, repeat: int) -> None:
    _, out = _timed_row(label, g, level, False, repeat)
    if checked:
        _timed_row("  with verify_each, snapshots", g, level, True, repeat)
    _emit("  ops after: " + str(dict(sorted(out.op_histogram().items(), key=lambda kv: -kv[1])[:12])))


def bench_gpt2(level: int, checked: bool, repeat: int, quick: bool = False) -> None:
    import torch
    from transformers import GPT2Config, GPT2Model
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=1000) if quick else GPT2Config()
    config.use_cache = False
    model = GPT2Model(config).eval()
    ids = torch.randint(0, config.vocab_size, (1, 16 if quick else 64))
    label = f"GPT-2 {'miniature' if quick else 'small'} (seq {ids.shape[1]})"
    t0 = time.perf_counter()
    g = accelir.capture(model, (ids,))
    _emit(f"{label} captured in {time.perf_counter() - t0:.1f} s")
    _bench_model(label, g, level, checked, repeat)


def bench_flax(level: int, checked: bool, repeat: int, quick: bool = False) -> None:
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
            for _ in range(blocks):
                x = Block()(x)
            return x

    blocks = 1 if quick else 4
    model = Transformer()
    x = jnp.ones((2, 16, 64), jnp.float32)
    params = model.init(jax.random.PRNGKey(0), x)
    g = accelir.capture(lambda x: model.apply(params, x), (x,))
    _bench_model(f"flax transformer ({blocks} block{'s' if blocks > 1 else ''})", g, level, checked, repeat)


def settings(args: argparse.Namespace) -> str:
    """What the figures were taken with: the machine, threads, sizes, level, runs and versions."""
    blas = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ}
    return (f"settings: {machine()}; one Python thread runs the passes (numpy's BLAS, used by constant folding, "
            f"{'with ' + ', '.join(f'{k}={v}' for k, v in blas.items()) if blas else 'with its default threads'}); "
            f"synthetic sizes {', '.join(str(n) for n in args.sizes) or 'none'}; level {args.level}; best of "
            f"{args.repeat} run(s) per row; verify_each {'also timed' if args.checked else 'off'}; "
            f"python {platform.python_version()}, numpy {np.__version__}, accelir {accelir.__version__}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=None, help="synthetic graph sizes (default 10000 100000, "
                    "1000 2000 with --quick)")
    ap.add_argument("--level", type=int, default=2)
    ap.add_argument("--gpt2", action="store_true")
    ap.add_argument("--flax", action="store_true")
    ap.add_argument("--checked", action="store_true", help="also time PassManager's verify_each and snapshots")
    ap.add_argument("--repeat", type=int, default=None, help="runs per row; the fastest is shown (default 3, 1 with "
                    "--quick)")
    ap.add_argument("--quick", action="store_true", help="small sizes, one run, the miniature GPT-2 and a one-block "
                    "flax model with --gpt2 / --flax: a check that the script runs, not a measurement")
    add_load_arguments(ap)
    args = ap.parse_args(argv)
    if args.sizes is None:
        args.sizes = [1_000, 2_000] if args.quick else [10_000, 100_000]
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    global GUARD
    GUARD = guard_from(args, threads=1)
    ROWS.clear()
    bench_synthetic(args.sizes, args.level, args.checked, args.repeat)
    if args.gpt2:
        bench_gpt2(args.level, args.checked, args.repeat, args.quick)
    if args.flax:
        bench_flax(args.level, args.checked, args.repeat, args.quick)
    conditions = GUARD.finish()  # refuses figures taken under load unless --allow-load
    print("\n".join([conditions, settings(args)] + ROWS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
