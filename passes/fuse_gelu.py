"""Fuse the decomposed GELU into the ``gelu`` composite.

Rewrites (in any association order, also distributed, ``0.5 x + 0.5 x erf(..)``)::

    0.5 * x * (1 + erf(x / sqrt(2)))                         -> gelu(x)
    0.5 * x * (1 - erf(-x / sqrt(2)))     (jax: erfc)         -> gelu(x)
    0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))  -> gelu(x) {approximate="tanh"}

The cube may be ``pow(x, 3)`` or a chain of ``mul``.  Every constant (0.5, 1,
1/sqrt(2), sqrt(2/pi), 0.044715) is checked to a few ulps of its dtype; a form that
differs in one of them is left alone and, in verbose mode, says which.
"""

from __future__ import annotations

import math

from accelir.ir import Builder, Value

from .pattern import Match, Op, Rule, RulePass
from .recognizers import close, outside_users, polynomial, reaches
from .registry import register_pass

__all__ = ["fuse_gelu", "GELU_RULES"]

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)

# the op inside the bracket -> (its argument as {power of x: coefficient}, the gelu approximation)
_FORMS = {
    "erf": ({1: 1.0 / math.sqrt(2.0)}, "none"),
    "tanh": ({1: _SQRT_2_OVER_PI, 3: _SQRT_2_OVER_PI * 0.044715}, "tanh"),
}

_ATOMS = frozenset(_FORMS)


def _gelu(m: Match, b: Builder) -> Value | None:
    y = m.root.output
    if not reaches(y, _ATOMS, 4):
        return None
    poly = polynomial(y)
    if poly is None or len(poly.terms) != 2 or poly.constant() != 0.0:
        return None
    linear = next((t for t in poly.terms if len(t.leaves) == 1), None)
    product = next((t for t in poly.terms if len(t.leaves) == 2), None)
    if linear is None or product is None or linear.only()[1] != 1:
        return None
    x = linear.only()[0]
    atom = next((v for v in product.leaves if v is not x), None)
    if atom is None or product.power_of(x) != 1 or product.power_of(atom) != 1:
        return None
    node = atom.producer
    if node is None or node.op not in _FORMS:
        return None
    want, approximate = _FORMS[node.op]
    label = f"gelu ({node.op} form)"
    dt = y.dtype
    if not close(linear.coef, 0.5, dt):
        return m.reject(f"{label}: outer factor is {linear.coef}, not 0.5")
    sign = product.coef / linear.coef
    if not close(abs(sign), 1.0, dt):
        return m.reject(f"{label}: the bracket is not 1 +/- {node.op}(..) (ratio {sign})")
    sign = 1.0 if sign > 0 else -1.0
    inner = polynomial(node.inputs[0])
    if inner is None:
        return m.reject(f"{label}: the {node.op} argument is not a polynomial in x")
    got: dict[int, float] = {}
    for t in inner.terms:
        only = t.only()
        if only is None or only[0] is not x:
            return m.reject(f"{label}: the {node.op} argument depends on something other than x")
        got[only[1]] = sign * t.coef
    if set(got) != set(want):
        return m.reject(f"{label}: the {node.op} argument has powers {sorted(got)} of x, expected {sorted(want)}")
    for p, c in want.items():
        if not close(got[p], c, dt):
            return m.reject(f"{label}: coefficient of x^{p} is {got[p]!r}, expected {c!r}")
    if x.type != y.type:
        return m.reject(f"{label}: result type {y.type} differs from x {x.type} (broadcast)")
    region = poly.nodes + [node] + inner.nodes
    leak = outside_users(region, m.root)
    if leak is not None:
        return m.reject(f"{label}: intermediate {leak.op} is also used outside the pattern")
    return b.op("gelu", x, approximate=approximate)


GELU_RULES = (Rule("gelu", Op(("mul", "add", "sub"), any_operands=True), _gelu, near_miss_depth=1),)

fuse_gelu = register_pass("fuse_gelu")(
    RulePass("fuse_gelu", GELU_RULES))
