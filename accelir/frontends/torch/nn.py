"""aten network-layer rules: softmax, normalisations, sdpa, convolution, pooling."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch

from ... import dims as D
from ...ir import DType, Value
from ...ops.nn import repeat_kv
from ...ops.resize import nearest_index
from ..decompositions import conv_transpose, instance_norm
from .context import RULES, TORCH_DTYPES, NodeContext, Rule, full_like_type, rule, wrap_axis

__all__: list[str] = []


# ----- nn composites -----------------------------------------------------------------

@rule("softmax", "_softmax", "log_softmax", "_log_softmax", "special_softmax", "special_log_softmax")
def _softmax(ctx, a):
    x = ctx.cast(ctx.value(a["self"]), ctx.out_dtype)
    op = "log_softmax" if "log_softmax" in ctx.name else "softmax"
    if x.rank == 0:
        return ctx.b.op("sub", x, x) if op == "log_softmax" else ctx.b.op("div", x, x)
    return ctx.b.op(op, x, axis=wrap_axis(a["dim"], x.rank))


def _ones_for(ctx: NodeContext, x: Value, n: D.Dim, value: float) -> Value:
    return ctx.b.op("broadcast_to", ctx.const(value, x.dtype), shape=(n,))


@rule("layer_norm", "native_layer_norm")
def _layer_norm(ctx, a):
    x = ctx.value(a["input"])
    shape = list(a["normalized_shape"])
    w, bias = a["weight"], a["bias"]
    inputs = [x]
    if w is not None or bias is not None:
        inputs.append(ctx.value(w) if w is not None else ctx.b.op("broadcast_to", ctx.const(1, x.dtype),
                                                                  shape=x.shape[-len(shape):]))
    if bias is not None:
        inputs.append(ctx.value(bias))
    eps = a["eps"] if a["eps"] is not None else 1e-5
    axis = -len(shape) if shape else -1
    y = ctx.b.op("layer_norm", *inputs, axis=axis, epsilon=eps)
    if ctx.name == "native_layer_norm":
        # the saved statistics, in case the graph reads them (dead code otherwise)
        axes = tuple(range(x.rank - len(shape), x.rank))
        mean, rstd = _moments(ctx, x, axes, eps)
        return y, mean, rstd
    return y


def _moments(ctx: NodeContext, x: Value, axes: tuple[int, ...], eps: float) -> tuple[Value, Value]:
    """Mean and 1 / sqrt(biased var + eps) over ``axes``, kept as size-1 dims."""
    mean = ctx.b.op("reduce_mean", x, axes=axes, keepdims=True)
    d = ctx.b.op("sub", x, mean)
    var = ctx.b.op("reduce_mean", ctx.b.op("mul", d, d), axes=axes, keepdims=True)
    return mean, ctx.b.op("rsqrt", ctx.b.op("add", var, ctx.const(eps, x.dtype)))


@rule("rms_norm")
def _rms_norm(ctx, a):
    x = ctx.value(a["input"])
    shape = list(a["normalized_shape"])
    torch_dt = next(t for t, d in TORCH_DTYPES.items() if d is x.dtype)
    eps = a["eps"] if a["eps"] is not None else float(torch.finfo(torch_dt).eps)
    inputs = [x] + ([ctx.value(a["weight"])] if a["weight"] is not None else [])
    return ctx.b.op("rms_norm", *inputs, axis=-len(shape), epsilon=eps)


@rule("batch_norm", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit", "native_batch_norm",
      "instance_norm")
def _batch_norm(ctx, a):
    training = a.get("training", a.get("use_input_stats", False))
    x = ctx.value(a["input"])
    c = x.shape[1]
    dt = x.dtype
    w = ctx.cast(ctx.value(a["weight"]), dt) if a["weight"] is not None else _ones_for(ctx, x, c, 1.0)
    b = ctx.cast(ctx.value(a["bias"]), dt) if a["bias"] is not None else _ones_for(ctx, x, c, 0.0)
    if training or a.get("running_mean") is None:
        if ctx.name == "instance_norm":
            return instance_norm(ctx.b, x, w, b, a["eps"])
        return _batch_stats_norm(ctx, x, w, b, a["eps"])
    mean, var = ctx.value(a["running_mean"]), ctx.value(a["running_var"])
    y = ctx.b.op("batch_norm", x, w, b, *(ctx.cast(v, dt) for v in (mean, var)), epsilon=a["eps"])
    if ctx.name == "batch_norm":
        return y
    # eval-mode kernels return empty saved statistics
    return (y,) + tuple(full_like_type(ctx, 0, t) for t in ctx.out_types()[1:])


def _batch_stats_norm(ctx: NodeContext, x: Value, w: Value, b: Value, eps: float) -> Any:
    """Normalise with the statistics of this batch (training-mode batch norm).
    The running-statistics update is a state mutation, which capture rejects separately."""
    axes = (0,) + tuple(range(2, x.rank))
    mean, rstd = _moments(ctx, x, axes, eps)
    shape = (1, x.shape[1]) + (1,) * (x.rank - 2)
    y = ctx.b.op("mul", ctx.b.op("sub", x, mean), rstd)
    y = ctx.b.op("add", ctx.b.op("mul", y, ctx.b.op("reshape", w, shape=shape)), ctx.b.op("reshape", b, shape=shape))
    if ctx.name == "batch_norm":
        return y
    flat = (x.shape[1],)
    return y, ctx.b.op("reshape", mean, shape=flat), ctx.b.op("reshape", rstd, shape=flat)


@rule("group_norm")
def _group_norm(ctx, a):
    x = ctx.value(a["input"])
    g = a["num_groups"]
    n, c = x.shape[0], x.shape[1]
    if type(c) is not int:
        raise ctx.unsupported("group_norm needs a static channel dim")
    grouped = ctx.b.op("reshape", x, shape=(n, g, D.dim_prod((c // g,) + tuple(x.shape[2:]))))
    y = ctx.b.op("layer_norm", grouped, axis=-1, epsilon=a["eps"])
    y = ctx.b.op("reshape", y, shape=x.shape)
    shape = (c,) + (1,) * (x.rank - 2)
    if a["weight"] is not None:
        y = ctx.b.op("mul", y, ctx.b.op("reshape", ctx.value(a["weight"]), shape=shape))
    if a["bias"] is not None:
        y = ctx.b.op("add", y, ctx.b.op("reshape", ctx.value(a["bias"]), shape=shape))
    return y


@rule("scaled_dot_product_attention")
def _sdpa(ctx, a):
    if a["dropout_p"]:
        raise ctx.unsupported("attention dropout is random; pass dropout_p=0 (model.eval()) before capture")
    q, k, v = (ctx.value(a[n]) for n in ("query", "key", "value"))
    hq, hk = q.shape[-3] if q.rank >= 3 else None, k.shape[-3] if k.rank >= 3 else None
    if hq != hk and type(hq) is int and type(hk) is int and hk not in (1,) and hq % hk == 0:
        k, v = (repeat_kv(ctx.b, t, hq // hk) for t in (k, v))
    inputs = [q, k, v]
    mask = a["attn_mask"]
    if mask is None:
        return ctx.b.op("attention", *inputs, scale=a["scale"], causal=bool(a["is_causal"]))
    m = ctx.value(mask)
    m = m if m.dtype is DType.bool else ctx.cast(m, q.dtype)
    y = ctx.b.op("attention", *inputs, m, scale=a["scale"], causal=bool(a["is_causal"]))
    # torch gives zeros, not NaN, for a query row whose keys are all masked out
    keep = m if m.dtype is DType.bool else ctx.b.op("ne", m, ctx.const(-np.inf, m.dtype))
    any_key = ctx.b.op("reduce_any", keep, axes=(m.rank - 1,), keepdims=True)
    return ctx.b.op("where", any_key, y, ctx.const(0, y.dtype))


def _ntuple(v: Any, n: int) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * n
    v = tuple(v)
    return v * n if len(v) == 1 else v


@rule("conv1d", "conv2d", "conv3d", "convolution", "_convolution", "conv_transpose1d", "conv_transpose2d",
      "conv_transpose3d")
def _conv(ctx, a):
    x, w = ctx.value(a["input"]), ctx.value(a["weight"])
    n = w.rank - 2
    unbatched = x.rank == n + 1
    if unbatched:
        x = ctx.b.op("unsqueeze", x, axes=(0,))
    stride, dilation = _ntuple(a["stride"], n), _ntuple(a["dilation"], n)
    groups = a["groups"]
    transposed = a.get("transposed", False) or ctx.name.startswith("conv_transpose")
    padding = a["padding"]
    if transposed:
        try:
            y = conv_transpose(ctx.b, x, w, stride, _ntuple(padding, n), dilation,
                               _ntuple(a.get("output_padding", 0), n), groups)
        except NotImplementedError as e:
            raise ctx.unsupported(str(e)) from None
    else:
        if isinstance(padding, str):
            pads = _string_padding(ctx, padding, w, stride, dilation)
        else:
            pads = tuple((p, p) for p in _ntuple(padding, n))
        y = ctx.b.op("conv", x, w, stride=stride, padding=pads, dilation=dilation, groups=groups)
    if a["bias"] is not None:
        y = _add_channel_bias(ctx, y, ctx.value(a["bias"]))
    return ctx.b.op("squeeze", y, axes=(0,)) if unbatched else y


def _add_channel_bias(ctx: NodeContext, y: Value, bias: Value) -> Value:
    node = y.producer
    if node is not None and node.op == "conv" and len(node.inputs) == 2 and len(y.uses()) == 0:
        attrs = dict(node.attrs)
        ctx.conv.graph.remove(node)
        return ctx.b.op("conv", node.inputs[0], node.inputs[1], bias, **attrs)
    shape = (1, bias.shape[0]) + (1,) * (y.rank - 2)
    return ctx.b.op("add", y, ctx.b.op("reshape", bias, shape=shape))


def _string_padding(ctx: NodeContext, mode: str, w: Value, stride, dilation) -> tuple:
    if mode == "valid":
        return tuple((0, 0) for _ in stride)
    if any(s != 1 for s in stride):
        raise ctx.unsupported("padding='same' needs stride 1")
    pads = []
    for k, d in zip(w.shape[2:], dilation):
        total = d * (k - 1)
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


def _pool_rule(kind: str, n: int) -> Rule:
    def fn(ctx, a):
        x = ctx.value(a["self"])
        unbatched = x.rank == n + 1
        if unbatched:
            x = ctx.b.op("unsqueeze", x, axes=(0,))
        kernel = _ntuple(a["kernel_size"], n)
        stride = _ntuple(a["stride"], n) if a["stride"] else kernel
        pads = tuple((p, p) for p in _ntuple(a["padding"], n))
        attrs = dict(kernel=kernel, stride=stride, padding=pads, ceil_mode=bool(a["ceil_mode"]))
        if kind == "max_pool":
            attrs["dilation"] = _ntuple(a["dilation"], n)
        else:
            if a.get("divisor_override"):
                raise ctx.unsupported("avg_pool with divisor_override is not supported")
            attrs["count_include_pad"] = bool(a["count_include_pad"])
        y = ctx.b.op(kind, x, **attrs)
        if ctx.name.endswith("with_indices"):
            i = _max_pool_indices(ctx, x, y, kernel, stride, pads, attrs["dilation"])
            if unbatched:
                y, i = (ctx.b.op("squeeze", v, axes=(0,)) for v in (y, i))
            return y, i
        return ctx.b.op("squeeze", y, axes=(0,)) if unbatched else y
    return fn


def _max_pool_indices(ctx: NodeContext, x: Value, y: Value, kernel, stride, pads, dilation) -> Value:
    """torch's max-pool indices: for each output, the flat position in its [N, C] plane of the window's
    first maximum in kernel order (a NaN taken as it comes; an all -inf window keeps its first real
    position).  A running argmax over the kernel taps, each tap a strided slice of the padded input
    and of the padded plane of positions (-1 in the padding, which is never taken)."""
    n = len(kernel)
    spatial, out = x.shape[2:], y.shape[2:]
    if not all(type(d) is int for d in tuple(spatial) + tuple(out)):
        raise ctx.unsupported("max_pool indices need static spatial dims")
    b = ctx.b
    # right padding so that every window ceil_mode admits lies inside
    widths = tuple((lo, max(0, (o - 1) * s + (k - 1) * d + 1 - size - lo))
                   for (lo, _), o, s, k, d, size in zip(pads, out, stride, kernel, dilation, spatial))
    xp = b.op("pad", x, pads=((0, 0), (0, 0)) + widths, value=float(x.dtype.lowest))
    plane = b.const(np.arange(int(np.prod(spatial)), dtype=np.int64).reshape(spatial))
    pos = b.op("pad", plane, pads=widths, value=-1.0)
    best = b.scalar(x.dtype.lowest, x)
    index = b.scalar(-1, DType.i64)
    for tap in itertools.product(*(range(k) for k in kernel)):
        starts = [t * d for t, d in zip(tap, dilation)]
        stops = [st + (o - 1) * s + 1 for st, o, s in zip(starts, out, stride)]
        v = b.op("slice", xp, starts=starts, stops=stops, steps=stride, axes=tuple(range(2, 2 + n)))
        p = b.op("slice", pos, starts=starts, stops=stops, steps=stride, axes=tuple(range(n)))
        first = b.op("and", b.op("lt", index, b.scalar(0, DType.i64)), b.op("ge", p, b.scalar(0, DType.i64)))
        take = b.op("or", b.op("gt", v, best), first)
        if x.dtype.is_float:
            take = b.op("or", take, b.op("isnan", v))
        best = b.op("where", take, v, best)
        index = b.op("where", take, p, index)
    return index


for _n in (1, 2, 3):
    RULES.add(_pool_rule("max_pool", _n), f"max_pool{_n}d", f"max_pool{_n}d_with_indices")
    RULES.add(_pool_rule("avg_pool", _n), f"avg_pool{_n}d")


def _adaptive_rule(kind: str, n: int) -> Rule:
    def fn(ctx, a):
        x = ctx.value(a["self"])
        spatial = x.shape[-n:]
        out = ctx.out_shape[-n:]
        axes = tuple(range(x.rank - n, x.rank))
        if all(o == 1 for o in out):
            return ctx.b.op("reduce_mean" if kind == "avg_pool" else "reduce_max", x, axes=axes, keepdims=True)
        if not all(type(s) is int for s in spatial):
            raise ctx.unsupported("adaptive pooling over symbolic spatial dims is not supported")
        if not all(s % o == 0 for s, o in zip(spatial, out)):
            return _adaptive_windows(ctx, x, kind, out)
        kernel = tuple(s // o for s, o in zip(spatial, out))
        unbatched = x.rank == n + 1
        if unbatched:
            x = ctx.b.op("unsqueeze", x, axes=(0,))
        y = ctx.b.op(kind, x, kernel=kernel, stride=kernel)
        return ctx.b.op("squeeze", y, axes=(0,)) if unbatched else y
    return fn


def _adaptive_windows(ctx: NodeContext, x: Value, kind: str, out: tuple) -> Value:
    """Adaptive pooling with uneven windows [floor(i*L/O), ceil((i+1)*L/O)), one spatial
    dim at a time (mean and max over a box are separable)."""
    reduce = "reduce_mean" if kind == "avg_pool" else "reduce_max"
    n = len(out)
    for k, o in enumerate(out):
        ax = x.rank - n + k
        size = x.shape[ax]
        parts = []
        for i in range(o):
            lo, hi = (i * size) // o, -((-(i + 1) * size) // o)
            win = ctx.b.op("slice", x, starts=(lo,), stops=(hi,), axes=(ax,))
            parts.append(ctx.b.op(reduce, win, axes=(ax,), keepdims=True))
        x = parts[0] if len(parts) == 1 else ctx.b.op("concat", *parts, axis=ax)
    return x


for _n in (1, 2, 3):
    RULES.add(_adaptive_rule("avg_pool", _n), f"adaptive_avg_pool{_n}d", f"_adaptive_avg_pool{_n}d")
    RULES.add(_adaptive_rule("max_pool", _n), f"adaptive_max_pool{_n}d")


@rule("im2col")
def _im2col(ctx, a):
    """nn.Unfold: each kernel offset is one strided slice of the zero-padded input, and the slices
    stacked after the channel axis give torch's (channel, kernel row, kernel column) order.  Slices
    copy, so the result is exact in every dtype (a one-hot convolution would turn inf into nan)."""
    x = ctx.value(a["self"])
    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = _window(a)
    if ph or pw:
        x = ctx.b.op("pad", x, pads=((0, 0),) * (x.rank - 2) + ((ph, ph), (pw, pw)), value=0.0)
    h, w = x.shape[-2:]
    if not (isinstance(h, int) and isinstance(w, int)):
        raise ctx.unsupported("im2col of an input with dynamic height or width (accelir takes static sizes)")
    oh, ow = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
    axis = x.rank - 2  # the slices stack here, after the channel axis
    parts = [ctx.b.op("unsqueeze", ctx.b.op("slice", x, starts=(i * dh, j * dw),
                                            stops=(i * dh + (oh - 1) * sh + 1, j * dw + (ow - 1) * sw + 1),
                                            steps=(sh, sw), axes=(axis, axis + 1)), axes=(axis,))
             for i in range(kh) for j in range(kw)]
    y = parts[0] if len(parts) == 1 else ctx.b.op("concat", *parts, axis=axis)
    return ctx.b.op("reshape", y, shape=ctx.out_shape)


@rule("col2im")
def _col2im(ctx, a):
    """nn.Fold, im2col's adjoint: every column element is added into the output pixel its kernel offset
    and window position land on.  The targets are known at capture, so this is one scatter-add of a
    constant index into the zero-padded plane, then the padding cut off."""
    x = ctx.value(a["self"])
    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = _window(a)
    h, w = _ntuple(a["output_size"], 2)
    hp, wp = h + 2 * ph, w + 2 * pw
    oh, ow = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
    lead = tuple(ctx.out_shape[:-2])  # (N, C) or (C,)
    i, j, y, z = np.meshgrid(np.arange(kh), np.arange(kw), np.arange(oh), np.arange(ow), indexing="ij")
    target = ((i * dh + y * sh) * wp + (j * dw + z * sw)).reshape(-1)  # (kernel offset, window) -> pixel
    cols = ctx.b.op("reshape", x, shape=lead + (target.size,))
    index = ctx.b.op("broadcast_to", ctx.const(target, DType.i64), shape=lead + (target.size,))
    zeros = ctx.b.op("broadcast_to", ctx.const(0, x.dtype), shape=lead + (hp * wp,))
    plane = ctx.b.op("scatter_elements", zeros, index, cols, axis=len(lead), reduction="add")
    plane = ctx.b.op("reshape", plane, shape=lead + (hp, wp))
    if ph or pw:
        plane = ctx.b.op("slice", plane, starts=(ph, pw), stops=(ph + h, pw + w), steps=(1, 1),
                         axes=(len(lead), len(lead) + 1))
    return plane


def _window(a: dict) -> tuple[tuple[int, ...], ...]:
    """(kernel, dilation, padding, stride) of an im2col / col2im call, each as (height, width)."""
    return tuple(_ntuple(a[k], 2) for k in ("kernel_size", "dilation", "padding", "stride"))


# ----- interpolation (F.interpolate) ------------------------------------------------------------
# Where torch's kernels sample the input, in ONNX Resize's terms: legacy nearest reads floor(i / s)
# (asymmetric, floor); nearest-exact reads floor((i + 0.5) / s) (half_pixel, round half up); linear
# and cubic read (i + 0.5) / s - 0.5 (half_pixel; torch's clamp of negative coordinates for linear
# lands on the same pixel as clamping the index) or, with align_corners, i * (in - 1) / (out - 1).
# s is the caller's scale factor when given (torch divides by it), else out / in. Nearest rounds in
# float32, which can pick a neighbouring pixel at exact boundaries: those take a gather of torch's own
# index table.

_INTERPOLATE_MODES = {"nearest": "nearest", "_nearest_exact": "nearest", "linear": "linear",
                      "bilinear": "linear", "trilinear": "linear", "bicubic": "cubic"}


def _interpolate(ctx: NodeContext, a: dict[str, Any], kind: str, antialias: bool) -> Value:
    x = ctx.value(a["input"])
    out_shape = ctx.out_shape
    spatial = range(2, x.rank)
    sizes = tuple(out_shape[d] for d in spatial)
    if not all(type(s) is int for s in sizes) or not all(type(x.shape[d]) is int for d in spatial):
        raise ctx.unsupported("interpolating a symbolic spatial dim; give example inputs of the size to compile "
                              "for, or keep the spatial dims static in dynamic_shapes")
    align = bool(a.get("align_corners") or False)
    factors = a.get("scale_factors")
    if factors is not None and not align:
        scales = tuple(float(f) for f in factors)
    else:
        scales = tuple(o / x.shape[d] for o, d in zip(sizes, spatial))
    mode = _INTERPOLATE_MODES[kind]
    if mode == "nearest":
        exact = kind == "_nearest_exact"
        attrs = {"coord": "half_pixel" if exact else "asymmetric",
                 "nearest_mode": "round_prefer_ceil" if exact else "floor"}
        tables = [_torch_nearest_index(x.shape[d], out, factors[k] if factors is not None else None, exact)
                  for k, (d, out) in enumerate(zip(spatial, sizes))]
        agree = all(np.array_equal(t, nearest_index(x.shape[d], out, sc, attrs))
                    for t, d, out, sc in zip(tables, spatial, sizes, scales))
        if not agree:
            # torch rounds in float32: where that picks another pixel than Resize's formula, gather
            # exactly the pixels torch picks
            y = x
            for t, d in zip(tables, spatial):
                y = ctx.b.op("gather", y, ctx.const(t), axis=d)
            return y
    else:
        attrs = {"coord": "align_corners" if align else "half_pixel", "cubic_a": -0.75}
        if antialias:
            # torch's antialiased kernels (PIL's): taps outside the image are left out, not clamped to
            # its edge, and bicubic is Keys' a = -0.5
            attrs.update(exclude_outside=True, cubic_a=-0.5 if mode == "cubic" else -0.75)
    return ctx.b.op("resize", x, axes=tuple(spatial), sizes=sizes, scales=scales, mode=mode,
                    antialias=antialias, **attrs)


def _torch_nearest_index(size: int, out: int, factor: float | None, exact: bool) -> np.ndarray:
    """The input pixel torch's nearest kernels read for each output pixel, with their float32
    arithmetic (aten/src/ATen/native/UpSample.h: nearest_idx, nearest_neighbor_exact_compute_source_index)."""
    i = np.arange(out)
    if not exact and out == size:
        return i
    if not exact and out == 2 * size:
        return i >> 1
    scale = np.float32(1.0 / factor) if factor is not None and factor > 0 else np.float32(size) / np.float32(out)
    pos = (i.astype(np.float32) + np.float32(0.5)) * scale if exact else i.astype(np.float32) * scale
    return np.minimum(np.floor(pos).astype(np.int64), size - 1)


def _interpolate_rule(kind: str, antialias: bool = False) -> Rule:
    def rule_fn(ctx, a):
        return _interpolate(ctx, a, kind, antialias)
    return rule_fn


for _kind, _names in {"nearest": ("upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d"),
                      "_nearest_exact": ("_upsample_nearest_exact1d", "_upsample_nearest_exact2d",
                                         "_upsample_nearest_exact3d"),
                      "linear": ("upsample_linear1d",), "bilinear": ("upsample_bilinear2d",),
                      "trilinear": ("upsample_trilinear3d",), "bicubic": ("upsample_bicubic2d",)}.items():
    RULES.add(_interpolate_rule(_kind), *_names)
RULES.add(_interpolate_rule("bilinear", antialias=True), "_upsample_bilinear2d_aa")
RULES.add(_interpolate_rule("bicubic", antialias=True), "_upsample_bicubic2d_aa")
