"""Reading ONNX protos, shared by the importer and the op rules: the import errors,
the dtype tables, tensors (external data confined to the model's directory), opset
maps, node order, the names a graph reads, the inlining budget, and the name scopes
that the importer fills."""

from __future__ import annotations

import heapq
import math
import os
import re
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ...errors import AccelirError, UnsupportedOpError
from ...ir import DType, Graph, Value
from ...lowering.onnx import ONNX_DTYPE

__all__ = ["OnnxImportError", "DynamicValueError", "ONNX_DTYPES", "DTYPE_TO_ONNX", "onnx_dtype", "tensor_to_array",
           "ImportScope", "opset_map", "check_opsets", "node_label", "topo_order", "check_names", "free_names",
           "MAX_INLINED_NODES", "MAX_FUNCTION_DEPTH", "call_key", "check_inline_budget"]


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
DTYPE_TO_ONNX = ONNX_DTYPE


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


# ----- scopes -----------------------------------------------------------------------

class ImportScope:
    """One graph being built (the main graph, a region or an inlined function body) and
    its name -> Value table.

    An open scope sees its parent's names (an If branch inlined into its parent
    graph); a closed one sees only what was defined in it, as regions and functions
    are closed: a region's captured outer values are defined up front as region inputs.
    """

    def __init__(self, importer: Any, graph: Graph, parent: ImportScope | None, opsets: Mapping[str, int],
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

def opset_map(opset_import: Iterable[Any]) -> dict[str, int]:
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


def node_label(node: Any, index: int) -> str:
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
                raise OnnxImportError(f"{node_label(n, i)} in {label} defines {o!r}, which "
                                      f"{node_label(nodes[producer[o]], producer[o])} also defines (not SSA)")
            producer[o] = i
    deps: list[set[int]] = []
    for i, n in enumerate(nodes):
        d = {producer[x] for x in _all_reads(n) if x in producer}
        if i in d:
            raise OnnxImportError(f"{node_label(n, i)} in {label} reads its own output (a cycle)")
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
        raise OnnxImportError(f"{node_label(nodes[stuck], stuck)} in {label} is on a cycle: its inputs depend on "
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
                raise OnnxImportError(f"{node_label(n, i)} in {label} redefines {what} {o!r}; each name is "
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


def call_key(node: Any) -> tuple:
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
                call = call_key(n)
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
