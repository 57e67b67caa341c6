"""Doubles of the two workers and of time: a device and a trainer that answer at once.

For tests of the orchestrator and of what reads its results (the store, the report) without
torch, a device or a broker: give :class:`FakeEdge` and :class:`FakeTrainer` to an
:class:`~hpc2edge.search.dispatch.InlineDispatcher` as its ``measure`` and ``train`` handlers,
and :class:`FakeClock` to the orchestrator.

Their results have the shape of the real ones, because they are built from the same records:
a :class:`~hpc2edge.latency.base.BatchMeasurement` per batch size and a
:class:`~hpc2edge.training.result.TrainResult`, inside the envelopes of ``measure_request`` and
``train_request`` (``tests/unit/test_search_doubles.py`` compares them, key by key and type by
type, with what the real functions return). Their numbers follow from the architecture, so
bigger networks are slower and (up to a point) more accurate: a real trade-off for the samplers.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from typing import Any

from hpc2edge.latency.base import TOLERANCE, BatchMeasurement, OutputCheck
from hpc2edge.latency.pairing import BLOCK_RUNS, RatioStats
from hpc2edge.latency.protocol import Protocol, ProtocolRun
from hpc2edge.latency.service import RESULT_FORMAT as LATENCY_FORMAT
from hpc2edge.latency.stats import LatencyStats
from hpc2edge.space.base import ArchSpec
from hpc2edge.store.artifacts import ArtifactStore, parse_key
from hpc2edge.training.result import TrainResult
from hpc2edge.training.service import RESULT_FORMAT as TRAIN_FORMAT

#: The pretend device's fingerprint (the keys of :func:`hpc2edge.latency.telemetry.fingerprint`).
DEVICE: dict[str, Any] = {
    "hostname": "fake-orin",
    "platform": "Linux-fake",
    "machine": "aarch64",
    "python": "3.11.7",
    "cpu_model": "fake",
    "cpu_count": 12,
    "memory_total_bytes": 64 * 2**30,
    "device_model": "Fake AGX Orin",
    "l4t_release": None,
    "jetpack_version": None,
    "nvpmodel": None,
    "jetson_clocks": None,
    "versions": {"onnxruntime": "1.0-fake", "tensorrt": None, "pycuda": None},
}
#: The pretend backend's fingerprint.
BACKEND: dict[str, Any] = {"backend": "fake", "version": "1"}
#: A telemetry snapshot of a device without sensors (the keys of ``telemetry.snapshot``).
TELEMETRY: dict[str, Any] = {
    "timestamp_unix_s": 0.0,
    "temperatures_c": {},
    "cpu_freq_mhz": {},
    "gpu_freq_mhz": None,
    "nvml": None,
    "load_avg": [0.0, 0.0, 0.0],
}


def _size(spec: ArchSpec) -> float:
    """A network's size in arbitrary units: its channels times its input's voxels."""
    channels = spec.params.get("channels")
    widths = [int(c) for c in channels if isinstance(c, int)] if isinstance(channels, tuple) else []
    return sum(widths or [16]) * spec.frames * spec.size**2 / 1e5


def latency_stats(ms: float) -> LatencyStats:
    """Statistics of a well-behaved series with median ``ms`` (no raw samples)."""
    return LatencyStats(
        n=50, min_ms=ms * 0.95, median_ms=ms, mean_ms=ms, std_ms=ms * 0.02, p90_ms=ms * 1.05,
        p99_ms=ms * 1.1, max_ms=ms * 1.2, cv=0.02, ci95_median_ms=(ms * 0.99, ms * 1.01),
        samples_ms=(),
    )  # fmt: skip


def stats(ms: float) -> dict[str, Any]:
    """:func:`latency_stats` as it travels in a result."""
    return latency_stats(ms).to_json()


@dataclass
class FakeEdge:
    """``hpc2edge.measure`` on a pretend device: latency grows with the network.

    Reads the model from ``artifacts`` as the device does (a verified read: a missing or corrupt
    blob raises), so a test sees what the orchestrator stored. ``spec_of`` maps arch ids to
    specs for size-dependent latencies; an unknown arch is timed by its model's byte count.
    ``kind`` is the device kind it answers as, ``scale`` how much slower than the reference
    fake it is (another kind's hardware), ``worker`` the unit's name.
    """

    artifacts: ArtifactStore
    spec_of: dict[str, ArchSpec] = field(default_factory=dict)
    calls: int = 0
    kind: str = "default"
    scale: float = 1.0
    worker: str = "fake-edge"
    #: The first ``unstable`` calls end by the protocol's time cap with a +-20 % CI.
    unstable: int = 0

    def probe(self) -> dict[str, Any]:
        """What ``hpc2edge.ping`` on its queue answers (an ``InlineDispatcher`` edge probe)."""
        return {
            "hostname": self.worker,
            "measurement": {"kind": self.kind, "device": dict(DEVICE), "backend": dict(BACKEND)},
        }

    def _ms(self, arch_id: str, artifact_key: str) -> float:
        """The pretend latency at batch 1 of a network (its model read as the device does)."""
        onnx = self.artifacts.get(artifact_key)
        spec = self.spec_of.get(arch_id)
        return self.scale * (0.2 + (_size(spec) if spec else len(onnx) / 1e6))

    def __call__(self, payload: dict[str, Any]) -> dict[str, Any]:
        """A measurement; with ``pair`` in the payload, a paired one (the baseline as B): the
        ratio of the two pretend latencies, as a noise-free device would time it."""
        self.calls += 1
        ms = self._ms(payload["arch_id"], payload["artifact_key"])
        with_samples = payload.get("keep_samples", True)
        shaky = self.calls <= self.unstable
        batches = _batches(ms, payload["batch_sizes"], shaky)
        pair = payload.get("pair")
        extra: dict[str, Any] = {}
        if pair is not None:
            ms_b = self._ms(pair["arch_id"], pair["artifact_key"])
            pair_batches = _batches(ms_b, payload["batch_sizes"], shaky=False)
            r = ms_b / ms
            ratio = RatioStats(r, (r * 0.99, r * 1.01), 12, "converged").to_json()
            extra["pair"] = {
                "arch_id": pair["arch_id"],
                "artifact_key": pair["artifact_key"],
                "onnx_sha256": parse_key(pair["artifact_key"]),
                "input_shape": list(pair["input_shape"]),
                "build_s": 0.0,
                "output_check": _output_check(pair.get("reference"), payload["precision"]),
                "block_runs": BLOCK_RUNS,
                "batches": [b.to_json(with_samples=with_samples) for b in pair_batches],
                "latency_ms_p50": {str(b.batch_size): b.compute.stats.median_ms
                                   for b in pair_batches},
                "ratios": [{"batch_size": b.batch_size, "compute": ratio, "end_to_end": ratio}
                           for b in pair_batches],
            }  # fmt: skip
        sent = [b.to_json(with_samples=with_samples) for b in batches]
        return {
            "format": LATENCY_FORMAT,
            "status": "ok",
            "arch_id": payload["arch_id"],
            "artifact_key": payload["artifact_key"],
            "onnx_sha256": parse_key(payload["artifact_key"]),
            "backend": BACKEND["backend"],
            "precision": payload["precision"],
            "input_shape": list(payload["input_shape"]),
            "build_s": 0.0,
            "output_check": _output_check(payload.get("reference"), payload["precision"]),
            "batches": sent,
            "latency_ms_p50": {
                str(b["batch_size"]): b["compute"]["stats"]["median_ms"] for b in sent
            },
            **extra,
            "protocol": Protocol.from_json(payload.get("protocol")).to_json(),
            "backend_fingerprint": dict(BACKEND),
            "device": dict(DEVICE),
            "telemetry_before": dict(TELEMETRY),
            "telemetry_after": dict(TELEMETRY),
            "throttle": {"throttled": False, "reasons": []},
            "started_unix_s": 0.0,
            "finished_unix_s": 0.0,
            "error": None,
            "worker": self.worker,
            "kind": self.kind,
        }


def _batches(ms: float, batch_sizes: list[int], shaky: bool) -> list[BatchMeasurement]:
    """Both series per batch size around ``ms`` per sample; ``shaky``: ended by the time cap
    with a +-20 % CI."""
    out = []
    for bs in batch_sizes:
        st = latency_stats(ms * bs)
        if shaky:
            st = replace(st, ci95_median_ms=(st.median_ms * 0.8, st.median_ms * 1.2), cv=0.3)
        run = ProtocolRun(st, warmup_runs=3, warmup_s=0.1, timed_s=1.0,
                          stopped_by="max_time" if shaky else "converged")  # fmt: skip
        out.append(BatchMeasurement(bs, run, run))
    return out


def _output_check(reference: Any, precision: str) -> dict[str, Any] | None:
    # A reference is always matched: the fake runs the model as exported.
    if reference is None:
        return None
    return OutputCheck(0.0, TOLERANCE.get(precision, 1e-4), True).to_json()


def fake_val_mse(spec: ArchSpec) -> float:
    """Falls with size, with an architecture-dependent wobble (deterministic)."""
    wobble = int(hashlib.sha256(spec.arch_id.encode()).hexdigest()[:6], 16) / 0xFFFFFF
    return 0.01 + 0.04 / (1.0 + math.log1p(_size(spec))) + 0.004 * wobble


@dataclass
class FakeTrainer:
    """``hpc2edge.train`` that returns at once with a loss that depends on the network."""

    calls: int = 0

    def __call__(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        spec = ArchSpec.from_dict(payload["spec"])
        mse = fake_val_mse(spec)
        epochs = int(payload["epochs"])
        result = TrainResult(
            arch_id=spec.arch_id, engine="single", world_size=1, device="cpu", precision="fp32",
            zero_stage=0, global_batch_size=8, epochs_budget=epochs, epochs_run=epochs,
            stopped_early=False, val_mse=mse, val_rmse=math.sqrt(mse),
            val_rmse_speed_mm_s=math.sqrt(mse) * 900, val_rmse_power_w=math.sqrt(mse) * 215,
            val_mse_constant=0.05, val_samples=10, train_samples=40,
            train_loss_per_epoch=[mse] * epochs, val_mse_per_epoch=[mse] * epochs,
            samples_per_s=100.0, train_s=1.0, wall_s=1.5, seed=int(payload["seed"]),
            checkpoint_path="/x.pt", checkpoint_sha256="0" * 64, versions={},
        )  # fmt: skip
        return {
            "format": TRAIN_FORMAT,
            "status": "ok",
            "trial_key": payload.get("trial_key"),
            "cached": False,
            **result.to_json(),
            "started_unix_s": 0.0,
            "finished_unix_s": 0.0,
            "error": None,
            "worker": "fake-train",
        }


class FakeClock:
    """Time that passes only when the orchestrator sleeps (or a test advances it)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)


__all__ = [
    "BACKEND",
    "DEVICE",
    "TELEMETRY",
    "FakeClock",
    "FakeEdge",
    "FakeTrainer",
    "fake_val_mse",
    "latency_stats",
    "stats",
]
