"""The public entry points: ``capture`` a model into a Graph, ``optimize`` it into a
runnable ``CompiledModel``.

``optimize`` = capture (torch.export / jax.make_jaxpr / ONNX import) -> passes
(``accelir.passes.pipeline(level)`` or the given list) -> lowering (ONNX for
onnxruntime, or a jax function for XLA) -> a runner.  The user's model is never
mutated, and no global framework state changes leak out.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import statistics
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .call_checks import CallForm, check_ids, describe_inputs, expect_array, id_bounds
from .errors import AccelirError, InputError, LoweringError, first_line
from .arrays import to_numpy
from .interpreter import InterpreterError, bind_shapes
from .ir import DType, Graph

__all__ = ["capture", "optimize", "CompiledModel", "OptimizeReport", "BACKENDS", "EXPORT_SUFFIXES", "build_runner", "model_kind",
           "register_model_path", "pass_list"]

BACKENDS = ("onnxruntime", "xla")
EXPORT_SUFFIXES = (".onnx", ".mlir", ".hlo", ".air", ".dot", ".html")


def _holds_torch_tensor(example: Any) -> bool:
    """Whether example inputs (nested tuples, lists, dicts) hold a torch tensor; read without importing torch."""
    if isinstance(example, (tuple, list)):
        return any(_holds_torch_tensor(x) for x in example)
    if isinstance(example, Mapping):
        return any(_holds_torch_tensor(x) for x in example.values())
    return any(c.__module__ == "torch" and c.__name__ == "Tensor" for c in type(example).__mro__)


def model_kind(obj: Any, example: Any = ()) -> str:
    """'torch', 'onnx', 'graph', 'path', 'keras' or 'jax' (any other callable, unless its ``example`` inputs
    hold torch tensors: a plain function on torch tensors is captured through torch)."""
    if isinstance(obj, Graph):
        return "graph"
    if isinstance(obj, (str, os.PathLike)):
        return "path"
    from .frontends.keras import is_keras_model
    if is_keras_model(obj):  # before torch: on Keras' torch backend a model is a torch.nn.Module too
        return "keras"
    for cls in type(obj).__mro__:
        mod = cls.__module__ or ""
        if mod.startswith("torch"):
            return "torch"
        if mod.startswith("onnx") and cls.__name__ == "ModelProto":
            return "onnx"
    if callable(obj):
        return "torch" if _holds_torch_tensor(example) else "jax"
    raise AccelirError(f"cannot capture a {type(obj).__name__}: pass a torch.nn.Module, a torch.fx.GraphModule, "
                       "a jax callable, a Keras model, an onnx.ModelProto, a path to .onnx / .air / .keras, "
                       "or an accelir.Graph")


def _as_args(example_inputs: Any) -> tuple:
    if example_inputs is None:
        return ()
    if isinstance(example_inputs, tuple):
        return example_inputs
    if isinstance(example_inputs, list):
        return tuple(example_inputs)
    return (example_inputs,)


_freezing = False  # an _existing_objects_frozen block is open


@contextlib.contextmanager
def _existing_objects_frozen():
    """Keep the cyclic garbage collector's full collections to the objects made inside the block.

    A capture allocates enough to set off full collections, and each one walks every object
    the process holds (torch's and transformers' modules alone are hundreds of thousands),
    about 0.3 s per walk.  Objects that existed before the block are moved to the permanent
    generation (``gc.freeze``) and back again after it (``gc.unfreeze``), so nothing is
    left changed; garbage made inside the block is collected as usual.  Where the caller
    froze objects already, or disabled the collector, the block leaves the collector alone.
    """
    global _freezing
    # (inside an enclosing block nothing is counted: get_freeze_count walks every frozen object)
    if _freezing or not gc.isenabled() or gc.get_freeze_count():
        yield
        return
    _freezing = True
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        _freezing = False


def _objects_frozen_during(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _existing_objects_frozen():
            return fn(*args, **kwargs)
    return wrapper


@_objects_frozen_during
def capture(model: Any, example_inputs: Any = None, dynamic_shapes: Any = None, *, method: str = "export",
            example_kwargs: Mapping[str, Any] | None = None, **options: Any) -> Graph:
    """Capture ``model`` into an accelir Graph.

    torch modules go through ``torch.export`` (``method="fx"`` for torch.fx), jax
    callables through ``jax.make_jaxpr`` (``dynamic_shapes`` is then the symbolic
    shape spec), ONNX models and ``.onnx`` / ``.air`` paths are imported, and a Graph
    is copied.  Keras 3 models and ``.keras`` files go through the frontend of their Keras
    backend; a Caffe ``.prototxt`` is read with ``caffemodel=`` (its weights) among ``options``.
    """
    args = _as_args(example_inputs)
    kind = model_kind(model, (args, example_kwargs))
    if kind == "graph":
        return model.copy()
    if kind == "path":
        path = os.fspath(model)
        if path.endswith(".air"):
            from .text import load
            return load(path)
        if path.endswith(".onnx"):
            from .frontends.onnx import import_onnx
            return import_onnx(path, **options)
        if path.endswith(".keras"):
            from .frontends.keras import capture_keras, load_keras
            return capture_keras(load_keras(path), args, example_kwargs=example_kwargs, dynamic_shapes=dynamic_shapes)
        if path.endswith(".prototxt"):
            from .frontends.caffe import capture_caffe
            return capture_caffe(path, args, **options)
        raise AccelirError(f"{path}: unknown file type; accelir reads .onnx, .air, .keras and .prototxt (Caffe) files")
    if kind == "onnx":
        from .frontends.onnx import import_onnx
        return import_onnx(model, **options)
    if kind == "keras":
        from .frontends.keras import capture_keras
        return capture_keras(model, args, example_kwargs=example_kwargs, dynamic_shapes=dynamic_shapes)
    if kind == "torch":
        from .frontends.torch import capture_torch
        return capture_torch(model, args, dynamic_shapes=dynamic_shapes, method=method,
                             example_kwargs=dict(example_kwargs or {}), **options)
    from .frontends.jax import capture_jax
    return capture_jax(model, args, example_kwargs=dict(example_kwargs or {}), symbolic_shapes=dynamic_shapes,
                       **options)


class _PlainSignature:
    """Inputs are arrays in graph input order, or by input name; outputs come back as one array or a list."""

    def __init__(self, n_outputs: int, input_names: Sequence[str | None] = ()):
        self.n_outputs = n_outputs
        self.input_names = list(input_names)

    def flatten(self, *args: Any, **kwargs: Any) -> list:
        if not kwargs:
            return list(args)
        given = dict(zip(self.input_names, args))
        for k, v in kwargs.items():
            if k not in self.input_names:
                raise InputError(f"unknown keyword argument {k!r}: the graph's inputs are "
                                 f"{', '.join(str(n) for n in self.input_names)}")
            if k in given:
                raise InputError(f"input {k} is given twice, by position and by keyword")
            given[k] = v
        missing = [str(n) for n in self.input_names if n not in given]
        if missing:
            raise InputError(f"missing input{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
        return [given[n] for n in self.input_names]

    def unflatten(self, outputs: list) -> Any:
        return outputs[0] if self.n_outputs == 1 else list(outputs)


def _dtype_of(x: Any) -> DType | None:
    """The accelir dtype of a numpy / torch / jax array, None where it has none."""
    dt = getattr(x, "dtype", None)
    if dt is None:
        return None
    if type(x).__module__.startswith("torch"):
        from .frontends.torch import TORCH_DTYPES
        return TORCH_DTYPES.get(dt)
    try:
        return DType.from_numpy(dt)
    except TypeError:
        return None


def flatten_inputs(graph: Graph, signature: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list:
    """The graph inputs of a call; a call that does not fit the captured structure is an InputError."""
    try:
        return list(signature.flatten(*args, **kwargs))
    except (TypeError, ValueError) as e:
        from .frontends.onnx import OnnxSignature
        if isinstance(signature, OnnxSignature):  # its messages are written for users
            raise InputError(str(e)) from None
        raise InputError(f"the inputs do not match the structure the model was captured with: it takes "
                         f"{describe_inputs(graph)}") from None


def check_inputs(graph: Graph, flat: Sequence[Any]) -> dict[str, int]:
    """Check inputs against the graph's signature before running; return the symbol values."""
    if len(flat) != len(graph.inputs):
        raise InputError(f"the model takes {describe_inputs(graph)}, got {len(flat)}")
    for i, (v, x) in enumerate(zip(graph.inputs, flat)):
        expect_array(f"input {i} ({v.name})", x, v)
        dt = _dtype_of(x)
        if dt is not None and dt != v.type.dtype:
            raise InputError(f"input {i} ({v.name}): dtype {dt} differs from the captured {v.type.dtype}")
    try:
        return bind_shapes([v.type for v in graph.inputs], [tuple(int(d) for d in x.shape) for x in flat],
                           names=[v.name for v in graph.inputs])
    except InterpreterError as e:
        raise InputError(str(e)) from None


