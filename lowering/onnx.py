"""Lower an accelir Graph to ONNX.

``to_onnx(graph, opset=None, target="onnxruntime" | "standard")`` walks the graph and
calls one rule per IR op from ``ONNX_RULES`` (filled with ``register_lowering``, as
jax registers a lowering per primitive).  A rule takes the lowering context, the IR
node and the ONNX values of its inputs, and returns the ONNX values of its outputs.

Choices a reader should know:

* dtype gaps: ONNX Runtime's CPU kernels lack many dtypes (most ops have no f16,
  bf16 or i8 kernel).  The lowering asks ONNX Runtime's kernel registry (or the ONNX
  schema when onnxruntime is not installed) which dtypes an op takes and, where the
  node's dtype is missing, casts its operands to the nearest wider dtype that has a
  kernel and the result back.  This is exact: the IR computes f16 / bf16 in f32 and
  rounds once, and integer results wrap the same way in a wider type.  Where no
  wider dtype has a kernel (f64 conv, for instance) it raises ``LoweringError``
  naming the node, before anything runs.  Both targets follow this policy, so every
  model we write runs on ONNX Runtime.
* symbolic dims become ``dim_param``; a shape-valued attribute holding symbols is
  computed at run time from ``Shape`` of a value carrying each symbol (``dims``).
* constants become initializers of the main graph (subgraphs read them by outer
  scope); value names come from the IR; each ONNX node carries the provenance of its
  IR node in ``metadata_props``.
* regions: ``fusion`` is inlined, ``cond`` becomes ``If`` (a chain of them for an int
  index), ``while_loop`` and ``scan`` become ``Loop``.
* composites lower to a standard ONNX op where one exists at the opset
  (LayerNormalization, Gelu, RMSNormalization, Attention), to ONNX Runtime's fused
  kernels when ``target="onnxruntime"`` (SimplifiedLayerNormalization, FastGelu, Gelu,
  QuickGelu, FusedConv, MultiHeadAttention) where their semantics match exactly, and
  otherwise to the op's own decomposition.  ``linear`` is one Gemm over the input
  flattened to 2-D (bias in the epilogue, a transposed weight read through transB);
  the skip norms stay Add + norm (ORT's fused skip-norm CPU kernels are the slower).
  ``grid_sample`` / ``roi_align`` / ``deform_conv`` become GridSample / RoiAlign /
  DeformConv where ONNX Runtime has a kernel at the opset that agrees with the ONNX
  reference, else their decompositions.
* weights: ``to_onnx_external`` leaves them out of the model and hands ONNX Runtime
  the graph's arrays directly (``OnnxRuntimeModule(graph)`` does this): ORT makes its
  one copy (packed, for the matmul kernels) from them, where an embedded model would
  first copy them into the proto, its serialised bytes and ORT's parse of those.
"""

from __future__ import annotations

import ast
import functools
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

from accelir import dims as D
from accelir.errors import LoweringError
from accelir.fileio import atomic_outputs
from accelir.ir import DType, Graph, Node, TensorType, Value
from accelir.ops import registry
from accelir.ops.nn import GRID_MODE_OLD_NAMES, split_heads
from accelir.ops.shape import inverse_perm
from accelir.splat import splat_scalar

__all__ = ["ONNX_RULES", "ONNX_DTYPE", "ONNX_TYPE_STRINGS", "MIN_OPSET", "SAME", "OnnxValue", "LoweringContext", "OnnxRuntimeModule", "register_lowering",
           "to_onnx", "to_onnx_external", "save_onnx", "default_opset", "supported_dtypes", "input_var",
           "EXTERNAL_DATA_THRESHOLD", "EXTERNAL_WEIGHT_BYTES", "EXTERNAL_LOCATION"]

MIN_OPSET = 18
MS_DOMAIN = "com.microsoft"
EXTERNAL_DATA_THRESHOLD = 2 * 1024 ** 3 - 64 * 1024 ** 2  # protobuf's 2 GB limit, less room for the graph
EXTERNAL_WEIGHT_BYTES = 1024  # to_onnx_external leaves initializers of this size and up out of the model
EXTERNAL_LOCATION = "accelir:in-memory"

ONNX_DTYPE = {
    DType.f16: TensorProto.FLOAT16, DType.bf16: TensorProto.BFLOAT16, DType.f32: TensorProto.FLOAT,
    DType.f64: TensorProto.DOUBLE, DType.i8: TensorProto.INT8, DType.i16: TensorProto.INT16,
    DType.i32: TensorProto.INT32, DType.i64: TensorProto.INT64, DType.u8: TensorProto.UINT8,
    DType.bool: TensorProto.BOOL,
}
_TYPE_STR = {
    DType.f16: "tensor(float16)", DType.bf16: "tensor(bfloat16)", DType.f32: "tensor(float)",
    DType.f64: "tensor(double)", DType.i8: "tensor(int8)", DType.i16: "tensor(int16)", DType.i32: "tensor(int32)",
    DType.i64: "tensor(int64)", DType.u8: "tensor(uint8)", DType.bool: "tensor(bool)",
}
ONNX_TYPE_STRINGS = {v: k for k, v in _TYPE_STR.items()}  # onnxruntime's "tensor(float)" -> DType

# Where a dtype has no kernel, compute in the first of these that has one.
_WIDER = {
    DType.f16: (DType.f32, DType.f64), DType.bf16: (DType.f32, DType.f64), DType.f32: (DType.f64,),
    DType.f64: (), DType.i8: (DType.i16, DType.i32, DType.i64), DType.u8: (DType.i16, DType.i32, DType.i64),
    DType.i16: (DType.i32, DType.i64), DType.i32: (DType.i64,), DType.i64: (),
    DType.bool: (DType.u8, DType.i32, DType.i64),
}
_VALUE_INPUT = {"Where": 1}  # the input whose dtype is the op's value dtype, where it is not the first
_PROVENANCE_KEYS = ("module", "source", "origin", "pass", "rule")
_INT64_MIN = np.iinfo(np.int64).min


# ----- which dtypes an op has a kernel for -------------------------------------------

@functools.lru_cache(maxsize=None)
def _ort_kernel_types() -> dict[tuple[str, str], list[tuple[int, int, dict[str, frozenset[str]]]]]:
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_c
    table: dict[tuple[str, str], list] = {}
    for k in ort_c.get_all_opkernel_def():
        if k.provider != "CPUExecutionProvider":
            continue
        constraints = {var: frozenset(types) for var, types in k.type_constraints.items()}
        table.setdefault((k.op_name, k.domain), []).append((k.version_range[0], k.version_range[1], constraints))
    return table


def _have_onnxruntime() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def _input_vars(op_type: str, domain: str, opset: int) -> tuple[tuple[str, ...], bool]:
    """The type variable of each formal input of ``op_type`` (and whether the last is variadic)."""
    version = 1 if domain == MS_DOMAIN else opset
    try:
        schema = onnx.defs.get_schema(op_type, version, domain)
        return tuple(i.type_str for i in schema.inputs), bool(schema.inputs) and \
            schema.inputs[-1].option == onnx.defs.OpSchema.FormalParameterOption.Variadic
    except onnx.defs.SchemaError:
        pass
    if _have_onnxruntime():
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_c
        for sch in ort_c.get_all_operator_schema():
            if sch.name == op_type and sch.domain == domain:
                return tuple(i.typeStr for i in sch.inputs), bool(sch.inputs) and "Variadic" in str(
                    sch.inputs[-1].option)
    return ("T",), True


def input_var(op_type: str, domain: str, opset: int, index: int) -> str:
    names, variadic = _input_vars(op_type, domain, opset)
    if index < len(names):
        return names[index]
    return names[-1] if variadic and names else "T"


@functools.lru_cache(maxsize=None)
def supported_dtypes(op_type: str, domain: str, opset: int, var: str | None = None) -> frozenset[DType]:
    """The dtypes type variable ``var`` (default: that of the first input) of ``op_type`` may take:
    ONNX Runtime's CPU kernels where onnxruntime is installed, else the ONNX schema."""
    var = var or input_var(op_type, domain, opset, 0)
    version = 1 if domain == MS_DOMAIN else opset
    types: set[str] = set()
    if _have_onnxruntime():
        try:  # a node of this opset has its schema's version, which is what ONNX Runtime binds kernels by
            since = onnx.defs.get_schema(op_type, version, domain).since_version
        except onnx.defs.SchemaError:
            since = None  # a schema of ONNX Runtime's own (its contrib ops): any kernel covering the version
        for lo, hi, constraints in _ort_kernel_types().get((op_type, domain), []):
            if (lo <= version <= hi) if since is None else _binds(lo, hi, since):
                types |= constraints.get(var, frozenset())
    else:
        try:
            schema = onnx.defs.get_schema(op_type, version, domain)
        except onnx.defs.SchemaError:
            return frozenset()
        for c in schema.type_constraints:
            if c.type_param_str == var:
                types |= set(c.allowed_type_strs)
    return frozenset(ONNX_TYPE_STRINGS[t] for t in types if t in ONNX_TYPE_STRINGS)


def _binds(lo: int, hi: int, since: int) -> bool:
    """Whether ONNX Runtime binds a node of schema version ``since`` to a kernel registered for versions
    ``lo`` to ``hi``: an open-ended kernel only serves the version it starts at."""
    return lo == since or lo < since <= hi < 2 ** 31 - 1


@functools.lru_cache(maxsize=None)
def default_opset() -> int:
    """The newest opset both the onnx package and the installed onnxruntime have kernels for.

    At an opset where a function op (Attention-25, ReduceLogSum-28, ...) is newer than
    ONNX Runtime's kernel for it, ONNX Runtime silently inlines the function body
    instead of running its kernel, so such an opset is not fully supported.
    """
    newest = onnx.defs.onnx_opset_version()
    if not _have_onnxruntime():
        return newest
    table = _ort_kernel_types()
    ort_newest = max(lo for (op, dom), defs in table.items() if dom == "" for lo, _, _ in defs)
    for opset in range(min(newest, ort_newest), MIN_OPSET, -1):
        inlined = False
        for (op, dom), defs in table.items():
            if dom != "":
                continue
            try:
                schema = onnx.defs.get_schema(op, opset, dom)
            except onnx.defs.SchemaError:
                continue
            if (schema.has_function or schema.has_context_dependent_function) and \
                    not any(_binds(lo, hi, schema.since_version) for lo, hi, _ in defs):
                inlined = True
                break
        if not inlined:
            return opset
    return MIN_OPSET


