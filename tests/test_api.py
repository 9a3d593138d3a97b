"""accelir.optimize end to end: every model kind, both backends, output structure,
input checks, export formats, and no mutation or global state leaking out."""

from __future__ import annotations

import copy
import gc

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2Model

import accelir
from accelir import AccelirError
from accelir.errors import NumericMismatchError
from accelir.testing import onnxruntime_outputs, relative_error


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    model = GPT2Model(GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=32,
                                 use_cache=False)).eval()
    ids = torch.randint(0, 100, (2, 8))
    return model, ids


@pytest.mark.parametrize("backend", ["onnxruntime", "xla"])
def test_torch_model_keeps_model_output_and_matches_eager(gpt2, backend):
    model, ids = gpt2
    before = copy.deepcopy(model.state_dict())
    cm = accelir.optimize(model, (ids,), backend=backend)
    out = cm(ids)
    with torch.no_grad():
        ref = model(ids)
    assert type(out).__name__ == type(ref).__name__
    assert isinstance(out.last_hidden_state, torch.Tensor)
    assert relative_error(out.last_hidden_state, ref.last_hidden_state) < 1e-4
    assert cm.report.nodes_after < cm.report.nodes_before
    assert "attention" in cm.graph.op_histogram()
    assert cm.source_graph.num_nodes() == cm.report.nodes_before
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert not model.training


def test_wrong_batch_size_names_the_input_and_dim(gpt2):
    model, ids = gpt2
    cm = accelir.optimize(model, (ids,))
    with pytest.raises(AccelirError, match=r"input 0 .*dim 0 is 3.*captured with 2"):
        cm(torch.randint(0, 100, (3, 8)))


def test_dynamic_batch_serves_other_sizes(gpt2):
    model, ids = gpt2
    batch = torch.export.Dim("batch", min=1, max=16)
    cm = accelir.optimize(model, (ids,), dynamic_shapes=({0: batch},))
    ids3 = torch.randint(0, 100, (3, 8))
    with torch.no_grad():
        ref = model(ids3).last_hidden_state
    assert relative_error(cm(ids3).last_hidden_state, ref) < 1e-4


def test_jax_function_returns_pytree_of_jax_arrays():
    def fn(params, x):
        h = jnp.tanh(x @ params["w"] + params["b"])
        return {"h": h, "sum": h.sum(-1)}

    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.standard_normal((4, 3)), jnp.float32), "b": jnp.zeros(3, jnp.float32)}
    x = jnp.asarray(rng.standard_normal((2, 4)), jnp.float32)
    ref = jax.jit(fn)(params, x)
    for backend in ("xla", "onnxruntime"):
        out = accelir.optimize(fn, (params, x), backend=backend)(params, x)
        assert set(out) == {"h", "sum"}
        assert relative_error(out["h"], ref["h"]) < 1e-5
        assert relative_error(out["sum"], ref["sum"]) < 1e-5


def test_graph_and_numpy_inputs_give_numpy():
    g = accelir.parse("""graph main(%x: f32[2,3]) -> (f32[2,3]) {
  %0 = exp(%x) : f32[2,3]
  %1 = log(%0) : f32[2,3]
  return %1
}
""")
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    cm = accelir.optimize(g, (x,), level=1)
    out = cm(x)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, x, rtol=1e-5, atol=1e-6)
    assert g.num_nodes() == 2  # the caller's graph is untouched


def test_onnx_model_round_trip(tmp_path):
    import onnx
    from onnx import TensorProto, helper
    node = helper.make_node("Relu", ["x"], ["y"], name="relu0")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    path = tmp_path / "in.onnx"
    onnx.save(model, path)
    cm = accelir.optimize(str(path))
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    (y,) = cm(x)  # like InferenceSession.run, an ONNX model returns its list of outputs
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    out = cm.export(tmp_path / "out.onnx")
    m2 = onnx.load(out)
    assert [i.name for i in m2.graph.input] == ["x"] and [o.name for o in m2.graph.output] == ["y"]


