"""Caffe's elementwise activation layers: ReLU (leaky), PReLU, ELU, Sigmoid, TanH, AbsVal,
Power, Exp, Log, BNLL, Threshold, Clip, ReLU6, Swish."""

from __future__ import annotations

import math

from ...ir import Value
from .context import LayerContext, channel_shape, f32, rule

__all__: list[str] = []


@rule("ReLU")
def _relu(ctx: LayerContext):
    x = ctx.input()
    slope = float(ctx.param("relu").get("negative_slope"))
    if slope == 0.0:
        return [ctx.op("relu", x)]
    return [ctx.op("where", ctx.op("gt", x, f32(ctx, 0.0)), x, ctx.op("mul", x, f32(ctx, slope)))]


@rule("PReLU")
def _prelu(ctx: LayerContext):
    x = ctx.input()
    shared = ctx.param("prelu").get("channel_shared")
    slope = ctx.blob_array(0, (1,) if shared else (x.shape[1],), "scale") * (0.25 if ctx.blobs is None else 1)
    a = ctx.b.const(slope.reshape(() if shared else channel_shape(x, 1, 1)), name=f"{ctx.name}.slope")
    return [ctx.op("where", ctx.op("gt", x, f32(ctx, 0.0)), x, ctx.op("mul", x, a))]


@rule("ELU")
def _elu(ctx: LayerContext):
    x = ctx.input()
    alpha = float(ctx.param("elu").get("alpha"))
    neg = ctx.op("mul", ctx.op("expm1", ctx.op("min", x, f32(ctx, 0.0))), f32(ctx, alpha))
    return [ctx.op("where", ctx.op("gt", x, f32(ctx, 0.0)), x, neg)]


def _unary(op: str):
    def fn(ctx: LayerContext):
        return [ctx.op(op, ctx.input())]
    return fn


for _type, _op in (("Sigmoid", "sigmoid"), ("TanH", "tanh"), ("AbsVal", "abs")):
    rule(_type)(_unary(_op))


def _affine(ctx: LayerContext, x: Value, scale: float, shift: float) -> Value:
    if scale != 1.0:
        x = ctx.op("mul", x, f32(ctx, scale))
    if shift != 0.0:
        x = ctx.op("add", x, f32(ctx, shift))
    return x


@rule("Power")
def _power(ctx: LayerContext):
    p = ctx.param("power")
    y = _affine(ctx, ctx.input(), float(p.get("scale")), float(p.get("shift")))
    power = float(p.get("power"))
    if power == 1.0:
        return [y]
    if power == 2.0:
        return [ctx.op("mul", y, y)]
    return [ctx.op("pow", y, f32(ctx, power))]


@rule("Exp")
def _exp(ctx: LayerContext):
    p = ctx.param("exp")
    base = float(p.get("base"))
    factor = 1.0 if base == -1.0 else math.log(base)
    return [ctx.op("exp", _affine(ctx, ctx.input(), float(p.get("scale")) * factor, float(p.get("shift")) * factor))]


@rule("Log")
def _log(ctx: LayerContext):
    p = ctx.param("log")
    base = float(p.get("base"))
    y = ctx.op("log", _affine(ctx, ctx.input(), float(p.get("scale")), float(p.get("shift"))))
    return [y if base == -1.0 else ctx.op("mul", y, f32(ctx, 1.0 / math.log(base)))]


@rule("BNLL")
def _bnll(ctx: LayerContext):
    # log(1 + exp(x)), as Caffe computes it without overflow: x + log(1 + exp(-x)) for x > 0
    x = ctx.input()
    soft = ctx.op("log1p", ctx.op("exp", ctx.op("neg", ctx.op("abs", x))))
    return [ctx.op("add", ctx.op("max", x, f32(ctx, 0.0)), soft)]


@rule("ReLU6")
def _relu6(ctx: LayerContext):
    return [ctx.op("min", ctx.op("relu", ctx.input()), f32(ctx, 6.0))]


@rule("Clip")
def _clip(ctx: LayerContext):
    p = ctx.param("clip")
    if not (p.has("min") and p.has("max")):
        raise ctx.fail("clip_param needs min and max")
    return [ctx.op("min", ctx.op("max", ctx.input(), f32(ctx, float(p.get("min")))), f32(ctx, float(p.get("max"))))]


@rule("Swish")
def _swish(ctx: LayerContext):
    x = ctx.input()
    beta = float(ctx.param("swish").get("beta"))
    return [ctx.op("mul", x, ctx.op("sigmoid", x if beta == 1.0 else ctx.op("mul", x, f32(ctx, beta))))]


@rule("Threshold")
def _threshold(ctx: LayerContext):
    x = ctx.input()
    return [ctx.cast(ctx.op("gt", x, f32(ctx, float(ctx.param("threshold").get("threshold")))), x.dtype)]
