"""The ``accelir`` command line (also ``python -m accelir``).

::

    accelir optimize IN -o OUT [--level N | --passes dce,cse,...] [--backend onnxruntime|xla]
                     [--print-after all|changed] [--dump-dir DIR] [--check] [--overwrite]
    accelir show IN [--after-level N [--target onnxruntime|xla] | --passes ...] [--format text|dot|html] [-o OUT]
    accelir bisect IN [--level N [--target onnxruntime|xla] | --passes ...] [-o DIR] [--overwrite]
    accelir bench IN [--backends onnxruntime,xla] [--repeats N] [--generate N]
    accelir passes

IN is an ``.onnx`` file, an ``.air`` file, a ``.keras`` file, a Caffe ``.prototxt`` (with
``--caffemodel``; random weights without it), or ``path/file.py:factory`` naming a
function that takes no arguments and returns ``(model, example_inputs)``.  OUT's
suffix picks its format: ``.onnx``, ``.air``, ``.mlir`` (StableHLO), ``.hlo``,
``.dot`` or ``.html``.

Exit codes: 0 success, 1 error (one line on stderr; the traceback too with
``--debug``), 2 usage (one line too: options that contradict each other, or one
that has no effect without another, are usage errors, not silent choices).  Steps
that take over a second show their progress when stderr is a terminal.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, NoReturn, Sequence

import numpy as np

from . import progress
from .accuracy import PRECISIONS
from .api import BACKENDS, build_runner
from .errors import AccelirError, NumericMismatchError, first_line
from .arrays import to_numpy
from .interpreter import run_graph
from .ir import DType, Graph
from .text import print_graph

__all__ = ["main", "build_parser", "load_input", "random_inputs", "flat_arrays", "CHECK_TOLERANCES", "DEFAULT_BACKEND",
           "DEFAULT_LEVEL"]

# Backends compute in their own order and use fused kernels, so an end-to-end check
# against the interpreter needs a looser bound than the pass-by-pass check.
CHECK_TOLERANCES: dict[DType, tuple[float, float]] = {
    DType.f64: (1e-7, 1e-9),
    DType.f32: (1e-3, 1e-4),
    DType.f16: (2e-2, 2e-3),
    DType.bf16: (1e-1, 2e-2),
}
_FORMAT_BY_SUFFIX = {".html": "html", ".dot": "dot", ".air": "text", ".txt": "text"}
DEFAULT_LEVEL = 2  # the pipeline level when neither --level nor --passes is given
DEFAULT_BACKEND = "onnxruntime"  # what optimize targets unless OUT is .mlir / .hlo or --backend says otherwise
_FACTORY_CONTRACT = ("a factory must return (model, example_inputs) and take no arguments, e.g. "
                     "def make(): return Net().eval(), (torch.randn(1, 8),)")


class UsageError(AccelirError):
    """The command line is malformed (exit code 2)."""


# ----- inputs ------------------------------------------------------------------------

@dataclass
class LoadedInput:
    """What IN names: something ``accelir.capture`` takes, and the example inputs if the factory gave them."""

    model: Any
    example_inputs: tuple | None
    kind: str  # "onnx", "air", "keras", "prototxt" or "factory"
    options: dict = field(default_factory=dict)  # capture options (a Caffe net's caffemodel)


def load_input(spec: str, caffemodel: str | None = None) -> LoadedInput:
    """Resolve IN: an .onnx, .air, .keras or .prototxt path, or ``file.py:factory`` (called to get the model
    and its inputs)."""
    if caffemodel is not None and not spec.endswith(".prototxt"):
        raise UsageError(f"--caffemodel goes with a Caffe .prototxt, not {spec!r}")
    if spec.endswith((".onnx", ".air", ".keras", ".prototxt")):
        if not os.path.isfile(spec):
            raise AccelirError(f"{spec}: no such file")
        options = {"caffemodel": caffemodel} if caffemodel is not None else {}
        return LoadedInput(spec, None, os.path.splitext(spec)[1][1:], options)
    path, sep, factory = spec.rpartition(":")
    if not sep or not path.endswith(".py") or not factory.isidentifier():
        raise UsageError(f"{spec!r} is not an input: give an .onnx, .air, .keras or .prototxt file, "
                         "or path/file.py:factory")
    if not os.path.isfile(path):
        raise AccelirError(f"{path}: no such file")
    name = "_accelir_input_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_")
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise AccelirError(f"{path}: cannot be imported as a python module")
    module = importlib.util.module_from_spec(module_spec)
    # importing the script (torch, transformers) and building the model can take many seconds: say so
    with progress.step(f"loading {os.path.basename(path)}"):
        module_spec.loader.exec_module(module)
    fn = getattr(module, factory, None)
    if not callable(fn):
        raise AccelirError(f"{path} has no function {factory!r}")
    _refuse_non_factory(f"{path}:{factory}", fn)
    try:
        with progress.step(f"{os.path.basename(path)}:{factory}()"):
            result = fn()
    except SystemExit as e:  # the factory's own command-line handling must not end accelir
        raise AccelirError(f"{path}:{factory}() called sys.exit({e.code!r}); {_FACTORY_CONTRACT}") from None
    if not _is_model_and_inputs(result):
        raise AccelirError(f"{path}:{factory}() returned {_describe(result)}; {_FACTORY_CONTRACT}")
    model, example = result
    if example is not None and not isinstance(example, tuple):
        example = tuple(example) if isinstance(example, list) else (example,)
    return LoadedInput(model, example, "factory")


def _refuse_non_factory(spec: str, fn: Callable[..., Any]) -> None:
    """Refuse, before calling it, a function that cannot be a factory.

    A script's ``main`` reads ``sys.argv`` (accelir's own arguments, here) and returns an
    exit code; calling it would run the script, not hand over a model.  A function with
    required parameters has nothing accelir could pass it."""
    if spec.endswith(":main") or getattr(fn, "__name__", None) == "main":
        raise AccelirError(f"{spec} is a script's entry point, not a factory; {_FACTORY_CONTRACT}")
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable without a signature: let the call decide
        return
    required = [p.name for p in params if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if required:
        raise AccelirError(f"{spec} takes arguments ({', '.join(required)}); {_FACTORY_CONTRACT}")


def _is_model_and_inputs(result: Any) -> bool:
    """Whether a factory's result is a pair whose first element ``accelir.capture`` takes."""
    from .api import model_kind

    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        return False
    try:
        model_kind(result[0])
    except AccelirError:
        return False
    return True


