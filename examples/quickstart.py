"""Quickstart: optimise a transformers GPT-2 with accelir, run it on ONNX Runtime and on XLA, export it.

The model is built from its config with random weights (nothing is downloaded).
By default it is a small GPT-2 (2 layers, width 64) so the script runs in seconds;
``--full`` (or ``ACCELIR_FULL=1``) builds GPT-2 small (12 layers, width 768).

    python examples/quickstart.py [--full] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
from transformers import GPT2Config, GPT2Model

import accelir
from accelir.timing import latency_table, time_interleaved

__all__ = ["build_model", "gpt2", "main"]


def build_model(full: bool) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """GPT-2 (small, or a 2-layer miniature) with random weights, a batch of token ids and its attention mask."""
    torch.manual_seed(0)
    if full:
        config = GPT2Config()
        seq = 128
    else:
        config = GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=1000, n_positions=128, bos_token_id=0,
                            eos_token_id=0)
        seq = 16
    # One forward pass over a whole sequence: no KV cache to return.
    config.use_cache = False
    model = GPT2Model(config).eval()
    ids = torch.randint(0, config.vocab_size, (1, seq))
    return model, ids, torch.ones_like(ids)


def gpt2() -> tuple[torch.nn.Module, tuple[torch.Tensor]]:
    """Factory for the command line: ``accelir optimize examples/quickstart.py:gpt2 -o gpt2.onnx``."""
    model, ids, _ = build_model(os.environ.get("ACCELIR_FULL") == "1")
    return model, (ids,)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", default=os.environ.get("ACCELIR_FULL") == "1",
                        help="GPT-2 small instead of the 2-layer miniature")
    parser.add_argument("--out", default=None, help="directory for the exported files (default: a temporary one)")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per system")
    args = parser.parse_args(argv)
    out_dir = args.out or tempfile.mkdtemp(prefix="accelir-quickstart-")
    os.makedirs(out_dir, exist_ok=True)

    model, ids, mask = build_model(args.full)
    with torch.no_grad():
        expected = model(ids, attention_mask=mask).last_hidden_state
    tolerance = 1e-4 + 1e-3 * expected.abs().max().item()

    # 1. capture + optimise + lower, once per backend
    compiled = {}
    for backend in ("onnxruntime", "xla"):
        t0 = time.perf_counter()
        compiled[backend] = accelir.optimize(model, (ids,), example_kwargs={"attention_mask": mask}, backend=backend)
        seconds = time.perf_counter() - t0
        out = compiled[backend](ids, attention_mask=mask)  # a transformers ModelOutput, like the model's own
        err = (out.last_hidden_state - expected).abs().max().item()
        print(f"{backend:12s} optimize() took {seconds:.2f} s; max abs error vs eager torch: {err:.2e}")
        if not err <= tolerance:
            raise SystemExit(f"{backend}: outputs differ from eager torch by {err}")

    # 2. what the passes did
    cm = compiled["onnxruntime"]
    print(f"\nnodes: {cm.source_graph.num_nodes()} captured -> {cm.graph.num_nodes()} after level-2 passes")
    print(cm.report)

    # 3. speed against eager torch, timed in interleaved rounds
    def eager() -> object:
        with torch.no_grad():
            return model(ids, attention_mask=mask)

    timings = time_interleaved({"torch eager": eager,
                                "accelir -> onnxruntime": lambda: compiled["onnxruntime"](ids, attention_mask=mask),
                                "accelir -> xla": lambda: compiled["xla"](ids, attention_mask=mask)},
                               repeats=args.repeats)
    print("\nlatency:")
    print(latency_table(timings, "torch eager", indent="  "))

    # 4. export: ONNX for any ONNX runtime, StableHLO for XLA, and an HTML report of the graph and passes
    for name, backend in (("gpt2.onnx", "onnxruntime"), ("gpt2.mlir", "xla"), ("gpt2.html", "onnxruntime")):
        path = compiled[backend].export(os.path.join(out_dir, name), overwrite=True)
        print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
