"""Which nodes must stay float32 when a graph computes in f16 or bf16, found on example inputs.

``convert_float16`` / ``convert_bfloat16`` keep a fixed list of ops in float32.  Whether the
rest may go low depends on the values: a matmul over large activations overflows f16's
65504, a long chain drifts.  :func:`find_float_precision` measures that instead of guessing:

1. it runs the float32 graph once on the example inputs, every intermediate exposed, and
   keeps each node that reads or makes a finite value beyond the low type's range (it
   would turn into inf);
2. it converts a fresh copy with those kept and measures the outputs against the float32
   ones with :mod:`accelir.accuracy`; while the budget is broken it bisects over the
   remaining low nodes in graph order: the longest prefix that may go low while the rest
   stays float32 ends just before the node that breaks the budget, which joins the keep
   set (a culprit costs log2(nodes) runs);
3. it measures every node's output in the final mixed graph against its float32 value:
   the per-layer errors a report shows.

It reruns the pass on copies of the one float graph with a growing ``keep`` (positions in
``graph.nodes`` order), as any caller of the pass may.  :func:`check_backend_precision` is
the other half of choosing a precision: a backend that cannot run it says which can.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .accuracy import Budget, Errors, measure
from .arrays import to_numpy
from .errors import AccelirError, LoweringError
from .interpreter import run_graph
from .ir import DType, Graph, Node
from .passes.convert_float import LOW_DTYPES, ConvertFloat, finite_max, low_precision_nodes

__all__ = ["FloatPrecision", "LayerError", "find_float_precision", "check_backend_precision", "check_precision_backend",
           "node_label"]

Runner = Callable[[Graph, Sequence[Any]], Sequence[Any]]

_PRECISION_OF = {"f16": "fp16", "bf16": "bf16"}


@dataclass(frozen=True)
class LayerError:
    """One node of the float graph: where it is, what it is, and how far its output drifted."""

    position: int
    name: str
    op: str
    errors: Errors
    kept: bool
    reason: str = ""

    def __str__(self) -> str:
        state = f"kept f32 ({self.reason})" if self.kept else "low"
        return f"{self.position:4d} {self.op:14s} {self.name:24s} {state:40s} {self.errors}"


@dataclass(frozen=True)
class FloatPrecision:
    """The converted graph, the positions kept in float32 beyond the op keep-list, and per-layer errors."""

    graph: Graph
    kept: tuple[int, ...]
    layers: tuple[LayerError, ...]
    errors: Errors
    budget: Budget
    dtype: str

    def __iter__(self):
        """``graph, kept, layers = find_float_precision(...)`` unpacks the three results callers use."""
        return iter((self.graph, self.kept, self.layers))

    def kept_names(self) -> list[str]:
        """The names of the nodes kept in float32 by value (overflow or budget), in graph order."""
        at = {layer.position: layer.name for layer in self.layers}
        return [at[p] for p in self.kept]

    def __str__(self) -> str:
        head = f"{self.dtype}: {len(self.kept)} node(s) kept in f32 by value; outputs {self.errors} " \
               f"(budget {self.budget})"
        return "\n".join([head, *map(str, self.layers)])


def node_label(node: Node, position: int) -> str:
    """A node's name for a report: its output's name, else its op and position."""
    name = node.outputs[0].name if node.outputs else None
    return f"%{name}" if name else f"{node.op}#{position}"


def _interpret(graph: Graph, inputs: Sequence[Any]) -> Sequence[Any]:
    return run_graph(graph, list(inputs))


def _probe(graph: Graph) -> tuple[Graph, list[int]]:
    """A copy of ``graph`` returning its outputs and then every f32 node output; the positions of
    those nodes in order."""
    probe = graph.copy()
    positions, values = [], []
    for position, node in enumerate(probe.nodes):
        if node.op != "constant" and node.outputs and node.outputs[0].dtype is DType.f32:
            positions.append(position)
            values.append(node.outputs[0])
    probe.set_outputs([*probe.outputs, *values])
    return probe, positions


def _beyond(value: np.ndarray, limit: float) -> bool:
    finite = np.asarray(value, np.float64)
    return bool(np.max(np.abs(finite[np.isfinite(finite)]), initial=0.0) > limit)


def _overflowing(graph: Graph, inputs: Sequence[Any], positions: Sequence[int], values: Sequence[np.ndarray],
                 low: DType) -> dict[int, str]:
    """The positions of the nodes that read or make a finite f32 value beyond ``low``'s range, with why;
    ``values`` are the f32 outputs of the nodes at ``positions``."""
    limit = finite_max(low)
    nodes = list(graph.nodes)
    big = {id(nodes[p].outputs[0]) for p, v in zip(positions, values) if _beyond(v, limit)}
    big |= {id(x) for x, a in zip(graph.inputs, inputs) if x.dtype is DType.f32 and _beyond(to_numpy(a), limit)}
    out: dict[int, str] = {}
    for position, node in enumerate(nodes):
        if node.op == "constant":
            continue
        if node.outputs and id(node.outputs[0]) in big:
            out[position] = f"its f32 result exceeds {low}'s {limit:.6g}"
        elif any(id(v) in big for v in node.inputs):
            out[position] = f"it reads an f32 value beyond {low}'s {limit:.6g}"
    return out


def find_float_precision(graph: Graph, inputs: Sequence[Any], dtype: str = "f16",
                         budget: Budget | Mapping[str, float] | str | None = None, *,
                         calibration: Sequence[Sequence[Any]] = (), keep_ops: frozenset[str] | None = None,
                         run: Runner | None = None, max_kept: int = 64) -> FloatPrecision:
    """Convert ``graph`` (not changed) to ``dtype``, keeping in f32 the nodes whose low precision
    breaks ``budget`` (default: the precision's) on ``inputs`` and on each input tuple of
    ``calibration`` (the worst of them counts); ``run(graph, inputs)`` runs a graph (default: the
    interpreter)."""
    if dtype not in LOW_DTYPES:
        raise AccelirError(f"float precision {dtype!r}: choose one of {', '.join(LOW_DTYPES)}")
    budget = Budget.parse(budget, _PRECISION_OF[dtype])
    run = run or _interpret
    options = ConvertFloat(dtype) if keep_ops is None else ConvertFloat(dtype, keep_ops=frozenset(keep_ops))
    sets = [list(inputs), *(list(c) for c in calibration)]
    probe, positions = _probe(graph)
    n_out = len(graph.outputs)
    wants, inners, reasons = [], [], {}
    for args in sets:
        ref = [np.asarray(v) for v in run(probe, args)]
        wants.append(ref[:n_out])
        inners.append(ref[n_out:])
        reasons.update(_overflowing(graph, args, positions, ref[n_out:], options.low))

    def convert(keep: set[int]) -> Graph:
        g = graph.copy()
        ConvertFloat(options.dtype, options.keep_ops, frozenset(keep))(g)
        return g

    def errors_with(keep: set[int]) -> Errors:
        g = convert(keep)
        errors = Errors()
        for want, args in zip(wants, sets):
            errors = errors.worst(measure(want, run(g, args)))
        return errors

    keep = set(reasons)
    nodes = list(graph.nodes)
    candidates = [p for p, n in enumerate(nodes) if p not in keep and options.lowers(n, p)]
    errors = errors_with(keep)
    start = 0
    while not budget.met(errors):
        if len(keep) - len(reasons) >= max_kept:
            raise AccelirError(f"{dtype}: still over the budget {budget} ({errors}) with {max_kept} nodes kept in "
                               "f32 by value; raise max_kept, loosen the budget, or stay in fp32")
        culprit = _first_breaking(candidates, start, keep, budget, errors_with)
        if culprit >= len(candidates):  # every candidate is kept already: no node's low precision is to blame
            raise AccelirError(f"{dtype}: over the budget {budget} ({errors}) with every node that could be lowered "
                               "kept in f32: the difference comes from the runner, not from the precision (its "
                               "float32 differs from the reference, or its results vary from run to run); check "
                               "on the interpreter (run=None) or loosen the budget")
        keep.add(candidates[culprit])
        reasons[candidates[culprit]] = "lowering it breaks the budget"
        start = culprit + 1
        errors = errors_with(keep)
    mixed = probe.copy()
    ConvertFloat(options.dtype, options.keep_ops, frozenset(keep))(mixed)
    per_node = [Errors()] * len(positions)
    for inner, args in zip(inners, sets):
        got = list(run(mixed, args))[n_out:]
        per_node = [e.worst(measure([w], [g])) for e, w, g in zip(per_node, inner, got)]
    return FloatPrecision(convert(keep), tuple(sorted(keep)), _layers(graph, positions, per_node, keep, reasons,
                                                                      options), errors, budget, dtype)


def _first_breaking(candidates: list[int], start: int, keep: set[int], budget: Budget,
                    errors_with: Callable[[set[int]], Errors]) -> int:
    """The index in ``candidates`` of the first node whose lowering (with every candidate before it,
    from ``start`` on, low and every one after it f32) breaks the budget."""
    def ok(k: int) -> bool:  # candidates[:k] low (but the kept), the rest f32
        return budget.met(errors_with(keep | set(candidates[k:])))
    lo, hi = start, len(candidates)  # ok(lo) holds (nothing new low), ok(hi) fails (the caller saw it)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _layers(graph: Graph, positions: list[int], per_node: list[Errors], keep: set[int], reasons: dict[int, str],
            options: ConvertFloat) -> tuple[LayerError, ...]:
    """Each f32 node: whether it stays f32 and why, and how far its output drifted in the final graph."""
    nodes = list(graph.nodes)
    out = []
    for position, errors in zip(positions, per_node):
        node = nodes[position]
        kept = not options.lowers(node, position) or position in keep
        reason = reasons.get(position, "keep-list" if node.op in options.keep_ops else "")
        out.append(LayerError(position, node_label(node, position), node.op, errors, kept, reason))
    return tuple(out)


# ----- can the backend run the precision ---------------------------------------------------

#: The IR ops a low precision is for, and the ONNX op each lowers to: without a kernel for them
#: the precision buys nothing but casts.
_COMPUTE_OPS = {"matmul": "MatMul", "dot_general": "Einsum", "linear": "Gemm", "conv": "Conv",
                "fused_conv": "Conv"}


def check_backend_precision(graph: Graph, backend: str, device: str) -> None:
    """Refuse a graph computing in bf16 on onnxruntime's CPU build, which has no bf16 kernel for its
    matmuls and convolutions (ONNX Runtime inserts f32 casts for f16 nodes there, not for bf16)."""
    if backend != "onnxruntime" or device != "cpu":
        return
    from .lowering.onnx.kernels import default_opset, supported_dtypes
    opset = default_opset()
    for node in low_precision_nodes(graph, "bf16"):
        onnx_op = _COMPUTE_OPS.get(node.op)
        if onnx_op is not None and DType.bf16 not in supported_dtypes(onnx_op, "", opset):
            import onnxruntime
            raise LoweringError(
                f"bf16 on onnxruntime CPU: onnxruntime {onnxruntime.__version__} has no bf16 CPU kernel for "
                f"{onnx_op} ({node.describe()}); use backend='xla' or precision='fp16'")


def check_precision_backend(graph: Graph, precision: str, backend: str, device: str) -> None:
    """Refuse ``precision="bf16"`` for the float32 ``graph`` where ``backend`` has no bf16 kernel for
    its matmuls and convolutions: they would run in float32 between casts, slower than float32 itself
    and no more compact. A graph already in bf16 (the user's own) still runs, through those casts."""
    if precision != "bf16":
        return
    converted = graph.copy()
    ConvertFloat("bf16")(converted)
    check_backend_precision(converted, backend, device)
