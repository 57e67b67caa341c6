"""Objectives, constraints, Pareto fronts and hypervolume, against hand-computed values."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import pytest

from hpc2edge.search.objectives import (
    CONSTRAINT_ATTR,
    Objective,
    constraints_func,
    hypervolume_2d,
    log_box_share,
    pareto_front,
)

pytestmark = pytest.mark.unit


def test_pareto_values_and_paper_scalar() -> None:
    assert Objective("pareto").values(0.02, 1.5) == [0.02, 1.5]
    assert Objective("paper").values(0.02, 1.5) == [pytest.approx(21.5)]
    assert Objective("pareto").directions == ["minimize", "minimize"]
    assert Objective("paper").directions == ["minimize"]


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_budget_must_be_a_positive_number(bad: float) -> None:
    with pytest.raises(ValueError, match="latency budget"):
        Objective("pareto", bad)


def test_unknown_objective_and_non_finite_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="not one of"):
        Objective("fastest")
    with pytest.raises(ValueError, match="non-finite"):
        Objective("pareto").values(math.nan, 1.0)


def test_constraint_is_latency_minus_budget() -> None:
    o = Objective("pareto", 2.0)
    assert o.constraint(1.5) == -0.5 and not o.over_budget(1.5)
    assert o.constraint(2.5) == 0.5 and o.over_budget(2.5)
    assert not o.over_budget(2.0)  # on the budget is within it
    assert Objective("pareto").constraint(100.0) is None
    trial = SimpleNamespace(user_attrs={CONSTRAINT_ATTR: 0.5})
    assert constraints_func(trial) == [0.5]
    assert constraints_func(SimpleNamespace(user_attrs={})) == [0.0]


def test_pareto_front_by_hand() -> None:
    points = [(1, 5), (2, 3), (3, 1), (2.5, 4), (0.5, 10), (3, 1)]
    front = pareto_front(points)
    assert [points[i] for i in front] == [(3, 1), (2, 3), (1, 5), (0.5, 10)]


def test_hypervolume_by_hand() -> None:
    assert hypervolume_2d([(1, 1)], (2, 2)) == 1.0
    # Two rectangles of area 2 overlapping in a unit square.
    assert hypervolume_2d([(1, 2), (2, 1)], (3, 3)) == 3.0
    # Dominated and out-of-reference points add nothing.
    assert hypervolume_2d([(1, 2), (2, 1), (2.5, 2.5), (4, 0.5)], (3, 3)) == 3.0
    assert hypervolume_2d([], (3, 3)) == 0.0


def test_log_box_share_by_hand() -> None:
    ideal, ref = (0.01, 1.0), (1.0, 100.0)
    # The geometric middle of both axes dominates a quarter of the box.
    assert log_box_share([(0.1, 10.0)], ideal, ref) == pytest.approx(0.25)
    # The ideal corner, or anything better, dominates all of it.
    assert log_box_share([(0.01, 1.0)], ideal, ref) == pytest.approx(1.0)
    assert log_box_share([(0.001, 0.5)], ideal, ref) == pytest.approx(1.0)
    # Better than the ideal on one axis only: clipped to the ideal there.
    assert log_box_share([(0.001, 10.0)], ideal, ref) == pytest.approx(0.5)
    # At or beyond the reference, or not positive: nothing.
    assert log_box_share([(1.0, 1.0), (0.1, 100.0), (0.0, 5.0), (0.1, -1.0)], ideal, ref) == 0.0
    # A factor of 10 counts the same anywhere on an axis (not so in linear scale).
    fast = log_box_share([(0.1, 1.0)], ideal, ref)
    slow = log_box_share([(0.1, 10.0)], ideal, ref)
    assert fast - slow == pytest.approx(0.25)


@pytest.mark.parametrize(
    "ideal, ref", [((1.0, 1.0), (1.0, 2.0)), ((0.0, 1.0), (1.0, 2.0)), ((2.0, 1.0), (1.0, 2.0))]
)
def test_log_box_share_refuses_a_box_that_is_not_one(ideal, ref) -> None:
    with pytest.raises(ValueError, match="0 < ideal < reference"):
        log_box_share([(0.5, 1.5)], ideal, ref)


def test_hypervolume_matches_a_grid_count() -> None:
    rng = random.Random(0)
    points = [(rng.random(), rng.random()) for _ in range(12)]
    n = 400
    inside = sum(
        any(p[0] <= (i + 0.5) / n and p[1] <= (j + 0.5) / n for p in points)
        for i in range(n)
        for j in range(n)
    )
    assert hypervolume_2d(points, (1.0, 1.0)) == pytest.approx(inside / n**2, abs=5e-3)
