"""The PyTorch frontend: ``torch.export`` (default) or ``torch.fx`` graphs into the IR.

``capture_torch(model, example_inputs)`` exports the model with ``torch.export.export``
(non-strict, without the costly ``run_decompositions``) and maps each aten op to IR
ops with the rule table in :mod:`accelir.frontends.torch_aten`; composites
(linear, layer_norm, gelu, softmax, sdpa, conv, batch_norm) stay composites.
``method="fx"`` takes ``torch.fx.symbolic_trace`` of the model, or a GraphModule as
it is, and resolves its torch-level targets to the same rules
(:mod:`accelir.frontends.torch_fx`).

Shapes and dtypes come from each fx node's ``meta["val"]``; symbolic sizes become
symbolic dims named after the user's ``torch.export.Dim`` names.  Parameters and
buffers become named constants that share memory with the model's tensors.  The
model's input / output pytree specs are kept in ``graph.meta["signature"]``.
"""

from __future__ import annotations

import functools
import inspect
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.fx
import torch.utils._pytree as pytree

from .. import dims as D
from ..errors import CaptureError, UnsupportedOpError, VerificationError
from ..arrays import to_numpy
from ..ir import Builder, DType, Graph, TensorType, Value

__all__ = ["capture_torch", "TorchSignature", "NodeContext", "TORCH_DTYPES", "torch_dtype", "unsupported_ops"]

TORCH_DTYPES: dict[torch.dtype, DType] = {
    torch.float16: DType.f16, torch.bfloat16: DType.bf16, torch.float32: DType.f32, torch.float64: DType.f64,
    torch.int8: DType.i8, torch.int16: DType.i16, torch.int32: DType.i32, torch.int64: DType.i64,
    torch.uint8: DType.u8, torch.bool: DType.bool,
}
_TO_TORCH = {v: k for k, v in TORCH_DTYPES.items()}

# ops that only check or constrain; they produce nothing the graph needs
_ASSERTS = frozenset({"_assert_tensor_metadata", "_assert_scalar", "_assert_async", "sym_constrain_range",
                      "sym_constrain_range_for_size", "_print", "_check_is_size"})


def torch_dtype(dt: torch.dtype) -> DType:
    try:
        return TORCH_DTYPES[dt]
    except KeyError:
        raise UnsupportedOpError(f"torch dtype {dt} has no accelir dtype; supported: "
                                 f"{', '.join(str(d) for d in TORCH_DTYPES)}") from None


# ----- signature ---------------------------------------------------------------------

@dataclass
class TorchSignature:
    """How the model's own call maps to the graph's flat inputs and back.

    ``in_spec`` is the pytree spec of ``(args, kwargs)``; ``input_leaves`` lists, in
    graph input order, which of its leaves are graph inputs (the others were
    specialised into the graph).  ``out_spec`` rebuilds the model's output
    structure; ``output_slots`` gives for each output leaf its graph output index,
    or ``("const", value)`` for a leaf that is not a tensor.
    """

    in_spec: pytree.TreeSpec
    input_leaves: list[int]
    out_spec: pytree.TreeSpec
    output_slots: list[Any]
    kwarg_order: tuple[str, ...] = ()

    def flatten(self, *args: Any, **kwargs: Any) -> list:
        """The graph inputs (still torch tensors) from the model's own call."""
        ordered = {k: kwargs[k] for k in self.kwarg_order if k in kwargs}
        ordered.update({k: v for k, v in kwargs.items() if k not in ordered})
        leaves, spec = pytree.tree_flatten((tuple(args), ordered))
        if spec != self.in_spec:
            raise ValueError(f"inputs do not match the structure the graph was captured with:\n"
                             f"  captured: {self.in_spec}\n  given:    {spec}")
        return [leaves[i] for i in self.input_leaves]

    def unflatten(self, flat_outputs: Sequence[Any]) -> Any:
        """The model's output structure (tuple, dict, ModelOutput, ...) from graph outputs."""
        leaves = [slot[1] if isinstance(slot, tuple) else flat_outputs[slot] for slot in self.output_slots]
        return pytree.tree_unflatten(leaves, self.out_spec)


# ----- symbolic dims -----------------------------------------------------------------

