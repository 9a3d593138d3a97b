"""Reduced precision with an accuracy budget: ``optimize(model, args, precision=..., accuracy=..., calibration=...)``.

A precision is a pass factory ``make(keep) -> pass``: ``keep`` holds positions in ``graph.nodes`` order of
the layers to leave in float32.  The orchestration is the same for every precision:

1. run ``make(frozenset())`` on a copy of the optimised float32 graph, with each quantisable layer's
   output made an extra graph output, and run both graphs on the backend over the example inputs (or
   each ``calibration`` input tuple);
2. measure the model outputs against float32 with :func:`accelir.accuracy.measure` and hold them to
   the :class:`~accelir.accuracy.Budget`; measure each layer's output too (the per-layer error of the
   report: how far that layer's output is from float32 with everything before it quantised as well);
3. when the budget is not met, rank the layers by how much error each adds to what it reads (its
   output's error less that of its input) and keep the worst in float32: the fewest by bisection over
   the length of that ranking;
4. when only keeping every layer meets the budget, raise a :class:`PrecisionError` naming the layers
   that break it; a user never gets a silently worse model, nor a silently unquantised one.

A precision may depend on the backend that runs it (:meth:`Precision.on`): int4 asks onnxruntime's CPU
kernel to round the activations to int8 per block (``accuracy_level`` 4, :func:`int4_accuracy_level`),
and the budget is measured with that level, the arithmetic the user gets.

A pass ``make`` returns must leave a graph it has converted alone (the PassManager reruns it to a fixed
point, and its own insertions move the positions ``keep`` names).  fp16 / bf16 take the same pass
factory form, but their nodes to keep are found by :func:`accelir.float_precision.find_float_precision`
(values beyond the dtype's range first, then bisection over nodes), run on the same backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np

from .accuracy import PRECISIONS, Budget, Errors, measure
from .errors import AccelirError
from .ir import Graph

__all__ = ["PRECISION_PASSES", "Precision", "int4_accuracy_level", "quantisable_layers", "named_layers",
           "PrecisionError", "PrecisionReport", "LayerError", "check_precision", "choose_precision", "apply_precision"]

Runner = Callable[..., list]
PassFactory = Callable[[frozenset], Callable[[Graph], bool]]
#: the layers a precision pass may change: (position in ``graph.nodes`` order, name) of each
LayerFinder = Callable[[Graph], list[tuple[int, Any]]]


def quantisable_layers(graph: Graph) -> list[tuple[int, Any]]:
    """(position, node) of each float matmul / linear with a constant weight: what quantisation changes."""
    from .passes.quant_targets import quant_targets
    return [(t.position, t.node) for t in quant_targets(graph)]


@dataclass(frozen=True)
class Precision:
    """A precision's pass factory ``make(keep) -> pass`` and the finder of the layers its ``keep`` names."""

    make: PassFactory
    layers: LayerFinder = quantisable_layers
    #: a float dtype ("f16", "bf16"): the nodes to keep are found by accelir.float_precision's search
    #: (values beyond the dtype's range first, then bisection over nodes) rather than by layer ranking
    search: str | None = None
    #: ``make`` for the backend that runs the graph, ``(keep, backend, device) -> pass``, where it matters
    make_on: Callable[[frozenset, str | None, str], Callable[[Graph], bool]] | None = None

    def on(self, backend: str | None, device: str = "cpu") -> Precision:
        """This precision as ``backend`` on ``device`` runs it (None: the backend-neutral default)."""
        if self.make_on is None:
            return self
        make_on = self.make_on
        return replace(self, make=lambda keep: make_on(keep, backend, device), make_on=None)


def _int8(keep: frozenset) -> Callable[[Graph], bool]:
    from .passes import QuantizeDynamic
    return QuantizeDynamic(keep=keep)


