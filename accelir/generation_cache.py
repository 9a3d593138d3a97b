"""The onnxruntime generation session over one capacity-sized cache buffer per key / value and layer.

onnxruntime's GroupQueryAttention (com.microsoft) shares its past and present when they are one
buffer: with ``past_key`` bound as an input and ``present_key`` as an output to the same
``[batch, kv_heads, capacity, head_dim]`` OrtValue (the CPU kernel compares the two data pointers),
it writes only the new tokens' keys and values, at row ``seqlens_k + 1 - new`` of each sequence, and
attends over the first ``total_sequence_length`` rows, the buffer's stride being the capacity.  The
present it returns is the buffer itself: its length is ``max(total_sequence_length, capacity)``.
Without sharing, each step allocates a present one token longer than the past and copies the whole
past into it.  onnxruntime-genai binds its caches this way (``past_present_share_buffer``), the prompt
included: the prompt is the kernel's first prompt (new tokens == ``total_sequence_length``), which
writes the buffer from row 0.  ``attention_bias`` keeps the shape the kernel checks, ``[batch or 1,
heads or 1, new, total_sequence_length]``: the mask of the valid rows, not of the capacity.

accelir's decode graph keeps the cache in concat form: ``past_*`` ``[batch, kv, past, head_dim]`` in,
``present_*`` ``[batch, kv, past+seq, head_dim]`` out, as ``cm.export`` writes it and plain
onnxruntime runs it.  :func:`share_cache_buffers` rewrites its lowered ONNX model for accelir's own
session (a session-only rewrite, as :func:`accelir.generation.in_place_cache` is for XLA):

- each ``past_*`` input and ``present_*`` output is declared ``[batch, kv, capacity, head_dim]``;
- every read of the past's length (a ``Shape`` of a past input's axis 2: the positions of the causal
  mask, the kernel's ``seqlens_k`` and ``total_sequence_length``) reads the valid past length instead:
  ``attention_mask``'s length less ``input_ids``' (the mask covers the past and the new tokens).

It applies where every present output is made by a GroupQueryAttention over the matching past input
and read by no node, and nothing else reads a past input but those kernels and ``Shape`` nodes; otherwise (attention that
did not fuse into the kernel, a cast between the cache and the kernel) the model is returned as it
is and the session keeps the concat form.  With an empty past (capacity 0) the rewritten model
computes what the concat form does, so ``cm(...)`` runs the prompt through the same session.
"""

from __future__ import annotations

from typing import Any, Sequence

import onnx
from onnx import helper

from .lowering.onnx.context import names_read
from .lowering.onnx.kernels import MS_DOMAIN

__all__ = ["CAPACITY", "share_cache_buffers", "shares_cache"]

#: the symbolic length of the shared past / present buffers in the rewritten model
CAPACITY = "capacity"

_LENGTH_AXIS = 2  # [batch, kv_heads, length, head_dim]


def shares_cache(model: Any) -> bool:
    """Whether an ONNX model, or the model an onnxruntime session runs, is one :func:`share_cache_buffers`
    rewrote."""
    if isinstance(model, onnx.ModelProto):
        shapes = [[d.dim_param for d in i.type.tensor_type.shape.dim] for i in model.graph.input]
    else:
        shapes = [i.shape for i in model.get_inputs()]
    return any(len(s) == 4 and s[_LENGTH_AXIS] == CAPACITY for s in shapes)


