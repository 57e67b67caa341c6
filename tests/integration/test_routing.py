"""Tasks reach the worker of their queue, and only that worker."""

from __future__ import annotations

import pytest

from hpc2edge.ops import stack
from hpc2edge.transport import probes
from hpc2edge.transport.app import make_app

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("queue", ["edge", "train"])
def test_ping_is_answered_by_the_worker_of_its_queue(broker_stack, workers, queue):
    expected = f"{queue}@test"
    for _ in range(5):
        answer = probes.ping(broker_stack.settings, queue, timeout_s=10)
        assert answer["hostname"] == expected
        assert answer["queue"] == queue
        assert answer["versions"]["celery"]
        assert answer["round_trip_ms"] > 0


def test_routes_by_task_name(broker_stack, workers):
    app = make_app(broker_stack.settings)
    try:
        assert app.amqp.router.route({}, "hpc2edge.train")["queue"].name == "train"
        assert app.amqp.router.route({}, "hpc2edge.measure")["queue"].name == "edge"
    finally:
        app.close()


def test_side_effect_task_runs_only_on_the_queue_it_was_sent_to(broker_stack, workers, tmp_path):
    app = make_app(broker_stack.settings)
    try:
        for queue in ("edge", "train"):
            target = tmp_path / f"{queue}.txt"
            result = app.send_task("tests.touch", args=[str(target)], queue=queue)
            assert result.get(timeout=10) == str(target)
            log = broker_stack.state_dir / "logs" / f"{queue}@test.log"
            assert result.id in log.read_text()
            other = "train" if queue == "edge" else "edge"
            assert (
                result.id not in (broker_stack.state_dir / "logs" / f"{other}@test.log").read_text()
            )
    finally:
        app.close()


def test_status_counts_workers_and_queue_depths(broker_stack, workers):
    st = stack.status(broker_stack.settings, timeout_s=10.0)  # connect bound, not a wait
    assert st.reachable
    assert st.tls_version in ("TLSv1.2", "TLSv1.3")
    assert "edge@test" in st.workers["edge"]
    assert "train@test" in st.workers["train"]
    assert "edge@test" not in st.workers["train"]
    assert set(st.queue_depths) == {"edge", "train"}
