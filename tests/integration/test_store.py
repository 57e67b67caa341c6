"""The measurement store, one suite over SQLite and PostgreSQL (the same code on both).

PostgreSQL: a throwaway database on ``$HPC2EDGE_TEST_POSTGRES`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432``), dropped afterwards; skipped with the reason
when no server answers there.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

sqlalchemy = pytest.importorskip("sqlalchemy")

from hpc2edge.space import get_space  # noqa: E402
from hpc2edge.store.artifacts import DirectoryArtifactStore, key_for  # noqa: E402
from hpc2edge.store.measurements import DeviceContext, MeasurementStore, StoreError  # noqa: E402
from tests.support.search import BACKEND, DEVICE, FakeEdge  # noqa: E402

pytestmark = pytest.mark.integration

PG = os.environ.get("HPC2EDGE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432")


@contextmanager
def postgres_database() -> Iterator[str]:
    """The URL of a fresh PostgreSQL database, dropped afterwards (skip when there is none)."""
    pytest.importorskip("psycopg")
    admin = sqlalchemy.create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
    name = f"hpc2edge_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as c:
            c.exec_driver_sql(f"CREATE DATABASE {name}")
    except sqlalchemy.exc.OperationalError as exc:
        admin.dispose()
        pytest.skip(f"no PostgreSQL at {PG}: {str(exc).splitlines()[0]}")
    try:
        yield f"{PG}/{name}"
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MeasurementStore]:
    if request.param == "sqlite":
        s = MeasurementStore(f"sqlite:///{tmp_path / 'm.db'}")
        yield s
        s.close()
        return
    with postgres_database() as url:
        s = MeasurementStore(url)
        try:
            yield s
        finally:
            s.close()


def result_for(tmp_path: Path, seed: int, batch_sizes: list[int] | None = None) -> tuple[Any, dict]:
    spec = get_space("cnn3d").sample(seed)
    artifacts = DirectoryArtifactStore(tmp_path / "a")
    blob = f"onnx bytes of {spec.arch_id}".encode()
    key = artifacts.put(blob)
    edge = FakeEdge(artifacts, {spec.arch_id: spec})
    payload = {"arch_id": spec.arch_id, "artifact_key": key, "input_shape": [1, 8, 41, 41],
               "batch_sizes": batch_sizes or [1], "precision": "fp32"}  # fmt: skip
    assert key == key_for(blob)
    return spec, edge(payload)


def test_record_then_find_by_context(store: MeasurementStore, tmp_path: Path) -> None:
    spec, result = result_for(tmp_path, 1, [1, 4])
    rows = store.record(spec, result, task_id="t-1", params=1234, flops=10**11)
    assert [r.batch_size for r in rows] == [1, 4]
    ctx = DeviceContext.from_fingerprints(DEVICE, BACKEND)
    hit = store.find(ctx, spec.arch_id, result["onnx_sha256"], "fp32", 4)
    assert hit is not None and hit.id == rows[1].id
    assert hit.latency_ms == result["batches"][1]["compute"]["stats"]["median_ms"]
    assert hit.results["device"]["hostname"] == "fake-orin"
    assert store.architecture(spec.arch_id)["params"] == 1234  # type: ignore[index]
    # Any part of the context that differs is a miss: batch size, precision, model bytes,
    # runtime version, power mode, device.
    assert store.find(ctx, spec.arch_id, result["onnx_sha256"], "fp32", 2) is None
    assert store.find(ctx, spec.arch_id, result["onnx_sha256"], "fp16", 1) is None
    assert store.find(ctx, spec.arch_id, "0" * 64, "fp32", 1) is None
    newer = {**DEVICE, "versions": {**DEVICE["versions"], "onnxruntime": "2.0"}}
    assert store.find(DeviceContext.from_fingerprints(newer, BACKEND), spec.arch_id,
                      result["onnx_sha256"], "fp32", 1) is None  # fmt: skip
    maxn = {**DEVICE, "nvpmodel": {"id": 0, "name": "MAXN"}}
    assert store.find(DeviceContext.from_fingerprints(maxn, BACKEND), spec.arch_id,
                      result["onnx_sha256"], "fp32", 1) is None  # fmt: skip
    other = {**DEVICE, "hostname": "another-orin"}
    assert store.find(DeviceContext.from_fingerprints(other, BACKEND), spec.arch_id,
                      result["onnx_sha256"], "fp32", 1) is None  # fmt: skip


def test_recording_a_task_twice_stores_it_once(store: MeasurementStore, tmp_path: Path) -> None:
    spec, result = result_for(tmp_path, 2)
    first = store.record(spec, result, task_id="t-2")
    again = store.record(spec, result, task_id="t-2")
    assert [r.id for r in again] == [r.id for r in first]
    assert len(store.measurements(spec.arch_id)) == 1
    store.record(spec, result, task_id="t-3")  # a new measurement of the same network
    assert len(store.measurements(spec.arch_id)) == 2
    assert len(store.devices()) == 1


def test_deleting_an_architecture_cascades(store: MeasurementStore, tmp_path: Path) -> None:
    spec, result = result_for(tmp_path, 3)
    store.record(spec, result, task_id="t-4")
    assert store.delete_architecture(spec.arch_id)
    assert store.measurements(spec.arch_id) == []
    assert not store.delete_architecture(spec.arch_id)


def test_bad_results_are_refused_and_nothing_is_written(
    store: MeasurementStore, tmp_path: Path
) -> None:
    spec, result = result_for(tmp_path, 4)
    with pytest.raises(ValueError, match="only successful"):
        store.record(spec, {**result, "status": "error"})
    other = get_space("cnn3d").sample(5)
    with pytest.raises(ValueError, match="not"):
        store.record(other, result)
    assert store.measurements() == []


def test_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open the measurement store"):
        MeasurementStore("postgresql+psycopg://nobody:secret@127.0.0.1:1/nothing")
    with pytest.raises(StoreError) as info:
        MeasurementStore("postgresql+psycopg://nobody:secret@127.0.0.1:1/nothing")
    assert "secret" not in str(info.value)


def test_a_search_on_postgresql_storage_and_store_resumes(tmp_path: Path) -> None:
    """The orchestrator with both its study and its store on PostgreSQL, stopped and resumed."""
    pytest.importorskip("torch")
    from hpc2edge.search.orchestrator import LEASE_ATTR
    from tests.unit.test_search_orchestrator import Harness

    with postgres_database() as url:
        h = Harness(tmp_path)
        h.url = url
        h.store = MeasurementStore(url)  # the same database holds both: no table clashes
        try:
            o = h.orchestrator("pg", trials=4, parallel=2)
            o.start()
            for _ in range(3):
                o.step()
            o.study.set_user_attr(LEASE_ATTR, None)  # as if the process had died
            summary = h.orchestrator("pg", trials=4, parallel=2).run()
            assert summary["complete"] == 4
            assert len(h.store.measurements()) == h.sent("measure") > 0
        finally:
            h.store.close()
