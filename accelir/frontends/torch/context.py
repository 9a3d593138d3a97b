"""The PyTorch rule context: what every aten rule module imports.

A rule is ``rule(ctx, a) -> Value | tuple | python value``: ``a`` holds the op's
arguments by their schema names with defaults filled in (:func:`bind_schema`), ``ctx``
is a :class:`NodeContext` (builder, torch's result dtype and shape from
``meta["val"]``, operand helpers).  The IR has no type promotion, so rules cast
operands to torch's result dtype (or, for comparisons, to the promoted dtype).
Composites stay composites: linear, layer_norm, gelu, softmax, sdpa -> attention,
conv (with bias), batch_norm in eval mode.  Ops with no IR op are decomposed in the
rules (floor division, remainder, var, tril, ...).  In-place variants (``add_``)
reuse the functional rule and rebind the mutated node and its aliases; an update of a
slice or select view is written back into its base (:func:`add_inplace_variants`).
Rules register with :func:`rule` into ``RULES``; rule modules import this module
(and shared ones), never the driver nor each other.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.fx
from torch.fx.experimental.symbolic_shapes import free_unbacked_symbols

from ... import dims as D
from ...errors import UnsupportedOpError
from ...ir import Builder, DType, TensorType, Value
from ..base import RuleContext, RuleTable

__all__ = ["TORCH_DTYPES", "torch_dtype", "source_of", "NodeContext", "Rule", "RULES", "rule", "bind_schema",
           "resolve_aten", "slice_bounds", "wrap_axis", "full", "full_like_type", "to_out", "INT_MAX",
           "add_inplace_variants", "Complex", "COMPLEX_DTYPES", "COMPLEX_RULES", "complex_rule"]

TORCH_DTYPES: dict[torch.dtype, DType] = {
    torch.float16: DType.f16, torch.bfloat16: DType.bf16, torch.float32: DType.f32, torch.float64: DType.f64,
    torch.int8: DType.i8, torch.int16: DType.i16, torch.int32: DType.i32, torch.int64: DType.i64,
    torch.uint8: DType.u8, torch.uint16: DType.u16, torch.uint32: DType.u32, torch.uint64: DType.u64,
    torch.bool: DType.bool,
}
_TO_TORCH = {v: k for k, v in TORCH_DTYPES.items()}

def torch_dtype(dt: torch.dtype) -> DType:
    try:
        return TORCH_DTYPES[dt]
    except KeyError:
        if dt.is_complex:
            raise UnsupportedOpError(f"torch dtype {dt} has no accelir dtype: a complex tensor can cross the "
                                     "graph's boundary only as real numbers; pass or return "
                                     "torch.view_as_real(x) instead") from None
        raise UnsupportedOpError(f"torch dtype {dt} has no accelir dtype; supported: "
                                 f"{', '.join(str(d) for d in TORCH_DTYPES)}") from None


def source_of(meta: Mapping[str, str]) -> str:
    """Where a node came from, in words: its module path and source line."""
    parts = [f"module {meta['module']!r}" if meta.get("module") else "the top-level module"]
    if meta.get("source"):
        parts.append(meta["source"])
    return ", ".join(parts)


# ----- conversion --------------------------------------------------------------------

class NodeContext(RuleContext):
    """What an aten rule sees: a builder (``b``) at the right place and the node's meta."""

    __slots__ = ("conv", "node", "b", "val", "meta", "name")

    def __init__(self, conv: Any, node: torch.fx.Node, val: Any, meta: dict[str, str], name: str):
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

    def name_unbacked(self, out: Value, val: Any = None) -> Value:
        """Name torch's data-dependent sizes (``u0``...) in this node's result (``val``, default the node's
        own) after the IR's own symbols in ``out``, so later sizes that mention them read the same dims."""
        for d, ours in zip((self.val if val is None else val).shape, out.shape):
            if isinstance(d, torch.SymInt) and d.node.expr.is_Symbol and isinstance(ours, str) \
                    and free_unbacked_symbols(d.node.expr):  # torch's own input dims keep their names
                self.conv.dim_names.setdefault(d.node.expr.name, ours)
        return out

    def out_types(self) -> list[TensorType | None]:
        return [self.conv.tensor_type(v) if isinstance(v, torch.Tensor) else None for v in self.val]

    # --- operands
    def value(self, arg: Any) -> Value:
        """The IR value of a tensor argument."""
        return self.conv.value(arg, self)

    def is_tensor(self, arg: Any) -> bool:
        """A tensor argument: an fx node of one, a torch tensor, or an IR value put in its place (one part
        of a complex tensor, see the complex rules)."""
        return isinstance(arg, (torch.Tensor, Value)) or (isinstance(arg, torch.fx.Node)
                                                 and isinstance(self.conv.env.get(arg), (Value, torch.Tensor)))

    def scalar_of(self, arg: Any) -> Any:
        """A python number (or symbolic dim) argument's value."""
        return self.conv.python(arg)

    def dim(self, arg: Any) -> D.Dim:
        v = self.conv.python(arg)
        return v if isinstance(v, str) else int(v)

    def dims(self, args: Sequence[Any]) -> list[D.Dim]:
        return [self.dim(a) for a in args]

    def operand(self, arg: Any, dtype: DType) -> Value:
        """A tensor argument cast to ``dtype``, or a python scalar as a 0-d constant of it."""
        if self.is_tensor(arg):
            return self.cast(self.value(arg), dtype)
        x = self.conv.python(arg)
        if isinstance(x, str):
            return self.cast(self.dim_value(x), dtype)
        return self.const(x, dtype)

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

    def number_value(self, d: D.Dim) -> Value:
        """A (symbolic) integer argument as a 0-d i64 value: symbols of ``.item()`` read from their tensors
        at run time (sums, differences and products of them), the others from the shapes carrying them."""
        items = self.conv.item_values
        if not any(s in items for s in D.symbols(d)):
            return self.dim_value(d)
        ops = {"+": "add", "-": "sub", "*": "mul"}

        def symbol(s: str) -> Value:
            return self.b.op("reshape", self.cast(items[s], DType.i64), shape=()) if s in items else self.dim_value(s)

        def binop(op: str, a: Value, b: Value) -> Value:
            if op not in ops:
                raise self.unsupported(f"a number {d} computed with {op!r} from .item() values; "
                                       "compute it as a tensor before .item()")
            return self.b.op(ops[op], a, b)

        return D.evaluate_with(d, symbol, const=lambda c: self.const(c, DType.i64), binop=binop,
                               neg=lambda a: self.b.op("neg", a))

    def unsupported(self, why: str) -> UnsupportedOpError:
        return UnsupportedOpError(f"torch op {self.name} at {source_of(self.meta)}: {why}", [self.name])


