"""The search end to end: the orchestrator over the real TLS broker, the real ``edge`` worker
(ONNX Runtime on this CPU) and the real ``train`` worker, on synthetic RAISE-LPBF data.

What the workers did is read from their own logs (``Task hpc2edge.measure[<id>] succeeded``)
and compared with what the orchestrator says it sent.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
optuna = pytest.importorskip("optuna")

from hpc2edge.config import derived  # noqa: E402
from hpc2edge.search import study as st  # noqa: E402
from hpc2edge.search.run import run_search  # noqa: E402
from hpc2edge.testing.training import make_tiny_data  # noqa: E402
from hpc2edge.util import procs  # noqa: E402
from tests.conftest import start_worker, wait_ready  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OPTIONS: dict[str, Any] = {
    "space_name": "cnn3d",
    "objective": "pareto",
    "latency_budget_ms": None,
    "sampler": "random",
    "seed": 5,
    "parallel": 2,
    "latency_first": True,
    "batch_size": 1,
    "precision": "fp32",
    "protocol": "quick",
    "epochs": 1,
    "lr": 1e-2,
    "train_batch_size": 8,
    "engine": "single",
    "frames": 8,
    "size": 41,
    "test_fraction": 0.25,
    "baseline": False,
    "confirm_front": False,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("search-data")
    make_tiny_data(folder)
    return folder


@pytest.fixture(scope="module")
def urls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("search-db")
    return {
        "storage_url": f"sqlite:///{folder / 'search.db'}",
        "store_url": f"sqlite:///{folder / 'measurements.db'}",
    }


def mark(log: str | Path) -> int:
    """Where a worker's log ends now: :func:`executed` reads what was written after it."""
    path = Path(log)
    return path.stat().st_size if path.exists() else 0


def executed(log: str | Path, kind: str, since: int = 0) -> list[str]:
    """Task ids of ``kind`` that a worker's log says succeeded after offset ``since``.

    Task ids are random (hpc2edge.transport.taskids), so a test tells its own tasks from
    earlier tests' by where in the log they are: tests run one at a time.
    """
    with Path(log).open("rb") as fh:
        fh.seek(since)
        text = fh.read().decode(errors="replace")
    return re.findall(rf"Task hpc2edge\.{kind}\[([^\]]+)\] succeeded", text)


@dataclass
class FirstStudy:
    summary: dict[str, Any]
    study: Any
    measured: list[str]  # measure task ids the edge worker's log says it ran during the study
    trained: list[str]


@pytest.fixture(scope="module")
def first_study(broker_stack, workers, data, urls) -> FirstStudy:
    """The study "e2e" over the broker, run once per module for every test that needs it."""
    since = {"edge": mark(workers.edge.log), "train": mark(workers.train.log)}
    summary, study = run_search(
        broker_stack.settings, study_name="e2e", data=data, trials=4, progress=False,
        **urls, **OPTIONS,
    )  # fmt: skip
    return FirstStudy(
        summary=summary,
        study=study,
        measured=executed(workers.edge.log, "measure", since["edge"]),
        trained=executed(workers.train.log, "train", since["train"]),
    )


def test_search_over_the_broker_completes_and_counts_agree(first_study):
    summary, study = first_study.summary, first_study.study
    assert summary["trials"] == 4
    assert summary["failed"] == 0, [t.user_attrs.get("reason") for t in study.trials]
    assert summary["front"], "a finished search has a non-empty front"
    measured, trained = first_study.measured, first_study.trained
    assert len(measured) == summary["tasks_sent"]["measure"]
    assert len(trained) == summary["tasks_sent"]["train"] == summary["complete"]
    for t in study.trials:
        a = t.user_attrs
        assert a["latency"]["worker"] == "edge@test"
        assert a["train"]["worker"] == "train@test"
        assert a["measure_task"]["id"] in measured
        assert t.values == [a["val_mse"], a["latency_ms"]]


def test_second_study_reuses_measurements(broker_stack, workers, data, urls, first_study):
    # Same sampler and seed as the first study (the ``first_study`` fixture, which fills the
    # measurement store): the same networks are asked for, the first two of them here (reuse is
    # the same per network; each trial trains). The device context comes from pinging the edge
    # queue before anything is sent.
    assert first_study.summary["tasks_sent"]["measure"] > 0, "the store was filled by measuring"
    since = mark(workers.edge.log)
    summary, study = run_search(
        broker_stack.settings, study_name="e2e-again", data=data, trials=2, progress=False,
        **urls, **OPTIONS,
    )  # fmt: skip
    asked = {t.user_attrs["arch_id"] for t in study.trials}
    before = {t.user_attrs["arch_id"]: t for t in first_study.study.trials}
    assert len(asked) == 2 and asked <= set(before), "the first study's networks, asked again"
    # A measurement the first study kept flagged unstable (a loaded machine: its CI never met
    # the protocol's target) is measured again, never reused; every other one is reused.
    unstable = sum(1 for a in asked if (before[a].user_attrs.get("latency") or {}).get("unstable"))
    assert summary["complete"] == 2
    assert summary["measurements_reused"] == 2 - unstable
    if not unstable:
        assert summary["tasks_sent"]["measure"] == 0
        assert executed(workers.edge.log, "measure", since) == []


