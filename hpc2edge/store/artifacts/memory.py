"""Artifacts in a dict: the fake for tests of code that uses a store (same contract suite)."""

from __future__ import annotations

import threading

from hpc2edge.store.artifacts.base import DEFAULT_MAX_BYTES, ArtifactStore, parse_key


class MemoryArtifactStore(ArtifactStore):
    """Blobs in this process's memory, never expiring; thread-safe.

    For tests and single-process demos. It passes the same contract suite as the real stores
    (:mod:`hpc2edge.testing.artifacts`), so code tested against it behaves the same on them.
    :meth:`corrupt` damages a stored blob in place, for tests of verification. A store made with
    ``shared_with=other`` sees ``other``'s blobs under its own cap, as two roles see one Redis.
    """

    def __init__(
        self, *, max_bytes: int = DEFAULT_MAX_BYTES, shared_with: MemoryArtifactStore | None = None
    ) -> None:
        super().__init__(max_bytes=max_bytes)
        if shared_with is None:
            self._blobs: dict[str, bytes] = {}
            self._lock = threading.Lock()
        else:
            self._blobs, self._lock = shared_with._blobs, shared_with._lock

    def __repr__(self) -> str:
        return f"MemoryArtifactStore({len(self._blobs)} blobs)"

    def corrupt(self, key: str, data: bytes) -> None:
        """Replace the bytes stored under ``key`` with ``data`` without re-keying (tests only)."""
        with self._lock:
            self._blobs[parse_key(key)] = bytes(data)

    def _put(self, hex_digest: str, data: bytes) -> None:
        with self._lock:
            self._blobs[hex_digest] = bytes(data)

    def _get(self, hex_digest: str) -> bytes | None:
        with self._lock:
            return self._blobs.get(hex_digest)

    def _size(self, hex_digest: str) -> int | None:
        with self._lock:
            data = self._blobs.get(hex_digest)
        return None if data is None else len(data)

    def _exists(self, hex_digest: str) -> bool:
        with self._lock:
            return hex_digest in self._blobs

    def _delete(self, hex_digest: str) -> bool:
        with self._lock:
            return self._blobs.pop(hex_digest, None) is not None
