"""Bisect a miscompile down to one pass and then to one rewrite, and write a reproducer.

``bisect(graph, passes, check)`` runs the passes the way the PassManager does (rounds
until nothing changes, see ``FixedPoint``) on a copy of ``graph`` and checks the graph after each pass
that changed it.  At the first pass run after which ``check`` fails, it uses the
global rewrite counter every pass consults (``accelir.passes.rewrite_limit``, like
LLVM's ``-opt-bisect-limit``) to binary-search the smallest number of rewrites inside
that pass after which ``check`` fails: that last rewrite is the culprit.

The reproducer directory holds ``before.air`` (the IR before the failing pass, with
``before.air.npz`` for large constants), ``pipeline.json`` (the passes, the failing
one and the rewrite limits), the inputs and expected outputs as ``.npy`` and
``replay.py``, which reruns the failing pass with the last good and the first bad
limit and shows the difference.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import json
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .errors import AccelirError
from .arrays import to_numpy
from .interpreter import run_graph
from .ir import Graph
from .pass_manager import FixedPoint, compare_outputs, prepare_output_dir
from .text import load, print_graph, save

__all__ = ["bisect", "BisectResult", "replay", "pass_ref", "resolve_pass"]

PassFn = Callable[[Graph], bool]
Check = Callable[[Graph], bool]

# what _write_reproducer writes: a directory holding only these may be overwritten
REPRODUCER_FILES = re.compile(r"before\.air(\.npz)?|pipeline\.json|replay\.py|(input|expected)_\d{3,}\.npy")


@dataclass
class BisectResult:
    """Where the graph first breaks: the pass run, and the rewrite inside it."""

    pass_name: str | None
    invocation: int | None = None
    iteration: int | None = None
    rewrites: int = 0
    first_bad_rewrite: int | None = None
    rewrite: str = ""
    reason: str = ""
    reproducer: str | None = None
    unreplayable: str = ""  # why replay.py cannot rerun the failing pass, when it cannot

    @property
    def found(self) -> bool:
        return self.pass_name is not None

    def __str__(self) -> str:
        if not self.found:
            return "bisect: the check passes after every pass"
        where = (f"rewrite {self.first_bad_rewrite} of {self.rewrites}: {self.rewrite}" if self.first_bad_rewrite
                 else f"before its first rewrite ({self.reason})")
        text = (f"bisect: pass '{self.pass_name}' (run {self.invocation}, iteration {self.iteration}) "
                f"breaks the check at {where}")
        if self.reproducer:
            text += f"\nreproducer: {self.reproducer} (python {os.path.join(self.reproducer, 'replay.py')})"
        if self.unreplayable:
            text += f"\nreplay.py cannot rerun pass '{self.pass_name}': {self.unreplayable}; define it at module " \
                    "level or register it with accelir.passes.register_pass"
        return text


def _import_path(p: PassFn) -> tuple[str, str] | None:
    """``(module:attribute, file)`` under which ``p`` can be imported again, if any."""
    if inspect.isfunction(p) and "<" not in p.__qualname__:
        mod = sys.modules.get(p.__module__)
        return f"{p.__module__}:{p.__qualname__}", getattr(mod, "__file__", "") or ""
    # an instance (a RulePass, a configured dataclass): find the module global bound to it
    for name, mod in list(sys.modules.items()):
        if mod is None or name.startswith("_"):
            continue
        try:
            attrs = vars(mod)
        except TypeError:
            continue
        for attr, v in list(attrs.items()):
            if v is p and not attr.startswith("_"):
                return f"{name}:{attr}", getattr(mod, "__file__", "") or ""
    return None


def pass_ref(p: PassFn) -> dict[str, str]:
    """How to find ``p`` again in another process: its registered name and, if any, its import path
    (module:qualified name and the file); else ``why`` it cannot be found again."""
    from accelir.passes.registry import PASSES, pass_name
    ref = {"name": pass_name(p)}
    where = _import_path(p)
    if where is not None:
        ref["import"], ref["file"] = where
    elif ref["name"] not in PASSES or PASSES[ref["name"]].fn is not p:
        qual = getattr(p, "__qualname__", type(p).__qualname__)
        ref["why"] = (f"{qual} is defined inside a function" if "<locals>" in qual or "<lambda>" in qual
                      else f"no module binds it to a name ({qual})")
    return ref


def resolve_pass(ref: dict[str, str]) -> PassFn:
    """The pass ``pass_ref`` described: the registered name, else module:attribute, else the same
    attribute of the file it was defined in (a user's script: loaded under a name other than
    ``__main__``, so its ``if __name__ == "__main__":`` block does not run again)."""
    from accelir.passes.registry import PASSES
    if ref["name"] in PASSES:
        return PASSES[ref["name"]].fn
    if "import" not in ref:
        raise AccelirError(f"pass {ref['name']!r} cannot be replayed: {ref.get('why') or 'it was not importable'}; "
                           "define it at module level or register it with accelir.passes.register_pass")
    module_name, qual = ref["import"].split(":")
    obj: Any = None
    if module_name != "__main__":
        try:
            obj = _attribute(importlib.import_module(module_name), qual)
        except (ImportError, AttributeError):
            obj = None
    if obj is None and ref.get("file"):
        obj = _attribute(_load_file(ref["file"], module_name), qual)
    if obj is None:
        where = f"{ref['file']} or " if ref.get("file") else ""
        raise AccelirError(f"pass {ref['name']!r} cannot be replayed: {qual} is not in {where}module {module_name}; "
                           "rerun the bisect with the pass's current code")
    return obj


def _attribute(obj: Any, qual: str) -> Any:
    for part in qual.split("."):
        obj = getattr(obj, part, None)
    return obj


def _load_file(path: str, module_name: str) -> Any:
    """The module of the script at ``path``, imported under a private name (never ``__main__``)."""
    if not os.path.exists(path):
        raise AccelirError(f"the pass's source file {path} is gone; rerun the bisect")
    name = "accelir_replay_" + re.sub(r"\W", "_", module_name if module_name != "__main__" else
                                      os.path.splitext(os.path.basename(path))[0])
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the script changed since the bisect, or fails on import
        sys.modules.pop(name, None)
        raise AccelirError(f"cannot load the pass's source file {path}: {type(e).__name__}: {e}; "
                           "rerun the bisect") from e
    return module


def _safe_check(check: Check, graph: Graph) -> tuple[bool, str]:
    try:
        return bool(check(graph)), "check returned False"
    except Exception as e:  # noqa: BLE001 - any failure of the check counts as bad
        return False, f"check raised {type(e).__name__}: {e}"


def _run_limited(p: PassFn, graph: Graph, limit: int | None) -> tuple[Graph, int, list[str], str | None]:
    """Run ``p`` on a copy of ``graph`` with a rewrite limit; (graph, rewrites, log, error)."""
    from accelir.passes.pattern import rewrite_limit
    g = graph.copy()
    with rewrite_limit(limit) as budget:
        try:
            p(g)
            err = None
        except Exception as e:  # noqa: BLE001 - a raising pass is a failure to bisect, not to propagate
            err = f"{type(e).__name__}: {e}"
        return g, budget.count, list(budget.log), err


def numeric_check(graph: Graph, inputs: Sequence[Any]) -> Check:
    """A check that interprets a graph on ``inputs`` and compares with ``graph``'s outputs."""
    arrays = [to_numpy(x) for x in inputs]
    expected = run_graph(graph, arrays)

    def check(g: Graph) -> bool:
        return compare_outputs(expected, run_graph(g, arrays)) is None
    return check


