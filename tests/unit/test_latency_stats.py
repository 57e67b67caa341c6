"""Latency statistics on known samples, checked against hand-computed values."""

from __future__ import annotations

import math

import pytest

from hpc2edge.latency.stats import LatencyStats, median_ci, percentile, summarize

pytestmark = pytest.mark.unit


def test_one_to_ten():
    s = summarize([3, 1, 2, 10, 4, 5, 6, 7, 8, 9])  # order of measurement is kept
    assert s.n == 10
    assert s.min_ms == 1 and s.max_ms == 10
    assert s.median_ms == 5.5
    assert s.mean_ms == 5.5
    assert s.std_ms == pytest.approx(math.sqrt(82.5 / 9))  # sample std: sum of squares 82.5
    assert s.p90_ms == pytest.approx(9.1)  # position 8.1 between 9 and 10
    assert s.p99_ms == pytest.approx(9.91)
    assert s.cv == pytest.approx(math.sqrt(82.5 / 9) / 5.5)
    assert s.ci95_median_ms == (1.0, 10.0)  # n = 10: ranks 1 and 10
    assert s.samples_ms == (3, 1, 2, 10, 4, 5, 6, 7, 8, 9)


def test_median_ci_of_one_hundred_uses_ranks_40_and_61():
    # The textbook 95 % interval of the median for n = 100 is (x(40), x(61)).
    assert median_ci([float(i) for i in range(1, 101)]) == (40.0, 61.0)


def test_median_ci_narrows_with_n():
    wide = summarize([1.0 + 0.01 * (i % 7) for i in range(20)])
    narrow = summarize([1.0 + 0.01 * (i % 7) for i in range(2000)])
    assert narrow.ci_rel_half_width <= wide.ci_rel_half_width


def test_single_sample():
    s = summarize([2.5])
    assert s.median_ms == s.p99_ms == s.min_ms == 2.5
    assert s.std_ms == 0.0 and s.cv == 0.0
    assert s.ci95_median_ms == (2.5, 2.5)


def test_percentile_bounds_and_errors():
    data = [1.0, 2.0, 3.0]
    assert percentile(data, 0) == 1.0 and percentile(data, 100) == 3.0
    assert percentile(data, 50) == 2.0
    with pytest.raises(ValueError):
        percentile(data, 101)
    with pytest.raises(ValueError):
        percentile([], 50)


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [1.0, -0.5], [float("inf")]])
def test_bad_samples_are_refused(bad):
    with pytest.raises(ValueError):
        summarize(bad)


def test_json_round_trip():
    s = summarize([1.0, 1.5, 2.0, 2.5])
    data = s.to_json()
    assert data["ci95_median_ms"] == list(s.ci95_median_ms)
    assert LatencyStats.from_json(data) == s
    light = s.to_json(with_samples=False)
    assert light["samples_ms"] == [] and LatencyStats.from_json(light).median_ms == s.median_ms
