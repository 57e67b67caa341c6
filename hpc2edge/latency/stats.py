"""Statistics of latency samples: what every backend reports, computed one way.

Choices, each for a reason:

- **Median first.** Latency distributions on shared machines and Jetsons are right-skewed (clock
  ramps, interrupts, the odd page fault). The paper reported a mean of 10 runs; a mean moves with
  a single spike, the median does not. We report mean and std too, for comparison.
- **Percentiles by linear interpolation** between order statistics (numpy's default "linear"
  method, Hyndman & Fan type 7), so figures match what users compute with numpy.
- **A distribution-free confidence interval for the median**: the order statistics whose ranks
  bracket n/2 by z*sqrt(n)/2 (the normal approximation to the binomial). It assumes nothing about
  the shape of the distribution, only independent samples, and is what the stopping rule of
  :mod:`hpc2edge.latency.protocol` watches.
- **CV** (std / mean) as a quick stability figure; a CV above a few percent on a pinned-clock
  device says something else ran.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

#: Two-sided 95 % normal quantile.
Z_95 = 1.959963984540054


def percentile(sorted_ms: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of already sorted samples, linear interpolation."""
    if not sorted_ms:
        raise ValueError("no samples")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} outside 0-100")
    position = (len(sorted_ms) - 1) * q / 100.0
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_ms) - 1)
    fraction = position - lower
    return sorted_ms[lower] + (sorted_ms[upper] - sorted_ms[lower]) * fraction


def median_ci(sorted_ms: Sequence[float], z: float = Z_95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median (order statistics, binomial).

    With n samples the ranks (1-based) are ``floor(n/2 - z*sqrt(n)/2)`` and
    ``ceil(1 + n/2 + z*sqrt(n)/2)``, clamped to 1..n. Small n gives a wide interval, as it should.
    """
    n = len(sorted_ms)
    if n == 0:
        raise ValueError("no samples")
    half_width = z * math.sqrt(n) / 2.0
    lo_rank = max(1, math.floor(n / 2.0 - half_width))
    hi_rank = min(n, math.ceil(1 + n / 2.0 + half_width))
    return sorted_ms[lo_rank - 1], sorted_ms[hi_rank - 1]


def rel_half_width(ci: tuple[float, float], median: float) -> float:
    """Half the width of ``ci``, relative to ``median`` (infinite for a zero median)."""
    return (ci[1] - ci[0]) / 2.0 / median if median > 0 else math.inf


def median_ci_rel_half_width(samples: Sequence[float]) -> float:
    """:func:`rel_half_width` of the median's CI, straight from samples (the stopping rule)."""
    ordered = sorted(samples)
    return rel_half_width(median_ci(ordered), percentile(ordered, 50.0))


@dataclass(frozen=True)
class LatencyStats:
    """Summary of one series of timed runs, in milliseconds.

    ``samples_ms`` keeps every raw sample, in the order measured, so any other statistic can be
    computed later and drift over the run is visible.
    """

    n: int
    min_ms: float
    median_ms: float
    mean_ms: float
    std_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    cv: float
    ci95_median_ms: tuple[float, float]
    samples_ms: tuple[float, ...]

    @property
    def ci_rel_half_width(self) -> float:
        """Half the width of the median's 95 % CI, relative to the median."""
        return rel_half_width(self.ci95_median_ms, self.median_ms)

    def to_json(self, *, with_samples: bool = True) -> dict[str, Any]:
        """A JSON-able dict (tuples become lists)."""
        out = asdict(self)
        out["ci95_median_ms"] = list(self.ci95_median_ms)
        out["samples_ms"] = list(self.samples_ms) if with_samples else []
        out["ci_rel_half_width"] = self.ci_rel_half_width
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LatencyStats:
        """Rebuild from :meth:`to_json` output (statistics recomputed from samples if present)."""
        if data.get("samples_ms"):
            return summarize(data["samples_ms"])
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["ci95_median_ms"] = tuple(fields["ci95_median_ms"])
        fields["samples_ms"] = ()
        return cls(**fields)


def summarize(samples_ms: Sequence[float]) -> LatencyStats:
    """Statistics of ``samples_ms`` (at least one sample, all finite and >= 0)."""
    if not samples_ms:
        raise ValueError("no samples to summarize")
    values = [float(s) for s in samples_ms]
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise ValueError("latency samples must be finite and non-negative")
    ordered = sorted(values)
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return LatencyStats(
        n=len(values),
        min_ms=ordered[0],
        median_ms=percentile(ordered, 50.0),
        mean_ms=mean,
        std_ms=std,
        p90_ms=percentile(ordered, 90.0),
        p99_ms=percentile(ordered, 99.0),
        max_ms=ordered[-1],
        cv=std / mean if mean > 0 else 0.0,
        ci95_median_ms=median_ci(ordered),
        samples_ms=tuple(values),
    )