@functools.lru_cache(maxsize=512)
def _promote(keys: tuple) -> DType:
    from torch._prims_common import ELEMENTWISE_TYPE_PROMOTION_KIND, elementwise_dtypes
    reps = [torch.empty(() if k[1] else (1,), dtype=_TO_TORCH[k[0]]) if isinstance(k, tuple) else k(1)
            for k in keys]
    _, result = elementwise_dtypes(*reps, type_promotion_kind=ELEMENTWISE_TYPE_PROMOTION_KIND.DEFAULT)
    return torch_dtype(result)


Rule = Callable[[NodeContext, dict], Any]
RULES = RuleTable()
rule = RULES.rule
_REQUIRED = object()
INT_MAX = 2 ** 62


# ----- argument binding --------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _schema(op: torch._ops.OpOverload) -> tuple:
    return tuple((a.name, a.default_value if a.has_default_value() else _REQUIRED, a.kwarg_only)
                 for a in op._schema.arguments)


def bind_schema(op: torch._ops.OpOverload, args: tuple, kwargs: dict) -> dict:
    """The op's arguments by schema name, defaults filled in."""
    out = {}
    schema = _schema(op)
    for (name, _, _), v in zip(schema, args):
        out[name] = v
    for name, default, _ in schema[len(args):]:
        if name in kwargs:
            out[name] = kwargs[name]
        elif default is not _REQUIRED:
            out[name] = default
    return out


def resolve_aten(node: torch.fx.Node) -> tuple[str | None, Any, dict]:
    t = node.target
    if isinstance(t, torch._ops.OpOverload):
        name = t._schema.name.split("::", 1)[1]
        return name, t, bind_schema(t, node.args, node.kwargs)
    if isinstance(t, torch._ops.HigherOrderOperator):
        return t.name(), t, {}
    return None, t, {}


# ----- helpers -----------------------------------------------------------------------

def wrap_axis(d: int, rank: int) -> int:
    return d % rank if rank else 0


def full(ctx: NodeContext, value: Any) -> Value:
    """A tensor of torch's result shape and dtype filled with ``value``."""
    c = ctx.operand(value, ctx.out_dtype)
    shape = ctx.out_shape
    return c if shape == () else ctx.b.op("broadcast_to", c, shape=shape)


