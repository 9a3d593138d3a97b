"""The ONNX importer on hostile or malformed models: function-call bombs, import-time
values too large to build, and values or interfaces the ONNX spec forbids.  Each must
end in bounded time with a correct graph or one clear AccelirError, never a hang, an
out-of-memory or a silently wrong graph."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from accelir.frontends.onnx import OnnxImportError, import_onnx
from onnx_single_node import import_and_run, onnxruntime_outputs

RNG = np.random.default_rng(0)
LOCAL = helper.make_opsetid("local", 1)


def _model(nodes, inputs, outputs, inits=(), opset=18, functions=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), LOCAL], functions=list(functions))
    m.ir_version = 10
    return m


def _f32(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _typed(name, dtype, shape):
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), shape)


def _i64(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.INT64, shape)


def _function(name, nodes, inputs=("x",), outputs=("y",), attributes=()):
    return helper.make_function("local", name, list(inputs), list(outputs), nodes,
                                [helper.make_opsetid("", 18), LOCAL], attributes=list(attributes))


def _call(callee, inputs, output, **attrs):
    return helper.make_node(callee, list(inputs), [output], domain="local", **attrs)


def doubling_model(levels: int, shared: bool) -> object:
    """f0 .. f{levels}: each function calls the next twice, f{levels} is a Relu.  Chained
    (``y = f(f(x))``) it denotes 2**levels nodes; shared (``y = f(x) + f(x)``) the two calls
    are the same value, so y = 2**levels * relu(x)."""
    funcs = []
    for i in range(levels):
        nxt = f"f{i + 1}"
        body = ([_call(nxt, ["x"], "a"), _call(nxt, ["x"], "b"), helper.make_node("Add", ["a", "b"], ["y"])]
                if shared else [_call(nxt, ["x"], "a"), _call(nxt, ["a"], "y")])
        funcs.append(_function(f"f{i}", body))
    funcs.append(_function(f"f{levels}", [helper.make_node("Relu", ["x"], ["y"])]))
    return _model([_call("f0", ["x"], "y")], [_f32("x", [3])], [_f32("y", [3])], functions=funcs)


# ----- local functions ---------------------------------------------------------------

@pytest.mark.parametrize("levels", [18, 30])
def test_function_call_bomb_is_refused_in_bounded_time(levels):
    t0 = time.perf_counter()
    with pytest.raises(OnnxImportError, match=rf"local function 'f0' would build {2 ** levels:,} nodes, "
                                              r"over the budget of 131,072 .*max_inlined_nodes"):
        import_onnx(doubling_model(levels, shared=False))
    assert time.perf_counter() - t0 < 2.0


@pytest.mark.parametrize("levels", [18, 30])
def test_identical_calls_are_inlined_once(levels):
    x = np.array([-1.5, 0.25, 3.0], np.float32)
    t0 = time.perf_counter()
    g, (y,) = import_and_run(doubling_model(levels, shared=True), {"x": x})
    assert time.perf_counter() - t0 < 2.0
    assert len(list(g.nodes)) <= levels + 2  # one relu and one add per level
    np.testing.assert_array_equal(y, np.float32(2.0 ** levels) * np.maximum(x, 0))  # exact: powers of two


def test_small_function_trees_match_onnxruntime():
    x = RNG.standard_normal(3).astype(np.float32)
    for shared in (False, True):
        m = doubling_model(4, shared)
        g, (y,) = import_and_run(m, {"x": x})
        np.testing.assert_allclose(y, onnxruntime_outputs(m, {"x": x})[0], rtol=1e-6)
    assert sum(n.op == "relu" for n in g.nodes) == 1


def test_calls_with_other_attributes_or_inputs_are_not_merged():
    leaky = helper.make_node("LeakyRelu", ["x"], ["y"])
    leaky.attribute.append(helper.make_attribute_ref("alpha", TensorProto.FLOAT))  # alpha from the call
    f = _function("leaky", [leaky], attributes=["alpha"])
    nodes = [_call("leaky", ["x"], "a", alpha=0.5), _call("leaky", ["x"], "b", alpha=0.25),
             _call("leaky", ["z"], "c", alpha=0.5), helper.make_node("Sum", ["a", "b", "c"], ["y"])]
    m = _model(nodes, [_f32("x", [4]), _f32("z", [4])], [_f32("y", [4])], functions=[f])
    feeds = {"x": RNG.standard_normal(4).astype(np.float32), "z": RNG.standard_normal(4).astype(np.float32)}
    _, (y,) = import_and_run(m, feeds)
    np.testing.assert_allclose(y, onnxruntime_outputs(m, feeds)[0], rtol=1e-6)


def test_inline_budget_can_be_raised_or_lowered():
    m = doubling_model(6, shared=False)
    with pytest.raises(OnnxImportError, match="would build 64 nodes, over the budget of 10 "):
        import_onnx(m, max_inlined_nodes=10)
    assert sum(n.op == "relu" for n in import_onnx(m, max_inlined_nodes=64).nodes) == 64


def test_recursive_functions_are_refused():
    f = _function("ping", [_call("pong", ["x"], "y")])
    g = _function("pong", [helper.make_node("Relu", ["x"], ["r"]), _call("ping", ["r"], "y")])
    m = _model([_call("ping", ["x"], "y")], [_f32("x", [2])], [_f32("y", [2])], functions=[f, g])
    t0 = time.perf_counter()
    with pytest.raises(OnnxImportError, match=r"local function 'ping' calls itself \('ping' -> 'pong' -> 'ping'\)"):
        import_onnx(m)
    assert time.perf_counter() - t0 < 2.0


def test_function_called_inside_a_subgraph_counts_towards_the_budget():
    branch = helper.make_graph([_call("f0", ["x"], "y")], "then", [], [_f32("y", [3])])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "else", [], [_f32("y", [3])])
    bomb = doubling_model(30, shared=False)
    m = _model([helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=other)],
               [helper.make_tensor_value_info("c", TensorProto.BOOL, []), _f32("x", [3])], [_f32("y", [3])],
               functions=bomb.functions)
    with pytest.raises(OnnxImportError, match="would build 1,073,741,824 nodes"):
        import_onnx(m)


# ----- values computed at import -------------------------------------------------------

def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _bounded(model, seconds=2.0, peak_bytes=64 << 20):
    """Import ``model``, checking that it takes under ``seconds`` and allocates under ``peak_bytes``."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        return import_onnx(model)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert time.perf_counter() - t0 < seconds
        assert peak < peak_bytes, f"import allocated {peak:,} bytes"


