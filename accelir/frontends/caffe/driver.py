"""Caffe models (a deploy prototxt and, optionally, a caffemodel) into the IR.

The prototxt is read with accelir's own protobuf text parser and the caffemodel with its
own wire reader, both through :mod:`accelir.frontends.caffe.schema`: no Caffe and no
protobuf package are needed.  Layers (``layer``, or the legacy ``layers``) are mapped in
order by the rule modules of this package; a layer whose top is its bottom (in place)
rebinds the blob name to a new value, so the graph stays SSA.  Each layer's value is
named after the layer, and each node carries the layer's name, type and prototxt line.
Without a caffemodel the blobs are random (fixed seed), for inspecting the graph.
"""

from __future__ import annotations

import os
import re
from typing import Any, Sequence

import numpy as np

from ...errors import AccelirError
from ...ir import DType, Graph, TensorType, Value
from . import activation, conv, detection, norm, resize, shape, ssd
from .context import RULES, LayerContext, layer_where
from .message import CaffeError, Message
from .schema import V1_LAYER_TYPES
from .textformat import parse_text
from .wire import decode

__all__ = ["capture_caffe", "read_prototxt", "read_caffemodel"]

RULE_MODULES = (activation, conv, detection, norm, resize, shape, ssd)

# layers that only feed or judge training; a deploy net may still list them
_SKIPPED = {"Silence", "Accuracy", "SoftmaxWithLoss", "EuclideanLoss", "SigmoidCrossEntropyLoss"}


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CaffeError(f"{path}: cannot be read ({e.strerror})") from None


