"""The peer benchmark: accelir against torch eager, torch.compile, torch.onnx.export + ONNX Runtime and jax.jit.

    python -m benchmarks.run [--models gpt2,bert,...] [--systems ...] [--quick] [--threads N] [--out DIR]

For each model (see ``benchmarks/models.py``) every system that applies is built
in turn, recording its build time (export / compile / ``optimize()``, plus the
first call, where jit compilers do their work), the peak memory the build added
(resident set high-water mark, reset before each build), and the largest
difference of its outputs from the reference (eager torch for torch models,
jax.jit for jax models); a system whose output is wrong is flagged and not timed.
Then the systems are timed side by side in interleaved rounds after warm-ups, the
order rotating each round, all with the same thread count, each from inputs
already in its runtime's form (torch tensors, numpy arrays for ONNX Runtime, jax
arrays for XLA) to its outputs.  Each ONNX Runtime peer is timed twice: with the
benchmark's session options and with accelir's own (SkipLayerNormFusion off on the
CPU).  The machine's load before and after each model goes with its figures; a
run under load writes no table unless ``--allow-load`` is given (see
``benchmarks/conditions.py``).  Results go to ``benchmarks/results/``
(git-ignored): a JSON file, a markdown table and a PNG bar chart.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

if not __package__:  # run as benchmarks/run.py: make the repo root importable, as ``-m`` does
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.conditions import LoadGuard, add_load_arguments, check_outputs, guard_from, machine, session_call

__all__ = ["SYSTEMS", "Cell", "main", "run_model", "session_options", "ort_session", "xla_call"]

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


@dataclass
class Built:
    """A system ready to time: ``call()`` runs the model once and returns its outputs."""

    call: Callable[[], Any]
    notes: str = ""
    build_s: float | None = None  # when the builder timed its own part (else the whole build is timed)
    peak_added_bytes: int | None = None


@dataclass
class Cell:
    """One (model, system) result; times in seconds, memory in bytes."""

    model: str
    system: str
    median_s: float | None = None
    min_s: float | None = None
    max_s: float | None = None
    runs: int = 0
    build_s: float | None = None
    first_call_s: float | None = None
    peak_added_bytes: int | None = None
    max_abs_error: float | None = None
    error: str = ""
    wrong: str = ""  # why the output differs from the reference; such a cell is not timed
    notes: str = ""


@dataclass
class Context:
    threads: int
    tmp: str
    framework: str
    weight_bytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


# ----- memory ------------------------------------------------------------------------

class PeakMemory:
    """Resident memory a block added at its peak: the kernel's high-water mark, reset before the block.

    Linux only (``/proc/self/clear_refs``); elsewhere ``added`` stays None.
    """

    def __init__(self) -> None:
        self.added: int | None = None

    @staticmethod
    def _status(key: str) -> int | None:
        try:
            with open("/proc/self/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def __enter__(self) -> PeakMemory:
        gc.collect()
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                f.write("5")
            self._before = self._status("VmRSS")
        except OSError:
            self._before = None
        return self

    def __exit__(self, *exc: Any) -> None:
        peak = self._status("VmHWM")
        if self._before is not None and peak is not None:
            self.added = max(0, peak - self._before)


# ----- systems -----------------------------------------------------------------------

def session_options(threads: int, profile_prefix: str | None = None) -> Any:
    """ONNX Runtime options every benchmark session uses: all graph optimisations, ``threads``
    intra-op threads, one inter-op thread; profiling to ``profile_prefix`` when given.
    accelir's own sessions add ``disabled_optimizers`` (see ``ort_session``)."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return so


def ort_session(model: bytes | str, threads: int, profile_prefix: str | None = None,
                accelir_options: bool = False) -> Any:
    """A CPU session over ``model`` (a path or serialized bytes) with ``session_options``; with
    ``accelir_options`` also the graph optimizers accelir turns off for its own CPU sessions."""
    import onnxruntime as ort
    from accelir.lowering.onnxruntime import disabled_optimizers
    return ort.InferenceSession(model, session_options(threads, profile_prefix), providers=["CPUExecutionProvider"],
                                disabled_optimizers=disabled_optimizers("cpu") if accelir_options else None)


