"""How a search runs: :class:`SearchConfig`, the clock it keeps time by, pinned parameters.

:class:`SearchConfig` holds everything about *how* (parallelism, timeouts, retries, the edge's
measurement settings, pins); what is minimised is the :class:`~hpc2edge.search.objectives.
Objective`, and how candidates are trained the :class:`~hpc2edge.search.candidate.TrainPlan`.
:meth:`SearchConfig.pipeline` gives the stages of a plain search.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hpc2edge.errors import SearchError
from hpc2edge.roles import DEFAULT_KIND, check_kind
from hpc2edge.search.stages import LatencyGate, MeasureStage, Pipeline, TrainStage


class SystemClock:
    """Wall-clock time: timeouts are stored as Unix times and must survive a restart."""

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass(frozen=True)
class SearchConfig:
    """How a search runs (what it optimises is the :class:`Objective`).

    Attributes:
        trials: Optuna trials to finish (the baseline is not one of them).
        parallel: candidates in flight at once (the ready pool the send policy chooses from);
            0 means twice the live workers, at least 2.
        slots: task slots per queue (``{"edge": 1, "train": 4}``); a queue not named gets
            ``1 + queue_ahead`` per live worker where the dispatcher counts them (again every
            30 s), else ``parallel``.
        queue_ahead: tasks kept waiting on a counted queue per live worker, beyond the one it
            runs: a worker that finishes takes its next task from the broker at once, not at
            the loop's next step (its poll, its asks: seconds against a measurement of seconds).
            0: a task is sent only when a worker is free.
        latency_first: measure before training; with False both are sent at once.
        batch_size, precision, protocol: how the edge measures (``protocol``: a name from
            :data:`candidate.PROTOCOLS` or a protocol dict).
        measure_timeout_s, train_timeout_s: from the send to the result, queueing included.
        retries: further attempts after a timeout or a transient error.
        send_retries: further sends of one attempt after a failed send (the broker away, an
            artifact that cannot be stored), with the back-off; then the trial fails.
        backoff_s: first back-off after a transient error or a failed send; doubles per try,
            up to 300 s (60 s for sends).
        baseline: also measure and train the space's baseline (outside the trials), so results
            can be stated as speed-up and loss ratio against it.
        confirm_front: re-measure the final Pareto front (fresh tasks, not the store).
        paired_ratios: measure each front member against the baseline in one paired task per
            device kind (interleaved on one unit), for speed-ups that share a machine state.
        pin: parameters fixed for every trial (e.g. ``{"frames": 8, "size": 41}``): Optuna does
            not search them.
        export_seed: weights of the exported models (latency does not depend on them).
        export_workers: processes that export candidates beside the loop (0: in the loop).
        poll_interval_s: sleep between steps when nothing changed.
    """

    trials: int
    parallel: int = 0
    slots: dict[str, int] = field(default_factory=dict)
    queue_ahead: int = 1
    latency_first: bool = True
    batch_size: int = 1
    precision: str = "fp32"
    protocol: str | dict[str, Any] = "default"
    devices: tuple[tuple[str, float | None], ...] = ((DEFAULT_KIND, None),)
    measure_timeout_s: float = 1800.0
    train_timeout_s: float = 24 * 3600.0
    retries: int = 2
    send_retries: int = 8
    backoff_s: float = 5.0
    baseline: bool = True
    confirm_front: bool = False
    paired_ratios: bool = True
    pin: dict[str, Any] = field(default_factory=dict)
    export_seed: int = 0
    export_workers: int = 0
    poll_interval_s: float = 0.25

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise ValueError("trials must be >= 1")
        if self.parallel < 0:
            raise ValueError("parallel must be >= 0 (0: twice the live workers)")
        if any(n < 1 for n in self.slots.values()):
            raise ValueError("slots must be >= 1 per queue")
        if not 0 <= self.queue_ahead <= 8:
            raise ValueError("queue_ahead must be in 0-8")
        if self.measure_timeout_s <= 0 or self.train_timeout_s <= 0:
            raise ValueError("timeouts must be positive")
        if not 0 <= self.retries <= 10:
            raise ValueError("retries must be in 0-10")
        if not 0 <= self.send_retries <= 100:
            raise ValueError("send_retries must be in 0-100")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.export_workers < 0:
            raise ValueError("export_workers must be >= 0")
        if not self.devices:
            raise ValueError("devices: a search measures on at least one device kind")
        kinds = [check_kind(kind) for kind, _ in self.devices]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"devices: each kind once, got {', '.join(kinds)}")
        if self.devices[0][1] is not None:
            raise ValueError("devices: the first kind's budget is the objective's latency budget")

    def pipeline(self) -> Pipeline:
        """The stages of a search: a measure stage per device kind (the first one's latency is
        the objective's; the others' are recorded, and gated by their budgets), one training,
        the budget gates."""
        how = dict(batch_size=self.batch_size, precision=self.precision, protocol=self.protocol)
        (first, _), others = self.devices[0], self.devices[1:]
        measures = [MeasureStage(device=first, **how)]  # type: ignore[arg-type]
        gates = [LatencyGate()]
        for kind, budget in others:
            m = MeasureStage(name=f"measure_{kind}", device=kind, primary=False, budget_ms=budget,
                             **how)  # type: ignore[arg-type]  # fmt: skip
            measures.append(m)
            if budget is not None:
                gates.append(LatencyGate(measure=m.result_key))
        order = Pipeline.latency_first if self.latency_first else Pipeline.concurrent
        return order(measures, [TrainStage()], gates)


class Pinned:
    """A trial whose pinned parameters are answered without asking Optuna."""

    def __init__(self, trial: Any, pin: dict[str, Any]) -> None:
        self._trial = trial
        self._pin = pin

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        if name in self._pin:
            value = self._pin[name]
            if value not in choices:
                raise SearchError(f"pinned {name}={value!r} is not one of {list(choices)}")
            return value
        return self._trial.suggest_categorical(name, choices)

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float:
        if name in self._pin:
            return float(self._pin[name])
        return float(self._trial.suggest_float(name, low, high, log=log))


__all__ = ["Pinned", "SearchConfig", "SystemClock"]
