"""The IR text form, writing side: ``print_graph`` and ``save`` (text plus ``.npz``).

Printing needs nothing of the graph classes but their fields, so this module sits
below :mod:`accelir.ir` (``str(graph)`` prints through it); :mod:`accelir.text`
parses and loads, and re-exports both functions.  See :mod:`accelir.text` for the
format.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any, Mapping

import numpy as np

from .fileio import atomic_outputs
from .splat import splat_scalar
from .types import DType

# Graph and Value in the annotations are accelir.ir's; they are not imported, since ir imports
# this module (str(graph)) and printing reads nothing but their fields.

__all__ = ["print_graph", "save", "Namer", "StableNumbers", "INLINE_LIMIT", "CONSTANTS_TABLE", "SHARED_CONSTANTS", "region_scope"]

INLINE_LIMIT = 16
SHARED_CONSTANTS = "# constants also in: "  # a saved text's first line naming another .npz beside it
CONSTANTS_TABLE = "accelir.constants"  # the .npz entry mapping entry names to constant names (JSON, as uint8)
_BARE_VALUE = re.compile(r"[A-Za-z0-9_.]+")
_BARE_GRAPH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _quoted(name: str) -> str:
    return json.dumps(name, ensure_ascii=False)


def _graph_name(name: str) -> str:
    """A graph's name as printed: bare when it reads as an identifier, else quoted."""
    return name if _BARE_GRAPH.fullmatch(name) else _quoted(name)


# ----- printing ----------------------------------------------------------------------

def _fmt_scalar(x: Any, dtype: np.dtype | None = None) -> str:
    if isinstance(x, (bool, np.bool_)):
        return "true" if x else "false"
    is_float_dtype = dtype is not None and (dtype.kind == "f" or dtype.name == "bfloat16")
    if isinstance(x, (int, np.integer)) and not is_float_dtype:
        return str(int(x))
    if isinstance(x, (float, np.floating)) or is_float_dtype:
        f = float(x)
        if math.isnan(f):
            return "nan"
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        text = str(x) if isinstance(x, np.floating) or type(x).__name__ == "bfloat16" else repr(f)
        if not any(c in text for c in ".en"):
            text += ".0"
        return text
    raise TypeError(f"cannot print {x!r}")


def _fmt_attr(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, DType):
        return v.value
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, tuple):
        return "[" + ", ".join(_fmt_attr(x) for x in v) + "]"
    if isinstance(v, float):
        return _fmt_scalar(v)
    return _fmt_scalar(v)


def _fmt_array(a: np.ndarray) -> str:
    if a.ndim == 0:
        return _fmt_scalar(a[()], a.dtype)
    return "[" + ", ".join(_fmt_array(x) for x in a) + "]"


class StableNumbers:
    """Numbers for unnamed values that stay the same across prints of a graph that passes rewrite in place.

    The printer numbers unnamed values in order, so removing one node would renumber
    every later line and a diff between passes would show them all as changed.  With
    one ``StableNumbers`` shared by the prints, a value keeps the number it got when it
    was first printed and a new value gets a number never used before.  The values are
    kept alive, so their identities are not reused for other values.
    """

    def __init__(self) -> None:
        self._numbers: dict[int, tuple[Value, int]] = {}
        self._next = 0

    def number(self, v: Value) -> int:
        got = self._numbers.get(id(v))
        if got is None:
            got = self._numbers[id(v)] = (v, self._next)
            self._next += 1
        return got[1]


