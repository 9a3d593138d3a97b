"""Graph mutation keeps use lists true; symbolic dims have one canonical form."""

from __future__ import annotations

import numpy as np
import pytest

from accelir import DType, Graph, TensorType, VerificationError, interpret, parse, verify
from accelir import dims as D
from accelir.ir import Node


def small():
    g = parse("""graph main(%x: f32[4], %y: f32[4]) -> (f32[4]) {
  %a = add(%x, %y) : f32[4]
  %b = mul(%a, %a) : f32[4]
  %c = relu(%b) : f32[4]
  return %c
}
""")
    return g, {v.name: v for n in g.nodes for v in n.outputs} | {v.name: v for v in g.inputs}


def test_use_lists_follow_mutation():
    g, v = small()
    a, b = v["a"], v["b"]
    assert [(n.op, i) for n, i in a.uses()] == [("mul", 0), ("mul", 1)]
    b.producer.replace_input(1, v["x"])
    assert [(n.op, i) for n, i in a.uses()] == [("mul", 0)]
    assert ("mul", 1) in [(n.op, i) for n, i in v["x"].uses()]
    verify(g)


def test_cheap_accessors_read_without_copies_and_follow_mutation():
    g, v = small()
    a, b, c = v["a"], v["b"], v["c"]
    mul = b.producer
    ins = mul.inputs
    assert ins is mul.inputs and ins == (a, a)  # the node's own tuple, not a fresh copy per read
    view = a.uses
    assert view is a.uses and a.num_uses == 2 and len(view) == 2 and (mul, 1) in view
    assert [(n.op, i) for n, i in view] == [("mul", 0), ("mul", 1)]
    copy = a.uses()
    assert isinstance(copy, list) and copy == [(mul, 0), (mul, 1)]
    mul.replace_input(1, v["x"])
    assert mul.inputs == (a, v["x"]) and ins == (a, a)  # an old read keeps what it saw
    assert a.num_uses == 1 and len(view) == 1 and (mul, 1) not in view and len(copy) == 2
    assert v["x"].num_uses == 2 and c.num_uses == 0  # a graph output is not a use
    assert not hasattr(view, "append") and not hasattr(view, "remove") and not hasattr(view, "pop")
    add, relu = a.producer, c.producer
    assert g.first is add and g.last is relu
    assert add.prev is None and add.next is mul and mul.prev is add and mul.next is relu and relu.next is None
    new = g.apply("neg", c)
    assert relu.next is new.producer and g.last is new.producer and new.producer.prev is relu
    g.remove(new.producer)
    assert g.last is relu and relu.next is None and new.producer.prev is None and new.producer.next is None
    verify(g)


def test_replace_all_uses_with_covers_graph_outputs():
    g, v = small()
    c = v["c"]
    new = g.apply("neg", v["b"])
    c.replace_all_uses_with(new)
    assert g.outputs[0] is new
    g.remove(c.producer)
    verify(g)


def test_remove_refuses_a_node_still_used():
    g, v = small()
    with pytest.raises(VerificationError, match="still used by mul"):
        g.remove(v["a"].producer)
    with pytest.raises(VerificationError, match="graph output"):
        g.remove(v["c"].producer)


def test_node_walks_survive_removing_the_current_node():
    """Graph.nodes and Graph.reversed_nodes read the next node before yielding one, so a pass may
    remove the node it is looking at (dce walks backwards, cse forwards)."""
    g, v = small()
    g.set_outputs([v["a"]])
    seen = []
    for n in g.reversed_nodes:
        seen.append(n.op)
        if n.op != "add":
            g.remove(n)
    assert seen == ["relu", "mul", "add"] and [n.op for n in g.nodes] == ["add"]
    g, v = small()
    forward = []
    for n in g.nodes:
        forward.append(n.op)
        if n.op == "mul":
            v["c"].producer.replace_input(0, v["a"])
            g.remove(n)
    assert forward == ["add", "mul", "relu"] and [n.op for n in g.nodes] == ["add", "relu"]
    verify(g)


def test_insert_before_and_after_keep_order():
    g, v = small()
    b = v["b"].producer
    n1 = g.make("exp", [v["a"]], before=b)
    n2 = Node("neg", [n1.output], {}, [n1.output.type])
    g.insert_after(n1, n2)
    assert [n.op for n in g.nodes] == ["add", "exp", "neg", "mul", "relu"]
    b.replace_input(1, n2.output)
    verify(g)
    x = np.arange(4, dtype=np.float32)
    (out,) = interpret(g, x, x)
    np.testing.assert_allclose(out, np.maximum((2 * x) * -np.exp(2 * x), 0), rtol=1e-6)


def test_replace_node_with_new_values():
    g, v = small()
    b = v["b"].producer
    sq = g.make("pow", [v["a"], g.const(np.float32(2.0), before=b)], before=b)
    g.replace(b, sq.outputs)
    verify(g)
    assert [n.op for n in g.nodes] == ["add", "constant", "pow", "relu"]


def test_removing_the_last_constant_node_drops_its_array():
    g = Graph()
    c = g.const(np.ones(3, np.float32), name="w")
    d = g.constant_ref("w")
    g.set_outputs([d])
    g.remove(c.producer)
    assert "w" in g.constants
    g.set_outputs([])
    g.remove(d.producer)
    assert "w" not in g.constants


