"""Data-dependent sizes on XLA: padded to an upper bound with a valid length, sliced at the outputs.

Each model is compiled once and called at several sizes of its data-dependent dims; the
results must equal onnxruntime running the original ONNX model and onnx's ReferenceEvaluator
(shapes included).  The padding is never zero-filled on purpose: a consumer that read it
(a sum, a max, a gather from the end) would give another number.  Nodes that cannot be
padded right are refused by name.
"""

from __future__ import annotations

import jax
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto as T
from onnx import helper as h
from onnx.reference import ReferenceEvaluator

import accelir
from accelir.errors import AccelirError, InputError, LoweringError
from accelir.frontends.onnx import import_onnx
from accelir.ir import DType, Graph, TensorType
from accelir.lowering.jax import JAX_RULES, PADDED_RULES, stablehlo, to_jax
from accelir.lowering.jax.padding import MASKED, PRODUCERS
from test_dynamic import (CASES, detection_model, nonzero_gather_model, onnx_model, random_boxes, run_ort, seeded,
                          with_nonzeros)


def _check(model: onnx.ModelProto, compiled, feeds: dict[str, np.ndarray]) -> None:
    want = ReferenceEvaluator(model).run(None, feeds)
    direct = run_ort(model, feeds)
    got = [np.asarray(o) for o in compiled(*feeds.values())]
    assert len(got) == len(want)
    for i, (g, w, d) in enumerate(zip(got, want, direct)):
        assert g.shape == w.shape == d.shape and g.dtype == w.dtype, f"output {i}: {g.shape} {w.shape} {d.shape}"
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6, err_msg=f"output {i} vs reference")
        np.testing.assert_allclose(g, d, rtol=1e-6, atol=1e-6, err_msg=f"output {i} vs onnxruntime")


def _compiled_once(compiled) -> None:
    """One XLA program served every call: the lengths are traced values, not shapes."""
    assert compiled._runner._jitted._cache_size() == 1


def _graph(nodes, inputs, outputs, inits=(), opset: int = 17) -> onnx.ModelProto:
    g = h.make_graph(nodes, "m", inputs, [h.make_empty_tensor_value_info(o) for o in outputs], list(inits))
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset)])


def _i64(name: str, *values: int) -> onnx.TensorProto:
    return h.make_tensor(name, T.INT64, [len(values)], list(values))


# ----- NonZero -> Gather, and consumers that must mask the padding --------------------

def test_nonzero_gather_compiled_once_runs_at_every_count() -> None:
    model = nonzero_gather_model()
    compiled = accelir.optimize(model, (with_nonzeros(3, 1),), backend="xla")
    for n, seed in ((3, 1), (7, 2), (0, 3), (10, 4)):
        _check(model, compiled, {"x": with_nonzeros(n, seed)})
    _compiled_once(compiled)


def _masked_consumers() -> onnx.ModelProto:
    """x[nonzero(x)] into every consumer whose result would read the padding if it were not masked."""
    nodes = [h.make_node("NonZero", ["x"], ["nz"]), h.make_node("Squeeze", ["nz", "zero"], ["idx"]),
             h.make_node("Gather", ["x", "idx"], ["y"]),
             h.make_node("ReduceSum", ["y"], ["sum"], keepdims=0),
             h.make_node("ReduceMean", ["y"], ["mean"], keepdims=0),
             h.make_node("ReduceMax", ["y"], ["max"], keepdims=0),
             h.make_node("ReduceMin", ["y"], ["min"], keepdims=0),
             h.make_node("ArgMin", ["y"], ["argmin"], keepdims=0),
             h.make_node("ArgMax", ["y"], ["argmax_last"], keepdims=0, select_last_index=1),
             h.make_node("Gather", ["y", "minus_one"], ["last"]),
             h.make_node("TopK", ["y", "two"], ["top", "top_i"], largest=0),
             h.make_node("Unsqueeze", ["y", "one"], ["y2d"]),
             h.make_node("Softmax", ["y2d"], ["soft"], axis=1)]
    return _graph(nodes, [h.make_tensor_value_info("x", T.FLOAT, [10])],
                  ["y", "sum", "mean", "max", "min", "argmin", "argmax_last", "last", "top", "top_i", "soft"],
                  [_i64("zero", 0), _i64("one", 1), h.make_tensor("minus_one", T.INT64, [], [-1]), _i64("two", 2)])


