"""``hpc2edge.measure`` through the real TLS broker and the real edge worker (ONNX Runtime, CPU).

The model travels by artifact key (the orchestrator stores it in Redis; the edge user may only
read it); the result comes back as JSON with statistics, or with a typed error, and the worker
keeps serving after bad input.
"""

from __future__ import annotations

import pytest

from hpc2edge.latency.base import reference_input
from hpc2edge.store.artifacts import RedisArtifactStore
from hpc2edge.transport import broker
from hpc2edge.transport.app import make_app

from ..support.onnx_models import tiny_model

pytestmark = pytest.mark.integration

SHAPE = [1, 4, 8, 8]
MODEL = tiny_model(tuple(SHAPE), seed=2)
QUICK = {
    "warmup_min_s": 0.02,
    "warmup_min_runs": 2,
    "min_runs": 10,
    "min_time_s": 0.02,
    "max_runs": 200,
    "max_time_s": 2.0,
    "target_rel_ci": 0.05,
}


@pytest.fixture(scope="module")
def orchestrator(broker_stack):
    app = make_app(broker_stack.settings)
    client = broker.client(broker_stack.settings)
    yield app, RedisArtifactStore(client)
    client.close()
    app.close()


def _measure(app, request, timeout=60):
    result = app.send_task("hpc2edge.measure", args=[request])  # routed to "edge" by name
    try:
        return result.get(timeout=timeout)
    finally:
        result.forget()


def _good_request(key):
    ref = MODEL.reference(reference_input(SHAPE, 1, 9)).ravel().tolist()
    return {
        "arch_id": "tiny-2",
        "artifact_key": key,
        "input_shape": SHAPE,
        "batch_sizes": [1, 4],
        "precision": "fp32",
        "protocol": QUICK,
        "reference": {"seed": 9, "outputs": ref},
    }


def test_measure_through_the_broker(broker_stack, workers, orchestrator):
    app, store = orchestrator
    key = store.put(MODEL.onnx_bytes)
    result = _measure(app, _good_request(key))
    assert result["status"] == "ok", result["error"]
    assert result["worker"] == "edge@test"
    assert result["backend"] == "onnxruntime"
    assert result["output_check"]["ok"]
    assert [b["batch_size"] for b in result["batches"]] == [1, 4]
    assert result["latency_ms_p50"]["1"] > 0


def test_bad_input_gives_typed_errors_and_the_worker_keeps_serving(
    broker_stack, workers, orchestrator
):
    app, store = orchestrator
    good = store.put(MODEL.onnx_bytes)
    corrupt = store.put(b"corrupt onnx bytes " * 8)
    with broker.client(broker_stack.as_role("admin")) as admin:
        tampered = store.put(tiny_model(tuple(SHAPE), seed=3).onnx_bytes)
        admin.set(store.redis_key(tampered), b"tampered in transit")
    cases = [
        (_good_request(corrupt), "MeasurementError"),
        (_good_request(tampered), "ArtifactCorrupt"),
        (_good_request("sha256:" + "f" * 64), "ArtifactNotFound"),
        ({**_good_request(good), "precision": "fp7"}, "ValueError"),
        (
            {**_good_request(good), "reference": {"seed": 9, "outputs": [5.0, 5.0]}},
            "OutputMismatch",
        ),
        ({"arch_id": ["not", "a", "string"]}, "ValueError"),
        ({**_good_request(good), "arch_id": "x" * 100_000}, "ValueError"),
    ]
    for request, expected in cases:
        result = _measure(app, request)
        assert result["status"] == "error"
        assert result["error"]["type"] == expected, result["error"]
    # A payload that is not even a JSON object.
    assert _measure(app, "a plain string")["error"]["type"] == "ValueError"
    # Still serving:
    assert _measure(app, _good_request(good))["status"] == "ok"


def test_edge_cannot_write_artifacts(broker_stack):
    from hpc2edge.errors import BrokerError

    with broker.client(broker_stack.as_role("edge")) as edge_client, pytest.raises(BrokerError):
        RedisArtifactStore(edge_client).put(b"a model the edge made up")
