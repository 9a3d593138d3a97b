"""A Llama-shaped model split over 8 CPU devices by XLA: per-device weight memory, latency and
the collectives in the compiled HLO, for each sharding mode against the unsharded model.

    python -m benchmarks.sharding [--layers 4] [--hidden 1024] [--batch 8] [--seq 128] [--repeats 10]
        [--quick] [--allow-load]

The script asks XLA for 8 host devices (``--xla_force_host_platform_device_count=8``)
before jax starts, builds ``transformers.LlamaModel`` from a config (random weights), and
optimises it with ``backend="xla"`` once on one device and once per mode
(data-parallel and fsdp on a ("data",) mesh, tensor-parallel on a ("model",) mesh).  For
each it reports the weight bytes the busiest device holds (from
``CompiledModel.sharded_parameters()``: the shards each device holds), the median latency
(interleaved rounds, checked against eager torch first), and each collective in the
compiled HLO with its result bytes per call, per layer.  The 8 "devices" share the host's
cores, so the latencies show the partitioner's overhead, not a speed-up.  The machine's
load goes into the output; a run under load prints no table unless ``--allow-load``.
``--quick`` runs a 2-layer, 64-wide miniature and 3 rounds: a check that the script runs.
"""

from __future__ import annotations

import os
import sys

DEVICES = 8
if "jax" not in sys.modules:  # XLA takes its host device count when jax starts
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={DEVICES}").strip()

import argparse  # noqa: E402
import collections  # noqa: E402
import re  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

if not __package__:  # run as a script: make the repo root importable, as ``-m`` does
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.conditions import add_load_arguments, check_outputs, guard_from, machine  # noqa: E402

__all__ = ["main", "collectives"]

_COLLECTIVE = re.compile(r"= \(?(\w+)\[([\d,]*)\][^\n]*? (all-reduce|all-gather|reduce-scatter|all-to-all|"
                         r"collective-permute)(?:-start)?\(")
_BYTES = {"f32": 4, "f16": 2, "bf16": 2, "s32": 4, "s64": 8, "u8": 1, "pred": 1, "f64": 8}


def collectives(hlo: str) -> dict[str, tuple[int, int]]:
    """Each collective op of an HLO module text: (how many, result bytes of all of them)."""
    out: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for dtype, dims, op in _COLLECTIVE.findall(hlo):
        size = int(np.prod([int(d) for d in dims.split(",") if d])) if dims else 1
        out[op][0] += 1
        out[op][1] += size * _BYTES.get(dtype, 4)
    return {op: (n, b) for op, (n, b) in sorted(out.items())}


def _per_device_bytes(params: dict[str, Any]) -> int:
    """The weight bytes of the device that holds the most."""
    held: dict[Any, int] = collections.defaultdict(int)
    for arr in params.values():
        for shard in arr.addressable_shards:
            held[shard.device] += shard.data.nbytes
    return max(held.values()) if held else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=None, help="default 4 (2 with --quick)")
    parser.add_argument("--hidden", type=int, default=None, help="default 1024 (64 with --quick)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=None, help="default 128 (16 with --quick)")
    parser.add_argument("--repeats", type=int, default=None, help="default 10 (3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a 2-layer, 64-wide miniature and 3 rounds: a check "
                        "that the script runs, not a measurement")
    add_load_arguments(parser)
    opts = parser.parse_args(argv)
    layers = opts.layers or (2 if opts.quick else 4)
    hidden = opts.hidden or (64 if opts.quick else 1024)
    seq = opts.seq or (16 if opts.quick else 128)
    repeats = opts.repeats or (3 if opts.quick else 10)

    import jax
    import torch
    import transformers
    from jax.sharding import Mesh

    import accelir
    from accelir.timing import time_interleaved

    if jax.device_count() != DEVICES:
        raise SystemExit(f"sharding benchmark: jax has {jax.device_count()} devices, not {DEVICES}: run it in a "
                         "fresh process (jax was imported before the script set XLA_FLAGS)")
    guard = guard_from(opts, threads=os.cpu_count() or 1)
    torch.manual_seed(0)
    heads = max(hidden // 64, DEVICES)
    config = transformers.LlamaConfig(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                                      num_key_value_heads=heads, intermediate_size=hidden * 11 // 4 // 64 * 64 or 128,
                                      vocab_size=1024 if opts.quick else 32000, max_position_embeddings=max(seq, 64),
                                      use_cache=False)
    model = transformers.LlamaModel(config).eval()
    ids = torch.randint(0, config.vocab_size, (opts.batch, seq), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = [model(ids).last_hidden_state.numpy()]

    devices = np.array(jax.devices())
    setups = {"one device": (None, None), "data-parallel": (Mesh(devices, ("data",)), "data-parallel"),
              "fsdp": (Mesh(devices, ("data",)), "fsdp"),
              "tensor-parallel": (Mesh(devices, ("model",)), "tensor-parallel")}
    rows: dict[str, dict[str, Any]] = {}
    calls = {}
    with guard.watch() as load:
        for name, (mesh, sharding) in setups.items():
            cm = accelir.optimize(model, (ids,), backend="xla", mesh=mesh, sharding=sharding)
            got = [cm(ids).last_hidden_state.numpy()]
            row = {"wrong": check_outputs(reference, got)}
            if mesh is not None:
                row["bytes"] = _per_device_bytes(cm.sharded_parameters())
            else:
                row["bytes"] = sum(a.nbytes for a in cm._runner.function.params.values())
            row["collectives"] = collectives(cm._runner.lower(ids).compile().as_text())
            rows[name] = row
            if not row["wrong"]:
                calls[name] = (lambda cm: lambda: cm(ids))(cm)
        timings = time_interleaved(calls, warmup=2, repeats=repeats)

    print(guard.finish())
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    print(f"Llama ({layers} layers, hidden {hidden}, {heads} heads, {weights / 2**20:.1f} MiB of f32 weights), "
          f"batch {opts.batch} x {seq} tokens, {DEVICES} XLA host devices sharing {machine()}; {repeats} rounds; "
          f"{load[0]}{' (miniature: --quick)' if opts.quick else ''}")
    print("| mode | weights on the busiest device (MiB) | latency (ms) median (min-max) | collectives per call "
          "(count, result MiB; per layer) |")
    print("|---|---|---|---|")
    for name, row in rows.items():
        latency = str(timings[name]) if name in timings else f"wrong output: {row['wrong']}"
        coll = ", ".join(f"{op} {n} ({b / 2**20:.3f} MiB; {n / layers:.1f} and {b / layers / 2**20:.3f} MiB a layer)"
                         for op, (n, b) in row["collectives"].items()) or "none"
        print(f"| {name} | {row['bytes'] / 2**20:.2f} | {latency} | {coll} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
