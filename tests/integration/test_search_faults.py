"""Faults during a search: the train and the edge worker killed mid-task (the broker redelivers
each task and the trials complete) and the broker down for 30 s (everyone reconnects, nothing is
lost).

Runs on its own broker with a short visibility timeout (Redis redelivers an unacknowledged task
after it), so the session's broker and workers are not disturbed. The visibility timeout must
exceed the train time limit; so the limit is as short as this machine allows: the longest
training these searches send (the largest of the small networks they are given) is first timed
here, over the in-process dispatcher, and the limit gives it several times that.

**One search, both kills** (the ``killed`` fixture, asserted per kind by the parametrized test):
two trials; the edge worker measures trial A, then, as A's training starts on the train worker,
takes trial B's measurement. Each worker is killed one second into the task it holds (the node
goes down: the worker, its pool process and any training child, at once), so both messages wait
in their role's unacked hash. The replacements start once both are older than the visibility
timeout: kombu's redis transport sweeps the unacked hash when a consumer starts polling (and
then only every ~100 s: ``unacked_restore_interval`` 10 s x ``unacked_restore_throttle`` 10), so
each replacement's first sweep puts the held task back on its queue. One wait for the visibility
timeout serves both kinds; the redelivery is the broker's (attempt 1, the same task id) either
way.

**Both scenarios at once**: the killed search and the broker restart (on a broker of its own,
stopped and started as it likes) run side by side in background threads from the module's
start (the ``scenarios`` fixture); most of each is waiting (the visibility timeout, the outage,
kombu's sweep), so together they take little longer than the longer one. Each test waits for its
own scenario and asserts on it alone.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
optuna = pytest.importorskip("optuna")

from hpc2edge.config import load_settings  # noqa: E402
from hpc2edge.ops import localbroker  # noqa: E402
from hpc2edge.roles import ROLE_OF_QUEUE  # noqa: E402
from hpc2edge.search import prepare  # noqa: E402
from hpc2edge.search import study as st  # noqa: E402
from hpc2edge.search.dispatch import InlineDispatcher  # noqa: E402
from hpc2edge.search.objectives import Objective  # noqa: E402
from hpc2edge.search.run import run_search  # noqa: E402
from hpc2edge.store.artifacts import DirectoryArtifactStore  # noqa: E402
from hpc2edge.testing.fakes import FakeEdge  # noqa: E402
from hpc2edge.testing.training import make_tiny_data  # noqa: E402
from hpc2edge.training.service import train_request  # noqa: E402
from hpc2edge.transport import broker  # noqa: E402
from hpc2edge.transport.app import train_limits_s, unacked_prefix  # noqa: E402
from hpc2edge.util import procs  # noqa: E402
from tests.conftest import Stack, own_broker, start_worker, wait_ready  # noqa: E402
from tests.integration.test_fleet_e2e import ONE_BLOCK  # noqa: E402
from tests.integration.test_search_e2e import OPTIONS, executed  # noqa: E402

# The killed search waits out the visibility timeout once (a minute or more) and the broker
# restart test its outage; both well inside this on a loaded machine.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

# A measurement of about 10 s (the quick protocol takes under a second on these tiny models), so
# the kill lands while it runs; it converges (an unstable one would be measured again), and its
# worst case stays within the worker's 40 s limit.
SLOW_MEASURE = {"warmup_min_s": 1.0, "warmup_min_runs": 3, "min_runs": 20, "min_time_s": 4.0,
                "max_time_s": 8.0, "target_rel_ci": 0.05, "cooldown_timeout_s": 1.0}  # fmt: skip
# The networks the searches here train, enqueued: one-block networks, so the trainings (and
# with them the train limit and the visibility timeout) stay short and predictable on a loaded
# machine; which network a trial trains is no part of what is tested.
POINTS = [
    {**ONE_BLOCK, "block1_channels": 8, "block1_kernel_s": 3},
    {**ONE_BLOCK, "block1_channels": 8, "block1_kernel_s": 5},
    {**ONE_BLOCK, "block1_channels": 16, "block1_kernel_s": 3},
    {**ONE_BLOCK, "block1_channels": 16, "block1_kernel_s": 5},
]
LARGEST = POINTS[-1]  # timed: the longest training of the module
FAULT_POINTS = POINTS[:2]  # A: its training is killed; B: its measurement is
FAULT_OPTIONS = {**OPTIONS, "parallel": 2, "epochs": 3, "protocol": SLOW_MEASURE}
# No reference-model check when these edge workers join (a second or two each): nothing here
# reads the units' reports; tests/integration/test_fleet.py and test_fleet_e2e.py cover them.
EDGE_ENV = {"HPC2EDGE_EDGE_REFERENCE_EVERY": "0"}

MEASURE_LIMIT_S = 40  # SLOW_MEASURE's worst case is well inside it
TRAIN_LIMIT_MIN_S = 50  # on an idle 2-core machine: the training child gets 45 s of it
HEADROOM = 6  # the child's limit, as a multiple of the timed training (4 ran out on a loaded CI)


def enqueue(study_name: str, storage_url: str, points: list[dict[str, Any]]) -> None:
    """The study with ``points`` waiting in it: the search's first asks hand them out."""
    objective = Objective("pareto")
    sampler = st.make_sampler("random", objective, seed=0, trials=len(points))
    study = st.open_study(study_name, storage_url, objective, sampler)
    for params in points:
        study.enqueue_trial(params)


