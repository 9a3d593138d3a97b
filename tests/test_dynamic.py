"""Data-dependent sizes: unbacked dims in the IR, the ops that introduce them, ONNX graphs whose
shape-like operands are run-time values, on onnxruntime (on XLA: tests/test_xla_unbacked.py).

Every op is checked on random inputs (fixed seeds) against onnx's ReferenceEvaluator and
onnxruntime running the original ONNX node, through both accelir paths: the interpreter
and the ONNX lowering run by onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx.reference import ReferenceEvaluator

import accelir
from accelir.errors import AccelirError, LoweringError, VerificationError
from accelir.frontends.onnx import import_onnx
from accelir.interpreter import run_graph
from accelir.ir import DType, Graph, TensorType
from accelir.lowering.jax import to_jax
from accelir.lowering.onnx import to_onnx
from accelir.ops.dynamic import DATA_DEPENDENT_OPS
from accelir.text import parse
from accelir.unbacked import unbacked_dims
from accelir.verify import verify

_ONNX = {np.dtype(np.float32): T.FLOAT, np.dtype(np.float64): T.DOUBLE, np.dtype(np.int64): T.INT64,
         np.dtype(np.int32): T.INT32, np.dtype(np.bool_): T.BOOL, np.dtype(np.uint8): T.UINT8}


@dataclass
class Case:
    id: str
    op: str
    inputs: list[np.ndarray | None]  # every input a graph input, shape-like ones too, fed as they come; None: omitted
    n_out: int = 1
    attrs: dict[str, Any] = field(default_factory=dict)
    ir_op: str = ""  # the data-dependent IR op the import must make ("": none, XLA runs it too)
    opset: int = 19
    tol: float = 1e-6  # rtol and atol: a float32 transform sums in another order than ours


def onnx_model(case: Case) -> onnx.ModelProto:
    names = ["" if a is None else f"in{i}" for i, a in enumerate(case.inputs)]
    outs = [f"out{i}" for i in range(case.n_out)]
    ins = [h.make_tensor_value_info(n, _ONNX[a.dtype], list(a.shape)) for n, a in zip(names, case.inputs) if n]
    # output types are left to inference: their sizes are what the data decides
    vouts = [h.make_empty_tensor_value_info(o) for o in outs]
    g = h.make_graph([h.make_node(case.op, names, outs, **case.attrs)], case.id, ins, vouts)
    return h.make_model(g, opset_imports=[h.make_opsetid("", case.opset)])


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, feeds)


def seeded(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    xy = rng.uniform(0, 10, (1, n, 2)).astype(np.float32)
    return np.concatenate([xy, xy + rng.uniform(1, 5, (1, n, 2)).astype(np.float32)], axis=2)


def _cases() -> list[Case]:
    r = seeded(0)
    x34 = r.standard_normal((3, 4)).astype(np.float32)
    sparse = np.where(r.uniform(size=(4, 5)) < 0.4, r.integers(1, 9, (4, 5)), 0).astype(np.int64)
    dup = r.integers(0, 5, (12,)).astype(np.int64)
    rows = r.integers(0, 3, (6, 2)).astype(np.float32)
    cond = r.uniform(size=(4,)) < 0.5
    i64 = lambda *v: np.asarray(v, np.int64)  # noqa: E731
    img = r.standard_normal((1, 2, 4, 6)).astype(np.float32)
    return [
        Case("nonzero_2d", "NonZero", [sparse], ir_op="nonzero"),
        Case("nonzero_bool", "NonZero", [r.uniform(size=(2, 3, 4)) < 0.3], ir_op="nonzero"),
        Case("unique_sorted", "Unique", [dup], n_out=4, ir_op="unique"),
        Case("unique_unsorted", "Unique", [dup], n_out=4, attrs={"sorted": 0}, ir_op="unique"),
        Case("unique_rows", "Unique", [rows], n_out=4, attrs={"axis": 0}, ir_op="unique"),
        Case("compress_axis", "Compress", [x34.T.copy(), cond], attrs={"axis": 0}, ir_op="compress"),
        Case("compress_flat", "Compress", [x34, r.uniform(size=(9,)) < 0.5], ir_op="compress"),
        Case("nms", "NonMaxSuppression",
             [random_boxes(r, 12), r.uniform(size=(1, 2, 12)).astype(np.float32), i64(4),
              np.asarray([0.3], np.float32), np.asarray([0.2], np.float32)], ir_op="non_max_suppression"),
        Case("nms_center", "NonMaxSuppression",
             [random_boxes(r, 8), r.uniform(size=(1, 1, 8)).astype(np.float32), i64(8), np.asarray([0.1], np.float32)],
             attrs={"center_point_box": 1}, ir_op="non_max_suppression"),
        Case("reshape", "Reshape", [x34, i64(0, 2, -1)], ir_op="reshape_dynamic"),
        Case("expand", "Expand", [x34[:, :1].copy(), i64(2, 1, 6)], ir_op="expand_dynamic"),
        Case("slice", "Slice", [x34, i64(1, -1), i64(3, 0), i64(0, 1), i64(1, -2)], ir_op="slice_dynamic"),
        Case("tile", "Tile", [x34, i64(2, 3)], ir_op="tile_dynamic"),
        Case("pad_reflect", "Pad", [x34, i64(1, 2, 0, 1)], attrs={"mode": "reflect"}, ir_op="pad_dynamic"),
        Case("pad_value_axes", "Pad", [x34, i64(1, 2), np.asarray(1.5, np.float32), i64(-1)],
             ir_op="pad_dynamic"),
        Case("range", "Range", [np.asarray(2, np.int64), np.asarray(17, np.int64), np.asarray(3, np.int64)],
             ir_op="range_dynamic"),
        Case("range_float", "Range", [np.asarray(1.0, np.float32), np.asarray(-2.0, np.float32),
                                      np.asarray(-0.5, np.float32)], ir_op="range_dynamic"),
        Case("topk", "TopK", [x34, i64(2)], n_out=2, attrs={"axis": 1}, ir_op="topk_dynamic"),
        Case("topk_smallest", "TopK", [x34, i64(3)], n_out=2, attrs={"axis": 0, "largest": 0},
             ir_op="topk_dynamic"),
        Case("reduce_sum_drop", "ReduceSum", [x34, i64(-1)], attrs={"keepdims": 0}, ir_op="reduce_dynamic"),
        Case("reduce_max_bool", "ReduceMax", [r.uniform(size=(3, 4, 2)) < 0.3, i64(0, 2)], ir_op="reduce_dynamic",
             opset=20),
        Case("reduce_min_empty_axes", "ReduceMin", [x34, np.zeros(0, np.int64)], attrs={"keepdims": 0},
             ir_op="reduce_dynamic"),
        Case("trilu_k", "Trilu", [r.standard_normal((2, 4, 5)).astype(np.float32), i64(-1)]),
        Case("triu_k", "Trilu", [x34, i64(2)], attrs={"upper": 1}),
        Case("cumsum_axis", "CumSum", [r.standard_normal((2, 3, 4)).astype(np.float32), np.asarray(1, np.int64)],
             attrs={"reverse": 1}),
        Case("cumsum_negative_axis", "CumSum", [x34, np.asarray(-2, np.int32)], attrs={"exclusive": 1}),
        Case("resize_scales", "Resize", [img, None, np.asarray([1, 1, 2.0, 1.5], np.float32)],
             attrs={"mode": "linear"}, ir_op="resize_dynamic"),
        Case("resize_sizes_policy", "Resize", [img, None, None, i64(3, 7)],
             attrs={"mode": "nearest", "axes": [2, 3], "keep_aspect_ratio_policy": "not_larger"},
             ir_op="resize_dynamic"),
        Case("squeeze", "Squeeze", [x34.reshape(3, 1, 4, 1), i64(-1, 1)], ir_op="squeeze_dynamic"),
        Case("unsqueeze", "Unsqueeze", [x34, i64(0, -1)], ir_op="unsqueeze_dynamic"),
        Case("split", "Split", [r.standard_normal((2, 7)).astype(np.float32), i64(2, 0, 5)], n_out=3,
             attrs={"axis": 1}, ir_op="split_dynamic"),
        Case("onehot_depth", "OneHot", [i64(0, 3, -1, 2), np.asarray(5, np.int64),
                                        np.asarray([-1, 4], np.float32)], attrs={"axis": 0}, ir_op="range_dynamic"),
        Case("resize_crop", "Resize", [img, np.asarray([0.1, 0.3, 0.9, 1.2], np.float32), None, i64(5, 4)],
             attrs={"mode": "linear", "axes": [2, 3], "coordinate_transformation_mode": "tf_crop_and_resize",
                    "extrapolation_value": 7.0}, ir_op="resize_dynamic"),
        Case("dft_axis", "DFT", [r.standard_normal((2, 5, 4, 2)).astype(np.float32), None, np.asarray(1, np.int64)],
             opset=20, tol=1e-5),
        Case("dft_inverse_negative_axis", "DFT", [r.standard_normal((3, 4, 1)).astype(np.float32), None,
                                                  np.asarray(-3, np.int64)], attrs={"inverse": 1}, opset=20,
             tol=1e-5),
        Case("constant_of_shape", "ConstantOfShape", [i64(2, 3)],
             attrs={"value": h.make_tensor("v", T.INT32, [1], [7])}, ir_op="constant_of_shape"),
        # the signal and image ops of accelir/ops/runtime_sized.py (more in tests/test_runtime_sized.py)
        Case("affine_grid_size", "AffineGrid", [r.standard_normal((2, 2, 3)).astype(np.float32), i64(2, 1, 3, 4)],
             ir_op="affine_grid_dynamic", opset=20),
        Case("col2im_shapes", "Col2Im", [r.standard_normal((1, 4, 12)).astype(np.float32), i64(4, 5), i64(2, 2)],
             ir_op="col2im_dynamic"),
        Case("rfft_axis", "DFT", [r.standard_normal((1, 6, 8, 1)).astype(np.float32), None, np.asarray(2, np.int64)],
             attrs={"onesided": 1}, ir_op="dft_dynamic", opset=20, tol=1e-5),
        Case("stft_step", "STFT", [r.standard_normal((1, 32, 1)).astype(np.float32), np.asarray(5, np.int64), None,
                                   np.asarray(8, np.int64)], ir_op="stft_dynamic", opset=17, tol=1e-5),
        Case("mel_weight_matrix", "MelWeightMatrix", [np.asarray(v, np.int64) for v in (6, 32, 8000)]
             + [np.asarray(v, np.float32) for v in (0.0, 3000.0)], ir_op="mel_weight_matrix_dynamic", opset=17),
    ]


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_op_matches_reference_evaluator_and_onnxruntime(case: Case) -> None:
    model = onnx_model(case)
    feeds = {f"in{i}": a for i, a in enumerate(case.inputs) if a is not None}
    arrays = list(feeds.values())
    want = ReferenceEvaluator(model).run(None, feeds)
    direct = run_ort(model, feeds)
    g = import_onnx(model)
    ops = {n.op for n in g.nodes}
    verify(g)
    assert_text_round_trip(g)
    got = {"interpreter": run_graph(g, arrays), "onnxruntime": run_ort(to_onnx(g), feeds)}
    if case.ir_op:
        assert case.ir_op in ops, str(g)
        assert unbacked_dims(g) or all(v.rank == 0 for v in g.outputs), "the import gave no unbacked dim"
    else:  # written in core ops: no unbacked dim, and XLA runs it as well
        assert not ops & set(DATA_DEPENDENT_OPS), str(g)
        got["xla"] = [np.asarray(o) for o in to_jax(g)(*arrays)]
    for i, (w, d) in enumerate(zip(want, direct)):
        for label, outs in got.items():
            got_i = outs[i]
            assert got_i.dtype == w.dtype, f"{case.id} output {i} ({label})"
            np.testing.assert_allclose(got_i, w, rtol=case.tol, atol=case.tol,
                                       err_msg=f"{case.id} output {i} ({label}) vs reference")
            np.testing.assert_allclose(got_i, d, rtol=case.tol, atol=case.tol,
                                       err_msg=f"{case.id} output {i} ({label}) vs onnxruntime")


# data-dependent ops no ONNX op imports as, tested from their frontend
NOT_FROM_ONNX = {"bincount": "tests/test_torch_bincount_topk.py"}


def test_every_data_dependent_op_has_a_case() -> None:
    assert sorted(set(DATA_DEPENDENT_OPS) - {c.ir_op for c in CASES} - set(NOT_FROM_ONNX)) == []


def assert_text_round_trip(g: Graph) -> None:
    text = str(g)
    again = parse(text, constants=g.constants)
    verify(again)
    assert str(again) == text
    assert str(g.copy()) == text


# ----- the IR ------------------------------------------------------------------------

def _two_nonzeros() -> Graph:
    g = Graph("nz")
    x = g.add_input(TensorType(DType.f32, ("n", 6)), "x")
    a = g.apply("nonzero", x)
    b = g.apply("nonzero", g.apply("neg", x))
    g.set_outputs([a, b])
    return g


def test_unbacked_dims_are_fresh_symbols_with_bounds_and_round_trip() -> None:
    g = _two_nonzeros()
    verify(g)
    assert [v.shape for v in g.outputs] == [(2, "u0"), (2, "u1")]
    text = str(g)
    assert 'nonzero(%x) {syms=["u0"]} : i64[2,u0]' in text
    assert_text_round_trip(g)
    x = Graph("static")
    v = x.add_input(TensorType(DType.f32, (3, 5)), "x")
    x.set_outputs([x.apply("nonzero", v)])
    (dim,) = unbacked_dims(x).values()
    assert (dim.name, dim.low, dim.high) == ("u0", 0, 15)


def test_fresh_symbols_skip_names_the_graph_already_uses() -> None:
    g = Graph("taken")
    x = g.add_input(TensorType(DType.f32, ("u0",)), "x")
    g.set_outputs([g.apply("nonzero", x)])
    assert g.outputs[0].shape == (1, "u1")
    verify(g)


def test_verifier_refuses_a_symbol_introduced_twice_or_taken_from_an_input() -> None:
    twice = str(_two_nonzeros()).replace('syms=["u1"]', 'syms=["u0"]').replace("i64[2,u1]", "i64[2,u0]")
    with pytest.raises(VerificationError, match="unbacked dim 'u0' is not fresh"):
        verify(parse(twice))
    taken = str(_two_nonzeros()).replace('syms=["u0"]', 'syms=["n"]').replace("i64[2,u0]", "i64[2,n]")
    with pytest.raises(VerificationError, match="a dim of a graph input"):
        verify(parse(taken))


def test_two_unbacked_dims_are_never_assumed_equal() -> None:
    g = _two_nonzeros()
    a, b = g.outputs
    with pytest.raises(VerificationError, match="cannot broadcast symbolic dims 'u0' and 'u1'"):
        g.apply("add", a, b)
    assert g.apply("add", a, a).shape == (2, "u0")  # the same symbol is the same size


def test_passes_keep_distinct_data_dependent_nodes() -> None:
    g = _two_nonzeros()
    g.set_outputs([g.apply("nonzero", g.inputs[0]), g.apply("nonzero", g.inputs[0])])
    compiled = accelir.optimize(g, backend="onnxruntime")
    assert sorted(u for v in compiled.graph.outputs for u in v.shape if isinstance(u, str)) == ["u2", "u3"]
    verify(compiled.graph)


def test_folding_leaves_a_data_dependent_node_on_constants_alone() -> None:
    """Its result would have a size the graph's types do not state (u0), so it stays a node."""
    g = Graph("folded")
    x = g.add_input(TensorType(DType.f32, (6,)), "x")
    nz = g.apply("nonzero", g.const(np.array([0, 1, 0, 2, 3, 0], np.float32), name="c"))
    y = g.apply("gather", x, g.apply("reshape", nz, shape=(nz.shape[1],)), axis=0)
    g.set_outputs([g.apply("relu", y)])
    compiled = accelir.optimize(g, backend="onnxruntime", level=3)
    assert "nonzero" in {n.op for n in compiled.graph.nodes}
    np.testing.assert_array_equal(compiled(np.arange(6, dtype=np.float32)), [1, 3, 4])


