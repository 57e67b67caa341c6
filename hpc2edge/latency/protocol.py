"""The measurement protocol: one implementation, used by every backend.

A backend gives the protocol a *timed call*: a function that runs the model once and returns
the elapsed milliseconds, synchronised so that the time covers the work (CUDA events after the
stream, or a blocking ONNX Runtime call). The protocol decides how often to call it:

1. **Cool-down gate.** Where temperature telemetry exists and ``max_start_temp_c`` is set, wait
   (up to ``cooldown_timeout_s``) until the device is below it: a hot Jetson throttles and ranks
   architectures differently than a cold one.
2. **Warm-up by time and count**: at least ``warmup_min_s`` seconds *and* ``warmup_min_runs``
   runs, untimed (trtexec warms for 200 ms; HW-NAS-Bench for 3 s; 1 s is our default). It lets
   clocks ramp up, caches fill and lazy initialisation happen outside the timed region.
3. **Timed runs**: at least ``min_runs`` runs *and* ``min_time_s`` seconds; then, every
   ``check_every`` runs (or every 5 % more runs, whichever is more: checking sorts the samples,
   and a fast model on a GPU takes 10^5 samples in seconds), stop once the 95 % CI of the median
   is within ``target_rel_ci`` of the median (2 % by default), or at ``max_runs`` /
   ``max_time_s``. The result says which rule stopped it, so a measurement that never
   converged is visible, not hidden.

``max_time_s`` bounds warm-up and timing each, even below ``min_runs``: a model that takes
seconds per inference gets fewer samples (visible in ``n`` and ``stopped_by``), never an
unbounded task on a device that serves one measurement at a time.

Wall-clock pacing uses an injected clock, so the protocol is unit-tested with a fake clock and a
fake timed call that returns known samples.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from hpc2edge.latency.stats import LatencyStats, median_ci_rel_half_width, summarize

TimedCall = Callable[[], float]


@dataclass(frozen=True)
class Protocol:
    """How to warm up and when to stop timing. Defaults suit a Jetson or a desktop GPU."""

    warmup_min_s: float = 1.0
    warmup_min_runs: int = 10
    min_runs: int = 50
    min_time_s: float = 2.0
    max_runs: int = 200_000
    max_time_s: float = 30.0
    target_rel_ci: float = 0.02
    check_every: int = 10
    max_start_temp_c: float | None = None
    cooldown_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        problems = []
        for name in (
            "warmup_min_s",
            "min_time_s",
            "max_time_s",
            "cooldown_timeout_s",
            "target_rel_ci",
        ):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
            ):
                raise ValueError(f"invalid protocol: {name} must be a finite number")
        for name in ("warmup_min_runs", "min_runs", "max_runs", "check_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"invalid protocol: {name} must be an integer")
        for name in ("warmup_min_s", "min_time_s", "max_time_s", "cooldown_timeout_s"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0")
        for name in ("min_runs", "max_runs", "check_every"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if self.warmup_min_runs < 0:
            problems.append("warmup_min_runs must be >= 0")
        if self.max_runs < self.min_runs:
            problems.append("max_runs must be >= min_runs")
        if self.max_time_s < self.min_time_s:
            problems.append("max_time_s must be >= min_time_s")
        if not 0 < self.target_rel_ci < 1:
            problems.append("target_rel_ci must be in (0, 1)")
        if problems:
            raise ValueError("invalid protocol: " + "; ".join(problems))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Protocol:
        """Build from a task payload; unknown keys are an error, not silently ignored."""
        data = dict(data or {})
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown protocol settings: {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def quick(cls) -> Protocol:
        """A short protocol for tests and CPU demos (still warm-up, still the CI rule)."""
        return cls(
            warmup_min_s=0.05,
            warmup_min_runs=3,
            min_runs=20,
            min_time_s=0.05,
            max_runs=400,
            max_time_s=3.0,
            target_rel_ci=0.05,
        )


@dataclass(frozen=True)
class ProtocolRun:
    """What happened while measuring one series."""

    stats: LatencyStats
    warmup_runs: int
    warmup_s: float
    timed_s: float
    stopped_by: str  # "converged" | "max_runs" | "max_time"
    cooldown_waited_s: float = 0.0
    start_temp_c: float | None = None

    def to_json(self, *, with_samples: bool = True) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "stats"}
        out["stats"] = self.stats.to_json(with_samples=with_samples)
        return out


@dataclass
class Clock:
    """Time source and sleep, injectable for tests."""

    now: Callable[[], float] = time.perf_counter
    sleep: Callable[[float], None] = time.sleep
    temperature_c: Callable[[], float | None] = field(default=lambda: None)


def run(timed_call: TimedCall, protocol: Protocol, clock: Clock | None = None) -> ProtocolRun:
    """Measure ``timed_call`` under ``protocol``; see the module docstring for the rules."""
    clock = clock or Clock()
    waited = 0.0
    temp = clock.temperature_c()
    if protocol.max_start_temp_c is not None and temp is not None:
        t0 = clock.now()
        while temp is not None and temp > protocol.max_start_temp_c:
            if clock.now() - t0 >= protocol.cooldown_timeout_s:
                break  # measure anyway: the temperature is recorded with the result
            clock.sleep(1.0)
            temp = clock.temperature_c()
        waited = clock.now() - t0

    warmup_start = clock.now()
    warmup_runs = 0
    while (
        warmup_runs < protocol.warmup_min_runs or clock.now() - warmup_start < protocol.warmup_min_s
    ) and (warmup_runs == 0 or clock.now() - warmup_start < protocol.max_time_s):
        timed_call()
        warmup_runs += 1
    warmup_s = clock.now() - warmup_start

    samples: list[float] = []
    timed_start = clock.now()
    stopped_by = "max_runs"
    next_check = protocol.min_runs
    while len(samples) < protocol.max_runs:
        samples.append(float(timed_call()))
        elapsed = clock.now() - timed_start
        # max_time_s wins over min_runs: a slow model gets fewer runs, never an unbounded task.
        if elapsed >= protocol.max_time_s:
            stopped_by = "max_time"
            break
        enough = len(samples) >= protocol.min_runs and elapsed >= protocol.min_time_s
        if enough and len(samples) >= next_check:
            next_check = max(len(samples) + protocol.check_every, int(len(samples) * 1.05))
            if median_ci_rel_half_width(samples) <= protocol.target_rel_ci:
                stopped_by = "converged"
                break
    return ProtocolRun(
        stats=summarize(samples),
        warmup_runs=warmup_runs,
        warmup_s=warmup_s,
        timed_s=clock.now() - timed_start,
        stopped_by=stopped_by,
        cooldown_waited_s=waited,
        start_temp_c=temp,
    )