def _torch_eager(model: Any, inputs: tuple, ctx: Context) -> Built:
    import torch

    def call() -> Any:
        with torch.no_grad():
            return model(*inputs)
    return Built(call)


def _torch_compile(model: Any, inputs: tuple, ctx: Context) -> Built:
    import torch
    compiled = torch.compile(model)

    def call() -> Any:
        with torch.no_grad():
            return compiled(*inputs)
    return Built(call, notes="inductor, default mode; build time = first call")


ACCELIR_OPTIONS = ", accelir's session options"


def _onnx_export(dynamo: bool, accelir_options: bool = False) -> Callable[[Any, tuple, Context], Built]:
    """An exporter + ONNX Runtime; with ``accelir_options`` the same file (exported once per model) on a
    session with accelir's session options, its build time then only the session's."""
    def build(model: Any, inputs: tuple, ctx: Context) -> Built:
        import torch
        path = os.path.join(ctx.tmp, f"model-{'dynamo' if dynamo else 'ts'}.onnx")
        notes = ""
        if not os.path.exists(path):
            with torch.no_grad():
                torch.onnx.export(model, inputs, path, dynamo=dynamo)
        elif accelir_options:
            notes = "the file exported for the column without accelir's options; build time = session only"
        return Built(session_call(ort_session(path, ctx.threads, accelir_options=accelir_options), inputs), notes)
    return build


def _jax_jit(fn: Any, inputs: tuple, ctx: Context) -> Built:
    import jax
    jitted = jax.jit(fn)
    return Built(lambda: jax.block_until_ready(jitted(*inputs)), notes="build time = first call (trace + compile)")


def _accelir(backend: str) -> Callable[[Any, tuple, Context], Built]:
    def build(model: Any, inputs: tuple, ctx: Context) -> Built:
        import accelir
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            cm = accelir.optimize(model, inputs, backend=backend)
            seconds = time.perf_counter() - t0
        ctx.extra[f"accelir_{backend}"] = {"nodes_before": cm.report.nodes_before,
                                           "nodes_after": cm.report.nodes_after,
                                           "stages_s": dict(cm.report.stages)}
        notes = ", ".join(f"{k} {v:.2f} s" for k, v in cm.report.stages.items())
        flat = list(cm.graph.meta["signature"].flatten(*inputs))
        # optimize() builds its runner with the runtime's default thread count: time the same optimised
        # graph on a runner built the same way with the benchmark's thread count, from inputs already in
        # the runtime's form, as every peer is timed
        if backend == "onnxruntime":
            from accelir.lowering.onnxruntime import OnnxRuntimeModule
            runner = OnnxRuntimeModule(cm.graph, threads=ctx.threads)
            return Built(session_call(runner.session, flat, runner), notes, seconds, mem.added)
        return Built(xla_call(cm.graph, flat), notes, seconds, mem.added)
    return build


def xla_call(graph: Any, flat: list, device: str | None = None) -> Callable[[], Any]:
    """A JaxModule of ``graph`` called on jax arrays made once (on ``device``), its outputs ready, as
    jax.jit is timed."""
    import jax
    from accelir.arrays import to_numpy
    from accelir.lowering.jax import JaxModule, x64_scope
    runner = JaxModule(graph, device=device)
    with x64_scope(runner.function.needs_x64):
        arrays = [jax.device_put(to_numpy(x), runner.device) for x in flat]
    return lambda: jax.block_until_ready(runner(*arrays))


def _jax_eager(fn: Any, inputs: tuple, ctx: Context) -> Built:
    import jax
    return Built(lambda: jax.block_until_ready(fn(*inputs)), notes="op by op, no jit")