def test_reductions_argmax_topk_and_gather_from_the_end_ignore_the_padding() -> None:
    model = _masked_consumers()
    r = seeded(7)
    x = np.where(r.uniform(size=10) < 0.5, 0, r.uniform(-3, -1, 10)).astype(np.float32)  # negatives: a max over 0s
    x[[1, 4, 8]] = [-2.0, -1.5, -2.0]  # ties for the last index
    compiled = accelir.optimize(model, (x,), backend="xla")
    _check(model, compiled, {"x": x})
    for n, seed in ((2, 8), (9, 9), (5, 10)):
        y = with_nonzeros(n, seed)
        y[y != 0] *= -1
        _check(model, compiled, {"x": y})
    _compiled_once(compiled)



@pytest.mark.parametrize("backend", ["xla", "onnxruntime"])
def test_shape_and_size_of_a_selection_read_its_count(backend: str) -> None:
    """Shape and Size of x[nonzero(x)] read the count through types only, with no edge to the NonZero:
    the cleanup passes must keep it."""
    nodes = [h.make_node("NonZero", ["x"], ["nz"]), h.make_node("Squeeze", ["nz", "zero"], ["idx"]),
             h.make_node("Gather", ["x", "idx"], ["y"]), h.make_node("Shape", ["y"], ["shape"]),
             h.make_node("Size", ["y"], ["size"])]
    model = _graph(nodes, [h.make_tensor_value_info("x", T.FLOAT, [10])], ["shape", "size"], [_i64("zero", 0)])
    compiled = accelir.optimize(model, (with_nonzeros(3, 1),), backend=backend)
    for n, seed in ((3, 1), (7, 2), (0, 3)):
        _check(model, compiled, {"x": with_nonzeros(n, seed)})


@pytest.mark.parametrize("backend", ["xla", "onnxruntime"])
def test_constant_slices_of_a_selection_clamp_to_its_count(backend: str) -> None:
    """x[nonzero(x)][1:], [-2:] and [0:2]: a count the data decides may be below the slice's bounds, so the
    sliced size is the data's too (not u0 - 1 or 2), and Shape reads it."""
    bounds = {"tail": (1, 2**63 - 1), "last_two": (-2, 2**63 - 1), "first_two": (0, 2)}
    nodes = [h.make_node("NonZero", ["x"], ["nz"]), h.make_node("Squeeze", ["nz", "zero"], ["idx"]),
             h.make_node("Gather", ["x", "idx"], ["y"])]
    inits = [_i64("zero", 0)]
    for name, (start, stop) in bounds.items():
        nodes += [h.make_node("Slice", ["y", f"{name}_s", f"{name}_e"], [name]),
                  h.make_node("Shape", [name], [f"{name}_shape"])]
        inits += [_i64(f"{name}_s", start), _i64(f"{name}_e", stop)]
    outs = [o for name in bounds for o in (name, f"{name}_shape")]
    model = _graph(nodes, [h.make_tensor_value_info("x", T.FLOAT, [10])], outs, inits)
    compiled = accelir.optimize(model, (with_nonzeros(3, 1),), backend=backend)
    for n, seed in ((3, 1), (1, 2), (0, 3), (6, 4)):
        _check(model, compiled, {"x": with_nonzeros(n, seed)})

# ----- Compress, TopK with a computed k, Unique ----------------------------------------

def test_compress_then_reduce_sum_and_mean_over_the_selection() -> None:
    nodes = [h.make_node("Greater", ["x", "thr"], ["cond"]),
             h.make_node("ReduceMax", ["x", "one"], ["row_max"], keepdims=0),
             h.make_node("Greater", ["row_max", "thr"], ["rows"]),
             h.make_node("Compress", ["x", "rows"], ["picked"], axis=0),
             h.make_node("ReduceSum", ["picked", "zero"], ["sum0"], keepdims=1),
             h.make_node("ReduceMean", ["picked", "one"], ["mean1"], keepdims=0),
             h.make_node("Reshape", ["cond", "minus_one"], ["flat"]),
             h.make_node("Compress", ["x", "flat"], ["flat_picked"]),
             h.make_node("ReduceSum", ["flat_picked"], ["flat_sum"], keepdims=0)]
    model = _graph(nodes, [h.make_tensor_value_info("x", T.FLOAT, [6, 4])],
                   ["picked", "sum0", "mean1", "flat_picked", "flat_sum"],
                   [h.make_tensor("thr", T.FLOAT, [], [0.8]), _i64("zero", 0), _i64("one", 1),
                    _i64("minus_one", -1)], opset=18)
    compiled = None
    for seed, scale in ((0, 1.0), (1, 1.3), (2, 0.85), (3, 0.5)):
        x = (seeded(seed).uniform(0, 1, (6, 4)) * scale).astype(np.float32)
        compiled = compiled or accelir.optimize(model, (x,), backend="xla")
        _check(model, compiled, {"x": x})
    _compiled_once(compiled)


