"""accelir's int8 / int4 against onnxruntime's own quantisers, side by side (ONNX Runtime, CPU).

    python -m benchmarks.precision [--models bert,gpt2,qwen2] [--threads 1] [--repeats 20] [--accuracy-level N]
                                   [--quick] [--allow-load]

For each model (batch 1, random weights from the config; ``benchmarks/models.py`` for BERT-base and
GPT-2 small at 128 tokens, and a Qwen2-0.5B-sized config here) it builds

- ``accelir fp32``: ``accelir.optimize(model, inputs)``;
- ``accelir int8`` (BERT) or ``accelir int4`` (GPT-2, Qwen2): ``optimize(..., precision=...)``, with
  the precision's default accuracy budget on the example inputs (a model that cannot meet it gets a
  row saying so, with the error's first line);
- ``accelir int8 / int4, every layer``: the level-2 pipeline then the quantisation pass on every
  quantisable layer, whatever the error: what the peer does, the like-for-like row;
- the peer: the TorchScript export (``torch.onnx.export(dynamo=False)``) quantised by
  ``onnxruntime.quantization.quantize_dynamic`` (int8 weights per channel, as accelir's) for int8, or
  by ``MatMulNBitsQuantizer`` (4 bits, block 32, symmetric, as accelir's) for int4.

Every int4 system runs MatMulNBits at one accuracy level, ``--accuracy-level`` (default: the level
``precision="int4"`` uses on onnxruntime's CPU, ``accelir.precision.int4_accuracy_level``; at 4 the
kernel rounds x to int8 per block): accelir's budget row measures its budget at that level, and the
peer's quantizer writes it into its nodes.

Every session has ORT_ENABLE_ALL and the same intra-op thread count; the peer's file is also run on the
session options accelir gives its own sessions (a row of its own), and "vs peer" is against the faster
of the peer's two sessions.  Each system's first output is
measured against eager torch in float32 (``accelir.accuracy.measure``: cosine and max_rel), then the
systems are timed in interleaved rounds (``accelir.timing.time_interleaved``).  The table gives the
median latency, how many of the weight-reading contractions each quantised (the peer's
MatMulNBitsQuantizer takes MatMul only, so GPT-2's Conv1D layers, exported as Gemm, stay float there,
and "vs peer" says "peer float" rather than compare int4 with float32),
the ratio of accelir's quantised model to the peer (target <= 1.0x, at a cosine no
lower than the peer's; GPT-2's peer row is the float model, its Gemm layers untouched, and is kept so) and to accelir's own fp32 (the speed-up a user gets for the accuracy shown).
The machine's load is recorded; a run under load prints no table unless ``--allow-load`` is given
(``benchmarks/conditions.py``).  Generation's per-token decode speed with int4 weights is not measured
here: it needs the KV-cache generation path, which this script does not build on.  ``--quick`` runs miniatures of each model and three rounds: a check
that the script runs, not a measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

if not __package__:  # run as a script: make the repo root importable, as ``-m`` does
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.conditions import LoadGuard, add_load_arguments, guard_from, session_call

__all__ = ["main", "run_model", "PRECISION_OF", "int4_at_level"]

PRECISION_OF = {"bert": "int8", "gpt2": "int4", "qwen2": "int4"}
#: the suffix of the peer's row on the optimizers accelir disables for its own CPU sessions
PEER_ACCELIR_OPTIONS = ", accelir's options"
BLOCK_SIZE = 32


@dataclass
class System:
    """One built system: its timed call, its first output, the build time."""

    call: Callable[[], Any]
    output: np.ndarray
    build_s: float
    layers: str  # quantised layers of all the quantisable ones


def _qwen2(quick: bool) -> tuple[Any, tuple]:
    from transformers import Qwen2Config, Qwen2Model

    from benchmarks.models import _text, _torch_seeded
    _torch_seeded()
    config = (Qwen2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          intermediate_size=128, vocab_size=1000) if quick else
              Qwen2Config(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                          intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True))
    config.use_cache = False
    return _text(Qwen2Model(config), config.vocab_size, 16 if quick else 128)


def _build_model(name: str, quick: bool) -> tuple[Any, tuple]:
    if name == "qwen2":
        return _qwen2(quick)
    from benchmarks.models import MODELS
    return MODELS[name].build(quick)


def _first(out: Any) -> np.ndarray:
    from accelir.arrays import to_numpy
    first = getattr(out, "last_hidden_state", None)
    if first is None:
        first = out[0] if isinstance(out, (list, tuple)) else out
    return np.asarray(to_numpy(first))


@contextlib.contextmanager
def int4_at_level(level: int) -> Iterator[None]:
    """``precision="int4"`` at accuracy level ``level`` while inside, whatever the backend's default."""
    from accelir.passes import QuantizeWeights
    from accelir.precision import PRECISION_PASSES, Precision
    saved = PRECISION_PASSES["int4"]
    PRECISION_PASSES["int4"] = Precision(lambda keep: QuantizeWeights(bits=4, block_size=BLOCK_SIZE,
                                                                      accuracy_level=level, keep=keep))
    try:
        yield
    finally:
        PRECISION_PASSES["int4"] = saved


