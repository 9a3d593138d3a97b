"""accelir.testing: the helpers the other tests lean on must catch what they claim to."""

from __future__ import annotations

import numpy as np
import pytest

import accelir
from accelir import DType
from accelir.testing import (assert_close, assert_relative_close, onnxruntime_outputs, random_inputs, reference_output,
                             relative_error, single_node_model)


def _graph() -> accelir.Graph:
    return accelir.parse("""graph main(%x: f32[n,4], %i: i64[n], %m: bool[2,n]) -> (f32[n,4]) {
  %0 = relu(%x) : f32[n,4]
  return %0
}""")


def test_random_inputs_are_seeded_sized_and_typed():
    g = _graph()
    a, b = random_inputs(g, 3, sizes={"n": 5}), random_inputs(g, 3, sizes={"n": 5})
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert [(x.dtype, x.shape) for x in a] == [(np.float32, (5, 4)), (np.int64, (5,)), (np.bool_, (2, 5))]
    assert a[1].min() >= -20 and a[1].max() < 20
    assert not np.array_equal(random_inputs(g, 4)[0], random_inputs(g, 3)[0])
    assert random_inputs(g)[0].shape == (3, 4)  # a symbolic dim without a size
    masks = random_inputs(g, 0, true_fraction=0.0, keep_first=True)[2]
    assert masks[:, 0].all() and not masks[:, 1:].any()
    assert set(np.unique(random_inputs(g, 0, int_range=(0, 2))[1])) <= {0, 1}


def test_assert_close_uses_the_dtype_tolerance_and_nothing_looser():
    want = np.ones(4, np.float32)
    assert_close(want + 5e-6, want, {DType.f32: 1e-5})
    with pytest.raises(AssertionError):
        assert_close(want + 5e-5, want, {DType.f32: 1e-5})
    # the case's dtype picks the tolerance; a dtype outside the table compares exactly
    assert_close(want + 5e-3, want, {DType.f16: 1e-2}, dtype=DType.f16)
    with pytest.raises(AssertionError):
        assert_close(want + 5e-3, want, {DType.f16: 1e-2})
    assert_close(np.array([np.nan, 1.0]), np.array([np.nan, 1.0]), (0, 0))


@pytest.mark.parametrize("got, want", [
    (np.ones(3, np.float64), np.ones(3, np.float32)),  # dtype
    (np.ones((3, 1), np.float32), np.ones(3, np.float32)),  # shape
    (np.array([1, 2], np.int32), np.array([1, 3], np.int32)),  # ints exactly, whatever the tolerance
    ([np.ones(2)], [np.ones(2), np.ones(2)]),  # output count
])
def test_assert_close_refuses_other_dtypes_shapes_values_and_counts(got, want):
    with pytest.raises(AssertionError):
        assert_close(got, want, (1.0, 1.0))


def test_relative_error_is_relative_to_the_largest_expected_magnitude():
    assert relative_error([10.0, 1.1], [10.0, 1.0]) == pytest.approx(0.01)


def test_oracles_agree_on_one_node():
    x = np.array([[-1.5, 0.0, 2.0]], np.float32)
    model, feeds = single_node_model("Relu", [x], 21)
    assert [i.name for i in model.graph.input] == ["x0"]
    np.testing.assert_array_equal(onnxruntime_outputs(model, feeds)[0], np.maximum(x, 0))
    np.testing.assert_array_equal(reference_output("Relu", [x]), np.maximum(x, 0))
    # an optional input left out in the middle keeps its slot empty
    m2, feeds2 = single_node_model("Clip", {"x": x, "min": None, "max": np.array(1.0, np.float32)}, 21)
    assert list(m2.graph.node[0].input) == ["x", "", "max"] and list(feeds2) == ["x", "max"]
    np.testing.assert_array_equal(onnxruntime_outputs(m2, feeds2)[0], np.minimum(x, 1))


def test_assert_relative_close_scales_by_the_largest_expected_magnitude():
    import torch
    want = [np.array([100.0, 1.0, np.inf], np.float32), np.array([3, 4])]
    assert_relative_close([np.array([100.0, 1.009, np.inf], np.float32), np.array([3, 4])], want, 1e-4)
    for got in ([np.array([100.0, 1.02, np.inf], np.float32), np.array([3, 4])],  # 0.02 > 1e-4 * 100
                [np.array([100.0, 1.0, -np.inf], np.float32), np.array([3, 4])],  # inf of the other sign
                [np.array([100.0, 1.0, np.inf], np.float32), np.array([3, 5])],  # ints exactly
                [np.array([100.0, 1.0, np.inf], np.float64), np.array([3, 4])]):  # dtype
        with pytest.raises(AssertionError):
            assert_relative_close(got, want, 1e-4)
    t = torch.tensor([1.0, 2.0], dtype=torch.bfloat16)  # torch leaves, bf16 included
    assert_relative_close([t], [t.clone()], 0.0)
    with pytest.raises(AssertionError):
        assert_relative_close([t], [t.float()], 1.0)
