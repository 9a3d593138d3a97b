"""The one evaluator of symbolic dims, ``accelir.dims.evaluate_with``, in the algebras the project uses.

Python's own arithmetic on the expression text is the oracle for integer bindings.
"""

from __future__ import annotations

import ast

import numpy as np
import pytest

from accelir import dims as D

EXPRS = ["batch", "2*seq+1", "(seq+1)//2", "batch*seq-seq%3", "-seq+4*batch", "(batch*seq)//(2)"]


def _python(expr: str, bindings: dict[str, int]) -> int:
    """The oracle: the expression compiled by Python itself, with only the bindings in scope."""
    return eval(compile(ast.parse(expr, mode="eval"), "<dim>", "eval"), {"__builtins__": {}}, dict(bindings))


@pytest.mark.parametrize("expr", EXPRS)
def test_integer_evaluation_matches_python(expr):
    rng = np.random.default_rng(0)
    for _ in range(5):
        b = {"batch": int(rng.integers(1, 9)), "seq": int(rng.integers(1, 50))}
        assert D.evaluate_with(expr, b.__getitem__) == _python(expr, b)
        assert D.evaluate(D.canonical(expr), b) == _python(expr, b)


def test_any_algebra_evaluates_through_the_callbacks():
    # an algebra of strings in prefix form: shows each operator and leaf reaches the callbacks
    got = D.evaluate_with("-(2*seq)+batch//3", lambda s: s.upper(), const=str,
                          binop=lambda op, a, b: f"({op} {a} {b})", neg=lambda a: f"(neg {a})")
    assert got == "(+ (neg (* 2 SEQ)) (// BATCH 3))"
    assert D.evaluate_with(7, lambda s: s, const=lambda c: [c]) == [7]


def test_an_unbound_symbol_and_code_are_refused():
    with pytest.raises(KeyError, match="seq"):
        D.evaluate("2*seq", {})
    with pytest.raises(ValueError, match="not a dimension expression"):
        D.evaluate_with("__import__('os')", lambda s: 0)


def test_a_product_with_a_floor_division_prints_unambiguously():
    # a lowering evaluates the text: "2*(s-1)//2" would read as (2*(s-1))//2
    a = D.dim_add(D.dim_floordiv(D.dim_sub("s", 1), 2), 1)
    p = D.dim_prod([a, a])
    for s in range(1, 40):
        assert eval(p, {"s": s}) == ((s - 1) // 2 + 1) ** 2 == D.evaluate(p, {"s": s})


def test_a_negated_floor_division_leading_the_text_prints_unambiguously():
    # "-(s-1)//2+s" would read as (-(s-1))//2 + s: the ceiling s - (s-1)//2 one too small at even s
    cases = [(D.dim_sub("s", D.dim_floordiv(D.dim_sub("s", 1), 2)), lambda s: s - (s - 1) // 2),
             (D.dim_sub(2, D.dim_floordiv("s", 2)), lambda s: 2 - s // 2),
             (D.dim_sub(1, D.dim_mod("s", 3)), lambda s: 1 - s % 3)]
    for d, want in cases:
        assert D.canonical(d) == d
        for s in range(1, 40):
            assert eval(d, {"s": s}) == want(s) == D.evaluate(d, {"s": s})
