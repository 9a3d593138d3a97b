"""aten elementwise rules: arithmetic with torch's promotion, comparisons, rounding, activations."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...ir import DType, Value
from ..decompositions import floor_div, python_mod
from .context import RULES, NodeContext, Rule, full, rule, to_out, wrap_axis

__all__: list[str] = []


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
                return full(ctx, False)
            return ctx.b.op(ir_op, x)
        if ir_op in _ROUNDING and not x.dtype.is_float:
            return x
        return ctx.b.op(ir_op, ctx.cast(x, ctx.out_dtype))
    return fn


for _name, _op in _UNARY.items():
    RULES.add(_unary_rule(_op), _name)


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
    RULES.add(_logical_rule(_op), _name)

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
    RULES.add(_binary_rule(_op), _name)
for _name, _op in _COMPARE.items():
    RULES.add(_compare_rule(_op), _name)


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
        ax, keep = wrap_axis(a["dim"], x.rank), a["keepdim"]
        vals = ctx.b.op(f"reduce_{name}", x, axes=(ax,), keepdims=keep)
        idx = ctx.b.op(f"arg{name}", x, axis=ax, keepdims=keep)
        return vals, idx
    x = ctx.value(a["self"])
    return ctx.b.op(f"reduce_{name}", x, axes=tuple(range(x.rank)))


@rule("div", "divide", "true_divide")
def _div(ctx, a):
    dt = ctx.out_dtype
    mode = a.get("rounding_mode")
    if mode is None:
        return ctx.b.op("div", ctx.operand(a["self"], dt), ctx.operand(a["other"], dt))
    x, y = ctx.operand(a["self"], dt), ctx.operand(a["other"], dt)
    if mode == "floor":
        return floor_div(ctx.b, x, y)
    q = ctx.b.op("div", x, y)
    return _trunc_values(ctx, q)


@rule("floor_divide")
def _floor_divide(ctx, a):
    dt = ctx.out_dtype
    return floor_div(ctx.b, ctx.operand(a["self"], dt), ctx.operand(a["other"], dt))


@rule("remainder")
def _remainder(ctx, a):
    """Python modulo (result has the divisor's sign) from the IR's fmod-style rem."""
    dt = ctx.out_dtype
    x, y = ctx.operand(a["self"], dt), ctx.operand(a["other"], dt)
    return python_mod(ctx.b, x, y)


@rule("fmod")
def _fmod(ctx, a):
    dt = ctx.out_dtype
    return ctx.b.op("rem", ctx.operand(a["self"], dt), ctx.operand(a["other"], dt))


@rule("where")
def _where(ctx, a):
    if "self" not in a:  # torch.where(condition) alone is nonzero(condition, as_tuple=True)
        return RULES["nonzero_numpy"](ctx, {"self": a["condition"]})
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


@rule("glu")
def _glu(ctx, a):
    """F.glu: the first half along ``dim`` gated by the sigmoid of the second half."""
    x = ctx.value(a["self"])
    ax = wrap_axis(a.get("dim", -1), x.rank)
    half = ctx.out_shape[ax]
    first = ctx.b.op("slice", x, starts=(0,), stops=(half,), steps=(1,), axes=(ax,))
    second = ctx.b.op("slice", x, starts=(half,), stops=(x.shape[ax],), steps=(1,), axes=(ax,))
    return ctx.b.op("mul", first, ctx.b.op("sigmoid", second))


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


@rule("log_sigmoid")
def _log_sigmoid(ctx, a):
    """log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|)): finite for every x (log of sigmoid underflows
    to -inf below about -88 in float32)."""
    x = ctx.value(a["self"])
    tail = ctx.b.op("log1p", ctx.b.op("exp", ctx.b.op("neg", ctx.b.op("abs", x))))
    return ctx.b.op("sub", ctx.b.op("min", x, ctx.const(0, x.dtype)), tail)


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
    x = to_out(ctx, a["self"])
    return ctx.b.op("mul", x, x)


@rule("exp2")
def _exp2(ctx, a):
    x = to_out(ctx, a["self"])
    return ctx.b.op("pow", ctx.const(2.0, x.dtype), x)


@rule("log2", "log10")
def _log_base(ctx, a):
    x = to_out(ctx, a["self"])
    base = 2.0 if ctx.name == "log2" else 10.0
    return ctx.b.op("div", ctx.b.op("log", x), ctx.const(np.log(base), x.dtype))
