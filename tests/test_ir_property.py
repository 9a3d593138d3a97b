"""Property test: random well-typed graphs built from the registry print, parse back
to the same text, verify, and interpret to the same values after the round trip."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accelir import DType, Graph, TensorType, interpret, parse, verify
from accelir.ops import REGISTRY
from accelir.ops.elementwise import BINARY, COMPARE, UNARY

FLOAT_UNARY = sorted(n for n, (_, kind, _) in UNARY.items() if kind in ("float", "numeric"))
FLOAT_BINARY = sorted(n for n, (_, kind, _, _) in BINARY.items() if kind in ("float", "numeric"))
REDUCE = ["reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_prod"]


@st.composite
def graphs(draw):
    g = Graph("fuzz")
    rank = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=rank, max_size=rank)))
    symbolic = draw(st.booleans())
    in_shape = ("n",) + shape[1:] if symbolic else shape
    pool = [g.add_input(TensorType(DType.f32, in_shape), f"in{i}") for i in range(draw(st.integers(1, 3)))]
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["unary", "binary", "compare_where", "reduce", "transpose", "softmax",
                                     "const_binary", "cast_round_trip", "concat", "composite"]))
        floats = [v for v in pool if v.dtype is DType.f32]
        x = draw(st.sampled_from(floats))
        if kind == "unary":
            pool.append(g.apply(draw(st.sampled_from(FLOAT_UNARY)), x))
        elif kind == "binary":
            same = [v for v in floats if v.shape == x.shape]
            y = draw(st.sampled_from(same))
            pool.append(g.apply(draw(st.sampled_from(FLOAT_BINARY)), x, y))
        elif kind == "compare_where":
            same = [v for v in floats if v.shape == x.shape]
            y = draw(st.sampled_from(same))
            c = g.apply(draw(st.sampled_from(sorted(COMPARE))), x, y)
            pool.append(g.apply("where", c, x, y))
        elif kind == "reduce" and x.rank > 1:
            axis = draw(st.integers(1, x.rank - 1))
            pool.append(g.apply(draw(st.sampled_from(REDUCE)), x, axes=(axis,), keepdims=True))
        elif kind == "transpose" and x.rank > 1:
            perm = tuple([0] + draw(st.permutations(list(range(1, x.rank)))))
            pool.append(g.apply("transpose", x, perm=perm))
        elif kind == "softmax":
            pool.append(g.apply("softmax", x, axis=-1))
        elif kind == "const_binary":
            c = g.const(np.float32(draw(st.floats(-3, 3, width=32))))
            pool.append(g.apply(draw(st.sampled_from(["add", "mul", "sub", "max"])), x, c))
        elif kind == "cast_round_trip":
            dt = draw(st.sampled_from([DType.f16, DType.bf16, DType.i32, DType.f64]))
            pool.append(g.apply("cast", g.apply("cast", x, dtype=dt), dtype=DType.f32))
        elif kind == "concat" and x.rank > 1:
            pool.append(g.apply("concat", x, x, axis=x.rank - 1))
        elif kind == "composite" and x.rank > 1:
            op = draw(st.sampled_from(["gelu", "silu", "layer_norm", "rms_norm", "log_softmax"]))
            pool.append(g.apply(op, x) if op in ("gelu", "silu") else g.apply(op, x, axis=-1))
    outs = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3))
    g.set_outputs(outs)
    return g, shape


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs(), st.integers(0, 2**31 - 1))
def test_random_graphs_round_trip_and_interpret(case, seed):
    g, shape = case
    verify(g)
    text = str(g)
    g2 = parse(text, g.constants)
    verify(g2)
    assert str(g2) == text
    rng = np.random.default_rng(seed)
    inputs = [rng.standard_normal(shape).astype(np.float32) for _ in g.inputs]
    with np.errstate(all="ignore"):
        a = interpret(g, *inputs)
        b = interpret(g2, *inputs)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_fuzzer_reaches_many_ops():
    assert len(FLOAT_UNARY) > 20 and len(FLOAT_BINARY) >= 8
    assert all(op in REGISTRY for op in FLOAT_UNARY + FLOAT_BINARY + REDUCE)
