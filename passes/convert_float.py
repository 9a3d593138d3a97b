"""Reduced float precision: ``op(x: f32) : f32 -> op(x: f16) : f16`` for the whole graph but a keep-list.

Every node whose floating inputs and outputs are all f32 computes in the low type
(``f16`` or ``bf16``) unless it is kept: its op is on ``keep_ops`` (by default the ops
whose f32 reference overflows or loses too much in f16: norms, softmax, sums and means,
exponentials and logarithms, powers), or its position in ``graph.nodes`` order is in
``keep`` (a precision search reruns the pass on fresh copies of one float graph with a
growing ``keep``), or it has regions (a body computes in its own types), or it quantises
or dequantises (an imported quantised model's scales stay as the model gave them, so its
integers do not change).  Integer and bool values are left alone; so are other float types
(an f64 island stays f64).

The rewrite, one forward sweep:

- an f32 constant read by a low node becomes a low constant, converted once here, not a
  cast at run time (the f32 constant stays while a kept node still reads it); finite values
  beyond the low type's range saturate to its largest instead of becoming inf;
- a low node reads the low twin of each f32 operand: its producer's low output, or a
  ``cast`` inserted once per value where an f32 value (a graph input, a kept node's
  output) enters the low part;
- a low node's f32 outputs become low; a ``cast`` back to f32 feeds kept nodes and graph
  outputs, and a low reader of that cast reads its source instead, so a chain
  ``cast(cast(x, f16), f32)`` made here never reaches a low node;
- attributes naming ``f32`` (``cast``'s and ``iota``'s ``dtype``) name the low type.

``keep_io_types=True`` (the default) keeps the graph's signature: f32 inputs are cast
down where they enter, f32 outputs cast back up.  With ``False`` the f32 inputs and
outputs themselves become low; that changes the signature, which a ``PassManager``
refuses, so it is for a caller that runs the pass directly and feeds low inputs.

A converted graph has no f32 node left but kept ones, so converting it again changes
nothing.  A node kept by position is marked in its meta (``keep_precision``), so a later
run on the same graph keeps it too although the positions have moved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

from accelir.errors import AccelirError, VerificationError
from accelir.ir import DType, Graph, Node, TensorType, Value
from accelir.ops import registry
from accelir.ops.qdq import QDQ_OPS

from .convert_once import converted
from .pattern import rewrite_budget
from .registry import register_pass

__all__ = ["ConvertFloat", "DEFAULT_KEEP_OPS", "LOW_DTYPES", "REGION_OPS", "convert_float16", "convert_bfloat16",
           "finite_max", "low_precision_nodes", "saturate"]

#: The ops that stay f32 by default: their reference squares, sums or exponentiates, so an
#: f16 result overflows (65504 is f16's largest) or drowns small terms in large ones.
DEFAULT_KEEP_OPS: frozenset[str] = frozenset({
    "layer_norm", "rms_norm", "batch_norm", "skip_layer_norm", "skip_rms_norm",
    "softmax", "log_softmax",
    "reduce_sum", "reduce_mean", "reduce_prod", "cumsum", "cumprod",
    "exp", "expm1", "log", "log1p", "pow",
})

#: Ops with region bodies: their bodies have their own types, so the node stays as it is.
REGION_OPS: frozenset[str] = frozenset({"fusion", "cond", "scan", "while_loop"})

LOW_DTYPES: dict[str, DType] = {"f16": DType.f16, "bf16": DType.bf16}

_KEEP_META = "keep_precision"


def finite_max(low: DType) -> float:
    """The largest finite value of ``low`` (f16: 65504); numpy's finfo knows no bf16."""
    return float(ml_dtypes.finfo(low.numpy).max)


def saturate(arr: np.ndarray, low: DType) -> np.ndarray:
    """``arr`` in ``low`` with its finite values clipped to ``low``'s range: a mask constant such as
    f32's lowest (-3.4e38) becomes f16's lowest, not -inf (which turns ``0 * mask`` into NaN);
    infinities stay infinite."""
    top = finite_max(low)
    with np.errstate(invalid="ignore"):
        clipped = np.where(np.isfinite(arr), np.clip(arr, -top, top), arr)
    return clipped.astype(low.numpy)


def _float_types(node: Node) -> list[DType]:
    return [v.dtype for v in (*node.inputs, *node.outputs) if v.dtype.is_float]


def _is_cast_up(v: Value, low: DType) -> Value | None:
    """The low source of ``v = cast(src: low, f32)``, else None."""
    p = v.producer
    if p is not None and p.op == "cast" and p.attrs["dtype"] is DType.f32 and p.inputs[0].dtype is low:
        return p.inputs[0]
    return None


@dataclass(frozen=True)
class ConvertFloat:
    """Compute the f32 part of a graph in ``dtype`` ("f16" or "bf16") but for the kept nodes."""

    dtype: str = "f16"
    keep_ops: frozenset[str] = DEFAULT_KEEP_OPS
    keep: frozenset[int] = frozenset()
    keep_io_types: bool = True

    def __post_init__(self) -> None:
        if self.dtype not in LOW_DTYPES:
            raise AccelirError(f"ConvertFloat: dtype must be one of {', '.join(LOW_DTYPES)}, got {self.dtype!r}")
        object.__setattr__(self, "keep_ops", frozenset(self.keep_ops))
        object.__setattr__(self, "keep", frozenset(self.keep))

    @property
    def __name__(self) -> str:
        return "convert_float16" if self.dtype == "f16" else "convert_bfloat16"

    @property
    def low(self) -> DType:
        return LOW_DTYPES[self.dtype]

    def lowers(self, node: Node, position: int) -> bool:
        """Whether ``node`` (at ``position`` in the graph's order) is to compute in the low type."""
        if node.op == "constant" or node.op in REGION_OPS or node.regions or node.op in self.keep_ops \
                or node.op in QDQ_OPS:
            return False
        if position in self.keep or node.meta.get(_KEEP_META):
            return False
        if node.op == "cast" and not node.attrs["dtype"].is_float:
            return False  # f32 -> int stays exact for integers up to 2**24; f16 holds them to 2048
        floats = _float_types(node)
        return bool(floats) and all(dt is DType.f32 for dt in floats)

    def __call__(self, graph: Graph) -> bool:
        return _Conversion(self, graph).run()


