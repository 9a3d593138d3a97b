"""ONNX frontend: an ``onnx.ModelProto`` or an ``.onnx`` file becomes an accelir Graph.

``import_onnx`` reads the model defensively (external data only inside the model's
directory, corrupt or truncated files, cycles, unknown domains and unsupported types
all raise an :class:`AccelirError` naming the node), turns initializers into named
constants (external data memory-mapped, not read), ``dim_param`` into symbolic
dims, ``If`` / ``Loop`` / ``Scan`` into region nodes, and inlines local functions
and the function bodies that the ONNX schemas define for composite ops.  Inlining is
sized before it starts (``MAX_INLINED_NODES``; identical calls are inlined once), and
what the spec forbids (unknown opsets, names defined twice, stored values outside
their dtype) is refused.  This module is the model
walker and the dispatcher; the op rules live in the family modules of this package
(``elementwise``, ``shape``, ``nn``, ...), which register into ``context.RULES``.

Shape-valued inputs (Reshape's shape, Slice's starts, ...) must be known when the
graph is built, because the IR keeps shapes as attributes.  The importer therefore
evaluates small integer tensors as it goes, symbolic dims included (``Shape`` of an
input with a ``dim_param`` gives ``["batch", 128]``), the way onnxsim and TVM do.
A shape that depends on run-time data raises :class:`DynamicValueError`; binding
that input with ``static_inputs`` specialises the model instead.  No value computed at
import may exceed the fold pass's cap (``context.IMPORT_VALUE_BYTES``): a larger
Range, EyeLike or DFT matrix is computed at run time instead.

What the round trip needs is kept in ``graph.meta["onnx"]``: input and output names
and declared types (dim_params included), the producer, doc strings,
metadata_props, opset imports and ir_version.
"""

from __future__ import annotations

import keyword
import os
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ... import dims as D
from ...errors import AccelirError, UnsupportedOpError, VerificationError
from ...ir import Graph, TensorType, Value
from ...unbacked import data_dependent_behind, deciding_input, deciding_inputs
from . import (control_flow, dynamic, einsum, elementwise, indexing, microsoft, nn, pooling, quantize, recurrent,
               reduce, sampling, sequence, shape, signal)
from .context import MS_RULES, RULES, NodeContext, StaticSequence
from .evaluate import evaluate_known
from .proto import (DTYPE_TO_ONNX, MAX_FUNCTION_DEPTH, MAX_INLINED_NODES, ONNX_DTYPES, DynamicValueError, ImportScope,
                    OnnxImportError, call_key, check_inline_budget, check_names, check_opsets, node_label, onnx_dtype,
                    opset_map, tensor_to_array, topo_order)

# the rule modules, by op family: importing them registers their rules in RULES / MS_RULES
RULE_MODULES = (control_flow, einsum, elementwise, indexing, microsoft, nn, pooling, quantize, recurrent, reduce,
                sampling, sequence, shape, signal)

__all__ = ["import_onnx", "restore_onnx_interface", "OnnxSignature", "convert", "OUT_OF_SCOPE",
           "OUT_OF_SCOPE_DOMAINS"]


# ----- the signature ----------------------------------------------------------------

@dataclass(frozen=True)
class OnnxSignature:
    """Flattens positional arrays or a feed dict keyed by input name; outputs stay a list."""

    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def flatten(self, *args: Any, **kwargs: Any) -> list:
        if len(args) == 1 and isinstance(args[0], Mapping) and not kwargs:
            feeds: Mapping[str, Any] = args[0]
        elif kwargs and not args:
            feeds = kwargs
        else:
            if kwargs:
                raise TypeError("pass the inputs either positionally or by name, not both")
            if len(args) != len(self.input_names):
                raise TypeError(f"the model takes {len(self.input_names)} inputs "
                                f"({', '.join(self.input_names)}), got {len(args)}")
            return list(args)
        missing = [n for n in self.input_names if n not in feeds]
        extra = [n for n in feeds if n not in self.input_names]
        if missing or extra:
            raise TypeError(f"input names do not match the model: missing {missing}, unknown {extra}")
        return [feeds[n] for n in self.input_names]

    def unflatten(self, flat_outputs: list) -> list:
        return list(flat_outputs)