def _accelir(model: Any, inputs: tuple, threads: int, precision: str, level: int, every_layer: bool = False
             ) -> System:
    """accelir at ``precision`` within its default budget, or with ``every_layer`` every quantisable
    layer quantised whatever the error (what onnxruntime's quantisers do: the like-for-like row);
    int4 at accuracy level ``level``."""
    import accelir
    from accelir.arrays import to_numpy
    from accelir.lowering.onnxruntime import OnnxRuntimeModule
    from accelir.passes import QuantizeDynamic, QuantizeWeights, pipeline
    t0 = time.perf_counter()
    if every_layer:
        quantise = (QuantizeDynamic() if precision == "int8" else
                    QuantizeWeights(bits=4, block_size=BLOCK_SIZE, accuracy_level=level))
        cm = accelir.optimize(model, inputs, passes=[*pipeline(2, "onnxruntime"), quantise])
        rep = None
    else:
        with int4_at_level(level):
            cm = accelir.optimize(model, inputs, precision=precision)
    build = time.perf_counter() - t0
    runner = OnnxRuntimeModule(cm.graph, threads=threads)  # the benchmark's thread count, as for the peer
    flat = [to_numpy(x) for x in cm.graph.meta["signature"].flatten(*inputs)]
    call = session_call(runner.session, flat, runner)
    rep = None if every_layer else cm.report.precision
    if every_layer:
        layers = f"all {sum(n.op in ('dynamic_quant_linear', 'matmul_nbits') for n in cm.graph.nodes)}"
    else:
        layers = "" if rep is None else f"{sum(not layer.kept for layer in rep.layers)}/{len(rep.layers)}"
    return System(call, np.asarray(call()[0]), build, layers)


QUANTISED_ONNX = ("MatMulNBits", "DynamicQuantizeMatMul", "MatMulInteger", "MatMulIntegerToFloat")


def _onnx_layers(path: str) -> str:
    """Quantised contractions of the file out of those and the float MatMul / Gemm reading a weight."""
    import onnx
    model = onnx.load(path)
    weights = {t.name for t in model.graph.initializer}
    quantised = sum(n.op_type in QUANTISED_ONNX for n in model.graph.node)
    left = sum(n.op_type in ("MatMul", "Gemm") and len(n.input) > 1 and n.input[1] in weights
               for n in model.graph.node)
    return f"{quantised}/{quantised + left}"


def _peer(model: Any, inputs: tuple, threads: int, precision: str, level: int, tmp: str, name: str
          ) -> dict[str, System]:
    """The peer's quantised export in two sessions: onnxruntime's default optimizers (``name``) and the
    ones accelir's own sessions disable (``name + PEER_ACCELIR_OPTIONS``), so that a ratio to the peer is
    against the faster of the two, not against a session option accelir's rows alone have."""
    import onnx
    import torch

    from benchmarks.run import ort_session
    path, qpath = os.path.join(tmp, "torchscript.onnx"), os.path.join(tmp, f"torchscript.{precision}.onnx")
    t0 = time.perf_counter()
    with torch.no_grad():
        torch.onnx.export(model, inputs, path, dynamo=False)
    if precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic
        quantize_dynamic(path, qpath, per_channel=True, weight_type=QuantType.QInt8)
    else:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
        quantizer = MatMulNBitsQuantizer(onnx.load(path), bits=4, block_size=BLOCK_SIZE, is_symmetric=True,
                                         accuracy_level=level)
        quantizer.process()
        quantizer.model.save_model_to_file(qpath, use_external_data_format=False)
    quantise_s, out = time.perf_counter() - t0, {}
    for suffix, accelir_options in (("", False), (PEER_ACCELIR_OPTIONS, True)):
        t1 = time.perf_counter()
        session = ort_session(qpath, threads, accelir_options=accelir_options)
        build = quantise_s + time.perf_counter() - t1  # the export and quantisation, then this session
        call = session_call(session, inputs)
        out[name + suffix] = System(call, np.asarray(call()[0]), build, _onnx_layers(qpath))
    return out


