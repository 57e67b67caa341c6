"""Artifacts on the broker: the one store both administrative domains reach."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hpc2edge.store.artifacts.base import DEFAULT_MAX_BYTES, DEFAULT_TTL_S, ArtifactStore, parse_key
from hpc2edge.transport.broker import translate_errors

if TYPE_CHECKING:
    import redis


class RedisArtifactStore(ArtifactStore):
    """Blobs as Redis strings under ``<prefix><hex>``, expiring ``ttl_s`` after their last put.

    ``client`` is a connected client for one role (:func:`hpc2edge.transport.broker.client`); it
    must return bytes (no ``decode_responses``). The ACL decides who may write: the orchestrator
    may, the ``hpc`` and ``edge`` roles may only read, so their ``put`` raises :class:`BrokerError`.

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
