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


# --- paired requests (a ``pair`` field: model B, timed in alternation with A) ------------------


def _table_pair(store, a_ms=2.0, b_ms=5.0):
    """Two models of a table backend: (backend, key of A, key of B); A at ``a_ms``, B at
    ``b_ms``, with a 0-4 % wobble that every block of five runs holds whole."""
    import hashlib

    from hpc2edge.latency.backends.table import Record, TableBackend

    def wobble(ms):
        return tuple(ms * (1 + 0.01 * (i % 5)) for i in range(60))

    records = []
    keys = []
    for data, ms in ((b"model A", a_ms), (b"model B", b_ms)):
        keys.append(store.put(data))
        sha = hashlib.sha256(data).hexdigest()
        records.append(Record(sha, "fp32", 1, wobble(ms), wobble(1.2 * ms), outputs=(0.5, -0.5)))
    return TableBackend(records), keys[0], keys[1]


def _paired_request(key_a, key_b, **pair_over):
    pair = {"arch_id": "base", "artifact_key": key_b, "input_shape": SHAPE, "reference": None}
    pair.update(pair_over)
    return {
        "arch_id": "member",
        "artifact_key": key_a,
        "input_shape": SHAPE,
        "batch_sizes": [1],
        "protocol": QUICK,
        "reference": None,
        "keep_samples": False,
        "pair": pair,
    }


def test_a_paired_request_on_the_table_backend_gives_the_recorded_ratio(store):
    backend, key_a, key_b = _table_pair(store)
    request = _paired_request(key_a, key_b, reference={"seed": 0, "outputs": [0.5, -0.5]})
    result = measure_request(request, fetch=store.get, backend_for=lambda _: backend)
    assert result["status"] == "ok", result["error"]
    # A's measurement as always ...
    assert result["arch_id"] == "member" and result["latency_ms_p50"]["1"] == pytest.approx(2.04)
    pair = result["pair"]
    # ... and B's, with the ratio B/A of each series.
    assert pair["arch_id"] == "base" and pair["onnx_sha256"] == key_b.removeprefix("sha256:")
    assert pair["output_check"]["ok"] and pair["latency_ms_p50"]["1"] == pytest.approx(5.1)
    (ratios,) = pair["ratios"]
    for series in ("compute", "end_to_end"):
        r = ratios[series]
        assert r["median"] == pytest.approx(2.5, rel=1e-12)
        assert r["ci95"][0] <= 2.5 <= r["ci95"][1] and r["ci_rel_half_width"] < 1e-9
        assert r["stopped_by"] == "converged" and r["pairs"] >= 6 and r["ratios"] == []
    assert pair["block_runs"] == 5 and pair["batches"][0]["compute"]["stats"]["samples_ms"] == []
    json.dumps(result)
    again = measure_request(request, fetch=store.get, backend_for=lambda _: backend)
    assert again["pair"] == pair and again["batches"] == result["batches"]  # deterministic


def test_a_paired_request_on_onnx_runtime_times_both_models(store):
    small = tiny_model(tuple(SHAPE))
    key_a = store.put(small.onnx_bytes)
    key_b = store.put(MODEL.onnx_bytes)  # the same network: a ratio near 1
    result = _run(store, _paired_request(key_a, key_b))
    assert result["status"] == "ok", result["error"]
    r = result["pair"]["ratios"][0]["compute"]
    assert 0.2 < r["median"] < 5 and r["pairs"] >= 6
    assert r["ci95"][0] <= r["median"] <= r["ci95"][1]


def _refused(result, *fields):
    kind, message = _error(result)
    assert kind == "ValueError" and len(message) <= 2000, message
    for field in fields:
        assert field in message, message
    return message


