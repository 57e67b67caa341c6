"""Hostile input over the real TLS broker and real workers: nothing a role can write stops a
worker, and nothing a worker role can write is taken by the orchestrator as a result.

Each case is sent as the role that could send it (raw Redis commands through that role's own
ACL user): ``LPUSH`` of a broken kombu envelope into ``edge`` as ``edge`` and into ``train`` as
``hpc``, ``PUBLISH`` onto the pidbox as every role, result keys ``SET`` as ``edge``. After each,
the worker process is alive and answers ``hpc2edge.ping`` on its queue within 10 s, the bad
message is recorded in ``hpc2edge:dead:<queue>`` (read as the orchestrator) and the queue is
empty: nothing was re-queued.

The unsigned cases reuse the session's ``workers`` (``edge@test``, solo pool; ``train@test``);
the signed ones, at the end of the module, run on a broker and an edge worker of their own.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from hpc2edge.ops import localbroker
from hpc2edge.pki import ca
from hpc2edge.roles import ROLE_OF_QUEUE
from hpc2edge.search.dispatch import REJECTED, CeleryDispatcher
from hpc2edge.transport import broker, deadletters, intake, probes, results, signing, taskids
from hpc2edge.transport.app import Hpc2EdgeCelery, make_app
from hpc2edge.util import procs
from tests.conftest import Stack, _require_redis_server, make_settings, start_worker, wait_ready
from tests.support import hostile

pytestmark = pytest.mark.integration

DEAD_LETTER_WAIT_S = 60.0  # a bound on polling (a loaded 2-core CI), not a wait


@pytest.fixture(scope="module")
def app(broker_stack: Stack) -> Iterator[Hpc2EdgeCelery]:
    """The orchestrator's app: builds the envelopes, reads results."""
    a = make_app(broker_stack.settings)
    try:
        yield a
    finally:
        a.close()


def _record(workers: Any, queue: str) -> procs.ProcRecord:
    return workers.edge if queue == "edge" else workers.train


def _log_tail(record: procs.ProcRecord, lines: int = 30) -> str:
    return procs.tail(record.log, lines)


def _dead_count(stack_: Stack, queue: str) -> int:
    with broker.client(stack_.settings) as client:
        return int(client.llen(deadletters.key(queue)))


def _wait_dead_letter(
    stack_: Stack, queue: str, before: int, record: procs.ProcRecord | None = None
) -> dict[str, Any]:
    """The newest dead letter of ``queue`` once there are more than ``before`` (as orchestrator)."""
    deadline = time.monotonic() + DEAD_LETTER_WAIT_S
    with broker.client(stack_.settings) as client:
        while time.monotonic() < deadline:
            if int(client.llen(deadletters.key(queue))) > before:
                letter: dict[str, Any] = json.loads(client.lindex(deadletters.key(queue), 0))
                return letter
            time.sleep(0.05)
    tail = f"; worker log ends:\n{_log_tail(record)}" if record else ""
    pytest.fail(f"no dead letter on {queue!r} within {DEAD_LETTER_WAIT_S:g} s{tail}")


def _assert_serving(stack_: Stack, record: procs.ProcRecord, queue: str) -> None:
    """Alive, answering a ping within 10 s, and nothing left in (or put back into) the queue."""
    assert procs.alive(record), f"{record.name} died; its log ends:\n{_log_tail(record)}"
    answer = probes.ping(stack_.settings, queue, timeout_s=10)
    assert answer["hostname"] == record.name
    role = ROLE_OF_QUEUE[queue]
    with broker.client(stack_.settings) as client:
        assert client.llen(queue) == 0, "a refused message went back into the queue"
        deadline = time.monotonic() + 30  # polled: acknowledging is quick, a loaded CI is not
        while client.hlen(f"hpc2edge:unacked:{role}") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.hlen(f"hpc2edge:unacked:{role}") == 0, "a message is still unacknowledged"


def _push(stack_: Stack, queue: str, raw: str | bytes) -> None:
    """LPUSH ``raw`` onto ``queue`` as the role that consumes it (the account that may)."""
    with broker.client(stack_.as_role(ROLE_OF_QUEUE[queue])) as client:
        client.lpush(queue, raw)


# --- 1. the pidbox: nobody but admin may publish, and no worker listens -------------------------

