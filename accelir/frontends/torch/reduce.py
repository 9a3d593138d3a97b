"""aten reduction, scan, sort and norm rules (vector, matrix and weight norms as core-op decompositions)."""

from __future__ import annotations

import math
from typing import Any

from ... import dims as D
from ...ir import DType, Value
from .context import RULES, NodeContext, Rule, rule, wrap_axis

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
    k, axis = ctx.scalar_of(a["k"]), wrap_axis(a["dim"], x.rank)
    if not isinstance(k, str):
        return ctx.b.ops("topk", x, k=int(k), axis=axis, largest=a["largest"])
    if not D.symbols(k) & set(ctx.conv.item_values):
        # the result would get a dim of its own where torch's is the size expression k
        raise ctx.unsupported(f"topk with k = {k}, a symbolic size; give a static k, or compute k from the data "
                              "with .item()")
    # k computed from the data (``.item()``, an unbacked symbol): read at run time
    k1 = ctx.b.op("reshape", ctx.number_value(k), shape=(1,))
    outs = ctx.b.ops("topk_dynamic", x, k1, axis=axis, largest=a["largest"])
    for out, val in zip(outs, ctx.val):
        ctx.name_unbacked(out, val)
    return outs


@rule("sort")
def _sort(ctx, a):
    x = ctx.value(a["self"])
    return ctx.b.ops("sort", x, axis=wrap_axis(a["dim"], x.rank), descending=a["descending"])


@rule("argsort")
def _argsort(ctx, a):
    x = ctx.value(a["self"])
    return ctx.b.ops("sort", x, axis=wrap_axis(a["dim"], x.rank), descending=a["descending"])[1]


# ----- norms -------------------------------------------------------------------------

def _norm_input(ctx: NodeContext, x: Value) -> Value:
    """``x`` in the dtype a norm is computed in: torch's result dtype, widened to f32 for f16 / bf16
    (torch accumulates half-precision norms in float too)."""
    dt = ctx.out_dtype
    return ctx.cast(x, DType.f32 if dt in (DType.f16, DType.bf16) else dt)


def _vector_norm(ctx: NodeContext, x: Value, p: float, axes: tuple[int, ...], keep: bool) -> Value:
    """The ``p``-norm of ``x`` over ``axes`` from core ops: the max / min of |x| for +-inf, the count
    of non-zeros for 0, the root of the sum of squares for 2, (sum |x|^p)^(1/p) otherwise."""
    b = ctx.b
    if p == 0:
        nonzero = ctx.cast(b.op("ne", x, ctx.scalar(0, x)), x.dtype)
        return b.op("reduce_sum", nonzero, axes=axes, keepdims=keep)
    if p == 2:
        return b.op("sqrt", b.op("reduce_sum", b.op("mul", x, x), axes=axes, keepdims=keep))
    mag = b.op("abs", x)
    if p in (math.inf, -math.inf):
        return b.op("reduce_max" if p > 0 else "reduce_min", mag, axes=axes, keepdims=keep)
    if p == 1:
        return b.op("reduce_sum", mag, axes=axes, keepdims=keep)
    total = b.op("reduce_sum", b.op("pow", mag, ctx.scalar(p, x)), axes=axes, keepdims=keep)
    return b.op("pow", total, ctx.scalar(1.0 / p, x))


def _matrix_norm(ctx: NodeContext, x: Value, ord: Any, dims: Any, keep: bool) -> Value:
    """Matrix norms that need no singular values: Frobenius, and the max / min absolute column
    (ord +-1) or row (ord +-inf) sum over the two ``dims``."""
    d0, d1 = (wrap_axis(d, x.rank) for d in dims)
    both = tuple(sorted((d0, d1)))
    if ord == "fro":
        return _vector_norm(ctx, x, 2.0, both, keep)
    if isinstance(ord, (int, float)) and abs(ord) in (1, math.inf):
        summed, picked = (d0, d1) if abs(ord) == 1 else (d1, d0)
        s = ctx.b.op("reduce_sum", ctx.b.op("abs", x), axes=(summed,), keepdims=True)
        y = ctx.b.op("reduce_max" if ord > 0 else "reduce_min", s, axes=(picked,), keepdims=True)
        return y if keep else ctx.b.op("squeeze", y, axes=both)
    raise ctx.unsupported(f"matrix norm ord={ord!r} needs singular values, which accelir has no op for; "
                          "use ord 'fro', 1, -1, inf or -inf")


@rule("linalg_vector_norm")
def _linalg_vector_norm(ctx, a):
    x = _norm_input(ctx, ctx.value(a["self"]))
    return _vector_norm(ctx, x, float(ctx.scalar_of(a["ord"])), _reduce_axes(x, a["dim"]), bool(a["keepdim"]))


@rule("linalg_matrix_norm")
def _linalg_matrix_norm(ctx, a):
    x = _norm_input(ctx, ctx.value(a["self"]))
    return _matrix_norm(ctx, x, ctx.scalar_of(a["ord"]), a["dim"], bool(a["keepdim"]))


