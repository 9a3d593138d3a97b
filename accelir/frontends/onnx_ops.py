"""ONNX op rules: one function per ONNX op (or a table row for the simple ones) that
builds the accelir nodes for an ONNX node.

A rule gets a :class:`NodeContext` and returns the values of the node's outputs, or
``None`` to fall back on the function body that the ONNX schema defines for the op
(``Celu``, ``GroupNormalization``, the losses, ``Attention``, ...), which is then
inlined like a model-local function.  ``OUT_OF_SCOPE`` lists, in one place, the ops
the IR cannot represent and why; the importer and the conformance suite both read it.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from .. import dims as D
from ..errors import UnsupportedOpError
from ..ir import DType, Graph, TensorType, Value
from ..ops import registry
from ..ops.nn import GRID_MODE_OLD_NAMES
from ..passes.fold_constants import FoldConstants
from .onnx import (_DTYPE_TO_ONNX, MAX_FUNCTION_DEPTH, DynamicValueError, ImportScope, OnnxImportError, _call_key,
                   free_names, onnx_dtype, topo_order)

__all__ = ["convert", "evaluate_known", "RULES", "MS_RULES", "OUT_OF_SCOPE", "NodeContext"]

# ONNX op -> why the IR cannot hold it.  Everything else is in scope, implemented or not.
OUT_OF_SCOPE: dict[str, str] = {
    **{op: "string tensors" for op in ("StringConcat", "StringNormalizer", "StringSplit", "RegexFullMatch",
                                       "TfIdfVectorizer")},
    **{op: "sequence / optional types" for op in (
        "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert", "SequenceLength",
        "SequenceMap", "SplitToSequence", "ConcatFromSequence", "Optional", "OptionalGetElement",
        "OptionalHasElement")},
    **{op: "random numbers" for op in ("Bernoulli", "RandomNormal", "RandomNormalLike", "RandomUniform",
                                       "RandomUniformLike", "Multinomial")},
    **{op: "output shape depends on the data" for op in ("NonZero", "Unique", "Compress", "NonMaxSuppression")},
    **{op: "training ops" for op in ("Adagrad", "Adam", "Momentum", "Gradient")},
    "ImageDecoder": "encoded image bytes",
}

# ops that read a domain other than the standard one, and why they are left out
OUT_OF_SCOPE_DOMAINS: dict[str, str] = {
    "ai.onnx.ml": "classical ML ops (trees, label encoders)",
    "ai.onnx.preview.training": "training ops",
    "ai.onnx.preview": "preview ops",
}

_HUGE = 1 << 62  # ONNX uses INT64_MAX / INT64_MIN as open slice ends

# The most bytes one value computed at import may take: the fold_constants pass's cap, so
# the importer builds no constant the pass would refuse to fold.  A larger Range or EyeLike
# stays a run-time computation; sizes are Python ints, which do not wrap around.
IMPORT_VALUE_BYTES: int = FoldConstants.max_bytes


def fits_import_budget(shape: Sequence[D.Dim], dtype: DType) -> bool:
    """Whether a value of ``shape`` and ``dtype`` may be computed at import (symbolic: no)."""
    n = D.dim_prod(shape)
    return type(n) is int and n * dtype.itemsize <= IMPORT_VALUE_BYTES


class NodeContext:
    """What a rule sees: the node, its input values, its attributes and a builder."""

    def __init__(self, imp: Any, scope: ImportScope, node: Any, inputs: list[Value | None], label: str):
        from onnx import helper
        self.imp = imp
        self.scope = scope
        self.graph: Graph = scope.graph
        self.node = node
        self.inputs = inputs
        self.label = label
        self.opset = scope.opsets.get("", 1)
        self.attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        origin = node.name or node.op_type
        self.builder = self.graph.builder(meta={"origin": scope.origin_prefix + origin})

    def input(self, i: int) -> Value | None:
        return self.inputs[i] if i < len(self.inputs) else None

    def attr(self, name: str, default: Any = None) -> Any:
        v = self.attrs.get(name, default)
        return v.decode() if isinstance(v, bytes) else v

    def wants(self, i: int) -> bool:
        """Whether the node's output ``i`` is used (named)."""
        return i < len(self.node.output) and bool(self.node.output[i])

    def op(self, name: str, *ins: Value, **attrs: Any) -> Value:
        return self.builder.op(name, *ins, **attrs)

    def ops(self, name: str, *ins: Value, **attrs: Any) -> tuple[Value, ...]:
        return self.builder.ops(name, *ins, **attrs)

    def const(self, value: Any, dtype: DType | None = None) -> Value:
        return self.builder.const(value, dtype, name="c")

    def scalar(self, value: Any, like: Value | DType) -> Value:
        return self.builder.scalar(value, like)

    def known(self, i: int) -> np.ndarray | None:
        v = self.input(i)
        return None if v is None else self.imp.value_of(v)

    def values(self, i: int, what: str) -> np.ndarray:
        """Input ``i``'s value now; shape-like inputs must be computable at import."""
        v = self.input(i)
        arr = self.imp.value_of(v)
        if arr is None and not fits_import_budget(v.shape, v.dtype):
            raise OnnxImportError(f"its {what} (input {i}) is {v.type}, {_bytes(v.type)}: over the "
                                  f"{IMPORT_VALUE_BYTES:,} bytes a value computed at import may take")
        if arr is None:
            names = self.imp.graph_inputs_behind(v)
            raise DynamicValueError(f"its {what} (input {i}) is computed from run-time data"
                                    + (f" (graph inputs {names})" if names else "")
                                    + "; accelir needs it when building the graph: bind those inputs with "
                                      "import_onnx(..., static_inputs=...) or fix the dims in the model", names)
        return arr

    def ints(self, i: int, what: str) -> tuple[D.Dim, ...]:
        arr = self.values(i, what)
        return tuple(x if isinstance(x, str) else int(x) for x in np.asarray(arr).reshape(-1))

    def axes(self, input_index: int, attr: str = "axes") -> tuple[int, ...] | None:
        """Axes from input ``input_index`` (newer opsets) or the attribute (older ones)."""
        if self.input(input_index) is not None:
            out = self.ints(input_index, attr)
            if any(isinstance(a, str) for a in out):
                raise DynamicValueError(f"its {attr} depend on symbolic dims")
            return tuple(int(a) for a in out)
        a = self.attr(attr)
        return None if a is None else tuple(int(x) for x in a)

    def unsupported(self, why: str) -> UnsupportedOpError:
        return UnsupportedOpError(f"{self.label}: {why}", [self.node.op_type])


Rule = Callable[[NodeContext], "Sequence[Value | None] | None"]
RULES: dict[str, Rule] = {}
MS_RULES: dict[str, Rule] = {}


def rule(*names: str, table: dict[str, Rule] = RULES) -> Callable[[Rule], Rule]:
    def deco(fn: Rule) -> Rule:
        for n in names:
            table[n] = fn
        return fn
    return deco


