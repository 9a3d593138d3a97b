"""Reads a decomposed layer norm or RMS norm, for ``fuse_layer_norm`` and ``fuse_rms_norm``.

The forms read, over trailing axes, with every mean spelled as :func:`reduction`
accepts and every product in any order (:func:`polynomial`)::

    d = x - mean(x);  d * rsqrt(mean(d * d) + eps) * scale + bias          layer norm (two-pass)
    (x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps) * scale + bias       layer norm (torch style)
    (x - m) * (rsqrt(max(mean(x*x) - m*m, 0) + eps) * scale) + bias        layer norm (flax fast variance)
    x * rsqrt(mean(x * x) + eps) * scale                                   RMS norm

``scale`` and ``bias`` are optional and may be re-broadcast to the input's rank.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from accelir.ir import Builder, Node, Value

from .pattern import P, Match, Op, Rule, Var
from .recognizers import (Term, as_param, keepdims_shape, outside_users, param_shape_ok, peel_unit_dims, polynomial,
                           reaches, reduction, scalar)

__all__ = ["NormForm", "read_norm", "norm_rules"]


@dataclass
class NormForm:
    kind: str  # "layer" or "rms"
    x: Value
    axes: tuple[int, ...]
    epsilon: float
    scale: Value | None
    bias: Value | None
    region: list[Node]
    factor: float = 1.0  # multiplies the scale (a uniform scale folded into a number)


class _Reject(Exception):
    """A near match: the message says which check failed."""


# (leaf op, power of the leaf in the product) -> the exponent it applies to (var + eps)
_NORMALISERS = {("rsqrt", 1), ("sqrt", -1)}
_POW_NORMALISERS = {(-0.5, 1), (0.5, -1)}
_NORMALISER_OPS = frozenset({"rsqrt", "sqrt", "pow"})


def _normaliser_arg(leaf: Value, power: int) -> Value | None:
    node = leaf.producer
    if node is None:
        return None
    if (node.op, power) in _NORMALISERS:
        return node.inputs[0]
    if node.op == "pow" and (scalar(node.inputs[1]), power) in _POW_NORMALISERS:
        return node.inputs[0]
    return None


class _Reader:
    """Collects the matched nodes and the one (x, axes) every statistic must agree on."""

    def __init__(self) -> None:
        self.region: list[Node] = []
        self.x: Value | None = None
        self.axes: tuple[int, ...] | None = None

    def same_input(self, x: Value, axes: tuple[int, ...], what: str) -> None:
        if self.x is None:
            self.x, self.axes = x, axes
            return
        if x is not self.x:
            raise _Reject(f"{what} reads a different tensor than the other statistics")
        if axes != self.axes:
            raise _Reject(f"{what} is over axes {list(axes)}, the other statistics over {list(self.axes)}")

    def mean_of(self, t: Term) -> tuple[Value, tuple[int, ...]] | None:
        """``t = coef * mean(q)``: (q, axes), recording the reduction."""
        only = t.only()
        if only is None or only[1] != 1:
            return None
        red = reduction(only[0], ("mean",), coef=t.coef)
        if red is None:
            return None
        self.region.extend(red.nodes)
        return red.x, red.axes

    def mean_of_x(self, v: Value, what: str, keepdims: bool) -> None:
        red = reduction(v, ("mean",))
        if red is None:
            raise _Reject(f"{what} is not a mean")
        self.same_input(red.x, red.axes, what)
        if keepdims and v.shape != keepdims_shape(red.x, red.axes):
            raise _Reject(f"{what} has shape {list(v.shape)}, not the keepdims shape")
        self.region.extend(red.nodes)

    def centered(self, d: Value) -> None:
        """``d = x - mean(x)``, keepdims."""
        p = polynomial(d)
        if p is None or len(p.terms) != 2:
            raise _Reject("the centred input is not x - mean(x)")
        pos = next((t for t in p.terms if t.coef == 1.0 and t.only() and t.only()[1] == 1), None)
        neg = next((t for t in p.terms if t.coef == -1.0 and t.only() and t.only()[1] == 1), None)
        if pos is None or neg is None:
            raise _Reject("the centred input is not x - mean(x)")
        self.region.extend(p.nodes)
        self.mean_of_x(neg.only()[0], "the subtracted mean", keepdims=True)
        if pos.only()[0] is not self.x:
            raise _Reject("the mean is subtracted from a different tensor")

    def variance(self, v: Value, depth: int = 3) -> str:
        """Read the variance (or mean square) behind re-broadcasts and ``max(., 0)``; returns the kind."""
        if depth == 0:
            raise _Reject("the variance is not a mean")
        nodes: list[Node] = []
        v = peel_unit_dims(v, nodes)
        self.region.extend(nodes)
        node = v.producer
        if node is not None and node.op == "max":
            a, b = node.inputs
            for inner, zero in ((a, b), (b, a)):
                if scalar(zero) == 0.0:
                    self.region.append(node)
                    return self.variance(inner, depth - 1)
        p = polynomial(v)
        if p is None:
            raise _Reject("the variance is not a polynomial of means")
        self.region.extend(p.nodes)
        return self.variance_terms(p.terms, depth - 1)

    def variance_terms(self, terms: list[Term], depth: int = 3) -> str:
        if len(terms) == 1:
            t = terms[0]
            got = self.mean_of(t)
            if got is not None:
                return self.squared(*got)
            only = t.only()
            if only is not None and only[1] == 1 and t.coef == 1.0 and only[0].producer is not None:
                return self.variance(only[0], depth)
            raise _Reject("the variance is not a mean")
        if len(terms) != 2:
            raise _Reject("the variance has too many terms")
        # the fast variance: mean(x * x) - mean(x)^2
        sq = next((t for t in terms if t.coef > 0), None)
        mm = next((t for t in terms if t.coef < 0), None)
        got = self.mean_of(sq) if sq is not None and mm is not None and mm.coef == -1.0 else None
        if got is None or self.squared(*got) != "rms":
            raise _Reject("the variance is not mean(x^2) - mean(x)^2")
        leaves = [v for v, k in mm.leaves.items() for _ in range(k)]
        if len(leaves) != 2:
            raise _Reject("the variance is not mean(x^2) - mean(x)^2")
        for leaf in leaves:
            self.mean_of_x(leaf, "the squared mean", keepdims=False)
        return "layer"

    def squared(self, q: Value, axes: tuple[int, ...]) -> str:
        """``q`` is ``x * x`` (a mean square: "rms") or ``d * d``, ``d = x - mean(x)`` ("layer")."""
        p = polynomial(q)
        if p is None or len(p.terms) != 1 or p.terms[0].coef != 1.0:
            raise _Reject("the mean is not of a square")
        leaves = [v for v, k in p.terms[0].leaves.items() for _ in range(k)]
        if len(leaves) != 2:
            raise _Reject("the mean is not of a square")
        self.region.extend(p.nodes)
        source = [_centered_source(d) for d in leaves]
        if leaves[0] is leaves[1] and source[0] is None:
            self.same_input(leaves[0], axes, "the mean square")
            return "rms"
        if source[0] is None or source[1] is not source[0]:
            raise _Reject("the variance is not the mean of (x - mean(x))^2")
        self.same_input(source[0], axes, "the variance")
        for d in dict.fromkeys(leaves):
            self.centered(d)
            self.region.append(d.producer)
        return "layer"


def _centered_source(d: Value) -> Value | None:
    """The x of ``d = x - mean(x)`` (checked loosely: the full check is ``_Reader.centered``)."""
    p = polynomial(d)
    if p is None or len(p.terms) != 2:
        return None
    pos = next((t for t in p.terms if t.coef == 1.0 and t.only() and t.only()[1] == 1), None)
    neg = next((t for t in p.terms if t.coef == -1.0 and t.only() and t.only()[1] == 1), None)
    if pos is None or neg is None:
        return None
    red = reduction(neg.only()[0], ("mean",))
    return pos.only()[0] if red is not None and red.x is pos.only()[0] else None


def _is_centered(v: Value) -> bool:
    return _centered_source(v) is not None


def read_norm(y: Value) -> NormForm | str | None:
    """Read ``y`` as a normalisation; None when it is not one, a str when it nearly is (why not)."""
    if not y.dtype.is_float or not reaches(y, _NORMALISER_OPS, 5):
        return None
    poly = polynomial(y)
    if poly is None:
        return None
    found = None
    for t in poly.terms:
        for leaf, power in t.leaves.items():
            arg = _normaliser_arg(leaf, power)
            if arg is not None:
                found = (leaf, arg)
                break
        if found:
            break
    if found is None:
        return None
    norm_leaf, arg = found
    r = _Reader()
    r.region.extend(poly.nodes)
    r.region.append(norm_leaf.producer)
    try:
        return _read(r, y, poly.terms, norm_leaf, arg)
    except _Reject as e:
        return str(e)


def _read(r: _Reader, y: Value, terms: list[Term], norm_leaf: Value, arg: Value) -> NormForm:
    # normaliser: (var + eps) ** -0.5
    p = polynomial(arg)
    if p is None:
        raise _Reject("the normaliser argument is not var + eps")
    eps = p.constant()
    var_terms = p.variable_terms()
    if not var_terms or eps < 0:
        raise _Reject("epsilon is not a non-negative scalar constant")
    for t in var_terms:
        only = t.only()
        if only is not None and all(d == 1 for d in only[0].shape) and reduction(only[0], ("mean",)) is None:
            raise _Reject("epsilon is not a scalar constant")
    r.region.extend(p.nodes)
    kind = r.variance_terms(var_terms)
    x, axes = r.x, r.axes
    if axes != tuple(range(axes[0], x.rank)):
        raise _Reject(f"normalises over axes {list(axes)}, not trailing axes")
    if norm_leaf.shape != keepdims_shape(x, axes) and arg.shape != keepdims_shape(x, axes):
        raise _Reject(f"the normaliser has shape {list(norm_leaf.shape)}, not the keepdims shape")
    # y = sum of terms: those with the normaliser are (x - mean) * n * scale, the rest the bias
    with_n = [t for t in terms if norm_leaf in t.leaves]
    rest = [t for t in terms if norm_leaf not in t.leaves]
    scale = None
    numer: list[tuple[Value, float]] = []
    for t in with_n:
        others = {v: k for v, k in t.leaves.items() if v is not norm_leaf}
        data = [v for v in others if v is x or _is_centered(v) or reduction(v, ("mean",)) is not None]
        if len(data) != 1 or others[data[0]] != 1:
            raise _Reject("the normalised product is not (x - mean) * normaliser * scale")
        params = [v for v in others if v is not data[0]]
        if len(params) > 1 or any(others[v] != 1 for v in params):
            raise _Reject("more than one scale factor")
        s = params[0] if params else None
        if with_n.index(t) == 0:
            scale = s
        elif s is not scale:
            raise _Reject("the scale differs between terms")
        numer.append((data[0], t.coef))
    # a uniform scale (all elements equal) reads as a constant factor c of the product
    c = abs(numer[0][1])
    numer = [(v, k / c) for v, k in numer]
    if numer[0][1] != 1.0 and len(numer) == 1:
        raise _Reject("the normalised product is negated")
    if kind == "rms":
        if len(numer) != 1 or numer[0][0] is not x:
            raise _Reject("the RMS norm does not multiply x itself")
    elif len(numer) == 1:
        d = numer[0][0]
        r.centered(d)
        r.region.append(d.producer)
    elif len(numer) == 2 and {c for _, c in numer} == {1.0, -1.0}:
        pos = next(v for v, c in numer if c == 1.0)
        neg = next(v for v, c in numer if c == -1.0)
        if pos is not x:
            raise _Reject("the mean is subtracted from a different tensor")
        r.mean_of_x(neg, "the subtracted mean", keepdims=True)
    else:
        raise _Reject("the normalised product is not (x - mean) * normaliser")
    bias = None
    if rest:
        if len(rest) != 1 or rest[0].coef != 1.0 or rest[0].only() is None or rest[0].only()[1] != 1:
            raise _Reject("the bias is not a single tensor")
        bias = rest[0].only()[0]
    for what, prm in (("scale", scale), ("bias", bias)):
        if prm is not None and not param_shape_ok(prm, x, axes):
            raise _Reject(f"the {what} {prm.type} varies along axes that are not normalised")
    if y.type != x.type:
        raise _Reject(f"the result type {y.type} differs from x {x.type} (broadcast)")
    return NormForm(kind, x, axes, eps, scale, bias, r.region, c)


# ----- rules shared by fuse_layer_norm and fuse_rms_norm ----------------------------

_OP_OF_KIND = {"layer": "layer_norm", "rms": "rms_norm"}
_MAX_PARAMS = {"layer_norm": 2, "rms_norm": 1}


def _params(b: Builder, op: str, x: Value, axis: int, scale: Value | None, bias: Value | None,
            factor: float = 1.0) -> list[Value]:
    """The composite's parameter inputs: a bias without a scale gets a scale of ones (times ``factor``)."""
    rank = x.rank - axis
    if scale is None and (bias is not None or factor != 1.0):
        norm_shape = x.shape[axis:]
        if not all(type(d) is int for d in norm_shape):
            raise _Reject("a constant scale needs a static normalised shape")
        scale = b.const(np.full(norm_shape, factor, x.dtype.numpy), name="scale")
    elif factor != 1.0:
        scale = b.op("mul", scale, b.scalar(factor, x))
    return [as_param(b, p, rank) for p in (scale, bias) if p is not None]