def test_topk_with_a_k_computed_from_the_data() -> None:
    """k = the number of positive entries of each call; values and indices, then a sum of the top ones."""
    nodes = [h.make_node("Greater", ["x", "zero_f"], ["pos"]), h.make_node("Cast", ["pos"], ["pos_i"], to=T.INT64),
             h.make_node("ReduceSum", ["pos_i"], ["k"], keepdims=1),
             h.make_node("TopK", ["x", "k"], ["values", "indices"], axis=0),
             h.make_node("ReduceSum", ["values"], ["total"], keepdims=0)]
    model = _graph(nodes, [h.make_tensor_value_info("x", T.FLOAT, [9])], ["values", "indices", "total"],
                   [h.make_tensor("zero_f", T.FLOAT, [], [0.0])])
    compiled = None
    for seed, shift in ((0, 0.0), (1, 0.4), (2, -0.4), (3, -2.0)):
        x = (seeded(seed).uniform(-1, 1, 9) + shift).astype(np.float32)
        compiled = compiled or accelir.optimize(model, (x,), backend="xla")
        assert "topk_dynamic" in {n.op for n in compiled.graph.nodes}
        _check(model, compiled, {"x": x})
    _compiled_once(compiled)


def test_slices_with_computed_bounds_and_steps_then_a_sum() -> None:
    """Slice's output size is bounded by the dim it slices: ends, starts from the data, negative steps."""
    nodes = [h.make_node("Greater", ["x", "zero_f"], ["pos"]), h.make_node("Cast", ["pos"], ["pos_i"], to=T.INT64),
             h.make_node("ReduceSum", ["pos_i"], ["k"], keepdims=1),
             h.make_node("Neg", ["k"], ["minus_k"]),
             h.make_node("Slice", ["x", "zero", "k"], ["head"]),
             h.make_node("Slice", ["x", "minus_k", "big"], ["tail"]),
             h.make_node("Slice", ["x", "minus_one", "k", "zero", "minus_two"], ["back"]),
             h.make_node("Slice", ["m", "k", "big", "one"], ["cols"]),
             h.make_node("ReduceSum", ["cols", "one"], ["col_sum"], keepdims=0),
             h.make_node("ReduceSum", ["back"], ["back_sum"], keepdims=0)]
    inputs = [h.make_tensor_value_info("x", T.FLOAT, [10]), h.make_tensor_value_info("m", T.FLOAT, [3, 7])]
    model = _graph(nodes, inputs, ["head", "tail", "back", "cols", "col_sum", "back_sum"],
                   [h.make_tensor("zero_f", T.FLOAT, [], [0.0]), _i64("zero", 0), _i64("one", 1), _i64("big", 1 << 40),
                    _i64("minus_one", -1), _i64("minus_two", -2)])
    compiled = None
    for seed, shift in ((0, 0.0), (1, 0.6), (2, -0.7), (3, 2.0)):
        r = seeded(seed)
        x, m = (r.uniform(-1, 1, 10) + shift).astype(np.float32), r.standard_normal((3, 7)).astype(np.float32)
        compiled = compiled or accelir.optimize(model, (x, m), backend="xla")
        assert "slice_dynamic" in {n.op for n in compiled.graph.nodes}
        _check(model, compiled, {"x": x, "m": m})
    _compiled_once(compiled)


@pytest.mark.parametrize("attrs", [{}, {"sorted": 0}, {"axis": 0}, {"axis": 0, "sorted": 0}],
                         ids=["sorted", "first_seen", "rows", "rows_first_seen"])
def test_unique_every_output_at_two_distinct_counts(attrs: dict) -> None:
    shape = [8, 2] if "axis" in attrs else [12]
    model = _graph([h.make_node("Unique", ["x"], ["y", "first", "inverse", "counts"], **attrs)],
                   [h.make_tensor_value_info("x", T.INT64, shape)], ["y", "first", "inverse", "counts"], opset=17)
    compiled = None
    for seed, high in ((0, 3), (1, 9)):
        x = seeded(seed).integers(0, high, shape).astype(np.int64)
        compiled = compiled or accelir.optimize(model, (x,), backend="xla")
        _check(model, compiled, {"x": x})
    _compiled_once(compiled)


