"""accelir -> ONNX Runtime (CPU) against torch.onnx.export + ONNX Runtime, side by side.

    python -m benchmarks.onnxruntime_models [--models gpt2,bert,vit,resnet50] [--threads 2] [--repeats 30]
        [--build-runs 3] [--level 2] [--quick] [--tracemalloc] [--profile DIR [--profile-only]] [--allow-load]

For each model of ``benchmarks/models.py`` (transformers GPT-2 small, BERT-base,
ViT-base, ResNet-50 from their configs with random weights, batch 1) it builds

- ``accelir``: ``accelir.optimize(model, inputs, backend="onnxruntime", level=...)``,
- ``torchscript``: ``torch.onnx.export(dynamo=False)`` + an ONNX Runtime session,
- ``dynamo``: ``torch.onnx.export(dynamo=True)`` + an ONNX Runtime session,

every session with ORT_ENABLE_ALL and the same intra-op thread count; each exported
file also runs on a second session with accelir's own session options (the graph
optimizers accelir turns off on the CPU: SkipLayerNormFusion), so that the peers get
what accelir gives itself.  It checks every output of each against eager torch (a
tolerance by dtype, relative to the output's peak; a wrong one is flagged and not
timed), then times them in interleaved rounds, the order rotating each round, each a
bare ``session.run`` on a numpy feed made beforehand, and prints the median latency
(min-max, and the spread of the middle half as a measure of noise) and the ratio of
accelir to the best exporter.  It also reports the build times (``optimize()`` =
capture + passes + lowering + session build, against each export + session build,
and their ratio to the fastest export),
each system in its own fresh process: cold (the first build there, which pays the
one-time costs every system has: torch.export's and onnxruntime's lazy imports and
first-call set-up) and warm (a second build in the same process); and the resident
memory the first build added at its peak, as a multiple of the model's weight bytes
(``--tracemalloc`` adds Python's traced peak, which slows the capture down).  Each is
the median of ``--build-runs`` fresh processes per system, the systems taking turns.
``--profile DIR`` writes ONNX Runtime profiles of the sessions and prints where each
spends its time, by op type.  ``--profile-only`` (with ``--profile``) skips the build
times, the memory and the wall-clock timing: it builds every system here, then runs
their profiling sessions in interleaved rounds and reports, per system, the CPU time of
each ``session.run`` (``time.process_time``: with one intra-op thread the kernels run on
the calling thread, so time other processes take from this one is not counted, which
keeps the comparison usable on a busy machine, while wall-clock latency is not) and
the kernels' time by op type; to see where one graph spends more than another's.  The
machine's load before and after each model goes in its row; a run under load prints no
table unless ``--allow-load`` is given (see
``benchmarks/conditions.py``).  ``--quick`` runs the GPT-2 miniature, one fresh build
per system and two rounds: a check that the script runs, not a measurement.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import gc
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

if not __package__:  # run as a script: make the repo root importable, as ``-m`` does
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.conditions import LoadGuard, add_load_arguments, check_outputs, guard_from, rotated, session_call

__all__ = ["main", "run_model", "profile_by_op", "profile_model", "build_memory", "compile_bytecode"]

BUILDERS = ("accelir", "torchscript", "dynamo")
EXPORTERS = ("torchscript", "dynamo")
ACCELIR_OPTIONS = " + accelir's options"
# every session timed: accelir's, and each exported file on the benchmark's options and on accelir's
SYSTEMS = ("accelir",) + tuple(s + v for s in EXPORTERS for v in ("", ACCELIR_OPTIONS))


@dataclass
class Result:
    """One system on one model: its callable, build time, error vs eager, latencies (seconds)."""

    call: Callable[[], Any]
    session: Any
    profiled_session: Callable[[str], Any]  # profile file prefix -> a session like the timed one, profiling
    build_s: float
    rel_error: float = float("nan")
    wrong: str = ""  # why the outputs differ from eager torch; a wrong system is not timed
    runs: list[float] = field(default_factory=list)
    notes: str = ""
    path: str = ""  # the exported file, for an exporter


def _rel_error(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    """The largest error over the outputs, relative to each output's peak."""
    worst = 0.0
    for g, w in zip(got, want):
        if g.size and np.issubdtype(w.dtype, np.number):
            w64 = w.astype(np.float64)
            worst = max(worst, float(np.abs(g.astype(np.float64) - w64).max() / max(np.abs(w64).max(), 1e-30)))
    return worst