def _describe(value: Any) -> str:
    """A short name of what a factory returned: ``int``, ``(int, str)``."""
    if isinstance(value, (tuple, list)) and len(value) <= 4:
        return "(" + ", ".join(type(v).__name__ for v in value) + ("," if len(value) == 1 else "") + ")"
    return type(value).__name__


def _parse_dims(items: Sequence[str]) -> dict[str, int]:
    dims = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip().isdigit():
            raise UsageError(f"--dim {item!r}: expected NAME=VALUE, e.g. --dim batch=4")
        dims[name.strip()] = int(value)
    return dims


def random_inputs(graph: Graph, examples: Sequence[np.ndarray] | None = None, *, seed: int = 0,
                  dims: dict[str, int] | None = None) -> list[np.ndarray]:
    """Random arrays fitting ``graph``'s inputs.

    With example arrays, each random input has its example's shape, floats are
    normal, and integers and bools are drawn between the example's min and max, so
    token ids stay inside the vocabulary and all-true masks stay all true.  Without
    examples, symbolic dims take their value from ``dims`` (default 2), ints are 0
    or 1 and bools are true.
    """
    from . import dims as D

    rng = np.random.default_rng(seed)
    bindings = dict(dims or {})
    out = []
    for i, v in enumerate(graph.inputs):
        dt = v.type.dtype
        if examples is not None:
            ex = np.asarray(examples[i])
            shape = ex.shape
            low, high = (ex.min(), ex.max()) if ex.size and not dt.is_float else (0, 1)
        else:
            for d in v.type.shape:
                for s in D.symbols(d):
                    bindings.setdefault(s, 2)
            shape = tuple(D.evaluate(d, bindings) for d in v.type.shape)
            low, high = (0, 1) if dt.is_int else (1, 1)
        if dt.is_float:
            arr = rng.standard_normal(shape).astype(dt.numpy)
        elif dt == DType.bool:
            arr = rng.integers(int(low), int(high) + 1, size=shape).astype(bool)
        else:
            arr = rng.integers(int(low), int(high) + 1, size=shape).astype(dt.numpy)
        out.append(arr)
    return out


def flat_arrays(obj: Any) -> list[np.ndarray]:
    """The arrays in a model output (tensor, tuple, list, dict, ModelOutput, pytree), in order, as numpy."""
    if obj is None:
        return []
    if isinstance(obj, dict):
        return [a for v in obj.values() for a in flat_arrays(v)]
    if isinstance(obj, (list, tuple)):
        return [a for v in obj for a in flat_arrays(v)]
    if hasattr(obj, "shape") and hasattr(obj, "dtype"):
        return [np.asarray(to_numpy(obj))]
    if hasattr(obj, "to_tuple"):
        return flat_arrays(obj.to_tuple())
    raise AccelirError(f"cannot read arrays out of a {type(obj).__name__} output")


def _flat_examples(graph: Graph, example_inputs: tuple | None) -> list[np.ndarray] | None:
    if not example_inputs:
        return None
    signature = graph.meta.get("signature")
    flat = signature.flatten(*example_inputs) if signature is not None else list(example_inputs)
    return [np.asarray(to_numpy(x)) for x in flat]


def _capture(inp: LoadedInput) -> Graph:
    import accelir

    with progress.step("capture"):
        return accelir.capture(inp.model, inp.example_inputs, **inp.options)


def _pass_list(names: str | None, level: int | None, target: str | None) -> list[Callable[[Graph], bool]]:
    """The passes named in ``names`` (comma-separated), else the pipeline of ``level`` (None: the default)."""
    from .passes import get_pass, pipeline

    if names:
        out = []
        for name in (n.strip() for n in names.split(",")):
            if not name:
                continue
            try:
                out.append(get_pass(name))
            except (KeyError, ValueError) as e:
                raise UsageError(f"--passes: {e.args[0] if e.args else name}") from None
        return out
    return pipeline(DEFAULT_LEVEL if level is None else level, target=target)


def _default_backend(output: str | None) -> str:
    """The backend optimize targets without --backend: XLA for the files only XLA writes."""
    return "xla" if output is not None and output.endswith((".mlir", ".hlo")) else DEFAULT_BACKEND


