"""The walker shared by both torch capture paths (torch.export and torch.fx): fx
graphs node by node into the IR, keeping fx node -> IR value, with the provenance of
each node (module path, source line) and the model's input / output signature.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.fx
import torch.utils._pytree as pytree

from ... import dims as D
from ...arrays import to_numpy
from ...errors import CaptureError, UnsupportedOpError, VerificationError
from ...ir import Builder, DType, Graph, Node, TensorType, Value
from ...unbacked import size_readers, sizes_read_from
from .context import COMPLEX_DTYPES, COMPLEX_RULES, TORCH_DTYPES, Complex, NodeContext, source_of, torch_dtype

__all__ = ["Converter", "TorchSignature", "bind_outputs", "provenance", "ASSERTS", "has_rule", "is_python_op",
           "target_name"]

# ops that only check or constrain; they produce nothing the graph needs.  Of the range torch.export
# records for an .item() used as a size (``u0 >= 0``, ``u0 <= 8``: sym_constrain_range*, _check_is_size,
# the _assert_scalar of its bounds), 0 and the upper end are kept as the bounds of the number's witness,
# which the lowerings check at run time (Converter.bind_item); a lower end above 0 is not.  Other
# _assert_scalar conditions (split sizes summing to the dim) have no IR op to check them and are
# dropped: eager torch raises where they fail.
ASSERTS = frozenset({"_assert_tensor_metadata", "_assert_scalar", "_assert_async", "sym_constrain_range",
                      "sym_constrain_range_for_size", "_print", "_check_is_size"})
_ITEM_OPS = ("item", "_local_scalar_dense")  # a tensor's value read as a python number
# ops that draw random numbers: a captured graph cannot repeat the draw, so they are refused by what they do
RANDOM_OPS = frozenset(f"{op}{tail}" for tail in ("", "_") for op in (
    "rand", "randn", "rand_like", "randn_like", "randint", "randint_like", "randperm", "normal", "bernoulli",
    "uniform", "multinomial", "poisson", "exponential", "geometric", "cauchy", "log_normal", "random",
    "binomial", "_standard_gamma", "_sample_dirichlet"))


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


def provenance(node: torch.fx.Node, origin: str) -> dict[str, str]:
    meta = {"origin": origin}
    module = _module_path(node.meta.get("nn_module_stack"))
    if module:
        meta["module"] = module
    source = _source_line(node.meta.get("stack_trace"))
    if source:
        meta["source"] = source
    return meta


class Converter:
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
        # the IR symbol bound to torch's unbacked symbol of a tensor's .item() -> that 0-d tensor, so an op
        # taking the number as an operand (topk's k) reads it at run time
        self.item_values: dict[str, Value] = {}
        # id of a complex tensor constant -> (the tensor, kept alive; its parts as constants)
        self.complex_consts: dict[int, tuple[torch.Tensor, Complex]] = {}
        # what a rule builds from its attributes alone, keyed by the rule (an FFT's DFT matrices and their
        # constants): made once per graph however many nodes ask
        self.built: dict[tuple, Any] = {}
        self.witnesses: list[list[Node]] = []  # the nodes binding .item() symbols to run-time sizes (bind_item)

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
        if isinstance(arg, Value):  # already converted: a complex tensor's part given to a real rule
            return arg
        if isinstance(arg, torch.fx.Node):
            v = self.env.get(arg)
            if isinstance(v, Value):
                return v
            if isinstance(v, torch.Tensor):
                return self.tensor_constant(v, self.tensor_names.get(id(v)), ctx.meta if ctx else None)
            if isinstance(v, Complex):
                raise _complex_error(f"a complex tensor (fx node {arg.name}) reaches a rule for real tensors", ctx)
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
            if not is_python_op(node) and not has_rule(name, self.rules):
                label = name or target_name(node)
                missing.append((label, provenance(node, label)))
            elif name in _HIGHER_ORDER:
                self.check_supported(getattr(gm, node.args[_HIGHER_ORDER[name]].target))
        if missing:
            raise _unsupported_error(missing)

    def run(self, gm: torch.fx.GraphModule, inputs: Sequence[Any]) -> Any:
        """Convert ``gm``'s graph with placeholders bound to ``inputs``; returns the output args."""
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        for p, v in zip(placeholders, inputs):
            self.env[p] = v
        checks_only = self._feeding_asserts_only(gm)
        for node in gm.graph.nodes:
            if node.op == "placeholder":
                continue
            if node.op == "output":
                return node.args[0]
            if node in checks_only:  # a runtime assert's condition: not part of the computation
                self.env[node] = None
                continue
            if node.op == "get_attr":
                self.env[node] = _fetch_attr(gm, node.target)
                continue
            self.env[node] = self.convert_node(gm, node)
        raise VerificationError("fx graph has no output node")

    def _feeding_asserts_only(self, gm: torch.fx.GraphModule) -> set[torch.fx.Node]:
        """The call nodes whose results reach only runtime asserts (``_assert_scalar`` of a deferred guard,
        say): their symbolic sizes may be beyond what an accelir dim expresses (``Min(...)``)."""
        out: set[torch.fx.Node] = set()
        for node in reversed(gm.graph.nodes):
            if node.op != "call_function":
                continue
            if self.resolve(node)[0] in ASSERTS or (node.users and all(u in out for u in node.users)):
                out.add(node)
        return out

    def convert_node(self, gm: torch.fx.GraphModule, node: torch.fx.Node) -> Any:
        val = self.vals[node] if node in self.vals else node.meta.get("val")
        if _is_int_like(val):
            self._keep_item(node, val)
            return self.dim(val)
        if node.op != "call_module" and _is_plain_python(val):
            return self.python(tuple(val) if isinstance(val, torch.Size) else val)
        name, target, args = self.resolve(node)
        if name in ASSERTS:
            return None
        if name in _HIGHER_ORDER:
            sub = getattr(gm, node.args[_HIGHER_ORDER[name]].target)
            outs = self.run(sub, [self.env.get(a) if isinstance(a, torch.fx.Node) else a
                                  for a in node.args[_HIGHER_ORDER[name] + 1:]])
            return tuple(self.env[o] for o in outs) if isinstance(outs, (tuple, list)) else self.env[outs]
        meta = provenance(node, name if name else target_name(node))
        rules = self.rules
        if self.takes_complex(val, args):
            if name not in COMPLEX_RULES:
                raise _complex_error("this op is not carried out on complex tensors",
                                     NodeContext(self, node, val, meta, name or target_name(node)))
            rules = COMPLEX_RULES
        elif name not in self.rules:
            if is_python_op(node) and self.takes_complex(None, {"args": node.args}):
                raise _complex_error("python code on a complex tensor", NodeContext(self, node, val, meta,
                                                                                     target_name(node)))
            if is_python_op(node):
                return node.target(*self.python(node.args), **{k: self.python(v) for k, v in node.kwargs.items()})
            raise _unsupported_error([(name or target_name(node), meta)])
        ctx = NodeContext(self, node, val, meta, name)
        try:
            out = rules[name](ctx, args)
        except UnsupportedOpError:
            raise
        except VerificationError as e:
            raise VerificationError(f"torch op {name} at {source_of(meta)}: {e}") from e
        return self.check_result(ctx, out)

    def _keep_item(self, node: torch.fx.Node, val: Any) -> None:
        """Bind the fresh symbol torch.export gives an integer ``.item()`` (``u0``; ``.tolist()`` is one
        ``.item()`` an element) to the tensor it reads, through :meth:`bind_item`."""
        if isinstance(val, torch.SymInt) and val.node.expr.is_Symbol and node.op == "call_function" \
                and self.resolve(node)[0] in _ITEM_OPS \
                and isinstance(self.env.get(node.args[0]), Value) and val.node.expr.name not in self.dim_names:
            meta = provenance(node, self.resolve(node)[0] or target_name(node))
            self.dim_names[val.node.expr.name] = self.bind_item(self.value(node.args[0]), meta, _upper_bound(val))

    def bind_item(self, scalar: Value, meta: Mapping[str, str], bound: int | None = None) -> str:
        """An IR unbacked dim whose run-time value is ``scalar``'s: the dim of a witness, a ConstantOfShape
        of that length, so every later size using the number (a slice bound, a split size, a view or
        zeros shape, an arange length) is a symbolic dim the lowerings compute from a value carrying it.
        The number read as a number (topk's k) comes from ``scalar`` itself (``item_values``); a witness
        no size reads is dropped after the conversion (:meth:`drop_unused_witnesses`).  ``bound``, the
        upper end of the range torch.export recorded for the number, is what XLA pads the dim to."""
        b = Builder(self.graph, None, meta)
        n = scalar if scalar.dtype is DType.i64 else b.op("cast", scalar, dtype=DType.i64)
        witness = b.node("constant_of_shape", [b.op("reshape", n, shape=(1,))], {"dtype": DType.bool, "bound": bound})
        self.witnesses.append(b.created)
        sym = witness.output.shape[0]
        self.item_values[sym] = scalar
        return sym

    def drop_unused_witnesses(self) -> None:
        """Remove the witnesses of numbers that no size ended up reading (read as numbers, or not at all),
        with the reshape / cast that fed only them."""
        if not self.witnesses:
            return
        readers = size_readers(self.graph)  # one walk for all: removing a witness changes no other's readers
        for created in self.witnesses:
            if created[-1].output.uses() or sizes_read_from(created[-1], readers):
                continue
            for node in reversed(created):
                if not any(o.uses() for o in node.outputs):
                    self.graph.remove(node)
        self.witnesses = []

    def takes_complex(self, val: Any, args: Mapping[str, Any]) -> bool:
        """Whether a node gives a complex tensor or takes one (a converted node, a complex constant, a
        python complex number), directly or in a list argument."""
        if _is_complex(val) or (isinstance(val, (tuple, list)) and any(_is_complex(v) for v in val)):
            return True
        for arg in args.values():
            for a in (arg if isinstance(arg, (tuple, list)) else (arg,)):
                v = self.env.get(a) if isinstance(a, torch.fx.Node) else a
                if isinstance(v, (Complex, complex)) or _is_complex(v):
                    return True
        return False

    def check_result(self, ctx: NodeContext, out: Any) -> Any:
        """Make the result agree with torch's dtype; a wrong rank or static size is a bug."""
        if isinstance(out, Complex):
            return _check_complex(ctx, out)
        if isinstance(out, Value):
            want = ctx.out_type
            if out.dtype is not want.dtype:
                out = ctx.cast(out, want.dtype)
            if out.rank != want.rank or any(type(a) is int and type(b) is int and a != b
                                            for a, b in zip(out.shape, want.shape)):
                raise VerificationError(f"torch op {ctx.name} at {source_of(ctx.meta)}: mapped to {out.type}, "
                                        f"torch says {want}")
            if isinstance(ctx.val, torch.Tensor):  # a size torch named afresh (a slice to an .item()) is ours
                ctx.name_unbacked(out)
            if out.producer is not None and out.producer.graph is ctx.conv.graph:
                if ctx.node.name and out.name is None:
                    out.name = ctx.node.name
            return out
        if isinstance(out, (tuple, list)):
            vals = ctx.val if isinstance(ctx.val, (tuple, list)) else [None] * len(out)
            fixed = []
            for o, v in zip(out, vals):
                if isinstance(o, (Value, Complex)) and isinstance(v, torch.Tensor):
                    sub = NodeContext(ctx.conv, ctx.node, v, ctx.meta, ctx.name)
                    o = self.check_result(sub, o)
                fixed.append(o)
            return tuple(fixed)
        return out


