"""onnxruntime's MatMulNBits (4 bits) at each accuracy level on this CPU: how fast, and how far from exact.

    python -m benchmarks.int4_kernels [--threads 1] [--repeats 30] [--blocks 32,128] [--levels 0,1,4]
                                      [--gpt2] [--quick] [--allow-load]

One-node MatMulNBits models (4 bits, symmetric, the weight quantised and packed by accelir's own
``quantize_blockwise`` / ``pack_nbits``, ORT_ENABLE_ALL, the same thread count), one per accuracy level,
on GPT-2 small's shapes: x [M, 768] times [768, 768], [768, 3072], [3072, 768] and the tied lm_head
[768, 50257], at M = 128 (a prefill of 128 tokens) and M = 1 (a decode step), for each block size.
At level 0 / 1 the kernel dequantises each block of the weight to f32; at level 4 it rounds x to int8
per block and multiplies integers (``accelir.ops.quant``'s docstring gives the arithmetic).

The levels of one shape are timed in interleaved rounds, the order rotating, by the CPU time of each
``session.run`` (``time.process_time``: with one intra-op thread the kernel runs on the calling thread,
so time other processes take is not counted; a shared machine is compared fairly within one run).
With ``--threads`` above 1 the shapes are timed by wall clock instead: onnxruntime's idle intra-op
threads spin, and process CPU time would count their waiting as the kernel's work.
The table gives each level's median CPU ms and its ratio to level 0, and each level's error
(``accelir.accuracy.measure``'s max_rel and 1 - cosine) against ``x @ W`` in float64, ``W`` the
dequantised weight: what every level multiplies by, so the error is the kernel's own (level 4's is
the rounding of x).

``--gpt2`` also compares the levels end to end on GPT-2 small (random weights), in one process by
CPU time: accelir fp32 and ``precision="int4"`` at each level, every layer quantised (block 32): the
128-token forward of ``GPT2Model`` (median of ``--repeats`` interleaved calls, one intra-op thread),
and the per-token decode time of ``cm.generate`` on ``GPT2LMHeadModel`` (prompt 32, one intra-op
thread: the CPU time of 65 tokens less that of 1, over 64; median of 3 rotating rounds), each with its cosine to eager
float32 and whether its greedy tokens equal level 0's.  ``--quick`` times two small shapes (and a
miniature GPT-2) for three rounds: a check that the script runs, not a measurement.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import numpy as np

if not __package__:  # run as a script: make the repo root importable, as ``-m`` does
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.conditions import add_load_arguments, guard_from

__all__ = ["main", "run_shape", "SHAPES"]

#: (M, K, N): GPT-2 small's q/k/v/out, MLP up, MLP down and lm_head, at a 128-token prefill and one decode row
SHAPES = [(m, k, n) for m in (128, 1) for k, n in ((768, 768), (768, 3072), (3072, 768), (768, 50257))]
QUICK_SHAPES = [(4, 128, 64), (1, 128, 64)]
#: columns quantised at a time, so the lm_head's float weight is never whole in memory
CHUNK = 8192


def _weights(k: int, n: int, block: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random [K, N] weight (GPT-2's init scale) as MatMulNBits holds it: (packed u8 [N, n_blocks,
    block / 2], scales f32 [N, n_blocks]), quantised by accelir's quantize_weights arithmetic."""
    from accelir.ops.quant import pack_nbits, quantize_blockwise
    packed, scales = [], []
    for start in range(0, n, CHUNK):
        w = (rng.standard_normal((k, min(CHUNK, n - start))) * 0.02).astype(np.float32)
        q, s, _ = quantize_blockwise(w, 4, block, symmetric=True)
        packed.append(pack_nbits(q.reshape(q.shape[0], s.shape[1], block), 4))
        scales.append(s)
    return np.concatenate(packed), np.concatenate(scales)


def _exact(x: np.ndarray, packed: np.ndarray, scales: np.ndarray, block: int) -> np.ndarray:
    """``x @ W`` in float64, ``W`` the dequantised weight, a chunk of columns at a time."""
    from accelir.ops.quant import dequantize_nbits
    x64 = x.astype(np.float64)
    return np.concatenate([x64 @ dequantize_nbits(packed[i:i + CHUNK], scales[i:i + CHUNK], None, 4, block,
                                                  x.shape[1]).astype(np.float64)
                           for i in range(0, packed.shape[0], CHUNK)], axis=1)


def _session(k: int, n: int, block: int, level: int, packed: np.ndarray, scales: np.ndarray, threads: int) -> Any:
    from onnx import TensorProto, helper, numpy_helper

    from benchmarks.run import ort_session
    node = helper.make_node("MatMulNBits", ["x", "b", "s"], ["y"], domain="com.microsoft", K=k, N=n, bits=4,
                            block_size=block, accuracy_level=level)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(packed, "b"),
                                           numpy_helper.from_array(scales.reshape(-1), "s")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21),
                                                    helper.make_opsetid("com.microsoft", 1)])
    return ort_session(model.SerializeToString(), threads)


