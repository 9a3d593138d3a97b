"""The ONNX importer on hostile or malformed models: function-call bombs, import-time
values too large to build, and values or interfaces the ONNX spec forbids.  Each must
end in bounded time with a correct graph or one clear AccelirError, never a hang, an
out-of-memory or a silently wrong graph."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import onnx
import onnx.defs
import pytest
from onnx import TensorProto, helper, numpy_helper

from accelir.errors import AccelirError
from accelir.frontends.onnx import OnnxImportError, import_onnx
from accelir.testing import import_and_run, onnxruntime_outputs, reference_outputs

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


# Unbounded imports (the bombs below) take minutes or exhaust memory; bounded ones take well
# under a second. The limit sits far from both, so a loaded CI machine does not trip it.
BOUNDED_S = 20.0


# ----- local functions ---------------------------------------------------------------

@pytest.mark.parametrize("levels", [18, 30])
def test_function_call_bomb_is_refused_in_bounded_time(levels):
    t0 = time.perf_counter()
    with pytest.raises(OnnxImportError, match=rf"local function 'f0' would build {2 ** levels:,} nodes, "
                                              r"over the budget of 131,072 .*max_inlined_nodes"):
        import_onnx(doubling_model(levels, shared=False))
    assert time.perf_counter() - t0 < BOUNDED_S


@pytest.mark.parametrize("levels", [18, 30])
def test_identical_calls_are_inlined_once(levels):
    x = np.array([-1.5, 0.25, 3.0], np.float32)
    t0 = time.perf_counter()
    g, (y,) = import_and_run(doubling_model(levels, shared=True), {"x": x})
    assert time.perf_counter() - t0 < BOUNDED_S
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
    assert time.perf_counter() - t0 < BOUNDED_S


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


def _bounded(model, seconds=None, peak_bytes=64 << 20):
    """Import ``model``, checking that it takes under ``seconds`` and allocates under ``peak_bytes``."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        return import_onnx(model)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert time.perf_counter() - t0 < (BOUNDED_S if seconds is None else seconds)
        assert peak < peak_bytes, f"import allocated {peak:,} bytes"


def _largest_constant(g):
    return max((a.nbytes for a in g.constants.values()), default=0)


def test_import_budget_is_the_fold_pass_cap():
    from accelir.frontends.onnx.context import IMPORT_VALUE_BYTES
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


# ----- what the ONNX spec forbids is refused -------------------------------------------

def _relu_model(opset):
    return _model([helper.make_node("Relu", ["x"], ["y"])], [_f32("x", [2])], [_f32("y", [2])], opset=opset)


@pytest.mark.parametrize("opset", [0, -1, onnx.defs.onnx_opset_version() + 1, 1000])
def test_opsets_no_onnx_release_defines_are_refused(opset):
    newest = onnx.defs.onnx_opset_version()
    with pytest.raises(OnnxImportError, match=rf"the model imports opset {opset} of domain 'ai.onnx'; valid versions "
                                              rf"are 1..{newest} \(installed onnx"):
        import_onnx(_relu_model(opset))


def test_newest_opset_and_function_opsets():
    x = RNG.standard_normal(2).astype(np.float32)
    _, (y,) = import_and_run(_relu_model(onnx.defs.onnx_opset_version()), {"x": x})
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    f = helper.make_function("local", "f", ["x"], ["y"], [helper.make_node("Relu", ["x"], ["y"])],
                             [helper.make_opsetid("", 0)])
    m = _model([_call("f", ["x"], "y")], [_f32("x", [2])], [_f32("y", [2])], functions=[f])
    with pytest.raises(OnnxImportError, match="local function 'f' imports opset 0 of domain 'ai.onnx'"):
        import_onnx(m)


@pytest.mark.parametrize("elem_type,values,bad,rng", [
    (TensorProto.INT8, [300, 5], 300, r"i8's range \[-128, 127\]"),
    (TensorProto.INT16, [-40000], -40000, r"i16's range \[-32768, 32767\]"),
    (TensorProto.UINT8, [-1, 1], -1, r"u8's range \[0, 255\]"),
    (TensorProto.BOOL, [2, 1], 2, r"bool's range \[0, 1\]"),
    (TensorProto.FLOAT16, [70000], 70000, r"the range of f16's 16 bits \[0, 65535\]")])
