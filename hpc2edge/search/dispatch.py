"""How the orchestrator gets work done: over Celery, or in this process for tests and notebooks.

A :class:`Dispatcher` sends a task under a task id the orchestrator chose and records before
sending (so a restarted orchestrator finds it again), and answers polls without blocking:

- ``submit(kind, payload, task_id, expires_s)``: ``kind`` is ``measure`` or ``train``; the task must
  not run after ``expires_s`` seconds (a message that waited longer in the queue is dropped by the
  worker, so a retry never races a stale copy).
- ``poll(task_id)``: ``None`` while waiting, else an :class:`Outcome`.
- ``artifacts``: the store the edge fetches models from.

:class:`CeleryDispatcher` is the real one. :class:`InlineDispatcher` runs handlers (plain
functions: the same ``measure_request`` / ``train_request`` the workers call, or test doubles)
when first polled; the orchestrator's tests run over it, and the same scenarios run over Celery
in ``tests/integration``.
"""

from __future__ import annotations

import abc
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hpc2edge.roles import KIND_RE, QUEUE_EDGE, QUEUE_TRAIN, is_edge_queue
from hpc2edge.store.artifacts import ArtifactStore
from hpc2edge.transport.taskids import queue_of
from hpc2edge.transport.units import UNIT_RE

log = logging.getLogger(__name__)

KINDS = ("measure", "train")
KIND_OF_QUEUE = {QUEUE_EDGE: "measure", QUEUE_TRAIN: "train"}


def task_kind_of_queue(queue: object) -> str | None:
    """The task kind a queue carries: ``train``, or ``measure`` on any device kind's queue."""
    if queue == QUEUE_TRAIN:
        return "train"
    return "measure" if is_edge_queue(queue) else None


@dataclass(frozen=True)
class Outcome:
    """A finished task: its result dict, or why there is none.

    ``ok`` is True only when the task returned a result with ``status == "ok"``. A task that
    returned a typed error (bad input, a failed run) has ``error`` from the result; a task that
    raised, expired or was lost has ``error`` from the transport.
    """

    ok: bool
    result: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    #: True when the failure says nothing about the candidate (expired, lost, broker trouble):
    #: worth another attempt.
    transient: bool = False
    #: True when what was stored is not a result of this task (undecodable, malformed, signed
    #: by the wrong role): worth another attempt at once, under a new task id.
    rejected: bool = False

    @property
    def reason(self) -> str:
        if self.error is None:
            return ""
        return f"{self.error.get('type', 'Error')}: {self.error.get('message', '')}"

    @classmethod
    def from_result(cls, result: Any, kind: str | None = None) -> Outcome:
        """The outcome of a task that returned ``result``: checked, since any worker of the
        queue can write it (a malformed one is :meth:`rejected`, never a crash later)."""
        if not isinstance(result, dict):
            return cls.rejected_because(f"the result is a {type(result).__name__}, not a record")
        if result.get("status") == "ok":
            problem = result_problem(kind, result)
            if problem:
                return cls.rejected_because(problem)
            return cls(True, result)
        error = result.get("error")
        if not (isinstance(error, dict) and all(isinstance(error.get(k), str) for k in ERROR_KEYS)):
            return cls.rejected_because("an error result without a typed error")
        error = {k: error[k][:MAX_ERROR_CHARS] for k in ERROR_KEYS}
        return cls(False, result, error, transient=error["type"] in TRANSIENT_ERRORS)

    @classmethod
    def rejected_because(cls, why: str) -> Outcome:
        error = {"type": REJECTED, "message": why[:MAX_ERROR_CHARS]}
        return cls(False, None, error, transient=True, rejected=True)


#: The error type of a stored record that was not a result of its task.
REJECTED = "ResultRejected"
ERROR_KEYS = ("type", "message")
MAX_ERROR_CHARS = 2000