def run_shape(m: int, k: int, n: int, block: int, levels: list[int], threads: int, repeats: int
              ) -> dict[int, dict[str, float]]:
    """Per accuracy level: median CPU seconds of x [m, k] @ the 4-bit [k, n] weight, and its error against
    the float64 product with the dequantised weight (``max_rel``, ``cosine``, ``same_as_0``: bit for bit
    level 0's output, i.e. the level changed nothing here)."""
    from accelir.accuracy import measure
    from accelir.timing import time_interleaved
    rng = np.random.default_rng(0)
    packed, scales = _weights(k, n, block, rng)
    x = rng.standard_normal((m, k)).astype(np.float32)
    exact = _exact(x, packed, scales, block)
    sessions = {level: _session(k, n, block, level, packed, scales, threads) for level in levels}
    outputs = {level: s.run(None, {"x": x})[0] for level, s in sessions.items()}
    timings = time_interleaved({level: (lambda s=s: s.run(None, {"x": x})) for level, s in sessions.items()},
                               warmup=3, repeats=repeats, clock=shape_clock(threads))
    out = {}
    for level in levels:
        e = measure([exact], [outputs[level]])
        out[level] = {"cpu_s": timings[level].median, "spread": timings[level].spread, "max_rel": e.max_rel,
                      "cosine": e.cosine, "same_as_0": bool(np.array_equal(outputs[level], outputs[levels[0]]))}
    return out


def shape_clock(threads: int) -> Any:
    """The clock of :func:`run_shape`: process CPU time with one intra-op thread (the kernel runs on the
    calling thread), else wall clock (idle intra-op threads spin, and CPU time would count it)."""
    return time.process_time if threads == 1 else time.perf_counter


#: prompt and new tokens of the ``--gpt2`` decode timing
PROMPT, NEW = 32, 64


def _gpt2_forward(levels: list[int], repeats: int, quick: bool) -> dict[str, tuple[float, float]]:
    """System -> (median CPU s of GPT2Model's forward, cosine to eager float32)."""
    import torch

    import accelir
    from accelir.accuracy import measure
    from accelir.arrays import to_numpy
    from accelir.lowering.onnxruntime import OnnxRuntimeModule
    from accelir.passes import QuantizeWeights, pipeline
    from accelir.timing import time_interleaved
    from benchmarks.conditions import session_call
    from benchmarks.models import MODELS
    model, inputs = MODELS["gpt2"].build(quick)
    with torch.no_grad():
        want = model(*inputs).last_hidden_state
    calls, cosine = {}, {}
    for level in [None, *levels]:
        name = "accelir fp32" if level is None else f"accelir int4, level {level}"
        quantise = [] if level is None else [QuantizeWeights(bits=4, block_size=32, accuracy_level=level)]
        cm = accelir.optimize(model, inputs, passes=[*pipeline(2, "onnxruntime"), *quantise])
        runner = OnnxRuntimeModule(cm.graph, threads=1)
        calls[name] = session_call(runner.session, [to_numpy(x) for x in cm.graph.meta["signature"].flatten(*inputs)],
                                   runner)
        cosine[name] = measure([want], [calls[name]()[0]]).cosine
    timings = time_interleaved(calls, warmup=2, repeats=repeats, clock=time.process_time)
    return {name: (t.median, cosine[name]) for name, t in timings.items()}


