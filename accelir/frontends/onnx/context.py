"""The ONNX rule context: what every op rule imports.

A rule gets a :class:`NodeContext` (the node, its input values, attributes, a builder
and the importer's import-time values) and returns the values of the node's outputs,
or ``None`` to fall back on the function body that the ONNX schema defines for the op
(``Celu``, ``GroupNormalization``, the losses, ...), which the driver then inlines like
a model-local function.  Rules register with :func:`rule` into ``RULES`` (the standard
domain) or ``MS_RULES`` (com.microsoft); the helpers below are the idioms several rule
modules share.  Rule modules import this module (and shared ones), never the driver
nor each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ... import dims as D
from ...errors import UnsupportedOpError
from ...ir import DType, Graph, TensorType, Value
from ...passes.fold_constants import FoldConstants
from ..base import RuleContext, RuleTable
from .proto import DynamicValueError, ImportScope, OnnxImportError, free_names, onnx_dtype

__all__ = ["NodeContext", "Rule", "RULES", "MS_RULES", "rule", "HUGE", "IMPORT_VALUE_BYTES", "fits_import_budget",
           "value_bytes", "norm_axis", "select_on_runtime_axis", "static_dims", "reshape", "conv_attrs", "reverse_prefixes",
           "StaticSequence", "MAX_UNROLLED_NODES", "check_unrolled",
           # from .proto, for the rules
           "OnnxImportError", "DynamicValueError", "ImportScope", "onnx_dtype", "free_names"]


HUGE = 1 << 62  # ONNX uses INT64_MAX / INT64_MIN as open slice ends

# The most bytes one value computed at import may take: the fold_constants pass's cap, so
# the importer builds no constant the pass would refuse to fold.  A larger Range or EyeLike
# stays a run-time computation; sizes are Python ints, which do not wrap around.
IMPORT_VALUE_BYTES: int = FoldConstants.max_bytes


def fits_import_budget(shape: Sequence[D.Dim], dtype: DType) -> bool:
    """Whether a value of ``shape`` and ``dtype`` may be computed at import (symbolic: no)."""
    n = D.dim_prod(shape)
    return type(n) is int and n * dtype.itemsize <= IMPORT_VALUE_BYTES


@dataclass(frozen=True)
class StaticSequence:
    """An ONNX sequence whose length is known at import: one Value per item.  The IR holds
    tensors only, so the sequence ops (sequence.py) rewrite this list while importing and no
    sequence reaches the graph; ``dtype`` is the element type (SequenceEmpty's, for an empty one)."""

    items: tuple[Value, ...]
    dtype: DType

    def describe(self) -> str:
        return f"a sequence of {len(self.items)} {self.dtype} tensors"


# how many nodes one unrolling at import (a Loop carrying a sequence, a SequenceMap) may build, the
# unrollings nested in it included: a limit per level alone multiplies with each level of nesting
MAX_UNROLLED_NODES = 1 << 15


def check_unrolled(ctx: "NodeContext", start: int, done: int, why: str, instead: str) -> None:
    """Refuse the unrolling of ``ctx``'s node (``why`` it is unrolled) once it has built over
    ``MAX_UNROLLED_NODES`` nodes since ``start`` (the graph's node count when it began), ``done``
    iterations in; ``instead`` says what to do."""
    if ctx.graph.num_nodes(recursive=False) - start > MAX_UNROLLED_NODES:
        raise ctx.unsupported(f"{why}, and its first {done} iterations (nested unrollings included) built over "
                              f"{MAX_UNROLLED_NODES:,} nodes; {instead}")


class NodeContext(RuleContext):
    """What a rule sees: the node, its input values, its attributes and a builder (``b``)."""

    def __init__(self, imp: Any, scope: ImportScope, node: Any, inputs: list[Value | None], label: str):
        from onnx import helper
        self.imp = imp
        self.scope = scope
        self.graph: Graph = scope.graph
        self.node = node
        self.inputs = inputs
        self.label = label
        self.opset = scope.opsets.get("", 1)
        self.attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        origin = node.name or node.op_type
        self.b = self.graph.builder(meta={"origin": scope.origin_prefix + origin})

    def input(self, i: int) -> Value | None:
        return self.inputs[i] if i < len(self.inputs) else None

    def attr(self, name: str, default: Any = None) -> Any:
        v = self.attrs.get(name, default)
        return v.decode() if isinstance(v, bytes) else v

    def wants(self, i: int) -> bool:
        """Whether the node's output ``i`` is used (named)."""
        return i < len(self.node.output) and bool(self.node.output[i])

    def known(self, i: int) -> np.ndarray | None:
        v = self.input(i)
        return None if v is None else self.imp.value_of(v)

    def dynamic(self, i: int) -> bool:
        """Whether input ``i`` is given but known only at run time.  A rule then keeps it as a value,
        through a data-dependent op (accelir/ops/dynamic.py): onnxruntime runs it, XLA pads it where
        a bound exists and otherwise refuses it naming the input; binding the input with ``static_inputs`` makes it known instead.  A value
        unknown because it is over the import budget is not: ``values`` refuses it as too large."""
        v = self.input(i)
        return v is not None and self.imp.value_of(v) is None and fits_import_budget(v.shape, v.dtype)

    def values(self, i: int, what: str) -> np.ndarray:
        """Input ``i``'s value now; shape-like inputs must be computable at import."""
        v = self.input(i)
        arr = self.imp.value_of(v)
        if arr is None and not fits_import_budget(v.shape, v.dtype):
            raise OnnxImportError(f"its {what} (input {i}) is {v.type}, {value_bytes(v.type)}: over the "
                                  f"{IMPORT_VALUE_BYTES:,} bytes a value computed at import may take")
        if arr is None:
            names = self.imp.graph_inputs_behind(v)
            raise DynamicValueError(f"its {what} (input {i}) is computed from run-time data"
                                    + (f" (graph inputs {names})" if names else "")
                                    + "; accelir needs it when building the graph: bind those inputs with "
                                      "import_onnx(..., static_inputs=...) or fix the dims in the model", names)
        return arr

    def ints(self, i: int, what: str) -> tuple[D.Dim, ...]:
        arr = self.values(i, what)
        return tuple(x if isinstance(x, str) else int(x) for x in np.asarray(arr).reshape(-1))

    def axes(self, input_index: int, attr: str = "axes") -> tuple[int, ...] | None:
        """Axes from input ``input_index`` (newer opsets) or the attribute (older ones)."""
        if self.input(input_index) is not None:
            out = self.ints(input_index, attr)
            if any(isinstance(a, str) for a in out):
                raise DynamicValueError(f"its {attr} depend on symbolic dims")
            return tuple(int(a) for a in out)
        a = self.attr(attr)
        return None if a is None else tuple(int(x) for x in a)

    def unsupported(self, why: str) -> UnsupportedOpError:
        return UnsupportedOpError(f"{self.label}: {why}", [self.node.op_type])


Rule = Callable[[NodeContext], "Sequence[Value | None] | None"]
RULES = RuleTable()  # the standard domain's ops
MS_RULES = RuleTable()  # com.microsoft ops
rule = RULES.rule


def select_on_runtime_axis(ctx: NodeContext, i: int, rank: int, build: Callable[[int], Value | None]) -> Value:
    """The result for an axis known only at run time (input ``i``, negative counting from the end):
    ``build(axis)`` for each axis that may be meant (None: not a valid one), the one asked for
    selected.  Every backend runs it; it needs every axis to give a result of one type, as a
    scan's do, else the axis must be bound (DynamicValueError)."""
    refusal = DynamicValueError(f"its axis (input {i}) is known only at run time, and the result's shape "
                                "depends on it", ctx.imp.graph_inputs_behind(ctx.input(i)))
    try:
        outs = {a: build(a) for a in range(rank)}
    except (UnsupportedOpError, OnnxImportError):  # an axis it cannot be taken along
        raise refusal from None
    outs = {a: v for a, v in outs.items() if v is not None}
    if not outs or len({v.type for v in outs.values()}) != 1:
        raise refusal
    axis = ctx.op("reshape", ctx.cast(ctx.input(i), DType.i64), shape=())
    axis = ctx.op("where", ctx.op("lt", axis, ctx.scalar(0, DType.i64)),
                  ctx.op("add", axis, ctx.scalar(rank, DType.i64)), axis)
    *rest, (_, out) = sorted(outs.items())
    for a, v in rest:
        out = ctx.op("where", ctx.op("eq", axis, ctx.scalar(a, DType.i64)), v, out)
    return out


def norm_axis(ctx: NodeContext, axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise OnnxImportError(f"{ctx.label}: axis {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


def static_dims(ctx: NodeContext, dims: Sequence[D.Dim], what: str, built: str) -> tuple[int, ...]:
    """``dims`` as ints, or the error naming ``what`` is symbolic and which import-time ``built`` needs it."""
    if not all(type(d) is int for d in dims):
        raise ctx.unsupported(f"symbolic {what} {list(dims)}: the {built} is built at import")
    return tuple(int(d) for d in dims)


def reshape(ctx: NodeContext, v: Value, shape: Sequence[D.Dim]) -> Value:
    return v if tuple(v.shape) == tuple(shape) else ctx.op("reshape", v, shape=tuple(shape))


def value_bytes(t: TensorType) -> str:
    """A value's size in words, for errors about the import budget."""
    n = D.dim_prod(t.shape)
    return f"{n * t.dtype.itemsize:,} bytes" if type(n) is int else "a symbolic size"


def _spatial_padding(ctx: NodeContext, x: Value, kernel: Sequence[int], strides: Sequence[int],
                     dilations: Sequence[int]) -> tuple[tuple[int, int], ...]:
    n = len(kernel)
    auto = ctx.attr("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        pads = list(ctx.attr("pads", [0] * (2 * n)))
        return tuple((int(pads[i]), int(pads[i + n])) for i in range(n))
    if auto == "VALID":
        return ((0, 0),) * n
    out = []
    for i in range(n):
        size = x.shape[2 + i]
        span = dilations[i] * (kernel[i] - 1) + 1
        if strides[i] == 1:
            total = span - 1
        elif type(size) is int:
            total = max(0, (-(-size // strides[i]) - 1) * strides[i] + span - size)
        else:
            raise ctx.unsupported(f"auto_pad {auto} with a stride on a symbolic spatial dim")
        small, big = total // 2, total - total // 2
        out.append((small, big) if auto == "SAME_UPPER" else (big, small))
    return tuple(out)


def conv_attrs(ctx: NodeContext, x: Value, kernel: Sequence[int]) -> dict[str, Any]:
    n = len(kernel)
    strides = tuple(ctx.attr("strides", [1] * n))
    dilations = tuple(ctx.attr("dilations", [1] * n))
    return {"stride": strides, "dilation": dilations,
            "padding": _spatial_padding(ctx, x, kernel, strides, dilations)}


def reverse_prefixes(ctx: NodeContext, x: Value, lengths: Value, time_axis: int, batch_axis: int) -> Value:
    """ONNX ReverseSequence: along ``time_axis``, reverses the first ``lengths[b]`` items of
    each batch row ``b`` and keeps the rest in place."""
    steps = x.shape[time_axis]
    idx_shape = tuple(steps if i == time_axis else x.shape[i] if i == batch_axis else 1 for i in range(x.rank))
    t = ctx.op("iota", shape=idx_shape, axis=time_axis, dtype=DType.i64)
    n = reshape(ctx, ctx.cast(lengths, DType.i64),
                 tuple(x.shape[batch_axis] if i == batch_axis else 1 for i in range(x.rank)))
    src = ctx.op("where", ctx.op("lt", t, n), ctx.op("sub", ctx.op("sub", n, ctx.scalar(1, DType.i64)), t), t)
    return ctx.op("take_along_axis", x, ctx.op("broadcast_to", src, shape=x.shape), axis=time_axis)
