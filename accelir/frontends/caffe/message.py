"""A decoded Caffe message: the fields set, the schema's defaults for the others, and
where in the prototxt each came from (so errors can name the line)."""

from __future__ import annotations

from typing import Any

from ...errors import AccelirError
from .schema import MESSAGES, Field

__all__ = ["Message", "CaffeError"]


class CaffeError(AccelirError):
    """A Caffe prototxt or caffemodel that cannot be read, or a layer accelir cannot map."""


class Message:
    """One message of the schema: ``msg.get(name)`` is the field's value (its default when
    unset), ``msg.list(name)`` a repeated field's values, ``msg.has(name)`` whether it was set."""

    __slots__ = ("type", "values", "line")

    def __init__(self, type: str, line: int | None = None):
        self.type = type
        self.values: dict[str, Any] = {}
        self.line = line

    def field(self, name: str) -> Field:
        return MESSAGES[self.type][name]

    def has(self, name: str) -> bool:
        value = self.values.get(name)
        return value is not None and value != []

    def get(self, name: str, default: Any = None) -> Any:
        if name in self.values:
            return self.values[name]
        f = self.field(name)
        if f.repeated:
            return []
        if f.message is not None:
            return Message(f.message)
        return f.default if default is None else default

    def list(self, name: str) -> list:
        value = self.values.get(name, [])
        return value if isinstance(value, list) else [value]

    def add(self, name: str, value: Any) -> None:
        if self.field(name).repeated:
            self.values.setdefault(name, []).append(value)
        else:
            self.values[name] = value

    def __repr__(self) -> str:
        return f"Message({self.type}, {self.values!r})"
