"""Symbolic dimensions.

A dimension is an ``int`` or a ``str`` holding a symbol (``"batch"``) or an integer
polynomial over symbols (``"2*seq"``, ``"batch*seq+1"``).  Strings are kept in one
canonical form, so two dims are equal exactly when their strings are equal.  Floor
division and modulo that do not simplify become opaque atoms (``"(seq+1)//2"``).

Parsing never evaluates code: it walks a whitelisted Python AST, in one place
(``evaluate_with``), which evaluates a dim in any algebra: the polynomial canonical form,
ints (``evaluate``), jax symbolic dims and ONNX nodes computing a dim at run time.
"""

from __future__ import annotations

import ast
import functools
import operator
from typing import Any, Callable, Mapping, TypeVar, Union

__all__ = [
    "Dim",
    "canonical",
    "dim_add",
    "dim_sub",
    "dim_mul",
    "dim_floordiv",
    "dim_mod",
    "dim_prod",
    "evaluate",
    "evaluate_with",
    "symbols",
    "solve",
    "is_static",
]

Dim = Union[int, str]
T = TypeVar("T")

# A polynomial: monomial (sorted tuple of atom names, with repetition) -> coefficient.
_Poly = dict


def _const(c: int) -> _Poly:
    return {(): c} if c else {}


def _atom(name: str) -> _Poly:
    return {(name,): 1}


def _padd(a: _Poly, b: _Poly, sign: int = 1) -> _Poly:
    out = dict(a)
    for m, c in b.items():
        v = out.get(m, 0) + sign * c
        if v:
            out[m] = v
        else:
            out.pop(m, None)
    return out


def _pmul(a: _Poly, b: _Poly) -> _Poly:
    out: _Poly = {}
    for ma, ca in a.items():
        for mb, cb in b.items():
            m = tuple(sorted(ma + mb))
            v = out.get(m, 0) + ca * cb
            if v:
                out[m] = v
            else:
                out.pop(m, None)
    return out


def _format(p: _Poly) -> Dim:
    if not p:
        return 0
    if list(p) == [()]:
        return p[()]
    terms = []
    for m in sorted(p, key=lambda m: (len(m) == 0, m)):
        c = p[m]
        # an opaque atom (``x//2``) among other factors is bracketed: ``2*x//2`` would read as ``(2*x)//2``;
        # so is one negated at the front: ``-x//2`` would read as ``(-x)//2``
        bare = len(m) == 1 and (c == 1 or (c == -1 and bool(terms)))
        body = "*".join(a if bare or _is_atom_name(a) else f"({a})" for a in m)
        if not m:
            text = str(abs(c))
        elif abs(c) == 1:
            text = body
        else:
            text = f"{abs(c)}*{body}"
        if not terms:
            terms.append(text if c > 0 else f"-{text}")
        else:
            terms.append(("+" if c > 0 else "-") + text)
    return "".join(terms)


def _is_atom_name(s: str) -> bool:
    return s.replace("_", "a").replace(".", "a").isalnum() and not s[0].isdigit()


def _opaque(p: _Poly, op: str, q: int) -> _Poly:
    text = _format(p)
    inner = str(text) if isinstance(text, int) or _is_atom_name(text) else f"({text})"
    return _atom(f"{inner}{op}{q}")


