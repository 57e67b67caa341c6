"""Which workers serve which queue, without Celery's remote control.

Remote control (``inspect``, ``ping``, ``shutdown`` over the pidbox fanout) is off on every
worker: Redis 7.0 grants a pub/sub channel for publish and subscribe together, so a worker that
listens for commands could also send them, and kombu parsed a broadcast before any check
(docs/security.md). Instead each worker announces itself:

- :class:`Heartbeat` (a worker bootstep, in a thread of its own so that a long measurement in
  the solo pool does not silence it) writes ``ZADD hpc2edge:alive:<queue> <now> <hostname>``
  every :data:`INTERVAL_S` for each queue it consumes, and removes itself when it stops;
- :func:`live_workers` reads the members seen within :data:`STALE_S`.

Device kinds come and go with their units, so the edge queues are not a fixed list: each edge
worker also writes its queue into :data:`KINDS_KEY` (``ZADD hpc2edge:alive:edge:kinds <now>
edge.<kind>``), and :func:`known_queues` is ``train``, ``edge`` and every kind queue seen within
:data:`TTL_S`. Any edge login can write that set, so what is read from it is checked: a member
that is not a kind queue is ignored, a time further ahead than :data:`FUTURE_S` is ignored and
pruned, and at most :data:`MAX_KINDS` are read. Where the caller knows its queues (a search:
its stages'), it asks for them by name and does not depend on this index.

Each edge worker is one *unit* of its kind, and its heartbeat does two more things per beat
(:mod:`hpc2edge.transport.units` holds the records, :mod:`hpc2edge.transport.fleet` the trusted
side that reads them):

- it writes its report, :data:`~hpc2edge.transport.units.UNIT` as of now, into the field of its
  name in ``hpc2edge:alive:<queue>:units`` (:func:`units_key`): busy or idle, measurements done,
  software stack, last throttle flag, latest reference check;
- it reads its own entry of ``hpc2edge:fleet:quarantine:<queue>``, which only the orchestrator
  and the admin write, and when that says "quarantined" it stops consuming the queue and leaves
  the queue's live set (it serves the queue no more, so it gives the search no capacity), while
  it goes on reporting. A release resumes it (:class:`QuarantineGate`). The unit never decides
  this itself.

The ACL lets a worker role write only its own queues' keys (``hpc2edge:alive:edge*`` for
``edge``: the set, the units hash and :data:`KINDS_KEY`); the orchestrator and the monitor read
them. The edge role reads the quarantine hashes (``%R~hpc2edge:fleet:quarantine:edge*``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from celery import bootsteps

from hpc2edge.roles import QUEUES, is_edge_queue
from hpc2edge.transport.units import (
    UNIT,
    QuarantineEntry,
    QuarantineState,
    UnitReport,
    UnitState,
    quarantine_key,
)

log = logging.getLogger("hpc2edge.liveness")

KEY_PREFIX = "hpc2edge:alive:"
INTERVAL_S = 5.0
#: Seen within this long: alive. Three beats, so one lost write does not drop a worker.
STALE_S = 3 * INTERVAL_S
#: The set of a queue expires when no worker of it has written for this long.
TTL_S = 3600
#: Edge queues seen by their workers, scored by when (``hpc2edge:alive:`` + ``edge:kinds``: no
#: queue's name, since a kind name has no colon).
KINDS_KEY = f"{KEY_PREFIX}edge:kinds"
#: The most device kinds read from :data:`KINDS_KEY` (the most recently seen first).
MAX_KINDS = 256
#: How far ahead of the reader's clock a kind's time may be (clocks differ between sites);
#: later times are ignored and pruned, so planted ones cannot push real kinds out.
FUTURE_S = 300.0


def key(queue: str) -> str:
    return f"{KEY_PREFIX}{queue}"


def units_key(queue: str) -> str:
    """The hash of the reports of ``queue``'s units (field: unit, value: a UnitReport)."""
    return f"{key(queue)}:units"


def _kind_seen(pipe: Any, queue: str, now: float) -> None:
    if is_edge_queue(queue):
        pipe.zadd(KINDS_KEY, {queue: now})
        pipe.zremrangebyscore(KINDS_KEY, "-inf", now - TTL_S)
        # A time ahead of any clock's is planted, not seen: it would rank first for good.
        pipe.zremrangebyscore(KINDS_KEY, f"({now + FUTURE_S}", "+inf")
        pipe.expire(KINDS_KEY, TTL_S)