# ----- symbolic dims ----------------------------------------------------------------

def _symbol_name(text: str) -> str:
    """An identifier for a dim_param (symbols must be identifiers to be bound at run time)."""
    name = re.sub(r"\W", "_", text.strip()) or "d"
    if name[0].isdigit():
        name = "d_" + name
    if keyword.iskeyword(name):
        name += "_"
    return name


def _read_type(type_proto: Any, what: str, symbols: dict[str, str], fresh: Iterable[str]) -> TensorType:
    """A TensorType for a ValueInfo's type; unnamed unknown dims get fresh symbols."""
    kind = type_proto.WhichOneof("value")
    if kind == "sequence_type":
        raise UnsupportedOpError(f"{what} is a sequence; {SEQUENCE_IO}")
    if kind != "tensor_type":
        raise UnsupportedOpError(f"{what} has ONNX type {kind or 'unset'}; accelir graphs take and return tensors "
                                 "only (map and optional types are out of scope)")
    tt = type_proto.tensor_type
    dtype = onnx_dtype(tt.elem_type, what)
    if not tt.HasField("shape"):
        raise OnnxImportError(f"{what} has no shape (unknown rank); give it one, e.g. with "
                              "onnx.tools.update_model_dims or by running onnx.shape_inference")
    shape: list[D.Dim] = []
    fresh_it = iter(fresh)
    for d in tt.shape.dim:
        which = d.WhichOneof("value")
        if which == "dim_value":
            if d.dim_value < 0:
                raise OnnxImportError(f"{what} has a negative dim {d.dim_value}")
            shape.append(int(d.dim_value))
        elif which == "dim_param":
            sym = _symbol_name(d.dim_param)
            symbols[sym] = d.dim_param
            shape.append(sym)
        else:
            shape.append(next(fresh_it))
    return TensorType(dtype, tuple(shape))


# ONNX op -> why the IR cannot hold it.  Everything else is in scope, implemented or not.
OUT_OF_SCOPE: dict[str, str] = {
    **{op: "string tensors" for op in ("StringConcat", "StringNormalizer", "StringSplit", "RegexFullMatch",
                                       "TfIdfVectorizer")},
    **{op: "sequence / optional types" for op in ("Optional", "OptionalGetElement", "OptionalHasElement")},
    **{op: "random numbers" for op in ("Bernoulli", "RandomNormal", "RandomNormalLike", "RandomUniform",
                                       "RandomUniformLike", "Multinomial")},
    **{op: "training ops" for op in ("Adagrad", "Adam", "Momentum", "Gradient")},
    "ImageDecoder": "encoded image bytes",
}

# why a sequence cannot cross the graph's boundary, and what to do instead
SEQUENCE_IO = ("a sequence is unrolled at import only when its length is known there, which a graph input's or "
               "output's is not: pass or return its tensors as separate inputs / outputs (ConcatFromSequence can "
               "join them into one)")

# ops that read a domain other than the standard one, and why they are left out
OUT_OF_SCOPE_DOMAINS: dict[str, str] = {
    "ai.onnx.ml": "classical ML ops (trees, label encoders)",
    "ai.onnx.preview.training": "training ops",
    "ai.onnx.preview": "preview ops",
}

# ----- function inlining -------------------------------------------------------------

def _schema_function(ctx: NodeContext) -> Any | None:
    """The FunctionProto the ONNX schema defines for this node's op, if any."""
    import onnx
    import onnx.defs
    try:
        schema = onnx.defs.get_schema(ctx.node.op_type, ctx.opset, "")
    except Exception:
        return None
    data = b""
    if schema.has_function:
        versions = [v for v in schema.function_opset_versions if v <= ctx.opset]
        if versions:
            data = schema.get_function_with_opset_version(max(versions))
    if not data and schema.has_context_dependent_function:
        versions = [v for v in schema.context_dependent_function_opset_versions if v <= ctx.opset]
        if versions:
            types = []
            for v in ctx.inputs:
                tp = onnx.TypeProto()
                if v is not None:
                    tp = onnx.helper.make_tensor_type_proto(DTYPE_TO_ONNX[v.dtype],
                                                            [d if type(d) is int else str(d) for d in v.shape])
                types.append(tp.SerializeToString())
            data = schema.get_context_dependent_function_with_opset_version(
                max(versions), ctx.node.SerializeToString(), types)
    if not data:
        return None
    f = onnx.FunctionProto()
    f.ParseFromString(data)
    return f