# ----- values and the lowering context -----------------------------------------------

@dataclass(frozen=True, slots=True)
class OnnxValue:
    """A value in the ONNX graph being built: its name and element type."""

    name: str
    dtype: DType


_NONE = OnnxValue("", DType.f32)  # an omitted optional input
SAME = "same"  # a result in the operands' dtype (see LoweringContext.kernel)


class _ModelState:
    """What every (sub)graph of one model shares: names, initializers, options."""

    def __init__(self, opset: int, target: str):
        self.opset = opset
        self.target = target
        self.names: set[str] = set()
        # initializer name -> value; written out at the end, for the names live nodes read
        self.tensors: dict[str, np.ndarray] = {}
        self.const_cache: dict[Any, OnnxValue] = {}
        self.keep_alive: list[np.ndarray] = []
        self.node_count = 0
        self.uses_ms_domain = False

    def fresh(self, hint: str) -> str:
        hint = hint or "v"
        name = hint
        k = 1
        while name in self.names:
            name = f"{hint}_{k}"
            k += 1
        self.names.add(name)
        return name


class LoweringContext:
    """One ONNX graph under construction (the main graph or a subgraph)."""

    def __init__(self, state: _ModelState, parent: LoweringContext | None = None):
        self.state = state
        self.parent = parent
        self.nodes: list[onnx.NodeProto] = []
        self.node: Node | None = parent.node if parent else None
        self._symbols: dict[str, tuple[OnnxValue, int]] = {}
        self._dim_cache: dict[Any, OnnxValue] = {}
        self._produced: dict[str, tuple[onnx.NodeProto, int]] = {}
        self.composites: list[Node] = []  # the composite nodes whose decomposition is being lowered
        self._env: dict[int, OnnxValue] = {}
        self.split_outputs: dict[int, OnnxValue] = {}  # id(slice node) -> its part of a Split already emitted

    @property
    def opset(self) -> int:
        return self.state.opset

    @property
    def target(self) -> str:
        return self.state.target

    # ----- errors -------------------------------------------------------------------
    def error(self, message: str) -> LoweringError:
        where = self.node.describe() if self.node is not None else "graph"
        ctx: LoweringContext | None = self
        while ctx is not None:
            where += "".join(f" (in the decomposition of {n.describe()})" for n in reversed(ctx.composites))
            ctx = ctx.parent
        return LoweringError(f"ONNX lowering of {where}: {message}")

    # ----- emitting nodes -----------------------------------------------------------
    def op(self, op_type: str, *inputs: OnnxValue | None, dtype: DType | None = None,
           out_dtypes: Sequence[DType | None] | None = None, domain: str = "", **attrs: Any) -> Any:
        """Append ``op_type(*inputs, **attrs)`` and return its output.

        With ``out_dtypes`` the node has one output per entry (None: an omitted optional output)
        and a tuple is returned; else it has one output of ``dtype`` (default: the first input's).
        """
        single = out_dtypes is None
        if single:
            out_dtypes = [dtype if dtype is not None else next(v.dtype for v in inputs if v is not None and v.name)]
        names = [v.name if v is not None else "" for v in inputs]
        while names and not names[-1]:
            names.pop()
        base = self.node.op if self.node is not None else "node"
        outs = [OnnxValue(self.state.fresh(f"{base}_{op_type}".lower()), d) if d is not None else _NONE
                for d in out_dtypes]
        self.state.node_count += 1
        proto = helper.make_node(op_type, names, [o.name for o in outs],
                                 name=f"{base}/{op_type}_{self.state.node_count}", domain=domain or None,
                                 **{k: v for k, v in attrs.items() if v is not None})
        if self.node is not None:
            meta = self.node.meta
            props = {"accelir.op": self.node.op}
            props.update({k: str(meta[k]) for k in _PROVENANCE_KEYS if meta.get(k)})
            helper.set_metadata_props(proto, props)
        if domain == MS_DOMAIN:
            self.state.uses_ms_domain = True
        self.nodes.append(proto)
        for i, o in enumerate(outs):
            if o.name:
                self._produced[o.name] = (proto, i)
        return outs[0] if single else tuple(outs)

    def const(self, value: Any, dtype: DType | None = None, name: str | None = None) -> OnnxValue:
        """An initializer of the main graph (written out only if a node reads it); small arrays are
        shared by value."""
        arr = np.asarray(value, dtype=dtype.numpy if dtype is not None else None)
        dt = DType.from_numpy(arr.dtype)
        key = (dt, arr.shape, arr.tobytes()) if arr.size <= 64 and name is None else None
        cache = self.state.const_cache
        if key is not None and key in cache:
            return cache[key]
        v = OnnxValue(self.state.fresh(name or f"const_{dt.value}"), dt)
        self.state.tensors[v.name] = arr
        if key is not None:
            cache[key] = v
        return v

    def ints(self, values: Sequence[int]) -> OnnxValue:
        return self.const(np.asarray(list(values), dtype=np.int64))

    def cast(self, v: OnnxValue, dtype: DType) -> OnnxValue:
        if v.dtype == dtype:
            return v
        return self.op("Cast", v, dtype=dtype, to=ONNX_DTYPE[dtype])

    # ----- dtype gaps ---------------------------------------------------------------
    def compute_dtype(self, dtype: DType, *op_types: str, domain: str = "", var: str | None = None) -> DType:
        """``dtype`` if every op in ``op_types`` has a kernel for it, else the nearest wider dtype
        that they all have; raises naming the node where there is none."""
        for cand in (dtype,) + _WIDER[dtype]:
            if all(cand in supported_dtypes(t, domain, self.opset, var if len(op_types) == 1 else
                                            input_var(t, domain, self.opset, _VALUE_INPUT.get(t, 0)))
                   for t in op_types):
                return cand
        raise self.error(f"onnxruntime has no {'/'.join(op_types)} kernel for {dtype} (nor a wider dtype it can "
                         f"compute in exactly); cast the operands to a supported dtype before lowering")

    def has_kernel(self, dtype: DType, *op_types: str, domain: str = "", var: str | None = None) -> bool:
        """Whether the ops have a kernel for ``dtype`` or a wider dtype (see ``compute_dtype``)."""
        try:
            self.compute_dtype(dtype, *op_types, domain=domain, var=var)
        except LoweringError:
            return False
        return True

    def kernel(self, op_type: str, *inputs: OnnxValue | None, main: int = 0, result: DType | None = None,
               results: Sequence[DType | str | None] | None = None, domain: str = "",
               compute: DType | None = None, **attrs: Any) -> Any:
        """Emit ``op_type`` with the operands of ``inputs[main]``'s dtype cast to a dtype it has a
        kernel for, and the results of that dtype cast back.

        ``result``: a fixed dtype of the single result (bool for a compare).  ``results``: one entry
        per output: SAME (the operands' dtype), a fixed dtype, or None (omitted); returns a tuple.
        ``compute``: the dtype to compute in, where the caller knows better than the kernel table.
        """
        dt = inputs[main].dtype
        var = input_var(op_type, domain, self.opset, main)
        cdt = compute or self.compute_dtype(dt, op_type, domain=domain, var=var)
        # cast the operands bound to the same type variable as inputs[main]
        xs = [self.cast(x, cdt) if x is not None and x.name and input_var(op_type, domain, self.opset, i) == var
              else x for i, x in enumerate(inputs)]
        if results is None:
            out = self.op(op_type, *xs, dtype=result or cdt, domain=domain, **attrs)
            return self.cast(out, dt) if result is None else out
        outs = self.op(op_type, *xs, out_dtypes=[cdt if r == SAME else r for r in results], domain=domain,
                       **attrs)
        return tuple(self.cast(o, dt) if r == SAME else o for o, r in zip(outs, results))

    # ----- symbolic dims ------------------------------------------------------------
    def define(self, v: OnnxValue, shape: Sequence[D.Dim]) -> None:
        """Record that ``v`` carries these dims, so ``dim`` can read symbols from its shape."""
        for axis, d in enumerate(shape):
            if isinstance(d, str):
                self._symbols.setdefault(d, (v, axis))

    def _find_symbol(self, d: str) -> tuple[OnnxValue, int] | None:
        ctx: LoweringContext | None = self
        while ctx is not None:
            if d in ctx._symbols:
                return ctx._symbols[d]
            ctx = ctx.parent
        return None

    def dim(self, d: D.Dim) -> OnnxValue:
        """A dim as a 1-element int64 tensor, computed at run time when it is symbolic."""
        if type(d) is int:
            return self.ints([d])
        if d in self._dim_cache:
            return self._dim_cache[d]
        found = self._find_symbol(d)
        if found is not None:
            src, axis = found
            out = self.op("Shape", src, dtype=DType.i64, start=axis, end=axis + 1)
        else:
            out = self._dim_expr(ast.parse(d, mode="eval").body, d)
        self._dim_cache[d] = out
        return out

    def _dim_expr(self, tree: ast.AST, text: str) -> OnnxValue:
        if isinstance(tree, ast.Constant) and type(tree.value) is int:
            return self.ints([tree.value])
        if isinstance(tree, ast.Name):
            if self._find_symbol(tree.id) is None:
                raise self.error(f"symbolic dim {tree.id!r} (in {text!r}) is not a dim of any input; "
                                 "make it a dim of a graph input or give the shape statically")
            return self.dim(tree.id)
        if isinstance(tree, ast.UnaryOp) and isinstance(tree.op, ast.USub):
            return self.op("Neg", self._dim_expr(tree.operand, text))
        ops = {ast.Add: "Add", ast.Sub: "Sub", ast.Mult: "Mul", ast.FloorDiv: "Div", ast.Mod: "Mod"}
        if isinstance(tree, ast.BinOp) and type(tree.op) in ops:
            # dims are non-negative, so ONNX's truncating Div is floor division
            return self.op(ops[type(tree.op)], self._dim_expr(tree.left, text), self._dim_expr(tree.right, text))
        raise self.error(f"cannot compute dim {text!r}")

    def dims(self, shape: Sequence[D.Dim]) -> OnnxValue:
        """Materialise a dims tuple as a 1-D int64 tensor (a constant when every dim is static)."""
        if all(type(d) is int for d in shape):
            return self.ints(shape)
        key = ("dims",) + tuple(shape)
        if key in self._dim_cache:
            return self._dim_cache[key]
        parts: list[OnnxValue] = []
        run: list[int] = []
        for d in shape:
            if type(d) is int:
                run.append(d)
                continue
            if run:
                parts.append(self.ints(run))
                run = []
            parts.append(self.dim(d))
        if run:
            parts.append(self.ints(run))
        out = parts[0] if len(parts) == 1 else self.op("Concat", *parts, axis=0)
        self._dim_cache[key] = out
        return out

    def scalar_dim(self, d: D.Dim) -> OnnxValue:
        """A dim as a 0-d int64 tensor."""
        if type(d) is int:
            return self.const(np.asarray(d, dtype=np.int64))
        return self.op("Squeeze", self.dim(d), self.ints([0]))

    # ----- graphs -------------------------------------------------------------------
    def emit_graph(self, graph: Graph, inputs: Sequence[OnnxValue]) -> list[OnnxValue]:
        """Lower the nodes of ``graph`` into this context, its inputs bound to ``inputs``."""
        env: dict[int, OnnxValue] = {}
        for v, x in zip(graph.inputs, inputs):
            env[id(v)] = x
            self.define(x, v.shape)
        outer, outer_env = self.node, self._env
        self._env = env
        try:
            for node in graph.nodes:
                self.node = node
                outs = self._lower_node(node, [env[id(v)] for v in node.inputs])
                for v, o in zip(node.outputs, outs):
                    env[id(v)] = o
                    self.define(o, v.shape)
        finally:
            self.node, self._env = outer, outer_env
        return [env[id(v)] for v in graph.outputs]

    def value_of(self, v: Value) -> OnnxValue | None:
        """The ONNX value an IR value of the graph being lowered became (None: not lowered here).

        A rule may read past its operands with it, to absorb the ops that made them (the
        head split before an attention); the ops it bypasses vanish when nothing else reads them.
        """
        return self._env.get(id(v))

    def transposed_weight(self, v: Value) -> OnnxValue | None:
        """An initializer holding the transpose of the 2-D constant ``v`` without copying, where ``v``'s
        array is a transposed view (folding ``transpose(weight)`` leaves torch's [N, K] linear weights
        so): the caller reads it with transB."""
        arr = v.const_value
        if arr is None or arr.ndim != 2 or arr.flags.c_contiguous or not arr.flags.f_contiguous:
            return None
        return self.array_initializer(arr, f"{v.producer.attrs['name']}_t", transposed=True)

    def array_initializer(self, arr: np.ndarray, name: str, transposed: bool = False) -> OnnxValue:
        """The initializer holding IR array ``arr`` (or its transpose, a view), one however many nodes
        read it: keyed by the array's identity, kept unique by holding the array while the key lives."""
        key = ("ir-constant-T" if transposed else "ir-constant", id(arr))
        cache = self.state.const_cache
        if key not in cache:
            self.state.keep_alive.append(arr)
            cache[key] = self.const(arr.T if transposed else arr, name=name)
        return cache[key]

    def _lower_node(self, node: Node, xs: list[OnnxValue]) -> list[OnnxValue]:
        rule = ONNX_RULES.get(node.op)
        if rule is None:
            raise self.error(f"no ONNX rule for op {node.op!r}; register one with "
                             "accelir.lowering.onnx.register_lowering")
        start = len(self.nodes)
        outs = list(rule(self, node, xs))
        if len(outs) != len(node.outputs):
            raise self.error(f"the rule gave {len(outs)} outputs, the node has {len(node.outputs)}")
        named = []
        for v, o in zip(node.outputs, outs):
            if o.dtype != v.dtype:
                raise self.error(f"the rule gave {o.dtype} for an output of type {v.type}")
            named.append(self._adopt_name(o, v.name, start))
        return named

    def _adopt_name(self, o: OnnxValue, hint: str | None, start: int) -> OnnxValue:
        """Give a value made by the current rule its IR name, where nothing has read it yet."""
        if not hint or o.name not in self._produced:
            return o
        proto, idx = self._produced[o.name]
        recent = self.nodes[start:]
        if any(o.name in n.input for n in recent) or not any(n is proto for n in recent):
            return o
        new = OnnxValue(self.state.fresh(hint), o.dtype)
        proto.output[idx] = new.name
        del self._produced[o.name]
        self._produced[new.name] = (proto, idx)
        return new

    def subgraph(self, name: str, input_types: Sequence[TensorType],
                 build: Callable[[LoweringContext, list[OnnxValue]], Sequence[OnnxValue]],
                 output_types: Sequence[TensorType], input_hints: Sequence[str] | None = None) -> onnx.GraphProto:
        """Build a subgraph (a Loop / If / Scan body) whose inputs have ``input_types``."""
        sub = LoweringContext(self.state, self)
        hints = list(input_hints or [f"{name}_in"] * len(input_types))
        ins = [OnnxValue(self.state.fresh(h), t.dtype) for h, t in zip(hints, input_types)]
        for v, t in zip(ins, input_types):
            sub.define(v, t.shape)
        outs = list(build(sub, ins))
        out_names: list[OnnxValue] = []
        for o in outs:
            # a subgraph output must be made inside it (not be an input or an outer value), once
            if o.name not in sub._produced or any(o.name == p.name for p in out_names):
                o = sub.op("Identity", o)
            out_names.append(o)
        return helper.make_graph(_live_nodes(sub.nodes, [v.name for v in out_names])[0], self.state.fresh(name),
                                 [_value_info(v.name, t) for v, t in zip(ins, input_types)],
                                 [_value_info(v.name, t) for v, t in zip(out_names, output_types)])


