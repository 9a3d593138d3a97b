"""aten linear-algebra rules: matmul family, einsum, linear, addmm family."""

from __future__ import annotations

from ...ir import DType, Value
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


@rule("_grouped_mm")
def _grouped_mm(ctx, a):
    """torch._grouped_mm: with ``offs`` (cumulative row ends of each group), the rows of a 2-d A in
    group g multiply B[g]; without, a batched matmul."""
    return _grouped_product(ctx, a["self"], a["mat2"], a.get("offs"), a.get("bias"))


@rule("grouped_mm_fallback")
def _grouped_mm_fallback(ctx, a):
    """transformers' ``grouped_mm_fallback(input, weight, offs)``: the custom op its mixture-of-experts
    layers call where torch's grouped kernel does not apply (on the CPU, float32). It is opaque to
    torch.export, and means ``_grouped_mm(input, weight, offs=offs)``."""
    return _grouped_product(ctx, a["input"], a["weight"], a["offs"], None)


def _grouped_product(ctx, a_arg, b_arg, offs, bias):
    """Rows pick their group's product from every group's: G products where one suffices, but every
    op static and no data-dependent shape."""
    x, w = ctx.value(a_arg), ctx.value(b_arg)
    dt = ctx.out_dtype
    x, w = ctx.cast(x, dt), ctx.cast(w, dt)
    if offs is None:
        y = ctx.b.op("matmul", x, w)
    elif x.rank == 2 and w.rank == 3:
        m = x.shape[0]
        ends = ctx.cast(ctx.value(offs), DType.i64)                      # [G]
        rows = ctx.b.op("iota", shape=(m, 1), axis=0, dtype=DType.i64)  # [M, 1]
        group = ctx.b.op("reduce_sum", ctx.cast(ctx.b.op("ge", rows, ends), DType.i64), axes=(1,),
                         keepdims=False)                                  # rows past g's end
        every = ctx.b.op("matmul", ctx.b.op("unsqueeze", x, axes=(0,)), w)  # [G, M, N]
        n = every.shape[2]
        pick = ctx.b.op("broadcast_to", ctx.b.op("reshape", group, shape=(1, m, 1)), shape=(1, m, n))
        y = ctx.b.op("squeeze", ctx.b.op("take_along_axis", every, pick, axis=0), axes=(0,))
    else:
        raise ctx.unsupported(f"_grouped_mm of a rank-{x.rank} and a rank-{w.rank} operand with offs "
                              "(accelir takes 2-d A with 3-d B)")
    if bias is not None:
        y = ctx.b.op("add", y, ctx.cast(ctx.value(bias), dt))
    return y
