"""Benchmark: accelir as an ONNX optimiser against onnxsim and the raw torch.onnx.export.

For GPT-2 small, BERT-base, ResNet-50 and ViT-base (random weights, built from their
config classes) it exports an ONNX file, then compares three files run by onnxruntime
with all graph optimisations on: the raw export, onnxsim's simplification and
accelir's (import -> level-2 passes -> ONNX lowering).  Each file runs on two
sessions: the benchmark's options and accelir's own (SkipLayerNormFusion off on the
CPU), so no file is timed without the options accelir gives itself.  Every file's
outputs are checked against eager torch (a tolerance by dtype; a wrong file is
flagged and not timed); the sessions are timed in interleaved rounds, the order
rotating each round, each a bare ``session.run`` on a numpy feed made beforehand.
Columns: node count, file size, median latency on each session, optimisation time
(the median of ``--opt-runs`` runs, the two optimisers taking turns), the largest
difference from eager torch, and the machine's load before and after the model (a
run under load prints no table unless ``--allow-load`` is given).

    python benchmarks/onnx_models.py            # full-size models
    python benchmarks/onnx_models.py --quick    # the tiny GPT-2, one optimisation run, two rounds (a check)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import onnx

if not __package__:  # run as a script: make the repo root importable, as ``-m`` does
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from accelir.timing import time_interleaved  # noqa: E402
from benchmarks.conditions import add_load_arguments, check_outputs, guard_from, rotated, session_call  # noqa: E402

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


OPTIONS = {"": False, "accelir's options": True}  # session label -> ort_session(accelir_options=...)


@dataclass
class Measured:
    """One file: its size, its outputs' check against eager torch, and its latency on each session (ms)."""

    nodes: int
    size: int
    wrong: str
    error: float
    median_ms: dict[str, float] = field(default_factory=dict)
    min_ms: dict[str, float] = field(default_factory=dict)


def measure(files: dict[str, str], inputs: list[np.ndarray], want: list[np.ndarray], runs: int, threads: int,
            warmup: int = 3) -> dict[str, Measured]:
    """Per file: node count, bytes, the check of its outputs against ``want``, and (when right) the median and
    min latency of a session with each of OPTIONS, all sessions timed in interleaved rounds."""
    from benchmarks.run import ort_session
    out: dict[str, Measured] = {}
    calls = {}
    for kind, path in files.items():
        got = session_call(ort_session(path, threads), inputs)()
        wrong = check_outputs(want, got)
        error = float("nan") if wrong else max((float(np.max(np.abs(a.astype(np.float64) - b))) for a, b in
                                                zip(got, want) if a.size), default=0.0)
        out[kind] = Measured(len(onnx.load(path, load_external_data=False).graph.node), os.path.getsize(path),
                             wrong, error)
        if not wrong:
            for label, accelir_options in OPTIONS.items():
                calls[(kind, label)] = session_call(ort_session(path, threads, accelir_options=accelir_options),
                                                    inputs)
    timings = time_interleaved(calls, warmup=warmup, repeats=runs)
    for (kind, label), t in timings.items():
        out[kind].median_ms[label], out[kind].min_ms[label] = t.median * 1e3, t.min * 1e3
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", "--tiny", action="store_true",
                    help="the tiny GPT-2 only (unless --models), one optimisation run, two rounds: a check of the "
                    "harness, not a measurement")
    ap.add_argument("--models", nargs="*", default=None, choices=list(MODELS))
    ap.add_argument("--runs", type=int, default=None, help="interleaved rounds (default 20, 2 with --quick)")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads of every session")
    ap.add_argument("--opt-runs", type=int, default=None,
                    help="optimisation runs per optimiser (median reported; default 5, 1 with --quick)")
    add_load_arguments(ap)
    opts = ap.parse_args(argv)
    models = opts.models or (["gpt2"] if opts.quick else list(MODELS))
    runs = opts.runs if opts.runs is not None else (2 if opts.quick else 20)
    opt_runs = opts.opt_runs if opts.opt_runs is not None else (1 if opts.quick else 5)
    guard = guard_from(opts, opts.threads)
    import torch
    from accelir.cli import flat_arrays
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            with guard.watch() as load:
                model, args = MODELS[name](opts.quick)
                with torch.no_grad():
                    want = flat_arrays(model(*args))
                raw = os.path.join(tmp, f"{name}.onnx")
                export(model, args, raw)
                files = {"raw": (raw, 0.0)}
                # the optimisers take turns, and each reports its median: a single run, or runs in a row, would
                # measure the page cache, the allocator's state and the other load as much as the optimiser
                optimisers = {"onnxsim": optimize_onnxsim, "accelir": optimize_accelir}
                times: dict[str, list[float]] = {kind: [] for kind in optimisers}
                for k in range(opt_runs):
                    for kind in rotated(list(optimisers), k):
                        try:
                            times[kind].append(optimisers[kind](raw, os.path.join(tmp, f"{name}.{kind}.onnx")))
                        except Exception as e:  # a failing optimiser is a row of the table, not the end of the run
                            print(f"{name}: {kind} failed: {type(e).__name__}: {str(e)[:200]}", file=sys.stderr)
                            del optimisers[kind], times[kind]
                for kind, took in times.items():
                    files[kind] = (os.path.join(tmp, f"{name}.{kind}.onnx"), statistics.median(took))
                measured = measure({kind: path for kind, (path, _) in files.items()},
                                   [a.numpy() for a in args], want, runs, opts.threads, warmup=1 if opts.quick else 3)
            for kind, (path, took) in files.items():
                rows.append((name, kind, measured[kind], took, load[0]))
    print(guard.finish())
    print(f"{runs} interleaved rounds (the order rotating each round), {opts.threads} intra-op thread(s) per "
          "session, ORT_ENABLE_ALL; \"accelir opts\": the same file on a session with accelir's own options "
          "(SkipLayerNormFusion off); max|diff| against eager torch")
    print(f"{'model':<10} {'file':<8} {'nodes':>6} {'MB':>8} {'ms':>8} {'min ms':>8} {'ms accelir opts':>16} "
          f"{'opt s':>7} {'max|diff|':>10}  load")
    for name, kind, m, took, load in rows:
        if m.wrong:
            print(f"{name:<10} {kind:<8} {m.nodes:>6} {m.size / 1e6:>8.2f} wrong output: {m.wrong}  {load}")
            continue
        print(f"{name:<10} {kind:<8} {m.nodes:>6} {m.size / 1e6:>8.2f} {m.median_ms['']:>8.2f} {m.min_ms['']:>8.2f} "
              f"{m.median_ms[list(OPTIONS)[1]]:>16.2f} {took:>7.2f} {m.error:>10.2e}  {load}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