def _value_info(name: str, t: TensorType) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, ONNX_DTYPE[t.dtype], [d if type(d) is int else str(d) for d in t.shape])


Rule = Callable[[LoweringContext, Node, list[OnnxValue]], Sequence[OnnxValue]]
ONNX_RULES: dict[str, Rule] = {}


def register_lowering(*op_names: str) -> Callable[[Rule], Rule]:
    """Register the decorated function as the ONNX rule of each op in ``op_names``."""
    def deco(fn: Rule) -> Rule:
        for name in op_names:
            ONNX_RULES[name] = fn
        return fn
    return deco


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
    state = _ModelState(opset, target)
    ctx = LoweringContext(state)
    inputs = [OnnxValue(state.fresh(v.name or f"input_{i}"), v.dtype) for i, v in enumerate(graph.inputs)]
    outs = ctx.emit_graph(graph, inputs)
    input_names = {v.name for v in inputs}
    out_infos = []
    seen: set[str] = set()
    for i, (v, o) in enumerate(zip(graph.outputs, outs)):
        if o.name in input_names or o.name in state.tensors or o.name in seen:
            o = ctx.op("Identity", o)
            o = ctx._adopt_name(o, v.name or f"output_{i}", len(ctx.nodes) - 1)
        seen.add(o.name)
        out_infos.append(_value_info(o.name, v.type))
    # ``needed``: the values the live nodes read, and the outputs (never initializers: those got an Identity)
    nodes, needed = _live_nodes(ctx.nodes, [o.name for o in out_infos])

    # built in place: make_graph / make_model would copy every weight once more
    model = onnx.ModelProto(ir_version=onnx.IR_VERSION, producer_name="accelir")
    g = model.graph
    g.name = graph.name or "main"
    g.node.extend(nodes)
    g.input.extend(_value_info(ov.name, v.type) for ov, v in zip(inputs, graph.inputs))
    g.output.extend(out_infos)
    weights: dict[str, np.ndarray] = {}
    for name, arr in state.tensors.items():
        if name not in needed:
            continue
        if external and arr.nbytes >= EXTERNAL_WEIGHT_BYTES:
            _external_stub(g.initializer.add(), name, arr)
            weights[name] = arr
        else:
            _fill_tensor(g.initializer.add(), name, arr)
    model.opset_import.append(helper.make_opsetid("", opset))
    if state.uses_ms_domain:
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    frontend = graph.meta.get("frontend")
    if frontend:
        helper.set_model_props(model, {"accelir.frontend": str(frontend)})
    return model, weights


def _names_read(node: onnx.NodeProto) -> set[str]:
    """The values ``node`` reads, with those its subgraphs read from outer scopes."""
    names = {i for i in node.input if i}
    for a in node.attribute:
        for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
            for n in sub.node:
                names |= _names_read(n)
    return names


def _live_nodes(nodes: Sequence[onnx.NodeProto], outputs: Sequence[str]) -> tuple[list[onnx.NodeProto], set[str]]:
    """The nodes that the ``outputs`` depend on (a rule that absorbs the ops that made its operands
    leaves them unread), and the names those nodes read together with the outputs."""
    needed = set(outputs)
    live = []
    for n in reversed(nodes):
        if any(o in needed for o in n.output if o):
            live.append(n)
            needed |= _names_read(n)
    live.reverse()
    return live, needed


def _backing_bytes(arr: np.ndarray) -> bytes | None:
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


def _fill_tensor(t: TensorProto, name: str, arr: np.ndarray) -> None:
    t.name = name
    t.data_type = ONNX_DTYPE[DType.from_numpy(arr.dtype)]
    t.dims.extend(arr.shape)
    raw = _backing_bytes(arr) if arr.nbytes else None
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
    path = os.fspath(path)
    if external_data is None:
        size = sum(len(t.raw_data) for t in model.graph.initializer)
        external_data = size >= EXTERNAL_DATA_THRESHOLD
    data_path = path + ".data"
    with atomic_outputs(path, data_path, overwrite=overwrite) as out:
        if external_data:
            _write_external_data(model, out.temp(data_path), os.path.basename(data_path))
        with open(out.temp(path), "wb") as f:
            f.write(model.SerializeToString())


def _initializers(graph: onnx.GraphProto) -> Iterator[TensorProto]:
    """The initializers of ``graph`` and of its subgraphs (Loop / If / Scan bodies)."""
    yield from graph.initializer
    for node in graph.node:
        for a in node.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from _initializers(sub)


def _write_external_data(model: onnx.ModelProto, data_file: str, location: str, threshold: int = 1024,
                         align: int = 64) -> None:
    """Move every initializer of ``threshold`` bytes and up into ``data_file`` (offsets aligned to
    ``align``), pointing the model at ``location``, the name the file will have beside it."""
    from onnx.external_data_helper import set_external_data
    with open(data_file, "wb") as f:
        for t in _initializers(model.graph):
            if not t.HasField("raw_data") or len(t.raw_data) < threshold:
                continue
            f.write(b"\0" * (-f.tell() % align))
            offset = f.tell()
            f.write(t.raw_data)
            set_external_data(t, location, offset, len(t.raw_data))
            t.ClearField("raw_data")