def _schema_defaults(ctx: NodeContext) -> dict[str, Any]:
    import onnx.defs
    schema = onnx.defs.get_schema(ctx.node.op_type, ctx.opset, "")
    return {name: a.default_value for name, a in schema.attributes.items()
            if a.default_value is not None and a.default_value.type != 0}


def _inline_function(ctx: NodeContext, fproto: Any, opsets: dict[str, int],
                     schema_defaults: dict[str, Any] | None = None) -> list[Value | None]:
    import onnx
    imp = ctx.imp
    if imp.inline_depth > MAX_FUNCTION_DEPTH:
        raise OnnxImportError(f"{ctx.label}: functions nest more than {MAX_FUNCTION_DEPTH} deep "
                              "(a recursive function?)")
    scope = ImportScope(imp, ctx.graph, None, opsets, closed=True,
                        origin_prefix=ctx.scope.origin_prefix + (ctx.node.name or ctx.node.op_type) + "/")
    for name, v in zip(fproto.input, ctx.inputs):
        if v is not None:
            scope.define(name, v)
    given = {a.name: a for a in ctx.node.attribute}
    defaults = dict(schema_defaults or {})
    defaults.update({a.name: a for a in fproto.attribute_proto})
    nodes = []
    for n in fproto.node:
        m = onnx.NodeProto()
        m.CopyFrom(n)
        del m.attribute[:]
        for a in n.attribute:
            if a.ref_attr_name:
                src = given.get(a.ref_attr_name) or defaults.get(a.ref_attr_name)
                if src is None:
                    continue
                b = onnx.AttributeProto()
                b.CopyFrom(src)
                b.name = a.name
                m.attribute.append(b)
            else:
                m.attribute.append(a)
        nodes.append(m)
    imp.inline_depth += 1
    try:
        for i in topo_order(nodes, f"function {fproto.name!r}"):
            imp.convert_node(nodes[i], i, scope)
    finally:
        imp.inline_depth -= 1
    return [scope.values.get(o) for o in fproto.output]


def _function_opsets(outer: dict[str, int], fproto: Any) -> dict[str, int]:
    out = dict(outer)
    out.update(opset_map(fproto.opset_import))
    return out


def convert(imp: Any, scope: ImportScope, node: Any, inputs: list[Value | None], label: str) -> list[Value | None]:
    """The values of ``node``'s outputs, built into ``scope.graph``."""
    local = imp.functions.get((node.domain, node.op_type))
    ctx = NodeContext(imp, scope, node, inputs, label)
    if local is not None:
        # an identical call in the same graph (same inputs and attributes) reuses the first one's outputs
        key = (id(scope.graph), call_key(node)[:2], tuple(id(v) for v in inputs), call_key(node)[3])
        if key not in imp.inlined:
            imp.inlined[key] = _inline_function(ctx, local, _function_opsets(scope.opsets, local))
        return imp.inlined[key]
    domain = "" if node.domain in ("", "ai.onnx") else node.domain
    if domain == "com.microsoft":
        fn = MS_RULES.get(node.op_type)
        if fn is None:
            raise UnsupportedOpError(f"{label}: com.microsoft op {node.op_type!r} is not one accelir reads back "
                                     f"(known: {', '.join(sorted(MS_RULES))})", [node.op_type])
        return list(fn(ctx))
    if domain:
        why = OUT_OF_SCOPE_DOMAINS.get(domain, "an unknown domain")
        raise UnsupportedOpError(f"{label}: domain {domain!r} ({why}) is not supported; only the standard ONNX "
                                 "domain, com.microsoft ops accelir emits and model-local functions are",
                                 [f"{domain}.{node.op_type}"])
    if node.op_type in OUT_OF_SCOPE:
        raise UnsupportedOpError(f"{label}: {node.op_type} is out of scope for accelir "
                                 f"({OUT_OF_SCOPE[node.op_type]})", [node.op_type])
    given = [i for i, v in enumerate(inputs) if isinstance(v, StaticSequence)]
    if given and node.op_type not in sequence.TAKES_SEQUENCES:
        raise OnnxImportError(f"{label}: input {given[0]} is {inputs[given[0]].describe()}, and {node.op_type} "
                              "takes tensors; read an item with SequenceAt or join them with ConcatFromSequence")
    if node.op_type == "Identity" and given:
        return [inputs[0]]
    fn = RULES.get(node.op_type)
    if fn is not None:
        out = fn(ctx)
        if out is not None:
            return list(out)
    body = _schema_function(ctx)
    if body is not None:
        return _inline_function(ctx, body, _function_opsets(scope.opsets, body), _schema_defaults(ctx))
    if fn is not None:
        raise UnsupportedOpError(f"{label}: this form of {node.op_type} is not supported", [node.op_type])
    raise UnsupportedOpError(f"{label}: ONNX op {node.op_type} (opset {ctx.opset}) has no accelir mapping yet; "
                             "open an issue with the model, or replace the op before importing", [node.op_type])


