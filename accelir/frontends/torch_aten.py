"""The aten op table of the PyTorch frontend: one rule per aten op (overload packet).

A rule is ``rule(ctx, a) -> Value | tuple | python value``: ``a`` holds the op's
arguments by their schema names with defaults filled in, ``ctx`` is a
:class:`~accelir.frontends.torch.NodeContext` (builder, torch's result dtype and
shape from ``meta["val"]``, operand helpers).  The IR has no type promotion, so
rules cast operands to torch's result dtype (or, for comparisons, to the promoted
dtype).  Composites stay composites: linear, layer_norm, gelu, softmax, sdpa ->
attention, conv (with bias), batch_norm in eval mode.  Ops with no IR op are
decomposed here (floor division, remainder, var, tril, ...).  In-place variants
(``add_``) reuse the functional rule and rebind the mutated node.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any, Callable

import numpy as np
import torch
import torch.fx

from .. import dims as D
from ..ir import DType, Value
from .torch import NodeContext

__all__ = ["RULES", "resolve_aten", "bind_schema", "slice_bounds"]

Rule = Callable[[NodeContext, dict], Any]
RULES: dict[str, Rule] = {}
_REQUIRED = object()
_INT_MAX = 2 ** 62


def rule(*names: str) -> Callable[[Rule], Rule]:
    def deco(fn: Rule) -> Rule:
        for n in names:
            RULES[n] = fn
        return fn
    return deco


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

def _axis(d: int, rank: int) -> int:
    return d % rank if rank else 0


def _full(ctx: NodeContext, value: Any) -> Value:
    """A tensor of torch's result shape and dtype filled with ``value``."""
    c = ctx.operand(value, ctx.out_dtype)
    shape = ctx.out_shape
    return c if shape == () else ctx.b.op("broadcast_to", c, shape=shape)


def _to_out(ctx: NodeContext, arg: Any) -> Value:
    return ctx.operand(arg, ctx.out_dtype)


# ----- elementwise -------------------------------------------------------------------

_UNARY = {
    "abs": "abs", "neg": "neg", "negative": "neg", "exp": "exp", "log": "log", "log1p": "log1p", "expm1": "expm1",
    "sqrt": "sqrt", "rsqrt": "rsqrt", "sin": "sin", "cos": "cos", "tan": "tan", "asin": "asin", "arcsin": "asin",
    "acos": "acos", "arccos": "acos", "atan": "atan", "arctan": "atan", "sinh": "sinh", "cosh": "cosh",
    "asinh": "asinh", "acosh": "acosh", "atanh": "atanh", "tanh": "tanh", "sigmoid": "sigmoid", "erf": "erf",
    "floor": "floor", "ceil": "ceil", "sign": "sign", "reciprocal": "reciprocal", "relu": "relu", "silu": "silu",
    "bitwise_not": "not", "isnan": "isnan", "isinf": "isinf",
}
_ROUNDING = {"floor", "ceil", "round", "trunc", "fix"}


def _unary_rule(ir_op: str) -> Rule:
    def fn(ctx: NodeContext, a: dict) -> Value:
        x = ctx.value(a["self"])
        if ctx.out_dtype is DType.bool and ir_op in ("isnan", "isinf"):
            if not x.dtype.is_float:
                return _full(ctx, False)
            return ctx.b.op(ir_op, x)
        if ir_op in _ROUNDING and not x.dtype.is_float:
            return x
        return ctx.b.op(ir_op, ctx.cast(x, ctx.out_dtype))
    return fn


for _name, _op in _UNARY.items():
    RULES[_name] = _unary_rule(_op)


@rule("round")
def _round(ctx, a):
    x = ctx.value(a["self"])
    if not x.dtype.is_float:
        return x
    decimals = a.get("decimals", 0)
    if not decimals:
        return ctx.b.op("round", x)
    k = ctx.const(10.0 ** decimals, x.dtype)
    return ctx.b.op("div", ctx.b.op("round", ctx.b.op("mul", x, k)), k)


def _trunc_values(ctx: NodeContext, x: Value) -> Value:
    if not x.dtype.is_float:
        return x
    zero = ctx.const(0, x.dtype)
    return ctx.b.op("where", ctx.b.op("lt", x, zero), ctx.b.op("ceil", x), ctx.b.op("floor", x))


@rule("trunc", "fix")
def _trunc(ctx, a):
    return _trunc_values(ctx, ctx.value(a["self"]))


@rule("logical_not")
def _logical_not(ctx, a):
    return ctx.b.op("not", _as_bool(ctx, a["self"]))


def _as_bool(ctx: NodeContext, arg: Any) -> Value:
    if ctx.is_tensor(arg):
        return ctx.cast(ctx.value(arg), DType.bool)
    return ctx.const(bool(ctx.scalar_of(arg)), DType.bool)


_LOGICAL = {"logical_and": "and", "logical_or": "or", "logical_xor": "xor"}


def _logical_rule(ir_op: str) -> Rule:
    def fn(ctx, a):
        return ctx.b.op(ir_op, _as_bool(ctx, a["self"]), _as_bool(ctx, a["other"]))
    return fn


for _name, _op in _LOGICAL.items():
    RULES[_name] = _logical_rule(_op)

# binary ops computed in torch's result dtype
_ARITH = {"add": "add", "sub": "sub", "subtract": "sub", "mul": "mul", "multiply": "mul", "maximum": "max",
          "minimum": "min", "fmax": "max", "fmin": "min", "atan2": "atan2", "arctan2": "atan2",
          "bitwise_and": "and", "__and__": "and", "bitwise_or": "or", "__or__": "or", "bitwise_xor": "xor",
          "__xor__": "xor", "pow": "pow", "float_power": "pow"}
_COMPARE = {"eq": "eq", "ne": "ne", "lt": "lt", "le": "le", "gt": "gt", "ge": "ge", "less": "lt",
            "less_equal": "le", "greater": "gt", "greater_equal": "ge", "not_equal": "ne"}


def _binary_rule(ir_op: str) -> Rule:
    def fn(ctx, a):
        dt = ctx.out_dtype
        other = a["other"] if "other" in a else a["exponent"]
        x, y = ctx.operand(a["self"], dt), ctx.operand(other, dt)
        alpha = a.get("alpha", 1)
        if alpha is not None and alpha != 1:
            y = ctx.b.op("mul", y, ctx.const(ctx.scalar_of(alpha), dt))
        return ctx.b.op(ir_op, x, y)
    return fn


def _compare_rule(ir_op: str) -> Rule:
    def fn(ctx, a):
        dt = ctx.promote(a["self"], a["other"])
        return ctx.b.op(ir_op, ctx.operand(a["self"], dt), ctx.operand(a["other"], dt))
    return fn


for _name, _op in _ARITH.items():
    RULES[_name] = _binary_rule(_op)
for _name, _op in _COMPARE.items():
    RULES[_name] = _compare_rule(_op)


@rule("rsub")
def _rsub(ctx, a):
    dt = ctx.out_dtype
    x = ctx.operand(a["self"], dt)
    if a.get("alpha", 1) != 1:
        x = ctx.b.op("mul", x, ctx.const(a["alpha"], dt))
    return ctx.b.op("sub", ctx.operand(a["other"], dt), x)


@rule("max", "min")
def _max_min(ctx, a):
    name = ctx.name
    if "other" in a:
        return _binary_rule(name)(ctx, a)
    if "dim" in a:
        x = ctx.value(a["self"])
        if x.rank == 0:
            return x, ctx.const(0, DType.i64)
        ax, keep = _axis(a["dim"], x.rank), a["keepdim"]
        vals = ctx.b.op(f"reduce_{name}", x, axes=(ax,), keepdims=keep)
        idx = ctx.b.op(f"arg{name}", x, axis=ax, keepdims=keep)
        return vals, idx
    x = ctx.value(a["self"])
    return ctx.b.op(f"reduce_{name}", x, axes=tuple(range(x.rank)))


