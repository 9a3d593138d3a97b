"""Fuse a residual add into the normalisation that reads it (skip layer / RMS norm).

Rewrites::

    s = add(x, skip);  y = layer_norm(s, scale, bias)  -> y, s = skip_layer_norm(x, skip, scale, bias)
    s = add(x, skip);  y = rms_norm(s, scale)          -> y, s = skip_rms_norm(x, skip, scale)

The sum stays available as the fused node's second output: every reader of ``s``
after the norm (the next residual add in a transformer block) reads it from there,
and the add disappears.  Readers between the add and the norm keep the add.

This pass is not a rule set: the rewrite replaces two values (``y`` and ``s``), so it
walks the norms itself, asking the global rewrite budget before each rewrite like
every rule does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from accelir.ir import Graph, Node

from .pattern import NearMiss, holds_qdq, provenance, qdq_group_member, rewrite_budget
from .registry import register_pass

__all__ = ["FuseSkipNorm", "fuse_skip_norm"]

_SKIP_OF = {"layer_norm": "skip_layer_norm", "rms_norm": "skip_rms_norm"}
# how far after the add a reader is looked for before the norm; readers further back keep the add
_SCAN_LIMIT = 256


def _readers_before(add: Node, norm: Node) -> set[int] | None:
    """Ids of the nodes strictly between ``add`` and ``norm``; None when the norm is too far."""
    seen: set[int] = set()
    n = add.next
    while n is not None and n is not norm:
        if len(seen) >= _SCAN_LIMIT:
            return None
        seen.add(id(n))
        n = n.next
    return seen


@dataclass(frozen=True)
class FuseSkipNorm:
    """The pass: ``FuseSkipNorm()(graph) -> changed``; ``verbose`` records near misses."""

    name: str = "fuse_skip_norm"
    verbose: bool = False
    near_misses: list[NearMiss] = field(default_factory=list, compare=False, hash=False, repr=False)

    def __call__(self, graph: Graph) -> bool:
        self.near_misses.clear()
        return self._run(graph, holds_qdq(graph))

    @property
    def __name__(self) -> str:
        return self.name

    def _miss(self, node: Node, reason: str) -> None:
        if self.verbose:
            self.near_misses.append(NearMiss(_SKIP_OF[node.op], reason, node))

    def _run(self, graph: Graph, qdq: bool) -> bool:
        changed = False
        for norm in list(graph.nodes):
            for r in norm.regions:
                changed |= self._run(r, qdq)
            if norm.op not in _SKIP_OF or norm.graph is not graph:
                continue
            s = norm.inputs[0]
            add = s.producer
            if add is None or add.op != "add":
                continue
            a, b = add.inputs
            if a.shape == s.shape:
                x, skip = a, b
            elif b.shape == s.shape:
                x, skip = b, a
            else:
                self._miss(norm, "neither operand of the residual add has the sum's shape")
                continue
            member = (qdq_group_member(norm) or qdq_group_member(add)) if qdq else None
            if member is not None:
                self._miss(norm, f"{member.describe()} is part of a quantised (QDQ) group")
                continue
            if not rewrite_budget.allow(lambda: f"{self.name}: {_SKIP_OF[norm.op]} at {norm.describe()}"):
                return changed
            self._rewrite(graph, norm, add, x, skip)
            changed = True
        return changed

    def _rewrite(self, graph: Graph, norm: Node, add: Node, x, skip) -> None:
        op = _SKIP_OF[norm.op]
        fused = graph.make(op, [x, skip, *norm.inputs[1:]], norm.attrs, before=norm,
                           meta=provenance(norm, self.name, op))
        y, s = fused.outputs
        norm.output.replace_all_uses_with(y)
        graph.remove(norm)
        before = _readers_before(add, fused)
        total = add.output
        for user, i in total.uses():
            if before is not None and id(user) not in before:
                user.replace_input(i, s)
        if before is not None:
            for k, o in enumerate(graph.outputs):
                if o is total:
                    graph.outputs[k] = s
        if not total.uses() and not total.is_graph_output:
            graph.remove(add)


fuse_skip_norm = register_pass("fuse_skip_norm")(FuseSkipNorm())