class _Importer:
    def __init__(self, model: Any, base_dir: str | None, load_external: bool):
        self.model = model
        self.base_dir = base_dir
        self.load_external = load_external
        self.functions = {(f.domain, f.name): f for f in model.functions}
        self.symbols: dict[str, str] = {}
        self._fresh = 0
        self.known: dict[int, np.ndarray | None] = {}
        self.input_graph_deps: dict[int, frozenset[str]] = {}
        self.inline_depth = 0
        self.inlined: dict[tuple, list[Value | None]] = {}  # reused outputs of identical calls
        self.main: Graph | None = None

    def fresh_symbols(self, base: str) -> Iterable[str]:
        while True:
            self._fresh += 1
            yield _symbol_name(f"{base}_{self._fresh}")

    def array(self, tensor: Any, what: str | None = None) -> np.ndarray:
        return tensor_to_array(tensor, self.base_dir, self.load_external, what)

    # -- graphs --
    def translate(self, gproto: Any, scope: ImportScope, input_values: Sequence[Value] | None,
                  label: str) -> list[Value]:
        """Fill ``scope.graph`` from ``gproto``; returns the values of its outputs."""
        g = scope.graph
        check_names(gproto, label)
        if input_values is not None:
            for vi, v in zip(gproto.input, input_values):
                scope.define(vi.name, v)
        for t in gproto.initializer:
            arr = self.array(t, f"initializer {t.name!r}")
            scope.define(t.name, g.const(arr, name=t.name or "init", meta={"origin": t.name}))
        if len(gproto.sparse_initializer):
            raise UnsupportedOpError(f"{label} has sparse initializers ({gproto.sparse_initializer[0].values.name!r}); "
                                     "densify them first (onnx.numpy_helper / onnxscript)")
        nodes = list(gproto.node)
        for i in topo_order(nodes, label):
            self.convert_node(nodes[i], i, scope)
        outs = []
        for o in gproto.output:
            outs.append(scope.lookup(o.name, f"output {o.name!r} of {label}"))
        return outs

    def convert_node(self, node: Any, index: int, scope: ImportScope) -> None:
        label = node_label(node, index)
        try:
            inputs = [scope.lookup(x, label) if x else None for x in node.input]
            outputs = convert(self, scope, node, inputs, label)
        except DynamicValueError as e:
            raise DynamicValueError(_with_label(label, e), e.input_names) from None
        except (UnsupportedOpError, VerificationError) as e:
            self._refuse_data_dependent(label, e, inputs)
            if isinstance(e, VerificationError):
                raise VerificationError(f"{label}: the IR rejects the mapped node: {e}") from None
            raise UnsupportedOpError(_with_label(label, e), e.ops or [node.op_type]) from None
        except OnnxImportError as e:
            raise OnnxImportError(_with_label(label, e)) from None
        except AccelirError:
            raise
        except Exception as e:  # a malformed attribute or tensor must not crash the importer
            raise OnnxImportError(f"{label}: cannot import it ({type(e).__name__}: {e}); the model may be "
                                  "malformed") from e
        if len(outputs) < len([o for o in node.output if o]):
            raise OnnxImportError(f"{label}: produces {len(node.output)} outputs, the mapping gave {len(outputs)}")
        for name, v in zip(node.output, outputs):
            if name and v is not None:
                if isinstance(v, Value) and v.name is None and v.producer is not None:
                    v.name = _value_name(name)
                scope.define(name, v)

    # -- known values --
    def value_of(self, v: Value) -> np.ndarray | None:
        """The value of ``v`` if it can be computed now: constants, shapes (symbolic dims as
        str in an object array) and small integer tensors computed from them."""
        c = v.const_value
        if c is not None:
            return c
        key = id(v)
        if key in self.known:
            return self.known[key]
        self.known[key] = None  # guards against revisiting while computing
        p = v.producer
        result = None
        if p is not None and not p.regions and p.graph is not None:
            ins = [self.value_of(x) for x in p.inputs]
            if all(x is not None for x in ins):
                outs = evaluate_known(p, ins)
                if outs is not None:
                    for o, r in zip(p.outputs, outs):
                        self.known[id(o)] = r
                    result = outs[v.index]
        self.known[key] = result
        return result

    def _refuse_data_dependent(self, label: str, e: AccelirError, inputs: list[Value | None]) -> None:
        """A rule that cannot take an input computed through a data-dependent op (a size the data
        decides, a value the import could not know): raise DynamicValueError naming the graph
        inputs that op reads, which ``static_inputs`` can bind."""
        for i, v in enumerate(inputs):
            maker = data_dependent_behind(v) if isinstance(v, Value) else None
            if maker is None:
                continue
            names = sorted(self.graph_inputs_behind(maker.inputs[deciding_input(maker)]))
            raise DynamicValueError(f"{_with_label(label, e)}; its input {i} is computed through "
                                    f"{maker.describe()}, whose result the data decides: bind graph inputs {names} "
                                    "with import_onnx(..., static_inputs=...)", names) from None
        # or it reads a run-time value of the graph inputs that decide sizes elsewhere (a condition)
        names = sorted({n for v in inputs if isinstance(v, Value) for n in self.graph_inputs_behind(v)}
                       & set(deciding_inputs(self.main)))
        if names:
            raise DynamicValueError(f"{_with_label(label, e)}; it reads graph inputs {names}, which "
                                    "decide data-dependent sizes in this model: bind them with "
                                    "import_onnx(..., static_inputs=...)", names) from None

    def graph_inputs_behind(self, v: Value) -> list[str]:
        """Names of the main-graph inputs ``v`` is computed from (for DynamicValueError)."""
        seen: set[int] = set()
        names: list[str] = []
        stack = [v]
        while stack:
            x = stack.pop()
            if id(x) in seen:
                continue
            seen.add(id(x))
            if x.producer is None:
                if x.graph is self.main and x.name and x.name not in names:
                    names.append(x.name)
                continue
            stack.extend(x.producer.inputs)
        return names


