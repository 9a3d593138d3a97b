"""The one convention for speed figures: medians, the spread, time ratios, and a warning on a wide spread."""

from __future__ import annotations

import pytest

from accelir.timing import Timing, latency_table


def test_spread_is_the_interquartile_range_over_the_median():
    t = Timing((1.0, 2.0, 3.0, 4.0, 5.0))
    assert t.median == 3.0 and t.spread == pytest.approx((4.0 - 2.0) / 3.0)
    assert Timing((2.0,)).spread == 0.0
    assert t.quartiles == (2.0, 4.0) and Timing((2.0,)).quartiles == (2.0, 2.0)


def test_table_compares_medians_as_time_ratios_and_warns_on_wide_spread():
    steady = Timing((0.010, 0.010, 0.0101, 0.0099, 0.010))
    fast = Timing((0.005, 0.005, 0.005, 0.005, 0.005))
    noisy = Timing((0.001, 0.009, 0.020, 0.030, 0.040))
    text = latency_table({"ref": steady, "fast": fast}, "ref")
    rows = {line.split()[0]: line.split() for line in text.splitlines()[1:3]}
    assert rows["ref"][3] == "1.00" and rows["fast"][3] == "0.50"  # medians, not a minimum
    assert "WARNING" not in text
    assert "WARNING: wide spread (noisy)" in latency_table({"ref": steady, "noisy": noisy}, "ref")


def test_extra_columns_follow_the_ratio():
    t = Timing((0.001, 0.001, 0.001))
    text = latency_table({"a": t}, "a", {"build s": {"a": "1.50"}})
    assert text.splitlines()[0].split()[-2:] == ["build", "s"] and text.splitlines()[1].split()[-1] == "1.50"
