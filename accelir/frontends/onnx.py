"""ONNX frontend: an ``onnx.ModelProto`` or an ``.onnx`` file becomes an accelir Graph.

``import_onnx`` reads the model defensively (external data only inside the model's
directory, corrupt or truncated files, cycles, unknown domains and unsupported types
all raise an :class:`AccelirError` naming the node), turns initializers into named
constants (external data memory-mapped, not read), ``dim_param`` into symbolic
dims, ``If`` / ``Loop`` / ``Scan`` into region nodes, and inlines local functions
and the function bodies that the ONNX schemas define for composite ops.  Inlining is
sized before it starts (``MAX_INLINED_NODES``; identical calls are inlined once), and
what the spec forbids (unknown opsets, names defined twice, stored values outside
their dtype) is refused.  The op rules live in ``onnx_ops``; this module is the model
walker.

Shape-valued inputs (Reshape's shape, Slice's starts, ...) must be known when the
graph is built, because the IR keeps shapes as attributes.  The importer therefore
evaluates small integer tensors as it goes, symbolic dims included (``Shape`` of an
input with a ``dim_param`` gives ``["batch", 128]``), the way onnxsim and TVM do.
A shape that depends on run-time data raises :class:`DynamicValueError`; binding
that input with ``static_inputs`` specialises the model instead.  No value computed at
import may exceed the fold pass's cap (``onnx_ops.IMPORT_VALUE_BYTES``): a larger
Range, EyeLike or DFT matrix is computed at run time instead.

What the round trip needs is kept in ``graph.meta["onnx"]``: input and output names
and declared types (dim_params included), the producer, doc strings,
metadata_props, opset imports and ir_version.
"""

from __future__ import annotations

import heapq
import keyword
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .. import dims as D
from ..errors import AccelirError, UnsupportedOpError, VerificationError
from ..ir import DType, Graph, TensorType, Value
from ..lowering.onnx import ONNX_DTYPE
__all__ = ["import_onnx", "restore_onnx_interface", "OnnxImportError", "DynamicValueError", "OnnxSignature",
           "ONNX_DTYPES", "onnx_dtype", "tensor_to_array", "ImportScope", "MAX_INLINED_NODES", "check_opsets",
           "check_names"]


class OnnxImportError(AccelirError):
    """The ONNX model is malformed, unsafe, or uses a feature the IR cannot hold."""


class DynamicValueError(UnsupportedOpError):
    """A shape-like input is computed from run-time data; ``input_names`` are the graph
    inputs it depends on (binding them with ``static_inputs`` specialises the model)."""

    def __init__(self, message: str, input_names: Sequence[str] = ()):
        super().__init__(message)
        self.input_names = list(input_names)


# TensorProto.DataType -> DType, the inverse of the lowering's table; others (strings, float8, 4-bit,
# unsigned > 8 bit, complex) have no IR dtype.
ONNX_DTYPES: dict[int, DType] = {v: k for k, v in ONNX_DTYPE.items()}
_DTYPE_TO_ONNX = ONNX_DTYPE


def onnx_dtype(elem_type: int, what: str) -> DType:
    """The DType of an ONNX element type; ``what`` names the tensor in the error."""
    try:
        return ONNX_DTYPES[elem_type]
    except KeyError:
        import onnx
        try:
            name = onnx.TensorProto.DataType.Name(elem_type)
        except ValueError:
            name = f"code {elem_type}"
        raise UnsupportedOpError(f"{what} has element type {name}, which accelir has no dtype for "
                                 f"(supported: {', '.join(str(d) for d in ONNX_DTYPES.values())})") from None


# ----- tensors and external data ----------------------------------------------------

def _resolve_external(base_dir: str | None, location: str, tensor_name: str) -> str:
    """The real path of an external-data file, refusing anything outside ``base_dir``."""
    if base_dir is None:
        raise OnnxImportError(f"initializer {tensor_name!r} keeps its data in {location!r}, but the model was "
                              "given without a directory; pass base_dir= or load the model from its path")
    if not location or os.path.isabs(location) or location.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", location):
        raise OnnxImportError(f"initializer {tensor_name!r}: external data location {location!r} is absolute; "
                              "only paths inside the model's directory are allowed")
    parts = re.split(r"[\\/]", location)
    if ".." in parts:
        raise OnnxImportError(f"initializer {tensor_name!r}: external data location {location!r} leaves the "
                              "model's directory ('..'); refusing to read it")
    root = os.path.realpath(base_dir)
    path = os.path.realpath(os.path.join(root, location))
    if os.path.commonpath([root, path]) != root:
        raise OnnxImportError(f"initializer {tensor_name!r}: external data location {location!r} resolves to "
                              f"{path}, outside the model's directory {root} (a symlink?); refusing to read it")
    if not os.path.isfile(path):
        raise OnnxImportError(f"initializer {tensor_name!r}: external data file {location!r} is missing in {root}")
    return path