# ----- compiled models ---------------------------------------------------------------

def nonzero_gather_model() -> onnx.ModelProto:
    nodes = [h.make_node("NonZero", ["x"], ["nz"]), h.make_node("Squeeze", ["nz", "zero"], ["idx"]),
             h.make_node("Gather", ["x", "idx"], ["y"])]
    g = h.make_graph(nodes, "nzg", [h.make_tensor_value_info("x", T.FLOAT, [10])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["k"])], [h.make_tensor("zero", T.INT64, [1], [0])])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def with_nonzeros(n: int, seed: int) -> np.ndarray:
    r = seeded(seed)
    x = np.zeros(10, np.float32)
    x[r.choice(10, n, replace=False)] = r.uniform(1, 2, n).astype(np.float32)
    return x


def test_compiled_model_runs_at_two_sizes_of_a_data_dependent_dim() -> None:
    model = nonzero_gather_model()
    compiled = accelir.optimize(model, (with_nonzeros(3, 1),), backend="onnxruntime")
    for n, seed in ((3, 1), (7, 2)):
        x = with_nonzeros(n, seed)
        (got,) = compiled(x)
        assert got.shape == (n,)
        np.testing.assert_array_equal(got, ReferenceEvaluator(model).run(None, {"x": x})[0])



def test_constant_split_sizes_of_a_selection_must_add_up_to_its_count() -> None:
    """Split [1, 2] of x[nonzero(x)]: onnxruntime fails where the count is not 3; the compiled model must fail
    too, not slice [0:1] and [1:3] and type the second part as 2 whatever it holds."""
    nodes = [*nonzero_gather_model().graph.node, h.make_node("Split", ["y", "sizes"], ["head", "rest"], axis=0),
             h.make_node("Shape", ["rest"], ["rest_shape"])]
    g = h.make_graph(nodes, "split", [h.make_tensor_value_info("x", T.FLOAT, [10])],
                     [h.make_empty_tensor_value_info(o) for o in ("head", "rest", "rest_shape")],
                     [h.make_tensor("zero", T.INT64, [1], [0]), h.make_tensor("sizes", T.INT64, [2], [1, 2])])
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    compiled = accelir.optimize(model, (with_nonzeros(3, 1),), backend="onnxruntime")
    x = with_nonzeros(3, 2)
    for got, want, direct in zip(compiled(x), ReferenceEvaluator(model).run(None, {"x": x}), run_ort(model, {"x": x})):
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got, direct)
    x = with_nonzeros(2, 3)
    with pytest.raises(Exception, match="Split"):
        run_ort(model, {"x": x})
    with pytest.raises(Exception, match="Split"):
        compiled(x)