def test_tight_budget_sends_no_train_task(broker_stack, workers, data, urls):
    options = {**OPTIONS, "latency_budget_ms": 1e-6, "seed": 11}
    since = mark(workers.train.log)
    summary, study = run_search(
        broker_stack.settings, study_name="e2e-budget", data=data, trials=3, progress=False,
        **urls, **options,
    )  # fmt: skip
    assert summary["pruned"] == 3
    assert summary["tasks_sent"]["train"] == 0
    assert executed(workers.train.log, "train", since) == []
    for t in study.trials:
        assert t.user_attrs["constraint_latency_ms"] > 0


def test_edge_gone_fails_trials_after_the_timeout_and_the_search_finishes(
    broker_stack, workers, data, urls, tmp_path
):
    # The device goes away: its worker stops (remote control is off, so no consumer can be
    # cancelled from here), and comes back after the search under the same name.
    procs.stop(workers.edge, timeout_s=20.0)
    try:
        s = broker_stack.settings
        settings = replace(s, search=replace(s.search, measure_timeout_s=3, retries=1))
        options = {**OPTIONS, "seed": 21}
        summary, study = run_search(
            settings, study_name="e2e-offline", data=data, trials=2, progress=False,
            **urls, **options,
        )  # fmt: skip
    finally:
        workers.edge = start_worker(broker_stack, "edge", "edge@test")
        wait_ready(broker_stack, "edge", workers.edge)
    assert summary["failed"] == 2
    for t in study.trials:
        assert t.user_attrs["reason"].startswith("edge timeout"), t.user_attrs["reason"]
    # Back online, the device drops the stale messages (they expired) instead of running them.
    pattern = r"Discarding revoked task: hpc2edge\.measure\["
    deadline = time.monotonic() + 30
    discarded = 0
    while time.monotonic() < deadline and discarded < 4:
        time.sleep(0.5)
        discarded = len(re.findall(pattern, Path(workers.edge.log).read_text(errors="replace")))
    assert discarded == 4, "2 trials x 2 attempts, each dropped unrun"
    assert executed(workers.edge.log, "measure") == []
    # And measurements resume: the same device serves the next search (an empty store, so the
    # device has to measure).
    fresh = {**urls, "store_url": f"sqlite:///{tmp_path / 'fresh.db'}"}
    summary, _ = run_search(
        broker_stack.settings, study_name="e2e-back", data=data, trials=1, progress=False,
        **fresh, **{**OPTIONS, "seed": 35},  # a seed whose first network is a small one
    )  # fmt: skip
    assert summary["complete"] == 1 and summary["tasks_sent"]["measure"] == 1


def test_resume_after_sigkill(broker_stack, workers, data, urls, tmp_path):
    """Kill -9 the `hpc2edge search` process mid-search; the same command finishes the study.

    Seed 56: its first asks, and those of the seeds a resume continues with (57-60), are small
    networks (trainings of seconds); none of them is another test's seed here."""
    config = derived.role_config_path(broker_stack.settings, "orchestrator")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPC2EDGE_")}
    env["HPC2EDGE_CONFIG"] = str(config)
    argv = [
        sys.executable, "-m", "hpc2edge.cli", "search", "--study", "e2e-resume",
        "--data", str(data), "--trials", "4", "--storage", urls["storage_url"],
        "--sampler", "random", "--seed", "56", "--parallel", "2", "--protocol", "quick",
        "--epochs", "1", "--lr", "0.01", "--engine", "single", "--frames", "8", "--size", "41",
        "--test-fraction", "0.25", "--no-baseline",
    ]  # fmt: skip
    env["HPC2EDGE_SEARCH_STORE"] = urls["store_url"]
    log = tmp_path / "first.log"
    since = mark(workers.train.log)
    with log.open("w") as out:
        first = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    # Wait until a training is in flight, then kill without warning.
    deadline = time.monotonic() + 180
    storage = st.storage(urls["storage_url"])
    in_flight = False
    while time.monotonic() < deadline and first.poll() is None and not in_flight:
        time.sleep(0.3)
        try:
            study = optuna.load_study(study_name="e2e-resume", storage=storage)
        except KeyError:
            continue
        in_flight = any(
            t.state.name == "RUNNING" and (t.user_attrs.get("train_task") or {}).get("sent")
            for t in study.get_trials(deepcopy=False)
        )
    assert in_flight, log.read_text()[-3000:]
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    killed = optuna.load_study(study_name="e2e-resume", storage=storage)
    sent_before = {
        t.number: t.user_attrs.get("train_task", {}).get("id") for t in killed.get_trials()
    }

    second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]
    study = optuna.load_study(study_name="e2e-resume", storage=storage)
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert all(t.state.name == "COMPLETE" for t in study.trials), [
        t.user_attrs.get("reason") for t in study.trials
    ]
    trained = executed(workers.train.log, "train", since)
    originals = [t for t in study.trials if not t.user_attrs.get("duplicate_of")]
    assert len(trained) == len(set(trained)) == len(originals), "each network trained once"
    assert len(originals) >= 3, "the resumed sampler does not replay the first asks"
    for number, task_id in sent_before.items():
        if task_id:  # in flight at the kill: re-attached, not sent again
            assert study.trials[number].user_attrs["train_task"]["id"] == task_id
    assert "Pareto front" in second.stdout