def _check_output(path: str, overwrite: bool) -> None:
    """Refuse OUT before any work (capture can take minutes): an existing file without
    --overwrite, a directory, or a path whose directory does not exist."""
    from .fileio import check_output

    check_output(path, overwrite, what="--overwrite")
    directory = os.path.dirname(path)
    if directory and not os.path.isdir(directory):
        what = "is not a directory" if os.path.exists(directory) else "does not exist"
        raise AccelirError(f"cannot write {path}: {directory} {what}; create the directory first or choose "
                           "another output path")


def _write(path: str, text: str, overwrite: bool) -> None:
    from .fileio import write_text_atomic
    write_text_atomic(path, text, overwrite=overwrite, what="--overwrite")


# ----- optimize ----------------------------------------------------------------------

class _LazyRunner:
    """Builds the backend's session on first use, as its own progress step."""

    def __init__(self, graph: Graph, backend: str, device: str):
        self.graph = graph
        self.backend = backend
        self.device = device
        self._run: Callable[..., list] | None = None

    def build(self) -> Callable[..., list]:
        if self._run is None:
            with progress.step(f"{self.backend} session build"):
                self._run = build_runner(self.graph, self.backend, self.device)
        return self._run

    def __call__(self, *flat: Any) -> list:
        return list(self.build()(*flat))


