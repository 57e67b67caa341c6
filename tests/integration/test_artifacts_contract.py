"""The ArtifactStore contract suite (:mod:`hpc2edge.testing.artifacts`) on the Redis store, and
what only the Redis store does. The directory and memory stores:
``tests/unit/test_artifact_stores.py``.

The Redis store runs against the session's real TLS redis-server as the orchestrator role. The ACL
allows that role only ``hpc2edge:*`` keys, so every test uses the production prefix and unique
content (uuid4 bytes) instead of a unique prefix; tests never see each other's blobs.
"""

from __future__ import annotations

import pytest
import redis

from hpc2edge.errors import BrokerError
from hpc2edge.store import artifacts
from hpc2edge.store.artifacts import RedisArtifactStore, key_for, parse_key
from hpc2edge.testing.artifacts import ArtifactStoreContract, Raw, unique
from hpc2edge.transport import broker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def admin(broker_stack):
    with broker.client(broker_stack.as_role("admin")) as c:
        yield c


@pytest.fixture(scope="module")
def orchestrator(broker_stack):
    with broker.client(broker_stack.settings) as c:
        yield c


class TestRedisArtifactStore(ArtifactStoreContract):
    """Redis stores share the orchestrator's client; the admin tampers and looks."""

    @pytest.fixture
    def make_store(self, orchestrator):
        return lambda **kwargs: RedisArtifactStore(orchestrator, **kwargs)

    @pytest.fixture
    def raw(self, store, admin):
        assert isinstance(store, RedisArtifactStore)
        return Raw(
            write=lambda key, data: admin.set(store.redis_key(key), data, ex=60),
            present=lambda key: bool(admin.exists(store.redis_key(key))),
        )


# --- Redis only -------------------------------------------------------------------------------


@pytest.fixture
def redis_store(orchestrator) -> RedisArtifactStore:
    return RedisArtifactStore(orchestrator, ttl_s=600)


def test_redis_blobs_expire_and_put_refreshes_the_ttl(redis_store, admin):
    data = unique()
    key = redis_store.put(data)
    name = redis_store.redis_key(key)
    assert name == "hpc2edge:artifact:" + parse_key(key)
    assert 0 < admin.ttl(name) <= 600
    admin.expire(name, 5)
    redis_store.put(data)
    assert admin.ttl(name) > 5


def test_redis_default_ttl_is_a_week(orchestrator, admin):
    store = RedisArtifactStore(orchestrator)
    key = store.put(unique())
    assert store.ttl_s == artifacts.DEFAULT_TTL_S == 7 * 24 * 3600
    assert 7 * 24 * 3600 - 60 < admin.ttl(store.redis_key(key)) <= 7 * 24 * 3600
    store.delete(key)


def test_edge_reads_what_the_orchestrator_stored(redis_store, broker_stack):
    data = unique()
    key = redis_store.put(data)
    with broker.client(broker_stack.as_role("edge")) as c:
        edge_store = RedisArtifactStore(c)
        assert edge_store.exists(key)
        assert edge_store.get(key) == data


@pytest.mark.parametrize("role", ["edge", "hpc"])
def test_workers_cannot_write_artifacts(role, redis_store, broker_stack):
    data = unique()
    with broker.client(broker_stack.as_role(role)) as c:
        worker_store = RedisArtifactStore(c)
        # redis-py drops the NOPERM prefix from the message; the cause keeps the type.
        with pytest.raises(BrokerError, match=r"storing artifact .* failed: .*no permissions") as e:
            worker_store.put(data)
        assert isinstance(e.value.__cause__, redis.exceptions.NoPermissionError)
        existing = redis_store.put(unique())
        with pytest.raises(BrokerError, match=r"deleting artifact .* failed"):
            worker_store.delete(existing)
    assert not redis_store.exists(key_for(data))
    assert redis_store.exists(existing)


def test_redis_store_refuses_decoding_clients():
    client = redis.Redis(decode_responses=True)  # never connected: the check comes first
    with pytest.raises(ValueError, match="decode_responses"):
        RedisArtifactStore(client)


@pytest.mark.parametrize("ttl_s", [0, -1, 1.5])
def test_redis_bad_ttl_is_a_value_error(orchestrator, ttl_s):
    with pytest.raises(ValueError):
        RedisArtifactStore(orchestrator, ttl_s=ttl_s)
