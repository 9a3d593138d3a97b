"""Signal and image ops whose sizes come from a graph input (accelir/ops/runtime_sized.py): AffineGrid's
size, Col2Im's image and block shapes, DFT's axis and length, STFT's frame step and length,
MelWeightMatrix's sizes, MaxUnpool's output_shape, Resize's scales with align_corners, and a Loop's
trip count, fed as they come.

Each model is imported once and compiled once for onnxruntime, then run at two values of its
shape-like input; both accelir paths (the interpreter on the imported graph, the compiled model)
are checked at each value against onnx's ReferenceEvaluator and onnxruntime running the original
model.  XLA refuses such a graph naming the input, and ``static_inputs`` still specialises it.
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
from accelir.errors import AccelirError, LoweringError
from accelir.frontends.onnx import import_onnx
from accelir.interpreter import run_graph
from accelir.lowering.onnx import to_onnx
from accelir.text import parse
from accelir.unbacked import unbacked_dims
from accelir.verify import verify

_ONNX = {np.dtype(np.float32): T.FLOAT, np.dtype(np.float64): T.DOUBLE, np.dtype(np.int64): T.INT64,
         np.dtype(np.int32): T.INT32}


@dataclass
class Case:
    id: str
    op: str
    inputs: list[np.ndarray | None]  # the first value of every input (None: omitted)
    second: dict[int, np.ndarray]  # the inputs that change for the second run, by position
    ir_op: str  # the op the import must make
    attrs: dict[str, Any] = field(default_factory=dict)
    opset: int = 20
    tol: float = 1e-5
    onnxruntime_agrees: bool = True  # whether onnxruntime on the original model is an oracle here (said where not)


def _i64(*v: int) -> np.ndarray:
    return np.asarray(v, np.int64)


def _scalar(v: Any, dtype: Any = np.int64) -> np.ndarray:
    return np.asarray(v, dtype)


def _cases() -> list[Case]:
    r = np.random.default_rng(0)
    f32 = lambda *s: r.standard_normal(s).astype(np.float32)  # noqa: E731
    return [
        Case("affine_grid_2d", "AffineGrid", [f32(2, 2, 3), _i64(2, 3, 5, 6)], {1: _i64(2, 3, 4, 7)},
             "affine_grid_dynamic"),
        Case("affine_grid_3d_align_corners", "AffineGrid", [f32(1, 3, 4), _i64(1, 2, 3, 4, 5)],
             {1: _i64(1, 2, 2, 5, 3)}, "affine_grid_dynamic", attrs={"align_corners": 1}),
        # [N, C * prod(block), L]: both image / block pairs give 12 blocks of 4
        Case("col2im", "Col2Im", [f32(1, 8, 12), _i64(4, 5), _i64(2, 2)], {1: _i64(6, 4), 2: _i64(4, 1)},
             "col2im_dynamic", opset=18),
        Case("col2im_strides_pads", "Col2Im", [f32(1, 12, 9), _i64(5, 4), _i64(3, 2)], {1: _i64(5, 5), 2: _i64(2, 3)},
             "col2im_dynamic", attrs={"strides": [2, 1], "pads": [1, 0, 1, 0]}, opset=18),
        Case("rfft_axis", "DFT", [f32(1, 6, 8, 1), None, _scalar(1)], {2: _scalar(2)}, "dft_dynamic",
             attrs={"onesided": 1}),
        Case("irfft_axis", "DFT", [f32(1, 4, 5, 2), None, _scalar(-3)], {2: _scalar(2)}, "dft_dynamic",
             attrs={"inverse": 1, "onesided": 1}),
        Case("dft_length", "DFT", [f32(2, 6, 2), _scalar(4)], {1: _scalar(9)}, "dft_dynamic"),
        Case("stft_step_and_length", "STFT", [f32(1, 64, 1), _scalar(8), None, _scalar(16)],
             {1: _scalar(5), 3: _scalar(10)}, "stft_dynamic", opset=17, tol=1e-4),
        Case("stft_window", "STFT", [f32(2, 40, 2), _scalar(4), np.hanning(12).astype(np.float32)],
             {1: _scalar(7)}, "stft_dynamic", attrs={"onesided": 0}, opset=17, tol=1e-4),
        Case("mel_weight_matrix", "MelWeightMatrix",
             [_scalar(8, np.int32), _scalar(64, np.int32), _scalar(8000, np.int32), _scalar(0, np.float32),
              _scalar(4000, np.float32)],
             {0: _scalar(5, np.int32), 1: _scalar(32, np.int32), 3: _scalar(100, np.float32)},
             "mel_weight_matrix_dynamic", opset=17),
        # onnxruntime's Resize reads align_corners against the rounded output length, ONNX against
        # in * scale: 4 * 0.6 = 2.4 and 5 * 1.7 = 8.5 show it (2.0 on 5 does not); 5 * 1.1 = 5.5 keeps
        # the width, which onnxruntime then leaves alone
        Case("resize_linear_align_corners", "Resize",
             [f32(1, 2, 4, 5), None, np.asarray([1, 1, 0.6, 1.1], np.float32)],
             {2: np.asarray([1, 1, 1.3, 1.7], np.float32)}, "resize_dynamic",
             attrs={"mode": "linear", "coordinate_transformation_mode": "align_corners"}, opset=19,
             onnxruntime_agrees=False),
        Case("resize_cubic_align_corners", "Resize", [f32(1, 1, 5, 4), None, np.asarray([0.7, 2.0], np.float32)],
             {2: np.asarray([1.5, 0.45], np.float32)}, "resize_dynamic",
             attrs={"mode": "cubic", "coordinate_transformation_mode": "align_corners", "axes": [2, 3]}, opset=19,
             onnxruntime_agrees=False),
        # onnxruntime's MaxUnpool places the values by the output_shape's planes, ONNX by the unpooled
        # tensor's: only ONNX's reference is the oracle (accelir pads the unpooled tensor, as ONNX does)
        Case("maxunpool_output_shape", "MaxUnpool", [f32(1, 1, 2, 2), _i64(5, 3, 12, 15).reshape(1, 1, 2, 2),
                                                     _i64(1, 1, 5, 5)], {2: _i64(1, 1, 4, 6)}, "pad_dynamic",
             attrs={"kernel_shape": [2, 2], "strides": [2, 2]}, opset=18, onnxruntime_agrees=False),
    ]


CASES = _cases()


def _names(case: Case) -> list[str]:
    return ["" if a is None else f"in{i}" for i, a in enumerate(case.inputs)]


def _model(case: Case) -> onnx.ModelProto:
    names = _names(case)
    ins = [h.make_tensor_value_info(n, _ONNX[a.dtype], list(a.shape)) for n, a in zip(names, case.inputs) if n]
    g = h.make_graph([h.make_node(case.op, names, ["out"], **case.attrs)], case.id, ins,
                     [h.make_empty_tensor_value_info("out")])
    return h.make_model(g, opset_imports=[h.make_opsetid("", case.opset)])


def _feeds(case: Case, second: bool) -> dict[str, np.ndarray]:
    values = {i: a for i, a in enumerate(case.inputs) if a is not None}
    if second:
        values.update(case.second)
    return {f"in{i}": a for i, a in values.items()}


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_one_compiled_model_matches_the_oracles_at_two_values_of_the_shape_input(case: Case) -> None:
    model = _model(case)
    g = import_onnx(model)
    assert case.ir_op in {n.op for n in g.nodes}, str(g)
    assert unbacked_dims(g), str(g)
    compiled = accelir.optimize(model, _feeds(case, False), backend="onnxruntime")
    shapes = set()
    for second in (False, True):
        feeds = _feeds(case, second)
        want = ReferenceEvaluator(model).run(None, feeds)[0]
        oracles = {"reference": want}
        if case.onnxruntime_agrees:
            oracles["onnxruntime"] = _ort(model, feeds)
        got = {"interpreter": run_graph(g, list(feeds.values()))[0], "compiled": compiled(*feeds.values())[0]}
        for label, y in got.items():
            y = np.asarray(y)
            assert y.dtype == want.dtype and y.shape == want.shape, f"{label}: {y.dtype}{y.shape}"
            for oracle, w in oracles.items():
                np.testing.assert_allclose(y, w, rtol=case.tol, atol=case.tol * max(1.0, float(np.abs(w).max())),
                                           err_msg=f"{case.id} ({label} vs {oracle}, second={second})")
        shapes.add(want.shape)
    assert len(shapes) == 2, "the two values of the shape input should give two output shapes"


def test_xla_refuses_naming_the_input_and_static_inputs_still_specialises() -> None:
    case = CASES[[c.id for c in CASES].index("stft_step_and_length")]
    model = _model(case)
    feeds = _feeds(case, False)
    with pytest.raises(LoweringError, match=r"\[STFT\].*graph input\(s\) 'in3'.*static_inputs"):
        accelir.optimize(model, feeds, backend="xla")
    static = {k: feeds[k] for k in ("in1", "in3")}
    compiled = accelir.optimize(model, {"in0": feeds["in0"]}, backend="xla", static_inputs=static)
    np.testing.assert_allclose(np.asarray(compiled(feeds["in0"])[0]), ReferenceEvaluator(model).run(None, feeds)[0],
                               rtol=1e-4, atol=1e-4)



def test_a_run_time_size_that_does_not_fit_is_named_in_plain_numbers() -> None:
    case = next(c for c in CASES if c.op == "AffineGrid")
    g = import_onnx(_model(case))
    theta = case.inputs[0]
    size = np.asarray([theta.shape[0] + 1, 1, *([3] * (case.inputs[1].shape[0] - 2))], np.int64)
    with pytest.raises(AccelirError, match=rf"size \[{theta.shape[0] + 1}, 1, 3, .*does not fit theta") as e:
        run_graph(g, [theta, size])
    assert "np." not in str(e.value)

# ----- a Loop whose trip count is run-time data ----------------------------------------

def _loop_model() -> onnx.ModelProto:
    """trips (a graph input) iterations of prev + delta, each iteration's value a scan output (ONNX's
    expanded Range, with a second scan output that reads the iteration number)."""
    body = h.make_graph(
        [h.make_node("Identity", ["cond"], ["cond_out"]), h.make_node("Add", ["prev", "delta"], ["current"]),
         h.make_node("Identity", ["prev"], ["range"]), h.make_node("Cast", ["i"], ["i_f"], to=T.FLOAT),
         h.make_node("Mul", ["i_f", "prev"], ["scaled"])], "body",
        [h.make_tensor_value_info("i", T.INT64, []), h.make_tensor_value_info("cond", T.BOOL, []),
         h.make_tensor_value_info("prev", T.FLOAT, [2])],
        [h.make_tensor_value_info("cond_out", T.BOOL, []), h.make_tensor_value_info("current", T.FLOAT, [2]),
         h.make_tensor_value_info("range", T.FLOAT, [2]), h.make_tensor_value_info("scaled", T.FLOAT, [2])])
    g = h.make_graph([h.make_node("Loop", ["trips", "go", "start"], ["last", "values", "scaled"], body=body)],
                     "loop", [h.make_tensor_value_info("trips", T.INT64, []),
                              h.make_tensor_value_info("start", T.FLOAT, [2]),
                              h.make_tensor_value_info("delta", T.FLOAT, [2])],
                     [h.make_tensor_value_info(n, T.FLOAT, None) for n in ("last", "values", "scaled")],
                     [h.make_tensor("go", T.BOOL, [], [True])])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def test_a_loop_of_run_time_trip_count_with_scan_outputs_runs_at_two_counts() -> None:
    model = _loop_model()
    g = import_onnx(model)
    assert "range_dynamic" in {n.op for n in g.nodes} and unbacked_dims(g), str(g)
    start, delta = np.asarray([1.0, -2.0], np.float32), np.asarray([0.5, 3.0], np.float32)
    compiled = accelir.optimize(model, (np.asarray(3, np.int64), start, delta), backend="onnxruntime")
    for trips in (3, 6):
        feeds = {"trips": np.asarray(trips, np.int64), "start": start, "delta": delta}
        want = ReferenceEvaluator(model).run(None, feeds)
        direct = _ort(model, feeds)
        assert want[1].shape == (trips, 2)
        for label, outs in (("interpreter", run_graph(g, list(feeds.values()))),
                            ("compiled", compiled(*feeds.values()))):
            for k, (y, w) in enumerate(zip(outs, want)):
                np.testing.assert_allclose(np.asarray(y), w, rtol=1e-6, err_msg=f"{label} output {k} at {trips}")
        np.testing.assert_allclose(direct, want[0], rtol=1e-6)
    with pytest.raises(LoweringError, match=r"range_dynamic.*input 1 \(graph input 'trips'\).*static_inputs"):
        accelir.optimize(model, (np.asarray(3, np.int64), start, delta), backend="xla")


def test_a_reverse_scan_over_a_run_time_length_lowers_for_onnxruntime() -> None:
    """A scan without a length takes its scanned operand's leading dim, here unbacked."""
    g = parse("""graph rev(%n: i64[], %x: f32[3]) -> (f32[3], f32[u0,3]) {
  %zero = constant() {name="zero", value=0} : i64[]
  %one = constant() {name="one", value=1} : i64[]
  %steps = range_dynamic(%zero, %n, %one) {syms=["u0"]} : i64[u0]
  %c, %ys = scan(%x, %steps) {num_carry=1, reverse=true} : f32[3], f32[u0,3] {
    graph body(%a: f32[3], %i: i64[]) -> (f32[3], f32[3]) {
      %f = cast(%i) {dtype=f32} : f32[]
      %a2 = add(%a, %f) : f32[3]
      return %a2, %a2
    }
  }
  return %c, %ys
}
""")
    verify(g)
    model = to_onnx(g)
    x = np.asarray([0.0, 1.0, -1.0], np.float32)
    for n in (2, 5):
        steps = np.arange(n - 1, -1, -1, dtype=np.float32)  # reverse: i = n - 1 first
        ys = x + np.cumsum(steps)[:, None]
        want = [ys[-1], ys[::-1]]
        for label, outs in (("interpreter", run_graph(g, [np.asarray(n, np.int64), x])),
                            ("onnxruntime", ort.InferenceSession(model.SerializeToString(),
                                                                 providers=["CPUExecutionProvider"])
                             .run(None, {i.name: v for i, v in zip(model.graph.input, [np.asarray(n, np.int64), x])}))):
            for k, (y, w) in enumerate(zip(outs, want)):
                np.testing.assert_allclose(y, w, rtol=1e-6, err_msg=f"{label} output {k} at n={n}")


def test_nearest_align_corners_by_run_time_scales_is_refused_on_onnxruntime_and_static_inputs_runs_it() -> None:
    """onnxruntime computes the map in float32 against the rounded size: nearest picks would differ."""
    case = Case("resize_nearest_align_corners", "Resize", [np.arange(35, dtype=np.float32).reshape(1, 1, 7, 5), None,
                                                           np.asarray([2.2, 0.7], np.float32)], {}, "resize_dynamic",
                attrs={"mode": "nearest", "coordinate_transformation_mode": "align_corners", "axes": [2, 3]},
                opset=19)
    model = _model(case)
    feeds = _feeds(case, False)
    with pytest.raises(LoweringError, match=r"nearest align_corners.*static_inputs"):
        accelir.optimize(model, feeds, backend="onnxruntime")
    compiled = accelir.optimize(model, {"in0": feeds["in0"]}, backend="onnxruntime", static_inputs={"in2": feeds["in2"]})
    np.testing.assert_array_equal(compiled(feeds["in0"])[0], ReferenceEvaluator(model).run(None, feeds)[0])