def _floor_div_values(ctx: NodeContext, x: Value, y: Value) -> Value:
    """Python floor division: the IR's integer div truncates toward zero, so step the
    quotient down where the remainder is nonzero and the signs differ."""
    if x.dtype.is_float:
        return ctx.b.op("floor", ctx.b.op("div", x, y))
    q = ctx.b.op("div", x, y)
    r = ctx.b.op("rem", x, y)
    zero = ctx.const(0, x.dtype)
    fix = ctx.b.op("and", ctx.b.op("ne", r, zero),
                   ctx.b.op("ne", ctx.b.op("lt", r, zero), ctx.b.op("lt", y, zero)))
    return ctx.b.op("sub", q, ctx.b.op("cast", fix, dtype=x.dtype))


@rule("div", "divide", "true_divide")
def _div(ctx, a):
    dt = ctx.out_dtype
    mode = a.get("rounding_mode")
    if mode is None:
        return ctx.b.op("div", ctx.operand(a["self"], dt), ctx.operand(a["other"], dt))
    x, y = ctx.operand(a["self"], dt), ctx.operand(a["other"], dt)
    if mode == "floor":
        return _floor_div_values(ctx, x, y)
    q = ctx.b.op("div", x, y)
    return _trunc_values(ctx, q)


@rule("floor_divide")
def _floor_divide(ctx, a):
    dt = ctx.out_dtype
    return _floor_div_values(ctx, ctx.operand(a["self"], dt), ctx.operand(a["other"], dt))


@rule("remainder")
def _remainder(ctx, a):
    """Python modulo (result has the divisor's sign) from the IR's fmod-style rem."""
    dt = ctx.out_dtype
    x, y = ctx.operand(a["self"], dt), ctx.operand(a["other"], dt)
    r = ctx.b.op("rem", x, y)
    zero = ctx.const(0, dt)
    fix = ctx.b.op("and", ctx.b.op("ne", r, zero), ctx.b.op("ne", ctx.b.op("lt", r, zero), ctx.b.op("lt", y, zero)))
    return ctx.b.op("where", fix, ctx.b.op("add", r, y), r)


@rule("fmod")
def _fmod(ctx, a):
    dt = ctx.out_dtype
    return ctx.b.op("rem", ctx.operand(a["self"], dt), ctx.operand(a["other"], dt))


@rule("where")
def _where(ctx, a):
    dt = ctx.out_dtype
    return ctx.b.op("where", _as_bool(ctx, a["condition"]), ctx.operand(a["self"], dt), ctx.operand(a["other"], dt))


@rule("masked_fill")
def _masked_fill(ctx, a):
    dt = ctx.out_dtype
    return ctx.b.op("where", _as_bool(ctx, a["mask"]), ctx.operand(a["value"], dt), ctx.operand(a["self"], dt))


@rule("clamp", "clip", "clamp_min", "clamp_max", "hardtanh")
def _clamp(ctx, a):
    dt = ctx.out_dtype
    y = ctx.operand(a["self"], dt)
    lo = a.get("min", a.get("min_val"))
    hi = a.get("max", a.get("max_val"))
    if ctx.name == "hardtanh":
        lo, hi = a["min_val"], a["max_val"]
    if lo is not None:
        y = ctx.b.op("max", y, ctx.operand(lo, dt))
    if hi is not None:
        y = ctx.b.op("min", y, ctx.operand(hi, dt))
    return y


@rule("relu6")
def _relu6(ctx, a):
    x = ctx.value(a["self"])
    return ctx.b.op("min", ctx.b.op("relu", x), ctx.const(6, x.dtype))


@rule("hardsigmoid", "hardswish")
def _hard(ctx, a):
    x = ctx.value(a["self"])
    t = ctx.b.op("add", x, ctx.const(3, x.dtype))
    t = ctx.b.op("min", ctx.b.op("max", t, ctx.const(0, x.dtype)), ctx.const(6, x.dtype))
    t = ctx.b.op("div", t, ctx.const(6, x.dtype))
    return t if ctx.name == "hardsigmoid" else ctx.b.op("mul", x, t)


@rule("leaky_relu")
def _leaky_relu(ctx, a):
    x = ctx.value(a["self"])
    neg = ctx.b.op("mul", x, ctx.const(a["negative_slope"], x.dtype))
    return ctx.b.op("where", ctx.b.op("gt", x, ctx.const(0, x.dtype)), x, neg)


@rule("elu")
def _elu(ctx, a):
    x = ctx.value(a["self"])
    alpha, scale, in_scale = (ctx.const(a[k], x.dtype) for k in ("alpha", "scale", "input_scale"))
    neg = ctx.b.op("mul", alpha, ctx.b.op("expm1", ctx.b.op("mul", x, in_scale)))
    y = ctx.b.op("where", ctx.b.op("gt", x, ctx.const(0, x.dtype)), x, neg)
    return ctx.b.op("mul", y, scale)


@rule("softplus")
def _softplus(ctx, a):
    x = ctx.value(a["self"])
    beta = ctx.const(a["beta"], x.dtype)
    bx = ctx.b.op("mul", x, beta)
    soft = ctx.b.op("div", ctx.b.op("log1p", ctx.b.op("exp", bx)), beta)
    return ctx.b.op("where", ctx.b.op("gt", bx, ctx.const(a["threshold"], x.dtype)), x, soft)


@rule("mish")
def _mish(ctx, a):
    x = ctx.value(a["self"])
    sp = ctx.b.op("log1p", ctx.b.op("exp", x))
    return ctx.b.op("mul", x, ctx.b.op("tanh", sp))


@rule("gelu")
def _gelu(ctx, a):
    return ctx.b.op("gelu", ctx.value(a["self"]), approximate=a.get("approximate", "none"))


@rule("lerp")
def _lerp(ctx, a):
    dt = ctx.out_dtype
    x, y, w = ctx.operand(a["self"], dt), ctx.operand(a["end"], dt), ctx.operand(a["weight"], dt)
    return ctx.b.op("add", x, ctx.b.op("mul", w, ctx.b.op("sub", y, x)))


@rule("addcmul", "addcdiv")
def _addc(ctx, a):
    dt = ctx.out_dtype
    t = ctx.b.op("mul" if ctx.name == "addcmul" else "div", ctx.operand(a["tensor1"], dt),
                 ctx.operand(a["tensor2"], dt))
    return ctx.b.op("add", ctx.operand(a["self"], dt), ctx.b.op("mul", t, ctx.operand(a["value"], dt)))


@rule("square")
def _square(ctx, a):
    x = _to_out(ctx, a["self"])
    return ctx.b.op("mul", x, x)


@rule("exp2")
def _exp2(ctx, a):
    x = _to_out(ctx, a["self"])
    return ctx.b.op("pow", ctx.const(2.0, x.dtype), x)


@rule("log2", "log10")
def _log_base(ctx, a):
    x = _to_out(ctx, a["self"])
    base = 2.0 if ctx.name == "log2" else 10.0
    return ctx.b.op("div", ctx.b.op("log", x), ctx.const(np.log(base), x.dtype))


# ----- dtype and identity ------------------------------------------------------------

@rule("_to_copy", "to", "type_as", "_to_dtype", "clone", "contiguous", "alias", "detach", "lift_fresh_copy",
      "lift_fresh", "_conj", "conj", "resolve_conj", "resolve_neg", "positive", "dropout", "feature_dropout",
      "alpha_dropout", "view_as", "_unsafe_view_as")
