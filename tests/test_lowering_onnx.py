"""ONNX lowering: every op against the interpreter on ONNX Runtime, for every dtype it takes.

Each case builds a one-node graph, lowers it (``target="onnxruntime"`` for every
dtype; ``target="standard"`` for f32, also run through the ONNX checker), runs it on
the CPU execution provider and compares with ``accelir.interpret`` on the same
random inputs (fixed seeds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import pytest

import accelir
from accelir import DType, Graph, LoweringError, TensorType, interpret, parse
from accelir.lowering.onnx import rule_for, to_onnx
from accelir.lowering.onnxruntime import OnnxRuntimeModule
from accelir.ops import REGISTRY, TypeRuleError, infer_types, normalize_attrs
from accelir.ops.dynamic import DATA_DEPENDENT_OPS
from accelir.errors import VerificationError
from accelir.testing import assert_close

ALL_DTYPES = list(DType)

# (op, dtype) pairs with no exact ONNX Runtime CPU kernel: the lowering must refuse them by name.
KNOWN_GAPS = {
    ("conv", DType.f64), ("fused_conv", DType.f64),
    ("max_pool", DType.i16), ("max_pool", DType.i32), ("max_pool", DType.i64),
    ("max_pool", DType.u16), ("max_pool", DType.u32), ("max_pool", DType.u64),
    # onnxruntime has no uint64 kernel for these, and int64 reads the top bit as a sign
    ("div", DType.u64), ("rem", DType.u64), ("pow", DType.u64),
    ("avg_pool", DType.f64),
    *((op, DType.f64) for op in ("tan", "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "erf",
                                 "atan2")),
}
KNOWN_CASE_GAPS = {("gelu", DType.f64), ("linear-gelu", DType.f64),  # erf, through the decomposition
                   # scatter with a reduction: no uint64 kernel, and int64 reads the top bit as a sign
                   *((f"{op}-{r}", DType.u64) for op in ("scatter_elements", "scatter_nd")
                     for r in ("add", "mul", "max", "min"))}


@dataclass
class Arg:
    shape: tuple
    kind: str = "any"
    dtype: DType | None = None  # fixed dtype; None: the case's dtype
    high: int = 0  # index inputs: values in [-high, high)


@dataclass
class Case:
    op: str
    args: list[Arg]
    attrs: dict[str, Any] = field(default_factory=dict)
    regions: tuple = ()
    label: str = ""
    dtypes: tuple | None = None

    @property
    def id(self) -> str:
        return f"{self.op}{'-' + self.label if self.label else ''}"


def _gen(arg: Arg, dt: DType, rng: np.random.Generator) -> np.ndarray:
    shape = arg.shape
    if dt is DType.bool:
        return np.asarray(rng.random(shape) < 0.5)
    if arg.kind == "index":
        return rng.integers(-arg.high, arg.high, shape).astype(dt.numpy)
    if arg.kind == "pindex":
        return rng.integers(0, arg.high, shape).astype(dt.numpy)
    if dt.is_int:
        lo, hi = {"any": (-20, 21), "pos": (1, 6), "small": (-3, 4), "divisor": (-5, 6), "unit": (-1, 2),
                  "ge1": (1, 5), "exp": (-2, 4)}[arg.kind]
        if not dt.is_signed:
            lo = max(lo, 0)
        return rng.integers(lo, hi, shape).astype(dt.numpy)
    if arg.kind == "any":  # half-integers: exercises ties in compares, sorts and round half to even
        x = np.round(rng.normal(size=shape) * 4) / 2 + rng.normal(size=shape) * (rng.random(shape) < 0.5)
    elif arg.kind == "pos":
        x = rng.uniform(0.5, 3.0, shape)
    elif arg.kind in ("unit", "small"):
        x = rng.uniform(-0.9, 0.9, shape)
    elif arg.kind == "ge1":
        x = rng.uniform(1.1, 3.0, shape)
    elif arg.kind == "divisor":
        x = rng.choice([-1, 1], shape) * rng.uniform(0.5, 2.0, shape)
    elif arg.kind == "exp":
        x = rng.uniform(-2, 2, shape)
    elif arg.kind == "scale":  # quantisation scales: the integer results stay mostly inside their range
        x = rng.uniform(0.002, 0.02, shape)
    elif arg.kind == "grid":  # normalised sample coordinates, some outside [-1, 1] to exercise the padding
        x = rng.uniform(-1.3, 1.3, shape)
    elif arg.kind == "roi":  # boxes (x1, y1, x2, y2), some reaching past the image
        corner = rng.uniform(-2, 6, shape[:-1] + (2,))
        x = np.concatenate([corner, corner + rng.uniform(0, 5, shape[:-1] + (2,))], axis=-1)
    else:
        raise ValueError(arg.kind)
    return x.astype(dt.numpy)


def _x(*shape, kind="any"):
    return Arg(shape, kind)


def _idx(*shape, high, dtype=DType.i64, kind="index"):
    return Arg(shape, kind, dtype, high)


UNARY_KIND = {"log": "pos", "sqrt": "pos", "rsqrt": "pos", "reciprocal": "divisor", "log1p": "unit",
              "asin": "unit", "acos": "unit", "atanh": "unit", "acosh": "ge1", "expm1": "exp", "exp": "exp",
              "tan": "unit", "cosh": "exp", "sinh": "exp"}
UNARY = ["neg", "abs", "exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "sin", "cos", "tan", "asin", "acos", "atan",
         "sinh", "cosh", "asinh", "acosh", "atanh", "tanh", "sigmoid", "erf", "floor", "ceil", "round", "sign",
         "reciprocal", "relu", "not", "isnan", "isinf", "gelu", "silu"]
BINARY = ["add", "sub", "mul", "max", "min", "atan2", "and", "or", "xor", "eq", "ne", "lt", "le", "gt", "ge"]


def _region(text: str, **constants: Any) -> Graph:
    return accelir.parse(text, {k: np.asarray(v) for k, v in constants.items()})


def _cases() -> list[Case]:
    c: list[Case] = []
    for op in UNARY:
        c.append(Case(op, [_x(2, 3, 4, kind=UNARY_KIND.get(op, "any"))]))
    c.append(Case("gelu", [_x(2, 3, 4)], {"approximate": "tanh"}, label="tanh"))
    for op in BINARY:
        c.append(Case(op, [_x(2, 3, 4), _x(3, 4)]))
    c.append(Case("div", [_x(2, 3, 4), _x(2, 3, 4, kind="divisor")]))
    c.append(Case("rem", [_x(2, 3, 4), _x(2, 3, 4, kind="divisor")]))
    c.append(Case("pow", [_x(2, 3, 4, kind="pos"), _x(2, 3, 4, kind="exp")]))
    c.append(Case("where", [Arg((2, 3, 4), "any", DType.bool), _x(2, 3, 4), _x(3, 4)]))
    for to in ALL_DTYPES:
        c.append(Case("cast", [_x(2, 3, 4)], {"dtype": to}, label=to.value))
    for op in ("reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_prod", "reduce_any", "reduce_all"):
        c.append(Case(op, [_x(2, 3, 4, kind="pos" if op == "reduce_prod" else "any")], {"axes": (1,)}))
        c.append(Case(op, [_x(2, 3, 4, kind="pos" if op == "reduce_prod" else "any")],
                      {"axes": (0, 2), "keepdims": True}, label="keep"))
    for op in ("argmax", "argmin"):
        c.append(Case(op, [_x(3, 5)], {"axis": 1}))
        c.append(Case(op, [_x(3, 5, kind="small")], {"axis": 0, "keepdims": True, "select_last_index": True},
                      label="last"))
    c.append(Case("cumsum", [_x(3, 4)], {"axis": 1}))
    c.append(Case("cumsum", [_x(3, 4)], {"axis": 0, "exclusive": True, "reverse": True}, label="excl-rev"))
    c.append(Case("cumprod", [_x(3, 4, kind="small")], {"axis": -1}))
    c.append(Case("cumprod", [_x(3, 4, kind="small")], {"axis": 1, "exclusive": True, "reverse": True},
                  label="excl-rev"))
    c.append(Case("cummax", [_x(3, 4)], {"axis": 0}))
    c.append(Case("cummin", [_x(3, 4)], {"axis": 1, "reverse": True}, label="rev"))
    c.append(Case("sort", [_x(3, 6, kind="small")], {"axis": -1}))
    c.append(Case("sort", [_x(3, 6, kind="small")], {"axis": 0, "descending": True}, label="desc"))
    c.append(Case("topk", [_x(3, 6, kind="small")], {"k": 2, "axis": 1}))
    c.append(Case("topk", [_x(3, 6, kind="small")], {"k": 3, "axis": -1, "largest": False}, label="smallest"))
    c.append(Case("matmul", [_x(2, 3, 4, kind="small"), _x(4, 5, kind="small")]))
    c.append(Case("matmul", [_x(4, kind="small"), _x(2, 4, 3, kind="small")], label="vec"))
    c.append(Case("dot_general", [_x(2, 3, 4, kind="small"), _x(2, 4, 5, kind="small")],
                  {"lhs_contracting": (2,), "rhs_contracting": (1,), "lhs_batch": (0,), "rhs_batch": (0,)}))
    conv = {"stride": (2, 1), "padding": ((1, 0), (1, 1)), "dilation": (1, 2), "groups": 2}
    c.append(Case("conv", [_x(1, 4, 6, 7), _x(6, 2, 3, 3), _x(6)], conv))
    c.append(Case("conv", [_x(1, 2, 5), _x(3, 2, 3)], {"lhs_dilation": (2,), "padding": ((2, 2),)}, label="lhs"))
    for act in ("none", "relu", "sigmoid", "tanh", "gelu", "silu"):
        c.append(Case("fused_conv", [_x(1, 4, 6, 7), _x(6, 2, 3, 3), _x(6)], {**conv, "activation": act},
                      label=act))
    pool = {"kernel": (3, 3), "stride": (2, 2), "padding": ((1, 1), (0, 1))}
    c.append(Case("max_pool", [_x(1, 2, 6, 7)], pool))
    c.append(Case("max_pool", [_x(1, 2, 6, 7)], {**pool, "ceil_mode": True, "dilation": (1, 2)}, label="ceil"))
    c.append(Case("avg_pool", [_x(1, 2, 6, 7)], pool))
    c.append(Case("avg_pool", [_x(1, 2, 6, 7)], {**pool, "count_include_pad": False, "ceil_mode": True},
                  label="ceil"))
    c.append(Case("reshape", [_x(2, 3, 4)], {"shape": (6, 4)}))
    c.append(Case("reshape", [_x(2, 0, 4)], {"shape": (0, 4, 5)}, label="zero"))
    c.append(Case("transpose", [_x(2, 3, 4)], {"perm": (2, 0, 1)}))
    c.append(Case("broadcast_to", [_x(3, 1)], {"shape": (2, 3, 4)}))
    c.append(Case("squeeze", [_x(2, 1, 3)], {"axes": (1,)}))
    c.append(Case("unsqueeze", [_x(2, 3)], {"axes": (0, -1)}))
    c.append(Case("slice", [_x(4, 5)], {"starts": (0, 1), "stops": (2, 5), "steps": (1, 2), "axes": (0, 1)}))
    c.append(Case("reverse", [_x(2, 3, 4)], {"axes": (0, 2)}))
    c.append(Case("concat", [_x(2, 1), _x(2, 3), _x(2, 2)], {"axis": 1}))
    c.append(Case("pad", [_x(3, 4)], {"pads": ((1, 2), (0, 1)), "value": 1.5}))
    c.append(Case("pad", [_x(3, 4)], {"pads": ((1, 2), (2, 1)), "mode": "reflect"}, label="reflect"))
    c.append(Case("pad", [_x(3, 4)], {"pads": ((1, 0), (2, 3)), "mode": "edge"}, label="edge"))
    c.append(Case("gather", [_x(5, 3), _idx(2, 2, high=5)], {"axis": 0}))
    c.append(Case("gather", [_x(5, 3), _idx(4, high=3, dtype=DType.u8, kind="pindex")], {"axis": 1}, label="u8"))
    c.append(Case("take_along_axis", [_x(3, 4), _idx(3, 2, high=4)], {"axis": 1}))
    c.append(Case("take_along_axis", [_x(1, 4), _idx(3, 2, high=4, dtype=DType.i32)], {"axis": 1}, label="bcast"))
    c.append(Case("gather_nd", [_x(2, 3, 4), _idx(5, 2, high=2)]))
    c.append(Case("gather_nd", [_x(2, 3, 4), _idx(2, 1, high=3, dtype=DType.i32)], {"batch_dims": 1},
                  label="batch"))
    scatter_idx = Arg((3, 2), "const", DType.i64)
    for red in ("none", "add", "mul", "max", "min"):
        c.append(Case("scatter_elements", [_x(3, 4), scatter_idx, _x(3, 2)], {"axis": 1, "reduction": red},
                      label=red))
        c.append(Case("scatter_nd", [_x(4, 3), Arg((2, 1), "const2", DType.i64), _x(2, 3)], {"reduction": red},
                      label=red))
    c.append(Case("dynamic_slice", [_x(5, 6), Arg((), "const-start1", DType.i32),
                                    Arg((), "const-start2", DType.i64)], {"sizes": (2, 3)}))
    c.append(Case("dynamic_update_slice", [_x(5, 6), _x(2, 3), Arg((), "const-start2", DType.i32),
                                           Arg((), "const-start3", DType.i32)]))
    c.append(Case("iota", [], {"shape": (2, 3), "axis": 1, "dtype": DType.f32}, dtypes=(DType.f32,)))
    for dt in ALL_DTYPES:
        if dt is not DType.bool:
            c.append(Case("iota", [], {"shape": (3, 2, 2), "axis": 0, "dtype": dt}, label=dt.value, dtypes=(dt,)))
    c.append(Case("softmax", [_x(2, 3, 4)], {"axis": 1}))
    c.append(Case("log_softmax", [_x(2, 3, 4)], {"axis": -1}))
    c.append(Case("layer_norm", [_x(2, 3, 8), _x(8), _x(8)], {"epsilon": 1e-3}))
    c.append(Case("layer_norm", [_x(2, 3, 8), _x(3, 8)], {"axis": -2}, label="axis"))
    c.append(Case("layer_norm", [_x(2, 3, 8)], label="plain"))
    c.append(Case("rms_norm", [_x(2, 3, 8), _x(8)]))
    c.append(Case("rms_norm", [_x(2, 3, 8)], {"axis": 1}, label="plain"))
    c.append(Case("skip_layer_norm", [_x(2, 3, 8), _x(2, 3, 8), _x(8), _x(8)]))
    c.append(Case("skip_layer_norm", [_x(2, 3, 8), _x(3, 8), _x(8)], label="bcast"))
    c.append(Case("skip_layer_norm", [_x(2, 2, 3, 8), _x(2, 2, 3, 8)], {"axis": -2}, label="generic"))
    c.append(Case("skip_rms_norm", [_x(2, 3, 8), _x(2, 3, 8), _x(8)]))
    c.append(Case("skip_rms_norm", [_x(4, 8), _x(4, 8)], label="plain"))
    c.append(Case("batch_norm", [_x(2, 3, 4, 4), _x(3), _x(3), _x(3), _x(3, kind="pos")]))
    qkv = [_x(2, 2, 5, 8, kind="small"), _x(2, 2, 6, 8, kind="small"), _x(2, 2, 6, 8, kind="small")]
    c.append(Case("attention", qkv))
    c.append(Case("attention", qkv[:1] * 3, {"causal": True, "scale": 0.3}, label="causal"))
    c.append(Case("attention", qkv + [Arg((5, 6), "mask", DType.bool)], label="boolmask"))
    c.append(Case("attention", qkv + [_x(2, 1, 5, 6, kind="small")], label="floatmask"))
    c.append(Case("attention", [_x(3, 5, 8, kind="small"), _x(3, 6, 8, kind="small"), _x(3, 6, 4, kind="small")],
                  label="rank3"))
    rot = [_x(2, 3, 4, 8, kind="small"), _x(2, 4, 4, kind="small"), _x(1, 4, 4, kind="small")]
    c.append(Case("rotary_embedding", rot))
    half = [_x(2, 4, 2, kind="small"), _x(2, 4, 2, kind="small")]
    c.append(Case("rotary_embedding", [rot[0], *half], {"rotary_dim": 4}, label="partial"))
    c.append(Case("rotary_embedding", rot, {"interleaved": True}, label="interleaved"))
    gqa = [_x(2, 4, 1, 8, kind="small"), _x(2, 2, 1, 8, kind="small"), _x(2, 2, 1, 8, kind="small"),
           _x(2, 2, 5, 8, kind="small"), _x(2, 2, 5, 8, kind="small")]
    c.append(Case("group_query_attention", gqa))
    c.append(Case("group_query_attention", gqa + [_x(2, 1, 1, 6, kind="small")], {"scale": 0.3}, label="floatmask"))
    c.append(Case("group_query_attention", gqa + [Arg((2, 1, 1, 6), "mask", DType.bool)], label="boolmask"))
    c.append(Case("group_query_attention", [_x(2, 2, 3, 8, kind="small"), _x(2, 2, 3, 8, kind="small"),
                                            _x(2, 2, 3, 8, kind="small")] + gqa[3:], label="mha-chunk"))
    for act in ("none", "relu", "gelu", "gelu_tanh", "silu", "sigmoid", "tanh"):
        c.append(Case("linear", [_x(2, 3, 4, kind="small"), _x(4, 5, kind="small"), _x(5)], {"activation": act},
                      label=act))
    c.append(Case("linear", [_x(3, 4, kind="small"), _x(4, 5, kind="small")], label="nobias"))
    x4, grid4 = _x(2, 3, 5, 6), Arg((2, 4, 7, 2), "grid")
    for mode, pad, align in (("linear", "zeros", False), ("nearest", "border", True), ("cubic", "reflection", False),
                             ("cubic", "border", True), ("nearest", "reflection", False)):
        c.append(Case("grid_sample", [x4, grid4], {"mode": mode, "padding_mode": pad, "align_corners": align},
                      label=f"{mode}-{pad}"))
    c.append(Case("grid_sample", [_x(1, 2, 4, 5, 3), Arg((1, 3, 4, 2, 3), "grid")],
                  {"mode": "linear", "padding_mode": "reflection", "align_corners": True}, label="3d"))
    for mode, coord, sizes in (("linear", "half_pixel", (7, 3)), ("cubic", "align_corners", (8, 10)),
                               ("nearest", "asymmetric", (8, 15)), ("cubic", "half_pixel", (3, 2))):
        c.append(Case("resize", [_x(2, 3, 4, 5)], {"axes": (2, 3), "sizes": sizes, "mode": mode, "coord": coord,
                                                   "scales": (sizes[0] / 4, sizes[1] / 5)}, label=f"{mode}-{coord}"))
    roi_args = [_x(2, 3, 8, 9), Arg((4, 4), "roi"), _idx(4, high=2, kind="pindex")]
    c.append(Case("roi_align", roi_args, {"output_height": 3, "output_width": 2, "sampling_ratio": 2}))
    c.append(Case("roi_align", roi_args[:2] + [_idx(4, high=2, dtype=DType.i32, kind="pindex")],
                  {"mode": "max", "output_height": 2, "output_width": 3, "sampling_ratio": 3, "spatial_scale": 0.8,
                   "coordinate_transformation_mode": "output_half_pixel"}, label="max"))
    c.append(Case("deform_conv", [_x(2, 4, 5, 5), _x(2, 2, 2, 2), _x(2, 16, 5, 5), _x(2), _x(2, 8, 5, 5, kind="unit")],
                  {"padding": ((1, 0), (0, 1)), "groups": 2, "offset_groups": 2}))
    c.append(Case("deform_conv", [_x(1, 2, 4, 5), _x(3, 2, 2, 3), _x(1, 12, 2, 2)],
                  {"stride": (1, 2), "dilation": (2, 1)}, label="strided"))
    c.extend(_quant_cases())
    c.extend(_region_cases())
    c.extend(_qdq_cases())
    return c


def _quant_cases() -> list[Case]:
    f32, i8, u8 = (DType.f32,), DType.i8, DType.u8
    scale = Arg((5,), "pos", DType.f32)
    c = [Case("dynamic_quant_linear", [_x(2, 3, 8), Arg((8, 5), "any", i8), scale, Arg((5,), "any", DType.f32)],
              {"activation": "gelu"}, dtypes=f32),
         Case("dynamic_quant_linear", [_x(3, 8, kind="pos"), Arg((8, 5), "any", i8), scale], label="nobias",
              dtypes=f32)]
    for bits, block, k in ((4, 32, 40), (8, 16, 20)):
        nb = -(-k // block)
        packed, scales = Arg((5, nb, block * bits // 8), "any", u8), Arg((5, nb), "pos", DType.f32)
        c.append(Case("matmul_nbits", [_x(2, k), packed, scales], {"bits": bits, "block_size": block},
                      label=f"{bits}bit", dtypes=f32))
        c.append(Case("matmul_nbits", [_x(2, k), packed, scales, Arg((5, -(-nb * bits // 8)), "any", u8), _x(5)],
                      {"bits": bits, "block_size": block, "zero_points": True, "activation": "relu"},
                      label=f"{bits}bit-zp-bias", dtypes=f32))
    return c
def _q(*shape, dtype=DType.u8, kind="any"):
    return Arg(shape, kind, dtype)


def _qdq_cases() -> list[Case]:
    """The quantised ops: ONNX Runtime's integer kernels against the interpreter, bit for bit on the
    integers; the per-channel ConvInteger zero point goes through the decomposition."""
    f32 = (DType.f32,)
    scale, pad = Arg((), "scale", DType.f32), {"padding": ((1, 1), (1, 1))}
    return [
        Case("quantize_linear", [_x(3, 4), _x(kind="pos"), _q()]),
        Case("quantize_linear", [_x(2, 3, 4), _x(3, kind="pos"), _q(3, dtype=DType.i8)], {"axis": 1}, label="axis"),
        Case("dequantize_linear", [_q(3, 4), _x(kind="pos"), _q()]),
        Case("dequantize_linear", [_q(3, 2, dtype=DType.i8), _x(3, kind="pos"), _q(3, dtype=DType.i8)], {"axis": 0},
             label="axis"),
        Case("dynamic_quantize_linear", [_x(3, 4)]),
        Case("matmul_integer", [_q(2, 3, 4), _q(4, 5, dtype=DType.i8), _q(), _q(5, dtype=DType.i8)], dtypes=f32),
        Case("conv_integer", [_q(1, 2, 5, 5), _q(3, 2, 3, 3), _q(), _q()], pad, dtypes=f32),
        Case("conv_integer", [_q(1, 2, 5, 5), _q(3, 2, 3, 3), _q(), _q(3)], pad, label="channel-zero-points",
             dtypes=f32),
        Case("qlinear_matmul", [_q(2, 3, 4), scale, _q(), _q(4, 5), scale, _q(), scale, _q()], dtypes=f32),
        Case("qlinear_matmul", [_q(3, 4), scale, _q(), _q(4, 5, dtype=DType.i8), Arg((5,), "scale", DType.f32),
                                _q(5, dtype=DType.i8), scale, _q()], label="per-column", dtypes=f32),
        Case("qlinear_conv", [_q(1, 2, 5, 5), scale, _q(), _q(3, 2, 3, 3, dtype=DType.i8),
                              Arg((3,), "scale", DType.f32), _q(dtype=DType.i8, kind="const-zero"), scale, _q(),
                              _q(3, dtype=DType.i32)], pad, dtypes=f32),
    ]


def _region_cases() -> list[Case]:
    fusion = _region("""graph body(%a: f32[2,3], %b: f32[3]) -> (f32[2,3], f32[2,3]) {
      %0 = add(%a, %b) : f32[2,3]
      %1 = exp(%0) : f32[2,3]
      return %1, %a
    }""")
    branch = "graph b{k}(%x: f32[2,3], %y: f32[3]) -> (f32[2,3]) {{\n  %0 = {op}(%x, %y) : f32[2,3]\n  return %0\n}}"
    b = [_region(branch.format(k=k, op=op)) for k, op in enumerate(("add", "mul", "sub"))]
    passthrough = _region("graph p(%x: f32[2,3], %y: f32[3]) -> (f32[2,3]) {\n  return %x\n}")
    cond = _region("""graph c(%i: i64[], %x: f32[3]) -> (bool[]) {
      %0 = constant() {name="five"} : i64[]
      %1 = lt(%i, %0) : bool[]
      return %1
    }""", five=np.int64(5))
    body = _region("""graph w(%i: i64[], %x: f32[3]) -> (i64[], f32[3]) {
      %0 = constant() {name="one"} : i64[]
      %1 = add(%i, %0) : i64[]
      %2 = mul(%x, %x) : f32[3]
      %3 = sin(%2) : f32[3]
      return %1, %3
    }""", one=np.int64(1))
    scan = _region("""graph s(%k: f32[3], %c: f32[3], %x: f32[3]) -> (f32[3], f32[3], f32[]) {
      %0 = mul(%x, %k) : f32[3]
      %1 = add(%c, %0) : f32[3]
      %2 = reduce_sum(%1) {axes=[0]} : f32[]
      return %1, %0, %2
    }""")
    f32 = (DType.f32,)
    idx = [Arg((), "cond-index", DType.i32)]
    return [
        Case("fusion", [_x(2, 3), _x(3)], regions=(fusion,), dtypes=f32),
        Case("cond", [Arg((), "any", DType.bool), _x(2, 3), _x(3)], regions=(b[0], b[1]), label="bool", dtypes=f32),
        Case("cond", idx + [_x(2, 3), _x(3)], regions=tuple(b), label="index", dtypes=f32),
        Case("cond", idx + [_x(2, 3), _x(3)], regions=(b[0], passthrough), label="passthrough", dtypes=f32),
        Case("while_loop", [Arg((), "const-zero", DType.i64), _x(3, kind="unit")], regions=(cond, body),
             dtypes=f32),
        Case("scan", [_x(3), _x(3), _x(4, 3)], {"num_consts": 1, "num_carry": 1, "length": 4},
             regions=(scan,), dtypes=f32),
        Case("scan", [_x(3), _x(3), _x(4, 3)], {"num_consts": 1, "num_carry": 1, "length": 4, "reverse": True},
             regions=(scan,), label="reverse", dtypes=f32),
    ]


CASES = _cases()
_CONSTS = {"const": np.array([[0, 3], [1, 2], [3, 0]]), "const2": np.array([[1], [-1]]), "const-start1": 1,
           "const-start2": 4, "const-start3": -1, "const-zero": 0}


def _build(case: Case, dt: DType) -> Graph | None:
    types = [TensorType(a.dtype or dt, a.shape) for a in case.args]
    try:
        attrs = normalize_attrs(case.op, case.attrs)
        infer_types(case.op, types, attrs, regions=case.regions)
    except (TypeRuleError, VerificationError):
        return None
    g = Graph("case")
    ins = [g.add_input(t, f"x{i}") for i, t in enumerate(types)]
    node = g.make(case.op, ins, case.attrs, regions=case.regions, meta={"source": "test_case.py:1"})
    g.set_outputs(node.outputs)
    return g


def _inputs(case: Case, dt: DType, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for a in case.args:
        d = a.dtype or dt
        if a.kind in _CONSTS:
            out.append(np.asarray(_CONSTS[a.kind], dtype=d.numpy))
        elif a.kind == "mask":
            m = rng.random(a.shape) < 0.7
            m[..., 0] = True  # no fully masked row
            out.append(m)
        elif a.kind == "cond-index":
            out.append(np.asarray(seed % 5 - 1, dtype=d.numpy))
        else:
            out.append(_gen(a, d, rng))
    return out


def run_onnx(model: onnx.ModelProto, inputs: list[np.ndarray]) -> list[np.ndarray]:
    return OnnxRuntimeModule(model)(*inputs)


TOL = {DType.f16: 4e-3, DType.bf16: 2e-2, DType.f32: 2e-5, DType.f64: 1e-10}


def _case_params():
    for case in CASES:
        for dt in case.dtypes or ALL_DTYPES:
            if _build(case, dt) is not None:
                yield pytest.param(case, dt, id=f"{case.id}-{dt.value}")


@pytest.mark.parametrize("case,dt", list(_case_params()))
def test_op_matches_interpreter(case: Case, dt: DType) -> None:
    g = _build(case, dt)
    if (case.op, dt) in KNOWN_GAPS or (case.id, dt) in KNOWN_CASE_GAPS:
        with pytest.raises(LoweringError, match=case.op):
            to_onnx(g)
        return
    model = to_onnx(g)
    for seed in (0, 1):
        xs = _inputs(case, dt, seed)
        want = accelir.interpret(g, *xs)
        got = run_onnx(model, xs)
        for k, (a, b) in enumerate(zip(got, want)):
            assert_close(a, b, TOL, dtype=dt, err_msg=f"{case.id} {dt} output {k} seed {seed}")


@pytest.mark.parametrize("case", [c for c in CASES if _build(c, DType.f32) is not None], ids=lambda c: c.id)
def test_standard_target_is_valid_onnx(case: Case) -> None:
    g = _build(case, DType.f32)
    model = to_onnx(g, target="standard")
    onnx.checker.check_model(model, full_check=True)
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)
    xs = _inputs(case, DType.f32, 3)
    for a, b in zip(run_onnx(model, xs), accelir.interpret(g, *xs)):
        assert_close(a, b, TOL, dtype=DType.f32, err_msg=case.id)


def test_every_op_has_a_rule() -> None:
    """Its own rule, or for a composite the lowering through its decomposition."""
    missing = sorted(op for op in REGISTRY if rule_for(op) is None)
    assert not missing, f"ops without an ONNX rule: {missing}"


def test_every_op_has_a_numeric_case() -> None:
    covered = {c.op for c in CASES} | {"constant"} | set(DATA_DEPENDENT_OPS)  # those: test_dynamic.py
    assert sorted(set(REGISTRY) - covered) == []


def test_initializers_viewing_whole_bytes_are_handed_over_without_a_copy():
    from accelir.lowering.onnx.model import backing_bytes
    raw = np.arange(12, dtype=np.float32).tobytes()
    arr = np.frombuffer(raw, np.float32).reshape(3, 4)
    assert backing_bytes(arr) is raw
    # a part, a transposed view, a copy and a big-endian view all go through tobytes
    assert backing_bytes(arr[1:]) is None
    assert backing_bytes(np.frombuffer(raw, np.float32, count=6)) is None
    assert backing_bytes(arr.T) is None
    assert backing_bytes(arr.copy()) is None
    assert backing_bytes(np.frombuffer(raw, ">f4")) is None
    g = Graph("g")
    x = g.add_input(TensorType(DType.f32, (2, 3)), "x")
    y = g.apply("matmul", x, g.const(arr, name="w"))
    g.set_outputs([g.apply("add", y, g.const(arr.T[:, :1].reshape(4), name="b"))])  # a strided view
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in to_onnx(g).graph.initializer}
    np.testing.assert_array_equal(inits["w"], arr)
    np.testing.assert_array_equal(inits["b"], arr[0])


SPLIT_SRC = """
graph main(%x: {dt}[2,3,7]) -> ({dt}[2,3,2], {dt}[2,3,3], {dt}[2,3,{last}]) {{
  %0 = slice(%x) {{starts=[2], stops=[5], steps=[], axes=[2]}} : {dt}[2,3,3]
  %1 = slice(%x) {{starts=[0], stops=[2], steps=[], axes=[-1]}} : {dt}[2,3,2]
  %2 = neg(%0) : {dt}[2,3,3]
  %3 = slice(%x) {{starts=[{start}], stops=[7], steps=[], axes=[2]}} : {dt}[2,3,{last}]
  return %1, %2, %3
}}
"""


@pytest.mark.parametrize("dt", ["f32", "f16", "i64"])
@pytest.mark.parametrize("start,ops", [(5, ["Split", "Neg"]),  # the three parts cut x: one Split
                                       (6, ["Slice", "Slice", "Neg", "Slice"])])  # a gap: slices as they are
def test_slices_cutting_a_value_into_parts_lower_to_one_split(dt, start, ops):
    g = accelir.parse(SPLIT_SRC.format(dt=dt, start=start, last=7 - start))
    assert [n.op_type for n in to_onnx(g).graph.node if n.op_type not in ("Cast",)] == ops
    x = (np.random.default_rng(0).standard_normal((2, 3, 7)) * 4).astype(DType.parse(dt).numpy)
    for got, want in zip(OnnxRuntimeModule(g)(x), accelir.run_graph(g, [x])):
        np.testing.assert_array_equal(got, want)


def test_kernel_dtypes_follow_the_schema_version_an_opset_selects():
    from accelir.lowering.onnx import supported_dtypes
    # onnxruntime registers RoiAlign from version 16 on, open-ended: it runs RoiAlign-16 nodes
    # (opsets 16-21) but not RoiAlign-22 ones, which opset 22 and newer select
    assert supported_dtypes("RoiAlign", "", 21) == {DType.f32, DType.f64}
    assert supported_dtypes("RoiAlign", "", 24) == frozenset()
    # onnxruntime's own schemas (no onnx schema to take a version from) keep every kernel covering the opset
    assert DType.f32 in supported_dtypes("SimplifiedLayerNormalization", "", 24)


def test_uint64_beyond_int64_computes_through_int64_bits() -> None:
    """uint64 values at and past 2**63: arithmetic wraps modulo 2**64 and ordering stays unsigned,
    though onnxruntime computes them in int64."""
    big = np.array([[2 ** 64 - 1, 2 ** 63, 5], [2 ** 63 - 1, 0, 2 ** 63 + 7]], np.uint64)
    small = np.array([[1, 2 ** 63, 3], [1, 1, 2 ** 63]], np.uint64)
    g = parse("""
    graph g(%a: u64[2,3], %b: u64[2,3]) -> (u64[2,3], u64[2,3], u64[2], i64[2], u64[2,2], u64[2,3]) {
      %s = add(%a, %b) : u64[2,3]
      %n = neg(%a) : u64[2,3]
      %m = reduce_max(%a) {axes=[1], keepdims=false} : u64[2]
      %i = argmax(%a) {axis=1, keepdims=false} : i64[2]
      %t, %ti = topk(%a) {k=2, axis=1} : u64[2,2], i64[2,2]
      %w = max(%a, %b) : u64[2,3]
      return %s, %n, %m, %i, %t, %w
    }""")
    got, want = run_onnx(to_onnx(g), [big, small]), interpret(g, big, small)
    for gv, wv in zip(got, want):
        np.testing.assert_array_equal(gv, wv)
    assert want[2].tolist() == [2 ** 64 - 1, 2 ** 63 + 7]
    # and against numpy's own uint64 arithmetic, not only the interpreter
    with np.errstate(over="ignore"):
        expected = [big + small, -big, big.max(1), big.argmax(1), np.sort(big, 1)[:, ::-1][:, :2],
                    np.maximum(big, small)]
    for gv, ev in zip(got, expected):
        np.testing.assert_array_equal(gv, ev)