@register_lowering("constant")
def _lower_constant(ctx, node, xs):
    """An initializer of the main graph, one per IR constant however many nodes read it; a splat
    (one value repeated, see ``accelir.splat``) is a ConstantOfShape of its scalar instead, so the
    model holds one element rather than the whole array."""
    graph, name = node.graph, node.attrs["name"]
    if name not in graph.constants:
        raise ctx.error(f"constant {name!r} has no value in graph {graph.name!r}")
    arr = graph.constants[name]
    scalar = splat_scalar(arr)
    if scalar is not None and _constant_of_shape_takes(ctx, node.outputs[0].dtype):
        value = TensorProto()
        _fill_tensor(value, "value", scalar.reshape(1))
        return [ctx.op("ConstantOfShape", ctx.ints(arr.shape), dtype=node.outputs[0].dtype, value=value)]
    return [ctx.array_initializer(arr, name)]


def _constant_of_shape_takes(ctx: LoweringContext, dtype: DType) -> bool:
    """Whether ConstantOfShape may make ``dtype`` at the model's opset: in its schema and, where
    onnxruntime is installed, in its kernel."""
    schema = onnx.defs.get_schema("ConstantOfShape", ctx.opset, "")
    allowed = {t for c in schema.type_constraints if c.type_param_str == "T2" for t in c.allowed_type_strs}
    return _TYPE_STR[dtype] in allowed and dtype in supported_dtypes("ConstantOfShape", "", ctx.opset, "T2")


# ----- elementwise rules ----------------------------------------------------------------

_UNARY = {
    "neg": "Neg", "abs": "Abs", "exp": "Exp", "log": "Log", "sqrt": "Sqrt", "sin": "Sin", "cos": "Cos", "tan": "Tan",
    "asin": "Asin", "acos": "Acos", "atan": "Atan", "sinh": "Sinh", "cosh": "Cosh", "asinh": "Asinh",
    "acosh": "Acosh", "atanh": "Atanh", "tanh": "Tanh", "sigmoid": "Sigmoid", "erf": "Erf", "floor": "Floor",
    "ceil": "Ceil", "round": "Round", "sign": "Sign", "reciprocal": "Reciprocal",
}
_PREDICATES = {"isnan": "IsNaN", "isinf": "IsInf"}
_BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "max": "Max", "min": "Min"}
_COMPARE = {"eq": "Equal", "lt": "Less", "le": "LessOrEqual", "gt": "Greater", "ge": "GreaterOrEqual"}
_LOGIC = {"and": ("And", "BitwiseAnd"), "or": ("Or", "BitwiseOr"), "xor": ("Xor", "BitwiseXor"),
          "not": ("Not", "BitwiseNot")}


def _simple(op_type: str, result: DType | None = None) -> Rule:
    def rule(ctx: LoweringContext, node: Node, xs: list[OnnxValue]) -> list[OnnxValue]:
        return [ctx.kernel(op_type, *xs, result=result)]
    rule.__name__ = f"lower_{op_type}"
    return rule


for _ir, _onnx in _UNARY.items():
    register_lowering(_ir)(_simple(_onnx))
for _ir, _onnx in _BINARY.items():
    register_lowering(_ir)(_simple(_onnx))
for _ir, _onnx in {**_PREDICATES, **_COMPARE}.items():
    register_lowering(_ir)(_simple(_onnx, DType.bool))


@register_lowering("relu")
def _lower_relu(ctx, node, xs):
    (x,) = xs
    if x.dtype.is_float:
        return [ctx.kernel("Relu", x)]
    return [ctx.kernel("Max", x, ctx.const(0, x.dtype))]


@register_lowering("ne")
def _lower_ne(ctx, node, xs):
    return [ctx.op("Not", ctx.kernel("Equal", *xs, result=DType.bool))]


@register_lowering("and", "or", "xor", "not")
def _lower_logic(ctx, node, xs):
    logical, bitwise = _LOGIC[node.op]
    return [ctx.kernel(logical if xs[0].dtype is DType.bool else bitwise, *xs)]


def _in_compute(ctx: LoweringContext, xs: Sequence[OnnxValue], op_types: Sequence[str],
                body: Callable[[list[OnnxValue]], OnnxValue]) -> OnnxValue:
    """Run ``body`` on ``xs`` cast to a dtype every op in ``op_types`` has a kernel for; cast back."""
    dt = xs[0].dtype
    cdt = ctx.compute_dtype(dt, *op_types)
    return ctx.cast(body([ctx.cast(x, cdt) for x in xs]), dt)


@register_lowering("rsqrt")
def _lower_rsqrt(ctx, node, xs):
    return [_in_compute(ctx, xs, ("Sqrt", "Reciprocal"), lambda v: ctx.op("Reciprocal", ctx.op("Sqrt", v[0])))]


@register_lowering("log1p")
def _lower_log1p(ctx, node, xs):
    def body(v):
        # log1p(x) = log(u) * x / (u - 1) with u = 1 + x (Goldberg): exact to a few ulp where log(1 + x)
        # loses the low bits of x; u == 1 means x is below rounding, and log1p(x) = x there.
        (x,) = v
        one = ctx.const(1, x.dtype)
        u = ctx.op("Add", x, one)
        d = ctx.op("Sub", u, one)
        ratio = ctx.op("Div", ctx.op("Mul", ctx.op("Log", u), x), d)
        small = ctx.op("Equal", d, ctx.const(0, x.dtype), dtype=DType.bool)
        big = ctx.op("IsInf", u, dtype=DType.bool)
        return ctx.op("Where", small, x, ctx.op("Where", big, ctx.op("Log", u), ratio))
    return [_in_compute(ctx, xs, ("Add", "Sub", "Log", "Mul", "Div", "Where", "IsInf"), body)]


@register_lowering("expm1")
def _lower_expm1(ctx, node, xs):
    def body(v):
        # expm1(x) = (u - 1) * x / log(u) with u = exp(x) (Kahan); u == 1 -> x, u - 1 == -1 -> -1
        (x,) = v
        one = ctx.const(1, x.dtype)
        u = ctx.op("Exp", x)
        d = ctx.op("Sub", u, one)
        ratio = ctx.op("Div", ctx.op("Mul", d, x), ctx.op("Log", u))
        small = ctx.op("Equal", u, one, dtype=DType.bool)
        edge = ctx.op("Or", ctx.op("Equal", d, ctx.const(-1, x.dtype), dtype=DType.bool),
                      ctx.op("IsInf", u, dtype=DType.bool))
        return ctx.op("Where", small, x, ctx.op("Where", edge, d, ratio))
    return [_in_compute(ctx, xs, ("Exp", "Sub", "Log", "Mul", "Div", "Where", "IsInf"), body)]


def _int_guarded(ctx: LoweringContext, a: OnnxValue, b: OnnxValue, op_type: str, **attrs: Any) -> OnnxValue:
    """``op_type(a, b)`` for ints with b == 0 giving 0 (the IR's rule) and, for signed division,
    b == -1 giving -a (no INT_MIN / -1 trap)."""
    zero = ctx.const(0, b.dtype)
    is_zero = ctx.op("Equal", b, zero, dtype=DType.bool)
    bad = is_zero
    signed = b.dtype.is_signed and op_type == "Div"
    if signed:
        is_m1 = ctx.op("Equal", b, ctx.const(-1, b.dtype), dtype=DType.bool)
        bad = ctx.op("Or", is_zero, is_m1)
    safe_b = ctx.op("Where", bad, ctx.const(1, b.dtype), b)
    out = ctx.op(op_type, a, safe_b, **attrs)
    if signed:
        out = ctx.op("Where", is_m1, ctx.op("Neg", a), out)
    return ctx.op("Where", is_zero, ctx.const(0, a.dtype), out)


@register_lowering("div", "rem")
def _lower_div_rem(ctx, node, xs):
    op_type, attrs = ("Div", {}) if node.op == "div" else ("Mod", {"fmod": 1})
    if not xs[0].dtype.is_int:
        return [ctx.kernel(op_type, *xs, **attrs)]
    ops = (op_type, "Equal", "Where", "Neg") if xs[0].dtype.is_signed else (op_type, "Equal", "Where")
    return [_in_compute(ctx, xs, ops, lambda v: _int_guarded(ctx, v[0], v[1], op_type, **attrs))]


@register_lowering("pow")
def _lower_pow(ctx, node, xs):
    a, b = xs
    if a.dtype.is_int and a.dtype.is_signed:
        # the IR treats a negative integer exponent as 0
        b = ctx.kernel("Max", b, ctx.const(0, b.dtype))
    # base and exponent are separate type variables: compute both in one dtype both take
    return [_in_compute(ctx, [a, b], ("Pow",), lambda v: ctx.op("Pow", v[0], v[1]))]


@register_lowering("atan2")
def _lower_atan2(ctx, node, xs):
    def body(v):
        y, x = v
        zero = ctx.const(0, y.dtype)
        pi = ctx.const(np.pi, y.dtype)
        base = ctx.op("Atan", ctx.op("Div", y, x))
        y_neg = ctx.op("Less", y, zero, dtype=DType.bool)
        shifted = ctx.op("Where", y_neg, ctx.op("Sub", base, pi), ctx.op("Add", base, pi))
        x_neg = ctx.op("Less", x, zero, dtype=DType.bool)
        x_zero = ctx.op("Equal", x, zero, dtype=DType.bool)
        axis = ctx.op("Mul", ctx.op("Sign", y), ctx.const(np.pi / 2, y.dtype))
        return ctx.op("Where", x_zero, axis, ctx.op("Where", x_neg, shifted, base))
    return [_in_compute(ctx, xs, ("Atan", "Div", "Less", "Where", "Sub", "Add", "Equal", "Sign", "Mul"), body)]


@register_lowering("where")
def _lower_where(ctx, node, xs):
    return [ctx.kernel("Where", *xs, main=1)]


@register_lowering("cast")
def _lower_cast(ctx, node, xs):
    (x,) = xs
    to: DType = node.attrs["dtype"]
    if to.is_int and x.dtype.is_float:
        # float -> int truncates toward zero with NaN -> 0 and saturation (the IR's rule), where a
        # plain Cast leaves NaN and out-of-range values undefined
        cdt = ctx.compute_dtype(x.dtype, "Clip", "IsNaN", "Where")
        xc = ctx.cast(x, cdt)
        info = np.iinfo(to.numpy)
        lo = np.asarray(info.min, dtype=cdt.numpy)
        hi = np.asarray(info.max, dtype=cdt.numpy)
        if float(hi) > info.max:
            hi = np.nextafter(hi, np.asarray(0, cdt.numpy))
        clipped = ctx.op("Clip", xc, ctx.const(lo), ctx.const(hi))
        nan = ctx.op("IsNaN", xc, dtype=DType.bool)
        xc = ctx.op("Where", nan, ctx.const(0, cdt), clipped)
        return [ctx.cast(xc, to)]
    return [ctx.cast(x, to)]