def _identity(ctx, a):
    if ctx.name.endswith("dropout") and a.get("train") and a.get("p", 0) > 0:
        raise ctx.unsupported("dropout in training mode is random; call model.eval() before capture")
    x = ctx.value(a["self"] if "self" in a else a["input"])
    x = ctx.cast(x, ctx.out_dtype)
    if ctx.name == "view_as":
        return ctx.b.op("reshape", x, shape=ctx.out_shape)
    return x


@rule("native_dropout")
def _native_dropout(ctx, a):
    if a.get("train") and a["p"] > 0:
        raise ctx.unsupported("dropout in training mode is random; call model.eval() before capture")
    x = ctx.value(a["input"])
    return x, _full_like_type(ctx, 1, ctx.out_types()[1])


def _full_like_type(ctx: NodeContext, value: Any, t) -> Value:
    c = ctx.const(value, t.dtype)
    return c if t.shape == () else ctx.b.op("broadcast_to", c, shape=t.shape)


# ----- creation ----------------------------------------------------------------------

@rule("full", "zeros", "ones", "empty", "full_like", "zeros_like", "ones_like", "empty_like", "new_full",
      "new_zeros", "new_ones", "new_empty", "scalar_tensor", "fill", "empty_strided", "new_empty_strided")
def _creation(ctx, a):
    name = ctx.name
    if name in ("full", "full_like", "new_full"):
        value = a["fill_value"]
    elif name == "scalar_tensor":
        value = a["s"]
    elif name == "fill":
        value = a["value"]
    elif "ones" in name:
        value = 1
    else:
        value = 0
    return _full(ctx, value)


@rule("arange")
def _arange(ctx, a):
    start = ctx.scalar_of(a.get("start", 0))
    step = ctx.scalar_of(a.get("step", 1))
    n = ctx.out_shape[0]
    dt = ctx.out_dtype
    idx = ctx.b.op("iota", shape=(n,), dtype=DType.i64 if not dt.is_float else dt)
    idx = ctx.cast(idx, dt)
    if step != 1:
        idx = ctx.b.op("mul", idx, ctx.operand(step, dt))
    if start != 0:
        idx = ctx.b.op("add", idx, ctx.operand(start, dt))
    return idx


@rule("tril", "triu")
def _tri(ctx, a):
    x = ctx.value(a["self"])
    rows, cols = x.shape[-2], x.shape[-1]
    r = ctx.b.op("iota", shape=(rows, cols), axis=0)
    c = ctx.b.op("iota", shape=(rows, cols), axis=1)
    diff = ctx.b.op("sub", c, r)
    k = ctx.const(a["diagonal"], DType.i64)
    keep = ctx.b.op("le" if ctx.name == "tril" else "ge", diff, k)
    return ctx.b.op("where", keep, x, ctx.const(0, x.dtype))


# ----- shape ops ---------------------------------------------------------------------

@rule("view", "_unsafe_view", "reshape", "flatten", "unflatten", "view_copy", "_reshape_alias", "squeeze",
      "squeeze_copy", "ravel", "atleast_1d", "atleast_2d", "atleast_3d")
def _reshape(ctx, a):
    x = ctx.value(a["self"])
    shape = ctx.out_shape
    return x if x.shape == shape else ctx.b.op("reshape", x, shape=shape)


@rule("unsqueeze", "unsqueeze_copy")
def _unsqueeze(ctx, a):
    x = ctx.value(a["self"])
    return ctx.b.op("unsqueeze", x, axes=(_axis(a["dim"], x.rank + 1),))


@rule("expand", "expand_as", "broadcast_to", "expand_copy")
def _expand(ctx, a):
    x = ctx.value(a["self"])
    shape = ctx.out_shape
    return x if x.shape == shape else ctx.b.op("broadcast_to", x, shape=shape)


@rule("permute", "permute_copy")
def _permute(ctx, a):
    x = ctx.value(a["self"])
    perm = tuple(_axis(d, x.rank) for d in a["dims"])
    return x if perm == tuple(range(x.rank)) else ctx.b.op("transpose", x, perm=perm)


@rule("transpose", "swapaxes", "swapdims", "transpose_copy")
def _transpose(ctx, a):
    x = ctx.value(a["self"])
    d0, d1 = (_axis(a[k], x.rank) for k in (("dim0", "dim1") if "dim0" in a else ("axis0", "axis1")))
    perm = list(range(x.rank))
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return x if d0 == d1 else ctx.b.op("transpose", x, perm=tuple(perm))


@rule("t", "numpy_T", "mT")
def _t(ctx, a):
    x = ctx.value(a["self"])
    if x.rank < 2:
        return x
    perm = list(range(x.rank))
    perm[-1], perm[-2] = perm[-2], perm[-1]
    if ctx.name in ("t", "numpy_T"):
        perm = list(reversed(range(x.rank)))
    return ctx.b.op("transpose", x, perm=tuple(perm))


def slice_bounds(size: D.Dim, start: Any, end: Any, step: int) -> tuple[D.Dim, D.Dim]:
    def norm(v: Any, default: D.Dim) -> D.Dim:
        if v is None:
            return default
        if isinstance(v, str):
            return v
        if type(size) is int:
            v = v + size if v < 0 else v
            return min(max(v, 0), size)
        if v >= _INT_MAX:
            return size
        return D.dim_add(size, v) if v < 0 else v
    lo, hi = norm(start, 0), norm(end, size)
    if type(lo) is int and type(hi) is int and hi < lo:
        hi = lo
    return lo, hi


@rule("slice", "slice_copy")
def _slice(ctx, a):
    x = ctx.value(a["self"])
    ax = _axis(a["dim"], x.rank)
    step = ctx.scalar_of(a["step"])
    start, end = ctx.scalar_of(a["start"]), ctx.scalar_of(a["end"])
    lo, hi = slice_bounds(x.shape[ax], start, end, step)
    if lo == 0 and hi == x.shape[ax] and step == 1:
        return x
    return ctx.b.op("slice", x, starts=(lo,), stops=(hi,), steps=(step,), axes=(ax,))


@rule("diff")
def _diff(ctx, a):
    """diff(x, n, dim, prepend, append): n times x[1:] - x[:-1] along dim (xor for bool)."""
    dt = ctx.out_dtype
    x = ctx.cast(ctx.value(a["self"]), dt)
    ax = _axis(a["dim"], x.rank)
    pre, post = a.get("prepend"), a.get("append")
    parts = ([ctx.cast(ctx.value(pre), dt)] if pre is not None else []) + [x] + \
        ([ctx.cast(ctx.value(post), dt)] if post is not None else [])
    if len(parts) > 1:
        x = ctx.b.op("concat", *parts, axis=ax)
    for _ in range(a["n"]):
        size = x.shape[ax]
        hi = ctx.b.op("slice", x, starts=(1,), stops=(size,), steps=(1,), axes=(ax,))
        lo = ctx.b.op("slice", x, starts=(0,), stops=(D.dim_sub(size, 1),), steps=(1,), axes=(ax,))
        x = ctx.b.op("ne" if dt is DType.bool else "sub", hi, lo)
    return x


@rule("narrow", "narrow_copy")
def _narrow(ctx, a):
    x = ctx.value(a["self"])
    ax = _axis(a["dim"], x.rank)
    start = ctx.scalar_of(a["start"])
    if type(start) is int and start < 0:
        start = D.dim_add(x.shape[ax], start)
    stop = D.dim_add(start, ctx.scalar_of(a["length"]))
    return ctx.b.op("slice", x, starts=(start,), stops=(stop,), steps=(1,), axes=(ax,))


