"""ONNX rules of the data-dependent ops (accelir/ops/dynamic.py): each is the ONNX op of the
same meaning, emitted directly; ONNX Runtime sizes the results at run time."""

from __future__ import annotations

import numpy as np
from onnx import numpy_helper

from accelir.ir import DType

from .context import SAME, register_lowering
from .kernels import ONNX_DTYPE


def _i64(ctx, v):
    return ctx.cast(v, DType.i64)


@register_lowering("nonzero")
def _lower_nonzero(ctx, node, xs):
    return [ctx.kernel("NonZero", xs[0], result=DType.i64)]


@register_lowering("unique")
def _lower_unique(ctx, node, xs):
    axis = node.attrs["axis"]
    extra = {} if axis is None else {"axis": axis}
    return list(ctx.kernel("Unique", xs[0], results=(SAME, DType.i64, DType.i64, DType.i64),
                           sorted=int(node.attrs["sorted"]), **extra))


@register_lowering("compress")
def _lower_compress(ctx, node, xs):
    axis = node.attrs["axis"]
    compute = DType.f32 if xs[0].dtype is DType.bf16 else None  # exact: Compress only moves data
    return [ctx.kernel("Compress", xs[0], xs[1], compute=compute, **({} if axis is None else {"axis": axis}))]


@register_lowering("non_max_suppression")
def _lower_nms(ctx, node, xs):
    ins = [ctx.cast(xs[0], DType.f32), ctx.cast(xs[1], DType.f32)]
    if len(xs) > 2:
        ins.append(_i64(ctx, xs[2]))
    ins += [ctx.op("Reshape", ctx.cast(x, DType.f32), ctx.ints([1])) for x in xs[3:]]
    return [ctx.op("NonMaxSuppression", *ins, dtype=DType.i64,
                   center_point_box=node.attrs["center_point_box"])]


@register_lowering("reshape_dynamic")
def _lower_reshape_dynamic(ctx, node, xs):
    extra = {"allowzero": 1} if node.attrs["allowzero"] else {}
    return [ctx.kernel("Reshape", xs[0], _i64(ctx, xs[1]), **extra)]


@register_lowering("expand_dynamic")
def _lower_expand_dynamic(ctx, node, xs):
    return [ctx.kernel("Expand", xs[0], _i64(ctx, xs[1]))]


@register_lowering("slice_dynamic")
def _lower_slice_dynamic(ctx, node, xs):
    x, rest = xs[0], [_i64(ctx, v) for v in xs[1:]]
    if node.attrs["axes"] is not None:
        rest = rest[:2] + [ctx.ints(node.attrs["axes"])] + rest[2:]
    return [ctx.kernel("Slice", x, *rest)]


@register_lowering("tile_dynamic")
def _lower_tile_dynamic(ctx, node, xs):
    return [ctx.kernel("Tile", xs[0], _i64(ctx, xs[1]))]


@register_lowering("pad_dynamic")
def _lower_pad_dynamic(ctx, node, xs):
    x = xs[0]
    cdt = ctx.compute_dtype(x.dtype, "Pad")
    value = ctx.cast(xs[2], cdt) if len(xs) > 2 else None
    axes = node.attrs["axes"]
    ins = [ctx.cast(x, cdt), _i64(ctx, xs[1]), value]
    if len(xs) == 4:
        ins.append(_i64(ctx, xs[3]))
    elif axes is not None:
        ins.append(ctx.ints(axes))
    return [ctx.cast(ctx.op("Pad", *ins, mode=node.attrs["mode"]), x.dtype)]


@register_lowering("range_dynamic")
def _lower_range_dynamic(ctx, node, xs):
    return [ctx.kernel("Range", *xs)]


@register_lowering("topk_dynamic")
def _lower_topk_dynamic(ctx, node, xs):
    t = node.inputs[0].type
    k = ctx.op("Reshape", _i64(ctx, xs[1]), ctx.ints([1]))
    return list(ctx.kernel("TopK", xs[0], k, results=(SAME, DType.i64), axis=node.attrs["axis"] % t.rank,
                           largest=int(node.attrs["largest"]), sorted=1))


@register_lowering("constant_of_shape")
def _lower_constant_of_shape(ctx, node, xs):
    dt = node.attrs["dtype"]
    value = numpy_helper.from_array(np.asarray([node.attrs["value"]]).astype(dt.numpy))
    shape = _i64(ctx, xs[0])
    out = ctx.op("ConstantOfShape", shape, dtype=dt, value=value)
    bound = node.attrs["bound"]
    if bound is None:
        return [out]
    # the bound is a check of the model's (torch.export's range of an .item()): ONNX has no assert, so a
    # ConstantOfShape of min(bound - shape, 0) fails on a dim past the bound and is otherwise empty (it
    # allocates nothing, whatever the bound); it joins the output, so it runs
    over = ctx.op("Min", ctx.op("Sub", ctx.ints([bound]), shape), ctx.ints([0]))
    none = ctx.op("ConstantOfShape", over, dtype=dt, value=value)
    return [ctx.op("Concat", out, none, axis=0)]


@register_lowering("reduce_dynamic")
def _lower_reduce_dynamic(ctx, node, xs):
    op_type = "Reduce" + node.attrs["kind"].capitalize()
    x = xs[0]
    compute = DType.u8 if x.dtype is DType.bool else None  # max / min of bool: any / all in 0 / 1
    out = ctx.kernel(op_type, x, _i64(ctx, xs[1]), compute=compute, keepdims=int(node.attrs["keepdims"]),
                     noop_with_empty_axes=int(node.attrs["noop_with_empty_axes"]))
    return [out]


