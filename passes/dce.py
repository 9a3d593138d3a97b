"""Dead-code elimination: ``y = op(...)`` with ``y`` unused -> removed.

Removes nodes none of whose outputs is read or returned, when the op is pure (a
side-effecting op stays even when unused).  A node introducing a data-dependent dim stays
while another value's type names that dim: its size is read from the node.  One backward
sweep removes whole dead chains, since a node's users come after it; region bodies are
swept too.  Unused graph inputs stay: they are the graph's signature.
"""

from __future__ import annotations

from accelir.ir import Graph
from accelir.ops import registry
from accelir.unbacked import sizes_read_from

from .pattern import rewrite_budget
from .registry import register_pass

__all__ = ["dce"]


@register_pass("dce")
def dce(graph: Graph) -> bool:
    """Remove unused pure nodes; True when something was removed."""
    outputs = {id(v) for v in graph.outputs}
    changed = False
    for node in graph.reversed_nodes:  # (which reads the predecessor first: removing ``node`` unlinks it)
        if node.regions:
            for r in node.regions:
                changed |= dce(r)
        if not any(o.num_uses or id(o) in outputs for o in node.outputs) and registry.get(node.op).pure \
                and not sizes_read_from(node):
            if not rewrite_budget.allow(lambda n=node: f"dce: remove {n.describe()}"):
                return changed
            graph.remove(node)
            changed = True
    return changed
