"""Common-subexpression elimination: two identical pure nodes -> the first one.

Nodes are identical when they have the same op, the same operands (in either order
for commutative binary ops) and the same attributes.  Constants are identical when
they hold the same dtype, shape and bytes: arrays up to ``hash_limit`` bytes are
compared by content, larger ones only by identity (the same array or constant name),
so CSE never hashes a weight matrix.  One forward sweep suffices: operands are merged
before their users are looked at.  Nodes with regions are left alone; region bodies
are swept on their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable

from accelir.ir import Graph, Node
from accelir.ops import registry

from .pattern import rewrite_budget
from .registry import register_pass

__all__ = ["CSE", "cse"]


def _attr_key(attrs: dict[str, Any]) -> Hashable:
    # -0.0 == 0.0 and 1 == 1.0 == True in python; key on the type and repr so they stay apart
    return tuple((k, type(v).__name__, repr(v)) for k, v in sorted(attrs.items()))


@dataclass(frozen=True)
class CSE:
    """Merge identical pure nodes; constants up to ``hash_limit`` bytes are compared by content."""

    hash_limit: int = 4096

    @property
    def __name__(self) -> str:
        return "cse"

    def key(self, graph: Graph, node: Node) -> Hashable | None:
        if node.regions:
            return None
        if node.op == "constant":
            name = node.attrs["name"]
            arr = graph.constants[name]
            if arr.nbytes <= self.hash_limit:
                return ("constant", arr.dtype.str, arr.shape, arr.tobytes())
            return ("constant-ref", id(arr))
        opdef = registry.get(node.op)
        if not opdef.pure:
            return None
        ids = [id(v) for v in node.inputs]
        if opdef.commutative and len(ids) == 2:
            ids.sort()
        return (node.op, tuple(ids), _attr_key(node.attrs))

    def __call__(self, graph: Graph) -> bool:
        changed = False
        seen: dict[Hashable, Node] = {}
        for node in list(graph.nodes):
            if node.regions:
                for r in node.regions:
                    changed |= self(r)
            k = self.key(graph, node)
            if k is None:
                continue
            first = seen.get(k)
            if first is None:
                seen[k] = node
                continue
            if not rewrite_budget.allow(lambda n=node: f"cse: merge {n.describe()}"):
                return changed
            graph.replace(node, list(first.outputs))
            changed = True
        return changed


cse = register_pass("cse", stage="cleanup", order=20)(CSE())