def _sympy_to_dim(expr: Any, names: Mapping[str, str]) -> D.Dim:
    import sympy
    from torch.utils._sympy.functions import CeilDiv, FloorDiv, Mod, PythonMod

    def walk(e: Any) -> D.Dim:
        if e.is_Integer:
            return int(e)
        if e.is_Symbol:
            return names.get(e.name, e.name)
        if isinstance(e, sympy.Add):
            return functools.reduce(D.dim_add, (walk(a) for a in e.args))
        if isinstance(e, sympy.Mul):
            return functools.reduce(D.dim_mul, (walk(a) for a in e.args))
        if isinstance(e, FloorDiv):
            return D.dim_floordiv(walk(e.args[0]), walk(e.args[1]))
        if isinstance(e, CeilDiv):
            a, b = walk(e.args[0]), walk(e.args[1])
            return D.dim_floordiv(D.dim_add(a, D.dim_sub(b, 1)), b)
        if isinstance(e, (Mod, PythonMod, sympy.Mod)):
            return D.dim_mod(walk(e.args[0]), walk(e.args[1]))
        if isinstance(e, sympy.Pow) and e.exp.is_Integer and int(e.exp) > 0:
            return D.dim_prod([walk(e.base)] * int(e.exp))
        raise UnsupportedOpError(f"symbolic size {e} cannot be expressed as an accelir dim (only +, *, //, % "
                                 "of symbols and integers are); mark fewer dims dynamic")

    return walk(expr)


def _is_int_like(x: Any) -> bool:
    return isinstance(x, (int, torch.SymInt)) and not isinstance(x, bool)


# ----- provenance --------------------------------------------------------------------

_FRAME = re.compile(r'File "([^"]+)", line (\d+)')
_TORCH_DIR = os.path.dirname(torch.__file__)


def _module_path(stack: Mapping[str, Any] | None) -> str:
    if not stack:
        return ""
    path = list(stack.values())[-1]
    path = path[0] if isinstance(path, tuple) else str(path)
    if path.startswith("_empty_nn_module_stack"):
        return ""
    # fx / dynamo spell paths as L['self'].h[0].attn; keep the state_dict form h.0.attn
    path = re.sub(r"^L\['self'\]\.?", "", path)
    return re.sub(r"\[(\d+)\]", r".\1", path).replace("._modules['", ".").replace("']", "")


def _source_line(trace: str | None) -> str:
    if not trace:
        return ""
    frames = _FRAME.findall(trace)
    if not frames:
        return ""
    user = [f for f in frames if not f[0].startswith(_TORCH_DIR)]
    file, line = (user or frames)[-1]
    return f"{os.path.basename(file)}:{line}"


def _provenance(node: torch.fx.Node, origin: str) -> dict[str, str]:
    meta = {"origin": origin}
    module = _module_path(node.meta.get("nn_module_stack"))
    if module:
        meta["module"] = module
    source = _source_line(node.meta.get("stack_trace"))
    if source:
        meta["source"] = source
    return meta


def _where(meta: Mapping[str, str]) -> str:
    parts = [f"module {meta['module']!r}" if meta.get("module") else "the top-level module"]
    if meta.get("source"):
        parts.append(meta["source"])
    return ", ".join(parts)


# ----- conversion --------------------------------------------------------------------

