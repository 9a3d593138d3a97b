"""One copy of the weights on the onnxruntime generation path.

One session runs the prompt (through the decode graph, over an empty past) and every step, so
the prepacked copy of the matmul weights that decoding needs is made once.  The session reads
the model's parameters in place (``add_initializer`` over views of torch's tensors), so a change
made in place after ``optimize`` to a table it gathers from shows in what it computes: eager torch
on the changed model is the oracle.  A copy of the weights would keep the old values.  A tied
embedding's ``transpose`` feeds the lm_head's FusedMatMul through transB, so onnxruntime does not fold it
into a copy.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import torch
import transformers as T

import accelir
from accelir.generation import GenerationModel
from accelir.lowering.onnx.model import to_onnx_external

# vocab 4096 x hidden 96: the tied lm_head's transpose (1.5 MiB) is over fold_constants' 1 MiB cap
CONFIG = dict(n_layer=2, n_embd=96, n_head=4, vocab_size=4096, n_positions=64, initializer_range=0.2,
              bos_token_id=1, eos_token_id=2)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return T.GPT2LMHeadModel(T.GPT2Config(**CONFIG)).eval()


def _compiled(model: torch.nn.Module) -> GenerationModel:
    ids = torch.randint(0, CONFIG["vocab_size"], (1, 6), generator=torch.Generator().manual_seed(1))
    cm = accelir.optimize(model, (ids,), backend="onnxruntime")
    assert isinstance(cm, GenerationModel)
    return cm


def _perturb(params: list[torch.nn.Parameter], seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn(p.shape, generator=g) * 0.5)


def test_the_prompt_reads_the_position_table_in_place():
    # the session prepacks its matmul weights (a copy it needs for speed), so only a table it gathers
    # from changes here; cm(...) runs the prompt through the one session
    model = _model()
    cm = _compiled(model)
    _perturb([model.transformer.wpe.weight], seed=2)
    ids = torch.randint(0, CONFIG["vocab_size"], (2, 7), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = model(ids).logits.numpy()
    got = cm(ids).logits.numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_generation_reads_the_position_table_in_place():
    model = _model()
    cm = _compiled(model)
    _perturb([model.transformer.wpe.weight], seed=4)
    ids = torch.randint(0, CONFIG["vocab_size"], (1, 5), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=12,
                              min_new_tokens=12, pad_token_id=0)
    assert torch.equal(cm.generate(ids, max_new_tokens=12, min_new_tokens=12), want)


def test_tied_lm_head_is_read_through_trans_b():
    cm = _compiled(_model())
    for graph in (cm.graph, cm.decode_graph):
        proto, weights = to_onnx_external(graph)
        big = {n for n, a in weights.items() if a.shape == (CONFIG["vocab_size"], CONFIG["n_embd"])}
        assert len(big) == 1
        readers = [n for n in proto.graph.node if big & set(n.input)]
        assert sorted(n.op_type for n in readers) == ["FusedMatMul", "Gather"]  # [B, S, H] @ W^T, no bias
        gemm = next(n for n in readers if n.op_type == "FusedMatMul")
        assert {a.name: onnx.helper.get_attribute_value(a) for a in gemm.attribute}.get("transB") == 1


def _sessions(root: object) -> list:
    """The onnxruntime sessions an object holds, through accelir's objects and plain containers."""
    found, seen, todo = [], set(), [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, onnxruntime.InferenceSession):
            found.append(obj)
        elif isinstance(obj, dict):
            todo += list(obj.values())
        elif isinstance(obj, (list, tuple)):
            todo += list(obj)
        elif type(obj).__module__.startswith("accelir") and hasattr(obj, "__dict__"):
            todo += list(vars(obj).values())
    return found


def _prepacks(session: onnxruntime.InferenceSession) -> bool:
    try:
        return session.get_session_options().get_session_config_entry("session.disable_prepacking") != "1"
    except RuntimeError:  # never set: onnxruntime's default, prepacking on
        return True


