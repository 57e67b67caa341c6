"""The Dispatcher contract suite (:mod:`hpc2edge.testing.dispatch`) on the Celery dispatcher, over
the session's real TLS broker with its real ``edge`` and ``train`` worker processes (ONNX Runtime
on this CPU): answers are stored by each worker role's own result backend. Then what only the
Celery dispatcher does: the real workers' typed errors, an expired task, who is listening.
The inline dispatcher: ``tests/unit/test_dispatch_contract.py``.
"""

from __future__ import annotations

import time

import pytest

from hpc2edge.roles import QUEUES
from hpc2edge.search.dispatch import CeleryDispatcher
from hpc2edge.store.artifacts import key_for
from hpc2edge.testing.dispatch import (
    EXPIRES_S,
    DispatcherContract,
    StoredAnswers,
    measure_payload,
    new_task_id,
    wait_for,
)

pytestmark = pytest.mark.integration

TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def celery_dispatcher(broker_stack, workers):
    dispatcher = CeleryDispatcher(broker_stack.settings)
    try:
        yield dispatcher
    finally:
        dispatcher.close()


@pytest.fixture(scope="module")
def stored_answers(broker_stack):
    answers = StoredAnswers(broker_stack.as_role)
    try:
        yield answers
    finally:
        answers.close()


class TestCeleryDispatcher(DispatcherContract):
    timeout_s = TIMEOUT_S

    @pytest.fixture
    def dispatcher(self, celery_dispatcher):
        return celery_dispatcher

    @pytest.fixture
    def answered(self, stored_answers):
        return stored_answers.answer


# --- Celery only ------------------------------------------------------------------------------


def test_the_edge_worker_answers_a_bad_request_with_a_typed_error(celery_dispatcher, workers):
    task_id = new_task_id("measure")
    payload = {**measure_payload(key_for(b"never stored"), [1]), "precision": "fp64"}
    celery_dispatcher.submit("measure", payload, task_id, EXPIRES_S)
    outcome = wait_for(celery_dispatcher, task_id, TIMEOUT_S)
    assert not outcome.ok and not outcome.transient and not outcome.rejected
    assert outcome.error is not None and outcome.error["type"] == "ValueError"
    assert "precision" in outcome.error["message"]
    assert outcome.result is not None and outcome.result["status"] == "error"


def test_a_model_missing_from_the_store_is_a_transient_error(celery_dispatcher, workers):
    task_id = new_task_id("measure")
    missing = key_for(b"a model nobody stored " + task_id.encode())
    celery_dispatcher.submit("measure", measure_payload(missing, [1]), task_id, EXPIRES_S)
    outcome = wait_for(celery_dispatcher, task_id, TIMEOUT_S)
    assert not outcome.ok and outcome.transient and not outcome.rejected
    assert outcome.error is not None and outcome.error["type"] == "ArtifactNotFound"


def test_the_train_worker_answers_a_bad_request_with_a_typed_error(celery_dispatcher, workers):
    task_id = new_task_id("train")
    celery_dispatcher.submit("train", {"trial_key": "contract-bad"}, task_id, EXPIRES_S)
    outcome = wait_for(celery_dispatcher, task_id, TIMEOUT_S)
    assert not outcome.ok and not outcome.transient and not outcome.rejected
    assert outcome.error is not None and outcome.error["type"] == "ValueError"
    assert outcome.result is not None and outcome.result["trial_key"] == "contract-bad"


def test_a_task_that_expired_in_the_queue_is_transient_and_never_ran(celery_dispatcher, workers):
    task_id = new_task_id("measure")
    missing = key_for(b"expired " + task_id.encode())
    celery_dispatcher.submit("measure", measure_payload(missing, [1]), task_id, 0.001)
    time.sleep(0.05)
    outcome = wait_for(celery_dispatcher, task_id, TIMEOUT_S)
    assert not outcome.ok and outcome.transient and outcome.result is None
    assert outcome.error is not None and outcome.error["type"] == "TaskExpired"


def test_workers_and_queue_depths_name_every_queue(celery_dispatcher, workers):
    live = celery_dispatcher.workers()
    assert set(live) == set(QUEUES)
    assert live["edge"] >= 1 and live["train"] >= 1
    assert set(celery_dispatcher.queue_depths()) == set(QUEUES)


def test_the_edge_probe_carries_the_measurement_context(celery_dispatcher, workers):
    answer = celery_dispatcher.probe_edge(timeout_s=20.0)
    assert answer is not None and answer["queue"] == "edge"
    assert {"device", "backend"} <= set(answer["measurement"])
    assert answer["measurement"]["backend"]["backend"] == "onnxruntime"
