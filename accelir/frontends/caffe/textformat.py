"""The protobuf text format (a ``.prototxt``), read and written through accelir's Caffe schema.

Each message keeps the line it starts on, so an error about a layer names its line.
Field names the schema lacks are parsed and skipped (Caffe files carry training
settings accelir does not need); anything that is not text format is a
:class:`CaffeError` with ``file:line``.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterator, Mapping

import numpy as np

from .message import CaffeError, Message
from .schema import ENUMS, MESSAGES, Field

__all__ = ["parse_text", "to_text"]

_TOKEN = re.compile(r"""
    (?P<space>[ \t\r\f\v]+|\n|[#][^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)[fF]?)
  | (?P<ident>[-]?[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[{}<>:\[\],;])
""", re.VERBOSE)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "0": "\0"}


def _tokens(text: str, path: str) -> Iterator[tuple[str, str, int]]:
    line = 1
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            snippet = text[pos:pos + 20].splitlines()[0] if text[pos:pos + 20].strip() else repr(text[pos])
            raise CaffeError(f"{path}:{line}: {snippet!r} is not protobuf text format; a prototxt holds "
                             "'name: value' and 'name { ... }' fields")
        kind = m.lastgroup
        value = m.group()
        if kind == "space":
            line += value.count("\n")
        else:
            yield kind, value, line
        pos = m.end()
    yield "end", "", line


class _Parser:
    def __init__(self, text: str, path: str):
        self.path = path
        self.toks = list(_tokens(text, path))
        self.i = 0

    def peek(self) -> tuple[str, str, int]:
        return self.toks[self.i]

    def next(self) -> tuple[str, str, int]:
        t = self.toks[self.i]
        self.i += 1
        return t

    def fail(self, why: str, line: int) -> CaffeError:
        return CaffeError(f"{self.path}:{line}: {why}")

    def message(self, type: str | None, line: int, close: str | None) -> Message | None:
        msg = Message(type, line) if type is not None else None
        while True:
            kind, value, ln = self.next()
            if kind == "end":
                if close is not None:
                    raise self.fail(f"the message opened on line {line} is not closed", ln)
                return msg
            if kind == "punct" and value in ";,":
                continue
            if kind == "punct" and value == close:
                return msg
            if kind != "ident":
                raise self.fail(f"expected a field name, found {value!r}; this is not protobuf text format", ln)
            f = MESSAGES[type].get(value) if type is not None else None
            self.field(msg, f, value, ln)

    def field(self, msg: Message | None, f: Field | None, name: str, line: int) -> None:
        kind, value, ln = self.peek()
        if kind == "punct" and value == ":":
            self.next()
            kind, value, ln = self.peek()
        if kind == "punct" and value in "{<":
            self.next()
            sub = self.message(f.message if f is not None and f.message else None, ln, "}" if value == "{" else ">")
            if f is not None and f.message is None:
                raise self.fail(f"field {name} of {msg.type} takes a value, not a message", ln)
            if f is not None:
                msg.add(name, sub)
            return
        if kind == "punct" and value == "[":
            self.next()
            while True:
                kind, value, ln = self.peek()
                if kind == "punct" and value == "]":
                    self.next()
                    return
                if kind == "punct" and value == ",":
                    self.next()
                    continue
                self.scalar(msg, f, name)
        self.scalar(msg, f, name)

    def scalar(self, msg: Message | None, f: Field | None, name: str) -> None:
        kind, value, ln = self.next()
        if kind == "string":
            while self.peek()[0] == "string":  # adjacent strings concatenate
                value = value[:-1] + self.next()[1][1:]
        if kind not in ("string", "number", "ident"):
            raise self.fail(f"field {name}: expected a value, found {value or 'the end of the file'!r}", ln)
        if f is None:
            return
        if f.message is not None:
            raise self.fail(f"field {name} of {msg.type} is a message: write {name} {{ ... }}", ln)
        try:
            msg.add(name, _convert(f, kind, value))
        except ValueError as e:
            raise self.fail(f"field {name} of {msg.type}: {e}", ln) from None


def _convert(f: Field, kind: str, text: str) -> Any:
    if f.kind in ("string", "bytes"):
        if kind != "string":
            raise ValueError(f"expected a quoted string, found {text!r}")
        body = text[1:-1]
        return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), body)
    if f.enum is not None:
        names = ENUMS[f.enum]
        if kind == "ident" and text in names:
            return text
        if kind == "number" and int(text) in names.values():
            return {v: k for k, v in names.items()}[int(text)]
        raise ValueError(f"{text!r} is not one of {', '.join(names)}")
    if f.kind == "bool":
        if text in ("true", "True", "t", "1"):
            return True
        if text in ("false", "False", "f", "0"):
            return False
        raise ValueError(f"{text!r} is not true or false")
    if f.kind in ("float", "double"):
        low = text.lower().lstrip("+")
        if low in ("inf", "infinity", "-inf", "-infinity", "nan"):
            return float(low.replace("infinity", "inf"))
        if kind != "number":
            raise ValueError(f"{text!r} is not a number")
        return float(text.rstrip("fF"))
    if kind != "number" or not re.fullmatch(r"[-+]?\d+", text):
        raise ValueError(f"{text!r} is not an integer")
    value = int(text)
    if f.kind == "uint" and value < 0:
        raise ValueError(f"{text} is negative")
    return value


def parse_text(text: str, type: str = "NetParameter", path: str = "<prototxt>") -> Message:
    """The message of ``type`` in protobuf text ``text``; errors name ``path:line``."""
    if "\0" in text:
        raise CaffeError(f"{path}: holds binary data, not protobuf text format (is it a .caffemodel?)")
    return _Parser(text, path).message(type, 1, None)


# ----- writing -----------------------------------------------------------------------

def _text_value(f: Field, value: Any) -> str:
    if f.kind in ("string", "bytes"):
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if f.kind == "bool":
        return "true" if value else "false"
    if f.enum is not None:
        return str(value)
    if f.kind in ("float", "double"):
        v = float(value)
        return repr(v) if math.isfinite(v) else ("nan" if v != v else ("inf" if v > 0 else "-inf"))
    return str(int(value))


def to_text(values: Mapping[str, Any], type: str = "NetParameter", indent: int = 0) -> str:
    """``values`` (as :func:`accelir.frontends.caffe.wire.encode` takes them) in text format."""
    pad = "  " * indent
    lines = []
    for name, value in values.items():
        f = MESSAGES[type][name]
        items = list(np.ravel(value)) if isinstance(value, np.ndarray) else (list(value) if f.repeated else [value])
        for item in items:
            if f.message is not None:
                lines.append(f"{pad}{name} {{\n{to_text(item, f.message, indent + 1)}{pad}}}\n")
            else:
                lines.append(f"{pad}{name}: {_text_value(f, item)}\n")
    return "".join(lines)