def build_memory(name: str, quick: bool, level: int, traced: bool, system: str) -> dict[str, Any]:
    """In a fresh process (so no earlier work has warmed the heap or loaded the libraries): build the
    model, then build ``system`` twice: for accelir ``optimize()``, for an exporter the export and its
    session.  Returns the resident memory the first build added at its peak (``rss_added``), the
    seconds of the first build (``cold_s``) and of the second (``warm_s``), and with ``traced``
    Python's traced peak of a third accelir build."""
    import accelir
    from benchmarks.models import MODELS
    from benchmarks.run import PeakMemory

    model, inputs = MODELS[name].build(quick)
    with tempfile.TemporaryDirectory(prefix="accelir-ort-bench-") as tmp:
        def build() -> None:
            if system == "accelir":
                accelir.optimize(model, inputs, backend="onnxruntime", level=level)
            else:  # the session as optimize() opens its own: ONNX Runtime's default thread count (0)
                _build_export(model, inputs, 0, system == "dynamo", tmp)
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            build()
            cold = time.perf_counter() - t0
        gc.collect()
        t0 = time.perf_counter()
        build()
        warm = time.perf_counter() - t0
    out: dict[str, Any] = {"rss_added": mem.added, "cold_s": cold, "warm_s": warm}
    if traced and system == "accelir":
        gc.collect()
        tracemalloc.start()
        accelir.optimize(model, inputs, backend="onnxruntime", level=level)
        out["traced_peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return out


def _build_accelir(model: Any, inputs: tuple, threads: int, level: int) -> Result:
    import accelir
    from accelir.arrays import to_numpy
    from accelir.lowering.onnx import to_onnx_external
    from accelir.lowering.onnxruntime import OnnxRuntimeModule
    from benchmarks.run import session_options

    t0 = time.perf_counter()
    cm = accelir.optimize(model, inputs, backend="onnxruntime", level=level)
    build = time.perf_counter() - t0
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in cm.report.stages.items())
    # optimize() opens its session with ONNX Runtime's default thread count: time the same graph
    # through the same runner with the benchmark's thread count
    runner = OnnxRuntimeModule(cm.graph, threads=threads)
    flat = [to_numpy(x) for x in cm.graph.meta["signature"].flatten(*inputs)]

    def profiled(prefix: str) -> Any:
        return OnnxRuntimeModule(cm.graph, session_options=session_options(threads, prefix)).session
    return Result(session_call(runner.session, flat, runner), runner.session, profiled, build,
                  notes=f"{stages}; {cm.report.nodes_before}->{cm.report.nodes_after} IR nodes, "
                        f"{len(to_onnx_external(cm.graph)[0].graph.node)} ONNX nodes")


def _build_export(model: Any, inputs: tuple, threads: int, dynamo: bool, tmp: str) -> Result:
    import torch
    from benchmarks.run import ort_session
    path = os.path.join(tmp, f"{'dynamo' if dynamo else 'torchscript'}.onnx")
    t0 = time.perf_counter()
    with torch.no_grad():
        torch.onnx.export(model, inputs, path, dynamo=dynamo)
    session = ort_session(path, threads)
    build = time.perf_counter() - t0
    return Result(session_call(session, inputs), session, lambda prefix: ort_session(path, threads, prefix), build,
                  path=path)


def _with_accelir_options(export: Result, inputs: tuple, threads: int) -> Result:
    """The exported file of ``export`` on a session with accelir's options; its build is the session's."""
    from benchmarks.run import ort_session
    path = export.path
    t0 = time.perf_counter()
    session = ort_session(path, threads, accelir_options=True)
    build = time.perf_counter() - t0
    return Result(session_call(session, inputs), session,
                  lambda prefix: ort_session(path, threads, prefix, accelir_options=True), build,
                  notes="the same file, SkipLayerNormFusion off; build = the session only")


