"""Is anyone there? ``ping`` a queue's workers, and read the broker's state as a role sees it.

Any role may probe: the orchestrator before a search (:class:`hpc2edge.search.dispatch.
CeleryDispatcher`), ``hpc2edge ping`` and ``status`` on an operator's machine. Nothing here reads
local files beyond the role's own settings; the local stack's processes are :mod:`hpc2edge.ops`'.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from hpc2edge.config import Settings
from hpc2edge.errors import BrokerUnreachable, StackError
from hpc2edge.roles import QUEUES, is_task_queue
from hpc2edge.transport import broker, liveness
from hpc2edge.transport.app import make_app


def ping(settings: Settings, queue: str, *, timeout_s: float = 10.0) -> dict[str, Any]:
    """Send ``hpc2edge.ping`` to ``queue`` and return the answer with the round trip in ms."""
    from celery.exceptions import TaskRevokedError
    from celery.exceptions import TimeoutError as CeleryTimeout

    from hpc2edge.transport.results import RemoteError

    if not is_task_queue(queue):
        raise ValueError(
            f"unknown queue {queue!r}; expected {', '.join(QUEUES)} or edge.<kind> (a device kind)"
        )
    broker.client(settings).close()  # fail fast, with the reason, when the broker refuses us
    app = make_app(settings)
    try:
        with broker.translate_errors(f"ping on queue {queue!r}"):
            t0 = time.perf_counter()
            # Expires: a ping nobody answered must not wait in the queue ahead of real tasks.
            result = app.send_task("hpc2edge.ping", queue=queue, expires=timeout_s)
            try:
                answer: dict[str, Any] = result.get(timeout=timeout_s)
            except CeleryTimeout:
                answer = {}
            except (RemoteError, TaskRevokedError) as exc:
                # The ping expired just as a slow-starting worker took it: no answer (the
                # caller may ask again), not a failure.
                if getattr(exc, "type_name", "TaskRevokedError") != "TaskRevokedError":
                    raise
                answer = {}
            finally:
                # Unsubscribe now: a pending result left to the garbage collector tries to
                # unsubscribe while the interpreter shuts down.
                result.backend.remove_pending_result(result)
            if not answer:
                raise StackError(f"no worker answered on queue {queue!r} within {timeout_s:g} s")
            answer["round_trip_ms"] = (time.perf_counter() - t0) * 1000.0
            result.forget()
        return answer
    finally:
        app.close()


@dataclass
class BrokerProbe:
    """The broker as one role sees it: reachable, over which TLS, queue depths, live workers."""

    reachable: bool = False
    tls_version: str | None = None
    error: str | None = None
    queue_depths: dict[str, int] = field(default_factory=dict)
    workers: dict[str, list[str]] = field(default_factory=dict)


def probe_broker(settings: Settings, *, timeout_s: float = 2.0) -> BrokerProbe:
    """Log in as this role and read what it may: queue depths, the workers that announce
    themselves (remote control is off: :mod:`hpc2edge.transport.liveness`)."""
    out = BrokerProbe()
    try:
        c = broker.client(settings, timeout_s=timeout_s)
    except BrokerUnreachable as exc:
        out.error = str(exc)
        return out
    with c:
        out.reachable = True
        out.tls_version = broker.tls_version(c)
        try:
            queues = liveness.known_queues(c)
        except Exception:  # a login that may not read the kinds (a device's own user)
            queues = list(QUEUES)
        try:
            out.queue_depths = {q: int(c.llen(q)) for q in queues}
        except Exception as exc:
            out.error = f"queue depths unavailable to {settings.username!r}: {exc}"
        with broker.translate_errors("reading the live workers"):
            out.workers = liveness.live_workers(c, queues)
    return out
