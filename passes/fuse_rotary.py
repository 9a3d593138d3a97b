"""Fuse rotary position embeddings (the rotate-half form) into the ``rotary_embedding`` composite.

Rewrites, for x [B, N, S, r] and cos / sin tables broadcasting to it::

    x * cos + rotate_half(x) * sin                  -> rotary_embedding(x, cos', sin')
        rotate_half(x) = concat(-x[..., r/2:], x[..., :r/2])
    concat(rotary_embedding(X[..., :k]), X[..., k:]) -> rotary_embedding(X) {rotary_dim}   (partial rotary)

where ``cos'`` / ``sin'`` are the first halves of the tables as [B, S, r / 2].  The rewrite
is exact only when each table row repeats its first half in its second (transformers builds
them as ``cat(freqs, freqs)``), so the tables are traced back to where that shows: a
``concat(f, f)`` on the feature axis, or a constant whose halves agree, through elementwise
maps (cos, sin, a scaling), casts, and gathers or reshapes that keep the feature axis (a
cache indexed by position ids).  Tables that cannot be traced are left alone.
"""

from __future__ import annotations

import numpy as np

from accelir.ir import Builder, Node, Value
from accelir.ops import registry

from .pattern import Match, Op, Rule, RulePass, Var
from .recognizers import outside_users
from .registry import register_pass

__all__ = ["fuse_rotary", "ROTARY_RULES", "halves_equal"]

_KEEPS_LAST_AXIS = ("unsqueeze", "reshape", "broadcast_to", "squeeze")


def _last_axis_slice(v: Value, start: int, stop: int) -> bool:
    """``v`` is ``slice`` of its input from ``start`` to ``stop`` on the last axis, step 1."""
    n = v.producer
    a = n.attrs
    src = n.inputs[0]
    return (tuple(a["axes"]) in ((src.rank - 1,), (-1,)) and tuple(a["starts"]) == (start,)
            and tuple(a["stops"]) == (stop,) and all(s == 1 for s in a["steps"]))


def halves_equal(v: Value, depth: int = 10) -> bool:
    """Whether every row of ``v`` (along its last axis) provably repeats its first half in its second."""
    node = v.producer
    if depth == 0 or node is None or v.rank == 0 or type(v.shape[-1]) is not int or v.shape[-1] % 2:
        return False
    h = v.shape[-1] // 2
    arr = v.const_value
    if arr is not None:
        return bool(np.array_equal(arr[..., :h], arr[..., h:]))
    op = registry.get(node.op)
    last = v.rank - 1
    if node.op == "concat":
        if node.attrs["axis"] % v.rank == last:
            return len(node.inputs) == 2 and node.inputs[0] is node.inputs[1]
        return all(halves_equal(x, depth - 1) for x in node.inputs)
    if op.elementwise:
        # an operand constant along the feature axis keeps the property; the others must have it
        return all((x.rank == 0 or x.shape[-1] == 1) or halves_equal(x, depth - 1) for x in node.inputs)
    if node.op in _KEEPS_LAST_AXIS or node.op == "gather" and node.attrs["axis"] % node.inputs[0].rank != \
            node.inputs[0].rank - 1:
        src = node.inputs[0]
        return src.rank > 0 and src.shape[-1] == v.shape[-1] and halves_equal(src, depth - 1)
    if node.op == "transpose" and node.attrs["perm"][-1] == v.rank - 1:
        return halves_equal(node.inputs[0], depth - 1)
    return False


def _half_table(b: Builder, t: Value, x: Value) -> Value | None:
    """A rotate-half table ``t`` broadcasting to x [B, N, S, r] as the composite's [B or 1, S, r / 2]."""
    bsz, _, s, r = x.shape
    shape = tuple(t.shape)
    if len(shape) < 4:
        shape = (1,) * (4 - len(shape)) + shape
    if len(shape) != 4 or shape[1] != 1 or shape[2] != s or shape[3] != r or shape[0] not in (1, bsz):
        return None
    rows = (shape[0], s, r)
    src = t.producer.inputs[0] if t.producer is not None and t.producer.op in _KEEPS_LAST_AXIS else None
    if src is None or tuple(src.shape) != rows:
        src = b.op("reshape", t, shape=rows)
    return _first_half(b, src)


def _first_half(b: Builder, v: Value) -> Value:
    """The first half of ``v`` along its last axis: ``f`` of ``concat(f, f)`` (also under unary maps such
    as cos / sin, which then apply to the half), else a slice."""
    node = v.producer
    if node is not None and node.op == "concat" and len(node.inputs) == 2 and node.inputs[0] is node.inputs[1] \
            and node.attrs["axis"] % v.rank == v.rank - 1:
        return node.inputs[0]
    if node is not None and len(node.inputs) == 1 and len(node.outputs) == 1 and registry.get(node.op).elementwise:
        inner = node.inputs[0].producer
        if inner is not None and inner.op == "concat":
            return b.op(node.op, _first_half(b, node.inputs[0]), **dict(node.attrs))
    h = v.shape[-1] // 2
    return b.op("slice", v, starts=(0,), stops=(h,), axes=(v.rank - 1,))