def profile_by_op(session: Any, feeds: dict[str, np.ndarray], runs: int) -> tuple[float, list[tuple[str, float, int]]]:
    """Run a profiling ``session`` ``runs`` times; return the sum of the nodes' median kernel times (ms)
    and, per op type, that sum and the node count, largest first.  Medians per node keep a run that
    another process preempted from counting."""
    for _ in range(runs + 3):
        session.run(None, feeds)
    return kernel_times(session)


def kernel_times(session: Any) -> tuple[float, list[tuple[str, float, int]]]:
    """End a profiling ``session``'s profile; ``profile_by_op``'s summary of it (the first three
    runs, the warm-up, left out)."""
    with open(session.end_profiling(), encoding="utf-8") as f:
        events = json.load(f)
    per_node: dict[str, list[float]] = collections.defaultdict(list)
    op_of: dict[str, str] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_node[e["name"]].append(e["dur"])
            op_of[e["name"]] = e["args"].get("op_name", "?")
    per_op: dict[str, float] = collections.defaultdict(float)
    count: dict[str, int] = collections.defaultdict(int)
    for name, durs in per_node.items():
        per_op[op_of[name]] += statistics.median(durs[3:] or durs) / 1e3
        count[op_of[name]] += 1
    rows = sorted(((op, t, count[op]) for op, t in per_op.items()), key=lambda r: -r[1])
    return sum(per_op.values()), rows


def compile_bytecode() -> None:
    """Write accelir's bytecode caches, as pip does when it installs a package, so that a fresh
    process imports accelir as it imports torch: without compiling the sources first (which an
    editable install under PYTHONDONTWRITEBYTECODE would make every fresh process do)."""
    import compileall

    import accelir.lowering
    import accelir.passes
    for pkg in (accelir, accelir.passes, accelir.lowering):
        compileall.compile_dir(os.path.dirname(pkg.__file__), quiet=1)


def _build_all(name: str, model: Any, inputs: tuple, threads: int, level: int, tmp: str,
               log: Callable[[str], None]) -> dict[str, Result]:
    """Every system of ``SYSTEMS`` built in this process (the exported files in ``tmp``)."""
    results: dict[str, Result] = {}
    for system in BUILDERS:
        log(f"{name}: building {system}")
        if system == "accelir":
            results[system] = _build_accelir(model, inputs, threads, level)
        else:
            results[system] = _build_export(model, inputs, threads, system == "dynamo", tmp)
            results[system + ACCELIR_OPTIONS] = _with_accelir_options(results[system], inputs, threads)
        gc.collect()
    return results


def profile_model(name: str, *, quick: bool, threads: int, level: int, repeats: int, profile_dir: str,
                  log: Callable[[str], None]) -> dict[str, Any]:
    """``--profile-only``: every system built here, checked against eager torch, then its profiling
    session run in ``repeats`` interleaved rounds (after three of warm-up), the order rotating each
    round.  Returns per right system the CPU seconds of each run and ``kernel_times``' summary."""
    import torch
    from accelir.cli import flat_arrays
    from benchmarks.models import MODELS

    model, inputs = MODELS[name].build(quick)
    with torch.no_grad():
        want = flat_arrays(model(*inputs))
    sessions: dict[str, Any] = {}
    feeds: dict[str, dict[str, np.ndarray]] = {}
    wrong: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="accelir-ort-bench-") as tmp:
        results = _build_all(name, model, inputs, threads, level, tmp, log)
        for system in SYSTEMS:
            r = results[system]
            wrong[system] = check_outputs(want, flat_arrays(r.call()))
            if wrong[system]:
                log(f"{name}: {system} gives a wrong output, not profiled: {wrong[system]}")
                continue
            sessions[system] = r.profiled_session(os.path.join(profile_dir, f"{name}-{system}"))
            feeds[system] = {i.name: a for i, a in zip(sessions[system].get_inputs(), _feeds(r, inputs))}
        log(f"{name}: profiling, {repeats} interleaved rounds")
        cpu: dict[str, list[float]] = {s: [] for s in sessions}
        for k in range(repeats + 3):
            for s in rotated(list(sessions), k):
                t0 = time.process_time()
                sessions[s].run(None, feeds[s])
                cpu[s].append(time.process_time() - t0)
        profiles = {s: kernel_times(session) for s, session in sessions.items()}
    return {"model": name, "cpu": {s: runs[3:] for s, runs in cpu.items()}, "profiles": profiles, "wrong": wrong}