def _timed_training_s(tmp: Path) -> float:
    """Seconds the longest training of this module (:data:`LARGEST`, the fault search's
    epochs) takes on this machine now.

    A search of it over the in-process dispatcher: the device is the instant double, the
    training the real ``train_request`` a worker runs, in its child process.
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
    storage_url = f"sqlite:///{tmp / 'search.db'}"
    enqueue("fault", storage_url, [LARGEST])
    summary, _ = run_search(
        load_settings(environ={"HPC2EDGE_STATE_DIR": str(tmp / "state")}), study_name="fault",
        data=data, trials=1, progress=False, dispatcher=dispatcher, storage_url=storage_url,
        store_url=f"sqlite:///{tmp / 'm.db'}", **FAULT_OPTIONS,
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
def stack_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The settings of this module's brokers, from the timed training."""
    train_limit = train_limit_s(_timed_training_s(tmp_path_factory.mktemp("fault-timing")))
    return {
        # Short enough to wait for, longer than the longest task (the settings insist).
        "HPC2EDGE_BROKER_VISIBILITY_TIMEOUT_S": str(train_limit + 10),
        "HPC2EDGE_WORKER_TRAIN_TIME_LIMIT_S": str(train_limit),
        "HPC2EDGE_WORKER_MEASURE_TIME_LIMIT_S": str(MEASURE_LIMIT_S),
    }


