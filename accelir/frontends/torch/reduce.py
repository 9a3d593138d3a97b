"""aten reduction, scan and sort rules."""

from __future__ import annotations

from typing import Any

from ... import dims as D
from ...ir import Value
from .context import RULES, Rule, rule, wrap_axis

__all__: list[str] = []


# ----- reductions --------------------------------------------------------------------

def _reduce_axes(x: Value, dim: Any) -> tuple[int, ...]:
    if dim is None or dim == [] or dim == ():
        return tuple(range(x.rank))
    dims = [dim] if isinstance(dim, int) else list(dim)
    return tuple(sorted({wrap_axis(d, x.rank) for d in dims}))


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
    RULES.add(_reduce_rule(_op), _name)


@rule("argmax", "argmin")
def _argmax(ctx, a):
    x = ctx.value(a["self"])
    if a.get("dim") is None or x.rank == 0:
        flat = ctx.b.op("reshape", x, shape=(x.type.numel,))
        y = ctx.b.op(ctx.name, flat, axis=0)
        return ctx.b.op("reshape", y, shape=ctx.out_shape) if ctx.out_shape != () else y
    return ctx.b.op(ctx.name, x, axis=wrap_axis(a["dim"], x.rank), keepdims=bool(a["keepdim"]))


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
    return ctx.b.op(ctx.name, x, axis=wrap_axis(a["dim"], max(x.rank, 1)))


@rule("topk")
def _topk(ctx, a):
    x = ctx.value(a["self"])
    return ctx.b.ops("topk", x, k=int(ctx.scalar_of(a["k"])), axis=wrap_axis(a["dim"], x.rank), largest=a["largest"])


@rule("sort")
def _sort(ctx, a):
    x = ctx.value(a["self"])
    return ctx.b.ops("sort", x, axis=wrap_axis(a["dim"], x.rank), descending=a["descending"])


@rule("argsort")
def _argsort(ctx, a):
    x = ctx.value(a["self"])
    return ctx.b.ops("sort", x, axis=wrap_axis(a["dim"], x.rank), descending=a["descending"])[1]