# name -> (frameworks it applies to, builder)
SYSTEMS: dict[str, tuple[tuple[str, ...], Callable[[Any, tuple, Context], Built]]] = {
    "torch eager": (("torch",), _torch_eager),
    "jax eager": (("jax",), _jax_eager),
    "torch.compile": (("torch",), _torch_compile),
    "onnx (torchscript) + ort": (("torch",), _onnx_export(dynamo=False)),
    "onnx (torchscript) + ort" + ACCELIR_OPTIONS: (("torch",), _onnx_export(dynamo=False, accelir_options=True)),
    "onnx (dynamo) + ort": (("torch",), _onnx_export(dynamo=True)),
    "onnx (dynamo) + ort" + ACCELIR_OPTIONS: (("torch",), _onnx_export(dynamo=True, accelir_options=True)),
    "jax.jit": (("jax",), _jax_jit),
    "accelir -> ort": (("torch", "jax"), _accelir("onnxruntime")),
    "accelir -> xla": (("torch", "jax"), _accelir("xla")),
}
# the system whose outputs every other one is checked against
REFERENCE = {"torch": "torch eager", "jax": "jax.jit"}
EXPORTERS = [s for s in SYSTEMS if s.startswith("onnx (")]


def _max_error(reference: list[np.ndarray], got: list[np.ndarray]) -> float:
    """Largest difference over the outputs (check_outputs has said that they match in number and shape)."""
    worst = 0.0
    for r, g in zip(reference, got):
        if r.size and np.issubdtype(r.dtype, np.number):
            worst = max(worst, float(np.nanmax(np.abs(r.astype(np.float64) - g.astype(np.float64)), initial=0.0)))
    return worst


def _weight_bytes(framework: str, model: Any, inputs: tuple) -> int:
    if framework == "torch":
        return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    import jax
    return sum(int(np.asarray(c).nbytes) for c in jax.make_jaxpr(model)(*inputs).consts)


def run_model(name: str, systems: list[str], *, quick: bool, threads: int, warmup: int, repeats: int,
              budget_s: float, log: Callable[[str], None],
              guard: LoadGuard | None = None) -> tuple[list[Cell], dict[str, Any]]:
    """Build every applicable system for one model (the reference first), check each one's outputs
    against the reference, then time the right ones in interleaved rounds."""
    from accelir.cli import flat_arrays
    from accelir.timing import time_interleaved
    from benchmarks.models import MODELS

    spec = MODELS[name]
    model, inputs = spec.build(quick)
    info = {"description": spec.description, "framework": spec.framework,
            "weight_bytes": _weight_bytes(spec.framework, model, inputs)}
    reference_system = REFERENCE[spec.framework]
    wanted = [reference_system] + [s for s in systems if spec.framework in SYSTEMS[s][0] and s != reference_system]
    cells: dict[str, Cell] = {}
    built: dict[str, Callable[[], Any]] = {}
    reference: list[np.ndarray] | None = None
    guard = guard or LoadGuard(threads=threads, allow_load=True)
    with guard.watch() as load, tempfile.TemporaryDirectory(prefix="accelir-bench-") as tmp:
        ctx = Context(threads, tmp, spec.framework, info["weight_bytes"])
        for system in wanted:
            cell = cells[system] = Cell(name, system)
            log(f"{name}: building {system}")
            try:
                with PeakMemory() as mem:
                    t0 = time.perf_counter()
                    b = SYSTEMS[system][1](model, inputs, ctx)
                    cell.build_s = time.perf_counter() - t0 if b.build_s is None else b.build_s
                    t0 = time.perf_counter()
                    out = flat_arrays(b.call())
                    cell.first_call_s = time.perf_counter() - t0
                cell.peak_added_bytes = mem.added if b.peak_added_bytes is None else b.peak_added_bytes
                cell.notes = b.notes
                if system == reference_system:
                    reference = out
                if reference is None:
                    cell.wrong = f"no reference: {reference_system} failed"
                else:
                    cell.wrong = check_outputs(reference, out)
                    cell.max_abs_error = None if cell.wrong else _max_error(reference, out)
                if cell.wrong:
                    log(f"{name}: {system} gives a wrong output, not timed: {cell.wrong}")
                else:
                    built[system] = b.call
            except Exception as e:  # noqa: BLE001 - one failing system must not stop the others
                cell.error = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"
                log(f"{name}: {system} failed: {cell.error}")
                if os.environ.get("ACCELIR_BENCH_DEBUG"):
                    traceback.print_exc()
        log(f"{name}: timing {len(built)} systems, interleaved")
        timings = time_interleaved(built, warmup=warmup, repeats=repeats, budget_s=budget_s)
    for system, t in timings.items():
        c = cells[system]
        c.median_s, c.min_s, c.max_s, c.runs = t.median, t.min, t.max, len(t.runs)
    info.update(ctx.extra)
    info["load"] = load[0].as_dict()
    info["load_text"] = str(load[0])
    return list(cells.values()), info