@pytest.mark.parametrize("attrs", [{}, {"sorted": 0}], ids=["sorted", "first_seen"])
def test_unique_of_a_selection_leaves_the_padding_out(attrs: dict) -> None:
    """Unique of x[nonzero(x)]: the padding (copies of some entry) must add no value and no count."""
    nodes = [h.make_node("NonZero", ["x"], ["nz"]), h.make_node("Squeeze", ["nz", "zero"], ["idx"]),
             h.make_node("Gather", ["x", "idx"], ["y"]),
             h.make_node("Unique", ["y"], ["values", "first", "inverse", "counts"], **attrs)]
    model = _graph(nodes, [h.make_tensor_value_info("x", T.FLOAT, [12])], ["values", "first", "inverse", "counts"],
                   [_i64("zero", 0)])
    compiled = None
    for seed, zeros in ((0, 0.3), (1, 0.7), (2, 0.0)):
        r = seeded(seed)
        x = np.where(r.uniform(size=12) < zeros, 0, r.choice([-1.5, 2.0, 3.25, -7.0], 12)).astype(np.float32)
        compiled = compiled or accelir.optimize(model, (x,), backend="xla")
        _check(model, compiled, {"x": x})
    _compiled_once(compiled)


@pytest.mark.parametrize("case", [c for c in CASES if c.ir_op in PRODUCERS], ids=lambda c: c.id)
def test_every_bounded_data_dependent_op_case_on_xla(case) -> None:
    model = onnx_model(case)
    feeds = {f"in{i}": a for i, a in enumerate(case.inputs) if a is not None}
    _check(model, to_jax(import_onnx(model)), feeds)


# ----- detection post-processing -------------------------------------------------------

def test_detection_postprocessing_on_xla_at_several_counts() -> None:
    """score threshold -> NonZero -> Gather -> TopK (k = min(count, 6)) -> NonMaxSuppression, each
    stage on padded buffers (NMS reads only the valid boxes), matching both oracles."""
    model = detection_model()
    compiled = None
    counts = set()
    for seed, scale in ((3, 1.0), (4, 0.4), (5, 0.33), (6, 1.0), (7, 0.2)):
        r = seeded(seed)
        boxes, scores = random_boxes(r, 16)[0], (r.uniform(0, 1, 16) * scale).astype(np.float32)
        compiled = compiled or accelir.optimize(model, (boxes, scores), backend="xla")
        _check(model, compiled, {"boxes": boxes, "scores": scores})
        counts.add(compiled(boxes, scores)[0].shape[0])
    assert len(counts) >= 3, counts  # the number of boxes kept varied
    _compiled_once(compiled)


def test_nms_with_a_run_time_box_limit_pads_to_every_box() -> None:
    case = next(c for c in CASES if c.id == "nms")
    inputs = [case.inputs[0], case.inputs[1], np.asarray([2], np.int64), *case.inputs[3:]]
    model = onnx_model(type(case)(case.id, case.op, inputs, ir_op=case.ir_op))
    compiled = accelir.optimize(model, tuple(inputs), backend="xla")
    for cap in (2, 0, 12):
        feeds = {f"in{i}": a for i, a in enumerate(inputs)}
        feeds["in2"] = np.asarray([cap], np.int64)
        _check(model, compiled, feeds)
    _compiled_once(compiled)



@pytest.mark.parametrize("given", [2, 3], ids=["boxes-and-scores", "and-a-box-limit"])
def test_nms_with_its_optional_inputs_left_out(given: int) -> None:
    """The IoU threshold (and the box limit) take ONNX's defaults, 0, when the model leaves them out.
    onnx's ReferenceEvaluator fails on the left-out inputs itself: onnxruntime is the oracle."""
    r = seeded(13)
    inputs = [random_boxes(r, 7), r.uniform(size=(1, 2, 7)).astype(np.float32), np.asarray([3], np.int64)][:given]
    names = ["b", "s", "m"][:given]
    model = _graph([h.make_node("NonMaxSuppression", names, ["selected"])],
                   [h.make_tensor_value_info(n, T.INT64 if n == "m" else T.FLOAT, list(a.shape))
                    for n, a in zip(names, inputs)], ["selected"], opset=11)
    compiled = accelir.optimize(model, tuple(inputs), backend="xla")
    for seed in (14, 15):
        r = seeded(seed)
        feeds = dict(zip(names, [random_boxes(r, 7), r.uniform(size=(1, 2, 7)).astype(np.float32), inputs[-1]]))
        (want,), (got,) = run_ort(model, feeds), compiled(*feeds.values())
        assert got.dtype == want.dtype and len(want) == (0 if given == 2 else 6)
        np.testing.assert_array_equal(got, want)
    _compiled_once(compiled)

# ----- refusals ------------------------------------------------------------------------

def test_every_masked_op_has_a_padded_rule_and_every_producer_a_rule_of_its_own() -> None:
    assert sorted(MASKED - set(PADDED_RULES)) == []
    refuse = JAX_RULES["range_dynamic"]
    assert [op for op in sorted(PRODUCERS) if JAX_RULES[op] is refuse] == []