PIDBOX = "/0.celery.pidbox"


@pytest.mark.parametrize("payload", ["[]", "42"])
@pytest.mark.parametrize("role", ["edge", "hpc", "monitor"])
def test_pidbox_publish_is_refused_by_the_acl(broker_stack, workers, role, payload):
    with (
        broker.client(broker_stack.as_role(role)) as client,
        pytest.raises(redis.exceptions.NoPermissionError),
    ):
        client.publish(PIDBOX, payload)
    _assert_serving(broker_stack, workers.edge, "edge")


@pytest.mark.parametrize("payload", ["[]", "42", '{"method": "shutdown", "arguments": {}}'])
def test_pidbox_publish_as_admin_reaches_no_worker(broker_stack, workers, payload):
    with broker.client(broker_stack.as_role("admin")) as client:
        receivers = client.publish(PIDBOX, payload)
    assert receivers == 0, "a worker subscribes to the pidbox: remote control is on"
    for queue in ("edge", "train"):
        _assert_serving(broker_stack, _record(workers, queue), queue)


@pytest.mark.parametrize("role", ["edge", "hpc"])
def test_garbage_on_the_event_channel_stops_no_worker(broker_stack, workers, role):
    # The event channel is granted to the worker roles (they send task events); gossip is off,
    # so no worker parses what arrives there.
    with broker.client(broker_stack.as_role(role)) as client:
        client.publish("/0.celeryev/worker.heartbeat", "[]")
        client.publish("/0.celeryev/worker.heartbeat", "42")
    for queue in ("edge", "train"):
        _assert_serving(broker_stack, _record(workers, queue), queue)


# --- 2. malformed envelopes: dead-lettered, never run, never re-queued ---------------------------


@pytest.mark.parametrize("case", list(hostile.MALFORMED))
@pytest.mark.parametrize("queue", ["edge", "train"])
def test_malformed_envelope_is_dead_lettered_and_the_worker_serves_on(
    broker_stack, workers, app, queue, case
):
    record = _record(workers, queue)
    raw = hostile.malformed(app, queue, case)
    try:
        task_id = json.loads(raw)["headers"]["id"]
    except (ValueError, TypeError, KeyError, RecursionError):
        task_id = None
    before = _dead_count(broker_stack, queue)
    _push(broker_stack, queue, raw)
    letter = _wait_dead_letter(broker_stack, queue, before, record)
    assert letter["queue"] == queue
    assert letter["size_bytes"] == len(raw.encode())
    assert hostile.REASONS[case] in letter["reason"], letter
    assert letter["worker"] == record.name
    assert len(letter["excerpt"]) <= 600
    if isinstance(task_id, str):
        # An oversized message is refused before it is parsed: its id is not known.
        assert letter["task_id"] == (None if case == "oversize" else task_id)
        with broker.client(broker_stack.settings) as client:
            assert not client.exists(f"celery-task-meta-{task_id}"), "the refused task ran"
    _assert_serving(broker_stack, record, queue)


