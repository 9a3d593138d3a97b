"""Fuse the decomposed softmax and log-softmax into their composites.

Rewrites, over one axis, with the reductions kept or re-broadcast (keepdims,
``reshape``, ``broadcast_to``), ``div`` or ``mul`` by a reciprocal::

    e = exp(x - reduce_max(x));  e / reduce_sum(e)                      -> softmax(x)
    e = exp(x);                   e / reduce_sum(e)                      -> softmax(x)
    z = x - reduce_max(x);        z - log(reduce_sum(exp(z)))            -> log_softmax(x)

jax spells the max ``max(reduce_max(x), -inf)`` behind a ``stop_gradient``; both are
accepted.  The plain form subtracts no max: the composite does, which only avoids
overflow.  Reductions over several axes are left alone (the composites take one).
"""

from __future__ import annotations

from accelir.ir import Builder, Node, Value

from .pattern import Match, Op, Rule, RulePass
from .recognizers import keepdims_shape, outside_users, polynomial, reaches, reduction
from .registry import register_pass

__all__ = ["fuse_softmax", "SOFTMAX_RULES"]

_EXP = frozenset({"exp"})
_LOG = frozenset({"log"})


def _unshift(arg: Value, axis: int, region: list[Node]) -> Value:
    """The x of ``arg = x - max(x, axis)`` (keepdims), else ``arg`` itself.

    Softmax is shift-invariant along its axis, so dropping that shift is exact; any
    other ``arg`` is simply the softmax input.
    """
    z = polynomial(arg)
    if z is None or len(z.terms) != 2 or any(t.only() is None or t.only()[1] != 1 for t in z.terms):
        return arg
    pos = next((t for t in z.terms if t.coef == 1.0), None)
    neg = next((t for t in z.terms if t.coef == -1.0), None)
    if pos is None or neg is None:
        return arg
    x, m = pos.only()[0], neg.only()[0]
    red = reduction(m, ("max",))
    if red is None or red.x is not x or red.axes != (axis,) or m.shape != keepdims_shape(x, red.axes):
        return arg
    region.extend(z.nodes + red.nodes)
    return x


def _sum_of_exp(s: Value, region: list[Node]) -> tuple[Value, int] | str | None:
    """``reduce_sum(e, axis)`` (re-broadcast) with ``e = exp(..)``: (e, axis)."""
    red = reduction(s, ("sum",))
    if red is None:
        return None
    e = red.x
    if e.producer is None or e.producer.op != "exp":
        return None
    if len(red.axes) != 1:
        return f"the sum is over axes {list(red.axes)}, not one axis"
    if s.shape != keepdims_shape(e, red.axes):
        return f"the sum has shape {list(s.shape)}, not the keepdims shape of exp(..)"
    region.extend(red.nodes + [e.producer])
    return e, red.axes[0]


def _finish(m: Match, b: Builder, op: str, x: Value, axis: int, region: list[Node]) -> Value | None:
    y = m.root.output
    if x.type != y.type:
        return m.reject(f"{op}: result type {y.type} differs from x {x.type} (broadcast)")
    leak = outside_users(region, m.root)
    if leak is not None:
        return m.reject(f"{op}: intermediate {leak.op} is also used outside the pattern")
    return b.op(op, x, axis=axis - x.rank)


def _softmax(m: Match, b: Builder) -> Value | None:
    if not reaches(m.root.output, _EXP, 3):
        return None
    poly = polynomial(m.root.output)
    if poly is None or len(poly.terms) != 1 or poly.terms[0].coef != 1.0 or len(poly.terms[0].leaves) != 2:
        return None
    t = poly.terms[0]
    e = next((v for v, p in t.leaves.items() if p == 1), None)
    s = next((v for v, p in t.leaves.items() if p == -1), None)
    if e is None or s is None or e.producer is None or e.producer.op != "exp":
        return None
    region = list(poly.nodes)
    summed = _sum_of_exp(s, region)
    if summed is None:
        return None
    if isinstance(summed, str):
        return m.reject(f"softmax: {summed}")
    if summed[0] is not e:
        return m.reject("softmax: the denominator sums a different exp than the numerator")
    x = _unshift(e.producer.inputs[0], summed[1], region)
    return _finish(m, b, "softmax", x, summed[1], region)


def _log_softmax(m: Match, b: Builder) -> Value | None:
    if not reaches(m.root.output, _LOG, 3):
        return None
    poly = polynomial(m.root.output)
    if poly is None or len(poly.terms) < 2:
        return None
    logs = [t for t in poly.terms if t.only() is not None and t.only()[0].producer is not None
            and t.only()[0].producer.op == "log" and t.only()[1] == 1 and t.coef == -1.0]
    if len(logs) != 1:
        return None
    log_node = logs[0].only()[0].producer
    region = list(poly.nodes) + [log_node]
    summed = _sum_of_exp(log_node.inputs[0], region)
    if summed is None:
        return None
    if isinstance(summed, str):
        return m.reject(f"log_softmax: {summed}")
    e, axis = summed
    arg = e.producer.inputs[0]
    rest = [t for t in poly.terms if t is not logs[0]]
    shared = len(rest) == 1 and rest[0].only() == (arg, 1) and rest[0].coef == 1.0
    if not shared:
        z = polynomial(arg)
        if z is None or {t.key(): t.coef for t in z.terms} != {t.key(): t.coef for t in rest}:
            return m.reject("log_softmax: the exp argument and the shifted input differ")
    x = _unshift(arg, axis, region)
    return _finish(m, b, "log_softmax", x, axis, region)


SOFTMAX_RULES = (
    Rule("softmax", Op(("div", "mul"), any_operands=True), _softmax, near_miss_depth=1),
    Rule("log_softmax", Op("sub", any_operands=True), _log_softmax, near_miss_depth=1),
)

fuse_softmax = register_pass("fuse_softmax")(
    RulePass("fuse_softmax", SOFTMAX_RULES))