def int4_accuracy_level(backend: str | None, device: str = "cpu") -> int:
    """``matmul_nbits``' accuracy level for precision="int4" on ``backend``: 4 on onnxruntime's CPU, where
    MatMulNBits then rounds x to int8 per block and multiplies integers (faster than dequantising the
    weight blocks to f32 on every call: ``benchmarks/int4_kernels.py``); 0 elsewhere: XLA dequantises
    inside its f32 dot, where rounding x is extra work, and onnxruntime's CUDA kernel does not read the
    level.  None (no backend named) is 0, the arithmetic every backend shares."""
    from .ops.quant import ACCURACY_INT8
    return ACCURACY_INT8 if backend == "onnxruntime" and device == "cpu" else 0


def _int4_on(keep: frozenset, backend: str | None, device: str) -> Callable[[Graph], bool]:
    from .passes import QuantizeWeights
    return QuantizeWeights(bits=4, block_size=32, accuracy_level=int4_accuracy_level(backend, device), keep=keep)


def _int4(keep: frozenset) -> Callable[[Graph], bool]:
    return _int4_on(keep, None, "cpu")


def _float(dtype: str) -> Precision:
    def make(keep: frozenset) -> Callable[[Graph], bool]:
        from .passes import ConvertFloat
        return ConvertFloat(dtype, keep=keep)
    return Precision(make, search=dtype)


#: precision -> how to get it; fp32 needs nothing.
PRECISION_PASSES: dict[str, Precision] = {"int8": Precision(_int8), "int4": Precision(_int4, make_on=_int4_on),
                                          "fp16": _float("f16"), "bf16": _float("bf16")}


class PrecisionError(AccelirError):
    """A precision that cannot be had: unknown, not built, or not within its accuracy budget."""


@dataclass(frozen=True)
class LayerError:
    """One quantisable layer: its name, position, whether it was kept in float32, and its output's error
    against float32 (``added``: the part of it the layer adds to the error of what it reads)."""

    name: str
    position: int
    kept: bool
    errors: Errors
    added: float

    def __str__(self) -> str:
        mark = "kept in float32" if self.kept else "quantised"
        return f"{self.name:40s} {mark:16s} {self.errors}"


@dataclass
class PrecisionReport:
    """What ``optimize(precision=...)`` did: the budget, the model's error, each layer's, the kept layers."""

    precision: str
    budget: Budget
    errors: Errors = field(default_factory=Errors)
    layers: list[LayerError] = field(default_factory=list)
    samples: int = 0
    trials: int = 0

    @property
    def kept(self) -> list[str]:
        return [layer.name for layer in self.layers if layer.kept]

    def __str__(self) -> str:
        quantised = sum(not layer.kept for layer in self.layers)
        lines = [f"precision {self.precision}: {quantised} of {len(self.layers)} layers quantised, "
                 f"{len(self.kept)} kept in float32; budget {self.budget}; on {self.samples} input(s) "
                 f"{self.errors} ({self.trials} trial(s))"]
        lines += [f"  {layer}" for layer in self.layers]
        return "\n".join(lines)


def check_precision(precision: str, backend: str | None = None, device: str = "cpu") -> Precision | None:
    """How to get ``precision`` on ``backend`` (None for fp32); a clear error for one that is unknown or
    not built."""
    if precision not in PRECISIONS:
        raise PrecisionError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return None
    make = PRECISION_PASSES.get(precision)
    if make is None:
        have = ", ".join(["fp32", *PRECISION_PASSES])
        raise PrecisionError(f"precision {precision!r} is not available in this build; use one of {have}")
    return make.on(backend, device)


