"""Fuse the decomposed SiLU (swish) into the ``silu`` composite.

Rewrites::

    x * sigmoid(x)          -> silu(x)     (either operand order; jax: logistic)
    x / (1 + exp(-x))       -> silu(x)

The same ``x`` must feed both sides; ``x * sigmoid(y)`` is not SiLU.
"""

from __future__ import annotations

from accelir.ir import Builder, Value

from .pattern import Match, Op, Rule, RulePass
from .recognizers import close, outside_users, polynomial, reaches
from .registry import register_pass

__all__ = ["fuse_silu", "SILU_RULES"]


def _sigmoid_of(atom: Value, power: int, region: list) -> Value | None:
    """The x of ``sigmoid(x)`` (power 1) or of ``1 + exp(-x)`` (power -1), else None."""
    node = atom.producer
    if node is None:
        return None
    if power == 1 and node.op == "sigmoid":
        region.append(node)
        return node.inputs[0]
    if power != -1 or node.op != "add":
        return None
    denom = polynomial(atom)
    if denom is None or len(denom.terms) != 2 or not close(denom.constant(), 1.0, atom.dtype):
        return None
    (t,) = denom.variable_terms()
    only = t.only()
    if only is None or only[1] != 1 or t.coef != 1.0 or only[0].producer is None or only[0].producer.op != "exp":
        return None
    exp = only[0].producer
    arg = polynomial(exp.inputs[0])
    if arg is None or len(arg.terms) != 1 or arg.terms[0].only() is None:
        return None
    x, p = arg.terms[0].only()
    if p != 1 or not close(arg.terms[0].coef, -1.0, atom.dtype):
        return None
    region.extend(denom.nodes + [exp] + arg.nodes)
    return x


_ATOMS = frozenset({"sigmoid", "exp"})


def _silu(m: Match, b: Builder) -> Value | None:
    y = m.root.output
    if not reaches(y, _ATOMS, 4):
        return None
    poly = polynomial(y)
    if poly is None or len(poly.terms) != 1:
        return None
    t = poly.terms[0]
    if len(t.leaves) != 2 or t.coef != 1.0:
        return None
    (a, pa), (c, pc) = t.leaves.items()
    region = list(poly.nodes)
    for x, atom, power in ((a, c, pc), (c, a, pa)):
        if t.leaves[x] != 1:
            continue
        inner = _sigmoid_of(atom, power, region)
        if inner is None:
            continue
        if inner is not x:
            return m.reject("silu: the sigmoid reads a different value than the product")
        if x.type != y.type:
            return m.reject(f"silu: result type {y.type} differs from x {x.type} (broadcast)")
        leak = outside_users(region, m.root)
        if leak is not None:
            return m.reject(f"silu: intermediate {leak.op} is also used outside the pattern")
        return b.op("silu", x)
    return None


SILU_RULES = (Rule("silu", Op(("mul", "div"), any_operands=True), _silu, near_miss_depth=1),)

fuse_silu = register_pass("fuse_silu")(
    RulePass("fuse_silu", SILU_RULES))
