"""Merge sibling projections of one input into a single wider ``linear``.

Rewrites, when two or more ``linear`` / ``matmul`` nodes read the same ``x`` with
constant 2-D weights of one dtype and the same activation::

    y1 = linear(x, W1, b1);  y2 = linear(x, W2, b2);  y3 = matmul(x, W3)
    ->  y = linear(x, concat(W1, W2, W3), concat(b1, b2, 0));  yi = slice(y, last axis)

One GEMM over the concatenated weights replaces several narrower ones (the query,
key and value projections of an attention block, the gate and up projections of a
gated MLP), and a packed query/key/value projection is what ONNX Runtime's fused
``Attention`` kernel reads.  Members keep the order in which they appear in the
graph; a member without a bias gets zeros when another has one.  The concatenated
weights are new constants (the originals stay where other nodes still read them);
weights are never copied into float64, so the merge is exact.

Projections that each reach one fused ``attention`` through nothing but their head
split (a reshape and a transpose) are left alone: the ONNX lowering reads them as
MultiHeadAttention's separate inputs at the speed of the packed form, and merging
would hold a second copy of weights the caller's model already owns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from accelir.ir import Graph, Node, Value
from accelir.ops.nn import split_heads

from .pattern import NearMiss, holds_qdq, provenance, qdq_group_member, remove_dead, rewrite_budget
from .recognizers import channel_vector
from .registry import register_pass

__all__ = ["FuseParallelLinear", "fuse_parallel_linear"]


def _member(node: Node, qdq: bool) -> tuple[Value, np.ndarray, np.ndarray | None, str] | str | None:
    """``(x, W, b, activation)`` of a projection that can join a merge, a reason it cannot, or None
    when the node is no projection at all.  ``qdq``: whether the program holds QDQ groups at all."""
    if node.op == "linear":
        activation = node.attrs["activation"]
    elif node.op == "matmul":
        activation = "none"
    else:
        return None
    x, w_v = node.inputs[0], node.inputs[1]
    if w_v.rank != 2 or x.rank < 1:
        return None
    w = w_v.const_value
    if w is None:
        return "the weight is not a constant"
    member = qdq_group_member(node) if qdq else None
    if member is not None:
        return f"{member.describe()} is part of a quantised (QDQ) group"
    b = None
    if len(node.inputs) == 3:
        b = node.inputs[2].const_value
        if b is None:
            return "the bias is not a constant"
        b = channel_vector(b, w.shape[1])
    return x, w, b, activation


def _attention_reader(v: Value) -> Node | None:
    """The ``attention`` that reads ``v`` through nothing but its head split (``split_heads``, the
    form the ONNX lowering reads projections from), else None."""
    for op in ("reshape", "transpose"):
        users = v.users()
        if len(users) != 1 or users[0].op != op or v.is_graph_output:
            return None
        v = users[0].output
    if split_heads(v) is None:
        return None
    users = v.users()
    return users[0] if len(users) == 1 and users[0].op == "attention" and not v.is_graph_output else None


@dataclass(frozen=True)
class FuseParallelLinear:
    """The pass: ``FuseParallelLinear()(graph) -> changed``; ``verbose`` records near misses."""

    name: str = "fuse_parallel_linear"
    verbose: bool = False
    near_misses: list[NearMiss] = field(default_factory=list, compare=False, hash=False, repr=False)

    @property
    def __name__(self) -> str:
        return self.name

    def __call__(self, graph: Graph) -> bool:
        self.near_misses.clear()
        return self._run(graph, holds_qdq(graph))

    def _run(self, graph: Graph, qdq: bool) -> bool:
        changed = False
        groups: dict[tuple, list[tuple[Node, np.ndarray, np.ndarray | None]]] = {}
        for node in list(graph.nodes):
            for r in node.regions:
                changed |= self._run(r, qdq)
            got = _member(node, qdq)
            if got is None:
                continue
            if isinstance(got, str):
                if self.verbose and node.inputs[0].num_uses > 1:
                    self.near_misses.append(NearMiss(self.name, f"{node.op}: {got}", node))
                continue
            x, w, b, activation = got
            groups.setdefault((id(x), w.shape[0], w.dtype.str, activation), []).append((node, w, b))
        for members in groups.values():
            if len(members) < 2:
                continue
            readers = [_attention_reader(n.output) for n, _, _ in members]
            if readers[0] is not None and all(r is readers[0] for r in readers):
                if self.verbose:
                    self.near_misses.append(NearMiss(
                        self.name, "the projections feed one fused attention through their head split alone",
                        members[0][0]))
                continue
            if not rewrite_budget.allow(
                    lambda m=members: f"{self.name}: {len(m)} projections of {m[0][0].inputs[0]!r} "
                                      f"at {m[0][0].describe()}"):
                return changed
            self._rewrite(graph, members)
            changed = True
        return changed

    def _rewrite(self, graph: Graph, members: list[tuple[Node, np.ndarray, np.ndarray | None]]) -> None:
        first = members[0][0]
        x = first.inputs[0]
        activation = first.attrs.get("activation", "none")
        widths = [w.shape[1] for _, w, _ in members]
        w = np.concatenate([w for _, w, _ in members], axis=1)
        biases = [bias for _, _, bias in members]
        b = None
        if any(bias is not None for bias in biases):
            b = np.concatenate([bias if bias is not None else np.zeros(n, w.dtype) for bias, n in zip(biases, widths)])
        build = graph.builder(before=first, meta=provenance(first, self.name, "linear"))
        base = first.inputs[1].producer.attrs["name"]  # the weight is a constant
        operands = [x, build.const(w, name=f"{base}_merged")]
        if b is not None:
            operands.append(build.const(b, name=f"{base}_merged_bias"))
        y = build.op("linear", *operands, activation=activation)
        axis = y.rank - 1
        offsets = np.cumsum([0] + widths)
        parts = [build.op("slice", y, starts=[int(offsets[i])], stops=[int(offsets[i + 1])], axes=[axis])
                 for i in range(len(members))]
        for (node, _, _), part in zip(members, parts):
            node.output.replace_all_uses_with(part)
            remove_dead(graph, [node])  # and its weight constants, once nothing else reads them


fuse_parallel_linear = register_pass("fuse_parallel_linear")(FuseParallelLinear())
