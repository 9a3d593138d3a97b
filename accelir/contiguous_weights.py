"""Weights a contraction reads through a transpose, held transposed (the XLA decode step's lm head).

A tied lm head (GPT-2, Qwen2-0.5B) is ``linear(x, transpose(embedding))``: the embedding table
``[vocab, hidden]`` also feeds the token lookup, so constant folding leaves the transpose in place
rather than hold the table twice (:mod:`accelir.passes.fold_constants` never grows a model).  XLA:CPU
then contracts the table along its rows, one output a horizontal dot product of a row: for GPT-2
small's 147 MiB table that took 7.98 ms a token against 6.96 ms for the same dot over a ``[hidden,
vocab]`` copy (numpy's sum of the table, a read of its memory: 6.48 ms; one thread, same process).
The decode step reads its weights once per token, so it trades the copy's memory (the table once
more) for the time: this rewrite is for that step, not for graphs in general.
"""

from __future__ import annotations

import numpy as np

from accelir.ir import Graph, Node

__all__ = ["hold_weights_transposed"]

_READERS = frozenset({"linear", "matmul"})  # ops whose operand 1 is the [K, N] weight of a row-major dot


def hold_weights_transposed(graph: Graph) -> int:
    """Replace each 2-d ``transpose`` of a constant whose readers are all contractions reading it as their
    weight by a constant holding the transposed array (contiguous); returns the bytes added."""
    added = 0
    for node in list(graph.nodes):
        if node.graph is graph and _weight_transpose(node):
            arr = node.inputs[0].const_value
            folded = graph.const(np.ascontiguousarray(arr.T), name=f"{node.inputs[0].producer.attrs['name']}_t",
                                 before=node, meta=node.meta)
            node.output.replace_all_uses_with(folded)
            producer = node.inputs[0].producer
            graph.remove(node)
            if not producer.output.num_uses and not producer.output.is_graph_output:
                graph.remove(producer)
            added += arr.nbytes
    return added


def _weight_transpose(node: Node) -> bool:
    if node.op != "transpose" or node.output.rank != 2 or tuple(node.attrs["perm"]) != (1, 0):
        return False
    source = node.inputs[0].producer
    if source is None or source.op != "constant" or node.inputs[0].const_value is None:
        return False
    readers = [(u, i) for u in node.output.users() for i, x in enumerate(u.inputs) if x is node.output]
    return bool(readers) and not node.output.is_graph_output and all(
        u.op in _READERS and i == 1 for u, i in readers)