# ----- reductions -----------------------------------------------------------------------

_REDUCE = {"reduce_sum": "ReduceSum", "reduce_mean": "ReduceMean", "reduce_max": "ReduceMax",
           "reduce_min": "ReduceMin", "reduce_prod": "ReduceProd", "reduce_any": "ReduceMax",
           "reduce_all": "ReduceMin"}


@register_lowering(*_REDUCE)
def _lower_reduce(ctx, node, xs):
    (x,) = xs
    axes = node.attrs["axes"]
    if not axes:
        return [x]
    out = ctx.kernel(_REDUCE[node.op], x, ctx.ints(axes), keepdims=int(node.attrs["keepdims"]))
    return [out]


@register_lowering("argmax", "argmin")
def _lower_arg(ctx, node, xs):
    op_type = "ArgMax" if node.op == "argmax" else "ArgMin"
    return [ctx.kernel(op_type, xs[0], result=DType.i64, axis=node.attrs["axis"],
                       keepdims=int(node.attrs["keepdims"]), select_last_index=int(node.attrs["select_last_index"]))]


@register_lowering("cumsum")
def _lower_cumsum(ctx, node, xs):
    axis = ctx.const(np.asarray(node.attrs["axis"], dtype=np.int64))
    return [ctx.kernel("CumSum", xs[0], axis, exclusive=int(node.attrs["exclusive"]),
                       reverse=int(node.attrs["reverse"]))]


_CUM_STEP = {"cumprod": "Mul", "cummax": "Max", "cummin": "Min"}


def _identity_of(op: str, dtype: DType) -> np.ndarray:
    if op == "cumprod":
        return np.asarray(1, dtype=dtype.numpy)
    if dtype.is_float:
        return np.asarray(-np.inf if op == "cummax" else np.inf, dtype=dtype.numpy)
    info = np.iinfo(dtype.numpy)
    return np.asarray(info.min if op == "cummax" else info.max, dtype=dtype.numpy)


@register_lowering("cumprod", "cummax", "cummin")
def _lower_cum_scan(ctx, node, xs):
    """A Scan over the axis moved to the front, carrying the running product / max / min."""
    t = node.inputs[0].type
    if t.rank == 0:
        return [xs[0]]
    step = _CUM_STEP[node.op]
    cdt = ctx.compute_dtype(t.dtype, step)
    axis = node.attrs["axis"] % t.rank
    perm = [axis] + [i for i in range(t.rank) if i != axis]
    inv = inverse_perm(perm)
    x = ctx.cast(xs[0], cdt)
    xt = ctx.op("Transpose", x, perm=perm)
    rest = tuple(t.shape[i] for i in perm[1:])
    init = ctx.op("Expand", ctx.const(_identity_of(node.op, cdt)), ctx.dims(rest))
    exclusive = node.attrs.get("exclusive", False)
    carry_t = TensorType(cdt, rest)

    def body(sub, ins):
        carry, xi = ins
        new = sub.op(step, carry, xi)
        return [new, carry if exclusive else new]

    g = ctx.subgraph(f"{node.op}_body", [carry_t, carry_t], body, [carry_t, carry_t])
    direction = int(node.attrs["reverse"])
    _, yt = ctx.op("Scan", init, xt, out_dtypes=(cdt, cdt), body=g, num_scan_inputs=1,
                   scan_input_directions=[direction], scan_output_directions=[direction])
    return [ctx.cast(ctx.op("Transpose", yt, perm=inv), t.dtype)]


def _topk(ctx: LoweringContext, x: OnnxValue, k: OnnxValue, axis: int, largest: bool) -> tuple[OnnxValue, ...]:
    # ONNX Runtime's TopK breaks ties by the lower index in both directions, as the IR's stable sort
    return ctx.kernel("TopK", x, k, results=(SAME, DType.i64), axis=axis, largest=int(largest), sorted=1)


@register_lowering("sort")
def _lower_sort(ctx, node, xs):
    t = node.inputs[0].type
    axis = node.attrs["axis"] % t.rank
    vals, idx = _topk(ctx, xs[0], ctx.dim(t.shape[axis]), axis, node.attrs["descending"])
    return [vals, idx]


@register_lowering("topk")
def _lower_topk(ctx, node, xs):
    t = node.inputs[0].type
    vals, idx = _topk(ctx, xs[0], ctx.ints([node.attrs["k"]]), node.attrs["axis"] % t.rank, node.attrs["largest"])
    return [vals, idx]


# ----- contractions and windows ---------------------------------------------------------

@register_lowering("matmul")
def _lower_matmul(ctx, node, xs):
    return [ctx.kernel("MatMul", *xs)]


@register_lowering("dot_general")
def _lower_dot_general(ctx, node, xs):
    a, b = node.inputs
    lc, rc, lb, rb = (node.attrs[k] for k in ("lhs_contracting", "rhs_contracting", "lhs_batch", "rhs_batch"))
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    la: list[str | None] = [None] * a.rank
    ra: list[str | None] = [None] * b.rank
    for x, y in list(zip(lb, rb)) + list(zip(lc, rc)):
        la[x] = ra[y] = next(letters)
    la = [c or next(letters) for c in la]
    ra = [c or next(letters) for c in ra]
    out = [la[x] for x in lb] + [la[i] for i in range(a.rank) if i not in lc and i not in lb] + \
          [ra[i] for i in range(b.rank) if i not in rc and i not in rb]
    return [ctx.kernel("Einsum", *xs, equation=f"{''.join(la)},{''.join(ra)}->{''.join(out)}")]


def _dilate_input(ctx: LoweringContext, x: OnnxValue, shape: Sequence[D.Dim], lhs_dilation: Sequence[int]) -> OnnxValue:
    """Insert d - 1 zeros between neighbours along each spatial dim (a transposed conv's input)."""
    shape = list(shape)
    for i, d in enumerate(lhs_dilation):
        if d == 1:
            continue
        ax = 2 + i
        size = shape[ax]
        rank = len(shape)
        u = ctx.op("Unsqueeze", x, ctx.ints([ax + 1]))
        pads = [0] * (rank + 1) * 2
        pads[rank + 1 + ax + 1] = d - 1
        u = ctx.kernel("Pad", u, ctx.ints(pads))
        widened = shape[:ax] + [D.dim_mul(size, d)] + shape[ax + 1:]
        x = ctx.op("Reshape", u, ctx.dims(widened))
        new = D.dim_add(D.dim_mul(D.dim_sub(size, 1), d), 1)
        x = ctx.op("Slice", x, ctx.ints([0]), ctx.dim(new), ctx.ints([ax]))
        shape[ax] = new
    return x


def _conv_attrs(ctx: LoweringContext, node: Node) -> tuple[dict[str, Any], OnnxValue | None]:
    x_t, w_t = node.inputs[0].type, node.inputs[1].type
    n = x_t.rank - 2
    from accelir.ops.linalg import conv_params
    stride, padding, dilation, lhs = conv_params(node.op, node.attrs, n)
    if any(lo < 0 or hi < 0 for lo, hi in padding):
        raise ctx.error("negative conv padding has no ONNX form; slice the input instead")
    attrs = {"strides": list(stride), "pads": [p[0] for p in padding] + [p[1] for p in padding],
             "dilations": list(dilation), "group": node.attrs["groups"], "kernel_shape": list(w_t.shape[2:])}
    return attrs, lhs


def _conv_input(ctx: LoweringContext, node: Node, xs: list[OnnxValue], lhs: Sequence[int]) -> list[OnnxValue]:
    if all(d == 1 for d in lhs):
        return list(xs)
    return [_dilate_input(ctx, xs[0], node.inputs[0].shape, lhs)] + list(xs[1:])


@register_lowering("conv")
def _lower_conv(ctx, node, xs):
    attrs, lhs = _conv_attrs(ctx, node)
    return [ctx.kernel("Conv", *_conv_input(ctx, node, xs, lhs), **attrs)]


_FUSED_CONV_ACT = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}


@register_lowering("fused_conv")
def _lower_fused_conv(ctx, node, xs):
    attrs, lhs = _conv_attrs(ctx, node)
    xs = _conv_input(ctx, node, xs, lhs)
    act = node.attrs["activation"]
    if ctx.target == "onnxruntime" and act in _FUSED_CONV_ACT:
        cdt = ctx.compute_dtype(xs[0].dtype, "FusedConv", domain=MS_DOMAIN)
        if cdt == ctx.compute_dtype(xs[0].dtype, "Conv"):
            return [ctx.kernel("FusedConv", *xs, domain=MS_DOMAIN, activation=_FUSED_CONV_ACT[act], **attrs)]
    return [_activation(ctx, ctx.kernel("Conv", *xs, **attrs), act)]


def _pool_attrs(node: Node) -> dict[str, Any]:
    n = node.inputs[0].rank - 2
    kernel = node.attrs["kernel"]
    stride = node.attrs["stride"] or (1,) * n
    padding = node.attrs["padding"] or ((0, 0),) * n
    dilation = node.attrs["dilation"] or (1,) * n
    return {"kernel_shape": list(kernel), "strides": list(stride), "dilations": list(dilation),
            "pads": [p[0] for p in padding] + [p[1] for p in padding], "ceil_mode": int(node.attrs["ceil_mode"])}


@register_lowering("max_pool")
def _lower_max_pool(ctx, node, xs):
    return [ctx.kernel("MaxPool", xs[0], **_pool_attrs(node))]


@register_lowering("avg_pool")
def _lower_avg_pool(ctx, node, xs):
    return [ctx.kernel("AveragePool", xs[0], count_include_pad=int(node.attrs["count_include_pad"]),
                       **_pool_attrs(node))]


# ----- shape and data movement ----------------------------------------------------------