def announce(client: Any, queues: Iterable[str], hostname: str, now: float) -> None:
    pipe = client.pipeline()
    for queue in queues:
        pipe.zadd(key(queue), {hostname: now})
        pipe.zremrangebyscore(key(queue), "-inf", now - TTL_S)
        pipe.expire(key(queue), TTL_S)
        _kind_seen(pipe, queue, now)
    pipe.execute()


def publish_report(client: Any, queue: str, report: UnitReport, now: float) -> None:
    """Write ``report`` into its unit's field of :func:`units_key` (expiring with the set)."""
    pipe = client.pipeline()
    pipe.hset(units_key(queue), report.unit, report.encode())
    pipe.expire(units_key(queue), TTL_S)
    _kind_seen(pipe, queue, now)
    pipe.execute()


def own_entry(client: Any, queue: str, unit: str) -> QuarantineEntry | None:
    """The trusted side's entry about ``unit``, or None when there is none or it does not
    parse (only the orchestrator and the admin write it; a broken one stops nobody)."""
    raw = client.hget(quarantine_key(queue), unit)
    if raw is None:
        return None
    try:
        return QuarantineEntry.from_json(raw)
    except ValueError as exc:
        log.warning("ignoring the malformed quarantine entry of %s on %s: %s", unit, queue, exc)
        return None


def known_queues(client: Any, now: float | None = None) -> list[str]:
    """``train``, ``edge`` and the kind queues whose workers announced themselves within
    :data:`TTL_S` (checked names only, at most :data:`MAX_KINDS`)."""
    now = time.time() if now is None else now
    members = client.zrevrangebyscore(
        KINDS_KEY, now + FUTURE_S, now - TTL_S, start=0, num=MAX_KINDS
    )
    out = list(QUEUES)
    for m in members:
        name = m.decode(errors="replace") if isinstance(m, bytes) else str(m)
        if is_edge_queue(name) and name not in out:
            out.append(name)
    return out


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


class QuarantineGate:
    """Stops and resumes this unit's consumer of one queue as its quarantine entry says.

    :meth:`observe` runs in the heartbeat thread with the entry just read. :meth:`apply` must run
    in the consumer's own thread, the worker's event loop (kombu's consumer is not thread-safe):
    the heartbeat hands it over with ``hub.call_soon``, and under the solo pool it then runs
    between two tasks, never inside a measurement. Each change is logged once, in one line.
    """

    def __init__(self, queue: str, unit: str, consumer: Any) -> None:
        self.queue = queue
        self.unit = unit
        self._consumer = consumer
        self._lock = threading.Lock()
        self._wanted: QuarantineEntry | None = None  # the entry, while it says quarantined
        self._paused = False

    @property
    def paused(self) -> bool:
        """The consumer of :attr:`queue` is stopped."""
        with self._lock:
            return self._paused

    def observe(self, entry: QuarantineEntry | None) -> bool:
        """Take the entry read now; True when the consumer must change (call :meth:`apply`)."""
        quarantined = entry is not None and entry.state is QuarantineState.QUARANTINED
        with self._lock:
            self._wanted = entry if quarantined else None
            return quarantined != self._paused

    def apply(self) -> None:
        """Cancel or re-add the queue's consumer to match the last entry observed."""
        with self._lock:
            wanted, paused = self._wanted, self._paused
        if (wanted is not None) == paused:
            return
        try:
            if wanted is not None:
                self._consumer.cancel_task_queue(self.queue)
            else:
                self._consumer.add_task_queue(self.queue)
        except Exception as exc:  # a consumer between connections: the next beat tries again
            log.warning("could not %s %s: %s", "stop" if wanted else "resume", self.queue, exc)
            return
        with self._lock:
            self._paused = wanted is not None
        if wanted is not None:
            log.warning(
                "%s is quarantined (by %s: %s): stopped consuming %s until an operator runs "
                "`hpc2edge devices --release %s`",
                self.unit,
                wanted.by,
                wanted.reason,
                self.queue,
                self.unit,
            )
        else:
            log.warning(
                "%s was released from quarantine: consuming %s again", self.unit, self.queue
            )