class NodeContext:
    """What an aten rule sees: a builder at the right place and the node's meta."""

    __slots__ = ("conv", "node", "b", "val", "meta", "name")

    def __init__(self, conv: _Converter, node: torch.fx.Node, val: Any, meta: dict[str, str], name: str):
        self.conv = conv
        self.node = node
        self.val = val
        self.meta = meta
        self.name = name
        self.b = Builder(conv.graph, None, meta)

    # --- the node's own result
    @property
    def out_type(self) -> TensorType:
        return self.conv.tensor_type(self.val)

    @property
    def out_dtype(self) -> DType:
        return torch_dtype(self.val.dtype)

    @property
    def out_shape(self) -> tuple[D.Dim, ...]:
        return self.conv.shape(self.val.shape)

    def out_types(self) -> list[TensorType | None]:
        return [self.conv.tensor_type(v) if isinstance(v, torch.Tensor) else None for v in self.val]

    # --- operands
    def value(self, arg: Any) -> Value:
        """The IR value of a tensor argument."""
        return self.conv.value(arg, self)

    def is_tensor(self, arg: Any) -> bool:
        return isinstance(arg, torch.Tensor) or (isinstance(arg, torch.fx.Node)
                                                 and isinstance(self.conv.env.get(arg), (Value, torch.Tensor)))

    def scalar_of(self, arg: Any) -> Any:
        """A python number (or symbolic dim) argument's value."""
        return self.conv.python(arg)

    def dim(self, arg: Any) -> D.Dim:
        v = self.conv.python(arg)
        return v if isinstance(v, str) else int(v)

    def dims(self, args: Sequence[Any]) -> list[D.Dim]:
        return [self.dim(a) for a in args]

    def const(self, value: Any, dtype: DType) -> Value:
        return self.b.scalar(value, dtype)

    def cast(self, v: Value, dtype: DType) -> Value:
        return v if v.dtype is dtype else self.b.op("cast", v, dtype=dtype)

    def operand(self, arg: Any, dtype: DType) -> Value:
        """A tensor argument cast to ``dtype``, or a python scalar as a 0-d constant of it."""
        if self.is_tensor(arg):
            return self.cast(self.value(arg), dtype)
        x = self.conv.python(arg)
        if isinstance(x, str):
            return self.cast(self.dim_value(x), dtype)
        return self.const(x, dtype)

    def dim_value(self, d: D.Dim) -> Value:
        """A symbolic size as a 0-d i64 tensor: the sum of ``d`` ones (the IR has no shape-of op)."""
        ones = self.b.op("broadcast_to", self.const(1, DType.i64), shape=(d,))
        return self.b.op("reduce_sum", ones, axes=(0,))

    def promote(self, *args: Any) -> DType:
        """torch's result dtype for these operands (tensors, 0-d tensors and python scalars rank apart)."""
        keys = []
        for a in args:
            if self.is_tensor(a):
                v = self.value(a)
                keys.append((v.dtype, v.rank == 0))
            else:
                x = self.conv.python(a)
                keys.append(int if isinstance(x, str) else type(x))
        return _promote(tuple(keys))

    def unsupported(self, why: str) -> UnsupportedOpError:
        return UnsupportedOpError(f"torch op {self.name} at {_where(self.meta)}: {why}", [self.name])


@functools.lru_cache(maxsize=512)
def _promote(keys: tuple) -> DType:
    from torch._prims_common import ELEMENTWISE_TYPE_PROMOTION_KIND, elementwise_dtypes
    reps = [torch.empty(() if k[1] else (1,), dtype=_TO_TORCH[k[0]]) if isinstance(k, tuple) else k(1)
            for k in keys]
    _, result = elementwise_dtypes(*reps, type_promotion_kind=ELEMENTWISE_TYPE_PROMOTION_KIND.DEFAULT)
    return torch_dtype(result)