def _fuse(kind: str) -> Callable[[Match, Builder], Value | None]:
    op = _OP_OF_KIND[kind]

    def fn(m: Match, b: Builder) -> Value | None:
        form = read_norm(m.root.output)
        if form is None:
            return None
        if isinstance(form, str):
            return m.reject(f"{op}: {form}")
        if form.kind != kind:
            return None
        leak = outside_users(form.region, m.root)
        if leak is not None:
            return m.reject(f"{op}: intermediate {leak.op} is also used outside the pattern")
        axis = form.axes[0]
        try:
            params = _params(b, op, form.x, axis, form.scale, form.bias, form.factor)
        except _Reject as e:
            return m.reject(f"{op}: {e}")
        return b.op(op, form.x, *params, axis=axis - form.x.rank, epsilon=form.epsilon)
    return fn


def _absorb(op: str, slot: int) -> Callable[[Match, Builder], Value | None]:
    """``mul(norm(x), scale)`` (slot 1) or ``add(norm(x, scale), bias)`` (slot 2) -> one norm."""
    def fn(m: Match, b: Builder) -> Value | None:
        norm = m.node("norm")
        x = norm.inputs[0]
        p = m["param"]
        axis = norm.attrs["axis"] % x.rank
        if len(norm.inputs) > slot:
            return None
        if not param_shape_ok(p, x, tuple(range(axis, x.rank))) or m.root.output.type != x.type:
            return m.reject(f"{op}: the {'scale' if slot == 1 else 'bias'} {p.type} does not fit the normalised axes")
        scale = norm.inputs[1] if len(norm.inputs) > 1 else None
        try:
            params = _params(b, op, x, axis, p if slot == 1 else scale, p if slot == 2 else None)
        except _Reject as e:
            return m.reject(f"{op}: {e}")
        return b.op(op, x, *params, axis=norm.attrs["axis"], epsilon=norm.attrs["epsilon"])
    return fn


def norm_rules(kind: str) -> tuple[Rule, ...]:
    """The rules fusing one normalisation: the decomposed form, then scale and bias into it."""
    op = _OP_OF_KIND[kind]
    norm = Op(op, any_operands=True, name="norm", single_use=True)
    rules = [Rule(op, Op(("add", "sub", "mul", "div"), any_operands=True), _fuse(kind), near_miss_depth=1),
             Rule(f"{op}_scale", P.mul(norm, Var("param")), _absorb(op, 1))]
    if _MAX_PARAMS[op] == 2:
        rules.append(Rule(f"{op}_bias", P.add(norm, Var("param")), _absorb(op, 2)))
    return tuple(rules)