def _nonzero_2d() -> tuple[Graph, object]:
    g = Graph("nz2")
    x = g.add_input(TensorType(DType.f32, (3, 4)), "x")
    return g, g.apply("nonzero", x)


def test_reshape_merging_a_data_dependent_dim_is_refused_by_name() -> None:
    g, nz = _nonzero_2d()
    g.set_outputs([g.apply("reshape", nz, shape=(nz.shape[1], 2))])
    with pytest.raises(LoweringError, match=r"reshape.*merges or splits a data-dependent dim.*backend=\"onnxruntime\""):
        accelir.optimize(g, backend="xla")


def test_concat_along_a_data_dependent_dim_packs_the_parts() -> None:
    """The second part's rows follow the first's valid rows, not its padding; the join runs at every count."""
    g, nz = _nonzero_2d()
    g.set_outputs([g.apply("concat", nz, nz, axis=1)])
    compiled = accelir.optimize(g, backend="xla")
    for x in (np.asarray([[0, 1, 0, 2], [3, 0, 0, 0], [0, 0, 0, 4]], np.float32), np.zeros((3, 4), np.float32),
              np.ones((3, 4), np.float32)):
        want = np.asarray(np.nonzero(x))
        np.testing.assert_array_equal(compiled(x), np.concatenate([want, want], axis=1))
    _compiled_once(compiled)


def test_unique_of_a_padded_value_and_a_matmul_contracting_it_are_refused() -> None:
    g, nz = _nonzero_2d()
    g.set_outputs([g.make("unique", [nz], {"axis": 1, "sorted": True}).outputs[0]])
    with pytest.raises(LoweringError, match=r"unique.*size is itself data-dependent.*onnxruntime"):
        to_jax(g)
    g, nz = _nonzero_2d()
    f = g.apply("cast", nz, dtype=DType.f32)
    g.set_outputs([g.apply("matmul", f, g.apply("transpose", f, perm=(1, 0)))])
    assert g.outputs[0].shape == (2, 2)
    with pytest.raises(LoweringError, match=r"matmul.*mixes entries along axis 1 of input 0, whose size is "
                                            r"data-dependent"):
        to_jax(g)


def test_onnxruntime_still_runs_what_xla_refuses() -> None:
    g, nz = _nonzero_2d()
    g.set_outputs([g.apply("reshape", nz, shape=(nz.shape[1], 2))])  # XLA refuses it (test above)
    x = np.asarray([[0, 1, 0, 2], [3, 0, 0, 0], [0, 0, 0, 4]], np.float32)
    got = accelir.optimize(g, backend="onnxruntime")(x)
    want = np.asarray(np.nonzero(x))
    np.testing.assert_array_equal(got, want.reshape(-1, 2))


def test_export_and_sharding_refuse_padded_programs(tmp_path) -> None:
    g = import_onnx(nonzero_gather_model())
    with pytest.raises(LoweringError, match=r"data-dependent sizes.*Export \.onnx instead"):
        stablehlo(g)
    compiled = accelir.optimize(nonzero_gather_model(), (with_nonzeros(3, 1),), backend="xla")
    with pytest.raises(AccelirError, match="data-dependent sizes"):
        compiled.export(str(tmp_path / "never-written.mlir"))
    assert not list(tmp_path.iterdir())
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    with pytest.raises(AccelirError, match="data-dependent sizes, which a sharded program does not pad"):
        accelir.optimize(nonzero_gather_model(), (with_nonzeros(3, 1),), backend="xla", mesh=mesh,
                         sharding="data-parallel")


# ----- the torch frontend's data-dependent ops -----------------------------------------

class _Selections(torch.nn.Module):
    """Boolean indexing (whole shape, leading dim, inner dim), masked_select with a broadcast mask, nonzero
    feeding advanced indexing, and nonzero as a tuple: each a data-dependent size, reduced or returned."""

    def forward(self, x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor):
        pos = x[x > 0]
        idx = torch.nonzero(x < -0.5)
        r, c = torch.nonzero(x > 0.5, as_tuple=True)
        return (pos.sum(), pos * 2, x[rows].mean(0), x[:, cols].amax(1), torch.masked_select(x, cols) + 1,
                idx, x[idx[:, 0], idx[:, 1]], r * 4 + c, torch.sort(pos).values)


def _selection_inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(5, 4, generator=g)
    rows = torch.rand(5, generator=g) < 0.6
    rows[seed % 5] = True  # a mean over no rows is nan on every backend alike; keep one
    return x, rows, torch.rand(4, generator=g) < 0.5


