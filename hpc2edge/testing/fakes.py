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
from dataclasses import dataclass, field
from typing import Any

from hpc2edge.sim.results import (
    BACKEND,
    DEVICE,
    TELEMETRY,
    latency_stats,
    measure_result,
    stats,
    train_result,
)
from hpc2edge.space.base import ArchSpec
from hpc2edge.store.artifacts import ArtifactStore


def _size(spec: ArchSpec) -> float:
    """A network's size in arbitrary units: its channels times its input's voxels."""
    channels = spec.params.get("channels")
    widths = [int(c) for c in channels if isinstance(c, int)] if isinstance(channels, tuple) else []
    return sum(widths or [16]) * spec.frames * spec.size**2 / 1e5


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
        pair = payload.get("pair")
        return measure_result(
            payload,
            self._ms(payload["arch_id"], payload["artifact_key"]),
            kind=self.kind,
            worker=self.worker,
            shaky=self.calls <= self.unstable,
            pair_ms=None if pair is None else self._ms(pair["arch_id"], pair["artifact_key"]),
        )


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
        return train_result(
            payload,
            arch_id=spec.arch_id,
            val_mse_per_epoch=[mse] * int(payload["epochs"]),
            val_mse_constant=0.05,
            train_s=1.0,
            worker="fake-train",
        )


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
