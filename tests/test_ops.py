"""Every registered op: its reference against torch (or an independent numpy
formulation) on random inputs, its type rule against the reference's result, with
symbolic leading dims where the op allows, and each composite's decomposition
against its reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from accelir import DType, Graph, TensorType, interpret, verify
from accelir.errors import VerificationError
from accelir.ops.nn import GRID_MODE_OLD_NAMES
from accelir.ops import REGISTRY
from accelir.ops.dynamic import DATA_DEPENDENT_OPS
from accelir.ops.registry import TypeRuleError, broadcast_shapes
from accelir.testing import onnxruntime_outputs

RNG = np.random.default_rng(0)


def f32(*shape, lo=-2.0, hi=2.0):
    return RNG.uniform(lo, hi, size=shape).astype(np.float32)


def ints(*shape, lo=-5, hi=6, dtype=np.int64):
    return RNG.integers(lo, hi, size=shape).astype(dtype)


def T(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def build(op, arrays, attrs, symbolic=False, regions=()):
    g = Graph()
    ins = []
    for i, a in enumerate(arrays):
        t = TensorType.of(a)
        if symbolic and t.rank:
            t = t.with_shape(("n",) + t.shape[1:])
        ins.append(g.add_input(t, f"x{i}"))
    node = g.make(op, ins, attrs, regions=regions)
    g.set_outputs(node.outputs)
    verify(g)
    return g


# ----- the sample table: op -> list of (inputs, attrs, torch oracle, symbolic ok) -------------

UNARY_TORCH = {
    "neg": torch.neg, "abs": torch.abs, "exp": torch.exp, "log": torch.log, "log1p": torch.log1p,
    "expm1": torch.expm1, "sqrt": torch.sqrt, "rsqrt": torch.rsqrt, "sin": torch.sin, "cos": torch.cos,
    "tan": torch.tan, "asin": torch.asin, "acos": torch.acos, "atan": torch.atan, "sinh": torch.sinh,
    "cosh": torch.cosh, "asinh": torch.asinh, "acosh": torch.acosh, "atanh": torch.atanh, "tanh": torch.tanh,
    "sigmoid": torch.sigmoid, "erf": torch.erf, "floor": torch.floor, "ceil": torch.ceil, "round": torch.round,
    "sign": lambda x: torch.where(torch.isnan(x), x, torch.sign(x)), "reciprocal": torch.reciprocal, "relu": torch.relu, "isnan": torch.isnan,
    "isinf": torch.isinf, "gelu": F.gelu, "silu": F.silu,
}
DOMAIN = {"log": (0.1, 3), "sqrt": (0.1, 3), "rsqrt": (0.1, 3), "log1p": (-0.5, 3), "asin": (-0.9, 0.9),
          "acos": (-0.9, 0.9), "acosh": (1.1, 3), "atanh": (-0.9, 0.9), "reciprocal": (0.5, 2)}

BINARY_TORCH = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div, "pow": torch.pow,
    "max": torch.maximum, "min": torch.minimum, "rem": torch.fmod, "atan2": torch.atan2,
    "eq": torch.eq, "ne": torch.ne, "lt": torch.lt, "le": torch.le, "gt": torch.gt, "ge": torch.ge,
}


def samples():
    s: dict[str, list] = {}
    for op, fn in UNARY_TORCH.items():
        lo, hi = DOMAIN.get(op, (-2, 2))
        x = f32(3, 4, lo=lo, hi=hi)
        if op == "round":
            x = np.array([[0.5, 1.5, 2.5, -0.5], [-1.5, 0.49, 2.51, 3.0]], np.float32)
        if op in ("isnan", "isinf", "relu", "sign"):
            x = np.array([[np.nan, np.inf, -np.inf, 0.0], [1.0, -2.0, 3.0, -0.0]], np.float32)
        attrs = {"approximate": "none"} if op == "gelu" else {}
        s.setdefault(op, []).append(([x], attrs, lambda a, fn=fn: fn(*a), True))
    s["gelu"].append(([f32(3, 4)], {"approximate": "tanh"}, lambda a: F.gelu(a[0], approximate="tanh"), True))
    for op in ("neg", "abs", "sign", "relu"):
        s[op].append(([ints(3, 4)], {}, lambda a, fn=UNARY_TORCH[op]: fn(*a), True))
    s["not"] = [([RNG.random((3, 4)) > 0.5], {}, lambda a: torch.logical_not(a[0]), True),
                ([ints(3, 4, dtype=np.int32)], {}, lambda a: torch.bitwise_not(a[0]), True)]
    for op, fn in BINARY_TORCH.items():
        lo = 0.5 if op == "pow" else -2
        a, b = f32(2, 3, 4, lo=lo), f32(3, 1, lo=0.3 if op in ("div", "rem") else -2)
        s.setdefault(op, []).append(([a, b], {}, lambda t, fn=fn: fn(*t), True))
        if op not in ("atan2", "pow"):
            x, y = ints(4, 5), ints(4, 5)
            y = np.where(y == 0, 3, y)
            if op == "div":
                oracle = (lambda t: torch.div(t[0], t[1], rounding_mode="trunc"))
            else:
                oracle = (lambda t, fn=fn: fn(*t))
            s[op].append(([x, y], {}, oracle, True))
    s["pow"].append(([ints(3, 4, lo=-3, hi=4), ints(3, 4, lo=0, hi=4)], {}, lambda t: torch.pow(*t), True))
    s["max"].append(([np.array([1.0, np.nan, 3.0], np.float32), np.array([np.nan, 2.0, 1.0], np.float32)], {},
                     lambda t: torch.maximum(*t), True))
    for op, fn in (("and", torch.bitwise_and), ("or", torch.bitwise_or), ("xor", torch.bitwise_xor)):
        s[op] = [([RNG.random((3, 4)) > 0.5, RNG.random((1, 4)) > 0.5], {}, lambda t, fn=fn: fn(*t), True),
                 ([ints(3, 4, dtype=np.int32), ints(3, 4, dtype=np.int32)], {}, lambda t, fn=fn: fn(*t), True)]
    s["where"] = [([RNG.random((3, 4)) > 0.5, f32(3, 4), f32(1, 4)], {}, lambda t: torch.where(*t), True)]
    s["cast"] = [([f32(3, 4, lo=-9, hi=9)], {"dtype": DType.i32}, lambda t: t[0].to(torch.int32), True),
                 ([ints(3, 4)], {"dtype": DType.f32}, lambda t: t[0].to(torch.float32), True),
                 ([f32(3, 4)], {"dtype": DType.bool}, lambda t: t[0].to(torch.bool), True),
                 ([f32(3, 4)], {"dtype": DType.bf16}, lambda t: t[0].to(torch.bfloat16), True),
                 ([f32(3, 4)], {"dtype": DType.f16}, lambda t: t[0].to(torch.float16), True)]
    red = {"reduce_sum": torch.sum, "reduce_mean": torch.mean, "reduce_max": torch.amax, "reduce_min": torch.amin}
    for op, fn in red.items():
        s[op] = [([f32(2, 3, 4)], {"axes": (1, 2), "keepdims": False},
                  lambda t, fn=fn: fn(t[0], dim=(1, 2)), True),
                 ([f32(2, 3, 4)], {"axes": (-1,), "keepdims": True},
                  lambda t, fn=fn: fn(t[0], dim=-1, keepdim=True), True)]
    s["reduce_sum"].append(([ints(3, 4)], {"axes": (0,)}, lambda t: torch.sum(t[0], 0), False))
    s["reduce_prod"] = [([f32(2, 3, 4)], {"axes": (1,)}, lambda t: torch.prod(t[0], 1), True)]
    s["reduce_any"] = [([RNG.random((3, 4)) > 0.8], {"axes": (1,)}, lambda t: torch.any(t[0], 1), True)]
    s["reduce_all"] = [([RNG.random((3, 4)) > 0.2], {"axes": (1,)}, lambda t: torch.all(t[0], 1), True)]
    s["argmax"] = [([f32(3, 5)], {"axis": 1}, lambda t: torch.argmax(t[0], 1), True),
                   ([f32(3, 5)], {"axis": 1, "keepdims": True}, lambda t: torch.argmax(t[0], 1, keepdim=True), True)]
    s["argmin"] = [([f32(3, 5)], {"axis": -1}, lambda t: torch.argmin(t[0], -1), True)]
    s["cumsum"] = [([f32(3, 5)], {"axis": 1}, lambda t: torch.cumsum(t[0], 1), True),
                   ([f32(3, 5)], {"axis": 1, "reverse": True}, lambda t: torch.cumsum(t[0].flip(1), 1).flip(1), True),
                   ([ints(3, 5)], {"axis": 1, "exclusive": True},
                    lambda t: torch.cumsum(t[0], 1) - t[0], True)]
    s["cumprod"] = [([f32(3, 5)], {"axis": 1}, lambda t: torch.cumprod(t[0], 1), True)]
    s["cummax"] = [([f32(3, 5)], {"axis": 1}, lambda t: torch.cummax(t[0], 1).values, True)]
    s["cummin"] = [([f32(3, 5)], {"axis": 0}, lambda t: torch.cummin(t[0], 0).values, False)]
    s["sort"] = [([f32(3, 6)], {"axis": 1}, lambda t: torch.sort(t[0], dim=1, stable=True), True),
                 ([ints(3, 6, lo=0, hi=3)], {"axis": 1, "descending": True},
                  lambda t: torch.sort(t[0], dim=1, descending=True, stable=True), True)]
    s["topk"] = [([np.stack([RNG.permutation(6) for _ in range(3)]).astype(np.float32)], {"k": 3, "axis": 1},
                  lambda t: torch.topk(t[0], 3, 1), True),
                 ([np.stack([RNG.permutation(6) for _ in range(3)]).astype(np.float32)],
                  {"k": 2, "axis": 1, "largest": False}, lambda t: torch.topk(t[0], 2, 1, largest=False), True)]
    s["matmul"] = [([f32(2, 3, 4), f32(4, 5)], {}, lambda t: torch.matmul(*t), True),
                   ([f32(4), f32(2, 4, 3)], {}, lambda t: torch.matmul(*t), False),
                   ([f32(3, 4), f32(4)], {}, lambda t: torch.matmul(*t), True),
                   ([ints(3, 4), ints(4, 2)], {}, lambda t: torch.matmul(*t), True)]
    s["dot_general"] = [([f32(2, 3, 4), f32(2, 4, 5)],
                         {"lhs_contracting": (2,), "rhs_contracting": (1,), "lhs_batch": (0,), "rhs_batch": (0,)},
                         lambda t: torch.einsum("bij,bjk->bik", *t), True),
                        ([f32(3, 4, 2), f32(5, 4)], {"lhs_contracting": (1,), "rhs_contracting": (1,)},
                         lambda t: torch.einsum("ikj,lk->ijl", *t), True)]
    s["conv"] = [([f32(2, 4, 9, 8), f32(6, 2, 3, 3), f32(6)],
                  {"stride": (2, 1), "padding": ((1, 1), (0, 2)), "dilation": (1, 2), "groups": 2},
                  lambda t: F.conv2d(F.pad(t[0], (0, 2, 1, 1)), t[1], t[2], stride=(2, 1), dilation=(1, 2),
                                     groups=2), True),
                 ([f32(1, 3, 10), f32(4, 3, 3)], {"padding": ((1, 1),)},
                  lambda t: F.conv1d(t[0], t[1], padding=1), True),
                 ([f32(1, 2, 4, 4, 4), f32(3, 2, 2, 2, 2)], {"stride": (2, 2, 2)},
                  lambda t: F.conv3d(t[0], t[1], stride=2), False),
                 ([f32(1, 4, 5, 5), f32(4, 1, 3, 3)], {"groups": 4, "padding": ((1, 1), (1, 1))},
                  lambda t: F.conv2d(t[0], t[1], padding=1, groups=4), True),
                 # transposed conv as an lhs-dilated conv with a flipped, transposed kernel
                 ([f32(1, 2, 4, 4), f32(3, 2, 3, 3)], {"lhs_dilation": (2, 2), "padding": ((2, 2), (2, 2))},
                  lambda t: F.conv_transpose2d(t[0], t[1].flip(2, 3).transpose(0, 1), stride=2), False)]
    s["max_pool"] = [([f32(2, 3, 7, 7)], {"kernel": (3, 3), "stride": (2, 2), "padding": ((1, 1), (1, 1))},
                      lambda t: F.max_pool2d(t[0], 3, 2, 1), True),
                     ([f32(1, 2, 8, 8)], {"kernel": (3, 3), "stride": (2, 2), "ceil_mode": True},
                      lambda t: F.max_pool2d(t[0], 3, 2, ceil_mode=True), False),
                     ([f32(1, 2, 9)], {"kernel": (2,), "stride": (2,), "dilation": (2,)},
                      lambda t: F.max_pool1d(t[0], 2, 2, dilation=2), True)]
    s["avg_pool"] = [([f32(2, 3, 7, 7)], {"kernel": (3, 3), "stride": (2, 2), "padding": ((1, 1), (1, 1))},
                      lambda t: F.avg_pool2d(t[0], 3, 2, 1), True),
                     ([f32(2, 3, 7, 7)], {"kernel": (3, 3), "stride": (2, 2), "padding": ((1, 1), (1, 1)),
                                          "count_include_pad": False},
                      lambda t: F.avg_pool2d(t[0], 3, 2, 1, count_include_pad=False), True),
                     ([f32(1, 2, 8, 8)], {"kernel": (3, 3), "stride": (2, 2), "ceil_mode": True},
                      lambda t: F.avg_pool2d(t[0], 3, 2, ceil_mode=True), False)]
    s["reshape"] = [([f32(2, 3, 4)], {"shape": (6, 4)}, lambda t: t[0].reshape(6, 4), False)]
    s["transpose"] = [([f32(2, 3, 4)], {"perm": (2, 0, 1)}, lambda t: t[0].permute(2, 0, 1), True)]
    s["broadcast_to"] = [([f32(3, 1)], {"shape": (2, 3, 4)}, lambda t: t[0].expand(2, 3, 4), False)]
    s["squeeze"] = [([f32(3, 1, 4, 1)], {"axes": (1, -1)}, lambda t: t[0].squeeze(-1).squeeze(1), True)]
    s["unsqueeze"] = [([f32(3, 4)], {"axes": (0, 3)}, lambda t: t[0][None, :, :, None], True)]
    s["slice"] = [([f32(5, 6)], {"starts": (1, 0), "stops": (4, 6), "steps": (2, 3), "axes": (0, 1)},
                   lambda t: t[0][1:4:2, 0:6:3], False),
                  ([f32(5, 6)], {"starts": (2,), "stops": (5,), "axes": (1,)}, lambda t: t[0][:, 2:5], True)]
    s["reverse"] = [([f32(3, 4)], {"axes": (1,)}, lambda t: t[0].flip(1), True)]
    s["concat"] = [([f32(2, 3), f32(2, 1), f32(2, 2)], {"axis": 1}, lambda t: torch.cat(t, 1), True)]
    s["pad"] = [([f32(2, 3)], {"pads": ((1, 0), (2, 1)), "value": 1.5},
                 lambda t: F.pad(t[0], (2, 1, 1, 0), value=1.5), False),
                ([f32(1, 2, 5)], {"pads": ((0, 0), (0, 0), (2, 1)), "mode": "reflect"},
                 lambda t: F.pad(t[0], (2, 1), mode="reflect"), True),
                ([f32(1, 2, 5)], {"pads": ((0, 0), (0, 0), (2, 1)), "mode": "edge"},
                 lambda t: F.pad(t[0], (2, 1), mode="replicate"), True)]
    s["gather"] = [([f32(5, 3), ints(2, 4, lo=0, hi=5)], {"axis": 0},
                    lambda t: t[0][t[1]], False),
                   ([f32(2, 5), ints(3, lo=-5, hi=5)], {"axis": 1},
                    lambda t: t[0][:, torch.where(t[1] < 0, t[1] + 5, t[1])], True)]
    s["take_along_axis"] = [([f32(3, 5), ints(3, 2, lo=0, hi=5)], {"axis": 1},
                             lambda t: torch.gather(t[0], 1, t[1]), True)]
    idx_nd = np.array([[0, 1], [2, 0], [1, 1]], np.int64)
    s["gather_nd"] = [([f32(3, 2, 4), idx_nd], {}, lambda t: t[0][t[1][:, 0], t[1][:, 1]], False),
                      ([f32(2, 3, 4), np.array([[[1], [2]], [[0], [0]]], np.int64)], {"batch_dims": 1},
                       lambda t: torch.stack([t[0][b][t[1][b][:, 0]] for b in range(2)]), False)]
    s["scatter_elements"] = [([f32(3, 5), ints(3, 2, lo=0, hi=5), f32(3, 2)], {"axis": 1, "reduction": "add"},
                              lambda t: t[0].scatter_add(1, t[1], t[2]), True),
                             ([f32(3, 5), np.array([[0, 1], [2, 3], [4, 0]], np.int64), f32(3, 2)], {"axis": 1},
                              lambda t: t[0].scatter(1, t[1], t[2]), True)]
    s["scatter_nd"] = [([f32(4, 3), np.array([[1], [3]], np.int64), f32(2, 3)], {},
                        lambda t: t[0].index_put((t[1][:, 0],), t[2]), False),
                       ([f32(4, 3), np.array([[1], [1]], np.int64), f32(2, 3)], {"reduction": "add"},
                        lambda t: t[0].index_put((t[1][:, 0],), t[2], accumulate=True), False)]
    s["dynamic_slice"] = [([f32(5, 6), np.array(1, np.int64), np.array(4, np.int32)], {"sizes": (3, 3)},
                           lambda t: t[0][1:4, 3:6], False),
                          ([f32(5, 6), np.array(9, np.int64), np.array(-2, np.int64)], {"sizes": (2, 2)},
                           lambda t: t[0][3:5, 0:2], False)]
    s["dynamic_update_slice"] = [([f32(5, 6), f32(2, 3), np.array(4, np.int64), np.array(1, np.int64)], {},
                                  lambda t: _dus_oracle(t[0], t[1], (3, 1)), False)]
    s["iota"] = [([], {"shape": (3, 4), "axis": 1, "dtype": DType.i32},
                  lambda t: torch.arange(4, dtype=torch.int32).expand(3, 4), False),
                 ([], {"shape": (3, 2), "axis": 0, "dtype": DType.f32},
                  lambda t: torch.arange(3, dtype=torch.float32)[:, None].expand(3, 2), False)]
    s["softmax"] = [([f32(2, 3, 5)], {"axis": -1}, lambda t: torch.softmax(t[0], -1), True),
                    ([f32(2, 3, 5)], {"axis": 1}, lambda t: torch.softmax(t[0], 1), True)]
    s["log_softmax"] = [([f32(2, 5)], {"axis": -1}, lambda t: torch.log_softmax(t[0], -1), True)]
    s["layer_norm"] = [([f32(2, 3, 8), f32(8), f32(8)], {"axis": -1, "epsilon": 1e-5},
                        lambda t: F.layer_norm(t[0], (8,), t[1], t[2], 1e-5), True),
                       ([f32(2, 3, 4)], {"axis": 1, "epsilon": 1e-3},
                        lambda t: F.layer_norm(t[0], (3, 4), eps=1e-3), True)]
    s["rms_norm"] = [([f32(2, 3, 8), f32(8)], {"epsilon": 1e-6},
                      lambda t: F.rms_norm(t[0], (8,), t[1], 1e-6), True)]
    s["skip_layer_norm"] = [([f32(2, 3, 8), f32(2, 3, 8), f32(8), f32(8)], {"epsilon": 1e-5},
                             lambda t: (F.layer_norm(t[0] + t[1], (8,), t[2], t[3], 1e-5), t[0] + t[1]), True)]
    s["skip_rms_norm"] = [([f32(2, 3, 8), f32(2, 3, 8), f32(8)], {"epsilon": 1e-6},
                           lambda t: (F.rms_norm(t[0] + t[1], (8,), t[2], 1e-6), t[0] + t[1]), True)]
    s["batch_norm"] = [([f32(2, 3, 4, 4), f32(3), f32(3), f32(3), f32(3, lo=0.5, hi=2)], {"epsilon": 1e-5},
                        lambda t: F.batch_norm(t[0], t[3], t[4], t[1], t[2], False, 0.0, 1e-5), True)]
    q, k, v = f32(2, 2, 4, 8), f32(2, 2, 6, 8), f32(2, 2, 6, 8)
    s["attention"] = [([q, k, v], {}, lambda t: F.scaled_dot_product_attention(*t), True),
                      ([q, k, v, RNG.random((2, 1, 4, 6)) > 0.3], {"scale": 0.2},
                       lambda t: F.scaled_dot_product_attention(t[0], t[1], t[2], attn_mask=t[3], scale=0.2), True),
                      ([q, k[:, :, :4], v[:, :, :4], f32(1, 1, 4, 4)], {"causal": True},
                       lambda t: F.scaled_dot_product_attention(t[0], t[1], t[2],
                                                                attn_mask=t[3] + _causal_bias(4), scale=None), True)]
    x, cs, sn = f32(2, 3, 4, 8), f32(2, 4, 4), f32(1, 4, 4)
    s["rotary_embedding"] = [([x, cs, sn], {}, lambda t: _rotate_half_oracle(*t, 8), True),
                             ([x, cs[..., :2], sn[..., :2]], {"rotary_dim": 4},
                              lambda t: _rotate_half_oracle(*t, 4), True),
                             ([x, cs, sn], {"interleaved": True}, lambda t: _complex_rotary_oracle(*t), True)]
    q, k, v, pk, pv = f32(2, 4, 1, 8), f32(2, 2, 1, 8), f32(2, 2, 1, 8), f32(2, 2, 5, 8), f32(2, 2, 5, 8)
    s["group_query_attention"] = [([q, k, v, pk, pv], {}, _gqa_oracle(None), True),
                                  ([q[:, :2], k, v, pk, pv, f32(2, 1, 1, 6)], {"scale": 0.3}, _gqa_oracle(0.3), True),
                                  ([q, k, v, pk, pv, RNG.random((2, 1, 1, 6)) > 0.3], {}, _gqa_oracle(None), True)]
    s["linear"] = [([f32(2, 3, 4), f32(4, 5), f32(5)], {"activation": "gelu"},
                    lambda t: F.gelu(t[0] @ t[1] + t[2]), True),
                   ([f32(3, 4), f32(4, 5)], {}, lambda t: t[0] @ t[1], True),
                   ([f32(3, 4), f32(4, 5), f32(5)], {"activation": "silu"}, lambda t: F.silu(t[0] @ t[1] + t[2]), True)]
    s["fused_conv"] = [([f32(1, 3, 6, 6), f32(4, 3, 3, 3), f32(4)], {"padding": ((1, 1), (1, 1)), "activation": "relu"},
                        lambda t: F.relu(F.conv2d(t[0], t[1], t[2], padding=1)), True)]
    g4, g5 = f32(2, 4, 7, 2, lo=-1.3, hi=1.3), f32(1, 3, 4, 2, 3, lo=-1.3, hi=1.3)
    s["grid_sample"] = [([f32(2, 3, 5, 6), g4], attrs, _grid_sample_oracle(attrs), True) for attrs in (
        {"mode": "linear", "padding_mode": "zeros", "align_corners": False},
        {"mode": "nearest", "padding_mode": "border", "align_corners": True},
        {"mode": "cubic", "padding_mode": "reflection", "align_corners": False})]
    s["grid_sample"].append(([f32(1, 2, 4, 5, 3), g5], {"mode": "linear", "padding_mode": "reflection",
                                                        "align_corners": True},
                             _grid_sample_oracle({"mode": "linear", "padding_mode": "reflection",
                                                  "align_corners": True}), True))
    s["resize"] = [([f32(2, 3, 4, 5)], {"axes": (2, 3), "sizes": (7, 3), "scales": (7 / 4, 3 / 5), "mode": "linear"},
                    lambda t: F.interpolate(t[0], size=(7, 3), mode="bilinear", align_corners=False), True),
                   ([f32(2, 3, 4, 5)], {"axes": (2, 3), "sizes": (6, 9), "scales": (1.5, 1.8), "mode": "cubic",
                                        "coord": "align_corners"},
                    lambda t: F.interpolate(t[0], size=(6, 9), mode="bicubic", align_corners=True), True),
                   ([f32(2, 3, 5)], {"axes": (2,), "sizes": (10,), "scales": (2.0,), "coord": "asymmetric",
                                     "nearest_mode": "floor"},
                    lambda t: F.interpolate(t[0], scale_factor=2, mode="nearest"), True)]
    xy = f32(3, 2, lo=-2, hi=8)
    rois = np.concatenate([xy, xy + f32(3, 2, lo=0, hi=6)], axis=1)
    s["roi_align"] = [([f32(3, 2, 9, 10), rois, np.array([2, 0, 2], np.int64)], attrs,
                       _onnx_oracle("RoiAlign", attrs), True) for attrs in (
        {"output_height": 3, "output_width": 4, "sampling_ratio": 2, "spatial_scale": 0.9},
        {"mode": "max", "output_height": 2, "output_width": 2, "sampling_ratio": 3,
         "coordinate_transformation_mode": "output_half_pixel"})]
    deform = [([f32(2, 4, 5, 5), f32(2, 2, 2, 2), f32(2, 16, 5, 5), f32(2), f32(2, 8, 5, 5, lo=0, hi=1)],
               {"padding": ((1, 0), (0, 1)), "groups": 2, "offset_groups": 2},
               {"pads": [1, 0, 0, 1], "group": 2, "offset_group": 2}),
              ([f32(2, 2, 4, 5), f32(3, 2, 2, 3), f32(2, 12, 2, 2)], {"stride": (1, 2), "dilation": (2, 1)},
               {"strides": [1, 2], "dilations": [2, 1]})]
    s["deform_conv"] = [(arrays, attrs, _onnx_oracle("DeformConv", onnx_attrs), True)
                        for arrays, attrs, onnx_attrs in deform]
    s.update(_quant_samples())
    s.update(_qdq_samples())
    return s


def _quant_samples():
    """dynamic_quant_linear and matmul_nbits against the same arithmetic written in torch."""
    u8 = lambda *shape: RNG.integers(0, 256, size=shape).astype(np.uint8)  # noqa: E731
    w8 = ints(8, 5, lo=-127, hi=128, dtype=np.int8)
    return {
        "dynamic_quant_linear": [
            ([f32(2, 3, 8), w8, f32(5, lo=0.01, hi=0.1), f32(5)], {"activation": "gelu"},
             lambda t: F.gelu(_torch_dynamic_quant(t)), True),
            ([f32(3, 8, lo=0.5, hi=3.0), w8, f32(5, lo=0.01, hi=0.1)], {}, _torch_dynamic_quant, True)],
        "matmul_nbits": [
            ([f32(2, 40), u8(3, 2, 16), f32(3, 2, lo=0.01, hi=0.1)], {"bits": 4, "block_size": 32},
             lambda t: _torch_nbits(t, 4, 32), True),
            ([f32(2, 40), u8(3, 2, 16), f32(3, 2, lo=0.01, hi=0.1), u8(3, 1), f32(3)],
             {"bits": 4, "block_size": 32, "zero_points": True, "activation": "relu"},
             lambda t: F.relu(_torch_nbits(t, 4, 32)), True),
            ([f32(2, 20), u8(3, 2, 16), f32(3, 2, lo=0.01, hi=0.1), f32(3)], {"bits": 8, "block_size": 16},
             lambda t: _torch_nbits(t, 8, 16), True)],
    }


def _torch_dynamic_quant(t):
    """DynamicQuantizeLinear on x (uint8, per tensor), int64 products with the int8 weight, rescale, bias."""
    x, w, ws = t[:3]
    lo, hi = torch.clamp(x.min(), max=0.0), torch.clamp(x.max(), min=0.0)
    scale = (hi - lo) / 255.0
    zp = torch.round(torch.clamp(-lo / scale, 0, 255))
    q = torch.clamp(torch.round(x / scale) + zp, 0, 255)
    acc = (q.to(torch.int64) - zp.to(torch.int64)) @ w.to(torch.int64)
    y = acc.to(torch.float32) * (scale * ws)
    return y + t[3] if len(t) == 4 else y


def _torch_nbits(t, bits, block):
    """MatMulNBits' layout read in torch: nibbles low first, (q - zero point) * scale per block."""
    x, b, scales = t[:3]
    zero = 1 << (bits - 1)
    n, nb, _ = b.shape

    def unpack(p):
        p = p.to(torch.int32)
        return torch.stack([p & 15, p >> 4], dim=-1).flatten(-2) if bits == 4 else p
    q = unpack(b).reshape(n, nb, block).to(torch.float32)
    zp = unpack(t[3])[:, :nb].to(torch.float32)[..., None] if len(t) > 3 and t[3].dtype == torch.uint8 else zero
    w = ((q - zp) * scales[..., None]).reshape(n, nb * block)[:, :x.shape[-1]]
    y = x @ w.T
    return y + t[-1] if t[-1].dtype == torch.float32 and t[-1].ndim == 1 else y


