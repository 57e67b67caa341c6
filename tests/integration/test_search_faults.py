"""A train worker killed mid-task: the broker redelivers the task and the trial completes.

Runs on its own broker with a short visibility timeout (Redis redelivers an unacknowledged task
after it), so the session's broker and workers are not disturbed.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
optuna = pytest.importorskip("optuna")

from hpc2edge import broker, procs, stack  # noqa: E402
from hpc2edge.config import load_settings  # noqa: E402
from hpc2edge.search.cli import run_search  # noqa: E402
from hpc2edge.training.testing import make_tiny_data  # noqa: E402
from tests.conftest import Stack, start_worker, wait_ready  # noqa: E402
from tests.integration.test_search_e2e import OPTIONS, executed, tag_of  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

VISIBILITY_S = 40


@pytest.fixture(scope="module")
def short_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state_dir = tmp_path_factory.mktemp("fault-stack")
    env = {
        "HPC2EDGE_STATE_DIR": str(state_dir),
        "HPC2EDGE_BROKER_PORT": str(broker.free_port()),
        "HPC2EDGE_BROKER_VISIBILITY_TIMEOUT_S": str(VISIBILITY_S),
        "HPC2EDGE_WORKER_TRAIN_TIME_LIMIT_S": "35",
        "HPC2EDGE_WORKER_MEASURE_TIME_LIMIT_S": "30",
    }
    settings = stack.prepare(load_settings(environ=env))
    broker.start(settings)
    try:
        yield Stack(state_dir=settings.state_dir, settings=settings)
    finally:
        broker.stop(settings.state_dir)


def test_train_worker_killed_mid_task_is_redelivered_and_the_trial_completes(
    short_stack: Stack, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    make_tiny_data(data)
    edge = start_worker(short_stack, "edge", "edge@fault")
    train = start_worker(short_stack, "train", "train@fault")
    replacement = None
    outcome: dict[str, Any] = {}
    try:
        wait_ready(short_stack, "edge", edge)
        wait_ready(short_stack, "train", train)
        urls = {
            "storage_url": f"sqlite:///{tmp_path / 'search.db'}",
            "store_url": f"sqlite:///{tmp_path / 'm.db'}",
        }

        def search() -> None:
            try:
                outcome["summary"], outcome["study"] = run_search(
                    short_stack.settings, study_name="fault", data=data, trials=1,
                    progress=False, **urls, **{**OPTIONS, "parallel": 1, "epochs": 3},
                )  # fmt: skip
            except BaseException as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=search, daemon=True)
        thread.start()
        # Kill the worker (and, through PDEATHSIG, its training child) once training runs.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and thread.is_alive():
            if re.search(
                r"Task hpc2edge\.train\[h2e-[^\]]+\] received", Path(train.log).read_text()
            ):
                break
            time.sleep(0.2)
        time.sleep(1.0)
        # The node goes down: the worker, its pool process and the training child, at once.
        os.killpg(os.getpgid(train.pid), signal.SIGKILL)
        replacement = start_worker(short_stack, "train", "train2@fault")
        wait_ready(short_stack, "train", replacement)
        thread.join(timeout=VISIBILITY_S + 120)
        assert not thread.is_alive(), "the search did not finish after the redelivery"
    finally:
        for record in (edge, train, replacement):
            if record is not None:
                procs.stop(record)
    assert "error" not in outcome, outcome.get("error")
    summary, study = outcome["summary"], outcome["study"]
    assert summary["complete"] == 1, [t.user_attrs.get("reason") for t in study.trials]
    (trial,) = study.trials
    task_id = trial.user_attrs["train_task"]["id"]
    assert trial.user_attrs["train_task"]["attempt"] == 1, "redelivered, not re-sent"
    assert trial.user_attrs["train"]["worker"] == "train2@fault"
    assert executed(replacement.log, "train", tag_of(study)) == [task_id]
    assert executed(train.log, "train", tag_of(study)) == []


def test_broker_restart_mid_search_loses_nothing(short_stack: Stack, tmp_path: Path) -> None:
    """Stop the broker (AOF on disk) mid-search and start it again: every trial completes."""
    data = tmp_path / "data"
    make_tiny_data(data)
    edge = start_worker(short_stack, "edge", "edge@restart")
    train = start_worker(short_stack, "train", "train@restart")
    outcome: dict[str, Any] = {}
    try:
        wait_ready(short_stack, "edge", edge)
        wait_ready(short_stack, "train", train)
        urls = {
            "storage_url": f"sqlite:///{tmp_path / 'search.db'}",
            "store_url": f"sqlite:///{tmp_path / 'm.db'}",
        }

        def search() -> None:
            try:
                outcome["summary"], outcome["study"] = run_search(
                    short_stack.settings, study_name="restart", data=data, trials=4,
                    progress=False, **urls, **{**OPTIONS, "seed": 41},
                )  # fmt: skip
            except BaseException as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=search, daemon=True)
        thread.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and thread.is_alive():
            if re.search(
                r"Task hpc2edge\.train\[h2e-[^\]]+\] received", Path(train.log).read_text()
            ):
                break
            time.sleep(0.2)
        broker.stop(short_stack.state_dir)  # SIGTERM: redis fsyncs the AOF and exits
        time.sleep(5)
        broker.start(short_stack.settings)
        thread.join(timeout=240)
        assert not thread.is_alive(), "the search did not finish after the broker came back"
    finally:
        procs.stop(edge)
        procs.stop(train)
    assert "error" not in outcome, repr(outcome.get("error"))
    summary, study = outcome["summary"], outcome["study"]
    assert summary["trials"] == 4
    assert summary["complete"] == 4, [t.user_attrs.get("reason") for t in study.trials]
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