def test_squeeze_without_axes_of_a_selection_is_refused_at_import() -> None:
    """ONNX drops the count's dim where the data make it 1: the rank would depend on the data."""
    nodes = [*nonzero_gather_model().graph.node, h.make_node("Squeeze", ["y"], ["squeezed"])]
    g = h.make_graph(nodes, "squeeze", [h.make_tensor_value_info("x", T.FLOAT, [10])],
                     [h.make_empty_tensor_value_info("squeezed")], [h.make_tensor("zero", T.INT64, [1], [0])])
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    assert run_ort(model, {"x": with_nonzeros(1, 1)})[0].shape == ()
    assert run_ort(model, {"x": with_nonzeros(3, 1)})[0].shape == (3,)
    with pytest.raises(AccelirError, match=r"\(Squeeze\): Squeeze without axes drops a data-dependent dim.*give "
                                           r"Squeeze its axes"):
        accelir.optimize(model, (with_nonzeros(3, 1),), backend="onnxruntime")

def test_xla_refuses_a_data_dependent_size_without_bound_naming_node_input_and_backend() -> None:
    """Range's length has no upper bound to pad to (tests/test_xla_unbacked.py: the bounded ones run)."""
    case = CASES[[c.id for c in CASES].index("range")]
    with pytest.raises(LoweringError, match=r"range_dynamic.*input 1 \(graph input 'in1'\).*no upper bound.*"
                                            r"backend=\"onnxruntime\""):
        accelir.optimize(onnx_model(case), tuple(case.inputs), backend="xla")


