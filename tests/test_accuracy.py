"""Accuracy budgets: parsing, defaults, and the three measures against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from accelir.accuracy import DEFAULT_BUDGETS, PRECISIONS, Budget, Errors, measure
from accelir.errors import AccelirError


def test_measures_match_hand_computed_values():
    want = np.array([3.0, 4.0], np.float32)
    got = np.array([3.0, 3.0], np.float32)
    e = measure([want], [got])
    assert e.max_abs == pytest.approx(1.0)
    assert e.max_rel == pytest.approx(1.0 / 4.0)
    assert e.cosine == pytest.approx((9 + 12) / (5 * math.sqrt(18)))


def test_worst_output_wins_and_integers_must_match():
    a = np.ones(4, np.float32)
    e = measure([a, a * 2, np.arange(3)], [a, a * 2 + 0.5, np.array([0, 1, 5])])
    assert e.max_abs == pytest.approx(0.5) and e.max_rel == pytest.approx(0.25)
    assert e.mismatched_integers == 1
    assert Budget(cosine=0.5).violations(e) == ["1 integer output elements differ"]


def test_nan_where_reference_is_finite_breaks_every_budget():
    e = measure([np.ones(3, np.float32)], [np.array([1, np.nan, 1], np.float32)])
    assert e.cosine == -math.inf and e.max_rel == math.inf
    assert not Budget(max_abs=1e9).met(e)
    # NaN where the reference has NaN too is no error
    assert measure([np.array([np.nan, 1.0])], [np.array([np.nan, 1.0])]) == Errors()


@pytest.mark.parametrize("spec", [{"cosine": 0.999, "max_rel": 0.01}, "cosine=0.999, max_rel=1e-2"])
def test_parse_mapping_and_command_line_forms(spec):
    assert Budget.parse(spec) == Budget(cosine=0.999, max_rel=0.01)


@pytest.mark.parametrize("spec, words", [
    ({"cosin": 0.9}, "unknown measure 'cosin'"),
    ({"cosine": 1.5}, "must be in (-1, 1]"),
    ({"max_rel": -1}, "finite number >= 0"),
    ({"max_abs": "x"}, "not a number"),
    ("cosine", "measure=value"),
    ({}, "at least one measure"),
    ([0.9], "must be a dict"),
])
def test_bad_budgets_are_refused_with_what_to_write(spec, words):
    with pytest.raises(AccelirError, match=None) as info:
        Budget.parse(spec)
    assert words in str(info.value)


def test_every_precision_has_a_default_and_unknown_ones_are_named():
    assert set(DEFAULT_BUDGETS) == set(PRECISIONS)
    assert Budget.parse(None, "int8") is DEFAULT_BUDGETS["int8"]
    with pytest.raises(AccelirError, match="unknown precision 'int3'"):
        Budget.parse(None, "int3")


def test_violations_name_each_broken_measure():
    e = Errors(cosine=0.9, max_rel=0.2, max_abs=3.0)
    assert Budget(cosine=0.99, max_rel=0.1, max_abs=5.0).violations(e) == ["cosine 0.900000 < 0.99", "max_rel 0.2 > 0.1"]
    assert str(Budget(cosine=0.99)) == "cosine=0.99"