@pytest.mark.parametrize("backend", ["xla", "onnxruntime"])
def test_torch_boolean_indexing_masked_select_and_nonzero(backend: str) -> None:
    model = _Selections()
    compiled = accelir.optimize(model, _selection_inputs(0), backend=backend)
    sizes = set()
    for seed in (0, 1, 2):
        args = _selection_inputs(seed)
        got, want = compiled(*args), model(*args)
        for i, (g, w) in enumerate(zip(got, want)):
            assert isinstance(g, torch.Tensor) and g.shape == w.shape and g.dtype == w.dtype, f"output {i}"
            torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-6, msg=f"output {i}")
        sizes.add(tuple(w.shape[0] for w in want[1:]))
    assert len(sizes) == 3, sizes  # the data-dependent sizes differ from call to call
    if backend == "xla":
        _compiled_once(compiled)


def test_a_data_dependent_dim_taken_to_be_a_static_size_is_checked_at_run_time() -> None:
    """The type rule takes u0 to equal 5 there: XLA cuts the padded buffer to 5 rows where the count is 5
    (onnxruntime runs that too), and raises InputError where it is not, never adding the padding as values."""
    g, nz = _nonzero_2d()
    row = g.apply("reshape", g.apply("slice", nz, starts=(0,), stops=(1,), steps=(1,), axes=(0,)),
                  shape=(nz.shape[1],))
    g.set_outputs([g.apply("add", row, g.const(np.arange(5, dtype=np.int64), name="five"))])
    assert g.outputs[0].shape == (5,)
    compiled = accelir.optimize(g, backend="xla")
    x = np.asarray([[0, 1, 0, 2], [3, 0, 0, 0], [0, 5, 6, 0]], np.float32)  # five nonzeros
    want = np.nonzero(x)[0] + np.arange(5)
    np.testing.assert_array_equal(compiled(x), want)
    np.testing.assert_array_equal(accelir.optimize(g, backend="onnxruntime")(x), want)
    with pytest.raises(InputError, match=r"^node 'add' .*dim 0 of input 0 \(u0\) differs from 5 at run time"):
        compiled(np.ones((3, 4), np.float32))



def _selection_rows(g: Graph, nz) -> object:
    return g.apply("cast", g.apply("transpose", nz, perm=(1, 0)), dtype=DType.f32)  # f32[u, 2]


def test_a_fused_chain_taking_a_data_dependent_dim_to_be_a_static_size_runs_as_unfused() -> None:
    """Level 3 fuses the elementwise chain into one region; its nodes keep their padded rules, so the fusion
    runs (and checks the size at run time) where the unfused chain does, rather than being refused."""
    g, nz = _nonzero_2d()
    row = g.apply("reshape", g.apply("slice", nz, starts=(0,), stops=(1,), steps=(1,), axes=(0,)),
                  shape=(nz.shape[1],))
    summed = g.apply("add", g.apply("cast", row, dtype=DType.f32), g.const(np.arange(5, dtype=np.float32), name="five"))
    g.set_outputs([g.apply("exp", g.apply("mul", summed, summed))])
    compiled = accelir.optimize(g, backend="xla", level=3)
    assert any(n.op == "fusion" for n in compiled.graph.nodes)
    x = np.asarray([[0, 1, 0, 2], [3, 0, 0, 0], [0, 5, 6, 0]], np.float32)  # five nonzeros
    want = np.exp(np.square(np.nonzero(x)[0] + np.arange(5)).astype(np.float32))
    np.testing.assert_allclose(compiled(x), want, rtol=1e-6)
    with pytest.raises(InputError, match=r"^node 'add' .*dim 0 of input 0 \(u0\) differs from 5 at run time"):
        compiled(np.ones((3, 4), np.float32))


_ONES31, _ONES324 = np.ones((3, 1), np.float32), np.ones((3, 2, 4), np.float32)


_THREE = np.asarray([[0, 1, 0, 2], [3, 0, 0, 0], [0, 0, 0, 0]], np.float32)  # three nonzeros


def _rows_of(x: np.ndarray) -> np.ndarray:
    return np.asarray(np.nonzero(x)).T.astype(np.float32)


def test_a_matmul_taking_a_data_dependent_batch_dim_to_be_another_size_is_refused() -> None:
    """Matmul's batch dims are taken equal across inputs by the type rule (u0 to 3); padded, the buffers
    would not line up.  onnxruntime runs the graph where u0 is 3."""
    g, nz = _nonzero_2d()
    rows = _selection_rows(g, nz)
    g.set_outputs([g.apply("matmul", g.apply("reshape", rows, shape=(rows.shape[0], 1, 2)),
                           g.const(_ONES324, name="w"))])
    with pytest.raises(LoweringError, match=r"matmul.*data-dependent dim u0.*onnxruntime"):
        to_jax(g)
    got = accelir.optimize(g, backend="onnxruntime")(_THREE)
    np.testing.assert_array_equal(got, _rows_of(_THREE).reshape(-1, 1, 2) @ _ONES324)