def test_the_dead_letters_command_shows_a_refused_message(broker_stack, workers, app):
    import subprocess
    import sys

    from tests.conftest import worker_env

    record = _record(workers, "edge")
    raw = hostile.malformed(app, "edge", "timelimit-string")
    task_id = json.loads(raw)["headers"]["id"]
    before = _dead_count(broker_stack, "edge")
    _push(broker_stack, "edge", raw)
    _wait_dead_letter(broker_stack, "edge", before, record)
    env = worker_env(broker_stack, "orchestrator")
    argv = [sys.executable, "-m", "hpc2edge.cli", "dead-letters", "--queue", "edge"]
    text = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=True)
    line = next(x for x in text.stdout.splitlines() if task_id in x)
    assert "timelimit" in line and record.name in line
    as_json = subprocess.run(
        [*argv, "--json"], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    (mine,) = [d for d in json.loads(as_json.stdout) if d["task_id"] == task_id]
    assert mine["queue"] == "edge" and "timelimit" in mine["reason"]
    # The edge role reaches only its own queue's records; asking for train's is one clear line.
    edge_env = worker_env(broker_stack, "edge")
    train = [*argv[:-1], "train"]
    denied = subprocess.run(train, env=edge_env, capture_output=True, text=True, timeout=60)
    assert denied.returncode != 0 and "Traceback" not in denied.stderr, denied.stderr
    assert "dead letters" in denied.stderr


def test_a_planted_unacked_entry_does_not_stop_a_starting_worker(broker_stack, workers):
    # Every edge device may write the edge role's unacked hash. kombu restores timed-out
    # entries when a worker starts; a malformed one used to end it there, at every start.
    tag = "planted-tag"
    with broker.client(broker_stack.as_role("edge")) as client:
        client.hset("hpc2edge:unacked:edge", tag, "x")
        client.zadd("hpc2edge:unacked:edge:index", {tag: 0})  # long past visibility_timeout
    before = _dead_count(broker_stack, "edge")
    record = start_worker(broker_stack, "edge", "edge-unacked@test")
    try:
        wait_ready(broker_stack, "edge", record)
        letter = _wait_dead_letter(broker_stack, "edge", before, record)
        assert "unacked" in letter["reason"]
        with broker.client(broker_stack.settings) as client:
            assert not client.hexists("hpc2edge:unacked:edge", tag)
            assert client.zscore("hpc2edge:unacked:edge:index", tag) is None
        assert procs.alive(record)
    finally:
        procs.stop(record)
    _assert_serving(broker_stack, workers.edge, "edge")


# --- 3. a poison pill: run at most once more after a redelivery, then quarantined --------------


@pytest.mark.parametrize("queue", ["edge", "train"])
def test_a_message_redelivered_twice_is_quarantined(broker_stack, workers, app, queue, tmp_path):
    record = _record(workers, queue)
    target = tmp_path / f"poison-{queue}.txt"
    env = hostile.envelope(app, queue, "tests.touch", args=[str(target)])
    env["headers"]["redelivered"] = True
    env["properties"]["delivery_info"]["redelivered"] = True
    task_id = env["headers"]["id"]
    raw = json.dumps(env)
    counter = deadletters.key(queue) + intake.REDELIVERIES_SUFFIX

    # First redelivery: runs once more.
    _push(broker_stack, queue, raw)
    deadline = time.monotonic() + DEAD_LETTER_WAIT_S
    while not target.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert target.exists(), f"the first redelivery did not run; log:\n{_log_tail(record)}"
    _assert_serving(broker_stack, record, queue)
    target.unlink()

    # Second redelivery of the same message: quarantined, not run.
    before = _dead_count(broker_stack, queue)
    _push(broker_stack, queue, raw)
    letter = _wait_dead_letter(broker_stack, queue, before, record)
    assert "quarantined" in letter["reason"], letter
    assert letter["task_id"] == task_id and letter["task"] == "tests.touch"
    _assert_serving(broker_stack, record, queue)
    assert not target.exists(), "the quarantined message ran"
    with broker.client(broker_stack.settings) as client:
        assert client.hget(counter, task_id) == b"2"
        assert 0 < client.ttl(counter) <= deadletters.TTL_S


# --- 4. results a worker role cannot plant --------------------------------------------------------


def test_edge_cannot_write_a_training_result(broker_stack, workers):
    train_id = taskids.new("train")
    with broker.client(broker_stack.as_role("edge")) as client:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.set(f"celery-task-meta-{train_id}", json.dumps({"status": "SUCCESS"}))
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.publish(f"celery-task-meta-{train_id}", "{}")
        # The queue itself and the hpc role's keys are not edge's either.
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.lpush("train", "x")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.lpush(deadletters.key("train"), "x")


def _failure(task_id: str, marker: Path, message_chars: int = 0) -> dict[str, Any]:
    message = [f"touch {marker}"] + (["m" * message_chars] if message_chars else [])
    return {
        "status": "FAILURE",
        "result": {"exc_type": "system", "exc_module": "os", "exc_message": message},
        "traceback": None,
        "children": [],
        "task_id": task_id,
    }


def _planted(kind: str, task_id: str, marker: Path) -> bytes:
    if kind == "garbage":
        return b"\x00\xff not a result {"
    if kind == "status-ok":
        return json.dumps({"status": "ok"}).encode()
    if kind == "json-list":
        return b"[1, 2]"
    if kind == "failure-os-system":
        return json.dumps(_failure(task_id, marker)).encode()
    if kind == "failure-long-message":
        return json.dumps(_failure(task_id, marker, 200_000)).encode()
    if kind == "compressed":
        return results.COMPRESSED_PAYLOAD_MAGIC + b"x\x9c" + b"\0" * 64
    if kind == "oversize":
        return json.dumps(
            {"status": "FAILURE", "result": "x" * (results.MAX_RESULT_BYTES + 1)}
        ).encode()
    if kind == "unknown-state":
        return json.dumps({"status": "PWNED", "result": None, "task_id": task_id}).encode()
    raise AssertionError(kind)


PLANTED = [
    "garbage",
    "status-ok",
    "json-list",
    "failure-os-system",
    "failure-long-message",
    "compressed",
    "oversize",
    "unknown-state",
]


def _stored_answer(app: Hpc2EdgeCelery, task_id: str, timeout_s: float = 15.0) -> Any:
    """The SUCCESS result now stored under ``task_id``, read raw and checked, or None."""
    backend = app.backend
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        raw = backend.get(backend.get_key_for_task(task_id))
        try:
            stored = results.parse(backend.decode(raw), task_id) if raw is not None else None
        except Exception:
            stored = None
        if stored is not None and stored.state == "SUCCESS":
            return stored.result
        time.sleep(0.1)
    return None


@pytest.mark.parametrize("kind", PLANTED)
def test_a_planted_result_is_rejected_by_the_poll_and_overwritten_by_the_worker(
    broker_stack, workers, app, tmp_path, monkeypatch, kind
):
    task_id = taskids.new("edge")
    called: list[Any] = []
    # Celery's own reader would import the named class and call it: os.system("touch ...").
    monkeypatch.setattr(os, "system", lambda *a: called.append(a) or 0)
    marker = tmp_path / "pwned"
    with broker.client(broker_stack.as_role("edge")) as client:
        client.set(f"celery-task-meta-{task_id}", _planted(kind, task_id, marker))
    dispatcher = CeleryDispatcher(broker_stack.settings)
    try:
        outcome = dispatcher.poll(task_id)
    finally:
        dispatcher.close()
    assert outcome is not None and not outcome.ok
    if kind.startswith("failure-"):
        # A failure the edge could report anyway: by name, bounded, nothing imported from it.
        assert outcome.error["type"] == "system"
        assert len(outcome.error["message"]) <= results.MAX_ERROR_CHARS
        assert not outcome.rejected
    else:
        assert outcome.rejected and outcome.error["type"] == REJECTED, outcome
        assert len(outcome.error["message"]) <= 2000
    assert not marker.exists() and not called

    # The real worker runs a task under the planted id, answers, and its result replaces it.
    record = workers.edge
    sent = app.send_task("hpc2edge.ping", queue="edge", task_id=task_id, expires=30)
    sent.backend.remove_pending_result(sent)
    answer = _stored_answer(app, task_id)
    assert answer is not None and answer["hostname"] == record.name, (
        f"the worker did not overwrite the planted result; log:\n{_log_tail(record)}"
    )
    _assert_serving(broker_stack, record, "edge")


def test_a_planted_success_record_is_rejected_by_the_poll(broker_stack, workers, app):
    # Malformed `status: ok` results of a measure task, each in a valid SUCCESS record.
    dispatcher = CeleryDispatcher(broker_stack.settings)
    try:
        for result in ({"status": "ok"}, {"status": "ok", "batches": "many"}, "ok", None, [1]):
            task_id = taskids.new("edge")
            meta = {"status": "SUCCESS", "result": result, "task_id": task_id, "children": []}
            with broker.client(broker_stack.as_role("edge")) as client:
                client.set(f"celery-task-meta-{task_id}", json.dumps(meta))
            outcome = dispatcher.poll(task_id)
            assert outcome is not None and outcome.rejected, (result, outcome)
        # A record copied from another task's key, and one naming no task.
        other = taskids.new("edge")
        for meta in (
            {"status": "SUCCESS", "result": {"status": "ok"}, "task_id": other},
            {"status": "SUCCESS", "result": {"status": "ok"}},
        ):
            task_id = taskids.new("edge")
            with broker.client(broker_stack.as_role("edge")) as client:
                client.set(f"celery-task-meta-{task_id}", json.dumps(meta))
            outcome = dispatcher.poll(task_id)
            assert outcome is not None and outcome.rejected, (meta, outcome)
    finally:
        dispatcher.close()
    _assert_serving(broker_stack, workers.edge, "edge")


def test_a_planted_success_record_is_overwritten_by_the_worker(broker_stack, workers, app):
    """A valid SUCCESS record planted under an id before its task runs (an edge device can read
    the ids of queued edge tasks with LRANGE): the worker's real result must replace it."""
    task_id = taskids.new("edge")
    meta = {"status": "SUCCESS", "result": {"status": "ok"}, "task_id": task_id, "children": []}
    with broker.client(broker_stack.as_role("edge")) as client:
        client.set(f"celery-task-meta-{task_id}", json.dumps(meta))
    sent = app.send_task("hpc2edge.ping", queue="edge", task_id=task_id, expires=30)
    sent.backend.remove_pending_result(sent)
    # The planted record reads as SUCCESS at once: wait for the worker's (bounded, loaded CI).
    deadline = time.monotonic() + 30
    answer = _stored_answer(app, task_id, timeout_s=1)
    while not (isinstance(answer, dict) and "hostname" in answer) and time.monotonic() < deadline:
        time.sleep(0.2)
        answer = _stored_answer(app, task_id, timeout_s=1)
    assert isinstance(answer, dict) and answer.get("hostname") == workers.edge.name, (
        f"the planted SUCCESS record {answer!r} was kept: Celery's backend never overwrites a "
        "SUCCESS (celery.backends.base._store_result)"
    )


# --- 5. a search whose measurement result is planted ------------------------------------------


@pytest.mark.slow
def test_a_search_survives_a_planted_measure_result(tmp_path):
    """A hostile edge device reads a queued measure task's id (``LRANGE edge``: the edge role may)
    and plants a malformed ``status: ok`` result under it before any worker answers. The
    orchestrator rejects it, sends the task again under a new id, and the trial completes."""
    pytest.importorskip("torch")
    pytest.importorskip("optuna")
    import threading

    from hpc2edge.search.run import run_search
    from hpc2edge.testing.training import make_tiny_data
    from tests.conftest import own_broker
    from tests.integration.test_search_e2e import OPTIONS

    data = tmp_path / "data"
    make_tiny_data(data)
    outcome: dict[str, Any] = {}
    with own_broker(tmp_path / "stack") as stack_:
        train = start_worker(stack_, "train", "train@planted")
        edge = None
        try:
            wait_ready(stack_, "train", train)

            def search() -> None:
                try:
                    outcome["summary"], outcome["study"] = run_search(
                        stack_.settings, study_name="planted", data=data, trials=1,
                        progress=False, storage_url=f"sqlite:///{tmp_path / 's.db'}",
                        store_url=f"sqlite:///{tmp_path / 'm.db'}", **{**OPTIONS, "parallel": 1},
                    )  # fmt: skip
                except BaseException as exc:
                    outcome["error"] = exc

            thread = threading.Thread(target=search, daemon=True)
            thread.start()
            planted = None
            deadline = time.monotonic() + 90
            with broker.client(stack_.as_role("edge")) as client:
                while planted is None and time.monotonic() < deadline and thread.is_alive():
                    for raw in client.lrange("edge", 0, -1):
                        headers = json.loads(raw)["headers"]
                        if headers["task"] == "hpc2edge.measure":
                            planted = headers["id"]
                    time.sleep(0.1)
                assert planted is not None, f"no measure task was queued: {outcome}"
                meta = {"status": "SUCCESS", "result": {"status": "ok"}, "task_id": planted}
                client.set(f"celery-task-meta-{planted}", json.dumps(meta))
            # Now a device comes up and serves the queue (the planted id's message included).
            edge = start_worker(stack_, "edge", "edge@planted")
            wait_ready(stack_, "edge", edge)
            thread.join(timeout=150)
            assert not thread.is_alive(), "the search did not finish"
            assert procs.alive(edge) and procs.alive(train)
        finally:
            for record in (edge, train):
                if record is not None:
                    procs.stop(record)
    assert "error" not in outcome, repr(outcome.get("error"))
    summary, study = outcome["summary"], outcome["study"]
    (trial,) = study.trials
    task = trial.user_attrs["measure_task"]
    assert task["id"] != planted and task["attempt"] >= 2, task
    assert summary["complete"] == 1, trial.user_attrs.get("reason")


# --- 6. with signing --------------------------------------------------------------------------

SIGNED_HOST = "edge@hostile-signed"


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, procs.ProcRecord]]:
    """A broker and one edge worker of their own, both sides with ``[security] sign = true``."""
    _require_redis_server()
    settings = make_settings(
        tmp_path_factory.mktemp("hostile-signed"), {"HPC2EDGE_SECURITY_SIGN": "true"}
    )
    assert settings.security.sign
    localbroker.start(settings)
    signed_stack = Stack(state_dir=settings.state_dir, settings=settings)
    worker = start_worker(signed_stack, "edge", SIGNED_HOST)
    try:
        wait_ready(signed_stack, "edge", worker)
        yield signed_stack, worker
    finally:
        procs.stop(worker)
        localbroker.stop(settings.state_dir)
        signing.reset()  # the auth serializers are process-wide: leave none to later tests