def test_constants_share_memory():
    w = np.ones((256, 256), np.float32)
    g = Graph()
    v = g.const(w, name="w")
    assert v.const_value.base is w
    assert g.copy().constants["w"] is v.const_value


def test_constants_are_read_only_views_and_the_users_array_stays_writable():
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    g = Graph()
    v = g.const(w, name="w")
    assert np.shares_memory(v.const_value, w) and not v.const_value.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        v.const_value[...] = 0
    with pytest.raises(ValueError, match="read-only"):
        np.multiply(v.const_value, 2, out=v.const_value)
    assert w.flags.writeable and np.array_equal(w, np.arange(6, dtype=np.float32).reshape(2, 3))
    for h in (g.copy(), parse(str(g))):
        assert not h.constants["w"].flags.writeable


def test_copy_is_deep_for_structure():
    g, _ = small()
    h = g.copy()
    assert str(h) == str(g)
    next(iter(h.nodes)).op = "sub"
    assert str(h) != str(g)


def test_tensor_type_canonicalises_dims():
    assert TensorType(DType.f32, ("2 * b", 3)) == TensorType(DType.f32, ("b*2", 3))
    assert str(TensorType(DType.i64, ())) == "i64[]"
    with pytest.raises(ValueError):
        TensorType(DType.f32, (-1,))
    with pytest.raises(TypeError):
        TensorType("f32", (1,))


@pytest.mark.parametrize("expr,want", [("b+b", "2*b"), ("b*s - s*b", 0), ("(2*b)//2", "b"), ("4*s%2", 0),
                                       ("3", 3), ("-b+2", "-b+2"), ("s0*s1", "s0*s1")])
def test_dim_canonical(expr, want):
    assert D.canonical(expr) == want


def test_dim_evaluate_and_solve():
    assert D.evaluate("(b+1)//2", {"b": 6}) == 3
    assert D.solve("2*s+1", 9, {}) == ("s", 4)
    assert D.solve("b*s", 12, {"b": 3}) == ("s", 4)
    assert D.solve("b*s", 12, {}) is None
    with pytest.raises(ValueError):
        D.canonical("__import__('os')")


REGION = """graph main(%x: f32[4]) -> (f32[4]) {
  %w = constant() {name="w", value=[1.0, 2.0, 3.0, 4.0]} : f32[4]
  %a = mul(%x, %w) : f32[4]
  %f = fusion(%a) {kind="elementwise"} : f32[4] {
    graph body(%p: f32[4]) -> (f32[4]) {
      %q = neg(%p) : f32[4]
      return %q
    }
  }
  return %f
}
"""


def _node(g, op):
    return next(n for n in g.nodes if n.op == op)


def _bypass_first_node(g):
    first = next(iter(g.nodes))
    first.output.replace_all_uses_with(first.inputs[0])
    g.remove(first)


@pytest.mark.parametrize("change", [
    lambda g: _node(g, "mul").replace_input(1, g.inputs[0]),
    lambda g: _node(g, "mul").attrs.update(bogus=1),
    lambda g: setattr(_node(g, "mul"), "op", "add"),
    lambda g: g.apply("exp", g.inputs[0]),
    lambda g: g.outputs[0].replace_all_uses_with(_node(g, "mul").output),
    lambda g: g.constants.update(w=np.zeros(4, np.float32)),
    lambda g: setattr(_node(g, "mul").output, "type", TensorType(DType.f16, (4,))),
    lambda g: setattr(next(iter(_node(g, "fusion").regions[0].nodes)), "op", "exp"),
    lambda g: g.add_input(TensorType(DType.f32, (1,)), "extra"),
    lambda g: g.apply("neg", g.inputs[0]),
    lambda g: _bypass_first_node(_node(g, "fusion").regions[0]),
])
def test_fingerprint_and_snapshot_see_every_change_to_what_the_graph_computes(change):
    g = parse(REGION)
    fp, snap = g.fingerprint(), g.snapshot()
    assert g.fingerprint() == fp and not snap.changed()
    change(g)
    assert g.fingerprint() != fp and snap.changed()


def test_fingerprint_and_snapshot_ignore_names_and_meta():
    g = parse(REGION)
    fp, snap = g.fingerprint(), g.snapshot()
    mul = _node(g, "mul")
    mul.output.name = "renamed"
    mul.meta["pass"] = "someone"
    g.inputs[0].name = "input"
    assert g.fingerprint() == fp and not snap.changed()


def test_snapshot_and_restore_through_the_graph():
    g = parse(REGION)
    text, fp, sig = str(g), g.fingerprint(), g.signature()
    snap = g.snapshot()
    _node(g, "mul").replace_input(1, g.inputs[0])
    g.add_input(TensorType(DType.f32, (1,)), "extra")
    g.set_outputs([g.apply("exp", g.inputs[0])])
    assert g.signature() != sig
    g.restore(snap)
    assert str(g) == text and g.fingerprint() == fp and g.signature() == sig
    verify(g)
    with pytest.raises(ValueError, match="another graph"):
        parse(REGION).restore(snap)