# ----- reporting ---------------------------------------------------------------------

def _ms(s: float | None) -> str:
    return "-" if s is None else f"{s * 1e3:.2f}"


def _latency(c: Cell) -> str:
    if c.error:
        return "failed"
    if c.wrong:
        return "wrong output"
    if c.median_s is None:
        return "-"
    return f"{_ms(c.median_s)} ({_ms(c.min_s)}-{_ms(c.max_s)})"


def _ratio(a: Cell, b: Cell) -> str:
    """Latency ratio of medians, and of minimums (the steadier figure on a loaded machine)."""
    return f"{a.median_s / b.median_s:.2f} (min {a.min_s / b.min_s:.2f})"


def target_rows(cells: list[Cell], info: dict[str, dict]) -> list[tuple[str, str, str]]:
    """(target, model, measured) rows for the goals the benchmark is judged by."""
    by = {(c.model, c.system): c for c in cells if not c.error and not c.wrong and c.median_s is not None}
    rows = []
    for model, meta in info.items():
        acc = by.get((model, "accelir -> ort"))
        if meta["framework"] == "torch":
            peers = [by[(model, s)] for s in EXPORTERS if (model, s) in by]
            if acc and peers:
                best = min(peers, key=lambda c: c.median_s)
                rows.append(("accelir->ort latency / best torch.onnx.export+ort, either session options (<= 1.0)",
                             model, f"{_ratio(acc, best)} (vs {best.system})"))
            # the variants with accelir's options reuse their exporter's file: their build is a session only
            exports = [by[(model, s)] for s in EXPORTERS if (model, s) in by and not s.endswith(ACCELIR_OPTIONS)]
            if acc and exports:
                fastest = min(exports, key=lambda c: c.build_s)
                rows.append(("optimize() time / fastest export + session build (<= 0.3)", model,
                             f"{acc.build_s / fastest.build_s:.2f} ({acc.build_s:.1f} s vs {fastest.build_s:.1f} s, "
                             f"{fastest.system})"))
        else:
            jit = by.get((model, "jax.jit"))
            xla = by.get((model, "accelir -> xla"))
            if jit and xla:
                rows.append(("accelir->xla latency / jax.jit (<= 1.05)", model, _ratio(xla, jit)))
            if jit and acc:
                rows.append(("accelir->ort latency / jax.jit (reported)", model, _ratio(acc, jit)))
        if acc and acc.peak_added_bytes is not None and meta["weight_bytes"]:
            rows.append(("peak memory added by optimize() / weight bytes (<= 1.5)", model,
                         f"{acc.peak_added_bytes / meta['weight_bytes']:.2f} "
                         f"({acc.peak_added_bytes / 2 ** 20:.0f} MiB vs {meta['weight_bytes'] / 2 ** 20:.0f} MiB)"))
            builds = [c for (m, s), c in by.items() if m == model and c.peak_added_bytes is not None
                      and not s.endswith(ACCELIR_OPTIONS)]
            rows.append(("peak memory added by each build / weight bytes (reported)", model,
                         ", ".join(f"{c.system} {c.peak_added_bytes / meta['weight_bytes']:.2f}" for c in builds)))
    return rows


