"""The Dispatcher contract suite (:class:`hpc2edge.search.dispatch.Dispatcher`).

A dispatcher, with the workers or handlers behind it, passes when this runs green on it::

    from hpc2edge.testing.dispatch import DispatcherContract

    class TestMyDispatcher(DispatcherContract):
        @pytest.fixture
        def dispatcher(self):
            return MyDispatcher(...)   # its measure task: a real or fake device

        @pytest.fixture
        def answered(self, dispatcher):
            return ...   # (kind, answer) -> the id of a task whose worker answered `answer`

What it checks, in the orchestrator's terms:

- **Round trip.** A ``measure`` task of the contract model (stored in ``dispatcher.artifacts``,
  where the device fetches it) is answered by an ``ok`` :class:`Outcome` carrying the device's
  result for that model and those batch sizes; polling again gives the same outcome.
- **Unknown ids are pending.** A task id nobody sent polls as ``None`` (the orchestrator's
  timeout deals with it), and so does a forgotten one; an unknown kind is refused at ``submit``.
- **Duplicates.** A task sent twice under one id (a resend after a restart) has one outcome.
- **Answers become outcomes** (through the ``answered`` fixture, whatever the worker):
  a well-formed ``ok`` result is carried whole; a typed error result is a failed outcome with
  its error, transient when the error type says nothing about the candidate
  (:data:`~hpc2edge.search.dispatch.TRANSIENT_ERRORS`); a malformed result is
  :attr:`Outcome.rejected`; a task that raised is a failed outcome without a result.
- **Introspection.** ``workers()`` and ``queue_depths()`` are counts per queue (possibly none),
  ``probe_edge()`` a record or ``None``.

For :class:`~hpc2edge.search.dispatch.InlineDispatcher`, :class:`Planted` provides ``answered``:
handlers that give planted answers to planted tasks. For
:class:`~hpc2edge.search.dispatch.CeleryDispatcher`, :class:`StoredAnswers` stores a result
record as a worker of the task's queue would (with that role's credentials, signed when signing
is on).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import pytest

from hpc2edge.roles import QUEUES, ROLE_OF_QUEUE
from hpc2edge.search.dispatch import (
    KIND_OF_QUEUE,
    REJECTED,
    Dispatcher,
    Handler,
    Outcome,
    result_problem,
)
from hpc2edge.store.artifacts import ArtifactStore, MemoryArtifactStore, parse_key
from hpc2edge.testing.fakes import FakeEdge, FakeTrainer
from hpc2edge.testing.latency import SHAPE, contract_model, contract_reference
from hpc2edge.testing.training import TINY_SPEC
from hpc2edge.transport import taskids

#: The queue each task kind goes to.
QUEUE_OF_KIND = {kind: queue for queue, kind in KIND_OF_QUEUE.items()}
#: How long the contract's tasks may wait in a queue.
EXPIRES_S = 300.0
#: The payload key of a task :class:`Planted` answers.
PLANTED = "planted"

#: ``answered(kind, answer)``: the id of a ``kind`` task whose worker answered ``answer``
#: (returned it; raised it when it is an exception).
Answered = Callable[[str, Any], str]


def new_task_id(kind: str) -> str:
    """A fresh task id for a ``kind`` task (``measure`` or ``train``)."""
    return taskids.new(QUEUE_OF_KIND[kind])


def measure_payload(artifact_key: str, batch_sizes: list[int] | None = None) -> dict[str, Any]:
    """An ``hpc2edge.measure`` request for the contract model stored under ``artifact_key``.

    The quick protocol, the numpy reference outputs, no raw samples: a second or so per batch
    size on a CPU.
    """
    from hpc2edge.latency.protocol import Protocol

    return {
        "arch_id": "contract-model",
        "artifact_key": artifact_key,
        "input_shape": list(SHAPE),
        "batch_sizes": batch_sizes or [1, 2],
        "precision": "fp32",
        "protocol": Protocol.quick().to_json(),
        "reference": contract_reference().to_json(),
        "keep_samples": False,
    }


def good_result(kind: str) -> dict[str, Any]:
    """A well-formed ``ok`` result of ``kind`` (a fake worker's: see :mod:`.fakes`)."""
    if kind == "measure":
        artifacts = MemoryArtifactStore()
        key = artifacts.put(contract_model().onnx_bytes)
        return FakeEdge(artifacts)(measure_payload(key))
    payload = {"trial_key": "contract", "spec": TINY_SPEC, "epochs": 1, "seed": 0}
    return FakeTrainer()(payload)


def error_result(error_type: str, message: str) -> dict[str, Any]:
    """A result that carries a typed error, as the tasks return for what a caller got wrong."""
    return {"status": "error", "error": {"type": error_type, "message": message}}


#: ``ok`` results the orchestrator cannot use, per kind: each is a rejected outcome.
MALFORMED_RESULTS: list[tuple[str, Any]] = [
    ("measure", {"status": "ok"}),
    ("measure", {"status": "ok", "batches": "many"}),
    ("measure", "ok"),
    ("measure", [1]),
    ("train", {"status": "ok", "val_mse": "low"}),
    ("train", {"status": "ok"}),
    ("measure", {"status": "error"}),  # an error without a typed error
    ("train", {"status": "error", "error": {"type": 1, "message": "x"}}),
]


def wait_for(dispatcher: Dispatcher, task_id: str, timeout_s: float) -> Outcome:
    """Poll ``task_id`` until it has an outcome; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    while True:
        outcome = dispatcher.poll(task_id)
        if outcome is not None:
            return outcome
        if time.monotonic() > deadline:
            pytest.fail(f"no outcome of task {task_id} after {timeout_s:.0f} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


class DispatcherContract:
    """What every dispatcher does. Subclass it; provide ``dispatcher`` and ``answered``."""

    #: Seconds to wait for a task's outcome (a real worker on a busy CI machine).
    timeout_s: ClassVar[float] = 60.0

    @pytest.fixture
    def dispatcher(self) -> Dispatcher:
        raise NotImplementedError("a DispatcherContract subclass provides a dispatcher fixture")

    @pytest.fixture
    def answered(self, dispatcher: Dispatcher) -> Answered:
        raise NotImplementedError("a DispatcherContract subclass provides an answered fixture")

    @pytest.fixture
    def model_key(self, dispatcher: Dispatcher) -> str:
        """The contract model, stored where the dispatcher's device fetches it."""
        assert isinstance(dispatcher.artifacts, ArtifactStore)
        return dispatcher.artifacts.put(contract_model().onnx_bytes)

    def outcome(self, dispatcher: Dispatcher, task_id: str) -> Outcome:
        return wait_for(dispatcher, task_id, self.timeout_s)

    # --- round trip ---------------------------------------------------------------------------

    def test_a_measure_task_is_answered_with_its_result(
        self, dispatcher: Dispatcher, model_key: str
    ) -> None:
        task_id = new_task_id("measure")
        payload = measure_payload(model_key, [1, 2])
        dispatcher.submit("measure", payload, task_id, EXPIRES_S)
        outcome = self.outcome(dispatcher, task_id)
        assert outcome.ok, outcome.reason
        assert outcome.error is None and outcome.reason == ""
        assert not outcome.transient and not outcome.rejected
        result = outcome.result
        assert result is not None and result["status"] == "ok"
        assert result["arch_id"] == payload["arch_id"]
        assert result["artifact_key"] == model_key
        assert result["onnx_sha256"] == parse_key(model_key)  # the bytes the device fetched
        assert [b["batch_size"] for b in result["batches"]] == [1, 2]
        assert result_problem("measure", result) is None
        assert isinstance(result["worker"], str) and result["worker"]  # who answered
        json.dumps(result)

    def test_polling_again_gives_the_same_outcome(
        self, dispatcher: Dispatcher, model_key: str
    ) -> None:
        task_id = new_task_id("measure")
        dispatcher.submit("measure", measure_payload(model_key, [1]), task_id, EXPIRES_S)
        first = self.outcome(dispatcher, task_id)
        assert dispatcher.poll(task_id) == first
        assert dispatcher.poll(task_id) == first

    def test_a_task_sent_twice_under_one_id_has_one_outcome(
        self, dispatcher: Dispatcher, model_key: str
    ) -> None:
        task_id = new_task_id("measure")
        payload = measure_payload(model_key, [1])
        dispatcher.submit("measure", payload, task_id, EXPIRES_S)
        dispatcher.submit("measure", payload, task_id, EXPIRES_S)  # a resend after a restart
        outcome = self.outcome(dispatcher, task_id)
        assert outcome.ok, outcome.reason
        assert outcome.result is not None and outcome.result["artifact_key"] == model_key

    # --- unknown, forgotten, refused ----------------------------------------------------------

    @pytest.mark.parametrize("kind", ["measure", "train"])
    def test_a_task_nobody_sent_is_pending(self, dispatcher: Dispatcher, kind: str) -> None:
        task_id = new_task_id(kind)
        assert dispatcher.poll(task_id) is None
        assert dispatcher.poll(task_id) is None

    def test_forget_drops_a_finished_outcome(self, dispatcher: Dispatcher, model_key: str) -> None:
        task_id = new_task_id("measure")
        dispatcher.submit("measure", measure_payload(model_key, [1]), task_id, EXPIRES_S)
        assert self.outcome(dispatcher, task_id).ok
        dispatcher.forget(task_id)
        assert dispatcher.poll(task_id) is None
        dispatcher.forget(task_id)  # twice, and an id nobody sent: nothing to do, no error
        dispatcher.forget(new_task_id("train"))

    @pytest.mark.parametrize("kind", ["ping", "hpc2edge.measure", ""])
    def test_an_unknown_kind_is_refused_and_nothing_is_sent(
        self, dispatcher: Dispatcher, kind: str
    ) -> None:
        task_id = new_task_id("measure")
        with pytest.raises(ValueError):
            dispatcher.submit(kind, {}, task_id, EXPIRES_S)
        assert dispatcher.poll(task_id) is None

    # --- answers become outcomes --------------------------------------------------------------

    @pytest.mark.parametrize("kind", ["measure", "train"])
    def test_a_well_formed_result_is_carried_whole(
        self, dispatcher: Dispatcher, answered: Answered, kind: str
    ) -> None:
        result = good_result(kind)
        outcome = self.outcome(dispatcher, answered(kind, result))
        assert outcome.ok and not outcome.rejected and not outcome.transient
        assert outcome.error is None
        assert outcome.result == json.loads(json.dumps(result))  # as it crossed the queue

    @pytest.mark.parametrize("kind", ["measure", "train"])
    def test_an_error_result_is_a_failed_outcome_with_its_error(
        self, dispatcher: Dispatcher, answered: Answered, kind: str
    ) -> None:
        result = error_result("ValueError", "invalid request: arch_id: expected a string")
        outcome = self.outcome(dispatcher, answered(kind, result))
        assert not outcome.ok and not outcome.rejected
        assert not outcome.transient  # the request is wrong: another attempt fails the same way
        assert outcome.error == result["error"]
        assert outcome.reason == "ValueError: invalid request: arch_id: expected a string"
        assert outcome.result == result  # the worker's record is kept, for the trial's reason

    @pytest.mark.parametrize(
        "error_type", ["ArtifactNotFound", "BrokerUnreachable", "TimeoutError"]
    )
    def test_an_error_that_says_nothing_about_the_candidate_is_transient(
        self, dispatcher: Dispatcher, answered: Answered, error_type: str
    ) -> None:
        outcome = self.outcome(dispatcher, answered("measure", error_result(error_type, "x")))
        assert not outcome.ok and outcome.transient and not outcome.rejected
        assert outcome.error == {"type": error_type, "message": "x"}

    def test_a_long_error_message_is_bounded(
        self, dispatcher: Dispatcher, answered: Answered
    ) -> None:
        long = error_result("TrainingError", "x" * 100_000)
        outcome = self.outcome(dispatcher, answered("train", long))
        assert outcome.error is not None and outcome.error["type"] == "TrainingError"
        assert 0 < len(outcome.error["message"]) <= 2000

    @pytest.mark.parametrize(("kind", "result"), MALFORMED_RESULTS)
    def test_a_malformed_result_is_rejected(
        self, dispatcher: Dispatcher, answered: Answered, kind: str, result: Any
    ) -> None:
        outcome = self.outcome(dispatcher, answered(kind, result))
        assert not outcome.ok
        assert outcome.rejected and outcome.transient  # worth another attempt, at once
        assert outcome.result is None
        assert outcome.error is not None and outcome.error["type"] == REJECTED
        assert outcome.error["message"]

    @pytest.mark.parametrize(
        ("exc", "transient"),
        [(RuntimeError("the worker broke"), False), (ConnectionError("broker gone"), True)],
    )
    def test_a_task_that_raised_is_a_failed_outcome_without_a_result(
        self, dispatcher: Dispatcher, answered: Answered, exc: BaseException, transient: bool
    ) -> None:
        outcome = self.outcome(dispatcher, answered("measure", exc))
        assert not outcome.ok and outcome.result is None and not outcome.rejected
        assert outcome.transient is transient
        assert outcome.error is not None
        assert outcome.error["type"] == type(exc).__name__
        assert str(exc) in outcome.error["message"]

    # --- introspection ------------------------------------------------------------------------

    def test_workers_and_queue_depths_are_counts_per_queue(self, dispatcher: Dispatcher) -> None:
        for counts in (dispatcher.workers(), dispatcher.queue_depths()):
            assert isinstance(counts, dict)
            assert set(counts) <= set(QUEUES)
            assert all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                       for n in counts.values())  # fmt: skip

    def test_probe_edge_is_a_record_or_none(self, dispatcher: Dispatcher) -> None:
        answer = dispatcher.probe_edge(timeout_s=10.0)
        assert answer is None or isinstance(answer, dict)
        json.dumps(answer)


