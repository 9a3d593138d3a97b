"""ONNX resampling rules: Resize / Upsample, GridSample, RoiAlign, DeformConv."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ...ir import Value
from ...ops import registry
from ...ops.nn import GRID_MODE_OLD_NAMES
from ...ops.resize import onnx_resize_targets, onnx_roi, resize_taps, taps_bytes
from .context import IMPORT_VALUE_BYTES, NodeContext, OnnxImportError, conv_attrs, norm_axis, reshape, rule

__all__: list[str] = []


def _check_budget(ctx: NodeContext, size: int, out: int, scale: float, attrs: dict[str, Any], itemsize: int) -> None:
    """Refuse an axis whose interpolation tables (built at import or when the ``resize`` op is
    decomposed) would exceed the import budget."""
    need = taps_bytes(out, scale, attrs, itemsize)
    if need > IMPORT_VALUE_BYTES:
        raise OnnxImportError(f"{ctx.label}: resizing an axis of {size} to {out} needs interpolation tables of "
                              f"about {need:,} bytes, over the {IMPORT_VALUE_BYTES:,} bytes a table built at "
                              "import may take")


@rule("Resize", "Upsample")
def _resize(ctx: NodeContext):
    x = ctx.input(0)
    upsample = ctx.node.op_type == "Upsample"
    attrs = {"mode": ctx.attr("mode", "nearest"), "nearest_mode": ctx.attr("nearest_mode", "round_prefer_floor"),
             "coord": ctx.attr("coordinate_transformation_mode", "half_pixel"),
             "cubic_a": ctx.attr("cubic_coeff_a", -0.75), "antialias": bool(ctx.attr("antialias", 0)),
             "exclude_outside": bool(ctx.attr("exclude_outside", 0))}
    if attrs["mode"] == "bilinear":
        attrs["mode"] = "linear"
    if upsample or ctx.opset < 11:
        # Upsample and Resize-10: (X, scales), asymmetric coordinates, nearest rounds down
        attrs.update(coord="asymmetric", nearest_mode="floor")
        scales_in, sizes_in, roi_in = (1 if ctx.opset >= 9 else None), None, None
    else:
        roi_in, scales_in, sizes_in = 1, 2, 3
    rank = x.rank
    axes = [norm_axis(ctx, a, rank) for a in ctx.attr("axes", range(rank))]
    if not all(type(x.shape[a]) is int for a in axes):
        raise ctx.unsupported("resizing a symbolic dim")
    in_sizes = [x.shape[a] for a in axes]
    policy = ctx.attr("keep_aspect_ratio_policy", "stretch")
    crop = roi_in if (roi_in is not None and attrs["coord"] == "tf_crop_and_resize"
                      and ctx.input(roi_in) is not None) else None
    if any(i is not None and ctx.dynamic(i) for i in (scales_in, sizes_in, crop)):
        # sizes, scales or region known only at run time: ONNX Resize as it stands
        target, by = _resize_target(ctx, scales_in, sizes_in)
        extra = [ctx.input(crop)] if crop is not None else []
        return [ctx.op("resize_dynamic", x, target, *extra, axes=tuple(axes), by=by, policy=policy,
                       extrapolation=float(ctx.attr("extrapolation_value", 0.0)), **attrs)]
    roi = [(0.0, 1.0)] * len(axes)
    if crop is not None:
        roi = onnx_roi(ctx.values(crop, "roi"), axes, rank)
    sizes = ctx.values(sizes_in, "sizes") if sizes_in is not None and ctx.input(sizes_in) is not None else None
    raw = None
    if sizes is None or not sizes.size:
        raw = ctx.values(scales_in, "scales") if scales_in is not None else np.asarray(ctx.attr("scales"))
    sizes, scales = onnx_resize_targets(in_sizes, axes, rank, sizes, raw, policy, roi)
    if attrs["coord"] != "tf_crop_and_resize":
        keep = [(a, out, sc) for a, size, out, sc in zip(axes, in_sizes, sizes, scales) if size != out or sc != 1.0]
        if not keep:
            return [x]
        if attrs["mode"] != "nearest" and not x.dtype.is_float:
            raise ctx.unsupported(f"{attrs['mode']} resize of {x.dtype}")
        for a, size, out, sc in zip(axes, in_sizes, sizes, scales):
            _check_budget(ctx, size, out, sc, attrs, x.dtype.itemsize)
        return [ctx.op("resize", x, axes=tuple(a for a, _, _ in keep), sizes=tuple(o for _, o, _ in keep),
                       scales=tuple(float(sc) for _, _, sc in keep), **attrs)]
    # tf_crop_and_resize: a region of interest and an extrapolation value, written out in core ops
    y = x
    extrap = ctx.attr("extrapolation_value", 0.0)
    for a, size, out, sc, rr in zip(axes, in_sizes, sizes, scales, roi):
        _check_budget(ctx, size, out, sc, attrs, x.dtype.itemsize)
        idx, wts, outside = resize_taps(size, out, sc, attrs, rr)
        if idx.shape[1] == 1 and np.all(wts[~outside] == 1) and not outside.any():
            y = ctx.op("gather", y, ctx.const(idx[:, 0]), axis=a)
            continue
        if not x.dtype.is_float:
            raise ctx.unsupported(f"{attrs['mode']} resize of {x.dtype}")
        # y[..., i, ...] = sum over taps t of wts[i, t] * y[..., idx[i, t], ...]
        taps = idx.shape[1]
        g = ctx.op("gather", y, ctx.const(idx.reshape(-1)), axis=a)
        g = reshape(ctx, g, tuple(y.shape[:a]) + (out, taps) + tuple(y.shape[a + 1:]))
        w = ctx.const(wts.astype(x.dtype.numpy).reshape((out, taps) + (1,) * (rank - a - 1)))
        y = ctx.op("reduce_sum", ctx.op("mul", g, w), axes=(a + 1,), keepdims=False)
        if outside.any():
            mask = ctx.const((outside * extrap).astype(x.dtype.numpy).reshape(
                tuple(out if i == a else 1 for i in range(rank))))
            y = ctx.op("add", y, mask)
    return [y]


def _resize_target(ctx: NodeContext, scales_in: int | None, sizes_in: int | None) -> tuple[Value, str]:
    """The given one of Resize's sizes and scales (the other is absent or empty), and which."""
    for i, by in ((sizes_in, "sizes"), (scales_in, "scales")):
        if i is not None and ctx.input(i) is not None:
            known = ctx.known(i)
            if known is None or known.size:
                return ctx.input(i), by
    raise OnnxImportError(f"{ctx.label}: Resize needs sizes or scales")


