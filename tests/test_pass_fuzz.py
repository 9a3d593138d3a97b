"""A hypothesis fuzzer for the passes: random well-typed graphs built from the op registry.

Each case draws graph inputs, then nodes: an op from the registry (elementwise unary
and binary ops with whatever the registry defines, plus shape and reduction ops with
drawn attributes), operands from the values built so far and small constants chosen
to trigger the rewrites (0, 1, 2, -1).  A draw the type rule rejects is skipped, so
every graph is well typed by construction.  Every cleanup pass alone, and the full
level-2 pipeline, must leave a graph that verifies and computes the same outputs.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import accelir
from accelir.errors import VerificationError
from accelir.ir import DType, Graph, TensorType, Value
from accelir.ops import registry
from accelir.pass_manager import compare_outputs
from accelir.passes import pipeline
from accelir.testing import random_inputs

DTYPES = (DType.f32, DType.f64, DType.i32)
SHAPES = ((), (3,), (2, 3), (1, 3), (2, 1), (4, 2, 3))
ELEMENTWISE = tuple(sorted(n for n, d in registry.REGISTRY.items()
                           if d.elementwise and not d.attrs and d.min_inputs <= 2 and n != "where"))
SPECIAL = ("cast", "where", "transpose", "reshape", "squeeze", "unsqueeze", "broadcast_to", "slice", "reduce_sum",
           "reduce_max", "reduce_mean", "concat")


def _attrs(data: st.DataObject, op: str, x: Value) -> dict | None:
    """Attributes for a shape op on ``x`` (None when the op does not apply to it)."""
    r = x.rank
    if op == "cast":
        return {"dtype": data.draw(st.sampled_from(DTYPES + (x.dtype,)))}
    if op == "transpose":
        return {"perm": tuple(data.draw(st.permutations(range(r))))}
    if op == "reshape":
        n = int(np.prod(x.shape, dtype=np.int64))
        shapes = [s for s in SHAPES + ((n,), (1, n)) if int(np.prod(s, dtype=np.int64)) == n]
        return {"shape": data.draw(st.sampled_from(shapes))}
    if op == "squeeze":
        ones = [i for i, d in enumerate(x.shape) if d == 1]
        return {"axes": tuple(data.draw(st.lists(st.sampled_from(ones), unique=True)) if ones else ())}
    if op == "unsqueeze":
        return {"axes": (data.draw(st.integers(0, r)),)}
    if op == "broadcast_to":
        return {"shape": (2,) + tuple(3 if d == 1 and k == r - 1 else d for k, d in enumerate(x.shape))}
    if op == "slice":
        if r == 0:
            return None
        ax = data.draw(st.integers(0, r - 1))
        d = x.shape[ax]
        start = data.draw(st.integers(0, d))
        return {"starts": (start,), "stops": (data.draw(st.integers(start, d)),),
                "steps": (data.draw(st.integers(1, 2)),), "axes": (ax,)}
    if op.startswith("reduce_"):
        # a max over an empty axis has no identity: the graph itself would not run
        if r == 0 or 0 in x.shape:
            return None
        return {"axes": (data.draw(st.integers(0, r - 1)),), "keepdims": data.draw(st.booleans())}
    if op == "concat":
        return {"axis": data.draw(st.integers(0, r - 1))} if r else None
    return {}


def _constant(data: st.DataObject, g: Graph, like: Value) -> Value:
    value = data.draw(st.sampled_from([0, 1, 2, -1, 0.5]))
    shape = data.draw(st.sampled_from([(), like.shape]))
    return g.const(np.full(shape, value, dtype=like.dtype.numpy))


def _operand(data: st.DataObject, g: Graph, values: list[Value], like: Value | None = None) -> Value:
    if like is not None and data.draw(st.integers(0, 3)) == 0:
        return _constant(data, g, like)
    pool = [v for v in values if like is None or v.dtype == like.dtype] or values
    return data.draw(st.sampled_from(pool))


def build_graph(data: st.DataObject, max_nodes: int = 12) -> Graph:
    g = Graph("fuzz")
    dtype = data.draw(st.sampled_from(DTYPES))
    values = [g.add_input(TensorType(dtype, data.draw(st.sampled_from(SHAPES))), f"in{i}")
              for i in range(data.draw(st.integers(1, 3)))]
    for _ in range(data.draw(st.integers(1, max_nodes))):
        op = data.draw(st.sampled_from(ELEMENTWISE + SPECIAL))
        a = _operand(data, g, values)
        opdef = registry.get(op)
        try:
            if op == "where":
                b = _operand(data, g, values, a)
                cond = g.apply("gt", a, _constant(data, g, a))
                out = g.apply("where", cond, a, b)
            elif op == "concat":
                attrs = _attrs(data, op, a)
                if attrs is None:
                    continue
                out = g.apply("concat", a, _operand(data, g, values, a), **attrs)
            elif opdef.min_inputs == 2:
                out = g.apply(op, a, _operand(data, g, values, a))
            else:
                attrs = _attrs(data, op, a)
                if attrs is None:
                    continue
                out = g.apply(op, a, **attrs)
        except VerificationError:
            continue  # the type rule rejected this draw; draw the next node
        values.append(out)
    outs = data.draw(st.lists(st.sampled_from(values[-4:]), min_size=1, max_size=2, unique_by=id))
    g.set_outputs(outs)
    return g


def _inputs(g: Graph, seed: int) -> list[np.ndarray]:
    return random_inputs(g, seed, int_range=(-5, 6))


def _same(g: Graph, args, want, label: str) -> None:
    accelir.verify(g)
    bad = compare_outputs(want, accelir.run_graph(g, args))
    assert bad is None, f"{label} changed output {bad[0]}: {bad[3]}\n{g}"


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", ["dce", "fold_constants", "cse", "simplify"])
@FUZZ
@given(data=st.data())
def test_each_cleanup_pass_preserves_numerics(name, data):
    g = build_graph(data)
    args = _inputs(g, 0)
    want = accelir.run_graph(g, args)
    p = accelir.passes.get_pass(name)
    p(g)
    _same(g, args, want, name)


@FUZZ
@given(data=st.data())
def test_level_2_pipeline_preserves_numerics(data):
    g = build_graph(data)
    args = _inputs(g, 1)
    want = accelir.run_graph(g, args)
    accelir.PassManager(pipeline(2), check_numerics=args).run(g)
    _same(g, args, want, "level 2")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_parallel_projections_merge_without_changing_outputs(data):
    """Projections of one input (linear with or without bias and activation, matmul, some with a
    weight that is an input) next to other readers of it: merged or not, the outputs stay."""
    dtype = data.draw(st.sampled_from((DType.f32, DType.f64)), "dtype")
    lead = data.draw(st.sampled_from(((), (2,), (2, 3))), "lead")
    k = data.draw(st.integers(1, 4), "k")
    g = Graph("g")
    x = g.add_input(TensorType(dtype, lead + (k,)), "x")
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16), "seed"))
    outs = []
    for i in range(data.draw(st.integers(1, 5), "projections")):
        n = data.draw(st.integers(1, 4), f"n{i}")
        if data.draw(st.booleans(), f"input_weight{i}"):
            w = g.add_input(TensorType(dtype, (k, n)), f"w{i}")
        else:
            w = g.const(rng.standard_normal((k, n)).astype(dtype.numpy), name=f"w{i}")
        kind = data.draw(st.sampled_from(("matmul", "linear", "linear_bias")), f"kind{i}")
        act = data.draw(st.sampled_from(("none", "none", "relu", "tanh")), f"act{i}")
        if kind == "matmul":
            y = g.apply("matmul", x, w)
        else:
            bias = [g.const(rng.standard_normal(data.draw(st.sampled_from((n, 1)), f"b{i}")).astype(dtype.numpy))] \
                if kind == "linear_bias" else []
            y = g.apply("linear", x, w, *bias, activation=act)
        outs.append(y)
    if data.draw(st.booleans(), "other_reader"):
        outs.append(g.apply("neg", x))
    g.set_outputs(outs)
    accelir.verify(g)
    args = _inputs(g, 2)
    want = accelir.run_graph(g, args)
    accelir.passes.get_pass("fuse_parallel_linear")(g)
    _same(g, args, want, "fuse_parallel_linear")