def run_model(name: str, *, quick: bool, threads: int, repeats: int, guard: LoadGuard, level: int | None = None
              ) -> dict[str, Any]:
    """One model's row: per system its latency, cosine / max_rel against eager float32 and build time;
    int4 systems at accuracy level ``level`` (None: what accelir uses on onnxruntime's CPU)."""
    import torch

    from accelir.accuracy import measure
    from accelir.precision import PrecisionError, int4_accuracy_level
    from accelir.timing import time_interleaved
    level = int4_accuracy_level("onnxruntime", "cpu") if level is None else level
    precision = PRECISION_OF[name]
    model, inputs = _build_model(name, quick)
    with torch.no_grad():
        reference = _first(model(*inputs))
    peer_name = ("ort quantize_dynamic" if precision == "int8" else
                 f"ort MatMulNBitsQuantizer (block {BLOCK_SIZE}, level {level})")
    over_budget: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        systems = {"accelir fp32": _accelir(model, inputs, threads, "fp32", level)}
        try:
            systems[f"accelir {precision}"] = _accelir(model, inputs, threads, precision, level)
        except PrecisionError as e:  # a row of its own: the budget this model cannot meet at this precision
            over_budget[f"accelir {precision}"] = str(e).split("; the layers")[0]
        systems[f"accelir {precision}, every layer"] = _accelir(model, inputs, threads, precision, level,
                                                                every_layer=True)
        systems.update(_peer(model, inputs, threads, precision, level, tmp, peer_name))
        with guard.watch() as load:
            timings = time_interleaved({k: s.call for k, s in systems.items()}, warmup=2 if quick else 5,
                                       repeats=repeats)
    errors = {k: measure([reference], [s.output]) for k, s in systems.items()}
    return {"model": name, "precision": precision, "peer": peer_name,
            "peers": [peer_name, peer_name + PEER_ACCELIR_OPTIONS], "load": str(load[0]), "over_budget": over_budget,
            "accuracy_level": level if precision == "int4" else None,
            "systems": {k: {"median_ms": timings[k].median * 1e3, "cosine": errors[k].cosine,
                            "max_rel": errors[k].max_rel, "build_s": s.build_s, "layers": s.layers} for k, s in systems.items()}}


def report(rows: list[dict[str, Any]], threads: int, conditions: str) -> str:
    lines = [f"accelir reduced precision against onnxruntime's quantisers: batch 1, ONNX Runtime CPU, ORT_ENABLE_ALL, "
             f"{threads} intra-op thread(s) for every session; the peer also on accelir's session options, "
             "vs peer against the faster of its two sessions; error against eager torch float32"
             + "".join(sorted({f"; int4 at MatMulNBits accuracy level {r['accuracy_level']}, accelir and peer alike"
                               for r in rows if r.get("accuracy_level") is not None})), conditions, "",
             "| model | system | quantised layers | median ms | cosine | max_rel | build s | vs peer | vs accelir fp32 "
             "| load |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        s = row["systems"]
        fp32 = s["accelir fp32"]
        for name, why in row.get("over_budget", {}).items():
            lines.append(f"| {row['model']} | {name} | not built: {why} | | | | | | | {row['load']} |")
        for name, r in s.items():
            peers = [s[p] for p in row.get("peers", [row["peer"]])]
            vs_peer = ""
            if name.startswith("accelir int"):  # no ratio to a peer whose quantiser left every layer in float
                vs_peer = ("peer float" if all(p["layers"].startswith("0/") for p in peers) else
                           f"{r['median_ms'] / min(p['median_ms'] for p in peers):.2f}x")
            vs_fp32 = f"{r['median_ms'] / fp32['median_ms']:.2f}x"
            lines.append(f"| {row['model']} | {name} | {r['layers']} | {r['median_ms']:.3f} | {r['cosine']:.6f} | {r['max_rel']:.3g} | "
                         f"{r['build_s']:.1f} | {vs_peer} | {vs_fp32} | {row['load']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="bert,gpt2,qwen2", help="comma-separated: bert (int8), gpt2, qwen2 (int4)")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads of every session (default 1)")
    ap.add_argument("--repeats", type=int, default=20, help="timed rounds (default 20)")
    ap.add_argument("--accuracy-level", type=int, choices=range(5), default=None,
                    help="MatMulNBits accuracy level of every int4 system, accelir's and the peer's (default: what "
                         "precision='int4' uses on onnxruntime's CPU)")
    ap.add_argument("--quick", action="store_true", help="miniature models and three rounds: a check that it runs")
    add_load_arguments(ap)
    args = ap.parse_args(argv)
    names = [n for n in args.models.split(",") if n]
    unknown = sorted(set(names) - set(PRECISION_OF))
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(PRECISION_OF)}")
    guard = guard_from(args, args.threads)
    import torch
    torch.set_num_threads(args.threads)
    rows = [run_model(n, quick=args.quick, threads=args.threads, repeats=3 if args.quick else args.repeats,
                      guard=guard, level=args.accuracy_level) for n in names]
    print(report(rows, args.threads, guard.finish()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
