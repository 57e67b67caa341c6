"""Worker intake: no message taken from a queue can stop the worker that took it.

Two layers, because kombu and Celery each parse part of a message before any task code runs:

1. :class:`Channel` (kombu's Redis channel, chosen by ``broker_transport``) checks the raw list
   entry with :func:`hpc2edge.transport.envelope.check` the moment ``BRPOP``/``RPOP`` returns
   it, before kombu builds a ``Message`` from it. A message that fails is recorded as a dead
   letter (:mod:`hpc2edge.transport.deadletters`) and dropped: it was popped and never entered
   the role's unacked hash, so nothing can put it back in the queue. A message that passes but
   was *redelivered* (a worker took it and died, or gave it back at shutdown) may run once more;
   the second redelivery is quarantined, so one message cannot crash-loop a device under
   ``Restart=always``.
2. :class:`Consumer` (Celery's, chosen by ``worker_consumer``) wraps Celery's task handler: any
   error while Celery turns the message into a request (or, in the solo pool, runs it outside
   the task's own error handling) dead-letters and acknowledges that one message instead of
   leaving the event loop. Connection errors still propagate: those are Celery's to retry.

What is checked against what (:class:`Policy`): the task name against the tasks this worker
registered for that queue (never Celery's built-in ``celery.*`` tasks), the task id against the
queue (:mod:`hpc2edge.transport.taskids`), the content type against the app's accept list.

Workers consume no broadcast channel: remote control is off and gossip is not used
(``worker_enable_remote_control = False`` in :mod:`hpc2edge.transport.app`), so the pidbox fanout,
the one place kombu parsed foreign JSON before any check, is never read by a worker.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Collection
from dataclasses import dataclass, field
from queue import Empty
from typing import Any

from celery.worker.consumer.consumer import Consumer as CeleryConsumer
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str

from hpc2edge.roles import ROLE_OF_QUEUE, task_queue_ok
from hpc2edge.transport import deadletters, envelope

log = logging.getLogger("hpc2edge.intake")

#: Where ``broker_transport_options`` carries the policy to the channel.
POLICY_OPTION = "hpc2edge_intake"
#: The hash, per queue, counting redeliveries by task id (under the queue's dead-letter prefix,
#: so the ACL grant for one covers the other).
REDELIVERIES_SUFFIX = ":redelivered"
#: Deliveries after the first that a message may have; the next one is quarantined.
MAX_REDELIVERIES = 1


@dataclass
class Policy:
    """What a worker's app accepts: resolved lazily, once its tasks are all registered."""

    app: Any
    max_bytes: int = envelope.MAX_MESSAGE_BYTES
    worker: str = field(default_factory=socket.gethostname)
    _content_types: frozenset[str] | None = None
    _by_queue: dict[str, frozenset[str]] | None = None

    def is_task_queue(self, queue: str) -> bool:
        """One of the app's task queues (``train``, ``edge``, ``edge.<kind>``); others (an
        admin's reply queue of ``celery inspect``) carry no task and are not checked as one."""
        return queue in self._tasks_by_queue()

    def tasks_for(self, queue: str) -> Collection[str]:
        return self._tasks_by_queue().get(queue, frozenset())

    def _tasks_by_queue(self) -> dict[str, frozenset[str]]:
        # Resolved on the first message, once the worker has registered every task (its
        # --include modules too), and not again on each one.
        if self._by_queue is None:
            names = [n for n in self.app.tasks if not n.startswith("celery.")]
            queues = [q.name for q in self.app.conf.task_queues or () if q.name]
            self._by_queue = {q: frozenset(n for n in names if task_queue_ok(n, q)) for q in queues}
        return self._by_queue

    @property
    def content_types(self) -> frozenset[str]:
        if self._content_types is None:
            from kombu.serialization import registry

            accept = self.app.conf.accept_content or ["json"]
            self._content_types = frozenset(registry.name_to_type.get(n, n) for n in accept)
        return self._content_types


def record(channel: Any, queue: str, reason: str, raw: str | bytes, **about: Any) -> None:
    """Log a refused message and push its dead letter; a failing push is logged, not raised."""
    worker = getattr(_policy(channel), "worker", None) or socket.gethostname()
    letter = deadletters.make(queue, reason, raw, worker=worker, **about)
    log.error(
        "refused a message on queue %r (task %s, id %s, origin %s, %d bytes): %s",
        queue,
        letter.task,
        letter.task_id,
        letter.origin,
        letter.size_bytes,
        letter.reason,
    )
    try:
        with channel.conn_or_acquire() as client:
            deadletters.push(client, letter)
    except Exception as exc:  # the broker refusing the record must not stop the worker either
        log.error("could not record the dead letter on %r: %s", queue, exc)


