"""The activation table drives the fusion passes and both lowerings.

For every row: matmul + bias followed by the row's IR op fuses into one ``linear`` carrying the
row's name, and the fused node lowered to ONNX (run by ONNX Runtime) and to jax agrees with
eager torch's activation of the row's IR op on torch's matmul (not with the row's own reference,
which the interpreter runs).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import accelir
from accelir.lowering.jax import JaxModule
from accelir.lowering.onnx import to_onnx
from accelir.lowering.onnxruntime import OnnxRuntimeModule
from accelir.ops import registry
from accelir.ops.activations import ACTIVATION_TABLE
from accelir.passes import get_pass

ROWS = [a for a in ACTIVATION_TABLE.values() if a.op is not None]


def _graph(op: str, attrs: tuple) -> accelir.Graph:
    attr_text = " {" + ", ".join(f'{k}="{v}"' for k, v in attrs) + "}" if attrs else ""
    return accelir.parse(f"""graph main(%x: f32[3,4], %w: f32[4,5], %b: f32[5]) -> (f32[3,5]) {{
  %0 = matmul(%x, %w) : f32[3,5]
  %1 = add(%0, %b) : f32[3,5]
  %2 = {op}(%1){attr_text} : f32[3,5]
  return %2
}}""")


def test_the_registry_takes_every_activation_of_the_table():
    assert registry.get("linear").attrs["activation"].choices == tuple(ACTIVATION_TABLE)
    assert registry.get("fused_conv").attrs["activation"].choices == tuple(ACTIVATION_TABLE)


@pytest.mark.parametrize("row", ROWS, ids=lambda a: a.name)
def test_each_activation_fuses_and_lowers_as_its_reference(row):
    g = _graph(row.op, row.attrs)
    assert get_pass("fuse_linear")(g)
    (node,) = [n for n in g.nodes if n.op == "linear"]
    assert node.attrs["activation"] == row.name
    assert [n.op for n in g.nodes if n.op not in ("linear", "constant")] == []
    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((3, 4), (4, 5), (5,)))
    pre = torch.from_numpy(x).double() @ torch.from_numpy(w).double() + torch.from_numpy(b).double()
    want = getattr(torch.nn.functional, row.op)(pre, **dict(row.attrs)).float().numpy()
    np.testing.assert_allclose(row.reference(pre.numpy()), want, rtol=1e-6, atol=1e-7, err_msg=row.name)
    for run in (OnnxRuntimeModule(to_onnx(g)), JaxModule(g)):
        np.testing.assert_allclose(np.asarray(run(x, w, b)[0]), want, rtol=1e-4, atol=1e-5, err_msg=row.name)


def test_the_table_says_which_activations_ride_in_onnxruntimes_fused_conv(monkeypatch):
    g = accelir.parse("""graph main(%x: f32[1,2,5,5], %w: f32[3,2,3,3]) -> (f32[1,3,3,3]) {
  %0 = fused_conv(%x, %w) {activation="relu"} : f32[1,3,3,3]
  return %0
}""")
    assert [n.op_type for n in to_onnx(g).graph.node] == ["FusedConv"]
    monkeypatch.setitem(ACTIVATION_TABLE, "relu", dataclasses.replace(ACTIVATION_TABLE["relu"], ort_fused_conv=False))
    assert [n.op_type for n in to_onnx(g).graph.node] == ["Conv", "Relu"]