def _external_array(tensor: Any, dtype: DType, shape: tuple[int, ...], base_dir: str | None) -> np.ndarray:
    info = {e.key: e.value for e in tensor.external_data}
    path = _resolve_external(base_dir, info.get("location", ""), tensor.name)
    try:
        offset = int(info.get("offset", 0))
        nbytes = math.prod(shape) * dtype.itemsize  # Python ints: an int64 product can wrap to 0
        length = int(info.get("length", nbytes))
    except ValueError:
        raise OnnxImportError(f"initializer {tensor.name!r}: external data offset / length are not integers") from None
    if length != nbytes or offset < 0:
        raise OnnxImportError(f"initializer {tensor.name!r}: external data length {length} does not match its "
                              f"shape {list(shape)} of {dtype} ({nbytes} bytes)")
    size = os.path.getsize(path)
    if offset + nbytes > size:
        raise OnnxImportError(f"initializer {tensor.name!r}: external file {info['location']!r} is truncated "
                              f"({size} bytes, needs {offset + nbytes})")
    if nbytes == 0:
        return np.zeros(shape, dtype.numpy)
    # memory-mapped: pages are read when a pass or a backend touches them
    return np.memmap(path, dtype=dtype.numpy, mode="r", offset=offset, shape=shape)


def tensor_to_array(tensor: Any, base_dir: str | None = None, load_external: bool = True,
                    what: str | None = None) -> np.ndarray:
    """A numpy array for a TensorProto: raw data is viewed, not copied; external data memory-mapped."""
    from onnx import numpy_helper
    label = what or f"tensor {tensor.name!r}"
    dtype = onnx_dtype(tensor.data_type, label)
    shape = tuple(int(d) for d in tensor.dims)
    if any(d < 0 for d in shape):
        raise OnnxImportError(f"{label} has a negative dim in {list(shape)}")
    if tensor.data_location == 1:  # EXTERNAL
        if not load_external:
            raise OnnxImportError(f"{label} keeps its data in an external file and load_external=False; "
                                  "import with load_external=True")
        return _external_array(tensor, dtype, shape, base_dir)
    numel = math.prod(shape)  # Python ints: dims like [2**32, 2**32, 16] wrap to 0 in int64
    if tensor.HasField("raw_data") and dtype is not DType.bool:
        raw = tensor.raw_data
        if len(raw) != numel * dtype.itemsize:
            raise OnnxImportError(f"{label}: raw data has {len(raw)} bytes, its shape {list(shape)} of {dtype} "
                                  f"needs {numel * dtype.itemsize} (truncated or corrupt)")
        return np.frombuffer(raw, dtype=dtype.numpy).reshape(shape)
    _check_stored_range(tensor, dtype, label)
    try:
        arr = numpy_helper.to_array(tensor)
    except Exception as e:
        raise OnnxImportError(f"{label}: cannot decode its data ({type(e).__name__}: {e}); "
                              "the file is corrupt") from None
    if arr.size != numel:
        raise OnnxImportError(f"{label}: holds {arr.size} values, its shape {list(shape)} needs {numel}")
    return np.asarray(arr, dtype=dtype.numpy).reshape(shape)