def has_rule(name: str | None, rules: Mapping[str, Callable]) -> bool:
    """Whether the converter maps aten op ``name``: a rule of ``rules`` (real tensors) or of the complex
    rules, or a check it drops (ASSERTS).  The one test of the up-front check and ``unsupported_ops``."""
    return name is not None and (name in rules or name in ASSERTS or name in COMPLEX_RULES)


def _is_complex(val: Any) -> bool:
    return isinstance(val, torch.Tensor) and val.is_complex()


def _check_complex(ctx: NodeContext, out: Complex) -> Complex:
    """Both parts of a complex result in the part dtype and torch's shape (an imaginary part computed from
    one operand only may still have that operand's shape)."""
    if not _is_complex(ctx.val):
        raise VerificationError(f"torch op {ctx.name} at {source_of(ctx.meta)}: mapped to a complex value, "
                                f"torch says {ctx.val.dtype if isinstance(ctx.val, torch.Tensor) else ctx.val!r}")
    dtype, shape = COMPLEX_DTYPES[ctx.val.dtype], ctx.out_shape
    parts = []
    for part in (out.re, out.im):
        if part is not None:
            part = ctx.cast(part, dtype)
            if part.shape != shape and part.rank <= len(shape):
                part = ctx.b.op("broadcast_to", part, shape=shape)
            if part.rank != len(shape) or any(type(a) is int and type(b) is int and a != b
                                              for a, b in zip(part.shape, shape)):
                raise VerificationError(f"torch op {ctx.name} at {source_of(ctx.meta)}: mapped to complex parts "
                                        f"{part.type}, torch says {list(shape)}")
        parts.append(part)
    return Complex(*parts)


