"""The ArtifactStore contract suite (:class:`hpc2edge.store.artifacts.ArtifactStore`).

A store passes when this runs green on it::

    from hpc2edge.testing.artifacts import ArtifactStoreContract, Raw

    class TestMyStore(ArtifactStoreContract):
        @pytest.fixture
        def make_store(self, tmp_path):
            return lambda **kwargs: MyStore(tmp_path, **kwargs)   # kwargs: max_bytes

        @pytest.fixture
        def raw(self, store):
            return Raw(write=..., present=...)   # the backing storage, past the store

Every test stores :func:`unique` content, so stores that share a backing storage between
tests (one Redis) never see each other's blobs. What is checked: content addressing, idempotent
puts, verified reads (corrupt bytes are never returned, and a put repairs them), the size cap
on both sides, malformed keys refused by every method, concurrency, and the refusals.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from hpc2edge.errors import ArtifactCorrupt, ArtifactNotFound, ArtifactTooLarge
from hpc2edge.store.artifacts import ArtifactStore, key_for

#: Strings that are not artifact keys; every method of every store refuses them (ValueError).
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


def unique(size: int = 64) -> bytes:
    """``size`` bytes (at least 16) that no other test stores: a uuid4, repeated."""
    head = uuid.uuid4().bytes
    return (head * (size // len(head) + 1))[: max(size, len(head))]


@dataclass
class Raw:
    """Access to a store's backing storage that bypasses the store (to tamper and to look)."""

    write: Callable[[str, bytes], None]  # put raw bytes under an artifact key
    present: Callable[[str], bool]  # whether anything is stored under the key


class ArtifactStoreContract:
    """What every artifact store does. Subclass it; provide ``make_store`` and ``raw``."""

    @pytest.fixture
    def make_store(self) -> Callable[..., ArtifactStore]:
        """A factory of stores on one backing storage; keyword arguments: ``max_bytes``."""
        raise NotImplementedError("an ArtifactStoreContract subclass provides make_store")

    @pytest.fixture
    def raw(self, store: ArtifactStore) -> Raw:
        """Raw access to ``store``'s backing storage."""
        raise NotImplementedError("an ArtifactStoreContract subclass provides raw")

    @pytest.fixture
    def store(self, make_store: Callable[..., ArtifactStore]) -> ArtifactStore:
        return make_store()

    def test_put_get_round_trip(self, store: ArtifactStore) -> None:
        data = unique()
        key = store.put(data)
        assert key == key_for(data)
        assert store.get(key) == data

    def test_put_is_idempotent_and_keeps_one_copy(self, store: ArtifactStore, raw: Raw) -> None:
        data = unique()
        first = store.put(data)
        second = store.put(data)
        assert first == second
        assert raw.present(first)
        assert store.get(first) == data
        assert store.delete(first)  # one copy: one delete removes it
        assert not raw.present(first)
        assert not store.exists(first)

    def test_get_of_unknown_key_is_not_found(self, store: ArtifactStore) -> None:
        with pytest.raises(ArtifactNotFound):
            store.get(key_for(unique()))

    @pytest.mark.parametrize("key", MALFORMED)
    def test_malformed_keys_are_rejected_by_every_method(
        self, store: ArtifactStore, key: str
    ) -> None:
        for method in (store.get, store.exists, store.delete):
            with pytest.raises(ValueError):
                method(key)

    def test_corrupt_bytes_are_never_returned(self, store: ArtifactStore, raw: Raw) -> None:
        data = unique()
        key = store.put(data)
        raw.write(key, b"garbage" + data[1:])
        with pytest.raises(ArtifactCorrupt, match=key):
            store.get(key)
        assert store.exists(key)  # a reader does not delete what it cannot verify

    def test_put_repairs_a_corrupt_blob(self, store: ArtifactStore, raw: Raw) -> None:
        data = unique()
        key = key_for(data)
        raw.write(key, b"truncated")
        with pytest.raises(ArtifactCorrupt):
            store.get(key)
        assert store.put(data) == key
        assert store.get(key) == data

    def test_over_cap_put_is_refused_and_writes_nothing(
        self, make_store: Callable[..., ArtifactStore], raw: Raw
    ) -> None:
        store = make_store(max_bytes=100)
        assert store.max_bytes == 100
        at_cap = unique(100)
        over = unique(101)
        assert store.get(store.put(at_cap)) == at_cap
        with pytest.raises(ArtifactTooLarge, match="101 bytes"):
            store.put(over)
        assert not raw.present(key_for(over))
        assert not store.exists(key_for(over))

    def test_a_reader_applies_its_own_cap(self, make_store: Callable[..., ArtifactStore]) -> None:
        writer = make_store(max_bytes=1000)
        reader = make_store(max_bytes=100)
        small, big = unique(100), unique(101)
        key_small, key_big = writer.put(small), writer.put(big)
        assert reader.get(key_small) == small
        with pytest.raises(ArtifactTooLarge, match="101 bytes"):
            reader.get(key_big)
        assert writer.get(key_big) == big

    def test_exists_and_delete(self, store: ArtifactStore) -> None:
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

    def test_empty_blob_is_a_blob(self, store: ArtifactStore) -> None:
        key = store.put(b"")
        assert key == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        assert store.exists(key)
        assert store.get(key) == b""
        store.delete(key)

    def test_large_blob_round_trip(self, store: ArtifactStore) -> None:
        data = unique(64) + os.urandom(5 * 2**20)
        key = store.put(data)
        assert store.get(key) == data

    def test_only_bytes_are_stored(self, store: ArtifactStore) -> None:
        with pytest.raises(TypeError):
            store.put("text")  # type: ignore[arg-type]

    def test_concurrent_puts_of_the_same_content(self, store: ArtifactStore) -> None:
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
    def test_bad_cap_is_a_value_error(
        self, make_store: Callable[..., ArtifactStore], max_bytes: object
    ) -> None:
        with pytest.raises(ValueError):
            make_store(max_bytes=max_bytes)


__all__ = ["MALFORMED", "ArtifactStoreContract", "Raw", "unique"]
