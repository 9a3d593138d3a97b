"""Tests of the ONNX frontend: numerics against onnxruntime, symbolic dims, regions,
functions, the round trip, and the refusal of unsafe or malformed models."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from accelir import AccelirError, DType, UnsupportedOpError, run_graph, verify
from accelir.frontends.onnx import DynamicValueError, OnnxImportError, import_onnx, restore_onnx_interface
from accelir.testing import assert_close, onnxruntime_outputs

RNG = np.random.default_rng(0)


def _model(nodes, inputs, outputs, inits=(), opset=21, functions=(), extra_opsets=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), *extra_opsets],
                          functions=list(functions))
    m.ir_version = 10
    return m


_ort = onnxruntime_outputs


def _check(model, feeds, rtol=1e-5, atol=1e-6):
    g = import_onnx(model)
    verify(g)
    assert_close(run_graph(g, g.meta["signature"].flatten(feeds)), _ort(model, feeds), (rtol, atol))
    return g


def _mlp():
    w1 = numpy_helper.from_array(RNG.standard_normal((8, 16)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(RNG.standard_normal(16).astype(np.float32), "b1")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm"),
             helper.make_node("Add", ["h", "b1"], ["hb"], name="add"),
             helper.make_node("Gelu", ["hb"], ["a"], name="gelu"),
             helper.make_node("Softmax", ["a"], ["y"], name="sm", axis=-1)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])
    m = _model(nodes, [x], [y], [w1, b1])
    m.producer_name, m.doc_string = "unit-test", "an mlp"
    helper.set_model_props(m, {"author": "accelir tests"})
    return m


def test_mlp_matches_onnxruntime_for_two_batch_sizes():
    m = _mlp()
    for batch in (1, 5):
        g = _check(m, {"x": RNG.standard_normal((batch, 8)).astype(np.float32)})
    assert [str(v.type) for v in g.inputs] == ["f32[batch,8]"]
    assert g.meta["frontend"] == "onnx"
    assert g.meta["onnx"]["producer_name"] == "unit-test"
    assert g.meta["onnx"]["metadata_props"] == {"author": "accelir tests"}
    assert {n.op for n in g.nodes} >= {"matmul", "gelu", "softmax"}
    assert any(n.meta.get("origin") == "gelu" for n in g.nodes)


def test_signature_takes_positional_or_named_inputs():
    g = import_onnx(_mlp())
    sig = g.meta["signature"]
    x = np.zeros((2, 8), np.float32)
    assert sig.flatten(x)[0] is x and sig.flatten({"x": x})[0] is x and sig.flatten(x=x)[0] is x
    assert sig.unflatten([1, 2]) == [1, 2]
    with pytest.raises(TypeError, match="missing"):
        sig.flatten({"z": x})


def test_shape_computed_from_symbolic_dims():
    # Reshape(x, Concat(Shape(x)[0], [-1])) with a dim_param batch: the importer tracks
    # the shape symbolically, so the graph stays dynamic in batch
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["b"], axis=0),
             helper.make_node("Unsqueeze", ["b", "zero1"], ["b1"]),
             helper.make_node("Concat", ["b1", "minus1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["sf"], ["n"], keepdims=0)]
    inits = [numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array([0], np.int64), "zero1"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4])
    outs = [helper.make_tensor_value_info("r", TensorProto.FLOAT, ["N", 12]),
            helper.make_tensor_value_info("n", TensorProto.FLOAT, [])]
    m = _model(nodes, [x], outs, inits)
    for batch in (2, 7):
        g = _check(m, {"x": RNG.standard_normal((batch, 3, 4)).astype(np.float32)})
    assert str(g.outputs[0].type) == "f32[N,12]"


def test_dynamic_shape_input_stays_a_value_and_static_inputs_specialises():
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"])]
    m = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6]),
                       helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    g = import_onnx(m)
    assert [n.op for n in g.nodes] == ["reshape_dynamic"] and str(g.outputs[0].type) == "f32[u0,u1]"
    g = import_onnx(m, static_inputs={"shape": np.array([3, 4], np.int64)})
    assert [v.name for v in g.inputs] == ["x"] and str(g.outputs[0].type) == "f32[3,4]"


def test_a_rule_that_cannot_take_a_data_dependent_size_names_the_inputs_to_bind():
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("Split", ["r"], ["a", "b"], axis=0, num_outputs=2)]
    m = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6]),
                       helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
               [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("a", "b")], opset=18)
    with pytest.raises(DynamicValueError, match=r"Split.*even split.*reshape_dynamic.*\['shape'\].*static_inputs") as e:
        import_onnx(m)
    assert e.value.input_names == ["shape"]
    g = import_onnx(m, static_inputs={"shape": np.array([4, 3], np.int64)})
    assert [str(v.type) for v in g.outputs] == ["f32[2,3]", "f32[2,3]"]


def test_if_with_captured_value_and_scan():
    then_g = helper.make_graph([helper.make_node("Mul", ["x", "x"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, [3])])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", TensorProto.FLOAT, [3])])
    body = helper.make_graph([helper.make_node("Add", ["acc", "row"], ["acc2"]),
                              helper.make_node("Mul", ["acc2", "x"], ["out"])], "body",
                             [helper.make_tensor_value_info("acc", TensorProto.FLOAT, [3]),
                              helper.make_tensor_value_info("row", TensorProto.FLOAT, [3])],
                             [helper.make_tensor_value_info("acc2", TensorProto.FLOAT, [3]),
                              helper.make_tensor_value_info("out", TensorProto.FLOAT, [3])])
    nodes = [helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g),
             helper.make_node("Scan", ["y", "rows"], ["final", "ys"], body=body, num_scan_inputs=1)]
    m = _model(nodes, [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                       helper.make_tensor_value_info("x", TensorProto.FLOAT, [3]),
                       helper.make_tensor_value_info("rows", TensorProto.FLOAT, [4, 3])],
               [helper.make_tensor_value_info("final", TensorProto.FLOAT, [3]),
                helper.make_tensor_value_info("ys", TensorProto.FLOAT, [4, 3])])
    for c in (True, False):
        g = _check(m, {"c": np.array(c), "x": RNG.standard_normal(3).astype(np.float32),
                       "rows": RNG.standard_normal((4, 3)).astype(np.float32)})
    assert {n.op for n in g.nodes} >= {"cond", "scan"}


def test_local_function_is_inlined():
    f = helper.make_function("custom", "Scaled", ["a"], ["b"],
                             [helper.make_node("Constant", [], ["k"], value_float=3.0),
                              helper.make_node("Mul", ["a", "k"], ["b"])],
                             [helper.make_opsetid("", 21)])
    m = _model([helper.make_node("Scaled", ["x"], ["y"], domain="custom", name="call")],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], functions=[f],
               extra_opsets=[helper.make_opsetid("custom", 1)])
    x = RNG.standard_normal(4).astype(np.float32)
    g = import_onnx(m)
    np.testing.assert_allclose(run_graph(g, [x])[0], 3 * x, rtol=1e-6)
    assert any(n.meta.get("origin", "").startswith("call/") for n in g.nodes)


def test_schema_function_body_is_inlined():
    # Celu has no rule of its own: the ONNX schema's function body is used
    m = _model([helper.make_node("Celu", ["x"], ["y"], alpha=0.7)],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])])
    _check(m, {"x": RNG.standard_normal((2, 5)).astype(np.float32)})


def test_com_microsoft_ops_read_back():
    ms = helper.make_opsetid("com.microsoft", 1)
    nodes = [helper.make_node("FusedMatMul", ["a", "b"], ["m"], domain="com.microsoft", transB=1, alpha=0.5),
             helper.make_node("SkipLayerNormalization", ["m", "s", "gamma", "beta"], ["y"], domain="com.microsoft",
                              epsilon=1e-5)]
    inits = [numpy_helper.from_array(RNG.standard_normal(6).astype(np.float32), "gamma"),
             numpy_helper.from_array(RNG.standard_normal(6).astype(np.float32), "beta")]
    m = _model(nodes, [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3, 4]),
                       helper.make_tensor_value_info("b", TensorProto.FLOAT, [6, 4]),
                       helper.make_tensor_value_info("s", TensorProto.FLOAT, [2, 3, 6])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 6])], inits, extra_opsets=[ms])
    g = _check(m, {"a": RNG.standard_normal((2, 3, 4)).astype(np.float32),
                   "b": RNG.standard_normal((6, 4)).astype(np.float32),
                   "s": RNG.standard_normal((2, 3, 6)).astype(np.float32)}, rtol=1e-4, atol=1e-5)
    assert "skip_layer_norm" in {n.op for n in g.nodes}


def test_round_trip_keeps_interface_and_metadata():
    from accelir.lowering import onnx as lowering
    m = _mlp()
    g = import_onnx(m)
    out = restore_onnx_interface(lowering.to_onnx(g), g)
    onnx.checker.check_model(out)
    assert [i.name for i in out.graph.input] == ["x"] and [o.name for o in out.graph.output] == ["y"]
    for vi in (out.graph.input[0], out.graph.output[0]):
        assert vi.type.tensor_type.elem_type == TensorProto.FLOAT
        assert vi.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert out.producer_name == "unit-test" and out.doc_string == "an mlp"
    assert {p.key: p.value for p in out.metadata_props}["author"] == "accelir tests"
    x = RNG.standard_normal((3, 8)).astype(np.float32)
    np.testing.assert_allclose(_ort(out, {"x": x})[0], _ort(m, {"x": x})[0], rtol=1e-5, atol=1e-6)


# ----- external data and security ----------------------------------------------------

def _external_model(tmp_path, location, data=None):
    w = RNG.standard_normal((4, 4)).astype(np.float32)
    t = numpy_helper.from_array(w, "w")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(w.nbytes))):
        e = t.external_data.add()
        e.key, e.value = k, v
    m = _model([helper.make_node("MatMul", ["x", "w"], ["y"])],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [t])
    path = tmp_path / "model" / "m.onnx"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(m.SerializeToString())
    return path, w


def test_external_data_is_memory_mapped(tmp_path):
    path, w = _external_model(tmp_path, "weights.bin")
    (path.parent / "weights.bin").write_bytes(w.tobytes())
    g = import_onnx(str(path))
    arr = next(iter(g.constants.values()))
    # a read-only view of the mapped file, not a copy
    assert isinstance(arr.base, np.memmap) or isinstance(arr, np.memmap)
    assert not arr.flags.owndata and not arr.flags.writeable
    x = RNG.standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(run_graph(g, [x])[0], x @ w, rtol=1e-5)
    with pytest.raises(OnnxImportError, match="load_external=False"):
        import_onnx(str(path), load_external=False)


@pytest.mark.parametrize("location, why", [("../secret.bin", r"leaves the model's directory"),
                                           ("/etc/passwd", "absolute"),
                                           ("sub/../../secret.bin", r"leaves the model's directory"),
                                           ("link.bin", "outside the model's directory"),
                                           ("missing.bin", "missing")])
def test_external_data_outside_the_model_dir_is_refused(tmp_path, location, why):
    path, w = _external_model(tmp_path, location)
    secret = tmp_path / "secret.bin"
    secret.write_bytes(w.tobytes())
    os.symlink(secret, path.parent / "link.bin")
    with pytest.raises(OnnxImportError, match=why) as e:
        import_onnx(str(path))
    assert "'w'" in str(e.value)


def test_truncated_external_data(tmp_path):
    path, w = _external_model(tmp_path, "weights.bin")
    (path.parent / "weights.bin").write_bytes(w.tobytes()[:10])
    with pytest.raises(OnnxImportError, match="truncated"):
        import_onnx(str(path))


def test_corrupt_and_truncated_model_files(tmp_path):
    data = _mlp().SerializeToString()
    bad = tmp_path / "bad.onnx"
    for blob in (data[: len(data) // 3], b"\xff\x00garbage" * 10, b""):
        bad.write_bytes(blob)
        with pytest.raises(AccelirError):
            import_onnx(str(bad))
    with pytest.raises(OnnxImportError, match="cannot read"):
        import_onnx(str(tmp_path / "nope.onnx"))
    with pytest.raises(OnnxImportError, match="takes an onnx.ModelProto"):
        import_onnx(42)


def test_malformed_graphs_name_the_node():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    cycle = _model([helper.make_node("Add", ["x", "b"], ["a"], name="n1"),
                    helper.make_node("Neg", ["a"], ["b"], name="n2"),
                    helper.make_node("Identity", ["a"], ["y"], name="n3")], [x], [y])
    with pytest.raises(OnnxImportError, match="cycle"):
        import_onnx(cycle)
    dangling = _model([helper.make_node("Add", ["x", "nowhere"], ["y"], name="adder")], [x], [y])
    with pytest.raises(OnnxImportError, match="'adder'.*'nowhere'"):
        import_onnx(dangling)
    domain = _model([helper.make_node("Foo", ["x"], ["y"], domain="acme", name="foo")], [x], [y],
                    extra_opsets=[helper.make_opsetid("acme", 1)])
    with pytest.raises(UnsupportedOpError, match="'foo'.*domain 'acme'"):
        import_onnx(domain)
    string = _model([helper.make_node("StringNormalizer", ["s"], ["y"], name="sn")],
                    [helper.make_tensor_value_info("s", TensorProto.STRING, [2])], [y])
    with pytest.raises(UnsupportedOpError, match="STRING"):
        import_onnx(string)
    bad_types = _model([helper.make_node("Add", ["x", "i"], ["y"], name="mixed")],
                       [x, helper.make_tensor_value_info("i", TensorProto.INT64, [2])], [y])
    with pytest.raises(AccelirError, match="'mixed'"):
        import_onnx(bad_types)
    bad_attr = _model([helper.make_node("Transpose", ["x"], ["y"], name="tr", perm=[3, 1])], [x], [y])
    with pytest.raises(AccelirError, match="'tr'"):
        import_onnx(bad_attr)


def test_raw_data_of_wrong_size_is_corrupt():
    t = numpy_helper.from_array(np.ones(4, np.float32), "w")
    t.raw_data = t.raw_data[:7]
    m = _model([helper.make_node("Add", ["x", "w"], ["y"])], [helper.make_tensor_value_info("x", 1, [4])],
               [helper.make_tensor_value_info("y", 1, [4])], [t])
    with pytest.raises(OnnxImportError, match="truncated or corrupt"):
        import_onnx(m)


def test_dtype_of_graph_inputs():
    m = _model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.BFLOAT16)],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["n"])],
               [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, ["n"])])
    g = import_onnx(m)
    assert g.inputs[0].dtype is DType.f16 and g.outputs[0].dtype is DType.bf16


@pytest.mark.parametrize("name", ["gpt2", "bert"])
def test_fused_attention_that_accelir_emits_reads_back(name):
    """Optimised transformers lower to com.microsoft Attention / MultiHeadAttention; importing that
    ONNX again gives an IR graph whose interpreter output matches onnxruntime's."""
    import torch
    from transformers import BertConfig, BertModel, GPT2Config, GPT2Model

    import accelir
    from accelir.lowering.onnx import to_onnx
    from accelir.lowering.onnxruntime import OnnxRuntimeModule

    torch.manual_seed(0)
    if name == "gpt2":
        model = GPT2Model(GPT2Config(n_layer=1, n_embd=32, n_head=4, vocab_size=64, n_positions=16, use_cache=False,
                                     bos_token_id=0, eos_token_id=0)).eval()
    else:
        model = BertModel(BertConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=4, intermediate_size=64,
                                     vocab_size=64, max_position_embeddings=16)).eval()
    ids = torch.randint(0, 64, (2, 8))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    cm = accelir.optimize(model, (ids,), example_kwargs={"attention_mask": mask})
    proto = to_onnx(cm.graph)
    fused = {n.op_type for n in proto.graph.node if n.domain == "com.microsoft"}
    assert fused & {"Attention", "MultiHeadAttention"}, fused
    g = import_onnx(proto)
    assert "attention" in g.op_histogram()
    feeds = [ids.numpy(), mask.numpy()]
    want = OnnxRuntimeModule(proto)(*feeds)
    got = accelir.interpret(g, *feeds)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-5)
