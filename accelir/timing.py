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

__all__ = ["Timing", "time_interleaved"]


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of the timed runs of one callable."""

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

    def __str__(self) -> str:
        return f"{self.median * 1e3:.3f} ms ({self.min * 1e3:.3f}-{self.max * 1e3:.3f})"


def time_interleaved(fns: Mapping[str, Callable[[], object]], *, warmup: int = 3, repeats: int = 10,
                     budget_s: float | None = None) -> dict[str, Timing]:
    """Warm each callable up, then time one call of each per round for ``repeats`` rounds, the
    order rotating by one each round.

    ``budget_s`` stops adding rounds once that much time has passed (after at least
    three), so that a slow model does not hold a quick benchmark run for minutes.
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
            t0 = time.perf_counter()
            fn()
            runs[name].append(time.perf_counter() - t0)
        if budget_s is not None and k >= 2 and time.perf_counter() - start > budget_s:
            break
    return {name: Timing(tuple(r)) for name, r in runs.items()}