# --- what provides `answered` -------------------------------------------------------------------


class Planted:
    """Handlers for an :class:`~hpc2edge.search.dispatch.InlineDispatcher` that give planted
    answers to planted tasks.

    :attr:`handlers` passes every payload to the real ``handlers`` except ``{"planted": token}``
    payloads, which :meth:`answer` submits: those get the answer planted under the token,
    returned (raised when it is an exception). The inline counterpart of a record that a worker
    of the task's queue stored; the contract's ``answered`` is
    ``functools.partial(planted.answer, dispatcher)``.
    """

    def __init__(self, handlers: Mapping[str, Handler]) -> None:
        self._answers: dict[str, Any] = {}
        self.handlers: dict[str, Handler] = {k: self._wrap(h) for k, h in handlers.items()}

    def _wrap(self, real: Handler) -> Handler:
        def handler(payload: dict[str, Any]) -> dict[str, Any] | None:
            token = payload.get(PLANTED) if isinstance(payload, dict) else None
            if isinstance(token, str) and token in self._answers:
                answer = self._answers[token]
                if isinstance(answer, BaseException):
                    raise answer
                return answer  # type: ignore[no-any-return]
            return real(payload)

        return handler

    def answer(self, dispatcher: Dispatcher, kind: str, answer: Any) -> str:
        """Submit a ``kind`` task to ``dispatcher`` that is answered with ``answer``."""
        token = uuid.uuid4().hex
        self._answers[token] = answer
        task_id = new_task_id(kind)
        dispatcher.submit(kind, {PLANTED: token}, task_id, EXPIRES_S)
        return task_id