@register_lowering("reshape")
def _lower_reshape(ctx, node, xs):
    src = node.inputs[0].shape
    target = list(node.attrs["shape"])
    if tuple(target) == tuple(src):
        return [xs[0]]
    if 0 not in target:
        # copy matching symbolic dims with 0 and let one remaining symbol be -1, so the shape stays a
        # constant (ONNX Runtime's fusions match on constant shapes)
        spec: list[Any] = [0 if isinstance(d, str) and i < len(src) and src[i] == d else d
                           for i, d in enumerate(target)]
        if sum(isinstance(d, str) for d in spec) <= 1:
            return [ctx.op("Reshape", xs[0], ctx.ints([-1 if isinstance(d, str) else d for d in spec]))]
    allow_zero = 1 if 0 in target else None
    return [ctx.op("Reshape", xs[0], ctx.dims(target), allowzero=allow_zero)]


@register_lowering("transpose")
def _lower_transpose(ctx, node, xs):
    return [ctx.kernel("Transpose", xs[0], perm=list(node.attrs["perm"]))]


@register_lowering("broadcast_to")
def _lower_broadcast_to(ctx, node, xs):
    if tuple(node.attrs["shape"]) == node.inputs[0].shape:
        return [xs[0]]
    return [ctx.kernel("Expand", xs[0], ctx.dims(node.attrs["shape"]))]


@register_lowering("squeeze", "unsqueeze")
def _lower_squeeze(ctx, node, xs):
    if not node.attrs["axes"]:
        return [xs[0]]
    return [ctx.kernel(node.op.capitalize(), xs[0], ctx.ints(node.attrs["axes"]))]


def _partition(node: Node) -> tuple[list[Node], int] | None:
    """``(slices, axis)`` where every reader of ``node``'s operand is a unit-step slice along one static
    axis and together they cut it into consecutive parts (a packed q, k, v projection, say), the slices
    in order along the axis; else None."""
    x = node.inputs[0]
    if x.rank == 0:
        return None
    parts: list[tuple[int, int, Node]] = []
    axis = None
    for s in x.users():
        a = s.attrs if s.op == "slice" else None
        if a is None or s.graph is not node.graph or len(a["axes"]) != 1 or tuple(a["steps"] or (1,)) != (1,):
            return None
        ax = a["axes"][0] % x.rank
        start, stop = a["starts"][0], a["stops"][0]
        if axis not in (None, ax) or type(start) is not int or type(stop) is not int:
            return None
        axis = ax
        parts.append((start, stop, s))
    dim = x.shape[axis]
    parts.sort(key=lambda p: (p[0], p[1]))
    if len(parts) < 2 or type(dim) is not int or parts[0][0] != 0 or parts[-1][1] != dim or \
            any(a[1] != b[0] or a[0] >= a[1] for a, b in zip(parts, parts[1:])):
        return None
    return [p[2] for p in parts], axis


@register_lowering("slice")
def _lower_slice(ctx, node, xs):
    a = node.attrs
    if not a["axes"]:
        return [xs[0]]
    done = ctx.split_outputs.pop(id(node), None)
    if done is not None:
        return [done]
    group = _partition(node)
    if group is not None:  # one Split for all the parts, read back as each slice is lowered
        slices, axis = group
        sizes = [s.attrs["stops"][0] - s.attrs["starts"][0] for s in slices]
        outs = ctx.kernel("Split", xs[0], ctx.ints(sizes), axis=axis, results=[SAME] * len(slices))
        for s, o in zip(slices, outs):
            ctx.split_outputs[id(s)] = o
        return [ctx.split_outputs.pop(id(node))]
    steps = a["steps"] or (1,) * len(a["axes"])
    return [ctx.kernel("Slice", xs[0], ctx.dims(a["starts"]), ctx.dims(a["stops"]), ctx.ints(a["axes"]),
                       ctx.ints(steps))]


@register_lowering("reverse")
def _lower_reverse(ctx, node, xs):
    axes = node.attrs["axes"]
    if not axes:
        return [xs[0]]
    n = len(axes)
    return [ctx.kernel("Slice", xs[0], ctx.ints([-1] * n), ctx.ints([_INT64_MIN] * n), ctx.ints(axes),
                       ctx.ints([-1] * n))]


@register_lowering("concat")
def _lower_concat(ctx, node, xs):
    return [ctx.kernel("Concat", *xs, axis=node.attrs["axis"])]


@register_lowering("pad")
def _lower_pad(ctx, node, xs):
    (x,) = xs
    pads = node.attrs["pads"]
    mode = node.attrs["mode"]
    cdt = ctx.compute_dtype(x.dtype, "Pad")
    value = None
    if mode == "constant":
        value = ctx.const(np.asarray(node.attrs["value"]).astype(x.dtype.numpy).astype(cdt.numpy))
    out = ctx.op("Pad", ctx.cast(x, cdt), ctx.ints([p[0] for p in pads] + [p[1] for p in pads]), value, mode=mode)
    return [ctx.cast(out, x.dtype)]


def _index(ctx: LoweringContext, idx: OnnxValue) -> OnnxValue:
    return idx if idx.dtype in (DType.i32, DType.i64) else ctx.cast(idx, DType.i64)


@register_lowering("gather")
def _lower_gather(ctx, node, xs):
    return [ctx.kernel("Gather", xs[0], _index(ctx, xs[1]), axis=node.attrs["axis"])]


@register_lowering("take_along_axis")
def _lower_take_along_axis(ctx, node, xs):
    x_t, i_t = node.inputs[0].type, node.inputs[1].type
    ax = node.attrs["axis"] % x_t.rank
    x = xs[0]
    if any(x_t.shape[i] != i_t.shape[i] for i in range(x_t.rank) if i != ax):
        # the IR broadcasts x over the non-axis dims of the indices; GatherElements does not
        x = ctx.kernel("Expand", x, ctx.dims([1 if i == ax else d for i, d in enumerate(i_t.shape)]))
    return [ctx.kernel("GatherElements", x, _index(ctx, xs[1]), axis=ax)]


@register_lowering("gather_nd")
def _lower_gather_nd(ctx, node, xs):
    return [ctx.kernel("GatherND", xs[0], ctx.cast(xs[1], DType.i64), batch_dims=node.attrs["batch_dims"])]


_SCATTER_REDUCE_DTYPES = (DType.f32, DType.f64, DType.i32, DType.i64)


def _scatter(ctx: LoweringContext, op_type: str, x: OnnxValue, idx: OnnxValue, upd: OnnxValue, reduction: str,
             **attrs: Any) -> OnnxValue:
    """ONNX Runtime registers its scatter kernels for every dtype but implements the reductions for
    f32, f64, i32 and i64 only: compute a reduction in the nearest of those."""
    compute = None
    if reduction != "none":
        compute = next((d for d in (x.dtype,) + _WIDER[x.dtype] if d in _SCATTER_REDUCE_DTYPES), None)
        if compute is None:
            raise ctx.error(f"onnxruntime has no {op_type} reduction {reduction!r} for {x.dtype}")
    return ctx.kernel(op_type, x, idx, upd, compute=compute, reduction=None if reduction == "none" else reduction,
                      **attrs)


@register_lowering("scatter_elements")
def _lower_scatter_elements(ctx, node, xs):
    x, idx, upd = xs
    return [_scatter(ctx, "ScatterElements", x, _index(ctx, idx), upd, node.attrs["reduction"],
                     axis=node.attrs["axis"])]


@register_lowering("scatter_nd")
def _lower_scatter_nd(ctx, node, xs):
    x, idx, upd = xs
    k = node.inputs[1].shape[-1]
    idx = ctx.cast(idx, DType.i64)
    # ScatterND takes no negative indices; count them from the end as the IR does
    sizes = ctx.op("Shape", x, dtype=DType.i64, start=0, end=k)
    neg = ctx.op("Less", idx, ctx.const(np.asarray(0, np.int64)), dtype=DType.bool)
    idx = ctx.op("Where", neg, ctx.op("Add", idx, sizes), idx)
    return [_scatter(ctx, "ScatterND", x, idx, upd, node.attrs["reduction"])]


def _clamped_starts(ctx: LoweringContext, x: OnnxValue, starts: Sequence[OnnxValue],
                    sizes: OnnxValue) -> OnnxValue:
    """The run-time start indices, clamped to [0, dim - size] as lax does."""
    st = ctx.op("Concat", *[ctx.op("Reshape", ctx.cast(s, DType.i64), ctx.ints([1])) for s in starts], axis=0)
    hi = ctx.op("Sub", ctx.op("Shape", x, dtype=DType.i64), sizes)
    return ctx.op("Min", ctx.op("Max", st, ctx.ints([0])), hi)


@register_lowering("dynamic_slice")
def _lower_dynamic_slice(ctx, node, xs):
    x = xs[0]
    sizes = ctx.dims(node.attrs["sizes"])
    st = _clamped_starts(ctx, x, xs[1:], sizes)
    return [ctx.kernel("Slice", x, st, ctx.op("Add", st, sizes))]


@register_lowering("dynamic_update_slice")
def _lower_dynamic_update_slice(ctx, node, xs):
    """Pad the update (and a mask of it) out to x's shape at the start, then select."""
    x, upd = xs[:2]
    sizes = ctx.op("Shape", upd, dtype=DType.i64)
    st = _clamped_starts(ctx, x, xs[2:], sizes)
    after = ctx.op("Sub", ctx.op("Shape", x, dtype=DType.i64), ctx.op("Add", st, sizes))
    pads = ctx.op("Concat", st, after, axis=0)
    mask = ctx.op("Expand", ctx.const(np.asarray(True)), sizes)
    mask = ctx.op("Pad", mask, pads, ctx.const(np.asarray(False)))
    cdt = ctx.compute_dtype(upd.dtype, "Pad")
    padded = ctx.cast(ctx.op("Pad", ctx.cast(upd, cdt), pads), upd.dtype)
    return [ctx.kernel("Where", mask, padded, x, main=1)]


@register_lowering("iota")
def _lower_iota(ctx, node, xs):
    shape = node.attrs["shape"]
    ax = node.attrs["axis"] % len(shape)
    dt: DType = node.attrs["dtype"]
    r = ctx.op("Range", ctx.const(np.asarray(0, np.int64)), ctx.scalar_dim(shape[ax]),
               ctx.const(np.asarray(1, np.int64)))
    r = ctx.cast(r, dt)
    if len(shape) > 1:
        r = ctx.op("Reshape", r, ctx.ints([-1 if i == ax else 1 for i in range(len(shape))]))
        r = ctx.kernel("Expand", r, ctx.dims(shape))
    return [r]


# ----- composites -----------------------------------------------------------------------

