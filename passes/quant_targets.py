"""What the quantisation passes rewrite: float ``matmul`` / ``linear`` nodes with a constant, finite weight.

A library the passes ``quantize_dynamic`` and ``quantize_weights`` share, not a pass.  A target is
named by its position in ``graph.nodes`` order: the precision orchestrator reruns a pass on a fresh
copy of the same float graph with some positions kept in float, so positions are stable names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

import numpy as np

from accelir.ir import Builder, DType, Graph, Node, Value
from accelir.ops.quant import QUANT_OPS

from .convert_once import converted
from .pattern import provenance, remove_dead, rewrite_budget

__all__ = ["QuantTarget", "quant_targets", "is_quantized", "rewrite_targets", "layer_name"]


@dataclass(frozen=True)
class QuantTarget:
    """One node to quantise: its position, the activation input, the constant weight [K, N], the
    bias (an f32 [N] value or None) and the activation it applies."""

    position: int
    node: Node
    x: Value
    weight: np.ndarray
    bias: Value | None
    activation: str


def is_quantized(graph: Graph) -> bool:
    """Whether ``graph`` holds quantised contractions already (a quantisation pass then leaves it)."""
    return any(n.op in QUANT_OPS for n in graph.nodes)


def _target(position: int, node: Node) -> QuantTarget | None:
    if node.op not in ("matmul", "linear") or node.output.dtype is not DType.f32:
        return None
    x, w = node.inputs[0], node.inputs[1]
    weight = w.const_value
    if weight is None or weight.ndim != 2 or x.rank < 1:
        return None
    if not np.isfinite(weight).all():
        return None  # an inf or nan has no int scale: quantised, the whole channel / block would be garbage
    bias = node.inputs[2] if len(node.inputs) == 3 else None
    if bias is not None and bias.shape != (weight.shape[1],):
        return None  # a scalar bias broadcast over N: left in float, rare enough
    activation = node.attrs.get("activation", "none")
    return QuantTarget(position, node, x, weight, bias, activation)


def quant_targets(graph: Graph) -> list[QuantTarget]:
    """Every quantisable node of ``graph``, in node order, with its position."""
    return [t for i, n in enumerate(graph.nodes) if (t := _target(i, n)) is not None]


def layer_name(node: Node) -> str:
    """A node's name for reports: the module its weight came from (a fused node's own provenance may be
    its activation's), else the node's module; else its weight constant's name, or for a weight a pass
    computed (a folded transpose) the source node it came from."""
    w = node.inputs[1].producer if len(node.inputs) > 1 and node.op in ("matmul", "linear") else None
    wmeta = w.meta if w is not None else {}
    for meta in (wmeta, node.meta):
        if meta.get("module"):
            return str(meta["module"])
    if w is not None and w.op == "constant":
        return str(wmeta["origin"]) if wmeta.get("pass") and wmeta.get("origin") else str(w.attrs["name"])
    return node.describe()


def rewrite_targets(graph: Graph, keep: frozenset[int], pass_name: str,
                    quantize: Callable[[np.ndarray], Sequence[tuple[str, np.ndarray]]],
                    make: Callable[[Builder, QuantTarget, list[Value]], Value], settings: Hashable = ()) -> bool:
    """Replace each target not in ``keep`` by ``make(builder, target, constants)``, where ``constants``
    hold ``quantize(weight)``'s named arrays (a weight read by several nodes is quantised once; inside
    ``convert_once()``, once for every graph: ``settings`` are what ``quantize`` depends on besides the
    weight); nothing when the graph is quantised already.  True when something changed."""
    if is_quantized(graph):
        return False
    done: dict[str, list[str]] = {}  # weight constant -> the names of its quantised arrays
    changed = False
    for t in quant_targets(graph):
        if t.position in keep:
            continue
        # operands as they are now: an earlier rewrite may have replaced the value x was
        t = dataclasses.replace(t, x=t.node.inputs[0], bias=t.node.inputs[2] if t.bias is not None else None)
        if not rewrite_budget.allow(lambda: f"{pass_name}: quantise {t.node.describe()}"):
            break
        b = graph.builder(before=t.node, meta=provenance(t.node, pass_name, t.node.op))
        weight_node = t.node.inputs[1].producer
        base = str(weight_node.attrs["name"])
        if base in done:
            consts = [graph.constant_ref(name, before=t.node, meta=b.meta) for name in done[base]]
        else:
            arrays = converted((pass_name, settings), t.weight, quantize)
            consts = [b.const(a, name=f"{base}_{suffix}") for suffix, a in arrays]
            done[base] = [c.producer.attrs["name"] for c in consts]
        graph.replace(t.node, [make(b, t, consts)])
        remove_dead(graph, [weight_node])
        changed = True
    return changed