def _check_stored_range(tensor: Any, dtype: DType, label: str) -> None:
    """Values kept in a wider field than their type (int8 / int16 / uint8 / bool in int32_data,
    float16 / bfloat16 as bits) and raw bool bytes must fit the type; numpy would wrap 300 to
    44, or keep a bool byte of 7, silently."""
    if dtype.is_float and dtype.itemsize != 2:
        return
    raw = dtype is DType.bool and tensor.HasField("raw_data")  # one byte per bool
    values = np.frombuffer(tensor.raw_data, np.uint8) if raw else np.asarray(tensor.int32_data, np.int64)
    if not values.size:
        return
    if dtype is DType.bool:
        lo, hi = 0, 1
    elif dtype.is_float:  # float16 / bfloat16: their 16 bits as an unsigned integer
        lo, hi = 0, 0xFFFF
    else:
        info = np.iinfo(dtype.numpy)
        lo, hi = int(info.min), int(info.max)
    low, high = int(values.min()), int(values.max())
    if low < lo or high > hi:
        bad = low if low < lo else high
        what = f"the range of {dtype}'s 16 bits" if dtype.is_float else f"{dtype}'s range"
        field = "raw_data" if raw else "int32_data"
        raise OnnxImportError(f"{label} is {dtype} but holds {bad} in {field}, outside {what} [{lo}, {hi}]; "
                              "the model is corrupt")


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
    if kind != "tensor_type":
        raise UnsupportedOpError(f"{what} has ONNX type {kind or 'unset'}; accelir graphs take and return tensors "
                                 "only (sequence, map and optional types are out of scope)")
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


# ----- scopes -----------------------------------------------------------------------

class ImportScope:
    """One graph being built (the main graph, a region or an inlined function body) and
    its name -> Value table.

    An open scope sees its parent's names (an If branch inlined into its parent
    graph); a closed one sees only what was defined in it, as regions and functions
    are closed: a region's captured outer values are defined up front as region inputs.
    """

    def __init__(self, importer: _Importer, graph: Graph, parent: ImportScope | None, opsets: Mapping[str, int],
                 closed: bool = True, origin_prefix: str = ""):
        self.importer = importer
        self.graph = graph
        self.parent = parent
        self.opsets = dict(opsets)
        self.closed = closed
        self.origin_prefix = origin_prefix
        self.values: dict[str, Value] = {}

    def define(self, name: str, value: Value) -> None:
        if name:
            self.values[name] = value

    def lookup(self, name: str, node_label: str) -> Value:
        v = self.values.get(name)
        if v is not None:
            return v
        if self.parent is not None and not self.closed:
            return self.parent.lookup(name, node_label)
        raise OnnxImportError(f"{node_label} reads {name!r}, which no node, input or initializer defines "
                              "before it (a dangling name, or a cycle in the graph)")


# ----- the importer -----------------------------------------------------------------

def _opset_map(opset_import: Iterable[Any]) -> dict[str, int]:
    out = {}
    for o in opset_import:
        dom = "" if o.domain in ("", "ai.onnx") else o.domain
        out[dom] = int(o.version)
    return out


def check_opsets(opsets: Mapping[str, int], where: str) -> None:
    """Refuse opset versions no ONNX release defines: below 1, or beyond the installed onnx's
    (whose schemas the importer reads the ops' semantics and function bodies from)."""
    import onnx.defs
    newest = onnx.defs.onnx_opset_version()
    for domain, version in opsets.items():
        if version < 1 or (domain == "" and version > newest):
            name = repr(domain or "ai.onnx")
            raise OnnxImportError(f"{where} imports opset {version} of domain {name}; valid versions are 1.."
                                  f"{newest if domain == '' else 'n'} (installed onnx {onnx.__version__}); fix "
                                  "opset_import, or upgrade onnx for a newer opset")


def _node_label(node: Any, index: int) -> str:
    name = node.name or f"#{index}"
    dom = f"{node.domain}." if node.domain not in ("", "ai.onnx") else ""
    return f"ONNX node {name!r} ({dom}{node.op_type})"


def topo_order(nodes: Sequence[Any], label: str) -> list[int]:
    """Indices of ``nodes`` in an order where every input is defined first.

    The file's order is kept when it is already valid; otherwise the nodes are sorted
    (stably, by position).  A cycle is reported naming a node on it.
    """
    producer: dict[str, int] = {}
    for i, n in enumerate(nodes):
        for o in n.output:
            if not o:
                continue
            if o in producer:
                raise OnnxImportError(f"{_node_label(n, i)} in {label} defines {o!r}, which "
                                      f"{_node_label(nodes[producer[o]], producer[o])} also defines (not SSA)")
            producer[o] = i
    deps: list[set[int]] = []
    for i, n in enumerate(nodes):
        d = {producer[x] for x in _all_reads(n) if x in producer}
        if i in d:
            raise OnnxImportError(f"{_node_label(n, i)} in {label} reads its own output (a cycle)")
        deps.append(d)
    if all(j < i for i, d in enumerate(deps) for j in d):
        return list(range(len(nodes)))
    users: list[list[int]] = [[] for _ in nodes]
    for i, d in enumerate(deps):
        for j in d:
            users[j].append(i)
    indeg = [len(d) for d in deps]
    heap = [i for i, k in enumerate(indeg) if k == 0]
    heapq.heapify(heap)
    order: list[int] = []
    while heap:
        i = heapq.heappop(heap)
        order.append(i)
        for u in users[i]:
            indeg[u] -= 1
            if indeg[u] == 0:
                heapq.heappush(heap, u)
    if len(order) != len(nodes):
        stuck = next(i for i, k in enumerate(indeg) if k > 0)
        raise OnnxImportError(f"{_node_label(nodes[stuck], stuck)} in {label} is on a cycle: its inputs depend on "
                              "its own outputs")
    return order