class StoredAnswers:
    """Result records stored as a worker of the task's queue stores them (Celery).

    ``settings_of(role)`` gives that worker role's settings (its broker credentials, and its
    signing key when signing is on): the record is written by Celery's own result backend of
    that role's app, a SUCCESS for a value and a FAILURE for an exception, under a fresh task
    id of the queue. Nothing is sent: the record is there before anyone polls. The contract's
    ``answered`` is :meth:`answer`.
    """

    def __init__(self, settings_of: Callable[[str], Any]) -> None:
        self._settings_of = settings_of
        self._apps: dict[str, Any] = {}

    def _app(self, role: str) -> Any:
        from hpc2edge.transport.app import make_app

        if role not in self._apps:
            self._apps[role] = make_app(self._settings_of(role))
        return self._apps[role]

    def answer(self, kind: str, answer: Any) -> str:
        task_id = new_task_id(kind)
        backend = self._app(ROLE_OF_QUEUE[QUEUE_OF_KIND[kind]]).backend
        if isinstance(answer, BaseException):
            backend.mark_as_failure(task_id, answer, call_errbacks=False)
        else:
            backend.mark_as_done(task_id, answer)
        return task_id

    def close(self) -> None:
        for app in self._apps.values():
            app.close()
        self._apps.clear()


__all__ = [
    "EXPIRES_S",
    "MALFORMED_RESULTS",
    "QUEUE_OF_KIND",
    "Answered",
    "DispatcherContract",
    "Planted",
    "StoredAnswers",
    "error_result",
    "good_result",
    "measure_payload",
    "new_task_id",
    "wait_for",
]
