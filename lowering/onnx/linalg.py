"""ONNX rules: matmul, dot_general, conv and pooling."""

from __future__ import annotations

from typing import Any, Sequence

from accelir import dims as D
from accelir.ir import Node

from .context import LoweringContext, OnnxValue, register_lowering

# ----- contractions and windows ---------------------------------------------------------

@register_lowering("matmul")
def _lower_matmul(ctx, node, xs):
    return [ctx.kernel("MatMul", *xs)]


@register_lowering("dot_general")
def _lower_dot_general(ctx, node, xs):
    a, b = node.inputs
    lc, rc, lb, rb = (node.attrs[k] for k in ("lhs_contracting", "rhs_contracting", "lhs_batch", "rhs_batch"))
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    la: list[str | None] = [None] * a.rank
    ra: list[str | None] = [None] * b.rank
    for x, y in list(zip(lb, rb)) + list(zip(lc, rc)):
        la[x] = ra[y] = next(letters)
    la = [c or next(letters) for c in la]
    ra = [c or next(letters) for c in ra]
    out = [la[x] for x in lb] + [la[i] for i in range(a.rank) if i not in lc and i not in lb] + \
          [ra[i] for i in range(b.rank) if i not in rc and i not in rb]
    return [ctx.kernel("Einsum", *xs, equation=f"{''.join(la)},{''.join(ra)}->{''.join(out)}")]


def _dilate_input(ctx: LoweringContext, x: OnnxValue, shape: Sequence[D.Dim], lhs_dilation: Sequence[int]) -> OnnxValue:
    """Insert d - 1 zeros between neighbours along each spatial dim (a transposed conv's input)."""
    shape = list(shape)
    for i, d in enumerate(lhs_dilation):
        if d == 1:
            continue
        ax = 2 + i
        size = shape[ax]
        rank = len(shape)
        u = ctx.op("Unsqueeze", x, ctx.ints([ax + 1]))
        pads = [0] * (rank + 1) * 2
        pads[rank + 1 + ax + 1] = d - 1
        u = ctx.kernel("Pad", u, ctx.ints(pads))
        widened = shape[:ax] + [D.dim_mul(size, d)] + shape[ax + 1:]
        x = ctx.op("Reshape", u, ctx.dims(widened))
        new = D.dim_add(D.dim_mul(D.dim_sub(size, 1), d), 1)
        x = ctx.op("Slice", x, ctx.ints([0]), ctx.dim(new), ctx.ints([ax]))
        shape[ax] = new
    return x


def conv_attrs(ctx: LoweringContext, node: Node) -> tuple[dict[str, Any], OnnxValue | None]:
    x_t, w_t = node.inputs[0].type, node.inputs[1].type
    n = x_t.rank - 2
    from accelir.ops.linalg import conv_params
    stride, padding, dilation, lhs = conv_params(node.op, node.attrs, n)
    if any(lo < 0 or hi < 0 for lo, hi in padding):
        raise ctx.error("negative conv padding has no ONNX form; slice the input instead")
    attrs = {"strides": list(stride), "pads": [p[0] for p in padding] + [p[1] for p in padding],
             "dilations": list(dilation), "group": node.attrs["groups"], "kernel_shape": list(w_t.shape[2:])}
    return attrs, lhs


def conv_input(ctx: LoweringContext, node: Node, xs: list[OnnxValue], lhs: Sequence[int]) -> list[OnnxValue]:
    if all(d == 1 for d in lhs):
        return list(xs)
    return [_dilate_input(ctx, xs[0], node.inputs[0].shape, lhs)] + list(xs[1:])


@register_lowering("conv")
def _lower_conv(ctx, node, xs):
    attrs, lhs = conv_attrs(ctx, node)
    return [ctx.kernel("Conv", *conv_input(ctx, node, xs, lhs), **attrs)]


def _pool_attrs(node: Node) -> dict[str, Any]:
    n = node.inputs[0].rank - 2
    kernel = node.attrs["kernel"]
    stride = node.attrs["stride"] or (1,) * n
    padding = node.attrs["padding"] or ((0, 0),) * n
    dilation = node.attrs["dilation"] or (1,) * n
    return {"kernel_shape": list(kernel), "strides": list(stride), "dilations": list(dilation),
            "pads": [p[0] for p in padding] + [p[1] for p in padding], "ceil_mode": int(node.attrs["ceil_mode"])}


@register_lowering("max_pool")
def _lower_max_pool(ctx, node, xs):
    return [ctx.kernel("MaxPool", xs[0], **_pool_attrs(node))]


@register_lowering("avg_pool")
def _lower_avg_pool(ctx, node, xs):
    return [ctx.kernel("AveragePool", xs[0], count_include_pad=int(node.attrs["count_include_pad"]),
                       **_pool_attrs(node))]