@pytest.mark.parametrize(
    ("pair", "named"),
    [
        ("text", "pair: expected an object"),
        ([1, 2], "pair: expected an object"),
        (7, "pair: expected an object"),
        ({"arch_id": ""}, "pair.arch_id"),
        ({"arch_id": 7}, "pair.arch_id"),
        ({"artifact_key": None}, "pair.artifact_key"),
        ({"artifact_key": "md5:" + "0" * 32}, "pair.artifact_key"),
        ({"artifact_key": "sha256:00"}, "pair.artifact_key"),
        ({"artifact_key": "sha256:" + "G" * 64}, "pair.artifact_key"),
        ({"artifact_key": "sha256:" + "0" * 64 + "/../../etc/passwd"}, "pair.artifact_key"),
        ({"input_shape": "1,4,8,8"}, "pair.input_shape"),
        ({"input_shape": [1, 4, 8, True]}, "pair.input_shape"),
        ({"input_shape": [1] * 100}, "pair.input_shape"),
        ({"input_shape": [1, 4, 8, 10**9]}, "pair.input_shape"),
        ({"arch_id": "x" * 100_000}, "pair.arch_id"),
        ({"reference": "yes"}, "pair.reference"),
        ({"reference": {"seed": 0, "outputs": [float("nan")]}}, "pair.reference"),
        ({"reference": {"seed": 0, "outputs": [0.0] * 100_000}}, "pair.reference"),
        ({"reference": {"seed": 10**400, "outputs": [1.0, 2.0]}}, "pair.reference: seed"),
        ({"reference": {"seed": -1, "outputs": [1.0, 2.0]}}, "pair.reference: seed"),
        ({"reference": {"seed": "0", "outputs": [1.0, 2.0]}}, "pair.reference: seed"),
        ({"evil": "__import__('os')"}, "pair.evil: unknown field"),
        ({"x" * 10_000: 1}, "unknown field"),
    ],
)
def test_a_malformed_pair_is_a_typed_error_and_the_worker_goes_on(store, pair, named):
    backend, key_a, key_b = _table_pair(store)
    request = _paired_request(key_a, key_b)
    request["pair"] = {**request["pair"], **pair} if isinstance(pair, dict) else pair
    result = measure_request(request, fetch=store.get, backend_for=lambda _: backend)
    _refused(result, named)
    # The same worker serves the next request.
    good = measure_request(
        _paired_request(key_a, key_b), fetch=store.get, backend_for=lambda _: backend
    )
    assert good["status"] == "ok", good["error"]


def test_every_problem_of_a_request_and_its_pair_is_listed_at_once(store):
    message = _refused(
        _run(store, {"arch_id": 1, "artifact_key": "sha256:00", "input_shape": [1],
                     "batch_sizes": [1], "pair": {"arch_id": "", "input_shape": None}}),
        "arch_id", "artifact_key", "pair.arch_id", "pair.artifact_key", "pair.input_shape",
    )  # fmt: skip
    assert message.count(";") >= 4


def test_a_missing_pair_artifact_is_a_typed_error_before_anything_is_prepared(store):
    backend, key_a, _ = _table_pair(store)
    prepared = []
    real_prepare = backend.prepare

    def prepare(*args, **kwargs):
        prepared.append(args)
        return real_prepare(*args, **kwargs)

    backend.prepare = prepare  # type: ignore[method-assign]
    result = measure_request(
        _paired_request(key_a, "sha256:" + "1" * 64),
        fetch=store.get,
        backend_for=lambda _: backend,
    )
    kind, _ = _error(result)
    assert kind == "ArtifactNotFound" and prepared == []


def test_a_pair_whose_outputs_disagree_is_an_output_mismatch_naming_the_pair(store):
    backend, key_a, key_b = _table_pair(store)
    request = _paired_request(key_a, key_b, reference={"seed": 0, "outputs": [9.0, 9.0]})
    kind, message = _error(measure_request(request, fetch=store.get, backend_for=lambda _: backend))
    assert kind == "OutputMismatch" and message.startswith("pair: ")


def test_a_pair_the_backend_cannot_run_is_a_measurement_error(store):
    backend, key_a, _ = _table_pair(store)
    key_b = store.put(b"a model the table never recorded")
    kind, message = _error(
        measure_request(
            _paired_request(key_a, key_b), fetch=store.get, backend_for=lambda _: backend
        )
    )
    assert kind == "MeasurementError" and "no recording" in message


def test_a_pair_doubles_the_time_the_budget_allows_for(store):
    backend, key_a, key_b = _table_pair(store)
    protocol = {**QUICK, "max_time_s": 100.0}  # one model: 2 x (0.02 + 200) s, fits 600 s
    single = {**_paired_request(key_a, key_b), "protocol": protocol, "pair": None}
    paired = {**single, "pair": _paired_request(key_a, key_b)["pair"]}
    run = {"fetch": store.get, "backend_for": lambda _: backend, "time_limit_s": 600}
    assert measure_request(single, **run)["status"] == "ok"
    _refused(measure_request(paired, **run), "time limit", "two models")


def test_a_pair_whose_input_is_over_the_devices_cap_is_refused(store):
    backend, key_a, key_b = _table_pair(store)
    request = _paired_request(key_a, key_b, input_shape=[1, 64, 256, 256])
    result = measure_request(
        request, fetch=store.get, backend_for=lambda _: backend, max_input_bytes=1 << 20
    )
    _refused(result, "MiB")