def share_cache_buffers(model: onnx.ModelProto, past: Sequence[str], present: Sequence[str],
                        total: str = "attention_mask", new: str = "input_ids") -> onnx.ModelProto:
    """``model`` over shared past / present buffers (see the module doc), or ``model`` itself where its
    cache does not go through GroupQueryAttention alone.  ``past[i]`` and ``present[i]`` are one cache
    tensor's input and output; ``total`` is the input whose axis 1 is past + new tokens, ``new`` the one
    whose axis 1 is the new tokens."""
    graph = model.graph
    inputs = {i.name for i in graph.input}
    if not past or len(past) != len(present) or total not in inputs or new not in inputs \
            or not set(past) <= inputs or not _fused(graph, dict(zip(present, past))):
        return model
    declared = {v.name: v.type.tensor_type for v in list(graph.input) + list(graph.output)}
    if any(name not in declared or len(declared[name].shape.dim) != 4 for name in [*past, *present]):
        return model  # not a [batch, kv_heads, length, head_dim] cache: no length axis to declare
    # a shared present is the whole capacity-sized buffer: a node reading it would see the capacity's rows
    if any(set(present) & names_read(node) for node in graph.node):
        return model
    length_reads = _length_reads(graph, set(past))
    if length_reads is None:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    _rewrite(out.graph, set(past), set(present), length_reads, total, new)
    return out


def _fused(graph: onnx.GraphProto, past_of: dict[str, str]) -> bool:
    """Whether each present output is output 1 (keys) or 2 (values) of a GroupQueryAttention whose input
    3 or 4 is the matching past input."""
    found = {}
    for node in graph.node:
        if node.op_type != "GroupQueryAttention" or node.domain != MS_DOMAIN:
            continue
        for out_index, in_index in ((1, 3), (2, 4)):
            if len(node.output) > out_index and node.output[out_index] in past_of:
                found[node.output[out_index]] = node.input[in_index] if len(node.input) > in_index else ""
    return all(found.get(name) == source for name, source in past_of.items())


def _length_reads(graph: onnx.GraphProto, past: set[str]) -> list[int] | None:
    """Indices of the nodes that read a past input's length (``Shape`` of axis 2 alone), or None when a
    past input has a reader other than GroupQueryAttention (as past key / value) and ``Shape``."""
    reads = []
    for index, node in enumerate(graph.node):
        read = [i for i, name in enumerate(node.input) if name in past]
        if not read:
            if past & names_read(node):  # a control-flow body's read from the outer scope
                return None
            continue
        if node.op_type == "GroupQueryAttention" and node.domain == MS_DOMAIN and set(read) <= {3, 4}:
            continue
        if node.op_type != "Shape" or node.domain not in ("", "ai.onnx"):
            return None
        span = _shape_span(node)
        if span == (_LENGTH_AXIS, _LENGTH_AXIS + 1):
            reads.append(index)
        elif span is None or span[0] <= _LENGTH_AXIS < span[1]:
            return None  # a shape that holds the length among other dims
    return reads


def _shape_span(node: onnx.NodeProto) -> tuple[int, int] | None:
    """The axes [start, end) a Shape node of a rank-4 input returns."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    start, end = attrs.get("start", 0), attrs.get("end", 4)
    start, end = (a + 4 if a < 0 else a for a in (start, end))
    return (max(start, 0), min(end, 4)) if start < end else None


def _rewrite(graph: onnx.GraphProto, past: set[str], present: set[str], length_reads: list[int], total: str,
             new: str) -> None:
    """In place: the cache's declared length becomes ``capacity`` and each read of the past's length
    becomes the valid length, ``len(total) - len(new)``."""
    stale = [v for v in graph.value_info if v.name in past or v.name in present]
    for v in stale:
        graph.value_info.remove(v)
    for value in list(graph.input) + list(graph.output):
        if value.name in past or value.name in present:
            dim = value.type.tensor_type.shape.dim[_LENGTH_AXIS]
            dim.Clear()
            dim.dim_param = CAPACITY
    if not length_reads:
        return
    valid = "shared_cache_past_length"
    lengths = [helper.make_node("Shape", [name], [f"{valid}_{name}"], start=1, end=2) for name in (total, new)]
    nodes = lengths + [helper.make_node("Sub", [f"{valid}_{total}", f"{valid}_{new}"], [valid])]
    for index in length_reads:
        old = graph.node[index]
        graph.node[index].CopyFrom(helper.make_node("Identity", [valid], list(old.output), name=old.name))
    for node in reversed(nodes):  # first: the inputs they read are there from the start
        graph.node.insert(0, node)