@pytest.mark.parametrize("first", [True, False], ids=["rows-first", "rows-last"])
def test_a_concat_taking_a_data_dependent_dim_off_its_axis_to_be_another_size_checks_it(first: bool) -> None:
    """The type rule takes u0 to be 3 off the concat axis: XLA checks it at run time and cuts the buffer to
    it (onnxruntime runs it too), and raises InputError at another count, never returning padding."""
    g, nz = _nonzero_2d()
    rows, ones = _selection_rows(g, nz), g.const(_ONES31, name="c")
    g.set_outputs([g.apply("concat", *((rows, ones) if first else (ones, rows)), axis=1)])
    want = np.concatenate((_rows_of(_THREE), _ONES31) if first else (_ONES31, _rows_of(_THREE)), axis=1)
    np.testing.assert_array_equal(accelir.optimize(g, backend="onnxruntime")(_THREE), want)
    compiled = accelir.optimize(g, backend="xla")
    np.testing.assert_array_equal(compiled(_THREE), want)
    with pytest.raises(InputError, match=r"^node 'concat' .*(\(u0\) differs from 3|\(3\) differs from u0) at run time"):
        compiled(np.ones((3, 4), np.float32))


def test_concat_of_two_selections_of_unrelated_counts_checks_they_agree() -> None:
    """The rule takes u1 to equal u0: where they agree XLA joins them; where they differ onnxruntime fails,
    and XLA raises InputError rather than returning padding."""
    g, nz = _nonzero_2d()
    other = g.apply("nonzero", g.add_input(TensorType(DType.f32, (3, 4)), "x2"))
    g.set_outputs([g.apply("concat", nz, other, axis=0)])
    compiled = accelir.optimize(g, backend="xla")
    x2 = np.asarray([[5, 0, 0, 0], [0, 0, 6, 7], [0, 0, 0, 0]], np.float32)  # three nonzeros too
    np.testing.assert_array_equal(compiled(_THREE, x2), np.concatenate([np.nonzero(_THREE), np.nonzero(x2)]))
    with pytest.raises(InputError, match=r"^node 'concat' .*\(u1\) differs from u0 at run time"):
        compiled(_THREE, np.ones((3, 4), np.float32))


class _MaskedSum(torch.nn.Module):
    def forward(self, x: torch.Tensor):
        y = x[x > 0]
        return y.sum(), y * 2, torch.nonzero(x)


def test_a_dynamic_batch_and_a_data_dependent_size_together_on_xla() -> None:
    """The bound follows the batch each call brings (one program per batch size, none per count)."""
    model = _MaskedSum()
    batch = torch.export.Dim("batch", min=2, max=64)
    compiled = accelir.optimize(model, (torch.randn(4, 3),), backend="xla", dynamic_shapes={"x": {0: batch}})
    g = torch.Generator().manual_seed(5)
    for b in (4, 9, 9):
        x = torch.randn(b, 3, generator=g)
        for i, (got, want) in enumerate(zip(compiled(x), model(x))):
            assert got.shape == want.shape, f"output {i}"
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6, msg=f"output {i}")
    assert compiled._runner._jitted._cache_size() == 2


def test_smallest_topk_keeps_a_nan_value_ahead_of_the_padding() -> None:
    """Ascending, a NaN sorts after +inf: padding filled with +inf would be taken before it."""
    nodes = [h.make_node("NonZero", ["x"], ["nz"]), h.make_node("Squeeze", ["nz", "zero"], ["idx"]),
             h.make_node("Gather", ["x", "idx"], ["y"]), h.make_node("TopK", ["y", "three"], ["v", "i"], largest=0)]
    model = _graph(nodes, [h.make_tensor_value_info("x", T.FLOAT, [8])], ["v", "i"],
                   [_i64("zero", 0), _i64("three", 3)])
    x = np.asarray([0, np.nan, 2, 0, 1, 0, 0, 0], np.float32)
    compiled = accelir.optimize(model, (x,), backend="xla")
    _check(model, compiled, {"x": x})
    _check(model, compiled, {"x": np.asarray([5, 0, 3, np.nan, 0, 0, 4, np.inf], np.float32)})