def _largest_constant(g):
    return max((a.nbytes for a in g.constants.values()), default=0)


def test_import_budget_is_the_fold_passs_cap():
    from accelir.frontends.onnx_ops import IMPORT_VALUE_BYTES
    from accelir.passes.fold_constants import FoldConstants
    assert IMPORT_VALUE_BYTES == FoldConstants().max_bytes


def test_huge_range_stays_a_run_time_computation():
    m = _model([helper.make_node("Range", ["s", "l", "d"], ["y"])], [], [_i64("y", None)],
               [_init("s", np.int64(0)), _init("l", np.int64(200_000_000)), _init("d", np.int64(1))])
    g = _bounded(m)
    assert str(g.outputs[0].type) == "i64[200000000]" and _largest_constant(g) <= 8


@pytest.mark.parametrize("start,limit,delta,dtype", [(0.5, 70_000.25, 0.25, np.float32), (7, 400_000, 3, np.int64),
                                                     (9, -600_000, -2, np.int32), (5, 1, 1, np.int64)])
def test_range_over_the_budget_matches_onnxruntime(start, limit, delta, dtype):
    names = ("s", "l", "d")
    m = _model([helper.make_node("Range", list(names), ["y"])], [], [_typed("y", dtype, None)],
               [_init(n, dtype(v)) for n, v in zip(names, (start, limit, delta))])
    g, (y,) = import_and_run(m, {})
    want = onnxruntime_outputs(m, {})[0]
    assert y.dtype == want.dtype and y.shape == want.shape
    np.testing.assert_allclose(y, want, rtol=1e-6)
    assert _largest_constant(g) <= 8 or y.nbytes <= 1 << 20


