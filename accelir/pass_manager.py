"""The PassManager: runs passes to a fixed point and lets a person watch each one.

Any callable ``Graph -> bool`` (True when it changed the graph) is a pass; registered
passes show their registered name.  After each pass the manager can verify the graph,
print it (or a unified diff of its text), dump it to a numbered file, and interpret it
on example inputs to name the first pass whose outputs drift.  Each run records, per
pass, its wall time, node counts before and after, op-histogram delta and whether it
changed anything: ``pm.report`` prints as a table.

When a pass raises (or breaks verification or numerics, or changes the graph's
signature: its inputs, the number of its outputs or their types), the error names the
pass and the passes that ran before it, and the graph is put back as it was before
that pass; a KeyboardInterrupt inside a pass rolls the graph back too, then goes on.
Whether a pass changed the graph is not taken on its word alone: one that returns
False (or None) is checked against a :class:`~accelir.ir.Fingerprint` of the graph,
and a change it did not report is verified, checked and noted in the report all the same.

The fixed point is reached without needless work: a pass is taken to be a function of
the graph, so one that reported no change is not run again until another pass has
changed the graph (:class:`FixedPoint`, shared with ``bisect``).  The rollback state is
a :class:`Snapshot` of the graph's own objects rather than a copy, taken again (with
the fingerprint) only after a pass changed the graph; and the cyclic garbage collector
is paused while the passes run, since its sweeps would walk a large graph over and over.
"""

from __future__ import annotations

import contextlib
import difflib
import gc
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence, TextIO

import numpy as np

from .errors import AccelirError, NumericMismatchError, PassError, VerificationError
from .interpreter import run_graph
from .ir import DType, Fingerprint, Graph, Snapshot, Value
from .printer import StableNumbers
from .text import print_graph, save
from .verify import verify

__all__ = ["PassManager", "PassRecord", "PassReport", "PassReturnWarning", "TOLERANCES", "compare_outputs",
           "FixedPoint", "Snapshot", "signature_change", "prepare_output_dir", "DUMP_FILES"]

PassFn = Callable[[Graph], bool]

# dtype -> (rtol, atol) for check_numerics; ints and bool must match exactly
TOLERANCES: dict[DType, tuple[float, float]] = {
    DType.f64: (1e-9, 1e-9),
    DType.f32: (1e-4, 1e-5),
    DType.f16: (1e-2, 1e-3),
    DType.bf16: (5e-2, 1e-2),
}


class PassReturnWarning(UserWarning):
    """A pass's return value said it changed nothing, but it changed the graph."""


def _name(p: PassFn) -> str:
    from accelir.passes.registry import pass_name
    return pass_name(p)


@dataclass
class PassRecord:
    """What one run of one pass did."""

    index: int
    name: str
    iteration: int
    seconds: float
    nodes_before: int
    nodes_after: int
    changed: bool
    op_delta: dict[str, int] = field(default_factory=dict)
    note: str = ""

    def delta_text(self, limit: int = 6) -> str:
        items = sorted(self.op_delta.items(), key=lambda kv: (-abs(kv[1]), kv[0]))
        text = " ".join(f"{'+' if d > 0 else ''}{d} {op}" for op, d in items[:limit])
        return text + (" ..." if len(items) > limit else "")