def bisect(graph: Graph, passes: Sequence[PassFn], check: Check | None = None, *, inputs: Sequence[Any] | None = None,
           out_dir: str | os.PathLike | None = None, max_iterations: int = 10,
           overwrite: bool = False) -> BisectResult:
    """Find the first pass run, then the first rewrite in it, after which ``check(graph)`` fails.

    ``check`` returns True for a good graph (raising counts as bad).  Without a check,
    ``inputs`` give one: outputs must match the input graph's within dtype tolerance.
    ``graph`` is not modified.  With ``out_dir`` a reproducer is written there: the
    directory is created if missing and must be empty, or hold only an earlier
    reproducer and ``overwrite=True`` (checked, and cleared, before the search starts).
    """
    from accelir.passes.pattern import rewrite_limit
    from accelir.passes.registry import pass_name
    if check is None:
        if inputs is None:
            raise ValueError("bisect needs a check or example inputs")
        check = numeric_check(graph, inputs)
    ok, why = _safe_check(check, graph)
    if not ok:
        raise AccelirError(f"bisect: the check already fails on the input graph ({why}); nothing to bisect")
    if out_dir is not None:
        out_dir = prepare_output_dir(out_dir, REPRODUCER_FILES, overwrite, "bisect out_dir")
    g = graph.copy()
    invocation = 0
    before: Graph | None = None
    loop = FixedPoint(passes, max_iterations)
    for it, p in loop:
        # the copy stays the graph before the pass until a pass changes it
        if before is None:
            before, fingerprint = g.copy(), g.fingerprint()
        with rewrite_limit(None) as budget:
            try:
                # a pass that changed the graph without saying so is checked all the same
                changed = bool(p(g)) or g.fingerprint() != fingerprint
                err = None
            except Exception as e:  # noqa: BLE001
                changed, err = True, f"{type(e).__name__}: {e}"
            total = budget.count
        invocation += 1
        loop.done(changed)
        if err is None and not changed:
            continue
        good, why = (False, f"the pass raised {err}") if err else _safe_check(check, g)
        if good:
            before = None
            continue
        result = _narrow(p, before, check, total + (1 if err else 0), why)
        result.pass_name, result.invocation, result.iteration = pass_name(p), invocation, it
        if out_dir is not None:
            result.reproducer = _write_reproducer(out_dir, graph, before, passes, p, result, inputs)
        return result
    return BisectResult(None)


