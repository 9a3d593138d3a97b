"""deform_conv beyond the generic op tables: the reference against onnxruntime's DeformConv
kernel over strides, dilations, padding, groups and offset groups, the ONNX import rule
(a mask without a bias, refused forms) and the lowerings' choice between the kernel and the
decomposition."""

from __future__ import annotations

import numpy as np
import pytest

from accelir import DType, Graph, LoweringError, TensorType, UnsupportedOpError, interpret, run_graph, verify
from accelir.frontends.onnx import import_onnx
from accelir.lowering.jax import JaxModule
from accelir.lowering.onnx import to_onnx
from accelir.lowering.onnxruntime import OnnxRuntimeModule
from accelir.testing import onnxruntime_outputs, single_node_model

# (x shape, kernel, out channels, strides, dilations, pads (begin..., end...), group, offset_group, bias, mask)
CONFIGS = [
    ((1, 2, 5, 6), (3, 3), 4, (1, 1), (1, 1), (1, 1, 1, 1), 1, 1, True, False),
    ((2, 4, 6, 5), (2, 3), 6, (2, 1), (1, 2), (0, 1, 1, 0), 2, 4, False, True),
    ((1, 6, 7, 7), (1, 2), 3, (1, 3), (2, 1), (2, 0, 0, 2), 3, 2, True, True),
]


def _inputs(seed, shape, kernel, out, strides, dilations, pads, group, offset_group, bias, mask):
    rng = np.random.default_rng(seed)
    oh, ow = ((shape[2 + i] + pads[i] + pads[i + 2] - dilations[i] * (kernel[i] - 1) - 1) // strides[i] + 1
              for i in range(2))
    taps = offset_group * kernel[0] * kernel[1]
    arrays = {"X": rng.standard_normal(shape), "W": rng.standard_normal((out, shape[1] // group) + kernel),
              "offset": rng.uniform(-2.5, 2.5, (shape[0], 2 * taps, oh, ow))}
    if bias:
        arrays["B"] = rng.standard_normal(out)
    if mask:
        arrays["mask"] = rng.uniform(0, 1, (shape[0], taps, oh, ow))
    return {k: v.astype(np.float32) for k, v in arrays.items()}


def _model(arrays, opset, **attrs):
    return single_node_model("DeformConv", {n: arrays.get(n) for n in ("X", "W", "offset", "B", "mask")}, opset,
                             **attrs)


def _onnx_attrs(kernel, strides, dilations, pads, group, offset_group):
    return dict(kernel_shape=list(kernel), strides=list(strides), dilations=list(dilations), pads=list(pads),
                group=group, offset_group=offset_group)


@pytest.mark.parametrize("k", range(len(CONFIGS)))
def test_import_and_lowerings_match_onnxruntime(k):
    shape, kernel, out, strides, dilations, pads, group, offset_group, bias, mask = CONFIGS[k]
    arrays = _inputs(k, *CONFIGS[k])
    model, feeds = _model(arrays, 22, **_onnx_attrs(kernel, strides, dilations, pads, group, offset_group))
    want = onnxruntime_outputs(model, feeds)[0]
    g = import_onnx(model)
    verify(g)
    flat = g.meta["signature"].flatten(feeds)
    np.testing.assert_allclose(run_graph(g, flat)[0], want, rtol=1e-4, atol=1e-4)
    for opset, native in ((18, False), (24, True)):  # DeformConv is new in opset 19
        lowered = to_onnx(g, opset=opset)
        assert ("DeformConv" in [n.op_type for n in lowered.graph.node]) == native
        np.testing.assert_allclose(OnnxRuntimeModule(lowered)(*flat)[0], want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(JaxModule(g)(*flat)[0]), want, rtol=1e-4, atol=1e-4)


def test_a_mask_without_a_bias_adds_zeros():
    shape, kernel, out, strides, dilations, pads, group, offset_group, _, _ = CONFIGS[1]
    arrays = _inputs(5, *CONFIGS[1])
    model, feeds = _model(arrays, 19, **_onnx_attrs(kernel, strides, dilations, pads, group, offset_group))
    assert "B" not in feeds and "mask" in feeds
    g = import_onnx(model)
    node = next(n for n in g.nodes if n.op == "deform_conv")
    assert len(node.inputs) == 5
    want = onnxruntime_outputs(model, feeds)[0]
    np.testing.assert_allclose(run_graph(g, g.meta["signature"].flatten(feeds))[0], want, rtol=1e-4, atol=1e-4)


def test_symbolic_batch_through_the_decomposition():
    arrays = _inputs(6, *CONFIGS[0])
    g = Graph("deform")
    ins = [g.add_input(TensorType.of(a).with_shape(("n",) + a.shape[1:]) if k in ("X", "offset") else
                       TensorType.of(a), k) for k, a in arrays.items()]
    g.set_outputs([g.apply("deform_conv", *ins, padding=((1, 1), (1, 1)))])
    verify(g)
    xs = list(arrays.values())
    np.testing.assert_allclose(np.asarray(JaxModule(g)(*xs)[0]), interpret(g, *xs)[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape,kernel,attrs,match", [
    ((1, 2, 4, 4, 4), (2, 2, 2), {}, "only 2-d"),
    ((1, 2, 4, 4), (2, 2), {"kernel_shape": [3, 3]}, "kernel_shape"),
])
def test_forms_outside_the_ir_are_refused(shape, kernel, attrs, match):
    taps = int(np.prod(kernel))
    arrays = {"X": np.zeros(shape, np.float32), "W": np.zeros((1, shape[1]) + kernel, np.float32),
              "offset": np.zeros((1, taps * len(kernel)) + (3,) * len(kernel), np.float32)}
    with pytest.raises(UnsupportedOpError, match=match):
        import_onnx(_model(arrays, 22, **attrs)[0])


def test_decomposition_with_symbolic_output_dims_is_refused_by_name():
    g = Graph("deform")
    ins = [g.add_input(TensorType(DType.f32, shape), n) for shape, n in (((1, 4, 6, 6), "x"), ((2, 4, 3, 3), "w"),
                                                                   ((1, 18, "h", "w"), "offset"))]
    g.set_outputs([g.apply("deform_conv", *ins)])
    with pytest.raises(LoweringError, match="deform_conv.*decomposition needs static output dims of offset"):
        to_onnx(g, opset=18)
    arrays = [np.zeros(shape, np.float32) for shape in ((1, 4, 6, 6), (2, 4, 3, 3), (1, 18, 4, 4))]
    with pytest.raises(LoweringError, match="deform_conv.*static output dims of offset"):
        JaxModule(g)(*arrays)