def _policy(channel: Any) -> Policy | None:
    options = getattr(getattr(channel.connection, "client", None), "transport_options", None)
    policy = (options or {}).get(POLICY_OPTION)
    return policy if isinstance(policy, Policy) else None


class QoS(kombu_redis.QoS):
    """kombu's unacked bookkeeping, reading the role's unacked hash as untrusted.

    Every device of a role can write that role's hash (``hpc2edge:unacked:edge``): an entry that
    is not ``[message, exchange, routing key]`` made kombu's restore raise at every worker start
    (a crash loop under ``Restart=always``). Such an entry is dropped and dead-lettered; a
    restore that fails for another reason (the broker lacks the preloaded scripts of the
    unacked mutex) is logged and tried again at the next interval.
    """

    def restore_visible(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().restore_visible(*args, **kwargs)
        except self.channel.connection_errors:
            raise
        except Exception as exc:
            log.error("cannot restore timed-out messages yet: %s", exc)
            return None

    def restore_by_tag(self, tag: Any, client: Any = None, leftmost: bool = False) -> None:
        channel = self.channel
        refused: list[bytes | str] = []

        def restore_transaction(pipe: Any) -> None:
            p = pipe.hget(self.unacked_key, tag)
            pipe.multi()
            self._remove_from_indices(tag, pipe)  # a malformed entry goes with it
            if not p:
                return
            try:
                message, exchange, routing_key = kombu_redis.loads(bytes_to_str(p))
                if not (isinstance(message, dict) and isinstance(message.get("properties"), dict)):
                    raise TypeError("not a message")
                if not (isinstance(exchange, str) and isinstance(routing_key, str)):
                    raise TypeError("not an exchange and routing key")
            except Exception:
                refused.append(p)
                return
            channel._do_restore_message(message, exchange, routing_key, pipe, leftmost)

        with channel.conn_or_acquire(client) as conn:
            conn.transaction(restore_transaction, self.unacked_key)
        # The hash is the role's (hpc2edge:unacked:<role>): record it with the role's queue.
        role = str(self.unacked_key).rsplit(":", 1)[-1]
        queue = {r: q for q, r in ROLE_OF_QUEUE.items()}.get(role, role)
        for p in refused:
            record(channel, queue, "malformed entry in the role's unacked hash, dropped", p)


class Channel(kombu_redis.Channel):
    """kombu's Redis channel with the envelope check in front of delivery."""

    QoS = QoS

    def _admit(self, item: bytes | str, queue: str) -> dict[str, Any] | None:
        policy = _policy(self)
        if policy is None or not policy.is_task_queue(queue):
            try:
                payload = kombu_redis.loads(bytes_to_str(item))
            except ValueError:
                payload = None
            if not isinstance(payload, dict):
                log.error("dropped a message on %r that is not a JSON envelope", queue)
                return None
            return payload
        try:
            checked = envelope.check(
                item,
                queue,
                tasks=policy.tasks_for(queue),
                content_types=policy.content_types,
                max_bytes=policy.max_bytes,
            )
        except envelope.BadMessage as exc:
            about = {"task": exc.task, "task_id": exc.task_id, "origin": exc.origin}
            record(self, queue, exc.reason, item, **about)
            return None
        except Exception as exc:  # a check that itself failed (it should not): refuse all the same
            record(self, queue, f"{type(exc).__name__} while checking the message", item)
            return None
        headers = checked.envelope["headers"]
        if checked.redelivered and self._redeliveries(queue, checked.task_id) > MAX_REDELIVERIES:
            record(
                self,
                queue,
                f"redelivered more than {MAX_REDELIVERIES} time(s): it stopped a worker each "
                "time it ran, so it is quarantined",
                item,
                task=checked.task,
                task_id=checked.task_id,
                origin=headers.get("origin"),
            )
            return None
        return checked.envelope

    def _redeliveries(self, queue: str, task_id: str) -> int:
        key = deadletters.key(queue) + REDELIVERIES_SUFFIX
        try:
            with self.conn_or_acquire() as client:
                count, _ = (
                    client.pipeline().hincrby(key, task_id, 1).expire(key, deadletters.TTL_S)
                ).execute()
            return int(count)
        except Exception as exc:  # unknown count: let it run rather than lose a real task
            log.warning("cannot count redeliveries on %r: %s", queue, exc)
            return 0

    # kombu 5.7's Channel._brpop_read, with _admit between the pop and the delivery.
    def _brpop_read(self, **options: Any) -> bool:
        try:
            try:
                dest__item = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if not dest__item:
                raise Empty()
            dest, item = dest__item
            dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            payload = self._admit(item, dest)
            if payload is not None:
                self._deliver_checked(payload, dest, item)
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]
            flush = getattr(self, "_flush_brpop_reauth", None)
            if flush is not None:
                flush()

    def _deliver_checked(self, payload: dict[str, Any], queue: str, raw: bytes | str) -> None:
        """kombu's delivery (Message, unacked hash, Celery's handler), where anything but a
        connection error dead-letters the one message: the check should have caught it."""
        try:
            self.connection._deliver(payload, queue)
        except self.connection_errors:
            raise
        except Exception as exc:
            record(self, queue, f"{type(exc).__name__} while delivering: {exc}", raw)
            tag = (payload.get("properties") or {}).get("delivery_tag")
            if isinstance(tag, str):
                with contextlib.suppress(Exception):
                    self.qos.ack(tag)

    def maybe_refresh_binding_expiry(self) -> Any:
        # Lua scripts (EVALSHA of preloaded scripts only): a broker started without the preload
        # refuses them; that must not end the worker (docs/security.md, "Commands").
        try:
            return super().maybe_refresh_binding_expiry()
        except self.connection_errors:
            raise
        except Exception as exc:
            log.error("cannot refresh binding expiry: %s", exc)
            return None

    # kombu 5.7's Channel._get (basic_get, synchronous drains), with the same check.
    def _get(self, queue: str, timeout: Any = None) -> dict[str, Any]:
        with self.conn_or_acquire() as client:
            for pri in self.priority_steps:
                while True:
                    item = client.rpop(self._q_for_pri(queue, pri))
                    if not item:
                        break
                    payload = self._admit(item, queue)
                    if payload is not None:
                        self._maybe_update_queues_expire(client, queue)
                        return payload
            self._maybe_update_queues_expire(client, queue)
            raise Empty()