def test_softmax_and_cumulative_sums_along_a_padded_axis() -> None:
    nodes = [h.make_node("NonZero", ["x"], ["nz"]), h.make_node("Squeeze", ["nz", "zero"], ["idx"]),
             h.make_node("Gather", ["x", "idx"], ["y"]), h.make_node("Softmax", ["y"], ["soft"], axis=0),
             h.make_node("LogSoftmax", ["y"], ["log_soft"], axis=0),
             h.make_node("CumSum", ["y", "axis"], ["rev"], reverse=1),
             h.make_node("CumSum", ["y", "axis"], ["rev_excl"], reverse=1, exclusive=1)]
    model = _graph(nodes, [h.make_tensor_value_info("x", T.FLOAT, [10])], ["soft", "log_soft", "rev", "rev_excl"],
                   [_i64("zero", 0), h.make_tensor("axis", T.INT64, [], [0])])
    compiled = accelir.optimize(model, (with_nonzeros(3, 1),), backend="xla")
    for n, seed in ((3, 1), (8, 2), (1, 3)):
        _check(model, compiled, {"x": with_nonzeros(n, seed)})
    _compiled_once(compiled)


class _LabelsKept(torch.nn.Module):
    """The distinct labels of the detections kept by a score threshold, with counts and inverse."""

    def forward(self, labels: torch.Tensor, scores: torch.Tensor):
        kept = labels[scores > 0.5]
        values, inverse, counts = torch.unique(kept, return_inverse=True, return_counts=True)
        return values, inverse, counts, torch.unique(labels)


@pytest.mark.parametrize("backend", ["xla", "onnxruntime"])
def test_torch_unique_of_the_kept_labels(backend: str) -> None:
    model = _LabelsKept()
    g = torch.Generator().manual_seed(11)
    calls = [(torch.randint(0, k, (16,), generator=g), torch.rand(16, generator=g) * s)
             for k, s in ((4, 1.0), (9, 1.4), (3, 0.6))]
    compiled = accelir.optimize(model, calls[0], backend=backend)
    for args in calls:
        for i, (got, want) in enumerate(zip(compiled(*args), model(*args))):
            assert got.shape == want.shape and got.dtype == want.dtype, f"output {i}"
            assert torch.equal(got, want), f"output {i}"
    if backend == "xla":
        _compiled_once(compiled)


class _WhereAlone(torch.nn.Module):
    """torch.where with the condition alone: nonzero(as_tuple=True) under another name."""

    def forward(self, x: torch.Tensor):
        r, c = torch.where(x > 0)
        return r * 4 + c, torch.where(x[0] < 0)[0]


@pytest.mark.parametrize("backend", ["xla", "onnxruntime"])
def test_torch_where_with_the_condition_alone(backend: str) -> None:
    model = _WhereAlone()
    g = torch.Generator().manual_seed(12)
    calls = [(torch.randn(5, 4, generator=g) + shift,) for shift in (0.0, 0.7, -0.6)]
    compiled = accelir.optimize(model, calls[0], backend=backend)
    for args in calls:
        for i, (got, want) in enumerate(zip(compiled(*args), model(*args))):
            assert got.shape == want.shape and got.dtype == want.dtype, f"output {i}"
            assert torch.equal(got, want), f"output {i}"
    if backend == "xla":
        _compiled_once(compiled)


class _ConvChain(torch.nn.Module):
    """Convs with an elementwise op between them, the positive entries selected at the end (or all kept)."""

    def __init__(self, select: bool):
        super().__init__()
        self.select = select
        self.convs = torch.nn.ModuleList([torch.nn.Conv2d(4, 4, 3, padding=1) for _ in range(3)])

    def forward(self, x):
        for conv in self.convs:
            x = torch.tanh(conv(x)) * 0.5
        return x[x > 0.1] if self.select else x


def test_a_conv_chain_before_a_data_dependent_size_keeps_its_layout() -> None:
    """The ops between convs meet no data-dependent dim, so they lower by their own rules on the channels-last
    values: a selection at the end adds the one transpose its read needs, not one per op of the chain."""
    torch.manual_seed(0)
    x = torch.randn(1, 4, 8, 8)
    counts = {}
    for select in (False, True):
        model = _ConvChain(select).eval()
        compiled = accelir.optimize(model, (x,), backend="xla")
        fn = compiled._runner.function
        text = jax.jit(lambda *a: fn.apply(fn.params, *a)).lower(x.numpy()).as_text()
        counts[select] = text.count("stablehlo.transpose")
        with torch.no_grad():
            torch.testing.assert_close(torch.as_tensor(np.asarray(compiled(x))), model(x), rtol=1e-5, atol=1e-5)
    assert counts[True] <= counts[False] + 1, counts
