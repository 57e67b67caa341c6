"""Flower as the ``monitor`` role, against the real TLS broker and real workers.

Started as users start it: ``hpc2edge --config conf/monitor.toml monitor --port P`` (which execs
``celery -A hpc2edge flower`` with the password in ``FLOWER_BASIC_AUTH``), and a bare
``celery -A hpc2edge flower`` with no credentials given at all.
"""

from __future__ import annotations

import base64
import json
import socket
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from hpc2edge.config import derived
from hpc2edge.ops import flower as flower_ops
from hpc2edge.ops import stack
from hpc2edge.transport import broker, flowerguard, probes
from hpc2edge.util import net, procs

from ..conftest import Stack, worker_env

pytestmark = pytest.mark.integration

TEST_WORKERS = {"edge@test", "train@test"}


@dataclass
class Flower:
    record: procs.ProcRecord
    url: str
    password: str


def _request(
    url: str,
    *,
    user: str | None = None,
    password: str | None = None,
    data: bytes | None = None,
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _secrets(stack_: Stack) -> list[str]:
    return [p.read_text().strip() for p in (stack_.state_dir / "secrets").glob("*.password")]


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _port_freed(port: int, timeout_s: float = 30.0) -> bool:
    """Whether ``port`` stops accepting connections within ``timeout_s`` (polled: on a loaded
    machine the kernel may take a moment after the process is gone)."""
    deadline = time.monotonic() + timeout_s
    while not _port_is_free(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


@pytest.fixture(scope="module")
def flower(broker_stack: Stack, workers) -> Iterator[Flower]:
    port = net.free_port()
    config = derived.role_config_path(broker_stack.settings, "monitor")
    argv = [sys.executable, "-m", "hpc2edge.cli", "--config", str(config), "monitor"]
    argv += ["--port", str(port)]
    record = procs.spawn(
        "flower-test",
        argv,
        env=worker_env(broker_stack, "monitor"),
        cwd=broker_stack.state_dir,
        log=broker_stack.state_dir / "logs" / "flower-test.log",
        pid_file=broker_stack.state_dir / "run" / "test-flower.pid",
        log_mode="w",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        flower_ops.wait_ready(url, record, timeout_s=60)
        password = (
            (broker_stack.state_dir / "secrets" / flowerguard.PASSWORD_FILE).read_text().strip()
        )
        yield Flower(record=record, url=url, password=password)
    finally:
        procs.stop(record)


def _workers_listed(f: Flower, timeout_s: float = 45.0) -> dict:
    # Flower learns of workers from their events (remote control is off, so inspect replies
    # never come): its workers page, as JSON, lists what the events said. Poll, with a bound.
    deadline = time.monotonic() + timeout_s
    while True:
        status, body = _request(f"{f.url}/workers?json=1", user="admin", password=f.password)
        assert status == 200, body
        workers = {w["hostname"]: w for w in json.loads(body)["data"]}
        if set(workers) >= TEST_WORKERS or time.monotonic() > deadline:
            return workers
        time.sleep(1.0)


def test_password_file_is_private(broker_stack, flower):
    path = broker_stack.state_dir / "secrets" / flowerguard.PASSWORD_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(flower.password) >= 40  # token_urlsafe(32)


def test_api_lists_the_workers_with_credentials(flower):
    workers = _workers_listed(flower)
    assert set(workers) >= TEST_WORKERS, f"Flower lists {sorted(workers)}"
    assert all(workers[name]["status"] for name in TEST_WORKERS)  # online, from heartbeats


@pytest.mark.parametrize("path", ["/api/workers", "/api/tasks", "/", "/workers", "/tasks"])
def test_no_credentials_gets_401(flower, path):
    status, _ = _request(flower.url + path)
    assert status == 401


@pytest.mark.parametrize("case", ["wrong password", "wrong user", "empty password"])
def test_wrong_credentials_get_401(flower, case):
    user, password = {
        "wrong password": ("admin", "wrong"),
        "wrong user": ("someone", flower.password),
        "empty password": ("admin", ""),
    }[case]
    assert _request(f"{flower.url}/api/workers", user=user, password=password)[0] == 401


def test_metrics_count_task_events(broker_stack, flower):
    probes.ping(broker_stack.settings, "edge", timeout_s=30)
    deadline = time.monotonic() + 30
    while True:
        status, body = _request(f"{flower.url}/metrics", user="admin", password=flower.password)
        assert status == 200
        text = body.decode()
        if 'task="hpc2edge.ping"' in text and "flower_events_total" in text:
            break
        assert time.monotonic() < deadline, "no hpc2edge.ping events in /metrics"
        time.sleep(0.5)
    assert 'worker="edge@test"' in text


def test_metrics_and_healthcheck_need_no_credentials(flower):
    # Flower 2.2 serves these two without authentication (mher/flower#1342): why hpc2edge binds
    # Flower to loopback. If this starts failing, Flower changed: update README and security.md.
    assert _request(f"{flower.url}/metrics")[0] == 200
    assert _request(f"{flower.url}/healthcheck") == (200, b"OK")


def test_queue_lengths_are_readable(flower):
    _workers_listed(flower)
    status, body = _request(
        f"{flower.url}/api/queues/length", user="admin", password=flower.password
    )
    assert status == 200, body
    names = {q["name"] for q in json.loads(body)["active_queues"]}
    # Without remote control Flower knows no worker's queues and lists the configured ones.
    assert names >= {"edge", "train"}


def test_flower_cannot_enqueue_tasks(broker_stack, flower):
    # Flower's send-task API is reachable with the password, but the monitor ACL user may not
    # write to any queue: the broker refuses, and nothing reaches the edge queue.
    admin = broker_stack.as_role("admin")
    with broker.client(admin) as c:
        c.acl_log_reset()
        before = c.llen("edge")
    status, _ = _request(
        f"{flower.url}/api/task/send-task/hpc2edge.ping",
        user="admin",
        password=flower.password,
        data=json.dumps({"queue": "edge"}).encode(),
    )
    assert status >= 500
    with broker.client(admin) as c:
        assert c.llen("edge") == before
        denied = [e for e in c.acl_log() if e["username"] == "monitor"]
    # kombu declares the queue's binding before it publishes: the first write refused.
    edge_keys = {"edge", "_kombu.binding.edge", "_kombu.binding_permanent.edge"}
    assert any(e["object"] in edge_keys for e in denied), denied


def test_flower_controls_reach_no_worker(broker_stack, flower):
    # Remote control is off and the ACL takes the pidbox channel from the monitor role
    # (docs/security.md, "Remote control is off"): Flower's revoke cannot be broadcast.
    task_id = str(uuid.uuid4())
    status, _ = _request(
        f"{flower.url}/api/task/revoke/{task_id}", user="admin", password=flower.password, data=b""
    )
    assert status != 200
    with (
        broker.client(broker_stack.as_role("monitor")) as c,
        pytest.raises(redis.exceptions.NoPermissionError),
    ):
        c.publish("/0.celery.pidbox", "{}")
    assert probes.ping(broker_stack.settings, "edge", timeout_s=10)["hostname"] == "edge@test"


def test_monitor_role_sees_workers_but_not_other_roles_keys(broker_stack, workers):
    from hpc2edge.transport.app import make_app

    # Draining its event queue, kombu's Redis channel first runs restore_visible, which takes
    # the role's unacked mutex: the monitor user needs its own hpc2edge:unacked:monitor* keys.
    app = make_app(broker_stack.as_role("monitor"))
    try:
        with app.connection_for_read() as conn:
            conn.default_channel.qos.restore_visible()
    finally:
        app.close()
    st = stack.status(broker_stack.as_role("monitor"), timeout_s=10.0)  # a bound, not a wait
    assert "edge@test" in st.workers["edge"] and "train@test" in st.workers["train"]
    with broker.client(broker_stack.as_role("monitor")) as c:
        for key in ("hpc2edge:unacked:hpc", "hpc2edge:unacked:edge", "hpc2edge:artifact:x"):
            with pytest.raises(redis.exceptions.NoPermissionError):
                c.hgetall(key)


def test_log_holds_no_secret(broker_stack, flower):
    _workers_listed(flower)
    log = (broker_stack.state_dir / "logs" / "flower-test.log").read_text()
    assert "Visit me at http://127.0.0.1:" in log
    assert flower.password not in log
    assert not any(secret in log for secret in _secrets(broker_stack))
    # Nor what the API serves: the workers' configuration comes back censored.
    _, body = _request(f"{flower.url}/api/workers", user="admin", password=flower.password)
    assert not any(secret in body.decode() for secret in _secrets(broker_stack))


def test_the_process_holds_no_secret_on_its_command_line(flower):
    cmdline = Path(f"/proc/{flower.record.pid}/cmdline").read_bytes().decode()
    assert "flower" in cmdline and flower.password not in cmdline


def test_bare_celery_flower_turns_auth_on_and_binds_loopback(broker_stack, workers):
    port = net.free_port()
    env = worker_env(broker_stack, "monitor")
    env.pop("FLOWER_BASIC_AUTH", None)
    record = procs.spawn(
        "flower-bare",
        [sys.executable, "-m", "celery", "-A", "hpc2edge", "flower", f"--port={port}"],
        env=env,
        cwd=broker_stack.state_dir,
        log=broker_stack.state_dir / "logs" / "flower-bare.log",
        pid_file=broker_stack.state_dir / "run" / "test-flower-bare.pid",
        log_mode="w",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        flower_ops.wait_ready(url, record, timeout_s=60)  # also checks that / answers 401
        password = (
            (broker_stack.state_dir / "secrets" / flowerguard.PASSWORD_FILE).read_text().strip()
        )
        assert _request(f"{url}/api/workers")[0] == 401
        assert _request(f"{url}/api/workers", user="admin", password=password)[0] == 200
    finally:
        assert procs.stop(record)
    log = procs.tail(record.log, 200)
    assert f"Visit me at http://127.0.0.1:{port}" in log
    assert "basic auth on" in log and password not in log
    assert not procs.alive(record)
    assert _port_freed(port), f"port {port} still accepts connections after Flower stopped"