@pytest.mark.parametrize("shape,k,dtype", [((30_000, 30_000), 0, None), ((600, 700), 3, None),
                                           ((700, 600), -2, TensorProto.INT32), ((4, 5), 1, None)])
def test_eyelike_over_the_budget(shape, k, dtype):
    attrs = {"k": k} if dtype is None else {"k": k, "dtype": dtype}
    out = helper.make_tensor_value_info("y", dtype or TensorProto.FLOAT, None)
    m = _model([helper.make_node("EyeLike", ["x"], ["y"], **attrs)], [_f32("x", list(shape))], [out])
    g = _bounded(m)
    assert _largest_constant(g) <= 1 << 20
    if shape[0] < 1000:
        feeds = {"x": np.zeros(shape, np.float32)}
        _, (y,) = import_and_run(m, feeds)
        want = onnxruntime_outputs(m, feeds)[0]
        assert y.dtype == want.dtype
        np.testing.assert_array_equal(y, want)


def test_shapes_whose_int64_product_wraps():
    wrap = [2 ** 32, 2 ** 32, 16]  # the product is 2**68: 0 in int64
    cos = _model([helper.make_node("ConstantOfShape", ["s"], ["y"])], [], [_f32("y", None)],
                 [_init("s", np.array(wrap, np.int64))])
    assert [str(v.type) for v in _bounded(cos).outputs] == ["f32[4294967296,4294967296,16]"]
    init = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=wrap, raw_data=b"")
    m = _model([helper.make_node("Identity", ["w"], ["y"])], [], [_f32("y", None)], [init])
    with pytest.raises(OnnxImportError, match=r"initializer 'w': raw data has 0 bytes, its shape "
                                              r"\[4294967296, 4294967296, 16\] of f32 needs 1180591620717411303424"):
        _bounded(m)


@pytest.mark.parametrize("producer", ["ConstantOfShape", "Pad", "Tile", "Expand"])
def test_a_huge_value_needed_at_import_is_refused(producer):
    # each producer makes a 200,000,000-element int64 tensor from a small one; Reshape needs its values
    big = np.array([200_000_000], np.int64)
    nodes, inits = {
        "ConstantOfShape": ([helper.make_node("ConstantOfShape", ["n"], ["shape"],
                                              value=helper.make_tensor("v", TensorProto.INT64, [1], [1]))], []),
        "Pad": ([helper.make_node("Pad", ["one", "pads"], ["shape"])], [_init("pads", np.array([0, 199_999_999]))]),
        "Tile": ([helper.make_node("Tile", ["one", "n"], ["shape"])], []),
        "Expand": ([helper.make_node("Expand", ["one", "n"], ["shape"])], []),
    }[producer]
    m = _model(nodes + [helper.make_node("Reshape", ["x", "shape"], ["y"])], [_f32("x", [1])], [_f32("y", None)],
               inits + [_init("n", big), _init("one", np.array([1], np.int64))])
    with pytest.raises(OnnxImportError, match=r"\(Reshape\): its shape \(input 1\) is i64\[200000000\], "
                                              r"1,600,000,000 bytes: over the 1,048,576 bytes"):
        _bounded(m)


def test_pad_and_tile_to_huge_stay_run_time_nodes():
    x = _init("x", np.ones((2, 2), np.float32))
    for node, extra in [(helper.make_node("Pad", ["x", "p"], ["y"]), _init("p", np.array([0, 0, 20000, 20000]))),
                        (helper.make_node("Tile", ["x", "p"], ["y"]), _init("p", np.array([20000, 20000])))]:
        g = _bounded(_model([node], [], [_f32("y", None)], [x, extra]))
        assert g.outputs[0].type.shape in ((20002, 20002), (40000, 40000)) and _largest_constant(g) <= 32
