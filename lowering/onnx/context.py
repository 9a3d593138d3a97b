"""The lowering context: one ONNX graph under construction, and the rule table.

A rule (``register_lowering``) takes a :class:`LoweringContext`, the IR node and the ONNX values
of its inputs and returns the ONNX values of its outputs; the context emits nodes, constants and
subgraphs, widens dtypes that have no kernel, and computes symbolic dims at run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import onnx
from onnx import helper

from accelir import dims as D
from accelir.errors import LoweringError
from accelir.ir import DType, Graph, Node, TensorType, Value
from accelir.ops import registry

from .kernels import INT64_MIN, MS_DOMAIN, ONNX_DTYPE, ORDER_AS_INT64, SAME_BITS_AS_INT64, WIDER_DTYPES, input_var, supported_dtypes

_VALUE_INPUT = {"Where": 1}  # the input whose dtype is the op's value dtype, where it is not the first
_PROVENANCE_KEYS = ("module", "source", "origin", "pass", "rule")
_DIM_OPS = {"+": "Add", "-": "Sub", "*": "Mul", "//": "Div", "%": "Mod"}  # the ONNX op of each dim operator


# ----- values and the lowering context -----------------------------------------------

@dataclass(frozen=True, slots=True)
class OnnxValue:
    """A value in the ONNX graph being built: its name and element type."""

    name: str
    dtype: DType


NO_VALUE = OnnxValue("", DType.f32)  # an omitted optional input
SAME = "same"  # a result in the operands' dtype (see LoweringContext.kernel)


class ModelState:
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

    def __init__(self, state: ModelState, parent: LoweringContext | None = None):
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
        # id(IR [B, N, S, H] value) -> (that value, the [B, S, N * H] ONNX value it is the heads of), where a
        # rule made that packed form first (a RotaryEmbedding over the value its heads were split from)
        self.packed_heads: dict[int, tuple[Value, OnnxValue]] = {}

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
        outs = [OnnxValue(self.state.fresh(f"{base}_{op_type}".lower()), d) if d is not None else NO_VALUE
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
        candidates = (dtype,) + WIDER_DTYPES[dtype]
        if dtype is DType.u64 and all(t in SAME_BITS_AS_INT64 | ORDER_AS_INT64 for t in op_types):
            candidates += (DType.i64,)
        for cand in candidates:
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
        flip = dt is DType.u64 and cdt is DType.i64 and op_type in ORDER_AS_INT64
        xs = [self._flip(self.cast(x, cdt), flip) if x is not None and x.name and
              input_var(op_type, domain, self.opset, i) == var else x for i, x in enumerate(inputs)]
        if results is None:
            out = self.op(op_type, *xs, dtype=result or cdt, domain=domain, **attrs)
            return self.cast(self._flip(out, flip), dt) if result is None else out
        outs = self.op(op_type, *xs, out_dtypes=[cdt if r == SAME else r for r in results], domain=domain,
                       **attrs)
        return tuple(self.cast(self._flip(o, flip), dt) if r == SAME else o for o, r in zip(outs, results))

    def _flip(self, v: OnnxValue, flip: bool) -> OnnxValue:
        """``v`` (int64 holding uint64 bits) with its top bit flipped: unsigned order as signed order."""
        return self.op("BitwiseXor", v, self.const(np.asarray(INT64_MIN, np.int64))) if flip else v

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
            out = self._dim_expr(d)
        self._dim_cache[d] = out
        return out

    def _dim_expr(self, d: str) -> OnnxValue:
        """Nodes computing dim expression ``d`` from the dims of the values carrying its symbols."""
        def symbol(name: str) -> OnnxValue:
            if self._find_symbol(name) is None:
                raise self.error(f"symbolic dim {name!r} (in {d!r}) is not a dim of any input; "
                                 "make it a dim of a graph input or give the shape statically")
            return self.dim(name)

        try:  # dims are non-negative, so ONNX's truncating Div is floor division
            return D.evaluate_with(d, symbol, const=lambda c: self.ints([c]),
                                   binop=lambda op, a, b: self.op(_DIM_OPS[op], a, b), neg=lambda a: self.op("Neg", a))
        except ValueError:
            raise self.error(f"cannot compute dim {d!r}") from None

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
        so): the caller reads it with transB.  ``transpose(weight)`` left unfolded (a tied embedding
        read by a gather too, too big to fold) reads ``weight`` itself, so ONNX Runtime does not fold
        the transpose into a copy of the weight in every session."""
        src = v.producer
        if src is not None and src.op == "transpose" and tuple(src.attrs["perm"]) == (1, 0):
            arr = src.inputs[0].const_value
            if arr is not None and arr.flags.c_contiguous:
                return self.array_initializer(arr, src.inputs[0].producer.attrs["name"])
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
        rule = rule_for(node.op)
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
            named.append(self.adopt_name(o, v.name, start))
        return named

    def adopt_name(self, o: OnnxValue, hint: str | None, start: int) -> OnnxValue:
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
        return helper.make_graph(live_nodes(sub.nodes, [v.name for v in out_names])[0], self.state.fresh(name),
                                 [value_info(v.name, t) for v, t in zip(ins, input_types)],
                                 [value_info(v.name, t) for v, t in zip(out_names, output_types)])


def value_info(name: str, t: TensorType) -> onnx.ValueInfoProto:
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


def rule_for(op: str) -> Rule | None:
    """The rule that lowers ``op``: its own, else for a composite its decomposition (a composite
    needs a rule only where ONNX has a better kernel); None when there is neither."""
    return registry.rule_or_decomposition(ONNX_RULES, op, lower_via_decomposition)


def lower_via_decomposition(ctx: LoweringContext, node: Node, xs: list[OnnxValue]) -> list[OnnxValue]:
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


def names_read(node: onnx.NodeProto) -> set[str]:
    """The values ``node`` reads, with those its subgraphs read from outer scopes."""
    names = {i for i in node.input if i}
    for a in node.attribute:
        for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
            for n in sub.node:
                names |= names_read(n)
    return names


def live_nodes(nodes: Sequence[onnx.NodeProto], outputs: Sequence[str]) -> tuple[list[onnx.NodeProto], set[str]]:
    """The nodes that the ``outputs`` depend on (a rule that absorbs the ops that made its operands
    leaves them unread), and the names those nodes read together with the outputs."""
    needed = set(outputs)
    live = []
    for n in reversed(nodes):
        if any(o in needed for o in n.output if o):
            live.append(n)
            needed |= names_read(n)
    live.reverse()
    return live, needed


def in_compute(ctx: LoweringContext, xs: Sequence[OnnxValue], op_types: Sequence[str],
                body: Callable[[list[OnnxValue]], OnnxValue]) -> OnnxValue:
    """Run ``body`` on ``xs`` cast to a dtype every op in ``op_types`` has a kernel for; cast back."""
    dt = xs[0].dtype
    cdt = ctx.compute_dtype(dt, *op_types)
    return ctx.cast(body([ctx.cast(x, cdt) for x in xs]), dt)