@pytest.fixture(scope="module")
def signed_app(signed) -> Iterator[Hpc2EdgeCelery]:
    a = make_app(signed[0].settings)
    try:
        yield a
    finally:
        a.close()


def test_signed_a_non_json_envelope_is_dead_lettered(signed, signed_app):
    stack_, worker = signed
    before = _dead_count(stack_, "edge")
    _push(stack_, "edge", "x")
    letter = _wait_dead_letter(stack_, "edge", before, worker)
    assert "not JSON" in letter["reason"]
    _assert_serving(stack_, worker, "edge")


def test_signed_a_replayed_body_with_a_bad_unsigned_header_is_dead_lettered(
    signed, signed_app, tmp_path
):
    stack_, worker = signed
    target = tmp_path / "replayed.txt"
    env = hostile.envelope(signed_app, "edge", "tests.touch", args=[str(target)])
    assert env["content-type"] == "application/data"  # signed by the orchestrator's key
    env["headers"]["timelimit"] = "x"  # headers are not covered by the signature
    before = _dead_count(stack_, "edge")
    _push(stack_, "edge", json.dumps(env))
    letter = _wait_dead_letter(stack_, "edge", before, worker)
    assert "timelimit" in letter["reason"] and letter["task_id"] == env["headers"]["id"]
    _assert_serving(stack_, worker, "edge")
    assert not target.exists()