def _norm_axis(ctx: NodeContext, axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise OnnxImportError(f"{ctx.label}: axis {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


def _static_dims(ctx: NodeContext, dims: Sequence[D.Dim], what: str, built: str) -> tuple[int, ...]:
    """``dims`` as ints, or the error naming ``what`` is symbolic and which import-time ``built`` needs it."""
    if not all(type(d) is int for d in dims):
        raise ctx.unsupported(f"symbolic {what} {list(dims)}: the {built} is built at import")
    return tuple(int(d) for d in dims)


def _cast(ctx: NodeContext, v: Value, dt: DType) -> Value:
    return v if v.dtype is dt else ctx.op("cast", v, dtype=dt)


def _reshape(ctx: NodeContext, v: Value, shape: Sequence[D.Dim]) -> Value:
    return v if tuple(v.shape) == tuple(shape) else ctx.op("reshape", v, shape=tuple(shape))


# ----- elementwise tables ------------------------------------------------------------

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
    RULES[_n] = _unary
for _n in BINARY:
    RULES[_n] = _binary
for _n in VARIADIC:
    RULES[_n] = _variadic


@rule("Identity")
def _identity(ctx: NodeContext):
    return [ctx.input(0)]


@rule("Pow")
def _pow(ctx: NodeContext):
    x, y = ctx.input(0), ctx.input(1)
    return [ctx.op("pow", x, _cast(ctx, y, x.dtype))]


@rule("Mod")
def _mod(ctx: NodeContext):
    a, b = ctx.input(0), ctx.input(1)
    r = ctx.op("rem", a, b)
    if ctx.attr("fmod", 0) or not a.dtype.is_signed:
        return [r]
    zero = ctx.scalar(0, a)
    # python modulo: the remainder takes the divisor's sign
    fix = ctx.op("and", ctx.op("ne", r, zero), ctx.op("ne", ctx.op("lt", r, zero), ctx.op("lt", b, zero)))
    return [ctx.op("where", fix, ctx.op("add", r, b), r)]


@rule("BitShift")
def _bitshift(ctx: NodeContext):
    x, y = ctx.input(0), ctx.input(1)
    bits = 8 * x.dtype.itemsize
    zero = ctx.scalar(0, x)
    valid = ctx.op("and", ctx.op("ge", y, zero), ctx.op("lt", y, ctx.scalar(bits, x)))
    # shifting by 2**y: a product wraps like a left shift; a right shift is a floor division
    wide = DType.i64 if x.dtype.is_signed else x.dtype
    xw, yw = _cast(ctx, x, wide), _cast(ctx, ctx.op("where", valid, y, zero), wide)
    factor = ctx.op("pow", ctx.scalar(2, wide), yw)
    if ctx.attr("direction") == "LEFT":
        return [ctx.op("where", valid, _cast(ctx, ctx.op("mul", xw, factor), x.dtype), zero)]
    q = ctx.op("div", xw, factor)
    if x.dtype.is_signed:
        inexact = ctx.op("and", ctx.op("ne", ctx.op("rem", xw, factor), ctx.scalar(0, wide)),
                         ctx.op("lt", xw, ctx.scalar(0, wide)))
        q = ctx.op("where", inexact, ctx.op("sub", q, ctx.scalar(1, wide)), q)
        overflow = ctx.op("where", ctx.op("lt", x, zero), ctx.scalar(-1, x), zero)
    else:
        overflow = zero
    return [ctx.op("where", valid, _cast(ctx, q, x.dtype), overflow)]


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
    return [_cast(ctx, ctx.input(0), onnx_dtype(ctx.attr("to"), f"{ctx.label}: its 'to' type"))]


# float format -> (mantissa bits, exponent bias, the integer type of its width)
_FLOAT_BITS = {DType.f64: (52, 1023, DType.i64), DType.f32: (23, 127, DType.i32), DType.f16: (10, 15, DType.i16),
               DType.bf16: (7, 127, DType.i16)}


def _float_to_bits(ctx: NodeContext, x: Value) -> Value:
    """The IEEE bit pattern of a float as a signed int of its width, by arithmetic (exact in
    f64 and i64): sign, exponent field and mantissa field assembled; NaN gives the quiet NaN."""
    m, bias, out = _FLOAT_BITS[x.dtype]
    f, i64 = DType.f64, DType.i64
    v = _cast(ctx, x, f)
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
    bits = ctx.op("add", ctx.op("mul", _cast(ctx, field, i64), ctx.scalar(1 << m, i64)), _cast(ctx, mant, i64))
    bits = ctx.op("where", ctx.op("isinf", v), ctx.scalar(top, i64), bits)
    bits = ctx.op("where", ctx.op("isnan", v), ctx.scalar(top | (1 << (m - 1)), i64), bits)
    zero = ctx.scalar(0, f)
    negative = ctx.op("or", ctx.op("lt", v, zero),
                      ctx.op("and", ctx.op("eq", v, zero), ctx.op("lt", ctx.op("div", ctx.scalar(1, f), v), zero)))
    width = 8 * out.itemsize
    # a set sign bit makes the signed pattern bits - 2**(width-1)
    low = ctx.scalar(np.iinfo(np.int64).min if width == 64 else -(1 << (width - 1)), i64)
    return _cast(ctx, ctx.op("where", negative, ctx.op("add", bits, low), bits), out)


def _bits_to_float(ctx: NodeContext, x: Value, to: DType) -> Value:
    """The float whose IEEE bit pattern a signed int holds (the inverse of ``_float_to_bits``)."""
    m, bias, _ = _FLOAT_BITS[to]
    f, i64 = DType.f64, DType.i64
    width = 8 * x.dtype.itemsize
    b = _cast(ctx, x, i64)
    negative = ctx.op("lt", b, ctx.scalar(0, i64))
    low = ctx.scalar(np.iinfo(np.int64).min if width == 64 else -(1 << (width - 1)), i64)
    mag = ctx.op("where", negative, ctx.op("sub", b, low), b)
    field = ctx.op("div", mag, ctx.scalar(1 << m, i64))
    mant = _cast(ctx, ctx.op("rem", mag, ctx.scalar(1 << m, i64)), f)
    ef = _cast(ctx, field, f)
    two = ctx.scalar(2.0, f)
    normal = ctx.op("mul", ctx.op("add", ctx.scalar(1, f), ctx.op("mul", mant, ctx.scalar(2.0 ** -m, f))),
                    ctx.op("pow", two, ctx.op("sub", ef, ctx.scalar(bias, f))))
    tiny = ctx.op("mul", mant, ctx.op("pow", two, ctx.scalar(float(1 - bias - m), f)))
    y = ctx.op("where", ctx.op("eq", field, ctx.scalar(0, i64)), tiny, normal)
    special = ctx.op("where", ctx.op("eq", mant, ctx.scalar(0, f)), ctx.scalar(np.inf, f), ctx.scalar(np.nan, f))
    y = ctx.op("where", ctx.op("eq", field, ctx.scalar(2 * bias + 1, i64)), special, y)
    return _cast(ctx, ctx.op("where", negative, ctx.op("neg", y), y), to)


@rule("BitCast")
def _bitcast(ctx: NodeContext):
    x = ctx.input(0)
    to = onnx_dtype(ctx.attr("to"), f"{ctx.label}: its 'to' type")
    if x.dtype.itemsize != to.itemsize:
        raise OnnxImportError(f"{ctx.label}: BitCast from {x.dtype} to {to} changes the width")
    if x.dtype is to:
        return [x]
    if not x.dtype.is_float and not to.is_float:
        return [_cast(ctx, x, to)]  # same width: the integer cast wraps, keeping the bits
    if x.dtype.is_float and not to.is_float and _FLOAT_BITS[x.dtype][2] is to:
        return [_float_to_bits(ctx, x)]
    if to.is_float and not x.dtype.is_float and _FLOAT_BITS[to][2] is x.dtype:
        return [_bits_to_float(ctx, x, to)]
    raise ctx.unsupported(f"a BitCast from {x.dtype} to {to} (float <-> signed int of its width only)")


@rule("CastLike")
def _castlike(ctx: NodeContext):
    return [_cast(ctx, ctx.input(0), ctx.input(1).dtype)]


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
        return [ctx.op(op, x, axis=_norm_axis(ctx, ctx.attr("axis", -1), x.rank))]
    # before opset 13 the input is coerced to 2-D [prod(dims[:axis]), prod(dims[axis:])]
    ax = _norm_axis(ctx, ctx.attr("axis", 1), x.rank)
    if ax == x.rank - 1:
        return [ctx.op(op, x, axis=ax)]
    flat = _reshape(ctx, x, (D.dim_prod(x.shape[:ax]), D.dim_prod(x.shape[ax:])))
    return [_reshape(ctx, ctx.op(op, flat, axis=1), x.shape)]


@rule("Hardmax")
def _hardmax(ctx: NodeContext):
    x = ctx.input(0)
    ax = _norm_axis(ctx, ctx.attr("axis", -1 if ctx.opset >= 13 else 1), x.rank)
    if ctx.opset < 13 and ax != x.rank - 1:
        return None
    am = ctx.op("argmax", x, axis=ax, keepdims=True)
    pos = ctx.op("iota", shape=x.shape, axis=ax, dtype=DType.i64)
    return [_cast(ctx, ctx.op("eq", pos, am), x.dtype)]


# ----- shapes ------------------------------------------------------------------------

def _dim_tensor(ctx: NodeContext, d: D.Dim) -> Value:
    """A 1-element i64 tensor holding dim ``d`` (a symbolic dim is counted at run time)."""
    if type(d) is int:
        return ctx.const(np.array([d], np.int64))
    ones = ctx.op("broadcast_to", ctx.scalar(1, DType.i64), shape=(d,))
    return ctx.op("reduce_sum", ones, axes=(0,), keepdims=True)


def _shape_value(ctx: NodeContext, dims: Sequence[D.Dim]) -> Value:
    if all(type(d) is int for d in dims):
        return ctx.const(np.array(dims, np.int64).reshape(len(dims)))
    parts = [_dim_tensor(ctx, d) for d in dims]
    out = parts[0] if len(parts) == 1 else ctx.op("concat", *parts, axis=0)
    ctx.imp.known[id(out)] = np.array(list(dims), dtype=object)
    return out


@rule("Shape")
def _shape(ctx: NodeContext):
    shape = ctx.input(0).shape
    rank = len(shape)
    start = ctx.attr("start", 0)
    end = ctx.attr("end", rank)
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = min(max(end + rank if end < 0 else end, 0), rank)
    return [_shape_value(ctx, shape[start:end])]


@rule("Size")
def _size(ctx: NodeContext):
    n = D.dim_prod(ctx.input(0).shape)
    if type(n) is int:
        return [ctx.const(np.array(n, np.int64))]
    out = ctx.op("reshape", _dim_tensor(ctx, n), shape=())
    ctx.imp.known[id(out)] = np.array(n, dtype=object)
    return [out]


@rule("Reshape")
def _reshape_rule(ctx: NodeContext):
    x = ctx.input(0)
    target = list(ctx.ints(1, "shape"))
    allowzero = ctx.attr("allowzero", 0)
    for i, d in enumerate(target):
        if d == 0 and not allowzero:
            if i >= x.rank:
                raise OnnxImportError(f"{ctx.label}: shape entry {i} is 0 (copy) but the input has rank {x.rank}")
            target[i] = x.shape[i]
    if target.count(-1) > 1:
        raise OnnxImportError(f"{ctx.label}: shape {target} has more than one -1")
    if -1 in target:
        k = target.index(-1)
        # cancel the dims both sides share, so symbolic ones need no division
        have = list(x.shape)
        rest = []
        for i, d in enumerate(target):
            if i == k:
                continue
            if d in have:
                have.remove(d)
            else:
                rest.append(d)
        total, rest_n = D.dim_prod(have), D.dim_prod(rest)
        if type(rest_n) is not int:
            raise ctx.unsupported(f"inferring the -1 of shape {target} from {x.type} needs a symbolic division")
        if type(total) is int and (rest_n == 0 or total % rest_n):
            raise OnnxImportError(f"{ctx.label}: cannot reshape {x.type} to {target}")
        target[k] = D.dim_floordiv(total, rest_n)
    return [_reshape(ctx, x, target)]


@rule("Flatten")
def _flatten(ctx: NodeContext):
    x = ctx.input(0)
    ax = ctx.attr("axis", 1)
    ax = ax + x.rank if ax < 0 else ax
    return [_reshape(ctx, x, (D.dim_prod(x.shape[:ax]), D.dim_prod(x.shape[ax:])))]


@rule("Squeeze")
def _squeeze(ctx: NodeContext):
    x = ctx.input(0)
    axes = ctx.axes(1)
    if axes is None:
        axes = tuple(i for i, d in enumerate(x.shape) if d == 1)
    return [ctx.op("squeeze", x, axes=tuple(_norm_axis(ctx, a, x.rank) for a in axes)) if axes else x]


@rule("Unsqueeze")
def _unsqueeze(ctx: NodeContext):
    axes = ctx.axes(1)
    return [ctx.op("unsqueeze", ctx.input(0), axes=axes)]


@rule("Transpose")
def _transpose(ctx: NodeContext):
    x = ctx.input(0)
    perm = tuple(ctx.attr("perm", range(x.rank - 1, -1, -1)))
    return [x if perm == tuple(range(x.rank)) else ctx.op("transpose", x, perm=perm)]


@rule("Expand")
def _expand(ctx: NodeContext):
    x = ctx.input(0)
    shape = ctx.ints(1, "shape")
    rank = max(x.rank, len(shape))
    xs = (1,) * (rank - x.rank) + tuple(x.shape)
    ts = (1,) * (rank - len(shape)) + tuple(shape)
    out = tuple(b if a == 1 else a for a, b in zip(xs, ts))
    return [x if out == tuple(x.shape) else ctx.op("broadcast_to", x, shape=out)]


@rule("Concat")
def _concat(ctx: NodeContext):
    vals = [v for v in ctx.inputs if v is not None]
    ax = _norm_axis(ctx, ctx.attr("axis"), vals[0].rank)
    # ONNX allows empty operands; the IR's concat does too, but they add nothing
    nonempty = [v for v in vals if v.shape[ax] != 0] or vals[:1]
    return [nonempty[0] if len(nonempty) == 1 else ctx.op("concat", *nonempty, axis=ax)]


def _slice_axis(ctx: NodeContext, x: Value, ax: int, start: D.Dim, stop: D.Dim, step: int) -> Value:
    """x[start:stop:step] on one axis with ONNX's clamping (negative steps flip the axis)."""
    dim = x.shape[ax]

    def norm(v: D.Dim, lo: int, hi_off: int) -> D.Dim:
        if isinstance(v, str):
            return v
        if v >= _HUGE // 4:
            return D.dim_add(dim, hi_off)
        if v <= -_HUGE // 4:
            return lo
        if v < 0:
            v = D.dim_add(dim, v)
        if type(v) is int and type(dim) is int:
            v = min(max(v, lo), dim + hi_off)
        elif type(v) is int:
            v = max(v, lo)
        return v

    if step == 0:
        raise OnnxImportError(f"{ctx.label}: slice step 0")
    if step > 0:
        s, e = norm(start, 0, 0), norm(stop, 0, 0)
        if type(s) is int and type(e) is int and e < s:
            e = s
        if s == 0 and e == dim and step == 1:
            return x
        return ctx.op("slice", x, starts=(s,), stops=(e,), steps=(step,), axes=(ax,))
    if type(dim) is not int:
        raise ctx.unsupported("negative slice steps need a static dim")
    s, e = norm(start, 0, -1), norm(stop, -1, -1)
    # in flipped coordinates index i becomes dim - 1 - i
    fs, fe = dim - 1 - s, dim - 1 - e
    fe = max(fe, fs)
    flipped = ctx.op("reverse", x, axes=(ax,))
    if fs == 0 and fe == dim and step == -1:
        return flipped
    return ctx.op("slice", flipped, starts=(fs,), stops=(fe,), steps=(-step,), axes=(ax,))


@rule("Slice")
def _slice(ctx: NodeContext):
    x = ctx.input(0)
    if ctx.opset < 10:
        starts, ends = ctx.attr("starts"), ctx.attr("ends")
        axes = ctx.attr("axes", range(len(starts)))
        steps = [1] * len(starts)
    else:
        starts, ends = ctx.ints(1, "starts"), ctx.ints(2, "ends")
        axes = ctx.axes(3) or tuple(range(len(starts)))
        steps = ctx.ints(4, "steps") if ctx.input(4) is not None else (1,) * len(starts)
    if any(isinstance(s, str) for s in steps):
        raise DynamicValueError("its steps depend on symbolic dims")
    for st, en, ax, step in zip(starts, ends, axes, steps):
        x = _slice_axis(ctx, x, _norm_axis(ctx, int(ax), x.rank), st, en, int(step))
    return [x]


@rule("Split")
def _split(ctx: NodeContext):
    x = ctx.input(0)
    ax = _norm_axis(ctx, ctx.attr("axis", 0), x.rank)
    n_out = len(ctx.node.output)
    if ctx.input(1) is not None:
        sizes = list(ctx.ints(1, "split"))
    elif ctx.attr("split") is not None:
        sizes = list(ctx.attr("split"))
    else:
        dim = x.shape[ax]
        n = ctx.attr("num_outputs", n_out)
        if type(dim) is not int:
            if n == 1:
                return [x]
            raise ctx.unsupported("an even split of a symbolic dim")
        chunk = -(-dim // n)
        sizes = [min(chunk, dim - i * chunk) for i in range(n)]
    outs, start = [], 0
    for size in sizes:
        stop = D.dim_add(start, size)
        outs.append(ctx.op("slice", x, starts=(start,), stops=(stop,), axes=(ax,)))
        start = stop
    return outs


@rule("Tile")
def _tile(ctx: NodeContext):
    x = ctx.input(0)
    reps = ctx.ints(1, "repeats")
    if all(r == 1 for r in reps):
        return [x]
    # [d0, d1] -> [1, d0, 1, d1] -> broadcast [r0, d0, r1, d1] -> [r0*d0, r1*d1]
    inter = tuple(v for d in x.shape for v in (1, d))
    big = tuple(v for r, d in zip(reps, x.shape) for v in (r, d))
    b = ctx.op("broadcast_to", _reshape(ctx, x, inter), shape=big)
    return [_reshape(ctx, b, tuple(D.dim_mul(r, d) for r, d in zip(reps, x.shape)))]


@rule("ConstantOfShape")
def _constant_of_shape(ctx: NodeContext):
    shape = ctx.ints(0, "shape")
    t = ctx.attrs.get("value")
    fill = ctx.imp.array(t, f"{ctx.label}: its value") if t is not None else np.zeros(1, np.float32)
    return [ctx.op("broadcast_to", ctx.const(fill.reshape(())), shape=shape)]


@rule("Constant")
def _constant(ctx: NodeContext):
    a = ctx.node.attribute[0] if len(ctx.node.attribute) == 1 else None
    if a is None:
        raise OnnxImportError(f"{ctx.label}: a Constant needs exactly one value attribute")
    scalars = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64, "value_ints": np.int64}
    if a.name == "value":
        return [ctx.const(ctx.imp.array(a.t, f"{ctx.label}: its value"))]
    if a.name in scalars:
        return [ctx.const(np.asarray(ctx.attrs[a.name], dtype=scalars[a.name]))]
    raise ctx.unsupported(f"constant attribute {a.name!r} (strings and sparse tensors are out of scope)")


def _bytes(t: TensorType) -> str:
    n = D.dim_prod(t.shape)
    return f"{n * t.dtype.itemsize:,} bytes" if type(n) is int else "a symbolic size"


def _range_length(ctx: NodeContext, start: Any, limit: Any, delta: Any) -> int:
    """ONNX's max(ceil((limit - start) / delta), 0), exact for integers."""
    if delta == 0:
        raise OnnxImportError(f"{ctx.label}: its delta is 0")
    if all(isinstance(v, (int, np.integer)) for v in (start, limit, delta)):
        return max(-((int(start) - int(limit)) // int(delta)), 0)
    n = (float(limit) - float(start)) / float(delta)
    if not math.isfinite(n):
        raise OnnxImportError(f"{ctx.label}: start {start}, limit {limit} and delta {delta} give no finite length")
    return max(math.ceil(n), 0)


@rule("Range")
def _range(ctx: NodeContext):
    # the output length is (limit - start) / delta: the IR needs it when building the graph
    start, limit, delta = (ctx.values(i, what) for i, what in enumerate(("start", "limit", "delta")))
    dt = ctx.input(0).dtype
    if start.dtype == object or delta.dtype == object:
        raise DynamicValueError("its start and delta must not depend on symbolic dims")
    s, d = start.item(), delta.item()
    if limit.dtype != object:
        n: D.Dim = _range_length(ctx, s, limit.item(), d)
        if fits_import_budget((n,), dt):
            return [ctx.const(np.arange(s, limit.item(), d).astype(dt.numpy))]
    elif d <= 0:
        raise ctx.unsupported("a symbolic limit with a non-positive delta")
    else:
        s, d = int(s), int(d)
        n = D.dim_floordiv(D.dim_add(D.dim_sub(limit.item(), s), d - 1), d)
    # a symbolic or large range is computed at run time: start + i * delta
    r = ctx.op("iota", shape=(n,), axis=0, dtype=dt)
    if d != 1:
        r = ctx.op("mul", r, ctx.scalar(d, dt))
    return [ctx.op("add", r, ctx.scalar(s, dt)) if s else r]


@rule("EyeLike")
def _eyelike(ctx: NodeContext):
    x = ctx.input(0)
    dt = onnx_dtype(ctx.attr("dtype"), ctx.label) if "dtype" in ctx.attrs else x.dtype
    k = int(ctx.attr("k", 0))
    if x.rank != 2:
        raise OnnxImportError(f"{ctx.label}: EyeLike takes a 2-D input, got {x.type}")
    if fits_import_budget(x.shape, dt):
        return [ctx.const(np.eye(*x.shape, k=k, dtype=dt.numpy))]
    # a symbolic or large identity is computed at run time: 1 where col - row == k
    rows = ctx.op("iota", shape=tuple(x.shape), axis=0, dtype=DType.i64)
    cols = ctx.op("iota", shape=tuple(x.shape), axis=1, dtype=DType.i64)
    return [_cast(ctx, ctx.op("eq", ctx.op("sub", cols, rows), ctx.scalar(k, DType.i64)), dt)]


@rule("Trilu")
def _trilu(ctx: NodeContext):
    x = ctx.input(0)
    k = int(ctx.values(1, "k").item()) if ctx.input(1) is not None else 0
    shape2 = tuple(x.shape[-2:])
    rows = ctx.op("iota", shape=shape2, axis=0, dtype=DType.i64)
    cols = ctx.op("iota", shape=shape2, axis=1, dtype=DType.i64)
    diff = ctx.op("sub", cols, rows)
    keep = ctx.op("ge" if ctx.attr("upper", 1) else "le", diff, ctx.scalar(k, DType.i64))
    return [ctx.op("where", keep, x, ctx.scalar(0, x))]


@rule("OneHot")
def _onehot(ctx: NodeContext):
    idx, values = ctx.input(0), ctx.input(2)
    depth = ctx.values(1, "depth").item()
    depth = int(depth)
    rank = idx.rank + 1
    ax = _norm_axis(ctx, ctx.attr("axis", -1), rank)
    i64 = _cast(ctx, idx, DType.i64) if idx.dtype.is_int else _cast(ctx, idx, DType.i64)
    d = ctx.scalar(depth, DType.i64)
    i64 = ctx.op("where", ctx.op("lt", i64, ctx.scalar(0, DType.i64)), ctx.op("add", i64, d), i64)
    pos = ctx.op("iota", shape=tuple(depth if i == ax else 1 for i in range(rank)), axis=ax, dtype=DType.i64)
    hit = ctx.op("eq", ctx.op("unsqueeze", i64, axes=(ax,)), pos)
    off = ctx.op("reshape", ctx.op("slice", values, starts=(0,), stops=(1,), axes=(0,)), shape=())
    on = ctx.op("reshape", ctx.op("slice", values, starts=(1,), stops=(2,), axes=(0,)), shape=())
    return [ctx.op("where", hit, on, off)]


@rule("DepthToSpace", "SpaceToDepth")
def _depth_space(ctx: NodeContext):
    x = ctx.input(0)
    b = ctx.attr("blocksize")
    n, c, h, w = x.shape
    if ctx.node.op_type == "SpaceToDepth":
        y = _reshape(ctx, x, (n, c, D.dim_floordiv(h, b), b, D.dim_floordiv(w, b), b))
        perm = (0, 3, 5, 1, 2, 4) if ctx.attr("mode", "DCR") == "DCR" else (0, 1, 3, 5, 2, 4)
        y = ctx.op("transpose", y, perm=perm)
        return [_reshape(ctx, y, (n, D.dim_mul(c, b * b), D.dim_floordiv(h, b), D.dim_floordiv(w, b)))]
    cb = D.dim_floordiv(c, b * b)
    if ctx.attr("mode", "DCR") == "DCR":
        y = ctx.op("transpose", _reshape(ctx, x, (n, b, b, cb, h, w)), perm=(0, 3, 4, 1, 5, 2))
    else:
        y = ctx.op("transpose", _reshape(ctx, x, (n, cb, b, b, h, w)), perm=(0, 1, 4, 2, 5, 3))
    return [_reshape(ctx, y, (n, cb, D.dim_mul(h, b), D.dim_mul(w, b)))]


@rule("Pad")
def _pad(ctx: NodeContext):
    x = ctx.input(0)
    mode = ctx.attr("mode", "constant")
    if ctx.opset < 11:
        pads, value = list(ctx.attr("pads")), ctx.attr("value", 0.0)
        axes = tuple(range(x.rank))
    else:
        pads = list(ctx.ints(1, "pads"))
        value = ctx.values(2, "constant_value").item() if ctx.input(2) is not None else 0
        axes = ctx.axes(3) or tuple(range(x.rank))
    if any(isinstance(p, str) for p in pads):
        raise DynamicValueError("its pads depend on symbolic dims")
    axes = [_norm_axis(ctx, a, x.rank) for a in axes]
    n = len(axes)
    per = [(0, 0)] * x.rank
    for k, a in enumerate(axes):
        per[a] = (int(pads[k]), int(pads[k + n]))
    # negative pads crop
    for a, (lo, hi) in enumerate(per):
        if lo < 0 or hi < 0:
            stop = D.dim_add(x.shape[a], min(hi, 0))
            x = ctx.op("slice", x, starts=(max(-lo, 0),), stops=(stop,), axes=(a,))
    per = [(max(lo, 0), max(hi, 0)) for lo, hi in per]
    if all(p == (0, 0) for p in per):
        return [x]
    if mode == "wrap":
        for a, (lo, hi) in enumerate(per):
            parts = []
            dim = x.shape[a]
            if lo:
                parts.append(ctx.op("slice", x, starts=(D.dim_sub(dim, lo),), stops=(dim,), axes=(a,)))
            parts.append(x)
            if hi:
                parts.append(ctx.op("slice", x, starts=(0,), stops=(hi,), axes=(a,)))
            if len(parts) > 1:
                x = ctx.op("concat", *parts, axis=a)
        return [x]
    if mode not in ("constant", "reflect", "edge"):
        raise ctx.unsupported(f"pad mode {mode!r}")
    if isinstance(value, (bool, np.bool_)):
        value = float(value)
    return [ctx.op("pad", x, pads=tuple(per), mode=mode, value=float(value))]


# ----- resize ------------------------------------------------------------------------

def _cubic_kernel(a: float) -> Callable[[np.ndarray], np.ndarray]:
    def k(t: np.ndarray) -> np.ndarray:
        t = np.abs(t)
        near = ((a + 2) * t - (a + 3)) * t * t + 1
        far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
        return np.where(t <= 1, near, np.where(t < 2, far, 0.0))
    return k


def _source_coords(mode: str, out: int, size: int, scale: float, roi: tuple[float, float]) -> np.ndarray:
    """Where each output index samples the input (ONNX Resize coordinate_transformation_mode)."""
    i = np.arange(out, dtype=np.float64)
    out_f = scale * size  # ONNX's formulas use the unrounded output width
    if mode == "align_corners":
        return np.zeros(out) if out_f == 1 else i * (size - 1) / (out_f - 1)
    if mode == "asymmetric":
        return i / scale
    if mode == "tf_crop_and_resize":
        lo, hi = roi
        if out_f == 1:
            return np.full(out, (hi - lo) * (size - 1) / 2 + lo * (size - 1))
        return i * (hi - lo) * (size - 1) / (out_f - 1) + lo * (size - 1)
    if mode == "pytorch_half_pixel":
        return np.full(out, -0.5) if out_f == 1 else (i + 0.5) / scale - 0.5
    if mode == "half_pixel":
        return (i + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        offset = size / 2 * (1 - out / (scale * size))
        return offset + (i + 0.5) / scale - 0.5
    raise ValueError(f"unknown coordinate_transformation_mode {mode!r}")


def _nearest_index(x: np.ndarray, mode: str) -> np.ndarray:
    if mode == "round_prefer_floor":
        return np.ceil(x - 0.5)
    if mode == "round_prefer_ceil":
        return np.floor(x + 0.5)
    if mode == "floor":
        return np.floor(x)
    if mode == "ceil":
        return np.ceil(x)
    raise ValueError(f"unknown nearest_mode {mode!r}")


def resize_taps(ctx: NodeContext, size: int, out: int, scale: float, attrs: dict[str, Any],
                roi: tuple[float, float], itemsize: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One axis's interpolation as taps: for each output, the input indices it reads
    ([out, taps]) and their weights, and the mask of outputs that take the extrapolation
    value (tf_crop_and_resize outside the input).  Taps, not an [out, size] matrix, so the
    tables grow with the output and the kernel's reach only; they must fit the import budget."""
    if attrs["mode"] == "nearest":
        kernel, support, s, offsets = None, 0.5, 1.0, [0]
    else:
        if attrs["mode"] == "linear":
            kernel, support = (lambda t: np.clip(1 - np.abs(t), 0, None)), 1
        else:
            kernel, support = _cubic_kernel(attrs["cubic_a"]), 2
        s = min(scale, 1.0) if attrs["antialias"] else 1.0
        reach = int(math.ceil(support / s)) + 1
        offsets = range(-reach, reach + 1)
    # a row has at most ceil(2 * support / s) + 1 taps of nonzero weight: check before building them
    need = out * (int(math.ceil(2 * support / s)) + 1) * (8 + itemsize)
    if need > IMPORT_VALUE_BYTES:
        raise OnnxImportError(f"{ctx.label}: resizing an axis of {size} to {out} needs interpolation tables of "
                              f"about {need:,} bytes, over the {IMPORT_VALUE_BYTES:,} bytes a table built at "
                              "import may take")
    x = _source_coords(attrs["coord"], out, size, scale, roi)
    outside = (x < 0) | (x > size - 1) if attrs["coord"] == "tf_crop_and_resize" else np.zeros(out, bool)
    if kernel is None:
        idx = np.clip(_nearest_index(x, attrs["nearest_mode"]), 0, size - 1).astype(np.int64)[:, None]
        wts = np.ones((out, 1))
    else:
        cols, weights = [], []
        for off in offsets:
            j = np.floor(x).astype(np.int64) + off
            wt = kernel((j - x) * s)
            if attrs["exclude_outside"]:
                wt = np.where((j >= 0) & (j < size), wt, 0.0)
            if np.any(wt != 0):  # taps no output uses are left out
                cols.append(np.clip(j, 0, size - 1))
                weights.append(wt)
        idx = np.stack(cols, 1) if cols else np.zeros((out, 1), np.int64)
        wts = np.stack(weights, 1) if weights else np.zeros((out, 1))
        if attrs["antialias"] or attrs["exclude_outside"]:
            total = wts.sum(1, keepdims=True)
            wts = wts / np.where(total == 0, 1, total)
    wts[outside] = 0.0
    return idx, wts, outside


@rule("Resize", "Upsample")
def _resize(ctx: NodeContext):
    x = ctx.input(0)
    upsample = ctx.node.op_type == "Upsample"
    attrs = {"mode": ctx.attr("mode", "nearest"), "nearest_mode": ctx.attr("nearest_mode", "round_prefer_floor"),
             "coord": ctx.attr("coordinate_transformation_mode", "half_pixel"),
             "cubic_a": ctx.attr("cubic_coeff_a", -0.75), "antialias": bool(ctx.attr("antialias", 0)),
             "exclude_outside": bool(ctx.attr("exclude_outside", 0))}
    if attrs["mode"] == "bilinear":
        attrs["mode"] = "linear"
    if upsample or ctx.opset < 11:
        # Upsample and Resize-10: (X, scales), asymmetric coordinates, nearest rounds down
        attrs.update(coord="asymmetric", nearest_mode="floor")
        scales_in, sizes_in, roi_in = (1 if ctx.opset >= 9 else None), None, None
    else:
        roi_in, scales_in, sizes_in = 1, 2, 3
    rank = x.rank
    axes = [_norm_axis(ctx, a, rank) for a in ctx.attr("axes", range(rank))]
    if not all(type(x.shape[a]) is int for a in axes):
        raise ctx.unsupported("resizing a symbolic dim")
    in_sizes = [x.shape[a] for a in axes]
    roi = [(0.0, 1.0)] * len(axes)
    if roi_in is not None and ctx.input(roi_in) is not None and attrs["coord"] == "tf_crop_and_resize":
        r = [float(v) for v in ctx.values(roi_in, "roi").reshape(-1)]
        k = len(r) // 2
        roi = [(r[i], r[i + k]) for i in (axes if k == rank else range(k))]
    sizes = ctx.values(sizes_in, "sizes") if sizes_in is not None and ctx.input(sizes_in) is not None else None
    if sizes is not None and sizes.size:
        sizes = [int(v) for v in sizes.reshape(-1)]
        sizes = [sizes[a] for a in axes] if len(sizes) == rank and len(axes) != rank else sizes
        ratios = [o / i for o, i in zip(sizes, in_sizes)]
        policy = ctx.attr("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            r = min(ratios) if policy == "not_larger" else max(ratios)
            ratios = [r] * len(axes)
            sizes = [int(math.floor(r * i + 0.5)) for i in in_sizes]
        scales = ratios
    else:
        raw = ctx.values(scales_in, "scales") if scales_in is not None else np.asarray(ctx.attr("scales"))
        scales = [float(v) for v in np.asarray(raw).reshape(-1)]
        scales = [scales[a] for a in axes] if len(scales) == rank and len(axes) != rank else scales
        sizes = [int(math.floor(i * (hi - lo) * sc)) for i, sc, (lo, hi) in zip(in_sizes, scales, roi)]
    y = x
    extrap = ctx.attr("extrapolation_value", 0.0)
    for a, size, out, sc, rr in zip(axes, in_sizes, sizes, scales, roi):
        if size == out and sc == 1.0 and attrs["coord"] != "tf_crop_and_resize":
            continue
        idx, wts, outside = resize_taps(ctx, size, out, sc, attrs, rr, x.dtype.itemsize)
        if idx.shape[1] == 1 and np.all(wts[~outside] == 1) and not outside.any():
            y = ctx.op("gather", y, ctx.const(idx[:, 0]), axis=a)
            continue
        if not x.dtype.is_float:
            raise ctx.unsupported(f"{attrs['mode']} resize of {x.dtype}")
        # y[..., i, ...] = sum over taps t of wts[i, t] * y[..., idx[i, t], ...]
        taps = idx.shape[1]
        g = ctx.op("gather", y, ctx.const(idx.reshape(-1)), axis=a)
        g = _reshape(ctx, g, tuple(y.shape[:a]) + (out, taps) + tuple(y.shape[a + 1:]))
        w = ctx.const(wts.astype(x.dtype.numpy).reshape((out, taps) + (1,) * (rank - a - 1)))
        y = ctx.op("reduce_sum", ctx.op("mul", g, w), axes=(a + 1,), keepdims=False)
        if outside.any():
            mask = ctx.const((outside * extrap).astype(x.dtype.numpy).reshape(
                tuple(out if i == a else 1 for i in range(rank))))
            y = ctx.op("add", y, mask)
    return [y]


# ----- sampling: GridSample / RoiAlign / DeformConv ---------------------------------------

# GridSample-16 names its modes bilinear / bicubic; GridSample-20 renamed them linear / cubic
_GRID_SAMPLE_MODES = {16: {old: mode for mode, old in GRID_MODE_OLD_NAMES.items()},
                      20: {mode: mode for mode in GRID_MODE_OLD_NAMES}}


def _choice(ctx: NodeContext, name: str, default: str, allowed: Sequence[str]) -> str:
    value = ctx.attr(name, default)
    if value not in allowed:
        raise ctx.unsupported(f"{name}={value!r} is not one of {', '.join(allowed)} (opset {ctx.opset})")
    return value


def _float_input(ctx: NodeContext, v: Value, what: str) -> None:
    if not v.dtype.is_float:
        raise ctx.unsupported(f"{what} of dtype {v.dtype}: accelir samples float tensors only; cast it first")


@rule("GridSample")
def _grid_sample(ctx: NodeContext):
    x, grid = ctx.input(0), ctx.input(1)
    _float_input(ctx, x, "X")
    names = _GRID_SAMPLE_MODES[20 if ctx.opset >= 20 else 16]
    mode = names[_choice(ctx, "mode", "linear" if ctx.opset >= 20 else "bilinear", tuple(names))]
    pad = _choice(ctx, "padding_mode", "zeros", registry.get("grid_sample").attrs["padding_mode"].choices)
    # X and grid may differ in dtype: sample in the wider one, return X's
    dt = grid.dtype if grid.dtype.numpy.itemsize > x.dtype.numpy.itemsize else x.dtype
    y = ctx.op("grid_sample", _cast(ctx, x, dt), _cast(ctx, grid, dt), mode=mode, padding_mode=pad,
               align_corners=bool(ctx.attr("align_corners", 0)))
    return [_cast(ctx, y, x.dtype)]


@rule("RoiAlign")
def _roi_align(ctx: NodeContext):
    x, rois, batch = ctx.input(0), ctx.input(1), ctx.input(2)
    _float_input(ctx, x, "X")
    # RoiAlign-10 has no coordinate_transformation_mode and samples as output_half_pixel does
    coords = _choice(ctx, "coordinate_transformation_mode", "half_pixel" if ctx.opset >= 16 else "output_half_pixel",
                     ("half_pixel", "output_half_pixel") if ctx.opset >= 16 else ("output_half_pixel",))
    attrs = {k: ctx.attr(k, 1) for k in ("output_height", "output_width")}
    attrs["sampling_ratio"] = ctx.attr("sampling_ratio", 0)
    if attrs["output_height"] < 1 or attrs["output_width"] < 1 or attrs["sampling_ratio"] < 0:
        raise ctx.unsupported(f"output_height / output_width must be >= 1 and sampling_ratio >= 0, got {attrs}")
    return [ctx.op("roi_align", x, _cast(ctx, rois, x.dtype), batch, mode=_choice(ctx, "mode", "avg", registry.get("roi_align").attrs["mode"].choices),
                   spatial_scale=float(ctx.attr("spatial_scale", 1.0)), coordinate_transformation_mode=coords,
                   **attrs)]


@rule("DeformConv")
def _deform_conv(ctx: NodeContext):
    x, w, offset, bias, mask = (ctx.input(i) for i in range(5))
    _float_input(ctx, x, "X")
    if x.rank != 4:
        raise ctx.unsupported(f"DeformConv over {x.rank - 2} spatial dims: only 2-d (X [N, C, H, W]) is supported")
    kernel = tuple(w.shape[2:])
    if tuple(ctx.attr("kernel_shape", kernel)) != kernel:
        raise ctx.unsupported(f"kernel_shape {list(ctx.attr('kernel_shape'))} differs from W's {list(kernel)}")
    if mask is not None and bias is None:  # the IR's inputs are positional: a mask comes after a bias
        if type(w.shape[0]) is not int:
            raise ctx.unsupported("a mask without a bias needs a static output channel count")
        bias = ctx.op("broadcast_to", ctx.scalar(0, x), shape=(w.shape[0],))
    ins = [v for v in (x, w, offset, bias, mask) if v is not None]
    return [ctx.op("deform_conv", *ins, groups=ctx.attr("group", 1), offset_groups=ctx.attr("offset_group", 1),
                   **_conv_attrs(ctx, x, kernel))]


# ----- gather / scatter --------------------------------------------------------------

@rule("Gather")
def _gather(ctx: NodeContext):
    return [ctx.op("gather", ctx.input(0), ctx.input(1), axis=_norm_axis(ctx, ctx.attr("axis", 0), ctx.input(0).rank))]


@rule("GatherElements")
def _gather_elements(ctx: NodeContext):
    return [ctx.op("take_along_axis", ctx.input(0), ctx.input(1), axis=ctx.attr("axis", 0))]


@rule("GatherND")
def _gather_nd(ctx: NodeContext):
    return [ctx.op("gather_nd", ctx.input(0), ctx.input(1), batch_dims=ctx.attr("batch_dims", 0))]


@rule("ScatterElements", "Scatter")
def _scatter_elements(ctx: NodeContext):
    return [ctx.op("scatter_elements", ctx.input(0), ctx.input(1), ctx.input(2), axis=ctx.attr("axis", 0),
                   reduction=ctx.attr("reduction", "none"))]


@rule("ScatterND")
def _scatter_nd(ctx: NodeContext):
    return [ctx.op("scatter_nd", ctx.input(0), ctx.input(1), ctx.input(2), reduction=ctx.attr("reduction", "none"))]


# ----- reductions and scans ----------------------------------------------------------

REDUCE = {"ReduceSum": "reduce_sum", "ReduceMean": "reduce_mean", "ReduceMax": "reduce_max",
          "ReduceMin": "reduce_min", "ReduceProd": "reduce_prod"}
_BOOL_REDUCE = {"reduce_max": "reduce_any", "reduce_min": "reduce_all"}


def _reduce_axes(ctx: NodeContext, x: Value) -> tuple[int, ...] | None:
    """The reduced axes, or None for 'no reduction' (noop_with_empty_axes)."""
    axes = ctx.axes(1) if ctx.input(1) is not None else (
        tuple(ctx.attr("axes")) if ctx.attr("axes") is not None else None)
    if not axes:
        if ctx.attr("noop_with_empty_axes", 0):
            return None
        return tuple(range(x.rank))
    return tuple(_norm_axis(ctx, a, x.rank) for a in axes)


@rule(*REDUCE)
def _reduce(ctx: NodeContext):
    x = ctx.input(0)
    axes = _reduce_axes(ctx, x)
    if axes is None:
        return [x]
    op = REDUCE[ctx.node.op_type]
    if op == "reduce_mean" and not x.dtype.is_float:
        return None
    keepdims = bool(ctx.attr("keepdims", 1))
    if op in ("reduce_max", "reduce_min") and any(x.shape[a] == 0 for a in axes):
        # the identity of max / min over nothing: -inf / +inf (the dtype's extremes for ints, False / True)
        shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape)) if keepdims else \
            tuple(d for i, d in enumerate(x.shape) if i not in axes)
        lowest = op == "reduce_max"
        if x.dtype is DType.bool:
            ident = not lowest
        elif x.dtype.is_float:
            ident = -np.inf if lowest else np.inf
        else:
            info = np.iinfo(x.dtype.numpy)
            ident = info.min if lowest else info.max
        return [ctx.op("broadcast_to", ctx.scalar(ident, x), shape=shape)]
    if x.dtype is DType.bool:
        op = _BOOL_REDUCE.get(op, op)
    return [ctx.op(op, x, axes=axes, keepdims=keepdims)]


@rule("ArgMax", "ArgMin")
def _arg(ctx: NodeContext):
    return [ctx.op(ctx.node.op_type.lower(), ctx.input(0), axis=ctx.attr("axis", 0),
                   keepdims=bool(ctx.attr("keepdims", 1)), select_last_index=bool(ctx.attr("select_last_index", 0)))]


@rule("TopK")
def _topk(ctx: NodeContext):
    x = ctx.input(0)
    k = ctx.ints(1, "k")[0] if ctx.opset >= 10 else ctx.attr("k")
    if isinstance(k, str):
        raise DynamicValueError("its k depends on symbolic dims")
    return list(ctx.ops("topk", x, k=int(k), axis=ctx.attr("axis", -1), largest=bool(ctx.attr("largest", 1))))


@rule("CumSum", "CumProd")
def _cum(ctx: NodeContext):
    axis = ctx.ints(1, "axis")[0]
    op = "cumsum" if ctx.node.op_type == "CumSum" else "cumprod"
    return [ctx.op(op, ctx.input(0), axis=int(axis), exclusive=bool(ctx.attr("exclusive", 0)),
                   reverse=bool(ctx.attr("reverse", 0)))]


# ----- contractions, convolution, pooling --------------------------------------------

@rule("MatMul")
def _matmul(ctx: NodeContext):
    return [ctx.op("matmul", ctx.input(0), ctx.input(1))]


@rule("Gemm")
def _gemm(ctx: NodeContext):
    a, b, c = ctx.input(0), ctx.input(1), ctx.input(2)
    if ctx.attr("transA", 0):
        a = ctx.op("transpose", a, perm=(1, 0))
    if ctx.attr("transB", 0):
        b = ctx.op("transpose", b, perm=(1, 0))
    y = ctx.op("matmul", a, b)
    alpha, beta = ctx.attr("alpha", 1.0), ctx.attr("beta", 1.0)
    if alpha != 1.0:
        y = ctx.op("mul", y, ctx.scalar(alpha, y))
    if c is not None:
        if beta != 1.0:
            c = ctx.op("mul", c, ctx.scalar(beta, c))
        y = ctx.op("add", y, c)
    return [y]


def _spatial_padding(ctx: NodeContext, x: Value, kernel: Sequence[int], strides: Sequence[int],
                     dilations: Sequence[int]) -> tuple[tuple[int, int], ...]:
    n = len(kernel)
    auto = ctx.attr("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        pads = list(ctx.attr("pads", [0] * (2 * n)))
        return tuple((int(pads[i]), int(pads[i + n])) for i in range(n))
    if auto == "VALID":
        return ((0, 0),) * n
    out = []
    for i in range(n):
        size = x.shape[2 + i]
        span = dilations[i] * (kernel[i] - 1) + 1
        if strides[i] == 1:
            total = span - 1
        elif type(size) is int:
            total = max(0, (-(-size // strides[i]) - 1) * strides[i] + span - size)
        else:
            raise ctx.unsupported(f"auto_pad {auto} with a stride on a symbolic spatial dim")
        small, big = total // 2, total - total // 2
        out.append((small, big) if auto == "SAME_UPPER" else (big, small))
    return tuple(out)


def _conv_attrs(ctx: NodeContext, x: Value, kernel: Sequence[int]) -> dict[str, Any]:
    n = len(kernel)
    strides = tuple(ctx.attr("strides", [1] * n))
    dilations = tuple(ctx.attr("dilations", [1] * n))
    return {"stride": strides, "dilation": dilations,
            "padding": _spatial_padding(ctx, x, kernel, strides, dilations)}


@rule("Conv")
def _conv(ctx: NodeContext):
    x, w, b = ctx.input(0), ctx.input(1), ctx.input(2)
    attrs = _conv_attrs(ctx, x, w.shape[2:])
    ins = [x, w] + ([b] if b is not None else [])
    return [ctx.op("conv", *ins, groups=ctx.attr("group", 1), **attrs)]


@rule("ConvTranspose")
def _conv_transpose(ctx: NodeContext):
    x, w, b = ctx.input(0), ctx.input(1), ctx.input(2)
    n = x.rank - 2
    g = ctx.attr("group", 1)
    kernel = tuple(w.shape[2:])
    if not all(type(k) is int for k in kernel) or not all(type(d) is int for d in x.shape[2:]):
        raise ctx.unsupported("symbolic spatial or kernel dims")
    strides = tuple(ctx.attr("strides", [1] * n))
    dil = tuple(ctx.attr("dilations", [1] * n))
    out_pad = tuple(ctx.attr("output_padding", [0] * n))
    spans = [d * (k - 1) + 1 for d, k in zip(dil, kernel)]
    full = [strides[i] * (x.shape[2 + i] - 1) + out_pad[i] + spans[i] for i in range(n)]
    auto = ctx.attr("auto_pad", "NOTSET")
    if ctx.attr("output_shape") is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
        want = list(ctx.attr("output_shape"))[-n:] if ctx.attr("output_shape") is not None else \
            [x.shape[2 + i] * strides[i] for i in range(n)]
        pads = []
        for i in range(n):
            total = full[i] - want[i]
            lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
            pads.append((lo, total - lo))
    elif auto == "VALID":
        pads = [(0, 0)] * n
    else:
        p = list(ctx.attr("pads", [0] * (2 * n)))
        pads = [(int(p[i]), int(p[i + n])) for i in range(n)]
    # the transposed conv is a conv of the stride-dilated input with the flipped, transposed kernel
    cin, cout_g = w.shape[0], w.shape[1]
    wk = _reshape(ctx, w, (g, cin // g, cout_g) + kernel)
    wk = ctx.op("transpose", wk, perm=(0, 2, 1) + tuple(range(3, 3 + n)))
    wk = _reshape(ctx, wk, (g * cout_g, cin // g) + kernel)
    wk = ctx.op("reverse", wk, axes=tuple(range(2, 2 + n)))
    conv_pad = tuple((spans[i] - 1 - pads[i][0], spans[i] - 1 - pads[i][1] + out_pad[i]) for i in range(n))
    ins = [x, wk] + ([b] if b is not None else [])
    y = ctx.op("conv", *ins, groups=g, lhs_dilation=strides, dilation=dil,
               padding=tuple((max(lo, 0), max(hi, 0)) for lo, hi in conv_pad))
    for i, (lo, hi) in enumerate(conv_pad):
        if lo < 0 or hi < 0:
            size = y.shape[2 + i]
            y = ctx.op("slice", y, starts=(max(-lo, 0),), stops=(size - max(-hi, 0),), axes=(2 + i,))
    return [y]


@rule("MaxPool", "AveragePool", "LpPool")
def _pool(ctx: NodeContext):
    x = ctx.input(0)
    kernel = tuple(ctx.attr("kernel_shape"))
    attrs = _conv_attrs(ctx, x, kernel)
    common = dict(kernel=kernel, stride=attrs["stride"], padding=attrs["padding"], dilation=attrs["dilation"],
                  ceil_mode=bool(ctx.attr("ceil_mode", 0)))
    if ctx.node.op_type == "MaxPool":
        y = ctx.op("max_pool", x, **common)
        if not ctx.wants(1):
            return [y]
        from .onnx_indexing import maxpool_indices
        return [y, maxpool_indices(ctx, x, y)]
    if ctx.node.op_type == "AveragePool":
        return [ctx.op("avg_pool", x, count_include_pad=bool(ctx.attr("count_include_pad", 0)), **common)]
    p = ctx.attr("p", 2)
    powed = ctx.op("pow", ctx.op("abs", x), ctx.scalar(p, x))
    total = ctx.op("mul", ctx.op("avg_pool", powed, count_include_pad=True, **common),
                   ctx.scalar(math.prod(kernel), x))
    return [ctx.op("pow", total, ctx.scalar(1.0 / p, x))]


@rule("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(ctx: NodeContext):
    x = ctx.input(0)
    op = "reduce_mean" if ctx.node.op_type == "GlobalAveragePool" else "reduce_max"
    return [ctx.op(op, x, axes=tuple(range(2, x.rank)), keepdims=True)]


# ----- normalisation -----------------------------------------------------------------

@rule("BatchNormalization")
def _batch_norm(ctx: NodeContext):
    if ctx.attr("training_mode", 0) or any(ctx.wants(i) for i in range(1, 5)):
        raise ctx.unsupported("training-mode batch normalization (running statistics outputs)")
    ins = ctx.inputs[:5]
    x = ins[0]
    ins = [x] + [_cast(ctx, v, x.dtype) for v in ins[1:]]
    return [ctx.op("batch_norm", *ins, epsilon=ctx.attr("epsilon", 1e-5))]


@rule("LayerNormalization")
def _layer_norm(ctx: NodeContext):
    if ctx.wants(1) or ctx.wants(2):
        return None
    x = ctx.input(0)
    ins = [x] + [v for v in ctx.inputs[1:3] if v is not None]
    return [ctx.op("layer_norm", *ins, axis=_norm_axis(ctx, ctx.attr("axis", -1), x.rank),
                   epsilon=ctx.attr("epsilon", 1e-5))]


@rule("RMSNormalization")
def _rms_norm(ctx: NodeContext):
    x = ctx.input(0)
    return [ctx.op("rms_norm", x, ctx.input(1), axis=_norm_axis(ctx, ctx.attr("axis", -1), x.rank),
                   epsilon=ctx.attr("epsilon", 1e-5))]


@rule("InstanceNormalization")
def _instance_norm(ctx: NodeContext):
    x, scale, bias = ctx.input(0), ctx.input(1), ctx.input(2)
    y = ctx.op("layer_norm", x, axis=2, epsilon=ctx.attr("epsilon", 1e-5))
    shape = (scale.shape[0],) + (1,) * (x.rank - 2)
    return [ctx.op("add", ctx.op("mul", y, _reshape(ctx, scale, shape)), _reshape(ctx, bias, shape))]


@rule("LpNormalization")
def _lp_norm(ctx: NodeContext):
    x = ctx.input(0)
    ax = _norm_axis(ctx, ctx.attr("axis", -1), x.rank)
    if ctx.attr("p", 2) == 1:
        norm = ctx.op("reduce_sum", ctx.op("abs", x), axes=(ax,), keepdims=True)
    else:
        norm = ctx.op("sqrt", ctx.op("reduce_sum", ctx.op("mul", x, x), axes=(ax,), keepdims=True))
    zero = ctx.scalar(0, x)
    return [ctx.op("where", ctx.op("eq", norm, zero), zero, ctx.op("div", x, norm))]


@rule("LRN")
def _lrn(ctx: NodeContext):
    """x / (bias + alpha / size * sum of x^2 over the size channels around each one)^beta."""
    x = ctx.input(0)
    size = ctx.attr("size")
    alpha, beta, bias = ctx.attr("alpha", 1e-4), ctx.attr("beta", 0.75), ctx.attr("bias", 1.0)
    n, c = x.shape[:2]
    # channels become a spatial dim of a 2-D sum pool: [N, 1, C, rest]
    sq = _reshape(ctx, ctx.op("mul", x, x), (n, 1, c, D.dim_prod(x.shape[2:])))
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    window = ctx.op("avg_pool", sq, kernel=(size, 1), stride=(1, 1), padding=((lo, hi), (0, 0)),
                    count_include_pad=True)
    total = _reshape(ctx, window, x.shape)
    scale = ctx.op("add", ctx.scalar(bias, x), ctx.op("mul", total, ctx.scalar(alpha, x)))
    return [ctx.op("div", x, ctx.op("pow", scale, ctx.scalar(beta, x)))]


@rule("Dropout")
def _dropout(ctx: NodeContext):
    x = ctx.input(0)
    training = ctx.known(2) if ctx.input(2) is not None else np.array(False)
    if training is None or bool(np.asarray(training).item()):
        raise UnsupportedOpError(f"{ctx.label}: training-mode Dropout draws random numbers (out of scope)")
    outs = [x]
    if ctx.wants(1):
        outs.append(ctx.op("broadcast_to", ctx.const(np.array(True)), shape=x.shape))
    return outs


# ----- control flow ------------------------------------------------------------------

def _region(ctx: NodeContext, gproto: Any, input_types: Sequence[TensorType], captures: Sequence[str],
            name: str, captures_first: bool = False) -> Graph:
    """A closed region for a subgraph: its declared inputs (typed by ``input_types``) and
    one extra input per captured outer value (``captures``; outer constants are copied)."""
    region = Graph(name)
    scope = ImportScope(ctx.imp, region, ctx.scope, ctx.scope.opsets, closed=True,
                        origin_prefix=ctx.scope.origin_prefix + (ctx.node.name or ctx.node.op_type) + "/")
    declared: list[Value] = []

    def add_captures() -> None:
        for cname in captures:
            outer = ctx.scope.lookup(cname, ctx.label)
            arr = outer.const_value
            if arr is not None:
                scope.define(cname, region.const(arr, name=outer.producer.attrs["name"]))
            else:
                inner = region.add_input(outer.type, cname)
                # a shape computed outside stays known inside (Expand / Reshape in a loop body)
                ctx.imp.known[id(inner)] = ctx.imp.value_of(outer)
                scope.define(cname, inner)

    if captures_first:
        add_captures()
    for vi, t in zip(gproto.input, input_types):
        declared.append(region.add_input(t, vi.name))
    if not captures_first:
        add_captures()
    outs = ctx.imp.translate(gproto, scope, declared, f"subgraph {gproto.name!r} of {ctx.label}")
    region.set_outputs(outs)
    return region


def _captured_values(ctx: NodeContext, names: Sequence[str]) -> tuple[list[str], list[Value]]:
    keep, vals = [], []
    for n in names:
        v = ctx.scope.lookup(n, ctx.label)
        if v.const_value is None:
            keep.append(n)
            vals.append(v)
    return keep, vals


@rule("If")
def _if(ctx: NodeContext):
    cond = ctx.input(0)
    then_g, else_g = ctx.attrs["then_branch"], ctx.attrs["else_branch"]
    known = ctx.known(0)
    if known is not None and known.dtype != object:
        # a branch fixed at import is inlined (shape-dependent Ifs in exported models)
        branch = then_g if bool(np.asarray(known).reshape(-1)[0]) else else_g
        scope = ImportScope(ctx.imp, ctx.graph, ctx.scope, ctx.scope.opsets, closed=False,
                            origin_prefix=ctx.scope.origin_prefix)
        return ctx.imp.translate(branch, scope, [], f"branch of {ctx.label}")
    names = list(dict.fromkeys(free_names(else_g) + free_names(then_g)))
    _, vals = _captured_values(ctx, names)
    regions = [_region(ctx, g, [], names, f"{ctx.node.name or 'if'}_{tag}") for g, tag in
               ((else_g, "else"), (then_g, "then"))]
    pred = _reshape(ctx, cond, ()) if cond.rank else cond
    return list(ctx.builder.node("cond", [pred] + vals, regions=regions).outputs)


@rule("Scan")
def _scan(ctx: NodeContext):
    if ctx.opset < 9:
        raise ctx.unsupported("Scan before opset 9 (batched, with sequence_lens); re-export with opset >= 9")
    body = ctx.attrs["body"]
    n_scan = ctx.attr("num_scan_inputs")
    vals = [v for v in ctx.inputs if v is not None]
    states, xs = vals[:len(vals) - n_scan], vals[len(vals) - n_scan:]
    in_axes = list(ctx.attr("scan_input_axes", [0] * n_scan))
    in_dirs = list(ctx.attr("scan_input_directions", [0] * n_scan))
    ready = []
    for x, ax, rev in zip(xs, in_axes, in_dirs):
        ax = _norm_axis(ctx, ax, x.rank)
        if ax:
            x = ctx.op("transpose", x, perm=(ax,) + tuple(i for i in range(x.rank) if i != ax))
        if rev:
            x = ctx.op("reverse", x, axes=(0,))
        ready.append(x)
    lengths = {x.shape[0] for x in ready}
    if len(lengths) != 1 or type(next(iter(lengths))) is not int:
        raise ctx.unsupported(f"scan lengths {sorted(map(str, lengths))} must be one static number")
    length = lengths.pop()
    names = free_names(body)
    _, consts = _captured_values(ctx, names)
    types = [s.type for s in states] + [x.type.with_shape(x.shape[1:]) for x in ready]
    region = _region(ctx, body, types, names, f"{ctx.node.name or 'scan'}_body", captures_first=True)
    outs = list(ctx.builder.node("scan", consts + states + ready, {"num_consts": len(consts),
                                                                   "num_carry": len(states), "length": length},
                                 regions=[region]).outputs)
    n_out = len(outs) - len(states)
    out_axes = list(ctx.attr("scan_output_axes", [0] * n_out))
    out_dirs = list(ctx.attr("scan_output_directions", [0] * n_out))
    for k in range(n_out):
        y = outs[len(states) + k]
        if out_dirs[k]:
            y = ctx.op("reverse", y, axes=(0,))
        ax = _norm_axis(ctx, out_axes[k], y.rank)
        if ax:
            perm = list(range(1, y.rank))
            perm.insert(ax, 0)
            y = ctx.op("transpose", y, perm=tuple(perm))
        outs[len(states) + k] = y
    return outs


def _loop_body(body: Any, inputs: Sequence[str], outputs: Sequence[str], true_names: Sequence[str]) -> Any:
    """A copy of a Loop body with the given inputs and outputs (by name); ``true_names`` become
    Constant true nodes (an iteration condition fixed for the whole loop)."""
    import onnx
    from onnx import helper
    g = onnx.GraphProto()
    g.CopyFrom(body)
    by_name = {vi.name: vi for vi in body.input}
    del g.input[:]
    g.input.extend(by_name.get(n) or helper.make_empty_tensor_value_info(n) for n in inputs)
    out_by_name = {vi.name: vi for vi in body.output}
    del g.output[:]
    g.output.extend(out_by_name[n] for n in outputs)
    consts = [helper.make_node("Constant", [], [n], value=helper.make_tensor(n, onnx.TensorProto.BOOL, [], [True]))
              for n in true_names]
    nodes = consts + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    return g


def _condition_fixed(body: Any) -> bool:
    """Whether a Loop body hands its condition on unchanged (or always says true)."""
    cond_in, cond_out = body.input[1].name, body.output[0].name
    if cond_out == cond_in:
        return True
    for n in body.node:
        if cond_out in n.output:
            if n.op_type == "Identity" and n.input[0] == cond_in:
                return True
            if n.op_type == "Constant" and n.attribute and n.attribute[0].type == 4:
                from onnx import numpy_helper
                return bool(np.all(numpy_helper.to_array(n.attribute[0].t)))
    return False


@rule("Loop")
def _loop(ctx: NodeContext):
    body = ctx.attrs["body"]
    m_in, c_in = ctx.input(0), ctx.input(1)
    init = list(ctx.inputs[2:])
    n_state = len(init)
    n_scan = len(body.output) - 1 - n_state
    if len(body.input) != 2 + n_state or n_scan < 0:
        raise OnnxImportError(f"{ctx.label}: the body takes {len(body.input)} inputs and gives {len(body.output)} "
                              f"outputs for {n_state} loop-carried values")
    iter_name, cond_name = body.input[0].name, body.input[1].name
    state_names = [vi.name for vi in body.input[2:]]
    fixed = _condition_fixed(body)
    if n_scan and not fixed:
        raise ctx.unsupported("scan outputs of a loop whose body can stop it early: the number of iterations "
                              "sets their shape, which the IR needs when building the graph")
    trips = ctx.known(0) if m_in is not None else None
    first = ctx.known(1) if c_in is not None else np.array(True)
    if n_scan:
        trips = ctx.values(0, "trip count") if m_in is not None else None
        if trips is None:
            raise ctx.unsupported("scan outputs of a loop without a trip count")
        first = ctx.values(1, "initial condition") if c_in is not None else first
    static = trips is not None and trips.dtype != object and first is not None and first.dtype != object
    i64 = TensorType(DType.i64, ())
    if fixed and static:
        # a fixed number of iterations: a scan over the iteration numbers
        length = int(np.asarray(trips).item()) if bool(np.asarray(first).item()) else 0
        proto = _loop_body(body, state_names + [iter_name], [vi.name for vi in body.output[1:]], [cond_name])
        names = free_names(proto)
        _, consts = _captured_values(ctx, names)
        region = _region(ctx, proto, [v.type for v in init] + [i64], names, f"{ctx.node.name or 'loop'}_body",
                         captures_first=True)
        steps = ctx.op("iota", shape=(max(length, 0),), axis=0, dtype=DType.i64)
        return list(ctx.builder.node("scan", consts + init + [steps],
                                     {"num_consts": len(consts), "num_carry": n_state, "length": max(length, 0)},
                                     regions=[region]).outputs)
    # otherwise a while loop over (iteration, trip count, condition, state..., captured values...)
    taken = {vi.name for vi in body.input} | {o for n in body.node for o in n.output}
    trip_name = f"{iter_name}__trips"
    while trip_name in taken:
        trip_name += "_"
    proto = _loop_body(body, [iter_name, trip_name, cond_name] + state_names,
                       [vi.name for vi in body.output[:1 + n_state]], [])
    names = free_names(proto)
    _, caps = _captured_values(ctx, names)
    bool0 = TensorType(DType.bool, ())
    m = _cast(ctx, m_in, DType.i64) if m_in is not None else ctx.scalar(np.iinfo(np.int64).max, DType.i64)
    c = c_in if c_in is not None else ctx.scalar(True, DType.bool)
    m, c = (_reshape(ctx, v, ()) for v in (m, c))
    carried = [ctx.scalar(0, DType.i64), m, c] + init
    body_g = _region(ctx, proto, [i64, i64, bool0] + [v.type for v in init], names,
                     f"{ctx.node.name or 'loop'}_body")
    # the body region's inputs are (iteration, trips, cond, state..., captures...); its outputs gain
    # the next iteration number, the trip count and the captures, to carry them round
    ins = body_g.inputs
    b = body_g.builder(meta=ctx.builder.meta)
    outs = list(body_g.outputs)
    nxt = b.op("add", ins[0], b.scalar(1, DType.i64))
    cond_out = outs[0] if outs[0].rank == 0 else b.op("reshape", outs[0], shape=())
    body_g.set_outputs([nxt, ins[1], cond_out] + outs[1:] + list(ins[3 + n_state:]))
    cond_g = Graph(f"{ctx.node.name or 'loop'}_cond")
    cin = [cond_g.add_input(v.type, f"s{k}") for k, v in enumerate(carried + caps)]
    cb = cond_g.builder(meta=ctx.builder.meta)
    cond_g.set_outputs([cb.op("and", cb.op("lt", cin[0], cin[1]), cin[2])])
    outs = ctx.builder.node("while_loop", carried + caps, regions=[cond_g, body_g]).outputs
    return list(outs[3:3 + n_state])


# ----- com.microsoft ops that accelir's own ONNX lowering emits -----------------------

@rule("Gelu", table=MS_RULES)
def _ms_gelu(ctx: NodeContext):
    return [ctx.op("gelu", ctx.input(0))]


@rule("FastGelu", "BiasGelu", table=MS_RULES)
def _ms_bias_gelu(ctx: NodeContext):
    x = ctx.input(0)
    if ctx.input(1) is not None:
        x = ctx.op("add", x, ctx.input(1))
    return [ctx.op("gelu", x, approximate="tanh" if ctx.node.op_type == "FastGelu" else "none")]


@rule("SkipLayerNormalization", "SkipSimplifiedLayerNormalization", table=MS_RULES)
def _ms_skip_norm(ctx: NodeContext):
    x, skip = ctx.input(0), ctx.input(1)
    rms = ctx.node.op_type == "SkipSimplifiedLayerNormalization"
    bias_index = 3 if rms else 4
    if ctx.input(bias_index) is not None:
        skip = ctx.op("add", skip, ctx.input(bias_index))
    params = [ctx.input(2)] if rms else [ctx.input(2)] + ([ctx.input(3)] if ctx.input(3) is not None else [])
    y, s = ctx.ops("skip_rms_norm" if rms else "skip_layer_norm", x, skip, *params,
                   epsilon=ctx.attr("epsilon", 1e-5 if not rms else 1e-6))
    if ctx.wants(1) or ctx.wants(2):
        raise ctx.unsupported("the mean / inv_std_var outputs")
    return [y, None, None, s]


@rule("SimplifiedLayerNormalization", table=MS_RULES)
def _ms_rms_norm(ctx: NodeContext):
    x = ctx.input(0)
    return [ctx.op("rms_norm", x, ctx.input(1), axis=_norm_axis(ctx, ctx.attr("axis", -1), x.rank),
                   epsilon=ctx.attr("epsilon", 1e-5))]


@rule("FusedMatMul", table=MS_RULES)
def _ms_fused_matmul(ctx: NodeContext):
    a, b = ctx.input(0), ctx.input(1)
    for flag, i in (("transA", 0), ("transB", 1)):
        if ctx.attr(flag, 0):
            v = a if i == 0 else b
            perm = tuple(range(v.rank - 2)) + (v.rank - 1, v.rank - 2)
            v = ctx.op("transpose", v, perm=perm)
            a, b = (v, b) if i == 0 else (a, v)
    y = ctx.op("matmul", a, b)
    alpha = ctx.attr("alpha", 1.0)
    return [y if alpha == 1.0 else ctx.op("mul", y, ctx.scalar(alpha, y))]


_MS_ACTIVATIONS = {"": "none", "Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh"}


@rule("FusedConv", table=MS_RULES)
def _ms_fused_conv(ctx: NodeContext):
    x, w, b = ctx.input(0), ctx.input(1), ctx.input(2)
    if ctx.input(3) is not None:
        raise ctx.unsupported("the Z (sum) input of FusedConv")
    act = _MS_ACTIVATIONS.get(ctx.attr("activation", ""))
    if act is None:
        raise ctx.unsupported(f"FusedConv activation {ctx.attr('activation')!r}")
    attrs = _conv_attrs(ctx, x, w.shape[2:])
    ins = [x, w] + ([b] if b is not None else [])
    return [ctx.op("fused_conv", *ins, groups=ctx.attr("group", 1), activation=act, **attrs)]


def _heads(ctx: NodeContext, x: Value, n: int) -> Value:
    """[B, S, N * H] -> [B, N, S, H]."""
    b, seq, d = x.shape
    if type(d) is not int or d % n:
        raise ctx.unsupported(f"hidden size {d} that does not split into {n} heads")
    return ctx.op("transpose", ctx.op("reshape", x, shape=(b, seq, n, d // n)), perm=(0, 2, 1, 3))


def _ms_attention_core(ctx: NodeContext, q: Value, k: Value, v: Value, bias_index: int,
                       unsupported: Sequence[tuple[int, str]]) -> list[Value]:
    """MultiHeadAttention / Attention over [B, S, N * H] q, k, v with an optional additive
    attention_bias [B or 1, N or 1, S, T], as the IR's attention on [B, N, S, H] heads."""
    for i, what in unsupported:
        if ctx.input(i) is not None:
            raise ctx.unsupported(f"the {what} input")
    if ctx.attr("do_rotary", 0) or ctx.attr("past_present_share_buffer", 0):
        raise ctx.unsupported("rotary embedding / shared past buffers")
    n = ctx.attr("num_heads")
    qh, kh, vh = (_heads(ctx, x, n) for x in (q, k, v))
    scale = ctx.attr("scale", 0.0)
    causal = bool(ctx.attr("unidirectional", 0))
    if causal and qh.shape[2] != kh.shape[2]:
        # ORT aligns its causal mask bottom-right, the IR top-left: they agree on square scores only
        raise ctx.unsupported("unidirectional attention over different query and key lengths")
    ins = [qh, kh, vh] + ([ctx.input(bias_index)] if ctx.input(bias_index) is not None else [])
    y = ctx.op("attention", *ins, scale=float(scale) if scale else None, causal=causal)
    y = ctx.op("transpose", y, perm=(0, 2, 1, 3))
    b, seq, heads, h = y.shape
    return [ctx.op("reshape", y, shape=(b, seq, D.dim_mul(heads, h)))]


@rule("MultiHeadAttention", table=MS_RULES)
def _ms_multi_head_attention(ctx: NodeContext):
    q, k, v = ctx.input(0), ctx.input(1), ctx.input(2)
    if k is None or v is None or q.rank != 3 or k.rank != 3 or v.rank != 3:
        raise ctx.unsupported("packed or BNSH-layout query / key / value (accelir reads [B, S, N * H] q, k, v)")
    if ctx.input(3) is not None:
        d = q.shape[2]
        parts = [ctx.op("slice", ctx.input(3), starts=(i * d,), stops=((i + 1) * d,), steps=(1,), axes=(0,))
                 for i in range(3)]
        q, k, v = (ctx.op("add", x, p) for x, p in zip((q, k, v), parts))
    if ctx.wants(1) or ctx.wants(2):
        raise ctx.unsupported("the present_key / present_value outputs")
    return _ms_attention_core(ctx, q, k, v, 5, ((4, "key_padding_mask"), (6, "past_key"), (7, "past_value")))


@rule("Attention", table=MS_RULES)
def _ms_attention(ctx: NodeContext):
    x, w, bias = ctx.input(0), ctx.input(1), ctx.input(2)
    sizes = ctx.attr("qkv_hidden_sizes")
    if sizes and len(set(sizes)) != 1:
        raise ctx.unsupported("unequal qkv_hidden_sizes")
    if ctx.wants(1):
        raise ctx.unsupported("the present output")
    qkv = ctx.op("matmul", x, w)
    if bias is not None:
        qkv = ctx.op("add", qkv, bias)
    d = qkv.shape[2] // 3
    q, k, v = (ctx.op("slice", qkv, starts=(i * d,), stops=((i + 1) * d,), steps=(1,), axes=(2,)) for i in range(3))
    return _ms_attention_core(ctx, q, k, v, 5, ((3, "mask_index"), (4, "past"), (6, "past_sequence_length")))


# ----- function inlining -------------------------------------------------------------

def _schema_function(ctx: NodeContext) -> Any | None:
    """The FunctionProto the ONNX schema defines for this node's op, if any."""
    import onnx
    import onnx.defs
    try:
        schema = onnx.defs.get_schema(ctx.node.op_type, ctx.opset, "")
    except Exception:
        return None
    data = b""
    if schema.has_function:
        versions = [v for v in schema.function_opset_versions if v <= ctx.opset]
        if versions:
            data = schema.get_function_with_opset_version(max(versions))
    if not data and schema.has_context_dependent_function:
        versions = [v for v in schema.context_dependent_function_opset_versions if v <= ctx.opset]
        if versions:
            types = []
            for v in ctx.inputs:
                tp = onnx.TypeProto()
                if v is not None:
                    tp = onnx.helper.make_tensor_type_proto(_DTYPE_TO_ONNX[v.dtype],
                                                            [d if type(d) is int else str(d) for d in v.shape])
                types.append(tp.SerializeToString())
            data = schema.get_context_dependent_function_with_opset_version(
                max(versions), ctx.node.SerializeToString(), types)
    if not data:
        return None
    f = onnx.FunctionProto()
    f.ParseFromString(data)
    return f


def _schema_defaults(ctx: NodeContext) -> dict[str, Any]:
    import onnx.defs
    schema = onnx.defs.get_schema(ctx.node.op_type, ctx.opset, "")
    return {name: a.default_value for name, a in schema.attributes.items()
            if a.default_value is not None and a.default_value.type != 0}


def _inline_function(ctx: NodeContext, fproto: Any, opsets: dict[str, int],
                     schema_defaults: dict[str, Any] | None = None) -> list[Value | None]:
    import onnx
    imp = ctx.imp
    if imp.inline_depth > MAX_FUNCTION_DEPTH:
        raise OnnxImportError(f"{ctx.label}: functions nest more than {MAX_FUNCTION_DEPTH} deep "
                              "(a recursive function?)")
    scope = ImportScope(imp, ctx.graph, None, opsets, closed=True,
                        origin_prefix=ctx.scope.origin_prefix + (ctx.node.name or ctx.node.op_type) + "/")
    for name, v in zip(fproto.input, ctx.inputs):
        if v is not None:
            scope.define(name, v)
    given = {a.name: a for a in ctx.node.attribute}
    defaults = dict(schema_defaults or {})
    defaults.update({a.name: a for a in fproto.attribute_proto})
    nodes = []
    for n in fproto.node:
        m = onnx.NodeProto()
        m.CopyFrom(n)
        del m.attribute[:]
        for a in n.attribute:
            if a.ref_attr_name:
                src = given.get(a.ref_attr_name) or defaults.get(a.ref_attr_name)
                if src is None:
                    continue
                b = onnx.AttributeProto()
                b.CopyFrom(src)
                b.name = a.name
                m.attribute.append(b)
            else:
                m.attribute.append(a)
        nodes.append(m)
    imp.inline_depth += 1
    try:
        for i in topo_order(nodes, f"function {fproto.name!r}"):
            imp.convert_node(nodes[i], i, scope)
    finally:
        imp.inline_depth -= 1
    return [scope.values.get(o) for o in fproto.output]


def _function_opsets(outer: dict[str, int], fproto: Any) -> dict[str, int]:
    from .onnx import _opset_map
    out = dict(outer)
    out.update(_opset_map(fproto.opset_import))
    return out


def convert(imp: Any, scope: ImportScope, node: Any, inputs: list[Value | None], label: str) -> list[Value | None]:
    """The values of ``node``'s outputs, built into ``scope.graph``."""
    local = imp.functions.get((node.domain, node.op_type))
    ctx = NodeContext(imp, scope, node, inputs, label)
    if local is not None:
        # an identical call in the same graph (same inputs and attributes) reuses the first one's outputs
        key = (id(scope.graph), _call_key(node)[:2], tuple(id(v) for v in inputs), _call_key(node)[3])
        if key not in imp.inlined:
            imp.inlined[key] = _inline_function(ctx, local, _function_opsets(scope.opsets, local))
        return imp.inlined[key]
    domain = "" if node.domain in ("", "ai.onnx") else node.domain
    if domain == "com.microsoft":
        fn = MS_RULES.get(node.op_type)
        if fn is None:
            raise UnsupportedOpError(f"{label}: com.microsoft op {node.op_type!r} is not one accelir reads back "
                                     f"(known: {', '.join(sorted(MS_RULES))})", [node.op_type])
        return list(fn(ctx))
    if domain:
        why = OUT_OF_SCOPE_DOMAINS.get(domain, "an unknown domain")
        raise UnsupportedOpError(f"{label}: domain {domain!r} ({why}) is not supported; only the standard ONNX "
                                 "domain, com.microsoft ops accelir emits and model-local functions are",
                                 [f"{domain}.{node.op_type}"])
    if node.op_type in OUT_OF_SCOPE:
        raise UnsupportedOpError(f"{label}: {node.op_type} is out of scope for accelir "
                                 f"({OUT_OF_SCOPE[node.op_type]})", [node.op_type])
    fn = RULES.get(node.op_type)
    if fn is not None:
        out = fn(ctx)
        if out is not None:
            return list(out)
    body = _schema_function(ctx)
    if body is not None:
        return _inline_function(ctx, body, _function_opsets(scope.opsets, body), _schema_defaults(ctx))
    if fn is not None:
        raise UnsupportedOpError(f"{label}: this form of {node.op_type} is not supported", [node.op_type])
    raise UnsupportedOpError(f"{label}: ONNX op {node.op_type} (opset {ctx.opset}) has no accelir mapping yet; "
                             "open an issue with the model, or replace the op before importing", [node.op_type])


# ----- import-time evaluation of small tensors ---------------------------------------

_KNOWN_LIMIT = 1 << 16
_SYM_ARITH = {"add": D.dim_add, "sub": D.dim_sub, "mul": D.dim_mul}
_SYM_STRUCTURAL = {"concat", "gather", "slice", "unsqueeze", "squeeze", "reshape", "transpose", "broadcast_to",
                   "reverse", "take_along_axis", "where"}
_KEEP_NUMERIC = {"gather": (1,), "take_along_axis": (1,), "where": (0,)}  # index / condition operands


def _sym_div(a: D.Dim, b: D.Dim) -> D.Dim:
    if type(a) is int and type(b) is int:
        q = abs(a) // abs(b) if b else 0
        return q if (a >= 0) == (b >= 0) else -q
    return D.dim_floordiv(a, b)  # shape arithmetic: dims are non-negative


def _as_object(a: np.ndarray) -> np.ndarray:
    if a.dtype == object:
        return a
    return np.array([int(x) for x in a.reshape(-1)], dtype=object).reshape(a.shape)


def evaluate_known(node: Any, ins: list[np.ndarray]) -> list[np.ndarray] | None:
    """Outputs of ``node`` on known inputs, or None when they cannot (or should not) be computed now."""
    if any(a.size > _KNOWN_LIMIT for a in ins) or node.op in ("constant", "iota"):
        return None
    if any(type(D.dim_prod(o.shape)) is int and not fits_import_budget(o.shape, o.dtype) for o in node.outputs):
        return None  # a small input can make a huge output (broadcast_to, pad, tile)
    for v in node.attrs.values():
        if isinstance(v, tuple) and any(isinstance(x, str) for x in v):
            return None
    try:
        if not any(a.dtype == object for a in ins):
            opdef = registry.get(node.op)
            if not opdef.pure:
                return None
            outs = opdef.reference(list(ins), dict(node.attrs), ())
            return [np.asarray(o).astype(v.dtype.numpy, copy=False) for o, v in zip(outs, node.outputs)]
        if node.op in _SYM_ARITH or node.op == "div":
            fn = _SYM_ARITH.get(node.op, _sym_div)
            out = np.frompyfunc(fn, 2, 1)(_as_object(ins[0]), _as_object(ins[1]))
        elif node.op == "neg":
            out = np.frompyfunc(lambda d: D.dim_sub(0, d), 1, 1)(ins[0])
        elif node.op == "cast" and node.attrs["dtype"].is_int:
            out = ins[0]
        elif node.op == "reduce_prod" and len(node.attrs["axes"]) == ins[0].ndim:
            out = np.array(D.dim_prod(ins[0].reshape(-1).tolist()), dtype=object)
        elif node.op in _SYM_STRUCTURAL:
            keep = _KEEP_NUMERIC.get(node.op, ())
            ins = [a if i in keep else _as_object(a) for i, a in enumerate(ins)]
            out = registry.get(node.op).reference(list(ins), dict(node.attrs), ())[0]
        else:
            return None
    except Exception:
        return None
    out = np.asarray(out, dtype=object) if not isinstance(out, np.ndarray) else out
    if out.dtype == object and not any(isinstance(x, str) for x in out.reshape(-1)):
        out = np.array(out.tolist(), dtype=node.outputs[0].dtype.numpy).reshape(out.shape)
    return [out]


# op families kept in their own modules; importing them registers their rules here
from . import onnx_einsum, onnx_indexing, onnx_quantize, onnx_recurrent, onnx_signal  # noqa: E402,F401