def _complex_error(why: str, ctx: NodeContext | None) -> CaptureError:
    """The one-line refusal of a complex tensor where accelir cannot carry one."""
    where = f"torch op {ctx.name} (node {ctx.node.name}) at {source_of(ctx.meta)}" if ctx else "a torch op"
    return CaptureError(f"{where}: {why}. accelir carries complex values only through {_COMPLEX_OPS}; compute "
                        "this step on real tensors (torch.view_as_real(x), or x.real and x.imag) in the model")


_COMPLEX_OPS = ("polar, complex, view_as_complex, view_as_real, real, imag, abs, angle, add, sub, mul, div, neg, "
                "conj, FFTs over static dims (torch.fft.fft / ifft / rfft / irfft and their 2-d and n-d forms) and "
                "layout ops (views, slices, transposes, cat, stack, dtype changes)")


MAX_BOUND = 1 << 20  # a larger bound on an .item() size pads XLA's buffers past reason: no bound then


def _upper_bound(val: torch.SymInt) -> int | None:
    """The upper end of the value range torch.export recorded for an unbacked symbol (its ``torch._check``s,
    its ``.item()`` of a bounded count), or None when it has none (or one too large to pad to)."""
    ranges = getattr(val.node.shape_env, "var_to_range", {})
    upper = getattr(ranges.get(val.node.expr), "upper", None)
    if upper is None or not getattr(upper, "is_Integer", False) or not 0 <= int(upper) <= MAX_BOUND:
        return None
    return int(upper)


