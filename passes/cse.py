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


def _strict(value: Any) -> Hashable:
    """``value`` as a key equal only to identical values.

    In python ``-0.0 == 0.0`` and ``1 == 1.0 == True``; keying on the type (and on the
    repr of floats) keeps them apart.
    """
    t = type(value)
    if t is tuple:
        return (tuple, tuple(_strict(v) for v in value))
    if t is float:
        return (float, repr(value))
    return (t, value)


def _attr_key(attrs: dict[str, Any]) -> Hashable:
    items = sorted(attrs.items()) if len(attrs) > 1 else attrs.items()
    return tuple((k, _strict(v)) for k, v in items)


@dataclass(frozen=True)
class CSE:
    """Merge identical pure nodes; constants up to ``hash_limit`` bytes are compared by content."""

    hash_limit: int = 4096

    @property
    def __name__(self) -> str:
        return "cse"

    def key(self, graph: Graph, node: Node) -> Hashable | None:
        """The node's identity for merging, or None when it must not be merged."""
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
        ins = node.inputs
        if opdef.commutative and len(ins) == 2:
            a, b = id(ins[0]), id(ins[1])
            ids: tuple[int, ...] = (a, b) if a <= b else (b, a)
        else:
            ids = tuple(map(id, ins))
        attrs = node.attrs
        return (node.op, ids, _attr_key(attrs) if attrs else ())

    def __call__(self, graph: Graph) -> bool:
        changed = False
        seen: dict[Hashable, Node] = {}
        for node in graph.nodes:  # (which reads the successor first: merging removes ``node``)
            if node.regions:
                for r in node.regions:
                    changed |= self(r)
            k = self.key(graph, node)
            if k is not None:
                first = seen.setdefault(k, node)
                if first is not node:
                    if not rewrite_budget.allow(lambda n=node: f"cse: merge {n.describe()}"):
                        return changed
                    graph.replace(node, list(first.outputs))
                    changed = True
        return changed


cse = register_pass("cse")(CSE())