class _Trials:
    """Runs the quantised graph for a keep-set on the backend and measures it; each keep-set once."""

    def __init__(self, graph: Graph, precision: Precision, samples: Sequence[list[np.ndarray]],
                 build: Callable[[Graph], Runner]):
        self.make, self.build, self.samples = precision.make, build, samples
        self.probe = graph.copy()
        layers = precision.layers(self.probe)
        self.positions = [p for p, _ in layers]
        self.names = [name for _, name in named_layers(self.probe, precision)]
        self.n_outputs = len(self.probe.outputs)
        self.outputs = list(self.probe.outputs)
        graph_inputs = {id(v) for v in self.probe.inputs}
        # each layer's output and input, read back to measure the error the layer adds
        self.layer_index = [self._index(node.outputs[0]) for _, node in layers]
        self.layer_inputs = [None if not node.inputs or id(node.inputs[0]) in graph_inputs
                             else self._index(node.inputs[0]) for _, node in layers]
        self.probe.set_outputs(self.outputs)
        self.reference = self._run(self.probe)
        self.count = 0
        self._cache: dict[frozenset, tuple[Errors, list[Errors], list[Errors]]] = {}

    def _index(self, v: Any) -> int:
        """Where ``v`` is among the probe's outputs, added when it is not one yet."""
        for i, o in enumerate(self.outputs):
            if o is v:
                return i
        self.outputs.append(v)
        return len(self.outputs) - 1

    def _run(self, graph: Graph) -> list[list[np.ndarray]]:
        runner = self.build(graph)
        return [[np.asarray(o) for o in runner(*flat)] for flat in self.samples]

    def quantised(self, keep: frozenset) -> Graph:
        g = self.probe.copy()
        self.make(keep)(g)
        return g

    def measure(self, keep: frozenset) -> tuple[Errors, list[Errors], list[Errors]]:
        """(model errors, per-layer output errors, per-layer input errors) with the layers at positions
        ``keep`` in float32."""
        if keep in self._cache:
            return self._cache[keep]
        self.count += 1
        got = self._run(self.quantised(keep))
        model, outs, ins = Errors(), [Errors()] * len(self.positions), [Errors()] * len(self.positions)
        for want, have in zip(self.reference, got):
            model = model.worst(measure(want[:self.n_outputs], have[:self.n_outputs]))
            outs = [e.worst(measure([want[i]], [have[i]])) for e, i in zip(outs, self.layer_index)]
            ins = [e if i is None else e.worst(measure([want[i]], [have[i]])) for e, i in zip(ins, self.layer_inputs)]
        self._cache[keep] = (model, outs, ins)
        return self._cache[keep]


def named_layers(graph: Graph, precision: Precision) -> list[tuple[int, str]]:
    """(position, name) of each layer ``precision`` may change, named as :class:`PrecisionReport` names
    them: graphs captured from one model (a causal LM's prefill and decode) name a layer alike."""
    from .passes.quant_targets import layer_name
    layers = precision.layers(graph)
    return list(zip([p for p, _ in layers], _unique([layer_name(node) for _, node in layers])))


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return out


def _badness(e: Errors, budget: Budget) -> float:
    """How far ``e`` is from exact in the measure the budget bounds first (cosine, max_rel, max_abs)."""
    if budget.cosine is not None or (budget.max_rel is None and budget.max_abs is None):
        return 1.0 - e.cosine if np.isfinite(e.cosine) else float("inf")
    return e.max_rel if budget.max_rel is not None else e.max_abs


def choose_precision(graph: Graph, precision: str, accuracy: Any, samples: Sequence[list[np.ndarray]],
                     build: Callable[[Graph], Runner], backend: str | None = None, device: str = "cpu"
                     ) -> tuple[Callable[[Graph], bool] | None, PrecisionReport]:
    """The pass that puts ``graph`` (float32, optimised) in ``precision`` as ``backend`` runs it, within the
    budget ``accuracy`` on ``samples`` (flat numpy input lists), measured by running graphs built with
    ``build(graph)``, and its report; None for fp32.  ``graph`` is not changed: the caller runs the pass."""
    chosen = check_precision(precision, backend, device)
    budget = Budget.parse(accuracy, precision)
    report = PrecisionReport(precision, budget, samples=len(samples))
    if chosen is None:
        return None, report
    if not samples:
        raise PrecisionError(f"precision={precision!r} checks its accuracy budget on inputs: pass example "
                             "inputs or calibration=[...]")
    if chosen.search is not None:
        return _choose_float(graph, chosen, budget, samples, build, report)
    trials = _Trials(graph, chosen, samples, build)
    errors, layers, inputs = trials.measure(frozenset())
    added = [_badness(out, budget) - _badness(x, budget) for out, x in zip(layers, inputs)]
    keep: frozenset = frozenset()
    if not budget.met(errors):
        ranked = sorted(range(len(layers)), key=lambda i: (-added[i], i))
        found = _fewest_kept(trials, budget, ranked)
        if found is None:
            raise _budget_error(precision, budget, errors, trials, layers, ranked)
        keep = found
        errors, layers, _ = trials.measure(keep)
    report.errors = errors
    report.trials = trials.count
    report.layers = [LayerError(n, p, p in keep, e, a)
                     for n, p, e, a in zip(trials.names, trials.positions, layers, added)]
    return chosen.make(keep), report


