"""grid_sample and roi_align beyond the generic op tables: every mode / padding / align_corners
combination of the references against torch or ONNX's reference implementation, RoiAlign's
adaptive sampling, the ONNX import rules across opsets, and the lowerings' choice between
the native kernels and the decompositions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from accelir import DType, Graph, LoweringError, TensorType, UnsupportedOpError, interpret, verify
from accelir.frontends.onnx import import_onnx
from accelir.lowering.jax import JaxModule
from accelir.lowering.onnx import to_onnx
from accelir.lowering.onnxruntime import OnnxRuntimeModule
from accelir.ops.nn import GRID_MODE_OLD_NAMES
from accelir.testing import import_and_run, onnxruntime_outputs, reference_output, single_node_model

TORCH_MODE = GRID_MODE_OLD_NAMES


def _graph(op: str, arrays: list[np.ndarray], symbolic: bool = False, **attrs) -> Graph:
    g = Graph(op)
    ins = []
    for i, a in enumerate(arrays):
        t = TensorType.of(a)
        ins.append(g.add_input(t.with_shape(("n",) + t.shape[1:]) if symbolic and i < 2 else t, f"x{i}"))
    g.set_outputs([g.apply(op, *ins, **attrs)])
    verify(g)
    return g


def _grid_inputs(seed: int, spatial: tuple[int, ...], out: tuple[int, ...], n: int = 2, c: int = 3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c) + spatial).astype(np.float32)
    grid = rng.uniform(-1.4, 1.4, (n,) + out + (len(spatial),)).astype(np.float32)
    return x, grid


def _rois(seed: int, count: int, extent: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    corner = rng.uniform(-2, extent, (count, 2))
    return np.concatenate([corner, corner + rng.uniform(-1, extent / 2, (count, 2))], axis=1).astype(np.float32)


GRID_COMBOS = list(itertools.product(("linear", "nearest", "cubic"), ("zeros", "border", "reflection"),
                                     (False, True)))


@pytest.mark.parametrize("mode,pad,align", GRID_COMBOS)
def test_grid_sample_2d_reference_matches_torch(mode, pad, align):
    x, grid = _grid_inputs(0, (5, 6), (4, 7))
    got = interpret(_graph("grid_sample", [x, grid], mode=mode, padding_mode=pad, align_corners=align), x, grid)[0]
    if (mode, pad) == ("cubic", "border"):
        # torch clamps each cubic tap; ONNX clamps the coordinate first (onnx.reference, onnxruntime's tests)
        want = reference_output("GridSample", [x, grid], mode=mode, padding_mode=pad, align_corners=int(align))
    else:
        want = F.grid_sample(torch.from_numpy(x), torch.from_numpy(grid), mode=TORCH_MODE[mode], padding_mode=pad,
                             align_corners=align).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode,pad,align", GRID_COMBOS)
def test_grid_sample_3d_reference_matchesreference_output(mode, pad, align):
    x, grid = _grid_inputs(1, (3, 4, 3), (2, 3, 2), n=1, c=2)
    got = interpret(_graph("grid_sample", [x, grid], mode=mode, padding_mode=pad, align_corners=align), x, grid)[0]
    want = reference_output("GridSample", [x, grid], mode=mode, padding_mode=pad, align_corners=int(align))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_grid_sample_of_a_single_pixel_reflects_to_it():
    x, grid = _grid_inputs(2, (1, 4), (3, 3))
    for align in (False, True):
        g = _graph("grid_sample", [x, grid], mode="linear", padding_mode="reflection", align_corners=align)
        want = F.grid_sample(torch.from_numpy(x), torch.from_numpy(grid), padding_mode="reflection",
                             align_corners=align).numpy()
        np.testing.assert_allclose(interpret(g, x, grid)[0], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode,coords,ratio", list(itertools.product(("avg", "max"), ("half_pixel",
                                                                                      "output_half_pixel"), (0, 2))))
def test_roi_align_reference_matchesreference_output(mode, coords, ratio):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 9, 11)).astype(np.float32)
    rois, batch = _rois(4, 5, 10) / 0.5, np.array([1, 0, 1, 0, 1], np.int64)
    attrs = dict(mode=mode, coordinate_transformation_mode=coords, sampling_ratio=ratio, spatial_scale=0.5,
                 output_height=3, output_width=4)
    got = interpret(_graph("roi_align", [x, rois, batch], **attrs), x, rois, batch)[0]
    np.testing.assert_allclose(got, reference_output("RoiAlign", [x, rois, batch], **attrs), rtol=1e-5, atol=1e-5)


def test_roi_align_decomposition_needs_a_sampling_ratio():
    rng = np.random.default_rng(5)
    x, rois, batch = rng.standard_normal((1, 2, 6, 6)).astype(np.float32), _rois(6, 3, 5), np.zeros(3, np.int64)
    g = _graph("roi_align", [x, rois, batch], output_height=2, output_width=2)
    with pytest.raises(LoweringError, match="roi_align.*sampling_ratio"):
        JaxModule(g)(x, rois, batch)
    with pytest.raises(LoweringError, match="RoiAlign kernel at opset 24.*sampling_ratio"):
        to_onnx(g, opset=24)
    native = to_onnx(g, opset=21)
    assert [n.op_type for n in native.graph.node].count("RoiAlign") == 1
    np.testing.assert_allclose(OnnxRuntimeModule(native)(x, rois, batch)[0], interpret(g, x, rois, batch)[0],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("opset,rank,mode,pad,native", [
    (18, 4, "cubic", "zeros", True), (18, 5, "linear", "zeros", False), (24, 5, "nearest", "border", True),
    (24, 5, "cubic", "zeros", False), (24, 4, "cubic", "border", False), (24, 4, "linear", "reflection", True)])
def test_grid_sample_onnx_lowering_takes_the_kernel_only_where_it_agrees(opset, rank, mode, pad, native):
    x, grid = _grid_inputs(7, (4, 5, 3)[:rank - 2], (3, 4, 2)[:rank - 2], n=2, c=2)
    g = _graph("grid_sample", [x, grid], symbolic=True, mode=mode, padding_mode=pad, align_corners=True)
    model = to_onnx(g, opset=opset)
    assert ("GridSample" in [n.op_type for n in model.graph.node]) == native
    np.testing.assert_allclose(OnnxRuntimeModule(model)(x, grid)[0], interpret(g, x, grid)[0], rtol=1e-5, atol=1e-5)


def test_roi_align_lowers_to_its_decomposition_where_onnxruntime_has_no_kernel():
    rng = np.random.default_rng(8)
    x, rois, batch = rng.standard_normal((2, 2, 7, 8)).astype(np.float32), _rois(9, 4, 7), np.array([1, 0, 0, 1])
    g = _graph("roi_align", [x, rois, batch.astype(np.int32)], mode="max", sampling_ratio=2, output_height=2,
               output_width=3)
    model = to_onnx(g, opset=24)
    assert "RoiAlign" not in [n.op_type for n in model.graph.node]
    want = interpret(g, x, rois, batch.astype(np.int32))[0]
    np.testing.assert_allclose(OnnxRuntimeModule(model)(x, rois, batch.astype(np.int32))[0], want, rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("combine", ["add", "max"])
def test_gather_taps_combines_every_tap_combination(combine):
    """The helper the sampling decompositions share, on its own: dim 0 with weights and bounds, dim 1
    with neither, an infinite pixel that only out-of-bounds taps read, against a numpy loop."""
    from accelir.ops.nn import gather_taps
    rng = np.random.default_rng(11)
    table = rng.standard_normal((12, 3)).astype(np.float32)
    table[5] = np.inf
    i0 = rng.integers(0, 3, (2, 4, 2))
    ok0 = rng.random((2, 4, 2)) > 0.3
    i0[~ok0] = 1  # out-of-bounds taps point at the row holding inf
    i0[ok0 & (i0 == 1)] = 0
    w0 = rng.standard_normal((2, 4, 2)).astype(np.float32)
    i1 = rng.integers(0, 4, (1, 4, 3))
    base = np.array([[0], [0]])
    g = Graph("taps")
    ins = [g.add_input(TensorType.of(a), n) for a, n in ((table, "t"), (i0, "i0"), (ok0, "ok0"), (w0, "w0"),
                                                         (i1, "i1"), (base, "b"))]
    b = g.builder()
    t, gi0, gok0, gw0, gi1, gb = ins
    g.set_outputs([gather_taps(b, t, gb, [(gi0, gw0, gok0), (gi1, None, None)], (4, 1), combine)])
    verify(g)
    want = np.full((2, 4, 3), -np.inf if combine == "max" else 0.0)
    for k0, k1 in itertools.product(range(2), range(3)):
        rows = table[i0[..., k0] * 4 + i1[..., k1]]
        v = np.where(ok0[..., k0, None], rows, 0) * w0[..., k0, None]
        want = np.maximum(want, v) if combine == "max" else want + v
    got = interpret(g, table, i0, ok0, w0, i1, base)[0]
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_grid_sample_decomposition_reads_zeros_past_an_infinite_border_pixel(mode):
    x, grid = _grid_inputs(12, (5, 6), (4, 7))
    x[:, :, 0, :] = np.inf  # the top row: taps above it are out of bounds and must read 0, not inf * 0
    grid[..., 1] = np.where(grid[..., 1] < -0.7, -1.3, 0.2)
    g = _graph("grid_sample", [x, grid], mode=mode, padding_mode="zeros", align_corners=True)
    want = interpret(g, x, grid)[0]
    got = np.asarray(JaxModule(g)(x, grid)[0])
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert not np.isnan(want).any()


def test_grid_sample_with_symbolic_batch_through_xla():
    x, grid = _grid_inputs(10, (5, 6), (3, 4))
    g = _graph("grid_sample", [x, grid], symbolic=True, mode="cubic", padding_mode="border")
    m = JaxModule(g)
    for n in (2, 1):
        np.testing.assert_allclose(np.asarray(m(x[:n], grid[:n])[0]), interpret(g, x[:n], grid[:n])[0],
                                   rtol=1e-5, atol=1e-5)


# ----- import -------------------------------------------------------------------------

def _import_and_run(model, feeds):
    g, outs = import_and_run(model, feeds)
    return g, outs[0]


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
def test_grid_sample_16_mode_names(mode):
    x, grid = _grid_inputs(11, (4, 5), (3, 3))
    model, feeds = single_node_model("GridSample", [x, grid], 16, mode=mode, padding_mode="reflection")
    g, got = _import_and_run(model, feeds)
    assert next(n for n in g.nodes if n.op == "grid_sample").attrs["mode"] == {"bilinear": "linear",
                                                                                "bicubic": "cubic"}.get(mode, mode)
    want = onnxruntime_outputs(model, feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_grid_sample_defaults_and_mixed_dtypes():
    x, grid = _grid_inputs(12, (4, 5), (3, 3))
    model, feeds = single_node_model("GridSample", [x.astype(np.float16), grid], 22)
    g, got = _import_and_run(model, feeds)
    assert got.dtype == np.float16
    want = F.grid_sample(torch.from_numpy(x.astype(np.float16).astype(np.float32)), torch.from_numpy(grid),
                         align_corners=False).numpy()
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("opset,attrs,match", [
    (20, {"mode": "bilinear"}, "mode='bilinear'"), (16, {"mode": "cubic"}, "mode='cubic'"),
    (22, {"padding_mode": "wrap"}, "padding_mode='wrap'")])
def test_grid_sample_attributes_outside_the_spec_are_refused(opset, attrs, match):
    x, grid = _grid_inputs(13, (3, 3), (2, 2))
    with pytest.raises(UnsupportedOpError, match=match):
        import_onnx(single_node_model("GridSample", [x, grid], opset, **attrs)[0])


@pytest.mark.parametrize("opset,attrs", [
    (10, {}), (16, {}),
    (16, {"coordinate_transformation_mode": "output_half_pixel", "mode": "max", "sampling_ratio": 2})])
def test_roi_align_import_across_opsets(opset, attrs):
    rng = np.random.default_rng(14)
    x, rois, batch = rng.standard_normal((2, 3, 8, 8)).astype(np.float32), _rois(15, 4, 7), np.array([0, 1, 1, 0])
    model, feeds = single_node_model("RoiAlign", [x, rois, batch], opset, output_height=3, output_width=2,
                               spatial_scale=0.75, **attrs)
    _, got = _import_and_run(model, feeds)
    want = onnxruntime_outputs(model, feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("opset,attrs,match", [
    (16, {"mode": "min"}, "mode='min'"), (10, {"coordinate_transformation_mode": "half_pixel"}, "half_pixel"),
    (16, {"output_height": 0}, "output_height"), (16, {"sampling_ratio": -1}, "sampling_ratio")])
def test_roi_align_attributes_outside_the_spec_are_refused(opset, attrs, match):
    x, rois, batch = np.zeros((1, 1, 4, 4), np.float32), _rois(16, 2, 3), np.zeros(2, np.int64)
    with pytest.raises(UnsupportedOpError, match=match):
        import_onnx(single_node_model("RoiAlign", [x, rois, batch], opset, **attrs)[0])


def test_integer_images_are_refused_by_name():
    x, grid = np.zeros((1, 1, 3, 3), np.int32), np.zeros((1, 2, 2, 2), np.float32)
    with pytest.raises(UnsupportedOpError, match="GridSample.*int32|X of dtype i32"):
        import_onnx(single_node_model("GridSample", [x, grid], 22)[0])


def test_type_rules_reject_mismatched_operands():
    from accelir.errors import VerificationError
    g = Graph("bad")
    x = g.add_input(TensorType(DType.f32, ("n", 3, 5, 6)))
    with pytest.raises(VerificationError, match="grid_sample"):
        g.apply("grid_sample", x, g.add_input(TensorType(DType.f32, ("n", 4, 7, 3))))
    with pytest.raises(VerificationError, match="roi_align: batch_indices"):
        rois, batch = g.add_input(TensorType(DType.f32, (4, 4))), g.add_input(TensorType(DType.f32, (4,)))
        g.apply("roi_align", x, rois, batch)