def read_prototxt(path: str | os.PathLike) -> Message:
    """The NetParameter of a prototxt file."""
    path = os.fspath(path)
    raw = _read_bytes(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CaffeError(f"{path}: is not protobuf text format (it holds binary data; a .caffemodel goes "
                         "in caffemodel=...)") from None
    return parse_text(text, "NetParameter", path)


def read_caffemodel(path: str | os.PathLike) -> dict[str, list[Message]]:
    """The blobs of each layer of a caffemodel, by layer name (``layer`` and legacy ``layers``)."""
    path = os.fspath(path)
    data = _read_bytes(path)
    net = decode(data, "NetParameter", path)
    out: dict[str, list[Message]] = {}
    for layer in net.list("layer") + net.list("layers"):
        out[layer.get("name") or ""] = layer.list("blobs")
    if not out:
        raise CaffeError(f"{path}: holds no layers; the file is empty, truncated or not a caffemodel")
    return out


def _layer_type(layer: Message) -> str:
    t = layer.get("type")
    if layer.type == "V1LayerParameter":
        return V1_LAYER_TYPES.get(t, str(t))
    return t or ""


def _active(layer: Message) -> bool:
    """Whether the layer is in the TEST phase net (include / exclude rules on the phase)."""
    include = [r for r in layer.list("include") if r.has("phase")]
    exclude = [r for r in layer.list("exclude") if r.has("phase")]
    if layer.has("phase") and layer.get("phase") != "TEST":
        return False
    if include and not any(r.get("phase") == "TEST" for r in include):
        return False
    return not any(r.get("phase") == "TEST" for r in exclude)


def _declared_inputs(net: Message, path: str) -> list[tuple[str, tuple[int, ...] | None]]:
    names = net.list("input")
    shapes = [tuple(int(d) for d in s.list("dim")) for s in net.list("input_shape")]
    dims = [int(d) for d in net.list("input_dim")]
    if dims and not shapes:
        if len(dims) != 4 * len(names):
            raise CaffeError(f"{path}: {len(dims)} input_dim values for {len(names)} inputs (4 per input)")
        shapes = [tuple(dims[4 * i:4 * i + 4]) for i in range(len(names))]
    return [(n, shapes[i] if i < len(shapes) else None) for i, n in enumerate(names)]


class _Net:
    """The blobs by name as the layers are mapped, and which of them end up as outputs."""

    def __init__(self, graph: Graph, path: str, examples: Sequence[Any]):
        self.graph = graph
        self.path = path
        self.examples = list(examples)
        self.blobs: dict[str, Value] = {}
        self.unused: dict[str, Value] = {}  # the net's outputs: blobs no later layer reads

    def add_input(self, name: str, shape: tuple[int, ...] | None, where: str) -> None:
        index = len(self.graph.inputs)
        if index < len(self.examples):
            ex = np.asarray(self.examples[index])
            if ex.dtype != np.float32:
                raise CaffeError(f"example input {index} ({name}) is {ex.dtype}; Caffe nets take float32")
            shape = tuple(int(d) for d in ex.shape)
        if shape is None:
            raise CaffeError(f"{where}: input {name!r} has no shape; give input_shape / input_dim in the "
                             "prototxt, or example_inputs")
        if min(shape, default=0) < 0:
            raise CaffeError(f"{where}: input {name!r} has a negative dim in shape {list(shape)}")
        v = self.graph.add_input(TensorType(DType.f32, shape), name)
        self.set(name, v)

    def get(self, name: str, where: str) -> Value:
        if name not in self.blobs:
            raise CaffeError(f"{where}: bottom {name!r} is not an input and no earlier layer makes it")
        self.unused.pop(name, None)
        return self.blobs[name]

    def set(self, name: str, v: Value) -> None:
        self.blobs[name] = v
        self.unused.pop(name, None)
        self.unused[name] = v


def capture_caffe(prototxt: str | os.PathLike, example_inputs: Sequence[Any] = (), *,
                  caffemodel: str | os.PathLike | None = None, seed: int = 0) -> Graph:
    """The Graph of a Caffe deploy prototxt, with the caffemodel's weights (random without one).

    ``example_inputs`` (float32 numpy arrays) set the input shapes, overriding the prototxt's."""
    path = os.fspath(prototxt)
    net = read_prototxt(path)
    weights = read_caffemodel(caffemodel) if caffemodel is not None else None
    layers = [l for l in net.list("layer") + net.list("layers") if _active(l)]
    if not layers:
        raise CaffeError(f"{path}: has no layers; is it a Caffe deploy prototxt?")
    name = re.sub(r"\W", "_", net.get("name") or os.path.splitext(os.path.basename(path))[0]) or "net"
    graph = Graph(name if not name[0].isdigit() else f"net_{name}")
    state = _Net(graph, path, example_inputs)
    for n, s in _declared_inputs(net, path):
        state.add_input(n, s, path)
    rng = np.random.default_rng(seed)
    for layer in layers:
        _map_layer(state, layer, weights, rng)
    # the outputs: blobs no layer reads (an input only a skipped loss layer reads, a label, is none)
    outputs = [v for v in state.unused.values() if v.producer is not None]
    if not outputs:
        raise CaffeError(f"{path}: the net has no output blob")
    graph.set_outputs(outputs)
    graph.meta["frontend"] = "caffe"
    return graph


def _map_layer(state: _Net, layer: Message, weights: dict[str, list[Message]] | None,
               rng: np.random.Generator) -> None:
    type = _layer_type(layer)
    where = layer_where(layer, type, state.path)
    tops = layer.list("top")
    if type in ("Input", "Data", "DummyData", "ImageData", "MemoryData", "HDF5Data"):
        declared = layer.get("input_param").list("shape") if layer.type == "LayerParameter" else []
        shapes = [tuple(int(d) for d in s.list("dim")) for s in declared]
        for i, top in enumerate(tops):
            shape = shapes[i] if i < len(shapes) else (shapes[0] if len(shapes) == 1 else None)
            state.add_input(top, shape, where)
        return
    if type in _SKIPPED:
        return
    fn = RULES.get(type)
    if fn is None:
        known = ", ".join(sorted(RULES))
        raise CaffeError(f"{where}: unknown layer type {type!r}; accelir maps {known}")
    inputs = [state.get(b, where) for b in layer.list("bottom")]
    blobs = None
    if weights is not None:
        name = layer.get("name") or ""
        blobs = weights.get(name, [])
    ctx = LayerContext(state.graph, layer, type, state.path, inputs, blobs, rng)
    try:
        outs = list(fn(ctx))
    except CaffeError:
        raise
    except AccelirError as e:  # a type rule refusing the layer's shapes
        raise CaffeError(f"{where}: {str(e).splitlines()[0]}") from None
    if len(outs) != len(tops):
        raise CaffeError(f"{where}: makes {len(outs)} blob(s) but lists {len(tops)} top(s)")
    created = {n for n in ctx.b.created}
    for top, v in zip(tops, outs):
        if v.producer in created:  # name the layer's own values; pass-through ones (Split, Dropout) keep theirs
            v.name = ctx.name if len(tops) == 1 else f"{ctx.name}.{top}"
        state.set(top, v)