def test_xla_names_a_shape_like_graph_input_and_static_inputs_still_specialises() -> None:
    model = onnx_model(CASES[[c.id for c in CASES].index("reshape")])
    g = import_onnx(model)
    with pytest.raises(LoweringError, match=r"reshape_dynamic.*input 1 \(graph input 'in1'\).*static_inputs"):
        to_jax(g)
    shape = np.asarray([0, 2, -1], np.int64)
    static = import_onnx(model, static_inputs={"in1": shape})
    assert "reshape_dynamic" not in {n.op for n in static.nodes}
    assert not unbacked_dims(static)
    x = CASES[[c.id for c in CASES].index("reshape")].inputs[0]
    np.testing.assert_array_equal(to_jax(static)(x)[0], x.reshape(3, 2, 2))
    compiled = accelir.optimize(model, {"in0": x}, backend="xla", static_inputs={"in1": shape})  # the remedy
    np.testing.assert_array_equal(np.asarray(compiled(x)[0]), x.reshape(3, 2, 2))


# ----- detection post-processing -----------------------------------------------------

def detection_model(n: int = 16) -> onnx.ModelProto:
    """score threshold -> NonZero -> Gather -> TopK with k = min(count, 6) -> NonMaxSuppression."""
    nodes = [
        h.make_node("Greater", ["scores", "thr"], ["mask"]),
        h.make_node("NonZero", ["mask"], ["nz"]),
        h.make_node("Squeeze", ["nz", "zero"], ["idx"]),
        h.make_node("Gather", ["scores", "idx"], ["s1"]),
        h.make_node("Gather", ["boxes", "idx"], ["b1"]),
        h.make_node("Shape", ["s1"], ["count"]),
        h.make_node("Min", ["count", "kmax"], ["k"]),
        h.make_node("TopK", ["s1", "k"], ["top_scores", "top_idx"]),
        h.make_node("Gather", ["b1", "top_idx"], ["b2"]),
        h.make_node("Unsqueeze", ["b2", "zero"], ["b3"]),
        h.make_node("Reshape", ["top_scores", "shape3"], ["s3"]),
        h.make_node("NonMaxSuppression", ["b3", "s3", "max_out", "iou"], ["selected"]),
    ]
    inits = [h.make_tensor("thr", T.FLOAT, [], [0.3]), h.make_tensor("zero", T.INT64, [1], [0]),
             h.make_tensor("kmax", T.INT64, [1], [6]), h.make_tensor("shape3", T.INT64, [3], [1, 1, -1]),
             h.make_tensor("max_out", T.INT64, [1], [3]), h.make_tensor("iou", T.FLOAT, [1], [0.4])]
    g = h.make_graph(nodes, "detect", [h.make_tensor_value_info("boxes", T.FLOAT, [n, 4]),
                                       h.make_tensor_value_info("scores", T.FLOAT, [n])],
                     [h.make_tensor_value_info("selected", T.INT64, ["m", 3]),
                      h.make_tensor_value_info("top_scores", T.FLOAT, ["k"])], inits)
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def test_detection_postprocessing_end_to_end_on_onnxruntime() -> None:
    model = detection_model()
    compiled = None
    for seed in (3, 4, 5):
        r = seeded(seed)
        boxes, scores = random_boxes(r, 16)[0], r.uniform(0, 1, 16).astype(np.float32)
        if compiled is None:
            compiled = accelir.optimize(model, (boxes, scores), backend="onnxruntime")
        feeds = {"boxes": boxes, "scores": scores}
        want = ReferenceEvaluator(model).run(None, feeds)
        direct = run_ort(model, feeds)
        got = compiled(boxes, scores)
        for g_, w, d in zip(got, want, direct):
            np.testing.assert_array_equal(g_, w)
            np.testing.assert_array_equal(g_, d)