def markdown(cells: list[Cell], info: dict[str, dict], meta: dict[str, Any]) -> str:
    models = list(info)
    systems = [s for s in SYSTEMS if any(c.system == s for c in cells)]
    by = {(c.model, c.system): c for c in cells}
    size = "quick (miniature models)" if meta["quick"] else "full-size models"
    out = [meta["conditions"], "",
           f"Latency in ms, median (min-max) of up to {meta['repeats']} interleaved rounds (the order rotating each "
           f"round) after {meta['warmup']} warm-ups; batch 1; {meta['threads']} thread(s) per runtime; inputs "
           f"already in each runtime's form; {size}. Load: the 1-minute load average before -> after the model.",
           "", "| model | " + " | ".join(systems) + " | load |", "|---|" + "---|" * (len(systems) + 1)]
    for m in models:
        out.append(f"| {m} | " + " | ".join(_latency(by[(m, s)]) if (m, s) in by else "" for s in systems)
                   + f" | {info[m].get('load_text', '')} |")
    out += ["", "Build time in s (export / compile / optimize(), first call included) / peak memory added in MiB / "
            "max abs error vs the reference (eager torch, jax.jit):", "",
            "| model | " + " | ".join(systems) + " |", "|---|" + "---|" * len(systems)]
    for m in models:
        row = []
        for s in systems:
            c = by.get((m, s))
            if c is None:
                row.append("")
            elif c.error:
                row.append(f"failed: {c.error[:80]}")
            elif c.wrong:
                row.append(f"wrong output: {c.wrong[:80]}")
            else:
                build = (c.build_s or 0.0) + (c.first_call_s or 0.0)
                mem = "-" if c.peak_added_bytes is None else f"{c.peak_added_bytes / 2 ** 20:.0f}"
                err = "-" if c.max_abs_error is None else f"{c.max_abs_error:.1e}"
                row.append(f"{build:.2f} / {mem} / {err}")
        out.append(f"| {m} | " + " | ".join(row) + " |")
    targets = target_rows(cells, info)
    if targets:
        out += ["", "| target | model | measured |", "|---|---|---|"]
        out += [f"| {t} | {m} | {v} |" for t, m, v in targets]
    return "\n".join(out) + "\n"