class Namer:
    """Names values at print time: a value's name hint when it is still free, else a number
    (from ``stable`` when given, see :class:`StableNumbers`)."""

    def __init__(self, stable: StableNumbers | None = None) -> None:
        self.names: dict[int, str] = {}
        self.used: set[str] = set()
        self.counter = 0
        self.stable = stable

    @classmethod
    def for_graph(cls, g: Graph, stable: StableNumbers | None = None) -> Namer:
        """A namer that has reserved the name hints of ``g``'s inputs and node outputs, in order."""
        namer = cls(stable)
        for v in g.inputs:
            namer.reserve(v)
        for n in g.nodes:
            for o in n.outputs:
                namer.reserve(o)
        return namer

    def reserve(self, v: Value) -> None:
        if v.name and id(v) not in self.names:
            base = v.name
            name = base
            k = 1
            while name in self.used:
                name = f"{base}_{k}"
                k += 1
            self.names[id(v)] = name
            self.used.add(name)

    def __call__(self, v: Value) -> str:
        n = self.names.get(id(v))
        if n is None and self.stable is not None and str(self.stable.number(v)) not in self.used:
            n = str(self.stable.number(v))
            self.names[id(v)] = n
            self.used.add(n)
        if n is None:
            while str(self.counter) in self.used:
                self.counter += 1
            n = str(self.counter)
            self.counter += 1
            self.names[id(v)] = n
            self.used.add(n)
        return "%" + (n if _BARE_VALUE.fullmatch(n) else _quoted(n))


def _print(g: Graph, indent: str, out: list[str], meta: bool, stable: StableNumbers | None = None) -> None:
    namer = Namer.for_graph(g, stable)
    ins = ", ".join(f"{namer(v)}: {v.type}" for v in g.inputs)
    outs = ", ".join(str(v.type) for v in g.outputs)
    out.append(f"{indent}graph {_graph_name(g.name)}({ins}) -> ({outs}) {{")
    inner = indent + "  "
    for n in g.nodes:
        lhs = ", ".join(namer(o) for o in n.outputs)
        args = ", ".join(namer(v) if id(v) in namer.names else "%<undefined>" for v in n.inputs)
        attrs = dict(n.attrs)
        if n.op == "constant":
            arr = g.constants.get(n.attrs["name"])
            if arr is not None and arr.size <= INLINE_LIMIT:
                attrs["value"] = _fmt_array(arr)
        attr_text = ""
        if attrs:
            parts = []
            for k, v in attrs.items():
                parts.append(f"{k}={v if k == 'value' and n.op == 'constant' else _fmt_attr(v)}")
            attr_text = " {" + ", ".join(parts) + "}"
        types = ", ".join(str(o.type) for o in n.outputs)
        line = f"{inner}{lhs} = {n.op}({args}){attr_text} : {types}"
        if meta and n.meta:
            line += "  # " + n.source()
        if n.regions:
            out.append(line + " {")
            for r in n.regions:
                _print(r, inner + "  ", out, meta, stable)
            out.append(inner + "}")
        else:
            out.append(line)
    out.append(f"{inner}return " + ", ".join(namer(v) if id(v) in namer.names else "%<undefined>"
                                            for v in g.outputs))
    out.append(indent + "}")


def print_graph(g: Graph, *, meta: bool = False, stable: StableNumbers | None = None) -> str:
    """The text form of ``g``; ``meta=True`` appends each node's provenance as a comment; ``stable``
    keeps value numbers the same across prints (see :class:`StableNumbers`)."""
    out: list[str] = []
    _print(g, "", out, meta, stable)
    return "\n".join(out) + "\n"


def region_scope(scope: str, node_index: int, region_index: int) -> str:
    """Where region ``region_index`` of node ``node_index`` (in text order) of the graph at ``scope``
    sits: two regions may each have a constant "c" with different values."""
    return f"{scope}/{node_index}.{region_index}"


def _collect_large(g: Graph, out: dict[str, list[tuple[str, np.ndarray]]], scope: str = "") -> None:
    """Constant name -> (scope, array) of every constant printed by name only, regions included."""
    for i, n in enumerate(g.nodes):
        if n.op == "constant":
            arr = g.constants[n.attrs["name"]]
            if arr.size > INLINE_LIMIT:
                out.setdefault(n.attrs["name"], []).append((scope, arr))
        for k, r in enumerate(n.regions):
            _collect_large(r, out, region_scope(scope, i, k))


