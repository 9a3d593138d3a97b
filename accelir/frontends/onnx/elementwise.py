"""ONNX elementwise rules: unary / binary / variadic tables, casts and bit casts,
activations and softmax.
"""

from __future__ import annotations

import math

import numpy as np

from ... import dims as D
from ...ir import DType, Value
from ..decompositions import python_mod
from .context import RULES, NodeContext, OnnxImportError, norm_axis, onnx_dtype, reshape, rule

__all__: list[str] = []


UNARY = {"Abs": "abs", "Neg": "neg", "Exp": "exp", "Log": "log", "Sqrt": "sqrt", "Sin": "sin", "Cos": "cos",
         "Tan": "tan", "Asin": "asin", "Acos": "acos", "Atan": "atan", "Sinh": "sinh", "Cosh": "cosh",
         "Asinh": "asinh", "Acosh": "acosh", "Atanh": "atanh", "Tanh": "tanh", "Sigmoid": "sigmoid", "Erf": "erf",
         "Floor": "floor", "Ceil": "ceil", "Round": "round", "Sign": "sign", "Reciprocal": "reciprocal",
         "Relu": "relu", "Not": "not", "BitwiseNot": "not", "IsNaN": "isnan"}
BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "And": "and", "Or": "or", "Xor": "xor",
          "BitwiseAnd": "and", "BitwiseOr": "or", "BitwiseXor": "xor", "Equal": "eq", "Less": "lt",
          "LessOrEqual": "le", "Greater": "gt", "GreaterOrEqual": "ge"}
VARIADIC = {"Max": "max", "Min": "min", "Sum": "add", "Mean": "add"}


def _unary(ctx: NodeContext) -> list[Value]:
    return [ctx.op(UNARY[ctx.node.op_type], ctx.input(0))]


def _binary(ctx: NodeContext) -> list[Value]:
    return [ctx.op(BINARY[ctx.node.op_type], ctx.input(0), ctx.input(1))]


def _variadic(ctx: NodeContext) -> list[Value]:
    vals = [v for v in ctx.inputs if v is not None]
    out = vals[0]
    for v in vals[1:]:
        out = ctx.op(VARIADIC[ctx.node.op_type], out, v)
    if ctx.node.op_type == "Mean" and len(vals) > 1:
        out = ctx.op("div", out, ctx.scalar(len(vals), out))
    return [out]


for _n in UNARY:
    RULES.add(_unary, _n)
for _n in BINARY:
    RULES.add(_binary, _n)
for _n in VARIADIC:
    RULES.add(_variadic, _n)


@rule("Identity")
def _identity(ctx: NodeContext):
    return [ctx.input(0)]


@rule("Pow")
def _pow(ctx: NodeContext):
    x, y = ctx.input(0), ctx.input(1)
    return [ctx.op("pow", x, ctx.cast(y, x.dtype))]


@rule("Mod")
def _mod(ctx: NodeContext):
    a, b = ctx.input(0), ctx.input(1)
    if ctx.attr("fmod", 0) or not a.dtype.is_signed:
        return [ctx.op("rem", a, b)]
    return [python_mod(ctx.b, a, b)]


@rule("BitShift")
def _bitshift(ctx: NodeContext):
    x, y = ctx.input(0), ctx.input(1)
    bits = 8 * x.dtype.itemsize
    zero = ctx.scalar(0, x)
    valid = ctx.op("and", ctx.op("ge", y, zero), ctx.op("lt", y, ctx.scalar(bits, x)))
    # shifting by 2**y: a product wraps like a left shift; a right shift is a floor division
    wide = DType.i64 if x.dtype.is_signed else x.dtype
    xw, yw = ctx.cast(x, wide), ctx.cast(ctx.op("where", valid, y, zero), wide)
    factor = ctx.op("pow", ctx.scalar(2, wide), yw)
    if ctx.attr("direction") == "LEFT":
        return [ctx.op("where", valid, ctx.cast(ctx.op("mul", xw, factor), x.dtype), zero)]
    q = ctx.op("div", xw, factor)
    if x.dtype.is_signed:
        inexact = ctx.op("and", ctx.op("ne", ctx.op("rem", xw, factor), ctx.scalar(0, wide)),
                         ctx.op("lt", xw, ctx.scalar(0, wide)))
        q = ctx.op("where", inexact, ctx.op("sub", q, ctx.scalar(1, wide)), q)
        overflow = ctx.op("where", ctx.op("lt", x, zero), ctx.scalar(-1, x), zero)
    else:
        overflow = zero
    return [ctx.op("where", valid, ctx.cast(q, x.dtype), overflow)]


