"""GPU check: GPT-2 small through accelir -> XLA on a CUDA GPU, against torch eager CUDA and torch.compile.

    python -m benchmarks.gpu_check [--quick] [--device cuda|cpu]

Runs unattended in a few minutes on a machine with a CUDA build of torch and of
jax.  It checks the numerics of accelir -> XLA on the GPU against torch eager on
the GPU (both at full f32 precision: TF32 is switched off in torch and jax's
matmul precision set to "highest" for the check), then times torch eager,
torch.compile and accelir -> XLA side by side in interleaved rounds at the
default precisions, and prints a table last.  ``--device cpu`` runs the same
steps on the CPU (a dry run of the script where no GPU is at hand);
``--quick`` uses the 2-layer miniature.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Callable

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
        raise SystemExit("gpu_check needs a GPU: " + "; ".join(problems))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="the 2-layer GPT-2 miniature")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    _require_gpu(args.device)

    import jax
    import numpy as np
    import torch

    import accelir
    from accelir.cli import flat_arrays
    from accelir.timing import time_interleaved
    from benchmarks.models import MODELS

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
    accelir_call = timed(lambda: cm(*inputs))
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
    error = max(float(np.max(np.abs(r.astype(np.float64) - g.astype(np.float64)))) for r, g in zip(reference, got))
    scale = max(float(np.max(np.abs(r))) for r in reference)
    ok = error <= 1e-4 + 1e-4 * scale
    print(f"numerics: max abs error vs torch eager {error:.2e} (outputs up to {scale:.1f}): {'ok' if ok else 'FAIL'}")

    t0 = time.perf_counter()
    compiled = torch.compile(model)

    def compiled_call() -> Any:
        with torch.no_grad():
            return compiled(*inputs)
    timed(compiled_call)()
    build["torch.compile"] = time.perf_counter() - t0

    timings = time_interleaved({"torch eager": timed(eager), "torch.compile": timed(compiled_call),
                                "accelir -> xla": accelir_call}, warmup=5, repeats=args.repeats)
    base = timings["torch eager"].median
    print(f"\n{'system':16s} {'median ms':>10s} {'min-max ms':>17s} {'speedup':>9s} {'build s':>8s}")
    for name, t in timings.items():
        span = f"{t.min * 1e3:.3f}-{t.max * 1e3:.3f}"
        print(f"{name:16s} {t.median * 1e3:10.3f} {span:>17s} {base / t.median:8.2f}x {build[name]:8.1f}")
    return 0 if ok else 1


if __name__ == "__main__":
    if not __package__:  # run as benchmarks/gpu_check.py: make the repo root importable, as ``-m`` does
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
