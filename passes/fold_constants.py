"""Constant folding: ``op(c1, c2, ...)`` with constant operands -> ``constant``.

Evaluates a node whose operands are all constants (zero-operand ops like ``iota``
included) with the op's numpy reference, the same code the interpreter runs, so the
folded array has exactly the dtype and value the node would compute at run time.
This folds the shape arithmetic frontends leave behind.

Never folded: a ``dequantize_linear`` (a quantised weight stays quantised), impure ops, ops with regions, nodes with symbolic output shapes, and
results over ``max_bytes`` (default 1 MiB) unless they replace larger constant
operands that die with the node, so a model never bloats.  A reference that raises
what valid ops raise on bad values (an out-of-range gather, an empty max) leaves the
node in place for the run time to report, and says why in the log and in
``near_misses``; any other exception is a bug in the reference and propagates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from accelir.errors import AccelirError
from accelir.interpreter import InterpreterError
from accelir.ir import Graph, Node
from accelir.ops import registry

from .pattern import NearMiss, provenance, remove_dead, rewrite_budget
from .registry import register_pass

__all__ = ["FoldConstants", "fold_constants", "evaluate_node"]

MIB = 1 << 20

#: Never folded, though their operands are constants: a quantised weight stays quantised, so that
#: its DequantizeLinear -> op -> QuantizeLinear group still runs as an integer kernel.
KEEP_QUANTISED = frozenset({"dequantize_linear"})
log = logging.getLogger(__name__)

# What a reference raises on valid ops given bad values: an out-of-range index, an empty
# reduction, a failed type check (InterpreterError), an overflow.  The run time fails on them too.
REFERENCE_ERRORS = (AccelirError, IndexError, ValueError, ArithmeticError)


def evaluate_node(node: Node, args: list[np.ndarray]) -> list[np.ndarray]:
    """Run ``node``'s reference on ``args``; results are checked against the node's types."""
    opdef = registry.get(node.op)
    with np.errstate(all="ignore"):
        results = [np.asarray(r) for r in opdef.reference(args, dict(node.attrs), node.regions)]
    if len(results) != len(node.outputs):
        raise InterpreterError(f"{node.describe()}: reference gave {len(results)} results")
    for r, o in zip(results, node.outputs):
        if r.dtype != o.type.dtype.numpy or r.shape != o.type.shape:
            raise InterpreterError(f"{node.describe()}: reference gave {r.dtype}{list(r.shape)}, node says {o.type}")
    return results


def _dying_operand_bytes(node: Node) -> int:
    """Bytes of the constant operands that only this node reads (they go when it folds)."""
    seen: set[int] = set()
    total = 0
    for v in node.inputs:
        if id(v) in seen:
            continue
        seen.add(id(v))
        if all(u is node for u, _ in v.uses) and not v.is_graph_output:
            total += v.const_value.nbytes
    return total


@dataclass(frozen=True)
class FoldConstants:
    """Fold nodes with all-constant operands; ``max_bytes`` caps each folded result.

    ``near_misses`` lists, after a run, the nodes left unfolded because their reference raised."""

    max_bytes: int = MIB
    near_misses: list[NearMiss] = field(default_factory=list, compare=False, hash=False, repr=False)

    @property
    def __name__(self) -> str:
        return "fold_constants"

    def foldable(self, node: Node) -> bool:
        # the cheap test first: most nodes read something that is not a constant
        for v in node.inputs:
            p = v.producer
            if p is None or p.op != "constant":
                return False
        if node.op == "constant" or node.regions or node.op in KEEP_QUANTISED:
            return False
        opdef = registry.get(node.op)
        if not opdef.pure or opdef.has_regions:
            return False
        return all(o.type.is_static for o in node.outputs)

    def fold(self, graph: Graph, node: Node) -> bool:
        """Replace the foldable ``node`` by constants; False when the size cap, the reference
        or the rewrite budget says no."""
        size = sum(o.type.nbytes for o in node.outputs)
        if size > self.max_bytes and size > _dying_operand_bytes(node):
            return False
        try:
            results = evaluate_node(node, [v.const_value for v in node.inputs])
        except REFERENCE_ERRORS as e:  # an op failing on constants fails at run time too
            reason = f"left unfolded: its reference raised {type(e).__name__}: {e}"
            log.info("fold_constants: %s %s", node.describe(), reason)
            self.near_misses.append(NearMiss("fold_constants", reason, node))
            return False
        if not rewrite_budget.allow(lambda: f"fold_constants: fold {node.describe()}"):
            return False
        meta = provenance(node, "fold_constants", node.op)
        new = []
        for r, o in zip(results, node.outputs):
            c = graph.const(r, name=o.name or "folded", before=node, meta=meta)
            c.name = o.name
            new.append(c)
        inputs = [v.producer for v in node.inputs]
        graph.replace(node, new)
        remove_dead(graph, inputs)
        return True

    def __call__(self, graph: Graph) -> bool:
        self.near_misses.clear()
        return self._run(graph)

    def _run(self, graph: Graph) -> bool:
        changed = False
        # One forward sweep: a folded node's users come after it and read its constants.  Folding
        # only inserts and removes nodes before the successor, which Graph.nodes has already read.
        for node in graph.nodes:
            if node.regions:
                for r in node.regions:
                    changed |= self._run(r)
            elif self.foldable(node):
                if self.fold(graph, node):
                    changed = True
                elif rewrite_budget.exhausted:
                    return changed
        return changed


fold_constants = register_pass("fold_constants")(FoldConstants())