# ----- sampling: GridSample / RoiAlign / DeformConv ---------------------------------------

# GridSample-16 names its modes bilinear / bicubic; GridSample-20 renamed them linear / cubic
_GRID_SAMPLE_MODES = {16: {old: mode for mode, old in GRID_MODE_OLD_NAMES.items()},
                      20: {mode: mode for mode in GRID_MODE_OLD_NAMES}}


def _choice(ctx: NodeContext, name: str, default: str, allowed: Sequence[str]) -> str:
    value = ctx.attr(name, default)
    if value not in allowed:
        raise ctx.unsupported(f"{name}={value!r} is not one of {', '.join(allowed)} (opset {ctx.opset})")
    return value


def _float_input(ctx: NodeContext, v: Value, what: str) -> None:
    if not v.dtype.is_float:
        raise ctx.unsupported(f"{what} of dtype {v.dtype}: accelir samples float tensors only; cast it first")


@rule("GridSample")
def _grid_sample(ctx: NodeContext):
    x, grid = ctx.input(0), ctx.input(1)
    _float_input(ctx, x, "X")
    names = _GRID_SAMPLE_MODES[20 if ctx.opset >= 20 else 16]
    mode = names[_choice(ctx, "mode", "linear" if ctx.opset >= 20 else "bilinear", tuple(names))]
    pad = _choice(ctx, "padding_mode", "zeros", registry.get("grid_sample").attrs["padding_mode"].choices)
    # X and grid may differ in dtype: sample in the wider one, return X's
    dt = grid.dtype if grid.dtype.numpy.itemsize > x.dtype.numpy.itemsize else x.dtype
    y = ctx.op("grid_sample", ctx.cast(x, dt), ctx.cast(grid, dt), mode=mode, padding_mode=pad,
               align_corners=bool(ctx.attr("align_corners", 0)))
    return [ctx.cast(y, x.dtype)]


@rule("RoiAlign")
def _roi_align(ctx: NodeContext):
    x, rois, batch = ctx.input(0), ctx.input(1), ctx.input(2)
    _float_input(ctx, x, "X")
    # RoiAlign-10 has no coordinate_transformation_mode and samples as output_half_pixel does
    coords = _choice(ctx, "coordinate_transformation_mode", "half_pixel" if ctx.opset >= 16 else "output_half_pixel",
                     ("half_pixel", "output_half_pixel") if ctx.opset >= 16 else ("output_half_pixel",))
    attrs = {k: ctx.attr(k, 1) for k in ("output_height", "output_width")}
    attrs["sampling_ratio"] = ctx.attr("sampling_ratio", 0)
    if attrs["output_height"] < 1 or attrs["output_width"] < 1 or attrs["sampling_ratio"] < 0:
        raise ctx.unsupported(f"output_height / output_width must be >= 1 and sampling_ratio >= 0, got {attrs}")
    return [ctx.op("roi_align", x, ctx.cast(rois, x.dtype), batch, mode=_choice(ctx, "mode", "avg", registry.get("roi_align").attrs["mode"].choices),
                   spatial_scale=float(ctx.attr("spatial_scale", 1.0)), coordinate_transformation_mode=coords,
                   **attrs)]


@rule("DeformConv")
def _deform_conv(ctx: NodeContext):
    x, w, offset, bias, mask = (ctx.input(i) for i in range(5))
    _float_input(ctx, x, "X")
    if x.rank != 4:
        raise ctx.unsupported(f"DeformConv over {x.rank - 2} spatial dims: only 2-d (X [N, C, H, W]) is supported")
    kernel = tuple(w.shape[2:])
    if tuple(ctx.attr("kernel_shape", kernel)) != kernel:
        raise ctx.unsupported(f"kernel_shape {list(ctx.attr('kernel_shape'))} differs from W's {list(kernel)}")
    if mask is not None and bias is None:  # the IR's inputs are positional: a mask comes after a bias
        if type(w.shape[0]) is not int:
            raise ctx.unsupported("a mask without a bias needs a static output channel count")
        bias = ctx.op("broadcast_to", ctx.scalar(0, x), shape=(w.shape[0],))
    ins = [v for v in (x, w, offset, bias, mask) if v is not None]
    return [ctx.op("deform_conv", *ins, groups=ctx.attr("group", 1), offset_groups=ctx.attr("offset_group", 1),
                   **conv_attrs(ctx, x, kernel))]