class Transport(kombu_redis.Transport):
    """kombu's Redis transport over :class:`Channel` (``broker_transport`` names this class)."""

    Channel = Channel


class Consumer(CeleryConsumer):
    """Celery's consumer whose task handler cannot raise on a message (``worker_consumer``).

    Mingle and gossip are always off, whatever the command line says: both broadcast on the
    remote-control channel or read other workers' events, which the ACL no longer grants, and
    the plain ``celery -A hpc2edge worker -Q edge`` that users type must work as typed.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        options = dict(kwargs.get("worker_options") or {})
        options.update(without_mingle=True, without_gossip=True)
        kwargs["worker_options"] = options
        super().__init__(*args, **kwargs)

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Any:
        handler = super().create_task_handler(*args, **kwargs)
        connection_errors = tuple(self.connection_errors or ())
        policy = (self.app.conf.broker_transport_options or {}).get(POLICY_OPTION)
        if isinstance(policy, Policy):
            policy.worker = self.hostname

        def on_task_received(message: Any) -> Any:
            try:
                return handler(message)
            except connection_errors:
                raise
            except Exception as exc:
                self._refuse(message, f"{type(exc).__name__} while taking the task: {exc}")
                return None

        return on_task_received

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        # A signed body that does not verify, or one that is not what its content type says.
        self._refuse(message, f"cannot decode the body: {type(exc).__name__}: {exc}")

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self._refuse(message, "not a Celery task message")

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        # Celery's own would also write a failure result under the sender's task id.
        self._refuse(message, f"unknown task: {exc}")

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._refuse(message, f"invalid task: {exc}")

    def _refuse(self, message: Any, reason: str) -> None:
        headers = message.headers if isinstance(getattr(message, "headers", None), dict) else {}
        info = getattr(message, "delivery_info", None) or {}
        queue = info.get("routing_key") or info.get("exchange") or "?"
        raw: str | bytes = getattr(message, "body", b"") or b""
        if not isinstance(raw, str | bytes):
            raw = repr(raw)
        record(
            message.channel,
            str(queue),
            reason,
            raw,
            task=headers.get("task"),
            task_id=headers.get("id"),
            origin=headers.get("origin"),
        )
        if not getattr(message, "acknowledged", True):
            try:
                message.ack()
            except Exception as exc:
                log.error("could not acknowledge a refused message: %s", exc)
