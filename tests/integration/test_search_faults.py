"""Faults during a search: a train or edge worker killed mid-task (the broker redelivers the
task and the trial completes) and the broker down for 30 s (everyone reconnects, nothing is lost).

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

from hpc2edge.cli.search import run_search  # noqa: E402
from hpc2edge.ops import localbroker  # noqa: E402
from hpc2edge.testing.training import make_tiny_data  # noqa: E402
from hpc2edge.util import procs  # noqa: E402
from tests.conftest import Stack, own_broker, start_worker, wait_ready  # noqa: E402
from tests.integration.test_search_e2e import OPTIONS, executed  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Short enough to wait for, long enough for a training on a busy 2-core machine.
VISIBILITY_S = 60


@pytest.fixture(scope="module")
def short_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {
        "HPC2EDGE_BROKER_VISIBILITY_TIMEOUT_S": str(VISIBILITY_S),
        "HPC2EDGE_WORKER_TRAIN_TIME_LIMIT_S": "50",
        "HPC2EDGE_WORKER_MEASURE_TIME_LIMIT_S": "40",
    }
    with own_broker(tmp_path_factory.mktemp("fault-stack"), env) as stack_:
        yield stack_


# A measurement of about 5 s (the quick protocol takes under a second on these tiny models), so
# the kill lands while it runs; its worst case stays within the worker's 40 s limit.
SLOW_MEASURE = {"warmup_min_s": 1.0, "warmup_min_runs": 3, "min_runs": 20, "min_time_s": 4.0,
                "max_time_s": 6.0, "target_rel_ci": 0.0001, "cooldown_timeout_s": 1.0}  # fmt: skip


@pytest.mark.parametrize("kind", ["train", "measure"])
def test_worker_killed_mid_task_is_redelivered_and_the_trial_completes(
    short_stack: Stack, tmp_path: Path, kind: str
) -> None:
    queue = "train" if kind == "train" else "edge"
    data = tmp_path / "data"
    make_tiny_data(data)
    first = {q: start_worker(short_stack, q, f"{q}@{kind}-fault") for q in ("edge", "train")}
    replacement = None
    outcome: dict[str, Any] = {}
    try:
        for q, record in first.items():
            wait_ready(short_stack, q, record)
        urls = {
            "storage_url": f"sqlite:///{tmp_path / 'search.db'}",
            "store_url": f"sqlite:///{tmp_path / 'm.db'}",
        }
        options = {**OPTIONS, "parallel": 1, "epochs": 3, "protocol": SLOW_MEASURE}

        def search() -> None:
            try:
                outcome["summary"], outcome["study"] = run_search(
                    short_stack.settings, study_name="fault", data=data, trials=1,
                    progress=False, **urls, **options,
                )  # fmt: skip
            except BaseException as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=search, daemon=True)
        thread.start()
        victim = first[queue]
        deadline = time.monotonic() + 120
        pattern = rf"Task hpc2edge\.{kind}\[[^\]]+\] received"
        while time.monotonic() < deadline and thread.is_alive():
            if re.search(pattern, Path(victim.log).read_text()):
                break
            time.sleep(0.2)
        time.sleep(1.0)
        # The node goes down: the worker, its pool process and any training child, at once.
        os.killpg(os.getpgid(victim.pid), signal.SIGKILL)
        replacement = start_worker(short_stack, queue, f"{queue}2@{kind}-fault")
        wait_ready(short_stack, queue, replacement)
        thread.join(timeout=VISIBILITY_S + 120)
        assert not thread.is_alive(), "the search did not finish after the redelivery"
    finally:
        for record in (*first.values(), replacement):
            if record is not None:
                procs.stop(record)
    assert "error" not in outcome, outcome.get("error")
    summary, study = outcome["summary"], outcome["study"]
    assert summary["complete"] == 1, [t.user_attrs.get("reason") for t in study.trials]
    (trial,) = study.trials
    task = trial.user_attrs[f"{kind}_task"]
    assert task["attempt"] == 1, "redelivered by the broker, not re-sent by the orchestrator"
    answered_by = trial.user_attrs["train" if kind == "train" else "latency"]["worker"]
    assert answered_by == replacement.name
    assert executed(replacement.log, kind) == [task["id"]]
    assert executed(first[queue].log, kind) == []


def test_broker_restart_mid_search_loses_nothing(short_stack: Stack, tmp_path: Path) -> None:
    """Stop the broker (AOF on disk) mid-search for 30 s and start it again: the orchestrator and
    both workers reconnect on their own, and every trial completes."""
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
            if re.search(r"Task hpc2edge\.train\[[^\]]+\] received", Path(train.log).read_text()):
                break
            time.sleep(0.2)
        localbroker.stop(short_stack.state_dir)  # SIGTERM: redis fsyncs the AOF and exits
        time.sleep(30)
        assert thread.is_alive(), "the orchestrator must wait for the broker, not give up"
        localbroker.start(short_stack.settings)
        thread.join(timeout=VISIBILITY_S + 240)
        assert not thread.is_alive(), "the search did not finish after the broker came back"
    finally:
        procs.stop(edge)
        procs.stop(train)
    assert "error" not in outcome, repr(outcome.get("error"))
    summary, study = outcome["summary"], outcome["study"]
    assert summary["trials"] == 4
    assert summary["complete"] == 4, [t.user_attrs.get("reason") for t in study.trials]
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    # The workers were not restarted: the same processes served before and after.
    assert executed(train.log, "train")
    # ...and saw the broker go (Celery's consumer, or the liveness heartbeat, whichever
    # noticed first while a training held the pool).
    log = Path(train.log).read_text()
    assert "Connection to broker lost" in log or "heartbeat to the broker failed" in log