@dataclass
class PassReport:
    """The records of a PassManager run; ``str(report)`` is a table."""

    records: list[PassRecord] = field(default_factory=list)
    iterations: int = 0
    converged: bool = True
    unfused: list[Any] = field(default_factory=list)  # explain=True: accelir.explain.Unfused, by pass

    @property
    def total_seconds(self) -> float:
        return sum(r.seconds for r in self.records)

    def by_pass(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for r in self.records:
            out[r.name] = out.get(r.name, 0.0) + r.seconds
        return out

    def __str__(self) -> str:
        head = ("#", "pass", "iter", "time ms", "nodes before", "nodes after", "changed", "op delta")
        rows = [(str(r.index), r.name, str(r.iteration), f"{r.seconds * 1e3:.2f}", str(r.nodes_before),
                 str(r.nodes_after), "yes" if r.changed else "-", r.delta_text()) for r in self.records]
        widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
        right = {0, 2, 3, 4, 5}

        def fmt(row: Sequence[str]) -> str:
            cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
            return "  ".join(cells).rstrip()
        lines = [fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
        lines += [f"note: #{r.index} {r.name} {r.note}" for r in self.records if r.note]
        first = self.records[0].nodes_before if self.records else 0
        last = self.records[-1].nodes_after if self.records else 0
        lines.append(f"total {self.total_seconds * 1e3:.2f} ms over {self.iterations} iteration(s); "
                     f"nodes {first} -> {last}" + ("" if self.converged else "; did not reach a fixed point"))
        text = "\n".join(lines) + "\n"
        if self.unfused:
            from .explain import explain_text
            text += explain_text(self.unfused)
        return text


def compare_outputs(expected: Sequence[np.ndarray], got: Sequence[np.ndarray],
                    tolerances: dict[DType, tuple[float, float]] | None = None
                    ) -> tuple[int, float, float, str] | None:
    """The first output that differs beyond its dtype's tolerance as (index, max abs, rel, what), else None."""
    tol = TOLERANCES if tolerances is None else tolerances
    if len(expected) != len(got):
        return (min(len(expected), len(got)), float("inf"), float("inf"),
                f"{len(got)} outputs instead of {len(expected)}")
    for i, (e, g) in enumerate(zip(expected, got)):
        e, g = np.asarray(e), np.asarray(g)
        if e.shape != g.shape or e.dtype != g.dtype:
            return i, float("inf"), float("inf"), f"{g.dtype}{list(g.shape)} instead of {e.dtype}{list(e.shape)}"
        if e.size == 0:
            continue
        dt = DType.from_numpy(e.dtype)
        if dt not in tol:
            bad = e != g
            if bad.any():
                return i, float(np.max(np.abs(e.astype(np.float64) - g.astype(np.float64)))), float("inf"), \
                    f"{int(bad.sum())} of {e.size} elements differ"
            continue
        rtol, atol = tol[dt]
        ef, gf = e.astype(np.float64), g.astype(np.float64)
        nan_e, nan_g = np.isnan(ef), np.isnan(gf)
        if (nan_e != nan_g).any():
            return i, float("nan"), float("nan"), f"NaN in {int((nan_e != nan_g).sum())} places where there was none"
        ok = ~nan_e
        with np.errstate(all="ignore"):
            diff = np.where(ok, np.abs(ef - gf), 0.0)
            same_inf = np.isinf(ef) & (ef == gf)
            diff = np.where(same_inf, 0.0, diff)
            limit = atol + rtol * np.abs(np.where(ok, ef, 0.0))
        if (diff > limit).any():
            err = float(diff.max())
            scale = float(np.abs(np.where(ok & ~np.isinf(ef), ef, 0.0)).max())
            rel = err / scale if scale > 0 else float("inf")
            return i, err, rel, f"max abs error {err:.3g}, relative {rel:.3g} (rtol {rtol}, atol {atol})"
    return None


class FixedPoint:
    """The fixed-point loop over a pass list, shared by the PassManager and ``bisect``.

    Iterating yields ``(iteration, pass)``; after running the pass the caller reports
    ``done(changed)``.  Rounds repeat until one changes nothing (at most
    ``max_iterations``).  A pass is a function of the graph: one that reported no change
    is skipped until some pass changes the graph again, so the last round of a run
    only reruns the passes that came before the last change.
    """

    def __init__(self, passes: Sequence[PassFn], max_iterations: int):
        self.passes = list(passes)
        self.max_iterations = max_iterations
        self.iteration = 0
        self.converged = False
        self.any_change = False
        self._changes = 0
        self._clean_at: list[int | None] = [None] * len(self.passes)
        self._current = -1
        self._round_change = False

    def __iter__(self) -> Iterator[tuple[int, PassFn]]:
        for it in range(1, self.max_iterations + 1):
            self.iteration = it
            self._round_change = False
            for i, p in enumerate(self.passes):
                if self._clean_at[i] == self._changes:
                    continue
                self._current = i
                yield it, p
            if not self._round_change:
                self.converged = True
                return

    def done(self, changed: bool) -> None:
        """Record whether the pass just yielded changed the graph."""
        if changed:
            self._changes += 1
            self._round_change = self.any_change = True
            self._clean_at[self._current] = None
        else:
            self._clean_at[self._current] = self._changes


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while the passes run.

    A large graph is hundreds of thousands of long-lived objects (nodes, values, use
    lists) and the passes allocate many short-lived ones, so the collector would keep
    walking the whole graph to find little garbage.  Nodes the passes drop (they form
    node <-> value cycles) are collected once it runs again.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


# what the PassManager writes into dump_dir: 000-input.air (+ .npz), NNN-after-<pass>.air (+ .npz of the constants
# the input lacks; the rest by reference to 000-input.air.npz), report.txt
DUMP_FILES = re.compile(r"\d{3,}-[A-Za-z0-9_.-]+\.air(\.npz)?|report\.txt")


def _few(names: Sequence[str], limit: int = 4) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def prepare_output_dir(path: str | os.PathLike, ours: re.Pattern[str], overwrite: bool, what: str) -> str:
    """Create the directory ``path``, or make sure writing into it loses nothing of the user's.

    A non-empty directory is refused unless ``overwrite``, so dumps from an earlier run
    never sit beside new ones and no file is replaced by surprise.  With ``overwrite``
    only the files accelir writes there (names matching ``ours``) are removed; any
    other entry is refused before anything is removed.  ``what`` names the argument in
    the errors.  Returns the path as a str.
    """
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise AccelirError(f"{what} {path!r} is a file, not a directory; choose a directory")
    os.makedirs(path, exist_ok=True)
    entries = sorted(os.listdir(path))
    if not entries:
        return path
    foreign = [e for e in entries if not (ours.fullmatch(e) and os.path.isfile(os.path.join(path, e)))]
    if foreign:
        raise AccelirError(f"{what} {path!r} holds files accelir did not write ({_few(foreign)}); choose an "
                           "empty or new directory")
    if not overwrite:
        raise AccelirError(f"{what} {path!r} holds the files of an earlier run ({_few(entries)}); pass "
                           "overwrite=True (--overwrite on the command line) to replace them, or choose an empty "
                           "or new directory")
    for e in entries:
        os.remove(os.path.join(path, e))
    return path


def file_part(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "pass"


class PassManager:
    """Run ``passes`` over a graph until none changes it (at most ``max_iterations`` rounds).

    ``verify_each``: verify after every pass that changed the graph.
    ``print_after``: None, ``"all"`` (print the graph after each pass) or ``"changed"``
    (print a unified diff of the IR text after each pass that changed it).
    ``dump_dir``: write ``000-input.air`` and ``NNN-after-<pass>.air`` after each pass
    that changed the graph, and ``report.txt`` at the end.  The directory is created if
    missing and must be empty; ``overwrite=True`` lets the dumps of an earlier run there
    be replaced (see :func:`prepare_output_dir`).  Later runs of the same manager
    replace its own dumps.
    ``check_numerics``: example inputs; after each changed pass the graph is interpreted
    and compared with the input graph's outputs (tolerance by dtype, see TOLERANCES).
    ``instrument``: called as ``instrument(record, graph)`` after each pass.
    ``snapshot``: record the graph's state before each pass (see :class:`Snapshot`) so a
    failing pass can be rolled back.
    ``explain``: run the passes that can record near misses verbose, and list in
    ``report.unfused`` each candidate they left unfused, with the reason and provenance
    (see :mod:`accelir.explain`).

    A pass that reported no change is not run again until another pass changes the
    graph (see :class:`FixedPoint`); such skipped runs leave no record in the report.
    """

    def __init__(self, passes: Sequence[PassFn], verify_each: bool = True, print_after: str | None = None,
                 dump_dir: str | os.PathLike | None = None, check_numerics: Sequence[Any] | None = None,
                 max_iterations: int = 10, instrument: Callable[[PassRecord, Graph], None] | None = None,
                 snapshot: bool = True, tolerances: dict[DType, tuple[float, float]] | None = None,
                 stream: TextIO | None = None, overwrite: bool = False, explain: bool = False):
        if print_after not in (None, "all", "changed"):
            raise ValueError(f"print_after must be None, 'all' or 'changed', got {print_after!r}")
        for p in passes:
            if not callable(p):
                raise TypeError(f"a pass must be a callable Graph -> bool, got {type(p).__name__}")
        if max_iterations < 1:
            raise ValueError("max_iterations must be at least 1")
        if explain:
            from .explain import explaining
            passes = [explaining(p) for p in passes]
        self.passes = list(passes)
        self.explain = explain
        self.verify_each = verify_each
        self.print_after = print_after
        self.dump_dir = os.fspath(dump_dir) if dump_dir is not None else None
        self.check_numerics = list(check_numerics) if check_numerics is not None else None
        self.max_iterations = max_iterations
        self.instrument = instrument
        self.snapshot = snapshot
        self.tolerances = tolerances
        self.stream = stream
        self.overwrite = overwrite
        self.report = PassReport()
        self._dumps = 0
        self._dumped = False
        self._input_arrays: tuple[str, dict[str, list[np.ndarray]]] = ("", {})
        self._stable = StableNumbers()  # one run's prints and dumps number a value the same way
        self._snapshot: Snapshot | None = None
        self._fingerprint: Fingerprint | None = None
        self._signature: Any = None
        self._text: str | None = None

    @property
    def names(self) -> list[str]:
        return [_name(p) for p in self.passes]

    def _out(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stdout

    def _dump(self, graph: Graph, label: str) -> None:
        if self.dump_dir is None:
            return
        name = f"{self._dumps:03d}-{file_part(label)}.air"
        path = os.path.join(self.dump_dir, name)
        self._dumps += 1
        if self._dumps == 1:
            self._input_arrays = (name + ".npz", save(graph, path, stable=self._stable))
        else:  # the input's weights by reference; only a pass's new constants get their own .npz
            save(graph, path, meta=True, shared=self._input_arrays, stable=self._stable)

    def _write_report(self, extra: str = "") -> None:
        if self.dump_dir is not None:
            with open(os.path.join(self.dump_dir, "report.txt"), "w", encoding="utf-8") as f:
                f.write(str(self.report) + extra)

    def run(self, graph: Graph) -> bool:
        """Run the passes on ``graph`` in place to a fixed point; True when anything changed."""
        self.report = PassReport()
        self._stable = StableNumbers()
        self._dumps = 0
        if self.dump_dir is not None:
            # the dumps of this manager's earlier runs are its own to replace
            prepare_output_dir(self.dump_dir, DUMP_FILES, self.overwrite or self._dumped, "dump_dir")
            self._dumped = True
            self._dump(graph, "input")
        expected = run_graph(graph, self.check_numerics) if self.check_numerics is not None else None
        history: list[str] = []
        hist = graph.op_histogram()
        loop = FixedPoint(self.passes, self.max_iterations)
        explainer = None
        if self.explain:
            from .explain import Explainer
            explainer = Explainer()
        self._fingerprint = self._signature = self._snapshot = None
        self._text = None
        with _collector_paused():
            for it, p in loop:
                self.report.iterations = it
                name = _name(p)
                changed, hist = self._run_one(p, name, it, graph, hist, history, expected)
                loop.done(changed)
                if explainer is not None:
                    explainer.after(name, p)
                history.append(name)
        self._fingerprint = self._signature = self._snapshot = None
        self._text = None
        self.report.converged = loop.converged
        self._input_arrays = ("", {})
        self._stable = StableNumbers()
        if explainer is not None:
            self.report.unfused = explainer.unfused()
        self._write_report()
        return loop.any_change

    def _fail(self, graph: Graph, before: Snapshot | None, name: str, history: list[str], what: str) -> str:
        if before is not None:
            graph.restore(before)
        ran = ", ".join(history) if history else "none"
        kept = (f"; the graph is left as it was before '{name}'" if before is not None
                else "; the graph may be half-rewritten (snapshot=False)")
        msg = f"pass '{name}' {what} (passes run before it: {ran}){kept}"
        self._write_report(f"\nFAILED: {msg}\n")
        return msg

    def _run_one(self, p: PassFn, name: str, it: int, graph: Graph, hist: dict[str, int], history: list[str],
                 expected: list[np.ndarray] | None) -> tuple[bool, dict[str, int]]:
        # the signature, snapshot (or fingerprint) and text of the graph stay valid until a pass changes it
        if self._signature is None:
            self._signature = graph.signature()
            self._snapshot = graph.snapshot() if self.snapshot else None
            self._fingerprint = None if self.snapshot else graph.fingerprint()
        before = self._snapshot
        if self.print_after == "changed" and self._text is None:
            self._text = print_graph(graph, stable=self._stable)
        try:
            changed, rec, new_hist = self._run_checked(p, name, it, graph, hist, history, expected, before)
        except BaseException as e:
            # an interrupt (Ctrl-C) or exit inside the pass or its checks leaves the graph as it
            # was before the pass; errors were rolled back and reported by _fail already
            if not isinstance(e, Exception) and before is not None:
                graph.restore(before)
            raise
        if changed:
            self._fingerprint = self._signature = self._snapshot = None
            self._dump(graph, f"after-{name}")
        if self.print_after == "all" or (self.print_after == "changed" and changed):
            out = self._out()
            if self.print_after == "all":
                out.write(f"// ----- after {name} (iteration {it}){'' if changed else ', unchanged'} -----\n")
                out.write(print_graph(graph, stable=self._stable))
            else:
                text = print_graph(graph, stable=self._stable)
                diff = difflib.unified_diff(self._text.splitlines(keepends=True), text.splitlines(keepends=True),
                                            fromfile=f"before {name}", tofile=f"after {name}")
                out.write("".join(diff))
                self._text = text
        if self.instrument is not None:
            self.instrument(rec, graph)
        return changed, new_hist

    def _run_checked(self, p: PassFn, name: str, it: int, graph: Graph, hist: dict[str, int], history: list[str],
                     expected: list[np.ndarray] | None, before: Snapshot | None
                     ) -> tuple[bool, PassRecord, dict[str, int]]:
        """Run one pass, record it, and check what it did; a failed check rolls the graph back."""
        n_before = sum(hist.values())
        t0 = time.perf_counter()
        try:
            result = p(graph)
        except Exception as e:
            raise PassError(self._fail(graph, before, name, history, f"raised {type(e).__name__}: {e}"),
                            pass_name=name, previous=history) from e
        seconds = time.perf_counter() - t0
        changed, note = self._changed(graph, name, result)
        if changed:
            new_hist = graph.op_histogram()
            delta = {op: new_hist.get(op, 0) - hist.get(op, 0) for op in set(hist) | set(new_hist)}
            delta = {k: v for k, v in delta.items() if v}
        else:
            new_hist, delta = hist, {}
        rec = PassRecord(len(self.report.records), name, it, seconds, n_before, sum(new_hist.values()), changed,
                         delta, note)
        self.report.records.append(rec)
        if changed:
            what = signature_change(self._signature, graph)
            if what is not None:
                msg = self._fail(graph, before, name, history, f"changed the graph's signature: {what}")
                raise PassError(msg, pass_name=name, previous=history) from VerificationError(what)
        if changed and self.verify_each:
            try:
                verify(graph)
            except VerificationError as e:
                self._dump(graph, f"after-{name}-invalid")
                raise PassError(self._fail(graph, before, name, history, f"left an invalid graph: {e}"),
                                pass_name=name, previous=history) from e
        if changed and expected is not None:
            got = run_graph(graph, self.check_numerics)
            bad = compare_outputs(expected, got, self.tolerances)
            if bad is not None:
                idx, err, rel, what = bad
                self._dump(graph, f"after-{name}-mismatch")
                msg = self._fail(graph, before, name, history, f"changed output {idx}: {what}")
                raise NumericMismatchError(msg, pass_name=name, output_index=idx, max_abs_error=err, rel_error=rel)
        return changed, rec, new_hist

    def _changed(self, graph: Graph, name: str, result: Any) -> tuple[bool, str]:
        """Whether the pass changed the graph, and a note when its return value said otherwise.

        A pass that says it changed the graph is taken at its word (rerunning it is
        harmless); one that says it did not is checked against the fingerprint, since
        trusting it would skip verification and the numeric check of a real change.
        """
        if result:
            return True, ""
        # the snapshot, when there is one, serves as the fingerprint
        if not (self._snapshot.changed() if self._snapshot is not None else graph.fingerprint() != self._fingerprint):
            return False, ""
        note = f"returned {result!r} but changed the graph"
        warnings.warn(f"pass '{name}' {note}; it is treated as changed (a pass returns True when it changes the "
                      "graph)", PassReturnWarning, stacklevel=2)
        return True, note


def _describe_input(v: Value, t: Any, index: int) -> str:
    return f"input {index} ({'%' + v.name + ': ' if v.name else ''}{t})"


def signature_change(before: tuple[tuple[tuple[Value, Any], ...], tuple[Any, ...]], graph: Graph) -> str | None:
    """What differs between ``graph``'s signature and ``before`` (see ``Graph.signature``), else None.

    Inputs are matched by identity, so a removed input is named as removed rather than
    as every later input changing type; outputs are matched by position.
    """
    old_in, old_out = before
    new_in, new_out = graph.signature()
    changes: list[str] = []
    old_at = {id(v): i for i, (v, _) in enumerate(old_in)}
    new_ids = {id(v) for v, _ in new_in}
    changes += [f"{_describe_input(v, t, i)} removed" for i, (v, t) in enumerate(old_in) if id(v) not in new_ids]
    for i, (v, t) in enumerate(new_in):
        j = old_at.get(id(v))
        if j is None:
            changes.append(f"{_describe_input(v, t, i)} added")
        elif old_in[j][1] != t:
            changes.append(f"{_describe_input(v, old_in[j][1], j)} became {t}")
    kept = [id(v) for v, _ in new_in if id(v) in old_at]
    if not changes and kept != [id(v) for v, _ in old_in]:
        changes.append("inputs reordered")
    if len(new_out) != len(old_out):
        changes.append(f"{len(new_out)} outputs instead of {len(old_out)}")
    changes += [f"output {i} is {t} instead of {o}" for i, (o, t) in enumerate(zip(old_out, new_out)) if o != t]
    return "; ".join(changes) if changes else None
