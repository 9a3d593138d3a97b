"""The JAX rule context: what every rule module of the JAX frontend imports.

A rule is ``rule(cx, *inputs, **params) -> Value | list[Value]`` where ``cx`` is an
:class:`EqnContext` (a builder carrying the equation's provenance) and ``params`` are
the equation's params.  A form a rule cannot map raises :class:`Unsupported`; the
frontend reports every such equation at once.  Rules register into ``RULES`` by lax
primitive name; rule modules import this module (and shared ones), never the driver
nor each other.
"""

from __future__ import annotations

import ast
import functools
from typing import Any, Callable, Sequence

import numpy as np

from ... import dims as D
from ...ir import Builder, DType, Graph, TensorType, Value
from ...ops import registry
from ..base import RuleContext, RuleTable

__all__ = ["Unsupported", "jax_dtype", "to_dim", "to_dims", "aval_type", "static_value", "EqnContext", "Rule", "RULES",
           "open_jaxpr", "transpose", "static_pads", "rule"]


class Unsupported(Exception):
    """Raised by a rule for a form of a primitive it cannot map; collected, then reported at once."""


# ----- dtypes, dims and provenance ---------------------------------------------------

@functools.lru_cache(maxsize=None)
def jax_dtype(dt: Any) -> DType:
    try:
        return DType.from_numpy(dt)
    except TypeError:
        raise Unsupported(f"dtype {np.dtype(dt).name} has no accelir DType") from None


_DIM_CALLS = {"floordiv": ast.FloorDiv, "mod": ast.Mod}


def _is_zero(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value == 0


def _dim_ast(node: ast.AST) -> ast.AST:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _DIM_CALLS \
            and len(node.args) == 2:
        return ast.BinOp(_dim_ast(node.args[0]), _DIM_CALLS[node.func.id](), _dim_ast(node.args[1]))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "max" \
            and len(node.args) == 2 and any(_is_zero(a) for a in node.args):
        # jax clamps computed sizes at 0 (e.g. a conv's output); in a run where every dim is
        # valid the other operand is already >= 0
        return _dim_ast(node.args[1] if _is_zero(node.args[0]) else node.args[0])
    if isinstance(node, ast.Call):
        raise Unsupported(f"symbolic dim operation {ast.unparse(node)!r} has no accelir form")
    for name, value in ast.iter_fields(node):
        if isinstance(value, ast.AST):
            setattr(node, name, _dim_ast(value))
    return node


@functools.lru_cache(maxsize=4096)
def _symbolic_dim(text: str) -> int | str:
    tree = _dim_ast(ast.parse(text, mode="eval"))
    return D.canonical(ast.unparse(tree))


def to_dim(d: Any) -> int | str:
    """An accelir dim from a jax dim (an int or a symbolic ``_DimExpr``)."""
    if isinstance(d, (int, np.integer)):
        return int(d)
    return _symbolic_dim(str(d))


def to_dims(shape: Sequence[Any]) -> tuple:
    return tuple(to_dim(d) for d in shape)


def aval_type(aval: Any) -> TensorType:
    return TensorType(jax_dtype(aval.dtype), to_dims(aval.shape))


def static_value(v: Value, limit: int = 64) -> np.ndarray | None:
    """The value of ``v`` when it is computed from constants alone (small results only), else None."""
    arr = v.const_value
    if arr is not None:
        return arr
    node = v.producer
    if node is None or node.regions or not v.type.is_static or v.type.numel > limit:
        return None
    opdef = registry.get(node.op)
    if not opdef.pure or opdef.has_regions:
        return None
    args = []
    for x in node.inputs:
        a = static_value(x, limit)
        if a is None:
            return None
        args.append(a)
    try:
        return np.asarray(opdef.reference(args, dict(node.attrs), ())[v.index])
    except Exception:  # a reference that rejects these operands: the value is just not known here
        return None


class EqnContext(RuleContext):
    """What a rule sees: a builder carrying the equation's provenance, its output types and helpers."""

    __slots__ = ("conv", "eqn", "b", "out_types")

    def __init__(self, conv: Any, eqn: Any, b: Builder, out_types: list[TensorType]):
        self.conv = conv
        self.eqn = eqn
        self.b = b
        self.out_types = out_types

    def const(self, value: Any, dtype: DType | None = None) -> Value:
        # through the converter: equal small constants are one node
        return self.conv.constant(np.asarray(value, dtype=dtype.numpy if dtype else None), self.b)

    def region(self, closed_jaxpr: Any, input_types: Sequence[TensorType], name: str,
               closure: Sequence[Value] = ()) -> Graph:
        return self.conv.region(closed_jaxpr, input_types, name, closure)

    def inline(self, jaxpr: Any, consts: Sequence[Any], args: Sequence[Value]) -> list[Value]:
        return self.conv.inline(jaxpr, consts, args)


Rule = Callable[..., Any]


RULES = RuleTable()
rule = RULES.rule


def open_jaxpr(j: Any) -> tuple[Any, list]:
    """(jaxpr, consts) of a ClosedJaxpr or an open Jaxpr."""
    if hasattr(j, "consts"):
        return j.jaxpr, list(j.consts)
    return j, []


def transpose(cx: EqnContext, x: Value, perm: Sequence[int]) -> Value:
    """``x`` transposed by ``perm``; no node for the identity permutation."""
    perm = tuple(int(p) for p in perm)
    return x if perm == tuple(range(len(perm))) else cx.op("transpose", x, perm=perm)


def static_pads(padding: Sequence[Any]) -> list[tuple[int, int]]:
    """(lo, hi) int pairs of a jax padding, or Unsupported when a pad depends on symbolic dims."""
    pads = [(to_dim(lo), to_dim(hi)) for lo, hi in padding]
    if any(type(v) is not int for pair in pads for v in pair):
        raise Unsupported(f"padding {pads} depends on symbolic dims (use explicit padding or static spatial dims)")
    return pads