def test_backend_auto_times_both_and_reports(gpt2):
    model, ids = gpt2
    cm = accelir.optimize(model, (ids,), backend="auto")
    assert set(cm.report.backends) == {"onnxruntime", "xla"}
    assert cm.backend == min(cm.report.backends, key=cm.report.backends.get)
    assert "chosen" in str(cm.report)


def test_export_formats_and_no_overwrite(gpt2, tmp_path):
    model, ids = gpt2
    cm = accelir.optimize(model, (ids,))
    for suffix, marker in ((".onnx", None), (".mlir", "stablehlo"), (".hlo", "HloModule"), (".air", "graph main"),
                           (".dot", "digraph"), (".html", "<svg")):
        path = cm.export(tmp_path / f"m{suffix}")
        if marker:
            with open(path, encoding="utf-8", errors="replace") as f:
                assert marker in f.read()
    with pytest.raises(FileExistsError):
        cm.export(tmp_path / "m.onnx")
    cm.export(tmp_path / "m.onnx", overwrite=True)
    with pytest.raises(AccelirError, match="unknown export format"):
        cm.export(tmp_path / "m.xyz")


def test_debug_options_reach_the_pass_manager(gpt2, tmp_path):
    model, ids = gpt2
    cm = accelir.optimize(model, (ids,), debug={"dump_dir": str(tmp_path / "dumps"), "check_numerics": True})
    dumps = sorted(p.name for p in (tmp_path / "dumps").iterdir())
    assert dumps[0].startswith("000-") and "report.txt" in dumps
    assert cm.report.passes is not None

    def add_to_sub(graph):  # wrong on purpose: check_numerics=True must name it
        for n in graph.nodes:
            if n.op == "add":
                graph.replace(n, list(graph.make("sub", list(n.inputs), before=n).outputs))
                return True
        return False
    with pytest.raises(NumericMismatchError, match="add_to_sub"):
        accelir.optimize(model, (ids,), passes=["dce", add_to_sub], debug={"check_numerics": True})
    with pytest.raises(AccelirError, match="no pass named 'no_such_pass'"):
        accelir.optimize(model, (ids,), passes=["no_such_pass"])


def test_no_global_state_leaks(gpt2):
    model, ids = gpt2
    state = (torch.get_default_dtype(), torch.get_num_threads(), torch.is_grad_enabled(),
             jax.config.jax_enable_x64, gc.isenabled(), gc.get_freeze_count())
    accelir.optimize(model, (ids,), backend="xla")(ids)
    accelir.optimize(model, (ids,), backend="onnxruntime")(ids)
    accelir.capture(model, (ids,))
    assert state == (torch.get_default_dtype(), torch.get_num_threads(), torch.is_grad_enabled(),
                     jax.config.jax_enable_x64, gc.isenabled(), gc.get_freeze_count())


def test_collector_skips_existing_objects_and_collects_new_garbage():
    """optimize() freezes the objects that existed before it for its duration: a full collection
    inside it sees none of them, still collects the cycles made inside, and the freeze is undone."""
    import weakref

    class Node:
        pass

    gc.collect()  # counts at zero: no automatic collection before the call starts
    old = Node()
    old.self = old
    old_ref = weakref.ref(old)
    del old  # cyclic garbage from before the call: frozen for the call's duration
    seen = {}

    def probe(x):
        new = Node()
        new.self = new
        new_ref = weakref.ref(new)
        del new
        seen["frozen"] = gc.get_freeze_count()
        gc.collect()
        seen["old alive"], seen["new alive"] = old_ref() is not None, new_ref() is not None
        return x * 2

    assert gc.get_freeze_count() == 0
    accelir.capture(probe, (np.ones(2, np.float32),))
    assert seen == {"frozen": seen["frozen"], "old alive": True, "new alive": False} and seen["frozen"] > 0
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert old_ref() is None  # back with the rest once the call returns

    # a caller's own freeze is left as it is
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        accelir.capture(probe, (np.ones(2, np.float32),))
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


