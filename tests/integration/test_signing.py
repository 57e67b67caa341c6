"""Message signing (``security.sign``): a worker runs only what the orchestrator's key signed.

A broker of its own with one signed edge worker (the session's ``broker_stack`` and ``workers``
are unsigned). Bad messages are pushed the way an attacker holding a broker account would: raw
``LPUSH`` of kombu's envelope onto the ``edge`` list. Each refusal is proven by a file that the
task would have written, and by a correctly signed message pushed the same raw way that runs.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from celery.security.certificate import Certificate
from celery.security.key import PrivateKey
from celery.security.serialization import SecureSerializer
from kombu.serialization import dumps

from hpc2edge.errors import BrokerUnreachable
from hpc2edge.ops import localbroker, stack
from hpc2edge.pki import ca
from hpc2edge.search.dispatch import CeleryDispatcher
from hpc2edge.transport import broker, deadletters, probes, signing, taskids
from hpc2edge.transport.app import Hpc2EdgeCelery, make_app
from hpc2edge.util import procs
from tests.conftest import (
    Stack,
    _require_redis_server,
    make_settings,
    start_worker,
    wait_ready,
    worker_env,
)

pytestmark = pytest.mark.integration

HOSTNAME = "edge@signed"


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A broker and one edge worker, both sides with ``[security] sign = true``."""
    _require_redis_server()
    settings = make_settings(tmp_path_factory.mktemp("signed"), {"HPC2EDGE_SECURITY_SIGN": "true"})
    assert settings.security.sign
    localbroker.start(settings)
    signed_stack = Stack(state_dir=settings.state_dir, settings=settings)
    worker = start_worker(signed_stack, "edge", HOSTNAME)
    try:
        wait_ready(signed_stack, "edge", worker)
        yield signed_stack
    finally:
        procs.stop(worker)
        localbroker.stop(settings.state_dir)
        signing.reset()  # the auth serializers are process-wide: leave none to later tests


@pytest.fixture(scope="module")
def app(signed: Stack) -> Iterator[Hpc2EdgeCelery]:
    a = make_app(signed.settings)
    try:
        yield a
    finally:
        a.close()


def _refusal(stack_: Stack, task_id: str, timeout_s: float = 30.0) -> str:
    """The reason of the worker's dead letter for ``task_id`` ("" when there is none)."""
    deadline = time.monotonic() + timeout_s
    with broker.client(stack_.settings) as client:
        while True:
            for letter in deadletters.read(client, ["edge"], limit=1000):
                if letter.task_id == task_id:
                    return letter.reason
            if time.monotonic() > deadline:
                return ""
            time.sleep(0.2)


def _unsubscribe(result: Any) -> None:
    # A result never fulfilled stays subscribed; left to the garbage collector, it tries to
    # unsubscribe after the broker is gone.
    result.backend.remove_pending_result(result)


def _touch_message(app: Hpc2EdgeCelery, path: Path) -> tuple[str, Any]:
    """A ``tests.touch`` task message (headers, properties, body) with a fresh id."""
    task_id = taskids.new("edge")
    return task_id, app.amqp.as_task_v2(task_id, "tests.touch", args=[str(path)])