def _same_type(info: Any, tensor: Any) -> bool:
    """Whether an initializer fits the input declared under its name (dim_params match any dim)."""
    tt = info.type.tensor_type
    if info.type.WhichOneof("value") != "tensor_type" or tt.elem_type != tensor.data_type:
        return False
    if not tt.HasField("shape"):
        return True
    dims = tt.shape.dim
    return len(dims) == len(tensor.dims) and all(
        d.WhichOneof("value") != "dim_value" or d.dim_value == t for d, t in zip(dims, tensor.dims))


def check_names(gproto: Any, label: str) -> None:
    """Each name is defined once in a graph: inputs and initializers are unique, a node output
    does not redefine either, and an initializer under an input's name (that input's default)
    has the input's type."""
    inputs: dict[str, Any] = {}
    for vi in gproto.input:
        if vi.name in inputs:
            raise OnnxImportError(f"{label} declares input {vi.name!r} twice; input names must be unique")
        inputs[vi.name] = vi
    inits: set[str] = set()
    for t in gproto.initializer:
        if t.name in inits:
            raise OnnxImportError(f"{label} has two initializers named {t.name!r}; names must be unique")
        inits.add(t.name)
        if t.name in inputs and not _same_type(inputs[t.name], t):
            import onnx
            declared = onnx.helper.printable_type(inputs[t.name].type)
            raise OnnxImportError(f"{label}: initializer {t.name!r} ({onnx.TensorProto.DataType.Name(t.data_type)}"
                                  f"{list(t.dims)}) does not match input {t.name!r} ({declared}), whose default "
                                  "value it is")
    for i, n in enumerate(gproto.node):
        for o in n.output:
            if o in inputs or o in inits:
                what = "input" if o in inputs else "initializer"
                raise OnnxImportError(f"{_node_label(n, i)} in {label} redefines {what} {o!r}; each name is "
                                      "defined once")


def _all_reads(node: Any) -> list[str]:
    """Names a node reads: its inputs and the free names of its subgraphs."""
    reads = [x for x in node.input if x]
    for a in node.attribute:
        for g in ([a.g] if a.type == 5 else list(a.graphs) if a.type == 10 else []):
            reads.extend(free_names(g))
    return reads


def free_names(graph: Any) -> list[str]:
    """Names a subgraph reads from enclosing scopes."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer} | \
        {t.values.name for t in graph.sparse_initializer}
    free: list[str] = []
    for n in graph.node:
        for x in _all_reads(n):
            if x not in defined and x not in free:
                free.append(x)
        defined.update(o for o in n.output if o)
    for o in graph.output:
        if o.name not in defined and o.name not in free:
            free.append(o.name)
    return free


# ----- the inlining budget ----------------------------------------------------------

MAX_INLINED_NODES = 1 << 17
"""How many nodes inlining a model's local functions may produce (``import_onnx``'s
``max_inlined_nodes``).  Functions that call each other twice per level grow as 2**depth:
a 1.5 KB file can ask for billions of nodes.  A real model inlines a few thousand; the
importer builds about 5,000 nodes a second, so the budget also bounds the import's time."""

MAX_FUNCTION_DEPTH = 32  # calls nested deeper than this are refused (real models nest a few levels)


def _subgraphs(node: Any) -> list[Any]:
    return [g for a in node.attribute for g in ([a.g] if a.type == 5 else list(a.graphs) if a.type == 10 else [])]


def _call_key(node: Any) -> tuple:
    """Calls with the same function, inputs and attributes compute the same values (ONNX
    functions are pure): the importer inlines such a call once and reuses its outputs."""
    return (node.domain, node.op_type, tuple(node.input), tuple(a.SerializeToString() for a in node.attribute))