def _choose_float(graph: Graph, chosen: Precision, budget: Budget, samples: Sequence[list[np.ndarray]],
                  build: Callable[[Graph], Runner], report: PrecisionReport
                  ) -> tuple[Callable[[Graph], bool], PrecisionReport]:
    """fp16 / bf16: the nodes kept in float32 by accelir.float_precision's search, run on the backend."""
    from .float_precision import find_float_precision

    def run(g: Graph, args: Sequence[Any]) -> list:
        return [np.asarray(o) for o in build(g)(*args)]
    try:
        found = find_float_precision(graph, samples[0], chosen.search, budget, calibration=samples[1:], run=run)
    except AccelirError as e:
        raise PrecisionError(str(e)) from None
    if not budget.met(found.errors):
        worst = sorted((layer for layer in found.layers if not layer.kept),
                       key=lambda layer: -_badness(layer.errors, budget))[:5]
        raise PrecisionError(
            f"precision={report.precision!r} cannot meet the accuracy budget {budget} ({found.errors}; "
            f"{'; '.join(budget.violations(found.errors))}) with {len(found.kept)} node(s) kept in float32; the "
            f"worst nodes left low: {', '.join(f'{layer.name} ({layer.errors})' for layer in worst)}. Loosen "
            "accuracy=..., or choose a wider precision")
    report.errors = found.errors
    report.layers = [LayerError(layer.name, layer.position, layer.kept, layer.errors, 0.0) for layer in found.layers]
    return chosen.make(frozenset(found.kept)), report


def _fewest_kept(trials: _Trials, budget: Budget, ranked: list[int]) -> frozenset | None:
    """The shortest prefix of ``ranked`` whose layers kept in float32 meet the budget, found by doubling
    then bisection; None when only keeping every layer would."""
    def keep_of(n: int) -> frozenset:
        return frozenset(trials.positions[i] for i in ranked[:n])

    def ok(n: int) -> bool:
        return budget.met(trials.measure(keep_of(n))[0])

    total = len(ranked)
    lo, hi = 0, 1  # lo fails; find hi that meets
    while hi < total and not ok(hi):
        lo, hi = hi, min(2 * hi, total)
    if hi >= total:
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return keep_of(hi)


def _budget_error(precision: str, budget: Budget, errors: Errors, trials: _Trials, layers: list[Errors],
                  ranked: list[int]) -> PrecisionError:
    shown = [f"{trials.names[i]} ({layers[i]})" for i in ranked[:5]]
    more = f" and {len(ranked) - 5} more" if len(ranked) > 5 else ""
    return PrecisionError(
        f"precision={precision!r} cannot meet the accuracy budget {budget} (quantised: {errors}; "
        f"{'; '.join(budget.violations(errors))}) unless every layer stays in float32; the layers that break "
        f"it, worst first: {', '.join(shown)}{more}. Loosen accuracy=..., or choose a wider precision")


def apply_precision(graph: Graph, precision: str, accuracy: Any, samples: Sequence[list[np.ndarray]],
                    build: Callable[[Graph], Runner], backend: str | None = None, device: str = "cpu"
                    ) -> PrecisionReport:
    """Put the optimised float32 ``graph`` in ``precision`` in place, as ``backend`` on ``device`` runs it,
    within the budget ``accuracy`` on ``samples``, measured by running graphs built with ``build(graph)``
    (that backend's runner); the report says how it went.  ``optimize`` and the command line both call this."""
    from .pass_manager import PassManager
    chosen, report = choose_precision(graph, precision, accuracy, samples, build, backend, device)
    if chosen is not None:
        PassManager([chosen]).run(graph)
    return report