def result_problem(kind: str | None, result: dict[str, Any]) -> str | None:
    """What makes an ``ok`` result of ``kind`` unusable, or None.

    The fields the orchestrator reads, with their types: a ``measure`` result's identity
    (arch, ONNX, precision, backend, device) and, per batch size, the compute and end-to-end
    statistics; a ``train`` result's ``val_mse`` (a number: NaN is a failed training, which the
    orchestrator records as such).
    """
    from hpc2edge.transport.envelope import finite

    if kind == "train":
        val = result.get("val_mse")
        # NaN and infinity are a failed training (told as such); an unbounded int is not a loss.
        if not (finite(val) or isinstance(val, float)):
            return f"train result has no numeric val_mse ({str(val)[:40]!r})"
        return None
    if kind != "measure":
        return None
    for key in ("arch_id", "onnx_sha256", "precision", "backend"):
        if not isinstance(result.get(key), str):
            return f"measure result has no {key}"
    for key in ("device", "backend_fingerprint"):
        if not isinstance(result.get(key), dict):
            return f"measure result has no {key} record"
    # Who measured, on which kind, how: read by lookups of the shared store for good.
    worker = result.get("worker")
    if worker is not None and not (isinstance(worker, str) and UNIT_RE.fullmatch(worker)):
        return "measure result names no readable worker"
    if "kind" in result and not (
        isinstance(result["kind"], str) and KIND_RE.fullmatch(result["kind"])
    ):
        return "measure result names no device kind"
    if result.get("protocol") is not None and not isinstance(result["protocol"], dict):
        return "measure result has a protocol that is not a record"
    batches = result.get("batches")
    if not isinstance(batches, list) or not batches:
        return "measure result has no batches"
    for b in batches:
        if not isinstance(b, dict) or isinstance(b.get("batch_size"), bool):
            return "measure result has a malformed batch"
        if not isinstance(b.get("batch_size"), int) or not 1 <= b["batch_size"] <= 2**20:
            return "measure result has a batch without a batch size"
        for part in ("compute", "end_to_end"):
            if isinstance(b.get(part), dict) and not isinstance(b[part].get("stopped_by", ""), str):
                return f"measure result batch {part} has no readable stopping reason"
            stats = (b.get(part) or {}).get("stats") if isinstance(b.get(part), dict) else None
            if not isinstance(stats, dict):
                return f"measure result batch has no {part} statistics"
            for stat in ("median_ms", "p90_ms", "p99_ms"):
                if not finite(stats.get(stat)) or stats[stat] < 0:
                    return f"measure result {part} {stat} is not a non-negative number"
            ci = stats.get("ci95_median_ms")
            if part == "compute" and not (
                isinstance(ci, list) and len(ci) == 2 and all(finite(x) for x in ci)
            ):
                return "measure result has no confidence interval of the median"
            n = stats.get("n")
            if part == "compute" and (isinstance(n, bool) or not isinstance(n, int)):
                return "measure result has no sample count"
    return None


#: Errors that say nothing about the candidate: another attempt may succeed. Besides our typed
#: ones, what a worker's task reports when the broker went away under it (a result it could not
#: store becomes a FAILURE carrying the connection error once the broker is back).
TRANSIENT_ERRORS = frozenset(
    {
        "ArtifactNotFound",
        "BrokerUnreachable",
        "BrokerError",
        "ConnectionError",
        "ConnectionRefusedError",
        "ConnectionResetError",
        "BrokenPipeError",
        "TimeoutError",
        "OperationalError",
    }
)


