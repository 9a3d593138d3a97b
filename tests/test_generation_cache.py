"""The onnxruntime decode session over shared past / present buffers (``accelir.generation_cache``).

The rewrite is session-only and applies where every present output is a GroupQueryAttention's over
its past input; anything else keeps the concat form, which transformers' tokens still check.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
import transformers as T
from onnx import TensorProto as TP
from onnx import helper as h

import accelir
from accelir.generation_cache import CAPACITY, share_cache_buffers
from accelir.lowering.onnx.model import to_onnx_external

CONFIG = dict(n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=64, initializer_range=0.2,
              bos_token_id=1, eos_token_id=2)
_cache: dict[str, object] = {}


def _model() -> torch.nn.Module:
    if "model" not in _cache:
        torch.manual_seed(0)
        _cache["model"] = T.GPT2LMHeadModel(T.GPT2Config(**CONFIG)).eval()
    return _cache["model"]


def _decode_proto() -> tuple[onnx.ModelProto, list[str], list[str]]:
    """The tiny GPT-2's decode graph as the session lowers it, and its past / present names."""
    if "cm" not in _cache:
        ids = torch.randint(3, 100, (1, 6), generator=torch.Generator().manual_seed(1))
        _cache["cm"] = accelir.optimize(_model(), (ids,), backend="onnxruntime")
    graph = _cache["cm"].decode_graph
    proto, _ = to_onnx_external(graph)
    return proto, [v.name for v in graph.inputs[3:]], [v.name for v in graph.outputs[1:]]


def _readers(proto: onnx.ModelProto, name: str) -> list[onnx.NodeProto]:
    return [n for n in proto.graph.node if name in n.input]


def test_the_shared_form_declares_the_capacity_and_reads_the_past_length_from_the_mask():
    proto, past, present = _decode_proto()
    # the concat form reads the past's length from its shape (positions, the kernel's sequence lengths)
    assert any(n.op_type == "Shape" for n in _readers(proto, past[0]))
    shared = share_cache_buffers(proto, past, present)
    assert shared is not proto
    declared = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
                for v in list(shared.graph.input) + list(shared.graph.output)}
    for name in past + present:
        assert declared[name][2] == CAPACITY
    for name in past:
        assert {n.op_type for n in _readers(shared, name)} == {"GroupQueryAttention"}
    # the concat form's own file is untouched
    assert all(declared_dim != CAPACITY for v in proto.graph.input
               for declared_dim in [d.dim_param for d in v.type.tensor_type.shape.dim])


def test_a_past_read_by_another_op_keeps_the_concat_form():
    proto, past, present = _decode_proto()
    proto.graph.node.append(h.make_node("Identity", [past[1]], ["extra"]))
    proto.graph.output.append(h.make_tensor_value_info("extra", TP.FLOAT, None))
    assert share_cache_buffers(proto, past, present) is proto


def test_a_present_made_by_a_concat_keeps_the_concat_form():
    cache = ["batch", 2, "past", 16]
    g = h.make_graph(
        [h.make_node("Concat", ["past_key_0", "new"], ["present_key_0"], axis=2)], "step",
        [h.make_tensor_value_info("input_ids", TP.INT64, ["batch", "seq"]),
         h.make_tensor_value_info("attention_mask", TP.INT64, ["batch", "past+seq"]),
         h.make_tensor_value_info("past_key_0", TP.FLOAT, cache),
         h.make_tensor_value_info("new", TP.FLOAT, ["batch", 2, "seq", 16])],
        [h.make_tensor_value_info("present_key_0", TP.FLOAT, ["batch", 2, "past+seq", 16])])
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    assert share_cache_buffers(model, ["past_key_0"], ["present_key_0"]) is model


def test_attention_that_does_not_fuse_keeps_the_concat_form_and_transformers_tokens():
    model = _model()
    ids = torch.randint(3, 100, (3, 6), generator=torch.Generator().manual_seed(2))
    mask = torch.ones(3, 6, dtype=torch.long)
    mask[0, :2] = 0
    cm = accelir.optimize(model, (ids[:1],), backend="onnxruntime", level=0)  # no fusion: no GroupQueryAttention
    assert "group_query_attention" not in cm.decode_graph.op_histogram()
    assert not cm._stepper.shared
    # each step allocates its one-token-longer present: the CPU arena keeps those allocations from the system
    assert cm._stepper.decode_session.get_session_options().enable_cpu_mem_arena
    with torch.no_grad():
        want = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=8, min_new_tokens=8,
                              pad_token_id=0)
    assert torch.equal(cm.generate(ids, attention_mask=mask, max_new_tokens=8, min_new_tokens=8), want)
    assert cm._stepper.present[0].shape()[2] == 6 + 8 - 1  # a present as long as its tokens, made each step


def test_gpt2_attention_takes_its_projection_packed_and_gives_transformers_tokens():
    # q, k and v are slices of c_attn's output in that order: the kernel reads them packed, and the
    # Split onnxruntime would run each step for them is not made
    proto, _, _ = _decode_proto()
    attentions = [n for n in proto.graph.node if n.op_type == "GroupQueryAttention"]
    assert len(attentions) == CONFIG["n_layer"] and all(list(n.input[1:3]) == ["", ""] for n in attentions)
    assert not [n for n in proto.graph.node if n.op_type in ("Split", "Slice")]
    model, cm = _model(), _cache["cm"]
    ids = torch.randint(3, 100, (3, 6), generator=torch.Generator().manual_seed(4))
    mask = torch.ones(3, 6, dtype=torch.long)
    mask[1, :3] = 0
    with torch.no_grad():
        want = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=10, min_new_tokens=10,
                              pad_token_id=0)
    assert torch.equal(cm.generate(ids, attention_mask=mask, max_new_tokens=10, min_new_tokens=10), want)


def test_a_present_read_inside_the_graph_keeps_the_concat_form():
    # the shared present is the whole capacity-sized buffer: a node reading it would see the capacity's
    # rows, not the past's and the new tokens'
    proto, past, present = _decode_proto()
    proto.graph.node.append(h.make_node("Shape", [present[0]], ["present_shape"]))
    proto.graph.output.append(h.make_tensor_value_info("present_shape", TP.INT64, [4]))
    assert share_cache_buffers(proto, past, present) is proto



def test_a_cache_tensor_declared_without_its_four_dims_keeps_the_concat_form():
    # the rewrite declares the length axis (2) of each past and present: one without that axis is not a
    # cache it knows, and is left as it is rather than failing inside the rewrite
    proto, past, present = _decode_proto()
    for value in proto.graph.output:
        if value.name == present[0]:
            value.type.tensor_type.ClearField("shape")
    assert share_cache_buffers(proto, past, present) is proto
