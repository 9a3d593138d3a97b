"""Elementwise ops: unary math, binary arithmetic, logic, comparisons, where, cast.

Binary ops broadcast numpy-style; their operands must share a dtype (the IR has no
promotion).  References compute f16 / bf16 in f32 and round once to the dtype, as
torch's CPU kernels and XLA do.
"""

from __future__ import annotations

import numpy as np
import scipy.special

from ..types import DType, TensorType
from .registry import (AttrSpec, OpDef, TypeRuleError, broadcast_shapes, np_dtype_compute, register,
                       same_dtype)

__all__ = ["UNARY", "BINARY", "COMPARE", "compute_unary"]

FLOAT = "float"
ANY = "any"
NUMERIC = "numeric"  # everything but bool
INTEGRAL = "integral"  # ints and bool


def _check_kind(op: str, dt: DType, kind: str) -> None:
    ok = {
        FLOAT: dt.is_float,
        ANY: True,
        NUMERIC: dt is not DType.bool,
        INTEGRAL: dt.is_int or dt is DType.bool,
    }[kind]
    if not ok:
        raise TypeRuleError(f"{op}: dtype {dt} is not supported (needs {kind})")


def _with_compute(fn, *arrays):
    """Run ``fn`` in the compute dtype and round the result back to the input dtype."""
    dt = arrays[0].dtype
    cdt = np_dtype_compute(dt)
    with np.errstate(all="ignore"):
        out = fn(*[a.astype(cdt, copy=False) for a in arrays])
    out = np.asarray(out)
    if out.dtype != np.bool_ and out.dtype != dt:
        out = out.astype(dt)
    return out


def _sigmoid(x):
    return scipy.special.expit(x)


def _round_half_even(x):
    return np.rint(x)


def _rsqrt(x):
    return 1.0 / np.sqrt(x)


def _relu(x):
    if x.dtype.kind == "f":
        return np.where(x > 0, x, np.where(np.isnan(x), x, np.zeros((), x.dtype)))
    return np.maximum(x, np.zeros((), x.dtype))


# name -> (numpy function, dtype kind, doc)
UNARY: dict[str, tuple] = {
    "neg": (np.negative, NUMERIC, "-x"),
    "abs": (np.abs, NUMERIC, "|x|"),
    "exp": (np.exp, FLOAT, "e**x"),
    "log": (np.log, FLOAT, "natural log"),
    "log1p": (np.log1p, FLOAT, "log(1 + x)"),
    "expm1": (np.expm1, FLOAT, "exp(x) - 1"),
    "sqrt": (np.sqrt, FLOAT, "square root"),
    "rsqrt": (_rsqrt, FLOAT, "1 / sqrt(x)"),
    "sin": (np.sin, FLOAT, "sine"),
    "cos": (np.cos, FLOAT, "cosine"),
    "tan": (np.tan, FLOAT, "tangent"),
    "asin": (np.arcsin, FLOAT, "arc sine"),
    "acos": (np.arccos, FLOAT, "arc cosine"),
    "atan": (np.arctan, FLOAT, "arc tangent"),
    "sinh": (np.sinh, FLOAT, "hyperbolic sine"),
    "cosh": (np.cosh, FLOAT, "hyperbolic cosine"),
    "asinh": (np.arcsinh, FLOAT, "inverse hyperbolic sine"),
    "acosh": (np.arccosh, FLOAT, "inverse hyperbolic cosine"),
    "atanh": (np.arctanh, FLOAT, "inverse hyperbolic tangent"),
    "tanh": (np.tanh, FLOAT, "hyperbolic tangent"),
    "sigmoid": (_sigmoid, FLOAT, "1 / (1 + exp(-x))"),
    "erf": (scipy.special.erf, FLOAT, "error function"),
    "floor": (np.floor, FLOAT, "round down"),
    "ceil": (np.ceil, FLOAT, "round up"),
    "round": (_round_half_even, FLOAT, "round half to even"),
    "sign": (np.sign, NUMERIC, "-1, 0 or 1 (NaN stays NaN)"),
    "reciprocal": (np.reciprocal, FLOAT, "1 / x"),
    "relu": (_relu, NUMERIC, "max(x, 0), NaN propagates"),
    "not": (np.invert, INTEGRAL, "logical not for bool, bitwise not for ints"),
}

# unary ops whose result is bool
PREDICATES: dict[str, tuple] = {
    "isnan": (np.isnan, FLOAT, "x is NaN"),
    "isinf": (np.isinf, FLOAT, "x is +inf or -inf"),
}


def _int_div(a, b):
    """Integer division truncating toward zero (C, XLA and ONNX semantics)."""
    with np.errstate(all="ignore"):
        safe_b = np.where(b == 0, np.ones((), b.dtype), b)
        q = np.floor_divide(a, safe_b)
        r = a - q * safe_b
        fix = (r != 0) & ((a < 0) != (safe_b < 0))
        q = np.where(fix, q + 1, q)
        return np.where(b == 0, np.zeros((), q.dtype), q).astype(a.dtype)


def _div(a, b):
    if a.dtype.kind in "iu":
        return _int_div(a, b)
    return np.true_divide(a, b)


def _pow(a, b):
    if a.dtype.kind in "iu":
        b = np.where(b < 0, 0, b) if b.dtype.kind == "i" else b
        return np.power(a, b)
    return np.power(a, b)


def _rem(a, b):
    """Remainder with the sign of the dividend (C fmod; lax.rem; ONNX Mod fmod=1)."""
    if a.dtype.kind in "iu":
        safe_b = np.where(b == 0, np.ones((), b.dtype), b)
        return np.where(b == 0, np.zeros((), a.dtype), np.fmod(a, safe_b)).astype(a.dtype)
    return np.fmod(a, b)


