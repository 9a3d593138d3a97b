"""JAX elementwise rules: unary / binary tables, rounding, clamp, select, dtype conversion."""

from __future__ import annotations

from typing import Any

from ...ir import DType, Value
from .context import RULES, EqnContext, Unsupported, jax_dtype, rule, to_dim

__all__: list[str] = []


# ----- elementwise -------------------------------------------------------------------

_UNARY = {name: name for name in ("neg", "abs", "exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "sin", "cos",
                                  "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "tanh",
                                  "erf", "floor", "ceil", "sign", "not")}
_UNARY["logistic"] = "sigmoid"

_BINARY = {name: name for name in ("add", "sub", "mul", "div", "rem", "pow", "max", "min", "atan2", "and", "or",
                                   "xor", "eq", "ne", "lt", "le", "gt", "ge")}
_BINARY["add_any"] = "add"
# lax allows these on bool, the IR spells them as logic
_BOOL_BINARY = {"max": "or", "min": "and", "mul": "and", "add": "or", "add_any": "or"}


def _unary(op: str):
    def rule(cx: EqnContext, x: Value, **params: Any) -> Value:
        return cx.op(op, x)
    return rule


def _binary(name: str, op: str):
    def rule(cx: EqnContext, a: Value, b: Value, **params: Any) -> Value:
        if a.dtype is DType.bool and name in _BOOL_BINARY:
            return cx.op(_BOOL_BINARY[name], a, b)
        if b.dtype != a.dtype:  # lax.pow takes an integer exponent for a float base
            b = cx.op("cast", b, dtype=a.dtype)
        return cx.op(op, a, b)
    return rule


for _name, _op in _UNARY.items():
    RULES.add(_unary(_op), _name)
for _name, _op in _BINARY.items():
    RULES.add(_binary(_name, _op), _name)


def _identity(cx: EqnContext, *xs: Value, **params: Any) -> list[Value]:
    return list(xs)


for _name in ("copy", "copy_p", "stop_gradient", "optimization_barrier", "sharding_constraint", "device_put",
              "mesh_cast", "reshard"):
    RULES.add(_identity, _name)


@rule("square")
def _square(cx, x, **p):
    return cx.op("mul", x, x)


@rule("exp2")
def _exp2(cx, x, **p):
    return cx.op("pow", cx.scalar(2.0, x), x)


@rule("erfc")
def _erfc(cx, x, **p):
    return cx.op("sub", cx.scalar(1.0, x), cx.op("erf", x))


@rule("is_finite")
def _is_finite(cx, x, **p):
    return cx.op("not", cx.op("or", cx.op("isnan", x), cx.op("isinf", x)))


@rule("integer_pow")
def _integer_pow(cx, x, *, y: int, **p):
    """Binary exponentiation in jax's own multiplication order, so the rounding matches."""
    if y == 0:
        return cx.op("broadcast_to", cx.scalar(1, x), shape=x.shape)
    n = abs(y)
    acc = None
    base = x
    while n > 0:
        if n & 1:
            acc = base if acc is None else cx.op("mul", acc, base)
        n >>= 1
        if n > 0:
            base = cx.op("mul", base, base)
    return cx.op("div", cx.scalar(1, x), acc) if y < 0 else acc


@rule("round")
def _round(cx, x, *, rounding_method: Any, **p):
    if int(rounding_method) == 1:
        return cx.op("round", x)
    # half away from zero: floor(|x|) plus one where the fraction is >= 0.5, with x's sign;
    # |x| + 0.5 would round up values just below one half
    ax = cx.op("abs", x)
    fl = cx.op("floor", ax)
    up = cx.op("ge", cx.op("sub", ax, fl), cx.scalar(0.5, x))
    mag = cx.op("where", up, cx.op("add", fl, cx.scalar(1.0, x)), fl)
    return cx.op("mul", cx.op("sign", x), mag)


@rule("clamp")
def _clamp(cx, lo, x, hi, **p):
    return cx.op("min", cx.op("max", x, lo), hi)


@rule("select_n")
def _select_n(cx, pred, *cases, **p):
    if len(cases) == 1:
        return cases[0]
    if pred.dtype is DType.bool:
        return cx.op("where", pred, cases[1], cases[0])
    out = cases[-1]
    for k in range(len(cases) - 2, -1, -1):
        out = cx.op("where", cx.op("eq", pred, cx.scalar(k, pred)), cases[k], out)
    return out


@rule("convert_element_type")
def _convert(cx, x, *, new_dtype: Any, **p):
    dt = jax_dtype(new_dtype)
    return x if dt == x.dtype else cx.op("cast", x, dtype=dt)


_PRECISION_DTYPES = {(8, 7): DType.bf16, (5, 10): DType.f16, (8, 23): DType.f32, (11, 52): DType.f64}


@rule("reduce_precision")
def _reduce_precision(cx, x, *, exponent_bits: int, mantissa_bits: int, **p):
    dt = _PRECISION_DTYPES.get((exponent_bits, mantissa_bits))
    if dt is None:
        raise Unsupported(f"no accelir dtype has {exponent_bits} exponent and {mantissa_bits} mantissa bits")
    if dt == x.dtype:
        return x
    return cx.op("cast", cx.op("cast", x, dtype=dt), dtype=x.dtype)


@rule("dim_as_value")
def _dim_as_value(cx, *, dim: Any, dtype: Any = None, **p):
    # the IR has no shape-of op: the sum of a ones vector of that length is the dim's value
    dt = cx.out_types[0].dtype
    ones = cx.op("broadcast_to", cx.scalar(1, dt), shape=(to_dim(dim),))
    return cx.op("reduce_sum", ones, axes=(0,))