def _distinct(uses: list[tuple[str, np.ndarray]]) -> list[tuple[np.ndarray, list[str] | None]]:
    """The distinct arrays (by identity) of one name, each with the scopes that read it, or None
    for all scopes where the name has one array."""
    by_id: dict[int, tuple[np.ndarray, list[str]]] = {}
    for scope, arr in uses:
        by_id.setdefault(id(arr), (arr, []))[1].append(scope)
    if len(by_id) == 1:
        return [(arr, None) for arr, _ in by_id.values()]
    return [(arr, sorted(set(scopes))) for arr, scopes in by_id.values()]


def _npz_entries(large: Mapping[str, list[tuple[str, np.ndarray]]]) -> dict[str, np.ndarray]:
    """The ``.npz`` entries for ``large``: constant names may be anything (``/``, ``..``, NUL, a
    thousand characters), zip entry names may not, so entries are numbered and a table maps them
    back to the names (and, for a name that regions use with different arrays, to the scopes
    that read each).  A splat is stored as its scalar, with its shape in the table."""
    arrays: dict[str, np.ndarray] = {}
    table: dict[str, dict[str, Any]] = {}
    rows = [(name, a, scopes) for name, uses in large.items() for a, scopes in _distinct(uses)]
    for i, (name, a, scopes) in enumerate(rows):
        key = f"c{i}"
        info: dict[str, Any] = {"name": name}
        if scopes is not None:
            info["scopes"] = scopes
        scalar = splat_scalar(a)
        if scalar is not None:
            info["shape"] = list(a.shape)
            a = scalar
        if a.dtype.name == "bfloat16":
            info["dtype"] = "bfloat16"
            a = a.view(np.uint16)
        arrays[key] = a
        table[key] = info
    arrays[CONSTANTS_TABLE] = np.frombuffer(json.dumps(table).encode("utf-8"), np.uint8)
    return arrays


def save(g: Graph, path: str | os.PathLike, *, overwrite: bool = True, meta: bool = False,
         shared: tuple[str, Mapping[str, list[np.ndarray]]] | None = None,
         stable: StableNumbers | None = None) -> dict[str, list[np.ndarray]]:
    """Write the text to ``path`` and large constants to ``path + '.npz'``, each through a
    temporary renamed into place (the ``.npz`` first); ``overwrite=False`` refuses to replace
    either file.  ``meta`` appends each node's provenance as a comment; ``stable`` numbers values
    as :func:`print_graph` does.

    ``shared=(npz, arrays)`` saves a graph whose constants are mostly in another ``.npz``
    beside it (a pass's dump next to the input's): a name whose arrays are all among
    ``arrays[name]`` (the same objects) is not written again, and the text's first line,
    ``# constants also in: <npz>``, tells :func:`accelir.text.load` where to read it.
    Returns, by name, the large arrays the graph reads (for a later ``shared``).
    """
    path = os.fspath(path)
    large: dict[str, list[tuple[str, np.ndarray]]] = {}
    _collect_large(g, large)
    text = print_graph(g, meta=meta, stable=stable)
    arrays = {name: [a for a, _ in _distinct(uses)] for name, uses in large.items()}
    if shared is not None:
        other, known = shared
        # a name regions read with different arrays is stored by scope, and scopes move when a pass
        # rewrites the graph, so only a name with one array, in both graphs, is read from the other file
        referenced = {name for name in large
                      if len(arrays[name]) == 1 and [id(a) for a in known.get(name, ())] == [id(arrays[name][0])]}
        if referenced:
            text = f"{SHARED_CONSTANTS}{other}\n{text}"
        large = {name: uses for name, uses in large.items() if name not in referenced}
    npz = path + ".npz"
    with atomic_outputs(path, npz, overwrite=overwrite) as out:
        if large:
            with open(out.temp(npz), "wb") as f:
                np.savez(f, **_npz_entries(large))
        with open(out.temp(path), "w", encoding="utf-8") as f:
            f.write(text)
    return arrays
