"""The protobuf binary wire format, read and written through accelir's Caffe schema.

A caffemodel is a binary ``NetParameter``.  Fields the schema lacks are skipped by wire
type; packed float data (the weights) is read with one ``np.frombuffer`` per blob, not
value by value.  A truncated or corrupt file is a :class:`CaffeError` naming the byte
offset and the message being read.
"""

from __future__ import annotations

import struct
from typing import Any, Mapping

import numpy as np

from .message import CaffeError, Message
from .schema import ENUMS, MESSAGES, field_by_number

__all__ = ["decode", "encode"]

_FIXED = {"float": ("<f4", 4, 5), "double": ("<f8", 8, 1)}
# the wire types each kind of field may arrive in (repeated scalars also packed, as wire type 2)
_WIRE_TYPES = {"varint": (0, 2), "float": (5, 2), "double": (1, 2), "bytes": (2,)}


def _wire_kind(kind: str) -> str:
    if kind in ("float", "double"):
        return kind
    if kind in ("string", "bytes") or kind.startswith("msg:"):
        return "bytes"
    return "varint"


class _Reader:
    def __init__(self, data: bytes, what: str):
        self.data = memoryview(data)
        self.what = what

    def fail(self, why: str, pos: int) -> CaffeError:
        return CaffeError(f"{self.what}: {why} at byte {pos}; the file is truncated or not a Caffe "
                          "NetParameter (a .caffemodel)")

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        result = shift = 0
        data = self.data
        while True:
            if pos >= end:
                raise self.fail("a number runs past the end", pos)
            b = data[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result, pos
            shift += 7
            if shift > 70:
                raise self.fail("a malformed number", pos)

    def message(self, type: str, pos: int, end: int) -> Message:
        msg = Message(type)
        while pos < end:
            start = pos
            key, pos = self.varint(pos, end)
            number, wire = key >> 3, key & 7
            if number == 0:
                raise self.fail(f"field number 0 in {type}", start)
            f = field_by_number(type, number)
            if f is not None and wire not in _WIRE_TYPES[_wire_kind(f.kind)]:
                f = None  # another fork's field under the same number: skipped, as unknown ones are
            if wire == 0:
                value, pos = self.varint(pos, end)
                if f is not None:
                    msg.add(f.name, _from_varint(f.kind, value))
            elif wire in (1, 5):
                size = 8 if wire == 1 else 4
                if pos + size > end:
                    raise self.fail(f"a {size}-byte value runs past the end", pos)
                if f is not None:
                    fmt = "<d" if wire == 1 else ("<f" if f.kind == "float" else "<i")
                    value = struct.unpack_from(fmt, self.data, pos)[0]
                    msg.add(f.name, value)
                pos += size
            elif wire == 2:
                size, pos = self.varint(pos, end)
                if pos + size > end:
                    raise self.fail(f"a {size}-byte field of {type} runs past the end", pos)
                if f is not None:
                    self._length_delimited(msg, f, pos, pos + size)
                pos += size
            else:
                raise self.fail(f"wire type {wire} (not protobuf)", start)
        if pos != end:
            raise self.fail(f"{type} ends inside a field", pos)
        return msg

    def _length_delimited(self, msg: Message, f: Any, pos: int, end: int) -> None:
        if f.message is not None:
            msg.add(f.name, self.message(f.message, pos, end))
        elif f.kind == "string":
            try:
                msg.add(f.name, bytes(self.data[pos:end]).decode("utf-8"))
            except UnicodeDecodeError:
                raise self.fail(f"{msg.type}.{f.name} is not UTF-8 text", pos) from None
        elif f.kind == "bytes":
            msg.add(f.name, bytes(self.data[pos:end]))
        elif f.kind in _FIXED:  # packed floats / doubles: the blob data
            dtype, size, _ = _FIXED[f.kind]
            if (end - pos) % size:
                raise self.fail(f"packed {f.kind}s of {msg.type}.{f.name} are not a whole number of values", pos)
            arr = np.frombuffer(self.data[pos:end], dtype=dtype)
            prev = msg.values.get(f.name)
            msg.values[f.name] = arr if prev is None or len(prev) == 0 else np.concatenate([np.asarray(prev), arr])
        else:  # packed varints
            while pos < end:
                value, pos = self.varint(pos, end)
                msg.add(f.name, _from_varint(f.kind, value))


def _from_varint(kind: str, value: int) -> Any:
    if kind == "bool":
        return bool(value)
    if kind == "int" and value >= 1 << 63:
        return value - (1 << 64)
    if kind.startswith("enum:"):
        names = {v: k for k, v in ENUMS[kind[5:]].items()}
        return names.get(value, value)
    return value


def decode(data: bytes, type: str = "NetParameter", what: str = "caffemodel") -> Message:
    """The message of ``type`` in ``data`` (protobuf binary)."""
    r = _Reader(data, what)
    return r.message(type, 0, len(data))


# ----- writing (tests and tools write caffemodels through the same schema) ------------

def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _scalar(kind: str, value: Any) -> int:
    if kind.startswith("enum:"):
        return ENUMS[kind[5:]][value] if isinstance(value, str) else int(value)
    return int(value)


def encode(values: Mapping[str, Any], type: str = "NetParameter") -> bytes:
    """``values`` (field name -> value, list for repeated fields, dict for messages, numpy
    arrays for float data) as a protobuf binary message of ``type``."""
    out = bytearray()
    fields = MESSAGES[type]
    for name, value in values.items():
        f = fields[name]
        items = list(value) if f.repeated and not isinstance(value, np.ndarray) else [value]
        if f.message is not None:
            for item in items:
                body = encode(item, f.message)
                out += _key(f.number, 2) + _varint(len(body)) + body
        elif f.kind in ("string", "bytes"):
            for item in items:
                body = item.encode() if isinstance(item, str) else bytes(item)
                out += _key(f.number, 2) + _varint(len(body)) + body
        elif f.kind in _FIXED:
            dtype = _FIXED[f.kind][0]
            if f.repeated:  # packed
                body = np.ascontiguousarray(np.asarray(value, dtype=dtype)).ravel().tobytes()
                out += _key(f.number, 2) + _varint(len(body)) + body
            else:
                out += _key(f.number, _FIXED[f.kind][2]) + np.asarray(value, dtype=dtype).tobytes()
        else:
            for item in items:
                out += _key(f.number, 0) + _varint(_scalar(f.kind, item))
    return bytes(out)