class _Conversion:
    """One run of :class:`ConvertFloat` over one graph: the low twin of each f32 value, made once."""

    def __init__(self, options: ConvertFloat, graph: Graph):
        self.options, self.graph, self.low = options, graph, options.low
        self.twin: dict[int, Value] = {}     # id(f32 value) -> its low twin
        self.made: list[Node] = []           # casts and constants made here, removed again when unused
        self.converted: list[Node] = []      # the f32 constants converted, removed when no kept node reads them
        self.changed = False

    def run(self) -> bool:
        g, opts = self.graph, self.options
        nodes = list(g.nodes)
        for position, node in enumerate(nodes):
            if position in opts.keep and node.op != "constant":
                node.meta[_KEEP_META] = "f32"
        if not opts.keep_io_types:
            self._lower_inputs()
        for position, node in enumerate(nodes):
            if opts.lowers(node, position):
                if not rewrite_budget.allow(lambda n=node: f"{opts.__name__}: {n.describe()} in {self.low}"):
                    break
                self._lower(node)
        if not opts.keep_io_types:
            self._lower_outputs()
        self._sweep()
        return self.changed

    # ----- values ---------------------------------------------------------------------------
    def low_twin(self, v: Value, before: Node) -> Value:
        """``v`` (f32) in the low type: a producer's low output, a converted constant, or a cast."""
        found = self.twin.get(id(v))
        if found is not None:
            return found
        src = _is_cast_up(v, self.low)
        if src is not None:
            found = src
        elif v.is_constant:
            low = self.low
            arr = converted(("convert_float", str(low)), np.asarray(v.const_value), lambda a: saturate(a, low))
            found = self.graph.const(arr, name=f"{v.producer.attrs['name']}_{self.low}", before=v.producer.next,
                                     meta=v.producer.meta)
            self.made.append(found.producer)
            self.converted.append(v.producer)
        else:
            anchor = v.producer.next if v.producer is not None else self.graph.first
            found = self._cast(v, self.low, anchor)
        self.twin[id(v)] = found
        return found

    def _cast(self, v: Value, dtype: DType, before: Node | None) -> Value:
        meta = dict(v.producer.meta) if v.producer is not None else {}
        meta["pass"] = self.options.__name__
        out = self.graph.make("cast", [v], {"dtype": dtype}, meta=meta, before=before).output
        self.made.append(out.producer)
        self.changed = True
        return out

    # ----- nodes ----------------------------------------------------------------------------
    def _attrs(self, node: Node) -> dict[str, Any]:
        return {k: (self.low if v is DType.f32 else v) for k, v in node.attrs.items()}

    def _lower(self, node: Node) -> None:
        g = self.graph
        changed = self.changed
        inputs = [self.low_twin(v, node) if v.dtype is DType.f32 else v for v in node.inputs]
        try:
            new = g.make(node.op, inputs, self._attrs(node), meta=node.meta, before=node,
                         names=[o.name for o in node.outputs])
        except (registry.TypeRuleError, VerificationError):
            # the op takes no low type here: it stays f32, its new casts are swept away unless a
            # later low node reads them (which reports its own change), so this node is no change
            self.changed = changed
            return
        self.changed = True
        after = new.next
        for old, out in zip(node.outputs, new.outputs):
            if old.dtype is out.dtype:
                old.replace_all_uses_with(out)
                continue
            up = self._cast(out, DType.f32, after)
            up.name = old.name
            old.replace_all_uses_with(up)
            self.twin[id(up)] = out
        g.remove(node)

    def _lower_inputs(self) -> None:
        """Make the f32 graph inputs low; their old readers read a cast back up until lowered."""
        g = self.graph
        for x in g.inputs:
            if x.dtype is not DType.f32:
                continue
            readers = x.uses()
            x.type = TensorType(self.low, x.shape)
            self.changed = True
            if not readers:
                continue
            up = self._cast(x, DType.f32, g.first)
            for reader, i in readers:
                reader.replace_input(i, up)
            self.twin[id(up)] = x

    def _lower_outputs(self) -> None:
        g = self.graph
        outs = []
        for v in g.outputs:
            if v.dtype is DType.f32:
                v = self.low_twin(v, None)
                self.changed = True
            outs.append(v)
        g.set_outputs(outs)

    def _sweep(self) -> None:
        """Remove the casts and constants made here that nothing reads (a kept reader took the f32
        value, or a low reader took the source of a cast back up), and the f32 constants no kept
        node reads."""
        outputs = {id(v) for v in self.graph.outputs}
        for node in [*reversed(self.made), *self.converted]:
            if node.graph is self.graph and not any(o.num_uses or id(o) in outputs for o in node.outputs):
                self.graph.remove(node)


def low_precision_nodes(graph: Graph, dtype: str) -> list[Node]:
    """The nodes of ``graph`` that compute in ``dtype`` ("f16" / "bf16"), casts excluded."""
    low = LOW_DTYPES[dtype]
    return [n for n in graph.nodes if n.op not in ("constant", "cast") and low in _float_types(n)]


convert_float16 = register_pass("convert_float16")(ConvertFloat("f16"))
convert_bfloat16 = register_pass("convert_bfloat16")(ConvertFloat("bf16"))