def _signed_result(stack_: Stack, signer: str, task_id: str) -> bytes:
    from celery.security.certificate import Certificate
    from celery.security.key import PrivateKey
    from celery.security.serialization import SecureSerializer

    files = ca.signing_files(stack_.settings.tls.ca_cert.parent, signer)
    serializer = SecureSerializer(
        PrivateKey(files.key.read_text()),
        Certificate(files.cert.read_text()),
        None,
        signing.DIGEST,
        serializer=signing.INNER_SERIALIZER,
    )
    meta = {
        "status": "SUCCESS",
        "result": {"status": "ok", "val_mse": 0.001},
        "traceback": None,
        "children": [],
        "date_done": None,
        "task_id": task_id,
    }
    signed_bytes: bytes = serializer.serialize(meta)
    return signed_bytes


def test_signed_a_training_result_signed_with_the_edge_key_is_rejected(signed, signed_app):
    stack_, worker = signed
    forged_id, genuine_id = taskids.new("train"), taskids.new("train")
    with broker.client(stack_.as_role("hpc")) as client:
        client.set(f"celery-task-meta-{forged_id}", _signed_result(stack_, "edge", forged_id))
        # Control: the same record signed with the hpc role's key is a result.
        client.set(f"celery-task-meta-{genuine_id}", _signed_result(stack_, "hpc", genuine_id))
    dispatcher = CeleryDispatcher(stack_.settings)
    try:
        forged = dispatcher.poll(forged_id)
        genuine = dispatcher.poll(genuine_id)
    finally:
        dispatcher.close()
    assert forged is not None and forged.rejected, forged
    assert "edge" in forged.error["message"], forged.error
    assert genuine is not None and genuine.ok, genuine
    assert genuine.result["val_mse"] == 0.001
    _assert_serving(stack_, worker, "edge")


def test_signed_ping_still_answers(signed):
    assert probes.ping(signed[0].settings, "edge", timeout_s=10)["hostname"] == SIGNED_HOST