def _onnx_session(path: str) -> Any:
    """onnxruntime on CPU on a file as it is: the independent reference for ONNX inputs."""
    import onnxruntime as ort
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def _run_onnx_file(path: str, source: Graph, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """The file's outputs from onnxruntime, fed by input name (inputs follow ``source``'s order)."""
    signature = source.meta["signature"]
    session = _onnx_session(path)
    return [np.asarray(o) for o in session.run(list(signature.output_names),
                                               dict(zip(signature.input_names, inputs)))]


def _mismatch(expected: list[np.ndarray], got: list[np.ndarray], tolerances: dict) -> tuple | None:
    from .pass_manager import compare_outputs
    return compare_outputs(expected, [np.asarray(to_numpy(x)) for x in got], tolerances)


def _check(inp: LoadedInput, source: Graph, runner: _LazyRunner, inputs: list[np.ndarray], tolerances: dict) -> str:
    """Run the optimised graph on its backend against a reference on random inputs.

    For an ONNX file the reference is onnxruntime on the file itself, so a wrong import is
    caught too, and on a mismatch the interpreter on the imported graph says whether the
    import or the passes went wrong; otherwise it is the interpreter on the captured graph."""
    onnx_file = inp.kind == "onnx"
    reference = "onnxruntime on the input file" if onnx_file else "the original graph"
    with progress.step("reference run"):
        expected = _run_onnx_file(inp.model, source, inputs) if onnx_file else run_graph(source, inputs)
    with progress.step(f"{runner.backend} run"):
        got = [np.asarray(to_numpy(x)) for x in runner(*inputs)]
    bad = _mismatch(expected, got, tolerances)
    if bad is not None:
        index, err, rel, what = bad
        if onnx_file and _mismatch(expected, run_graph(source, inputs), tolerances) is not None:
            hint = "accelir's import of the file already differs (see 'accelir show IN'), before any pass"
        elif _mismatch(expected, run_graph(runner.graph, inputs), tolerances) is None:
            hint = ("no pass is to blame: the interpreter on the optimised graph matches; "
                    + _lowering_verdict(runner.graph, inputs, tolerances, runner.device))
        else:
            hint = "rerun with --print-after changed or use 'accelir bisect' to find the pass"
        raise NumericMismatchError(f"--check: output {index} of the optimised graph on {runner.backend} differs from "
                                   f"{reference} on random inputs: {what}; {hint}", output_index=index,
                                   max_abs_error=err, rel_error=rel)
    worst = max((float(np.max(np.abs(e.astype(np.float64) - g.astype(np.float64))))
                 for e, g in zip(expected, got) if e.size and e.dtype.kind == "f"), default=0.0)
    return f"check: {len(expected)} output(s) on {runner.backend} match {reference} (max abs error {worst:.3g})"


def _check_budget(source: Graph, runner: _LazyRunner, inputs: list[np.ndarray], budget: Any) -> str:
    """--check of a reduced-precision model: its accuracy budget against the original graph on random inputs."""
    from .accuracy import measure
    with progress.step("reference run"):
        expected = run_graph(source, inputs)
    with progress.step(f"{runner.backend} run"):
        errors = measure(expected, runner(*inputs))
    broken = budget.violations(errors)
    if broken:
        raise NumericMismatchError(f"--check: the reduced-precision model on {runner.backend} breaks its accuracy "
                                   f"budget {budget} on random inputs: {'; '.join(broken)}")
    return f"check: on {runner.backend} within the accuracy budget {budget} of the original graph ({errors})"
def _lowering_verdict(graph: Graph, inputs: list[np.ndarray], tolerances: dict, device: str = "cpu") -> str:
    """Which backends' lowerings of ``graph`` change its outputs, the interpreter on it being the reference."""
    expected = run_graph(graph, inputs)
    bad, good = [], []
    for backend in BACKENDS:
        try:
            got = build_runner(graph, backend, device)(*inputs)
        except Exception as e:  # noqa: BLE001 - a backend that cannot run is a finding, not a crash
            bad.append(f"the lowering to {backend} cannot run it ({first_line(e)})")
            continue
        miss = _mismatch(expected, list(got), tolerances)
        (good if miss is None else bad).append(
            f"the lowering to {backend}" + ("" if miss is None else f" (output {miss[0]}: {miss[3]})"))
    if not bad:
        return ("every backend's lowering matches the interpreter on these inputs; try other inputs (--seed) or "
                "tolerances (--rtol, --atol)")
    return "; ".join(bad) + " differs from the interpreter" + (f" ({', '.join(good)} matches it)" if good else "")


def _outside_passes(inp: LoadedInput, source: Graph, optimised: Graph, inputs: list[np.ndarray],
                    tolerances: dict) -> str:
    """When every pass keeps the outputs: whether the import (an .onnx input, against onnxruntime on the
    file) or a backend's lowering (against the interpreter on the optimised graph) changes them."""
    verdict = []
    if inp.kind == "onnx":
        miss = _mismatch(_run_onnx_file(inp.model, source, inputs), run_graph(source, inputs), tolerances)
        verdict.append("the import differs from onnxruntime on the file" + (f" (output {miss[0]}: {miss[3]})"
                       if miss else "") if miss else "the import matches onnxruntime on the file")
    verdict.append(_lowering_verdict(optimised, inputs, tolerances))
    return "no pass is to blame, so look at the import or the lowering: " + "; ".join(verdict)


def _tolerances(args: argparse.Namespace) -> dict[DType, tuple[float, float]]:
    tol = dict(CHECK_TOLERANCES)
    if args.rtol is not None or args.atol is not None:
        for dt, (r, a) in tol.items():
            tol[dt] = (args.rtol if args.rtol is not None else r, args.atol if args.atol is not None else a)
    return tol


def _cmd_optimize(args: argparse.Namespace) -> int:
    from .api import EXPORT_SUFFIXES, CompiledModel, OptimizeReport
    from .pass_manager import PassManager

    suffix = os.path.splitext(args.output)[1].lower()
    if suffix not in EXPORT_SUFFIXES:
        raise UsageError(f"-o {args.output}: unknown format {suffix or 'without a suffix'!r}; the suffix picks it: "
                         f"{', '.join(EXPORT_SUFFIXES)}")
    _check_output(args.output, args.overwrite)
    from .accuracy import Budget
    from .precision import check_precision
    check_precision(args.precision)
    Budget.parse(args.accuracy, args.precision)  # a bad precision or budget is refused before the capture
    backend = args.backend or _default_backend(args.output)
    inp = load_input(args.input, args.caffemodel)
    report = OptimizeReport(chosen=backend)
    t0 = time.perf_counter()
    graph = _capture(inp)
    report.stages["capture"] = time.perf_counter() - t0
    source = graph.copy()
    examples = _flat_examples(graph, inp.example_inputs)
    dims = _parse_dims(args.dim)
    pm = PassManager(_pass_list(args.passes, args.level, backend), print_after=args.print_after,
                     dump_dir=args.dump_dir, overwrite=args.overwrite)
    t0 = time.perf_counter()
    with progress.step("passes"):
        pm.run(graph)
    report.stages["passes"] = time.perf_counter() - t0
    report.passes = pm.report
    if args.precision != "fp32":
        from .float_precision import check_precision_backend
        from .precision import apply_precision
        check_precision_backend(graph, args.precision, backend, args.device)
        samples = [examples if examples is not None else random_inputs(source, seed=args.seed, dims=dims)]
        t0 = time.perf_counter()
        with progress.step(f"precision {args.precision}"):
            report.precision = apply_precision(graph, args.precision, args.accuracy, samples,
                                               lambda g: build_runner(g, backend, args.device), backend, args.device)
        report.stages["precision"] = time.perf_counter() - t0
        print(report.precision)
    report.nodes_before, report.nodes_after = source.num_nodes(), graph.num_nodes()
    runner = _LazyRunner(graph, backend, args.device)
    if args.check:
        check_inputs = random_inputs(source, examples, seed=args.seed, dims=dims)
        if report.precision is not None:
            print(_check_budget(source, runner, check_inputs, report.precision.budget))
        else:
            print(_check(inp, source, runner, check_inputs, _tolerances(args)))
    export_inputs = examples if examples is not None else random_inputs(graph, dims=dims)
    model = CompiledModel(graph, source, runner, backend=backend, device=args.device, report=report,
                          example_inputs=export_inputs)
    t0 = time.perf_counter()
    with progress.step(f"writing {os.path.basename(args.output)}"):
        model.export(args.output, overwrite=args.overwrite)
    report.stages["export"] = time.perf_counter() - t0
    if args.report:
        print(pm.report, end="")
    print(f"wrote {args.output}: {report.nodes_before} -> {report.nodes_after} nodes "
          f"({', '.join(f'{k} {v:.2f} s' for k, v in report.stages.items())})")
    return 0


# ----- show --------------------------------------------------------------------------

def _show_pipeline(args: argparse.Namespace) -> tuple[list[Callable[[Graph], bool]], str] | None:
    """The passes show runs and what the picture is of ("after level 2 for target onnxruntime"), or None.

    A level's pipeline targets what optimize targets unless --target says otherwise, so
    that show draws the graph optimize writes."""
    if args.passes:
        return _pass_list(args.passes, None, None), f"after passes {args.passes}"
    if args.after_level is None:
        return None
    target = args.target or DEFAULT_BACKEND
    return _pass_list(None, args.after_level, target), f"after level {args.after_level} for target {target}"


def _cmd_show(args: argparse.Namespace) -> int:
    from .pass_manager import PassManager

    fmt = args.format or _FORMAT_BY_SUFFIX.get(os.path.splitext(args.output or "")[1].lower(), "text")
    if args.output:
        _check_output(args.output, args.overwrite)
    steps = _show_pipeline(args)
    graph = _capture(load_input(args.input, args.caffemodel))
    title = os.path.basename(args.input)
    report = None
    dumps: list[tuple[str, str]] | None = None
    frames = None
    if steps is not None:
        from .viewer import Frames, dump_label
        passes, what = steps
        title = f"{title} {what}"
        if fmt == "html":  # only the page draws the passes' frames and diffs
            frames = Frames(graph, show_constants=args.constants)
            dumps = [(dump_label(0, "input"), print_graph(graph, stable=frames.stable))]

        def keep(record: Any, g: Graph) -> None:
            """The text and structure after each changed pass, named as a --dump-dir would name them."""
            if record.changed:
                frames(record, g)
                dumps.append((dump_label(len(dumps), f"after-{record.name}"), print_graph(g, stable=frames.stable)))

        # the page lists, next to each node, why a fusion pass left it alone
        pm = PassManager(passes, instrument=keep if fmt == "html" else None, explain=fmt == "html")
        with progress.step("passes"):
            pm.run(graph)
        report = pm.report
    if fmt == "text":
        text = print_graph(graph, meta=args.meta)
        if steps is not None:  # a comment line: the text still parses back
            text = f"# {title}\n{text}"
    elif fmt == "dot":
        from .visualize import to_dot
        text = to_dot(graph, show_constants=args.constants)
    else:
        from .visualize import to_html
        with progress.step("drawing"):
            text = to_html(graph, report, dumps, title=title, show_constants=args.constants, frames=frames)
    if args.output:
        _write(args.output, text, args.overwrite)
        print(f"wrote {args.output} ({fmt}, {graph.num_nodes()} nodes)")
    else:
        sys.stdout.write(text)
        if report is not None and fmt == "text":
            sys.stderr.write(str(report))
    return 0


# ----- explain -----------------------------------------------------------------------

def _cmd_explain(args: argparse.Namespace) -> int:
    """Run the pipeline optimize runs with near misses recorded; print each candidate left unfused."""
    from .explain import explain_text
    from .pass_manager import PassManager
    from .passes import pass_name

    level = DEFAULT_LEVEL if args.level is None else args.level
    passes = _pass_list(None, level, args.target or DEFAULT_BACKEND)
    names = [pass_name(p) for p in passes]
    if args.pass_name is not None and args.pass_name not in names:
        raise UsageError(f"--pass {args.pass_name}: the level {level} pipeline has no such pass; it runs "
                         f"{', '.join(names)}")
    graph = _capture(load_input(args.input))
    pm = PassManager(passes, explain=True)
    with progress.step("passes"):
        pm.run(graph)
    sys.stdout.write(explain_text(pm.report.unfused, args.pass_name))
    return 0


# ----- bisect ------------------------------------------------------------------------

def _cmd_bisect(args: argparse.Namespace) -> int:
    from .bisect import bisect

    inp = load_input(args.input, args.caffemodel)
    graph = _capture(inp)
    inputs = random_inputs(graph, _flat_examples(graph, inp.example_inputs), seed=args.seed,
                           dims=_parse_dims(args.dim))
    with progress.step("bisect"):
        passes = _pass_list(args.passes, args.level, None if args.passes else args.target or DEFAULT_BACKEND)
        result = bisect(graph, passes, inputs=inputs, out_dir=args.output, overwrite=args.overwrite)
    print(result)
    if not result.found:
        from .pass_manager import PassManager
        optimised = graph.copy()
        with progress.step("lowering check"):
            PassManager(passes).run(optimised)
            print(_outside_passes(inp, graph, optimised, inputs, dict(CHECK_TOLERANCES)))
    return 0


# ----- bench -------------------------------------------------------------------------

def _reference_system(inp: LoadedInput, graph: Graph, flat: list[np.ndarray]) -> tuple[str, Callable[[], Any]]:
    """The model as its own framework runs it: eager torch, the jax callable, onnxruntime, or the interpreter."""
    if inp.kind == "onnx":
        session = _onnx_session(inp.model)
        feed = {i.name: a for i, a in zip(session.get_inputs(), flat)}
        return "onnxruntime (input file)", lambda: session.run(None, feed)
    if inp.kind in ("air", "keras", "prototxt"):
        return "interpreter", lambda: run_graph(graph, flat)
    frontend = graph.meta.get("frontend")
    if frontend == "torch":
        import torch

        def eager() -> Any:
            with torch.no_grad():
                return inp.model(*inp.example_inputs)
        return "torch eager", eager
    return f"{frontend or 'python'} eager", lambda: inp.model(*inp.example_inputs)


def _cmd_bench(args: argparse.Namespace) -> int:
    import accelir
    from .timing import latency_table, time_interleaved

    if args.repeats < 1:  # no timed run: no median to report
        raise UsageError(f"--repeats: the number of timed rounds must be at least 1, got {args.repeats}")
    if args.warmup < 0:
        raise UsageError(f"--warmup: the number of untimed runs must be at least 0, got {args.warmup}")
    inp = load_input(args.input, args.caffemodel)
    if args.generate is not None:
        return _bench_generate(inp, args)
    graph = _capture(inp)
    examples = _flat_examples(graph, inp.example_inputs)
    flat = examples if examples is not None else random_inputs(graph, seed=args.seed, dims=_parse_dims(args.dim))
    call_args = tuple(inp.example_inputs) if inp.kind == "factory" else tuple(flat)
    name, eager = _reference_system(inp, graph, flat)
    systems: dict[str, Callable[[], Any]] = {name: eager}
    build: dict[str, float] = {name: 0.0}
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in backends:
        if b not in BACKENDS:
            raise UsageError(f"--backends: unknown backend {b!r}; choose from {', '.join(BACKENDS)}")
        t0 = time.perf_counter()
        with progress.step(f"optimize for {b}"):
            model = accelir.optimize(inp.model, inp.example_inputs, backend=b, level=args.level)
        build[f"accelir -> {b}"] = time.perf_counter() - t0
        systems[f"accelir -> {b}"] = (lambda m: lambda: m(*call_args))(model)
    reference = flat_arrays(eager())
    errors = {}
    for label, fn in systems.items():
        got = flat_arrays(fn())
        errors[label] = max((float(np.max(np.abs(r.astype(np.float64) - g.astype(np.float64))))
                             for r, g in zip(reference, got) if r.size), default=0.0)
    with progress.step("timing"):
        timings = time_interleaved(systems, warmup=args.warmup, repeats=args.repeats)
    print(latency_table(timings, name, {"build s": {k: f"{v:.2f}" for k, v in build.items()},
                                        "max abs err": {k: f"{v:.3g}" for k, v in errors.items()}}))
    return 0


def _bench_generate(inp: LoadedInput, args: argparse.Namespace) -> int:
    """``bench --generate N``: time to first token and per-token latency of N greedy tokens after the
    example prompt, for transformers' eager generate and accelir on each backend, in interleaved rounds."""
    import statistics

    import accelir
    from .generation import GenerationTiming, is_causal_lm
    from .generation_flax import is_flax_decoder

    n = args.generate
    if n < 1:
        raise UsageError(f"--generate: the number of new tokens must be at least 1, got {n}")
    flax = inp.kind == "factory" and is_flax_decoder(inp.model)
    if inp.kind != "factory" or not (flax or is_causal_lm(inp.model)):
        raise AccelirError(f"{args.input}: --generate needs a factory returning a transformers causal LM with "
                           "use_cache=True, or a flax decoder with its cache, and its prompt ids")
    ids = inp.example_inputs[0]
    options = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False)  # every system makes all n tokens
    eager = "jax loop" if flax else "transformers generate"  # a flax decoder's own loop: its step jitted, per token
    systems: dict[str, Callable[[Any], Any]] = {
        eager: _jax_loop(inp.model, ids, n) if flax else
        lambda streamer: inp.model.generate(ids, streamer=streamer, **options)}
    build = {eager: 0.0}
    for b in [b.strip() for b in args.backends.split(",") if b.strip()]:
        if b not in BACKENDS:
            raise UsageError(f"--backends: unknown backend {b!r}; choose from {', '.join(BACKENDS)}")
        t0 = time.perf_counter()
        with progress.step(f"optimize for {b}"):
            model = accelir.optimize(inp.model, (ids,), backend=b, level=args.level)
        build[f"accelir -> {b}"] = time.perf_counter() - t0
        systems[f"accelir -> {b}"] = (lambda m: lambda streamer: m.generate(ids, streamer=streamer, **options))(model)
    runs: dict[str, list[GenerationTiming]] = {k: [] for k in systems}
    with progress.step("timing"):
        for r in range(args.warmup + args.repeats):
            for label, fn in systems.items():
                timing = GenerationTiming.measure(fn)
                if r >= args.warmup:
                    runs[label].append(timing)
    reference = runs[eager][0].tokens.tolist() if args.repeats else None
    width = max(len(k) for k in systems)
    print(f"{n} new tokens after a prompt of {ids.shape[1]}, batch {ids.shape[0]}, greedy; medians of "
          f"{args.repeats} runs")
    print(f"{'system':{width}s}  {'first token ms':>14s}  {'per token ms':>12s}  {'build s':>8s}  same tokens")
    for label, timings in runs.items():
        first = statistics.median(t.first_token for t in timings) * 1e3 if timings else float("nan")
        step = statistics.median(t.per_token for t in timings) * 1e3 if timings else float("nan")
        same = "yes" if timings and timings[0].tokens.tolist() == reference else "no"
        print(f"{label:{width}s}  {first:14.3f}  {step:12.3f}  {build[label]:8.2f}  {same}")
    return 0


