"""The artifact contract: keys, and the one class that holds the policy (cap, verification).

The package docstring (:mod:`hpc2edge.store.artifacts`) says why; implementations fill in the
private hooks of :class:`ArtifactStore` and hold no policy.
"""

from __future__ import annotations

import abc
import hashlib
import re

from hpc2edge.errors import ArtifactCorrupt, ArtifactNotFound, ArtifactTooLarge

KEY_SCHEME = "sha256"
DEFAULT_MAX_BYTES = 256 * 2**20
DEFAULT_TTL_S = 7 * 24 * 3600
_KEY_RE = re.compile(r"sha256:([0-9a-f]{64})")


def key_for(data: bytes) -> str:
    """The content address of ``data``: ``"sha256:<64 lowercase hex>"``."""
    return f"{KEY_SCHEME}:{hashlib.sha256(data).hexdigest()}"


def parse_key(key: str) -> str:
    """The 64 lowercase hex digits of a well-formed key.

    Only the canonical form that :func:`key_for` produces is accepted, so a key taken from a
    message can never become a path outside a store's root or another Redis key.

    Raises:
        ValueError: ``key`` is not ``"sha256:"`` followed by 64 lowercase hex digits.
    """
    match = _KEY_RE.fullmatch(key) if isinstance(key, str) else None
    if match is None:
        raise ValueError(f"not an artifact key (want 'sha256:<64 lowercase hex>'): {key!r:.100}")
    return match.group(1)


class ArtifactStore(abc.ABC):
    """A store of immutable blobs addressed by the SHA-256 of their content.

    Contract, which every implementation honours and :mod:`hpc2edge.testing.artifacts` checks for
    each:

    - **Addressing.** ``put(data)`` returns ``key_for(data)``; ``get(key)`` returns exactly those
      bytes. Keys are validated by :func:`parse_key`; a malformed key raises ``ValueError`` from
      every method, before any I/O.
    - **Idempotence.** Storing the same bytes again returns the same key and keeps one copy. It
      also repairs a damaged copy: a ``put`` leaves a verified blob under the key.
    - **Verification.** ``get`` re-hashes what it read and raises :class:`ArtifactCorrupt` when it
      does not match the key; it never returns unverified bytes. It does not delete the damaged
      blob (a reader may hold read-only rights); a ``put`` of the right bytes replaces it.
    - **Size cap.** ``put`` of more than :attr:`max_bytes` bytes raises :class:`ArtifactTooLarge`
      before anything is written. Empty blobs are valid. ``get`` applies the reader's own cap
      too, from the stored size and before reading the bytes: an edge device with a small cap
      refuses a model too large for it instead of loading it into memory.
    - **Lifetime.** Implementations say whether blobs expire (Redis: ``ttl_s`` after the last
      ``put`` of that content; directory: never). An expired blob is :class:`ArtifactNotFound`,
      the same as one never stored; callers re-export and re-store it.
    - **Concurrency.** Methods are safe to call from several threads, and several processes may
      share one backing store (Redis server, directory): writers of one key write identical bytes,
      and a reader sees either no blob or a whole one. Create a store in the process that uses it
      (a Redis client is not carried across ``fork`` or pickling).
    - **Errors.** :class:`ArtifactNotFound`, :class:`ArtifactCorrupt` and
      :class:`ArtifactTooLarge` as above; failures of the backing store are translated at this
      boundary (:class:`~hpc2edge.errors.BrokerError` for Redis, :class:`ArtifactError` for files).

    Subclasses implement the private hooks, which receive an already validated hex digest and
    hold no policy: ``_put`` stores (or refreshes) bytes that already passed the cap, ``_get``
    returns the stored bytes or ``None``, ``_size`` the stored size or ``None``, ``_exists`` and
    ``_delete`` report presence.
    """

    def __init__(self, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"max_bytes must be a non-negative integer, got {max_bytes!r}")
        self._max_bytes = max_bytes

    @property
    def max_bytes(self) -> int:
        """The largest blob, in bytes, that :meth:`put` accepts."""
        return self._max_bytes

    def put(self, data: bytes) -> str:
        """Store ``data`` and return its key; storing the same bytes again changes nothing.

        Raises:
            TypeError: ``data`` is not ``bytes``.
            ArtifactTooLarge: ``data`` is over :attr:`max_bytes`; nothing was written.
        """
        if not isinstance(data, bytes):
            raise TypeError(f"artifact data must be bytes, got {type(data).__name__}")
        if len(data) > self._max_bytes:
            raise ArtifactTooLarge(
                f"artifact of {len(data)} bytes is over this store's cap of {self._max_bytes} bytes"
            )
        key = key_for(data)
        self._put(parse_key(key), data)
        return key

    def get(self, key: str) -> bytes:
        """The bytes stored under ``key``, verified against it.

        Raises:
            ValueError: ``key`` is malformed.
            ArtifactNotFound: nothing is stored under ``key`` (never stored, expired, deleted).
            ArtifactCorrupt: the stored bytes do not hash to ``key``.
            ArtifactTooLarge: the stored blob is over :attr:`max_bytes`; nothing was read.
        """
        hex_digest = parse_key(key)
        size = self._size(hex_digest)
        if size is not None and size > self._max_bytes:
            raise ArtifactTooLarge(
                f"artifact {key} has {size} bytes, over this store's cap of {self._max_bytes}"
            )
        data = self._get(hex_digest)
        if data is None:
            raise ArtifactNotFound(f"no artifact {key} in {self!r} (never stored, or expired)")
        actual = hashlib.sha256(data).hexdigest()
        if actual != hex_digest:
            raise ArtifactCorrupt(
                f"artifact {key} in {self!r} is corrupt: its {len(data)} bytes hash to "
                f"sha256:{actual}; store it again"
            )
        return data

    def exists(self, key: str) -> bool:
        """Whether a blob is stored under ``key`` (it is not read or verified).

        Raises:
            ValueError: ``key`` is malformed.
        """
        return self._exists(parse_key(key))

    def delete(self, key: str) -> bool:
        """Remove the blob under ``key``; False when there was none.

        Raises:
            ValueError: ``key`` is malformed.
        """
        return self._delete(parse_key(key))

    @abc.abstractmethod
    def _put(self, hex_digest: str, data: bytes) -> None: ...

    @abc.abstractmethod
    def _get(self, hex_digest: str) -> bytes | None: ...

    @abc.abstractmethod
    def _size(self, hex_digest: str) -> int | None: ...

    @abc.abstractmethod
    def _exists(self, hex_digest: str) -> bool: ...

    @abc.abstractmethod
    def _delete(self, hex_digest: str) -> bool: ...
