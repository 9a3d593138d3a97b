"""The IR idioms the frontends share (accelir/frontends/decompositions.py), each built into
a graph and run by the interpreter against numpy's own definition of the idiom."""

from __future__ import annotations

import numpy as np
import pytest

from accelir.frontends import decompositions as dec
from accelir.interpreter import run_graph
from accelir.ir import DType, Graph, TensorType


def _run(build, *arrays: np.ndarray) -> np.ndarray:
    g = Graph("idiom")
    ins = [g.add_input(TensorType(DType.from_numpy(a.dtype), a.shape)) for a in arrays]
    g.set_outputs([build(g.builder(), *ins)])
    return run_graph(g, list(arrays))[0]


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float32])
def test_python_mod_and_floor_div_follow_python_signs(dtype):
    rng = np.random.default_rng(0)
    x = rng.integers(-20, 20, size=(64,)).astype(dtype)
    y = rng.choice([-7, -3, -1, 1, 2, 5], size=(64,)).astype(dtype)
    np.testing.assert_array_equal(_run(dec.python_mod, x, y), np.mod(x, y))
    np.testing.assert_array_equal(_run(dec.floor_div, x, y), np.floor_divide(x, y))


@pytest.mark.parametrize("k", [-2, 0, 1])
def test_triangle_matches_numpy_tril_triu(k):
    x = np.arange(2 * 4 * 5, dtype=np.float32).reshape(2, 4, 5) + 1
    np.testing.assert_array_equal(_run(lambda b, v: dec.triangle(b, v, k, upper=True), x), np.triu(x, k))
    np.testing.assert_array_equal(_run(lambda b, v: dec.triangle(b, v, k, upper=False), x), np.tril(x, k))


def test_wrap_pad_matches_numpy_wrap():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    pads = [(2, 1), (0, 3)]
    np.testing.assert_array_equal(_run(lambda b, v: dec.wrap_pad(b, v, pads), x), np.pad(x, pads, mode="wrap"))


def test_crop_negative_pads_drops_what_negative_pads_remove():
    x = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    out = _run(lambda b, v: dec.crop_negative_pads(b, v, [(-1, 2), (0, -2)], first_axis=1), x)
    np.testing.assert_array_equal(out, x[:, 1:, :5])
    g = Graph("noop")
    v = g.add_input(TensorType(DType.f32, (2, 3)))
    assert dec.crop_negative_pads(g.builder(), v, [(1, 0), (0, 2)]) is v  # nothing to crop: no node


def test_instance_norm_matches_numpy():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    scale, bias = rng.standard_normal(3).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    mean = x.mean(axis=(2, 3), keepdims=True)
    var = x.var(axis=(2, 3), keepdims=True)
    want = (x - mean) / np.sqrt(var + 1e-5) * scale[:, None, None] + bias[:, None, None]
    got = _run(lambda b, v, s, t: dec.instance_norm(b, v, s, t, 1e-5), x, scale, bias)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_torch_instance_norm_uses_the_shared_decomposition_and_matches_eager():
    torch = pytest.importorskip("torch")
    from accelir.frontends.torch import capture_torch

    torch.manual_seed(0)
    m = torch.nn.InstanceNorm2d(3, affine=True).eval()
    with torch.no_grad():
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 3, 6, 5)
    g = capture_torch(m, (x,))
    assert any(n.op == "layer_norm" for n in g.nodes)
    (got,) = run_graph(g, [x.numpy()])
    np.testing.assert_allclose(got, m(x).detach().numpy(), rtol=1e-4, atol=1e-5)
