"""Progress display for the slow steps of a command (capture, passes, lowering, session build).

A step that finishes within ``delay`` seconds prints nothing; a slower one shows a
spinner with its elapsed time, redrawn in place, and ends with one line saying how
long it took.  The display is on only when its stream is a terminal, so piped and
redirected output, logs and tests stay clean.

Library code marks its steps with the module-level :func:`step`, which costs
nothing unless a caller has switched a display on with :func:`activate`::

    with progress.activate(progress.Progress()):
        with progress.step("capture"):
            ...
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import threading
import time
from typing import Iterator, TextIO

__all__ = ["Progress", "activate", "step"]

_SPINNER = "|/-\\"
_ACTIVE: contextvars.ContextVar[Progress | None] = contextvars.ContextVar("accelir_progress", default=None)


class Progress:
    """Draws nested steps on ``stream`` (stderr by default) once a step outlasts ``delay`` seconds."""

    def __init__(self, stream: TextIO | None = None, *, enabled: bool | None = None, delay: float = 1.0,
                 interval: float = 0.1):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _is_terminal(self.stream) if enabled is None else enabled
        self.delay = delay
        self.interval = interval
        self._labels: list[str] = []
        self._started: list[float] = []
        self._lock = threading.Lock()
        self._shown = False
        self._width = 0

    @contextlib.contextmanager
    def step(self, label: str) -> Iterator[None]:
        """Time the body; draw it while it runs past ``delay``, then say how long it took."""
        if not self.enabled:
            yield
            return
        with self._lock:
            self._labels.append(label)
            self._started.append(time.perf_counter())
        done = threading.Event()
        ticker = threading.Thread(target=self._tick, args=(done,), daemon=True)
        ticker.start()
        failed = True
        try:
            yield
            failed = False
        finally:
            done.set()
            ticker.join()
            with self._lock:
                elapsed = time.perf_counter() - self._started.pop()
                path = " > ".join(self._labels)
                self._labels.pop()
                if self._shown or elapsed >= self.delay:
                    self._draw(f"{path}: {'failed after' if failed else 'done in'} {elapsed:.1f} s", final=True)

    def _tick(self, done: threading.Event) -> None:
        if done.wait(self.delay):
            return
        frame = 0
        while not done.is_set():
            with self._lock:
                if self._labels:
                    elapsed = time.perf_counter() - self._started[-1]
                    self._draw(f"{_SPINNER[frame % len(_SPINNER)]} {' > '.join(self._labels)}  {elapsed:.1f} s")
            frame += 1
            done.wait(self.interval)

    def _draw(self, text: str, *, final: bool = False) -> None:
        pad = max(0, self._width - len(text))
        self.stream.write("\r" + text + " " * pad + ("\n" if final else ""))
        self.stream.flush()
        self._width = 0 if final else len(text)
        self._shown = not final


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def activate(display: Progress) -> Iterator[Progress]:
    """Make ``display`` the one that :func:`step` draws on, for the duration of the block."""
    token = _ACTIVE.set(display)
    try:
        yield display
    finally:
        _ACTIVE.reset(token)


@contextlib.contextmanager
def step(label: str) -> Iterator[None]:
    """Mark a possibly slow step; shown only under an active, enabled display."""
    display = _ACTIVE.get()
    if display is None:
        yield
        return
    with display.step(label):
        yield