@rule("norm", "linalg_norm")
def _norm(ctx, a):
    """torch.norm / Tensor.norm (``p``) and torch.linalg.norm (``ord``): a matrix norm for a string
    order or, in linalg.norm, a numeric order over two dims (or of a matrix); else a vector norm."""
    x = _norm_input(ctx, ctx.value(a["self"]))
    ord = ctx.scalar_of(a["p"] if "p" in a else a["ord"])
    dim, keep = a.get("dim"), bool(a.get("keepdim", False))
    dims = [dim] if isinstance(dim, int) else list(dim or [])
    if ctx.name == "linalg_norm" and ord is not None and not isinstance(ord, str) and \
            (len(dims) == 2 or (not dims and x.rank == 2)):
        return _matrix_norm(ctx, x, ord, dims or (-2, -1), keep)
    if ord == "fro" and len(dims) <= 2:
        ord = 2.0
    if isinstance(ord, str):
        return _matrix_norm(ctx, x, ord, dims or (-2, -1), keep)
    return _vector_norm(ctx, x, 2.0 if ord is None else float(ord), _reduce_axes(x, dim), keep)


@rule("_weight_norm", "_weight_norm_interface")
def _weight_norm(ctx, a):
    """Weight normalisation: ``v * g / ||v||``, the 2-norm over every dim of ``v`` but ``dim``
    (over all of ``v`` for dim=-1); ``_weight_norm_interface`` also returns the norms."""
    types = ctx.out_types() if isinstance(ctx.val, (tuple, list)) else [ctx.out_type]
    v = ctx.value(a["v"])
    wide = DType.f32 if v.dtype in (DType.f16, DType.bf16) else v.dtype
    dim = a["dim"]
    axes = tuple(range(v.rank)) if dim == -1 else tuple(i for i in range(v.rank) if i != wrap_axis(dim, v.rank))
    norm = _vector_norm(ctx, ctx.cast(v, wide), 2.0, axes, True)
    scale = ctx.b.op("div", ctx.cast(ctx.value(a["g"]), wide), norm)
    w = ctx.cast(ctx.b.op("mul", ctx.cast(v, wide), scale), types[0].dtype)
    if len(types) == 1:
        return w
    return w, ctx.b.op("reshape", norm, shape=types[1].shape)


@rule("histc")
def _histc(ctx, a):
    """torch.histc: counts of x in ``bins`` equal bins over [min, max] (the data's range when min ==
    max), values outside left out, x == max in the last bin. The bin of each element is computed as
    torch's kernel computes it, trunc((x - min) * bins / (max - min)), in x's dtype."""
    x = ctx.value(a["self"])
    if not x.dtype.is_float:
        raise ctx.unsupported(f"histc of {x.dtype} (torch takes floating inputs only)")
    bins, lo, hi = int(a.get("bins", 100)), float(a.get("min", 0)), float(a.get("max", 0))
    if bins <= 0:
        raise ctx.unsupported(f"histc with bins={bins}; give bins > 0")
    flat = ctx.b.op("reshape", x, shape=(x.type.numel,)) if x.rank != 1 else x
    if lo == hi:
        axes = (0,)
        low = ctx.b.op("reduce_min", flat, axes=axes, keepdims=False)
        high = ctx.b.op("reduce_max", flat, axes=axes, keepdims=False)
        same = ctx.b.op("eq", low, high)
        low = ctx.b.op("where", same, ctx.b.op("sub", low, ctx.scalar(1, x)), low)
        high = ctx.b.op("where", same, ctx.b.op("add", high, ctx.scalar(1, x)), high)
    else:
        if lo > hi:
            raise ctx.unsupported(f"histc with min {lo} > max {hi}")
        low, high = ctx.scalar(lo, x), ctx.scalar(hi, x)
    inside = ctx.b.op("and", ctx.b.op("ge", flat, low), ctx.b.op("le", flat, high))
    pos = ctx.b.op("div", ctx.b.op("mul", ctx.b.op("sub", flat, low), ctx.scalar(bins, x)), ctx.b.op("sub", high, low))
    pos = ctx.b.op("where", inside, pos, ctx.scalar(0, x))
    idx = ctx.b.op("min", ctx.cast(pos, DType.i64), ctx.const(bins - 1, DType.i64))
    idx = ctx.b.op("where", inside, idx, ctx.const(bins, DType.i64))  # the rest goes to a bin cut off below
    zeros = ctx.b.op("broadcast_to", ctx.scalar(0, x), shape=(bins + 1,))
    ones = ctx.b.op("broadcast_to", ctx.scalar(1, x), shape=flat.shape)
    counts = ctx.b.op("scatter_elements", zeros, idx, ones, axis=0, reduction="add")
    return ctx.b.op("slice", counts, starts=(0,), stops=(bins,), axes=(0,))


@rule("bincount")
def _bincount(ctx, a):
    """torch.bincount: its length, max(max(x) + 1, minlength), is a data-dependent (unbacked) dim."""
    x, weights = ctx.value(a["self"]), a.get("weights")
    ins = [x] if weights is None else [x, ctx.cast(ctx.value(weights), ctx.out_dtype)]
    counts = ctx.b.op("bincount", *ins, minlength=int(a.get("minlength", 0)))
    return ctx.name_unbacked(ctx.cast(counts, ctx.out_dtype))
