"""A composite op with no lowering rule lowers through its decomposition, in both lowerings.

The op below is registered for the test only (its decomposition is relu then mul); no lowering
knows it, so each must fall back to the decomposition and agree with numpy.
"""

from __future__ import annotations

import numpy as np
import pytest

import accelir
from accelir.lowering.jax import JaxModule
from accelir.lowering.onnx import to_onnx
from accelir.lowering.onnxruntime import OnnxRuntimeModule
from accelir.ops import REGISTRY
from accelir.ops.registry import OpDef

SRC = """graph main(%x: f32[batch,6]) -> (f32[batch,6]) {
  %0 = squared_relu(%x) : f32[batch,6]
  return %0
}"""


def _squared_relu(b, ins, attrs):
    r = b.op("relu", ins[0])
    return [b.op("mul", r, r)]


@pytest.fixture
def squared_relu(monkeypatch):
    """A composite op known to no lowering, registered for one test."""
    op = OpDef("squared_relu", lambda types, attrs: [types[0]],
               lambda xs, attrs, regions: [np.square(np.maximum(xs[0], 0))], composite=True,
               decompose=_squared_relu)
    monkeypatch.setitem(REGISTRY, "squared_relu", op)
    return op


@pytest.mark.parametrize("backend", ["onnx", "jax"])
def test_a_composite_without_a_rule_lowers_through_its_decomposition(squared_relu, backend):
    g = accelir.parse(SRC)
    x = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    run = OnnxRuntimeModule(to_onnx(g)) if backend == "onnx" else JaxModule(g)
    np.testing.assert_allclose(np.asarray(run(x)[0]), np.square(np.maximum(x, 0)), rtol=1e-6, atol=1e-6)


def test_a_core_op_without_a_rule_is_still_refused(monkeypatch):
    # the fallback is for composites only: an op with no decomposition keeps its clear error
    from accelir.lowering.jax import JAX_RULES
    monkeypatch.delitem(JAX_RULES, "relu")
    g = accelir.parse(SRC.replace("squared_relu", "relu"))
    with pytest.raises(accelir.LoweringError, match="no rule for relu"):
        JaxModule(g)
