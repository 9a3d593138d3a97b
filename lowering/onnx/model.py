"""Model assembly and serialisation: ``to_onnx`` / ``to_onnx_external`` build the ModelProto from
the context's nodes and initializers; ``save_onnx`` writes it, with external data past protobuf's
size limit.
"""

from __future__ import annotations

import os
from typing import Iterator, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

from accelir.errors import LoweringError
from accelir.fileio import atomic_outputs
from accelir.ir import DType, Graph

from .kernels import (EXTERNAL_DATA_THRESHOLD, EXTERNAL_LOCATION, EXTERNAL_WEIGHT_BYTES, MIN_OPSET, MS_DOMAIN,
                      ONNX_DTYPE, default_opset)
from .context import LoweringContext, ModelState, OnnxValue, live_nodes, value_info

# ----- the model ----------------------------------------------------------------------

def to_onnx(graph: Graph, opset: int | None = None, target: str = "onnxruntime") -> onnx.ModelProto:
    """Lower ``graph`` to an ONNX model.

    ``target="standard"`` uses only ops of the ai.onnx domain (the model passes
    ``onnx.checker.check_model(full_check=True)``); ``"onnxruntime"`` may also use ONNX
    Runtime's fused kernels.  ``opset`` defaults to ``default_opset()``.
    """
    return _lower(graph, opset, target, external=False)[0]


def to_onnx_external(graph: Graph, opset: int | None = None, target: str = "onnxruntime"
                     ) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """``to_onnx`` with the weights left out of the model, for ONNX Runtime to take from memory.

    Each initializer of at least ``EXTERNAL_WEIGHT_BYTES`` is declared as external data
    (location ``EXTERNAL_LOCATION``) and returned in the dict, name -> the graph's own
    array (uncopied: a view of the framework's parameter where the frontend shared it).
    Hand them to ``SessionOptions.add_external_initializers``, as ``OnnxRuntimeModule``
    does with a Graph; the model alone is not loadable (``to_onnx`` is for files).
    """
    return _lower(graph, opset, target, external=True)


def _lower(graph: Graph, opset: int | None, target: str, external: bool
           ) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    if target not in ("onnxruntime", "standard"):
        raise LoweringError(f"unknown ONNX target {target!r}; use 'onnxruntime' or 'standard'")
    opset = default_opset() if opset is None else int(opset)
    if not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise LoweringError(f"opset {opset} is not supported: use {MIN_OPSET} to {onnx.defs.onnx_opset_version()}")
    state = ModelState(opset, target)
    ctx = LoweringContext(state)
    inputs = [OnnxValue(state.fresh(v.name or f"input_{i}"), v.dtype) for i, v in enumerate(graph.inputs)]
    outs = ctx.emit_graph(graph, inputs)
    input_names = {v.name for v in inputs}
    out_infos = []
    seen: set[str] = set()
    for i, (v, o) in enumerate(zip(graph.outputs, outs)):
        if o.name in input_names or o.name in state.tensors or o.name in seen:
            o = ctx.op("Identity", o)
            o = ctx.adopt_name(o, v.name or f"output_{i}", len(ctx.nodes) - 1)
        seen.add(o.name)
        out_infos.append(value_info(o.name, v.type))
    # ``needed``: the values the live nodes read, and the outputs (never initializers: those got an Identity)
    nodes, needed = live_nodes(ctx.nodes, [o.name for o in out_infos])

    # built in place: make_graph / make_model would copy every weight once more
    model = onnx.ModelProto(ir_version=onnx.IR_VERSION, producer_name="accelir")
    g = model.graph
    g.name = graph.name or "main"
    g.node.extend(nodes)
    g.input.extend(value_info(ov.name, v.type) for ov, v in zip(inputs, graph.inputs))
    g.output.extend(out_infos)
    weights: dict[str, np.ndarray] = {}
    for name, arr in state.tensors.items():
        if name not in needed:
            continue
        if external and arr.nbytes >= EXTERNAL_WEIGHT_BYTES:
            _external_stub(g.initializer.add(), name, arr)
            weights[name] = arr
        else:
            fill_tensor(g.initializer.add(), name, arr)
    model.opset_import.append(helper.make_opsetid("", opset))
    if state.uses_ms_domain:
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    frontend = graph.meta.get("frontend")
    if frontend:
        helper.set_model_props(model, {"accelir.frontend": str(frontend)})
    return model, weights


def backing_bytes(arr: np.ndarray) -> bytes | None:
    """The ``bytes`` object ``arr`` views from its first byte to its last, else None: an initializer
    read from an ONNX file is such a view, and handing protobuf those bytes saves a copy."""
    base = arr.base
    while isinstance(base, np.ndarray):
        base = base.base
    if type(base) is not bytes or len(base) != arr.nbytes or not arr.flags.c_contiguous or \
            arr.dtype.byteorder == ">":
        return None
    start = np.frombuffer(base, np.uint8, count=min(1, len(base))).__array_interface__["data"][0]
    return base if arr.__array_interface__["data"][0] == start else None


def fill_tensor(t: TensorProto, name: str, arr: np.ndarray) -> None:
    t.name = name
    t.data_type = ONNX_DTYPE[DType.from_numpy(arr.dtype)]
    t.dims.extend(arr.shape)
    raw = backing_bytes(arr) if arr.nbytes else None
    if raw is None:
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        raw = np.ascontiguousarray(arr).tobytes()
    t.raw_data = raw