def u8(*shape):
    return RNG.integers(0, 256, size=shape).astype(np.uint8)


def i8(*shape):
    return RNG.integers(-128, 128, size=shape).astype(np.int8)


def _qdq_samples():
    """The quantised ops against ONNX Runtime's CPU kernels (bit for bit: those are the kernels an
    imported quantised model runs on), and ONNX's reference where ONNX Runtime has no kernel."""
    halves = np.round(f32(3, 4, lo=-40, hi=40) * 2) / 2  # ties: round half to even
    scale, per_axis = np.float32(0.5), np.array([0.25, 0.5, 2.0], np.float32)
    pad1 = {"padding": ((1, 1), (1, 1))}
    return {
        "quantize_linear": [
            ([halves, np.array(scale), np.array(128, np.uint8)], {}, _ort_oracle("QuantizeLinear"), False),
            ([f32(2, 3, 4, lo=-100, hi=100), per_axis, np.array([-3, 0, 5], np.int8)], {"axis": 1},
             _ort_oracle("QuantizeLinear", axis=1), False),
            ([f32(3, 5, lo=-50, hi=50), f32(3, 3, lo=0.2, hi=1.0), np.zeros((3, 3), np.int8)],
             {"axis": 1, "block_size": 2}, _onnx_oracle("QuantizeLinear", {"axis": 1, "block_size": 2}), False)],
        "dequantize_linear": [
            ([u8(3, 4), np.array(scale), np.array(100, np.uint8)], {}, _ort_oracle("DequantizeLinear"), False),
            ([i8(3, 2), per_axis, np.array([1, -2, 0], np.int8)], {"axis": 0},
             _ort_oracle("DequantizeLinear", axis=0), False),
            ([ints(4, lo=-1000, hi=1000, dtype=np.int32), np.array(scale), np.array(0, np.int32)], {},
             lambda t: _ort_oracle("DequantizeLinear")(t[:2]), False)],
        "dynamic_quantize_linear": [
            ([f32(3, 4, lo=-3, hi=5)], {}, _ort_oracle("DynamicQuantizeLinear", outputs=3), False),
            ([f32(5, lo=0.5, hi=2)], {}, _ort_oracle("DynamicQuantizeLinear", outputs=3), False)],
        "matmul_integer": [
            ([u8(2, 3, 4), u8(4, 5), np.array(120, np.uint8), np.array(7, np.uint8)], {},
             _ort_oracle("MatMulInteger"), False),
            ([u8(3, 4), i8(4, 5), np.array(3, np.uint8), i8(5)], {}, _ort_oracle("MatMulInteger"), False)],
        "conv_integer": [
            ([u8(1, 2, 5, 5), u8(3, 2, 3, 3), np.array(9, np.uint8), np.array(120, np.uint8)], pad1,
             _ort_oracle("ConvInteger", pads=[1, 1, 1, 1]), False),
            ([u8(1, 2, 4, 4), u8(3, 2, 2, 2), np.array(9, np.uint8), u8(3)], {"stride": (2, 2)},
             _onnx_oracle("ConvInteger", {"strides": [2, 2]}), False)],
        "qlinear_matmul": [
            ([u8(2, 3, 4), np.array(0.02, np.float32), np.array(120, np.uint8), u8(4, 5),
              np.array(0.03, np.float32), np.array(7, np.uint8), np.array(0.05, np.float32),
              np.array(100, np.uint8)], {}, _ort_oracle("QLinearMatMul"), False),
            ([u8(3, 4), np.array(0.02, np.float32), np.array(120, np.uint8), i8(4, 5),
              f32(5, lo=0.01, hi=0.05), np.zeros(5, np.int8), np.array(0.04, np.float32),
              np.array(3, np.uint8)], {}, _ort_oracle("QLinearMatMul"), False)],
        "qlinear_conv": [
            ([u8(1, 2, 5, 5), np.array(0.02, np.float32), np.array(120, np.uint8), i8(3, 2, 3, 3),
              f32(3, lo=0.005, hi=0.02), np.zeros(3, np.int8), np.array(0.1, np.float32),
              np.array(128, np.uint8), ints(3, lo=-500, hi=500, dtype=np.int32)], pad1,
             _ort_oracle("QLinearConv", pads=[1, 1, 1, 1]), False),
            ([u8(2, 2, 4, 4), np.array(0.05, np.float32), np.array(3, np.uint8), u8(2, 2, 2, 2),
              np.array(0.01, np.float32), np.array(130, np.uint8), np.array(0.2, np.float32),
              np.array(10, np.uint8)], {"stride": (2, 2)}, _ort_oracle("QLinearConv", strides=[2, 2]), False)],
    }


