"""Paired measurements: two models timed in alternation on one device, and their ratio.

A speed-up against a baseline taken from two measurements made minutes apart (or on two units
of a kind) mixes machine states: the same ``cnn3d`` baseline measured 49 ms in one demo and
130 ms in another on a loaded CPU. Timed in alternation, both models see the same load, and the
ratio of neighbouring blocks cancels what the two have in common.

**Interleaving.** After preparing both models, each series (``compute``, then ``end_to_end``) of
each batch size runs as one :func:`hpc2edge.latency.protocol.run` whose *timed call* is one
*pair*: a block of :data:`BLOCK_RUNS` runs of A, then a block of as many runs of B; the call
returns ``median(B block) / median(A block)``. So the protocol's own rules apply to pairs,
unchanged: the cool-down gate; warm-up of both models in alternation (at least ``warmup_min_s``
and ``warmup_min_runs`` runs of each), which reaches the state the timing sees; then pairs until
at least ``min_runs`` runs of each and ``min_time_s``, the stopping rule checked after every
pair (every ``check_every`` pairs once there are many) on the **per-pair ratios**: the 95 % CI
of their median within ``target_rel_ci`` of it (``converged``), or ``max_runs`` runs of each,
or ``max_time_s`` for both models together.

**Block size.** :data:`BLOCK_RUNS` = 5 runs. Switching models costs the runs that follow the
switch: on a 2-core CPU with ONNX Runtime, the first run of a block was 75-80 % slower than the
block's steady runs and the second 10-40 % (both models: the other session's thread pool had
gone to sleep, the weights were out of the cache). One run each would time nothing but
switches; a block's median leaves its first two runs out. Five keeps a block short (a pair of
the demo's small front member and its 31-130 ms ``cnn3d`` baseline takes 0.2-0.7 s), so load
that changes over seconds still hits both halves of a pair alike.

**At least** :data:`MIN_PAIRS` **pairs** before the rule may stop: with fewer than six, the CI
the rule watches (min to max) covers the median less than 95 % of the time (``1 - 2**(1 - n)``).

**The statistic.** The median of the per-pair ratios B/A and the distribution-free CI of that
median (:func:`hpc2edge.latency.stats.median_ci`, the stopping rule's), ``pairs`` the number of
pairs. Each model's own series (its runs, warm-up runs excluded) is summarised as usual; its
``warmup_s`` and ``timed_s`` are the pair's wall time, both models included.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace
from typing import Any

from hpc2edge.errors import Hpc2EdgeError, MeasurementError
from hpc2edge.latency import protocol as protocol_mod
from hpc2edge.latency.base import BatchMeasurement, LatencyBackend, Prepared
from hpc2edge.latency.protocol import Clock, Protocol, ProtocolRun, TimedCall
from hpc2edge.latency.stats import summarize

#: Runs of one model per block (module docstring: why five).
BLOCK_RUNS = 5
#: The fewest pairs whose min-to-max interval covers the median with at least 95 %.
MIN_PAIRS = 6
STOPPED_BY = ("converged", "max_runs", "max_time")


@dataclass(frozen=True)
class RatioStats:
    """B/A over the pairs of one series.

    Attributes:
        median: the median of the per-pair ratios (> 1: B is slower than A).
        ci95: the distribution-free 95 % CI of that median.
        pairs: how many pairs were timed.
        stopped_by: the rule that ended the series (``converged``, ``max_runs``, ``max_time``).
        ratios: every per-pair ratio, in measurement order (empty when samples are left out).
    """

    median: float
    ci95: tuple[float, float]
    pairs: int
    stopped_by: str
    ratios: tuple[float, ...] = ()

    @property
    def ci_rel_half_width(self) -> float:
        return (self.ci95[1] - self.ci95[0]) / 2.0 / self.median

    def to_json(self, *, with_samples: bool = True) -> dict[str, Any]:
        return {
            "median": self.median,
            "ci95": list(self.ci95),
            "ci_rel_half_width": self.ci_rel_half_width,
            "pairs": self.pairs,
            "stopped_by": self.stopped_by,
            "ratios": list(self.ratios) if with_samples else [],
        }

    @classmethod
    def from_json(cls, data: Any) -> RatioStats:
        """Parse what a device sent (any worker of a queue can write it).

        Raises:
            ValueError: not a ratio record of finite, positive numbers that agree.
        """
        if not isinstance(data, dict):
            raise ValueError("a ratio record must be an object")
        median = _positive(data.get("median"))
        ci = data.get("ci95")
        bounds = [_positive(v) for v in ci] if isinstance(ci, list) and len(ci) == 2 else []
        pairs, stopped_by = data.get("pairs"), data.get("stopped_by")
        if median is None:
            raise ValueError("ratio median must be a finite number > 0")
        if len(bounds) != 2 or bounds[0] is None or bounds[1] is None:
            raise ValueError("ratio ci95 must be two finite numbers > 0")
        if not bounds[0] <= median <= bounds[1]:
            raise ValueError("ratio ci95 must hold its median")
        if isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 1:
            raise ValueError("ratio pairs must be an integer >= 1")
        if stopped_by not in STOPPED_BY:
            raise ValueError(f"ratio stopped_by must be one of {', '.join(STOPPED_BY)}")
        return cls(median, (bounds[0], bounds[1]), pairs, str(stopped_by))


def _positive(value: Any) -> float | None:
    """``value`` as a float when it is a finite number > 0 (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer of 400 digits is JSON too
        return None
    return number if math.isfinite(number) and number > 0 else None


@dataclass(frozen=True)
class PairedSeries:
    """One series of both models, timed in alternation, and its ratio."""

    a: ProtocolRun
    b: ProtocolRun
    ratio: RatioStats


@dataclass(frozen=True)
class PairedBatch:
    """Both series of both models for one batch size."""

    batch_size: int
    compute: PairedSeries
    end_to_end: PairedSeries

    @property
    def a(self) -> BatchMeasurement:
        return BatchMeasurement(self.batch_size, self.compute.a, self.end_to_end.a)

    @property
    def b(self) -> BatchMeasurement:
        return BatchMeasurement(self.batch_size, self.compute.b, self.end_to_end.b)

    def ratio_json(self, *, with_samples: bool = True) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "compute": self.compute.ratio.to_json(with_samples=with_samples),
            "end_to_end": self.end_to_end.ratio.to_json(with_samples=with_samples),
        }


