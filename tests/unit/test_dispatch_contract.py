"""The Dispatcher contract suite (:mod:`hpc2edge.testing.dispatch`) on the inline dispatcher: with
the orchestrator's doubles (:mod:`hpc2edge.testing.fakes`), and with the real task functions in
this process (:func:`~hpc2edge.search.dispatch.local_handlers`: ONNX Runtime on this CPU). Then
what only the inline dispatcher does. Over Celery: ``tests/integration/test_dispatch_contract.py``.
"""

from __future__ import annotations

import functools

import pytest

from hpc2edge.search.dispatch import InlineDispatcher, local_handlers
from hpc2edge.store.artifacts import MemoryArtifactStore
from hpc2edge.testing.dispatch import (
    EXPIRES_S,
    DispatcherContract,
    Planted,
    measure_payload,
    new_task_id,
)
from hpc2edge.testing.fakes import FakeEdge, FakeTrainer
from hpc2edge.testing.latency import contract_model

pytestmark = pytest.mark.unit


@pytest.fixture
def artifacts() -> MemoryArtifactStore:
    return MemoryArtifactStore()


class _InlineContract(DispatcherContract):
    """The suite on an :class:`InlineDispatcher` over the handlers a subclass plants."""

    @pytest.fixture
    def dispatcher(self, planted, artifacts):
        return InlineDispatcher(planted.handlers, artifacts)

    @pytest.fixture
    def answered(self, planted, dispatcher):
        return functools.partial(planted.answer, dispatcher)


class TestInlineDispatcherOnFakes(_InlineContract):
    @pytest.fixture
    def planted(self, artifacts):
        return Planted({"measure": FakeEdge(artifacts), "train": FakeTrainer()})


class TestInlineDispatcherOnLocalHandlers(_InlineContract):
    """What notebooks run: the edge's and the trainer's functions, minus the queue."""

    @pytest.fixture
    def planted(self, artifacts, tmp_path):
        return Planted(local_handlers(tmp_path / "state", artifacts))


# --- inline only ------------------------------------------------------------------------------


def test_a_handler_that_never_answers_leaves_the_task_pending(artifacts):
    """``None`` from a handler: a device that is gone. Only the orchestrator's timeout ends it."""
    calls: list[dict] = []
    dispatcher = InlineDispatcher(
        {"measure": lambda p: calls.append(p), "train": FakeTrainer()}, artifacts
    )
    task_id = new_task_id("measure")
    dispatcher.submit("measure", {"x": 1}, task_id, EXPIRES_S)
    assert dispatcher.poll(task_id) is None
    assert dispatcher.poll(task_id) is None
    assert calls == [{"x": 1}, {"x": 1}]  # asked again at every poll


def test_sent_records_every_submission_in_order(artifacts):
    edge, trainer = FakeEdge(artifacts), FakeTrainer()
    dispatcher = InlineDispatcher({"measure": edge, "train": trainer}, artifacts)
    key = artifacts.put(contract_model().onnx_bytes)
    first, second = new_task_id("measure"), new_task_id("measure")
    payload = measure_payload(key, [1])
    dispatcher.submit("measure", payload, first, EXPIRES_S)
    dispatcher.submit("measure", payload, second, EXPIRES_S)
    dispatcher.submit("measure", payload, first, EXPIRES_S)
    assert [(kind, tid) for kind, tid, _ in dispatcher.sent] == [
        ("measure", first),
        ("measure", second),
        ("measure", first),
    ]
    assert dispatcher.count("measure") == 3 and dispatcher.count("train") == 0
    assert edge.calls == 0  # nothing runs before a poll
    assert dispatcher.poll(first) is not None and dispatcher.poll(second) is not None
    assert edge.calls == 2  # a task sent twice under one id runs once


def test_the_edge_probe_is_what_it_was_given(artifacts):
    probe = {"measurement": {"device": {"hostname": "x"}, "backend": {"backend": "fake"}}}
    assert InlineDispatcher({}, artifacts, edge_probe=probe).probe_edge(1.0) == probe
    assert InlineDispatcher({}, artifacts).probe_edge(1.0) is None