def _with_label(label: str, e: Exception) -> str:
    msg = str(e)
    return msg if msg.startswith(label) else f"{label}: {msg}"


def _value_name(name: str) -> str:
    return re.sub(r"[^\w.]", "_", name)[:64] or "v"


def _load(model_or_path: Any, base_dir: str | None) -> tuple[Any, str | None]:
    import onnx
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path, base_dir
    if isinstance(model_or_path, (bytes, bytearray)):
        data = bytes(model_or_path)
        where = "the given bytes"
    elif isinstance(model_or_path, (str, os.PathLike)):
        path = os.fspath(model_or_path)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise OnnxImportError(f"cannot read ONNX model {path!r}: {e.strerror or e}") from None
        where = repr(path)
        base_dir = base_dir if base_dir is not None else os.path.dirname(os.path.abspath(path))
    else:
        raise OnnxImportError("import_onnx takes an onnx.ModelProto, bytes or a path, "
                              f"got {type(model_or_path).__name__}")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as e:
        raise OnnxImportError(f"{where} is not a valid ONNX model (truncated or corrupt protobuf: "
                              f"{type(e).__name__}: {e})") from None
    if not model.HasField("graph"):
        raise OnnxImportError(f"{where} holds no graph: not an ONNX model, or the file is truncated")
    return model, base_dir


