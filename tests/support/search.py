"""Doubles for the orchestrator's unit tests: a device and a trainer that answer instantly.

Their results have the shape of the real ones (``tests/unit/test_search_doubles.py`` checks the
keys against a real ``measure_request`` and ``train_request``), and their numbers follow from
the architecture, so bigger networks are slower and (up to a point) more accurate: a real
trade-off for the samplers, without torch or a device.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from hpc2edge.space.base import ArchSpec
from hpc2edge.store.artifacts import ArtifactStore, parse_key

DEVICE = {
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
BACKEND = {"backend": "fake", "version": "1"}


def _size(spec: ArchSpec) -> float:
    ch = spec.params.get("channels") or (16,)
    return sum(int(c) for c in ch) * spec.frames * spec.size**2 / 1e5  # type: ignore[union-attr]


def stats(ms: float) -> dict[str, Any]:
    return {
        "n": 50, "min_ms": ms * 0.95, "median_ms": ms, "mean_ms": ms, "std_ms": ms * 0.02,
        "p90_ms": ms * 1.05, "p99_ms": ms * 1.1, "max_ms": ms * 1.2, "cv": 0.02,
        "ci95_median_ms": [ms * 0.99, ms * 1.01],
    }  # fmt: skip


@dataclass
class FakeEdge:
    """``hpc2edge.measure`` on a pretend device: latency grows with the network."""

    artifacts: ArtifactStore
    spec_of: dict[str, ArchSpec] = field(default_factory=dict)
    calls: int = 0

    def __call__(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        onnx = self.artifacts.get(payload["artifact_key"])  # as the device does: verified read
        spec = self.spec_of.get(payload["arch_id"])
        ms = 0.2 + (_size(spec) if spec else len(onnx) / 1e6)
        batches = []
        for bs in payload["batch_sizes"]:
            run = {"stats": stats(ms * bs), "warmup_runs": 3, "warmup_s": 0.1, "timed_s": 1.0,
                   "stopped_by": "converged"}  # fmt: skip
            batches.append({"batch_size": bs, "compute": run, "end_to_end": run})
        return {
            "format": "hpc2edge-latency-result/1",
            "status": "ok",
            "arch_id": payload["arch_id"],
            "artifact_key": payload["artifact_key"],
            "onnx_sha256": parse_key(payload["artifact_key"]),
            "backend": "fake",
            "precision": payload["precision"],
            "input_shape": payload["input_shape"],
            "build_s": 0.0,
            "output_check": None,
            "batches": batches,
            "latency_ms_p50": {
                str(b["batch_size"]): b["compute"]["stats"]["median_ms"] for b in batches
            },
            "protocol": payload.get("protocol") or {},
            "backend_fingerprint": BACKEND,
            "device": DEVICE,
            "telemetry_before": {},
            "telemetry_after": {},
            "throttle": None,
            "started_unix_s": 0.0,
            "finished_unix_s": 0.0,
            "error": None,
            "worker": "fake-edge",
        }


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
        return {
            "status": "ok", "arch_id": spec.arch_id, "engine": "single", "world_size": 1,
            "device": "cpu", "precision": "fp32", "zero_stage": 0, "global_batch_size": 8,
            "epochs_budget": payload["epochs"], "epochs_run": payload["epochs"],
            "stopped_early": False, "val_mse": mse, "val_rmse": math.sqrt(mse),
            "val_rmse_speed_mm_s": math.sqrt(mse) * 900, "val_rmse_power_w": math.sqrt(mse) * 215,
            "val_mse_constant": 0.05, "val_samples": 10, "train_samples": 40,
            "train_loss_per_epoch": [mse], "val_mse_per_epoch": [mse], "samples_per_s": 100.0,
            "train_s": 1.0, "wall_s": 1.5, "seed": payload["seed"], "checkpoint_path": "/x.pt",
            "checkpoint_sha256": "0" * 64, "versions": {}, "test": None, "engine_note": "",
            "worker": "fake-train",
        }  # fmt: skip


class FakeClock:
    """Time that passes only when the orchestrator sleeps (or a test advances it)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)