def full_like_type(ctx: NodeContext, value: Any, t: TensorType) -> Value:
    """A tensor of type ``t`` filled with ``value`` (the extra outputs torch returns alongside a result)."""
    c = ctx.const(value, t.dtype)
    return c if t.shape == () else ctx.b.op("broadcast_to", c, shape=t.shape)


def to_out(ctx: NodeContext, arg: Any) -> Value:
    return ctx.operand(arg, ctx.out_dtype)


def slice_bounds(size: D.Dim, start: Any, end: Any, step: int) -> tuple[D.Dim, D.Dim]:
    def norm(v: Any, default: D.Dim) -> D.Dim:
        if v is None:
            return default
        if isinstance(v, str):
            return v
        if type(size) is int:
            v = v + size if v < 0 else v
            return min(max(v, 0), size)
        if v >= INT_MAX:
            return size
        return D.dim_add(size, v) if v < 0 else v
    lo, hi = norm(start, 0), norm(end, size)
    if type(lo) is int and type(hi) is int and hi < lo:
        hi = lo
    return lo, hi


# ----- complex values ----------------------------------------------------------------

#: the dtype of each part of a complex tensor
COMPLEX_DTYPES: dict[torch.dtype, DType] = {torch.complex32: DType.f16, torch.complex64: DType.f32,
                                            torch.complex128: DType.f64}


@dataclass(frozen=True)
class Complex:
    """A complex tensor inside the converter, as its real and imaginary parts: real IR values of the
    part dtype (the IR has no complex dtype, and none reaches the graph).  ``im`` None stands for an
    imaginary part known to be zero (a real tensor taken as complex), which saves the products with it."""

    re: Value
    im: Value | None = None


#: rules for nodes that take or give a complex tensor; the converter sends such nodes here, not to RULES
COMPLEX_RULES = RuleTable()
complex_rule = COMPLEX_RULES.rule


# ----- in-place variants -------------------------------------------------------------

_VIEWS = frozenset({"view", "_unsafe_view", "reshape", "slice", "select", "narrow", "transpose", "permute", "t",
                    "expand", "unsqueeze", "squeeze", "as_strided", "diagonal", "split", "chunk", "unbind",
                    "alias", "detach", "flatten", "unflatten", "view_as", "expand_as", "reshape_as", "movedim",
                    "swapaxes", "swapdims", "mT", "numpy_T", "split_with_sizes", "tensor_split",
                    "tensor_getitem"})


def _is_view(conv: Any, node: Any) -> bool:
    """Whether fx node ``node`` (of either capture path) is a view of another tensor: a view op,
    x[...] on the fx path, or a piece of a split."""
    if not isinstance(node, torch.fx.Node) or node.op not in ("call_function", "call_method"):
        return False
    if node.target is operator.getitem and isinstance(conv.env.get(node.args[0]), (tuple, list)):
        return _is_view(conv, node.args[0])
    return conv.resolve(node)[0] in _VIEWS


def _inplace(fn: Rule, functional: str) -> Rule:
    """Run the functional rule (under its own name: rules branch on it, addcdiv_ is no addcmul_);
    later readers of the mutated node see the new value.
    An update of a slice (step 1) or select view, as torch.export leaves ``y[:, 1:3] = v``
    (slice + copy_), is written back into its base; other views are refused."""
    def wrapped(ctx, a):
        target = a.get("self")
        chain = _view_chain(ctx.conv, target) if _is_view(ctx.conv, target) else [target]
        if chain is None and _unobserved_view(ctx.conv, target, ctx.node):
            chain = [target]  # nothing reads the base again: the update needs no write-back
        if chain is None or (len(chain) > 1 and _read_stale_alias(ctx.conv, chain, ctx.node)):
            raise ctx.unsupported("an in-place update of this view also changes its base tensor and its "
                                  "other views; use the out-of-place op (x = x + y) or torch.Tensor.index_put "
                                  "/ scatter")
        for view in reversed(chain[:-1]):  # the views as they are now, after earlier updates of the base
            ctx.conv.env[view] = ctx.conv.convert_node(None, view)
        out = ctx.conv.check_result(ctx, fn(NodeContext(ctx.conv, ctx.node, ctx.val, ctx.meta, functional), a))
        new = _write_back(ctx, chain, out)
        # an in-place op returns its input: in y.mul_(x).add_(1) the add_ updates y as well
        node = chain[-1]
        while isinstance(node, torch.fx.Node):
            ctx.conv.env[node] = new
            node = _updated_by(ctx.conv, node)
        return out
    return wrapped