class _Alternation:
    """The timed call :func:`run_pair` gives the protocol: a block of A, a block of B, B/A."""

    def __init__(self, call_a: TimedCall, call_b: TimedCall, block_runs: int) -> None:
        self.calls = (call_a, call_b)
        self.block_runs = block_runs
        self.samples: tuple[list[float], list[float]] = ([], [])

    def __call__(self) -> float:
        medians = []
        for call, kept in zip(self.calls, self.samples, strict=True):
            block = [float(call()) for _ in range(self.block_runs)]
            kept.extend(block)
            medians.append(statistics.median(block))
        if not all(m > 0 for m in medians):
            raise MeasurementError("a model timed 0 ms over a block: no ratio")
        return medians[1] / medians[0]


def pair_protocol(protocol: Protocol, block_runs: int = BLOCK_RUNS) -> Protocol:
    """``protocol`` counted in pairs: its run counts are runs of *each* model, and it times at
    least :data:`MIN_PAIRS` pairs (unless ``max_time_s`` or ``max_runs`` comes first)."""

    def pairs(runs: int) -> int:
        return math.ceil(runs / block_runs)

    most = pairs(protocol.max_runs)
    return replace(
        protocol,
        warmup_min_runs=pairs(protocol.warmup_min_runs),
        min_runs=min(max(pairs(protocol.min_runs), MIN_PAIRS), most),
        max_runs=most,
        check_every=pairs(protocol.check_every),
    )


def run_pair(
    call_a: TimedCall,
    call_b: TimedCall,
    protocol: Protocol,
    clock: Clock | None = None,
    *,
    block_runs: int = BLOCK_RUNS,
) -> PairedSeries:
    """Time ``call_a`` and ``call_b`` in alternating blocks under ``protocol`` (module docstring).

    Args:
        call_a, call_b: synchronised timed calls of the two models (milliseconds).
        protocol: the request's protocol; its run counts are per model.
        clock: the pacing clock, shared by both models (the table backend's virtual one).
        block_runs: runs of one model per block.
    """
    if block_runs < 1:
        raise ValueError("block_runs must be >= 1")
    alternation = _Alternation(call_a, call_b, block_runs)
    run = protocol_mod.run(alternation, pair_protocol(protocol, block_runs), clock)
    warm = run.warmup_runs * block_runs  # the protocol's warm-up calls came first
    a, b = (
        replace(run, stats=summarize(kept[warm:]), warmup_runs=warm) for kept in alternation.samples
    )
    ratio = RatioStats(
        median=run.stats.median_ms,
        ci95=run.stats.ci95_median_ms,
        pairs=run.stats.n,
        stopped_by=run.stopped_by,
        ratios=run.stats.samples_ms,
    )
    return PairedSeries(a, b, ratio)


def measure_pair(
    backend: LatencyBackend,
    a: Prepared,
    b: Prepared,
    batch_size: int,
    protocol: Protocol,
    clock: Clock | None = None,
) -> PairedBatch:
    """Both series of ``a`` and ``b`` at ``batch_size``, each timed in alternation.

    ``backend.measure`` for two models: the same hooks, one clock for both (the table
    backend's virtual clock advances with either model's samples), the runtime's errors
    translated into :class:`MeasurementError`.
    """
    for prepared in (a, b):
        if batch_size not in prepared.batch_sizes:
            raise MeasurementError(
                f"batch size {batch_size} was not prepared for {prepared.onnx_sha256[:12]}"
            )
    # The hooks are the backend's own; this module is the pair's measure() (base.py's policy
    # for one model), so it calls them as LatencyBackend.measure does.
    clock = clock or backend._clock(a, batch_size)
    try:
        compute = run_pair(
            backend._compute_call(a, batch_size), backend._compute_call(b, batch_size),
            protocol, clock,
        )  # fmt: skip
        end_to_end = run_pair(
            backend._end_to_end_call(a, batch_size), backend._end_to_end_call(b, batch_size),
            protocol, clock,
        )  # fmt: skip
    except Hpc2EdgeError:
        raise
    except Exception as exc:  # the runtime's own errors (ORT, CUDA, out of memory), translated
        raise MeasurementError(
            f"{backend.name} failed while timing a pair at batch {batch_size}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return PairedBatch(batch_size, compute, end_to_end)


__all__ = [
    "BLOCK_RUNS",
    "PairedBatch",
    "PairedSeries",
    "RatioStats",
    "measure_pair",
    "pair_protocol",
    "run_pair",
]
