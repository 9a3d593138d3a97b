"""Reduced precision for a causal LM: one precision, one set of converted weights, for its prefill and decode graphs.

``optimize(causal_lm, (input_ids,), precision="int4" | "int8" | "fp16" | "bf16", accuracy=..., calibration=...)``
puts both graphs through the precision passes of :mod:`accelir.precision`, held to one budget:

- the budget bounds the logits, the model's output (the cache the graphs also return is how the
  logits are computed, not a result): the prefill graph's over the example prompt (or each
  ``calibration`` prompt), and the decode graph's for one step after each prompt, fed the float32
  prefill's cache and its greedy token, each against its own graph in float32;
- each graph's search (:func:`accelir.precision.choose_precision`, on the backend that will run it)
  says which layers stay float32; a layer kept in either graph is kept in both, found by its name
  (both graphs name a layer by the module its weight came from), so no weight is quantised in one
  graph and left float in the other.  Under fp16 / bf16 the cache writes stay float32 too.  When
  that widened a graph's keep set, the graph is measured again.  A budget that only float32 meets is the :class:`~accelir.precision.PrecisionError`
  naming the layers that break it, as for any other model;
- the passes run inside :func:`accelir.passes.convert_once.convert_once`, so a weight is quantised
  (or cast) once and both graphs hold the same arrays: the XLA step places them on the device once,
  and ``export`` can write them once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np

from .accuracy import Errors, measure
from .ir import Graph
from .precision import Precision, PrecisionError, PrecisionReport, check_precision, choose_precision, named_layers

__all__ = ["GenerationPrecision", "apply_generation_precision", "shared_constant_bytes"]

Runner = Callable[..., list]


@dataclass
class GenerationPrecision:
    """``report.precision`` of a causal LM: the prefill graph's and the decode graph's precision reports,
    and how many bytes of converted weights the two graphs share."""

    prefill: PrecisionReport
    decode: PrecisionReport
    shared_bytes: int = 0

    @property
    def precision(self) -> str:
        return self.prefill.precision

    @property
    def budget(self) -> Any:
        return self.prefill.budget

    @property
    def errors(self) -> Errors:
        return self.prefill.errors.worst(self.decode.errors)

    @property
    def kept(self) -> list[str]:
        return self.prefill.kept

    @property
    def layers(self) -> list:
        return self.prefill.layers

    def __str__(self) -> str:
        return (f"prefill graph: {self.prefill}\ndecode graph: {self.decode}\n"
                f"weights shared by both graphs: {self.shared_bytes / 2**20:.1f} MiB")


def decode_samples(prefill: Graph, samples: Sequence[list[np.ndarray]], build: Callable[[Graph], Runner]
                   ) -> list[list[np.ndarray]]:
    """The decode graph's inputs for one greedy step after each prefill sample ``[ids, mask, positions]``:
    the float32 prefill's next token and cache, the mask one longer, the positions one further."""
    run = build(prefill)
    out = []
    for ids, mask, pos in samples:
        logits, *present = [np.asarray(o) for o in run(ids, mask, pos)]
        token = logits[:, -1, :].argmax(-1).astype(np.int64)[:, None]
        longer = np.concatenate([mask, np.ones((mask.shape[0], 1), mask.dtype)], axis=1)
        out.append([token, longer, pos[:, -1:] + 1, *present])
    return out


def _logits_only(graph: Graph) -> Graph:
    """A copy of ``graph`` whose one output is the logits (its nodes, and so their positions, unchanged)."""
    g = graph.copy()
    g.set_outputs(g.outputs[:1])
    return g


def _kept_positions(report: PrecisionReport) -> set[int]:
    return {layer.position for layer in report.layers if layer.kept}


def _kept_names(graph: Graph, report: PrecisionReport, chosen: Precision) -> set[str]:
    kept = _kept_positions(report)
    return {name for p, name in named_layers(graph, chosen) if p in kept}