def _swapped_halves(v: Value) -> Value | None:
    """The ``x`` of ``v = rotate_half(x) = concat(-x[..., r/2:], x[..., :r/2])`` on the last axis, else None."""
    node = v.producer
    if node is None or node.op != "concat" or len(node.inputs) != 2 or v.rank != 4 or node.attrs["axis"] % 4 != 3:
        return None
    n, lo = node.inputs
    if n.producer is None or n.producer.op != "neg" or lo.producer is None or lo.producer.op != "slice":
        return None
    hi = n.producer.inputs[0]
    if hi.producer is None or hi.producer.op != "slice" or hi.producer.inputs[0] is not lo.producer.inputs[0]:
        return None
    x = lo.producer.inputs[0]
    r = x.shape[-1]
    if type(r) is not int or r % 2 or not (_last_axis_slice(hi, r // 2, r) and _last_axis_slice(lo, 0, r // 2)):
        return None
    return x


def _rotate_half_parts(add: Node) -> tuple[Value, Value, Value, list[Node]] | None:
    """``(x, cos, sin, nodes)`` of ``add = x * cos + rotate_half(x) * sin`` (any operand order)."""
    muls = [v.producer for v in add.inputs]
    if any(m is None or m.op != "mul" for m in muls):
        return None
    for direct, rotated in (muls, muls[::-1]):
        for r, sin in (rotated.inputs, rotated.inputs[::-1]):
            x = _swapped_halves(r)
            if x is None or not any(v is x for v in direct.inputs):
                continue
            cos = direct.inputs[1] if direct.inputs[0] is x else direct.inputs[0]
            neg = r.producer.inputs[0].producer
            nodes = [direct, rotated, r.producer, neg, neg.inputs[0].producer, r.producer.inputs[1].producer]
            return x, cos, sin, nodes
    return None


def _rotate_half(m: Match, b: Builder) -> Value | None:
    y = m.root.output
    parts = _rotate_half_parts(m.root)
    if parts is None:
        return None
    x, cos, sin, region = parts
    if y.type != x.type:
        return m.reject(f"rotary: the result {y.type} is broadcast beyond x {x.type}")
    for t in (cos, sin):
        if not halves_equal(t):
            return m.reject("rotary: a cos / sin table does not provably repeat its first half")
    leak = outside_users(region, m.root)
    if leak is not None:
        return m.reject(f"rotary: intermediate {leak.op} is also used outside the pattern")
    c, s = _half_table(b, cos, x), _half_table(b, sin, x)
    if c is None or s is None:
        return m.reject(f"rotary: cos {cos.type} / sin {sin.type} are not [B, 1, S, r] tables of x {x.type}")
    return b.op("rotary_embedding", x, c, s)


def _partial(m: Match, b: Builder) -> Value | None:
    """``concat(rotary_embedding(X[..., :k]), X[..., k:])`` -> ``rotary_embedding(X)`` over the first k."""
    x, rot = m["X"], m["rot"].producer
    k = m["rs"].shape[-1]
    y = m.root.output
    if m.root.attrs["axis"] % y.rank != y.rank - 1 or y.type != x.type or type(x.shape[-1]) is not int:
        return None
    if not (_last_axis_slice(m["rs"], 0, k) and _last_axis_slice(m["ps"], k, x.shape[-1])):
        return None
    leak = outside_users([rot, m["rs"].producer, m["ps"].producer], m.root)
    if leak is not None:
        return m.reject(f"rotary: partial rotary's {leak.op} is also used outside the pattern")
    return b.op("rotary_embedding", x, *rot.inputs[1:], interleaved=rot.attrs["interleaved"],
                rotary_dim=rot.attrs["rotary_dim"] or k)


ROTATE_HALF = Op("add", Op("mul", any_operands=True), Op("mul", any_operands=True))
PARTIAL = Op("concat", Op("rotary_embedding", Op("slice", Var("X"), name="rs"), Var(), Var(), name="rot"),
             Op("slice", Var("X"), name="ps"))

ROTARY_RULES = (Rule("rotate_half", ROTATE_HALF, _rotate_half, near_miss_depth=3),
                Rule("partial_rotary", PARTIAL, _partial, near_miss_depth=2))

fuse_rotary = register_pass("fuse_rotary")(RulePass("fuse_rotary", ROTARY_RULES))
