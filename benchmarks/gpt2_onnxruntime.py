"""GPT-2 small on ONNX Runtime (CPU): accelir capture -> to_onnx against torch.onnx.export.

Both models come from one transformers GPT2Model (full size: 12 layers, n_embd 768,
random weights), take the same batch-1, seq-128 inputs and run in ONNX Runtime
sessions with the same options (ORT_ENABLE_ALL, same thread count), timed side by
side in one process: interleaved rounds, median latency of each.  accelir's path is
capture + lowering only, before any accelir pass.

    python benchmarks/gpt2_onnxruntime.py [--layers 12] [--seq 128] [--runs 30] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import onnxruntime as ort
import torch
import transformers

from accelir.frontends.torch import capture_torch
from accelir.lowering.onnx import to_onnx

__all__ = ["main"]


class LastHiddenState(torch.nn.Module):
    """GPT2Model called with keywords, returning the last hidden state (what both exporters see)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _session(model_bytes_or_path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(model_bytes_or_path, opts, providers=["CPUExecutionProvider"])


def _time(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads for both sessions (0: ORT's default)")
    args = ap.parse_args()

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=args.layers, n_embd=768, n_head=12, use_cache=False)
    model = LastHiddenState(transformers.GPT2Model(cfg)).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, args.seq), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)

    t0 = time.perf_counter()
    graph = capture_torch(model, (ids, mask))
    onnx_model = to_onnx(graph)
    build_accelir = time.perf_counter() - t0
    sess_a = _session(onnx_model.SerializeToString(), args.threads)
    feeds_a = {i.name: x.numpy() for i, x in zip(sess_a.get_inputs(), graph.meta["signature"].flatten(ids, mask))}

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "gpt2_torchscript.onnx")
        t0 = time.perf_counter()
        torch.onnx.export(model, (ids, mask), path, dynamo=False, input_names=["input_ids", "attention_mask"],
                          output_names=["last_hidden_state"], opset_version=17)
        build_torch = time.perf_counter() - t0
        sess_t = _session(path, args.threads)
    feeds_t = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    feeds_t = {k: v for k, v in feeds_t.items() if k in {i.name for i in sess_t.get_inputs()}}

    with torch.no_grad():
        want = model(ids, mask).numpy()
    for name, sess, feeds in (("accelir", sess_a, feeds_a), ("torch.onnx.export", sess_t, feeds_t)):
        got = sess.run(None, feeds)[0]
        err = float(np.abs(got - want).max() / np.abs(want).max())
        print(f"{name:>18}: relative error vs eager {err:.1e}, {len(sess.get_inputs())} inputs")

    for sess, feeds in ((sess_a, feeds_a), (sess_t, feeds_t)):
        _time(lambda: sess.run(None, feeds), 3)
    times_a: list[float] = []
    times_t: list[float] = []
    rounds = 5
    for _ in range(rounds):
        times_a += _time(lambda: sess_a.run(None, feeds_a), max(1, args.runs // rounds))
        times_t += _time(lambda: sess_t.run(None, feeds_t), max(1, args.runs // rounds))
    med_a, med_t = statistics.median(times_a) * 1e3, statistics.median(times_t) * 1e3
    print(f"GPT-2 ({args.layers} layers, n_embd 768), batch 1, seq {args.seq}, onnxruntime {ort.__version__} CPU, "
          f"{args.threads or 'default'} threads, {len(times_a)} runs each")
    print(f"  accelir capture + to_onnx        : {med_a:8.2f} ms median  (built in {build_accelir:.1f} s, "
          f"{len(onnx_model.graph.node)} ONNX nodes)")
    print(f"  torch.onnx.export (TorchScript)  : {med_t:8.2f} ms median  (exported in {build_torch:.1f} s)")
    print(f"  ratio accelir / torch.onnx.export: {med_a / med_t:.3f}  (< 1 is faster)")


if __name__ == "__main__":
    main()
