"""Dims computed from data-dependent dims on padded buffers: their range, buffer size and valid length.

A slice to ``max // 64 + 1`` rows, a part starting where another ends (``u0:u0+u1``), a join of
parts (``u0+u1``), a merge of a padded axis with static ones (``64*u0``): each gives an axis whose
size is an expression of unbacked dims.  On XLA such a *derived* dim is held as its unbacked
dims are (lowering/jax/padding.py): a buffer of its upper bound with the valid entries packed to
the front and a valid length beside it.  The upper bound comes from the unbacked dims' ranges by
interval arithmetic, so it is a function of the expression alone: two values with the same dim
have buffers of the same size, as elementwise ops need.  The valid length is the expression
evaluated on the valid lengths.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from accelir import dims as D
from accelir.errors import LoweringError

__all__ = ["dim_range", "buffer_size", "run_time_value", "mentions"]

Range = tuple[int, int]


def _corners(a: Range, b: Range, f: Callable[[int, int], int]) -> Range:
    vals = [f(x, y) for x in a for y in b]
    return min(vals), max(vals)


def _combine(op: str, a: Range | None, b: Range | None) -> Range | None:
    """Interval arithmetic of one dim operator; None where the result has no bound (a divisor that
    may be 0, an operand with none)."""
    if a is None or b is None:
        return None
    if op == "+":
        return a[0] + b[0], a[1] + b[1]
    if op == "-":
        return a[0] - b[1], a[1] - b[0]
    if op == "*":
        return _corners(a, b, lambda x, y: x * y)
    if b[0] <= 0 <= b[1]:
        return None
    if op == "//":  # floor division by a divisor of one sign is monotone in each operand (-(u0 // -2): a ceil)
        return _corners(a, b, lambda x, y: x // y)
    if op == "%":  # Python's remainder takes the divisor's sign
        if b[1] < 0:
            return b[0] + 1, 0
        return (a[0], a[1]) if a[0] >= 0 and a[1] < b[0] else (0, b[1] - 1)
    return None


def dim_range(d: D.Dim, ranges: Callable[[str], Range | None]) -> Range | None:
    """The (low, high) range of dim ``d`` given each symbol's (``ranges(name)``; None: unbounded)."""
    return D.evaluate_with(d, ranges, const=lambda c: (c, c), binop=_combine,
                           neg=lambda r: None if r is None else (-r[1], -r[0]))


def mentions(d: D.Dim, padded: Mapping[str, Any]) -> bool:
    """Whether dim ``d`` is computed from a data-dependent dim (a symbol ``padded`` holds)."""
    return type(d) is not int and bool(D.symbols(d) & set(padded))


def buffer_size(d: D.Dim, lengths: Mapping[str, Any], bindings: Mapping[str, Any]) -> int:
    """The size of the buffer holding a dim on XLA: its upper bound where it is computed from
    data-dependent dims (each unbacked symbol between 0 and its padded size, ``bindings``), else
    its value.  A whole unbacked symbol gets its padded size, as before derived dims existed."""
    if type(d) is int:
        return d
    if not mentions(d, lengths):
        return int(D.evaluate(d, bindings))

    def symbol(name: str) -> Range:
        n = int(bindings[name])
        return (0, n) if name in lengths else (n, n)

    found = dim_range(d, symbol)
    if found is None:  # only a divisor that may be 0, which no frontend gives
        raise LoweringError(f"dim {d} has no upper bound to pad its buffer to; compile with backend=\"onnxruntime\"")
    return max(found[1], 0)


def run_time_value(d: D.Dim, lengths: Mapping[str, Any], bindings: Mapping[str, Any]) -> Any:
    """Dim ``d`` at run time: its data-dependent symbols at their valid lengths (traced), the others at
    their bindings."""
    if type(d) is int:
        return d
    if d in lengths:
        return lengths[d]
    return D.evaluate_with(d, lambda s: lengths[s] if s in lengths else bindings[s])