def profile_report(rows: list[dict[str, Any]], threads: int, conditions: str) -> str:
    """``profile_model``'s rows: per system the median CPU ms per run and its ratio to accelir's, then
    the kernel time by op type."""
    lines = [conditions, "",
             f"batch 1, ONNX Runtime CPU, ORT_ENABLE_ALL, {threads} intra-op thread(s), profiling on in every "
             "session; cpu ms: process CPU time per session.run (median, IQR/median); kernels: the sum of "
             "the nodes' median kernel times (wall clock, so a busy machine inflates them)", "",
             "| model | system | cpu ms per run | IQR/median | accelir / system (cpu) | kernels ms |",
             "|---|---|---|---|---|---|"]
    details, summary = [], []
    for row in rows:
        ours = statistics.median(row["cpu"]["accelir"]) if "accelir" in row["cpu"] else float("nan")
        peers = [s for s in row["cpu"] if s != "accelir"]
        if peers:
            best = min(peers, key=lambda s: statistics.median(row["cpu"][s]))
            summary.append(f"{row['model']}: accelir / best export, either options, by CPU time: "
                           f"{ours / statistics.median(row['cpu'][best]):.3f} (vs {best})")
        for s in SYSTEMS:
            if row["wrong"].get(s):
                lines.append(f"| {row['model']} | {s} | wrong output | | | {row['wrong'][s]} |")
                continue
            med = statistics.median(row["cpu"][s])
            q1, q3 = _quartiles(row["cpu"][s])
            total, ops = row["profiles"][s]
            lines.append(f"| {row['model']} | {s} | {med * 1e3:.2f} | {(q3 - q1) / med:.3f} | {ours / med:.3f} "
                         f"| {total:.2f} |")
            details.append(f"{row['model']} / {s}: " + ", ".join(f"{op} {t:.2f} ({n})" for op, t, n in ops))
    return "\n".join(lines + [""] + summary + ["", "kernel ms by op type (nodes):"] + details)


def run_model(name: str, *, quick: bool, threads: int, level: int, warmup: int, repeats: int, traced: bool,
              profile_dir: str | None, log: Callable[[str], None], build_runs: int = 3,
              guard: LoadGuard | None = None) -> dict[str, Any]:
    guard = guard or LoadGuard(threads=threads, allow_load=True)
    with guard.watch() as load:
        row = _run_model(name, quick=quick, threads=threads, level=level, warmup=warmup, repeats=repeats,
                         traced=traced, profile_dir=profile_dir, log=log, build_runs=build_runs)
    row["load"] = load[0]
    return row


