"""What the Caffe layer rules import: the layer context, the rule table, shared helpers.

A rule takes a :class:`LayerContext` and returns the layer's top values.  The context
reads the layer's parameter message (``ctx.param("convolution")``), its bottoms
(``ctx.inputs``), and its blobs (``ctx.blob(i, shape)``: from the caffemodel, checked
against the shape the layer needs, or random when no caffemodel was given), and builds
IR through ``ctx.op``; every node it builds carries the layer's name, type and line.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ...ir import Builder, DType, Graph, Value
from ..base import RuleContext, RuleTable
from .message import CaffeError, Message

__all__ = ["LayerContext", "RULES", "rule", "CaffeError", "Message", "spatial_param", "channel_shape", "f32",
           "blob_shape", "layer_where"]

RULES = RuleTable()
rule = RULES.rule
Rule = Callable[["LayerContext"], Sequence[Value]]


class LayerContext(RuleContext):
    """One layer being mapped: its message, bottoms, blobs and a builder carrying its provenance."""

    __slots__ = ("layer", "type", "name", "where", "inputs", "graph", "b", "blobs", "rng")

    def __init__(self, graph: Graph, layer: Message, type: str, path: str, inputs: list[Value],
                 blobs: list[Message] | None, rng: np.random.Generator):
        self.layer = layer
        self.type = type
        self.name = layer.get("name") or f"{type.lower()}_{layer.line}"
        self.where = layer_where(layer, type, path)
        line = f":{layer.line}" if layer.line is not None else ""
        self.inputs = inputs
        self.graph = graph
        self.b = Builder(graph, None, {"origin": f"caffe {type}", "source": f"{path}{line}", "module": self.name})
        self.blobs = blobs
        self.rng = rng

    # ----- reading the layer --------------------------------------------------------

    def fail(self, why: str) -> CaffeError:
        return CaffeError(f"{self.where}: {why}")

    def param(self, kind: str) -> Message:
        """The layer's ``<kind>_param`` message (defaults when the prototxt leaves it out)."""
        return self.layer.get(f"{kind}_param")

    def input(self, i: int = 0) -> Value:
        if i >= len(self.inputs):
            raise self.fail(f"needs at least {i + 1} bottom blob(s), has {len(self.inputs)}")
        return self.inputs[i]

    def axis(self, axis: int, rank: int) -> int:
        a = axis + rank if axis < 0 else axis
        if not 0 <= a < rank:
            raise self.fail(f"axis {axis} is out of range for a blob of rank {rank}")
        return a

    # ----- blobs --------------------------------------------------------------------

    def blob_array(self, i: int, shape: Sequence[int], init: str = "weight") -> np.ndarray:
        """Blob ``i`` as a float32 array of ``shape``: from the caffemodel (its shape checked), or
        random by ``init`` ("weight", "bias", "positive", "scale") when no caffemodel was given."""
        shape = tuple(int(d) for d in shape)
        if self.blobs is None:
            return _random(self.rng, shape, init)
        if i >= len(self.blobs):
            raise self.fail(f"the caffemodel has {len(self.blobs)} blob(s) for this layer, it needs blob {i} "
                            f"of shape {list(shape)}; the caffemodel does not belong to this prototxt")
        blob = self.blobs[i]
        data = blob.get("data")
        if len(data) == 0 and len(blob.get("double_data")):
            data = blob.get("double_data")
        data = np.asarray(data, dtype=np.float32)
        declared = blob_shape(blob)
        if declared is not None and int(np.prod(declared)) != data.size:
            raise self.fail(f"blob {i} declares shape {list(declared)} but holds {data.size} values; "
                            "the caffemodel is corrupt")
        have = declared if declared is not None else (data.size,)
        if _squeeze(have) != _squeeze(shape):
            raise self.fail(f"blob {i} has shape {list(have)}, the layer needs {list(shape)}")
        return data.reshape(shape)

    def blob(self, i: int, shape: Sequence[int], init: str = "weight", label: str | None = None) -> Value:
        return self.b.const(self.blob_array(i, shape, init), name=f"{self.name}.{label or f'blob{i}'}")


def layer_where(layer: Message, type: str, path: str) -> str:
    """How errors name a layer: ``layer 'conv1' (Convolution, deploy.prototxt:12)``."""
    line = f":{layer.line}" if layer.line is not None else ""
    return f"layer {layer.get('name')!r} ({type or 'no type'}, {path}{line})"


def blob_shape(blob: Message) -> tuple[int, ...] | None:
    """A blob's shape: its ``shape`` message, or the legacy num / channels / height / width."""
    if blob.has("shape"):
        return tuple(int(d) for d in blob.get("shape").list("dim"))
    legacy = [blob.get(k) for k in ("num", "channels", "height", "width")]
    if any(legacy):
        return tuple(int(d) for d in legacy)
    return None


def _squeeze(shape: Sequence[int]) -> tuple[int, ...]:
    """Leading 1s dropped: legacy 4-d blobs pad an InnerProduct weight as 1 x 1 x out x in."""
    s = list(shape)
    while len(s) > 1 and s[0] == 1:
        s.pop(0)
    return tuple(s)


def _random(rng: np.random.Generator, shape: tuple[int, ...], init: str) -> np.ndarray:
    if init == "weight":
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        return (rng.standard_normal(shape) / np.sqrt(max(fan_in, 1))).astype(np.float32)
    if init == "bias":
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)
    if init in ("positive", "scale"):
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    raise ValueError(f"unknown blob init {init!r}")


def spatial_param(ctx: LayerContext, p: Message, name: str, default: int | None, n: int = 2) -> tuple[int, ...]:
    """kernel / stride / pad of a Convolution or Pooling: ``name_h`` / ``name_w``, or ``name`` (one
    value for every spatial dim, or one per dim)."""
    field = {"kernel": "kernel_size"}.get(name, name)
    if n == 2 and (p.has(f"{name}_h") or p.has(f"{name}_w")):
        values = [int(p.get(f"{name}_h")), int(p.get(f"{name}_w"))]
    else:
        values = [int(v) for v in p.list(field)]
        if not values:
            if default is None:
                raise ctx.fail(f"sets no {field} (or {name}_h and {name}_w)")
            return (default,) * n
        if len(values) == 1:
            values = values * n
        elif len(values) != n:
            raise ctx.fail(f"{field} has {len(values)} values for {n} spatial dims")
    if name != "pad" and min(values) < 1:  # the schema's uint already keeps pad from going negative
        raise ctx.fail(f"{name} {values} must be at least 1")
    return tuple(values)


def channel_shape(x: Value, axis: int, n: int) -> tuple[int, ...]:
    """The shape that broadcasts a parameter over axes [axis, axis + n) of ``x``."""
    return tuple(x.shape[axis:axis + n]) + (1,) * (x.rank - axis - n)


def f32(ctx: LayerContext, value: float) -> Value:
    return ctx.scalar(value, DType.f32)
