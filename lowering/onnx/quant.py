"""ONNX rules: the integer-quantised contractions ``dynamic_quant_linear`` and ``matmul_nbits``.

``dynamic_quant_linear`` becomes onnxruntime's ``DynamicQuantizeMatMul`` (com.microsoft): one kernel
that quantises x as ``DynamicQuantizeLinear`` does, multiplies in int32 and rescales, the bias in its
epilogue.  The three forms give the same bits; ``benchmarks/int8_kernels.py`` times them on BERT-base's
projection shapes, and on the CPU here DynamicQuantizeMatMul was never slower than
``DynamicQuantizeLinear`` + ``MatMulIntegerToFloat`` or the standard ``DynamicQuantizeLinear`` +
``MatMulInteger`` + rescale (ties within 2 % at most shapes, the other two up to 2-6x slower at some).
The standard form is what ``target="standard"`` gets.  ``matmul_nbits`` becomes ``MatMulNBits`` (its operands are already in
that kernel's layout), or the op's decomposition for ``target="standard"``.
"""

from __future__ import annotations

from accelir.ir import DType

from .context import NO_VALUE, lower_via_decomposition, register_lowering
from .kernels import MS_DOMAIN
from .nn import apply_activation


@register_lowering("dynamic_quant_linear")
def _lower_dynamic_quant_linear(ctx, node, xs):
    x, w, w_scale = xs[:3]
    bias = xs[3] if len(xs) == 4 else NO_VALUE
    if ctx.target == "onnxruntime":
        y = ctx.op("DynamicQuantizeMatMul", x, w, w_scale, NO_VALUE, bias, domain=MS_DOMAIN)
    else:
        q, scale, zp = ctx.op("DynamicQuantizeLinear", x, out_dtypes=[DType.u8, DType.f32, DType.u8])
        acc = ctx.op("MatMulInteger", q, w, zp, dtype=DType.i32)
        y = ctx.op("Mul", ctx.cast(acc, DType.f32), ctx.op("Mul", scale, w_scale))
        if bias.name:
            y = ctx.op("Add", y, bias)
    return [apply_activation(ctx, y, node.attrs["activation"])]


@register_lowering("matmul_nbits")
def _lower_matmul_nbits(ctx, node, xs):
    if ctx.target != "onnxruntime":
        return lower_via_decomposition(ctx, node, xs)
    a = node.attrs
    x, b, scales = xs[:3]
    rest = list(xs[3:])
    zp = rest.pop(0) if a["zero_points"] else NO_VALUE
    bias = rest.pop(0) if rest else NO_VALUE
    n, k = node.inputs[1].shape[0], node.inputs[0].shape[-1]
    if type(k) is not int or type(n) is not int:
        raise ctx.error(f"MatMulNBits needs static K and N, got K={k!r}, N={n!r}; give x a static last dim")
    flat_scales = ctx.op("Reshape", scales, ctx.ints([-1]))
    if zp.name:
        zp = ctx.op("Reshape", zp, ctx.ints([-1]))
    y = ctx.op("MatMulNBits", x, b, flat_scales, zp, NO_VALUE, bias, domain=MS_DOMAIN,
               K=k, N=n, bits=a["bits"], block_size=a["block_size"],
               accuracy_level=a["accuracy_level"])
    return [apply_activation(ctx, y, a["activation"])]