# name -> (numpy function, dtype kind, commutative, doc)
BINARY: dict[str, tuple] = {
    "add": (np.add, NUMERIC, True, "a + b"),
    "sub": (np.subtract, NUMERIC, False, "a - b"),
    "mul": (np.multiply, NUMERIC, True, "a * b"),
    "div": (_div, NUMERIC, False, "a / b; integer division truncates toward zero, x // 0 = 0"),
    "pow": (_pow, NUMERIC, False, "a ** b"),
    "max": (np.maximum, NUMERIC, True, "elementwise maximum, NaN propagates"),
    "min": (np.minimum, NUMERIC, True, "elementwise minimum, NaN propagates"),
    "rem": (_rem, NUMERIC, False, "remainder with the dividend's sign (fmod); x rem 0 = 0 for ints"),
    "atan2": (np.arctan2, FLOAT, False, "atan(a / b) in the right quadrant"),
    "and": (np.bitwise_and, INTEGRAL, True, "logical and for bool, bitwise for ints"),
    "or": (np.bitwise_or, INTEGRAL, True, "logical or for bool, bitwise for ints"),
    "xor": (np.bitwise_xor, INTEGRAL, True, "logical xor for bool, bitwise for ints"),
}

COMPARE: dict[str, tuple] = {
    "eq": (np.equal, True, "a == b"),
    "ne": (np.not_equal, True, "a != b"),
    "lt": (np.less, False, "a < b"),
    "le": (np.less_equal, False, "a <= b"),
    "gt": (np.greater, False, "a > b"),
    "ge": (np.greater_equal, False, "a >= b"),
}


def compute_unary(name: str, x: np.ndarray) -> np.ndarray:
    fn = UNARY[name][0]
    return _with_compute(fn, x)


def _unary_rule(name, kind, result_bool=False):
    def rule(types, attrs):
        (t,) = types
        _check_kind(name, t.dtype, kind)
        return [TensorType(DType.bool, t.shape) if result_bool else t]
    return rule


def _unary_ref(fn, result_bool=False):
    def ref(inputs, attrs, regions):
        (x,) = inputs
        if result_bool:
            with np.errstate(all="ignore"):
                return [np.asarray(fn(x.astype(np_dtype_compute(x.dtype), copy=False)))]
        return [_with_compute(fn, x)]
    return ref


def _binary_rule(name, kind, result_bool=False):
    def rule(types, attrs):
        dt = same_dtype(name, types)
        _check_kind(name, dt, kind)
        shape = broadcast_shapes(types[0].shape, types[1].shape, op=name)
        return [TensorType(DType.bool if result_bool else dt, shape)]
    return rule


def _binary_ref(fn, result_bool=False):
    def ref(inputs, attrs, regions):
        a, b = inputs
        if result_bool:
            cdt = np_dtype_compute(a.dtype)
            with np.errstate(all="ignore"):
                return [np.asarray(fn(a.astype(cdt, copy=False), b.astype(cdt, copy=False)))]
        return [_with_compute(fn, a, b)]
    return ref


for _name, (_fn, _kind, _doc) in UNARY.items():
    register(OpDef(_name, _unary_rule(_name, _kind), _unary_ref(_fn), elementwise=True, doc=_doc))

for _name, (_fn, _kind, _doc) in PREDICATES.items():
    register(OpDef(_name, _unary_rule(_name, _kind, True), _unary_ref(_fn, True), elementwise=True, doc=_doc))

for _name, (_fn, _kind, _comm, _doc) in BINARY.items():
    register(OpDef(_name, _binary_rule(_name, _kind), _binary_ref(_fn), min_inputs=2, max_inputs=2,
                   commutative=_comm, elementwise=True, doc=_doc))

for _name, (_fn, _comm, _doc) in COMPARE.items():
    register(OpDef(_name, _binary_rule(_name, ANY, True), _binary_ref(_fn, True), min_inputs=2, max_inputs=2,
                   commutative=_comm, elementwise=True, doc=_doc))


def _where_rule(types, attrs):
    c, a, b = types
    if c.dtype is not DType.bool:
        raise TypeRuleError(f"where: condition must be bool, got {c.dtype}")
    dt = same_dtype("where", [a, b])
    return [TensorType(dt, broadcast_shapes(c.shape, a.shape, b.shape, op="where"))]


def _where_ref(inputs, attrs, regions):
    c, a, b = inputs
    return [np.where(c, a, b).astype(a.dtype, copy=False)]


register(OpDef("where", _where_rule, _where_ref, min_inputs=3, max_inputs=3, elementwise=True,
               doc="cond ? a : b, broadcasting all three"))


def _cast_rule(types, attrs):
    (t,) = types
    return [TensorType(attrs["dtype"], t.shape)]


def _cast_ref(inputs, attrs, regions):
    (x,) = inputs
    to: DType = attrs["dtype"]
    if to.is_int and DType.from_numpy(x.dtype).is_float:  # bf16 has numpy kind "V", not "f"
        # float -> int truncates toward zero; NaN and out-of-range values are undefined,
        # so give them a fixed value instead of a platform-dependent one.
        with np.errstate(all="ignore"):
            xf = x.astype(np.float64)
            info = np.iinfo(to.numpy)
            xf = np.where(np.isnan(xf), 0, np.clip(np.trunc(xf), info.min, info.max))
            return [xf.astype(to.numpy)]
    if to is DType.bool:
        return [x != 0]
    with np.errstate(all="ignore"):
        return [x.astype(to.numpy)]


register(OpDef("cast", _cast_rule, _cast_ref, attrs={"dtype": AttrSpec("dtype")}, elementwise=True,
               doc="convert to dtype: float->int truncates toward zero, ->bool is x != 0"))