def test_stored_values_out_of_their_dtype_range_are_refused(elem_type, values, bad, rng):
    t = TensorProto(name="c", data_type=elem_type, dims=[len(values)], int32_data=values)
    out = helper.make_tensor_value_info("y", elem_type, [len(values)])
    as_init = _model([helper.make_node("Identity", ["c"], ["y"])], [], [out], [t])
    as_const = _model([helper.make_node("Constant", [], ["y"], value=t)], [], [out])
    with pytest.raises(OnnxImportError, match=rf"initializer 'c' is \w+ but holds {bad} in int32_data, outside {rng}"):
        import_onnx(as_init)
    with pytest.raises(OnnxImportError, match=rf"\(Constant\): its value is \w+ but holds {bad} in int32_data"):
        import_onnx(as_const)


def test_raw_bools_other_than_0_and_1_are_refused():
    t = TensorProto(name="c", data_type=TensorProto.BOOL, dims=[3], raw_data=bytes([1, 0, 7]))
    out = helper.make_tensor_value_info("y", TensorProto.BOOL, [3])
    m = _model([helper.make_node("Identity", ["c"], ["y"])], [], [out], [t])
    with pytest.raises(OnnxImportError, match=r"initializer 'c' is bool but holds 7 in raw_data, outside bool's range"):
        import_onnx(m)


def test_stored_values_in_range_match_onnxruntime():
    inits = [TensorProto(name="a", data_type=TensorProto.INT8, dims=[3], int32_data=[-128, 0, 127]),
             TensorProto(name="b", data_type=TensorProto.UINT8, dims=[2], int32_data=[0, 255]),
             TensorProto(name="c", data_type=TensorProto.BOOL, dims=[2], raw_data=bytes([1, 0]))]
    outs = [helper.make_tensor_value_info(n, t, None) for n, t in (("ya", TensorProto.INT8),
                                                                   ("yb", TensorProto.UINT8), ("yc", TensorProto.BOOL))]
    m = _model([helper.make_node("Identity", [n], ["y" + n]) for n in "abc"], [], outs, inits)
    _, got = import_and_run(m, {})
    for a, b in zip(got, onnxruntime_outputs(m, {})):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def _w(value, name="w"):
    return _init(name, np.asarray(value, np.float32))


@pytest.mark.parametrize("inputs,inits,nodes,msg", [
    ([_f32("x", [2]), _f32("x", [3])], [], [helper.make_node("Relu", ["x"], ["y"])],
     r"graph 'g' declares input 'x' twice; input names must be unique"),
    ([_f32("x", [2])], [_w([1, 2]), _w([3, 4])], [helper.make_node("Add", ["x", "w"], ["y"])],
     r"graph 'g' has two initializers named 'w'"),
    ([_f32("x", [2]), _f32("w", [2])], [_init("w", np.array([1, 2]))], [helper.make_node("Add", ["x", "w"], ["y"])],
     r"initializer 'w' \(INT64\[2\]\) does not match input 'w' \(FLOAT, 2\)"),
    ([_f32("x", [2]), _f32("w", [2])], [_w([1, 2, 3])], [helper.make_node("Add", ["x", "w"], ["y"])],
     r"initializer 'w' \(FLOAT\[3\]\) does not match input 'w' \(FLOAT, 2\)"),
    ([_f32("x", [2])], [_w([1, 2])],
     [helper.make_node("Relu", ["x"], ["w"]), helper.make_node("Add", ["x", "w"], ["y"])],
     r"ONNX node '#0' \(Relu\) in graph 'g' redefines initializer 'w'"),
])
def test_names_defined_twice_are_refused(inputs, inits, nodes, msg):
    with pytest.raises(OnnxImportError, match=msg):
        import_onnx(_model(nodes, inputs, [_f32("y", [2])], inits))


def test_names_defined_twice_in_a_subgraph_are_refused():
    body = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "then", [], [_f32("y", [2])],
                             initializer=[_w([1, 2], "k"), _w([3, 4], "k")])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "else", [], [_f32("y", [2])])
    m = _model([helper.make_node("If", ["c"], ["y"], then_branch=body, else_branch=other)],
               [helper.make_tensor_value_info("c", TensorProto.BOOL, []), _f32("x", [2])], [_f32("y", [2])])
    with pytest.raises(OnnxImportError, match="two initializers named 'k'"):
        import_onnx(m)


def test_initializer_as_the_default_of_an_input_still_imports():
    # IR < 4 lists initializers among the inputs; a dim_param there matches any dim
    x = RNG.standard_normal(2).astype(np.float32)
    m = _model([helper.make_node("Add", ["x", "w"], ["y"])], [_f32("x", [2]), _f32("w", ["n"])], [_f32("y", [2])],
               [_w([1.0, 2.0])])
    _, (y,) = import_and_run(m, {"x": x})
    np.testing.assert_allclose(y, x + np.array([1.0, 2.0], np.float32))


