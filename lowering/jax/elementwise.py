"""jax rules: elementwise math, compares, cast, and the activation functions."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax

from accelir.ir import DType

from .context import JAX_DTYPES, Rule, RuleContext, pointwise, register_lowering

# ----- rules: elementwise ------------------------------------------------------------

def _is_int(x: Any) -> bool:
    return jnp.issubdtype(x.dtype, jnp.integer)


def _relu(x):
    return jnp.maximum(x, jnp.zeros((), x.dtype))


def _div(a, b):
    if not _is_int(a):
        return jnp.true_divide(a, b)
    a, b = jnp.broadcast_arrays(a, b)
    zero = b == 0
    q = lax.div(a, jnp.where(zero, jnp.ones_like(b), b))
    return jnp.where(zero, jnp.zeros_like(q), q)


def _rem(a, b):
    a, b = jnp.broadcast_arrays(a, b)
    if not _is_int(a):
        return lax.rem(a, b)
    zero = b == 0
    r = lax.rem(a, jnp.where(zero, jnp.ones_like(b), b))
    return jnp.where(zero, jnp.zeros_like(r), r)


def _pow(a, b):
    if jnp.issubdtype(b.dtype, jnp.signedinteger):
        b = jnp.where(b < 0, jnp.zeros_like(b), b)
    return jnp.power(a, b)


_ELEMENTWISE: dict[str, Callable] = {
    "neg": jnp.negative, "abs": jnp.abs, "exp": jnp.exp, "log": jnp.log, "log1p": jnp.log1p,
    "expm1": jnp.expm1, "sqrt": jnp.sqrt, "rsqrt": lax.rsqrt, "sin": jnp.sin, "cos": jnp.cos, "tan": jnp.tan,
    "asin": jnp.arcsin, "acos": jnp.arccos, "atan": jnp.arctan, "sinh": jnp.sinh, "cosh": jnp.cosh,
    "asinh": jnp.arcsinh, "acosh": jnp.arccosh, "atanh": jnp.arctanh, "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid, "erf": lax.erf, "floor": jnp.floor, "ceil": jnp.ceil, "round": jnp.round,
    "sign": jnp.sign, "reciprocal": jnp.reciprocal, "relu": _relu, "not": jnp.invert,
    "isnan": jnp.isnan, "isinf": jnp.isinf,
    "add": jnp.add, "sub": jnp.subtract, "mul": jnp.multiply, "div": _div, "pow": _pow,
    "max": jnp.maximum, "min": jnp.minimum, "rem": _rem, "atan2": jnp.arctan2,
    "and": jnp.bitwise_and, "or": jnp.bitwise_or, "xor": jnp.bitwise_xor,
    "eq": jnp.equal, "ne": jnp.not_equal, "lt": jnp.less, "le": jnp.less_equal, "gt": jnp.greater,
    "ge": jnp.greater_equal,
    "where": jnp.where,
}


def _elementwise_rule(fn: Callable) -> Rule:
    def rule(ctx: RuleContext, *args):
        return fn(*args)
    return rule


for _name, _fn in _ELEMENTWISE.items():
    register_lowering(_name, upcast=True, layout=True)(pointwise(_elementwise_rule(_fn)))


@register_lowering("cast", layout=True)
@pointwise
def _cast(ctx, x, *, dtype):
    to = jnp.dtype(JAX_DTYPES[dtype])
    if dtype is DType.bool:
        return x != jnp.zeros((), x.dtype)
    if dtype.is_int and jnp.issubdtype(x.dtype, jnp.floating):
        # float -> int truncates toward zero; NaN -> 0 and out-of-range values saturate,
        # matching the reference rather than the platform's convert.
        info = jnp.iinfo(to)
        # the bounds as x's float type: uint64's maximum overflows jax's parsing of a Python int
        t = jnp.clip(jnp.trunc(x), jnp.asarray(float(info.min), x.dtype), jnp.asarray(float(info.max), x.dtype))
        return lax.convert_element_type(jnp.where(jnp.isnan(x), jnp.zeros_like(t), t), to)
    return lax.convert_element_type(x, to)