class _Converter:
    """Walks fx graphs node by node, keeping fx node -> IR value (or python value)."""

    def __init__(self, rules: Mapping[str, Callable], resolve: Callable[[torch.fx.Node], tuple[str, Any, dict]],
                 dim_names: Mapping[str, str]):
        self.graph = Graph("main")
        self.rules = rules
        self.resolve = resolve
        self.dim_names = dict(dim_names)
        self.env: dict[torch.fx.Node, Any] = {}
        self.tensor_consts: dict[int, Value] = {}
        self.tensor_names: dict[int, str] = {}
        self.vals: dict[torch.fx.Node, Any] = {}

    # --- types
    def dim(self, d: Any) -> D.Dim:
        if isinstance(d, torch.SymInt):
            expr = d.node.expr
            return int(expr) if expr.is_number else _sympy_to_dim(expr, self.dim_names)
        return int(d)

    def shape(self, shape: Sequence[Any]) -> tuple[D.Dim, ...]:
        return tuple(self.dim(d) for d in shape)

    def tensor_type(self, val: torch.Tensor) -> TensorType:
        return TensorType(torch_dtype(val.dtype), self.shape(val.shape))

    # --- values
    def value(self, arg: Any, ctx: NodeContext | None = None) -> Value:
        if isinstance(arg, torch.fx.Node):
            v = self.env.get(arg)
            if isinstance(v, Value):
                return v
            if isinstance(v, torch.Tensor):
                return self.tensor_constant(v, self.tensor_names.get(id(v)), ctx.meta if ctx else None)
            raise VerificationError(f"fx node {arg.name} is not a tensor (it is {v!r})")
        if isinstance(arg, torch.Tensor):
            return self.tensor_constant(arg, self.tensor_names.get(id(arg)), ctx.meta if ctx else None)
        raise VerificationError(f"expected a tensor argument, got {arg!r}")

    def tensor_constant(self, t: torch.Tensor, name: str | None, meta: Mapping[str, str] | None) -> Value:
        """A constant node sharing ``t``'s memory; one per tensor (and name)."""
        key = id(t)
        v = self.tensor_consts.get(key)
        if v is not None:
            return v
        if t.is_complex() or t.dtype not in TORCH_DTYPES:
            raise UnsupportedOpError(f"constant {name or ''} has dtype {t.dtype}, which accelir does not support")
        arr = to_numpy(t)
        if not isinstance(t, torch.nn.Parameter) and name is None:
            arr = arr.copy()  # anonymous tensors may be freed or reused by torch after capture
        v = self.graph.const(arr, name=name or "c", meta=dict(meta or {}))
        self.tensor_consts[key] = v
        return v

    def python(self, arg: Any) -> Any:
        """A non-tensor argument as a python value (fx nodes of SymInts become dims)."""
        if isinstance(arg, torch.fx.Node):
            v = self.env.get(arg)
            if isinstance(v, Value):
                raise VerificationError(f"fx node {arg.name} is a tensor where a number was expected")
            return v
        if isinstance(arg, (list, tuple)):
            return type(arg)(self.python(a) for a in arg)
        if isinstance(arg, torch.SymInt):
            return self.dim(arg)
        if isinstance(arg, (torch.SymFloat, torch.SymBool)):
            expr = arg.node.expr
            if expr.is_number:
                return float(expr) if isinstance(arg, torch.SymFloat) else bool(expr)
            raise UnsupportedOpError(f"data-dependent symbolic value {expr} is not supported")
        return arg

    # --- nodes
    def check_supported(self, gm: torch.fx.GraphModule) -> None:
        """Raise one UnsupportedOpError listing every op (with where) that has no rule."""
        missing: list[tuple[str, dict[str, str]]] = []
        for node in gm.graph.nodes:
            val = self.vals[node] if node in self.vals else node.meta.get("val")
            if node.op not in ("call_function", "call_method", "call_module") or _is_int_like(val) or (
                    node.op != "call_module" and _is_plain_python(val)):
                continue
            name, _, _ = self.resolve(node)
            if not _is_python_op(node) and (name is None or (name not in self.rules and name not in _ASSERTS)):
                label = name or _target_name(node)
                missing.append((label, _provenance(node, label)))
            elif name in _HIGHER_ORDER:
                self.check_supported(getattr(gm, node.args[_HIGHER_ORDER[name]].target))
        if missing:
            raise _unsupported_error(missing)

    def run(self, gm: torch.fx.GraphModule, inputs: Sequence[Any]) -> Any:
        """Convert ``gm``'s graph with placeholders bound to ``inputs``; returns the output args."""
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        for p, v in zip(placeholders, inputs):
            self.env[p] = v
        for node in gm.graph.nodes:
            if node.op == "placeholder":
                continue
            if node.op == "output":
                return node.args[0]
            if node.op == "get_attr":
                self.env[node] = _fetch_attr(gm, node.target)
                continue
            self.env[node] = self.convert_node(gm, node)
        raise VerificationError("fx graph has no output node")

    def convert_node(self, gm: torch.fx.GraphModule, node: torch.fx.Node) -> Any:
        val = self.vals[node] if node in self.vals else node.meta.get("val")
        if _is_int_like(val):
            return self.dim(val)
        if node.op != "call_module" and _is_plain_python(val):
            return val
        name, target, args = self.resolve(node)
        if name in _ASSERTS:
            return None
        if name in _HIGHER_ORDER:
            sub = getattr(gm, node.args[_HIGHER_ORDER[name]].target)
            outs = self.run(sub, [self.env.get(a) if isinstance(a, torch.fx.Node) else a
                                  for a in node.args[_HIGHER_ORDER[name] + 1:]])
            return tuple(self.env[o] for o in outs) if isinstance(outs, (tuple, list)) else self.env[outs]
        meta = _provenance(node, name if name else _target_name(node))
        if name not in self.rules:
            if _is_python_op(node):
                return node.target(*self.python(node.args), **{k: self.python(v) for k, v in node.kwargs.items()})
            raise _unsupported_error([(name or _target_name(node), meta)])
        ctx = NodeContext(self, node, val, meta, name)
        try:
            out = self.rules[name](ctx, args)
        except UnsupportedOpError:
            raise
        except VerificationError as e:
            raise VerificationError(f"torch op {name} at {_where(meta)}: {e}") from e
        return self.check_result(ctx, out)

    def check_result(self, ctx: NodeContext, out: Any) -> Any:
        """Make the result agree with torch's dtype; a wrong rank or static size is a bug."""
        if isinstance(out, Value):
            want = ctx.out_type
            if out.dtype is not want.dtype:
                out = ctx.cast(out, want.dtype)
            if out.rank != want.rank or any(type(a) is int and type(b) is int and a != b
                                            for a, b in zip(out.shape, want.shape)):
                raise VerificationError(f"torch op {ctx.name} at {_where(ctx.meta)}: mapped to {out.type}, "
                                        f"torch says {want}")
            if out.producer is not None and out.producer.graph is ctx.conv.graph:
                if ctx.node.name and out.name is None:
                    out.name = ctx.node.name
            return out
        if isinstance(out, (tuple, list)):
            vals = ctx.val if isinstance(ctx.val, (tuple, list)) else [None] * len(out)
            fixed = []
            for o, v in zip(out, vals):
                if isinstance(o, Value) and isinstance(v, torch.Tensor):
                    sub = NodeContext(ctx.conv, ctx.node, v, ctx.meta, ctx.name)
                    o = self.check_result(sub, o)
                fixed.append(o)
            return tuple(fixed)
        return out


