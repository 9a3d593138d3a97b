"""ONNX rules: constants, elementwise math, compares, logic, where and cast."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto

from accelir.ir import DType, Node
from accelir.splat import splat_scalar

from .kernels import DTYPE_TYPE_STRINGS, supported_dtypes
from .context import LoweringContext, OnnxValue, Rule, in_compute, register_lowering
from .model import fill_tensor

@register_lowering("constant")
def _lower_constant(ctx, node, xs):
    """An initializer of the main graph, one per IR constant however many nodes read it; a splat
    (one value repeated, see ``accelir.splat``) is a ConstantOfShape of its scalar instead, so the
    model holds one element rather than the whole array."""
    graph, name = node.graph, node.attrs["name"]
    if name not in graph.constants:
        raise ctx.error(f"constant {name!r} has no value in graph {graph.name!r}")
    arr = graph.constants[name]
    scalar = splat_scalar(arr)
    if scalar is not None and _constant_of_shape_takes(ctx, node.outputs[0].dtype):
        value = TensorProto()
        fill_tensor(value, "value", scalar.reshape(1))
        return [ctx.op("ConstantOfShape", ctx.ints(arr.shape), dtype=node.outputs[0].dtype, value=value)]
    return [ctx.array_initializer(arr, name)]


def _constant_of_shape_takes(ctx: LoweringContext, dtype: DType) -> bool:
    """Whether ConstantOfShape may make ``dtype`` at the model's opset: in its schema and, where
    onnxruntime is installed, in its kernel."""
    schema = onnx.defs.get_schema("ConstantOfShape", ctx.opset, "")
    allowed = {t for c in schema.type_constraints if c.type_param_str == "T2" for t in c.allowed_type_strs}
    return DTYPE_TYPE_STRINGS[dtype] in allowed and dtype in supported_dtypes("ConstantOfShape", "", ctx.opset, "T2")


# ----- elementwise rules ----------------------------------------------------------------

_UNARY = {
    "neg": "Neg", "abs": "Abs", "exp": "Exp", "log": "Log", "sqrt": "Sqrt", "sin": "Sin", "cos": "Cos", "tan": "Tan",
    "asin": "Asin", "acos": "Acos", "atan": "Atan", "sinh": "Sinh", "cosh": "Cosh", "asinh": "Asinh",
    "acosh": "Acosh", "atanh": "Atanh", "tanh": "Tanh", "sigmoid": "Sigmoid", "erf": "Erf", "floor": "Floor",
    "ceil": "Ceil", "round": "Round", "sign": "Sign", "reciprocal": "Reciprocal",
}
_PREDICATES = {"isnan": "IsNaN", "isinf": "IsInf"}
_BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "max": "Max", "min": "Min"}
_COMPARE = {"eq": "Equal", "lt": "Less", "le": "LessOrEqual", "gt": "Greater", "ge": "GreaterOrEqual"}
_LOGIC = {"and": ("And", "BitwiseAnd"), "or": ("Or", "BitwiseOr"), "xor": ("Xor", "BitwiseXor"),
          "not": ("Not", "BitwiseNot")}


def _simple(op_type: str, result: DType | None = None) -> Rule:
    def rule(ctx: LoweringContext, node: Node, xs: list[OnnxValue]) -> list[OnnxValue]:
        return [ctx.kernel(op_type, *xs, result=result)]
    rule.__name__ = f"lower_{op_type}"
    return rule


for _ir, _onnx in _UNARY.items():
    register_lowering(_ir)(_simple(_onnx))
for _ir, _onnx in _BINARY.items():
    register_lowering(_ir)(_simple(_onnx))
for _ir, _onnx in {**_PREDICATES, **_COMPARE}.items():
    register_lowering(_ir)(_simple(_onnx, DType.bool))


@register_lowering("relu")
def _lower_relu(ctx, node, xs):
    (x,) = xs
    if x.dtype.is_float:
        return [ctx.kernel("Relu", x)]
    return [ctx.kernel("Max", x, ctx.const(0, x.dtype))]


@register_lowering("ne")
def _lower_ne(ctx, node, xs):
    return [ctx.op("Not", ctx.kernel("Equal", *xs, result=DType.bool))]


@register_lowering("and", "or", "xor", "not")
def _lower_logic(ctx, node, xs):
    logical, bitwise = _LOGIC[node.op]
    return [ctx.kernel(logical if xs[0].dtype is DType.bool else bitwise, *xs)]


@register_lowering("rsqrt")
def _lower_rsqrt(ctx, node, xs):
    return [in_compute(ctx, xs, ("Sqrt", "Reciprocal"), lambda v: ctx.op("Reciprocal", ctx.op("Sqrt", v[0])))]


@register_lowering("log1p")
def _lower_log1p(ctx, node, xs):
    def body(v):
        # log1p(x) = log(u) * x / (u - 1) with u = 1 + x (Goldberg): exact to a few ulp where log(1 + x)
        # loses the low bits of x; u == 1 means x is below rounding, and log1p(x) = x there.
        (x,) = v
        one = ctx.const(1, x.dtype)
        u = ctx.op("Add", x, one)
        d = ctx.op("Sub", u, one)
        ratio = ctx.op("Div", ctx.op("Mul", ctx.op("Log", u), x), d)
        small = ctx.op("Equal", d, ctx.const(0, x.dtype), dtype=DType.bool)
        big = ctx.op("IsInf", u, dtype=DType.bool)
        return ctx.op("Where", small, x, ctx.op("Where", big, ctx.op("Log", u), ratio))
    return [in_compute(ctx, xs, ("Add", "Sub", "Log", "Mul", "Div", "Where", "IsInf"), body)]


@register_lowering("expm1")
def _lower_expm1(ctx, node, xs):
    def body(v):
        # expm1(x) = (u - 1) * x / log(u) with u = exp(x) (Kahan); u == 1 -> x, u - 1 == -1 -> -1
        (x,) = v
        one = ctx.const(1, x.dtype)
        u = ctx.op("Exp", x)
        d = ctx.op("Sub", u, one)
        ratio = ctx.op("Div", ctx.op("Mul", d, x), ctx.op("Log", u))
        small = ctx.op("Equal", u, one, dtype=DType.bool)
        edge = ctx.op("Or", ctx.op("Equal", d, ctx.const(-1, x.dtype), dtype=DType.bool),
                      ctx.op("IsInf", u, dtype=DType.bool))
        return ctx.op("Where", small, x, ctx.op("Where", edge, d, ratio))
    return [in_compute(ctx, xs, ("Exp", "Sub", "Log", "Mul", "Div", "Where", "IsInf"), body)]


def _int_guarded(ctx: LoweringContext, a: OnnxValue, b: OnnxValue, op_type: str, **attrs: Any) -> OnnxValue:
    """``op_type(a, b)`` for ints with b == 0 giving 0 (the IR's rule) and, for signed division,
    b == -1 giving -a (no INT_MIN / -1 trap)."""
    zero = ctx.const(0, b.dtype)
    is_zero = ctx.op("Equal", b, zero, dtype=DType.bool)
    bad = is_zero
    signed = b.dtype.is_signed and op_type == "Div"
    if signed:
        is_m1 = ctx.op("Equal", b, ctx.const(-1, b.dtype), dtype=DType.bool)
        bad = ctx.op("Or", is_zero, is_m1)
    safe_b = ctx.op("Where", bad, ctx.const(1, b.dtype), b)
    out = ctx.op(op_type, a, safe_b, **attrs)
    if signed:
        out = ctx.op("Where", is_m1, ctx.op("Neg", a), out)
    return ctx.op("Where", is_zero, ctx.const(0, a.dtype), out)


@register_lowering("div", "rem")
def _lower_div_rem(ctx, node, xs):
    op_type, attrs = ("Div", {}) if node.op == "div" else ("Mod", {"fmod": 1})
    if not xs[0].dtype.is_int:
        return [ctx.kernel(op_type, *xs, **attrs)]
    ops = (op_type, "Equal", "Where", "Neg") if xs[0].dtype.is_signed else (op_type, "Equal", "Where")
    return [in_compute(ctx, xs, ops, lambda v: _int_guarded(ctx, v[0], v[1], op_type, **attrs))]


@register_lowering("pow")
def _lower_pow(ctx, node, xs):
    a, b = xs
    if a.dtype.is_int and a.dtype.is_signed:
        # the IR treats a negative integer exponent as 0
        b = ctx.kernel("Max", b, ctx.const(0, b.dtype))
    # base and exponent are separate type variables: compute both in one dtype both take
    return [in_compute(ctx, [a, b], ("Pow",), lambda v: ctx.op("Pow", v[0], v[1]))]


@register_lowering("atan2")
def _lower_atan2(ctx, node, xs):
    def body(v):
        y, x = v
        zero = ctx.const(0, y.dtype)
        pi = ctx.const(np.pi, y.dtype)
        base = ctx.op("Atan", ctx.op("Div", y, x))
        y_neg = ctx.op("Less", y, zero, dtype=DType.bool)
        shifted = ctx.op("Where", y_neg, ctx.op("Sub", base, pi), ctx.op("Add", base, pi))
        x_neg = ctx.op("Less", x, zero, dtype=DType.bool)
        x_zero = ctx.op("Equal", x, zero, dtype=DType.bool)
        axis = ctx.op("Mul", ctx.op("Sign", y), ctx.const(np.pi / 2, y.dtype))
        return ctx.op("Where", x_zero, axis, ctx.op("Where", x_neg, shifted, base))
    return [in_compute(ctx, xs, ("Atan", "Div", "Less", "Where", "Sub", "Add", "Equal", "Sign", "Mul"), body)]


@register_lowering("where")
def _lower_where(ctx, node, xs):
    return [ctx.kernel("Where", *xs, main=1)]


@register_lowering("cast")
def _lower_cast(ctx, node, xs):
    (x,) = xs
    to: DType = node.attrs["dtype"]
    if to.is_int and x.dtype.is_float:
        # float -> int truncates toward zero with NaN -> 0 and saturation (the IR's rule), where a
        # plain Cast leaves NaN and out-of-range values undefined
        cdt = ctx.compute_dtype(x.dtype, "Clip", "IsNaN", "Where")
        xc = ctx.cast(x, cdt)
        info = np.iinfo(to.numpy)
        lo = np.asarray(info.min, dtype=cdt.numpy)
        hi = np.asarray(info.max, dtype=cdt.numpy)
        if float(hi) > info.max:
            hi = np.nextafter(hi, np.asarray(0, cdt.numpy))
        clipped = ctx.op("Clip", xc, ctx.const(lo), ctx.const(hi))
        nan = ctx.op("IsNaN", xc, dtype=DType.bool)
        xc = ctx.op("Where", nan, ctx.const(0, cdt), clipped)
        return [ctx.cast(xc, to)]
    return [ctx.cast(x, to)]