def _decompose(ctx: LoweringContext, node: Node, xs: list[OnnxValue]) -> list[OnnxValue]:
    """Lower a composite through its decomposition into core ops."""
    try:
        scratch = Graph.decomposition(node.op, [v.type for v in node.inputs], node.attrs, node.meta,
                                      [v.name for v in node.inputs])
    except registry.TypeRuleError as e:
        raise ctx.error(f"no ONNX kernel serves it here and its decomposition does not apply: {e}") from None
    ctx.composites.append(node)
    try:
        return ctx.emit_graph(scratch, xs)
    finally:
        ctx.composites.pop()


def _gelu(ctx: LoweringContext, x: OnnxValue, approximate: str) -> OnnxValue:
    fused = "FastGelu" if approximate == "tanh" else "Gelu"
    if ctx.target == "onnxruntime" and ctx.has_kernel(x.dtype, fused, domain=MS_DOMAIN):
        return ctx.kernel(fused, x, domain=MS_DOMAIN)
    if ctx.opset >= 20 and ctx.has_kernel(x.dtype, "Gelu"):
        return ctx.kernel("Gelu", x, approximate=approximate)
    return _decomposed_activation(ctx, x, "gelu", approximate=approximate)


def _decomposed_activation(ctx: LoweringContext, x: OnnxValue, op: str, **attrs: Any) -> OnnxValue:
    scratch = Graph.decomposition(op, [TensorType(x.dtype, ())], registry.normalize_attrs(op, attrs),
                                  ctx.node.meta if ctx.node else None)
    ctx.composites.append(ctx.node)
    try:
        return ctx.emit_graph(scratch, [x])[0]
    finally:
        ctx.composites.pop()


def _silu(ctx: LoweringContext, x: OnnxValue) -> OnnxValue:
    if ctx.target == "onnxruntime" and ctx.has_kernel(x.dtype, "QuickGelu", domain=MS_DOMAIN):
        return ctx.kernel("QuickGelu", x, domain=MS_DOMAIN, alpha=1.0)
    return _in_compute(ctx, [x], ("Sigmoid", "Mul"), lambda v: ctx.op("Mul", v[0], ctx.op("Sigmoid", v[0])))


def _activation(ctx: LoweringContext, x: OnnxValue, act: str) -> OnnxValue:
    if act == "none":
        return x
    if act in ("relu", "sigmoid", "tanh"):
        return ctx.kernel(act.capitalize(), x)
    if act == "silu":
        return _silu(ctx, x)
    return _gelu(ctx, x, "tanh" if act == "gelu_tanh" else "none")


@register_lowering("gelu")
def _lower_gelu(ctx, node, xs):
    return [_gelu(ctx, xs[0], node.attrs["approximate"])]


@register_lowering("silu")
def _lower_silu(ctx, node, xs):
    return [_silu(ctx, xs[0])]


@register_lowering("softmax", "log_softmax")
def _lower_softmax(ctx, node, xs):
    return [ctx.kernel("Softmax" if node.op == "softmax" else "LogSoftmax", xs[0], axis=node.attrs["axis"])]


def _norm_params(ctx: LoweringContext, node: Node, xs: list[OnnxValue], first: int, count: int
                 ) -> list[OnnxValue | None]:
    """Scale (ones when absent) and the optional bias of a norm node (its inputs ``first``, ``first + 1``),
    in the normalised shape."""
    x_t = node.outputs[0].type
    axis = node.attrs["axis"] % x_t.rank
    norm_shape = x_t.shape[axis:]
    out: list[OnnxValue | None] = []
    for k in range(count):
        i = first + k
        if i >= len(xs):
            out.append(ctx.kernel("Expand", ctx.const(1, x_t.dtype), ctx.dims(norm_shape)) if k == 0 else None)
            continue
        p, p_t = xs[i], node.inputs[i].type
        if p_t.shape != tuple(norm_shape):
            p = ctx.kernel("Expand", p, ctx.dims(norm_shape))
        out.append(p)
    return out


def _layer_norm(ctx: LoweringContext, node: Node, x: OnnxValue, params: list[OnnxValue | None]) -> OnnxValue:
    return ctx.kernel("LayerNormalization", x, *params, axis=node.attrs["axis"], epsilon=node.attrs["epsilon"])


def _rms_norm(ctx: LoweringContext, node: Node, x: OnnxValue, scale: OnnxValue) -> OnnxValue | None:
    attrs = {"axis": node.attrs["axis"], "epsilon": node.attrs["epsilon"]}
    if ctx.target == "onnxruntime" and ctx.has_kernel(x.dtype, "SimplifiedLayerNormalization"):
        return ctx.kernel("SimplifiedLayerNormalization", x, scale, **attrs)
    if ctx.opset >= 23 and ctx.has_kernel(x.dtype, "RMSNormalization"):
        return ctx.kernel("RMSNormalization", x, scale, **attrs)
    return None


@register_lowering("layer_norm")
def _lower_layer_norm(ctx, node, xs):
    return [_layer_norm(ctx, node, xs[0], _norm_params(ctx, node, xs, 1, 2))]


@register_lowering("rms_norm")
def _lower_rms_norm(ctx, node, xs):
    out = _rms_norm(ctx, node, xs[0], _norm_params(ctx, node, xs, 1, 1)[0])
    return [out] if out is not None else _decompose(ctx, node, xs)


# The residual add stays an Add before the norm: ONNX Runtime's CPU SkipLayerNormalization and
# SkipSimplifiedLayerNormalization kernels take 2-7x the time of Add + LayerNormalization /
# SimplifiedLayerNormalization on [128, 768] (ORT 1.32), so OnnxRuntimeModule keeps ORT's
# SkipLayerNormFusion from re-fusing them on the CPU; its CUDA provider still fuses them.

@register_lowering("skip_layer_norm")
def _lower_skip_layer_norm(ctx, node, xs):
    s = ctx.kernel("Add", xs[0], xs[1])
    return [_layer_norm(ctx, node, s, _norm_params(ctx, node, xs, 2, 2)), s]


@register_lowering("skip_rms_norm")
def _lower_skip_rms_norm(ctx, node, xs):
    s = ctx.kernel("Add", xs[0], xs[1])
    y = _rms_norm(ctx, node, s, _norm_params(ctx, node, xs, 2, 1)[0])
    return [y, s] if y is not None else _decompose(ctx, node, xs)


@register_lowering("batch_norm")
def _lower_batch_norm(ctx, node, xs):
    # x, scale / bias and mean / var are three type variables: compute all in one dtype
    return [_in_compute(ctx, xs, ("BatchNormalization",),
                        lambda v: ctx.op("BatchNormalization", *v, epsilon=node.attrs["epsilon"]))]


# GridSample-16 names the modes bilinear / bicubic (GRID_MODE_OLD_NAMES) and takes 4-D inputs only;
# GridSample-20 is N-D.
@register_lowering("grid_sample")
def _lower_grid_sample(ctx, node, xs):
    x_t, a = node.inputs[0].type, node.attrs
    # ONNX Runtime's kernel samples cubic only in 2-D, and with border padding clamps each tap rather than
    # the coordinate as the ONNX reference does: those take the decomposition
    spatial_ok = x_t.rank == 4 or (ctx.opset >= 20 and a["mode"] != "cubic")
    if spatial_ok and (a["mode"], a["padding_mode"]) != ("cubic", "border") and \
            ctx.has_kernel(x_t.dtype, "GridSample"):
        cdt = ctx.compute_dtype(x_t.dtype, "GridSample")
        mode = a["mode"] if ctx.opset >= 20 else GRID_MODE_OLD_NAMES[a["mode"]]
        # X and grid are separate type variables: cast the grid along with X
        return [ctx.kernel("GridSample", xs[0], ctx.cast(xs[1], cdt), compute=cdt, mode=mode,
                           padding_mode=a["padding_mode"], align_corners=int(a["align_corners"]))]
    return _decompose(ctx, node, xs)


@register_lowering("roi_align")
def _lower_roi_align(ctx, node, xs):
    x, rois, batch = xs
    if ctx.has_kernel(x.dtype, "RoiAlign"):
        return [ctx.kernel("RoiAlign", x, rois, ctx.cast(batch, DType.i64), **node.attrs)]
    if node.attrs["sampling_ratio"] == 0:
        raise ctx.error(f"onnxruntime has no RoiAlign kernel at opset {ctx.opset}, and adaptive sampling "
                        "(sampling_ratio=0) has no decomposition; lower at opset 21 or below, or set sampling_ratio")
    return _decompose(ctx, node, xs)


@register_lowering("deform_conv")
def _lower_deform_conv(ctx, node, xs):
    if not ctx.has_kernel(node.inputs[0].dtype, "DeformConv"):
        return _decompose(ctx, node, xs)
    attrs, _ = _conv_attrs(ctx, node)
    return [ctx.kernel("DeformConv", *xs, offset_group=node.attrs["offset_groups"], **attrs)]


def _qkv_projection(parts: Sequence[Value]) -> Node | None:
    """The ``linear`` whose output q, k and v are consecutive equal slices of along the last axis, in
    that order (a packed QKV projection, as GPT-2's c_attn); else None."""
    slices = [v.producer for v in parts]
    if any(p is None or p.op != "slice" for p in slices):
        return None
    # the three slices must be all that reads the projection (else it is needed on its own too: it
    # stays a Gemm), cutting it along the last axis in q, k, v order
    group = _partition(slices[0])
    if group is None or group[1] != 2 or len(group[0]) != 3 or any(a is not b for a, b in zip(group[0], slices)):
        return None
    lin = slices[0].inputs[0].producer
    if lin is None or lin.op != "linear" or lin.attrs["activation"] != "none" or lin.inputs[0].rank != 3 or \
            lin.outputs[0].is_graph_output:
        return None
    d = parts[0].shape[2]
    if any(p.shape[2] != d for p in parts) or (len(lin.inputs) == 3 and lin.inputs[2].type.shape != (3 * d,)):
        return None
    return lin


def _attention_bias(ctx: LoweringContext, m_t: TensorType, m: OnnxValue, shape: Sequence[D.Dim]) -> OnnxValue:
    """An IR attention mask as MultiHeadAttention's additive bias: [B or 1, N or 1, S, T] float, a
    bool mask becoming 0 where it keeps and -inf where it drops (as the IR's where(mask, s, -inf))."""
    dims = (1,) * (4 - m_t.rank) + tuple(m_t.shape)
    if m_t.rank < 4:
        m = ctx.op("Reshape", m, ctx.dims(dims))
    if dims[2:] != tuple(shape[2:]):
        dims = dims[:2] + tuple(shape[2:])
        m = ctx.op("Expand", m, ctx.dims(dims))
    if m.dtype is DType.bool:
        dt = ctx.node.inputs[0].dtype
        m = ctx.op("Where", m, ctx.const(0, dt), ctx.const(-np.inf, dt), dtype=dt)
    return m


