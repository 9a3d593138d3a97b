"""torch.compile(backend="accelir") against torch.compile's inductor and eager torch.

    python -m benchmarks.torch_compile [--models gpt2,bert,resnet50] [--backends onnxruntime,xla]
        [--repeats 20] [--quick] [--allow-load]

For GPT-2 small, BERT-base and ResNet-50 of ``benchmarks/models.py`` (random weights,
batch 1, under ``torch.no_grad()``) it reports, for eager torch, ``torch.compile``
with inductor and ``torch.compile(backend="accelir", options={"backend": ...})`` for each
accelir backend:

- the first call's time: Dynamo's tracing, the backend's compilation and one run.
  Every system first compiles a small unrelated function, so that no system's lazy
  imports (inductor's C++ toolchain, onnxruntime, jax) land on a model's row, and
  inductor's on-disk caches are off (``force_disable_caches``): a first call compiles;
- the steady latency: the compiled callables timed in interleaved rounds, the order
  rotating each round (``accelir.timing.time_interleaved``), median (min-max).

Outputs are checked against eager torch first (a tolerance by dtype relative to the
output's peak; a wrong system is flagged and not timed), and an accelir graph that fell
back to eager is named in the row.  The targets: latency at most 1.0x inductor's, first
call at most 0.5x inductor's.  The machine's load goes into each row; a run under load
prints no table unless ``--allow-load`` is given (``benchmarks/conditions.py``).
``--quick`` runs the miniatures of the three models and a few rounds: a check that the
script runs, not a measurement.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

if not __package__:  # run as a script: make the repo root importable, as ``-m`` does
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.conditions import add_load_arguments, check_outputs, guard_from, machine, rotated  # noqa: E402

__all__ = ["main"]

MODELS = ("gpt2", "bert", "resnet50")
ACCELIR_BACKENDS = ("onnxruntime", "xla")


@dataclass
class Row:
    """One system on one model: its compiled callable, first-call time and steady latencies (seconds)."""

    call: Callable[[], Any] | None
    first_s: float = float("nan")
    wrong: str = ""
    notes: str = ""
    timing: Any = None
    extra: dict = field(default_factory=dict)


def _systems(backends: list[str]) -> dict[str, Callable[[Any], Callable[..., Any]]]:
    """System name -> how it wraps a model."""
    import torch
    systems: dict[str, Callable[[Any], Callable[..., Any]]] = {
        "eager": lambda m: m,
        "inductor": lambda m: torch.compile(m, backend="inductor"),
    }
    for b in backends:
        systems[f"accelir -> {b}"] = (lambda backend: lambda m: torch.compile(
            m, backend="accelir", options={"backend": backend}))(b)
    return systems


def _leaves(out: Any) -> list[np.ndarray]:
    import torch
    import torch.utils._pytree as pytree
    return [t.detach().numpy() for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def _warm_up(systems: dict[str, Callable[[Any], Callable[..., Any]]]) -> None:
    """Compile and run a small function with each system: lazy imports and toolchain start-up go here."""
    import torch

    def small(x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ x.T).sum(-1)

    x = torch.randn(4, 4)
    with torch.no_grad():
        for wrap in systems.values():
            wrap(small)(x)


def _first_call(name: str, wrap: Callable, model: Any, inputs: tuple, reference: list[np.ndarray]) -> Row:
    import torch
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        start = time.perf_counter()
        try:
            fn = wrap(model)
            with torch.no_grad():
                out = fn(*inputs)
        except Exception as e:  # noqa: BLE001 - a system that fails is reported, the others still run
            return Row(None, wrong=f"failed: {type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:120]}")
        first = time.perf_counter() - start
    fallbacks = [str(w.message) for w in record if "runs eagerly" in str(w.message)]
    row = Row(lambda: fn(*inputs), first_s=first, wrong=check_outputs(reference, _leaves(out)))
    if fallbacks:
        row.notes = f"{len(fallbacks)} graph(s) eager: {fallbacks[0][:100]}"
    return row


def run_model(name: str, quick: bool, systems: dict[str, Callable], repeats: int, round_: int) -> dict[str, Row]:
    import torch

    from accelir.timing import time_interleaved
    from benchmarks.models import MODELS as SPECS

    model, inputs = SPECS[name].build(quick)
    with torch.no_grad():
        reference = _leaves(model(*inputs))
    rows: dict[str, Row] = {}
    for system in rotated(list(systems), round_):
        rows[system] = _first_call(system, systems[system], model, inputs, reference)
    timed = {s: r.call for s, r in rows.items() if r.call is not None and not r.wrong}
    with torch.no_grad():
        timings = time_interleaved(timed, warmup=2 if quick else 5, repeats=repeats)
    for s, t in timings.items():
        rows[s].timing = t
    return rows


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b and b == b and a == a else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--backends", default=",".join(ACCELIR_BACKENDS), help="accelir's backends to run")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 20; 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="the miniature models and 3 rounds: a check that the "
                        "script runs, not a measurement")
    add_load_arguments(parser)
    opts = parser.parse_args(argv)
    models = [m for m in opts.models.split(",") if m]
    backends = [b for b in opts.backends.split(",") if b]
    unknown = [m for m in models if m not in MODELS] + [b for b in backends if b not in ACCELIR_BACKENDS]
    if unknown:
        parser.error(f"unknown model or backend: {', '.join(unknown)}")
    repeats = opts.repeats if opts.repeats is not None else (3 if opts.quick else 20)

    import torch
    import torch._inductor.config

    import accelir  # noqa: F401 - registers the backend where the entry point is not installed
    torch._inductor.config.force_disable_caches = True  # a first call compiles, as on a fresh machine
    guard = guard_from(opts, threads=torch.get_num_threads())
    systems = _systems(backends)
    _warm_up(systems)

    results = []
    for k, name in enumerate(models):
        with guard.watch() as load:
            rows = run_model(name, opts.quick, systems, repeats, k)
        results.append((name, rows, load[0]))
        torch._dynamo.reset()

    print(guard.finish())
    print(f"torch.compile backends at batch 1{' (miniature models: --quick)' if opts.quick else ''}; {machine()}, "
          f"torch {torch.__version__} with {torch.get_num_threads()} intra-op thread(s), ONNX Runtime with its "
          f"default thread pool; {repeats} interleaved rounds")
    print("| model | system | first call (s) | vs inductor | latency (ms) median (min-max) | vs inductor | notes |")
    print("|---|---|---|---|---|---|---|")
    for name, rows, load in results:  # each model's rows in the same system order (they ran rotated)
        ind = rows.get("inductor")
        ind_first = ind.first_s if ind else float("nan")
        ind_lat = ind.timing.median if ind and ind.timing else float("nan")
        for system in systems:
            row = rows[system]
            lat = row.timing.median if row.timing else float("nan")
            latency = str(row.timing) if row.timing else (row.wrong and "wrong output" or "-")
            first = "-" if system == "eager" or row.first_s != row.first_s else f"{row.first_s:.2f}"
            notes = "; ".join(x for x in (row.wrong, row.notes, str(load)) if x)
            print(f"| {name} | {system} | {first} | {_ratio(row.first_s, ind_first) if system != 'eager' else '-'} "
                  f"| {latency} | {_ratio(lat, ind_lat)} | {notes} |")
    print("targets: accelir's latency <= 1.0x inductor's, its first call <= 0.5x inductor's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
