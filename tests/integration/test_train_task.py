"""``hpc2edge.train`` through the real TLS broker and the real ``-Q train`` worker (role hpc).

The worker trains in a child process and returns the same numbers, bit for bit, as the same
request trained here; a redelivered trial comes back from the worker's result store; bad input
and a diverging training come back as typed errors, and the worker serves the next task.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hpc2edge.testing.training import TINY_SPEC, make_tiny_data, tiny_request
from hpc2edge.training.service import train_request
from hpc2edge.transport import broker
from hpc2edge.transport.app import make_app

pytestmark = pytest.mark.integration

TIMEOUT_S = 180


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("train-task-data"))


@pytest.fixture(scope="module")
def app(broker_stack):
    app = make_app(broker_stack.settings)
    yield app
    app.close()


def _train(app, request):
    result = app.send_task("hpc2edge.train", args=[request])  # routed to "train" by name
    try:
        return result.get(timeout=TIMEOUT_S)
    finally:
        result.forget()


def test_train_through_the_broker_matches_a_local_run(broker_stack, workers, app, data, tmp_path):
    request = tiny_request(data, trial_key="it-train-1")
    remote = _train(app, request)
    assert remote["status"] == "ok", remote["error"]
    assert remote["worker"] == "train@test"
    assert remote["engine"] == "single" and remote["world_size"] == 1
    assert remote["val_mse"] < remote["val_mse_constant"]
    local = train_request(request, state_dir=tmp_path)
    for key in ("val_mse", "val_mse_per_epoch", "train_loss_per_epoch", "checkpoint_sha256"):
        assert remote[key] == local[key], key
    # The checkpoint lives on the worker's node, in its state dir.
    assert remote["checkpoint_path"].startswith(str(broker_stack.state_dir.resolve()))

    again = _train(app, request)  # what a redelivery after a lost worker would do
    assert again["cached"] is True and again["val_mse"] == remote["val_mse"]


def test_failures_are_typed_errors_and_the_worker_keeps_serving(workers, app, data):
    bad_spec = {**TINY_SPEC, "params": {**TINY_SPEC["params"], "channels": [7]}}
    cases = [
        ({**tiny_request(data, trial_key="it-bad"), "spec": bad_spec}, "ValueError"),
        (tiny_request(data, trial_key="it-nan", lr=1e30), "TrainingError"),
        (tiny_request(["/nowhere/C027.hdf5"], trial_key="it-nodata"), "DataError"),
        ("not a request", "ValueError"),
    ]
    for request, expected in cases:
        result = _train(app, request)
        assert result["status"] == "error"
        assert result["error"]["type"] == expected, result["error"]
        assert result["worker"] == "train@test"
    ok = _train(app, tiny_request(data, trial_key="it-after-errors", epochs=1))
    assert ok["status"] == "ok", ok["error"]


def test_malformed_and_corrupt_input_is_refused_and_nothing_is_recorded(
    broker_stack, workers, app, data, tmp_path
):
    """Wrong types, missing fields, oversized fields, a corrupt and a truncated HDF5 file: typed
    errors, no result recorded for those trial keys, and the worker trains the next request."""
    from hpc2edge.training.service import RESULTS_DIR, ResultStore

    garbage = tmp_path / "C027.hdf5"
    garbage.write_bytes(b"\x89HDF\r\n\x1a\n" + b"not really hdf5 " * 64)
    truncated = tmp_path / "C028.hdf5"
    whole = Path(data[0]).read_bytes()
    truncated.write_bytes(whole[: len(whole) // 3])
    base = tiny_request(data, trial_key="bad-base")
    no_spec = {k: v for k, v in base.items() if k != "spec"}
    cases = {
        "bad-types": ({**base, "epochs": "two", "seed": -1}, "ValueError"),
        "bad-missing": (no_spec, "ValueError"),
        # Oversized, but under the intake's message limit: the request's own check answers.
        "bad-oversized": ({**base, "space": "s" * 100_000}, "ValueError"),
        "bad-hdf5": (tiny_request([garbage]), "DataError"),
        "bad-truncated": (tiny_request([truncated]), "DataError"),
    }
    for key, (request, _) in cases.items():
        request["trial_key"] = key
    for key, (request, expected) in cases.items():
        result = _train(app, request)
        assert result["status"] == "error", key
        assert result["error"]["type"] == expected, (key, result["error"])
    store = ResultStore(broker_stack.state_dir / RESULTS_DIR)
    assert all(store.get(key) is None for key in cases), "a failed request left a record"
    # Over the intake's message limit (256 KiB): refused before parsing and dead-lettered, so
    # no result at all; the worker serves on.
    from hpc2edge.transport import deadletters

    # (Refused before it is parsed, its record names no task id: found by its size.)
    huge = app.send_task("hpc2edge.train", args=[{**base, "space": "s" * 1_000_000}])
    deadline = time.monotonic() + 60
    with broker.client(broker_stack.settings) as client:
        while not any(
            d.size_bytes > 1_000_000 and "limit" in d.reason
            for d in deadletters.read(client, ["train"])
        ):
            assert time.monotonic() < deadline, "the oversized message was not dead-lettered"
            time.sleep(0.2)
    app.backend.remove_pending_result(huge)
    assert app.AsyncResult(huge.id).state == "PENDING"
    ok = _train(app, tiny_request(data, trial_key="bad-then-good", epochs=1))
    assert ok["status"] == "ok", ok["error"]
    assert store.get("bad-then-good") is not None
