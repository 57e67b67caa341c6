"""One contract suite for every ArtifactStore: the directory store and the Redis store.

The Redis store runs against the session's real TLS redis-server as the orchestrator role. The ACL
allows that role only ``hpc2edge:*`` keys, so every test uses the production prefix and unique
content (uuid4 bytes) instead of a unique prefix; tests never see each other's blobs.
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from hpc2edge.errors import (
    ArtifactCorrupt,
    ArtifactError,
    ArtifactNotFound,
    ArtifactTooLarge,
    BrokerError,
)
from hpc2edge.store import artifacts
from hpc2edge.store.artifacts import (
    ArtifactStore,
    DirectoryArtifactStore,
    RedisArtifactStore,
    key_for,
    parse_key,
)
from hpc2edge.transport import broker
from hpc2edge.util import files as fsutil

pytestmark = pytest.mark.integration

KINDS = ["directory", "redis"]


def unique(size: int = 64) -> bytes:
    """``size`` bytes (at least 16) that no other test stores: a uuid4, repeated."""
    head = uuid.uuid4().bytes
    return (head * (size // len(head) + 1))[: max(size, len(head))]


@dataclass
class Raw:
    """Access to a store's backing storage that bypasses the store (to tamper and to look)."""

    write: Callable[[str, bytes], None]  # put raw bytes under an artifact key
    present: Callable[[str], bool]  # whether anything is stored under the key


@pytest.fixture(scope="module")
def admin(broker_stack):
    with broker.client(broker_stack.as_role("admin")) as c:
        yield c


@pytest.fixture(scope="module")
def orchestrator(broker_stack):
    with broker.client(broker_stack.settings) as c:
        yield c


@pytest.fixture(params=KINDS)
def kind(request) -> str:
    return request.param


@pytest.fixture
def make_store(kind, request, tmp_path) -> Callable[..., ArtifactStore]:
    """Build a store of this test's kind; Redis stores share the orchestrator's client."""

    def make(**kwargs) -> ArtifactStore:
        if kind == "directory":
            return DirectoryArtifactStore(tmp_path / "artifacts", **kwargs)
        client = request.getfixturevalue("orchestrator")
        return RedisArtifactStore(client, **kwargs)

    return make


@pytest.fixture
def store(make_store) -> ArtifactStore:
    return make_store()


