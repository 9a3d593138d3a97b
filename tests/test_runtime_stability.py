"""Runs that must give the same, finite answer in every process.

XLA's results may hang on things a single in-process test never varies: where the
allocator puts a buffer, what a fused library kernel reads past an operand's end.  So
the models the XLA path is tested with run here in several fresh processes (with
glibc's MALLOC_PERTURB_ filling freed and new heap memory with a pattern, so a read of
such memory shows) and each is checked against ONNX Runtime or eager torch.  The two
faults found this way also have deterministic tests of their own.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import helper

import accelir

from onnx_single_node import onnxruntime_outputs

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
LIGHT_MODELS = sorted(f[:-5] for f in os.listdir(LIGHT) if f.startswith("light_") and f.endswith(".onnx"))


def _model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    model = helper.make_model(helper.make_graph(nodes, "m", inputs, outputs, list(initializers)),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _f32(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape)


def test_reduce_of_a_conv_with_constant_filled_weights():
    """reduce(conv(x, broadcast(w))) (the light_* models' tail: ConstantOfShape weights,
    Conv, GlobalAveragePool) fused into one YNNPACK kernel read memory past the weight."""
    fill = helper.make_tensor("v", onnx.TensorProto.FLOAT, [1], [0.02])
    shape = helper.make_tensor("wshape", onnx.TensorProto.INT64, [4], [96, 512, 1, 1])
    model = _model([helper.make_node("ConstantOfShape", ["wshape"], ["w"], value=fill),
                    helper.make_node("Conv", ["x", "w"], ["c"]),
                    helper.make_node("GlobalAveragePool", ["c"], ["y"])],
                   [_f32("x", [1, 512, 13, 13])], [_f32("y", [1, 96, 1, 1])], [shape])
    x = np.random.default_rng(0).random((1, 512, 13, 13), dtype=np.float32)
    want = onnxruntime_outputs(model, {"x": x})[0]
    got = np.asarray(accelir.optimize(model, (x,), backend="xla", level=0)(x)[0])
    np.testing.assert_allclose(got, want, rtol=1e-5)