@rule("select", "select_copy")
def _select(ctx, a):
    x = ctx.value(a["self"])
    ax = _axis(a["dim"], x.rank)
    index = ctx.scalar_of(a["index"])
    if isinstance(index, str) or type(x.shape[ax]) is not int:
        idx = ctx.dim_value(index) if isinstance(index, str) else ctx.const(index, DType.i64)
        return ctx.b.op("gather", x, idx, axis=ax)
    index = index % x.shape[ax]
    s = ctx.b.op("slice", x, starts=(index,), stops=(index + 1,), steps=(1,), axes=(ax,))
    return ctx.b.op("squeeze", s, axes=(ax,))


def _pieces(ctx: NodeContext, x: Value, ax: int, sizes: list[D.Dim]) -> tuple[Value, ...]:
    outs, start = [], 0
    for size in sizes:
        stop = D.dim_add(start, size)
        outs.append(ctx.b.op("slice", x, starts=(start,), stops=(stop,), steps=(1,), axes=(ax,)))
        start = stop
    return tuple(outs)


@rule("split", "split_with_sizes", "chunk", "tensor_split", "unsafe_split", "split_copy",
      "split_with_sizes_copy", "unsafe_chunk")
def _split(ctx, a):
    """Split along a dim; the piece sizes are read from torch's results."""
    x = ctx.value(a["self"])
    ax = _axis(a["dim"], x.rank)
    sizes = [t.shape[ax] for t in ctx.out_types()]
    return _pieces(ctx, x, ax, sizes)


@rule("unbind", "unbind_copy")
def _unbind(ctx, a):
    x = ctx.value(a["self"])
    ax = _axis(a["dim"], x.rank)
    return tuple(ctx.b.op("squeeze", p, axes=(ax,)) for p in _pieces(ctx, x, ax, [1] * x.shape[ax]))


@rule("cat", "concat", "concatenate")
def _cat(ctx, a):
    dt = ctx.out_dtype
    vals = [ctx.cast(ctx.value(t), dt) for t in a["tensors"]]
    # torch lets legacy 1-D empty tensors join any cat
    vals = [v for v in vals if not (v.rank == 1 and v.shape[0] == 0)] or vals[:1]
    if len(vals) == 1:
        return vals[0]
    return ctx.b.op("concat", *vals, axis=_axis(a["dim"], vals[0].rank))


@rule("stack")
def _stack(ctx, a):
    dt = ctx.out_dtype
    vals = [ctx.cast(ctx.value(t), dt) for t in a["tensors"]]
    ax = _axis(a["dim"], vals[0].rank + 1)
    vals = [ctx.b.op("unsqueeze", v, axes=(ax,)) for v in vals]
    return vals[0] if len(vals) == 1 else ctx.b.op("concat", *vals, axis=ax)


@rule("flip")
def _flip(ctx, a):
    x = ctx.value(a["self"])
    return ctx.b.op("reverse", x, axes=tuple(sorted({_axis(d, x.rank) for d in a["dims"]})))


@rule("roll")
def _roll(ctx, a):
    x = ctx.value(a["self"])
    shifts, dims = list(a["shifts"]), list(a["dims"])
    if not dims:
        flat = ctx.b.op("reshape", x, shape=(x.type.numel,))
        return ctx.b.op("reshape", _roll_axis(ctx, flat, shifts[0], 0), shape=x.shape)
    for s, d in zip(shifts, dims):
        x = _roll_axis(ctx, x, s, _axis(d, x.rank))
    return x


def _roll_axis(ctx: NodeContext, x: Value, shift: int, ax: int) -> Value:
    n = x.shape[ax]
    if type(n) is not int:
        raise ctx.unsupported("roll along a symbolic dim is not supported")
    k = shift % n if n else 0
    if k == 0:
        return x
    tail = ctx.b.op("slice", x, starts=(n - k,), stops=(n,), steps=(1,), axes=(ax,))
    head = ctx.b.op("slice", x, starts=(0,), stops=(n - k,), steps=(1,), axes=(ax,))
    return ctx.b.op("concat", tail, head, axis=ax)


@rule("repeat", "tile")
def _repeat(ctx, a):
    x = ctx.value(a["self"])
    reps = ctx.dims(a["repeats"] if "repeats" in a else a["dims"])
    if ctx.name == "tile" and len(reps) < x.rank:
        reps = [1] * (x.rank - len(reps)) + reps
    shape = [1] * (len(reps) - x.rank) + list(x.shape)
    if len(shape) != x.rank:
        x = ctx.b.op("reshape", x, shape=tuple(shape))
    inter = tuple(d for pair in zip([1] * len(shape), shape) for d in pair)
    wide = tuple(d for pair in zip(reps, shape) for d in pair)
    y = ctx.b.op("broadcast_to", ctx.b.op("reshape", x, shape=inter), shape=wide)
    return ctx.b.op("reshape", y, shape=ctx.out_shape)


@rule("repeat_interleave")
def _repeat_interleave(ctx, a):
    if ctx.is_tensor(a["repeats"]) or a.get("dim") is None:
        raise ctx.unsupported("repeat_interleave with tensor repeats or without dim is not supported")
    x = ctx.value(a["self"])
    ax, rep = _axis(a["dim"], x.rank), ctx.dim(a["repeats"])
    u = ctx.b.op("unsqueeze", x, axes=(ax + 1,))
    shape = x.shape[:ax + 1] + (rep,) + x.shape[ax + 1:]
    return ctx.b.op("reshape", ctx.b.op("broadcast_to", u, shape=shape), shape=ctx.out_shape)


