"""The ``resize`` op: its reference against ONNX's reference evaluator, its ONNX lowering
(Resize where onnxruntime's kernel agrees, the decomposition elsewhere), and torch's
interpolate family captured into it and run on both backends against eager torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import accelir
from accelir import Graph, TensorType, interpret, verify
from accelir.lowering.jax import JaxModule
from accelir.lowering.onnx import to_onnx
from accelir.lowering.onnxruntime import OnnxRuntimeModule
from accelir.ops import registry
from accelir.testing import reference_output

RESIZE = registry.get("resize")


def _resize_graph(x: np.ndarray, symbolic_batch: bool = False, **attrs) -> Graph:
    g = Graph("resize")
    t = TensorType.of(x)
    symbolic_batch = symbolic_batch and 0 not in attrs["axes"]
    xin = g.add_input(t.with_shape(("n",) + t.shape[1:]) if symbolic_batch else t, "x")
    g.set_outputs([g.apply("resize", xin, **attrs)])
    verify(g)
    return g


def _attrs(axes, sizes, scales=None, **kw):
    """Attributes as an ONNX import gives them: the factors are float32 values."""
    scales = tuple(float(np.float32(s)) for s in scales) if scales else None
    return dict(axes=tuple(axes), sizes=tuple(sizes), scales=scales, **kw)


CASES = [  # (input shape, axes, sizes, scales or None for sizes / input, attrs)
    ((1, 2, 4, 5), (2, 3), (7, 3), None, dict(mode="linear", coord="half_pixel")),
    ((1, 2, 4, 5), (2, 3), (8, 10), None, dict(mode="cubic", coord="align_corners")),
    ((1, 2, 9, 8), (2, 3), (4, 3), None, dict(mode="linear", coord="pytorch_half_pixel", antialias=True)),
    ((1, 2, 9, 8), (2, 3), (4, 3), None, dict(mode="cubic", coord="half_pixel", antialias=True)),
    ((2, 3, 5), (2,), (7,), (1.5,), dict(mode="linear", coord="asymmetric")),
    ((1, 1, 3, 4, 5), (2, 3, 4), (6, 6, 2), None, dict(mode="linear", coord="half_pixel")),
    ((1, 3, 4, 6), (2, 3), (9, 13), (2.3, 2.2), dict(mode="nearest", coord="asymmetric", nearest_mode="floor")),
    ((1, 3, 4, 6), (2, 3), (5, 4), None, dict(mode="nearest", coord="half_pixel", nearest_mode="round_prefer_ceil")),
    ((3, 4), (0, 1), (6, 9), None, dict(mode="cubic", coord="half_pixel_symmetric", exclude_outside=True)),
]


def _fill_scales(shape, attrs):
    if attrs["scales"] is None:
        attrs["scales"] = tuple(o / shape[a] for a, o in zip(attrs["axes"], attrs["sizes"]))
    return attrs


@pytest.mark.parametrize("shape, axes, sizes, scales, extra", CASES)
def test_reference_matches_onnx_reference_evaluator(shape, axes, sizes, scales, extra):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    attrs = registry.normalize_attrs("resize", _fill_scales(shape, _attrs(axes, sizes, scales, **extra)))
    onnx_attrs = dict(axes=list(axes), mode=attrs["mode"], coordinate_transformation_mode=attrs["coord"],
                      nearest_mode=attrs["nearest_mode"], cubic_coeff_a=attrs["cubic_a"],
                      exclude_outside=int(attrs["exclude_outside"]), antialias=int(attrs["antialias"]))
    inputs = {"x": x, "roi": None}
    if scales is None:
        inputs.update(scales=None, sizes=np.array(sizes, np.int64))
    else:
        inputs["scales"] = np.array(scales, np.float32)
    want = reference_output("Resize", inputs, opset=19, **onnx_attrs)
    got = RESIZE.reference([x], attrs, None)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape, axes, sizes, scales, extra", CASES)
def test_both_backends_match_the_reference(shape, axes, sizes, scales, extra):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    g = _resize_graph(x, symbolic_batch=True, **_fill_scales(shape, _attrs(axes, sizes, scales, **extra)))
    want = interpret(g, x)[0]
    np.testing.assert_allclose(OnnxRuntimeModule(to_onnx(g))(x)[0], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(JaxModule(g)(x)[0]), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape, axes, sizes, scales, extra, native", [
    ((1, 2, 4, 5), (2, 3), (7, 3), None, dict(mode="linear"), True),
    ((1, 2, 4, 5), (2, 3), (8, 10), None, dict(mode="cubic", coord="align_corners"), True),
    # cubic over a 1-d or 3-d axis set: onnxruntime's kernel refuses it
    ((2, 3, 5), (2,), (7,), None, dict(mode="cubic"), False),
    # pytorch_half_pixel onto one pixel: the kernel samples at 0, ONNX at -0.5
    ((1, 1, 4, 4), (2, 3), (1, 1), None, dict(mode="linear", coord="pytorch_half_pixel"), False),
    # a factor whose output the kernel would size differently (floor(5 * 1.5) = 7, asked 8)
    ((1, 1, 5), (2,), (8,), (1.5,), dict(mode="linear"), False),
    # given factors with align_corners: ONNX reads the unrounded output width
    ((1, 1, 5), (2,), (7,), (1.5,), dict(mode="linear", coord="align_corners"), False),
])
def test_onnx_lowering_takes_resize_only_where_onnxruntime_agrees(shape, axes, sizes, scales, extra, native):
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    g = _resize_graph(x, **_fill_scales(shape, _attrs(axes, sizes, scales, **extra)))
    model = to_onnx(g)
    assert ("Resize" in [n.op_type for n in model.graph.node]) == native
    np.testing.assert_allclose(OnnxRuntimeModule(model)(x)[0], interpret(g, x)[0], rtol=1e-5, atol=1e-5)


def test_nearest_resize_of_integers_and_refusal_of_linear_integers():
    x = np.arange(24, dtype=np.int64).reshape(1, 2, 3, 4)
    g = _resize_graph(x, **_fill_scales(x.shape, _attrs((2, 3), (6, 8), mode="nearest")))
    want = x.repeat(2, axis=2).repeat(2, axis=3)
    np.testing.assert_array_equal(interpret(g, x)[0], want)
    np.testing.assert_array_equal(OnnxRuntimeModule(to_onnx(g))(x)[0], want)
    np.testing.assert_array_equal(np.asarray(JaxModule(g)(x)[0]), want)
    with pytest.raises(accelir.VerificationError, match="linear interpolation of i64"):
        _resize_graph(x, **_fill_scales(x.shape, _attrs((2, 3), (6, 8), mode="linear")))


def test_type_rule_refuses_a_symbolic_resized_dim():
    g = Graph("g")
    x = g.add_input(TensorType.of(np.zeros((1, 2, 3, 4), np.float32)).with_shape((1, 2, "h", 4)), "x")
    with pytest.raises(accelir.AccelirError, match="symbolic dim 'h'"):
        g.apply("resize", x, axes=(2,), sizes=(6,), scales=(2.0,), mode="linear")


# ----- torch's interpolate family --------------------------------------------------------

class Interp(torch.nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.kw = kw

    def forward(self, x):
        return F.interpolate(x, **self.kw)


TORCH_CASES = [
    ((1, 3, 5, 7), dict(scale_factor=2, mode="nearest")),
    ((1, 3, 5, 7), dict(size=(4, 11), mode="nearest")),
    ((1, 3, 14, 6), dict(size=(20, 9), mode="nearest")),
    ((1, 3, 5, 7), dict(size=(3, 9), mode="nearest-exact")),
    ((1, 3, 5, 7), dict(scale_factor=1.5, mode="bilinear", align_corners=False)),
    ((1, 3, 5, 7), dict(size=(9, 4), mode="bilinear", align_corners=True)),
    ((1, 3, 8, 9), dict(size=(3, 4), mode="bilinear", align_corners=False)),
    ((1, 3, 5, 7), dict(scale_factor=(2.5, 1.3), mode="bicubic", align_corners=False)),
    ((1, 3, 5, 7), dict(size=(8, 8), mode="bicubic", align_corners=True)),
    ((2, 3, 9), dict(scale_factor=1.7, mode="linear")),
    ((2, 3, 9), dict(size=4, mode="nearest")),
    ((1, 2, 3, 4, 5), dict(scale_factor=(2, 1.5, 0.6), mode="trilinear")),
    ((1, 2, 3, 4, 5), dict(size=(5, 2, 7), mode="nearest")),
    ((1, 3, 12, 10), dict(size=(5, 4), mode="bilinear", antialias=True)),
    ((1, 3, 12, 10), dict(size=(5, 6), mode="bicubic", antialias=True)),
]


@pytest.mark.parametrize("backend", ["onnxruntime", "xla"])
@pytest.mark.parametrize("shape, kw", TORCH_CASES, ids=[f"{k['mode']}-{i}" for i, (_, k) in enumerate(TORCH_CASES)])
def test_torch_interpolate_matches_eager(shape, kw, backend):
    torch.manual_seed(0)
    model, x = Interp(**kw).eval(), torch.randn(shape)
    cm = accelir.optimize(model, (x,), backend=backend)
    assert [n.op for n in cm.source_graph.nodes] == ["resize"]
    want = model(x)
    got = cm(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-5)


def test_interpolated_position_embedding_with_a_symbolic_batch():
    """A ViT-style position table resized to the input's grid, the batch dynamic."""
    class PosInterp(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.pos = torch.nn.Parameter(torch.randn(1, 8, 4, 4))

        def forward(self, x):
            return x + F.interpolate(self.pos, size=x.shape[-2:], mode="bicubic", align_corners=False)

    model, x = PosInterp().eval(), torch.randn(2, 8, 6, 6)
    batch = torch.export.Dim("batch", min=1, max=64)
    cm = accelir.optimize(model, (x,), dynamic_shapes=({0: batch},))
    for n in (1, 3):
        xn = torch.randn(n, 8, 6, 6)
        torch.testing.assert_close(cm(xn), model(xn), rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("mode", ["nearest", "nearest-exact"])
def test_torch_nearest_follows_torch_float32_rounding(mode):
    """At 2.2x, output 11 lies exactly on input 5 in real arithmetic; torch's float32 reads 4.
    The capture must read what torch reads, on both backends."""
    model, x = Interp(scale_factor=(1.0, 2.2), mode=mode).eval(), torch.randn(1, 2, 3, 6)
    for backend in ("onnxruntime", "xla"):
        torch.testing.assert_close(accelir.optimize(model, (x,), backend=backend)(x), model(x), rtol=0, atol=0)