def _external_stub(t: TensorProto, name: str, arr: np.ndarray) -> None:
    t.name = name
    t.data_type = ONNX_DTYPE[DType.from_numpy(arr.dtype)]
    t.dims.extend(arr.shape)
    t.data_location = TensorProto.EXTERNAL
    entry = t.external_data.add()
    entry.key, entry.value = "location", EXTERNAL_LOCATION


def save_onnx(model: onnx.ModelProto, path: str | os.PathLike, external_data: bool | None = None, *,
              overwrite: bool = False) -> None:
    """Write ``model`` to ``path``; with external data (``path + '.data'``) when ``external_data`` is
    True, or when it is None and the weights exceed protobuf's 2 GB limit.

    Both files go through temporaries (``accelir.fileio``): an interrupted save leaves no
    truncated model.  An existing ``path`` or ``.data`` is replaced only with ``overwrite``.
    With external data the model's large initializers are moved out of it, in place, as
    ``onnx.save_model`` does.
    """
    save_onnx_files([(model, path)], external_data, overwrite=overwrite)


#: the bytes a pair of models must repeat before ``save_onnx_files(share=True)`` writes them once (in
#: external data, which small pairs do without)
SHARED_DATA_MIN_BYTES = 1 << 20


def save_onnx_files(models: Sequence[tuple[onnx.ModelProto, str | os.PathLike]], external_data: bool | None = None,
                    *, overwrite: bool = False, share: bool = False) -> None:
    """``save_onnx`` for models that belong together (a prefill and a decode graph): every file is
    written or, on any failure, none; the first model's file is renamed into place last.

    With ``share``, an initializer whose bytes an earlier model of the list holds is written once:
    when such repeats come to ``SHARED_DATA_MIN_BYTES`` or more, the models' large initializers go to
    external data, and a repeat points at the earlier model's ``.data`` file (onnxruntime reads each
    model's external data relative to it, so the pair must stay together in one folder)."""
    paths = [os.fspath(p) for _, p in models]
    files = [f for p in paths for f in (p, p + ".data")]
    written = {} if share and _repeated_bytes([m for m, _ in models]) >= SHARED_DATA_MIN_BYTES else None
    with atomic_outputs(*files, overwrite=overwrite) as out:
        for (model, _), path in zip(models, paths):
            external = external_data if written is None else True
            if external is None:
                external = sum(len(t.raw_data) for t in model.graph.initializer) >= EXTERNAL_DATA_THRESHOLD
            if external:
                if written is not None and not _own_data(model, written):
                    _point_at_shared(model, written)  # every large initializer is an earlier model's
                else:
                    _write_external_data(model, out.temp(path + ".data"), os.path.basename(path) + ".data",
                                         written=written)
            with open(out.temp(path), "wb") as f:
                f.write(model.SerializeToString())


def _digest(t: TensorProto) -> tuple:
    import hashlib
    return t.data_type, tuple(t.dims), hashlib.blake2b(t.raw_data, digest_size=20).digest()


def _large(model: onnx.ModelProto, threshold: int = 1024) -> Iterator[TensorProto]:
    return (t for t in _initializers(model.graph) if t.HasField("raw_data") and len(t.raw_data) >= threshold)


def _repeated_bytes(models: Sequence[onnx.ModelProto]) -> int:
    """The bytes of the models' large initializers that an earlier model holds already."""
    seen: set[tuple] = set()
    repeated = 0
    for model in models:
        digests = {_digest(t): len(t.raw_data) for t in _large(model)}
        repeated += sum(n for d, n in digests.items() if d in seen)
        seen.update(digests)
    return repeated


def _own_data(model: onnx.ModelProto, written: dict[tuple, tuple[str, int, int]]) -> bool:
    return any(_digest(t) not in written for t in _large(model))


def _point_at_shared(model: onnx.ModelProto, written: dict[tuple, tuple[str, int, int]]) -> None:
    from onnx.external_data_helper import set_external_data
    for t in list(_large(model)):
        set_external_data(t, *written[_digest(t)])
        t.ClearField("raw_data")


def _initializers(graph: onnx.GraphProto) -> Iterator[TensorProto]:
    """The initializers of ``graph`` and of its subgraphs (Loop / If / Scan bodies)."""
    yield from graph.initializer
    for node in graph.node:
        for a in node.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from _initializers(sub)


def _write_external_data(model: onnx.ModelProto, data_file: str, location: str, threshold: int = 1024,
                         align: int = 64, written: dict[tuple, tuple[str, int, int]] | None = None) -> None:
    """Move every initializer of ``threshold`` bytes and up into ``data_file`` (offsets aligned to
    ``align``), pointing the model at ``location``, the name the file will have beside it.  With
    ``written`` (bytes -> where an earlier file holds them), an initializer found there points at it
    instead, and the ones written here join it."""
    from onnx.external_data_helper import set_external_data
    with open(data_file, "wb") as f:
        for t in list(_large(model, threshold)):
            key = _digest(t) if written is not None else None
            if key is not None and key in written:
                set_external_data(t, *written[key])
            else:
                f.write(b"\0" * (-f.tell() % align))
                offset = f.tell()
                f.write(t.raw_data)
                set_external_data(t, location, offset, len(t.raw_data))
                if key is not None:
                    written[key] = (location, offset, len(t.raw_data))
            t.ClearField("raw_data")
