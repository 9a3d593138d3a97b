"""The verifier rejects each kind of broken graph and names the node and its origin.

The public methods of ``ir.py`` cannot build a broken graph, so the tests that need one
corrupt the graph's private links (``_head``, ``_prev``, ``_uses`` ...) behind its back:
the only place in the tests that reads underscore fields, and on purpose."""

from __future__ import annotations

import numpy as np
import pytest

from accelir import DType, Graph, TensorType, VerificationError, parse, verify
from accelir.ir import Node, Value

TEXT = """graph main(%x: f32[4], %y: f32[4]) -> (f32[4]) {
  %a = add(%x, %y) : f32[4]
  %b = mul(%a, %a) : f32[4]
  return %b
}
"""


def nodes(g):
    return list(g.nodes)


def test_well_formed_graph_verifies():
    verify(parse(TEXT))


def test_use_before_def():
    g = parse(TEXT)
    a, b = nodes(g)
    # move mul in front of add behind the graph's back
    g._head, a._prev, a._next, b._prev, b._next, g._tail = b, b, None, None, a, a
    with pytest.raises(VerificationError, match="used before its definition"):
        verify(g)


def test_wrong_type():
    g = parse(TEXT)
    b = nodes(g)[1]
    b.outputs[0].type = TensorType(DType.f32, (5,))
    b.meta["module"] = "encoder.layer.0.mlp"
    with pytest.raises(VerificationError, match=r"'mul'.*encoder.layer.0.mlp.*type rule gives f32\[4\]"):
        verify(g)


def test_dangling_use_of_foreign_value():
    g = parse(TEXT)
    stray = Value(TensorType(DType.f32, (4,)), "stray")
    nodes(g)[1].replace_input(0, stray)
    with pytest.raises(VerificationError, match="not defined in graph"):
        verify(g)


def test_removed_node_still_used():
    g = parse(TEXT)
    a = nodes(g)[0]
    # unlink the node without going through Graph.remove
    g._head = a._next
    a._next._prev = None
    g._len -= 1
    with pytest.raises(VerificationError):
        verify(g)


def test_stale_use_list():
    g = parse(TEXT)
    a = nodes(g)[0]
    a.outputs[0]._uses._discard(a.outputs[0].uses[0])
    with pytest.raises(VerificationError, match="use list .* out of date"):
        verify(g)


def test_undefined_output():
    g = parse(TEXT)
    g.outputs.append(Value(TensorType(DType.f32, (4,))))
    with pytest.raises(VerificationError, match="output 1 .* not defined"):
        verify(g)


def test_bad_attrs_and_constant_mismatch():
    g = parse(TEXT)
    nodes(g)[0].attrs["axis"] = 1
    with pytest.raises(VerificationError, match="unknown attribute"):
        verify(g)
    g = Graph()
    c = g.const(np.ones(3, np.float32), name="w")
    g.constants["w"] = np.ones(4, np.float32)
    g.set_outputs([c])
    with pytest.raises(VerificationError, match="constant 'w' is f32\\[4\\]"):
        verify(g)


def test_broken_region():
    g = parse("""graph main(%x: f32[2]) -> (f32[2]) {
  %0 = fusion(%x) {kind="elementwise"} : f32[2] {
    graph body(%a: f32[2]) -> (f32[2]) {
      %1 = exp(%a) : f32[2]
      return %1
    }
  }
  return %0
}
""")
    body = nodes(g)[0].regions[0]
    nodes(body)[0].outputs[0].type = TensorType(DType.f16, (2,))
    with pytest.raises(VerificationError, match="in region 'body'"):
        verify(g)


def test_node_outside_graph_cannot_be_removed():
    g = parse(TEXT)
    n = Node("relu", [g.inputs[0]], {}, [g.inputs[0].type])
    with pytest.raises(ValueError, match="not in graph"):
        g.remove(n)