# higher-order ops whose body is a submodule to inline: name -> index of the submodule arg
_HIGHER_ORDER = {"wrap_with_set_grad_enabled": 1, "wrap_with_autocast": 4}


def _fetch_attr(gm: torch.nn.Module, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _is_plain_python(val: Any) -> bool:
    """A traced result that is a python number / size / tuple of them (fx's x.shape, x.size(1));
    sizes may be symbolic (Dynamo's torch.Size of SymInts)."""
    if isinstance(val, (bool, int, float, torch.SymInt)):
        return True
    if isinstance(val, (tuple, list, torch.Size)) and val:
        return all(_is_plain_python(v) for v in val)
    return False


def target_name(node: torch.fx.Node) -> str:
    t = node.target
    if isinstance(t, str):
        return t
    return getattr(t, "__name__", str(t))


def is_python_op(node: torch.fx.Node) -> bool:
    """operator.* / builtins on sizes and python numbers run at capture time."""
    module = getattr(node.target, "__module__", None)
    return node.op == "call_function" and module in ("_operator", "builtins", "math", "operator")


def _unsupported_error(missing: list[tuple[str, dict[str, str]]]) -> UnsupportedOpError:
    missing = sorted(missing, key=lambda m: m[0] not in RANDOM_OPS)  # a random draw is what to fix first
    first, meta = missing[0]
    lines = [f"torch op {first} has no accelir mapping (at {source_of(meta)}; origin {meta.get('origin')})."]
    if first in RANDOM_OPS:
        lines = [f"torch op {first} at {source_of(meta)} draws random numbers in forward, and a captured graph "
                 "cannot repeat the draw: pass the numbers in as an input (transformers models that take "
                 "`noise`, such as ViT-MAE, take them as noise=...), or call model.eval() if it is a training-"
                 "time draw."]
    elif first in _ITEM_OPS:  # an integer .item() is bound to a run-time size (Converter.bind_item), never missing
        lines = [f"torch op {first} at {source_of(meta)} reads a float or bool tensor as a python number, which a "
                 "captured graph cannot carry (an integer .item() can: it becomes a run-time size): keep it a "
                 "tensor (x * t rather than x * t.item())."]
    if len(missing) > 1:
        lines.append("The graph also uses these unsupported ops:")
        for name, m in missing[1:]:
            lines.append(f"  - {name} at {source_of(m)}")
    lines.append("Rewrite the model to avoid them, or add a rule for each in the family module of "
                 "accelir/frontends/torch/.")
    names = list(dict.fromkeys(n for n, _ in missing))
    return UnsupportedOpError("\n".join(lines), names)


def bind_outputs(conv: Converter, leaves: Sequence[Any]) -> tuple[list[Value], list]:
    """The graph outputs among a model's output leaves, and each leaf's slot for TorchSignature:
    its index among the outputs, or ("const", value) for a python value the model returns."""
    results: list[Value] = []
    slots: list = []
    for o in leaves:
        v = conv.env.get(o) if isinstance(o, torch.fx.Node) else o
        if isinstance(v, Complex) or _is_complex(v):
            where = f"node {o.name} at {source_of(provenance(o, 'output'))}" if isinstance(o, torch.fx.Node) else ""
            raise CaptureError(f"output {len(slots)} of the model ({where}) is a complex tensor, which an accelir "
                               "graph cannot return: return torch.view_as_real(x), or x.real and x.imag")
        if isinstance(v, torch.Tensor):
            v = conv.value(o)
        if isinstance(v, Value):
            slots.append(len(results))
            results.append(v)
        else:
            slots.append(("const", v))
    return results, slots