class Dispatcher(abc.ABC):
    """Sends tasks and answers polls; see the module docstring."""

    artifacts: ArtifactStore

    @abc.abstractmethod
    def submit(self, kind: str, payload: dict[str, Any], task_id: str, expires_s: float) -> None:
        """Send ``payload`` as a ``kind`` task with id ``task_id``."""

    @abc.abstractmethod
    def poll(self, task_id: str) -> Outcome | None:
        """The task's outcome, or None while it is queued or running."""

    def forget(self, task_id: str) -> None:  # noqa: B027 - optional hook
        """Drop what is kept about a finished task (its stored result)."""

    def workers(self, queues: Sequence[str] = ()) -> dict[str, int]:
        """Live workers per queue, when known (``{}`` otherwise): of ``queues``, or of every
        queue whose workers announced themselves."""
        return {}

    def queue_depths(self) -> dict[str, int]:
        """Messages waiting per queue, when known."""
        return {}

    def probe_edge(self, timeout_s: float, queue: str = QUEUE_EDGE) -> dict[str, Any] | None:
        """The ``hpc2edge.ping`` answer of a worker of the edge ``queue`` (its device kind,
        device and backend fingerprints), or None."""
        return None

    def quarantined(self, queue: str) -> dict[str, str]:
        """The units of an edge ``queue`` under quarantine, with why, after applying the
        fleet's rule (:func:`hpc2edge.transport.fleet.review`); ``{}`` when not known."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


# --- in-process ---------------------------------------------------------------------------------

Handler = Callable[[dict[str, Any]], "dict[str, Any] | None"]


@dataclass
class InlineDispatcher(Dispatcher):
    """Runs ``handlers[kind](payload)`` on the first poll of a task, in this process.

    A handler returning ``None`` models a task nobody answers (a device that is gone): the task
    stays pending forever and the orchestrator's timeout has to deal with it. ``sent`` records
    every submission in order, for tests to count. ``handlers`` are by task kind, or by queue
    for one device kind's measurements (``{"measure": ..., "edge.orin-nano": ...}``: the task
    id names the queue); ``edge_probes`` by queue, ``edge_probe`` for any other.
    """

    handlers: dict[str, Handler]
    artifacts: ArtifactStore
    edge_probe: dict[str, Any] | None = None
    edge_probes: dict[str, dict[str, Any]] = field(default_factory=dict)
    quarantine: dict[str, dict[str, str]] = field(default_factory=dict)
    sent: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    _pending: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    _done: dict[str, Outcome] = field(default_factory=dict)

    def submit(self, kind: str, payload: dict[str, Any], task_id: str, expires_s: float) -> None:
        if kind not in self.handlers:
            raise ValueError(f"no handler for task kind {kind!r}")
        self.sent.append((kind, task_id, payload))
        self._pending[task_id] = (kind, payload)

    def poll(self, task_id: str) -> Outcome | None:
        if task_id in self._done:
            return self._done[task_id]
        if task_id not in self._pending:
            return None  # never sent, or sent by an orchestrator that is gone: nobody answers
        kind, payload = self._pending[task_id]
        handler = self.handlers.get(str(queue_of(task_id))) or self.handlers[kind]
        try:
            result = handler(payload)
        except Exception as exc:  # a raising task: what Celery reports as FAILURE
            del self._pending[task_id]
            error = _error(exc)
            transient = error["type"] in TRANSIENT_ERRORS
            self._done[task_id] = Outcome(False, None, error, transient=transient)
            return self._done[task_id]
        if result is None:
            return None
        del self._pending[task_id]
        self._done[task_id] = Outcome.from_result(result, kind)
        return self._done[task_id]

    def forget(self, task_id: str) -> None:
        self._done.pop(task_id, None)

    def drop_pending(self) -> None:
        """Lose every task submitted and not yet run, as a broker that never got the messages
        would (an orchestrator killed mid-send): later polls of them answer ``None``. ``sent``
        keeps them."""
        self._pending.clear()

    def count(self, kind: str) -> int:
        return sum(1 for k, _, _ in self.sent if k == kind)

    def probe_edge(self, timeout_s: float, queue: str = QUEUE_EDGE) -> dict[str, Any] | None:
        return self.edge_probes.get(queue) if queue in self.edge_probes else self.edge_probe

    def quarantined(self, queue: str) -> dict[str, str]:
        return dict(self.quarantine.get(queue, {}))


def _error(exc: BaseException) -> dict[str, str]:
    from hpc2edge.errors import as_result

    return as_result(exc)


# --- Celery -------------------------------------------------------------------------------------


class CeleryDispatcher(Dispatcher):
    """Tasks through the broker: ``hpc2edge.measure`` to ``edge``, ``hpc2edge.train`` to ``train``.

    Results are read from the result backend by task id, so an orchestrator restarted with the
    same study finds the results of tasks its predecessor sent.
    """

    def __init__(self, settings: Any) -> None:
        from hpc2edge.store.artifacts import RedisArtifactStore
        from hpc2edge.transport import broker
        from hpc2edge.transport.app import make_app

        self.settings = settings
        self.app = make_app(settings)
        self._client = broker.client(settings, retries=3)
        self.artifacts = RedisArtifactStore(
            self._client, max_bytes=settings.edge.artifact_max_mib * 2**20
        )

    def submit(self, kind: str, payload: dict[str, Any], task_id: str, expires_s: float) -> None:
        from hpc2edge.transport import broker

        if kind not in KINDS:
            raise ValueError(f"unknown task kind {kind!r}")
        # The id names its queue (hpc2edge.transport.taskids): a device kind's, for a measurement.
        queue = queue_of(task_id)
        if task_kind_of_queue(queue) != kind:
            raise ValueError(f"task id {task_id[:80]!r} was not issued for a {kind} queue")
        with broker.translate_errors(f"sending a {kind} task"):
            self.app.send_task(
                f"hpc2edge.{kind}", args=[payload], task_id=task_id, expires=expires_s, queue=queue
            )

    def poll(self, task_id: str) -> Outcome | None:
        """Read the stored record of ``task_id`` as untrusted data.

        Not through ``AsyncResult``: Celery would decode a FAILURE record by importing the
        exception class it names. Here the raw value is size-checked, decoded by the accepted
        serializer only (with signing: verified, and signed by the task's queue's role), and
        parsed (:func:`hpc2edge.transport.results.parse`). Anything else is a
        :meth:`Outcome.rejected_because`: a failed attempt, retried at once, never a crash.
        """
        from kombu.exceptions import DecodeError

        from hpc2edge.transport import broker, results

        backend = self.app.backend
        with broker.translate_errors("reading a task result"):
            raw = backend.get(backend.get_key_for_task(task_id))
        if raw is None:
            return None
        try:
            results.check_size(raw)
            meta = backend.decode(raw)
            stored = results.parse(meta, task_id)
        except (results.BadResult, DecodeError, ValueError, TypeError, RecursionError) as exc:
            return Outcome.rejected_because(f"stored result of {task_id}: {exc}")
        if stored.state == "SUCCESS":
            return Outcome.from_result(stored.result, task_kind_of_queue(queue_of(task_id)))
        if stored.state == "FAILURE":
            error = stored.error or {"type": "Error", "message": ""}
            return Outcome(False, None, error, transient=error["type"] in TRANSIENT_ERRORS)
        if stored.state == "REVOKED":
            # Expired in the queue (or revoked by an operator): nothing ran.
            err = {"type": "TaskExpired", "message": "the task expired before a worker ran it"}
            return Outcome(False, None, err, transient=True)
        return None

    def forget(self, task_id: str) -> None:
        from celery.result import AsyncResult

        with contextlib.suppress(Exception):  # the result also expires on its own
            AsyncResult(task_id, app=self.app).forget()

    def workers(self, queues: Sequence[str] = ()) -> dict[str, int]:
        from hpc2edge.transport import liveness

        try:
            # Asked by name when the caller knows its queues: the kinds index is input too.
            queues = list(queues) or liveness.known_queues(self._client)
            live = liveness.live_workers(self._client, queues)
        except Exception:
            return {}
        return {q: len(names) for q, names in live.items()}

    def queue_depths(self) -> dict[str, int]:
        from hpc2edge.transport import liveness

        try:
            return {q: int(self._client.llen(q)) for q in liveness.known_queues(self._client)}
        except Exception:
            return {}

    def probe_edge(self, timeout_s: float, queue: str = QUEUE_EDGE) -> dict[str, Any] | None:
        from hpc2edge.errors import Hpc2EdgeError
        from hpc2edge.transport import probes

        try:
            answer = probes.ping(self.settings, queue, timeout_s=timeout_s)
        except Hpc2EdgeError:
            return None
        return answer

    def quarantined(self, queue: str) -> dict[str, str]:
        from hpc2edge.transport import fleet

        try:
            fleet.review(self._client, queue)
            return fleet.quarantined_units(self._client, queue)
        except Exception as exc:  # the broker away, or a login that may not review
            log.warning("cannot review the units of %s: %s", queue, exc)
            return {}

    def close(self) -> None:
        self._client.close()
        self.app.close()


def local_handlers(
    state_dir: Any, artifacts: ArtifactStore, *, intra_op_threads: int = 1
) -> dict[str, Handler]:
    """The real task functions, in this process: ONNX Runtime measurements and local training.

    What the edge and train workers run, minus the queue: for notebooks, and for tests that need
    real numbers without a broker. ``state_dir`` holds the training runs.
    """
    from pathlib import Path

    from hpc2edge.latency import get_backend
    from hpc2edge.latency.service import measure_request
    from hpc2edge.training.service import train_request

    backend = get_backend("onnxruntime", intra_op_threads=intra_op_threads)

    def measure(payload: dict[str, Any]) -> dict[str, Any]:
        result = measure_request(payload, fetch=artifacts.get, backend_for=lambda _name: backend)
        result["worker"] = "inline"
        return result

    def train(payload: dict[str, Any]) -> dict[str, Any]:
        result = train_request(payload, state_dir=Path(state_dir))
        result["worker"] = "inline"
        return result

    return {"measure": measure, "train": train}