def bar_chart(cells: list[Cell], info: dict[str, dict], path: str) -> str | None:
    """Latency relative to each model's baseline (torch eager; jax.jit for jax models, whose op-by-op eager run
    is only the numeric reference), log scale, min-max whiskers; None if matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    models = list(info)
    systems = [s for s in SYSTEMS if s != "jax eager" and any(c.system == s and c.median_s for c in cells)]
    by = {(c.model, c.system): c for c in cells if c.median_s}
    baseline = {"torch": "torch eager", "jax": "jax.jit"}
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(models) + 2), 5))
    width = 0.8 / max(1, len(systems))
    for k, s in enumerate(systems):
        xs, ys, lo, hi = [], [], [], []
        for i, m in enumerate(models):
            c = by.get((m, s))
            base = by.get((m, baseline[info[m]["framework"]]))
            if c is None or base is None:
                continue
            xs.append(i + (k - (len(systems) - 1) / 2) * width)
            ys.append(c.median_s / base.median_s)
            lo.append((c.median_s - c.min_s) / base.median_s)
            hi.append((c.max_s - c.median_s) / base.median_s)
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=s, color=f"C{list(SYSTEMS).index(s)}")
    ax.axhline(1.0, color="#444", lw=0.8, ls="--")
    ax.set_xticks(range(len(models)), models)
    ax.set_yscale("log")
    ax.set_ylabel("latency / torch eager or jax.jit (lower is better)")
    ax.set_title("accelir vs peers, CPU, batch 1 (median, min-max whiskers)")
    ax.legend(fontsize=8, ncols=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _set_threads(threads: int) -> None:
    """One thread count for every system: torch's pools here, ORT's through session options, XLA's through
    its flags (set before jax is imported)."""
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'}").strip()
    import torch
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set by an earlier parallel region in this process
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=None,
                        help="comma-separated, from: " + ", ".join(_model_names()) + " (default: all; with --quick "
                        "gpt2,flax_cnn, one model of each framework)")
    parser.add_argument("--systems", default=None, help="comma-separated, from: " + ", ".join(SYSTEMS)
                        + " (default: all; with --quick all but torch.compile, whose inductor build takes minutes)")
    parser.add_argument("--quick", action="store_true",
                        help="miniature models, two rounds: a check that the script runs, not a measurement")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads of every runtime (default 1: on a shared machine more threads measure the "
                        "other load more than the model)")
    parser.add_argument("--warmup", type=int, default=None, help="default 3 (1 with --quick)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved rounds; default 20 (2 with --quick)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="stop adding rounds for a model after this many seconds (default 120, 10 with --quick)")
    parser.add_argument("--out", default=RESULTS, help="output directory (default benchmarks/results)")
    add_load_arguments(parser)
    args = parser.parse_args(argv)
    models_arg = args.models or ("gpt2,flax_cnn" if args.quick else ",".join(_model_names()))
    models = [m.strip() for m in models_arg.split(",") if m.strip()]
    default_systems = [s for s in SYSTEMS if not (args.quick and s == "torch.compile")]
    systems = [s.strip() for s in args.systems.split(",") if s.strip()] if args.systems else default_systems
    unknown = [m for m in models if m not in _model_names()] + [s for s in systems if s not in SYSTEMS]
    if unknown:
        parser.error(f"unknown model or system: {', '.join(unknown)}")
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 20)
    budget = args.budget_s if args.budget_s is not None else (10.0 if args.quick else 120.0)
    guard = guard_from(args, args.threads)
    _set_threads(args.threads)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    cells: list[Cell] = []
    info: dict[str, dict] = {}
    for name in models:
        c, i = run_model(name, systems, quick=args.quick, threads=args.threads, warmup=warmup, repeats=repeats,
                         budget_s=budget, log=log, guard=guard)
        cells += c
        info[name] = i
        gc.collect()
    conditions = guard.finish()  # refuses a table taken under load unless --allow-load
    meta = {"quick": args.quick, "threads": args.threads, "warmup": warmup, "repeats": repeats,
            "machine": machine(), "cpus": guard.cpus, "conditions": conditions, "under_load": guard.under_load,
            "loads": [load.as_dict() for load in guard.loads],
            "python": platform.python_version(), "versions": _versions(), "date": time.strftime("%Y-%m-%d %H:%M")}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"meta": meta, "models": info, "cells": [asdict(c) for c in cells]}, f, indent=1)
    table = markdown(cells, info, meta)
    with open(os.path.join(args.out, "results.md"), "w", encoding="utf-8") as f:
        f.write(table)
    chart = bar_chart(cells, info, os.path.join(args.out, "results.png"))
    print(table)
    print(f"wrote {args.out}/results.json, results.md, "
          + ("results.png" if chart else "no chart (matplotlib is not installed: pip install matplotlib)"))
    return 0


def _model_names() -> list[str]:
    from benchmarks.models import MODELS
    return list(MODELS)


def _versions() -> dict[str, str]:
    out = {}
    for mod in ("torch", "jax", "onnx", "onnxruntime", "transformers", "flax", "accelir"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            out[mod] = "missing"
    return out


if __name__ == "__main__":
    sys.exit(main())
