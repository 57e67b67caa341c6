"""The MeasurementStore contract suite (:class:`hpc2edge.store.measurements.MeasurementStore`).

One store class runs on every SQLAlchemy database it supports; this suite is what each must
keep. Run it on a database::

    from hpc2edge.testing.measurements import MeasurementStoreContract

    class TestOnMyDatabase(MeasurementStoreContract):
        @pytest.fixture
        def url(self):
            return "postgresql+psycopg://..."   # a fresh, empty database per test

The results recorded are :class:`~hpc2edge.testing.fakes.FakeEdge` measurements (the shape of
the device's) of ``cnn3d`` networks. Checked: lookup by the whole device context (units of a
kind share measurements), one row per task however often it is recorded, cascading deletes,
and refusals that write nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpc2edge.space import get_space
from hpc2edge.space.base import ArchSpec
from hpc2edge.store.artifacts import DirectoryArtifactStore, key_for
from hpc2edge.store.measurements import DeviceContext, MeasurementStore
from hpc2edge.testing.fakes import BACKEND, DEVICE, FakeEdge


def measured(
    folder: Path, seed: int, batch_sizes: list[int] | None = None
) -> tuple[ArchSpec, dict[str, Any]]:
    """A ``cnn3d`` network (sampled with ``seed``) and a fake device's measurement of it."""
    spec = get_space("cnn3d").sample(seed)
    artifacts = DirectoryArtifactStore(folder / "a")
    blob = f"onnx bytes of {spec.arch_id}".encode()
    key = artifacts.put(blob)
    edge = FakeEdge(artifacts, {spec.arch_id: spec})
    payload = {"arch_id": spec.arch_id, "artifact_key": key, "input_shape": [1, 8, 41, 41],
               "batch_sizes": batch_sizes or [1], "precision": "fp32"}  # fmt: skip
    assert key == key_for(blob)
    return spec, edge(payload)


class MeasurementStoreContract:
    """What the measurement store does on a database. Subclass it; provide ``url``."""

    @pytest.fixture
    def url(self) -> str:
        """The SQLAlchemy URL of a fresh, empty database."""
        raise NotImplementedError("a MeasurementStoreContract subclass provides a url fixture")

    @pytest.fixture
    def store(self, url: str) -> Iterator[MeasurementStore]:
        s = MeasurementStore(url)
        try:
            yield s
        finally:
            s.close()

    def test_record_then_find_by_context(self, store: MeasurementStore, tmp_path: Path) -> None:
        spec, result = measured(tmp_path, 1, [1, 4])
        rows = store.record(spec, result, task_id="t-1", params=1234, flops=10**11)
        assert [r.batch_size for r in rows] == [1, 4]
        ctx = DeviceContext.from_fingerprints(DEVICE, BACKEND)
        proto = result.get("protocol")
        hit = store.find(ctx, spec.arch_id, result["onnx_sha256"], "fp32", 4, protocol=proto)
        assert hit is not None and hit.id == rows[1].id
        assert hit.latency_ms == result["batches"][1]["compute"]["stats"]["median_ms"]
        assert hit.results["device"]["hostname"] == "fake-orin"
        assert store.architecture(spec.arch_id)["params"] == 1234  # type: ignore[index]
        # Any part of the context that differs is a miss: batch size, precision, model bytes,
        # protocol, runtime version, power mode, hardware model, device kind.
        sha = result["onnx_sha256"]

        def find(c: DeviceContext, sha: str = sha, precision: str = "fp32", batch: int = 1,
                 protocol: Any = proto) -> Any:  # fmt: skip
            return store.find(c, spec.arch_id, sha, precision, batch, protocol=protocol)

        assert find(ctx, batch=2) is None
        assert find(ctx, precision="fp16") is None
        assert find(ctx, sha="0" * 64) is None
        assert find(ctx, protocol={**(proto or {}), "max_time_s": 0.5}) is None
        newer = {**DEVICE, "versions": {**DEVICE["versions"], "onnxruntime": "2.0"}}
        assert find(DeviceContext.from_fingerprints(newer, BACKEND)) is None
        maxn = {**DEVICE, "nvpmodel": {"id": 0, "name": "MAXN"}}
        assert find(DeviceContext.from_fingerprints(maxn, BACKEND)) is None
        nano = {**DEVICE, "device_model": "NVIDIA Jetson Orin Nano"}
        assert find(DeviceContext.from_fingerprints(nano, BACKEND)) is None
        assert find(DeviceContext.from_fingerprints(DEVICE, BACKEND, "orin-nano")) is None
        # Another unit of the same kind (same hardware, stack and power mode) shares it.
        twin = {**DEVICE, "hostname": "another-orin"}
        shared = find(DeviceContext.from_fingerprints(twin, BACKEND))
        assert shared is not None and shared.id == rows[0].id

    def test_recording_a_task_twice_stores_it_once(
        self, store: MeasurementStore, tmp_path: Path
    ) -> None:
        spec, result = measured(tmp_path, 2)
        first = store.record(spec, result, task_id="t-2")
        again = store.record(spec, result, task_id="t-2")
        assert [r.id for r in again] == [r.id for r in first]
        assert len(store.measurements(spec.arch_id)) == 1
        store.record(spec, result, task_id="t-3")  # a new measurement of the same network
        assert len(store.measurements(spec.arch_id)) == 2
        assert len(store.devices()) == 1

    def test_deleting_an_architecture_cascades(
        self, store: MeasurementStore, tmp_path: Path
    ) -> None:
        spec, result = measured(tmp_path, 3)
        store.record(spec, result, task_id="t-4")
        assert store.delete_architecture(spec.arch_id)
        assert store.measurements(spec.arch_id) == []
        assert not store.delete_architecture(spec.arch_id)

    def test_bad_results_are_refused_and_nothing_is_written(
        self, store: MeasurementStore, tmp_path: Path
    ) -> None:
        spec, result = measured(tmp_path, 4)
        with pytest.raises(ValueError, match="only successful"):
            store.record(spec, {**result, "status": "error"})
        other = get_space("cnn3d").sample(5)
        with pytest.raises(ValueError, match="not"):
            store.record(other, result)
        assert store.measurements() == []


__all__ = ["MeasurementStoreContract", "measured"]
