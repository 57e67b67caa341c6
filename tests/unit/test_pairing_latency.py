"""Paired measurements on the device (:mod:`hpc2edge.latency.pairing`): the alternation, the
ratio statistic, the stopping rule counted in pairs, and the table backend's determinism."""

from __future__ import annotations

import hashlib
import itertools
from typing import Any

import numpy as np
import pytest

from hpc2edge.errors import MeasurementError
from hpc2edge.latency import pairing
from hpc2edge.latency.backends.table import Record, TableBackend
from hpc2edge.latency.base import LatencyBackend, Prepared
from hpc2edge.latency.pairing import BLOCK_RUNS, MIN_PAIRS, RatioStats, measure_pair, run_pair
from hpc2edge.latency.protocol import Clock, Protocol, TimedCall
from hpc2edge.latency.reference import time_scaled

pytestmark = pytest.mark.unit

MODEL_A, MODEL_B = b"model A bytes", b"model B bytes"
SHAPE = (1, 4, 8, 8)
QUICK = Protocol(
    warmup_min_s=0.02, warmup_min_runs=2, min_runs=10, min_time_s=0.02, max_time_s=2.0,
    target_rel_ci=0.05,
)  # fmt: skip


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wobble(ms: float, n: int = 60) -> tuple[float, ...]:
    """``ms`` with a 0-4 % wobble of period 5: every block of five holds one full period."""
    return tuple(ms * (1 + 0.01 * (i % 5)) for i in range(n))


def table(a_ms: float = 2.0, b_ms: float = 5.0) -> TableBackend:
    return TableBackend(
        [
            Record(sha(MODEL_A), "fp32", 1, wobble(a_ms), wobble(1.2 * a_ms)),
            Record(sha(MODEL_B), "fp32", 1, wobble(b_ms), wobble(1.2 * b_ms)),
        ]
    )


def prepared(backend: LatencyBackend) -> tuple[Prepared, Prepared]:
    return backend.prepare(MODEL_A, "fp32", SHAPE), backend.prepare(MODEL_B, "fp32", SHAPE)


# --- the ratio, on the table backend's virtual clock --------------------------------------------


def test_a_recorded_2_ms_against_5_ms_is_a_ratio_of_2_5_with_a_tight_ci() -> None:
    backend = table()
    m = measure_pair(backend, *prepared(backend), 1, QUICK)
    for series in (m.compute, m.end_to_end):
        assert series.ratio.median == pytest.approx(2.5, rel=1e-12)
        lo, hi = series.ratio.ci95
        assert lo <= 2.5 <= hi and hi - lo < 1e-9
        assert series.ratio.stopped_by == "converged" and series.ratio.pairs >= MIN_PAIRS
        # Each model's own series: its samples only, as many as the other's.
        assert series.a.stats.n == series.b.stats.n == series.ratio.pairs * BLOCK_RUNS
    assert m.compute.a.stats.median_ms == pytest.approx(2.04)
    assert m.compute.b.stats.median_ms == pytest.approx(5.1)
    assert m.a.batch_size == m.b.batch_size == 1


def test_the_table_backend_pairs_deterministically() -> None:
    first = measure_pair(table(), *prepared(table()), 1, QUICK)
    backend = table()
    again = measure_pair(backend, *prepared(backend), 1, QUICK)
    assert first == again


def test_the_run_counts_of_the_protocol_are_runs_of_each_model() -> None:
    backend = table()
    p = Protocol(warmup_min_s=0.0, warmup_min_runs=7, min_runs=40, min_time_s=0.0)
    m = measure_pair(backend, *prepared(backend), 1, p)
    # Warm-up: at least 7 runs of each, in whole blocks; timing: at least 40 runs of each.
    assert m.compute.a.warmup_runs == m.compute.b.warmup_runs == 2 * BLOCK_RUNS
    assert m.compute.a.stats.n == 40 and m.compute.ratio.pairs == 40 // BLOCK_RUNS


def test_a_scaled_unit_keeps_the_ratio_and_scales_both_models() -> None:
    backend = time_scaled(table(), 2.0)
    m = measure_pair(backend, *prepared(backend), 1, QUICK)
    assert m.compute.ratio.median == pytest.approx(2.5, rel=1e-12)
    assert m.compute.a.stats.median_ms == pytest.approx(4.08)


