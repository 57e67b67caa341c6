"""``measure_request``: requests in, LatencyResults out; bad input becomes a typed error result."""

from __future__ import annotations

import json

import pytest

from hpc2edge.latency import get_backend
from hpc2edge.latency.base import reference_input
from hpc2edge.latency.service import measure_request
from hpc2edge.store.artifacts import DirectoryArtifactStore

from ..support.onnx_models import tiny_model

pytestmark = pytest.mark.unit

SHAPE = [1, 4, 8, 8]
MODEL = tiny_model(tuple(SHAPE))
QUICK = {
    "warmup_min_s": 0.02,
    "warmup_min_runs": 2,
    "min_runs": 10,
    "min_time_s": 0.02,
    "max_runs": 200,
    "max_time_s": 2.0,
    "target_rel_ci": 0.05,
}


@pytest.fixture
def store(tmp_path):
    return DirectoryArtifactStore(tmp_path / "artifacts", max_bytes=1 << 20)


def _request(key, **over):
    ref = MODEL.reference(reference_input(SHAPE, 1, 5)).ravel().tolist()
    req = {
        "arch_id": "tiny",
        "artifact_key": key,
        "input_shape": SHAPE,
        "batch_sizes": [1, 2],
        "precision": "fp32",
        "protocol": QUICK,
        "reference": {"seed": 5, "outputs": ref},
    }
    req.update(over)
    return req


def _run(store, request):
    backend = get_backend("onnxruntime", intra_op_threads=1)
    return measure_request(request, fetch=store.get, backend_for=lambda name: backend)


def test_a_good_request_gives_a_full_result(store):
    key = store.put(MODEL.onnx_bytes)
    result = _run(store, _request(key))
    assert result["status"] == "ok", result.get("error")
    assert result["error"] is None
    assert result["backend"] == "onnxruntime" and result["precision"] == "fp32"
    assert result["output_check"]["ok"] and result["output_check"]["max_abs_error"] < 1e-4
    assert [b["batch_size"] for b in result["batches"]] == [1, 2]
    for b in result["batches"]:
        for series in ("compute", "end_to_end"):
            stats = b[series]["stats"]
            assert stats["n"] >= 10 and len(stats["samples_ms"]) == stats["n"]
    assert set(result["latency_ms_p50"]) == {"1", "2"}
    assert result["onnx_sha256"] == key.removeprefix("sha256:")
    assert "hostname" in result["device"]
    json.dumps(result)  # travels as JSON


def test_samples_can_be_left_out(store):
    key = store.put(MODEL.onnx_bytes)
    result = _run(store, _request(key, keep_samples=False, batch_sizes=[1]))
    assert result["batches"][0]["compute"]["stats"]["samples_ms"] == []


def _error(result):
    assert result["status"] == "error", result
    return result["error"]["type"], result["error"]["message"]


def test_corrupt_onnx_is_a_measurement_error(store):
    key = store.put(b"this is not an onnx model" * 4)
    kind, message = _error(_run(store, _request(key)))
    assert kind == "MeasurementError" and "cannot load" in message


def test_checksum_mismatch_is_reported(store):
    key = store.put(MODEL.onnx_bytes)
    path = store.path_for(key)
    path.write_bytes(MODEL.onnx_bytes[:-1] + b"\x00")  # bit rot on the device's disk
    kind, _ = _error(_run(store, _request(key)))
    assert kind == "ArtifactCorrupt"


def test_missing_artifact(store):
    kind, _ = _error(_run(store, _request("sha256:" + "0" * 64)))
    assert kind == "ArtifactNotFound"


def test_blob_over_the_devices_cap(tmp_path):
    writer = DirectoryArtifactStore(tmp_path / "shared", max_bytes=1 << 20)
    device = DirectoryArtifactStore(tmp_path / "shared", max_bytes=100)
    key = writer.put(MODEL.onnx_bytes)  # stored by the orchestrator, too big for this device
    kind, message = _error(_run(device, _request(key)))
    assert kind == "ArtifactTooLarge" and "cap" in message


