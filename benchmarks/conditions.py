"""What every benchmark script shares so that its numbers say what they measure.

- The machine's load: ``os.getloadavg()`` before and after each measurement, with the
  CPU count, goes into the output next to the figure.  ONNX Runtime's spinning thread
  pool, XLA's and torch's lose badly when another process holds a core, so a table
  taken while other processes ran is refused (the script exits with a message and
  writes no table) unless ``--allow-load`` is given, and then it is marked as taken
  under load.  The limit is ``--max-load`` (default 0.5) per core the benchmark leaves
  free; readings taken after the benchmark started count its own threads out.
- Outputs are checked against the framework's reference (eager torch, jax.jit) with a
  tolerance by dtype, relative to the output's peak; a wrong cell is not timed.
- Every ONNX Runtime session is timed the same way: ``session.run`` on inputs already
  converted to numpy, so no system pays a conversion the others do not.
- The machine's memory bandwidth (``BandwidthProbe``): a shared virtual machine's bandwidth drops
  for seconds at a time while the load average stays the same; measurements of memory-bound work
  (a decode step reads every weight) taken in such a window are retaken, or flagged.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import numpy as np

__all__ = ["Load", "LoadGuard", "add_load_arguments", "guard_from", "check_outputs", "session_call", "machine",
           "cpu_count", "rotated", "BandwidthProbe"]

DEFAULT_MAX_LOAD = 0.5


def rotated(items: Sequence[Any], round_: int) -> list[Any]:
    """``items`` starting at ``round_`` (mod their count): rounds that take turns rotate, as
    ``accelir.timing.time_interleaved`` does, so that no system always goes first."""
    k = round_ % len(items) if items else 0
    return list(items[k:]) + list(items[:k])


T = TypeVar("T")


class BandwidthProbe:
    """The machine's memory bandwidth, read before and after each measurement of memory-bound work.

    On a shared virtual machine a neighbour streaming memory on the host slows every process here at
    once, for seconds, and the load average does not show it (on the 2-CPU machine these benchmarks were
    taken on: a 64 MiB sum 1.5x slower for about ten seconds, in two processes alike).  A decode step
    reads every weight, so a generation timed in such a window is that much slower, whichever system it
    is, and a rotation of a few rounds does not even it out.  A reading is the median of ``sums``
    one-thread sums of a ``mib`` MiB array (GB/s).  ``measure`` runs a measurement between two readings;
    where either is below ``tolerance`` of the best reading so far it is retaken, up to ``retakes``
    times, and where every try was, the last is kept and said to be unfair."""

    def __init__(self, mib: int = 64, sums: int = 5, tolerance: float = 0.8, retakes: int = 2):
        self.array = np.ones((mib << 20) // 8)
        self.sums, self.tolerance, self.retakes = sums, tolerance, retakes
        self.best = 0.0
        self.retaken = 0  # measurements taken again
        self.unfair = 0  # measurements kept with a low reading

    def read(self) -> float:
        """The bandwidth now, GB/s (and the best so far updated)."""
        times = []
        for _ in range(self.sums):
            t0 = time.perf_counter()
            self.array.sum()
            times.append(time.perf_counter() - t0)
        gbs = self.array.nbytes / statistics.median(times) / 1e9
        self.best = max(self.best, gbs)
        return gbs

    def settle(self, readings: int = 5) -> None:
        """A few readings, so that the first measurement has a best to be compared with."""
        for _ in range(readings):
            self.read()

    def measure(self, run: Callable[[], T]) -> tuple[T, bool]:
        """``run()`` between two readings, retaken while a reading is low: (its result, whether fair)."""
        for attempt in range(self.retakes + 1):
            before = self.read()
            result = run()
            after = self.read()
            if min(before, after) >= self.tolerance * self.best:
                return result, True
            if attempt < self.retakes:
                self.retaken += 1
        self.unfair += 1
        return result, False

    def summary(self) -> str:
        return (f"memory-bandwidth probe (a {self.array.nbytes >> 20} MiB sum, one thread): best {self.best:.1f} GB/s; "
                f"{self.retaken} measurement(s) retaken for a reading below {self.tolerance:.0%} of the best, "
                f"{self.unfair} kept below it (flagged)")


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity set where the OS tells it, else all of them)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def machine() -> str:
    """The machine in a few words: architecture, processor, CPU count."""
    return f"{platform.machine()} {platform.processor() or ''} {cpu_count()} CPUs".replace("  ", " ")


def _loadavg() -> tuple[float, float, float] | None:
    return os.getloadavg() if hasattr(os, "getloadavg") else None


@dataclass(frozen=True)
class Load:
    """The load averages (1, 5, 15 min) before and after one measurement, and the CPU count."""

    before: tuple[float, float, float] | None
    after: tuple[float, float, float] | None
    cpus: int

    def __str__(self) -> str:
        if self.before is None or self.after is None:
            return f"load unknown, {self.cpus} CPUs"
        return f"load {self.before[0]:.2f} -> {self.after[0]:.2f} on {self.cpus} CPUs"

    def as_dict(self) -> dict[str, Any]:
        return {"load_before": self.before, "load_after": self.after, "cpus": self.cpus}


@dataclass
class LoadGuard:
    """Watches the load of the machine over a benchmark run and says whether its tables may be published.

    ``threads`` is how many cores the benchmark itself keeps busy; the other processes may
    add ``max_load`` per core that leaves free (at least one) before the run counts as
    taken under load.
    """

    threads: int = 1
    allow_load: bool = False
    max_load: float = DEFAULT_MAX_LOAD
    cpus: int = field(default_factory=cpu_count)
    loads: list[Load] = field(default_factory=list)
    start_load: tuple[float, float, float] | None = None
    _started: bool = False

    @property
    def limit(self) -> float:
        return self.max_load * max(self.cpus - self.threads, 1)

    def _others(self, reading: tuple[float, float, float] | None, ours: bool) -> float:
        """The 1-minute load of other processes: a reading taken while the benchmark ran counts it out."""
        if reading is None:
            return 0.0
        return max(0.0, reading[0] - (self.threads if ours else 0))

    def _why(self, reading: tuple[float, float, float] | None, ours: bool, when: str) -> str:
        others = self._others(reading, ours)
        if others <= self.limit:
            return ""
        return (f"the load average {when} was {reading[0]:.2f} (other processes {others:.2f}; the limit is "
                f"{self.max_load} per free core = {self.limit:.2f} on {self.cpus} CPUs with {self.threads} "
                "benchmark thread(s))")

    def start(self) -> None:
        """Refuse to start on a busy machine (a SystemExit with the reason) unless load is allowed."""
        self.start_load = _loadavg()
        why = self._why(self.start_load, False, "at the start")
        self._started = True
        if why and not self.allow_load:
            raise SystemExit(f"benchmark refused: {why}. Rerun on a quiet machine, or pass --allow-load to "
                             "get a table marked as taken under load.")

    @contextmanager
    def watch(self) -> Iterator[list[Load]]:
        """Record the load before and after the block; the record is the yielded list's one item."""
        holder: list[Load] = []
        before = _loadavg()
        try:
            yield holder
        finally:
            holder.append(Load(before, _loadavg(), self.cpus))
            self.loads.append(holder[0])

    def reasons(self) -> list[str]:
        """Why the run counts as taken under load: one line per reading over the limit."""
        out = [self._why(self.start_load, False, "at the start")] if self._started else []
        for k, load in enumerate(self.loads):
            for reading, ours, when in ((load.before, self._started or k > 0, "before a measurement"),
                                        (load.after, True, "after a measurement")):
                why = self._why(reading, ours, when)
                out.append(why)
        return [why for why in out if why]

    @property
    def under_load(self) -> bool:
        return bool(self.reasons())

    def header(self) -> str:
        """One line for the top of a table: the machine, the load over the run, and whether it was quiet."""
        readings = [r[0] for r in [self.start_load] + [r for load in self.loads for r in (load.before, load.after)]
                    if r is not None]
        span = f"load average {min(readings):.2f}-{max(readings):.2f}" if readings else "load average unknown"
        text = f"{machine()}; {span} over the run (1 min; limit {self.limit:.2f} from other processes)"
        if self.under_load:
            return "TAKEN UNDER LOAD, not a measurement to publish: " + text
        return text

    def finish(self) -> str:
        """The header, or a SystemExit that refuses the table when it was taken under load without --allow-load."""
        reasons = self.reasons()
        if reasons and not self.allow_load:
            raise SystemExit(f"benchmark table not written: {reasons[0]}. Rerun on a quiet machine, or pass "
                             "--allow-load to get it marked as taken under load.")
        return self.header()


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-load", action="store_true",
                        help="write the table even when other processes loaded the machine, marked as taken under load")
    parser.add_argument("--max-load", type=float, default=DEFAULT_MAX_LOAD,
                        help="load average of other processes allowed per core the benchmark leaves free "
                        f"(default {DEFAULT_MAX_LOAD})")