def _narrow(p: PassFn, before: Graph, check: Check, total: int, why: str) -> BisectResult:
    def good(n: int) -> tuple[bool, str]:
        g, _, _, err = _run_limited(p, before, n)
        return (False, f"the pass raised {err}") if err else _safe_check(check, g)

    ok0, why0 = good(0)
    if not ok0:
        return BisectResult(None, rewrites=total, first_bad_rewrite=0, reason=why0)
    lo, hi = 0, max(total, 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if good(mid)[0]:
            lo = mid
        else:
            hi = mid
    _, _, log, _ = _run_limited(p, before, hi)
    return BisectResult(None, rewrites=total, first_bad_rewrite=hi, rewrite=log[-1] if len(log) >= hi else "",
                        reason=good(hi)[1])


def _write_reproducer(out: str, graph: Graph, before: Graph, passes: Sequence[PassFn], failing: PassFn,
                      result: BisectResult, inputs: Sequence[Any] | None) -> str:
    save(before, os.path.join(out, "before.air"))
    failing_ref = pass_ref(failing)
    result.unreplayable = failing_ref.get("why", "")
    info = {
        "passes": [pass_ref(p) for p in passes],
        "failing_pass": failing_ref,
        "invocation": result.invocation,
        "iteration": result.iteration,
        "rewrites_in_pass": result.rewrites,
        "last_good_limit": max((result.first_bad_rewrite or 0) - 1, 0),
        "first_bad_limit": result.first_bad_rewrite,
        "rewrite": result.rewrite,
        "reason": result.reason,
        "inputs": 0,
    }
    if inputs is not None:
        arrays = [to_numpy(x) for x in inputs]
        expected = run_graph(graph, arrays)
        for i, a in enumerate(arrays):
            np.save(os.path.join(out, f"input_{i:03d}.npy"), a)
        for i, a in enumerate(expected):
            np.save(os.path.join(out, f"expected_{i:03d}.npy"), a)
        info["inputs"] = len(arrays)
        info["outputs"] = len(expected)
    with open(os.path.join(out, "pipeline.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    with open(os.path.join(out, "replay.py"), "w", encoding="utf-8") as f:
        f.write('"""Replay an accelir bisect: rerun the failing pass on before.air with the last good and the\n'
                'first bad rewrite limit, show the IR difference and, with inputs, the output error."""\n\n'
                "import os\nimport sys\n\nfrom accelir import AccelirError\nfrom accelir.bisect import replay\n\n"
                "try:\n    sys.exit(replay(os.path.dirname(os.path.abspath(__file__))))\n"
                "except AccelirError as e:\n    sys.exit(f\"replay: {e}\")\n")
    return out


def replay(directory: str | os.PathLike, stream: Any = None) -> int:
    """Rerun a reproducer; prints what the first bad rewrite changes.  Returns 1 when it reproduces."""
    from accelir.passes.pattern import rewrite_limit
    out = stream if stream is not None else sys.stdout
    d = os.fspath(directory)
    with open(os.path.join(d, "pipeline.json"), encoding="utf-8") as f:
        info = json.load(f)
    p = resolve_pass(info["failing_pass"])
    before = load(os.path.join(d, "before.air"))
    good_limit, bad_limit = info["last_good_limit"], info["first_bad_limit"]
    with rewrite_limit(good_limit):
        good = before.copy()
        p(good)
    with rewrite_limit(bad_limit) as budget:
        bad = before.copy()
        p(bad)
        what = budget.log[-1] if budget.log else info.get("rewrite", "")
    out.write(f"pass {info['failing_pass']['name']!r}, rewrite {bad_limit}: {what}\n")
    out.write("".join(difflib.unified_diff(print_graph(good).splitlines(keepends=True),
                                           print_graph(bad).splitlines(keepends=True),
                                           fromfile=f"after {good_limit} rewrites", tofile=f"after {bad_limit}")))
    if not info.get("inputs"):
        return 1
    arrays = [np.load(os.path.join(d, f"input_{i:03d}.npy")) for i in range(info["inputs"])]
    expected = [np.load(os.path.join(d, f"expected_{i:03d}.npy")) for i in range(info["outputs"])]
    status = 0
    for label, g in (("last good", good), ("first bad", bad)):
        bad_out = compare_outputs(expected, run_graph(g, arrays))
        if bad_out is None:
            out.write(f"{label}: outputs match\n")
        else:
            out.write(f"{label}: output {bad_out[0]} differs: {bad_out[3]}\n")
            status = 1 if label == "first bad" else status
    return status