def test_air_text_refuses_duplicate_graph_input_names():
    from accelir import ParseError
    from accelir.text import parse
    with pytest.raises(ParseError, match="1:24: %x is defined twice"):
        parse("graph main(%x: f32[2], %x: f32[3]) -> (f32[2]) {\n  %0 = relu(%x) : f32[2]\n  return %0\n}")
    with pytest.raises(ParseError, match="2:3: %x is defined twice"):
        parse("graph main(%x: f32[2]) -> (f32[2]) {\n  %x = relu(%x) : f32[2]\n  return %x\n}")


@pytest.mark.parametrize("shape,sizes,attrs", [
    ((1, 1, 300, 2), (1, 1, 900, 3), {"mode": "linear"}),
    ((1, 2, 64, 8), (1, 2, 16, 8), {"mode": "cubic", "antialias": 1}),
    ((1, 1, 40, 6), (1, 1, 25, 9),
     {"mode": "cubic", "exclude_outside": 1, "coordinate_transformation_mode": "asymmetric"}),
    ((1, 1, 5, 7), (1, 1, 12, 3), {"mode": "nearest"}),
])
def test_resize_by_taps_matches_onnxruntime(shape, sizes, attrs):
    out = _f32("y", None)
    m = _model([helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], **attrs)], [_f32("x", list(shape))], [out],
               [_init("sizes", np.array(sizes, np.int64))])
    feeds = {"x": RNG.standard_normal(shape).astype(np.float32)}
    g, (y,) = import_and_run(m, feeds)
    want = reference_outputs(m, feeds)[0]  # onnxruntime rounds its coordinates to f32 (4e-5 off)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
    # tables grow with the output and the kernel, not with output * input
    assert _largest_constant(g) <= 8 * 16 * max(sizes)


def test_huge_resize_is_refused_before_building_its_tables():
    m = _model([helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear")],
               [_f32("x", [1, 1, 4, 100_000])], [_f32("y", None)],
               [_init("sizes", np.array([1, 1, 200_000, 200_000], np.int64))])
    with pytest.raises(OnnxImportError, match=r"\(Resize\): resizing an axis of 4 to 200000 needs interpolation "
                                              r"tables of about 7,200,000 bytes, over the 1,048,576 bytes"):
        _bounded(m)


@pytest.mark.parametrize("length,c_in,n,inverse,onesided", [
    (300, 2, 300, 0, 0),   # complex DFT
    (500, 1, 300, 0, 0),   # real input, truncated to 300 points
    (600, 1, 600, 0, 1),   # one-sided (rfft)
    (201, 2, 400, 1, 1),   # inverse of a one-sided spectrum (irfft)
    (256, 2, 256, 1, 0),   # inverse
])
def test_dft_matrix_over_the_budget_is_computed_at_run_time(length, c_in, n, inverse, onesided):
    node = helper.make_node("DFT", ["x", "n", ""], ["y"], inverse=inverse, onesided=onesided)
    m = _model([node], [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [2, length, c_in])],
               [helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)], [_init("n", np.int64(n))], opset=20)
    x = RNG.standard_normal((2, length, c_in))
    g, (y,) = import_and_run(m, {"x": x})
    assert _largest_constant(g) <= 1 << 20
    z = x[..., 0] + 1j * x[..., 1] if c_in == 2 else x[..., 0]
    if inverse and onesided:
        want = np.fft.irfft(z, n, axis=1)[..., None]
    else:
        f = (np.fft.ifft if inverse else np.fft.rfft if onesided else np.fft.fft)(z, n, axis=1)
        want = np.stack([f.real, f.imag], -1)
    np.testing.assert_allclose(y, want, rtol=1e-9, atol=1e-9)


def test_mel_weight_matrix_over_the_budget_is_refused():
    ins = [("bins", np.int32(4000)), ("len", np.int32(4096)), ("rate", np.int32(16000)),
           ("lo", np.float32(20.0)), ("hi", np.float32(8000.0))]
    m = _model([helper.make_node("MelWeightMatrix", [n for n, _ in ins], ["y"])], [], [_f32("y", None)],
               [_init(n, v) for n, v in ins])
    with pytest.raises(OnnxImportError, match=r"\(MelWeightMatrix\): its output f32\[2049,4000\] takes "
                                              r"32,784,000 bytes, over the 1,048,576 bytes"):
        _bounded(m)


