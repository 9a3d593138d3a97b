"""ONNX rules of the quantised ops (``accelir.ops.qdq``): each becomes the ONNX op it came from.

ONNX Runtime runs its integer kernels for them, and its QDQ fusions find the
DequantizeLinear -> op -> QuantizeLinear groups they look for.  A zero point that is a
constant zero is left out (ONNX's default), so an imported model comes back as it was.
Where ONNX Runtime has no CPU kernel for the operand dtypes (ConvInteger with an i8 input,
for instance) or the zero points' layout (a per-channel ConvInteger weight zero point), or the
op uses what ONNX cannot say (a dilated input), the op lowers through
its decomposition into float and integer arithmetic, which computes the same integers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from accelir.ir import Node, Value
from accelir.ops.linalg import conv_params

from .context import NO_VALUE, LoweringContext, OnnxValue, lower_via_decomposition, register_lowering
from .kernels import input_var, kernel_binds


def _zero_point(ctx: LoweringContext, v: Value, x: OnnxValue) -> OnnxValue:
    """NO_VALUE for a constant all-zero u8 zero point (ONNX's default), else ``x``."""
    arr = v.const_value
    if arr is not None and arr.dtype == np.uint8 and not np.any(arr):
        return NO_VALUE
    return x


def _has_kernel(ctx: LoweringContext, op_type: str, node: Node, operands: dict[int, int]) -> bool:
    """Whether one ONNX Runtime kernel takes the dtypes of the ONNX inputs ``operands`` (ONNX input
    index -> IR input index) together."""
    dtypes = {input_var(op_type, "", ctx.opset, onnx_index): node.inputs[ir_index].dtype
              for onnx_index, ir_index in operands.items()}
    return kernel_binds(op_type, "", ctx.opset, dtypes)


def _per_tensor(*values: Value) -> bool:
    """Whether each value holds one element (ONNX Runtime's CPU kernels take per-tensor zero points
    and scales only for some operands: a's of MatMulInteger / QLinearMatMul, both of ConvInteger)."""
    return all(v.rank == 0 or (v.rank == 1 and v.shape[0] == 1) for v in values)


def _axis_attrs(node: Node) -> dict[str, Any]:
    attrs: dict[str, Any] = {"axis": node.attrs["axis"]}
    if node.attrs["block_size"]:
        attrs["block_size"] = node.attrs["block_size"]
    return attrs


def _blocked_before_21(ctx: LoweringContext, node: Node) -> bool:
    """Blocked scales came with opset 21: an older opset lowers them through the decomposition."""
    return bool(node.attrs["block_size"]) and ctx.opset < 21


@register_lowering("quantize_linear")
def _lower_quantize(ctx, node, xs):
    if _blocked_before_21(ctx, node) or not _has_kernel(ctx, "QuantizeLinear", node, {0: 0, 2: 2}):
        return lower_via_decomposition(ctx, node, xs)
    zp = _zero_point(ctx, node.inputs[2], xs[2])
    return [ctx.op("QuantizeLinear", xs[0], xs[1], zp, dtype=node.outputs[0].dtype, **_axis_attrs(node))]


@register_lowering("dequantize_linear")
def _lower_dequantize(ctx, node, xs):
    if _blocked_before_21(ctx, node) or not _has_kernel(ctx, "DequantizeLinear", node, {0: 0, 1: 1}):
        return lower_via_decomposition(ctx, node, xs)
    zero = node.inputs[2].const_value
    zp = NO_VALUE if zero is not None and not np.any(zero) else xs[2]  # (i32 takes none but 0)
    return [ctx.op("DequantizeLinear", xs[0], xs[1], zp, dtype=node.outputs[0].dtype, **_axis_attrs(node))]


@register_lowering("dynamic_quantize_linear")
def _lower_dynamic_quantize(ctx, node, xs):
    return list(ctx.op("DynamicQuantizeLinear", xs[0], out_dtypes=[o.dtype for o in node.outputs]))


@register_lowering("matmul_integer")
def _lower_matmul_integer(ctx, node, xs):
    if not _has_kernel(ctx, "MatMulInteger", node, {0: 0, 1: 1}) or not _per_tensor(node.inputs[2]):
        return lower_via_decomposition(ctx, node, xs)
    a, b, a_zp, b_zp = xs
    return [ctx.op("MatMulInteger", a, b, _zero_point(ctx, node.inputs[2], a_zp),
                   _zero_point(ctx, node.inputs[3], b_zp), dtype=node.outputs[0].dtype)]


def _onnx_conv_attrs(node: Node, w: Value) -> dict[str, Any] | None:
    """The ONNX attributes of a quantised conv node; None when ONNX cannot say it (a dilated input,
    negative padding)."""
    n = w.rank - 2
    stride, padding, dilation, lhs = conv_params(node.op, node.attrs, n)
    if any(d != 1 for d in lhs) or any(lo < 0 or hi < 0 for lo, hi in padding):
        return None
    return {"strides": list(stride), "pads": [p[0] for p in padding] + [p[1] for p in padding],
            "dilations": list(dilation), "group": node.attrs["groups"], "kernel_shape": list(w.shape[2:])}


@register_lowering("conv_integer")
def _lower_conv_integer(ctx, node, xs):
    attrs = _onnx_conv_attrs(node, node.inputs[1])
    if attrs is None or not _has_kernel(ctx, "ConvInteger", node, {0: 0, 1: 1}) or \
            not _per_tensor(node.inputs[2], node.inputs[3]):
        return lower_via_decomposition(ctx, node, xs)
    x, w, x_zp, w_zp = xs
    return [ctx.op("ConvInteger", x, w, _zero_point(ctx, node.inputs[2], x_zp),
                   _zero_point(ctx, node.inputs[3], w_zp), dtype=node.outputs[0].dtype, **attrs)]


@register_lowering("qlinear_matmul")
def _lower_qlinear_matmul(ctx, node, xs):
    if not _has_kernel(ctx, "QLinearMatMul", node, {0: 0, 3: 3, 7: 7}) or \
            not _per_tensor(node.inputs[1], node.inputs[2]):
        return lower_via_decomposition(ctx, node, xs)
    return [ctx.op("QLinearMatMul", *xs, dtype=node.outputs[0].dtype)]


@register_lowering("qlinear_conv")
def _lower_qlinear_conv(ctx, node, xs):
    attrs = _onnx_conv_attrs(node, node.inputs[3])
    if attrs is None or not _has_kernel(ctx, "QLinearConv", node, {0: 0, 3: 3, 7: 7}):
        return lower_via_decomposition(ctx, node, xs)
    return [ctx.op("QLinearConv", *xs, dtype=node.outputs[0].dtype, **attrs)]