@rule("constant_pad_nd", "pad")
def _pad(ctx, a):
    x = ctx.value(a["self"])
    pad = list(a["pad"])
    mode = a.get("mode", "constant")
    value = a.get("value") or 0.0
    pairs = [(0, 0)] * x.rank
    for i in range(len(pad) // 2):
        pairs[x.rank - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    # negative padding crops
    crops = [(max(-lo, 0), max(-hi, 0)) for lo, hi in pairs]
    if any(lo or hi for lo, hi in crops):
        axes = [i for i, c in enumerate(crops) if c != (0, 0)]
        x = ctx.b.op("slice", x, starts=tuple(crops[i][0] for i in axes),
                     stops=tuple(D.dim_sub(x.shape[i], crops[i][1]) for i in axes), axes=tuple(axes))
    pairs = tuple((max(lo, 0), max(hi, 0)) for lo, hi in pairs)
    if mode == "circular":
        return _circular_pad(ctx, x, pairs)
    ir_mode = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}.get(mode)
    if ir_mode is None:
        raise ctx.unsupported(f"pad mode {mode!r} is not supported (constant, reflect, replicate, circular are)")
    if all(p == (0, 0) for p in pairs):
        return x
    return ctx.b.op("pad", x, pads=pairs, mode=ir_mode, value=float(value))


def _circular_pad(ctx: NodeContext, x: Value, pairs: tuple) -> Value:
    """Wrap-around padding: concat(x[-lo:], x, x[:hi]) on each padded dim."""
    for ax, (lo, hi) in enumerate(pairs):
        n = x.shape[ax]
        parts = []
        if lo:
            parts.append(ctx.b.op("slice", x, starts=(D.dim_sub(n, lo),), stops=(n,), axes=(ax,)))
        parts.append(x)
        if hi:
            parts.append(ctx.b.op("slice", x, starts=(0,), stops=(hi,), axes=(ax,)))
        if len(parts) > 1:
            x = ctx.b.op("concat", *parts, axis=ax)
    return x


@rule("reflection_pad1d", "reflection_pad2d", "reflection_pad3d", "replication_pad1d", "replication_pad2d",
      "replication_pad3d")
def _pad_mode(ctx, a):
    mode = "reflect" if ctx.name.startswith("reflection") else "replicate"
    return _pad(ctx, {"self": a["self"], "pad": a["padding"], "mode": mode, "value": 0.0})


# ----- indexing ----------------------------------------------------------------------

@rule("embedding")
def _embedding(ctx, a):
    return ctx.b.op("gather", ctx.value(a["weight"]), ctx.value(a["indices"]), axis=0)


@rule("index_select")
def _index_select(ctx, a):
    x = ctx.value(a["self"])
    if x.rank == 0:
        return x
    return ctx.b.op("gather", x, ctx.value(a["index"]), axis=_axis(a["dim"], x.rank))


@rule("gather")
def _gather(ctx, a):
    x = ctx.value(a["self"])
    return ctx.b.op("take_along_axis", x, ctx.value(a["index"]), axis=_axis(a["dim"], x.rank))


@rule("take_along_dim")
def _take_along_dim(ctx, a):
    x, idx = ctx.value(a["self"]), ctx.value(a["indices"])
    if a.get("dim") is None:
        x = ctx.b.op("reshape", x, shape=(x.type.numel,))
        idx = ctx.b.op("reshape", idx, shape=(idx.type.numel,))
        return ctx.b.op("take_along_axis", x, idx, axis=0)
    ax = _axis(a["dim"], x.rank)
    from ..ops.registry import broadcast_shapes
    common = list(broadcast_shapes(tuple(1 if i == ax else d for i, d in enumerate(x.shape)),
                                   tuple(1 if i == ax else d for i, d in enumerate(idx.shape))))
    xs, ids = list(common), list(common)
    xs[ax], ids[ax] = x.shape[ax], idx.shape[ax]
    x = ctx.b.op("broadcast_to", x, shape=tuple(xs)) if tuple(xs) != x.shape else x
    idx = ctx.b.op("broadcast_to", idx, shape=tuple(ids)) if tuple(ids) != idx.shape else idx
    return ctx.b.op("take_along_axis", x, idx, axis=ax)


@rule("index")
def _index(ctx, a):
    """x[i0, i1, ...] with index tensors (None keeps a dim): gather for one index, else
    gather_nd over the indexed dims moved to the front."""
    x = ctx.value(a["self"])
    indices = list(a["indices"])
    pos = [i for i, t in enumerate(indices) if t is not None]
    vals = [ctx.value(indices[i]) for i in pos]
    if any(v.dtype is DType.bool for v in vals):
        raise ctx.unsupported("boolean mask indexing has a data-dependent shape; use torch.where instead")
    if len(pos) == 1:
        return ctx.b.op("gather", x, vals[0], axis=pos[0])
    from ..ops.registry import broadcast_shapes
    bshape = broadcast_shapes(*(v.shape for v in vals))
    vals = [ctx.cast(v if v.shape == bshape else ctx.b.op("broadcast_to", v, shape=bshape), DType.i64)
            for v in vals]
    stacked = ctx.b.op("concat", *[ctx.b.op("unsqueeze", v, axes=(len(bshape),)) for v in vals],
                       axis=len(bshape))
    rest = [i for i in range(x.rank) if i not in pos]
    perm = tuple(pos + rest)
    xt = x if perm == tuple(range(x.rank)) else ctx.b.op("transpose", x, perm=perm)
    y = ctx.b.op("gather_nd", xt, stacked)
    contiguous = pos == list(range(pos[0], pos[-1] + 1))
    if contiguous and pos[0] > 0:
        nb, lead = len(bshape), pos[0]
        perm = tuple(range(nb, nb + lead)) + tuple(range(nb)) + tuple(range(nb + lead, y.rank))
        y = ctx.b.op("transpose", y, perm=perm)
    return y


# ----- reductions --------------------------------------------------------------------

def _reduce_axes(x: Value, dim: Any) -> tuple[int, ...]:
    if dim is None or dim == [] or dim == ():
        return tuple(range(x.rank))
    dims = [dim] if isinstance(dim, int) else list(dim)
    return tuple(sorted({_axis(d, x.rank) for d in dims}))


_REDUCE = {"sum": "reduce_sum", "mean": "reduce_mean", "amax": "reduce_max", "amin": "reduce_min",
           "prod": "reduce_prod", "any": "reduce_any", "all": "reduce_all", "nansum": "reduce_sum"}


def _reduce_rule(ir_op: str) -> Rule:
    def fn(ctx, a):
        x = ctx.value(a["self"])
        dt = ctx.out_dtype
        x = ctx.cast(x, dt)
        if ctx.name == "nansum":
            x = ctx.b.op("where", ctx.b.op("isnan", x), ctx.const(0, dt), x)
        return ctx.b.op(ir_op, x, axes=_reduce_axes(x, a.get("dim")), keepdims=bool(a.get("keepdim", False)))
    return fn


for _name, _op in _REDUCE.items():
    RULES[_name] = _reduce_rule(_op)


@rule("argmax", "argmin")
def _argmax(ctx, a):
    x = ctx.value(a["self"])
    if a.get("dim") is None or x.rank == 0:
        flat = ctx.b.op("reshape", x, shape=(x.type.numel,))
        y = ctx.b.op(ctx.name, flat, axis=0)
        return ctx.b.op("reshape", y, shape=ctx.out_shape) if ctx.out_shape != () else y
    return ctx.b.op(ctx.name, x, axis=_axis(a["dim"], x.rank), keepdims=bool(a["keepdim"]))


@rule("var", "std", "var_mean", "std_mean")
def _var(ctx, a):
    types = ctx.out_types() if isinstance(ctx.val, (tuple, list)) else [ctx.out_type]
    dt = types[0].dtype
    x = ctx.cast(ctx.value(a["self"]), dt)
    axes = _reduce_axes(x, a.get("dim"))
    keep = bool(a.get("keepdim", False))
    correction = a.get("correction")
    if correction is None:
        correction = 1 if a.get("unbiased", True) else 0
    n = D.dim_prod(x.shape[i] for i in axes)
    mean = ctx.b.op("reduce_mean", x, axes=axes, keepdims=True)
    d = ctx.b.op("sub", x, mean)
    ss = ctx.b.op("reduce_sum", ctx.b.op("mul", d, d), axes=axes, keepdims=keep)
    denom = ctx.b.op("max", ctx.b.op("sub", ctx.cast(ctx.dim_value(n), dt) if isinstance(n, str)
                                     else ctx.const(n, dt), ctx.const(correction, dt)), ctx.const(0, dt))
    var = ctx.b.op("div", ss, denom)
    out = ctx.b.op("sqrt", var) if ctx.name.startswith("std") else var
    if ctx.name.endswith("_mean"):
        return out, mean if keep else ctx.b.op("squeeze", mean, axes=axes)
    return out


@rule("logsumexp")
def _logsumexp(ctx, a):
    x = ctx.cast(ctx.value(a["self"]), ctx.out_dtype)
    axes = _reduce_axes(x, a["dim"])
    m = ctx.b.op("reduce_max", x, axes=axes, keepdims=True)
    finite = ctx.b.op("where", ctx.b.op("isinf", m), ctx.const(0, x.dtype), m)
    s = ctx.b.op("reduce_sum", ctx.b.op("exp", ctx.b.op("sub", x, finite)), axes=axes, keepdims=True)
    y = ctx.b.op("add", ctx.b.op("log", s), finite)
    return y if a["keepdim"] else ctx.b.op("squeeze", y, axes=axes)


@rule("cumsum", "cumprod")
def _cumsum(ctx, a):
    x = ctx.cast(ctx.value(a["self"]), ctx.out_dtype)
    return ctx.b.op(ctx.name, x, axis=_axis(a["dim"], max(x.rank, 1)))


@rule("topk")
def _topk(ctx, a):
    x = ctx.value(a["self"])
    return ctx.b.ops("topk", x, k=int(ctx.scalar_of(a["k"])), axis=_axis(a["dim"], x.rank), largest=a["largest"])


@rule("sort")
def _sort(ctx, a):
    x = ctx.value(a["self"])
    return ctx.b.ops("sort", x, axis=_axis(a["dim"], x.rank), descending=a["descending"])


@rule("argsort")
def _argsort(ctx, a):
    x = ctx.value(a["self"])
    return ctx.b.ops("sort", x, axis=_axis(a["dim"], x.rank), descending=a["descending"])[1]


# ----- linear algebra ----------------------------------------------------------------

@rule("matmul", "mm", "bmm")
def _matmul(ctx, a):
    dt = ctx.out_dtype
    return ctx.b.op("matmul", ctx.operand(a["self"], dt), ctx.operand(a["other"] if "other" in a else a["mat2"], dt))


@rule("dot", "vdot", "inner", "mv")
def _dot(ctx, a):
    dt = ctx.out_dtype
    other = a.get("other", a.get("vec", a.get("tensor")))
    x, y = ctx.operand(a["self"], dt), ctx.operand(other, dt)
    if x.rank == 0 or y.rank == 0:
        return ctx.b.op("mul", x, y)
    if ctx.name == "inner" and y.rank > 1:
        perm = tuple(range(y.rank - 2)) + (y.rank - 1, y.rank - 2)
        y = ctx.b.op("transpose", y, perm=perm)
    return ctx.b.op("matmul", x, y)


def _transposed_weight(ctx: NodeContext, w: Value) -> Value:
    """torch keeps linear weights [out, in]; the IR's linear takes [in, out]."""
    return ctx.b.op("transpose", w, perm=(1, 0))


@rule("linear")
def _linear(ctx, a):
    x, w = ctx.value(a["input"]), ctx.value(a["weight"])
    if w.rank == 1:
        y = ctx.b.op("matmul", x, w)
        return y if a["bias"] is None else ctx.b.op("add", y, ctx.value(a["bias"]))
    inputs = [x, _transposed_weight(ctx, w)]
    if a["bias"] is not None:
        inputs.append(ctx.value(a["bias"]))
    return ctx.b.op("linear", *inputs)


@rule("addmm")
def _addmm(ctx, a):
    dt = ctx.out_dtype
    bias, m1, m2 = (ctx.operand(a[k], dt) for k in ("self", "mat1", "mat2"))
    beta, alpha = ctx.scalar_of(a["beta"]), ctx.scalar_of(a["alpha"])
    if alpha != 1:
        m1 = ctx.b.op("mul", m1, ctx.const(alpha, dt))
    if beta == 0:
        return ctx.b.op("matmul", m1, m2)
    if beta != 1:
        bias = ctx.b.op("mul", bias, ctx.const(beta, dt))
    if bias.rank <= 1:
        return ctx.b.op("linear", m1, m2, bias)
    return ctx.b.op("add", ctx.b.op("matmul", m1, m2), bias)


@rule("addmv", "addbmm", "baddbmm", "addr")
def _addmm_family(ctx, a):
    dt = ctx.out_dtype
    names = {"addmv": ("mat", "vec"), "addbmm": ("batch1", "batch2"), "baddbmm": ("batch1", "batch2"),
             "addr": ("vec1", "vec2")}[ctx.name]
    p, q = (ctx.operand(a[k], dt) for k in names)
    if ctx.name == "addr":
        prod = ctx.b.op("mul", ctx.b.op("unsqueeze", p, axes=(1,)), ctx.b.op("unsqueeze", q, axes=(0,)))
    else:
        prod = ctx.b.op("matmul", p, q)
    if ctx.name == "addbmm":
        prod = ctx.b.op("reduce_sum", prod, axes=(0,))
    beta, alpha = ctx.scalar_of(a["beta"]), ctx.scalar_of(a["alpha"])
    if alpha != 1:
        prod = ctx.b.op("mul", prod, ctx.const(alpha, dt))
    if beta == 0:
        return prod
    base = ctx.operand(a["self"], dt)
    if beta != 1:
        base = ctx.b.op("mul", base, ctx.const(beta, dt))
    return ctx.b.op("add", base, prod)


# ----- nn composites -----------------------------------------------------------------

@rule("softmax", "_softmax", "log_softmax", "_log_softmax", "special_softmax", "special_log_softmax")
def _softmax(ctx, a):
    x = ctx.cast(ctx.value(a["self"]), ctx.out_dtype)
    op = "log_softmax" if "log_softmax" in ctx.name else "softmax"
    if x.rank == 0:
        return ctx.b.op("sub", x, x) if op == "log_softmax" else ctx.b.op("div", x, x)
    return ctx.b.op(op, x, axis=_axis(a["dim"], x.rank))


def _ones_for(ctx: NodeContext, x: Value, n: D.Dim, value: float) -> Value:
    return ctx.b.op("broadcast_to", ctx.const(value, x.dtype), shape=(n,))


@rule("layer_norm", "native_layer_norm")
def _layer_norm(ctx, a):
    x = ctx.value(a["input"])
    shape = list(a["normalized_shape"])
    w, bias = a["weight"], a["bias"]
    inputs = [x]
    if w is not None or bias is not None:
        inputs.append(ctx.value(w) if w is not None else ctx.b.op("broadcast_to", ctx.const(1, x.dtype),
                                                                  shape=x.shape[-len(shape):]))
    if bias is not None:
        inputs.append(ctx.value(bias))
    eps = a["eps"] if a["eps"] is not None else 1e-5
    axis = -len(shape) if shape else -1
    y = ctx.b.op("layer_norm", *inputs, axis=axis, epsilon=eps)
    if ctx.name == "native_layer_norm":
        # the saved statistics, in case the graph reads them (dead code otherwise)
        axes = tuple(range(x.rank - len(shape), x.rank))
        mean, rstd = _moments(ctx, x, axes, eps)
        return y, mean, rstd
    return y


def _moments(ctx: NodeContext, x: Value, axes: tuple[int, ...], eps: float) -> tuple[Value, Value]:
    """Mean and 1 / sqrt(biased var + eps) over ``axes``, kept as size-1 dims."""
    mean = ctx.b.op("reduce_mean", x, axes=axes, keepdims=True)
    d = ctx.b.op("sub", x, mean)
    var = ctx.b.op("reduce_mean", ctx.b.op("mul", d, d), axes=axes, keepdims=True)
    return mean, ctx.b.op("rsqrt", ctx.b.op("add", var, ctx.const(eps, x.dtype)))


@rule("rms_norm")
def _rms_norm(ctx, a):
    x = ctx.value(a["input"])
    shape = list(a["normalized_shape"])
    from .torch import TORCH_DTYPES
    torch_dt = next(t for t, d in TORCH_DTYPES.items() if d is x.dtype)
    eps = a["eps"] if a["eps"] is not None else float(torch.finfo(torch_dt).eps)
    inputs = [x] + ([ctx.value(a["weight"])] if a["weight"] is not None else [])
    return ctx.b.op("rms_norm", *inputs, axis=-len(shape), epsilon=eps)


@rule("batch_norm", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit", "native_batch_norm",
      "instance_norm")
def _batch_norm(ctx, a):
    training = a.get("training", a.get("use_input_stats", False))
    x = ctx.value(a["input"])
    c = x.shape[1]
    dt = x.dtype
    w = ctx.cast(ctx.value(a["weight"]), dt) if a["weight"] is not None else _ones_for(ctx, x, c, 1.0)
    b = ctx.cast(ctx.value(a["bias"]), dt) if a["bias"] is not None else _ones_for(ctx, x, c, 0.0)
    if training or a.get("running_mean") is None:
        return _batch_stats_norm(ctx, x, w, b, a["eps"])
    mean, var = ctx.value(a["running_mean"]), ctx.value(a["running_var"])
    y = ctx.b.op("batch_norm", x, w, b, *(ctx.cast(v, dt) for v in (mean, var)), epsilon=a["eps"])
    if ctx.name == "batch_norm":
        return y
    # eval-mode kernels return empty saved statistics
    return (y,) + tuple(_full_like_type(ctx, 0, t) for t in ctx.out_types()[1:])


def _batch_stats_norm(ctx: NodeContext, x: Value, w: Value, b: Value, eps: float) -> Any:
    """Normalise with the statistics of this batch (training-mode batch norm, instance norm).
    The running-statistics update is a state mutation, which capture rejects separately."""
    instance = ctx.name == "instance_norm"
    axes = tuple(range(2, x.rank)) if instance else (0,) + tuple(range(2, x.rank))
    mean, rstd = _moments(ctx, x, axes, eps)
    shape = (1, x.shape[1]) + (1,) * (x.rank - 2)
    y = ctx.b.op("mul", ctx.b.op("sub", x, mean), rstd)
    y = ctx.b.op("add", ctx.b.op("mul", y, ctx.b.op("reshape", w, shape=shape)), ctx.b.op("reshape", b, shape=shape))
    if ctx.name in ("batch_norm", "instance_norm"):
        return y
    flat = (x.shape[1],)
    return y, ctx.b.op("reshape", mean, shape=flat), ctx.b.op("reshape", rstd, shape=flat)


@rule("group_norm")
def _group_norm(ctx, a):
    x = ctx.value(a["input"])
    g = a["num_groups"]
    n, c = x.shape[0], x.shape[1]
    if type(c) is not int:
        raise ctx.unsupported("group_norm needs a static channel dim")
    grouped = ctx.b.op("reshape", x, shape=(n, g, D.dim_prod((c // g,) + tuple(x.shape[2:]))))
    y = ctx.b.op("layer_norm", grouped, axis=-1, epsilon=a["eps"])
    y = ctx.b.op("reshape", y, shape=x.shape)
    shape = (c,) + (1,) * (x.rank - 2)
    if a["weight"] is not None:
        y = ctx.b.op("mul", y, ctx.b.op("reshape", ctx.value(a["weight"]), shape=shape))
    if a["bias"] is not None:
        y = ctx.b.op("add", y, ctx.b.op("reshape", ctx.value(a["bias"]), shape=shape))
    return y


@rule("scaled_dot_product_attention")
def _sdpa(ctx, a):
    if a["dropout_p"]:
        raise ctx.unsupported("attention dropout is random; pass dropout_p=0 (model.eval()) before capture")
    q, k, v = (ctx.value(a[n]) for n in ("query", "key", "value"))
    hq, hk = q.shape[-3] if q.rank >= 3 else None, k.shape[-3] if k.rank >= 3 else None
    if hq != hk and type(hq) is int and type(hk) is int and hk not in (1,) and hq % hk == 0:
        k, v = (_repeat_heads(ctx, t, hq // hk) for t in (k, v))
    inputs = [q, k, v]
    mask = a["attn_mask"]
    if mask is None:
        return ctx.b.op("attention", *inputs, scale=a["scale"], causal=bool(a["is_causal"]))
    m = ctx.value(mask)
    m = m if m.dtype is DType.bool else ctx.cast(m, q.dtype)
    y = ctx.b.op("attention", *inputs, m, scale=a["scale"], causal=bool(a["is_causal"]))
    # torch gives zeros, not NaN, for a query row whose keys are all masked out
    keep = m if m.dtype is DType.bool else ctx.b.op("ne", m, ctx.const(-np.inf, m.dtype))
    any_key = ctx.b.op("reduce_any", keep, axes=(m.rank - 1,), keepdims=True)
    return ctx.b.op("where", any_key, y, ctx.const(0, y.dtype))


def _repeat_heads(ctx: NodeContext, t: Value, rep: int) -> Value:
    """Grouped-query attention: repeat each kv head ``rep`` times, as repeat_interleave on dim -3."""
    *batch, h, length, d = t.shape
    u = ctx.b.op("unsqueeze", t, axes=(t.rank - 2,))
    u = ctx.b.op("broadcast_to", u, shape=(*batch, h, rep, length, d))
    return ctx.b.op("reshape", u, shape=(*batch, h * rep, length, d))


def _ntuple(v: Any, n: int) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * n
    v = tuple(v)
    return v * n if len(v) == 1 else v


@rule("conv1d", "conv2d", "conv3d", "convolution", "_convolution", "conv_transpose1d", "conv_transpose2d",
      "conv_transpose3d")
def _conv(ctx, a):
    x, w = ctx.value(a["input"]), ctx.value(a["weight"])
    n = w.rank - 2
    unbatched = x.rank == n + 1
    if unbatched:
        x = ctx.b.op("unsqueeze", x, axes=(0,))
    stride, dilation = _ntuple(a["stride"], n), _ntuple(a["dilation"], n)
    groups = a["groups"]
    transposed = a.get("transposed", False) or ctx.name.startswith("conv_transpose")
    padding = a["padding"]
    if transposed:
        y = _conv_transpose(ctx, x, w, stride, _ntuple(padding, n), dilation,
                            _ntuple(a.get("output_padding", 0), n), groups)
    else:
        if isinstance(padding, str):
            pads = _string_padding(ctx, padding, w, stride, dilation)
        else:
            pads = tuple((p, p) for p in _ntuple(padding, n))
        y = ctx.b.op("conv", x, w, stride=stride, padding=pads, dilation=dilation, groups=groups)
    if a["bias"] is not None:
        y = _add_channel_bias(ctx, y, ctx.value(a["bias"]))
    return ctx.b.op("squeeze", y, axes=(0,)) if unbatched else y


def _add_channel_bias(ctx: NodeContext, y: Value, bias: Value) -> Value:
    node = y.producer
    if node is not None and node.op == "conv" and len(node.inputs) == 2 and len(y.uses()) == 0:
        attrs = dict(node.attrs)
        ctx.conv.graph.remove(node)
        return ctx.b.op("conv", node.inputs[0], node.inputs[1], bias, **attrs)
    shape = (1, bias.shape[0]) + (1,) * (y.rank - 2)
    return ctx.b.op("add", y, ctx.b.op("reshape", bias, shape=shape))


def _string_padding(ctx: NodeContext, mode: str, w: Value, stride, dilation) -> tuple:
    if mode == "valid":
        return tuple((0, 0) for _ in stride)
    if any(s != 1 for s in stride):
        raise ctx.unsupported("padding='same' needs stride 1")
    pads = []
    for k, d in zip(w.shape[2:], dilation):
        total = d * (k - 1)
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


def _conv_transpose(ctx: NodeContext, x: Value, w: Value, stride, padding, dilation, output_padding,
                    groups: int) -> Value:
    """conv_transpose as a conv over the stride-dilated input with the flipped, swapped kernel."""
    n = w.rank - 2
    cin, cout_g = w.shape[0], w.shape[1]
    ks = w.shape[2:]
    wg = ctx.b.op("reshape", w, shape=(groups, cin // groups, cout_g) + tuple(ks))
    wg = ctx.b.op("transpose", wg, perm=(0, 2, 1) + tuple(range(3, 3 + n)))
    wf = ctx.b.op("reshape", wg, shape=(groups * cout_g, cin // groups) + tuple(ks))
    wf = ctx.b.op("reverse", wf, axes=tuple(range(2, 2 + n)))
    pads = []
    for k, p, d, op in zip(ks, padding, dilation, output_padding):
        lo = d * (k - 1) - p
        pads.append((lo, lo + op))
    if any(lo < 0 or hi < 0 for lo, hi in pads):
        raise ctx.unsupported("conv_transpose with padding larger than the kernel span is not supported")
    return ctx.b.op("conv", x, wf, stride=(1,) * n, padding=tuple(pads), dilation=dilation, groups=groups,
                    lhs_dilation=stride)


def _pool_rule(kind: str, n: int) -> Rule:
    def fn(ctx, a):
        x = ctx.value(a["self"])
        unbatched = x.rank == n + 1
        if unbatched:
            x = ctx.b.op("unsqueeze", x, axes=(0,))
        kernel = _ntuple(a["kernel_size"], n)
        stride = _ntuple(a["stride"], n) if a["stride"] else kernel
        pads = tuple((p, p) for p in _ntuple(a["padding"], n))
        attrs = dict(kernel=kernel, stride=stride, padding=pads, ceil_mode=bool(a["ceil_mode"]))
        if kind == "max_pool":
            attrs["dilation"] = _ntuple(a["dilation"], n)
        else:
            if a.get("divisor_override"):
                raise ctx.unsupported("avg_pool with divisor_override is not supported")
            attrs["count_include_pad"] = bool(a["count_include_pad"])
        y = ctx.b.op(kind, x, **attrs)
        if ctx.name.endswith("with_indices"):
            i = _max_pool_indices(ctx, x, y, kernel, stride, pads, attrs["dilation"])
            if unbatched:
                y, i = (ctx.b.op("squeeze", v, axes=(0,)) for v in (y, i))
            return y, i
        return ctx.b.op("squeeze", y, axes=(0,)) if unbatched else y
    return fn


def _max_pool_indices(ctx: NodeContext, x: Value, y: Value, kernel, stride, pads, dilation) -> Value:
    """torch's max-pool indices: for each output, the flat position in its [N, C] plane of the window's
    first maximum in kernel order (a NaN taken as it comes; an all -inf window keeps its first real
    position).  A running argmax over the kernel taps, each tap a strided slice of the padded input
    and of the padded plane of positions (-1 in the padding, which is never taken)."""
    n = len(kernel)
    spatial, out = x.shape[2:], y.shape[2:]
    if not all(type(d) is int for d in tuple(spatial) + tuple(out)):
        raise ctx.unsupported("max_pool indices need static spatial dims")
    b = ctx.b
    # right padding so that every window ceil_mode admits lies inside
    widths = tuple((lo, max(0, (o - 1) * s + (k - 1) * d + 1 - size - lo))
                   for (lo, _), o, s, k, d, size in zip(pads, out, stride, kernel, dilation, spatial))
    xp = b.op("pad", x, pads=((0, 0), (0, 0)) + widths, value=float(x.dtype.lowest))
    plane = b.const(np.arange(int(np.prod(spatial)), dtype=np.int64).reshape(spatial))
    pos = b.op("pad", plane, pads=widths, value=-1.0)
    best = b.scalar(x.dtype.lowest, x)
    index = b.scalar(-1, DType.i64)
    for tap in itertools.product(*(range(k) for k in kernel)):
        starts = [t * d for t, d in zip(tap, dilation)]
        stops = [st + (o - 1) * s + 1 for st, o, s in zip(starts, out, stride)]
        v = b.op("slice", xp, starts=starts, stops=stops, steps=stride, axes=tuple(range(2, 2 + n)))
        p = b.op("slice", pos, starts=starts, stops=stops, steps=stride, axes=tuple(range(n)))
        first = b.op("and", b.op("lt", index, b.scalar(0, DType.i64)), b.op("ge", p, b.scalar(0, DType.i64)))
        take = b.op("or", b.op("gt", v, best), first)
        if x.dtype.is_float:
            take = b.op("or", take, b.op("isnan", v))
        best = b.op("where", take, v, best)
        index = b.op("where", take, p, index)
    return index


for _n in (1, 2, 3):
    RULES[f"max_pool{_n}d"] = RULES[f"max_pool{_n}d_with_indices"] = _pool_rule("max_pool", _n)
    RULES[f"avg_pool{_n}d"] = _pool_rule("avg_pool", _n)


def _adaptive_rule(kind: str, n: int) -> Rule:
    def fn(ctx, a):
        x = ctx.value(a["self"])
        spatial = x.shape[-n:]
        out = ctx.out_shape[-n:]
        axes = tuple(range(x.rank - n, x.rank))
        if all(o == 1 for o in out):
            return ctx.b.op("reduce_mean" if kind == "avg_pool" else "reduce_max", x, axes=axes, keepdims=True)
        if not all(type(s) is int for s in spatial):
            raise ctx.unsupported("adaptive pooling over symbolic spatial dims is not supported")
        if not all(s % o == 0 for s, o in zip(spatial, out)):
            return _adaptive_windows(ctx, x, kind, out)
        kernel = tuple(s // o for s, o in zip(spatial, out))
        unbatched = x.rank == n + 1
        if unbatched:
            x = ctx.b.op("unsqueeze", x, axes=(0,))
        y = ctx.b.op(kind, x, kernel=kernel, stride=kernel)
        return ctx.b.op("squeeze", y, axes=(0,)) if unbatched else y
    return fn


def _adaptive_windows(ctx: NodeContext, x: Value, kind: str, out: tuple) -> Value:
    """Adaptive pooling with uneven windows [floor(i*L/O), ceil((i+1)*L/O)), one spatial
    dim at a time (mean and max over a box are separable)."""
    reduce = "reduce_mean" if kind == "avg_pool" else "reduce_max"
    n = len(out)
    for k, o in enumerate(out):
        ax = x.rank - n + k
        size = x.shape[ax]
        parts = []
        for i in range(o):
            lo, hi = (i * size) // o, -((-(i + 1) * size) // o)
            win = ctx.b.op("slice", x, starts=(lo,), stops=(hi,), axes=(ax,))
            parts.append(ctx.b.op(reduce, win, axes=(ax,), keepdims=True))
        x = parts[0] if len(parts) == 1 else ctx.b.op("concat", *parts, axis=ax)
    return x


for _n in (1, 2, 3):
    RULES[f"adaptive_avg_pool{_n}d"] = RULES[f"_adaptive_avg_pool{_n}d"] = _adaptive_rule("avg_pool", _n)
    RULES[f"adaptive_max_pool{_n}d"] = _adaptive_rule("max_pool", _n)


# ----- in-place variants -------------------------------------------------------------

_VIEWS = frozenset({"view", "_unsafe_view", "reshape", "slice", "select", "narrow", "transpose", "permute", "t",
                    "expand", "unsqueeze", "squeeze", "as_strided", "diagonal", "split", "chunk", "unbind",
                    "alias", "detach", "flatten", "unflatten"})


def _inplace(fn: Rule) -> Rule:
    """Run the functional rule; later readers of the mutated node see the new value.
    Mutating a view would also change its base, which the IR cannot express."""
    def wrapped(ctx, a):
        target = a.get("self")
        if isinstance(target, torch.fx.Node) and isinstance(target.target, torch._ops.OpOverload) and \
                target.target._schema.name.split("::", 1)[1] in _VIEWS:
            raise ctx.unsupported("an in-place update of a view also changes its base tensor; use the "
                                  "out-of-place op (x = x + y) or torch.Tensor.index_put / scatter")
        out = fn(ctx, a)
        if isinstance(target, torch.fx.Node):
            ctx.conv.env[target] = ctx.conv.check_result(ctx, out)
        return out
    return wrapped


for _name in list(RULES):
    if not _name.startswith("_") and not _name.endswith("_"):
        RULES.setdefault(_name + "_", _inplace(RULES[_name]))
