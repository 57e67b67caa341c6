"""The ArtifactStore contract suite (:mod:`hpc2edge.testing.artifacts`) on the directory store
and on the memory fake, the key format, and what only the directory store does. The Redis
store: ``tests/integration/test_artifacts_contract.py``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from hpc2edge.errors import ArtifactError
from hpc2edge.store.artifacts import (
    ArtifactStore,
    DirectoryArtifactStore,
    MemoryArtifactStore,
    key_for,
    parse_key,
)
from hpc2edge.testing.artifacts import MALFORMED, ArtifactStoreContract, Raw, unique
from hpc2edge.util import files as fsutil

pytestmark = pytest.mark.unit


class TestDirectoryArtifactStore(ArtifactStoreContract):
    @pytest.fixture
    def make_store(self, tmp_path):
        return lambda **kwargs: DirectoryArtifactStore(tmp_path / "artifacts", **kwargs)

    @pytest.fixture
    def raw(self, store):
        assert isinstance(store, DirectoryArtifactStore)

        def write_file(key: str, data: bytes) -> None:
            path = store.path_for(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

        return Raw(write=write_file, present=lambda key: store.path_for(key).exists())


class TestMemoryArtifactStore(ArtifactStoreContract):
    """Tampering goes through :meth:`MemoryArtifactStore.corrupt` (its bytes live in the store)."""

    @pytest.fixture
    def make_store(self):
        shared = MemoryArtifactStore()  # every store of one test sees the same blobs
        return lambda **kwargs: MemoryArtifactStore(shared_with=shared, **kwargs)

    @pytest.fixture
    def raw(self, store):
        assert isinstance(store, MemoryArtifactStore)
        return Raw(write=store.corrupt, present=store.exists)


# --- keys -------------------------------------------------------------------------------------


def test_key_for_is_sha256_of_the_content():
    data = unique()
    assert key_for(data) == "sha256:" + hashlib.sha256(data).hexdigest()
    assert parse_key(key_for(data)) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("key", MALFORMED)
def test_parse_key_rejects_anything_but_the_canonical_form(key):
    with pytest.raises(ValueError):
        parse_key(key)


def test_parse_key_rejects_non_strings():
    with pytest.raises(ValueError):
        parse_key(b"sha256:" + b"a" * 64)  # type: ignore[arg-type]


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


# --- the base class ---------------------------------------------------------------------------


def test_an_incomplete_store_fails_at_construction():
    class Incomplete(ArtifactStore):
        def _get(self, hex_digest: str) -> bytes | None:
            return None

    with pytest.raises(TypeError):
        Incomplete()  # type: ignore[abstract]