@pytest.fixture(scope="module")
def short_stack(
    stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The killed search's broker."""
    with own_broker(tmp_path_factory.mktemp("fault-stack"), stack_env) as stack_:
        yield stack_


@pytest.fixture(scope="module")
def restart_stack(
    stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The broker the restart scenario stops and starts (the same settings)."""
    with own_broker(tmp_path_factory.mktemp("restart-stack"), stack_env) as stack_:
        yield stack_


def visibility_s(stack_: Stack) -> int:
    return stack_.settings.broker.visibility_timeout_s


def worker(stack_: Stack, queue: str, hostname: str) -> procs.ProcRecord:
    return start_worker(stack_, queue, hostname, extra_env=EDGE_ENV if queue == "edge" else None)


def received(log: str | Path, kind: str) -> list[str]:
    """Ids of the ``kind`` tasks a worker's log says it received, in order."""
    text = Path(log).read_text(errors="replace") if Path(log).exists() else ""
    return re.findall(rf"Task hpc2edge\.{kind}\[([^\]]+)\] received", text)


def unacked(stack_: Stack, queue: str) -> dict[str, float]:
    """Task id -> delivery time (unix s) of each message in the unacked hash of ``queue``'s
    role, read as admin: what a consumer's sweep restores once older than the visibility."""
    prefix = unacked_prefix(stack_.as_role(ROLE_OF_QUEUE[queue]))
    with broker.client(stack_.as_role("admin")) as admin:
        delivered = dict(admin.zrange(f"{prefix}:index", 0, -1, withscores=True))
        messages = admin.hgetall(prefix)
    return {
        json.loads(raw)[0]["headers"]["id"]: float(delivered.get(tag, 0.0))
        for tag, raw in messages.items()
    }


@dataclass
class Killed:
    outcome: dict[str, Any]  # "summary" and "study", or "error"
    held: dict[str, str]  # kind -> id of the task its worker held when killed
    first: dict[str, procs.ProcRecord]  # kind -> the killed worker
    replacement: dict[str, procs.ProcRecord]  # kind -> the worker started after the visibility


KIND_QUEUE = {"train": "train", "measure": "edge"}
#: Which received task of its kind each worker is killed on: the train worker on its first
#: training (trial A's); the edge worker on its second measurement (trial B's, taken as A's
#: training starts).
KILL_ON = {"train": 1, "measure": 2}


def run_killed(short_stack: Stack, tmp: Path) -> Killed:
    """The search of :data:`FAULT_POINTS` with both workers killed mid-task (the ``killed``
    scenario). Every worker it started is stopped before it returns (their logs stay)."""
    data = tmp / "data"
    make_tiny_data(data)
    first = {kind: worker(short_stack, q, f"{q}@fault") for kind, q in KIND_QUEUE.items()}
    replacement: dict[str, procs.ProcRecord] = {}
    outcome: dict[str, Any] = {}
    try:
        for kind, record in first.items():
            wait_ready(short_stack, KIND_QUEUE[kind], record)

        storage_url = f"sqlite:///{tmp / 'search.db'}"
        enqueue("fault", storage_url, FAULT_POINTS)

        def search() -> None:
            try:
                outcome["summary"], outcome["study"] = run_search(
                    short_stack.settings, study_name="fault", data=data,
                    trials=len(FAULT_POINTS), progress=False, storage_url=storage_url,
                    store_url=f"sqlite:///{tmp / 'm.db'}", **FAULT_OPTIONS,
                )  # fmt: skip
            except BaseException as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=search, daemon=True)
        thread.start()
        held: dict[str, str] = {}
        seen_at: dict[str, float] = {}
        deadline = time.monotonic() + 240
        while len(held) < len(KILL_ON):
            assert time.monotonic() < deadline and thread.is_alive(), (
                f"no kill point reached (held: {held}): {outcome.get('error')!r}"
            )
            for kind, nth in KILL_ON.items():
                if kind in held:
                    continue
                if kind not in seen_at:
                    ids = received(first[kind].log, kind)
                    if len(ids) >= nth:
                        seen_at[kind] = time.monotonic()
                elif time.monotonic() - seen_at[kind] >= 1.0:
                    held[kind] = received(first[kind].log, kind)[nth - 1]
                    os.killpg(os.getpgid(first[kind].pid), signal.SIGKILL)
            time.sleep(0.1)
        # Each held message waits in its role's unacked hash, delivered when it was received.
        waiting = {kind: unacked(short_stack, KIND_QUEUE[kind]) for kind in KILL_ON}
        for kind, task_id in held.items():
            assert task_id in waiting[kind], (kind, task_id, waiting[kind])
        due = max(waiting[kind][held[kind]] for kind in KILL_ON) + visibility_s(short_stack) + 1
        time.sleep(max(0.0, due - time.time()))
        replacement = {
            kind: worker(short_stack, q, f"{q}2@fault") for kind, q in KIND_QUEUE.items()
        }
        for kind, record in replacement.items():
            # A ping may queue behind the restored measurement: generous.
            wait_ready(short_stack, KIND_QUEUE[kind], record, timeout_s=120)
        thread.join(timeout=visibility_s(short_stack) + 240)
        assert not thread.is_alive(), "the search did not finish after the redelivery"
    finally:
        for record in (*first.values(), *replacement.values()):
            procs.stop(record)
    return Killed(outcome, held, first, replacement)


@dataclass
class Restarted:
    outcome: dict[str, Any]  # "summary" and "study", or "error"
    train: procs.ProcRecord  # the train worker that served before and after the outage


def run_restart(stack_: Stack, tmp: Path) -> Restarted:
    """The search of :data:`POINTS` with the broker stopped for 30 s once a training is in
    flight (the ``restart`` scenario). Its workers are stopped before it returns."""
    data = tmp / "data"
    make_tiny_data(data)
    edge = worker(stack_, "edge", "edge@restart")
    train = worker(stack_, "train", "train@restart")
    outcome: dict[str, Any] = {}
    try:
        wait_ready(stack_, "edge", edge)
        wait_ready(stack_, "train", train)
        urls = {
            "storage_url": f"sqlite:///{tmp / 'search.db'}",
            "store_url": f"sqlite:///{tmp / 'm.db'}",
        }
        enqueue("restart", urls["storage_url"], POINTS)

        def search() -> None:
            try:
                outcome["summary"], outcome["study"] = run_search(
                    stack_.settings, study_name="restart", data=data, trials=len(POINTS),
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
        localbroker.stop(stack_.state_dir)  # SIGTERM: redis fsyncs the AOF and exits
        time.sleep(30)
        assert thread.is_alive(), "the orchestrator must wait for the broker, not give up"
        localbroker.start(stack_.settings)
        thread.join(timeout=visibility_s(stack_) + 240)
        assert not thread.is_alive(), "the search did not finish after the broker came back"
    finally:
        procs.stop(edge)
        procs.stop(train)
    return Restarted(outcome, train)


SCENARIO_WAIT_S = 800  # for a scenario to finish (inside the module's per-test limit)


@pytest.fixture(scope="module", autouse=True)
def scenarios(
    short_stack: Stack, restart_stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[Any]]]:
    """The two scenarios, started together in background threads when the module starts, each on
    its own broker; a test takes its scenario's result (or its error) from here.

    Their searches export candidates in this process: one export at a time (torch's ONNX
    exporter and its seeded RNG are process-wide state), as two orchestrators on two hosts do."""
    lock = threading.Lock()
    real_build = prepare.build

    def build(spec: Any, seed: int) -> Any:
        with lock:
            return real_build(spec, seed)

    with (
        pytest.MonkeyPatch.context() as patch,
        ThreadPoolExecutor(2, thread_name_prefix="fault-scenario") as pool,
    ):
        patch.setattr(prepare, "build", build)
        futures = {
            "killed": pool.submit(run_killed, short_stack, tmp_path_factory.mktemp("fault-kill")),
            "restart": pool.submit(
                run_restart, restart_stack, tmp_path_factory.mktemp("fault-restart")
            ),
        }
        try:
            yield futures
        finally:
            for future in futures.values():  # let each finish (and stop its workers) first
                future.exception(timeout=SCENARIO_WAIT_S)


@pytest.fixture(scope="module")
def killed(scenarios: dict[str, Future[Any]]) -> Killed:
    """The killed search's outcome, once it is done."""
    result: Killed = scenarios["killed"].result(timeout=SCENARIO_WAIT_S)
    return result


@pytest.mark.parametrize("kind", ["train", "measure"])
def test_worker_killed_mid_task_is_redelivered_and_the_trial_completes(
    killed: Killed, kind: str
) -> None:
    """The ``killed`` search: the task the ``kind`` worker held when it died is redelivered by
    the broker (attempt 1, the same id) to the replacement, which answers it; the victim never
    finished it; every task of the kind ran exactly once; both trials complete."""
    assert "error" not in killed.outcome, killed.outcome.get("error")
    summary, study = killed.outcome["summary"], killed.outcome["study"]
    assert summary["complete"] == len(FAULT_POINTS), [
        t.user_attrs.get("reason") for t in study.trials
    ]
    held = killed.held[kind]
    (trial,) = [t for t in study.trials if t.user_attrs[f"{kind}_task"]["id"] == held]
    task = trial.user_attrs[f"{kind}_task"]
    assert task["attempt"] == 1, "redelivered by the broker, not re-sent by the orchestrator"
    answered_by = trial.user_attrs["train" if kind == "train" else "latency"]["worker"]
    assert answered_by == killed.replacement[kind].name
    by_victim = executed(killed.first[kind].log, kind)
    by_replacement = executed(killed.replacement[kind].log, kind)
    assert held not in by_victim
    assert by_replacement.count(held) == 1
    assert sorted(by_victim + by_replacement) == sorted(
        t.user_attrs[f"{kind}_task"]["id"] for t in study.trials
    ), "each task of the kind ran once, on the victim or on its replacement"


def test_broker_restart_mid_search_loses_nothing(scenarios: dict[str, Future[Any]]) -> None:
    """The ``restart`` scenario: the broker (AOF on disk) stopped mid-search for 30 s and started
    again; the orchestrator and both workers reconnect on their own, and every trial completes.

    30 s stays under the train time limit (50 s or more): a task whose result cannot be stored
    while the broker is away must not outlive its limit. A task that finished during the outage
    comes back from the unacked hash once older than the visibility timeout, at a worker's next
    sweep (kombu: ~100 s after it reconnected)."""
    restarted: Restarted = scenarios["restart"].result(timeout=SCENARIO_WAIT_S)
    outcome, train = restarted.outcome, restarted.train
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