@pytest.fixture
def raw(kind, store, request) -> Raw:
    if kind == "directory":
        assert isinstance(store, DirectoryArtifactStore)

        def write_file(key: str, data: bytes) -> None:
            path = store.path_for(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

        return Raw(write=write_file, present=lambda key: store.path_for(key).exists())
    assert isinstance(store, RedisArtifactStore)
    admin = request.getfixturevalue("admin")
    return Raw(
        write=lambda key, data: admin.set(store.redis_key(key), data, ex=60),
        present=lambda key: bool(admin.exists(store.redis_key(key))),
    )


# --- keys -------------------------------------------------------------------------------------


def test_key_for_is_sha256_of_the_content():
    data = unique()
    assert key_for(data) == "sha256:" + hashlib.sha256(data).hexdigest()
    assert parse_key(key_for(data)) == hashlib.sha256(data).hexdigest()


MALFORMED = [
    "",
    "sha256:",
    "sha256:" + "a" * 63,
    "sha256:" + "a" * 65,
    "sha256:" + "A" * 64,  # canonical form is lowercase
    "SHA256:" + "a" * 64,
    "md5:" + "a" * 32,
    "a" * 64,  # a bare digest is not a key
    "sha256:" + "a" * 64 + "\n",
    "sha256:../../../../etc/passwd",
    "sha256:" + "a" * 62 + "/.",
    "sha256:" + "a" * 64 + "*",  # a Redis glob
    " sha256:" + "a" * 64,
]


@pytest.mark.parametrize("key", MALFORMED)
def test_parse_key_rejects_anything_but_the_canonical_form(key):
    with pytest.raises(ValueError):
        parse_key(key)


def test_parse_key_rejects_non_strings():
    with pytest.raises(ValueError):
        parse_key(b"sha256:" + b"a" * 64)  # type: ignore[arg-type]


# --- the contract, for every store ------------------------------------------------------------


def test_put_get_round_trip(store):
    data = unique()
    key = store.put(data)
    assert key == key_for(data)
    assert store.get(key) == data


def test_put_is_idempotent_and_keeps_one_copy(store, raw):
    data = unique()
    first = store.put(data)
    second = store.put(data)
    assert first == second
    assert raw.present(first)
    assert store.get(first) == data
    assert store.delete(first)  # one copy: one delete removes it
    assert not raw.present(first)
    assert not store.exists(first)


def test_get_of_unknown_key_is_not_found(store):
    with pytest.raises(ArtifactNotFound):
        store.get(key_for(unique()))


@pytest.mark.parametrize("key", MALFORMED)
def test_malformed_keys_are_rejected_by_every_method(store, key):
    for method in (store.get, store.exists, store.delete):
        with pytest.raises(ValueError):
            method(key)


def test_corrupt_bytes_are_never_returned(store, raw):
    data = unique()
    key = store.put(data)
    raw.write(key, b"garbage" + data[1:])
    with pytest.raises(ArtifactCorrupt, match=key):
        store.get(key)
    assert store.exists(key)  # a reader does not delete what it cannot verify


def test_put_repairs_a_corrupt_blob(store, raw):
    data = unique()
    key = key_for(data)
    raw.write(key, b"truncated")
    with pytest.raises(ArtifactCorrupt):
        store.get(key)
    assert store.put(data) == key
    assert store.get(key) == data


def test_over_cap_put_is_refused_and_writes_nothing(make_store, raw):
    store = make_store(max_bytes=100)
    assert store.max_bytes == 100
    at_cap = unique(100)
    over = unique(101)
    assert store.get(store.put(at_cap)) == at_cap
    with pytest.raises(ArtifactTooLarge, match="101 bytes"):
        store.put(over)
    assert not raw.present(key_for(over))
    assert not store.exists(key_for(over))


def test_a_reader_applies_its_own_cap(make_store):
    writer = make_store(max_bytes=1000)
    reader = make_store(max_bytes=100)
    small, big = unique(100), unique(101)
    key_small, key_big = writer.put(small), writer.put(big)
    assert reader.get(key_small) == small
    with pytest.raises(ArtifactTooLarge, match="101 bytes"):
        reader.get(key_big)
    assert writer.get(key_big) == big


def test_exists_and_delete(store):
    data = unique()
    key = key_for(data)
    assert not store.exists(key)
    assert not store.delete(key)
    store.put(data)
    assert store.exists(key)
    assert store.delete(key)
    assert not store.exists(key)
    assert not store.delete(key)
    with pytest.raises(ArtifactNotFound):
        store.get(key)


def test_empty_blob_is_a_blob(store):
    key = store.put(b"")
    assert key == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert store.exists(key)
    assert store.get(key) == b""
    store.delete(key)


def test_large_blob_round_trip(store):
    data = unique(64) + os.urandom(5 * 2**20)
    key = store.put(data)
    assert store.get(key) == data


def test_only_bytes_are_stored(store):
    with pytest.raises(TypeError):
        store.put("text")  # type: ignore[arg-type]


def test_concurrent_puts_of_the_same_content(store):
    data = unique(2**20)
    keys: list[str] = []
    errors: list[BaseException] = []

    def put() -> None:
        try:
            keys.append(store.put(data))
        except BaseException as exc:  # collected and re-checked in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=put) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert keys == [key_for(data)] * 8
    assert store.get(key_for(data)) == data


@pytest.mark.parametrize("max_bytes", [-1, 1.5, True, "10"])
def test_bad_cap_is_a_value_error(make_store, max_bytes):
    with pytest.raises(ValueError):
        make_store(max_bytes=max_bytes)


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


# --- directory only ---------------------------------------------------------------------------


@pytest.fixture
def dir_store(tmp_path) -> DirectoryArtifactStore:
    return DirectoryArtifactStore(tmp_path / "artifacts")


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_directory_layout_and_no_temp_files_left(dir_store):
    data = unique()
    key = dir_store.put(data)
    digest = parse_key(key)
    path = dir_store.root / "sha256" / digest[:2] / digest
    assert files_under(dir_store.root) == [path]
    assert path.stat().st_mode & 0o777 == 0o600  # private, like the rest of the state folder
    dir_store.put(data)
    assert files_under(dir_store.root) == [path]


def test_directory_put_of_present_content_does_not_rewrite(dir_store):
    data = unique()
    path = dir_store.path_for(dir_store.put(data))
    before = path.stat()
    dir_store.put(data)
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


@pytest.mark.parametrize(
    "key",
    [
        "sha256:../../../../etc/passwd",
        "sha256:" + "../" * 21 + "a",
        "../" + "a" * 64,
        "sha256:/" + "a" * 63,
        "/etc/passwd",
    ],
)
def test_directory_rejects_path_traversal(dir_store, key):
    for method in (dir_store.get, dir_store.exists, dir_store.delete, dir_store.path_for):
        with pytest.raises(ValueError):
            method(key)


def test_directory_failed_write_leaves_no_partial_blob(dir_store, monkeypatch):
    data = unique(4096)

    def crash(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fsutil.os, "fsync", crash)  # the one atomic writer
    with pytest.raises(ArtifactError, match="No space left"):
        dir_store.put(data)
    monkeypatch.undo()
    assert not dir_store.exists(key_for(data))
    assert files_under(dir_store.root) == []  # the temporary file was removed too
    assert dir_store.get(dir_store.put(data)) == data


def test_directory_store_accepts_str_root(tmp_path):
    store = DirectoryArtifactStore(str(tmp_path / "s"))
    assert store.get(store.put(b"x")) == b"x"


def test_an_incomplete_store_fails_at_construction():
    class Incomplete(ArtifactStore):
        def _get(self, hex_digest: str) -> bytes | None:
            return None

    with pytest.raises(TypeError):
        Incomplete()  # type: ignore[abstract]