def _resize_attrs(a) -> dict:
    """The Resize attributes that ``resize_dynamic`` passes on unchanged."""
    return dict(axes=list(a["axes"]), mode=a["mode"], nearest_mode=a["nearest_mode"], cubic_coeff_a=a["cubic_a"],
                exclude_outside=int(a["exclude_outside"]), antialias=int(a["antialias"]))


@register_lowering("resize_dynamic")
def _lower_resize_dynamic(ctx, node, xs):
    a = node.attrs
    if a["by"] == "scales" and a["coord"] == "align_corners":
        return [_align_corners_by_scales(ctx, node, xs[0], xs[1])]
    target = [xs[1], None] if a["by"] == "scales" else [None, _i64(ctx, xs[1])]
    roi = ctx.cast(xs[2], DType.f32) if len(xs) > 2 else None
    extra = {"extrapolation_value": a["extrapolation"]} if roi is not None else {}
    return [ctx.kernel("Resize", xs[0], roi, *target, **_resize_attrs(a), **extra,
                       coordinate_transformation_mode=a["coord"], keep_aspect_ratio_policy=a["policy"])]


def _align_corners_by_scales(ctx, node, x, scales):
    """ONNX's align_corners maps output i to i (in - 1) / (in * scale - 1), with the unrounded output
    length in * scale, where onnxruntime's kernel divides by the rounded one (they differ when
    in * scale is not whole).  tf_crop_and_resize by the same scales over the region
    [0, (out - 1) / (in * scale - 1)], out = floor(in * scale), is the reference's map, the region
    computed at run time (in f64, as the reference computes the sizes).  By scales, not by sizes:
    given its input's size, the kernel leaves an axis alone and ignores the region.  Linear and
    cubic only: a nearest pick can flip where the map's float32 rounding crosses a half, and the
    kernel's antialiased filter reads neither map; those are refused."""
    a = node.attrs
    if a["mode"] == "nearest" or a["antialias"]:
        kind = "antialiased" if a["antialias"] else "nearest"
        raise ctx.error(f"onnxruntime's Resize cannot compute {kind} align_corners resizing as ONNX does when the "
                        "scales are a run-time value; bind them at import with static_inputs=...")
    axes, rank = list(a["axes"]), node.inputs[0].rank
    if node.inputs[1].shape[0] == rank and len(axes) != rank:  # scales given for every dim
        scales = ctx.op("Gather", scales, ctx.ints(axes), axis=0)
    lengths = ctx.op("Gather", ctx.op("Shape", x, dtype=DType.i64), ctx.ints(axes), axis=0)
    wide = ctx.op("Mul", ctx.cast(scales, DType.f64), ctx.cast(lengths, DType.f64))
    out = ctx.op("Floor", wide)
    one, zero = ctx.const(np.asarray(1.0)), ctx.const(np.asarray(0.0))
    ends = ctx.op("Where", ctx.op("Greater", out, one, dtype=DType.bool),
                  ctx.op("Div", ctx.op("Sub", out, one), ctx.op("Sub", wide, one)), zero)
    roi = ctx.cast(ctx.op("Concat", ctx.const(np.zeros(len(axes))), ends, axis=0), DType.f32)
    return ctx.kernel("Resize", x, roi, scales, None, **_resize_attrs(a),
                      coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=0.0)


@register_lowering("squeeze_dynamic", "unsqueeze_dynamic")
def _lower_squeeze_dynamic(ctx, node, xs):
    op_type = "Squeeze" if node.op == "squeeze_dynamic" else "Unsqueeze"
    return [ctx.kernel(op_type, xs[0], _i64(ctx, xs[1]))]


@register_lowering("split_dynamic")
def _lower_split_dynamic(ctx, node, xs):
    n = node.attrs["outputs"]
    return list(ctx.kernel("Split", xs[0], _i64(ctx, xs[1]), results=(SAME,) * n, axis=node.attrs["axis"]))


# the signal and image ops of accelir/ops/runtime_sized.py: their ONNX ops, with the run-time operands

@register_lowering("affine_grid_dynamic")
def _lower_affine_grid_dynamic(ctx, node, xs):
    return [ctx.kernel("AffineGrid", xs[0], _i64(ctx, xs[1]), align_corners=int(node.attrs["align_corners"]))]


@register_lowering("col2im_dynamic")
def _lower_col2im_dynamic(ctx, node, xs):
    a = node.attrs
    return [ctx.kernel("Col2Im", xs[0], _i64(ctx, xs[1]), _i64(ctx, xs[2]), strides=list(a["strides"]),
                       dilations=list(a["dilations"]), pads=list(a["pads"]))]


@register_lowering("dft_dynamic")
def _lower_dft_dynamic(ctx, node, xs):
    length = _i64(ctx, xs[2]) if len(xs) > 2 else None
    return [ctx.kernel("DFT", xs[0], length, _i64(ctx, xs[1]), inverse=int(node.attrs["inverse"]),
                       onesided=int(node.attrs["onesided"]))]


@register_lowering("stft_dynamic")
def _lower_stft_dynamic(ctx, node, xs):
    return [ctx.kernel("STFT", xs[0], _i64(ctx, xs[1]), xs[2], onesided=int(node.attrs["onesided"]))]


@register_lowering("mel_weight_matrix_dynamic")
def _lower_mel_weight_matrix_dynamic(ctx, node, xs):
    dt = node.attrs["dtype"]
    cdt = dt if dt in (DType.f32, DType.f64) else DType.f32  # computed in float, as ONNX's reference does
    ints = [_i64(ctx, x) for x in xs[:3]]
    edges = [ctx.cast(x, DType.f32) for x in xs[3:]]
    out = ctx.op("MelWeightMatrix", *ints, *edges, dtype=cdt, output_datatype=ONNX_DTYPE[cdt])
    return [ctx.cast(out, dt)]
