"""Dead letters: the messages a worker refused, kept where an operator can look at them.

A message that fails the intake's check (:mod:`hpc2edge.transport.envelope`), that Celery could
not turn into a task, or that was redelivered after it stopped a worker, is acknowledged (taken
off the queue for good, never put back) and recorded here: a JSON record pushed onto the Redis
list ``hpc2edge:dead:<queue>``, trimmed to :data:`MAX_RECORDS` and expiring
:data:`TTL_S` after the last push, so a flood of bad messages costs a bounded amount of memory.

A record holds when, where and why, the claimed origin (the ``origin`` header: the sender's
host and pid as the *sender* wrote them, so a hint, not a proof), the task name and id when
they could be read, the size, and an excerpt of at most
:data:`~hpc2edge.transport.envelope.EXCERPT_CHARS` characters: never the whole message.

The ACL lets each worker role push to its own queue's list only; the orchestrator and admin
read them all (``hpc2edge dead-letters``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

KEY_PREFIX = "hpc2edge:dead:"
MAX_RECORDS = 1000
TTL_S = 7 * 24 * 3600


def key(queue: str) -> str:
    return f"{KEY_PREFIX}{queue}"


@dataclass(frozen=True)
class DeadLetter:
    """One refused message."""

    queue: str
    reason: str
    worker: str
    time_unix_s: float
    size_bytes: int
    excerpt: str
    task: str | None = None
    task_id: str | None = None
    origin: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> DeadLetter:
        """Parse a stored record; a record that is not one of ours becomes one saying so (the
        list is writable by the queue's workers, so it is read as untrusted too)."""
        try:
            data = json.loads(text)
            fields = {f: data[f] for f in cls.__dataclass_fields__ if f in data}
            record = cls(**fields)
            text_fields = (record.queue, record.reason, record.worker, record.excerpt)
            optional = (record.task, record.task_id, record.origin)
            if not (
                all(isinstance(v, str) for v in text_fields)
                and all(v is None or isinstance(v, str) for v in optional)
                and isinstance(record.time_unix_s, int | float)
                and isinstance(record.size_bytes, int)
                and 0 <= record.time_unix_s < 1e11
            ):
                raise TypeError
            return record
        except (ValueError, TypeError, KeyError, RecursionError):
            raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
            return cls(
                queue="?",
                reason="unreadable dead-letter record",
                worker="?",
                time_unix_s=0.0,
                size_bytes=len(raw),
                excerpt=raw[:200],
            )


def make(
    queue: str,
    reason: str,
    raw: str | bytes,
    *,
    worker: str,
    task: str | None = None,
    task_id: str | None = None,
    origin: Any = None,
    now: float | None = None,
) -> DeadLetter:
    from hpc2edge.transport.envelope import excerpt

    def text(value: Any, limit: int) -> str | None:
        return printable(value[:limit]) if isinstance(value, str) else None

    return DeadLetter(
        queue=printable(queue[:200]),
        reason=printable(reason[:500]),
        worker=printable(worker[:200]),
        time_unix_s=time.time() if now is None else now,
        size_bytes=len(raw),
        excerpt=printable(excerpt(raw)),
        task=text(task, 200),
        task_id=text(task_id, 200),
        origin=text(origin, 200),
    )


def printable(text: str) -> str:
    """``text`` with control characters escaped: what a sender wrote may reach a terminal or a
    log line, and must not move the cursor or forge a line."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def push(client: Any, record: DeadLetter) -> None:
    """Record ``record`` through a redis-py client (kombu's channel client is one)."""
    k = key(record.queue)
    pipe = client.pipeline()
    pipe.lpush(k, record.to_json())
    pipe.ltrim(k, 0, MAX_RECORDS - 1)
    pipe.expire(k, TTL_S)
    pipe.execute()


def read(client: Any, queues: Iterable[str], *, limit: int = 100) -> list[DeadLetter]:
    """The newest ``limit`` records of each queue, newest first."""
    records: list[DeadLetter] = []
    for queue in queues:
        records += [DeadLetter.from_json(r) for r in client.lrange(key(queue), 0, limit - 1)]
    return sorted(records, key=lambda r: r.time_unix_s, reverse=True)


def clear(client: Any, queues: Iterable[str]) -> int:
    """Drop the lists of ``queues``; returns how many records went."""
    total = 0
    for queue in queues:
        total += int(client.llen(key(queue)))
        client.delete(key(queue))
    return total
