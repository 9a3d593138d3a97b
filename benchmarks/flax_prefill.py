"""Time to first token of a flax decoder: its prompt in one prefill call against one step call per token.

    python benchmarks/flax_prefill.py [--models small,large] [--rounds 20] [--allow-load] [--quick]

A flax decoder's ``decode=True`` attention takes one token per call.  accelir captures its step
scanned over the prompt as a prefill graph, run in one call; before, the prompt went through the
step graph one call per token.  Both run here in one process, on the same compiled model: "prefill
graph" is ``cm``'s prefill, "token by token" feeds the prompt through ``cm``'s own step as the
flax path used to.  Each round times one of each, in rotating order; the figure is the median CPU
time of the process (``time.process_time``, all threads) per first token, beside wall-clock
time, so that other processes on a shared machine count less.  The logits of the two are checked
against each other first.

Models (random weights, learned positions, a mask and positions as transformers' flax models take):
``small`` is the decoder of tests/test_generation_flax.py (2 layers, width 32, 2 heads, vocab 100,
a cache of 64, prompt 7); ``large`` has 4 layers, width 256, 4 heads, vocab 1000, a cache of 128
and a prompt of 32.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.conditions import add_load_arguments, guard_from, rotated  # noqa: E402


@dataclass(frozen=True)
class Config:
    layers: int
    width: int
    heads: int
    vocab: int
    capacity: int
    prompt: int


CONFIGS = {"small": Config(2, 32, 2, 100, 64, 7), "large": Config(4, 256, 4, 1000, 128, 32)}


def decoder(config: Config):
    """A bound linen decoder with flax's decode cache for ``config``, and a prompt for it (batch 1)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    class Decoder(nn.Module):
        @nn.compact
        def __call__(self, input_ids, attention_mask, position_ids):
            x = nn.Embed(config.vocab, config.width)(input_ids) + nn.Embed(config.capacity, config.width)(position_ids)
            attend = attention_mask[:, None, None, :].astype(bool)
            for _ in range(config.layers):
                x = x + nn.MultiHeadDotProductAttention(num_heads=config.heads, decode=True)(nn.LayerNorm()(x),
                                                                                           mask=attend)
                x = x + nn.Dense(config.width)(nn.gelu(nn.Dense(4 * config.width)(nn.LayerNorm()(x))))
            return nn.Dense(config.vocab)(nn.LayerNorm()(x))

    full = jnp.zeros((1, config.capacity), jnp.int32)
    variables = Decoder().init(jax.random.PRNGKey(0), full, full, full)
    ids = np.random.default_rng(0).integers(0, config.vocab, (1, config.prompt)).astype(np.int32)
    return Decoder().bind(variables), ids


def token_by_token(backend: str, stepper, layout, ids: np.ndarray, mask: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """The prompt through the step graph, one call per token (the flax path before its prefill graph)."""
    if backend == "xla":  # device buffers donated to each step
        import jax
        stepper.buffers = [jax.device_put(x, stepper.device) for x in layout.empty_cache(ids.shape[0])]
    else:  # onnxruntime: OrtValues bound as the next step's inputs
        import onnxruntime
        stepper.present = [onnxruntime.OrtValue.ortvalue_from_numpy(x) for x in layout.empty_cache(ids.shape[0])]
    for t in range(ids.shape[1]):
        logits = stepper.decode(ids[:, t:t + 1], mask[:, :t + 1], pos[:, t:t + 1])
    return logits


def measure(name: str, backend: str, rounds: int) -> tuple[float, float, float, float]:
    """Median CPU and wall seconds to the first token: (prefill CPU, token-by-token CPU, prefill wall, t-b-t wall)."""
    import accelir
    model, ids = decoder(CONFIGS[name])
    cm = accelir.optimize(model, (ids,), backend=backend)
    stepper, layout = cm._stepper, cm.layout
    mask = np.ones_like(ids, dtype=np.int64)
    pos = np.arange(ids.shape[1], dtype=np.int64)[None]
    systems = {"prefill graph": lambda: stepper.prefill(ids, mask, pos, layout.max_positions),
               "token by token": lambda: token_by_token(backend, stepper, layout, ids, mask, pos)}
    first = {k: np.asarray(fn()) for k, fn in systems.items()}
    np.testing.assert_allclose(first["prefill graph"], first["token by token"], rtol=1e-4, atol=1e-4)
    for fn in systems.values():  # warm-up
        fn()
    cpu: dict[str, list[float]] = {k: [] for k in systems}
    wall: dict[str, list[float]] = {k: [] for k in systems}
    for r in range(rounds):
        for k in rotated(list(systems), r):
            c0, w0 = time.process_time(), time.perf_counter()
            systems[k]()
            cpu[k].append(time.process_time() - c0)
            wall[k].append(time.perf_counter() - w0)
    med = {k: (statistics.median(cpu[k]), statistics.median(wall[k])) for k in systems}
    return med["prefill graph"][0], med["token by token"][0], med["prefill graph"][1], med["token by token"][1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="small,large", help=f"comma-separated, of {', '.join(CONFIGS)}")
    parser.add_argument("--backends", default="onnxruntime,xla")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="the small model, 3 rounds: a check that the script runs")
    add_load_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.rounds = "small", 3
    guard = guard_from(args, threads=2)
    rows = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            with guard.watch():
                rows.append((name, backend, *measure(name, backend, args.rounds)))
    print(guard.finish())
    print(f"time to first token, batch 1; medians of {args.rounds} interleaved rounds in one process")
    print(f"{'model':6s}  {'backend':11s}  {'prompt':>6s}  {'prefill CPU ms':>14s}  {'per-token CPU ms':>16s}  "
          f"{'ratio':>5s}  {'prefill wall ms':>15s}  {'per-token wall ms':>17s}")
    for name, backend, new_cpu, old_cpu, new_wall, old_wall in rows:
        print(f"{name:6s}  {backend:11s}  {CONFIGS[name].prompt:6d}  {new_cpu * 1e3:14.2f}  {old_cpu * 1e3:16.2f}  "
              f"{new_cpu / old_cpu:5.2f}  {new_wall * 1e3:15.2f}  {old_wall * 1e3:17.2f}")
    print("prefill: the prompt in one call of the prefill graph; per-token: one step call per prompt token (before); "
          "ratio: prefill CPU / per-token CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
