"""Artifacts as files: one machine, a shared file system, deterministic unit tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

from hpc2edge.errors import ArtifactError
from hpc2edge.store.artifacts.base import DEFAULT_MAX_BYTES, KEY_SCHEME, ArtifactStore, parse_key
from hpc2edge.util.files import write_atomic

_CHUNK = 1 << 20


class DirectoryArtifactStore(ArtifactStore):
    """Blobs as files ``<root>/sha256/<first 2 hex>/<hex>``, written atomically, never expiring.

    The two-hex fan-out keeps folders small. Files are mode 0600, like everything hpc2edge
    writes (docs/security.md, "Files and the dashboard"); temporary files are named
    ``.<hex>.<random>.tmp`` in the blob's folder, so they never match a final name. A ``put`` of
    content already present re-hashes the file and writes only when it is damaged.
    """

    def __init__(self, root: Path | str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        super().__init__(max_bytes=max_bytes)
        self._root = Path(root)

    @property
    def root(self) -> Path:
        """The folder under which ``sha256/`` lives."""
        return self._root

    def path_for(self, key: str) -> Path:
        """The file holding the blob of artifact ``key`` (for operators and tests)."""
        return self._path(parse_key(key))

    def __repr__(self) -> str:
        return f"DirectoryArtifactStore({str(self._root)!r})"

    def _path(self, hex_digest: str) -> Path:
        return self._root / KEY_SCHEME / hex_digest[:2] / hex_digest

    def _put(self, hex_digest: str, data: bytes) -> None:
        path = self._path(hex_digest)
        try:
            if _file_sha256(path) == hex_digest:
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, data, durable=True)
        except OSError as exc:
            raise ArtifactError(
                f"cannot store artifact sha256:{hex_digest} at {path}: {exc}"
            ) from exc

    def _size(self, hex_digest: str) -> int | None:
        try:
            return self._path(hex_digest).stat().st_size
        except OSError:
            return None  # missing or unreadable: _get reports it

    def _get(self, hex_digest: str) -> bytes | None:
        path = self._path(hex_digest)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ArtifactError(
                f"cannot read artifact sha256:{hex_digest} at {path}: {exc}"
            ) from exc

    def _exists(self, hex_digest: str) -> bool:
        return self._path(hex_digest).is_file()

    def _delete(self, hex_digest: str) -> bool:
        path = self._path(hex_digest)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise ArtifactError(
                f"cannot delete artifact sha256:{hex_digest} at {path}: {exc}"
            ) from exc
        return True


def _file_sha256(path: Path) -> str | None:
    """The hex SHA-256 of a file, streamed; None when it does not exist."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    except FileNotFoundError:
        return None
    return digest.hexdigest()
