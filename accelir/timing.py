"""Latency measurement shared by ``accelir bench`` and the peer benchmark.

Several callables are timed in interleaved rounds after their warm-up runs, so that
a slow phase of a shared machine (another process, thermal throttling) falls on every
system alike instead of on whichever ran during it.  The order rotates each round
(A B C, B C A, C A B, ...), so that no system always runs first (after a pause, on
cold caches) or always after the same neighbour.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Mapping

__all__ = ["Timing", "time_interleaved", "latency_table", "WIDE_SPREAD"]

#: a spread (interquartile range / median) above this makes a figure unreliable: the table says so
WIDE_SPREAD = 0.2


@dataclass(frozen=True)
class Timing:
    """Seconds of the timed runs of one callable (wall clock unless its clock said otherwise)."""

    runs: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def min(self) -> float:
        return min(self.runs)

    @property
    def max(self) -> float:
        return max(self.runs)

    @property
    def quartiles(self) -> tuple[float, float]:
        """The first and third quartiles of the runs (the median twice for a single run)."""
        if len(self.runs) < 2:
            return self.median, self.median
        q1, _, q3 = statistics.quantiles(self.runs, n=4, method="inclusive")
        return q1, q3

    @property
    def spread(self) -> float:
        """The interquartile range relative to the median: how far one run is from the next."""
        if len(self.runs) < 2:
            return 0.0
        q1, q3 = self.quartiles
        return (q3 - q1) / self.median if self.median > 0 else 0.0

    def __str__(self) -> str:
        return f"{self.median * 1e3:.3f} ms (spread {self.spread:.0%})"


def latency_table(timings: Mapping[str, Timing], reference: str, extra: Mapping[str, Mapping[str, str]] | None = None,
                  indent: str = "") -> str:
    """The one form accelir reports speed in: each system's median, its spread (interquartile range /
    median), and its time as a ratio of ``reference``'s median (below 1: faster); medians only are
    compared, never a median with a minimum. ``extra``: more columns, column -> system -> text. A line
    at the end warns when a spread is wide enough (> WIDE_SPREAD) to make a ratio unreliable."""
    extra = extra or {}
    width = max(len(k) for k in timings)
    base = timings[reference].median
    head = f"{'system':{width}s}  {'median ms':>10s}  {'spread':>6s}  {'time ratio':>10s}"
    head += "".join(f"  {col:>11s}" for col in extra)
    lines = [indent + head]
    for name, t in timings.items():
        row = f"{name:{width}s}  {t.median * 1e3:10.3f}  {t.spread:6.0%}  {t.median / base:10.2f}"
        row += "".join(f"  {values.get(name, ''):>11s}" for values in extra.values())
        lines.append(indent + row)
    lines.append(f"{indent}time ratio: median / the median of {reference} (below 1 is faster); spread: interquartile "
                 f"range / median over {len(timings[reference].runs)} interleaved runs")
    wide = [name for name, t in timings.items() if t.spread > WIDE_SPREAD]
    if wide:
        lines.append(f"{indent}WARNING: wide spread ({', '.join(wide)}): another process or throttling disturbed the "
                     "runs; these ratios are not reliable, repeat on a quiet machine with more --repeats")
    return "\n".join(lines)


def time_interleaved(fns: Mapping[str, Callable[[], object]], *, warmup: int = 3, repeats: int = 10,
                     budget_s: float | None = None, clock: Callable[[], float] = time.perf_counter
                     ) -> dict[str, Timing]:
    """Warm each callable up, then time one call of each per round for ``repeats`` rounds, the
    order rotating by one each round.

    ``budget_s`` stops adding rounds once that much time has passed (after at least
    three), so that a slow model does not hold a quick benchmark run for minutes.  ``clock`` reads the
    time of one call: wall clock by default; ``time.process_time`` counts this process's CPU time only,
    which a shared machine's other processes do not inflate (with one intra-op thread onnxruntime's
    kernels run on the calling thread).
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    runs: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    start = time.perf_counter()
    for k in range(repeats):
        shift = k % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            fn = fns[name]
            t0 = clock()
            fn()
            runs[name].append(clock() - t0)
        if budget_s is not None and k >= 2 and time.perf_counter() - start > budget_s:
            break
    return {name: Timing(tuple(r)) for name, r in runs.items()}
