"""GPU check: GPT-2 small through accelir -> XLA on a CUDA GPU, against torch eager CUDA and torch.compile.

    python -m benchmarks.gpu_check [--quick] [--device cuda|cpu]

Runs unattended in a few minutes on a machine with a CUDA build of torch and of
jax.  It checks the numerics of accelir -> XLA on the GPU against torch eager on
the GPU (both at full f32 precision: TF32 is switched off in torch and jax's
matmul precision set to "highest" for the check), then times torch eager,
torch.compile and accelir -> XLA side by side in interleaved rounds at the
default precisions, and prints a table last.  A system whose output is wrong is
not timed.  Every system is timed from inputs already on the device in its
runtime's form (torch CUDA tensors; jax arrays for accelir -> XLA) to its outputs
ready on the device.  The machine's load (CPU) before and after goes with the
table.  ``--device cpu`` runs the same steps on the CPU (a dry run of the script
where no GPU is at hand); ``--quick`` uses the 2-layer miniature and a few rounds.
Without a GPU, ``--device cuda`` (the default) stops at once with a message that
says what is missing.

Then the reduced precisions (``--precisions fp16,bf16``, the default): ``optimize(...,
precision=p, backend="xla")`` against torch eager with the model in the same dtype,
each checked against float32 eager with accelir's accuracy budget for ``p`` (cosine,
max_rel), then timed side by side with the float32 runs in the same interleaved rounds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Callable

if not __package__:  # run as benchmarks/gpu_check.py: make the repo root importable, as ``-m`` does
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.conditions import add_load_arguments, check_outputs, guard_from  # noqa: E402

__all__ = ["main"]


def _require_gpu(device: str) -> None:
    import jax
    import torch
    if device == "cpu":
        return
    problems = []
    if not torch.cuda.is_available():
        problems.append("torch sees no CUDA device (install a CUDA build of torch)")
    if not any(d.platform == "gpu" for d in jax.devices()):
        problems.append(f"jax sees no GPU (devices: {jax.devices()}; install jax[cuda12])")
    if problems:
        raise SystemExit("gpu_check needs a GPU: " + "; ".join(problems)
                         + ". Run it with --device cpu for a dry run on the CPU.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="the 2-layer GPT-2 miniature, a few rounds")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 50, 3 with --quick)")
    parser.add_argument("--precisions", default="fp16,bf16",
                        help="reduced precisions to check and time next to float32, comma-separated ('' for none)")
    add_load_arguments(parser)
    args = parser.parse_args(argv)
    _require_gpu(args.device)
    guard = guard_from(args, threads=1)
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 50)
    with guard.watch() as load:
        ok, table = _check(args, repeats)
    print("\n" + guard.finish())
    print(f"{table}\n{load[0]}")
    return 0 if ok else 1


def _check(args: argparse.Namespace, repeats: int) -> tuple[bool, str]:
    """The numerics check and the timings; whether accelir's numerics held, and the table."""
    import jax
    import numpy as np
    import torch

    import accelir
    from accelir.cli import flat_arrays
    from accelir.timing import time_interleaved
    from benchmarks.models import MODELS
    from benchmarks.run import xla_call

    model, inputs = MODELS["gpt2"].build(args.quick)
    model = model.to(args.device)
    inputs = tuple(x.to(args.device) for x in inputs)
    print(f"GPT-2 {'miniature' if args.quick else 'small'} on {args.device}: "
          f"{torch.cuda.get_device_name() if args.device == 'cuda' else 'CPU'}, jax devices {jax.devices()}")

    def sync() -> None:
        if args.device == "cuda":
            torch.cuda.synchronize()

    def timed(fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            out = fn()
            sync()
            return out
        return run

    def eager() -> Any:
        with torch.no_grad():
            return model(*inputs)

    build: dict[str, float] = {"torch eager": 0.0}
    t0 = time.perf_counter()
    cm = accelir.optimize(model, inputs, backend="xla", device=args.device)
    accelir_call = xla_call(cm.graph, list(cm.graph.meta["signature"].flatten(*inputs)), args.device)
    accelir_call()
    build["accelir -> xla"] = time.perf_counter() - t0
    print(f"optimize(): {cm.report.nodes_before} -> {cm.report.nodes_after} nodes, "
          + ", ".join(f"{k} {v:.2f} s" for k, v in cm.report.stages.items()))

    # numerics at full f32 precision on both sides
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with jax.default_matmul_precision("highest"):
            exact = cm(*inputs)
        reference = flat_arrays(eager())
        got = flat_arrays(exact)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    wrong = {"accelir -> xla": check_outputs(reference, got)}
    ok = not wrong["accelir -> xla"]
    error = max(float(np.max(np.abs(r.astype(np.float64) - g.astype(np.float64)))) for r, g in zip(reference, got)) \
        if ok else float("nan")
    scale = max(float(np.max(np.abs(r))) for r in reference)
    print(f"numerics: max abs error vs torch eager {error:.2e} (outputs up to {scale:.1f}): "
          + ("ok" if ok else f"FAIL ({wrong['accelir -> xla']})"))

    t0 = time.perf_counter()
    compiled = torch.compile(model)

    def compiled_call() -> Any:
        with torch.no_grad():
            return compiled(*inputs)
    wrong["torch.compile"] = check_outputs(flat_arrays(eager()), flat_arrays(timed(compiled_call)()))
    build["torch.compile"] = time.perf_counter() - t0

    calls = {"torch eager": timed(eager), "torch.compile": timed(compiled_call), "accelir -> xla": accelir_call}
    notes: dict[str, str] = {}
    for precision in filter(None, args.precisions.split(",")):
        low_calls, low_build, low_wrong, note = _low_precision(model, inputs, precision, args.device, reference, timed)
        calls.update(low_calls)
        build.update(low_build)
        wrong.update(low_wrong)
        notes.update(note)
        ok = ok and not low_wrong.get(f"accelir -> xla {precision}")
    timings = time_interleaved({k: f for k, f in calls.items() if not wrong.get(k)}, warmup=1 if args.quick else 5,
                               repeats=repeats)
    base = timings["torch eager"].median
    lines = [f"{repeats} interleaved rounds (the order rotating each round), inputs already on the device",
             f"{'system':20s} {'median ms':>10s} {'min-max ms':>17s} {'speedup':>9s} {'build s':>8s}"]
    for name in calls:
        if wrong.get(name):
            lines.append(f"{name:16s} wrong output, not timed: {wrong[name]}")
            continue
        t = timings[name]
        span = f"{t.min * 1e3:.3f}-{t.max * 1e3:.3f}"
        lines.append(f"{name:20s} {t.median * 1e3:10.3f} {span:>17s} {base / t.median:8.2f}x {build[name]:8.1f}"
                     + (f"  {notes[name]}" if name in notes else ""))
    return ok, "\n".join(lines)


def _low_precision(model: Any, inputs: tuple, precision: str, device: str, reference: list,
                   timed: Callable[[Callable[[], Any]], Callable[[], Any]]) -> tuple[dict, dict, dict, dict]:
    """accelir at ``precision`` on XLA and torch eager with the model cast to the same dtype: their calls,
    build times, wrong-output findings (against float32 eager, with accelir's budget for the precision)
    and accuracy notes."""
    import copy

    import torch

    import accelir
    from accelir.accuracy import Budget, measure
    from accelir.cli import flat_arrays
    from benchmarks.run import xla_call

    budget = Budget.parse(None, precision)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    calls, build, wrong, notes = {}, {}, {}, {}
    t0 = time.perf_counter()
    cm = accelir.optimize(model, inputs, backend="xla", device=device, precision=precision)
    name = f"accelir -> xla {precision}"
    calls[name] = xla_call(cm.graph, list(cm.graph.meta["signature"].flatten(*inputs)), device)
    calls[name]()
    build[name] = time.perf_counter() - t0
    errors = measure(reference, flat_arrays(cm(*inputs)))
    broken = budget.violations(errors)
    kept = len(cm.report.precision.kept)
    notes[name] = f"{errors}; {kept} node(s) kept in float32"
    if broken:
        wrong[name] = f"over the {precision} budget {budget}: {'; '.join(broken)}"
    low_model = copy.deepcopy(model).to(dtype)
    low_inputs = tuple(x.to(dtype) if x.is_floating_point() else x for x in inputs)

    def eager_low() -> Any:
        with torch.no_grad():
            return low_model(*low_inputs)
    name = f"torch eager {precision}"
    calls[name], build[name] = timed(eager_low), 0.0
    got = [g.astype("float32") for g in flat_arrays(eager_low())]
    notes[name] = str(measure(reference, got))
    print(f"{precision}: accelir {notes[f'accelir -> xla {precision}']}; torch eager {notes[name]}")
    return calls, build, wrong, notes


if __name__ == "__main__":
    sys.exit(main())