def _pfloordiv(p: _Poly, q: _Poly) -> _Poly:
    if list(q) != [()]:
        raise ValueError("symbolic divisor is not supported")
    d = q[()]
    if d == 0:
        raise ValueError("division by zero in a dimension")
    if list(p) in ([], [()]):
        return _const(p.get((), 0) // d)
    if all(c % d == 0 for c in p.values()):
        return {m: c // d for m, c in p.items()}
    return _opaque(p, "//", d)


def _pmod(p: _Poly, q: _Poly) -> _Poly:
    if list(q) != [()]:
        raise ValueError("symbolic divisor is not supported")
    d = q[()]
    if list(p) in ([], [()]):
        return _const(p.get((), 0) % d)
    if all(c % d == 0 for c in p.values()):
        return {}
    return _opaque(p, "%", d)


_POLY_BINOPS = {"+": _padd, "-": lambda a, b: _padd(a, b, -1), "*": _pmul, "//": _pfloordiv, "%": _pmod}


@functools.lru_cache(maxsize=4096)
def _tree(text: str) -> ast.AST:
    """The expression tree of a dim's text (parsed, never evaluated)."""
    if len(text) > 512:
        raise ValueError("dimension expression too long")
    try:
        return ast.parse(text.strip(), mode="eval").body
    except SyntaxError as e:
        raise ValueError(f"not a dimension expression: {text!r}") from e


@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> tuple:
    poly = evaluate_with(text, _atom, const=_const, binop=lambda op, a, b: _POLY_BINOPS[op](a, b),
                         neg=lambda a: _padd({}, a, -1))
    return tuple(sorted(poly.items()))


def _poly(d: Dim) -> _Poly:
    if isinstance(d, bool):
        raise TypeError(f"a dimension must be int or str, got {d!r}")
    if isinstance(d, int):
        return _const(d)
    if isinstance(d, str):
        return dict(_parse(d))
    raise TypeError(f"a dimension must be int or str, got {type(d).__name__}")


def canonical(d: Dim) -> Dim:
    """The canonical form of ``d``: an int if it is constant, else a normalised string."""
    if isinstance(d, int) and not isinstance(d, bool):
        return d
    return _format(_poly(d))


def dim_add(a: Dim, b: Dim) -> Dim:
    if type(a) is int and type(b) is int:
        return a + b
    return _format(_padd(_poly(a), _poly(b)))


def dim_sub(a: Dim, b: Dim) -> Dim:
    if type(a) is int and type(b) is int:
        return a - b
    return _format(_padd(_poly(a), _poly(b), -1))


def dim_mul(a: Dim, b: Dim) -> Dim:
    if type(a) is int and type(b) is int:
        return a * b
    return _format(_pmul(_poly(a), _poly(b)))


def dim_floordiv(a: Dim, b: Dim) -> Dim:
    if type(a) is int and type(b) is int:
        return a // b
    return _format(_pfloordiv(_poly(a), _poly(b)))


def dim_mod(a: Dim, b: Dim) -> Dim:
    if type(a) is int and type(b) is int:
        return a % b
    return _format(_pmod(_poly(a), _poly(b)))


def dim_prod(dims) -> Dim:
    out: Dim = 1
    for d in dims:
        out = dim_mul(out, d)
    return out


def is_static(d: Dim) -> bool:
    return type(d) is int


def symbols(d: Dim) -> set[str]:
    """The symbol names a dim depends on (inside opaque atoms too)."""
    if type(d) is int:
        return set()
    names: set[str] = set()
    for node in ast.walk(_tree(str(d))):
        if isinstance(node, ast.Name):
            names.add(node.id)
    return names


def solve(d: Dim, value: int, bindings: Mapping[str, int]) -> tuple[str, int] | None:
    """If ``d`` is ``k * sym + c`` with ``sym`` the only unbound symbol, the binding that makes it ``value``."""
    if type(d) is int:
        return None
    p = _poly(d)
    const = 0
    unknown: list[tuple[str, int]] = []
    for m, c in p.items():
        if all(a in bindings for a in m):
            term = c
            for a in m:
                term *= int(bindings[a])
            const += term
        else:
            free = [a for a in m if a not in bindings]
            if len(free) != 1 or not _is_atom_name(free[0]):
                return None
            k = c
            for a in m:
                if a in bindings:
                    k *= int(bindings[a])
            unknown.append((free[0], k))
    if len({u[0] for u in unknown}) != 1:
        return None
    sym, k = unknown[0][0], sum(u[1] for u in unknown)
    if k == 0 or (value - const) % k:
        return None
    return sym, (value - const) // k


_PY_BINOPS: dict[str, Callable[[Any, Any], Any]] = {"+": operator.add, "-": operator.sub, "*": operator.mul,
                                                  "//": operator.floordiv, "%": operator.mod}
_AST_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.FloorDiv: "//", ast.Mod: "%"}


def evaluate_with(d: Dim, symbol: Callable[[str], T], *, const: Callable[[int], T] = int,
                  binop: Callable[[str, T, T], T] | None = None, neg: Callable[[T], T] = operator.neg) -> T:
    """The value of dim ``d`` in any algebra: ``symbol(name)`` gives each symbol's value, ``const(c)`` each
    integer's, ``binop(op, a, b)`` combines two values (``op`` one of ``+ - * // %``; by default Python's
    operators) and ``neg`` negates.

    The one walker of dim expressions: ints (``evaluate``), jax's symbolic dims under shape
    polymorphism, ONNX nodes computing a dim at run time all evaluate a dim through it.
    """
    combine = binop or (lambda op, a, b: _PY_BINOPS[op](a, b))
    text = str(d)

    def ev(node: ast.AST) -> T:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return const(node.value)
        if isinstance(node, ast.Name):
            return symbol(node.id)
        if isinstance(node, ast.BinOp) and type(node.op) in _AST_BINOPS:
            return combine(_AST_BINOPS[type(node.op)], ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return neg(ev(node.operand))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd):
            return ev(node.operand)
        raise ValueError(f"not a dimension expression: {text!r}")

    if type(d) is int:
        return const(d)
    return ev(_tree(text))


def evaluate(d: Dim, bindings: Mapping[str, int]) -> int:
    """The value of ``d`` with each symbol replaced by its binding."""
    if type(d) is int:
        return d
    if d in bindings:
        return int(bindings[d])

    def symbol(name: str) -> int:
        if name not in bindings:
            raise KeyError(f"symbolic dim {name!r} has no value")
        return int(bindings[name])

    return evaluate_with(d, symbol)
