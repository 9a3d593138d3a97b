"""Capture time of the torch frontend against a bare ``torch.export.export``.

Builds GPT-2 small (12 layers, random weights) and times, best of ``--repeat``
runs each, a bare ``torch.export.export`` and ``accelir.frontends.torch.capture_torch``
(which includes its own export).  The target is capture <= 1.3x export.  The
output names the settings (machine, torch threads) and the machine's load before
and after; a run under load prints no figures unless ``--allow-load`` is given.

    python benchmarks/capture_torch.py [--layers 12] [--repeat 3] [--dynamic]
    python benchmarks/capture_torch.py --quick     # the 2-layer miniature, one run: a check that it runs
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import transformers

if not __package__:  # run as a script: make the repo root importable, as ``-m`` does
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from accelir.frontends.torch import capture_torch  # noqa: E402
from benchmarks.conditions import add_load_arguments, guard_from, machine  # noqa: E402

__all__ = ["main"]


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=None, help="default 12 (2 with --quick)")
    parser.add_argument("--repeat", type=int, default=None, help="default 3 (1 with --quick)")
    parser.add_argument("--dynamic", action="store_true", help="batch and sequence as dynamic dims")
    parser.add_argument("--quick", action="store_true", help="a 2-layer, 64-wide GPT-2 and one run: a check that "
                        "the script runs, not a measurement")
    add_load_arguments(parser)
    opts = parser.parse_args(argv)
    layers = opts.layers if opts.layers is not None else (2 if opts.quick else 12)
    repeat = opts.repeat if opts.repeat is not None else (1 if opts.quick else 3)
    guard = guard_from(opts, threads=torch.get_num_threads())

    torch.manual_seed(0)
    small = dict(n_embd=64, n_head=4, vocab_size=1000) if opts.quick else {}
    config = transformers.GPT2Config(n_layer=layers, use_cache=False, **small)
    model = transformers.GPT2Model(config).eval()
    ids = torch.randint(0, config.vocab_size, (2, 16))
    mask = torch.ones_like(ids)
    kwargs = {"attention_mask": mask}
    dynamic = None
    if opts.dynamic:
        batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", max=config.n_positions)
        dynamic = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}

    def export() -> None:
        with torch.no_grad():
            torch.export.export(model, (ids,), kwargs, dynamic_shapes=dynamic, strict=False)

    def capture() -> None:
        capture_torch(model, (ids,), dynamic, example_kwargs=kwargs)

    with guard.watch() as load:
        export()  # warm-up: first export pays for imports and dispatcher caches
        t_export = _best(export, repeat)
        t_capture = _best(capture, repeat)
    nodes = len(capture_torch(model, (ids,), dynamic, example_kwargs=kwargs))
    print(guard.finish())
    print(f"GPT-2 ({layers} layers, width {config.n_embd}{', dynamic' if opts.dynamic else ''}), best of {repeat}; "
          f"{machine()}, torch {torch.__version__} with {torch.get_num_threads()} intra-op thread(s); {load[0]}:")
    print(f"  torch.export.export : {t_export:.3f} s")
    print(f"  capture_torch       : {t_capture:.3f} s  ({nodes} IR nodes)")
    print(f"  ratio               : {t_capture / t_export:.2f}x  (target <= 1.30x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