def _gpt2_decode(levels: list[int], quick: bool) -> dict[str, tuple[float, float, bool]]:
    """System -> (CPU s per decode token of cm.generate, prefill cosine to eager, tokens equal level 0's)."""
    import numpy as np
    import torch
    import transformers as T

    import accelir
    from accelir.accuracy import measure
    from accelir.generation import OrtSteps
    from benchmarks.conditions import rotated
    from benchmarks.precision import int4_at_level
    torch.manual_seed(0)
    config = T.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=1000) if quick else T.GPT2Config()
    model = T.GPT2LMHeadModel(config).eval()
    ids = torch.randint(0, config.vocab_size, (1, PROMPT), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(ids).logits
    cms = {"accelir fp32": accelir.optimize(model, (ids,))}
    for level in levels:
        with int4_at_level(level):
            cms[f"accelir int4, level {level}"] = accelir.optimize(model, (ids,), precision="int4",
                                                                   accuracy={"max_abs": 1e30})
    for name, cm in cms.items():  # one intra-op thread, as benchmarks/generate.py gives accelir's sessions
        cm._stepper = cm._runner = OrtSteps.build(cm.decode_graph, threads=1)  # one session, as optimize's
    runs: dict[tuple[str, int], list[float]] = {(name, n): [] for name in cms for n in (1, NEW + 1)}
    tokens = {}
    for r in range(4):  # the first round warms up
        for name, n in rotated(list(runs), r):
            t0 = time.process_time()
            out = cms[name].generate(ids, max_new_tokens=n, min_new_tokens=n)
            if r:
                runs[(name, n)].append(time.process_time() - t0)
            tokens[name] = out[0, PROMPT:].tolist()
    med = {key: float(np.median(v)) for key, v in runs.items()}
    base = f"accelir int4, level {levels[0]}"
    return {name: ((med[(name, NEW + 1)] - med[(name, 1)]) / NEW, measure([want], [cm(ids).logits]).cosine,
                   tokens[name] == tokens[base]) for name, cm in cms.items()}


def gpt2_report(levels: list[int], repeats: int, quick: bool) -> str:
    """The ``--gpt2`` table: forward and per-token decode CPU time of fp32 and int4 at each level."""
    forward, decode = _gpt2_forward(levels, repeats, quick), _gpt2_decode(levels, quick)
    base = f"accelir int4, level {levels[0]}"
    lines = [f"GPT-2 {'(miniature) ' if quick else 'small '}end to end, process CPU time: forward of "
             f"{16 if quick else 128} tokens "
             f"(GPT2Model, 1 intra-op thread) and decode per token (cm.generate, prompt {PROMPT}, {NEW} tokens)",
             "| system | forward cpu ms | vs fp32 | cosine | decode cpu ms / token | vs fp32 | cosine | tokens = "
             f"level {levels[0]}'s |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    f32f, f32d = forward["accelir fp32"][0], decode["accelir fp32"][0]
    for name in forward:
        (fs, fc), (ds, dc, same) = forward[name], decode[name]
        lines.append(f"| {name} | {fs * 1e3:.2f} | {fs / f32f:.2f}x | {fc:.6f} | {ds * 1e3:.2f} | {ds / f32d:.2f}x | "
                     f"{dc:.6f} | {'' if name in ('accelir fp32', base) else same} |")
    return "\n".join(lines)


def _row(m: int, k: int, n: int, block: int, levels: list[int], r: dict[int, dict[str, float]]) -> str:
    base = r[levels[0]]["cpu_s"]
    times = " | ".join(f"{r[lv]['cpu_s'] * 1e3:.3f} ({r[lv]['cpu_s'] / base:.2f}x, IQR {r[lv]['spread']:.0%})"
                       for lv in levels)
    errors = " | ".join(f"{r[lv]['max_rel']:.2e} / {1 - r[lv]['cosine']:.1e}"
                        + (" (= level 0)" if lv != levels[0] and r[lv]["same_as_0"] else "") for lv in levels)
    return f"| [{m},{k}] x [{k},{n}] | {block} | {times} | {errors} |"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads of every session (default 1)")
    ap.add_argument("--repeats", type=int, default=30, help="timed rounds (default 30)")
    ap.add_argument("--blocks", default="32,128", help="block sizes, comma-separated (default 32,128)")
    ap.add_argument("--levels", default="0,1,4", help="accuracy levels, comma-separated, the first the baseline")
    ap.add_argument("--gpt2", action="store_true", help="also GPT-2 small end to end: forward and decode per token")
    ap.add_argument("--quick", action="store_true", help="two small shapes, three rounds: a check that it runs")
    add_load_arguments(ap)
    args = ap.parse_args(argv)
    levels = [int(v) for v in args.levels.split(",") if v]
    blocks = [int(v) for v in args.blocks.split(",") if v]
    if not levels or any(v not in (0, 1, 2, 3, 4) for v in levels):
        ap.error(f"--levels {args.levels}: choose from 0 to 4")
    if not blocks or any(b not in (16, 32, 64, 128, 256) for b in blocks):
        ap.error(f"--blocks {args.blocks}: choose from 16, 32, 64, 128, 256")
    guard = guard_from(args, args.threads)
    unit = "cpu ms" if shape_clock(args.threads) is time.process_time else "wall ms"
    lines = ["| x @ w | block | " + " | ".join(f"level {lv} {unit}" for lv in levels) + " | "
             + " | ".join(f"level {lv} max_rel / 1-cos" for lv in levels) + " |",
             "|---|---:|" + "---:|" * (2 * len(levels))]
    for m, k, n in QUICK_SHAPES if args.quick else SHAPES:
        for block in blocks:
            with guard.watch():
                r = run_shape(m, k, n, block, levels, args.threads, 3 if args.quick else args.repeats)
            lines.append(_row(m, k, n, block, levels, r))
    print(f"MatMulNBits (4 bits, symmetric) by accuracy level on ONNX Runtime CPU, ORT_ENABLE_ALL, {args.threads} "
          f"intra-op thread(s); {unit}: median "
          f"{'process CPU time' if unit == 'cpu ms' else 'wall-clock time'} per session.run over interleaved rounds (ratio to "
          f"level {levels[0]}); error against x @ dequantised W in float64")
    if args.gpt2:
        with guard.watch():
            table = gpt2_report(levels, 3 if args.quick else args.repeats, args.quick)
    print(guard.finish())
    print("\n".join(lines))
    if args.gpt2:
        print("\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