def _push_raw(stack_: Stack, message: Any, payload: bytes | str, content_type: str) -> None:
    """LPUSH kombu's Redis envelope of ``message`` with body ``payload`` onto ``edge``, as the
    orchestrator's ACL user (the account that may write the queue)."""
    body = payload.encode() if isinstance(payload, str) else payload
    envelope = {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": content_type,
        "headers": message.headers,
        "properties": {
            **message.properties,
            "body_encoding": "base64",
            "delivery_info": {"exchange": "edge", "routing_key": "edge"},
            "delivery_mode": 2,
            "priority": 0,
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    with broker.client(stack_.settings) as client:
        client.lpush("edge", json.dumps(envelope))


def _signed_touch_runs(app: Hpc2EdgeCelery, path: Path) -> None:
    """A correctly signed task after the bad ones: once it ran, the worker has handled them."""
    assert app.send_task("tests.touch", args=[str(path)], queue="edge").get(timeout=15) == str(path)
    assert path.exists()


def test_signed_ping_is_executed_and_its_signed_result_verified(signed, app):
    answer = probes.ping(signed.settings, "edge", timeout_s=10)
    assert answer["hostname"] == HOSTNAME
    assert app.conf.task_serializer == "auth" and app.conf.accept_content == ["auth"]


def test_unsigned_json_task_is_refused_and_the_worker_serves_on(signed, app, tmp_path):
    unsigned_settings = replace(
        signed.settings, security=replace(signed.settings.security, sign=False)
    )
    unsigned = make_app(unsigned_settings)
    target = tmp_path / "unsigned.txt"
    try:
        sent = unsigned.send_task("tests.touch", args=[str(target)], queue="edge")
        sent_id = sent.id
        _unsubscribe(sent)
    finally:
        unsigned.close()
    _signed_touch_runs(app, tmp_path / "after.txt")
    time.sleep(0.3)
    assert not target.exists()
    # The intake refuses it by content type, before anything decodes it.
    assert "content type 'application/json' is not accepted" in _refusal(signed, sent_id)


def test_tampered_and_foreign_signatures_are_refused(signed, app, tmp_path):
    # Control: a correctly signed message pushed the same raw way runs.
    good = tmp_path / "raw-good.txt"
    good_id, message = _touch_message(app, good)
    content_type, _, payload = dumps(message.body, serializer="auth")
    assert content_type == "application/data"
    _push_raw(signed, message, payload, content_type)
    assert app.AsyncResult(good_id).get(timeout=15) == str(good)

    # 1. Tampered: the signed body with one byte of its argument changed (path "...-a" -> "...-b").
    tampered_path = tmp_path / "tampered-a.txt"
    tampered_id, message = _touch_message(app, tampered_path)
    _, _, payload = dumps(message.body, serializer="auth")
    raw = base64.b64decode(payload)
    needle = str(tampered_path).encode()
    assert raw.count(needle) == 1
    raw = raw.replace(needle, str(tmp_path / "tampered-b.txt").encode())
    _push_raw(signed, message, base64.b64encode(raw), "application/data")

    # 2. Signed with another valid certificate of our CA: the edge device's own signing key.
    edge = ca.signing_files(signed.settings.tls.ca_cert.parent, "edge")
    as_edge = SecureSerializer(
        PrivateKey(edge.key.read_text()), Certificate(edge.cert.read_text()), None
    )
    foreign = tmp_path / "signed-by-edge.txt"
    foreign_id, message = _touch_message(app, foreign)
    _push_raw(signed, message, as_edge.serialize(message.body), "application/data")

    _signed_touch_runs(app, tmp_path / "after.txt")
    time.sleep(0.3)
    assert not tampered_path.exists() and not (tmp_path / "tampered-b.txt").exists()
    assert not foreign.exists()
    # Both fail where Celery decodes the body; the consumer dead-letters them. (Celery 5.7
    # reports a bad signature as "Unable to deserialize: TypeError('catching classes that do
    # not inherit from BaseException ...')", celery/celery#5553.)
    assert "cannot decode the body" in _refusal(signed, tampered_id)
    assert "Unknown certificate" in _refusal(signed, foreign_id)
    # Refused messages are acknowledged: discarded, not redelivered after visibility_timeout.
    with broker.client(signed.settings) as client:
        deadline = time.monotonic() + 30  # polled: the bound is for a loaded machine
        while client.hlen("hpc2edge:unacked:edge") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.hlen("hpc2edge:unacked:edge") == 0
        assert client.llen("edge") == 0


def test_results_are_signed_by_the_worker_and_forged_ones_refused(signed, app, tmp_path):
    tls_dir = signed.settings.tls.ca_cert.parent
    result = app.send_task("tests.touch", args=[str(tmp_path / "r.txt")], queue="edge")
    assert result.get(timeout=15) == str(tmp_path / "r.txt")  # verified on the way in
    # The edge account may write its own queue's results (docs/security.md, known limit b).
    with broker.client(signed.as_role("edge")) as client:
        stored = client.get(f"celery-task-meta-{result.id}")
        unsigned_id, other_key_id = taskids.new("edge"), taskids.new("edge")
        forged = {"status": "SUCCESS", "result": "forged", "traceback": None, "children": []}
        client.set(
            f"celery-task-meta-{unsigned_id}", json.dumps({**forged, "task_id": unsigned_id})
        )
        # Signed, but with a key that is not a worker's (the orchestrator's own).
        orch = ca.signing_files(tls_dir, "orchestrator")
        as_orchestrator = SecureSerializer(
            PrivateKey(orch.key.read_text()), Certificate(orch.cert.read_text()), None
        )
        signed_forgery = as_orchestrator.serialize({**forged, "task_id": other_key_id})
        client.set(f"celery-task-meta-{other_key_id}", signed_forgery)
    signer = base64.b64decode(base64.b64decode(stored).split(b"\x00\x01")[0]).decode()
    edge_cert = Certificate(ca.signing_files(tls_dir, "edge").cert.read_text())
    assert signer == edge_cert.get_id()
    dispatcher = CeleryDispatcher(signed.settings)
    try:
        for forged_id, reason in ((unsigned_id, "deserialize"), (other_key_id, "Unknown")):
            outcome = dispatcher.poll(forged_id)
            assert outcome is not None and outcome.rejected, outcome
            assert reason in outcome.reason
    finally:
        dispatcher.close()


def test_status_lists_the_signed_worker(signed):
    st = stack.status(signed.settings, timeout_s=10.0)  # connect bound: a loaded machine is slow
    assert HOSTNAME in st.workers["edge"]


def test_a_signing_certificate_cannot_log_in_to_the_broker(signed):
    edge = signed.as_role("edge")
    files = ca.signing_files(signed.settings.tls.ca_cert.parent, "edge")
    as_signer = replace(edge, tls=replace(edge.tls, cert=files.cert, key=files.key))
    with pytest.raises(BrokerUnreachable):
        broker.client(as_signer, timeout_s=5).close()


def test_a_shutdown_broadcast_by_a_worker_is_refused_by_the_broker(signed):
    # A compromised edge device, with its own signing key, broadcasts `shutdown` to all workers:
    # the ACL no longer grants it the pidbox channel, and no worker listens there anyway.
    code = "from hpc2edge.transport.app import app; app.control.broadcast('shutdown'); app.close()"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=worker_env(signed, "edge"),
        cwd=signed.state_dir,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert out.returncode != 0
    assert "NoPermissionError" in out.stderr or "NOPERM" in out.stderr, out.stderr[-2000:]
    assert probes.ping(signed.settings, "edge", timeout_s=10)["hostname"] == HOSTNAME