def test_bad_arguments():
    with pytest.raises(AccelirError, match="unknown backend"):
        accelir.optimize(lambda x: x, (np.ones(2, np.float32),), backend="tvm")
    with pytest.raises(AccelirError, match="cannot capture"):
        accelir.capture(42)
    with pytest.raises(AccelirError, match="unknown file type"):
        accelir.capture("model.pt")


class Embedder(torch.nn.Module):
    """Token ids and an optional mask, as a language model takes them."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(10, 4)

    def forward(self, input_ids, attention_mask=None):
        h = self.emb(input_ids)
        if attention_mask is not None:
            h = h * attention_mask[..., None].to(h.dtype)
        return h.sum(-1)


@pytest.fixture(scope="module")
def embedder():
    torch.manual_seed(0)
    return Embedder().eval(), torch.tensor([[1, 2, 3]]), torch.tensor([[1, 1, 0]])


@pytest.mark.parametrize("backend", ["onnxruntime", "xla"])
def test_call_errors_name_the_inputs(embedder, backend):
    model, ids, mask = embedder
    cm = accelir.optimize(model, (ids, mask), backend=backend)
    expected = r"the model takes 2 inputs \(input_ids, attention_mask\)"
    cases = [((ids,), {}, "missing input attention_mask: " + expected + ", got 1"),
             ((ids, mask, mask), {}, expected + ", got 3"),
             ((None, mask), {}, r"input input_ids: got None; expected a tensor of dtype i64 and shape \[1, 3\]"),
             ((3, mask), {}, r"input input_ids: got a python int \(3\); expected a tensor of dtype i64"),
             ((ids, mask), {"token_type_ids": mask}, "unknown keyword argument 'token_type_ids': " + expected),
             ((ids,), {"input_ids": ids}, "input input_ids is given twice")]
    for args, kwargs, message in cases:
        with pytest.raises(accelir.InputError, match=f"^{message}") as info:
            cm(*args, **kwargs)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("backend", ["onnxruntime", "xla"])
def test_keyword_arguments_map_to_the_captured_signature(embedder, backend):
    model, ids, mask = embedder
    with torch.no_grad():
        ref = model(ids, mask)
    cm = accelir.optimize(model, (ids, mask), backend=backend)
    for args, kwargs in (((ids,), {"attention_mask": mask}), ((), {"input_ids": ids, "attention_mask": mask})):
        torch.testing.assert_close(cm(*args, **kwargs), ref)
    cm = accelir.optimize(model, (ids,), example_kwargs={"attention_mask": mask}, backend=backend)
    torch.testing.assert_close(cm(ids, mask), ref)
    cm = accelir.optimize(model, (ids,), backend=backend)  # captured without the mask
    torch.testing.assert_close(cm(ids, attention_mask=None), model(ids).detach())
    with pytest.raises(accelir.InputError, match="input attention_mask was not among the inputs the model was "
                       r"optimised with \(input_ids\); pass it in optimize's example inputs"):
        cm(ids, attention_mask=mask)


def test_jax_keyword_arguments_and_errors():
    def fn(x, scale=None, *, bias):
        y = jnp.tanh(x) + bias
        return y if scale is None else y * scale

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    ref = np.asarray(fn(x, bias=b))
    for backend in ("xla", "onnxruntime"):
        cm = accelir.optimize(fn, (x,), example_kwargs={"bias": b}, backend=backend)
        np.testing.assert_allclose(cm(x=x, bias=b), ref, rtol=1e-6)
        np.testing.assert_allclose(cm(x, None, bias=b), ref, rtol=1e-6)
        with pytest.raises(accelir.InputError, match=r"^unknown keyword argument 'z': the model takes 2 inputs "
                           r"\(x, bias\)$"):
            cm(x, bias=b, z=b)
        with pytest.raises(accelir.InputError, match=r"^missing input bias"):
            cm(x)
        with pytest.raises(accelir.InputError, match=r"^input x: got None; expected a tensor of dtype f32 and "
                           r"shape \[2, 3\]$"):
            cm(None, bias=b)


def _gather_onnx(rows: int = 5):
    from onnx import TensorProto, helper, numpy_helper
    table = np.arange(rows * 2, dtype=np.float32).reshape(rows, 2)
    node = helper.make_node("Gather", ["table", "ids"], ["y"], axis=0)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])],
                              initializer=[numpy_helper.from_array(table, "table")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_onnx_and_numpy_callers_get_one_line_errors():
    cm = accelir.optimize(_gather_onnx())
    ids = np.array([0, 1, 2])
    for args, message in (((None,), r"input 0 \(ids\): got None; expected a tensor of dtype i64 and shape \[3\]"),
                          ((1.5,), r"input 0 \(ids\): got a python float \(1.5\)"),
                          ((ids, ids), r"the model takes 1 inputs? \(ids\), got 2")):
        with pytest.raises(accelir.InputError, match=f"^{message}"):
            cm(*args)
    g = accelir.parse("""graph main(%x: f32[2,3]) -> (f32[2,3]) {
  %0 = exp(%x) : f32[2,3]
  return %0
}
""")
    cm = accelir.optimize(g)
    x = np.ones((2, 3), np.float32)
    with pytest.raises(accelir.InputError, match=r"^the model takes 1 input tensor \(x: f32\[2,3\]\), got 2$"):
        cm(x, x)
    with pytest.raises(accelir.InputError, match=r"^input 0 \(x\): got None"):
        cm(None)
    np.testing.assert_allclose(cm(x=x), np.exp(x), rtol=1e-6)  # a graph's inputs go by name too
    with pytest.raises(accelir.InputError, match=r"^unknown keyword argument 'y': the graph's inputs are x$"):
        cm(y=x)


@pytest.mark.parametrize("backend", ["onnxruntime", "xla"])
def test_out_of_vocabulary_ids_raise_on_both_backends(gpt2, embedder, backend):
    model, ids = gpt2
    cm = accelir.optimize(model, (ids,), backend=backend)
    for bad_id in (100, -1):  # torch's embedding takes 0..vocab-1 only
        bad = ids.clone()
        bad[1, 3] = bad_id
        with pytest.raises(accelir.InputError, match=rf"^input 0 \(input_ids\): id {bad_id} is out of range for the "
                           r"table 'wte.weight' of 100 rows \(read by gather .*\); valid ids are 0..99$"):
            cm(bad)
    small, small_ids, mask = embedder
    cm = accelir.optimize(small, (small_ids, mask), backend=backend)
    with pytest.raises(accelir.InputError, match=r"id 10 is out of range for the table 'emb.weight' of 10 rows"):
        cm(torch.tensor([[0, 10, 2]]), mask)
    with torch.no_grad():
        torch.testing.assert_close(cm(torch.tensor([[0, 9, 2]]), mask), small(torch.tensor([[0, 9, 2]]), mask))


@pytest.mark.parametrize("backend", ["onnxruntime", "xla"])
def test_onnx_gather_ids_count_from_the_end_and_stop_at_the_table(backend):
    model = _gather_onnx(rows=5)
    cm = accelir.optimize(model, backend=backend)
    ids = np.array([-5, -1, 4])  # ONNX Gather counts negative ids from the end
    np.testing.assert_array_equal(cm(ids)[0], onnxruntime_outputs(model, {"ids": ids})[0])
    for bad_id, lo in ((5, -5), (-6, -5)):
        with pytest.raises(accelir.InputError, match=rf"id {bad_id} is out of range .* valid ids are {lo}..4$"):
            cm(np.array([0, bad_id, 1]))


@pytest.mark.parametrize("backend", ["onnxruntime", "xla"])
def test_jax_indexing_ids_agree_with_jax_or_raise_on_both_backends(backend):
    table = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)

    def index(ids):  # jax's x[ids]: negative ids wrap, out-of-range ones are the caller's promise
        return jnp.asarray(table)[ids] * 2

    def take(ids):  # jnp.take fills out-of-range rows with NaN: defined, so both backends must match it
        return jnp.take(jnp.asarray(table), ids, axis=0) * 2

    ids = np.array([[1, 2, 3]], dtype=np.int32)
    fine, bad = np.array([[1, -3, 9]], dtype=np.int32), np.array([[1, 12, -11]], dtype=np.int32)
    cm = accelir.optimize(index, (ids,), backend=backend)
    np.testing.assert_array_equal(np.asarray(cm(fine)), np.asarray(index(fine)))
    with pytest.raises(accelir.InputError, match=r"id (12|-11) is out of range for the table .* of 10 rows"):
        cm(bad)
    cm = accelir.optimize(take, (ids,), backend=backend)
    np.testing.assert_array_equal(np.asarray(cm(bad)), np.asarray(take(bad)))


def test_backend_auto_falls_back_when_one_backend_fails(monkeypatch):
    from accelir.errors import LoweringError
    from accelir.lowering import jax as jax_lowering
    from accelir.lowering import onnx as onnx_lowering

    def refuse(*args, **kwargs):
        raise LoweringError("exp: refused here")

    def crash(*args, **kwargs):
        raise RuntimeError("exporter crashed\nsecond line")

    g = accelir.parse("""graph main(%x: f32[2,3]) -> (f32[2,3]) {
  %0 = exp(%x) : f32[2,3]
  return %0
}
""")
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    monkeypatch.setitem(jax_lowering.JAX_RULES, "exp", refuse)
    with pytest.warns(UserWarning, match=r"^backend='auto': xla failed \(exp: refused here\); using onnxruntime$"):
        cm = accelir.optimize(g, (x,), backend="auto", level=0)
    assert cm.backend == "onnxruntime" and set(cm.report.backends) == {"onnxruntime"}
    assert cm.report.failed == {"xla": "exp: refused here"}
    assert "xla          failed: exp: refused here" in str(cm.report)
    np.testing.assert_allclose(cm(x), np.exp(x), rtol=1e-6)
    monkeypatch.setitem(onnx_lowering.ONNX_RULES, "exp", crash)
    with pytest.raises(LoweringError, match=r"^backend='auto': no backend could run the model: "
                       r"onnxruntime: RuntimeError: exporter crashed; xla: exp: refused here$"):
        accelir.optimize(g, (x,), backend="auto", level=0)


@pytest.mark.parametrize("backend", ["onnxruntime", "xla"])
def test_build_runner_runs_a_graph_like_the_interpreter(backend):
    from accelir.api import build_runner
    g = accelir.parse("""graph main(%x: f32[2,3], %y: f32[2,3]) -> (f32[2,3]) {
  %0 = mul(%x, %y) : f32[2,3]
  %1 = tanh(%0) : f32[2,3]
  return %1
}
""")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 3), dtype=np.float32), rng.standard_normal((2, 3), dtype=np.float32)
    (got,) = build_runner(g, backend, "cpu")(x, y)
    np.testing.assert_allclose(np.asarray(got), np.tanh(x * y), rtol=1e-6, atol=1e-6)


def test_build_runner_refuses_an_unknown_backend():
    from accelir.api import build_runner
    with pytest.raises(AccelirError, match="unknown backend 'tvm'"):
        build_runner(accelir.parse("graph main(%x: f32[1]) -> (f32[1]) {\n  return %x\n}\n"), "tvm", "cpu")
