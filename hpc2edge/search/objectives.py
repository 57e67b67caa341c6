"""What a search minimises: ``pareto`` (two objectives) or ``paper`` (one scalar), with an
optional latency budget.

- ``pareto``: minimise (validation MSE, latency p50 in ms at the chosen batch size). Optuna's
  multi-objective samplers keep the trade-off; the result is a Pareto front, not one model.
- ``paper``: the published system's scalar ``1000 * val_loss + latency_ms`` (docs/paper.md, "The
  paper's system"), so its runs can be reproduced and compared.
- ``latency_budget_ms`` (either objective): a constraint ``latency_ms - budget <= 0``. Optuna's
  samplers get it as the trial's constraint (``Trial.set_constraint`` on Optuna >= 5,
  ``constraints_func`` before; trials over budget are dominated by feasible ones). With latency
  first, an architecture over budget is never trained: its trial ends PRUNED with the constraint
  recorded, because its loss does not exist and a made-up one would mislead the sampler.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

OBJECTIVES = ("pareto", "paper")
#: User attribute holding a trial's constraint value (<= 0: feasible).
CONSTRAINT_ATTR = "constraint_latency_ms"
#: How the CLI and the report name a model whose val MSE is not below the constant predictor's.
NO_BETTER_THAN_CONSTANT = "no better than the constant predictor (the training split's mean target)"


@dataclass(frozen=True)
class Objective:
    """An objective and its optional latency budget."""

    name: str = "pareto"
    latency_budget_ms: float | None = None

    def __post_init__(self) -> None:
        if self.name not in OBJECTIVES:
            raise ValueError(f"objective {self.name!r} is not one of {', '.join(OBJECTIVES)}")
        budget = self.latency_budget_ms
        if budget is not None and not (math.isfinite(budget) and budget > 0):
            raise ValueError(f"latency budget must be a positive number of ms, got {budget!r}")

    @property
    def directions(self) -> list[str]:
        return ["minimize", "minimize"] if self.name == "pareto" else ["minimize"]

    @property
    def metric_names(self) -> list[str]:
        return ["val_mse", "latency_ms"] if self.name == "pareto" else ["paper_score"]

    def values(self, val_mse: float, latency_ms: float) -> list[float]:
        """The values told to Optuna for a trained and measured candidate."""
        if not (math.isfinite(val_mse) and math.isfinite(latency_ms)):
            raise ValueError(f"non-finite objective inputs: val_mse={val_mse}, ms={latency_ms}")
        if self.name == "pareto":
            return [val_mse, latency_ms]
        return [1000.0 * val_mse + latency_ms]

    def constraint(self, latency_ms: float) -> float | None:
        """``latency - budget`` (<= 0 is feasible), or None without a budget."""
        if self.latency_budget_ms is None:
            return None
        return latency_ms - self.latency_budget_ms

    def over_budget(self, latency_ms: float) -> bool:
        c = self.constraint(latency_ms)
        return c is not None and c > 0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "latency_budget_ms": self.latency_budget_ms}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Objective:
        return cls(str(data["name"]), data.get("latency_budget_ms"))


def native_constraints() -> bool:
    """Optuna >= 5 records constraints on the trial (``Trial.set_constraint``) and its samplers
    read them there; ``constraints_func`` is deprecated. Older Optuna needs the function."""
    import optuna

    return hasattr(optuna.trial.Trial, "set_constraint")


def constraints_func(trial: Any) -> Sequence[float]:
    """Optuna's ``constraints_func``: the recorded constraint, 0 (feasible) when there is none."""
    value = trial.user_attrs.get(CONSTRAINT_ATTR)
    return [0.0 if value is None else float(value)]


def front_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Feasible complete trials on the Pareto front (best trial for one objective), by latency."""
    from optuna.trial import TrialState

    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if (t.user_attrs.get(CONSTRAINT_ATTR) or 0.0) <= 0.0
    ]
    if not complete:
        return []
    if len(study.directions) == 1:
        return [min(complete, key=lambda t: t.values[0])]
    points = [(t.values[0], t.values[1]) for t in complete]
    return [complete[i] for i in pareto_front(points)]


def kind_front(study: optuna.Study, latency_key: str) -> list[FrozenTrial]:
    """Feasible complete trials on the front of (val MSE, ``latency_key``), by that latency: the
    front of one device kind of a study that targets several (``latency_ms@orin-nano``)."""
    from optuna.trial import TrialState

    done = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if (t.user_attrs.get(CONSTRAINT_ATTR) or 0.0) <= 0.0
        and isinstance(t.user_attrs.get(latency_key), (int, float))
        and isinstance(t.user_attrs.get("val_mse"), (int, float))
    ]
    points = [(float(t.user_attrs["val_mse"]), float(t.user_attrs[latency_key])) for t in done]
    return [done[i] for i in pareto_front(points)]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points (both coordinates minimised), sorted by the 2nd."""
    order = sorted(range(len(points)), key=lambda i: (points[i][1], points[i][0]))
    front: list[int] = []
    best = math.inf
    for i in order:
        if points[i][0] < best:
            front.append(i)
            best = points[i][0]
    return front


def log_box_share(
    points: Sequence[tuple[float, float]],
    ideal: tuple[float, float],
    reference: tuple[float, float],
) -> float:
    """The share (0-1) of the box from ``ideal`` to ``reference`` that ``points`` dominate, each
    axis in log scale (both coordinates minimised, all positive).

    Latencies of one search space span two orders of magnitude, and a loss twice as low matters
    as much near the best models as near the constant predictor: in linear scale the fast,
    mediocre corner is nearly the whole box, and any sampler fills it in a few trials. Each
    coordinate maps to ``log(v / ideal) / log(reference / ideal)``, what is better than the
    ideal counting as the ideal (0)."""
    if not (0 < ideal[0] < reference[0] and 0 < ideal[1] < reference[1]):
        raise ValueError(f"the box needs 0 < ideal < reference on both axes: {ideal}, {reference}")
    spans = (math.log(reference[0] / ideal[0]), math.log(reference[1] / ideal[1]))
    mapped = [
        tuple(max(0.0, math.log(v / ideal[k]) / spans[k]) for k, v in enumerate(p))
        for p in points
        if p[0] > 0 and p[1] > 0
    ]
    return hypervolume_2d([(a, b) for a, b in mapped], (1.0, 1.0))


def hypervolume_2d(points: Sequence[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by ``points`` and bounded by ``reference`` (both coordinates minimised)."""
    inside = [p for p in points if p[0] < reference[0] and p[1] < reference[1]]
    # Walk the front by rising latency (its loss falls): each point dominates the strip up to
    # the next point's latency, from its loss up to the reference loss.
    front = [inside[i] for i in pareto_front(inside)]
    area = 0.0
    for k, (loss, latency) in enumerate(front):
        next_latency = front[k + 1][1] if k + 1 < len(front) else reference[1]
        area += (reference[0] - loss) * (next_latency - latency)
    return area