def _cache_writes(graph: Graph) -> set[int]:
    """Positions of the ``concat(past, new)`` nodes that make the cache outputs.  Under fp16 / bf16 they
    stay float32: the cache keeps its dtype, and its last write stays the concat that the XLA step turns
    into an in-place ``dynamic_update_slice`` (a cast after it would hide it)."""
    writers = {id(v.producer) for v in graph.outputs[1:] if v.producer is not None and v.producer.op == "concat"}
    return {i for i, node in enumerate(graph.nodes) if id(node) in writers}


def _logit_errors(graph: Graph, low: Graph, samples: Sequence[list[np.ndarray]], build: Callable[[Graph], Runner]
                  ) -> Errors:
    want, got = build(graph), build(low)
    errors = Errors()
    for flat in samples:
        errors = errors.worst(measure([np.asarray(want(*flat)[0])], [np.asarray(got(*flat)[0])]))
    return errors


def apply_generation_precision(prefill: Graph, decode: Graph, precision: str, accuracy: Any,
                               samples: Sequence[list[np.ndarray]], backend: str, device: str
                               ) -> GenerationPrecision | None:
    """Put the optimised float32 ``prefill`` and ``decode`` graphs in ``precision`` in place, within the
    budget ``accuracy`` on the prefill ``samples`` (``[ids, mask, positions]`` each) and one decode step
    after each, measured on ``backend``; None for fp32.  See the module's docstring."""
    from .api import build_runner
    from .pass_manager import PassManager
    from .passes.convert_once import convert_once
    chosen = check_precision(precision, backend, device)
    if chosen is None:
        return None
    if precision == "bf16":  # a conversion that buys nothing where the backend has no bf16 kernels
        from .float_precision import check_precision_backend
        check_precision_backend(prefill, precision, backend, device)

    def build(g: Graph) -> Runner:
        return build_runner(g, backend, device)
    if not samples:
        raise PrecisionError(f"precision={precision!r} checks its accuracy budget on a prompt: pass example "
                             "input_ids or calibration=[(input_ids,), ...]")
    with convert_once():
        graphs = (_logits_only(prefill), _logits_only(decode))
        feeds = (list(samples), decode_samples(prefill, samples, build))
        reports = [choose_precision(g, precision, accuracy, s, build, backend, device)[1]
                   for g, s in zip(graphs, feeds)]
        names = set().union(*(_kept_names(g, r, chosen) for g, r in zip(graphs, reports)))
        for graph, probe, report, feed in zip((prefill, decode), graphs, reports, feeds):
            own = _kept_positions(report)
            forced = _cache_writes(graph) if chosen.search is not None else set()
            keep = frozenset(own | forced | {p for p, name in named_layers(probe, chosen) if name in names})
            if keep != own:  # kept for the other graph's sake: measure again what this one now gives
                low = probe.copy()
                PassManager([chosen.make(keep)]).run(low)
                report.errors = _logit_errors(probe, low, feed, build)
                _check_widened(report)
                report.layers = [replace(layer, kept=layer.position in keep) for layer in report.layers]
            PassManager([chosen.make(keep)]).run(graph)
    return GenerationPrecision(reports[0], reports[1], shared_constant_bytes(prefill, decode))


def _check_widened(report: PrecisionReport) -> None:
    if not report.budget.met(report.errors):
        raise PrecisionError(
            f"precision={report.precision!r}: with the layers the other generation graph keeps in float32 kept "
            f"here too, this graph's logits break the accuracy budget {report.budget} ({report.errors}; "
            f"{'; '.join(report.budget.violations(report.errors))}). Loosen accuracy=..., or choose a wider precision")


def shared_constant_bytes(a: Graph, b: Graph) -> int:
    """The bytes of ``b``'s constants that are ``a``'s arrays (the same memory, not merely equal values)."""
    def where(arr: np.ndarray) -> tuple:
        return arr.__array_interface__["data"][0], arr.nbytes, arr.strides
    mine = {where(arr) for arr in a.constants.values()}
    return sum(arr.nbytes for arr in b.constants.values() if where(arr) in mine)
