"""Faults during a search: a train or edge worker killed mid-task (the broker redelivers the
task and the trial completes) and the broker down for 30 s (everyone reconnects, nothing is lost).

Runs on its own broker with a short visibility timeout (Redis redelivers an unacknowledged task
after it), so the session's broker and workers are not disturbed. The visibility timeout must
exceed the train time limit, and the tests wait for it after each kill; so the limit is as short
as this machine allows: the training these searches send is first timed here (the same search
over the in-process dispatcher), and the limit gives it several times that.
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

from hpc2edge.config import load_settings  # noqa: E402
from hpc2edge.ops import localbroker  # noqa: E402
from hpc2edge.search.dispatch import InlineDispatcher  # noqa: E402
from hpc2edge.search.run import run_search  # noqa: E402
from hpc2edge.store.artifacts import DirectoryArtifactStore  # noqa: E402
from hpc2edge.testing.fakes import FakeEdge  # noqa: E402
from hpc2edge.testing.training import make_tiny_data  # noqa: E402
from hpc2edge.training.service import train_request  # noqa: E402
from hpc2edge.transport.app import train_limits_s  # noqa: E402
from hpc2edge.util import procs  # noqa: E402
from tests.conftest import Stack, own_broker, start_worker, wait_ready  # noqa: E402
from tests.integration.test_search_e2e import OPTIONS, executed  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# A measurement of about 5 s (the quick protocol takes under a second on these tiny models), so
# the kill lands while it runs; it converges (an unstable one would be measured again), and its
# worst case stays within the worker's 40 s limit.
SLOW_MEASURE = {"warmup_min_s": 1.0, "warmup_min_runs": 3, "min_runs": 20, "min_time_s": 4.0,
                "max_time_s": 8.0, "target_rel_ci": 0.05, "cooldown_timeout_s": 1.0}  # fmt: skip
FAULT_OPTIONS = {**OPTIONS, "parallel": 1, "epochs": 3, "protocol": SLOW_MEASURE}

MEASURE_LIMIT_S = 40  # SLOW_MEASURE's worst case is well inside it
TRAIN_LIMIT_MIN_S = 50  # on an idle 2-core machine: the training child gets 45 s of it
HEADROOM = 4  # the training child's limit is at least this many times the timed training


def _timed_training_s(tmp: Path) -> float:
    """Seconds the training the fault searches send takes on this machine now.

    The same search (options, seed, data) over the in-process dispatcher: the device is the
    instant double, the training the real ``train_request`` a worker runs, in its child process.
    """
    data = tmp / "data"
    make_tiny_data(data)
    artifacts = DirectoryArtifactStore(tmp / "artifacts")
    seconds: list[float] = []

    def train(payload: dict[str, Any]) -> dict[str, Any]:
        start = time.monotonic()
        result = train_request(payload, state_dir=tmp / "state")
        seconds.append(time.monotonic() - start)
        return result

    dispatcher = InlineDispatcher({"measure": FakeEdge(artifacts), "train": train}, artifacts)
    summary, _ = run_search(
        load_settings(environ={"HPC2EDGE_STATE_DIR": str(tmp / "state")}), study_name="fault",
        data=data, trials=1, progress=False, dispatcher=dispatcher,
        storage_url=f"sqlite:///{tmp / 'search.db'}", store_url=f"sqlite:///{tmp / 'm.db'}",
        **FAULT_OPTIONS,
    )  # fmt: skip
    assert summary["complete"] == 1 and len(seconds) == 1, summary
    return seconds[0]


def train_limit_s(trained_s: float) -> int:
    """The shortest worker train limit whose training child gets ``HEADROOM`` x ``trained_s``."""
    limit = TRAIN_LIMIT_MIN_S
    while train_limits_s(limit)[0] < HEADROOM * trained_s:
        limit += 10
    return limit


@pytest.fixture(scope="module")
def short_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    train_limit = train_limit_s(_timed_training_s(tmp_path_factory.mktemp("fault-timing")))
    env = {
        # Short enough to wait for, longer than the longest task (the settings insist).
        "HPC2EDGE_BROKER_VISIBILITY_TIMEOUT_S": str(train_limit + 10),
        "HPC2EDGE_WORKER_TRAIN_TIME_LIMIT_S": str(train_limit),
        "HPC2EDGE_WORKER_MEASURE_TIME_LIMIT_S": str(MEASURE_LIMIT_S),
    }
    with own_broker(tmp_path_factory.mktemp("fault-stack"), env) as stack_:
        yield stack_


def visibility_s(stack_: Stack) -> int:
    return stack_.settings.broker.visibility_timeout_s


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
        options = FAULT_OPTIONS

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
        thread.join(timeout=visibility_s(short_stack) + 120)
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
        thread.join(timeout=visibility_s(short_stack) + 240)
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