def test_a_bounded_constant_of_shape_checks_its_bound_without_allocating_to_it() -> None:
    """The ONNX check of ``bound`` (a size torch.export bounds) must cost nothing at a large bound: a
    filler of ``bound - size`` entries per dim would be 2^40 entries for two dims bounded by 2^20."""
    g = parse("""graph main(%s: i64[2]) -> (f32[u0,u1]) {
      %0 = constant_of_shape(%s) {value=1.0, dtype=f32, bound=1048576, syms=["u0", "u1"]} : f32[u0,u1]
      return %0
    }""")
    model = to_onnx(g)
    for shape in ([0, 0], [2, 3], [1048576, 0]):
        assert run_ort(model, {"s": np.array(shape)})[0].shape == tuple(shape)
    with pytest.raises(Exception, match="ConstantOfShape"):
        run_ort(model, {"s": np.array([1048577, 1])})


def test_a_negative_bound_on_constant_of_shape_is_refused_by_its_type_rule() -> None:
    """No size is below 0: a negative bound could only fail every run, later and less clearly."""
    with pytest.raises(AccelirError, match=r"constant_of_shape: bound -1 .*0 or more"):
        verify(parse("""graph main(%s: i64[1]) -> (f32[u0]) {
          %0 = constant_of_shape(%s) {value=1.0, dtype=f32, bound=-1, syms=["u0"]} : f32[u0]
          return %0
        }"""))