class _InlineCost:
    """The number of nodes inlining would produce, computed bottom-up over the call graph
    before anything is built, so a function-call bomb is refused in microseconds."""

    def __init__(self, functions: Mapping[tuple[str, str], Any]):
        self.functions = functions
        self.sizes: dict[tuple[str, str], int] = {}

    def of_nodes(self, nodes: Iterable[Any], stack: tuple[tuple[str, str], ...], plain: bool) -> int:
        """Nodes produced by the local-function calls among ``nodes`` and their subgraphs,
        plus, if ``plain``, the other nodes (those of a function body are inlined too)."""
        total, seen = 0, set()
        for n in nodes:
            key = (n.domain, n.op_type)
            if key in self.functions:
                call = _call_key(n)
                if call not in seen:
                    seen.add(call)
                    total += self.of_function(key, stack)
            else:
                total += plain
            for g in _subgraphs(n):
                total += self.of_nodes(g.node, stack, plain)
        return total

    def of_function(self, key: tuple[str, str], stack: tuple[tuple[str, str], ...]) -> int:
        """Nodes one call of function ``key`` expands to, nested calls included."""
        if key in self.sizes:
            return self.sizes[key]
        path = " -> ".join(f"{k[1]!r}" for k in (*stack, key))
        if key in stack:
            raise OnnxImportError(f"local function {key[1]!r} calls itself ({path}); ONNX functions cannot be "
                                  "recursive")
        if len(stack) >= MAX_FUNCTION_DEPTH:
            raise OnnxImportError(f"local functions nest more than {MAX_FUNCTION_DEPTH} deep ({path})")
        self.sizes[key] = self.of_nodes(self.functions[key].node, (*stack, key), plain=True)
        return self.sizes[key]


def check_inline_budget(model: Any, budget: int) -> None:
    """Refuse, before building anything, a model whose local functions would inline to
    more than ``budget`` nodes (or that calls them recursively)."""
    if not len(model.functions):
        return
    cost = _InlineCost({(f.domain, f.name): f for f in model.functions})
    total = cost.of_nodes(model.graph.node, (), plain=False)
    if total > budget:
        worst = max(cost.sizes, key=cost.sizes.__getitem__)
        whole = f" ({total:,} for the whole model)" if total != cost.sizes[worst] else ""
        raise OnnxImportError(f"inlining local function {worst[1]!r} would build {cost.sizes[worst]:,} nodes{whole}, "
                              f"over the budget of {budget:,} (calls that repeat at every level of nesting grow "
                              "exponentially); if the model is genuine, raise import_onnx(..., max_inlined_nodes=...)")


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
        from .onnx_ops import convert
        label = _node_label(node, index)
        try:
            inputs = [scope.lookup(x, label) if x else None for x in node.input]
            outputs = convert(self, scope, node, inputs, label)
        except DynamicValueError as e:
            raise DynamicValueError(_with_label(label, e), e.input_names) from None
        except UnsupportedOpError as e:
            raise UnsupportedOpError(_with_label(label, e), e.ops or [node.op_type]) from None
        except OnnxImportError as e:
            raise OnnxImportError(_with_label(label, e)) from None
        except VerificationError as e:
            raise VerificationError(f"{label}: the IR rejects the mapped node: {e}") from None
        except AccelirError:
            raise
        except Exception as e:  # a malformed attribute or tensor must not crash the importer
            raise OnnxImportError(f"{label}: cannot import it ({type(e).__name__}: {e}); the model may be "
                                  "malformed") from e
        if len(outputs) < len([o for o in node.output if o]):
            raise OnnxImportError(f"{label}: produces {len(node.output)} outputs, the mapping gave {len(outputs)}")
        for name, v in zip(node.output, outputs):
            if name and v is not None:
                if v.name is None and v.producer is not None:
                    v.name = _value_name(name)
                scope.define(name, v)

    # -- known values --
    def value_of(self, v: Value) -> np.ndarray | None:
        """The value of ``v`` if it can be computed now: constants, shapes (symbolic dims as
        str in an object array) and small integer tensors computed from them."""
        from .onnx_ops import evaluate_known
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
    opsets = _opset_map(model.opset_import)
    if "" not in opsets:
        raise OnnxImportError("the model imports no version of the standard ONNX domain (opset_import lacks '')")
    check_opsets(opsets, "the model")
    for f in model.functions:
        check_opsets(_opset_map(f.opset_import), f"local function {f.name!r}")
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