def _value_info_meta(vi: Any) -> dict[str, Any]:
    tt = vi.type.tensor_type
    dims: list[Any] = []
    if tt.HasField("shape"):
        for d in tt.shape.dim:
            which = d.WhichOneof("value")
            dims.append(int(d.dim_value) if which == "dim_value" else d.dim_param if which == "dim_param" else None)
    return {"name": vi.name, "elem_type": int(tt.elem_type), "dims": dims if tt.HasField("shape") else None,
            "doc_string": vi.doc_string}


def import_onnx(model_or_path: Any, *, load_external: bool = True, base_dir: str | None = None,
                static_inputs: Mapping[str, Any] | None = None,
                max_inlined_nodes: int = MAX_INLINED_NODES) -> Graph:
    """Import an ONNX model (a ModelProto, serialized bytes or a path) into an accelir Graph.

    ``base_dir`` is where external data lives for a ModelProto given in memory (a
    path's own directory otherwise).  ``static_inputs`` binds graph inputs to fixed
    arrays, turning them into constants: use it for inputs that drive shapes.
    ``max_inlined_nodes`` caps the nodes that inlining local functions may build.
    """
    model, base_dir = _load(model_or_path, base_dir)
    opsets = opset_map(model.opset_import)
    if "" not in opsets:
        raise OnnxImportError("the model imports no version of the standard ONNX domain (opset_import lacks '')")
    check_opsets(opsets, "the model")
    for f in model.functions:
        check_opsets(opset_map(f.opset_import), f"local function {f.name!r}")
    check_inline_budget(model, max_inlined_nodes)
    gproto = model.graph
    imp = _Importer(model, base_dir, load_external)
    graph = Graph(_value_name(gproto.name or "main"))
    imp.main = graph
    scope = ImportScope(imp, graph, None, opsets)
    static = dict(static_inputs or {})
    init_names = {t.name for t in gproto.initializer}
    unknown = [n for n in static if n not in {i.name for i in gproto.input}]
    if unknown:
        raise OnnxImportError(f"static_inputs names {unknown}, which are not inputs of the model")
    input_meta = []
    for vi in gproto.input:
        if vi.name in init_names:
            continue  # an initializer listed as an input (IR < 4 style) is a constant here
        if vi.name in static:
            arr = np.asarray(static[vi.name])
            want = _read_type(vi.type, f"graph input {vi.name!r}", imp.symbols, imp.fresh_symbols(vi.name))
            if arr.dtype != want.dtype.numpy or arr.ndim != want.rank:
                raise OnnxImportError(f"static input {vi.name!r} is {arr.dtype}{list(arr.shape)}, the model "
                                      f"declares {want}")
            scope.define(vi.name, graph.const(arr, name=_value_name(vi.name)))
            continue
        t = _read_type(vi.type, f"graph input {vi.name!r}", imp.symbols, imp.fresh_symbols(vi.name))
        scope.define(vi.name, graph.add_input(t, vi.name))
        input_meta.append(_value_info_meta(vi))
    outs = imp.translate(gproto, scope, None, f"graph {gproto.name!r}")
    for vi, v in zip(gproto.output, outs):
        tt = vi.type.tensor_type
        if isinstance(v, StaticSequence) or vi.type.WhichOneof("value") == "sequence_type":
            raise UnsupportedOpError(f"graph output {vi.name!r} is a sequence; {SEQUENCE_IO}")
        if vi.type.WhichOneof("value") not in (None, "tensor_type"):
            raise UnsupportedOpError(f"graph output {vi.name!r} has ONNX type {vi.type.WhichOneof('value')}; "
                                     "only tensors are supported")
        if tt.elem_type and ONNX_DTYPES.get(tt.elem_type) not in (None, v.dtype):
            raise OnnxImportError(f"graph output {vi.name!r} is declared {ONNX_DTYPES[tt.elem_type]} but computes "
                                  f"{v.dtype}")
    graph.set_outputs(outs)
    graph.meta["frontend"] = "onnx"
    graph.meta["signature"] = OnnxSignature(tuple(m["name"] for m in input_meta),
                                            tuple(o.name for o in gproto.output))
    graph.meta["onnx"] = {
        "inputs": input_meta,
        "outputs": [_value_info_meta(o) for o in gproto.output],
        "static_inputs": sorted(static),
        "dim_params": dict(imp.symbols),
        "producer_name": model.producer_name,
        "producer_version": model.producer_version,
        "domain": model.domain,
        "model_version": int(model.model_version),
        "doc_string": model.doc_string,
        "graph_name": gproto.name,
        "graph_doc_string": gproto.doc_string,
        "metadata_props": {p.key: p.value for p in model.metadata_props},
        "opset_imports": opsets,
        "ir_version": int(model.ir_version),
    }
    return graph


