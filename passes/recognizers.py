"""Recognisers shared by the fusion passes: the many spellings of one computation.

This module is a library for passes, not a pass: it registers nothing.

Frontends spell the same maths in different ways: a mean is ``reduce_mean`` or
``reduce_sum`` then ``div`` by N (jax) or ``mul`` by 1/N; ``0.5 * x * t`` is grouped
either way round; a keepdims result is re-broadcast with ``reshape``, ``unsqueeze`` or
``broadcast_to``; a scalar is a 0-d constant, a ``[1, 1, 1]`` one, or ``sqrt(8.0)``
not yet folded.  The fusion rules describe their skeleton with patterns and hand the
arithmetic to these recognisers, which normalise it:

- :func:`polynomial` reads a value as a sum of monomials ``coef * prod(leaf ** power)``
  through single-use ``add`` / ``sub`` / ``mul`` / ``div`` / ``neg`` / ``reciprocal`` /
  integer ``pow`` nodes, so every association order of a product compares equal.
- :func:`reduction` reads a mean / sum / max over some axes, however it is spelled.
- :func:`scalar` / :func:`close` read a constant and compare it within a few ulps of
  its dtype: a near match that fails the comparison is not fused.

Every recogniser records the nodes it consumed, so a rule can check that the matched
region has no reader outside it (:func:`outside_users`) before replacing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import ml_dtypes
import numpy as np

from accelir.dims import Dim
from accelir.ir import DType, Node, Value
from accelir.ops import registry
from accelir.ops.activations import ACTIVATION_TABLE

__all__ = [
    "Term", "Polynomial", "Reduction", "const_array", "scalar", "close", "peel_unit_dims", "polynomial",
    "reduction", "reaches", "outside_users", "keepdims_shape", "param_shape_ok", "as_param", "channel_vector",
    "ACTIVATION_OF",
]

# A constant subexpression is evaluated when its result has at most this many elements.
_EVAL_LIMIT = 16
# A constant array is read as a scalar when all of its (at most this many) elements agree.
_UNIFORM_LIMIT = 4096
# Bounds the work of one polynomial reading, so trying a rule at every node stays linear.
_MAX_NODES = 48
_MAX_TERMS = 8

# unary op (with attrs) -> activation name of linear / fused_conv
ACTIVATION_OF = {(a.op, a.attrs): a.name for a in ACTIVATION_TABLE.values() if a.op is not None}

_SHAPE_ONLY = ("reshape", "unsqueeze", "squeeze", "broadcast_to")


def const_array(v: Value, limit: int = _EVAL_LIMIT, depth: int = 4) -> np.ndarray | None:
    """The array of a constant, or of a small pure expression over constants (``cast(sqrt(8.0))``)."""
    arr = v.const_value
    if arr is not None:
        return arr
    node = v.producer
    if depth == 0 or node is None or node.regions or not node.inputs or len(node.outputs) != 1:
        return None
    n = 1
    for d in v.shape:
        if type(d) is not int:
            return None
        n *= d
    if n > limit or node.op not in _SHAPE_ONLY and not registry.get(node.op).elementwise:
        return None
    args = [const_array(i, limit, depth - 1) for i in node.inputs]
    if any(a is None for a in args):
        return None
    return registry.get(node.op).reference(args, dict(node.attrs), ())[0]


def scalar(v: Value) -> float | None:
    """The value of a constant whose elements all agree (a scalar, however shaped), else None."""
    arr = v.const_value
    if arr is None:
        arr = const_array(v)
    elif arr.size > _UNIFORM_LIMIT:
        return None
    if arr is None or arr.size == 0 or arr.dtype == np.bool_:
        return None
    flat = arr.reshape(-1)
    first = flat[0]
    if flat.size > 1 and not np.all(flat == first):
        return None
    return float(first)


def close(value: float | None, want: float, dtype: DType) -> bool:
    """``value`` is ``want`` rounded to ``dtype`` (within two ulps, relative)."""
    if value is None:
        return False
    eps = float(ml_dtypes.finfo(dtype.numpy).eps) if dtype.is_float else 0.0
    return abs(value - want) <= 2.0 * eps * abs(want) + 1e-300


def _unit_dims_only(a: Sequence[Dim], b: Sequence[Dim]) -> bool:
    """``a`` and ``b`` differ only by size-1 dims."""
    return [d for d in a if d != 1] == [d for d in b if d != 1]


def peel_unit_dims(v: Value, nodes: list[Node] | None = None) -> Value:
    """Look through reshapes / (un)squeezes / broadcasts that only add or drop size-1 dims."""
    while True:
        node = v.producer
        if node is None or node.op not in _SHAPE_ONLY:
            return v
        src = node.inputs[0]
        if not _unit_dims_only(src.shape, v.shape):
            return v
        if nodes is not None:
            nodes.append(node)
        v = src


@dataclass
class Term:
    """``coef * prod(leaf ** power)``; leaves are keyed by identity."""

    coef: float
    leaves: dict[Value, int] = field(default_factory=dict)

    def key(self) -> frozenset:
        return frozenset((id(v), p) for v, p in self.leaves.items())

    def power_of(self, v: Value) -> int:
        return self.leaves.get(v, 0)

    def only(self) -> tuple[Value, int] | None:
        """The single leaf and its power, when the term has exactly one."""
        if len(self.leaves) != 1:
            return None
        return next(iter(self.leaves.items()))


@dataclass
class Polynomial:
    terms: list[Term]
    nodes: list[Node]

    def constant(self) -> float:
        return sum(t.coef for t in self.terms if not t.leaves)

    def variable_terms(self) -> list[Term]:
        return [t for t in self.terms if t.leaves]


class _Budget(Exception):
    """The reading grew past its bounds; the value is treated as not matching."""


def _mul_terms(a: list[Term], b: list[Term]) -> list[Term]:
    out = []
    for x in a:
        for y in b:
            leaves = dict(x.leaves)
            for v, p in y.leaves.items():
                q = leaves.get(v, 0) + p
                if q:
                    leaves[v] = q
                else:
                    leaves.pop(v, None)
            out.append(Term(x.coef * y.coef, leaves))
    if len(out) > _MAX_TERMS:
        raise _Budget
    return out


def _merge(terms: Iterable[Term]) -> list[Term]:
    acc: dict[frozenset, Term] = {}
    for t in terms:
        k = t.key()
        if k in acc:
            acc[k].coef += t.coef
        else:
            acc[k] = Term(t.coef, dict(t.leaves))
    return [t for t in acc.values() if t.coef != 0.0]


def _int_power(v: Value) -> int | None:
    s = scalar(v)
    if s is None or s != int(s) or not -4 <= s <= 4:
        return None
    return int(s)


class _Reader:
    def __init__(self) -> None:
        self.nodes: list[Node] = []

    def leaf(self, v: Value) -> list[Term]:
        c = scalar(v)
        if c is not None:
            return [Term(c)]
        return [Term(1.0, {v: 1})]

    def read(self, v: Value, root: bool = False) -> list[Term]:
        node = v.producer
        if node is None or len(node.outputs) != 1 or node.op not in _ARITH:
            return self.leaf(v)
        if not root and (v.num_uses != 1 or v.is_graph_output):
            return self.leaf(v)
        c = scalar(v)
        if c is not None:
            return [Term(c)]
        if len(self.nodes) >= _MAX_NODES:
            raise _Budget
        self.nodes.append(node)
        ins = node.inputs
        op = node.op
        if op == "add":
            return _merge(self.read(ins[0]) + self.read(ins[1]))
        if op == "sub":
            return _merge(self.read(ins[0]) + [Term(-t.coef, t.leaves) for t in self.read(ins[1])])
        if op == "neg":
            return [Term(-t.coef, t.leaves) for t in self.read(ins[0])]
        if op == "mul":
            return _merge(_mul_terms(self.read(ins[0]), self.read(ins[1])))
        if op in ("div", "reciprocal"):
            num = self.read(ins[0]) if op == "div" else [Term(1.0)]
            return _merge(_mul_terms(num, self.inverse(ins[-1])))
        # pow with an integer exponent
        n = _int_power(ins[1])
        if n is None:
            self.nodes.pop()
            return self.leaf(v)
        base = self.read(ins[0])
        if n < 0:
            base, n = self.inverse(ins[0], base), -n
        out = [Term(1.0)]
        for _ in range(n):
            out = _mul_terms(out, base)
        return _merge(out)

    def inverse(self, v: Value, terms: list[Term] | None = None) -> list[Term]:
        terms = self.read(v) if terms is None else terms
        if len(terms) == 1 and terms[0].coef != 0.0:
            t = terms[0]
            return [Term(1.0 / t.coef, {x: -p for x, p in t.leaves.items()})]
        # 1 / (a + b) does not distribute: the sum is a leaf of its own
        return [Term(1.0, {v: -1})]


_ARITH = frozenset({"add", "sub", "neg", "mul", "div", "reciprocal", "pow"})


def polynomial(v: Value, root: bool = True) -> Polynomial | None:
    """Read ``v`` as a sum of monomials over its leaves; None when it grows past the bounds.

    Nodes are expanded only when their value has this single reader (``root``: ``v``
    itself is always expanded), so a shared subexpression stays one leaf.  Float
    dtypes only: integer division does not distribute.
    """
    if not v.dtype.is_float:
        return None
    r = _Reader()
    try:
        terms = r.read(v, root=root)
    except _Budget:
        return None
    return Polynomial(terms, r.nodes)


def reaches(v: Value, ops: frozenset[str] | set[str], depth: int = 5) -> bool:
    """Whether a node of one of ``ops`` feeds ``v`` through at most ``depth`` arithmetic or
    shape-only nodes: a cheap test that keeps rules from reading every ``mul`` in a graph."""
    seen: set[int] = set()
    frontier = [v]
    for _ in range(depth):
        nxt = []
        for u in frontier:
            n = u.producer
            if n is None or id(n) in seen:
                continue
            seen.add(id(n))
            if n.op in ops:
                return True
            if n.op in _ARITH or n.op in _SHAPE_ONLY or n.op == "max":
                nxt.extend(n.inputs)
        frontier = nxt
    return False


def monomial(v: Value, nodes: list[Node]) -> Term | None:
    """``v`` read as a single term (a scaled product); its expanded nodes are added to ``nodes``."""
    p = polynomial(v)
    if p is None or len(p.terms) != 1:
        return None
    nodes.extend(p.nodes)
    return p.terms[0]


@dataclass
class Reduction:
    """``kind`` (``"sum"``, ``"mean"``, ``"max"``) of ``x`` over ``axes`` (sorted, non-negative)."""

    kind: str
    x: Value
    axes: tuple[int, ...]
    nodes: list[Node]


def _count(shape: Sequence[Dim], axes: Sequence[int]) -> int | None:
    n = 1
    for a in axes:
        d = shape[a]
        if type(d) is not int:
            return None
        n *= d
    return n


def reduction(v: Value, kinds: Sequence[str] = ("mean",), coef: float = 1.0) -> Reduction | None:
    """Read ``coef * v`` as a reduction: ``reduce_mean``, ``reduce_sum`` scaled by 1/N (a mean),
    ``reduce_sum``, ``reduce_max`` (also ``max(m, -inf)``), re-broadcast to keepdims or not."""
    nodes: list[Node] = []
    v = peel_unit_dims(v, nodes)
    node = v.producer
    if node is not None and node.op == "max":
        # jnp.max(initial=-inf) spells the max as max(reduce_max(x), -inf)
        a, b = node.inputs
        for m, c in ((a, b), (b, a)):
            if scalar(c) == -np.inf and m.num_uses == 1:
                nodes.append(node)
                v = peel_unit_dims(m, nodes)
                break
    elif v.dtype.is_float and node is not None and node.op in ("mul", "div"):
        t = monomial(v, nodes)
        if t is None or t.only() is None or t.only()[1] != 1:
            return None
        coef *= t.coef
        v = peel_unit_dims(t.only()[0], nodes)
    node = v.producer
    if node is None or node.op not in ("reduce_mean", "reduce_sum", "reduce_max"):
        return None
    x = node.inputs[0]
    axes = tuple(sorted(a % x.rank for a in node.attrs["axes"]))
    nodes.append(node)
    kind = node.op[len("reduce_"):]
    if kind == "sum" and coef != 1.0:
        n = _count(x.shape, axes)
        if n is None or not close(coef, 1.0 / n, x.dtype):
            return None
        kind = "mean"
    elif coef != 1.0:
        return None
    if kind not in kinds:
        return None
    return Reduction(kind, x, axes, nodes)


def keepdims_shape(x: Value, axes: Sequence[int]) -> tuple[Dim, ...]:
    return tuple(1 if i in axes else d for i, d in enumerate(x.shape))


def param_shape_ok(p: Value, x: Value, axes: Sequence[int]) -> bool:
    """``p`` (a scale or bias) broadcasts against ``x`` varying only along ``axes``."""
    if p.rank > x.rank:
        return False
    off = x.rank - p.rank
    for i, d in enumerate(p.shape):
        k = i + off
        if d != 1 and (k not in axes or d != x.shape[k]):
            return False
    return True


def channel_vector(arr: np.ndarray, channels: int) -> np.ndarray:
    """A per-channel constant (any shape varying only along the channel dim) as ``[channels]``."""
    return np.broadcast_to(arr.reshape(-1) if arr.size == channels else arr.reshape(()), (channels,))


def as_param(b, p: Value, rank: int) -> Value:
    """``p`` reshaped to its trailing ``rank`` dims (dropping leading 1s), looking through reshapes."""
    if p.rank <= rank:
        return p
    want = p.shape[p.rank - rank:]
    src = p.producer.inputs[0] if p.producer is not None and p.producer.op in _SHAPE_ONLY else None
    if src is not None and tuple(src.shape) == tuple(want):
        return src
    arr = p.const_value
    if arr is not None:
        return b.const(arr.reshape(tuple(int(d) for d in want)), name=p.producer.attrs["name"])
    return b.op("reshape", p, shape=want)


def outside_users(nodes: Iterable[Node], root: Node) -> Node | None:
    """A node of ``nodes`` (other than ``root``) read from outside ``nodes``, or None."""
    inside = {id(n) for n in nodes}
    inside.add(id(root))
    for n in nodes:
        if n is root:
            continue
        for o in n.outputs:
            if o.is_graph_output:
                return n
            for u, _ in o.uses:
                if id(u) not in inside:
                    return n
    return None
