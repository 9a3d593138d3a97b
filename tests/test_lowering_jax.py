"""The jax lowering: every registered op against the reference interpreter, for every
dtype its type rule accepts, under jax.jit; symbolic dims through shape polymorphism;
export artifacts; scoped x64; framework in / framework out; errors before tracing."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from accelir import DType, Graph, LoweringError, TensorType, interpret, verify
from accelir.testing import assert_close, relative_error
from accelir.ops import REGISTRY
from accelir.ops.dynamic import DATA_DEPENDENT_OPS
from accelir.ops.registry import infer_types, normalize_attrs
from accelir.errors import VerificationError
import accelir.lowering.jax.context as lj
from accelir.lowering.jax import (JAX_RULES, JaxModule, export_jax, hlo, load_exported, rule_for, stablehlo,
                                  to_jax)

# the per-op graphs have hundreds of tiny kernels: compile them without LLVM's slow passes
FAST_COMPILE = {"xla_backend_optimization_level": 0}
TOL = {DType.f16: 1e-2, DType.bf16: 4e-2, DType.f32: 2e-5, DType.f64: 1e-10}


def data(dt: DType, shape, lo=-3.0, hi=3.0, seed=0, grid=None) -> np.ndarray:
    """Random values of dtype dt in [lo, hi]; ints are drawn from the integers in range
    (u8 from its non-negative part); ``grid`` snaps floats to multiples of it."""
    rng = np.random.default_rng(seed)
    if dt is DType.bool:
        return rng.random(shape) > 0.5
    if dt.is_float:
        x = rng.uniform(lo, hi, size=shape)
        if grid:
            x = np.round(x / grid) * grid
        return x.astype(dt.numpy)
    lo_i = 0 if dt is DType.u8 else int(np.floor(lo))
    return rng.integers(lo_i, max(int(np.ceil(hi)), lo_i + 1) + 1, size=shape).astype(dt.numpy)


def ints(values, dt=DType.i32) -> np.ndarray:
    return np.asarray(values, dtype=dt.numpy)


# ----- the case table: op -> functions of a dtype giving (inputs, attrs[, regions]) -----

Case = Callable[[DType], tuple]

DOMAIN = {"log": (0.1, 3), "sqrt": (0.1, 3), "rsqrt": (0.1, 3), "log1p": (-0.5, 3), "asin": (-0.9, 0.9),
          "acos": (-0.9, 0.9), "acosh": (1.1, 3), "atanh": (-0.9, 0.9), "reciprocal": (0.5, 3),
          "tan": (-1.2, 1.2), "exp": (-3, 3), "cosh": (-3, 3), "sinh": (-3, 3)}
ROUNDING = ("floor", "ceil", "round")


def unary_case(op: str) -> Case:
    lo, hi = DOMAIN.get(op, (-20, 20))

    def case(dt):
        if dt.is_float and op not in DOMAIN:
            lo_f, hi_f = (-4, 4)
        else:
            lo_f, hi_f = lo, hi
        return [data(dt, (3, 5), lo_f, hi_f, grid=0.25 if op in ROUNDING else None)], {}
    return case


def binary_case(op: str) -> Case:
    def case(dt):
        if op == "pow":
            if dt.is_float:
                return [data(dt, (2, 3, 4), 0.5, 2), data(dt, (3, 1), -2, 2, seed=1)], {}
            return [data(dt, (2, 3, 4), -3, 3), data(dt, (3, 1), -2, 3, seed=1)], {}
        grid = 0.5 if op in ("eq", "ne", "lt", "le", "gt", "ge", "max", "min") else None
        a = data(dt, (2, 3, 4), -6, 6, grid=grid)
        b = data(dt, (3, 1), -6, 6, seed=1, grid=grid)
        if op in ("div", "rem") and dt.is_float:
            b = np.where(np.abs(b.astype(np.float32)) < 0.5, 1.5, b).astype(dt.numpy)
        if op in ("div", "rem") and dt.is_int:
            b = b.copy()
            b[0, 0] = 0  # x / 0 and x rem 0 are 0 for ints
        return [a, b], {}
    return case


def region(in_types, build) -> Graph:
    g = Graph("region")
    ins = [g.add_input(t) for t in in_types]
    g.set_outputs(build(g, *ins))
    return g


def combine(g, a, b):
    return g.apply("or" if a.dtype is DType.bool else "add", a, b)


def scale(g, a, b):
    return g.apply("and" if a.dtype is DType.bool else "mul", a, b)


def fusion_case(dt):
    t = TensorType(dt, (3, 4))
    body = region([t, t], lambda g, a, b: [combine(g, scale(g, a, b), a), g.apply("transpose", a, perm=(1, 0))])
    return [data(dt, (3, 4)), data(dt, (3, 4), seed=1)], {"kind": "elementwise"}, [body]


def cond_cases():
    def branches(dt, n):
        t = TensorType(dt, (3, 4))
        picks = [lambda g, x, y: [x], lambda g, x, y: [y], lambda g, x, y: [g.apply("reverse", x, axes=(0,))]]
        return [region([t, t], picks[i]) for i in range(n)]

    def case(index, n):
        return lambda dt: ([index, data(dt, (3, 4)), data(dt, (3, 4), seed=1)], {}, branches(dt, n))
    return [case(np.asarray(True), 2), case(np.asarray(False), 2), case(ints(1), 3), case(ints(7), 3),
            case(ints(-3, DType.i64), 3), case(ints(2, DType.u8), 3)]


def while_case(dt):
    counter = TensorType(DType.i32, ())
    t = TensorType(dt, (2, 3))

    def cond(g, i, acc):
        return [g.apply("lt", i, g.const(np.int32(3)))]

    def body(g, i, acc):
        nxt = g.apply("not", acc) if dt is DType.bool else g.apply("add", acc, acc)
        return [g.apply("add", i, g.const(np.int32(1))), nxt]
    return [ints(0), data(dt, (2, 3), -2, 2)], {}, [region([counter, t], cond), region([counter, t], body)]


def scan_case(reverse):
    def case(dt):
        c, carry, x = TensorType(dt, (3,)), TensorType(dt, (3,)), TensorType(dt, (3,))

        def body(g, c, acc, x):
            new = combine(g, acc, scale(g, x, c))
            return [new, new, g.apply("reverse", x, axes=(0,))]
        attrs = {"num_consts": 1, "num_carry": 1, "length": 4, "reverse": reverse}
        return ([data(dt, (3,), -1, 1), data(dt, (3,), -1, 1, seed=1), data(dt, (4, 3), -1, 1, seed=2)], attrs,
                [region([c, carry, x], body)])
    return case


def conv_cases(op):
    extra = {"activation": "gelu"} if op == "fused_conv" else {}
    return [
        lambda dt: ([data(dt, (2, 4, 9), -1, 1), data(dt, (6, 2, 3), -1, 1, seed=1)],
                    {"stride": (2,), "padding": ((1, 2),), "groups": 2, **extra}),
        lambda dt: ([data(dt, (1, 3, 7, 6), -1, 1), data(dt, (4, 3, 3, 2), -1, 1, seed=1),
                     data(dt, (4,), -1, 1, seed=2)],
                    {"stride": (2, 1), "padding": ((1, 1), (0, 1)), "dilation": (1, 2), **extra}),
        lambda dt: ([data(dt, (1, 2, 5), -1, 1), data(dt, (3, 2, 3), -1, 1, seed=1)],
                    {"lhs_dilation": (2,), "padding": ((2, 2),), **({"activation": "relu"} if extra else {})}),
    ]


def pool_cases(op):
    extra = [{"count_include_pad": False}] if op == "avg_pool" else [{}]
    cases = []
    for more in [{}] + extra:
        cases += [
            lambda dt, m=more: ([data(dt, (1, 2, 7, 8), -9, 9)],
                                {"kernel": (3, 3), "stride": (2, 2), "padding": ((1, 1), (1, 0)), **m}),
            lambda dt, m=more: ([data(dt, (2, 1, 7, 7), -9, 9)],
                                {"kernel": (2, 2), "stride": (2, 2), "ceil_mode": True, "padding": ((1, 0), (0, 1)),
                                 **m}),
            lambda dt, m=more: ([data(dt, (1, 1, 9), -9, 9)], {"kernel": (2,), "dilation": (3,), **m}),
        ]
    return cases


def attention_cases():
    def qkv(dt):
        return [data(dt, (2, 3, 5, 8), -1, 1), data(dt, (2, 3, 6, 8), -1, 1, seed=1),
                data(dt, (2, 3, 6, 4), -1, 1, seed=2)]
    return [
        lambda dt: (qkv(dt), {}),
        lambda dt: (qkv(dt), {"causal": True, "scale": 0.3}),
        lambda dt: (qkv(dt) + [data(DType.bool, (5, 6), seed=3) | np.eye(5, 6, dtype=bool)], {}),
        lambda dt: (qkv(dt) + [data(dt, (3, 1, 6), -1, 1, seed=3)], {"causal": True}),
    ]


def rotary_cases():
    def rot(dt, r):
        return [data(dt, (2, 3, 4, 8), -1, 1), data(dt, (2, 4, r // 2), -1, 1, seed=1),
                data(dt, (1, 4, r // 2), -1, 1, seed=2)]
    return [lambda dt: (rot(dt, 8), {}), lambda dt: (rot(dt, 4), {"rotary_dim": 4}),
            lambda dt: (rot(dt, 8), {"interleaved": True})]


def gqa_cases():
    def args(dt, n):
        return [data(dt, (2, n, 1, 8), -1, 1), data(dt, (2, 2, 1, 8), -1, 1, seed=1),
                data(dt, (2, 2, 1, 8), -1, 1, seed=2), data(dt, (2, 2, 5, 8), -1, 1, seed=3),
                data(dt, (2, 2, 5, 8), -1, 1, seed=4)]
    return [lambda dt: (args(dt, 4), {}),
            lambda dt: (args(dt, 2) + [data(dt, (2, 1, 1, 6), -1, 1, seed=5)], {"scale": 0.3})]


def cast_cases():
    def case(to):
        return lambda dt: ([data(dt, (3, 5), -40, 40) if dt.is_float else data(dt, (3, 5), -40, 40)],
                           {"dtype": to})
    return [case(to) for to in DType]


def norm_cases(op):
    skip = op.startswith("skip_")
    two = op in ("layer_norm", "skip_layer_norm")

    def case(params, axis):
        def make(dt):
            xs = [data(dt, (2, 3, 8))] + ([data(dt, (3, 8), seed=5)] if skip else [])
            xs += [data(dt, (8,) if axis == -1 else (3, 8), seed=k + 1) for k in range(params)]
            return xs, {"axis": axis, "epsilon": 1e-5}
        return make
    return [case(0, -1), case(2 if two else 1, -1), case(1, -2)]


def slice_case(dt):
    return [data(dt, (5, 6))], {"starts": (1, 0), "stops": (4, 6), "steps": (2, 4), "axes": (0, -1)}


def dynamic_cases(op):
    if op == "dynamic_slice":
        return [lambda dt: ([data(dt, (5, 6)), ints(1), ints(4, DType.i64)], {"sizes": (2, 3)}),
                lambda dt: ([data(dt, (5, 6)), ints(-2, DType.i8), ints(200, DType.u8)], {"sizes": (3, 6)})]
    return [lambda dt: ([data(dt, (5, 6)), data(dt, (2, 3), seed=1), ints(1), ints(4, DType.i64)], {}),
            lambda dt: ([data(dt, (5, 6)), data(dt, (3, 6), seed=1), ints(-2, DType.i8), ints(9, DType.u8)], {})]


def scatter_cases(op):
    reductions = ("none", "add", "mul", "max", "min")

    def elements(red):
        def make(dt):
            if red == "none":
                idx = np.stack([np.random.default_rng(c).permutation(4)[:2] for c in range(5)], axis=1)
            else:
                idx = np.random.default_rng(1).integers(-4, 4, size=(3, 5))
            return [data(dt, (4, 5), -3, 3), idx.astype(np.int64), data(dt, (3, 6), -3, 3, seed=2)], \
                {"axis": 0, "reduction": red}
        return make

    def nd(red, k):
        def make(dt):
            if red == "none":
                idx = np.stack([np.random.default_rng(d).permutation(4)[:3] for d in range(k)], axis=1) - 1
            else:
                idx = np.random.default_rng(1).integers(0, 4, size=(3, k))
            upd = data(dt, (3,) + (5,) * (2 - k), -3, 3, seed=2)
            return [data(dt, (4, 5), -3, 3), idx.astype(np.int32), upd], {"reduction": red}
        return make
    if op == "scatter_elements":
        return [elements(r) for r in reductions]
    return [nd(r, k) for r in reductions for k in (1, 2)]


def reduce_cases(op):
    lo, hi = ((0.5, 1.5) if op == "reduce_prod" else (-3, 3))
    return [lambda dt: ([data(dt, (2, 3, 4), lo, hi)], {"axes": (1,), "keepdims": False}),
            lambda dt: ([data(dt, (2, 3, 4), lo, hi)], {"axes": (0, -1), "keepdims": True})]


def cum_cases(op):
    lo, hi = ((0.5, 1.5) if op == "cumprod" else (-3, 3))
    variants = [{"axis": 1}, {"axis": 0, "reverse": True}]
    if op in ("cumsum", "cumprod"):
        variants += [{"axis": 1, "exclusive": True}, {"axis": -1, "exclusive": True, "reverse": True}]
    return [lambda dt, a=a: ([data(dt, (3, 5), lo, hi)], a) for a in variants]


def arg_cases():
    return [lambda dt: ([data(dt, (3, 6), -3, 3)], {"axis": 1}),
            lambda dt: ([data(dt, (3, 6), -3, 3)], {"axis": 0, "keepdims": True, "select_last_index": True})]


def sort_cases(op):
    if op == "sort":
        variants = [{"axis": -1}, {"axis": 0, "descending": True}, {"axis": 1, "descending": True}]
    else:
        variants = [{"k": 3}, {"k": 2, "axis": 0, "largest": False}, {"k": 4, "largest": True}]
    return [lambda dt, a=a: ([data(dt, (4, 6), -3, 3, grid=0.5)], a) for a in variants]


def gather_cases(op):
    if op == "gather":
        return [lambda dt: ([data(dt, (5, 3)), ints([[0, -1], [4, -5], [2, 2]])], {"axis": 0}),
                lambda dt: ([data(dt, (5, 3)), ints([2, -3, 0, 1], DType.i64)], {"axis": 1})]
    if op == "take_along_axis":
        return [lambda dt: ([data(dt, (3, 4)), ints([[0, -1], [3, 2], [-4, 1]], DType.i8)], {"axis": 1}),
                lambda dt: ([data(dt, (3, 4)), ints([[0, 1, 2, 0, 3], [3, 3, -1, 0, 1], [2, 1, 0, -2, 2]], DType.i64)],
                            {"axis": 1})]
    return [lambda dt: ([data(dt, (3, 4, 5)), ints([[0, 1], [2, -1]])], {}),
            lambda dt: ([data(dt, (3, 4, 5)), ints([[[1], [3]], [[0], [0]], [[-1], [2]]], DType.i64)],
                        {"batch_dims": 1})]


def grid_sample_cases():
    def case(shape, grid_shape, mode, pad, align):
        return lambda dt: ([data(dt, shape, -1, 1), data(dt, grid_shape, -1.3, 1.3, seed=1)],
                           {"mode": mode, "padding_mode": pad, "align_corners": align})
    return [case((2, 3, 5, 6), (2, 4, 7, 2), "linear", "zeros", False),
            case((2, 3, 5, 6), (2, 4, 7, 2), "cubic", "border", True),
            case((2, 3, 5, 6), (2, 4, 7, 2), "nearest", "reflection", False),
            case((1, 2, 4, 5, 3), (1, 3, 4, 2, 3), "linear", "reflection", True)]


def roi_align_cases():
    def case(attrs):
        def make(dt):
            corner = data(DType.f32, (4, 2), -2, 6, seed=1)
            rois = np.concatenate([corner, corner + data(DType.f32, (4, 2), 0, 5, seed=2)], axis=1)
            return [data(dt, (2, 3, 8, 9), -1, 1), rois.astype(dt.numpy), ints([1, 0, 1, 1], DType.i64)], attrs
        return make
    return [case({"output_height": 3, "output_width": 2, "sampling_ratio": 2}),
            case({"mode": "max", "output_height": 2, "output_width": 3, "sampling_ratio": 3, "spatial_scale": 0.8,
                  "coordinate_transformation_mode": "output_half_pixel"})]


def deform_conv_cases():
    return [lambda dt: ([data(dt, (2, 4, 5, 5), -1, 1), data(dt, (2, 2, 2, 2), -1, 1, seed=1),
                         data(dt, (2, 16, 5, 5), -2, 2, seed=2), data(dt, (2,), -1, 1, seed=3),
                         data(dt, (2, 8, 5, 5), 0, 1, seed=4)],
                        {"padding": ((1, 0), (0, 1)), "groups": 2, "offset_groups": 2}),
            lambda dt: ([data(dt, (1, 2, 4, 5), -1, 1), data(dt, (3, 2, 2, 3), -1, 1, seed=1),
                         data(dt, (1, 12, 2, 2), -2, 2, seed=2)], {"stride": (1, 2), "dilation": (2, 1)})]


def linear_cases():
    def case(act, bias):
        return lambda dt: ([data(dt, (2, 3, 4), -1, 1), data(dt, (4, 5), -1, 1, seed=1)]
                           + ([data(dt, (5,), -1, 1, seed=2)] if bias else []), {"activation": act})
    return [case(a, b) for a in REGISTRY["linear"].attrs["activation"].choices for b in (True, False)]


def qdq_cases() -> dict[str, list[Case]]:
    """The quantised ops through their decompositions: integers bit for bit with the interpreter."""
    u8, i8, f32 = DType.u8, DType.i8, DType.f32

    def q(shape, dt=u8, seed=0):
        return data(dt, shape, -128 if dt is i8 else 0, 127 if dt is i8 else 255, seed=seed)

    def s(shape=(), seed=0):
        return data(f32, shape, 0.002, 0.02, seed=seed)
    pad = {"padding": ((1, 1), (1, 1))}
    return {
        "quantize_linear": [
            lambda dt: ([data(dt, (3, 4), -40, 40, grid=0.5), np.asarray(0.5, dt.numpy), q((), seed=1)], {}),
            lambda dt: ([data(f32, (2, 3, 4), -100, 100), data(f32, (3,), 0.25, 2, seed=1), q((3,), i8, 2)],
                        {"axis": 1}),
            lambda dt: ([data(f32, (3, 5), -50, 50), data(f32, (3, 3), 0.2, 1, seed=1), q((3, 3), i8, 2)],
                        {"axis": 1, "block_size": 2})],
        "dequantize_linear": [
            lambda dt: ([q((3, 4)), np.asarray(0.5, dt.numpy), q((), seed=1)], {}),
            lambda dt: ([q((3, 2), i8), data(f32, (3,), 0.25, 2, seed=1), q((3,), i8, 2)], {"axis": 0})],
        "dynamic_quantize_linear": [lambda dt: ([data(dt, (3, 4), -3, 5)], {})],
        "matmul_integer": [lambda dt: ([q((2, 3, 4)), q((4, 5), i8, 1), q((), seed=2), q((5,), i8, 3)], {})],
        "conv_integer": [lambda dt: ([q((1, 2, 5, 5)), q((3, 2, 3, 3), seed=1), q((), seed=2), q((3,), seed=3)],
                                     pad)],
        "qlinear_matmul": [lambda dt: ([q((2, 3, 4)), s(), q((), seed=1), q((4, 5), i8, 2), s((5,), 1),
                                        q((5,), i8, 3), s(seed=2), q((), seed=4)], {})],
        "qlinear_conv": [lambda dt: ([q((1, 2, 5, 5)), s(), q((), seed=1), q((3, 2, 3, 3), i8, 2), s((3,), 1),
                                      q((3,), i8, 3), s(seed=2), q((), seed=4), data(DType.i32, (3,), -500, 500)],
                                     pad)],
    }


UNARY_OPS = ("neg", "abs", "exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "sin", "cos", "tan", "asin", "acos",
             "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "tanh", "sigmoid", "erf", "floor", "ceil", "round",
             "sign", "reciprocal", "relu", "not", "isnan", "isinf", "silu")
BINARY_OPS = ("add", "sub", "mul", "div", "pow", "max", "min", "rem", "atan2", "and", "or", "xor", "eq", "ne", "lt",
              "le", "gt", "ge")

CASES: dict[str, list[Case]] = {
    **{op: [unary_case(op)] for op in UNARY_OPS},
    **{op: [binary_case(op)] for op in BINARY_OPS},
    "gelu": [lambda dt: ([data(dt, (3, 5))], {"approximate": "none"}),
             lambda dt: ([data(dt, (3, 5))], {"approximate": "tanh"})],
    "where": [lambda dt: ([data(DType.bool, (3, 1)), data(dt, (3, 4)), data(dt, (4,), seed=1)], {})],
    "cast": cast_cases(),
    **{op: reduce_cases(op) for op in ("reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_prod")},
    **{op: [lambda dt: ([data(dt, (3, 4))], {"axes": (1,)}), lambda dt: ([data(dt, (2, 3, 4))], {"axes": (0, 2)})]
       for op in ("reduce_any", "reduce_all")},
    "argmax": arg_cases(), "argmin": arg_cases(),
    **{op: cum_cases(op) for op in ("cumsum", "cumprod", "cummax", "cummin")},
    "sort": sort_cases("sort"), "topk": sort_cases("topk"),
    "matmul": [lambda dt: ([data(dt, (2, 3, 4), -2, 2), data(dt, (4, 5), -2, 2, seed=1)], {}),
               lambda dt: ([data(dt, (4,), -2, 2), data(dt, (4, 5), -2, 2, seed=1)], {}),
               lambda dt: ([data(dt, (3, 4), -2, 2), data(dt, (4,), -2, 2, seed=1)], {}),
               lambda dt: ([data(dt, (2, 1, 3, 4), -2, 2), data(dt, (5, 4, 2), -2, 2, seed=1)], {})],
    "dot_general": [lambda dt: ([data(dt, (2, 3, 4), -2, 2), data(dt, (2, 4, 5), -2, 2, seed=1)],
                                {"lhs_contracting": (2,), "rhs_contracting": (1,), "lhs_batch": (0,),
                                 "rhs_batch": (0,)}),
                    lambda dt: ([data(dt, (3, 4), -2, 2), data(dt, (5, 4), -2, 2, seed=1)],
                                {"lhs_contracting": (1,), "rhs_contracting": (1,)})],
    "conv": conv_cases("conv"), "fused_conv": conv_cases("fused_conv"),
    "max_pool": pool_cases("max_pool"), "avg_pool": pool_cases("avg_pool"),
    "reshape": [lambda dt: ([data(dt, (2, 3, 4))], {"shape": (6, 4)})],
    "transpose": [lambda dt: ([data(dt, (2, 3, 4))], {"perm": (2, 0, 1)})],
    "broadcast_to": [lambda dt: ([data(dt, (3, 1))], {"shape": (2, 3, 4)})],
    "squeeze": [lambda dt: ([data(dt, (2, 1, 3))], {"axes": (1,)})],
    "unsqueeze": [lambda dt: ([data(dt, (2, 3))], {"axes": (0, -1)})],
    "slice": [slice_case],
    "reverse": [lambda dt: ([data(dt, (2, 3, 4))], {"axes": (0, -1)})],
    "concat": [lambda dt: ([data(dt, (2, 3)), data(dt, (2, 1), seed=1), data(dt, (2, 2), seed=2)], {"axis": 1})],
    "pad": [lambda dt: ([data(dt, (3, 4))], {"pads": ((1, 2), (0, 3)), "value": 1.5}),
            lambda dt: ([data(dt, (3, 4))], {"pads": ((2, 1), (1, 2)), "mode": "reflect"}),
            lambda dt: ([data(dt, (3, 4))], {"pads": ((0, 2), (3, 1)), "mode": "edge"})],
    **{op: gather_cases(op) for op in ("gather", "take_along_axis", "gather_nd")},
    **{op: scatter_cases(op) for op in ("scatter_elements", "scatter_nd")},
    **{op: dynamic_cases(op) for op in ("dynamic_slice", "dynamic_update_slice")},
    "iota": [lambda dt: ([], {"shape": (3, 4), "axis": 1, "dtype": dt})],
    "constant": [lambda dt: ([], {"value": data(dt, (3, 30), seed=4)}),
                 lambda dt: ([], {"value": data(dt, (2,), seed=5)})],
    "softmax": [lambda dt: ([data(dt, (2, 5), -4, 4)], {"axis": -1}),
                lambda dt: ([data(dt, (2, 5), -4, 4)], {"axis": 0})],
    "log_softmax": [lambda dt: ([data(dt, (2, 5), -4, 4)], {"axis": 1})],
    **{op: norm_cases(op) for op in ("layer_norm", "rms_norm", "skip_layer_norm", "skip_rms_norm")},
    "batch_norm": [lambda dt: ([data(dt, (2, 3, 4, 4)), data(dt, (3,), seed=1), data(dt, (3,), seed=2),
                                data(dt, (3,), seed=3), data(dt, (3,), 0.5, 2, seed=4)], {"epsilon": 1e-3})],
    "attention": attention_cases(),
    "rotary_embedding": rotary_cases(),
    "group_query_attention": gqa_cases(),
    "linear": linear_cases(),
    "dynamic_quant_linear": [
        lambda dt: ([data(dt, (2, 3, 8)), data(DType.i8, (8, 5), -127, 126, seed=1), data(DType.f32, (5,), 0.01, 0.1),
                     data(DType.f32, (5,), seed=2)], {"activation": "gelu"}),
        lambda dt: ([data(dt, (3, 8), 0.5, 3), data(DType.i8, (8, 5), -127, 126, seed=1),
                     data(DType.f32, (5,), 0.01, 0.1)], {})],
    "matmul_nbits": [
        lambda dt: ([data(dt, (2, 40)), data(DType.u8, (3, 2, 16), 0, 254, seed=1),
                     data(DType.f32, (3, 2), 0.01, 0.1, seed=2)], {"bits": 4, "block_size": 32}),
        lambda dt: ([data(dt, (2, 40)), data(DType.u8, (3, 2, 16), 0, 254, seed=1),
                     data(DType.f32, (3, 2), 0.01, 0.1, seed=2), data(DType.u8, (3, 1), 0, 254, seed=3),
                     data(DType.f32, (3,), seed=4)], {"bits": 4, "block_size": 32, "zero_points": True,
                                                      "activation": "relu"}),
        lambda dt: ([data(dt, (2, 20)), data(DType.u8, (3, 2, 16), 0, 254, seed=1),
                     data(DType.f32, (3, 2), 0.01, 0.1, seed=2), data(DType.f32, (3,), seed=4)],
                    {"bits": 8, "block_size": 16})],
    "grid_sample": grid_sample_cases(),
    "resize": [lambda dt: ([data(dt, (2, 3, 4, 5))], {"axes": (2, 3), "sizes": (8, 10), "scales": (2.0, 2.0)}),
               lambda dt: ([data(dt, (2, 3, 4, 5))], {"axes": (2, 3), "sizes": (7, 3), "scales": (1.75, 0.6),
                                                      "mode": "linear", "antialias": True}),
               lambda dt: ([data(dt, (2, 3, 5))], {"axes": (2,), "sizes": (9,), "scales": (1.8,), "mode": "cubic",
                                                   "coord": "align_corners"})],
    "roi_align": roi_align_cases(),
    "deform_conv": deform_conv_cases(),
    "fusion": [fusion_case],
    "cond": cond_cases(),
    "while_loop": [while_case],
    "scan": [scan_case(False), scan_case(True)],
    **qdq_cases(),
}


# An op's first case runs in every dtype its type rule accepts, the others in one dtype
# of each kind (keeps the compile small); cast's cases are its target dtypes, so all run.
CASE_DTYPES = (DType.f32, DType.f16, DType.i32, DType.bool)
EVERY_CASE_EVERY_DTYPE = {"cast"}


def build_op_graph(op: str) -> tuple[Graph, list[np.ndarray], list[str], set[DType]]:
    """One graph holding the cases of ``op`` for the dtypes its type rule accepts."""
    g = Graph(op)
    arrays: list[np.ndarray] = []
    outputs, labels, covered = [], [], set()
    for k, case in enumerate(CASES[op]):
        for dt in (DType if k == 0 or op in EVERY_CASE_EVERY_DTYPE else CASE_DTYPES):
            inputs, attrs, *rest = case(dt)
            regions = rest[0] if rest else ()
            if op == "constant":
                value = attrs["value"]
                outputs.append(g.const(value))
                labels.append(f"case {k} {dt}")
                covered.add(dt)
                continue
            try:
                infer_types(op, [TensorType.of(a) for a in inputs], normalize_attrs(op, attrs),
                            regions=tuple(regions))
            except VerificationError:
                continue
            ins = [g.add_input(TensorType.of(a), f"x{len(arrays) + i}") for i, a in enumerate(inputs)]
            arrays += inputs
            node = g.make(op, ins, attrs, regions=regions)
            outputs += node.outputs
            labels += [f"case {k} {dt} output {i}" for i in range(len(node.outputs))]
            covered.add(dt)
    g.set_outputs(outputs)
    verify(g)
    return g, arrays, labels, covered


def test_every_op_has_a_rule_and_a_case():
    assert sorted(op for op in REGISTRY if rule_for(op) is None) == []
    # the data-dependent ops are refused by name (test_dynamic.py)
    assert sorted(set(REGISTRY) - set(CASES) - set(DATA_DEPENDENT_OPS)) == []


@pytest.mark.parametrize("op", sorted(CASES))
def test_op_matches_interpreter(op):
    g, arrays, labels, covered = build_op_graph(op)
    assert covered, f"{op}: no dtype was accepted by its type rule"
    want = interpret(g, *arrays)
    got = JaxModule(g, compiler_options=FAST_COMPILE)(*arrays)
    assert len(got) == len(want)
    for label, a, b in zip(labels, got, want):
        assert_close(a, b, TOL, err_msg=f"{op} {label}")


# ----- symbolic dims -----------------------------------------------------------------

def symbolic_graph() -> Graph:
    g = Graph("sym")
    x = g.add_input(TensorType(DType.f32, ("batch", "seq", 8)), "x")
    w = g.const(data(DType.f32, (8, 8), seed=7), name="w")
    h = g.apply("gelu", g.apply("matmul", x, w))
    flat = g.apply("reshape", h, shape=("batch*seq", 8))
    pos = g.apply("iota", shape=("seq", 8), axis=0, dtype=DType.f32)
    y = g.apply("add", h, pos)
    head = g.apply("slice", y, starts=(1,), stops=("seq",), axes=(1,))
    g.set_outputs([flat, head, g.apply("reduce_sum", y, axes=(1,))])
    verify(g)
    return g


@pytest.mark.parametrize("shape", [(2, 5, 8), (3, 7, 8)])
def test_symbolic_attrs_follow_traced_shapes(shape):
    g = symbolic_graph()
    x = data(DType.f32, shape)
    for got, want in zip(JaxModule(g)(x), interpret(g, x)):
        assert_close(got, want, TOL, err_msg="symbolic")


def test_export_is_shape_polymorphic_and_loads_back():
    g = symbolic_graph()
    text = stablehlo(g, symbolic=True)
    assert "tensor<?x?x8xf32>" in text
    fn = load_exported(export_jax(g))
    for shape in [(1, 3, 8), (4, 6, 8)]:
        x = data(DType.f32, shape, seed=3)
        for got, want in zip(fn(x), interpret(g, x)):
            assert isinstance(got, jax.Array)
            assert_close(got, want, TOL, err_msg="exported")


def test_static_export_and_text_forms():
    g = symbolic_graph()
    x = data(DType.f32, (2, 4, 8))
    assert "tensor<2x4x8xf32>" in stablehlo(g, [x])
    text = hlo(g, [x])
    assert text.startswith("HloModule") and "f32[2,4,8]" in text
    fn = load_exported(export_jax(g, [x], symbolic=False))
    assert_close(fn(x)[0], interpret(g, x)[0], TOL, err_msg="static export")
    with pytest.raises(LoweringError, match="symbolic input dims"):
        stablehlo(g)


def test_unbound_symbol_is_a_lowering_error():
    g = Graph()
    x = g.add_input(TensorType(DType.f32, (4,)), "x")
    g.set_outputs([g.apply("add", x, g.apply("iota", shape=("n",), axis=0, dtype=DType.f32))])
    with pytest.raises(LoweringError, match="'n'"):
        to_jax(g)(np.zeros(4, np.float32))


# ----- x64, frameworks, constants ----------------------------------------------------

def wide_graph() -> Graph:
    g = Graph()
    x = g.add_input(TensorType(DType.i64, (3,)), "x")
    y = g.add_input(TensorType(DType.f64, (3,)), "y")
    g.set_outputs([g.apply("add", x, g.const(np.int64(2**40))), g.apply("mul", y, g.const(np.float64(1 + 2**-40)))])
    return g


def test_x64_is_scoped_to_the_lowering():
    assert not jax.config.jax_enable_x64
    g = wide_graph()
    x, y = np.array([1, 2, 3], np.int64), np.array([1.0, 2.0, 3.0])
    for fn in (to_jax(g), JaxModule(g), load_exported(export_jax(g))):
        a, b = fn(x, y)
        assert np.asarray(a).dtype == np.int64 and np.asarray(a).tolist() == [2**40 + 1, 2**40 + 2, 2**40 + 3]
        assert np.asarray(b).dtype == np.float64 and np.asarray(b)[0] == 1 + 2**-40
        assert not jax.config.jax_enable_x64
    assert "i64" in stablehlo(g, [x, y])
    assert not jax.config.jax_enable_x64
    assert jnp.asarray(np.arange(3)).dtype == jnp.int32


def small_graph() -> Graph:
    g = Graph()
    x = g.add_input(TensorType(DType.bf16, (2, 3)), "x")
    m = g.add_input(TensorType(DType.bool, (2, 3)), "m")
    y = g.apply("where", m, g.apply("tanh", x), x)
    g.set_outputs([y, g.apply("not", m)])
    return g


def test_outputs_come_back_in_the_callers_framework():
    g = small_graph()
    x, m = data(DType.bf16, (2, 3)), data(DType.bool, (2, 3))
    want = interpret(g, x, m)
    mod = JaxModule(g)
    outs = mod(x, m)
    assert all(isinstance(o, np.ndarray) for o in outs)
    outs = mod([jnp.asarray(x), jnp.asarray(m)])
    assert all(isinstance(o, jax.Array) for o in outs)
    tx, tm = torch.from_numpy(x.view(np.int16)).view(torch.bfloat16), torch.from_numpy(m)
    outs = mod(tx, tm)
    assert [o.dtype for o in outs] == [torch.bfloat16, torch.bool]
    assert_close(outs[0].float().numpy().astype(want[0].dtype), want[0], TOL, err_msg="torch bf16")
    np.testing.assert_array_equal(outs[1].numpy(), want[1])


def test_torch_tensors_cross_without_copies():
    t = torch.randn(4, 16)
    a = lj.to_jax_array(t)
    assert a.unsafe_buffer_pointer() == t.data_ptr()
    back = lj.from_jax_array(a, "torch")
    assert back.data_ptr() == a.unsafe_buffer_pointer()
    strided = torch.randn(16, 4).t()
    np.testing.assert_array_equal(np.asarray(lj.to_jax_array(strided)), strided.numpy())


def test_large_constants_are_arguments_not_module_literals():
    g = Graph()
    x = g.add_input(TensorType(DType.f32, (2, 64)), "x")
    w = g.const(data(DType.f32, (64, 64), seed=9), name="w")
    g.set_outputs([g.apply("matmul", x, w)])
    mod = JaxModule(g)
    x0 = data(DType.f32, (2, 64))
    signature = next(line for line in mod.lower(x0).as_text().splitlines() if "@main(" in line)
    assert "tensor<64x64xf32>" in signature
    assert_close(mod(x0)[0], interpret(g, x0)[0], TOL, err_msg="params")
    assert list(to_jax(g).params) == ["0/w"]


# ----- layouts -----------------------------------------------------------------------

def conv_chain(channels_last_io: bool) -> Graph:
    """NHWC (or NCHW) image -> conv, relu, batch norm, pools, concat, a fusion body, reductions:
    every layout-aware rule on channels-last data, checked against the interpreter."""
    rng = np.random.default_rng(3)

    def const(g, *shape):
        return g.const(rng.uniform(-1, 1, shape).astype(np.float32))

    g = Graph("chain")
    x = g.add_input(TensorType(DType.f32, (2, 9, 9, 3) if channels_last_io else (2, 3, 9, 9)), "x")
    full = g.add_input(TensorType(DType.f32, (2, 8, 5, 5)), "full")
    t = g.apply("transpose", x, perm=(0, 3, 1, 2)) if channels_last_io else x
    shared = const(g, 8, 3, 3, 3)  # a conv weight read by another op too stays in the IR's layout
    c1 = g.apply("conv", t, shared, const(g, 8), padding=((1, 1), (1, 1)))
    bn = g.apply("batch_norm", g.apply("relu", c1), const(g, 8), const(g, 8), const(g, 8),
                 g.const(rng.uniform(0.5, 2, 8).astype(np.float32)), epsilon=1e-5)
    mp = g.apply("max_pool", bn, kernel=(3, 3), stride=(2, 2), padding=((1, 1), (1, 1)), ceil_mode=True)
    ap = g.apply("avg_pool", mp, kernel=(3, 3), stride=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)
    ceil = g.apply("avg_pool", mp, kernel=(2, 2), stride=(2, 2), padding=((1, 0), (0, 1)), ceil_mode=True,
                   count_include_pad=True)
    c2 = g.apply("fused_conv", mp, const(g, 8, 8, 1, 1), activation="relu")
    mixed = g.apply("add", c2, full)  # a full-size operand in the IR's layout
    cat = g.apply("concat", c2, ap, axis=1)
    scaled = g.apply("mul", cat, const(g, 16, 1, 1))
    tt = TensorType(DType.f32, (2, 16, 5, 5))
    body = region([tt, tt], lambda r, a, b: [r.apply("mul", r.apply("sigmoid", a), b)])
    fused = g.make("fusion", [scaled, cat], {"kind": "elementwise"}, regions=[body]).output
    pooled = g.apply("reduce_mean", fused, axes=(2, 3), keepdims=False)
    peak = g.apply("reduce_max", fused, axes=(1,), keepdims=True)
    out = g.apply("conv", fused, const(g, 4, 16, 3, 3), padding=((1, 1), (1, 1)))
    out = g.apply("transpose", out, perm=(0, 2, 3, 1)) if channels_last_io else out
    g.set_outputs([pooled, peak, mixed, out, g.apply("reduce_sum", shared, axes=(1, 2, 3)), ceil])
    verify(g)
    return g


@pytest.mark.parametrize("channels_last_io", [True, False])
def test_channels_last_convs_match_interpreter(channels_last_io):
    g = conv_chain(channels_last_io)
    rng = np.random.default_rng(4)
    arrays = [rng.standard_normal(tuple(v.shape)).astype(np.float32) for v in g.inputs]
    want = interpret(g, *arrays)
    got = JaxModule(g, compiler_options=FAST_COMPILE)(*arrays)
    for i, (a, b) in enumerate(zip(got, want)):
        assert_close(a, b, TOL, err_msg=f"output {i}")
    # the weights read only by convs are held channels-last and inlined, not passed per call
    fn = to_jax(g)
    assert len(fn.layouts) == 2 and not set(fn.layouts) & set(fn.params)


def linear_graph(dtype: DType = DType.f32) -> Graph:
    """Two linears (one with a bias, one a [K, N] transposed view of an [N, K] array, as torch's
    nn.Linear weights come into the IR) and a linear weight also read by another op."""
    rng = np.random.default_rng(7)
    np_dt = dtype.numpy
    g = Graph("linears")
    x = g.add_input(TensorType(dtype, ("batch", 1, 24)), "x")
    w1 = g.const(rng.uniform(-1, 1, (24, 40)).astype(np_dt))
    nk = rng.uniform(-1, 1, (16, 40)).astype(np_dt)
    w2 = g.const(nk.T)  # [40, 16], a view of nk's memory
    shared = g.const(rng.uniform(-1, 1, (16, 16)).astype(np_dt))
    h = g.apply("linear", x, w1, g.const(rng.uniform(-1, 1, 40).astype(np_dt)), activation="relu")
    y = g.apply("linear", h, w2, activation="none")
    z = g.apply("linear", y, shared, activation="none")
    g.set_outputs([z, g.apply("reduce_sum", shared, axes=(0,))])
    verify(g)
    return g


@pytest.mark.parametrize("dtype", [DType.f32, DType.f16])
def test_linear_weights_held_by_rows_match_the_ir_layout(dtype):
    """``rows_of_outputs``: a weight read only by linears is held [N, K] (an nn.Linear's own memory where the IR
    holds a transposed view of it) and passed per call; one read by another op too keeps the IR's layout.  The
    outputs are the interpreter's, and the dots contract the held weights' dim 1 with no transpose of them."""
    g = linear_graph(dtype)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 1, 24)).astype(dtype.numpy)
    want = interpret(g, x)
    for rows in (False, True):
        got = JaxModule(g, compiler_options=FAST_COMPILE, rows_of_outputs=rows)(x)
        for i, (a, b) in enumerate(zip(got, want)):
            assert_close(a, b, TOL, err_msg=f"rows={rows} output {i}")
    fn = to_jax(g, rows_of_outputs=True)
    held = {k: fn.params[k] for k in fn.layouts}
    assert sorted(a.shape for a in held.values()) == [(16, 40), (40, 24)]
    nk = next(a for a in held.values() if a.shape == (16, 40))
    assert nk.flags.c_contiguous  # the nn.Linear-like weight as it lies: no copy to put on the device
    assert not to_jax(g).layouts  # not asked: the IR's layout
    text = JaxModule(g, compiler_options=FAST_COMPILE, rows_of_outputs=True).lower(x).compile().as_text()
    assert "transpose(" not in text, text
    assert text.count("rhs_contracting_dims={1}") >= 2, text


def test_channels_last_convs_with_symbolic_batch_export():
    rng = np.random.default_rng(6)
    g = Graph()
    x = g.add_input(TensorType(DType.f32, ("batch", 3, 8, 8)), "x")
    w = g.const(rng.uniform(-1, 1, (4, 3, 3, 3)).astype(np.float32))
    y = g.apply("max_pool", g.apply("relu", g.apply("conv", x, w, padding=((1, 1), (1, 1)))), kernel=(2, 2),
                stride=(2, 2))
    g.set_outputs([g.apply("reduce_mean", y, axes=(1,), keepdims=True), y])
    fn = load_exported(export_jax(g))
    for batch in (1, 3):
        x0 = data(DType.f32, (batch, 3, 8, 8), seed=batch)
        for i, (got, want) in enumerate(zip(fn(x0), interpret(g, x0))):
            assert_close(got, want, TOL, err_msg=f"batch {batch} output {i}")


def test_conv_chain_has_no_transposes_between_convs():
    from accelir.passes import dce

    def transposes(channels_last_io: bool) -> int:
        g = conv_chain(channels_last_io)
        # keep the outputs whose layout the chain chooses (the add of an NCHW input is one transpose)
        g.set_outputs([g.outputs[0], g.outputs[3]])
        dce(g)
        return stablehlo(g, [np.zeros(tuple(v.shape), np.float32) for v in g.inputs]).count("stablehlo.transpose")

    # NHWC in and out: none at all; NCHW in and out: one into the first conv, one out of the last
    assert transposes(True) == 0
    assert transposes(False) == 2


# ----- errors ------------------------------------------------------------------------

def provenance_graph() -> Graph:
    g = Graph()
    x = g.add_input(TensorType(DType.f64, (3,)), "x")
    node = g.make("relu", [x], meta={"module": "encoder.act", "source": "model.py:12"})
    g.set_outputs([node.output])
    return g


def test_missing_rule_names_the_node_before_tracing(monkeypatch):
    monkeypatch.delitem(JAX_RULES, "relu")
    with pytest.raises(LoweringError, match=r"relu.*encoder\.act.*model\.py:12.*register_lowering"):
        to_jax(provenance_graph())


def test_inexpressible_dtype_names_the_node(monkeypatch):
    monkeypatch.delitem(lj.JAX_DTYPES, DType.f64)
    with pytest.raises(LoweringError, match=r"f64.*encoder\.act"):
        JaxModule(provenance_graph())


def test_devices():
    assert JaxModule(small_graph(), device="cpu").device.platform == "cpu"
    if not any(d.platform == "gpu" for d in jax.devices()):
        with pytest.raises(LoweringError, match="jax.cuda12"):
            JaxModule(small_graph(), device="cuda")
    with pytest.raises(LoweringError, match="unknown device"):
        JaxModule(small_graph(), device="npu")


def test_wrong_input_dtype_is_refused():
    with pytest.raises(LoweringError, match="expected f64"):
        JaxModule(provenance_graph())(np.zeros(3, np.float32))


def test_provenance_reaches_the_module_text():
    g = provenance_graph()
    assert "encoder.act" in hlo(g, [np.zeros(3)], debug_info=True)
    assert "encoder.act" in stablehlo(g, [np.zeros(3)], debug_info=True)


def test_reference_cast_from_bf16_truncates_and_saturates_like_other_floats():
    g = Graph()
    x = g.add_input(TensorType(DType.bf16, (4,)), "x")
    g.set_outputs([g.apply("cast", x, dtype=DType.u8), g.apply("cast", x, dtype=DType.i8)])
    values = np.array([-3.75, 2.5, 300.0, np.nan], dtype=DType.bf16.numpy)
    u8, i8 = interpret(g, values)
    assert u8.tolist() == [0, 2, 255, 0] and i8.tolist() == [-3, 2, 127, 0]


# ----- end to end: models captured by the frontends, lowered to XLA, run, vs eager ---

def optimized(graph: Graph) -> Graph:
    from accelir import PassManager
    from accelir.passes import pipeline
    g = graph.copy()
    PassManager(pipeline(2, "xla")).run(g)
    return g


@pytest.mark.parametrize("name,optimize", [("gpt2", False), ("gpt2", True), ("bert", False), ("resnet", False),
                                           ("resnet", True)])
def test_torch_model_through_xla_matches_eager(name, optimize):
    from test_torch_models import MODELS
    from accelir.frontends.torch import capture_torch
    import torch.utils._pytree as pytree

    model, (args, kwargs) = MODELS[name]()
    model.eval()
    graph = capture_torch(model, args, example_kwargs=kwargs)
    if optimize:
        graph = optimized(graph)
    sig = graph.meta["signature"]
    outs = JaxModule(graph)(*sig.flatten(*args, **kwargs))
    assert all(isinstance(o, torch.Tensor) for o in outs)
    got = sig.unflatten(outs)
    with torch.no_grad():
        want = model(*args, **kwargs)
    assert type(got) is type(want)
    for a, b in zip(pytree.tree_leaves(got), pytree.tree_leaves(want)):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert relative_error(a.numpy(), b.numpy()) <= 1e-4


def test_torch_gpt2_dynamic_shapes_through_export():
    from test_torch_models import MODELS, text_inputs
    from accelir.frontends.torch import capture_torch

    model, (args, kwargs) = MODELS["gpt2"]()
    model.eval()
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", max=64)
    dynamic = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    graph = capture_torch(model, args, dynamic, example_kwargs=kwargs)
    sig = graph.meta["signature"]
    fn = load_exported(export_jax(graph))
    mod = JaxModule(graph)
    for b, s in [(3, 5), (1, 11)]:
        run_args, run_kwargs = text_inputs(100, batch=b, seq=s)
        with torch.no_grad():
            want = model(*run_args, **run_kwargs).last_hidden_state.numpy()
        flat = sig.flatten(*run_args, **run_kwargs)
        assert relative_error(np.asarray(fn(*[t.numpy() for t in flat])[0]), want) <= 1e-4
        assert relative_error(mod(*flat)[0].numpy(), want) <= 1e-4


def flax_cases():
    import test_flax_models as fm
    rng = np.random.default_rng(5)
    x8 = rng.standard_normal((3, 8)).astype(np.float32)
    img = rng.standard_normal((2, 16, 16, 3)).astype(np.float32)
    seq = rng.standard_normal((2, 5, 16)).astype(np.float32)
    mask = np.tril(np.ones((2, 1, 5, 5), bool))
    tokens = rng.integers(0, 17, (2, 6)).astype(np.int32)
    return {"mlp": (fm.MLP(), (x8,)), "cnn": (fm.CNN(), (img,)), "encoder": (fm.EncoderBlock(), (seq, mask)),
            "scan_decoder": (fm.Decoder(), (tokens,))}


@pytest.mark.parametrize("name", ["mlp", "cnn", "encoder", "scan_decoder"])
def test_flax_model_through_xla_matches_jit(name):
    import test_flax_models as fm
    from accelir.frontends.jax import capture_jax

    model, inputs = flax_cases()[name]
    variables = fm.init_variables(model, *inputs)
    graph = capture_jax(model.apply, (variables, *inputs))
    sig = graph.meta["signature"]
    flat = [jnp.asarray(a) for a in sig.flatten(variables, *inputs)]
    outs = JaxModule(graph)(*flat)
    assert all(isinstance(o, jax.Array) for o in outs)
    got = sig.unflatten(outs)
    want = jax.jit(model.apply)(variables, *inputs)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert relative_error(a, b) <= 1e-4
    assert not jax.config.jax_enable_x64


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gpt2", "bert", "resnet"])
def test_full_size_torch_model_through_xla(name):
    from test_torch_models import full_size
    from accelir.frontends.torch import capture_torch
    import torch.utils._pytree as pytree

    model, (args, kwargs) = full_size(name)
    model.eval()
    graph = optimized(capture_torch(model, args, example_kwargs=kwargs))
    sig = graph.meta["signature"]
    got = sig.unflatten(JaxModule(graph)(*sig.flatten(*args, **kwargs)))
    with torch.no_grad():
        want = model(*args, **kwargs)
    for a, b in zip(pytree.tree_leaves(got), pytree.tree_leaves(want)):
        assert relative_error(a.numpy(), b.numpy()) <= 1e-4


def test_flax_scan_decoder_with_symbolic_batch_and_seq_through_export():
    import test_flax_models as fm
    from accelir.frontends.jax import capture_jax

    rng = np.random.default_rng(6)
    model = fm.Decoder()
    variables = fm.init_variables(model, rng.integers(0, 17, (2, 6)).astype(np.int32))
    graph = capture_jax(model.apply, (variables, rng.integers(0, 17, (2, 6)).astype(np.int32)),
                        params_as_constants=True, symbolic_shapes=(None, "b, s"))
    assert graph.inputs[0].shape == ("b", "s")
    fn = load_exported(export_jax(graph))
    for shape in [(3, 4), (1, 9)]:
        tokens = rng.integers(0, 17, shape).astype(np.int32)
        assert relative_error(fn(tokens)[0], jax.jit(model.apply)(variables, tokens)) <= 1e-4
