"""Per-device broker users against a real TLS redis-server with the rendered ACL (issue 16).

Devices are added and revoked through the ``hpc2edge tls`` commands, as an admin would, and each
device logs in with the config file ``add-device --write-config`` wrote for it. One broker for
the module; every test issues devices of its own, so the tests run in any order.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import redis

from hpc2edge.cli.root import main
from hpc2edge.config import Settings, derived, load_settings
from hpc2edge.errors import BrokerUnreachable
from hpc2edge.ops import localbroker, stack
from hpc2edge.transport import broker, liveness, probes, taskids
from hpc2edge.util import procs
from tests.conftest import REPO_ROOT, Stack, own_broker

pytestmark = pytest.mark.integration

NOPERM = redis.exceptions.NoPermissionError
SEP = localbroker.KOMBU_PRIORITY_SEP
#: How soon after `revoke-device` returns a revoked device's open connection must fail.
REVOCATION_S = 2.0


@dataclass
class Site:
    """The module's broker, driven through the CLI with the orchestrator's config."""

    stack: Stack

    @property
    def config(self) -> Path:
        return derived.role_config_path(self.stack.settings, "orchestrator")

    def cli(self, *argv: str) -> int:
        return main(["--config", str(self.config), *argv])

    def add(self, kind: str) -> tuple[str, Settings]:
        """A new device of ``kind``: its name and the settings of the config it was given."""
        name = f"dev-{uuid.uuid4().hex[:8]}"
        path = self.stack.state_dir / f"{name}.toml"  # beside tls/ and secrets/, as on a device
        assert self.cli("tls", "add-device", name, "--kind", kind, "--write-config", str(path)) == 0
        return name, load_settings(path)

    def admin(self) -> redis.Redis:
        return broker.client(self.stack.as_role("admin"))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with own_broker(tmp_path_factory.mktemp("devices")) as stack:
        yield Site(stack)


def _with_password(settings: Settings, password: str | None) -> Settings:
    return replace(settings, broker=replace(settings.broker, password=password))


# --- (a) a device user reaches its own kind and nothing else --------------------------------

OTHER_QUEUES = ["edge.b", "edge.ab", "edge.a-b", "edge", "train"]


def test_a_device_is_refused_every_other_kinds_queue_and_results(site):
    _, settings = site.add("a")
    with broker.client(settings) as c:
        for queue in OTHER_QUEUES:
            with pytest.raises(NOPERM):
                c.lpush(queue, "{}")
            with pytest.raises(NOPERM):
                c.lpush(f"{queue}{SEP}3", "{}")
            with pytest.raises(NOPERM):
                c.brpop([queue], timeout=1)
            result = "celery-task-meta-" + taskids.new(queue)
            with pytest.raises(NOPERM):
                c.set(result, "{}")
            with pytest.raises(NOPERM):
                c.publish(result, "{}")
            with pytest.raises(NOPERM):
                c.hset(f"hpc2edge:unacked:{queue}", "id", "{}")
            with pytest.raises(NOPERM):
                c.zadd(liveness.key(queue), {"forged@host": time.time()})
        with pytest.raises(NOPERM):
            c.set("hpc2edge:artifact:" + "0" * 64, b"a model the device made up")
        with pytest.raises(NOPERM):
            c.execute_command("ACL", "LIST")


def test_a_device_uses_its_own_queue_results_and_keys(site):
    _, settings = site.add("a")
    with broker.client(settings) as c:
        assert c.lpush("edge.a", "probe") == 1
        assert c.brpop(["edge.a"], timeout=1) == (b"edge.a", b"probe")
        assert c.lpush(f"edge.a{SEP}9", "probe") == 1
        assert c.rpop(f"edge.a{SEP}9") == b"probe"
        result = "celery-task-meta-" + taskids.new("edge.a")
        assert c.set(result, "{}", ex=60)
        assert c.publish(result, "{}") == 0
        assert c.delete(result) == 1
        assert c.hset("hpc2edge:unacked:edge.a", "probe", "{}") == 1
        assert c.hdel("hpc2edge:unacked:edge.a", "probe") == 1
        assert c.zadd(liveness.key("edge.a"), {"probe@host": time.time()}) == 1
        assert c.zrem(liveness.key("edge.a"), "probe@host") == 1
        assert c.get("hpc2edge:artifact:" + "0" * 64) is None  # artifacts: read only
    with site.admin() as admin:
        user = settings.username
        assert not [e for e in admin.acl_log() if e.get("username") == user]


def test_a_worker_of_the_kind_serves_its_queue_as_the_device_user(site):
    """A real Celery worker with the device's config: kombu, the result backend, the heartbeat
    and the intake need nothing the device user lacks (ACL LOG stays empty for it)."""
    name, settings = site.add("a")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPC2EDGE_")}
    env["HPC2EDGE_CONFIG"] = str(site.stack.state_dir / f"{name}.toml")
    env["PYTHONPATH"] = str(REPO_ROOT)
    argv = stack.worker_argv("edge.a")
    hostname = f"edge.a@{name}"
    argv[argv.index("edge.a@%h")] = hostname
    worker = procs.spawn(
        name,
        argv,
        env=env,
        cwd=site.stack.state_dir,
        log=site.stack.state_dir / f"{name}.log",
        pid_file=site.stack.state_dir / f"{name}.pid",
        log_mode="w",
    )
    try:
        # Sent as admin: this test is about the device's rules, not the orchestrator's.
        answer = probes.ping(site.stack.as_role("admin"), "edge.a", timeout_s=30)
        assert answer["hostname"] == hostname
        with site.admin() as admin:
            deadline = time.monotonic() + 10
            while hostname not in liveness.live_workers(admin, ["edge.a"]).get("edge.a", []):
                assert time.monotonic() < deadline, "the worker's heartbeat never arrived"
                time.sleep(0.2)
            refused = [e for e in admin.acl_log() if e.get("username") == settings.username]
            assert not refused, refused
    finally:
        procs.stop(worker)


# --- (b) revocation -------------------------------------------------------------------------


def test_revocation_cuts_the_devices_connections_and_logins_and_no_one_elses(site, capsys):
    name, victim = site.add("a")
    _, other = site.add("b")
    password = victim.broker.password
    idle = broker.client(victim)
    blocked = broker.client(victim)
    bystander = broker.client(other)
    fleet = broker.client(site.stack.as_role("edge"))  # the shared edge user
    ids = (bystander.client_id(), fleet.client_id())
    ended: dict[str, object] = {}

    def wait_for_a_task() -> None:
        try:
            blocked.brpop(["edge.a"], timeout=8)
            ended["outcome"] = "returned"
        except redis.exceptions.ConnectionError as exc:
            ended["outcome"] = exc
        ended["at"] = time.monotonic()

    waiter = threading.Thread(target=wait_for_a_task)
    waiter.start()
    time.sleep(0.3)  # the BRPOP is on the broker
    capsys.readouterr()
    assert site.cli("tls", "revoke-device", name) == 0
    returned = time.monotonic()
    out = capsys.readouterr().out
    assert f"user {victim.username} removed" in out
    with pytest.raises(redis.exceptions.ConnectionError):
        idle.lpush("edge.a", "{}")
    assert time.monotonic() - returned < REVOCATION_S
    waiter.join(timeout=10)
    assert isinstance(ended["outcome"], redis.exceptions.ConnectionError), ended
    assert ended["at"] - returned < REVOCATION_S  # type: ignore[operator]
    with pytest.raises(BrokerUnreachable):
        broker.client(_with_password(victim, password))  # the old password no longer logs in
    # Other users keep their connections: nothing was reloaded.
    assert (bystander.client_id(), fleet.client_id()) == ids
    assert bystander.lpush("edge.b", "probe") == 1 and bystander.rpop("edge.b") == b"probe"
    for c in (idle, blocked, bystander, fleet):
        c.close()
    capsys.readouterr()
    assert site.cli("tls", "revoke-device", name) == 0
    assert "already revoked" in capsys.readouterr().out


# --- (c) a broker restart keeps the registry's users ---------------------------------------


def test_a_broker_restart_keeps_the_revoked_device_out_and_the_active_one_in(site):
    _, active = site.add("a")
    gone_name, gone = site.add("a")
    password = gone.broker.password
    assert site.cli("tls", "revoke-device", gone_name) == 0
    assert gone.username not in localbroker.LocalBroker(site.stack.state_dir).acl_file.read_text()
    localbroker.stop(site.stack.state_dir)
    localbroker.start(site.stack.settings)
    with pytest.raises(BrokerUnreachable):
        broker.client(_with_password(gone, password))
    with broker.client(active) as c:
        assert c.lpush("edge.a", "probe") == 1 and c.rpop("edge.a") == b"probe"
        with pytest.raises(NOPERM):
            c.lpush("edge.b", "{}")  # the restarted broker's rules are the kind's, not edge*


def test_sync_devices_removes_a_revoked_user_a_broker_still_had(site, capsys):
    name, device = site.add("a")
    password = device.broker.password
    assert site.cli("tls", "revoke-device", name) == 0
    with site.admin() as admin:  # a broker that missed the revocation (restored from a backup)
        admin.execute_command("ACL", "SETUSER", device.username, "on", f">{password}", "+ping")
    broker.client(_with_password(device, password)).close()
    capsys.readouterr()
    assert site.cli("broker", "sync-devices") == 0
    assert "removed" in capsys.readouterr().out
    with pytest.raises(BrokerUnreachable):
        broker.client(_with_password(device, password))


def test_a_broken_registry_entry_of_another_device_does_not_delay_a_revocation(site, capsys):
    name, victim = site.add("a")
    _, other = site.add("a")
    password = victim.broker.password
    other_password = other.broker.password_file
    kept = other_password.read_bytes()
    other_password.unlink()  # another device's password file lost: the ACL cannot be rendered
    try:
        assert site.cli("tls", "revoke-device", name) == 1
        assert other_password.name in capsys.readouterr().err
        with pytest.raises(BrokerUnreachable):
            broker.client(_with_password(victim, password))  # removed all the same
    finally:
        other_password.write_bytes(kept)
