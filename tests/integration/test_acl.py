"""Least privilege, per role, enforced by the broker's ACL."""

from __future__ import annotations

import pytest
import redis

from hpc2edge.transport import broker

pytestmark = pytest.mark.integration

NOPERM = redis.exceptions.NoPermissionError


@pytest.fixture
def edge(broker_stack):
    with broker.client(broker_stack.as_role("edge")) as c:
        yield c


@pytest.fixture
def hpc(broker_stack):
    with broker.client(broker_stack.as_role("hpc")) as c:
        yield c


def test_edge_cannot_push_to_the_train_queue(edge):
    with pytest.raises(NOPERM):
        edge.lpush("train", "{}")
    with pytest.raises(NOPERM):
        edge.rpush("train\x06\x163", "{}")  # kombu's priority sub-list of train


def test_edge_cannot_read_the_train_queue(edge):
    with pytest.raises(NOPERM):
        edge.lrange("train", 0, -1)


def test_edge_cannot_rebind_the_train_exchange(edge):
    with pytest.raises(NOPERM):
        edge.sadd("_kombu.binding.train", "train\x06\x16\x06\x16stolen")


def test_edge_cannot_touch_the_hpc_unacked_messages(edge):
    with pytest.raises(NOPERM):
        edge.hgetall("hpc2edge:unacked:hpc")


@pytest.mark.parametrize(
    "command",
    [
        ("FLUSHALL",),
        ("FLUSHDB",),
        ("CONFIG", "GET", "*"),
        ("CONFIG", "SET", "appendonly", "no"),
        ("KEYS", "*"),
        ("DEBUG", "SLEEP", "0"),
        ("SHUTDOWN", "NOSAVE"),
        ("ACL", "LIST"),
        ("MONITOR",),
    ],
)
@pytest.mark.parametrize("role", ["edge", "hpc", "orchestrator", "monitor"])
def test_only_admin_runs_admin_commands(broker_stack, role, command):
    # DEBUG is switched off for everyone (enable-debug-command no): a different refusal.
    refusal = redis.exceptions.ResponseError if command[0] == "DEBUG" else NOPERM
    with broker.client(broker_stack.as_role(role)) as c, pytest.raises(refusal):
        c.execute_command(*command)


def test_admin_can_run_admin_commands(broker_stack):
    with broker.client(broker_stack.as_role("admin")) as c:
        assert c.config_get("appendonly") == {"appendonly": "yes"}
        assert c.config_get("appendfsync") == {"appendfsync": "everysec"}


def test_hpc_cannot_push_to_the_edge_queue(hpc):
    with pytest.raises(NOPERM):
        hpc.lpush("edge", "{}")


def test_monitor_is_read_only_on_queues(broker_stack):
    with broker.client(broker_stack.as_role("monitor")) as c:
        assert c.llen("edge") >= 0
        with pytest.raises(NOPERM):
            c.lpush("edge", "{}")
        with pytest.raises(NOPERM):
            c.delete("train")


def test_edge_can_use_its_own_queue(edge):
    key = "edge\x06\x169"  # a priority sub-list nobody consumes in these tests
    assert edge.lpush(key, "probe") == 1
    assert edge.rpop(key) == b"probe"


def test_edge_reaches_no_study_data(broker_stack, edge):
    """The study and the measurement store live in SQL on the HPC side: the edge's config names
    neither, and in Redis the edge reads only artifacts, never the orchestrator's keys."""
    from hpc2edge.config import derived

    config = derived.role_config_path(broker_stack.settings, "edge").read_text()
    assert "search.db" not in config and "measurements.db" not in config
    for key in ("hpc2edge:unacked:orchestrator", "hpc2edge:unacked:hpc", "hpc2edge:anything"):
        with pytest.raises(NOPERM):
            edge.get(key)
        with pytest.raises(NOPERM):
            edge.set(key, "x")
    with pytest.raises(NOPERM):
        edge.set("hpc2edge:artifact:" + "0" * 64, b"a model the edge made up")
