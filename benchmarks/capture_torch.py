"""Capture time of the torch frontend against a bare ``torch.export.export``.

Builds GPT-2 small (12 layers, random weights) and times, best of ``--repeat``
runs each, a bare ``torch.export.export`` and ``accelir.frontends.torch.capture_torch``
(which includes its own export).  The target is capture <= 1.3x export.

    python benchmarks/capture_torch.py [--layers 12] [--repeat 3] [--dynamic]
"""

from __future__ import annotations

import argparse
import time

import torch
import transformers

from accelir.frontends.torch import capture_torch

__all__ = ["main"]


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dynamic", action="store_true", help="batch and sequence as dynamic dims")
    opts = parser.parse_args()

    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=opts.layers, use_cache=False)
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

    export()  # warm-up: first export pays for imports and dispatcher caches
    t_export = _best(export, opts.repeat)
    t_capture = _best(capture, opts.repeat)
    nodes = len(capture_torch(model, (ids,), dynamic, example_kwargs=kwargs))
    print(f"GPT-2 ({opts.layers} layers{', dynamic' if opts.dynamic else ''}), best of {opts.repeat}:")
    print(f"  torch.export.export : {t_export:.3f} s")
    print(f"  capture_torch       : {t_capture:.3f} s  ({nodes} IR nodes)")
    print(f"  ratio               : {t_capture / t_export:.2f}x  (target <= 1.30x)")


if __name__ == "__main__":
    main()
