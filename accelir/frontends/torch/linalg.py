"""aten linear-algebra rules: matmul family, einsum, linear, addmm family."""

from __future__ import annotations

from ...ir import Value
from ..decompositions import einsum
from .context import NodeContext, rule

__all__: list[str] = []


# ----- linear algebra ----------------------------------------------------------------

@rule("matmul", "mm", "bmm")
def _matmul(ctx, a):
    dt = ctx.out_dtype
    return ctx.b.op("matmul", ctx.operand(a["self"], dt), ctx.operand(a["other"] if "other" in a else a["mat2"], dt))


@rule("dot", "vdot", "inner", "mv")
def _dot(ctx, a):
    dt = ctx.out_dtype
    other = a.get("other", a.get("vec", a.get("tensor")))
    x, y = ctx.operand(a["self"], dt), ctx.operand(other, dt)
    if x.rank == 0 or y.rank == 0:
        return ctx.b.op("mul", x, y)
    if ctx.name == "inner" and y.rank > 1:
        perm = tuple(range(y.rank - 2)) + (y.rank - 1, y.rank - 2)
        y = ctx.b.op("transpose", y, perm=perm)
    return ctx.b.op("matmul", x, y)


@rule("einsum")
def _einsum(ctx, a):
    dt = ctx.out_dtype
    try:
        return einsum(ctx.b, a["equation"], [ctx.operand(t, dt) for t in a["tensors"]])
    except (ValueError, NotImplementedError) as e:
        raise ctx.unsupported(str(e)) from None


def _transposed_weight(ctx: NodeContext, w: Value) -> Value:
    """torch keeps linear weights [out, in]; the IR's linear takes [in, out]."""
    return ctx.b.op("transpose", w, perm=(1, 0))


@rule("linear")
def _linear(ctx, a):
    x, w = ctx.value(a["input"]), ctx.value(a["weight"])
    if w.rank == 1:
        y = ctx.b.op("matmul", x, w)
        return y if a["bias"] is None else ctx.b.op("add", y, ctx.value(a["bias"]))
    inputs = [x, _transposed_weight(ctx, w)]
    if a["bias"] is not None:
        inputs.append(ctx.value(a["bias"]))
    return ctx.b.op("linear", *inputs)


@rule("addmm")
def _addmm(ctx, a):
    dt = ctx.out_dtype
    bias, m1, m2 = (ctx.operand(a[k], dt) for k in ("self", "mat1", "mat2"))
    beta, alpha = ctx.scalar_of(a["beta"]), ctx.scalar_of(a["alpha"])
    if alpha != 1:
        m1 = ctx.b.op("mul", m1, ctx.const(alpha, dt))
    if beta == 0:
        return ctx.b.op("matmul", m1, m2)
    if beta != 1:
        bias = ctx.b.op("mul", bias, ctx.const(beta, dt))
    if bias.rank <= 1:
        return ctx.b.op("linear", m1, m2, bias)
    return ctx.b.op("add", ctx.b.op("matmul", m1, m2), bias)


@rule("addmv", "addbmm", "baddbmm", "addr")
def _addmm_family(ctx, a):
    dt = ctx.out_dtype
    names = {"addmv": ("mat", "vec"), "addbmm": ("batch1", "batch2"), "baddbmm": ("batch1", "batch2"),
             "addr": ("vec1", "vec2")}[ctx.name]
    p, q = (ctx.operand(a[k], dt) for k in names)
    if ctx.name == "addr":
        prod = ctx.b.op("mul", ctx.b.op("unsqueeze", p, axes=(1,)), ctx.b.op("unsqueeze", q, axes=(0,)))
    else:
        prod = ctx.b.op("matmul", p, q)
    if ctx.name == "addbmm":
        prod = ctx.b.op("reduce_sum", prod, axes=(0,))
    beta, alpha = ctx.scalar_of(a["beta"]), ctx.scalar_of(a["alpha"])
    if alpha != 1:
        prod = ctx.b.op("mul", prod, ctx.const(alpha, dt))
    if beta == 0:
        return prod
    base = ctx.operand(a["self"], dt)
    if beta != 1:
        base = ctx.b.op("mul", base, ctx.const(beta, dt))
    return ctx.b.op("add", base, prod)