def _jax_loop(model: Any, ids: Any, n: int) -> Callable[[Any], Any]:
    """``generate(streamer)`` for a flax decoder run as flax's decoding loops run it (the baseline of --generate)."""
    from .frontends.jax.generation import jax_greedy
    greedy = jax_greedy(model)
    return lambda streamer: greedy(ids, n, streamer)


# ----- passes ------------------------------------------------------------------------

def _pass_doc(name: str, fn: Any) -> str:
    """The first docstring line of pass ``name``.

    A built-in pass lives in the module of its name, whose docstring opens with what it
    rewrites, while the pass object itself is often a generic ``RulePass`` or pass class;
    any other pass speaks through its own function's or class's docstring."""
    from . import passes as package
    from .passes import RulePass

    home = sys.modules.get(f"{package.__name__}.{name}")
    doc = home.__doc__ if home is not None and getattr(home, name, None) is fn else None
    if not doc and not isinstance(fn, RulePass):
        doc = inspect.getdoc(fn)
    lines = (doc or "").strip().splitlines()
    return lines[0] if lines else "(no docstring)"


def _cmd_passes(args: argparse.Namespace) -> int:
    """Print the registered passes and, for each target and level, the pipeline's passes in order."""
    from .passes import PASSES, TARGETS, pass_name, pipeline

    width = max(len(name) for name in PASSES)
    print("registered passes (run any list of them with --passes P1,P2,...):")
    for name in sorted(PASSES):
        print(f"  {name:{width}s}  {_pass_doc(name, PASSES[name].fn)}")
    print("\npipelines (optimize and bisect --level N --backend TARGET, show --after-level N --target TARGET; "
          "accelir.passes.pipeline(N) uses no target):")
    for target in (None, *TARGETS):
        if target is None:
            print("  no target:")
        else:
            print(f"  target {target} (vetoes: {', '.join(sorted(TARGETS[target].vetoes)) or 'none'}):")
        for level in _LEVELS:
            names = [pass_name(p) for p in pipeline(level, target)]
            print(f"    level {level}: {', '.join(names) or '(no passes)'}")
    return 0


