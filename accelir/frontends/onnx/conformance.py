"""ONNX's backend test cases run through accelir: the conformance check of the ONNX frontend.

Each case is a model with input and expected output arrays.  Four families ship in the onnx
wheel and all count (``FAMILIES``): the ``node`` cases, read from
``onnx/backend/test/data/node`` when the installed onnx ships that directory and otherwise
generated in memory from ``onnx.backend.test.case.node`` (the same code that writes those
files), and the ``simple``, ``pytorch-converted`` and ``pytorch-operator`` model cases, read
from their directories.  The ``light`` models stay out: they ship without inputs (onnx's own
runner makes them up), so they are real-model smoke tests rather than conformance cases; ``real``
needs downloads.  Two accelir paths are checked, and onnxruntime alone as the peer:

- ``interpreter``: import -> accelir interpreter;
- ``onnxruntime``: import -> level-2 passes -> ONNX lowering -> onnxruntime;
- ``onnxruntime_alone`` (``ALONE``): the original model in onnxruntime, as it comes, on every
  case (out of scope for accelir or not).  The target compares accelir's passes as they come
  with these.

A test is out of scope when it needs something the IR cannot hold (``scope_of``:
the ops in ``driver.OUT_OF_SCOPE``, non-tensor types, dtypes without an accelir
dtype); everything else counts, implemented or not.  ``python -m
accelir.frontends.onnx.conformance [interpreter] [onnxruntime] [--expected]`` prints the
report: the number of cases, those out of scope by reason, and per path the passes (of the
in-scope cases and of all cases) and how many pass as they come, without specialisation, per
family and in total; with ``onnxruntime`` it also runs onnxruntime alone and prints the ratio
of accelir's passes as they come to its passes.  ``--expected`` adds the lines of the pinned
list that tests/test_onnx_conformance.py checks.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ...errors import AccelirError
from ...ir import DType
from .driver import OUT_OF_SCOPE, OUT_OF_SCOPE_DOMAINS, import_onnx
from ...unbacked import deciding_inputs
from .proto import ONNX_DTYPES, DynamicValueError

__all__ = ["NodeCase", "CaseResult", "load_cases", "scope_of", "run_case", "run_suite", "summarize", "report",
           "expected_lines", "PATHS", "ALONE", "FAMILIES"]

# the backend test families the onnx wheel ships with their inputs, in report order
FAMILIES = ("node", "simple", "pytorch-converted", "pytorch-operator")


@dataclass
class NodeCase:
    name: str
    model: Any
    data_sets: list[tuple[list[np.ndarray], list[np.ndarray]]]
    rtol: float = 1e-3
    atol: float = 1e-7
    family: str = "node"


@dataclass
class CaseResult:
    name: str
    scope: str  # "in" or the out-of-scope reason
    status: dict[str, str] = field(default_factory=dict)  # path -> "pass" or the failure
    specialised: bool = False  # on some path
    specialised_on: set[str] = field(default_factory=set)  # the paths that ran it specialised
    family: str = "node"


def _read_value(path: str, type_proto: Any) -> Any:
    """One test data file, read as the model declares the value: a tensor, or a list for a
    sequence (as onnx's own runner reads them)."""
    import onnx
    from onnx import numpy_helper
    with open(path, "rb") as fh:
        data = fh.read()
    if type_proto is not None and type_proto.HasField("sequence_type"):
        seq = onnx.SequenceProto()
        seq.ParseFromString(data)
        return numpy_helper.to_list(seq)
    t = onnx.TensorProto()
    t.ParseFromString(data)
    return numpy_helper.to_array(t)


def _load_pb_dir(case_dir: str, family: str = "node") -> NodeCase:
    import json

    import onnx
    model = onnx.load(os.path.join(case_dir, "model.onnx"), load_external_data=False)
    tol = {}
    if os.path.exists(os.path.join(case_dir, "data.json")):
        with open(os.path.join(case_dir, "data.json")) as f:
            tol = {k: float(v) for k, v in json.load(f).items() if k in ("rtol", "atol")}
    sets = []
    for ds in sorted(d for d in os.listdir(case_dir) if d.startswith("test_data_set_")):
        path = os.path.join(case_dir, ds)

        def read(prefix: str, declared: Sequence[Any]) -> list[Any]:
            files = sorted((f for f in os.listdir(path) if f.startswith(prefix)),
                           key=lambda f: int(f[len(prefix):-3]))
            return [_read_value(os.path.join(path, f), declared[k].type if k < len(declared) else None)
                    for k, f in enumerate(files)]
        sets.append((read("input_", _fed_inputs(model)), read("output_", list(model.graph.output))))
    return NodeCase(os.path.basename(case_dir), model, sets, family=family, **tol)


def _fed_inputs(model: Any) -> list[Any]:
    """The graph inputs a caller feeds: those an initializer does not give (IR < 4 lists both)."""
    inits = {t.name for t in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


def load_cases(names: Iterable[str] | None = None, families: Sequence[str] = FAMILIES) -> list[NodeCase]:
    """The ONNX backend test cases of ``families`` (all, or those named)."""
    import onnx.backend.test
    wanted = set(names) if names is not None else None
    root = os.path.join(os.path.dirname(onnx.backend.test.__file__), "data")
    out: list[NodeCase] = []
    for family in families:
        data_dir = os.path.join(root, family)
        if os.path.isdir(data_dir):
            dirs = sorted(d for d in os.listdir(data_dir) if (wanted is None or d in wanted)
                          and os.path.isfile(os.path.join(data_dir, d, "model.onnx")))
            out += [_load_pb_dir(os.path.join(data_dir, d), family) for d in dirs]
        elif family == "node":
            out += _generated_node_cases(wanted)
    return out


def _generated_node_cases(wanted: set[str] | None) -> list[NodeCase]:
    """The node cases, generated by the code that writes their files (wheels without the files)."""
    import warnings
    from onnx.backend.test.case import node
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        cases = node.collect_testcases(None)
    return [NodeCase(c.name, c.model, [(_arrays(i), _arrays(o)) for i, o in c.data_sets], c.rtol, c.atol)
            for c in cases if wanted is None or c.name in wanted]


def _arrays(values: Sequence[Any]) -> list[Any]:
    """The case generators give numpy arrays, numpy scalars (0-d results) or, for dtypes numpy
    lacks (bfloat16, float8, 4-bit), TensorProtos; all of them are tensors.  Lists stay as they
    are: they are the sequence-typed values."""
    from onnx import TensorProto, numpy_helper
    out: list[Any] = []
    for v in values:
        if isinstance(v, TensorProto):
            v = numpy_helper.to_array(v)
        out.append(np.asarray(v) if isinstance(v, np.generic) else v)
    return out


# ----- scope -------------------------------------------------------------------------

def _graphs_of(graph: Any) -> Iterable[Any]:
    yield graph
    for n in graph.node:
        for a in n.attribute:
            for g in ([a.g] if a.type == 5 else list(a.graphs) if a.type == 10 else []):
                yield from _graphs_of(g)


def _type_scope(tp: Any, main: bool) -> str | None:
    """Why a value of this type is out of scope, if it is: a sequence only at the main graph's
    boundary (inside, in a Loop body or an If branch, one of a static length is unrolled)."""
    kind = tp.WhichOneof("value")
    if kind == "sequence_type" and not main:
        elem = tp.sequence_type.elem_type
        return _type_scope(elem, main) if elem.WhichOneof("value") else None
    if kind != "tensor_type":
        return "sequence / optional types" if kind else None
    if tp.tensor_type.elem_type not in ONNX_DTYPES:
        return "dtype outside the IR"
    return None


def scope_of(case: NodeCase) -> str:
    """'in', or why the test is out of scope."""
    m = case.model
    nodes = [n for g in _graphs_of(m.graph) for n in g.node] + [n for f in m.functions for n in f.node]
    for n in nodes:
        dom = "" if n.domain in ("", "ai.onnx") else n.domain
        if dom in OUT_OF_SCOPE_DOMAINS:
            return OUT_OF_SCOPE_DOMAINS[dom]
        if not dom and n.op_type in OUT_OF_SCOPE:
            return OUT_OF_SCOPE[n.op_type]
    for g in _graphs_of(m.graph):
        for vi in list(g.input) + list(g.output):
            why = _type_scope(vi.type, g is m.graph)
            if why:
                return why
        for t in g.initializer:
            if t.data_type not in ONNX_DTYPES:
                return "dtype outside the IR"
    for n in nodes:
        for a in n.attribute:
            if a.name in ("to", "dtype", "output_dtype") and a.type == 2 and a.i and a.i not in ONNX_DTYPES:
                return "dtype outside the IR"
            if a.type == 4 and a.t.data_type not in ONNX_DTYPES:
                return "dtype outside the IR"
            if n.op_type == "BatchNormalization" and a.name == "training_mode" and a.i:
                return OUT_OF_SCOPE["Adam"]
    for inputs, outputs in case.data_sets:
        for arr in list(inputs) + list(outputs):
            if not isinstance(arr, np.ndarray) or arr.dtype.kind in "OUSc":
                return "sequence / optional types" if not isinstance(arr, np.ndarray) else "dtype outside the IR"
        names = [vi.name for vi in _fed_inputs(m)]
        feeds = dict(zip(names, inputs))
        for n in m.graph.node:
            if n.op_type == "Dropout" and len(n.input) > 2 and n.input[2] in feeds and bool(feeds[n.input[2]]):
                return OUT_OF_SCOPE["RandomNormal"]
    return "in"


# ----- running -----------------------------------------------------------------------

_BF16 = DType.bf16.numpy

# f16 / bf16 results are computed in f32 and rounded once, where ONNX's reference rounds
# after every step: allow a few units in the last place
_LOW_PRECISION_RTOL = {"float16": 4 * 2.0 ** -10, "bfloat16": 4 * 2.0 ** -7}


# Ops whose expected outputs come from a single-precision FFT: its error is relative to the
# whole spectrum, not to each bin, so a bin that should be zero holds eps * max|y| there
_SPECTRAL_OPS = {"DFT", "STFT"}


def _spectral(case: NodeCase) -> bool:
    return any(n.op_type in _SPECTRAL_OPS for g in _graphs_of(case.model.graph) for n in g.node)


def _compare(got: Sequence[np.ndarray], want: Sequence[np.ndarray], rtol: float, atol: float,
             spectral: bool = False) -> str | None:
    if len(got) != len(want):
        return f"{len(got)} outputs, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        if w is None or isinstance(w, list):  # an empty optional, or a sequence (onnxruntime alone gives them)
            err = (None if g is None and w is None else f"a {type(g).__name__}, expected {type(w).__name__}"
                   if not isinstance(g, type(w)) else _compare(g, w, rtol, atol, spectral))
            if err:
                return f"output {i}: {err}"
            continue
        g = np.asarray(g)
        if spectral and w.dtype.kind == "f" and w.size:
            atol = max(atol, 4 * float(np.finfo(w.dtype).eps) * float(np.max(np.abs(w))))
        if g.dtype != w.dtype:
            return f"output {i}: dtype {g.dtype}, expected {w.dtype}"
        if g.shape != w.shape:
            return f"output {i}: shape {g.shape}, expected {w.shape}"
        low = _LOW_PRECISION_RTOL.get(g.dtype.name)
        if low is not None:
            g, w = g.astype(np.float64), w.astype(np.float64)
        try:
            np.testing.assert_allclose(g, w, rtol=max(rtol, low or 0.0), atol=atol)
        except AssertionError as e:
            lines = [ln for ln in str(e).splitlines() if "Max" in ln or "Mismatched" in ln]
            return f"output {i} differs: {'; '.join(ln.strip() for ln in lines)}"
    return None


def _import(case: NodeCase, inputs: Sequence[np.ndarray], specialise: bool = False) -> tuple[Any, bool]:
    """Import, binding shape-driving inputs to their test values when the model needs it (or,
    with ``specialise``, those that decide a data-dependent size)."""
    names = [vi.name for vi in _fed_inputs(case.model)]
    static: dict[str, np.ndarray] = {}
    try:
        graph = import_onnx(case.model)
        if not specialise:
            return graph, False
        static = {n: inputs[names.index(n)] for n in deciding_inputs(graph) if n in names}
        if not static:
            return graph, False
    except DynamicValueError:
        pass
    for _ in range(len(names)):
        try:
            return import_onnx(case.model, static_inputs=static), True
        except DynamicValueError as e:
            new = [n for n in e.input_names if n in names and n not in static]
            if not new:
                raise
            for n in new:
                static[n] = inputs[names.index(n)]
    return import_onnx(case.model, static_inputs=static), True


def _feeds(graph: Any, case: NodeCase, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    names = [vi.name for vi in _fed_inputs(case.model)]
    by_name = dict(zip(names, inputs))
    return [by_name[n] for n in graph.meta["signature"].input_names]


def _run_interpreter(graph: Any, case: NodeCase, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    from ...interpreter import run_graph
    with np.errstate(all="ignore"):
        return run_graph(graph, _feeds(graph, case, inputs))


def _run_onnxruntime(graph: Any, case: NodeCase, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort
    from accelir.lowering.onnx import to_onnx
    from accelir.pass_manager import PassManager
    from accelir.passes import pipeline
    PassManager(pipeline(2, "onnxruntime"), verify_each=False, snapshot=False).run(graph)
    model = _bf16_io_as_f32(to_onnx(graph))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    flat = [a.astype(np.float32) if a.dtype == _BF16 else a for a in _feeds(graph, case, inputs)]
    outs = sess.run(None, dict(zip([i.name for i in sess.get_inputs()], flat)))
    return [o.astype(_BF16) if v.dtype is DType.bf16 else o for o, v in zip(outs, graph.outputs)]


def _bf16_io_as_f32(model: Any) -> Any:
    """onnxruntime's python binding cannot pass bfloat16 arrays: bf16 graph inputs and
    outputs get a Cast to / from f32 at the boundary (exact both ways for bf16 values)."""
    import onnx
    from onnx import TensorProto, helper
    g = model.graph
    front, back = [], []
    for vi in g.input:
        if vi.type.tensor_type.elem_type == TensorProto.BFLOAT16:
            outer = vi.name + "__f32"
            front.append(helper.make_node("Cast", [outer], [vi.name], to=TensorProto.BFLOAT16))
            vi.name = outer
            vi.type.tensor_type.elem_type = TensorProto.FLOAT
    for vi in g.output:
        if vi.type.tensor_type.elem_type == TensorProto.BFLOAT16:
            outer = vi.name + "__f32"
            back.append(helper.make_node("Cast", [vi.name], [outer], to=TensorProto.FLOAT))
            vi.name = outer
            vi.type.tensor_type.elem_type = TensorProto.FLOAT
    if front or back:
        nodes = front + list(g.node) + back
        del g.node[:]
        g.node.extend(nodes)
        onnx.checker.check_model(model)
    return model


def _run_onnxruntime_alone(case: NodeCase) -> str:
    """The original model in onnxruntime, as it comes (bf16 at the boundary as for accelir's
    path: the binding cannot pass it): the peer that the target measures accelir against."""
    import onnx
    import onnxruntime as ort
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    try:
        model = _bf16_io_as_f32(model)
        opts = ort.SessionOptions()
        opts.log_severity_level = 4  # its failures are the peer's, recorded in the status
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        for inputs, outputs in case.data_sets:
            flat = [a.astype(np.float32) if isinstance(a, np.ndarray) and a.dtype == _BF16 else a for a in inputs]
            got = sess.run(None, dict(zip(names, flat)))
            got = [o.astype(_BF16) if isinstance(w, np.ndarray) and w.dtype == _BF16 else o
                   for o, w in zip(got, outputs)]
            err = _compare(got, outputs, case.rtol, case.atol, _spectral(case))
            if err:
                return f"mismatch: {err}"
    except Exception as e:
        return f"error: {_short(e)}"
    return "pass"


ALONE = "onnxruntime_alone"

PATHS: dict[str, Callable[[Any, NodeCase, Sequence[np.ndarray]], list[np.ndarray]]] = {
    "interpreter": _run_interpreter,
    "onnxruntime": _run_onnxruntime,
}


def _short(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"


def run_case(case: NodeCase, paths: Sequence[str] = ("interpreter",)) -> CaseResult:
    """The case on each of ``paths``: accelir's (in-scope cases only) and ``ALONE`` (every case)."""
    res = CaseResult(case.name, scope_of(case), family=case.family)
    if ALONE in paths:
        res.status[ALONE] = _run_onnxruntime_alone(case)
    if res.scope != "in":
        return res
    for path in (p for p in paths if p in PATHS):
        status, specialised = _run_path(case, path)
        if status != "pass" and not specialised:
            # a backend that runs the data-dependent form differently may still run the specialised one
            again, specialised_again = _run_path(case, path, specialise=True)
            if again == "pass" and specialised_again:
                status, specialised = again, True
        res.status[path] = status
        if specialised:
            res.specialised_on.add(path)
    res.specialised = bool(res.specialised_on)
    return res


def _run_path(case: NodeCase, path: str, specialise: bool = False) -> tuple[str, bool]:
    """The case's status on ``path`` and whether it was specialised: imported as it comes, or
    with the graph inputs that decide sizes bound to their test values (``specialise``)."""
    specialised = False
    for inputs, outputs in case.data_sets:
        try:
            graph, specialised = _import(case, inputs, specialise)
            got = PATHS[path](graph, case, inputs)
            err = _compare(got, outputs, case.rtol, case.atol, _spectral(case))
            if err:
                return f"mismatch: {err}", specialised
        except AccelirError as e:
            return f"error: {_short(e)}", specialised
        except Exception as e:
            return f"crash: {_short(e)}", specialised
    return "pass", specialised


def run_suite(paths: Sequence[str] = ("interpreter",), names: Iterable[str] | None = None) -> list[CaseResult]:
    return [run_case(c, paths) for c in load_cases(names)]


def _counts(results: Sequence[CaseResult], paths: Sequence[str]) -> dict[str, Any]:
    """Cases, in scope, out of scope by reason and per accelir path the passes (as they come and
    only after specialisation) and the failing in-scope cases; onnxruntime alone's passes when run."""
    inscope = [r for r in results if r.scope == "in"]
    reasons = Counter(r.scope for r in results if r.scope != "in")
    out: dict[str, Any] = {"total": len(results), "in_scope": len(inscope),
                           "out_of_scope": dict(reasons.most_common()),
                           "specialised": sum(r.specialised for r in inscope)}
    for p in (p for p in paths if p != ALONE):
        passing = [r for r in inscope if r.status.get(p) == "pass"]
        out[p] = {"passed": len(passing), "rate": len(passing) / max(len(inscope), 1),
                  "rate_all": len(passing) / max(len(results), 1),
                  "passed_specialised": sum(p in r.specialised_on for r in passing),
                  "as_they_come": sum(p not in r.specialised_on for r in passing),
                  "failing": sorted(r.name for r in inscope if r.status.get(p) != "pass")}
    if ALONE in paths:
        passing = [r for r in results if r.status.get(ALONE) == "pass"]
        out[ALONE] = {"passed": len(passing), "rate_all": len(passing) / max(len(results), 1),
                      "failing": sorted(r.name for r in results if r.status.get(ALONE) != "pass")}
        for p in (p for p in paths if p != ALONE):
            out[p]["of_alone"] = sum(r.status.get(p) == "pass" and p not in r.specialised_on for r in passing)
    return out


def summarize(results: Sequence[CaseResult], paths: Sequence[str]) -> dict[str, Any]:
    """Counts for a report (``_counts``) over all cases, and the same per family."""
    out = _counts(results, paths)
    families = list(FAMILIES) + sorted({r.family for r in results} - set(FAMILIES))
    out["families"] = {f: _counts([r for r in results if r.family == f], paths) for f in families
                       if any(r.family == f for r in results)}
    return out


def _target(s: dict[str, Any], p: str) -> str:
    """accelir's passes on ``p`` as they come against onnxruntime alone's (the issue's ratio)."""
    alone = s[ALONE]["passed"]
    return (f"{p} {s[p]['as_they_come']}/{alone} ({s[p]['as_they_come'] / max(alone, 1):.2%}; "
            f"{s[p]['of_alone']} of onnxruntime's {alone} pass here, {s[p]['of_alone'] / max(alone, 1):.2%})")


def report(summary: dict[str, Any], paths: Sequence[str]) -> str:
    """The summary as text: what ``python -m accelir.frontends.onnx.conformance`` prints."""
    import onnx
    fams = summary.get("families", {})
    sizes = ", ".join(f"{f} {c['total']}" for f, c in fams.items())
    lines = [f"ONNX backend test cases (onnx {onnx.__version__}): {summary['total']}"
             + (f" ({sizes}; the `light` models stay out: they ship without inputs)" if sizes else ""),
             f"out of scope: {summary['total'] - summary['in_scope']}"]
    lines += [f"  {n:5d}  {why}" for why, n in summary["out_of_scope"].items()]
    lines.append(f"in scope: {summary['in_scope']}")
    ours = [p for p in paths if p != ALONE]
    for p in ours:
        s = summary[p]
        lines.append(f"{p}: {s['passed']}/{summary['in_scope']} in scope pass ({s['rate']:.2%}); "
                     f"{s['passed']}/{summary['total']} of all cases ({s['rate_all']:.2%}); "
                     f"{s['as_they_come']} as they come, {s['passed_specialised']} only after specialisation "
                     "(shape-like inputs bound)")
    if ALONE in paths:
        s = summary[ALONE]
        lines.append(f"{ALONE} (the original model, as it comes): {s['passed']}/{summary['total']} of all cases "
                     f"({s['rate_all']:.2%})")
        if ours:
            lines.append("accelir as they come / onnxruntime alone (target >= 95%): "
                         + "; ".join(_target(summary, p) for p in ours))
    if fams:
        heads = ["family", "cases", "in scope"] + [f"{p}: pass = as they come + specialised" for p in ours] \
            + ([f"{ALONE}: pass"] if ALONE in paths else [])
        rows = [[f, str(c["total"]), str(c["in_scope"])]
                + [f"{c[p]['passed']} = {c[p]['as_they_come']} + {c[p]['passed_specialised']}" for p in ours]
                + ([str(c[ALONE]["passed"])] if ALONE in paths else []) for f, c in fams.items()]
        widths = [max(len(r[k]) for r in [heads] + rows) for k in range(len(heads))]
        lines.append("per family:")
        lines += ["  " + "  ".join(x.rjust(w) if k else x.ljust(w) for k, (x, w) in enumerate(zip(r, widths)))
                  for r in [heads] + rows]
    return "\n".join(lines)


def expected_lines(summary: dict[str, Any], paths: Sequence[str]) -> list[str]:
    """The pinned counts and known failures, in the format of tests/data/onnx_conformance_expected.txt:
    totals, then per family its cases and in-scope cases, onnxruntime alone's passes, then the failing
    in-scope cases per accelir path."""
    ours = [p for p in paths if p != ALONE]
    lines = [f"total {summary['total']}", f"in_scope {summary['in_scope']}"]
    for f, c in summary.get("families", {}).items():
        lines += [f"total_{f} {c['total']}", f"in_scope_{f} {c['in_scope']}"]
    lines += [f"specialised_{p} {summary[p]['passed_specialised']}" for p in ours]
    if ALONE in paths:
        lines.append(f"{ALONE} {summary[ALONE]['passed']}")
    for p in ours:
        lines += [f"{p} {name}" for name in summary[p]["failing"]]
    return lines


def main(argv: Sequence[str]) -> int:
    paths = [p for p in argv if p in PATHS] or ["interpreter"]
    if "onnxruntime" in paths or ALONE in argv:
        paths.append(ALONE)
    names = [a for a in argv if a.startswith("test_")] or None
    t0 = time.perf_counter()
    results = run_suite(paths, names)
    summary = summarize(results, paths)
    for r in results:
        for p in (p for p in paths if p != ALONE):
            if r.scope == "in" and r.status.get(p) != "pass":
                print(f"FAIL [{p}] {r.name}: {r.status.get(p)}")
    print(report(summary, paths))
    if "--expected" in argv:
        print("\n".join(expected_lines(summary, paths)))
    print(f"{time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