def _run_model(name: str, *, quick: bool, threads: int, level: int, warmup: int, repeats: int, traced: bool,
               profile_dir: str | None, log: Callable[[str], None], build_runs: int) -> dict[str, Any]:
    import torch
    from accelir.cli import flat_arrays
    from accelir.timing import time_interleaved
    from benchmarks.models import MODELS

    spec = MODELS[name]
    model, inputs = spec.build(quick)
    weight_bytes = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    with torch.no_grad():
        want = flat_arrays(model(*inputs))
    fresh: dict[str, list[dict[str, Any]]] = {s: [] for s in BUILDERS}
    for k in range(build_runs):  # the systems take turns, so a slow spell of the machine hits them all
        for system in rotated(BUILDERS, k):
            log(f"{name}: build time and peak memory of {system} in a fresh process ({k + 1} of {build_runs})")
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                # one traced build is enough: it is slow and reported once
                fresh[system].append(pool.submit(build_memory, name, quick, level, traced and k == 0,
                                                 system).result())
    memory = {s: {key: statistics.median(r[key] for r in runs if r.get(key) is not None)
                  for key in runs[0] if runs[0][key] is not None} for s, runs in fresh.items()}
    with tempfile.TemporaryDirectory(prefix="accelir-ort-bench-") as tmp:
        results = _build_all(name, model, inputs, threads, level, tmp, log)
        for system in SYSTEMS:
            r = results[system]
            got = flat_arrays(r.call())
            r.wrong = check_outputs(want, got)
            r.rel_error = float("nan") if r.wrong else _rel_error(got, want)
            if r.wrong:
                log(f"{name}: {system} gives a wrong output, not timed: {r.wrong}")
        right = {s: r for s, r in results.items() if not r.wrong}
        log(f"{name}: timing, {repeats} interleaved rounds")
        timings = time_interleaved({s: right[s].call for s in SYSTEMS if s in right}, warmup=warmup, repeats=repeats)
        for s, t in timings.items():
            results[s].runs = list(t.runs)
        profiles = {}
        if profile_dir:
            os.makedirs(profile_dir, exist_ok=True)
            for s, r in right.items():
                feeds = {i.name: a for i, a in zip(r.session.get_inputs(), _feeds(r, inputs))}
                profiles[s] = profile_by_op(r.profiled_session(os.path.join(profile_dir, f"{name}-{s}")), feeds,
                                            max(5, repeats // 3))
    return {"model": name, "description": spec.description, "weight_bytes": weight_bytes, "memory": memory,
            "results": {s: results[s] for s in SYSTEMS}, "profiles": profiles}


def _feeds(r: Result, inputs: tuple) -> list[np.ndarray]:
    from accelir.arrays import to_numpy
    return [to_numpy(x) for x in inputs][:len(r.session.get_inputs())]


def _quartiles(runs: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(runs, n=4) if len(runs) >= 2 else [runs[0]] * 3
    return q[0], q[2]


def _median_ms(r: Result) -> str:
    if r.wrong:
        return "wrong output"
    return f"{statistics.median(r.runs) * 1e3:.2f} ({min(r.runs) * 1e3:.2f}-{max(r.runs) * 1e3:.2f})"


def build_ratio_text(fresh: dict[str, dict[str, float]], key: str) -> str:
    """optimize()'s build time over the fastest exporter's (export + session), naming it."""
    fastest = min(EXPORTERS, key=lambda s: fresh[s][key])
    return f"{fresh['accelir'][key] / fresh[fastest][key]:.2f} ({fastest})"


def report(rows: list[dict[str, Any]], threads: int, conditions: str) -> str:
    lines = [conditions, "",
             f"batch 1, ONNX Runtime CPU, ORT_ENABLE_ALL, {threads} intra-op thread(s) for every session; "
             f"\"{ACCELIR_OPTIONS.strip(' +')}\": the exported file on a session with accelir's own options "
             "(SkipLayerNormFusion off); each timed as session.run on a numpy feed made beforehand, the order "
             "rotating each round",
             "", "| model | system | median ms (min-max) | IQR/median | rel err vs eager | build s here | notes |",
             "|---|---|---|---|---|---|---|"]
    summary = ["", "| model | accelir / best export, either options | optimize() / (fastest export + session), "
               "cold; warm | build s cold (warm), medians: optimize(), torchscript, dynamo | "
               "peak RSS added / weights: optimize(), torchscript, dynamo (export + session) | load |",
               "|---|---|---|---|---|---|"]
    for row in rows:
        res: dict[str, Result] = row["results"]
        for s, r in res.items():
            if r.wrong:
                lines.append(f"| {row['model']} | {s} | wrong output | | {r.wrong} | {r.build_s:.1f} | {r.notes} |")
                continue
            med = statistics.median(r.runs)
            q1, q3 = _quartiles(r.runs)
            lines.append(f"| {row['model']} | {s} | {_median_ms(r)} "
                         f"| {(q3 - q1) / med:.2f} | {r.rel_error:.1e} | {r.build_s:.1f} | {r.notes} |")
        peers = [s for s in SYSTEMS if s != "accelir" and not res[s].wrong]
        if res["accelir"].wrong or not peers:
            ratio = "wrong output" if res["accelir"].wrong else "no right peer"
        else:
            best = min(peers, key=lambda s: statistics.median(res[s].runs))
            ratio = f"{statistics.median(res['accelir'].runs) / statistics.median(res[best].runs):.3f} (vs {best})"
        texts = []
        for s, mem in row["memory"].items():
            rss = mem.get("rss_added")
            texts.append(f"{rss / row['weight_bytes']:.2f}x" if rss is not None else "n/a")
            if "traced_peak" in mem:
                texts[-1] += f" (traced {mem['traced_peak'] / row['weight_bytes']:.2f}x)"
        mem_text = ", ".join(texts)
        fresh = row["memory"]
        build_ratio = "; ".join(build_ratio_text(fresh, k) for k in ("cold_s", "warm_s"))
        build_text = ", ".join(f"{fresh[s]['cold_s']:.1f} ({fresh[s]['warm_s']:.1f})" for s in BUILDERS)
        summary.append(f"| {row['model']} | {ratio} | {build_ratio} | {build_text} "
                       f"| {mem_text} of {row['weight_bytes'] / 2 ** 20:.0f} MiB | {row['load']} |")
        for s, (total, ops) in row["profiles"].items():
            summary.append(f"\nprofile {row['model']} / {s}: {total:.2f} ms of node medians; by op type (ms, nodes): "
                           + ", ".join(f"{op} {t:.2f} ({n})" for op, t, n in ops[:12]))
    return "\n".join(lines + summary)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.models import MODELS
    torch_models = [n for n, m in MODELS.items() if m.framework == "torch"]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=None, help="comma-separated, from: " + ", ".join(torch_models)
                    + " (default: all; with --quick gpt2)")
    ap.add_argument("--threads", type=int, default=1,
                    help="intra-op threads of every session (default 1: on a shared machine more threads measure "
                    "the other load more than the model)")
    ap.add_argument("--level", type=int, default=2, help="accelir optimisation level (0: capture + lowering only)")
    ap.add_argument("--warmup", type=int, default=None, help="default 3 (1 with --quick)")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved rounds; default 30 (2 with --quick)")
    ap.add_argument("--quick", action="store_true",
                    help="the GPT-2 miniature, one fresh build per system, two rounds (a check that the script runs, "
                    "not a measurement)")
    ap.add_argument("--build-runs", type=int, default=None,
                    help="fresh processes per system for the build times and peak memory (median reported; "
                    "default 3, 1 with --quick)")
    ap.add_argument("--tracemalloc", action="store_true", help="also run optimize() under tracemalloc")
    ap.add_argument("--profile", default=None, metavar="DIR", help="write ONNX Runtime profiles here")
    ap.add_argument("--profile-only", action="store_true",
                    help="with --profile: only the profiles, each system's CPU time per run and kernel time by op "
                    "type, from interleaved rounds in this process (no build times, memory or wall-clock latency)")
    add_load_arguments(ap)
    args = ap.parse_args(argv)
    models = [m.strip() for m in (args.models or ("gpt2" if args.quick else ",".join(torch_models))).split(",")
              if m.strip()]
    unknown = [m for m in models if m not in torch_models]
    if unknown:
        ap.error(f"unknown model: {', '.join(unknown)}")
    if args.profile_only and not args.profile:
        ap.error("--profile-only needs --profile DIR, where the profiles are written")
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 30)
    build_runs = args.build_runs if args.build_runs is not None else (1 if args.quick else 3)
    guard = guard_from(args, args.threads)
    import torch
    torch.set_num_threads(args.threads)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    compile_bytecode()
    rows = []
    if args.profile_only:
        os.makedirs(args.profile, exist_ok=True)
        for name in models:
            with guard.watch() as load:
                rows.append(profile_model(name, quick=args.quick, threads=args.threads, level=args.level,
                                          repeats=repeats, profile_dir=args.profile, log=log))
            rows[-1]["model"] += f" ({load[0]})"
        print(profile_report(rows, args.threads, guard.finish()))
        return 0
    for name in models:
        rows.append(run_model(name, quick=args.quick, threads=args.threads, level=args.level, warmup=warmup,
                              repeats=repeats, traced=args.tracemalloc, profile_dir=args.profile, log=log,
                              build_runs=build_runs, guard=guard))
        gc.collect()
    print(report(rows, args.threads, guard.finish()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
