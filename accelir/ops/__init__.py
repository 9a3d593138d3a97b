"""The op registry and the definitions of every op (see ``registry``)."""

from __future__ import annotations

from . import registry
from . import elementwise, reduce, linalg, shape, nn, resize, control, quant, qdq, dynamic, runtime_sized, bincount  # noqa: F401,E401 - registers the ops
from .registry import REGISTRY, AttrSpec, OpDef, TypeRuleError, get, infer_types, is_registered, normalize_attrs

__all__ = ["REGISTRY", "AttrSpec", "OpDef", "TypeRuleError", "get", "infer_types", "is_registered",
           "normalize_attrs", "registry"]