def _ort_oracle(op_type, outputs=1, **attrs):
    """ONNX Runtime's CPU kernel for one node of op_type, as a torch oracle."""
    def run(t):
        from onnx import helper
        arrays = [a.numpy() for a in t]
        names = [f"x{i}" for i in range(len(arrays))]
        node = helper.make_node(op_type, names, [f"y{i}" for i in range(outputs)], **attrs)
        infos = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
                 for n, a in zip(names, arrays)]
        outs = [helper.make_empty_tensor_value_info(f"y{i}") for i in range(outputs)]
        model = helper.make_model(helper.make_graph([node], "oracle", infos, outs),
                                  opset_imports=[helper.make_opsetid("", 21)])
        model.ir_version = 10
        got = onnxruntime_outputs(model, dict(zip(names, arrays)))
        return tuple(torch.from_numpy(np.asarray(g)) for g in got) if outputs > 1 else torch.from_numpy(got[0])
    return run


def _grid_sample_oracle(attrs):
    mode = GRID_MODE_OLD_NAMES[attrs["mode"]]  # torch's names
    return lambda t: F.grid_sample(t[0], t[1], mode=mode, padding_mode=attrs["padding_mode"],
                                   align_corners=attrs["align_corners"])


def _onnx_oracle(op_type, attrs):
    """ONNX's reference implementation of op_type where torch has no counterpart."""
    from accelir.testing import reference_output
    return lambda t: torch.from_numpy(reference_output(op_type, [a.numpy() for a in t], **attrs))