def test_stft_frame_table_over_the_budget_is_computed_at_run_time():
    length, frame, step = 70_003, 64, 32  # 2,186 frames of 64 samples: a 1.1 MB position table
    window = np.hanning(frame)
    m = _model([helper.make_node("STFT", ["x", "step", "w"], ["y"], onesided=1)],
               [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [1, length, 1])],
               [helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)],
               [_init("step", np.int64(step)), _init("w", window)], opset=17)
    x = RNG.standard_normal((1, length, 1))
    g, (y,) = import_and_run(m, {"x": x})
    assert _largest_constant(g) <= 1 << 20
    frames = 1 + (length - frame) // step
    segs = np.stack([x[0, f * step:f * step + frame, 0] * window for f in range(frames)])
    f = np.fft.rfft(segs, axis=1)
    np.testing.assert_allclose(y[0], np.stack([f.real, f.imag], -1), rtol=1e-9, atol=1e-9)


def test_maxpool_indices_tables_are_computed_at_run_time():
    # 200 x 200 windows of 2 x 2: position tables of 1.28 MB each, once built at import
    m = _model([helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1])],
               [_f32("x", [1, 2, 399, 399])], [_f32("y", None), _i64("i", None)])
    x = RNG.standard_normal((1, 2, 399, 399)).astype(np.float32)
    g, got = import_and_run(m, {"x": x})
    assert _largest_constant(g) <= 1 << 20
    for a, b in zip(got, onnxruntime_outputs(m, {"x": x})):
        np.testing.assert_array_equal(a, b)


def test_col2im_tables_are_computed_at_run_time():
    image, block = (150, 150), (3, 3)
    length = (image[0] - 2) * (image[1] - 2)  # 21,904 blocks of 9 slots: a 1.6 MB table
    m = _model([helper.make_node("Col2Im", ["x", "image", "block"], ["y"])], [_f32("x", [1, 9, length])],
               [_f32("y", None)], [_init("image", np.array(image)), _init("block", np.array(block))], opset=18)
    x = RNG.standard_normal((1, 9, length)).astype(np.float32)
    g, (y,) = import_and_run(m, {"x": x})
    assert _largest_constant(g) <= 1 << 20
    np.testing.assert_allclose(y, onnxruntime_outputs(m, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_einsum_diagonal_of_a_declared_huge_matrix_imports_small():
    n = 1 << 30  # the diagonal's gather positions took 8 GB at import
    m = _model([helper.make_node("Einsum", ["x"], ["y"], equation="ii->i")], [_f32("x", [n, n])], [_f32("y", None)])
    g = _bounded(m)
    assert str(g.outputs[0].type) == f"f32[{n}]" and _largest_constant(g) <= 16


def test_expand_to_a_shape_that_does_not_broadcast_is_refused():
    # x is f32[3]; Expand to [4] does not broadcast (onnxruntime refuses it); it must not return x unchanged
    m = _model([helper.make_node("Expand", ["x", "shape"], ["y"])], [_f32("x", [3])], [_f32("y", None)],
               [_init("shape", np.array([4], np.int64))])
    with pytest.raises(AccelirError, match="cannot broadcast dims 3 and 4"):
        import_onnx(m)


def test_expand_of_a_symbolic_dim_to_a_static_one_matches_onnxruntime():
    # x is f32[n]; Expand to [4] with n == 1 at run time gives 4 elements, not x unchanged
    m = _model([helper.make_node("Expand", ["x", "shape"], ["y"])], [_f32("x", ["n"])], [_f32("y", None)],
               [_init("shape", np.array([4], np.int64))])
    feeds = {"x": np.array([2.5], np.float32)}
    _, (got,) = import_and_run(m, feeds)
    (want,) = onnxruntime_outputs(m, feeds)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("reps", [[2], [2, 2, 2]])
def test_tile_with_repeats_not_one_per_axis_is_refused(reps):
    # onnxruntime refuses such a Tile; [2, 2, 2] on a rank-2 input must not import as f32[4,6]
    m = _model([helper.make_node("Tile", ["x", "r"], ["y"])], [_f32("x", [2, 3])], [_f32("y", None)],
               [_init("r", np.array(reps, np.int64))])
    with pytest.raises(OnnxImportError, match=rf"{len(reps)} repeats for an input of rank 2"):
        import_onnx(m)