def _multi_head_attention(ctx: LoweringContext, node: Node, xs: list[OnnxValue]) -> OnnxValue | None:
    """ONNX Runtime's fused attention over the [B, S, N * H] values that q, k and v were split into
    heads from (the split, the scale, the mask and causal masking all happen inside the kernel), its
    [B, S, N * Hv] result brought back to the IR's [B, N, S, Hv]; None where it does not fit.

    Where q, k and v are slices of one packed projection, ``Attention`` computes that projection too
    (one kernel for the Gemm, the split and the attention); else ``MultiHeadAttention``."""
    q_t, k_t, v_t = (x.type for x in node.inputs[:3])
    if ctx.target != "onnxruntime" or q_t.rank != 4 or \
            q_t.dtype not in supported_dtypes("MultiHeadAttention", MS_DOMAIN, ctx.opset):
        return None
    if not tuple(q_t.shape[:2]) == tuple(k_t.shape[:2]) == tuple(v_t.shape[:2]) or k_t.shape[2] != v_t.shape[2]:
        return None
    split = [split_heads(v) for v in node.inputs[:3]]
    if any(p is None for p in split) or len({p[1] for p in split}) != 1:
        return None
    n = split[0][1]
    s, t = q_t.shape[2], k_t.shape[2]
    causal = node.attrs["causal"]
    if causal and s != t:
        return None  # ORT's causal mask is aligned bottom-right, the IR's top-left
    scale = node.attrs["scale"]
    scale = float(scale if scale is not None else 1.0 / np.sqrt(q_t.shape[3]))
    lin = _qkv_projection([p[0] for p in split])
    if lin is not None and q_t.dtype in supported_dtypes("Attention", MS_DOMAIN, ctx.opset):
        op_type, operands = "Attention", list(lin.inputs)
    else:
        op_type, operands = "MultiHeadAttention", [p[0] for p in split]
    lowered = [ctx.value_of(v) for v in operands]
    if any(v is None for v in lowered):
        return None
    bias = _attention_bias(ctx, node.inputs[3].type, xs[3], (q_t.shape[0], n, s, t)) if len(xs) == 4 else None
    if op_type == "Attention":  # input, weights, bias, mask_index, past, attention_bias
        ins = lowered[:2] + [lowered[2] if len(lowered) == 3 else None, None, None, bias]
    else:  # query, key, value, bias, key_padding_mask, attention_bias
        ins = lowered + [None, None, bias]
    y = ctx.op(op_type, *ins, domain=MS_DOMAIN, num_heads=n, scale=scale, unidirectional=1 if causal else None)
    y = ctx.op("Reshape", y, ctx.ints([0, 0, n, node.outputs[0].shape[3]]))
    return ctx.op("Transpose", y, perm=[0, 2, 1, 3])


@register_lowering("attention")
def _lower_attention(ctx, node, xs):
    fused = _multi_head_attention(ctx, node, xs)
    if fused is not None:
        return [fused]
    q, k, v = (x.type for x in node.inputs[:3])
    mask = node.inputs[3].type if len(node.inputs) == 4 else None
    fits = (ctx.opset >= 23 and q.rank == 4 and q.shape[:2] == k.shape[:2] == v.shape[:2]
            and (mask is None or mask.rank <= 4) and ctx.has_kernel(q.dtype, "Attention"))
    if not fits:
        return _decompose(ctx, node, xs)
    cdt = ctx.compute_dtype(q.dtype, "Attention")
    ins = [ctx.cast(x, cdt) for x in xs[:3]] + [ctx.cast(m, cdt) if m.dtype == q.dtype else m for m in xs[3:]]
    out = ctx.op("Attention", *ins, dtype=cdt, scale=node.attrs["scale"],
                 is_causal=1 if node.attrs["causal"] else None)
    return [ctx.cast(out, q.dtype)]


def _gemm(ctx: LoweringContext, node: Node, xs: list[OnnxValue]) -> OnnxValue | None:
    """``x @ w + b`` as one Gemm over x flattened to [M, K], where Gemm has a kernel for the dtype:
    the bias is added in the product's epilogue, the weight is prepacked once at session start, and
    a weight stored transposed is read as it lies through transB; else None."""
    x_t, w_t = node.inputs[0].type, node.inputs[1].type
    k, n = w_t.shape
    if x_t.rank < 2 or type(k) is not int or x_t.dtype not in supported_dtypes("Gemm", "", ctx.opset):
        return None
    w = ctx.transposed_weight(node.inputs[1])
    lead = tuple(x_t.shape[:-1])
    x = xs[0]
    if x_t.rank > 2:
        m = D.dim_prod(lead)
        x = ctx.op("Reshape", x, ctx.ints([m if type(m) is int else -1, k]))
    y = ctx.op("Gemm", x, xs[1] if w is None else w, xs[2] if len(xs) == 3 else None,
               transB=None if w is None else 1)
    return y if x_t.rank == 2 else ctx.op("Reshape", y, ctx.dims(lead + (n,)))


@register_lowering("linear")
def _lower_linear(ctx, node, xs):
    # Gemm's bias epilogue plus a plain activation beats a bias-taking activation (BiasGelu, FastGelu
    # with bias): ORT's kernels for those are slower than its Gelu
    y = _gemm(ctx, node, xs)
    if y is None:
        y = ctx.kernel("MatMul", xs[0], xs[1])
        if len(xs) == 3:
            y = ctx.kernel("Add", y, xs[2])
    return [_activation(ctx, y, node.attrs["activation"])]


# ----- regions --------------------------------------------------------------------------

@register_lowering("fusion")
def _lower_fusion(ctx, node, xs):
    return ctx.emit_graph(node.regions[0], xs)


def _branch(ctx: LoweringContext, node: Node, region: Graph, operands: list[OnnxValue], k: int) -> onnx.GraphProto:
    """An If branch: no inputs of its own, it reads the operands by outer scope."""
    return ctx.subgraph(f"{node.op}_branch{k}", [], lambda sub, _: sub.emit_graph(region, operands),
                        [v.type for v in node.outputs])


@register_lowering("cond")
def _lower_cond(ctx, node, xs):
    index, operands = xs[0], xs[1:]
    regions = node.regions
    types = [v.dtype for v in node.outputs]
    if index.dtype is DType.bool:
        outs = ctx.op("If", index, out_dtypes=types, then_branch=_branch(ctx, node, regions[1],
                      operands, 1), else_branch=_branch(ctx, node, regions[0], operands, 0))
        return list(outs)
    if len(regions) == 1:
        return ctx.emit_graph(regions[0], operands)

    # the index is clamped: index <= 0 picks branch 0, ..., anything past the end the last branch
    def chain(c: LoweringContext, k: int) -> list[OnnxValue]:
        if k == len(regions) - 1:
            return c.emit_graph(regions[k], operands)
        pred = c.op("LessOrEqual", index, c.const(k, index.dtype), dtype=DType.bool)
        then_g = c.subgraph(f"cond_branch{k}", [], lambda s, _: s.emit_graph(regions[k], operands),
                            [v.type for v in node.outputs])
        else_g = c.subgraph(f"cond_else{k}", [], lambda s, _: chain(s, k + 1), [v.type for v in node.outputs])
        res = c.op("If", pred, out_dtypes=types, then_branch=then_g, else_branch=else_g)
        return list(res)

    if index.dtype not in supported_dtypes("LessOrEqual", "", ctx.opset):
        index = ctx.cast(index, DType.i64)
    return chain(ctx, 0)


@register_lowering("while_loop")
def _lower_while_loop(ctx, node, xs):
    """Loop: the condition runs on the initial state outside and on each new state inside the body."""
    cond_g, body_g = node.regions
    types = [v.type for v in node.inputs]
    first = ctx.emit_graph(cond_g, xs)[0]

    def body(sub, ins):
        state = sub.emit_graph(body_g, ins[2:])
        return [sub.emit_graph(cond_g, state)[0]] + state

    g = ctx.subgraph("while_body", [TensorType(DType.i64, ()), TensorType(DType.bool, ())] + types, body,
                     [TensorType(DType.bool, ())] + types)
    outs = ctx.op("Loop", _NONE, first, *xs, out_dtypes=[t.dtype for t in types], body=g)
    return list(outs)


@register_lowering("scan")
def _lower_scan(ctx, node, xs):
    """Loop over ``length`` steps: consts are read by outer scope, x[i] is gathered per step and
    the ys come back stacked (flipped afterwards for a reverse scan)."""
    nc, nk, length = node.attrs["num_consts"], node.attrs["num_carry"], node.attrs["length"]
    reverse = node.attrs["reverse"]
    body_g = node.regions[0]
    consts, carry, seqs = xs[:nc], xs[nc:nc + nk], xs[nc + nk:]
    carry_t = [v.type for v in node.inputs[nc:nc + nk]]
    y_t = [v.type for v in body_g.outputs[nk:]]

    def body(sub, ins):
        i = sub.op("Reshape", ins[0], sub.ints([]))  # the iteration count may come as [1]
        if reverse:
            i = sub.op("Sub", sub.const(np.asarray(length - 1, np.int64)), i)
        slices = [sub.op("Gather", x, i, axis=0) for x in seqs]
        outs = sub.emit_graph(body_g, list(consts) + list(ins[2:]) + slices)
        return [sub.op("Identity", ins[1])] + outs

    g = ctx.subgraph("scan_body", [TensorType(DType.i64, ()), TensorType(DType.bool, ())] + carry_t, body,
                     [TensorType(DType.bool, ())] + carry_t + y_t)
    outs = ctx.op("Loop", ctx.const(np.asarray(length, np.int64)), _NONE, *carry,
                  out_dtypes=[t.dtype for t in carry_t + y_t], body=g)
    outs = list(outs)
    if reverse:
        outs = outs[:nk] + [ctx.op("Slice", y, ctx.ints([-1]), ctx.ints([_INT64_MIN]), ctx.ints([0]), ctx.ints([-1]))
                            for y in outs[nk:]]
    return outs


def __getattr__(name: str) -> Any:
    # The runner lives in its own module, which imports this one; it is re-exported lazily here
    # because callers reach for it beside to_onnx.
    if name == "OnnxRuntimeModule":
        from .onnxruntime import OnnxRuntimeModule
        return OnnxRuntimeModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