# --- the interleaving, logged -------------------------------------------------------------------


class Logged(LatencyBackend):
    """A backend double that logs which model each timed call ran (and the series), on a
    virtual clock that advances by each sample."""

    name = "logged"

    def __init__(self, ms: dict[str, float], load: Any = None) -> None:
        self.ms = ms  # model bytes (decoded) -> ms
        self.load = load or (lambda t: 1.0)  # a shared load factor over virtual time
        self.log: list[tuple[str, str]] = []
        self.t = 0.0

    def fingerprint(self) -> dict[str, Any]:
        return {"backend": self.name}

    def _prepare(self, onnx_bytes, sha256, precision, input_shape, batch_sizes) -> Prepared:
        return Prepared(self.name, sha256, precision, input_shape, batch_sizes, 0.0,
                        handle=onnx_bytes.decode())  # fmt: skip

    def _infer(self, prepared: Prepared, x: np.ndarray) -> np.ndarray:
        return np.zeros((1, 2), dtype=np.float32)

    def _call(self, prepared: Prepared, series: str) -> TimedCall:
        name = prepared.handle

        def timed() -> float:
            self.log.append((name, series))
            sample = self.ms[name] * self.load(self.t)
            self.t += sample / 1000.0
            return sample

        return timed

    def _compute_call(self, prepared: Prepared, batch_size: int) -> TimedCall:
        return self._call(prepared, "compute")

    def _end_to_end_call(self, prepared: Prepared, batch_size: int) -> TimedCall:
        return self._call(prepared, "end_to_end")

    def _clock(self, prepared: Prepared, batch_size: int) -> Clock:
        return Clock(now=lambda: self.t, sleep=lambda s: None)