class Heartbeat(bootsteps.StartStopStep):
    """The worker bootstep behind :func:`announce` (registered by :mod:`hpc2edge.transport.app`),
    and, for an edge queue, the unit's report and its :class:`QuarantineGate`."""

    requires = ("celery.worker.components:Pool",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, worker: Any) -> None:
        queues = sorted(worker.app.amqp.queues.consume_from or worker.app.amqp.queues)
        hostname = worker.hostname
        beat = Beat(
            queues,
            hostname,
            gates=[
                QuarantineGate(q, hostname, worker.consumer) for q in queues if is_edge_queue(q)
            ],
            hub=worker.hub,
            time_scale=worker.app.settings.edge.time_scale,
        )
        self._thread = threading.Thread(
            target=self._run,
            args=(worker.app.settings, beat),
            name="hpc2edge-heartbeat",
            daemon=True,
        )
        self._thread.start()

    def _run(self, settings: Any, beat: Beat) -> None:
        from hpc2edge.transport import broker

        client = None
        while not self._stop.is_set():
            try:
                if client is None:
                    client = broker.client(settings, retries=1)
                beat.once(client, time.time())
            except Exception as exc:  # the broker away: say so, try again next beat
                log.warning("heartbeat to the broker failed: %s", exc)
                client = None
            self._stop.wait(INTERVAL_S)
        if client is not None:
            try:
                beat.last(client, time.time())
            except Exception as exc:
                log.warning("could not withdraw from the live workers: %s", exc)
            client.close()

    def stop(self, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    shutdown = stop


class Beat:
    """What one heartbeat writes and reads, apart from the thread that repeats it.

    The liveness set comes first and its failure fails the beat (the thread reconnects). The
    report and the quarantine entry need ACL rules a broker may lack (an older
    ``users.acl``): a refusal of either is said once and the unit goes on serving, unchecked.
    """

    def __init__(
        self,
        queues: list[str],
        hostname: str,
        *,
        gates: list[QuarantineGate],
        hub: Any,
        time_scale: float = 1.0,
        unit: UnitState = UNIT,
    ) -> None:
        self.queues = queues
        self.hostname = hostname
        self.gates = {g.queue: g for g in gates}
        self._hub = hub
        self._time_scale = time_scale
        self._unit = unit
        self._refused: set[str] = set()  # what the ACL refused, said once and not every beat

    def once(self, client: Any, now: float) -> None:
        """Announce the queues served, report on each edge queue, and read the quarantine."""
        paused = [q for q in self.queues if q in self.gates and self.gates[q].paused]
        announce(client, [q for q in self.queues if q not in paused], self.hostname, now)
        if paused:
            withdraw(client, paused, self.hostname)
        for queue, gate in self.gates.items():
            self._report(client, gate, now, offline=False)
            found, entry = self._permitted(
                f"reading {quarantine_key(queue)}", own_entry, client, queue, self.hostname
            )
            if found and gate.observe(entry):
                if self._hub is None:  # no event loop to hand the change to (not a Redis worker)
                    log.warning("cannot stop or resume consuming %s without the event loop", queue)
                    continue
                self._hub.call_soon(gate.apply)

    def last(self, client: Any, now: float) -> None:
        """On the way out: leave the live sets and leave a last report that says so."""
        withdraw(client, self.queues, self.hostname)
        for gate in self.gates.values():
            self._report(client, gate, now, offline=True)

    def _report(self, client: Any, gate: QuarantineGate, now: float, *, offline: bool) -> None:
        report = self._unit.report(
            self.hostname, paused=gate.paused, time_scale=self._time_scale, offline=offline
        )
        self._permitted(
            f"writing {units_key(gate.queue)}", publish_report, client, gate.queue, report, now
        )

    def _permitted(self, what: str, call: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
        """(True, ``call(*args)``), or (False, None) when the broker's ACL refuses it."""
        import redis

        try:
            result = call(*args)
        except redis.exceptions.NoPermissionError as exc:
            if what not in self._refused:
                log.warning("the broker's ACL refuses %s (%s): this unit runs unchecked", what, exc)
                self._refused.add(what)
            return False, None
        self._refused.discard(what)
        return True, result
