"""Content-addressed blob store: ONNX models travel by key, never inside a Celery message.

A task carries ``artifact_key = "sha256:<64 hex>"``; the worker fetches the bytes from a store
that both sides reach. Three stores honour one contract
(:class:`~hpc2edge.store.artifacts.base.ArtifactStore`):

- :class:`RedisArtifactStore` keeps blobs on the broker under ``hpc2edge:artifact:<hex>`` with a
  TTL. It is the only store both administrative domains can reach (they meet only at the broker),
  and the ACL already gives the orchestrator read/write and the workers read-only on those keys.
- :class:`DirectoryArtifactStore` keeps blobs as files under ``<root>/sha256/<2 hex>/<hex>``: for
  one machine, a shared file system, and as the deterministic store of unit tests.
- :class:`MemoryArtifactStore` keeps them in a dict: the fake for tests of code that uses a
  store. All three pass one contract suite (:mod:`hpc2edge.testing.artifacts`).

Decisions, and why:

- **Content addressing.** The key is the SHA-256 of the bytes, so a key names exactly one blob:
  storing is idempotent (at-least-once delivery and retries can re-store freely), two candidates
  with the same exported model share one blob, and the key doubles as the ``onnx sha256`` of the
  measurement context (the measurement cache key) without a second hash.
- **Verification on every read.** The bytes cross a network, a broker with AOF rewrites, and disks
  owned by two organisations. Re-hashing costs about 1 ms per MB of model, far less than a latency
  measurement; returning a silently damaged model would corrupt a measurement instead of failing
  it. ``get`` therefore never returns bytes that do not hash to the key
  (:class:`~hpc2edge.errors.ArtifactCorrupt`).
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

Errors (all in :mod:`hpc2edge.errors`): ``ArtifactNotFound``, ``ArtifactCorrupt``,
``ArtifactTooLarge``, ``ArtifactError`` for file-system failures, ``BrokerError`` for Redis
failures (refused by the ACL included), ``ValueError`` for a malformed key.
"""

from hpc2edge.store.artifacts.base import (
    DEFAULT_MAX_BYTES,
    DEFAULT_TTL_S,
    KEY_SCHEME,
    ArtifactStore,
    key_for,
    parse_key,
)
from hpc2edge.store.artifacts.directory import DirectoryArtifactStore
from hpc2edge.store.artifacts.memory import MemoryArtifactStore
from hpc2edge.store.artifacts.redis import RedisArtifactStore

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_TTL_S",
    "KEY_SCHEME",
    "ArtifactStore",
    "DirectoryArtifactStore",
    "MemoryArtifactStore",
    "RedisArtifactStore",
    "key_for",
    "parse_key",
]