def _rotate_half_oracle(x, cos, sin, r):
    """transformers' rotate-half rotary on the first ``r`` features, with cos / sin [B, S, r / 2]."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb
    c, s = (torch.cat([t, t], -1) for t in (cos, sin))
    rot, _ = apply_rotary_pos_emb(x[..., :r], x[..., :r], c, s)
    return torch.cat([rot, x[..., r:]], -1)


def _complex_rotary_oracle(x, cos, sin):
    """Interleaved rotary as a complex product: each (even, odd) pair times cos + i sin."""
    z = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2).contiguous())
    return torch.view_as_real(z * torch.complex(cos, sin)[:, None]).reshape(x.shape)


def _gqa_oracle(scale):
    """sdpa with grouped heads over the past keys / values and the new ones, and the present pair."""
    def oracle(t):
        q, k, v, pk, pv = t[:5]
        keys, values = torch.cat([pk, k], 2), torch.cat([pv, v], 2)
        mask = t[5] if len(t) == 6 else None
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=scale, enable_gqa=True)
        return y, keys, values
    return oracle


def _causal_bias(n):
    return torch.triu(torch.full((n, n), float("-inf")), 1)


def _dus_oracle(x, u, starts):
    out = x.clone()
    out[starts[0]:starts[0] + u.shape[0], starts[1]:starts[1] + u.shape[1]] = u
    return out


SAMPLES = samples()
# ops whose tests build regions or constants by hand below
# (the data-dependent ops: against onnx's ReferenceEvaluator and onnxruntime in test_dynamic.py)
HAND_TESTED = {"constant", "fusion", "cond", "while_loop", "scan"} | set(DATA_DEPENDENT_OPS)


def test_every_op_has_samples():
    missing = sorted(set(REGISTRY) - set(SAMPLES) - HAND_TESTED)
    assert not missing, f"ops without reference tests: {missing}"


CASES = [(op, i) for op in sorted(SAMPLES) for i in range(len(SAMPLES[op]))]


def _to_np(t):
    if t.dtype == torch.bfloat16:
        import ml_dtypes
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


@pytest.mark.parametrize("op,i", CASES, ids=[f"{op}-{i}" for op, i in CASES])
def test_reference_matches_torch(op, i):
    arrays, attrs, oracle, _ = SAMPLES[op][i]
    g = build(op, arrays, attrs)
    got = interpret(g, *arrays)
    with torch.no_grad():
        want = oracle([T(a) for a in arrays])
    want = list(want) if isinstance(want, (tuple, list)) or hasattr(want, "_fields") else [want]
    assert len(got) == len(want)
    for gv, wv, out in zip(got, want, g.outputs):
        w = _to_np(wv)
        assert gv.dtype == out.type.dtype.numpy
        assert gv.shape == w.shape, (gv.shape, w.shape)
        if gv.dtype.kind == "f" or gv.dtype.name == "bfloat16":
            np.testing.assert_allclose(gv.astype(np.float64), w.astype(np.float64), rtol=2e-5, atol=2e-5,
                                       equal_nan=True)
        else:
            np.testing.assert_array_equal(gv, w.astype(gv.dtype))


def _shares_leading_dim(arrays):
    return len({a.shape[0] for a in arrays if a.ndim}) == 1 and all(a.ndim for a in arrays)


SYM_CASES = [(op, i) for op, i in CASES if SAMPLES[op][i][3] and _shares_leading_dim(SAMPLES[op][i][0])]


@pytest.mark.parametrize("op,i", SYM_CASES, ids=[f"{op}-{i}" for op, i in SYM_CASES])
def test_type_rule_with_symbolic_leading_dim(op, i):
    arrays, attrs, _, _ = SAMPLES[op][i]
    g = build(op, arrays, attrs, symbolic=True)
    got = interpret(g, *arrays)  # the interpreter checks results against the symbolic types
    static = interpret(build(op, arrays, attrs), *arrays)
    for a, b in zip(got, static):
        np.testing.assert_array_equal(a, b)


COMPOSITES = sorted(n for n, d in REGISTRY.items() if d.composite)


@pytest.mark.parametrize("op", COMPOSITES)
def test_decomposition_matches_reference(op):
    for arrays, attrs, _, _ in SAMPLES[op]:
        g = build(op, arrays, attrs)
        node = next(iter(g.nodes))
        b = g.builder(before=node)
        new = REGISTRY[op].decompose(b, list(node.inputs), node.attrs)
        ref = interpret(g, *arrays)
        g.replace(node, new)
        verify(g)
        assert not any(n.op == op for n in g.nodes)
        got = interpret(g, *arrays)
        for a, r in zip(got, ref):
            np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype,torch_dtype", [(np.float16, torch.float16), ("bfloat16", torch.bfloat16)])
@pytest.mark.parametrize("op", ["exp", "tanh", "gelu", "softmax", "layer_norm", "matmul", "add", "reduce_sum"])
def test_low_precision_rounds_once_like_torch(op, dtype, torch_dtype):
    import ml_dtypes
    npdt = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    arrays, attrs, oracle, _ = SAMPLES[op][0]
    arrays = [a.astype(npdt) if a.dtype.kind == "f" else a for a in arrays]
    g = build(op, arrays, attrs)
    got = interpret(g, *arrays)[0]
    assert got.dtype == npdt
    tin = [T(a.astype(np.float32)).to(torch_dtype) for a in arrays]
    want = oracle(tin)
    want = want[0] if isinstance(want, tuple) else want
    np.testing.assert_allclose(got.astype(np.float32), want.float().numpy(), rtol=1e-2, atol=1e-2)


def test_integer_division_and_remainder_truncate():
    a = np.array([7, -7, 7, -7, 5], np.int32)
    b = np.array([2, 2, -2, -2, 0], np.int32)
    assert interpret(build("div", [a, b], {}), a, b)[0].tolist() == [3, -3, -3, 3, 0]
    assert interpret(build("rem", [a, b], {}), a, b)[0].tolist() == [1, -1, 1, -1, 0]


@pytest.mark.parametrize("a,b,want", [((3, 1), (1, 4), (3, 4)), ((5,), (2, 1, 5), (2, 1, 5)), ((), (2, 3), (2, 3)),
                                      (("n", 1), (1, 4), ("n", 4)), (("n",), (1,), ("n",)), ((1,), ("n",), ("n",)),
                                      (("n", 4), (3, 1), (3, 4))])
def test_broadcast_shapes(a, b, want):
    assert broadcast_shapes(a, b) == want


@pytest.mark.parametrize("a,b", [((3,), (4,)), (("n",), ("m",)), ((2, 3), (3, 2))])
def test_broadcast_shapes_rejects(a, b):
    with pytest.raises(TypeRuleError):
        broadcast_shapes(a, b)


def test_elementwise_dtypes_must_match():
    g = Graph()
    x = g.add_input(TensorType(DType.f32, (2,)))
    y = g.add_input(TensorType(DType.f16, (2,)))
    with pytest.raises(Exception, match="insert an explicit cast"):
        g.apply("add", x, y)


def test_region_ops():
    from accelir import parse
    text = """
