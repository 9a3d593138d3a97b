"""What a ``CompiledModel`` call checks before it runs.

A compiled model is called like the model it came from, but the graph behind it was
captured with one set of arguments, so a call is first brought to that form
(:class:`CallForm`: keywords mapped onto the model's own parameters) and every
mistake is an :class:`~accelir.errors.InputError` of one line naming the input and
what was expected, rather than a pytree dump or a numpy ``AttributeError``.

Token ids are checked too (:func:`id_bounds`, :func:`check_ids`): an id outside its
embedding table makes ONNX Runtime fail in its own words and XLA clamp it silently
to a wrong answer, so both backends raise the same error before running instead.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from .errors import InputError
from .arrays import to_numpy
from .ir import Graph, Value

__all__ = ["CallForm", "IdBound", "describe_inputs", "expect_array", "id_bounds", "check_ids"]

_EMPTY = inspect.Parameter.empty
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _expected(v: Value) -> str:
    return f"a tensor of dtype {v.type.dtype.value} and shape [{', '.join(str(d) for d in v.type.shape)}]"


def describe_inputs(graph: Graph) -> str:
    """``"2 input tensors (input_ids: i64[2,8], attention_mask: i64[2,8])"``."""
    n = len(graph.inputs)
    listed = ", ".join(f"{v.name or f'input {i}'}: {v.type}" for i, v in enumerate(graph.inputs))
    return f"{n} input tensor{'s' if n != 1 else ''} ({listed})"


def expect_array(what: str, x: Any, v: Value) -> None:
    """Raise an InputError unless ``x`` is an array (numpy, torch, jax), saying what ``v`` expects."""
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return
    got = "None" if x is None else f"a python {type(x).__name__}"
    if isinstance(x, (bool, int, float, complex)):
        got += f" ({x!r})"
    raise InputError(f"{what}: got {got}; expected {_expected(v)}")


def _is_default(value: Any, default: Any) -> bool:
    """Whether an argument the graph was captured without is given its default (then it may be dropped)."""
    if default is _EMPTY:
        return False
    if value is default:
        return True
    return isinstance(default, (bool, int, float, str)) and type(value) is type(default) and value == default


@dataclass(frozen=True)
class CallForm:
    """The model's parameters and which of them the graph was captured with.

    A call binds its arguments to the parameters as python would, then is rebuilt in the
    captured form: ``positional`` parameters by position, ``keywords`` by name, so
    ``cm(ids, attention_mask=mask)`` serves a model captured with ``(ids, mask)``.
    ``arrays`` maps each parameter that was one array to its graph input.
    """

    keyword_params: tuple[str, ...]
    positional_params: tuple[str, ...]
    defaults: Mapping[str, Any]
    positional: tuple[str, ...]
    keywords: tuple[str, ...]
    arrays: Mapping[str, int]
    var_keyword: bool = False

    @classmethod
    def of(cls, fn: Callable, args: Sequence[Any], kwargs: Mapping[str, Any],
           flat_example: Sequence[Any]) -> CallForm | None:
        """The form of ``fn`` called with ``(args, kwargs)``; None where python's signature of ``fn``
        is unknown or takes ``*args`` (the call is then passed on as given)."""
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return None
        params = list(sig.parameters.values())
        if any(p.kind == p.VAR_POSITIONAL for p in params):
            return None
        var_keyword = any(p.kind == p.VAR_KEYWORD for p in params)
        positional_params = tuple(p.name for p in params if p.kind in _POSITIONAL)
        by_keyword = tuple(p.name for p in params if p.kind in _KEYWORD)
        if len(args) > len(positional_params) or not (var_keyword or all(k in by_keyword for k in kwargs)):
            return None
        positional = positional_params[:len(args)]
        given = dict(zip(positional, args)) | dict(kwargs)
        arrays = {}
        for name, value in given.items():
            index = next((j for j, x in enumerate(flat_example) if x is value), None)
            if index is not None and hasattr(value, "shape"):
                arrays[name] = index
        by_keyword += tuple(k for k in kwargs if k not in by_keyword)  # taken by **kwargs
        return cls(by_keyword, positional_params, {p.name: p.default for p in params if p.kind != p.VAR_KEYWORD},
                   positional, tuple(kwargs), arrays, var_keyword)

    def _takes(self) -> str:
        captured = self.positional + self.keywords
        return f"{len(captured)} input{'s' if len(captured) != 1 else ''} ({', '.join(captured)})"

    def bind(self, graph: Graph, args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[tuple, dict]:
        """``(args, kwargs)`` in the captured form; an InputError names what does not fit."""
        if len(args) > len(self.positional_params):
            raise InputError(f"the model takes {self._takes()}, got {len(args)} positional inputs")
        given = dict(zip(self.positional_params, args))
        for k, v in kwargs.items():
            if k not in self.keyword_params and not self.var_keyword:
                raise InputError(f"unknown keyword argument {k!r}: the model takes {self._takes()}")
            if k in given:
                raise InputError(f"input {k} is given twice, by position and by keyword")
            given[k] = v
        captured = self.positional + self.keywords
        missing = [n for n in captured if n not in given]
        if missing:
            what = f"input{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
            raise InputError(f"missing {what}: the model takes {self._takes()}, got {len(given)}")
        extra = [n for n in given if n not in captured and not _is_default(given[n], self.defaults.get(n, _EMPTY))]
        if extra:
            raise InputError(f"input {extra[0]} was not among the inputs the model was optimised with "
                             f"({', '.join(captured)}); pass it in optimize's example inputs to use it")
        for name, index in self.arrays.items():
            expect_array(f"input {name}", given[name], graph.inputs[index])
        return tuple(given[n] for n in self.positional), {k: given[k] for k in self.keywords}


# ----- token ids ---------------------------------------------------------------------

# ops that move ids around without changing them: the ids a gather reads are the input's
_SAME_IDS = frozenset({"reshape", "squeeze", "unsqueeze", "transpose", "broadcast_to"})


@dataclass(frozen=True)
class IdBound:
    """Graph input ``index`` holds ids into a table of ``size`` rows; valid ids lie in [low, size)."""

    index: int
    size: int
    low: int
    table: str


def _bound(graph: Graph, index: int, gather: Any) -> IdBound | None:
    size = gather.inputs[0].type.shape[gather.attrs["axis"] % gather.inputs[0].type.rank]
    if not isinstance(size, int):
        return None
    # torch's embedding refuses negative ids; ONNX Gather and np.take count them from the end
    torch_embedding = graph.meta.get("frontend") == "torch" and gather.meta.get("origin") == "embedding"
    table = gather.inputs[0]
    name = table.name or (table.producer.attrs.get("name") if table.producer is not None else None)
    reader = f"gather %{gather.outputs[0].name}" if gather.outputs[0].name else "a gather"
    what = f"the table {name!r}" if name else "the table"
    return IdBound(index, size, 0 if torch_embedding else -size,
                   f"{what} of {size} rows (read by {reader} [{gather.source()}])")


def id_bounds(graph: Graph) -> list[IdBound]:
    """The integer inputs that index a gather directly or through casts and reshapes, with their ranges."""
    bounds = []
    for i, v in enumerate(graph.inputs):
        if not v.type.dtype.is_int:
            continue
        stack, seen = [v], set()
        while stack:
            value = stack.pop()
            for node, k in value.uses():
                if id(node) in seen:
                    continue
                seen.add(id(node))
                if node.op == "gather" and k == 1:
                    b = _bound(graph, i, node)
                    if b is not None:
                        bounds.append(b)
                elif k == 0 and (node.op in _SAME_IDS or (node.op == "cast" and node.outputs[0].type.dtype.is_int)):
                    stack.append(node.outputs[0])
                elif k == 2 and node.op == "where" and _wraps_negative_ids(node, value):
                    stack.append(node.outputs[0])
    return bounds


def _made_by(v: Value, op: str, x: Value) -> Any:
    """The node that made ``v`` as ``op(x, constant)``, or None."""
    node = v.producer
    if node is None or node.op != op or node.inputs[0] is not x:
        return None
    return node if node.inputs[1].producer is not None and node.inputs[1].producer.op == "constant" else None


def _wraps_negative_ids(node: Any, x: Value) -> bool:
    """Whether ``node`` is ``where(lt(x, c), add(x, n), x)``: the wrap of negative ids that
    jax's indexing puts before a gather, which keeps the ids' range check meaningful."""
    cond, wrapped, _ = node.inputs
    return _made_by(cond, "lt", x) is not None and _made_by(wrapped, "add", x) is not None


def _min_max(x: Any) -> tuple[int, int]:
    """torch's aminmax for a torch tensor (on its device), else a numpy view (no copy, no jax dispatch)."""
    if type(x).__module__.startswith("torch"):
        lo, hi = x.aminmax()
        return int(lo), int(hi)
    a = to_numpy(x)
    return int(a.min()), int(a.max())


def check_ids(graph: Graph, bounds: Sequence[IdBound], flat: Sequence[Any]) -> None:
    """Raise an InputError if an input's ids fall outside a table they index (a min and a max per input)."""
    for b in bounds:
        x = flat[b.index]
        if 0 in tuple(x.shape):
            continue
        lo, hi = _min_max(x)
        if lo < b.low or hi >= b.size:
            bad = hi if hi >= b.size else lo
            v = graph.inputs[b.index]
            raise InputError(f"input {b.index} ({v.name}): id {bad} is out of range for {b.table}; "
                             f"valid ids are {b.low}..{b.size - 1}")
