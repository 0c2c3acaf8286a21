"""The benchmark's own statistics: percentiles and summaries must be right, or every figure
it prints is wrong."""

from __future__ import annotations

import math
import random
import time

import pytest

from bench.stats import Laps, percentile, ratio, step_summary, summarize


def test_percentile_of_one_value_is_that_value() -> None:
    assert percentile([7.0], 0) == 7.0
    assert percentile([7.0], 50) == 7.0
    assert percentile([7.0], 100) == 7.0


def test_percentile_interpolates_between_closest_ranks() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(values, 25) == pytest.approx(1.75)
    assert percentile(values, 99) == pytest.approx(3.97)


def test_percentile_does_not_depend_on_order() -> None:
    values = [float(v) for v in range(1, 101)]
    shuffled = values[:]
    random.Random(7).shuffle(shuffled)
    for q in (50, 95, 99):
        assert percentile(shuffled, q) == percentile(values, q)
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 95) == pytest.approx(95.05)
    assert percentile(values, 99) == pytest.approx(99.01)


def test_a_slow_tail_shows_in_p99_not_in_p50() -> None:
    values = [1.0] * 980 + [100.0] * 20
    assert percentile(values, 50) == 1.0
    assert percentile(values, 99) == 100.0


def test_percentile_of_nothing_is_nan_and_bad_q_is_refused() -> None:
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1.0], 101)
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1.0], -1)


def test_summary_converts_seconds_to_ms_and_counts_the_rate() -> None:
    summary = summarize([0.001, 0.002, 0.003, 0.004], errors=2, seconds=2.0)
    assert summary.count == 4
    assert summary.errors == 2
    assert summary.rate == pytest.approx(2.0)
    assert summary.p50_ms == pytest.approx(2.5)
    assert summary.max_ms == pytest.approx(4.0)
    as_dict = summary.as_dict()
    assert as_dict["p50_ms"] == 2.5
    assert as_dict["rate"] == 2.0


def test_summary_of_an_empty_phase_has_no_percentiles() -> None:
    as_dict = summarize([], errors=3, seconds=1.0).as_dict()
    assert as_dict["count"] == 0
    assert as_dict["rate"] == 0.0
    assert as_dict["p99_ms"] is None


def test_ratio_needs_a_baseline() -> None:
    assert ratio(50.0, 200.0) == 0.25
    assert ratio(50.0, 0.0) is None
    assert ratio(math.nan, 10.0) is None


def test_laps_time_each_step_from_the_end_of_the_last() -> None:
    laps = Laps()
    time.sleep(0.02)
    laps.lap("first")
    laps.lap("second")
    assert list(laps.seconds) == ["first", "second"]
    assert laps.seconds["first"] >= 0.02
    assert laps.seconds["second"] < 0.02


def test_step_summary_gives_each_steps_percentiles_in_order() -> None:
    laps = [{"create": 0.001 * n, "pay": 0.010} for n in range(1, 102)]
    summary = step_summary(laps)
    assert list(summary) == ["create", "pay"]
    assert summary["create"] == {"p50_ms": 51.0, "p99_ms": 100.0}
    assert summary["pay"] == {"p50_ms": 10.0, "p99_ms": 10.0}
    assert step_summary([]) == {}