@dataclass
class OptimizeReport:
    """What ``optimize`` did: per-pass statistics, stage times and, for backend='auto', the timings."""

    passes: Any = None
    stages: dict[str, float] = field(default_factory=dict)
    backends: dict[str, float] = field(default_factory=dict)
    chosen: str = ""
    failed: dict[str, str] = field(default_factory=dict)
    nodes_before: int = 0
    nodes_after: int = 0
    precision: Any = None  # an accelir.precision.PrecisionReport where optimize(precision=...) quantised
    frames: Any = field(default=None, repr=False)  # debug pass_graphs=True: accelir.viewer.Frames

    def __str__(self) -> str:
        lines = [f"nodes: {self.nodes_before} -> {self.nodes_after}"]
        lines.append("stages: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in self.stages.items()))
        if self.backends:
            lines.append("backends (median latency on the example inputs):")
            for name, t in sorted(self.backends.items(), key=lambda kv: kv[1]):
                mark = "  <- chosen" if name == self.chosen else ""
                lines.append(f"  {name:12s} {t * 1e3:9.3f} ms{mark}")
        for name, reason in self.failed.items():
            lines.append(f"  {name:12s} failed: {reason}")
        if self.passes is not None:
            lines.append(str(self.passes))
        if self.precision is not None:
            lines.append(str(self.precision))
        return "\n".join(lines)


def build_runner(graph: Graph, backend: str, device: str) -> Callable[..., list]:
    """A callable running ``graph`` on ``backend`` ("onnxruntime" or "xla") and ``device``, taking the
    flat input arrays and returning the output arrays; ``optimize`` and the command line both use it."""
    if backend == "onnxruntime":
        from .lowering.onnxruntime import OnnxRuntimeModule
        return OnnxRuntimeModule(graph, device=device)
    if backend == "xla":
        from .lowering.jax import JaxModule
        return JaxModule(graph, device=device)
    raise AccelirError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)} or 'auto'")


