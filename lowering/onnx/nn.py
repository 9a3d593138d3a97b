"""ONNX rules: composites (activations, norms, attention, linear, fused conv, sampling).

Each maps to a standard ONNX op or one of ONNX Runtime's fused kernels where its semantics
match exactly, else to the op's own decomposition.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from accelir import dims as D
from accelir.ir import DType, Graph, Node, TensorType, Value
from accelir.ops import registry
from accelir.ops.activations import activation
from accelir.ops.nn import GRID_MODE_OLD_NAMES, split_heads
from accelir.ops.resize import nearest_index

from .kernels import MS_DOMAIN, supported_dtypes
from .context import LoweringContext, OnnxValue, in_compute, lower_via_decomposition, register_lowering
from .linalg import conv_attrs, conv_input
from .shape import slice_partition

@register_lowering("fused_conv")
def _lower_fused_conv(ctx, node, xs):
    attrs, lhs = conv_attrs(ctx, node)
    xs = conv_input(ctx, node, xs, lhs)
    act = activation(node.attrs["activation"])
    if ctx.target == "onnxruntime" and act.ort_fused_conv:
        cdt = ctx.compute_dtype(xs[0].dtype, "FusedConv", domain=MS_DOMAIN)
        if cdt == ctx.compute_dtype(xs[0].dtype, "Conv"):
            return [ctx.kernel("FusedConv", *xs, domain=MS_DOMAIN, activation=act.onnx_op, **attrs)]
    return [apply_activation(ctx, ctx.kernel("Conv", *xs, **attrs), act.name)]


# ----- composites -----------------------------------------------------------------------

def _gelu(ctx: LoweringContext, x: OnnxValue, approximate: str) -> OnnxValue:
    fused = "FastGelu" if approximate == "tanh" else "Gelu"
    if ctx.target == "onnxruntime" and ctx.has_kernel(x.dtype, fused, domain=MS_DOMAIN):
        return ctx.kernel(fused, x, domain=MS_DOMAIN)
    if ctx.opset >= 20 and ctx.has_kernel(x.dtype, "Gelu"):
        return ctx.kernel("Gelu", x, approximate=approximate)
    return _decomposed_activation(ctx, x, "gelu", approximate=approximate)


def _decomposed_activation(ctx: LoweringContext, x: OnnxValue, op: str, **attrs: Any) -> OnnxValue:
    scratch = Graph.decomposition(op, [TensorType(x.dtype, ())], registry.normalize_attrs(op, attrs),
                                  ctx.node.meta if ctx.node else None)
    ctx.composites.append(ctx.node)
    try:
        return ctx.emit_graph(scratch, [x])[0]
    finally:
        ctx.composites.pop()


def _silu(ctx: LoweringContext, x: OnnxValue) -> OnnxValue:
    if ctx.target == "onnxruntime" and ctx.has_kernel(x.dtype, "QuickGelu", domain=MS_DOMAIN):
        return ctx.kernel("QuickGelu", x, domain=MS_DOMAIN, alpha=1.0)
    return in_compute(ctx, [x], ("Sigmoid", "Mul"), lambda v: ctx.op("Mul", v[0], ctx.op("Sigmoid", v[0])))


def apply_activation(ctx: LoweringContext, x: OnnxValue, act: str) -> OnnxValue:
    """``x`` through activation ``act`` (the ``activation`` attribute of linear / fused_conv): the plain
    ONNX op the activation table names, else the lowering of its IR op (gelu, silu)."""
    a = activation(act)
    if a.op is None:
        return x
    if a.onnx_op is not None:
        return ctx.kernel(a.onnx_op, x)
    return _ACTIVATION_OPS[a.op](ctx, x, **dict(a.attrs))


_ACTIVATION_OPS = {"gelu": _gelu, "silu": _silu}  # the composite IR ops an activation may be


@register_lowering("gelu")
def _lower_gelu(ctx, node, xs):
    return [_gelu(ctx, xs[0], node.attrs["approximate"])]


@register_lowering("silu")
def _lower_silu(ctx, node, xs):
    return [_silu(ctx, xs[0])]


@register_lowering("softmax", "log_softmax")
def _lower_softmax(ctx, node, xs):
    return [ctx.kernel("Softmax" if node.op == "softmax" else "LogSoftmax", xs[0], axis=node.attrs["axis"])]


def _norm_params(ctx: LoweringContext, node: Node, xs: list[OnnxValue], first: int, count: int
                 ) -> list[OnnxValue | None]:
    """Scale (ones when absent) and the optional bias of a norm node (its inputs ``first``, ``first + 1``),
    in the normalised shape."""
    x_t = node.outputs[0].type
    axis = node.attrs["axis"] % x_t.rank
    norm_shape = x_t.shape[axis:]
    out: list[OnnxValue | None] = []
    for k in range(count):
        i = first + k
        if i >= len(xs):
            out.append(ctx.kernel("Expand", ctx.const(1, x_t.dtype), ctx.dims(norm_shape)) if k == 0 else None)
            continue
        p, p_t = xs[i], node.inputs[i].type
        if p_t.shape != tuple(norm_shape):
            p = ctx.kernel("Expand", p, ctx.dims(norm_shape))
        out.append(p)
    return out


def _layer_norm(ctx: LoweringContext, node: Node, x: OnnxValue, params: list[OnnxValue | None]) -> OnnxValue:
    return ctx.kernel("LayerNormalization", x, *params, axis=node.attrs["axis"], epsilon=node.attrs["epsilon"])


def _rms_norm(ctx: LoweringContext, node: Node, x: OnnxValue, scale: OnnxValue) -> OnnxValue | None:
    attrs = {"axis": node.attrs["axis"], "epsilon": node.attrs["epsilon"]}
    if ctx.target == "onnxruntime" and ctx.has_kernel(x.dtype, "SimplifiedLayerNormalization"):
        return ctx.kernel("SimplifiedLayerNormalization", x, scale, **attrs)
    if ctx.opset >= 23 and ctx.has_kernel(x.dtype, "RMSNormalization"):
        return ctx.kernel("RMSNormalization", x, scale, **attrs)
    return None


@register_lowering("layer_norm")
def _lower_layer_norm(ctx, node, xs):
    return [_layer_norm(ctx, node, xs[0], _norm_params(ctx, node, xs, 1, 2))]


@register_lowering("rms_norm")
def _lower_rms_norm(ctx, node, xs):
    out = _rms_norm(ctx, node, xs[0], _norm_params(ctx, node, xs, 1, 1)[0])
    return [out] if out is not None else lower_via_decomposition(ctx, node, xs)


# The residual add stays an Add before the norm: ONNX Runtime's CPU SkipLayerNormalization and
# SkipSimplifiedLayerNormalization kernels take 2-7x the time of Add + LayerNormalization /
# SimplifiedLayerNormalization on [128, 768] (ORT 1.32), so OnnxRuntimeModule keeps ORT's
# SkipLayerNormFusion from re-fusing them on the CPU; its CUDA provider still fuses them.

@register_lowering("skip_layer_norm")
def _lower_skip_layer_norm(ctx, node, xs):
    s = ctx.kernel("Add", xs[0], xs[1])
    return [_layer_norm(ctx, node, s, _norm_params(ctx, node, xs, 2, 2)), s]


@register_lowering("skip_rms_norm")
def _lower_skip_rms_norm(ctx, node, xs):
    s = ctx.kernel("Add", xs[0], xs[1])
    y = _rms_norm(ctx, node, s, _norm_params(ctx, node, xs, 2, 1)[0])
    return [y, s] if y is not None else lower_via_decomposition(ctx, node, xs)


@register_lowering("batch_norm")
def _lower_batch_norm(ctx, node, xs):
    k = _batch_norm_scale_only(ctx, node)
    if k is not None:
        return [in_compute(ctx, [xs[0], ctx.const(k)], ("Mul",), lambda v: ctx.op("Mul", *v))]
    # x, scale / bias and mean / var are three type variables: compute all in one dtype
    return [in_compute(ctx, xs, ("BatchNormalization",),
                        lambda v: ctx.op("BatchNormalization", *v, epsilon=node.attrs["epsilon"]))]


def _batch_norm_scale_only(ctx: LoweringContext, node: Node) -> np.ndarray | None:
    """For ONNX Runtime, a batch norm with constant parameters whose mean and bias are zero (a
    freshly initialised one's) as the per-channel factor ``scale / sqrt(var + eps)``, shaped to
    broadcast over ``x``; else None.  ONNX Runtime folds a BatchNormalization into the conv before
    it with a bias, here all zeros, which its conv kernels still add; it folds a Mul into the conv's
    weights (ConvMulFusion) and leaves the conv without one."""
    if ctx.target != "onnxruntime":
        return None
    scale, bias, mean, var = (v.const_value for v in node.inputs[1:])
    if scale is None or var is None or bias is None or mean is None or bias.any() or mean.any():
        return None
    x = node.inputs[0]
    k = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + node.attrs["epsilon"])
    return k.astype(x.dtype.numpy).reshape((-1,) + (1,) * (x.type.rank - 2))


# GridSample-16 names the modes bilinear / bicubic (GRID_MODE_OLD_NAMES) and takes 4-D inputs only;
# GridSample-20 is N-D.
@register_lowering("grid_sample")
def _lower_grid_sample(ctx, node, xs):
    x_t, a = node.inputs[0].type, node.attrs
    # ONNX Runtime's kernel samples cubic only in 2-D, and with border padding clamps each tap rather than
    # the coordinate as the ONNX reference does: those take the decomposition
    spatial_ok = x_t.rank == 4 or (ctx.opset >= 20 and a["mode"] != "cubic")
    if spatial_ok and (a["mode"], a["padding_mode"]) != ("cubic", "border") and \
            ctx.has_kernel(x_t.dtype, "GridSample"):
        cdt = ctx.compute_dtype(x_t.dtype, "GridSample")
        mode = a["mode"] if ctx.opset >= 20 else GRID_MODE_OLD_NAMES[a["mode"]]
        # X and grid are separate type variables: cast the grid along with X
        return [ctx.kernel("GridSample", xs[0], ctx.cast(xs[1], cdt), compute=cdt, mode=mode,
                           padding_mode=a["padding_mode"], align_corners=int(a["align_corners"]))]
    return lower_via_decomposition(ctx, node, xs)


def _ort_resize_inputs(x_t: TensorType, a: dict[str, Any]) -> tuple[str, list] | None:
    """How ONNX Runtime's Resize kernel can express ``resize`` as this graph states it: ("scales", ...)
    or ("sizes", ...) per axis; None where its CPU kernel refuses the case or computes it
    differently from ONNX's reference (cubic outside 2-D / NCHW planes; pytorch_half_pixel onto one
    pixel, which the kernel samples at 0 rather than -0.5)."""
    axes, sizes, scales = a["axes"], a["sizes"], a["scales"]
    if a["mode"] == "cubic" and not (x_t.rank == 2 or (x_t.rank == 4 and set(axes) <= {2, 3})):
        return None
    if a["coord"] == "pytorch_half_pixel" and 1 in sizes:
        return None
    # the kernel computes coordinates in float32: where that rounds to another pixel, it is not ours
    if a["mode"] == "nearest" and not all(
            np.array_equal(nearest_index(x_t.shape[ax], out, sc, a), nearest_index(x_t.shape[ax], out, sc, a, np.float32))
            for ax, out, sc in zip(axes, sizes, scales)):
        return None
    if all(abs(sc - out / x_t.shape[ax]) <= 1e-12 * sc for ax, out, sc in zip(axes, sizes, scales)):
        return "sizes", list(sizes)
    # given factors: the kernel sizes the output floor(input * scale), which must be ours, and
    # align_corners / half_pixel_symmetric read the rounded output where ONNX reads the unrounded one
    if a["coord"] not in ("align_corners", "half_pixel_symmetric") and all(int(np.float32(sc) * np.float32(x_t.shape[ax])) == out for ax, out, sc in zip(axes, sizes, scales)):
        return "scales", list(scales)
    return None


@register_lowering("resize")
def _lower_resize(ctx, node, xs):
    x_t, a = node.inputs[0].type, node.attrs
    how = _ort_resize_inputs(x_t, a) if ctx.opset >= 19 else None
    if how is None or not ctx.has_kernel(x_t.dtype, "Resize"):
        return lower_via_decomposition(ctx, node, xs)
    kind, values = how
    scales = ctx.const(np.asarray(values, np.float32)) if kind == "scales" else None
    sizes = ctx.ints(values) if kind == "sizes" else None
    return [ctx.kernel("Resize", xs[0], None, scales, sizes, axes=list(a["axes"]), mode=a["mode"],
                       coordinate_transformation_mode=a["coord"], nearest_mode=a["nearest_mode"],
                       cubic_coeff_a=a["cubic_a"], exclude_outside=int(a["exclude_outside"]),
                       antialias=int(a["antialias"]))]


@register_lowering("roi_align")
def _lower_roi_align(ctx, node, xs):
    x, rois, batch = xs
    if ctx.has_kernel(x.dtype, "RoiAlign"):
        return [ctx.kernel("RoiAlign", x, rois, ctx.cast(batch, DType.i64), **node.attrs)]
    if node.attrs["sampling_ratio"] == 0:
        raise ctx.error(f"onnxruntime has no RoiAlign kernel at opset {ctx.opset}, and adaptive sampling "
                        "(sampling_ratio=0) has no decomposition; lower at opset 21 or below, or set sampling_ratio")
    return lower_via_decomposition(ctx, node, xs)


@register_lowering("deform_conv")
def _lower_deform_conv(ctx, node, xs):
    if not ctx.has_kernel(node.inputs[0].dtype, "DeformConv"):
        return lower_via_decomposition(ctx, node, xs)
    attrs, _ = conv_attrs(ctx, node)
    return [ctx.kernel("DeformConv", *xs, offset_group=node.attrs["offset_groups"], **attrs)]


def _qkv_projection(parts: Sequence[Value]) -> Node | None:
    """The ``linear`` whose output q, k and v are consecutive equal slices of along the last axis, in
    that order (a packed QKV projection, as GPT-2's c_attn); else None."""
    slices = [v.producer for v in parts]
    if any(p is None or p.op != "slice" for p in slices):
        return None
    # the three slices must be all that reads the projection (else it is needed on its own too: it
    # stays a Gemm), cutting it along the last axis in q, k, v order
    group = slice_partition(slices[0])
    if group is None or group[1] != 2 or len(group[0]) != 3 or any(a is not b for a, b in zip(group[0], slices)):
        return None
    lin = slices[0].inputs[0].producer
    if lin is None or lin.op != "linear" or lin.attrs["activation"] != "none" or lin.inputs[0].rank != 3 or \
            lin.outputs[0].is_graph_output:
        return None
    d = parts[0].shape[2]
    if any(p.shape[2] != d for p in parts) or (len(lin.inputs) == 3 and lin.inputs[2].type.shape != (3 * d,)):
        return None
    return lin


def attention_bias(ctx: LoweringContext, m_t: TensorType, m: OnnxValue, shape: Sequence[D.Dim]) -> OnnxValue:
    """An IR attention mask as MultiHeadAttention's additive bias: [B or 1, N or 1, S, T] float, a
    bool mask becoming 0 where it keeps and -inf where it drops (as the IR's where(mask, s, -inf))."""
    dims = (1,) * (4 - m_t.rank) + tuple(m_t.shape)
    if m_t.rank < 4:
        m = ctx.op("Reshape", m, ctx.dims(dims))
    if dims[2:] != tuple(shape[2:]):
        dims = dims[:2] + tuple(shape[2:])
        m = ctx.op("Expand", m, ctx.dims(dims))
    if m.dtype is DType.bool:
        dt = ctx.node.inputs[0].dtype
        m = ctx.op("Where", m, ctx.const(0, dt), ctx.const(-np.inf, dt), dtype=dt)
    return m


def _multi_head_attention(ctx: LoweringContext, node: Node, xs: list[OnnxValue]) -> OnnxValue | None:
    """ONNX Runtime's fused attention over the [B, S, N * H] values that q, k and v were split into
    heads from (the split, the scale, the mask and causal masking all happen inside the kernel), its
    [B, S, N * Hv] result brought back to the IR's [B, N, S, Hv]; None where it does not fit.

    Where q, k and v are slices of one packed projection, ``Attention`` computes that projection too
    (one kernel for the Gemm, the split and the attention); else ``MultiHeadAttention``."""
    q_t, k_t, v_t = (x.type for x in node.inputs[:3])
    if ctx.target != "onnxruntime" or q_t.rank != 4 or \
            q_t.dtype not in supported_dtypes("MultiHeadAttention", MS_DOMAIN, ctx.opset):
        return None
    if not tuple(q_t.shape[:2]) == tuple(k_t.shape[:2]) == tuple(v_t.shape[:2]) or k_t.shape[2] != v_t.shape[2]:
        return None
    split = [split_heads(v) for v in node.inputs[:3]]
    if any(p is None for p in split) or len({p[1] for p in split}) != 1:
        return None
    n = split[0][1]
    s, t = q_t.shape[2], k_t.shape[2]
    causal = node.attrs["causal"]
    if causal and s != t:
        return None  # ORT's causal mask is aligned bottom-right, the IR's top-left
    scale = node.attrs["scale"]
    scale = float(scale if scale is not None else 1.0 / np.sqrt(q_t.shape[3]))
    lin = _qkv_projection([p[0] for p in split])
    if lin is not None and q_t.dtype in supported_dtypes("Attention", MS_DOMAIN, ctx.opset):
        op_type, operands = "Attention", list(lin.inputs)
    else:
        op_type, operands = "MultiHeadAttention", [p[0] for p in split]
    lowered = [ctx.value_of(v) for v in operands]
    if any(v is None for v in lowered):
        return None
    bias = attention_bias(ctx, node.inputs[3].type, xs[3], (q_t.shape[0], n, s, t)) if len(xs) == 4 else None
    if op_type == "Attention":  # input, weights, bias, mask_index, past, attention_bias
        ins = lowered[:2] + [lowered[2] if len(lowered) == 3 else None, None, None, bias]
    else:  # query, key, value, bias, key_padding_mask, attention_bias
        ins = lowered + [None, None, bias]
    y = ctx.op(op_type, *ins, domain=MS_DOMAIN, num_heads=n, scale=scale, unidirectional=1 if causal else None)
    return heads_of(ctx, y, n, node.outputs[0].shape[3])


def heads_of(ctx: LoweringContext, x: OnnxValue, heads: int, head_dim: int) -> OnnxValue:
    """A kernel's [B, S, heads * head_dim] value as the IR's [B, heads, S, head_dim] heads."""
    return ctx.op("Transpose", ctx.op("Reshape", x, ctx.ints([0, 0, heads, head_dim])), perm=[0, 2, 1, 3])


@register_lowering("attention")
def _lower_attention(ctx, node, xs):
    fused = _multi_head_attention(ctx, node, xs)
    if fused is not None:
        return [fused]
    q, k, v = (x.type for x in node.inputs[:3])
    mask = node.inputs[3].type if len(node.inputs) == 4 else None
    fits = (ctx.opset >= 23 and q.rank == 4 and q.shape[:2] == k.shape[:2] == v.shape[:2]
            and (mask is None or mask.rank <= 4) and ctx.has_kernel(q.dtype, "Attention"))
    if not fits:
        return lower_via_decomposition(ctx, node, xs)
    cdt = ctx.compute_dtype(q.dtype, "Attention")
    ins = [ctx.cast(x, cdt) for x in xs[:3]] + [ctx.cast(m, cdt) if m.dtype == q.dtype else m for m in xs[3:]]
    out = ctx.op("Attention", *ins, dtype=cdt, scale=node.attrs["scale"],
                 is_causal=1 if node.attrs["causal"] else None)
    return [ctx.cast(out, q.dtype)]


def _gemm(ctx: LoweringContext, node: Node, xs: list[OnnxValue]) -> OnnxValue | None:
    """``x @ w + b`` as one Gemm over x flattened to [M, K], where Gemm has a kernel for the dtype:
    the bias is added in the product's epilogue, the weight is prepacked once at session start, and
    a weight stored transposed is read as it lies through transB; else None.  On onnxruntime a
    bias-free product over more than two dims is one FusedMatMul over x as it lies instead (transB
    likewise, the same prepacked kernel), without the Reshapes to [M, K] and back."""
    x_t, w_t = node.inputs[0].type, node.inputs[1].type
    k, n = w_t.shape
    if x_t.rank < 2 or type(k) is not int or x_t.dtype not in supported_dtypes("Gemm", "", ctx.opset):
        return None
    w = ctx.transposed_weight(node.inputs[1])
    lead = tuple(x_t.shape[:-1])
    x = xs[0]
    if x_t.rank > 2 and len(xs) == 2 and ctx.target == "onnxruntime" and \
            x_t.dtype in supported_dtypes("FusedMatMul", MS_DOMAIN, ctx.opset):
        # no bias to add in an epilogue: one MatMul over the leading dims as they are, without the Reshapes to
        # [M, K] and back (two nodes a linear; a Qwen2 / Llama layer's step has four such linears, o_proj, gate,
        # up and down, and the lm_head one more); FusedMatMul reads a transposed weight through transB,
        # prepacked as Gemm's
        return ctx.op("FusedMatMul", x, xs[1] if w is None else w, domain=MS_DOMAIN,
                      transB=None if w is None else 1)
    if x_t.rank > 2:
        m = D.dim_prod(lead)
        x = ctx.op("Reshape", x, ctx.ints([m if type(m) is int else -1, k]))
    y = ctx.op("Gemm", x, xs[1] if w is None else w, xs[2] if len(xs) == 3 else None,
               transB=None if w is None else 1)
    return y if x_t.rank == 2 else ctx.op("Reshape", y, ctx.dims(lead + (n,)))


@register_lowering("linear")
def _lower_linear(ctx, node, xs):
    # Gemm's bias epilogue plus a plain activation beats a bias-taking activation (BiasGelu, FastGelu
    # with bias): ORT's kernels for those are slower than its Gelu
    y = _gemm(ctx, node, xs)
    if y is None:
        y = ctx.kernel("MatMul", xs[0], xs[1])
        if len(xs) == 3:
            y = ctx.kernel("Add", y, xs[2])
    return [apply_activation(ctx, y, node.attrs["activation"])]