@rule("IsInf")
def _isinf(ctx: NodeContext):
    x = ctx.input(0)
    out = ctx.op("isinf", x)
    pos, neg = ctx.attr("detect_positive", 1), ctx.attr("detect_negative", 1)
    if pos and not neg:
        out = ctx.op("and", out, ctx.op("gt", x, ctx.scalar(0, x)))
    elif neg and not pos:
        out = ctx.op("and", out, ctx.op("lt", x, ctx.scalar(0, x)))
    elif not pos and not neg:
        out = ctx.op("and", out, ctx.op("ne", x, x))
    return [out]


@rule("Where")
def _where(ctx: NodeContext):
    return [ctx.op("where", ctx.input(0), ctx.input(1), ctx.input(2))]


@rule("Cast")
def _cast_rule(ctx: NodeContext):
    return [ctx.cast(ctx.input(0), onnx_dtype(ctx.attr("to"), f"{ctx.label}: its 'to' type"))]


# float format -> (mantissa bits, exponent bias, the integer type of its width)
_FLOAT_BITS = {DType.f64: (52, 1023, DType.i64), DType.f32: (23, 127, DType.i32), DType.f16: (10, 15, DType.i16),
               DType.bf16: (7, 127, DType.i16)}


def _float_to_bits(ctx: NodeContext, x: Value) -> Value:
    """The IEEE bit pattern of a float as a signed int of its width, by arithmetic (exact in
    f64 and i64): sign, exponent field and mantissa field assembled; NaN gives the quiet NaN."""
    m, bias, out = _FLOAT_BITS[x.dtype]
    f, i64 = DType.f64, DType.i64
    v = ctx.cast(x, f)
    a = ctx.op("abs", v)
    two = ctx.scalar(2.0, f)
    # exponent: floor(log2 |x|), corrected by one where log rounds across a power of two
    e = ctx.op("floor", ctx.op("div", ctx.op("log", a), ctx.scalar(math.log(2), f)))
    one = ctx.scalar(1, f)
    e = ctx.op("where", ctx.op("ge", ctx.op("div", a, ctx.op("pow", two, e)), two), ctx.op("add", e, one), e)
    e = ctx.op("where", ctx.op("lt", ctx.op("div", a, ctx.op("pow", two, e)), one), ctx.op("sub", e, one), e)
    normal = ctx.op("ge", e, ctx.scalar(1 - bias, f))
    scaled = ctx.op("div", a, ctx.op("pow", two, ctx.op("where", normal, e, ctx.scalar(0, f))))
    frac = ctx.op("mul", ctx.op("sub", scaled, one), ctx.scalar(2.0 ** m, f))
    tiny = ctx.op("mul", ctx.op("mul", a, ctx.scalar(2.0 ** (bias - 1), f)), ctx.scalar(2.0 ** m, f))
    field = ctx.op("where", normal, ctx.op("add", e, ctx.scalar(bias, f)), ctx.scalar(0, f))
    mant = ctx.op("where", normal, frac, tiny)
    top = (2 * bias + 1) << m  # exponent all ones
    special = ctx.op("or", ctx.op("isinf", v), ctx.op("isnan", v))
    field = ctx.op("where", special, ctx.scalar(0, f), field)
    mant = ctx.op("where", special, ctx.scalar(0, f), mant)
    bits = ctx.op("add", ctx.op("mul", ctx.cast(field, i64), ctx.scalar(1 << m, i64)), ctx.cast(mant, i64))
    bits = ctx.op("where", ctx.op("isinf", v), ctx.scalar(top, i64), bits)
    bits = ctx.op("where", ctx.op("isnan", v), ctx.scalar(top | (1 << (m - 1)), i64), bits)
    zero = ctx.scalar(0, f)
    negative = ctx.op("or", ctx.op("lt", v, zero),
                      ctx.op("and", ctx.op("eq", v, zero), ctx.op("lt", ctx.op("div", ctx.scalar(1, f), v), zero)))
    width = 8 * out.itemsize
    # a set sign bit makes the signed pattern bits - 2**(width-1)
    low = ctx.scalar(np.iinfo(np.int64).min if width == 64 else -(1 << (width - 1)), i64)
    return ctx.cast(ctx.op("where", negative, ctx.op("add", bits, low), bits), out)