def _fastest_backend(graph: Graph, device: str, flat: list, report: OptimizeReport) -> tuple[str, Callable]:
    """backend='auto': build and time each backend on the example inputs, keep the fastest.

    A backend that fails to build or to run is skipped with a warning and its error kept in
    ``report.failed``, so one backend's gap does not cost the user the other; when every
    backend fails, the error names each cause."""
    candidates: dict[str, Callable] = {}
    for name in BACKENDS:
        try:
            runner = build_runner(graph, name, device)
            report.backends[name] = _time_runner(runner, flat)
        except Exception as e:  # noqa: BLE001 - whatever stops one backend, the other may still serve
            report.failed[name] = first_line(e)
            continue
        candidates[name] = runner
    if not candidates:
        raise LoweringError("backend='auto': no backend could run the model: "
                            + "; ".join(f"{k}: {v}" for k, v in report.failed.items()))
    chosen = min(report.backends, key=report.backends.get)
    for name, reason in report.failed.items():
        warnings.warn(f"backend='auto': {name} failed ({reason}); using {chosen}", stacklevel=4)
    return chosen, candidates[chosen]


def _time_runner(runner: Callable[..., list], flat: list, repeats: int = 5) -> float:
    for _ in range(2):
        runner(*flat)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        runner(*flat)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class CompiledModel:
    """An optimised model: call it like the original; inspect ``graph``, ``source_graph`` and ``report``."""

    def __init__(self, graph: Graph, source_graph: Graph, runner: Callable[..., list], *, backend: str,
                 device: str, report: OptimizeReport, example_inputs: list, call_form: CallForm | None = None):
        self.graph = graph
        self.source_graph = source_graph
        self.backend = backend
        self.device = device
        self.report = report
        self._runner = runner
        self._example_inputs = example_inputs
        self._signature = (graph.meta.get("signature")
                           or _PlainSignature(len(graph.outputs), [v.name for v in graph.inputs]))
        self._call_form = call_form
        self._id_bounds = id_bounds(graph)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._call_form is not None:
            args, kwargs = self._call_form.bind(self.graph, args, kwargs)
        flat = flatten_inputs(self.graph, self._signature, args, kwargs)
        check_inputs(self.graph, flat)
        check_ids(self.graph, self._id_bounds, flat)
        outputs = self._runner(*flat)
        return self._signature.unflatten(list(outputs))

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """Only a causal LM optimised with its key/value cache generates (``accelir.generation``)."""
        raise AccelirError("generate() needs a key/value cache path, which this model lacks: optimize() captures one "
                           "from a transformers causal LM (a torch model with generate() whose config has "
                           "use_cache=True) or from a flax decoder with its cache (a flax.linen module bound to "
                           "variables with a 'cache' collection, an nnx module after init_cache, or "
                           "accelir.generation_flax.CacheDecoder), either called without dynamic_shapes or capture "
                           "options")

    def sharded_parameters(self) -> dict[str, Any]:
        """The weights as placed over the mesh (jax arrays by name), for a model optimised with ``mesh=``."""
        placed = getattr(self._runner, "sharded_parameters", None)
        if placed is None:
            raise AccelirError("sharded_parameters(): this model was not optimised with mesh= and sharding=")
        return placed()

    def export(self, path: str | os.PathLike, *, overwrite: bool = False) -> str:
        """Write the optimised model; the format follows the suffix:
        .onnx, .mlir (StableHLO), .hlo (HLO text), .air (accelir IR), .dot (Graphviz), .html (report).

        Every file (sidecars included: ``.air.npz``, ``.onnx.data``) is written to a temporary
        beside it and renamed into place, so an interrupted export leaves no partial file; an
        existing one is replaced only with ``overwrite``."""
        from .fileio import check_output, write_text_atomic
        path = os.fspath(path)
        suffix = os.path.splitext(path)[1].lower()
        if suffix not in EXPORT_SUFFIXES:
            raise AccelirError(f"{path}: unknown export format {suffix!r}; use .onnx, .mlir, .hlo, .air, .dot or .html")
        check_output(path, overwrite)
        if suffix == ".onnx":
            from .lowering.onnx import save_onnx, to_onnx
            model = to_onnx(self.graph)
            if self.graph.meta.get("frontend") == "onnx":
                from .frontends.onnx import restore_onnx_interface
                restore_onnx_interface(model, self.graph)
            save_onnx(model, path, overwrite=overwrite)
        elif suffix == ".air":
            from .text import save
            save(self.graph, path, overwrite=overwrite)
        elif suffix in (".mlir", ".hlo"):
            from .lowering import jax as jax_lowering
            fn = jax_lowering.stablehlo if suffix == ".mlir" else jax_lowering.hlo
            write_text_atomic(path, fn(self.graph, self._example_inputs), overwrite=overwrite)
        elif suffix == ".dot":
            from .visualize import to_dot
            write_text_atomic(path, to_dot(self.graph), overwrite=overwrite)
        else:
            from .visualize import to_html
            write_text_atomic(path, to_html(self.graph, report=self.report.passes, frames=self.report.frames),
                              overwrite=overwrite)
        return path

    def __repr__(self) -> str:
        return (f"CompiledModel(backend={self.backend!r}, device={self.device!r}, "
                f"nodes={self.report.nodes_before}->{self.report.nodes_after})")