def _view_chain(conv: Any, node: torch.fx.Node) -> list | None:
    """``node`` and the views it was taken through, down to its base (last): each a select or a
    slice of step 1; None for any other view."""
    chain = [node]
    while _is_view(conv, chain[-1]):
        name, _, args = conv.resolve(chain[-1])
        if name not in ("slice", "select") or (name == "slice" and not conv.python(args["step"]) >= 1):
            return None
        chain.append(args["self"])
    return chain


def _unobserved_view(conv: Any, node: torch.fx.Node, at: torch.fx.Node) -> bool:
    """Whether ``node`` is a view (of any kind: a transpose, a reshape) whose base, the views between
    them and their other views are all read only before ``at``: an update of ``node`` there changes
    nothing that is read later but ``node`` itself, as ``fresh.transpose(0, 1).add_(y)`` does."""
    chain = [node]
    while _is_view(conv, chain[-1]):
        view = chain[-1]
        if view.target is operator.getitem:
            chain.append(view.args[0])
            continue
        source = conv.resolve(view)[2].get("self")
        if not isinstance(source, torch.fx.Node):
            return False
        chain.append(source)
    below = chain[1:]
    if any(not user < at for base in below for user in base.users if user not in chain):
        return False
    return not _read_stale_alias(conv, chain, at)


def _read_stale_alias(conv: Any, chain: list, at: torch.fx.Node) -> bool:
    """Whether another view of the chain's base or of a view in the chain, taken before ``at``, is
    read after it: it would have to see the update too."""
    stack, seen = list(chain), set(chain)
    while stack:
        for user in stack.pop().users:
            if user in seen or not user < at or not _is_view(conv, user):
                continue
            seen.add(user)
            if any(not r < at for r in user.users if r not in seen and r is not at):  # ``at`` reads it first
                return True
            stack.append(user)
    return False


def _write_back(ctx: NodeContext, chain: list, new: Value) -> Value:
    """Write ``new``, the updated ``chain[0]``, into each view's base in turn; rebind the views.
    Returns the base's new value."""
    for view, parent in zip(chain, chain[1:]):
        ctx.conv.env[view] = new
        name, _, args = ctx.conv.resolve(view)
        base = ctx.conv.value(parent)
        ax = wrap_axis(args["dim"], base.rank)
        size = base.shape[ax]
        if name == "select":
            start = ctx.scalar_of(args["index"])
            if not isinstance(start, int) or not isinstance(size, int):
                raise ctx.unsupported("an in-place update of a select needs a static index and dim")
            start %= size
            new = ctx.b.op("unsqueeze", new, axes=(ax,))
        elif ctx.conv.python(args["step"]) != 1:
            new = _scatter_strided(ctx, base, new, ax, args)
            continue
        else:
            start = slice_bounds(size, ctx.scalar_of(args["start"]), ctx.scalar_of(args["end"]), 1)[0]
        starts = [ctx.const(0, DType.i64)] * base.rank
        starts[ax] = ctx.dim_value(start) if isinstance(start, str) else ctx.const(start, DType.i64)
        new = ctx.b.op("dynamic_update_slice", base, new, *starts)
    return new


def _scatter_strided(ctx: NodeContext, base: Value, new: Value, ax: int, args: Mapping[str, Any]) -> Value:
    """``base`` with the slice ``start:end:step`` of axis ``ax`` replaced by ``new``: one scatter of the
    slice's positions, known at capture."""
    step, size = ctx.conv.python(args["step"]), base.shape[ax]
    lo, hi = slice_bounds(size, ctx.scalar_of(args["start"]), ctx.scalar_of(args["end"]), step)
    if not all(isinstance(v, int) for v in (lo, hi, size)):
        raise ctx.unsupported("an in-place update of a strided slice needs static bounds and dim")
    positions = np.arange(lo, hi, step, dtype=np.int64).reshape([-1 if i == ax else 1 for i in range(base.rank)])
    index = ctx.b.op("broadcast_to", ctx.const(positions, DType.i64), shape=new.shape)
    return ctx.b.op("scatter_elements", base, index, new, axis=ax, reduction="none")


def _updated_by(conv: Any, node: torch.fx.Node) -> Any:
    """The tensor an in-place op node updated (its ``self``); None for any other node."""
    if node.op not in ("call_function", "call_method"):
        return None
    name, _, args = conv.resolve(node)
    return args.get("self") if name and name.endswith("_") and name[:-1] in RULES else None


def add_inplace_variants() -> None:
    """Register ``op_`` for every functional rule ``op`` that has none of its own; the
    driver calls it once, after importing the rule modules."""
    for name in list(RULES):
        if not name.startswith("_") and not name.endswith("_"):
            if name + "_" not in RULES:
                RULES.add(_inplace(RULES[name], name), name + "_")
