"""The op registry: each op is defined once, with its attribute schema, type rule,
numpy reference, flags and (for composites) a decomposition into core ops.

Concerns outside this package (lowerings, frontends, passes) register their own
rule per op in their own tables, keyed by the op name, as jax does with
``register_lowering``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .. import dims as _dims
from ..dims import Dim
from ..errors import AccelirError, VerificationError
from ..types import DType, TensorType
from .activations import ACTIVATIONS  # re-exported: the activation table lives in activations.py

__all__ = [
    "AttrSpec",
    "OpDef",
    "TypeRuleError",
    "REGISTRY",
    "register",
    "get",
    "is_registered",
    "rule_or_decomposition",
    "normalize_attrs",
    "infer_types",
    "broadcast_shapes",
    "REQUIRED",
    "ACTIVATIONS",
]

REQUIRED = object()


class TypeRuleError(AccelirError):
    """Raised by a type rule; turned into a VerificationError naming the node."""


def _is_dim(x: Any) -> bool:
    return (type(x) is int) or isinstance(x, str)


_KIND_CHECKS: dict[str, Callable[[Any], bool]] = {
    "int": lambda x: type(x) is int,
    "float": lambda x: isinstance(x, (int, float)) and not isinstance(x, bool),
    "optional_float": lambda x: x is None or (isinstance(x, (int, float)) and not isinstance(x, bool)),
    "optional_int": lambda x: x is None or type(x) is int,
    "bool": lambda x: isinstance(x, bool),
    "str": lambda x: isinstance(x, str),
    "ints": lambda x: isinstance(x, tuple) and all(type(v) is int for v in x),
    "floats": lambda x: isinstance(x, tuple) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                     for v in x),
    "dims": lambda x: isinstance(x, tuple) and all(_is_dim(v) for v in x),
    "optional_ints": lambda x: x is None or (isinstance(x, tuple) and all(type(v) is int for v in x)),
    "symbols": lambda x: isinstance(x, tuple) and all(isinstance(v, str) and v.isidentifier() for v in x),
    "dtype": lambda x: isinstance(x, DType),
    "pairs": lambda x: isinstance(x, tuple) and all(isinstance(p, tuple) and len(p) == 2
                                                    and all(type(v) is int for v in p) for p in x),
}


@dataclass(frozen=True)
class AttrSpec:
    kind: str
    default: Any = REQUIRED
    choices: tuple | None = None

    def check(self, op: str, name: str, value: Any) -> Any:
        if self.kind == "float" and type(value) is int:
            value = float(value)
        if self.kind == "floats" and isinstance(value, tuple):
            value = tuple(float(v) for v in value)
        if self.kind == "optional_float" and type(value) is int:
            value = float(value)
        if self.kind == "dims" and isinstance(value, tuple):
            value = tuple(_dims.canonical(v) if isinstance(v, str) else v for v in value)
        if not _KIND_CHECKS[self.kind](value):
            raise TypeRuleError(f"{op}: attribute {name!r} must be {self.kind}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise TypeRuleError(f"{op}: attribute {name!r} must be one of {self.choices}, got {value!r}")
        return value


TypeRule = Callable[[Sequence[TensorType], Mapping[str, Any]], Sequence[TensorType]]


@dataclass
class OpDef:
    """One op.

    ``reference(inputs, attrs, regions)`` returns a list of numpy arrays.
    ``decompose(builder, inputs, attrs)`` (composites) returns the replacement values.
    """

    name: str
    type_rule: TypeRule
    reference: Callable[[list, dict, tuple], list]
    min_inputs: int = 1
    max_inputs: int | None = 1
    attrs: dict[str, AttrSpec] = field(default_factory=dict)
    pure: bool = True
    commutative: bool = False
    elementwise: bool = False
    composite: bool = False
    decompose: Callable | None = None
    has_regions: bool = False
    doc: str = ""
    # Data-dependent ops: how many unbacked dims the node introduces (its ``syms`` attribute names
    # them, fresh in the graph) and their bounds ``(low, high or None)``; see accelir/unbacked.py.
    unbacked: Callable[[Sequence[TensorType], Mapping[str, Any]], int] | None = None
    bounds: Callable[[Sequence[TensorType], Mapping[str, Any]], Sequence[tuple[int, int | None]]] | None = None

    def check_arity(self, n: int) -> None:
        if n < self.min_inputs or (self.max_inputs is not None and n > self.max_inputs):
            if self.max_inputs is None:
                want = f"at least {self.min_inputs}"
            elif self.min_inputs == self.max_inputs:
                want = str(self.min_inputs)
            else:
                want = f"{self.min_inputs} to {self.max_inputs}"
            raise TypeRuleError(f"{self.name}: takes {want} inputs, got {n}")


REGISTRY: dict[str, OpDef] = {}


def register(opdef: OpDef) -> OpDef:
    if opdef.name in REGISTRY:
        raise ValueError(f"op {opdef.name!r} is already registered")
    REGISTRY[opdef.name] = opdef
    return opdef


def is_registered(name: str) -> bool:
    return name in REGISTRY


def rule_or_decomposition(rules: Mapping[str, Any], op: str, via_decomposition: Any) -> Any:
    """A backend's rule for ``op``: its own in ``rules``, else for a composite
    ``via_decomposition`` (the backend's lowering through the op's decomposition into core
    ops, as jax's ``mlir.lower_fun``), so a composite needs a rule only where the backend has
    a better kernel; None when there is neither."""
    rule = rules.get(op)
    if rule is None and op in REGISTRY and REGISTRY[op].decompose is not None:
        return via_decomposition
    return rule


def get(name: str) -> OpDef:
    try:
        return REGISTRY[name]
    except KeyError:
        raise TypeRuleError(f"unknown op {name!r}") from None


def normalize_attrs(op: str, attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Check attributes against the op's schema and fill in defaults."""
    d = get(op)
    out: dict[str, Any] = {}
    for k in attrs:
        if k not in d.attrs:
            allowed = ", ".join(d.attrs) or "none"
            raise TypeRuleError(f"{op}: unknown attribute {k!r} (allowed: {allowed})")
    for k, spec in d.attrs.items():
        if k in attrs:
            out[k] = spec.check(op, k, attrs[k])
        elif spec.default is REQUIRED:
            raise TypeRuleError(f"{op}: missing attribute {k!r}")
        else:
            out[k] = spec.default
    return out


def infer_types(op: str, input_types: Sequence[TensorType], attrs: Mapping[str, Any], *,
                regions: tuple = (), meta: Mapping[str, Any] | None = None) -> list[TensorType]:
    """Output types of ``op`` on these inputs; a VerificationError names what is wrong."""
    try:
        d = get(op)
        d.check_arity(len(input_types))
        if d.has_regions:
            return list(d.type_rule(input_types, attrs, regions))
        return list(d.type_rule(input_types, attrs))
    except TypeRuleError as e:
        where = ""
        if meta:
            src = "; ".join(str(meta[k]) for k in ("module", "source", "origin") if meta.get(k))
            where = f" [{src}]" if src else ""
        ins = ", ".join(str(t) for t in input_types)
        raise VerificationError(f"{e} (inputs: {ins}){where}") from None


# ----- shared type-rule helpers ------------------------------------------------------

def broadcast_dim(a: Dim, b: Dim, op: str = "") -> Dim:
    if a == b:
        return a
    if a == 1:
        return b
    if b == 1:
        return a
    if type(a) is int and type(b) is int:
        raise TypeRuleError(f"{op}: cannot broadcast dims {a} and {b}")
    # A symbolic dim against a static one (> 1) must be equal to it at run time.
    if type(a) is int:
        return a
    if type(b) is int:
        return b
    raise TypeRuleError(f"{op}: cannot broadcast symbolic dims {a!r} and {b!r}")


def broadcast_shapes(*shapes: Sequence[Dim], op: str = "") -> tuple[Dim, ...]:
    rank = max((len(s) for s in shapes), default=0)
    out: list[Dim] = []
    for i in range(rank):
        d: Dim = 1
        for s in shapes:
            k = i - (rank - len(s))
            if k >= 0:
                d = broadcast_dim(d, s[k], op)
        out.append(d)
    return tuple(out)


def same_dtype(op: str, types: Sequence[TensorType]) -> DType:
    dt = types[0].dtype
    for t in types[1:]:
        if t.dtype != dt:
            raise TypeRuleError(f"{op}: operand dtypes differ ({', '.join(str(x.dtype) for x in types)}); "
                                "insert an explicit cast")
    return dt


def norm_axis(op: str, axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise TypeRuleError(f"{op}: axis {axis} out of range for rank {rank}")
    return axis % rank if rank else 0


def np_dtype_compute(dt: np.dtype) -> np.dtype:
    """The numpy dtype a reference computes in: f16 and bf16 compute in f32."""
    if dt == np.float16 or dt.name == "bfloat16":
        return np.dtype(np.float32)
    return dt