graph main(%i: i64[], %x: f32[3]) -> (f32[3], f32[3]) {
  %0 = cond(%i, %x) : f32[3] {
    graph b0(%a: f32[3]) -> (f32[3]) {
      %1 = neg(%a) : f32[3]
      return %1
    }
    graph b1(%a: f32[3]) -> (f32[3]) {
      %1 = exp(%a) : f32[3]
      return %1
    }
  }
  %2 = fusion(%0, %x) {kind="elementwise"} : f32[3] {
    graph body(%a: f32[3], %b: f32[3]) -> (f32[3]) {
      %1 = mul(%a, %b) : f32[3]
      %2 = add(%1, %b) : f32[3]
      return %2
    }
  }
  return %0, %2
}
"""
    g = parse(text)
    verify(g)
    x = f32(3)
    for i, fn in ((0, np.negative), (1, np.exp), (7, np.exp)):
        c, f = interpret(g, np.array(i), x)
        np.testing.assert_allclose(c, fn(x), rtol=1e-6)
        np.testing.assert_allclose(f, fn(x) * x + x, rtol=1e-6)


def test_while_and_scan():
    from accelir import parse
    text = """
graph main(%x: f32[4], %xs: f32[5,4]) -> (f32[4], i64[], f32[4], f32[5,4]) {
  %n = constant() {name="zero", value=0} : i64[]
  %w0, %w1 = while_loop(%x, %n) : f32[4], i64[] {
    graph cond(%a: f32[4], %k: i64[]) -> (bool[]) {
      %lim = constant() {name="lim", value=3} : i64[]
      %c = lt(%k, %lim) : bool[]
      return %c
    }
    graph body(%a: f32[4], %k: i64[]) -> (f32[4], i64[]) {
      %one = constant() {name="one", value=1} : i64[]
      %k2 = add(%k, %one) : i64[]
      %a2 = add(%a, %a) : f32[4]
      return %a2, %k2
    }
  }
  %s0, %s1 = scan(%x, %xs) {num_carry=1, length=5} : f32[4], f32[5,4] {
    graph body(%c: f32[4], %e: f32[4]) -> (f32[4], f32[4]) {
      %c2 = add(%c, %e) : f32[4]
      return %c2, %c2
    }
  }
  return %w0, %w1, %s0, %s1
}
"""
    g = parse(text)
    verify(g)
    x, xs = f32(4), f32(5, 4)
    w0, w1, s0, s1 = interpret(g, x, xs)
    np.testing.assert_allclose(w0, x * 8, rtol=1e-6)
    assert int(w1) == 3
    np.testing.assert_allclose(s1, x + np.cumsum(xs, 0), rtol=1e-5)
    np.testing.assert_allclose(s0, s1[-1])
    assert str(g) == str(parse(str(g)))


def test_descending_sort_of_integer_extremes():
    x = np.array([[-128, 127, 0, -128, 5]], np.int8)
    vals, idx = interpret(build("sort", [x], {"axis": 1, "descending": True}), x)
    assert vals.tolist() == [[127, 5, 0, -128, -128]]
    assert idx.tolist() == [[1, 4, 2, 0, 3]]


def test_take_along_axis_indices_smaller_than_x_like_torch_gather():
    x = f32(4, 5)
    idx = ints(2, 3, lo=0, hi=4)
    (got,) = interpret(build("take_along_axis", [x, idx], {"axis": 0}), x, idx)
    np.testing.assert_array_equal(got, torch.gather(T(x), 0, T(idx)).numpy())


@pytest.mark.parametrize("mask", [(2, 1, 3, 3), (1, 1, 1, 3, 3)])
def test_an_attention_mask_may_not_widen_the_result(mask):
    """The result's shape is q's batch and rows: a mask that broadcasts the scores beyond them would
    make the reference's result larger than the node's type (and simplify, dropping an all-keep mask,
    would change it), so the type rule refuses it; a mask of the scores' shape or narrower is fine."""
    g = Graph()
    q = g.add_input(TensorType(DType.f32, (1, 2, 3, 4)))
    fits = g.add_input(TensorType(DType.f32, (2, 1, 3)))
    assert g.builder().op("attention", q, q, q, fits).type == q.type
    sym = g.add_input(TensorType(DType.f32, ("n", 2, 3, 4)))  # a symbolic batch may be the mask's 2 at run time
    assert g.builder().op("attention", sym, sym, sym, g.add_input(TensorType(DType.f32, (2, 1, 3, 3)))).type == sym.type
    m = g.add_input(TensorType(DType.f32, mask))
    with pytest.raises(VerificationError, match=r"attention: the mask .* broadcasts the scores .* beyond them"):
        g.builder().op("attention", q, q, q, m)
