"""Group chains of elementwise ops into ``fusion`` nodes with a region (for analysis and XLA).

Rewrite: a connected group of elementwise nodes (``exp``, ``add``, ``where``, ``cast``,
``gelu``, ...) with a single result becomes::

    %y = fusion(%a, %b) {kind="elementwise"} {
      graph fused(%0: .., %1: ..) -> (..) { ..the group.. }
    }

Groups grow from each result toward its producers, taking a producer only when all
of its readers are already in the group (XLA's producer-consumer loop fusion), so a
group has one result and can never close a cycle.  Scalar constants are copied into
the region; every other operand becomes a region input.  Single nodes are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from accelir.ir import Graph, Node, Value
from accelir.ops import registry

from .pattern import provenance, remove_dead, rewrite_budget
from .registry import register_pass

__all__ = ["FuseElementwise", "fuse_elementwise"]


def _fusible(node: Node) -> bool:
    return (node.op != "constant" and not node.regions and len(node.outputs) == 1
            and registry.get(node.op).elementwise and registry.get(node.op).pure)


def _is_scalar_const(v: Value) -> bool:
    arr = v.const_value
    return arr is not None and arr.size == 1


def _group(root: Node, taken: set[int]) -> list[Node]:
    """The nodes fused with ``root`` (in no particular order)."""
    members = {id(root): root}
    work = [v.producer for v in root.inputs if v.producer is not None]
    while work:
        p = work.pop()
        if id(p) in members or id(p) in taken or not _fusible(p):
            continue
        out = p.outputs[0]
        if out.is_graph_output or any(id(u) not in members for u, _ in out.uses):
            continue
        members[id(p)] = p
        work.extend(v.producer for v in p.inputs if v.producer is not None)
    return list(members.values())


@dataclass(frozen=True)
class FuseElementwise:
    """The pass: ``FuseElementwise(min_size=2)(graph) -> changed``."""

    name: str = "fuse_elementwise"
    min_size: int = 2

    @property
    def __name__(self) -> str:
        return self.name

    def __call__(self, graph: Graph) -> bool:
        nodes = list(graph.nodes)
        taken: set[int] = set()
        groups: list[list[Node]] = []
        for node in reversed(nodes):
            if id(node) in taken or not _fusible(node):
                continue
            group = _group(node, taken)
            taken.update(id(n) for n in group)
            if len(group) >= self.min_size:
                groups.append(group)
        if not groups:
            return False
        order = {id(n): i for i, n in enumerate(nodes)}
        changed = False
        for group in groups:
            group.sort(key=lambda n: order[id(n)])
            if not rewrite_budget.allow(lambda: f"{self.name}: {len(group)} ops ending at {group[-1].describe()}"):
                break
            self._fuse(graph, group)
            changed = True
        return changed

    def _fuse(self, graph: Graph, group: list[Node]) -> None:
        root = group[-1]
        inside = {id(n) for n in group}
        region = Graph("fused")
        mapping: dict[int, Value] = {}
        operands: list[Value] = []
        for n in group:
            for v in n.inputs:
                if id(v) in mapping or (v.producer is not None and id(v.producer) in inside):
                    continue
                if _is_scalar_const(v):
                    mapping[id(v)] = region.const(v.const_value, name=v.producer.attrs["name"])
                else:
                    mapping[id(v)] = region.add_input(v.type, v.name)
                    operands.append(v)
        for n in group:
            made = region.make(n.op, [mapping[id(v)] for v in n.inputs], n.attrs, meta=n.meta,
                               output_types=[o.type for o in n.outputs])
            mapping[id(n.outputs[0])] = made.outputs[0]
        region.set_outputs([mapping[id(root.outputs[0])]])
        fused = graph.make("fusion", operands, {"kind": "elementwise"}, regions=[region], before=root,
                           meta=provenance(root, self.name, "elementwise"))
        graph.replace(root, [fused.outputs[0]])
        consts = [v.producer for n in group for v in n.inputs if _is_scalar_const(v)]
        for n in reversed(group[:-1]):
            graph.remove(n)
        remove_dead(graph, consts)


fuse_elementwise = register_pass("fuse_elementwise")(FuseElementwise())
