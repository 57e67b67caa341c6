"""The orchestrator's doubles (:mod:`hpc2edge.testing.fakes`) answer with the shape of the real
workers: every key, at every depth, with values of the same JSON type.

- ``FakeEdge`` against a real :func:`~hpc2edge.latency.service.measure_request` of the contract
  model on ONNX Runtime and on the table backend (the request the contract suites send).
- ``FakeTrainer`` against a real :func:`~hpc2edge.training.service.train_request` of the tiny
  problem (:mod:`hpc2edge.testing.training`) that runs for real up to the training child, whose
  report is stood in for (a real training takes 10-25 s on 2 cores; ``test_training_run.py``
  trains for real and checks that report): the fake's metrics are checked field by field
  against the types :class:`~hpc2edge.training.result.TrainResult` declares.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from hpc2edge.latency import get_backend
from hpc2edge.latency.service import measure_request
from hpc2edge.search.dispatch import Outcome
from hpc2edge.store.artifacts import MemoryArtifactStore
from hpc2edge.testing.dispatch import measure_payload
from hpc2edge.testing.fakes import FakeEdge, FakeTrainer
from hpc2edge.testing.latency import contract_model, recorded_table
from hpc2edge.testing.training import make_tiny_data, tiny_request
from hpc2edge.training.result import TrainResult

pytestmark = pytest.mark.unit

#: Objects whose keys are names of things that vary by machine or backend (sensors, packages,
#: a backend's settings): only their type is compared.
FREE_FORM = {
    "backend_fingerprint",
    "telemetry_before.temperatures_c",
    "telemetry_after.temperatures_c",
    "telemetry_before.cpu_freq_mhz",
    "telemetry_after.cpu_freq_mhz",
    "versions",
}


def kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def differences(fake: Any, real: Any, path: str = "") -> list[str]:
    """Where ``fake`` and ``real`` (decoded JSON) differ in shape; ``null`` matches anything
    (an optional value that one machine has and another has not)."""
    where = path or "the result"
    if fake is None or real is None:
        return []
    if kind(fake) != kind(real):
        return [f"{where}: {kind(fake)} in the fake, {kind(real)} in the real result"]
    if isinstance(real, dict):
        if path in FREE_FORM:
            return []
        out = []
        for key in sorted(set(fake) | set(real)):
            sub = f"{path}.{key}" if path else key
            if key not in fake:
                out.append(f"{sub}: missing from the fake")
            elif key not in real:
                out.append(f"{sub}: not in the real result")
            else:
                out += differences(fake[key], real[key], sub)
        return out
    if isinstance(real, list) and fake and real:
        if len(fake) != len(real) and path in ("batches",):
            return [f"{where}: {len(fake)} items in the fake, {len(real)} in the real result"]
        return differences(fake[0], real[0], f"{path}[0]")
    return []


def as_sent(result: dict[str, Any]) -> Any:
    """What crosses the queue: JSON."""
    return json.loads(json.dumps(result))


@pytest.fixture(scope="module")
def model_store() -> tuple[MemoryArtifactStore, str]:
    store = MemoryArtifactStore()
    return store, store.put(contract_model().onnx_bytes)


@pytest.mark.parametrize("backend_name", ["onnxruntime", "table"])
def test_fake_edge_answers_like_measure_request(model_store, backend_name: str) -> None:
    store, key = model_store
    backend = (
        recorded_table()
        if backend_name == "table"
        else get_backend("onnxruntime", intra_op_threads=1)
    )
    payload = measure_payload(key, [1, 2])
    real = measure_request(payload, fetch=store.get, backend_for=lambda _name: backend)
    assert real["status"] == "ok", real["error"]
    real["worker"] = "edge@device"  # what the hpc2edge.measure task adds
    real["kind"] = "default"
    fake = FakeEdge(store)(payload)
    assert differences(as_sent(fake), as_sent(real)) == []
    assert fake["format"] == real["format"]
    assert fake["backend_fingerprint"]["backend"] == fake["backend"]
    assert Outcome.from_result(as_sent(fake), "measure").ok
    assert Outcome.from_result(as_sent(real), "measure").ok


def test_fake_edge_without_a_reference_has_no_output_check(model_store) -> None:
    store, key = model_store
    payload = {**measure_payload(key, [1]), "reference": None}
    backend = get_backend("onnxruntime", intra_op_threads=1)
    real = measure_request(payload, fetch=store.get, backend_for=lambda _name: backend)
    assert real["output_check"] is None and FakeEdge(store)(payload)["output_check"] is None


def _declared(tp: Any, value: Any) -> bool:
    """Whether ``value`` is of the declared field type ``tp`` (the few types TrainResult uses)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_declared(arg, value) for arg in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(tp)
        return isinstance(value, list) and all(_declared(item, v) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True  # a nested record (SplitMetrics): None in both here


def test_fake_trainer_answers_like_train_request(tmp_path: Path, monkeypatch) -> None:
    from hpc2edge.training import launcher

    paths = make_tiny_data(tmp_path / "data")
    request = tiny_request(paths, trial_key="doubles", epochs=2)
    fake = FakeTrainer()(request)
    # Every field the trainer reports, of the type TrainResult declares.
    hints = typing.get_type_hints(TrainResult)
    for f in fields(TrainResult):
        assert f.name in fake, f"{f.name}: missing from the fake"
        assert _declared(hints[f.name], fake[f.name]), (f.name, fake[f.name])
    assert fake["epochs_run"] == len(fake["val_mse_per_epoch"]) == len(fake["train_loss_per_epoch"])
    # The real envelope around the report the training child would give.
    launched: list[Any] = []

    def child_reports(req, run_dir, **kwargs):
        launched.append(req)
        return TrainResult.from_json(fake)

    monkeypatch.setattr(launcher, "launch", child_reports)
    from hpc2edge.training.service import train_request

    real = train_request(request, state_dir=tmp_path / "state")
    assert launched, "train_request stopped before the training"
    assert real["status"] == "ok", real["error"]
    real["worker"] = "train@node"  # what the hpc2edge.train task adds
    assert differences(as_sent(fake), as_sent(real)) == []
    assert set(fake) == set(real)
    assert fake["format"] == real["format"] and fake["trial_key"] == real["trial_key"]
    assert Outcome.from_result(as_sent(fake), "train").ok
