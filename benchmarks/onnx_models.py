"""Benchmark: accelir as an ONNX optimiser against onnxsim and the raw torch.onnx.export.

For GPT-2 small, BERT-base, ResNet-50 and ViT-base (random weights, built from their
config classes) it exports an ONNX file, then compares three files run by onnxruntime
with all graph optimisations on: the raw export, onnxsim's simplification and
accelir's (import -> level-2 passes -> ONNX lowering).  Columns: node count, file
size, median latency, optimisation time (the median of ``--opt-runs`` runs, the two optimisers
taking turns).

    python benchmarks/onnx_models.py            # full-size models
    python benchmarks/onnx_models.py --tiny     # tiny configs, a quick check of the harness
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

import numpy as np
import onnx

from accelir.timing import time_interleaved

__all__ = ["MODELS", "export", "optimize_accelir", "optimize_onnxsim", "measure", "main"]


def _gpt2(tiny: bool) -> tuple[Any, tuple]:
    import torch
    from transformers import GPT2Config, GPT2Model
    cfg = GPT2Config(n_layer=2, n_embd=64, n_head=4, use_cache=False) if tiny else GPT2Config(use_cache=False)
    return GPT2Model(cfg).eval(), (torch.randint(0, cfg.vocab_size, (1, 128)),)


def _bert(tiny: bool) -> tuple[Any, tuple]:
    import torch
    from transformers import BertConfig, BertModel
    cfg = BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128) if tiny \
        else BertConfig()
    return BertModel(cfg).eval(), (torch.randint(0, cfg.vocab_size, (1, 128)),)


def _resnet(tiny: bool) -> tuple[Any, tuple]:
    import torch
    from transformers import ResNetConfig, ResNetModel
    cfg = ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1]) if tiny else ResNetConfig()
    return ResNetModel(cfg).eval(), (torch.randn(1, 3, 224 if not tiny else 64, 224 if not tiny else 64),)


def _vit(tiny: bool) -> tuple[Any, tuple]:
    import torch
    from transformers import ViTConfig, ViTModel
    cfg = ViTConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128,
                    image_size=32, patch_size=8) if tiny else ViTConfig()
    return ViTModel(cfg).eval(), (torch.randn(1, 3, cfg.image_size, cfg.image_size),)


MODELS: dict[str, Callable[[bool], tuple[Any, tuple]]] = {
    "gpt2": _gpt2, "bert-base": _bert, "resnet-50": _resnet, "vit-base": _vit}


def export(model: Any, args: tuple, path: str) -> None:
    import torch
    with torch.no_grad():
        torch.onnx.export(model, args, path, input_names=[f"input_{i}" for i in range(len(args))],
                          opset_version=18, dynamo=True, external_data=False)


def optimize_onnxsim(src: str, dst: str) -> float:
    import onnxsim
    t0 = time.perf_counter()
    model, ok = onnxsim.simplify(onnx.load(src))
    took = time.perf_counter() - t0
    if not ok:
        raise RuntimeError("onnxsim could not validate its result")
    onnx.save(model, dst)
    return took


def optimize_accelir(src: str, dst: str) -> float:
    from accelir.frontends.onnx import import_onnx, restore_onnx_interface
    from accelir.lowering.onnx import to_onnx
    from accelir.pass_manager import PassManager
    from accelir.passes import pipeline
    t0 = time.perf_counter()
    graph = import_onnx(src)
    PassManager(pipeline(2, "onnxruntime"), verify_each=False, snapshot=False).run(graph)
    model = restore_onnx_interface(to_onnx(graph), graph)
    took = time.perf_counter() - t0
    onnx.save(model, dst)
    return took


def measure(files: dict[str, str], feeds: dict[str, np.ndarray], runs: int, threads: int) -> dict[str, tuple]:
    """Per file: (node count, file bytes, median ms, min ms, outputs), the sessions timed in interleaved rounds."""
    from benchmarks.run import ort_session
    sessions = {kind: ort_session(path, threads) for kind, path in files.items()}
    calls = {}
    outputs = {}
    for kind, sess in sessions.items():
        named = dict(zip([i.name for i in sess.get_inputs()], feeds.values()))
        outputs[kind] = sess.run(None, named)
        calls[kind] = functools.partial(sess.run, None, named)
    timings = time_interleaved(calls, warmup=3, repeats=runs)
    return {kind: (len(onnx.load(path, load_external_data=False).graph.node), os.path.getsize(path),
                   timings[kind].median * 1e3, timings[kind].min * 1e3, outputs[kind])
            for kind, path in files.items()}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny model configs (checks the harness quickly)")
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--runs", type=int, default=20, help="interleaved rounds")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads of every session")
    ap.add_argument("--opt-runs", type=int, default=5, help="optimisation runs per optimiser (median reported)")
    opts = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in opts.models:
            model, args = MODELS[name](opts.tiny)
            raw = os.path.join(tmp, f"{name}.onnx")
            export(model, args, raw)
            feeds = {f"input_{i}": a.numpy() for i, a in enumerate(args)}
            files = {"raw": (raw, 0.0)}
            # the optimisers take turns, and each reports its median: a single run, or runs in a row, would
            # measure the page cache, the allocator's state and the other load as much as the optimiser
            optimisers = {"onnxsim": optimize_onnxsim, "accelir": optimize_accelir}
            times: dict[str, list[float]] = {kind: [] for kind in optimisers}
            for _ in range(opts.opt_runs):
                for kind, fn in list(optimisers.items()):
                    try:
                        times[kind].append(fn(raw, os.path.join(tmp, f"{name}.{kind}.onnx")))
                    except Exception as e:  # a failing optimiser is a row of the table, not the end of the run
                        print(f"{name}: {kind} failed: {type(e).__name__}: {str(e)[:200]}", file=sys.stderr)
                        del optimisers[kind], times[kind]
            for kind, runs in times.items():
                files[kind] = (os.path.join(tmp, f"{name}.{kind}.onnx"), statistics.median(runs))
            measured = measure({kind: path for kind, (path, _) in files.items()}, feeds, opts.runs, opts.threads)
            ref = measured["raw"][4]
            for kind, (path, took) in files.items():
                nodes, size, ms, best, outs = measured[kind]
                err = max(float(np.max(np.abs(a.astype(np.float64) - b))) for a, b in zip(outs, ref))
                rows.append((name, kind, nodes, size, ms, best, took, err))
    print(f"{opts.runs} interleaved rounds, {opts.threads} intra-op thread(s) per session, ORT_ENABLE_ALL")
    print(f"{'model':<10} {'file':<8} {'nodes':>6} {'MB':>8} {'ms':>8} {'min ms':>8} {'opt s':>7} {'max|diff|':>10}")
    for name, kind, nodes, size, ms, best, took, err in rows:
        print(f"{name:<10} {kind:<8} {nodes:>6} {size / 1e6:>8.2f} {ms:>8.2f} {best:>8.2f} {took:>7.2f} {err:>10.2e}")
    return 0


if __name__ == "__main__":
    if not __package__:  # run as a script: make the repo root importable, as ``-m`` does
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main(sys.argv[1:]))
