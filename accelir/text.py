"""The IR text form: parsing and loading here, printing and saving in :mod:`accelir.printer`
(re-exported here).

::

    graph main(%x: f32[batch,128], %w: f32[128,64]) -> (f32[batch,64]) {
      %0 = matmul(%x, %w) : f32[batch,64]
      %1 = relu(%0) : f32[batch,64]
      return %1
    }

Names are assigned at print time (a value's name hint when it is unique, else a
number).  Constants with at most ``INLINE_LIMIT`` elements print their value
inline; larger ones print only their name, and ``parse`` takes their arrays from a
mapping or from the ``.npz`` saved beside the text.  ``print(parse(print(g)))`` is
``print(g)``.  Parsing never evaluates code.  ``#`` starts a comment.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any, Mapping, Sequence

import numpy as np

from . import dims as D
from .errors import AccelirError, ParseError, VerificationError
from .ir import DType, Graph, Node, TensorType, Value
from .printer import CONSTANTS_TABLE, INLINE_LIMIT, SHARED_CONSTANTS, print_graph, region_scope, save

__all__ = ["print_graph", "parse", "save", "load", "INLINE_LIMIT"]

_MAX_DIM = 2 ** 63 - 1  # an int64, as every backend holds a dim
MAX_REGION_DEPTH = 256  # regions inside regions; deeper text is refused, not a RecursionError
_KEYWORDS = {"true", "false", "none", "inf", "nan"}


# ----- parsing -----------------------------------------------------------------------

class _Parser:
    def __init__(self, text: str, constants: Mapping[str, np.ndarray]):
        self.text = text
        self.pos = 0
        self.constants = constants
        self.lines = text.split("\n")
        self._line_starts = [0]
        for i, ch in enumerate(text):
            if ch == "\n":
                self._line_starts.append(i + 1)

    # -- positions and errors
    def where(self, pos: int | None = None) -> tuple[int, int]:
        import bisect
        p = self.pos if pos is None else pos
        line = bisect.bisect_right(self._line_starts, p) - 1
        return line + 1, p - self._line_starts[line] + 1

    def error(self, msg: str, pos: int | None = None) -> ParseError:
        line, col = self.where(pos)
        src = self.lines[line - 1] if line - 1 < len(self.lines) else ""
        return ParseError(msg, line, col, src)

    # -- lexing helpers
    def skip(self) -> None:
        t = self.text
        while self.pos < len(t):
            c = t[self.pos]
            if c in " \t\r\n":
                self.pos += 1
            elif c == "#":
                nl = t.find("\n", self.pos)
                self.pos = len(t) if nl < 0 else nl
            else:
                break

    def peek(self, s: str) -> bool:
        self.skip()
        return self.text.startswith(s, self.pos)

    def accept(self, s: str) -> bool:
        if self.peek(s):
            self.pos += len(s)
            return True
        return False

    def expect(self, s: str) -> None:
        if not self.accept(s):
            found = self.text[self.pos:self.pos + 12].split("\n")[0] or "end of input"
            raise self.error(f"expected {s!r}, found {found!r}")

    _IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
    _VNAME = re.compile(r"%([A-Za-z0-9_.]+)")
    _NUMBER = re.compile(r"-?(?:inf|nan|(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)")

    def ident(self, what: str = "identifier") -> str:
        self.skip()
        m = self._IDENT.match(self.text, self.pos)
        if not m:
            raise self.error(f"expected {what}")
        self.pos = m.end()
        return m.group(0)

    def vname(self) -> tuple[str, int]:
        self.skip()
        start = self.pos
        if self.text.startswith('%"', start):
            self.pos += 1
            return self.string(), start
        m = self._VNAME.match(self.text, self.pos)
        if not m:
            raise self.error("expected a value name like %x or %\"x y\"")
        self.pos = m.end()
        return m.group(1), start

    def graph_name(self) -> str:
        self.skip()
        if self.text.startswith('"', self.pos):
            return self.string()
        return self.ident("a graph name")

    def string(self) -> str:
        self.skip()
        t = self.text
        if not t.startswith('"', self.pos):
            raise self.error("expected a string")
        i = self.pos + 1
        while i < len(t) and t[i] != '"':
            if t[i] == "\\":
                i += 1
            if t[i] == "\n":
                break
            i += 1
        if i >= len(t) or t[i] != '"':
            raise self.error("unterminated string")
        try:
            s = json.loads(t[self.pos:i + 1])
        except ValueError:
            raise self.error("bad string escape") from None
        self.pos = i + 1
        return s

    # -- types
    def dtype(self) -> DType:
        start = self.pos
        name = self.ident("a dtype")
        try:
            return DType.parse(name)
        except ValueError as e:
            raise self.error(str(e), start) from None

    def ttype(self) -> TensorType:
        self.skip()
        dt = self.dtype()
        if self.text.startswith("[", self.pos) is False:
            raise self.error("expected '[' after the dtype (a scalar is f32[])")
        self.pos += 1
        end = self.text.find("]", self.pos)
        if end < 0:
            raise self.error("unterminated shape")
        body = self.text[self.pos:end]
        dims: list = []
        if body.strip():
            offset = self.pos
            for part in body.split(","):
                p = part.strip()
                at = offset + len(part) - len(part.lstrip())
                if re.fullmatch(r"\d+", p):
                    d: Any = int(p)
                else:
                    try:
                        d = D.canonical(p)
                    except (ValueError, TypeError, SyntaxError, RecursionError, OverflowError):
                        raise self.error(f"bad dimension {p!r}", at) from None
                if type(d) is int and not 0 <= d <= _MAX_DIM:
                    raise self.error(f"dimension {p} is out of range: a dim is 0 to {_MAX_DIM} or a symbol", at)
                dims.append(d)
                offset += len(part) + 1
        try:
            t = TensorType(dt, tuple(dims))
        except (ValueError, TypeError) as e:
            raise self.error(f"bad type: {e}") from None
        self.pos = end + 1
        return t

    # -- attribute values
    def attr_value(self, depth: int = 0) -> Any:
        if depth > 32:
            raise self.error("attribute nested too deeply")
        self.skip()
        t = self.text
        if self.pos >= len(t):
            raise self.error("expected an attribute value")
        c = t[self.pos]
        if c == "[":
            self.pos += 1
            items = []
            if not self.accept("]"):
                while True:
                    items.append(self.attr_value(depth + 1))
                    if self.accept("]"):
                        break
                    self.expect(",")
            return tuple(items)
        if c == '"':
            return self.string()
        m = self._NUMBER.match(t, self.pos)
        if m and not (m.group(0) in ("inf", "nan") and self._IDENT.match(t, self.pos).end() > m.end()):
            self.pos = m.end()
            s = m.group(0)
            if re.fullmatch(r"-?\d+", s):
                return int(s)
            return float(s)
        start = self.pos
        word = self.ident("an attribute value")
        if word == "true":
            return True
        if word == "false":
            return False
        if word == "none":
            return None
        try:
            return DType.parse(word)
        except ValueError:
            raise self.error(f"unknown attribute value {word!r}", start) from None

    # -- graphs
    def graph(self, depth: int = 0, scope: str = "") -> Graph:
        """A graph; ``scope`` says where it sits (see ``region_scope``), for the ``.npz`` lookup."""
        if depth > MAX_REGION_DEPTH:
            raise self.error(f"regions nested more than {MAX_REGION_DEPTH} deep")
        self.skip()
        start = self.pos
        if self.ident("'graph'") != "graph":
            raise self.error("expected 'graph'", start)
        g = Graph(self.graph_name())
        env: dict[str, Value] = {}
        self.expect("(")
        if not self.accept(")"):
            while True:
                name, pos = self.vname()
                self.expect(":")
                t = self.ttype()
                if name in env:
                    raise self.error(f"%{name} is defined twice", pos)
                env[name] = g.add_input(t, name)
                if self.accept(")"):
                    break
                self.expect(",")
        self.expect("->")
        self.expect("(")
        out_types: list[TensorType] = []
        if not self.accept(")"):
            while True:
                out_types.append(self.ttype())
                if self.accept(")"):
                    break
                self.expect(",")
        self.expect("{")
        index = 0
        while True:
            self.skip()
            if self.peek("return"):
                save = self.pos
                self.ident()
                if self.peek("%") or self.peek("}"):
                    break
                self.pos = save
            self.node(g, env, depth, scope, index)
            index += 1
        outs: list[Value] = []
        if not self.peek("}"):
            while True:
                name, pos = self.vname()
                if name not in env:
                    raise self.error(f"%{name} is not defined", pos)
                outs.append(env[name])
                if not self.accept(","):
                    break
        self.expect("}")
        if len(outs) != len(out_types):
            raise self.error(f"graph {g.name} declares {len(out_types)} outputs but returns {len(outs)}")
        for i, (v, t) in enumerate(zip(outs, out_types)):
            if v.type != t:
                raise self.error(f"output {i} of graph {g.name} is {v.type}, declared {t}")
        g.set_outputs(outs)
        return g

    def node(self, g: Graph, env: dict[str, Value], depth: int, scope: str, index: int) -> None:
        self.skip()
        line_pos = self.pos
        results: list[tuple[str, int]] = []
        while True:
            results.append(self.vname())
            if not self.accept(","):
                break
        self.expect("=")
        self.skip()
        op_pos = self.pos
        op = self.ident("an op name")
        from .ops import registry
        if not registry.is_registered(op):
            raise self.error(f"unknown op {op!r}", op_pos)
        self.expect("(")
        inputs: list[Value] = []
        if not self.accept(")"):
            while True:
                name, pos = self.vname()
                if name not in env:
                    raise self.error(f"%{name} is used before it is defined", pos)
                inputs.append(env[name])
                if self.accept(")"):
                    break
                self.expect(",")
        attrs: dict[str, Any] = {}
        value_pos = None
        if self.peek("{"):
            self.expect("{")
            if not self.accept("}"):
                while True:
                    self.skip()
                    kpos = self.pos
                    key = self.ident("an attribute name")
                    self.expect("=")
                    if key in attrs:
                        raise self.error(f"attribute {key!r} given twice", kpos)
                    if key == "value":
                        value_pos = self.pos
                    attrs[key] = self.attr_value()
                    if self.accept("}"):
                        break
                    self.expect(",")
        self.expect(":")
        types = [self.ttype()]
        while self.accept(","):
            types.append(self.ttype())
        regions: list[Graph] = []
        if self.peek("{"):
            self.expect("{")
            while not self.accept("}"):
                regions.append(self.graph(depth + 1, region_scope(scope, index, len(regions))))
        if len(types) != len(results):
            raise self.error(f"{op}: {len(results)} results but {len(types)} types", line_pos)
        for name, pos in results:
            if name in env:
                raise self.error(f"%{name} is defined twice", pos)
        if op == "constant":
            outs = self._constant(g, attrs, types, inputs, value_pos, line_pos, results[0][0], scope)
        else:
            try:
                node = g.make(op, inputs, attrs, regions=regions, names=[r[0] for r in results])
            except (VerificationError, ValueError, TypeError) as e:
                raise self.error(str(e), op_pos) from None
            for i, (o, t) in enumerate(zip(node.outputs, types)):
                if o.type != t:
                    raise self.error(f"{op}: result {i} has type {o.type} by the type rule, text says {t}", op_pos)
            outs = list(node.outputs)
        for (name, _), v in zip(results, outs):
            env[name] = v

    def _constant(self, g, attrs, types, inputs, value_pos, pos, result_name, scope) -> list[Value]:
        if inputs or len(types) != 1:
            raise self.error("constant takes no inputs and has one result", pos)
        if set(attrs) - {"name", "value"} or not isinstance(attrs.get("name"), str):
            raise self.error("constant needs {name=\"...\"} and optionally value=...", pos)
        t = types[0]
        name = attrs["name"]
        if "value" in attrs:
            try:
                arr = np.asarray(attrs["value"], dtype=np.float64 if t.dtype.is_float else None)
                _check_stored_range(arr, t.dtype)
                arr = arr.astype(t.dtype.numpy)
            except (ValueError, TypeError, OverflowError) as e:
                raise self.error(f"bad constant value: {e}", value_pos) from None
        else:
            if name not in self.constants:
                where = getattr(self.constants, "where", None)
                raise self.error(f"constant {name!r} has no value: " + (
                    f"looked for it in {where}; keep the .npz files beside the text" if where else
                    "pass constants= or keep the .npz beside the text"), pos)
            try:
                read = getattr(self.constants, "read", None)
                arr = read(name, t, scope) if read is not None else np.asarray(self.constants[name])
            except ValueError as e:
                raise self.error(f"constant {name!r}: {e}", pos) from None
        if arr.dtype != t.dtype.numpy or tuple(arr.shape) != t.shape:
            raise self.error(f"constant {name!r} is {TensorType.of(arr)}, text says {t}", pos)
        if name in g.constants:
            if not np.array_equal(g.constants[name], arr, equal_nan=arr.dtype.kind == "f"):
                raise self.error(f"constant name {name!r} is used twice with different values", pos)
            v = g.constant_ref(name)
        else:
            v = g.const(arr, name=name)
        v.name = result_name
        return [v]


def _check_stored_range(arr: np.ndarray, dtype: DType) -> None:
    """Refuse inline values an integer or bool constant cannot hold (a cast would wrap them)."""
    if dtype.is_float or arr.size == 0:
        return
    if arr.dtype.kind not in "biu":
        raise ValueError(f"{dtype.name} takes integers, got {arr.dtype.name} values")
    lo, hi = (0, 1) if dtype is DType.bool else (int(np.iinfo(dtype.numpy).min), int(np.iinfo(dtype.numpy).max))
    if int(arr.min()) < lo or int(arr.max()) > hi:
        raise ValueError(f"{dtype.name} holds {lo}..{hi}, got values from {int(arr.min())} to {int(arr.max())}")


def parse(text: str, constants: Mapping[str, np.ndarray] | None = None) -> Graph:
    """Read a graph from its text form; large constants come from ``constants``."""
    p = _Parser(text, constants or {})
    try:
        g = p.graph()
        p.skip()
        if p.pos != len(text):
            raise p.error("unexpected text after the graph")
    except RecursionError:
        raise p.error("input nested too deeply") from None
    return g


# ----- files -------------------------------------------------------------------------

_BF16_SUFFIX = "::bf16"  # how files written before the entry table marked bfloat16 arrays
_NPY_HEADER_ROOM = 65536 + 16  # the most an .npy header adds to an entry's data
_TABLE_LIMIT = 64 * 1024 ** 2


def _is_shape(shape: Any) -> bool:
    return isinstance(shape, list) and all(type(d) is int and 0 <= d <= _MAX_DIM for d in shape)


class _NpzConstants(Mapping[str, np.ndarray]):
    """The constants of a saved ``.npz``, read one entry at a time when the text names it.

    An entry is inflated only after its declared size is checked against the type the text
    gives the constant, so a small zip cannot expand into gigabytes.
    """

    def __init__(self, path: str):
        import zipfile
        self.path = path
        try:
            self._npz = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise AccelirError(f"{path}: not a readable .npz file ({e or 'empty'}); save the graph again") from None
        if not hasattr(self._npz, "files"):
            raise AccelirError(f"{path}: holds one array, not the named arrays of an .npz")
        self._sizes = {i.filename[:-4]: i.file_size for i in self._npz.zip.infolist() if i.filename.endswith(".npy")}
        # constant name -> [(entry, its table row)]: one row, or one per array with its "scopes"
        self._entries: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        if CONSTANTS_TABLE in self._sizes:
            for key, info in self._table().items():
                self._entries.setdefault(info["name"], []).append((key, info))
        else:
            for key in self._npz.files:
                if key.endswith(_BF16_SUFFIX):
                    self._entries[key[: -len(_BF16_SUFFIX)]] = [(key, {"dtype": "bfloat16"})]
                else:
                    self._entries[key] = [(key, {})]

    def _table(self) -> dict[str, dict[str, Any]]:
        if self._sizes[CONSTANTS_TABLE] > _TABLE_LIMIT:
            raise AccelirError(f"{self.path}: its table of constants is {self._sizes[CONSTANTS_TABLE]} bytes; "
                               "this is not a file accelir wrote")
        try:
            table = json.loads(self._npz[CONSTANTS_TABLE].tobytes().decode("utf-8"))
            if not all(isinstance(v, dict) and isinstance(v.get("name"), str) and k in self._sizes
                       for k, v in table.items()):
                raise ValueError("an entry is not {name: ...} or names no array")
            if not all(_is_shape(v.get("shape", [])) for v in table.values()):
                raise ValueError("a splat's shape is not a list of dims")
            if not all(isinstance(v.get("scopes", []), list) for v in table.values()):
                raise ValueError("a constant's scopes are not a list")
        except (ValueError, AttributeError) as e:
            raise AccelirError(f"{self.path}: bad table of constants ({e}); save the graph again") from None
        return table

    def close(self) -> None:
        self._npz.close()

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.read(name, None)

    def read(self, name: str, t: TensorType | None, scope: str = "") -> np.ndarray:
        """The array of constant ``name`` as the graph at ``scope`` reads it; with ``t``, refused
        unread when its entry is larger than an array of type ``t``."""
        import zipfile
        rows = self._entries[name]
        found = [r for r in rows if "scopes" not in r[1] or scope in r[1]["scopes"]]
        if len(found) != 1:
            raise ValueError(f"its .npz has {len(found)} arrays for the graph at {scope or 'the top'}; "
                             "save the graph again")
        key, info = found[0]
        splat = info.get("shape")
        if t is not None:
            if not all(type(d) is int for d in t.shape):
                raise ValueError(f"its type {t} has symbolic dims; a constant's shape is concrete")
            limit = (1 if splat is not None else math.prod(t.shape)) * t.dtype.numpy.itemsize + _NPY_HEADER_ROOM
            if self._sizes[key] > limit:
                raise ValueError(f"its .npz entry holds {self._sizes[key]} bytes, more than a {t} needs")
        try:
            arr = self._npz[key]
        except ValueError as e:
            if "allow_pickle" in str(e):
                raise ValueError("its .npz entry is a pickled object array, which accelir never loads; "
                                 "save plain numeric arrays") from None
            raise
        except (OSError, zipfile.BadZipFile, EOFError) as e:
            raise ValueError(f"its .npz entry cannot be read ({e})") from None
        if info.get("dtype") == "bfloat16":
            import ml_dtypes
            arr = arr.view(ml_dtypes.bfloat16)
        if splat is not None:
            if arr.ndim != 0:
                raise ValueError(f"its .npz entry is a splat of shape {list(splat)} but holds {arr.shape}, "
                                 "not one value")
            arr = np.broadcast_to(arr, tuple(splat))  # one element in memory, like the folded original
        return arr


def load(path: str | os.PathLike, constants: Mapping[str, np.ndarray] | None = None) -> Graph:
    """Read a graph saved by :func:`save` (text plus the optional ``.npz``).

    Only the ``.npz`` entries the text names are read; ``constants`` take precedence over them,
    then the ``.npz`` beside the text, then one its first line names (``# constants also in:``,
    as a PassManager's dumps name the input's).  A constant found in none of them is an error
    naming the files it was looked for in.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise AccelirError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    files = [path + ".npz"]
    if text.startswith(SHARED_CONSTANTS):
        other = text[len(SHARED_CONSTANTS):text.find("\n")].strip()
        files.append(os.path.join(os.path.dirname(path), os.path.basename(other)))
    npzs = [_NpzConstants(f) for f in files if os.path.exists(f)]
    where = " or ".join(f if os.path.exists(f) else f"{f} (missing)" for f in files)
    try:
        return parse(text, _Overlay(constants or {}, npzs, where))
    finally:
        for npz in npzs:
            npz.close()


class _Overlay(Mapping[str, np.ndarray]):
    """``first``'s arrays, else those of the first ``.npz`` holding the name (read lazily, with the
    type the text expects); ``where`` names the files, for the error when none does."""

    def __init__(self, first: Mapping[str, np.ndarray], npzs: Sequence[_NpzConstants], where: str):
        self.first, self.npzs, self.where = first, list(npzs), where

    def __contains__(self, name: object) -> bool:
        return name in self.first or any(name in n for n in self.npzs)

    def __iter__(self):
        return iter(set(self.first).union(*self.npzs))

    def __len__(self) -> int:
        return len(set(self.first).union(*self.npzs))

    def __getitem__(self, name: str) -> np.ndarray:
        return self.read(name, None)

    def read(self, name: str, t: TensorType | None, scope: str = "") -> np.ndarray:
        if name in self.first:
            return np.asarray(self.first[name])
        return next(n for n in self.npzs if name in n).read(name, t, scope)