def _numpy_inputs(flat: Sequence[Any]) -> list[np.ndarray]:
    return [to_numpy(x) for x in flat]


def pass_list(passes: Sequence[Any] | None, level: int, target: str | None) -> list[Callable[[Graph], bool]]:
    """optimize()'s passes: ``passes`` (names or callables) when given, else the pipeline of ``level`` for ``target``."""
    from .passes import get_pass, pipeline
    if passes is None:
        return pipeline(level, target=target)
    try:
        return [get_pass(p) if isinstance(p, str) else p for p in passes]
    except KeyError as e:
        raise AccelirError(f"optimize(passes=...): {e.args[0]}") from None


_MODEL_PATHS: list[tuple[Callable[[Any], bool], Callable[..., CompiledModel]]] = []


def register_model_path(accepts: Callable[[Any], bool], optimize_fn: Callable[..., CompiledModel]) -> None:
    """Route the models ``accepts`` takes (optimised without dynamic_shapes, example_kwargs or capture
    options) to ``optimize_fn(model, example_inputs, backend=, device=, level=, passes=, debug=, precision=,
    accuracy=, calibration=)``.

    A module above this one (``accelir.generation``: causal LMs, captured as a prefill and a decode
    graph) registers its path here, so this module never imports it."""
    _MODEL_PATHS.append((accepts, optimize_fn))