def guard_from(args: argparse.Namespace, threads: int) -> LoadGuard:
    """A LoadGuard from the parsed ``add_load_arguments`` options, started (it refuses a busy machine)."""
    guard = LoadGuard(threads=threads, allow_load=args.allow_load, max_load=args.max_load)
    guard.start()
    return guard


def _tolerance(dtype: np.dtype) -> tuple[float, float] | None:
    """(rtol, atol) of accelir's end-to-end check for a float dtype; None: must match exactly."""
    from accelir.cli import CHECK_TOLERANCES
    from accelir.ir import DType
    try:
        return CHECK_TOLERANCES.get(DType.from_numpy(dtype))
    except Exception:  # noqa: BLE001 - a dtype the IR lacks (e.g. complex) is compared exactly
        return None


def check_outputs(reference: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> str:
    """Why ``got`` is not the reference's output ("" when it is): count, shape, NaN placement, and
    for floats an error over ``atol + rtol * peak`` of the output (rtol, atol by dtype, as
    ``accelir optimize --check`` uses: backends compute in their own order and fuse kernels)."""
    if len(got) != len(reference):
        return f"{len(got)} outputs instead of {len(reference)}"
    for i, (want, have) in enumerate(zip(reference, got)):
        want, have = np.asarray(want), np.asarray(have)
        if want.shape != have.shape:
            return f"output {i}: shape {list(have.shape)} instead of {list(want.shape)}"
        if not want.size:
            continue
        tol = _tolerance(want.dtype) if np.issubdtype(want.dtype, np.floating) else None
        if tol is None:
            if not np.array_equal(want, have):
                return f"output {i}: {int(np.sum(want != have))} of {want.size} elements differ"
            continue
        w, h = want.astype(np.float64), have.astype(np.float64)
        if not np.array_equal(np.isnan(w), np.isnan(h)):
            return f"output {i}: NaN where the reference has none, or the other way round"
        finite = np.isfinite(w)
        if not np.array_equal(w[~finite & ~np.isnan(w)], h[~finite & ~np.isnan(w)]):
            return f"output {i}: infinities differ"
        if finite.any():
            rtol, atol = tol
            peak = float(np.abs(w[finite]).max())
            err = float(np.abs(w[finite] - h[finite]).max())
            if not err <= atol + rtol * peak:
                return f"output {i}: max abs error {err:.3g} over {atol} + {rtol} x peak {peak:.3g}"
    return ""


def session_call(session: Any, arrays: Sequence[Any], owner: Any = None) -> Callable[[], Any]:
    """``session.run`` on a feed made once: the inputs converted to numpy before timing, as for every session.
    ``owner`` (e.g. the OnnxRuntimeModule whose external weights the session uses) is kept alive with the call."""
    from accelir.arrays import to_numpy
    names = [i.name for i in session.get_inputs()]
    if len(names) != len(arrays):
        raise RuntimeError(f"the ONNX model takes {len(names)} inputs ({', '.join(names)}), not {len(arrays)}")
    feed = {name: to_numpy(x) for name, x in zip(names, arrays)}

    def call(owner: Any = owner) -> Any:
        return session.run(None, feed)
    return call
