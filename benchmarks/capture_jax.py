"""Capture time of the JAX frontend against a bare ``jax.make_jaxpr``.

Builds a flax.linen transformer (12 layers, hidden 768, 12 heads, MLP 3072 by default)
and times, best of ``--repeat`` runs each, a bare ``jax.make_jaxpr(model.apply)`` and
``accelir.frontends.jax.capture_jax`` (which includes its own make_jaxpr), with the
params as graph inputs and frozen as constants.  The target is capture <= 1.5x make_jaxpr.
The output names the settings (machine, sizes) and the machine's load before and
after; a run under load prints no figures unless ``--allow-load`` is given.

    python benchmarks/capture_jax.py [--layers 12] [--hidden 768] [--repeat 5] [--scan] [--dynamic]
    python benchmarks/capture_jax.py --quick     # one 64-wide layer, one run: a check that it runs
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import flax.linen as nn
import jax
import numpy as np

if not __package__:  # run as a script: make the repo root importable, as ``-m`` does
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from accelir.frontends.jax import capture_jax  # noqa: E402
from benchmarks.conditions import add_load_arguments, guard_from, machine, rotated  # noqa: E402

__all__ = ["main", "Transformer"]


class Block(nn.Module):
    heads: int
    mlp: int

    @nn.compact
    def __call__(self, x, mask):
        h = nn.MultiHeadDotProductAttention(num_heads=self.heads, deterministic=True)(nn.LayerNorm()(x),
                                                                                      mask=mask)
        x = x + h
        return x + nn.Dense(x.shape[-1])(nn.gelu(nn.Dense(self.mlp)(nn.LayerNorm()(x))))


class ScanBlock(Block):
    def __call__(self, x, mask):
        return super().__call__(x, mask), None


class Transformer(nn.Module):
    vocab: int = 32000
    hidden: int = 768
    heads: int = 12
    mlp: int = 3072
    layers: int = 12
    scan: bool = False

    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(self.vocab, self.hidden)(tokens)
        mask = nn.make_causal_mask(tokens)
        if self.scan:
            stack = nn.scan(ScanBlock, variable_axes={"params": 0}, split_rngs={"params": True},
                            in_axes=nn.broadcast, length=self.layers)
            x, _ = stack(self.heads, self.mlp)(x, mask)
        else:
            for _ in range(self.layers):
                x = Block(self.heads, self.mlp)(x, mask)
        return nn.Dense(self.vocab)(nn.LayerNorm()(x))


def _best_interleaved(fns: dict, repeat: int) -> dict:
    """Best time of each function, runs interleaved (the order rotating) so that load from other
    processes hits all alike."""
    best = {name: float("inf") for name in fns}
    for k in range(repeat):
        for name in rotated(list(fns), k):
            start = time.perf_counter()
            fns[name]()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=None, help="default 12 (1 with --quick)")
    parser.add_argument("--hidden", type=int, default=None, help="default 768 (64 with --quick)")
    parser.add_argument("--seq", type=int, default=None, help="default 128 (16 with --quick)")
    parser.add_argument("--repeat", type=int, default=None, help="default 5 (1 with --quick)")
    parser.add_argument("--scan", action="store_true", help="stack the layers with nn.scan")
    parser.add_argument("--dynamic", action="store_true", help="batch and sequence as symbolic dims")
    parser.add_argument("--quick", action="store_true", help="one 64-wide layer, a 1000-token vocabulary, one run: "
                        "a check that the script runs, not a measurement")
    add_load_arguments(parser)
    opts = parser.parse_args(argv)
    for name, full, quick in (("layers", 12, 1), ("hidden", 768, 64), ("seq", 128, 16), ("repeat", 5, 1)):
        if getattr(opts, name) is None:
            setattr(opts, name, quick if opts.quick else full)
    guard = guard_from(opts, threads=1)

    model = Transformer(vocab=1000 if opts.quick else 32000, hidden=opts.hidden, heads=max(1, opts.hidden // 64),
                        mlp=4 * opts.hidden, layers=opts.layers, scan=opts.scan)
    tokens = np.zeros((1, opts.seq), np.int32)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), tokens)
    params = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    symbolic = (None, "b, s") if opts.dynamic else None
    n_params = sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(shapes))
    lines = [f"flax transformer: {opts.layers} layers, hidden {opts.hidden}, seq {opts.seq}, "
             f"{n_params / 1e6:.1f}M params, {'nn.scan' if opts.scan else 'unrolled'}"
             f"{', dynamic batch/seq' if opts.dynamic else ''}; best of {opts.repeat}, interleaved; {machine()}, "
             f"jax {jax.__version__} (tracing is single-threaded Python)"]

    traced = (params, tokens) if symbolic is None else (params, jax.ShapeDtypeStruct(
        jax.export.symbolic_shape("b, s"), np.int32))
    def fresh():
        # a new function object each time, so neither side hits jax's trace cache of the last call
        return lambda p, t: model.apply(p, t)

    fns = {
        "make_jaxpr": lambda: jax.make_jaxpr(fresh())(*traced),
        "inputs": lambda: capture_jax(fresh(), (params, tokens), symbolic_shapes=symbolic),
        "frozen": lambda: capture_jax(fresh(), (params, tokens), params_as_constants=True,
                                      symbolic_shapes=symbolic),
    }
    with guard.watch() as load:
        for fn in fns.values():  # warm-up: the first trace pays for imports and jax's caches
            fn()
        best = _best_interleaved(fns, opts.repeat)
    lines[0] += f"; {load[0]}"
    t_jaxpr = best["make_jaxpr"]
    lines.append(f"make_jaxpr {t_jaxpr * 1e3:.0f} ms")
    for mode in ("inputs", "frozen"):
        graph = fns[mode]()
        lines.append(f"params {mode}: capture_jax {best[mode] * 1e3:.0f} ms, ratio {best[mode] / t_jaxpr:.2f}x "
                     f"(target <= 1.5x), {graph.num_nodes()} nodes")
    print(guard.finish())
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
