"""A pickle message is never executed, and the worker keeps serving after it."""

from __future__ import annotations

import pickle
import time
import uuid
from pathlib import Path

import pytest

from hpc2edge.transport.app import make_app

pytestmark = pytest.mark.integration


class _Exploit:
    """Unpickling this writes a file: the side effect a pickle-accepting worker would suffer."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (self.path, "pwned by pickle\n"))


def test_pickle_message_is_not_executed_and_worker_keeps_serving(broker_stack, workers, tmp_path):
    app = make_app(broker_stack.settings)
    exploited = tmp_path / "exploited.txt"
    touched_by_pickle = tmp_path / "touched-by-pickle.txt"
    after = tmp_path / "after.txt"
    try:
        # 1. A well-formed Celery message for a real task, but pickle-serialised.
        sent = app.send_task(
            "tests.touch", args=[str(touched_by_pickle)], queue="edge", serializer="pickle"
        )
        # 2. A raw message whose pickle body runs code when loaded.
        task_id = str(uuid.uuid4())
        message = app.amqp.as_task_v2(task_id, "tests.touch", args=[str(touched_by_pickle)])
        with app.connection_for_write() as conn:
            conn.Producer().publish(
                pickle.dumps(_Exploit(exploited)),
                exchange="edge",
                routing_key="edge",
                content_type="application/x-python-serialize",
                content_encoding="binary",
                headers=message.headers,
                **message.properties,
            )
        # 3. A JSON message after them: once it ran, the worker has handled both pickles.
        assert app.send_task("tests.touch", args=[str(after)], queue="edge").get(timeout=15)
        assert after.exists()
        time.sleep(0.5)
        assert not exploited.exists()
        assert not touched_by_pickle.exists()
        assert app.AsyncResult(sent.id).state == "PENDING"
        assert app.AsyncResult(task_id).state == "PENDING"
        log = (broker_stack.state_dir / "logs" / "edge@test.log").read_text()
        assert "pickle" in log  # the refusal is logged (kombu: untrusted content of type pickle)
    finally:
        app.close()