# higher-order ops whose body is a submodule to inline: name -> index of the submodule arg
_HIGHER_ORDER = {"wrap_with_set_grad_enabled": 1, "wrap_with_autocast": 4}


def _fetch_attr(gm: torch.nn.Module, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _is_plain_python(val: Any) -> bool:
    """A traced result that is a python number / size / tuple of them (fx's x.shape, x.size(1))."""
    if isinstance(val, (bool, int, float)):
        return True
    if isinstance(val, (tuple, list, torch.Size)) and val:
        return all(_is_plain_python(v) for v in val)
    return False


def _target_name(node: torch.fx.Node) -> str:
    t = node.target
    if isinstance(t, str):
        return t
    return getattr(t, "__name__", str(t))


def _is_python_op(node: torch.fx.Node) -> bool:
    """operator.* / builtins on sizes and python numbers run at capture time."""
    module = getattr(node.target, "__module__", None)
    return node.op == "call_function" and module in ("_operator", "builtins", "math", "operator")


def _unsupported_error(missing: list[tuple[str, dict[str, str]]]) -> UnsupportedOpError:
    first, meta = missing[0]
    lines = [f"torch op {first} has no accelir mapping (at {_where(meta)}; origin {meta.get('origin')})."]
    if len(missing) > 1:
        lines.append("The graph also uses these unsupported ops:")
        for name, m in missing[1:]:
            lines.append(f"  - {name} at {_where(m)}")
    lines.append("Rewrite the model to avoid them, or add a rule for each in accelir/frontends/torch_aten.py.")
    names = list(dict.fromkeys(n for n, _ in missing))
    return UnsupportedOpError("\n".join(lines), names)


def unsupported_ops(gm: torch.fx.GraphModule) -> list[str]:
    """The names of the aten ops in an exported graph module that have no rule."""
    from .torch_aten import RULES, resolve_aten
    names = []
    for node in gm.graph.nodes:
        if node.op == "call_function":
            name, _, _ = resolve_aten(node)
            if not _is_python_op(node) and (name is None or (name not in RULES and name not in _ASSERTS)):
                names.append(name or _target_name(node))
    return list(dict.fromkeys(names))


# ----- torch.export path -------------------------------------------------------------

def _dim_names(model: torch.nn.Module, args: tuple, kwargs: dict, dynamic_shapes: Any,
               ep: torch.export.ExportedProgram) -> dict[str, str]:
    """Map export's symbols (s0, s43, ...) to the names of the user's torch.export.Dim objects."""
    if dynamic_shapes is None:
        return {}
    try:
        bound = inspect.signature(model.forward).bind(*args, **kwargs)
        combined = dict(bound.arguments)
    except (TypeError, ValueError):
        combined = {f"arg{i}": a for i, a in enumerate(args)} | dict(kwargs)
    if isinstance(dynamic_shapes, Mapping):
        specs = [(combined[k], dynamic_shapes[k]) for k in dynamic_shapes if k in combined]
    else:
        specs = list(zip(list(combined.values()), dynamic_shapes))
    by_tensor: dict[int, Any] = {}

    def walk(value: Any, spec: Any) -> None:
        if spec is None:
            return
        if isinstance(value, torch.Tensor):
            by_tensor[id(value)] = spec
        elif isinstance(value, (list, tuple)) and isinstance(spec, (list, tuple)):
            for v, s in zip(value, spec):
                walk(v, s)
        elif isinstance(value, Mapping) and isinstance(spec, Mapping):
            for k in spec:
                if k in value:
                    walk(value[k], spec[k])

    for value, spec in specs:
        walk(value, spec)
    leaves = pytree.tree_leaves((args, _reorder_kwargs(kwargs, ep.call_spec.in_spec)))
    user = [s for s in ep.graph_signature.input_specs if s.kind == torch.export.graph_signature.InputKind.USER_INPUT]
    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    names: dict[str, str] = {}
    for leaf, spec in zip(leaves, user):
        per_dim = by_tensor.get(id(leaf))
        node = placeholders.get(getattr(spec.arg, "name", None))
        if per_dim is None or node is None or not isinstance(node.meta.get("val"), torch.Tensor):
            continue
        items = per_dim.items() if isinstance(per_dim, Mapping) else enumerate(per_dim)
        for i, dim in items:
            size = node.meta["val"].shape[i]
            name = getattr(dim, "__name__", None)
            if name and isinstance(size, torch.SymInt) and size.node.expr.is_Symbol:
                names[size.node.expr.name] = name
    return names


def _kwarg_names(in_spec: pytree.TreeSpec) -> tuple[str, ...]:
    """The keyword names of an ``(args, kwargs)`` spec, in the order it flattens them."""
    return tuple(in_spec.child(1).context or ()) if in_spec.num_children == 2 else ()


def _reorder_kwargs(kwargs: dict, in_spec: pytree.TreeSpec) -> dict:
    keys = _kwarg_names(in_spec)
    ordered = {k: kwargs[k] for k in keys if k in kwargs}
    ordered.update({k: v for k, v in kwargs.items() if k not in ordered})
    return ordered


def bind_outputs(conv: _Converter, leaves: Sequence[Any]) -> tuple[list[Value], list]:
    """The graph outputs among a model's output leaves, and each leaf's slot for TorchSignature:
    its index among the outputs, or ("const", value) for a python value the model returns."""
    results: list[Value] = []
    slots: list = []
    for o in leaves:
        v = conv.env.get(o) if isinstance(o, torch.fx.Node) else o
        if isinstance(v, torch.Tensor):
            v = conv.value(o)
        if isinstance(v, Value):
            slots.append(len(results))
            results.append(v)
        else:
            slots.append(("const", v))
    return results, slots


def _export(model: torch.nn.Module, args: tuple, kwargs: dict, dynamic_shapes: Any,
            strict: bool | None) -> Any:
    """torch.export, non-strict first then strict; a failure of both becomes one clear CaptureError."""
    errors: list[tuple[str, Exception]] = []
    for mode in ((False, True) if strict is None else (strict,)):
        try:
            return torch.export.export(model, args, kwargs, dynamic_shapes=dynamic_shapes, strict=mode)
        except Exception as e:  # torch raises many unrelated types here
            errors.append(("strict" if mode else "non-strict", e))
    text = " ".join(f"{type(e).__name__} {e}" for _, e in errors)
    hint = "Rewrite the failing code path, or try method='fx'."
    if "Cache" in text:
        hint = ("transformers models that return a key/value cache need use_cache=False "
                "(in the config or as a call argument). " + hint)
    tried = "; ".join(f"{mode}: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                      for mode, e in errors)
    raise CaptureError(f"torch.export could not capture {type(model).__name__} ({tried}). {hint}") from errors[-1][1]


def _capture_export(model: torch.nn.Module, args: tuple, kwargs: dict, dynamic_shapes: Any,
                    strict: bool | None) -> Graph:
    from torch.export.graph_signature import InputKind, OutputKind, TensorArgument
    from .torch_aten import RULES, resolve_aten

    ep = _export(model, args, kwargs, dynamic_shapes, strict)
    sig = ep.graph_signature
    mutated = [s for s in sig.output_specs if s.kind not in (OutputKind.USER_OUTPUT,)]
    if mutated:
        what = ", ".join(f"{s.kind.name.lower()} of {s.target}" for s in mutated)
        raise UnsupportedOpError(f"the model mutates state in forward ({what}); accelir captures pure inference "
                                 "graphs: call model.eval() and avoid in-place updates of inputs and buffers",
                                 [s.kind.name for s in mutated])
    conv = _Converter(RULES, resolve_aten, _dim_names(model, args, kwargs, dynamic_shapes, ep))
    conv.check_supported(ep.graph_module)
    g = conv.graph
    inputs: list[Any] = []
    input_leaves: list[int] = []
    user_index = 0
    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    for spec in sig.input_specs:
        node = placeholders[spec.arg.name] if hasattr(spec.arg, "name") else None
        if spec.kind == InputKind.USER_INPUT:
            if isinstance(spec.arg, TensorArgument):
                inputs.append(g.add_input(conv.tensor_type(node.meta["val"]), spec.arg.name))
                input_leaves.append(user_index)
            else:
                inputs.append(getattr(spec.arg, "value", None))
            user_index += 1
        elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
            tensor = ep.state_dict[spec.target] if spec.target in ep.state_dict else ep.constants[spec.target]
            if isinstance(tensor, torch.Tensor) and node is not None and node.users:
                tensor = conv.tensor_constant(tensor, spec.target, {"origin": f"state_dict[{spec.target!r}]"})
            inputs.append(tensor)
        else:
            raise UnsupportedOpError(f"export input kind {spec.kind.name} ({spec.target}) is not supported")
    outs = conv.run(ep.graph_module, inputs)
    results, slots = bind_outputs(conv, list(outs) if isinstance(outs, (list, tuple)) else [outs])
    g.set_outputs(results)
    kw_order = _kwarg_names(ep.call_spec.in_spec)
    g.meta["frontend"] = "torch"
    g.meta["signature"] = TorchSignature(ep.call_spec.in_spec, input_leaves, ep.call_spec.out_spec, slots, kw_order)
    return g


# ----- entry point -------------------------------------------------------------------

def capture_torch(model: Any, example_inputs: Any = (), dynamic_shapes: Any = None, method: str = "export",
                  example_kwargs: Mapping[str, Any] | None = None, *, strict: bool | None = None) -> Graph:
    """Capture a torch model as an accelir Graph.

    ``example_inputs`` is a tuple of positional arguments (a single tensor is taken as
    one argument); ``dynamic_shapes`` is torch.export's form, e.g.
    ``{"input_ids": {0: Dim("batch"), 1: Dim("seq")}}``.  ``method="fx"`` traces with
    ``torch.fx.symbolic_trace`` (static shapes) or takes a ``GraphModule`` as it is.
    The model is not mutated and stays in the train / eval mode it was in.
    """
    args = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    kwargs = dict(example_kwargs or {})
    if method == "export":
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"method='export' needs a torch.nn.Module, got {type(model).__name__}")
        with torch.no_grad():
            return _capture_export(model, args, kwargs, dynamic_shapes, strict)
    if method == "fx":
        if dynamic_shapes is not None:
            raise ValueError("method='fx' captures static shapes; use method='export' for dynamic_shapes")
        from .torch_fx import capture_fx
        with torch.no_grad():
            return capture_fx(model, args, kwargs, _Converter)
    raise ValueError(f"method must be 'export' or 'fx', got {method!r}")
