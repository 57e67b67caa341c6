"""Which workers serve which queue, without Celery's remote control.

Remote control (``inspect``, ``ping``, ``shutdown`` over the pidbox fanout) is off on every
worker: Redis 7.0 grants a pub/sub channel for publish and subscribe together, so a worker that
listens for commands could also send them, and kombu parsed a broadcast before any check
(docs/security.md). Instead each worker announces itself:

- :class:`Heartbeat` (a worker bootstep, in a thread of its own so that a long measurement in
  the solo pool does not silence it) writes ``ZADD hpc2edge:alive:<queue> <now> <hostname>``
  every :data:`INTERVAL_S` for each queue it consumes, and removes itself when it stops;
- :func:`live_workers` reads the members seen within :data:`STALE_S`.

The ACL lets a worker role write only its own queues' sets (``hpc2edge:alive:edge*`` for
``edge``); the orchestrator and the monitor read them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from celery import bootsteps

log = logging.getLogger("hpc2edge.liveness")

KEY_PREFIX = "hpc2edge:alive:"
INTERVAL_S = 5.0
#: Seen within this long: alive. Three beats, so one lost write does not drop a worker.
STALE_S = 3 * INTERVAL_S
#: The set of a queue expires when no worker of it has written for this long.
TTL_S = 3600


def key(queue: str) -> str:
    return f"{KEY_PREFIX}{queue}"


def announce(client: Any, queues: Iterable[str], hostname: str, now: float) -> None:
    pipe = client.pipeline()
    for queue in queues:
        pipe.zadd(key(queue), {hostname: now})
        pipe.zremrangebyscore(key(queue), "-inf", now - TTL_S)
        pipe.expire(key(queue), TTL_S)
    pipe.execute()


def withdraw(client: Any, queues: Iterable[str], hostname: str) -> None:
    pipe = client.pipeline()
    for queue in queues:
        pipe.zrem(key(queue), hostname)
    pipe.execute()


def live_workers(
    client: Any, queues: Iterable[str], now: float | None = None
) -> dict[str, list[str]]:
    """Worker hostnames per queue that announced themselves within :data:`STALE_S`."""
    now = time.time() if now is None else now
    out: dict[str, list[str]] = {}
    for queue in queues:
        members = client.zrangebyscore(key(queue), now - STALE_S, "+inf")
        out[queue] = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)
    return out


class Heartbeat(bootsteps.StartStopStep):
    """The worker bootstep behind :func:`announce` (registered by :mod:`hpc2edge.transport.app`)."""

    requires = ("celery.worker.components:Pool",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, worker: Any) -> None:
        queues = sorted(worker.app.amqp.queues.consume_from or worker.app.amqp.queues)
        hostname = worker.hostname
        settings = worker.app.settings
        self._thread = threading.Thread(
            target=self._run,
            args=(settings, queues, hostname),
            name="hpc2edge-heartbeat",
            daemon=True,
        )
        self._thread.start()

    def _run(self, settings: Any, queues: list[str], hostname: str) -> None:
        from hpc2edge.transport import broker

        client = None
        while not self._stop.is_set():
            try:
                if client is None:
                    client = broker.client(settings, retries=1)
                announce(client, queues, hostname, time.time())
            except Exception as exc:  # the broker away: say so, try again next beat
                log.warning("heartbeat to the broker failed: %s", exc)
                client = None
            self._stop.wait(INTERVAL_S)
        if client is not None:
            try:
                withdraw(client, queues, hostname)
            except Exception as exc:
                log.warning("could not withdraw from the live workers: %s", exc)
            client.close()

    def stop(self, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    shutdown = stop
