"""What the rule contexts and rule tables of the three frontends share.

Every frontend maps one source op (an ONNX node, an aten call, a jaxpr equation) with
one rule; a rule gets a context and builds IR through it.  The contexts differ in how
they read the source op, so each frontend subclasses :class:`RuleContext`; building
is the same everywhere:

* ``op`` / ``ops``: one IR node (its single output / all its outputs);
* ``const(value, dtype=None)``: a constant tensor holding ``value`` (any shape), of
  ``dtype`` when given, else of numpy's dtype for ``value``;
* ``scalar(value, like)``: a 0-d constant of ``like``'s dtype (a DType or a Value's);
* ``cast(v, dtype)``: ``v`` as ``dtype``, with no node when it already is;
* ``dim_value(d)``: a (symbolic) size as a 0-d i64 tensor.

Rules register into a :class:`RuleTable` by source op name, with ``@table.rule(name,
...)`` on a function or ``table.add(fn, name, ...)`` for rules built from a table row.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from .. import dims as D
from ..ir import Builder, DType, Value

__all__ = ["RuleContext", "RuleTable"]

F = TypeVar("F", bound=Callable[..., Any])


class RuleContext:
    """The building half of a rule context; subclasses set ``b``, the builder placed at the
    source op (carrying its provenance)."""

    __slots__ = ()
    b: Builder

    def op(self, name: str, *inputs: Value, **attrs: Any) -> Value:
        return self.b.op(name, *inputs, **attrs)

    def ops(self, name: str, *inputs: Value, **attrs: Any) -> tuple[Value, ...]:
        return self.b.ops(name, *inputs, **attrs)

    def const(self, value: Any, dtype: DType | None = None) -> Value:
        return self.b.const(value, dtype, name="c")

    def scalar(self, value: Any, like: Value | DType) -> Value:
        return self.const(value, like if isinstance(like, DType) else like.dtype)

    def cast(self, v: Value, dtype: DType) -> Value:
        return v if v.dtype is dtype else self.op("cast", v, dtype=dtype)

    def dim_value(self, d: D.Dim) -> Value:
        """A symbolic size as a 0-d i64 tensor: the sum of ``d`` ones (the IR has no shape-of op)."""
        ones = self.b.op("broadcast_to", self.const(1, DType.i64), shape=(d,))
        return self.b.op("reduce_sum", ones, axes=(0,))


class RuleTable(dict):
    """Source op name -> rule, filled by the rule modules when they are imported."""

    def rule(self, *names: str) -> Callable[[F], F]:
        """Decorator: register the function as the rule for each of ``names``."""
        def deco(fn: F) -> F:
            return self.add(fn, *names)
        return deco

    def add(self, fn: F, *names: str) -> F:
        """Register ``fn`` (a rule built by a factory or shared by a table) for each of ``names``."""
        for n in names:
            self[n] = fn
        return fn