def _bits_to_float(ctx: NodeContext, x: Value, to: DType) -> Value:
    """The float whose IEEE bit pattern a signed int holds (the inverse of ``_float_to_bits``)."""
    m, bias, _ = _FLOAT_BITS[to]
    f, i64 = DType.f64, DType.i64
    width = 8 * x.dtype.itemsize
    b = ctx.cast(x, i64)
    negative = ctx.op("lt", b, ctx.scalar(0, i64))
    low = ctx.scalar(np.iinfo(np.int64).min if width == 64 else -(1 << (width - 1)), i64)
    mag = ctx.op("where", negative, ctx.op("sub", b, low), b)
    field = ctx.op("div", mag, ctx.scalar(1 << m, i64))
    mant = ctx.cast(ctx.op("rem", mag, ctx.scalar(1 << m, i64)), f)
    ef = ctx.cast(field, f)
    two = ctx.scalar(2.0, f)
    normal = ctx.op("mul", ctx.op("add", ctx.scalar(1, f), ctx.op("mul", mant, ctx.scalar(2.0 ** -m, f))),
                    ctx.op("pow", two, ctx.op("sub", ef, ctx.scalar(bias, f))))
    tiny = ctx.op("mul", mant, ctx.op("pow", two, ctx.scalar(float(1 - bias - m), f)))
    y = ctx.op("where", ctx.op("eq", field, ctx.scalar(0, i64)), tiny, normal)
    special = ctx.op("where", ctx.op("eq", mant, ctx.scalar(0, f)), ctx.scalar(np.inf, f), ctx.scalar(np.nan, f))
    y = ctx.op("where", ctx.op("eq", field, ctx.scalar(2 * bias + 1, i64)), special, y)
    return ctx.cast(ctx.op("where", negative, ctx.op("neg", y), y), to)


@rule("BitCast")
def _bitcast(ctx: NodeContext):
    x = ctx.input(0)
    to = onnx_dtype(ctx.attr("to"), f"{ctx.label}: its 'to' type")
    if x.dtype.itemsize != to.itemsize:
        raise OnnxImportError(f"{ctx.label}: BitCast from {x.dtype} to {to} changes the width")
    if x.dtype is to:
        return [x]
    if not x.dtype.is_float and not to.is_float:
        return [ctx.cast(x, to)]  # same width: the integer cast wraps, keeping the bits
    if x.dtype.is_float and not to.is_float and _FLOAT_BITS[x.dtype][2] is to:
        return [_float_to_bits(ctx, x)]
    if to.is_float and not x.dtype.is_float and _FLOAT_BITS[to][2] is x.dtype:
        return [_bits_to_float(ctx, x, to)]
    raise ctx.unsupported(f"a BitCast from {x.dtype} to {to} (float <-> signed int of its width only)")


@rule("CastLike")
def _castlike(ctx: NodeContext):
    return [ctx.cast(ctx.input(0), ctx.input(1).dtype)]


@rule("Clip")
def _clip(ctx: NodeContext):
    x = ctx.input(0)
    lo, hi = ctx.input(1), ctx.input(2)
    if ctx.opset < 11:
        lo = ctx.scalar(ctx.attr("min"), x) if "min" in ctx.attrs else None
        hi = ctx.scalar(ctx.attr("max"), x) if "max" in ctx.attrs else None
    if lo is not None:
        x = ctx.op("max", x, lo)
    if hi is not None:
        x = ctx.op("min", x, hi)
    return [x]


@rule("Gelu")
def _gelu(ctx: NodeContext):
    return [ctx.op("gelu", ctx.input(0), approximate=ctx.attr("approximate", "none"))]


@rule("Swish")
def _swish(ctx: NodeContext):
    x = ctx.input(0)
    alpha = ctx.attr("alpha", 1.0)
    if alpha == 1.0:
        return [ctx.op("silu", x)]
    return [ctx.op("mul", x, ctx.op("sigmoid", ctx.op("mul", x, ctx.scalar(alpha, x))))]