def _rename_everywhere(graph: Any, renames: Mapping[str, str]) -> None:
    for n in graph.node:
        n.input[:] = [renames.get(x, x) for x in n.input]
        n.output[:] = [renames.get(x, x) for x in n.output]
        for a in n.attribute:
            for sub in ([a.g] if a.type == 5 else list(a.graphs) if a.type == 10 else []):
                _rename_everywhere(sub, renames)
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        vi.name = renames.get(vi.name, vi.name)
    for t in graph.initializer:
        t.name = renames.get(t.name, t.name)


def _set_declared_dims(vi: Any, dims: Sequence[Any] | None) -> None:
    if dims is None:
        return
    shape = vi.type.tensor_type.shape
    if len(shape.dim) != len(dims):
        return
    for d, want in zip(shape.dim, dims):
        if isinstance(want, int):
            d.dim_value = want
        elif isinstance(want, str):
            d.dim_param = want
        else:
            d.Clear()


def restore_onnx_interface(model: Any, graph: Graph) -> Any:
    """Give a model lowered from an imported graph the original's interface, in place:
    input / output names and declared dims (dim_params), producer, doc strings,
    metadata_props and graph name, from ``graph.meta["onnx"]``.  Returns ``model``."""
    meta = graph.meta.get("onnx")
    if not meta:
        return model
    g = model.graph
    targets: dict[str, str] = {}
    for vi, m in zip(g.input, meta["inputs"]):
        targets[vi.name] = m["name"]
    for vi, m in zip(g.output, meta["outputs"]):
        # an output that the source named after an input or an earlier output keeps the lowering's
        # unique name (an Identity made it): one name defined twice is a model ONNX Runtime refuses
        if m["name"] not in targets.values():
            targets.setdefault(vi.name, m["name"])
    used = {x for n in g.node for x in list(n.input) + list(n.output)} | {t.name for t in g.initializer} | \
        {vi.name for vi in list(g.input) + list(g.output)}
    renames = dict(targets)
    wanted = set(targets.values())
    # a name the interface needs that an inner value already has moves out of the way first
    for name in used:
        if name in wanted and name not in targets and targets.get(name) != name:
            k = 1
            while f"{name}__{k}" in used or f"{name}__{k}" in wanted:
                k += 1
            renames[name] = f"{name}__{k}"
    _rename_everywhere(g, renames)
    for vi, m in zip(g.input, meta["inputs"]):
        _set_declared_dims(vi, m["dims"])
        vi.doc_string = m["doc_string"]
    for vi, m in zip(g.output, meta["outputs"]):
        _set_declared_dims(vi, m["dims"])
        vi.doc_string = m["doc_string"]
    model.producer_name = meta["producer_name"] or model.producer_name
    model.producer_version = meta["producer_version"]
    model.doc_string = meta["doc_string"]
    model.domain = meta["domain"]
    model.model_version = meta["model_version"]
    g.name = meta["graph_name"] or g.name
    g.doc_string = meta["graph_doc_string"]
    props = {p.key: p.value for p in model.metadata_props}
    props.update(meta["metadata_props"])
    del model.metadata_props[:]
    for k, v in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    return model
