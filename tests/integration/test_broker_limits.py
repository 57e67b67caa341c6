"""Broker limits (issue 13): a role with valid credentials cannot stop the broker or starve others.

Every test runs against a real TLS redis-server started from the shipped ``broker/redis.conf``
and ``broker/users.acl``. Where a limit would take minutes at its shipped value (the idle
timeout), the test first checks that the broker runs with the shipped value, then lowers it as
admin for speed.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
import uuid

import pytest
import redis
from kombu.transport import redis as kombu_redis

from hpc2edge.ops import localbroker
from hpc2edge.transport import broker
from hpc2edge.transport.app import make_app
from hpc2edge.util import procs
from tests.conftest import own_broker, start_worker, wait_ready

pytestmark = pytest.mark.integration

NOPERM = redis.exceptions.NoPermissionError
NON_ADMIN = ["orchestrator", "hpc", "edge", "monitor"]
# An endless script: if any role could run it, the broker would answer BUSY to everyone.
ENDLESS = "while true do end"


def _shipped(name: str) -> str:
    for line in localbroker.resource_text("redis.conf").splitlines():
        key, _, value = line.strip().partition(" ")
        if key == name:
            return value
    raise AssertionError(f"broker/redis.conf sets no {name}")


def _admin_config(c: redis.Redis, name: str) -> str:
    return str(c.config_get(name)[name])


# --- scripts and other commands no role needs ---------------------------------------------------


@pytest.mark.parametrize("role", ["edge", "monitor"])
def test_eval_is_refused_and_the_broker_keeps_answering(tmp_path, role):
    # An own broker: on a broker that let the script run, it would never answer again.
    with (
        own_broker(tmp_path) as st,
        broker.client(st.as_role(role)) as c,
        broker.client(st.as_role("orchestrator")) as orchestrator,
    ):
        with pytest.raises(NOPERM):
            c.eval(ENDLESS, 0)
        with pytest.raises(NOPERM):
            c.execute_command("EVAL_RO", ENDLESS, "0")
        started = time.monotonic()
        assert orchestrator.ping()
        orchestrator.lpush("train", "{}")
        assert orchestrator.llen("train") == 1
        assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    "command",
    [
        ("SCRIPT", "LOAD", "return 1"),
        ("SCRIPT", "FLUSH"),
        ("SCRIPT", "KILL"),
        ("FUNCTION", "LOAD", "#!lua name=limits\nredis.register_function('f', function() end)"),
        ("FUNCTION", "FLUSH"),
        ("FUNCTION", "DELETE", "limits"),
        ("FUNCTION", "LIST"),
        ("FUNCTION", "DUMP"),
        ("FCALL", "f", "0"),
        ("FCALL_RO", "f", "0"),
        ("SCAN", "0"),
        ("RANDOMKEY",),
        ("CLIENT", "TRACKING", "ON", "BCAST"),
        ("CLIENT", "LIST"),
        ("CLIENT", "KILL", "ID", "1"),
        ("CLIENT", "PAUSE", "1000"),
        ("CLIENT", "NO-EVICT", "ON"),
    ],
    ids=lambda command: " ".join(command[:2]),
)
@pytest.mark.parametrize("role", NON_ADMIN)
def test_non_admin_roles_cannot_run_scripts_of_their_own_or_walk_the_keyspace(
    broker_stack, role, command
):
    with broker.client(broker_stack.as_role(role)) as c, pytest.raises(NOPERM):
        c.execute_command(*command)


def test_the_broker_start_preloads_exactly_the_scripts_our_clients_run(broker_stack):
    scripts = localbroker.lua_scripts()
    assert set(scripts) == {
        "kombu.refresh_binding",
        "kombu.sweep_bindings",
        "redis.lock.release",
        "redis.lock.extend",
        "redis.lock.reacquire",
    }
    assert scripts["kombu.sweep_bindings"] == kombu_redis.SWEEP_BINDINGS
    with broker.client(broker_stack.as_role("edge")) as edge:
        shas = [localbroker.script_sha(text) for text in scripts.values()]
        assert edge.script_exists(*shas) == [True] * len(shas)
        # redis-py names a script by the same SHA-1.
        assert edge.register_script(kombu_redis.REFRESH_BINDING).sha == localbroker.script_sha(
            kombu_redis.REFRESH_BINDING
        )


@pytest.mark.parametrize("role", ["edge", "monitor"])
def test_a_role_runs_the_preloaded_scripts_and_no_other(broker_stack, role):
    with broker.client(broker_stack.as_role(role)) as c:
        with pytest.raises(NOPERM):
            c.script_load("return redis.call('PING')")
        # kombu's binding sweep, through redis-py's Script (EVALSHA): a limit of 0 changes nothing.
        sweep = c.register_script(kombu_redis.SWEEP_BINDINGS)
        assert sweep(keys=["_kombu.binding_deadlines"], args=["x.", "y.", 0]) == 0
        # redis-py's Lock, as kombu's Mutex uses it on the role's own unacked mutex.
        lock = c.lock(f"hpc2edge:unacked:{role}:mutex:limits-{uuid.uuid4().hex}", timeout=5)
        assert lock.acquire(blocking=False)
        assert lock.extend(5)
        assert lock.reacquire()
        lock.release()
        # A script nobody preloaded: EVALSHA finds nothing, and redis-py's fallback (SCRIPT LOAD)
        # is refused.
        other = c.register_script("return redis.call('PING')")
        with pytest.raises(NOPERM):
            other()


# --- memory ------------------------------------------------------------------------------------


def test_a_full_broker_refuses_writes_and_keeps_every_queued_task(tmp_path):
    with own_broker(tmp_path, {"HPC2EDGE_BROKER_MAXMEMORY_MIB": "16"}) as st:
        with broker.client(st.as_role("admin")) as admin:
            assert _admin_config(admin, "maxmemory") == str(16 * 2**20)
            assert _admin_config(admin, "maxmemory-policy") == "noeviction"
        task_id = str(uuid.uuid4())
        # A task message as kombu queues it (the envelope is all that matters here).
        message = json.dumps(
            {"body": "W1tdLCB7fSwge31d", "headers": {"id": task_id, "task": "tests.touch"}}
        ).encode()
        with (
            broker.client(st.as_role("edge")) as edge,
            broker.client(st.as_role("orchestrator")) as orchestrator,
        ):
            orchestrator.lpush("train", message)

            blob = b"x" * 2**20
            written = []
            with pytest.raises(redis.exceptions.OutOfMemoryError, match="maxmemory"):
                for i in range(64):
                    edge.set(f"edge:fill:{i}", blob)
                    written.append(f"edge:fill:{i}")
            assert written, "the broker was full before the first write"

            # noeviction: nothing was dropped to make room, the task above least of all.
            assert orchestrator.lrange("train", 0, -1) == [message]
            assert edge.exists(*written) == len(written)
            # Reads keep working for everyone. (Writes near the cap fail for everyone alike:
            # Redis has no per-user quota; docs/security.md, "Broker limits".)
            assert orchestrator.llen("train") == 1
            # DEL works at the cap, and frees room for writes again.
            assert edge.delete(*written) == len(written)
            orchestrator.lpush("edge", "{}")
            assert orchestrator.llen("edge") == 1


# --- one huge value ----------------------------------------------------------------------------


def _send_set_header(c: redis.Redis, length: int) -> object:
    """Send the start of ``SET edge:limits <length bytes>``; the reply, or None if Redis waits."""
    conn = c.connection_pool.get_connection()
    try:
        header = f"*3\r\n$3\r\nSET\r\n$12\r\nedge:limits:\r\n${length}\r\n".encode()
        conn.send_packed_command([header], check_health=False)
        if not conn.can_read(timeout=1.0):
            return None
        try:
            return conn.read_response()
        except redis.exceptions.ResponseError as exc:
            return exc
    finally:
        conn.disconnect()  # the server closes it after a protocol error; never reuse it
        c.connection_pool.release(conn)


def test_a_value_over_proto_max_bulk_len_is_refused_and_the_broker_survives(broker_stack):
    limit = _shipped("proto-max-bulk-len")
    assert limit.endswith("mb")
    limit_bytes = int(limit[:-2]) * 2**20
    artifact_bytes = broker_stack.settings.edge.artifact_max_mib * 2**20
    assert artifact_bytes < limit_bytes
    with broker.client(broker_stack.as_role("admin")) as admin:
        assert int(_admin_config(admin, "proto-max-bulk-len")) == limit_bytes
        query_limit = int(_admin_config(admin, "client-query-buffer-limit"))
        assert limit_bytes < query_limit < 2**30  # below Redis's default of 1 GiB
    with (
        broker.client(broker_stack.as_role("edge")) as edge,
        broker.client(broker_stack.as_role("orchestrator")) as orchestrator,
    ):
        # The largest artifact is announced and Redis waits for its bytes ...
        assert _send_set_header(edge, artifact_bytes) is None
        # ... one byte over the limit is refused at once, before Redis buffers anything.
        reply = _send_set_header(edge, limit_bytes + 1)
        assert isinstance(reply, redis.exceptions.ResponseError)
        assert "invalid bulk length" in str(reply)
        # The same client reconnects for its next command, and the broker serves everyone.
        assert edge.ping()
        edge.set("edge:limits:small", b"ok", ex=60)
        assert edge.get("edge:limits:small") == b"ok"
        assert orchestrator.ping()


# --- idle connections ----------------------------------------------------------------------------


def _check_shipped_timeout(admin: redis.Redis) -> None:
    shipped = int(_shipped("timeout"))
    assert 0 < shipped <= 600, "redis.conf must close idle connections"
    assert int(_admin_config(admin, "timeout")) == shipped


def test_a_connection_that_never_starts_tls_is_closed_after_the_idle_timeout(tmp_path):
    with own_broker(tmp_path) as st, broker.client(st.as_role("admin")) as admin:
        _check_shipped_timeout(admin)
        admin.config_set("timeout", 1)  # for the test's speed; the shipped value is above
        b = st.settings.broker
        with socket.create_connection((b.host, b.port), timeout=5) as raw:
            raw.settimeout(30)  # generous: Redis checks timeouts in its cron, ~10 clients a tick
            started = time.monotonic()
            try:
                data = raw.recv(1)  # never a TLS ClientHello: Redis waits, then closes
            except ConnectionResetError:
                data = b""
            except TimeoutError:
                pytest.fail("the broker kept a connection that never did the TLS handshake")
            assert data == b""
            assert time.monotonic() - started < 30
        assert admin.ping()


def test_a_connection_that_never_authenticates_is_closed_after_the_idle_timeout(tmp_path):
    with own_broker(tmp_path) as st, broker.client(st.as_role("admin")) as admin:
        _check_shipped_timeout(admin)
        admin.config_set("timeout", 1)
        s = st.settings
        ctx = ssl.create_default_context(cafile=str(s.tls.ca_cert))
        ctx.load_cert_chain(str(s.tls.cert), str(s.tls.key))
        with (
            socket.create_connection((s.broker.host, s.broker.port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname=s.broker.host) as tls,
        ):
            tls.settimeout(30)
            try:
                data = tls.recv(1)  # a finished handshake, then no AUTH
            except (ConnectionResetError, ssl.SSLError):
                data = b""
            except TimeoutError:
                pytest.fail("the broker kept a connection that never authenticated")
            assert data == b""


def test_clients_survive_the_server_closing_their_idle_connections(tmp_path):
    """A worker, kombu's producer and a redis-py client all outlive the idle timeout."""
    with own_broker(tmp_path) as st:
        with broker.client(st.as_role("admin")) as admin:
            _check_shipped_timeout(admin)
            admin.config_set("timeout", 1)
        worker = start_worker(st, "edge", "edge@limits")
        app = make_app(st.settings)
        try:
            wait_ready(st, "edge", worker)
            with broker.client(st.as_role("edge")) as edge:
                first = app.send_task("tests.touch", args=[str(tmp_path / "a")], queue="edge")
                assert first.get(timeout=20) == str(tmp_path / "a")
                edge_id = edge.client_id()
                time.sleep(4)  # idle past the timeout (checked in Redis's cron)
                with broker.client(st.as_role("admin")) as admin:
                    ids = [c["id"] for c in admin.client_list()]
                assert str(edge_id) not in ids, "the idle connection was not closed"
                # redis-py finds its pooled connection closed and reconnects.
                assert edge.ping()
                # kombu's producer reconnects; the worker's consumer (BRPOP, SUBSCRIBE: never
                # timed out) still takes tasks; the worker's result backend reconnects to store
                # the result, and ours to read it. Read as the orchestrator reads results (the
                # stored record, polled), not through the client's pub/sub wake-up, whose idle
                # connection the server closed too and which Celery re-subscribes on its own time.
                second = app.send_task("tests.touch", args=[str(tmp_path / "b")], queue="edge")
                deadline = time.monotonic() + 60
                meta = app.backend.get_task_meta(second.id)
                while meta.get("status") != "SUCCESS" and time.monotonic() < deadline:
                    time.sleep(0.25)
                    meta = app.backend.get_task_meta(second.id)
                app.backend.remove_pending_result(second)  # no unsubscribe at garbage collection
                assert (tmp_path / "b").exists(), "the worker did not take the second task"
                assert meta.get("status") == "SUCCESS", meta
                assert meta.get("result") == str(tmp_path / "b")
        finally:
            app.close()
            procs.stop(worker)
