"""Connecting to the broker: a verified redis-py client per role, and one error translation.

Every role, the Jetson included, reaches Redis through :func:`client` (TLS verified against our
CA, the role's client certificate, its ACL user) and turns redis-py and kombu errors into
:class:`~hpc2edge.errors.BrokerError` with :func:`translate_errors`. Running a broker is not
here: that is :mod:`hpc2edge.ops.localbroker` (local) or ``k8s/`` (production).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from hpc2edge.errors import BrokerError, BrokerUnreachable
from hpc2edge.transport.tls import ssl_options

if TYPE_CHECKING:
    import redis

    from hpc2edge.config import Settings


def client(settings: Settings, *, retries: int = 0, timeout_s: float | None = None) -> redis.Redis:
    """A redis-py client for this role: TLS verified against our CA, client certificate, ACL user.

    The first command is sent here (PING) so that a refused handshake or login surfaces as
    :class:`BrokerUnreachable` at once, with the reason, instead of at first use.
    """
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    b = settings.broker
    opts = ssl_options(settings.tls)
    timeout = b.connect_timeout_s if timeout_s is None else timeout_s
    c = redis.Redis(
        host=b.host,
        port=b.port,
        db=0,
        username=settings.username,
        password=b.password,
        ssl=True,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), retries),
        **opts,
    )
    try:
        c.ping()
    except (
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        redis.exceptions.AuthenticationError,
        redis.exceptions.ResponseError,
        ssl.SSLError,
        OSError,
    ) as exc:
        c.close()
        raise BrokerUnreachable(
            f"cannot reach the broker at {b.host}:{b.port} as {settings.username!r}: {exc}"
        ) from None
    return c


@contextlib.contextmanager
def translate_errors(action: str) -> Iterator[None]:
    """Turn redis-py / kombu errors raised while doing ``action`` into :class:`BrokerError`."""
    import redis
    from kombu.exceptions import KombuError

    try:
        yield
    except (redis.exceptions.RedisError, KombuError, ssl.SSLError, ConnectionError) as exc:
        raise BrokerError(f"{action} failed: {exc}") from exc


def tls_version(c: redis.Redis) -> str | None:
    """The TLS protocol version of a connected client (e.g. ``TLSv1.3``)."""
    conn: Any = c.connection_pool.get_connection()
    try:
        sock = getattr(conn, "_sock", None)
        return sock.version() if isinstance(sock, ssl.SSLSocket) else None
    finally:
        c.connection_pool.release(conn)
