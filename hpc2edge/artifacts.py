"""Content-addressed blob store: ONNX models travel by key, never inside a Celery message.

A task carries ``artifact_key = "sha256:<64 hex>"``; the worker fetches the bytes from a store
that both sides reach. Two stores honour one contract (:class:`ArtifactStore`):

- :class:`RedisArtifactStore` keeps blobs on the broker under ``hpc2edge:artifact:<hex>`` with a
  TTL. It is the only store both administrative domains can reach (they meet only at the broker),
  and the ACL already gives the orchestrator read/write and the workers read-only on those keys.
- :class:`DirectoryArtifactStore` keeps blobs as files under ``<root>/sha256/<2 hex>/<hex>``: for
  one machine, a shared file system, and as the deterministic store of unit tests.

Decisions, and why:

- **Content addressing.** The key is the SHA-256 of the bytes, so a key names exactly one blob:
  storing is idempotent (at-least-once delivery and retries can re-store freely), two candidates
  with the same exported model share one blob, and the key doubles as the ``onnx sha256`` of the
  measurement context (the measurement cache key) without a second hash.
- **Verification on every read.** The bytes cross a network, a broker with AOF rewrites, and disks
  owned by two organisations. Re-hashing costs about 1 ms per MB of model, far less than a latency
  measurement; returning a silently damaged model would corrupt a measurement instead of failing
  it. ``get`` therefore never returns bytes that do not hash to the key (:class:`ArtifactCorrupt`).
- **Atomic rename in the directory store.** A blob is written to a temporary file in its final
  folder, fsynced, then ``os.replace``-d onto its name (and the folder fsynced): a crash or a full
  disk leaves a stray temporary file at worst, never a partial blob under a final name, and
  concurrent writers of the same content simply replace identical bytes.
- **TTL on Redis.** Broker memory is shared with the queues; models are only needed until their
  measurement and training finish. Blobs expire ``ttl_s`` after their last ``put`` (a ``put`` of
  the same content refreshes the TTL, so re-submitting a candidate keeps its model alive). The
  directory store never expires anything: its disk is the operator's to clean.
- **Keys are validated** (:func:`parse_key`) before they touch a path or a Redis key, so a key
  from a message can neither traverse out of the store's root nor address another Redis key.

Errors (see :mod:`hpc2edge.errors`): :class:`ArtifactNotFound`, :class:`ArtifactCorrupt`,
:class:`ArtifactTooLarge`, :class:`ArtifactError` for file-system failures, :class:`BrokerError`
for Redis failures (refused by the ACL included), ``ValueError`` for a malformed key.
"""

from __future__ import annotations

import abc
import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING

from hpc2edge.broker import translate_errors
from hpc2edge.errors import ArtifactCorrupt, ArtifactError, ArtifactNotFound, ArtifactTooLarge
from hpc2edge.fsutil import write_atomic

if TYPE_CHECKING:
    import redis

KEY_SCHEME = "sha256"
DEFAULT_MAX_BYTES = 256 * 2**20
DEFAULT_TTL_S = 7 * 24 * 3600
_KEY_RE = re.compile(r"sha256:([0-9a-f]{64})")
_CHUNK = 1 << 20


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

    Contract, which every implementation honours and ``tests/integration/
    test_artifacts_contract.py`` checks for each:

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


class RedisArtifactStore(ArtifactStore):
    """Blobs as Redis strings under ``<prefix><hex>``, expiring ``ttl_s`` after their last put.

    ``client`` is a connected client for one role (:func:`hpc2edge.broker.client`); it must return
    bytes (no ``decode_responses``). The ACL decides who may write: the orchestrator may, the
    ``hpc`` and ``edge`` roles may only read, so their ``put`` raises :class:`BrokerError`.

    Each ``put`` is one ``SET key data EX ttl_s``: content addressing makes an overwrite write the
    same bytes, and it refreshes the TTL and repairs a damaged copy in one atomic command.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "hpc2edge:artifact:",
        ttl_s: int = DEFAULT_TTL_S,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        super().__init__(max_bytes=max_bytes)
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or ttl_s <= 0:
            raise ValueError(f"ttl_s must be a positive integer number of seconds, got {ttl_s!r}")
        if not prefix:
            raise ValueError("prefix must not be empty")
        if client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("the Redis client must return bytes (decode_responses=False)")
        self._client = client
        self._prefix = prefix
        self._ttl_s = ttl_s

    @property
    def ttl_s(self) -> int:
        """Seconds a blob lives after its last :meth:`put`."""
        return self._ttl_s

    def redis_key(self, key: str) -> str:
        """The Redis key holding the blob of artifact ``key`` (for operators and tests)."""
        return self._prefix + parse_key(key)

    def __repr__(self) -> str:
        kwargs = self._client.get_connection_kwargs()
        where = f"{kwargs.get('host')}:{kwargs.get('port')}"
        return f"RedisArtifactStore({where}, prefix={self._prefix!r})"

    def _put(self, hex_digest: str, data: bytes) -> None:
        with translate_errors(f"storing artifact sha256:{hex_digest} in Redis"):
            self._client.set(self._prefix + hex_digest, data, ex=self._ttl_s)

    def _get(self, hex_digest: str) -> bytes | None:
        with translate_errors(f"reading artifact sha256:{hex_digest} from Redis"):
            data = self._client.get(self._prefix + hex_digest)
        # redis-py's annotations cover async clients and decoded responses too; ours gives bytes.
        return None if data is None else bytes(data)  # type: ignore[arg-type]

    def _size(self, hex_digest: str) -> int | None:
        with translate_errors(f"sizing artifact sha256:{hex_digest} in Redis"):
            size = int(self._client.strlen(self._prefix + hex_digest))  # type: ignore[arg-type]
        return size or None  # STRLEN says 0 for a missing key; an empty blob is under any cap

    def _exists(self, hex_digest: str) -> bool:
        with translate_errors(f"looking up artifact sha256:{hex_digest} in Redis"):
            return bool(self._client.exists(self._prefix + hex_digest))

    def _delete(self, hex_digest: str) -> bool:
        with translate_errors(f"deleting artifact sha256:{hex_digest} from Redis"):
            return bool(self._client.delete(self._prefix + hex_digest))


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


__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_TTL_S",
    "ArtifactStore",
    "DirectoryArtifactStore",
    "RedisArtifactStore",
    "key_for",
    "parse_key",
]