@_objects_frozen_during
def optimize(model: Any, example_inputs: Any = None, *, backend: str = "onnxruntime", device: str = "cpu",
             level: int = 2, passes: Sequence[Any] | None = None, dynamic_shapes: Any = None,
             debug: Mapping[str, Any] | None = None, example_kwargs: Mapping[str, Any] | None = None,
             precision: str = "fp32", accuracy: Any = None, calibration: Sequence[Any] | None = None,
             mesh: Any = None, sharding: Any = None, **capture_options: Any) -> CompiledModel:
    """Capture, optimise and lower ``model``; returns a CompiledModel called like the model.

    ``backend`` is "onnxruntime", "xla" or "auto" (build each available backend, time
    it on the example inputs, keep the fastest); ``device`` "cpu" or "cuda".
    ``passes`` (names or callables) replaces the pipeline of ``level`` (0-3).
    ``debug`` takes the PassManager's options: print_after, dump_dir (with overwrite=True
    to replace the dumps of an earlier run there), check_numerics (True to check with the
    example inputs), verify_each, pass_graphs (True: keep the graph after each pass, so that
    ``export(".html")`` can draw any of them with what the pass changed), explain (True:
    ``report.passes.unfused`` lists each candidate the fusion passes left unfused, with the reason
    and the module and source line).
    ``precision`` ("fp32", "fp16", "bf16", "int8", "int4"; see :mod:`accelir.precision`) lowers the precision of the
    optimised graph within the budget ``accuracy`` (``{"cosine": 0.999}``, "cosine=0.999", default per
    precision), checked on the example inputs or on ``calibration`` (a list of input tuples) against
    float32; ``report.precision`` gives each layer's error and the layers kept in float32.
    ``mesh`` (a ``jax.sharding.Mesh``) and ``sharding`` ("data-parallel", "tensor-parallel",
    "fsdp" or a dict of regex -> PartitionSpec) split the model over the mesh's devices with
    backend="xla" (:mod:`accelir.lowering.jax.sharding`).
    """
    from .pass_manager import PassManager
    from .precision import apply_precision, check_precision

    if backend not in BACKENDS + ("auto",):
        raise AccelirError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)} or 'auto'")
    if device not in ("cpu", "cuda"):
        raise AccelirError(f"unknown device {device!r}; choose 'cpu' or 'cuda'")
    check_precision(precision)
    if accuracy is not None:
        from .accuracy import Budget
        Budget.parse(accuracy, precision)  # a bad budget is refused before the capture
    for accepts, special in _MODEL_PATHS:
        if accepts(model) and dynamic_shapes is None and not example_kwargs and not capture_options and mesh is None:
            return special(model, example_inputs, backend=backend, device=device, level=level, passes=passes,
                           debug=debug, precision=precision, accuracy=accuracy, calibration=calibration)
    if (mesh is None) != (sharding is None) or (mesh is not None and backend != "xla"):
        raise AccelirError("mesh= and sharding= go together, with backend='xla' (XLA's SPMD partitioner splits "
                           "the model)")
    report = OptimizeReport()
    t0 = time.perf_counter()
    graph = capture(model, example_inputs, dynamic_shapes, example_kwargs=example_kwargs, **capture_options)
    report.stages["capture"] = time.perf_counter() - t0
    signature = graph.meta.get("signature") or _PlainSignature(len(graph.outputs), [v.name for v in graph.inputs])
    args = _as_args(example_inputs)
    flat = list(signature.flatten(*args, **dict(example_kwargs or {}))) if (args or example_kwargs) else []
    source = graph.copy()
    report.nodes_before = graph.num_nodes()

    options = dict(debug or {})
    if options.get("check_numerics") is True:
        if not flat:
            raise AccelirError("debug check_numerics=True needs example_inputs")
        options["check_numerics"] = _numpy_inputs(flat)
    target = None if backend == "auto" else backend
    if options.pop("pass_graphs", False):  # the graph after each pass, for export(".html")
        from .viewer import Frames
        report.frames = Frames(graph)
        options["instrument"] = _both(report.frames, options.get("instrument"))
    chosen_passes = pass_list(passes, level, target)
    if passes is None and mesh is not None:
        from .lowering.jax.sharding import fit_pipeline
        chosen_passes = fit_pipeline(chosen_passes, sharding)
    pm = PassManager(chosen_passes, **options)
    t0 = time.perf_counter()
    pm.run(graph)
    report.stages["passes"] = time.perf_counter() - t0
    report.passes = pm.report
    if precision != "fp32":
        t0 = time.perf_counter()
        samples = ([_numpy_inputs(signature.flatten(*_as_args(c))) for c in calibration] if calibration is not None
                   else [_numpy_inputs(flat)] if flat else [])
        measured_on = "onnxruntime" if backend == "auto" else backend  # auto chooses after: measure on one
        if precision == "bf16":  # a conversion that buys nothing where the backend has no bf16 kernels
            from .float_precision import check_precision_backend
            measured_on = "xla" if backend == "auto" else measured_on
            check_precision_backend(graph, precision, measured_on, device)
        report.precision = apply_precision(graph, precision, accuracy, samples,
                                           lambda g: build_runner(g, measured_on, device), measured_on, device)
        report.stages["precision"] = time.perf_counter() - t0
    report.nodes_after = graph.num_nodes()

    t0 = time.perf_counter()
    if backend == "auto":
        if not flat:
            raise AccelirError("backend='auto' times each backend on the example inputs; pass example_inputs")
        chosen, runner = _fastest_backend(graph, device, flat, report)
    elif mesh is not None:
        from .lowering.jax.sharding import ShardedJaxModule
        chosen, runner = backend, ShardedJaxModule(graph, mesh, sharding)
    else:
        chosen = backend
        runner = build_runner(graph, backend, device)
    report.chosen = chosen
    report.stages["lowering"] = time.perf_counter() - t0
    return CompiledModel(graph, source, runner, backend=chosen, device=device, report=report,
                         example_inputs=_numpy_inputs(flat), call_form=_call_form(model, args, example_kwargs, flat))


def _both(first: Callable[[Any, Graph], None], second: Callable[[Any, Graph], None] | None
          ) -> Callable[[Any, Graph], None]:
    """A PassManager instrument calling ``first`` then, if given, the user's own ``second``."""
    if second is None:
        return first

    def both(record: Any, graph: Graph) -> None:
        first(record, graph)
        second(record, graph)
    return both


def _call_form(model: Any, args: tuple, kwargs: Mapping[str, Any] | None, flat: list) -> CallForm | None:
    """How calls of a torch module or jax callable map onto the arguments it was captured with."""
    kind = model_kind(model)
    if kind == "torch" and callable(getattr(model, "forward", None)):
        return CallForm.of(model.forward, args, dict(kwargs or {}), flat)
    if kind == "jax":
        return CallForm.of(model, args, dict(kwargs or {}), flat)
    return None