@rule("PRelu")
def _prelu(ctx: NodeContext):
    """PRelu before opset 16, which gives it a function body: the slope broadcasts to x (opset 7
    on); before opset 7 a 1-d slope of x's channel count runs along axis 1, the channel-wise
    form that torch's exporter wrote then."""
    if ctx.opset >= 16:
        return None
    x, slope = ctx.input(0), ctx.input(1)
    if ctx.opset < 7 and slope.rank == 1 and x.rank > 2 and slope.shape[0] == x.shape[1] != 1:
        slope = reshape(ctx, slope, (slope.shape[0],) + (1,) * (x.rank - 2))
    return [ctx.op("where", ctx.op("lt", x, ctx.scalar(0, x)), ctx.op("mul", x, slope), x)]


@rule("Elu", "Selu", "Celu", "LeakyRelu", "ThresholdedRelu", "HardSigmoid", "HardSwish", "Softplus", "Softsign",
      "Mish", "Shrink")
def _activation(ctx: NodeContext):
    """Activations that older opsets define without a function body."""
    x = ctx.input(0)
    op = ctx.node.op_type
    zero, one = ctx.scalar(0, x), ctx.scalar(1, x)

    def k(name: str, default: float) -> Value:
        return ctx.scalar(ctx.attr(name, default), x)
    if op in ("Elu", "Selu", "Celu"):
        alpha = ctx.attr("alpha", {"Elu": 1.0, "Celu": 1.0, "Selu": 1.67326319217681884765625}[op])
        neg = ctx.op("expm1", x if op != "Celu" else ctx.op("div", x, ctx.scalar(alpha, x)))
        y = ctx.op("where", ctx.op("gt", x, zero), x, ctx.op("mul", ctx.scalar(alpha, x), neg))
        return [ctx.op("mul", k("gamma", 1.05070102214813232421875), y) if op == "Selu" else y]
    if op == "LeakyRelu":
        return [ctx.op("where", ctx.op("lt", x, zero), ctx.op("mul", x, k("alpha", 0.01)), x)]
    if op == "ThresholdedRelu":
        return [ctx.op("where", ctx.op("gt", x, k("alpha", 1.0)), x, zero)]
    if op in ("HardSigmoid", "HardSwish"):
        alpha = ctx.attr("alpha", 0.2 if op == "HardSigmoid" else 1 / 6)
        lin = ctx.op("add", ctx.op("mul", x, ctx.scalar(alpha, x)), k("beta", 0.5))
        hs = ctx.op("min", ctx.op("max", lin, zero), one)
        return [hs if op == "HardSigmoid" else ctx.op("mul", x, hs)]
    if op == "Shrink":
        lambd, bias = k("lambd", 0.5), k("bias", 0.0)
        return [ctx.op("where", ctx.op("lt", x, ctx.op("neg", lambd)), ctx.op("add", x, bias),
                       ctx.op("where", ctx.op("gt", x, lambd), ctx.op("sub", x, bias), zero))]
    if not x.dtype.is_float:
        return None
    softplus = ctx.op("log1p", ctx.op("exp", x))
    if op == "Softplus":
        return [softplus]
    if op == "Softsign":
        return [ctx.op("div", x, ctx.op("add", one, ctx.op("abs", x)))]
    return [ctx.op("mul", x, ctx.op("tanh", softplus))]


@rule("Softmax", "LogSoftmax")
def _softmax(ctx: NodeContext):
    x = ctx.input(0)
    op = "softmax" if ctx.node.op_type == "Softmax" else "log_softmax"
    if ctx.opset >= 13:
        return [ctx.op(op, x, axis=norm_axis(ctx, ctx.attr("axis", -1), x.rank))]
    # before opset 13 the input is coerced to 2-D [prod(dims[:axis]), prod(dims[axis:])]
    ax = norm_axis(ctx, ctx.attr("axis", 1), x.rank)
    if ax == x.rank - 1:
        return [ctx.op(op, x, axis=ax)]
    flat = reshape(ctx, x, (D.dim_prod(x.shape[:ax]), D.dim_prod(x.shape[ax:])))
    return [reshape(ctx, ctx.op(op, flat, axis=1), x.shape)]


@rule("Hardmax")
def _hardmax(ctx: NodeContext):
    x = ctx.input(0)
    ax = norm_axis(ctx, ctx.attr("axis", -1 if ctx.opset >= 13 else 1), x.rank)
    if ctx.opset < 13 and ax != x.rank - 1:
        return None
    am = ctx.op("argmax", x, axis=ax, keepdims=True)
    pos = ctx.op("iota", shape=x.shape, axis=ax, dtype=DType.i64)
    return [ctx.cast(ctx.op("eq", pos, am), x.dtype)]
