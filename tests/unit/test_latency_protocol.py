"""The measurement protocol with a fake clock: warm-up, minimums, the CI rule, caps, cool-down."""

from __future__ import annotations

import itertools

import pytest

from hpc2edge.latency.protocol import Clock, Protocol, run

pytestmark = pytest.mark.unit


class FakeDevice:
    """Each call 'takes' the next sample; the clock advances by it."""

    def __init__(self, samples_ms, temps=None):
        self.t = 0.0
        self.calls = 0
        self._samples = itertools.cycle(samples_ms)
        self._temps = iter(temps or [])
        self.slept = 0.0

    def call(self):
        self.calls += 1
        sample = next(self._samples)
        self.t += sample / 1000.0
        return sample

    def sleep(self, s):
        self.slept += s
        self.t += s

    def clock(self):
        return Clock(
            now=lambda: self.t, sleep=self.sleep, temperature_c=lambda: next(self._temps, None)
        )


def test_warmup_by_time_and_count_is_not_timed():
    dev = FakeDevice([10.0])  # 10 ms a call: 1 s of warm-up takes 100 calls
    p = Protocol(warmup_min_s=1.0, warmup_min_runs=5, min_runs=20, min_time_s=0.1)
    result = run(dev.call, p, dev.clock())
    assert result.warmup_runs == 100
    assert result.warmup_s == pytest.approx(1.0)
    assert result.stats.n == dev.calls - 100


def test_warmup_count_dominates_for_slow_models():
    dev = FakeDevice([500.0])
    p = Protocol(warmup_min_s=0.2, warmup_min_runs=3, min_runs=5, min_time_s=0.0, max_runs=10)
    assert run(dev.call, p, dev.clock()).warmup_runs == 3


def test_constant_samples_converge_at_the_minimums():
    dev = FakeDevice([2.0])
    p = Protocol(warmup_min_s=0, warmup_min_runs=0, min_runs=50, min_time_s=0.0, check_every=10)
    result = run(dev.call, p, dev.clock())
    assert result.stopped_by == "converged"
    assert result.stats.n == 50
    assert result.stats.median_ms == 2.0


def test_minimum_time_is_respected():
    dev = FakeDevice([1.0])
    p = Protocol(warmup_min_s=0, warmup_min_runs=0, min_runs=10, min_time_s=2.0, check_every=10)
    result = run(dev.call, p, dev.clock())
    assert 2000 <= result.stats.n <= 2100  # 2 s of 1 ms calls; the next check is <= 5 % later
    assert result.timed_s >= 2.0


def test_noisy_samples_run_until_the_cap_and_say_so():
    dev = FakeDevice([1.0, 9.0])  # a bimodal device: the median's CI never gets within 2 %
    p = Protocol(
        warmup_min_s=0, warmup_min_runs=0, min_runs=10, min_time_s=0, max_runs=300, max_time_s=100.0
    )
    result = run(dev.call, p, dev.clock())
    assert result.stopped_by == "max_runs" and result.stats.n == 300
    dev = FakeDevice([100.0, 900.0])
    p = Protocol(
        warmup_min_s=0,
        warmup_min_runs=0,
        min_runs=10,
        min_time_s=0,
        max_runs=10_000,
        max_time_s=5.0,
    )
    result = run(dev.call, p, dev.clock())
    assert result.stopped_by == "max_time"
    assert result.stats.n in (10, 11)  # 5 s reached after 10 samples (float sums may need 11)


def test_cooldown_waits_for_the_device_to_cool():
    dev = FakeDevice([1.0], temps=[80.0, 78.0, 70.0, 60.0])
    p = Protocol(
        warmup_min_s=0, warmup_min_runs=0, min_runs=10, min_time_s=0, max_start_temp_c=65.0
    )
    result = run(dev.call, p, dev.clock())
    assert result.cooldown_waited_s == pytest.approx(3.0)
    assert result.start_temp_c == 60.0


def test_cooldown_gives_up_after_its_timeout():
    dev = FakeDevice([1.0], temps=[90.0] * 1000)
    p = Protocol(
        warmup_min_s=0,
        warmup_min_runs=0,
        min_runs=10,
        min_time_s=0,
        max_start_temp_c=65.0,
        cooldown_timeout_s=5.0,
    )
    result = run(dev.call, p, dev.clock())
    assert result.cooldown_waited_s == pytest.approx(5.0)
    assert result.start_temp_c == 90.0  # recorded with the result: the reader can judge


@pytest.mark.parametrize(
    "bad",
    [
        dict(min_runs=0),
        dict(max_runs=5, min_runs=10),
        dict(target_rel_ci=0),
        dict(max_time_s=1, min_time_s=2),
        dict(warmup_min_s=-1),
    ],
)
def test_invalid_protocols_are_refused(bad):
    with pytest.raises(ValueError):
        Protocol(**bad)


def test_protocol_from_json_refuses_unknown_keys():
    assert Protocol.from_json({"min_runs": 7}).min_runs == 7
    assert Protocol.from_json(None) == Protocol()
    with pytest.raises(ValueError, match="warmup_s"):
        Protocol.from_json({"warmup_s": 1})


def test_a_slow_model_stops_at_max_time_even_below_min_runs():
    dev = FakeDevice([5500.0])  # 5.5 s an inference, as a Swin on a laptop CPU
    p = Protocol(warmup_min_s=1.0, warmup_min_runs=10, min_runs=50, min_time_s=2.0, max_time_s=30.0)
    result = run(dev.call, p, dev.clock())
    assert result.warmup_runs == 6  # warm-up is bounded by max_time_s too
    assert result.stopped_by == "max_time" and result.stats.n == 6
    assert result.warmup_s + result.timed_s < 2 * 30.0 + 2 * 5.5