# ----- argument parsing --------------------------------------------------------------

_LEVELS = (0, 1, 2, 3)

_TARGET_WITH_PASSES = "--target picks a level's pipeline for a backend, --passes runs the named passes as they are"
# Options that make no sense together, per command: (option, option, why).  Giving both is a
# usage error: silently preferring one would run something else than the user asked for.
_CONTRADICTIONS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "optimize": (("--level", "--passes", "--passes runs the named passes instead of a level's pipeline"),),
    "bisect": (("--level", "--passes", "--passes runs the named passes instead of a level's pipeline"),
               ("--target", "--passes", _TARGET_WITH_PASSES)),
    "show": (("--after-level", "--passes", "--passes runs the named passes instead of a level's pipeline"),
             ("--target", "--passes", _TARGET_WITH_PASSES)),
}
# Options that do nothing without another one, per command: (option, the option it needs).
_NEEDS: dict[str, tuple[tuple[str, str], ...]] = {
    "optimize": (("--rtol", "--check"), ("--atol", "--check")),
    "show": (("--target", "--after-level"),),
}


def _given(args: argparse.Namespace, option: str) -> bool:
    """Whether ``option`` was on the command line (such options default to None or False)."""
    value = getattr(args, option.lstrip("-").replace("-", "_"))
    return value is not None and value is not False