def test_blocks_of_a_and_b_alternate_in_warm_up_and_timing_series_by_series() -> None:
    backend = Logged({"A": 2.0, "B": 5.0})
    a, b = (backend.prepare(x.encode(), "fp32", SHAPE) for x in ("A", "B"))
    m = measure_pair(backend, a, b, 1, QUICK)
    compute = [name for name, series in backend.log if series == "compute"]
    assert [s for _, s in backend.log] == sorted(s for _, s in backend.log)  # compute, then e2e
    blocks = [(name, len(list(run))) for name, run in itertools.groupby(compute)]
    assert all(size == BLOCK_RUNS for _, size in blocks)
    assert [name for name, _ in blocks] == ["A", "B"] * (len(blocks) // 2)
    warm = m.compute.a.warmup_runs // BLOCK_RUNS
    assert len(blocks) // 2 == warm + m.compute.ratio.pairs


def test_a_load_that_triples_halfway_leaves_the_paired_ratio_and_moves_the_unpaired_one() -> None:
    # A loaded host: everything three times slower after 0.5 s of virtual time.
    def load(t: float) -> float:
        return 1.0 if t < 0.5 else 3.0

    paired = Logged({"A": 2.0, "B": 5.0}, load)
    a, b = (paired.prepare(x.encode(), "fp32", SHAPE) for x in ("A", "B"))
    p = Protocol(warmup_min_s=0.0, warmup_min_runs=0, min_runs=200, min_time_s=1.0)
    ratio = measure_pair(paired, a, b, 1, p).compute.ratio
    assert ratio.median == pytest.approx(2.5, rel=1e-9)
    # Unpaired: A timed first (partly before the load), B after it.
    alone = Logged({"A": 2.0, "B": 5.0}, load)
    a, b = (alone.prepare(x.encode(), "fp32", SHAPE) for x in ("A", "B"))
    a_ms = alone.measure(a, 1, p).compute.stats.median_ms
    b_ms = alone.measure(b, 1, p).compute.stats.median_ms
    assert b_ms / a_ms > 4


# --- the stopping rule, counted in pairs --------------------------------------------------------


def scripted(samples: list[float]) -> tuple[TimedCall, list[float]]:
    t = [0.0]
    it = itertools.cycle(samples)

    def call() -> float:
        s = next(it)
        t[0] += s / 1000.0
        return s

    return call, t


def test_the_rule_waits_for_min_pairs_even_when_the_ratio_is_exact() -> None:
    a, t = scripted([1.0])
    b, _ = scripted([3.0])
    p = Protocol(warmup_min_s=0.0, warmup_min_runs=0, min_runs=1, min_time_s=0.0)
    s = run_pair(a, b, p, Clock(now=lambda: t[0], sleep=lambda _: None))
    assert s.ratio.pairs == MIN_PAIRS and s.ratio.stopped_by == "converged"


def test_a_noisy_ratio_runs_to_the_time_cap_and_says_so() -> None:
    shared = [0.0]

    def jitter(values: list[float]) -> TimedCall:
        it = itertools.cycle(values)

        def call() -> float:
            s = next(it)
            shared[0] += s / 1000.0
            return s

        return call

    a = jitter([1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 1.0])  # block medians jump between 1 and 2
    b = jitter([3.0])
    p = Protocol(warmup_min_s=0.0, warmup_min_runs=0, min_runs=10, min_time_s=0.0,
                 max_time_s=0.5, target_rel_ci=0.01)  # fmt: skip
    s = run_pair(a, b, p, Clock(now=lambda: shared[0], sleep=lambda _: None))
    assert s.ratio.stopped_by == "max_time"
    assert s.ratio.ci_rel_half_width > 0.01
    assert shared[0] >= 0.5


def test_a_model_that_times_zero_is_a_measurement_error() -> None:
    a, t = scripted([0.0])
    b, _ = scripted([1.0])
    with pytest.raises(MeasurementError, match="0 ms"):
        run_pair(a, b, QUICK, Clock(now=lambda: t[0], sleep=lambda _: None))


def test_a_batch_size_one_model_was_not_prepared_for_is_refused() -> None:
    backend = table()
    a, b = prepared(backend)
    with pytest.raises(MeasurementError, match="batch size 2"):
        measure_pair(backend, a, b, 2, QUICK)


def test_runtime_errors_are_translated() -> None:
    class Broken(Logged):
        def _compute_call(self, prepared: Prepared, batch_size: int) -> TimedCall:
            def timed() -> float:
                raise RuntimeError("CUDA error: an illegal memory access")

            return timed

    backend = Broken({"A": 1.0, "B": 1.0})
    a, b = (backend.prepare(x.encode(), "fp32", SHAPE) for x in ("A", "B"))
    with pytest.raises(MeasurementError, match="illegal memory access"):
        measure_pair(backend, a, b, 1, QUICK)


# --- the ratio record at the trust boundary -----------------------------------------------------


def test_a_ratio_record_round_trips() -> None:
    r = RatioStats(2.5, (2.4, 2.6), 12, "converged", (2.5,) * 12)
    back = RatioStats.from_json(r.to_json())
    assert (back.median, back.ci95, back.pairs, back.stopped_by) == (2.5, (2.4, 2.6), 12,
                                                                     "converged")  # fmt: skip
    assert r.to_json(with_samples=False)["ratios"] == []


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        {"median": "2.5", "ci95": [2, 3], "pairs": 6, "stopped_by": "converged"},
        {"median": True, "ci95": [2, 3], "pairs": 6, "stopped_by": "converged"},
        {"median": float("nan"), "ci95": [2, 3], "pairs": 6, "stopped_by": "converged"},
        {"median": 10**400, "ci95": [2, 3], "pairs": 6, "stopped_by": "converged"},
        {"median": -2.5, "ci95": [-3, -2], "pairs": 6, "stopped_by": "converged"},
        {"median": 2.5, "ci95": [2.6, 3], "pairs": 6, "stopped_by": "converged"},
        {"median": 2.5, "ci95": [2, 3, 4], "pairs": 6, "stopped_by": "converged"},
        {"median": 2.5, "ci95": [2, 3], "pairs": 0, "stopped_by": "converged"},
        {"median": 2.5, "ci95": [2, 3], "pairs": 6.0, "stopped_by": "converged"},
        {"median": 2.5, "ci95": [2, 3], "pairs": 6, "stopped_by": "<script>"},
    ],
)
def test_a_malformed_ratio_record_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="ratio"):
        RatioStats.from_json(bad)


def test_block_runs_must_be_positive() -> None:
    a, _t = scripted([1.0])
    with pytest.raises(ValueError, match="block_runs"):
        run_pair(a, a, QUICK, block_runs=0)
    assert pairing.pair_protocol(QUICK, 1).min_runs == QUICK.min_runs