def test_one_session_with_prepacked_weights_runs_the_prompt_and_the_steps():
    # a prepacked copy is the weights' size again: the prompt and the steps share the one copy
    model = _model()
    cm = _compiled(model)
    sessions = _sessions(cm)
    assert len(sessions) == 1 and _prepacks(sessions[0])
    # without the CPU arena: over the shared cache buffers no step allocates a cache, and the arena's bins
    # would only keep freed activations (the concat form keeps it: tests/test_generation_cache.py)
    assert not sessions[0].get_session_options().enable_cpu_mem_arena
    ids = torch.randint(3, CONFIG["vocab_size"], (3, 6), generator=torch.Generator().manual_seed(6))
    mask = torch.ones(3, 6, dtype=torch.long)
    mask[0, :2] = 0  # left padding: the prompt's causal mask and pads inside the one kernel
    with torch.no_grad():
        want = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=8, min_new_tokens=8,
                              pad_token_id=0)
    assert torch.equal(cm.generate(ids, attention_mask=mask, max_new_tokens=8, min_new_tokens=8), want)


def test_a_zero_dimensional_feed_reaches_the_session_as_it_is():
    """The step's feeds go to the io binding as C-contiguous arrays; a 0-d one (a flax cache index, a
    scale) must stay 0-d, where np.ascontiguousarray would have made it shape [1] and onnxruntime would
    refuse the rank."""
    from types import SimpleNamespace

    from onnx import TensorProto as TP
    from onnx import helper as h

    from accelir.generation import OrtSteps
    g = h.make_graph([h.make_node("Mul", ["ids", "s"], ["logits"]), h.make_node("Identity", ["s"], ["present"])],
                     "g", [h.make_tensor_value_info("ids", TP.FLOAT, [1, 2, 3]), h.make_tensor_value_info("s", TP.FLOAT, [])],
                     [h.make_tensor_value_info("logits", TP.FLOAT, [1, 2, 3]),
                      h.make_tensor_value_info("present", TP.FLOAT, [])])
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    runner = SimpleNamespace(session=session, device="cpu", input_names=["ids", "s"],
                             output_names=["logits", "present"])
    steps = OrtSteps(runner)
    ids = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    last = steps._run(session, (ids, np.array(2.0, np.float32)), [])
    np.testing.assert_array_equal(last, ids[:, -1, :] * 2)
    assert steps.present[0].shape() == []


def test_the_steps_write_one_capacity_sized_buffer_per_cache_tensor():
    # the prompt and every step read and write one OrtValue per cache tensor, allocated once at the
    # capacity: GroupQueryAttention writes the new token's keys and values into it, so no step allocates
    # a cache or copies one; eager torch's cache is the oracle for what the buffers hold
    model = _model()
    steps = _compiled(model)._stepper
    fed = torch.randint(3, CONFIG["vocab_size"], (1, 5), generator=torch.Generator().manual_seed(7)).numpy()
    logits = steps.prefill(fed, np.ones_like(fed), np.arange(5)[None], 16)
    buffers = [v.data_ptr() for v in steps.present]  # the prompt's present: the buffers of the whole generation
    assert len(buffers) == 4
    for _ in range(6):
        n = fed.shape[1]
        fed = np.concatenate([fed, logits.argmax(-1)[:, None]], axis=1)
        logits = steps.decode(fed[:, -1:], np.ones((1, n + 1), np.int64), np.array([[n]]))
        assert [v.data_ptr() for v in steps.present] == buffers
        assert all(v.shape() == [1, CONFIG["n_head"], 16, CONFIG["n_embd"] // CONFIG["n_head"]] for v in steps.present)
    with torch.no_grad():
        out = model(torch.from_numpy(fed), use_cache=True)
    np.testing.assert_allclose(logits, out.logits[:, -1].numpy(), rtol=1e-4, atol=1e-4)
    want = [t.numpy() for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
    for buffer, cache in zip(steps.present, want):
        held = buffer.numpy()
        np.testing.assert_allclose(held[:, :, :fed.shape[1]], cache, rtol=1e-4, atol=1e-4)
        assert not held[:, :, fed.shape[1]:].any()  # the rows past the tokens so far: never written