def _refuse_contradictions(args: argparse.Namespace) -> None:
    for a, b, why in _CONTRADICTIONS.get(args.command, ()):
        if _given(args, a) and _given(args, b):
            raise UsageError(f"{a} and {b} contradict each other: {why}; give one of them")
    for a, b in _NEEDS.get(args.command, ()):
        if _given(args, a) and not _given(args, b):
            raise UsageError(f"{a} has no effect without {b}; add {b} or leave out {a}")


class _HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help where X is a value.

    An option that is off by default (None, False, an empty list) says in its own help what
    happens without it, so "(default: None)" would be noise."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if _has_default_value(action) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def _has_default_value(action: argparse.Action) -> bool:
    default = action.default
    return default is not None and default is not False and default is not argparse.SUPPRESS and default != []


class _Parser(argparse.ArgumentParser):
    """argparse with accelir's help layout and its one-line errors (no usage block above them)."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_target(p: argparse.ArgumentParser, level_option: str) -> None:
    """--target (alias --backend): the backend a level's pipeline is for, by default optimize's, so
    that show and bisect see the passes optimize runs (a target vetoes some, adds its own at level 3)."""
    p.add_argument("--target", "--backend", dest="target", choices=BACKENDS,
                   help=f"backend the {level_option} pipeline is for, as optimize's --backend (default: "
                   f"{DEFAULT_BACKEND}, optimize's default)")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; each option's help shows its default."""
    debug = _Parser(add_help=False)
    debug.add_argument("--debug", action="store_true", help="print the traceback of an error")
    rand = _Parser(add_help=False)
    rand.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    rand.add_argument("--dim", action="append", default=[], metavar="NAME=VALUE",
                      help="value of a symbolic dim in random inputs (default 2); repeatable")
    passes = _Parser(add_help=False)
    passes.add_argument("--level", type=int, choices=_LEVELS,
                        help=f"pipeline level; see 'accelir passes' (default: {DEFAULT_LEVEL})")
    passes.add_argument("--passes", metavar="P1,P2,...", help="run these registered passes instead of a level")
    tol = _Parser(add_help=False)
    tol.add_argument("--rtol", type=float, help="relative tolerance of --check (default: by dtype, 1e-3 for f32)")
    tol.add_argument("--atol", type=float, help="absolute tolerance of --check (default: by dtype, 1e-4 for f32)")
    inp_help = ("an .onnx file, an .air file, a .keras file, a Caffe .prototxt, or path/file.py:factory returning "
                "(model, example_inputs)")
    caffe = _Parser(add_help=False)
    caffe.add_argument("--caffemodel", metavar="FILE", help="the weights of a Caffe .prototxt IN (random without)")

    parser = _Parser(prog="accelir", description="Optimise, inspect, bisect and benchmark models with accelir.")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"accelir {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("optimize", parents=[debug, caffe, rand, passes, tol], help="optimise IN and write OUT",
                       description="Capture IN, run the pass pipeline and write OUT in the format of its suffix "
                       "(.onnx, .air, .mlir, .hlo, .dot, .html).")
    p.add_argument("input", metavar="IN", help=inp_help)
    p.add_argument("-o", "--output", metavar="OUT", required=True,
                   help="the file to write; its suffix picks the format and its directory must exist")
    p.add_argument("--backend", choices=BACKENDS, help="target of the pipeline and of --check "
                   f"(default: xla for .mlir/.hlo, else {DEFAULT_BACKEND})")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device of the --check run")
    p.add_argument("--print-after", choices=("all", "changed"), help="print the IR (or its diff) after each pass")
    p.add_argument("--dump-dir", metavar="DIR", help="write numbered IR dumps after each pass that changed it "
                   "(DIR must be empty, or hold only earlier dumps and --overwrite be given)")
    p.add_argument("--check", action="store_true",
                   help="run the optimised model on the backend and compare on random inputs with onnxruntime on "
                   "IN (an .onnx file), else with the original graph")
    p.add_argument("--report", action="store_true", help="print the per-pass table")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists, and earlier dumps in --dump-dir")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="quantise (int8: dynamic int8, int4: blockwise int4 weights) within --accuracy, keeping in "
                   "float32 the layers that break it (default: fp32)")
    p.add_argument("--accuracy", metavar="MEASURE=V,...", help="accuracy budget of --precision against float32 on "
                   "the example inputs, e.g. cosine=0.999 or max_rel=1e-2 (default: the precision's own)")
    p.set_defaults(func=_cmd_optimize)

    p = sub.add_parser("show", parents=[debug, caffe], help="print or draw the IR",
                       description="Print IN's IR, or render it as Graphviz dot or a self-contained HTML page; with "
                       "--after-level, the graph that optimize would write.")
    p.add_argument("input", metavar="IN", help=inp_help)
    p.add_argument("--after-level", type=int, choices=_LEVELS, help="show the graph after this pipeline level")
    p.add_argument("--passes", metavar="P1,P2,...", help="show the graph after these registered passes")
    _add_target(p, "--after-level")
    p.add_argument("--format", choices=("text", "dot", "html"), help="default: from -o's suffix, else text")
    p.add_argument("-o", "--output", metavar="OUT", help="write here instead of stdout")
    p.add_argument("--meta", action="store_true", help="text: append each node's provenance")
    p.add_argument("--constants", action="store_true", help="dot/html: draw constant nodes too")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=_cmd_show)

    p = sub.add_parser("explain", parents=[debug, caffe], help="why a fusion did not happen",
                       description="Run the pipeline optimize runs and list, per fusion pass, each candidate it left "
                       "unfused: the rule, its reason, and the node's module path and source line.")
    p.add_argument("input", metavar="IN", help=inp_help)
    p.add_argument("--level", type=int, choices=_LEVELS, help=f"pipeline level (default: {DEFAULT_LEVEL})")
    _add_target(p, "--level")
    p.add_argument("--pass", dest="pass_name", metavar="NAME", help="list this pass's candidates only")
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser("bisect", parents=[debug, caffe, rand, passes], help="find the pass and rewrite that break IN",
                       description="Run the pipeline with the interpreter checking outputs on random inputs; find the "
                       "first pass, then the first rewrite inside it, that changes them; write a reproducer.")
    p.add_argument("input", metavar="IN", help=inp_help)
    _add_target(p, "--level")
    p.add_argument("-o", "--output", metavar="DIR", default="accelir-bisect", help="reproducer directory")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier reproducer in DIR")
    p.set_defaults(func=_cmd_bisect)

    p = sub.add_parser("bench", parents=[debug, caffe, rand], help="time IN eagerly and on each backend",
                       description="Latency of the model as its framework runs it and through accelir on each backend, "
                       "in interleaved rounds after warm-up.")
    p.add_argument("input", metavar="IN", help=inp_help)
    p.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated backends to time")
    p.add_argument("--level", type=int, choices=_LEVELS, default=DEFAULT_LEVEL, help="pipeline level")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs of each system first")
    p.add_argument("--repeats", type=int, default=20, help="timed rounds (each system once per round)")
    p.add_argument("--generate", type=int, metavar="N", default=None,
                   help="time generating N tokens (IN: a factory of a causal LM or a flax decoder and its prompt): "
                   "time to first token and per-token latency")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("passes", parents=[debug], help="list the registered passes and the pipelines",
                       description="Each registered pass with the first line of its docstring, then the passes of "
                       "each pipeline level for each target, in the order they run, and the target's vetoes.")
    p.set_defaults(func=_cmd_passes)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 error, 2 usage)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on bad usage and 0 after --help / --version
        return int(e.code) if isinstance(e.code, int) else 2
    try:
        _refuse_contradictions(args)
        with progress.activate(progress.Progress()):
            return args.func(args)
    except UsageError as e:
        print(f"accelir {args.command}: error: {e} (see accelir {args.command} --help)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("accelir: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            traceback.print_exc()
        first = (str(e).strip().splitlines() or [""])[0]
        kind = "" if isinstance(e, AccelirError) else f"{type(e).__name__}: "
        hint = "" if args.debug else " (--debug shows the traceback)"
        print(f"accelir {args.command}: error: {kind}{first}{hint}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