def test_unknown_precision(store):
    key = store.put(MODEL.onnx_bytes)
    kind, message = _error(_run(store, _request(key, precision="fp8")))
    assert kind == "ValueError" and "precision" in message


def test_outputs_that_disagree_with_the_reference(store):
    key = store.put(MODEL.onnx_bytes)
    wrong = _request(key)
    wrong["reference"]["outputs"] = [v + 1.0 for v in wrong["reference"]["outputs"]]
    kind, message = _error(_run(store, wrong))
    assert kind == "OutputMismatch" and "fp32" in message


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        "text",
        {"arch_id": "x"},
        {"arch_id": 7, "artifact_key": "sha256:00", "input_shape": [1], "batch_sizes": [1]},
        {"arch_id": "x", "artifact_key": "md5:00", "input_shape": [1, 2], "batch_sizes": [1]},
        {"arch_id": "x", "artifact_key": "sha256:00", "input_shape": [0, 2], "batch_sizes": [1]},
        {"arch_id": "x", "artifact_key": "sha256:00", "input_shape": [1, 2], "batch_sizes": [True]},
        {
            "arch_id": "x",
            "artifact_key": "sha256:00",
            "input_shape": [1, 2],
            "batch_sizes": [10**9],
        },
        {
            "arch_id": "x" * 10_000,
            "artifact_key": "sha256:00",
            "input_shape": [1],
            "batch_sizes": [1],
        },
        {
            "arch_id": "x",
            "artifact_key": "sha256:00",
            "input_shape": [1],
            "batch_sizes": [1],
            "protocol": {"min_runs": -1},
        },
        {
            "arch_id": "x",
            "artifact_key": "sha256:00",
            "input_shape": [1],
            "batch_sizes": [1],
            "evil": "__import__('os')",
        },
    ],
)
def test_malformed_requests_are_typed_errors(store, bad):
    kind, message = _error(_run(store, bad))
    assert kind == "ValueError"
    assert len(message) <= 2000


def test_an_error_lists_every_problem(store):
    _, message = _error(
        _run(
            store,
            {
                "arch_id": 1,
                "artifact_key": 2,
                "input_shape": "x",
                "batch_sizes": None,
                "precision": "fp8",
            },
        )
    )
    for field in ("arch_id", "artifact_key", "input_shape", "batch_sizes", "precision"):
        assert field in message


def test_a_protocol_that_could_outlast_the_time_limit_is_refused(store):
    key = store.put(MODEL.onnx_bytes)
    slow = {**QUICK, "max_time_s": 600.0}
    backend = get_backend("onnxruntime", intra_op_threads=1)
    result = measure_request(
        _request(key, protocol=slow),
        fetch=store.get,
        backend_for=lambda name: backend,
        time_limit_s=1800,
    )
    kind, message = _error(result)
    assert kind == "ValueError" and "time limit" in message


def test_an_input_too_large_for_the_device_is_refused_before_allocating(store):
    key = store.put(MODEL.onnx_bytes)
    backend = get_backend("onnxruntime", intra_op_threads=1)
    result = measure_request(
        _request(key, batch_sizes=[4096]),
        fetch=store.get,
        backend_for=lambda name: backend,
        max_input_bytes=1 << 20,
    )
    kind, message = _error(result)
    assert kind == "ValueError" and "MiB" in message


@pytest.mark.parametrize(
    "bad",
    [
        {"max_time_s": float("nan")},
        {"min_runs": 2.5},
        {"warmup_min_s": "1"},
        {"max_time_s": float("inf")},
    ],
)
def test_non_finite_or_mistyped_protocol_values_are_refused(store, bad):
    key = store.put(MODEL.onnx_bytes)
    kind, _ = _error(_run(store, _request(key, protocol={**QUICK, **bad})))
    assert kind == "ValueError"
