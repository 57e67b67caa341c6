"""``hpc2edge search`` around the orchestrator: the preflight for live workers (exit 2), a search
that completes nothing (exit 1), and ``--log-format``.

The command runs in-process through :func:`hpc2edge.cli.main`, with the broker's dispatcher
replaced by the inline one over the fake device and trainer (:mod:`hpc2edge.testing.fakes`),
told how many workers each queue has.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hpc2edge.search.dispatch import InlineDispatcher
from hpc2edge.search.run import (
    RDB_FLEET_WORKERS,
    NoLiveWorkers,
    missing_workers,
    preflight,
    storage_advice,
)
from hpc2edge.store.artifacts import DirectoryArtifactStore
from hpc2edge.testing.fakes import FakeClock, FakeEdge, FakeTrainer

pytestmark = pytest.mark.unit


@dataclass
class CountedWorkers(InlineDispatcher):
    """The inline dispatcher, with live workers per queue as a broker would report them."""

    live: Callable[[], dict[str, int]] = dict
    asked: int = 0
    closed: bool = False

    def workers(self, queues: Sequence[str] = ()) -> dict[str, int]:
        self.asked += 1
        return self.live()

    def close(self) -> None:
        self.closed = True


def dispatcher(
    tmp: Path, live: Callable[[], dict[str, int]] = dict, constant: float | None = None
) -> CountedWorkers:
    """The inline dispatcher over the fake device and trainer; ``constant``: the constant
    predictor's val MSE every training reports (default: the fake trainer's)."""
    artifacts = DirectoryArtifactStore(tmp / "artifacts")
    trainer = FakeTrainer()

    def train(payload: dict[str, Any]) -> dict[str, Any]:
        result = trainer(payload)
        return result if constant is None else {**result, "val_mse_constant": constant}

    handlers: dict[str, Any] = {"measure": FakeEdge(artifacts), "train": train}
    return CountedWorkers(handlers, artifacts, live=live)


# --- preflight -----------------------------------------------------------------------------------


def test_a_queue_reported_empty_or_not_reported_is_missing(tmp_path):
    assert missing_workers(dispatcher(tmp_path)) == []  # {}: nobody can tell
    assert missing_workers(dispatcher(tmp_path, lambda: {"edge": 0, "train": 1})) == ["edge"]
    assert missing_workers(dispatcher(tmp_path, lambda: {"edge": 0, "train": 0})) == [
        "edge",
        "train",
    ]
    # A dispatcher that reports workers misses every queue it reports none for: a device kind
    # whose queue no worker has announced (an unknown --device) is missing.
    assert missing_workers(dispatcher(tmp_path, lambda: {"train": 2})) == ["edge"]
    assert missing_workers(
        dispatcher(tmp_path, lambda: {"train": 2, "edge": 1}), ["edge.nano", "train"]
    ) == ["edge.nano"]


def test_a_fleet_on_an_rdb_storage_is_advised_a_journal_file(tmp_path):
    many = dispatcher(tmp_path, lambda: {"edge": 16, "train": RDB_FLEET_WORKERS})
    few = dispatcher(tmp_path, lambda: {"edge": 1, "train": RDB_FLEET_WORKERS - 1})
    for url in ("sqlite:///s.db", "postgresql+psycopg://u@h/db"):
        advice = storage_advice(url, many)
        assert advice and f"{RDB_FLEET_WORKERS} live train workers" in advice
        assert 'search.storage = "journal:///PATH"' in advice
        assert storage_advice(url, few) is None
    assert storage_advice("journal:///s.journal", many) is None
    assert storage_advice("sqlite:///s.db", dispatcher(tmp_path)) is None  # nobody can tell

    def broken() -> dict[str, int]:
        raise ConnectionError("broker away")

    assert storage_advice("sqlite:///s.db", dispatcher(tmp_path, broken)) is None


def test_preflight_names_the_missing_queue_and_how_to_start_a_worker(tmp_path):
    said: list[str] = []
    d = dispatcher(tmp_path, lambda: {"edge": 0, "train": 1})
    with pytest.raises(NoLiveWorkers) as caught:
        preflight(d, say=said.append)
    assert caught.value.exit_code == 2
    assert caught.value.queues == ["edge"]
    message = str(caught.value)
    assert message.startswith("no live worker on the edge queue: ")
    assert "`celery -A hpc2edge worker -Q edge --pool solo -c 1` on the edge device" in message
    assert "-Q train" not in message and "\n" not in message
    assert "--wait-workers S" in message
    assert said == []  # no waiting asked for, none announced
    both = NoLiveWorkers(["edge", "train"], waited_s=30)
    assert str(both).startswith("no live worker on the edge and train queues after waiting 30 s")
    assert "-Q train -c 1` on a GPU node" in str(both)


def test_preflight_waits_for_a_worker_that_appears(tmp_path):
    clock = FakeClock(0.0)
    # The edge worker's first heartbeat lands 5 s after the search started.
    d = dispatcher(tmp_path, lambda: {"edge": int(clock.time() >= 5.0), "train": 1})
    said: list[str] = []
    preflight(d, 60, say=said.append, clock=clock.time, sleep=clock.sleep)
    assert said == [
        "waiting up to 60 s for a worker on the edge queue",
        "workers are live on every queue: starting",
    ]
    assert clock.time() == 6.0  # polled every 2 s: at 2, 4 and 6
    assert d.asked == 4


def test_preflight_gives_up_when_the_wait_runs_out(tmp_path):
    clock = FakeClock(0.0)
    d = dispatcher(tmp_path, lambda: {"edge": 1, "train": 0})
    said: list[str] = []
    with pytest.raises(NoLiveWorkers, match="no live worker on the train queue after waiting 5 s"):
        preflight(d, 5, say=said.append, clock=clock.time, sleep=clock.sleep)
    assert clock.time() == 5.0  # the last poll at the deadline, not past it
    assert said == ["waiting up to 5 s for a worker on the train queue"]


# --- the command ---------------------------------------------------------------------------------


@dataclass
class Command:
    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str]
    live: dict[str, int] = field(default_factory=dict)
    made: list[CountedWorkers] = field(default_factory=list)
    constant: float | None = None

    def __post_init__(self) -> None:
        from hpc2edge.search import dispatch

        self.monkeypatch.delenv("HPC2EDGE_CONFIG", raising=False)
        self.monkeypatch.setenv("HPC2EDGE_STATE_DIR", str(self.tmp / "state"))
        (self.tmp / "x.hdf5").write_bytes(b"")  # the fake trainer never opens it

        def broker_dispatcher(settings: Any) -> CountedWorkers:
            d = dispatcher(self.tmp, lambda: dict(self.live), self.constant)
            self.made.append(d)
            return d

        self.monkeypatch.setattr(dispatch, "CeleryDispatcher", broker_dispatcher)

    @property
    def storage(self) -> str:
        return f"sqlite:///{self.tmp / 'search.db'}"

    def run(self, *args: str) -> tuple[int, str, str]:
        from hpc2edge.cli import main

        argv = [
            "search", "--study", "cmd", "--data", str(self.tmp / "x.hdf5"), "--trials", "2",
            "--storage", self.storage, "--no-baseline", "--sampler", "random", "--seed", "0",
            "--frames", "8", "--size", "41", "--parallel", "2", *args,
        ]  # fmt: skip
        code = main(argv)
        out = self.capsys.readouterr()
        return code, out.out, out.err


@pytest.fixture
def command(tmp_path, monkeypatch, capsys) -> Command:
    pytest.importorskip("torch")
    pytest.importorskip("optuna")
    return Command(tmp_path, monkeypatch, capsys)


def test_search_without_an_edge_worker_exits_2_before_asking_a_trial(command):
    import optuna

    command.live = {"edge": 0, "train": 1}
    code, out, err = command.run()
    assert code == 2
    assert err.splitlines() == [
        "hpc2edge: error: no live worker on the edge queue: start `celery -A hpc2edge worker "
        "-Q edge --pool solo -c 1` on the edge device (`hpc2edge up` starts both on this "
        "machine, `hpc2edge status` lists the workers; --wait-workers S waits for them)"
    ]
    assert out == ""
    study = optuna.load_study(study_name="cmd", storage=command.storage)
    assert study.trials == []  # nothing asked, nothing sent
    assert command.made[0].sent == [] and command.made[0].closed


def test_a_search_with_no_complete_trial_exits_1_with_the_reasons(command):
    # Every network is over a budget no network can meet: both trials are pruned.
    code, out, err = command.run("--latency-budget-ms", "0.000001")
    assert code == 1
    assert "(empty: no trial completed within the constraints)" in out
    last = err.splitlines()[-1]
    assert last.startswith(
        "Error: study 'cmd' finished without a single complete trial (2 pruned, 0 failed); "
        "commonest reasons: 2x over the latency budget: "
    ), last
    assert last.endswith("ms > 1e-06 ms (not trained)"), last
    assert "trial 0 pruned: over the latency budget" in err  # the plain line of the trial


def test_a_search_that_completes_exits_0_with_plain_progress_and_the_front(command):
    command.live = {"edge": 1, "train": 1}
    code, out, err = command.run("--log-format", "plain")
    assert code == 0, err
    assert "Pareto front" in out and "2 trials, 2 complete" in out
    assert "trial 0: measure sent to the edge queue" in err
    assert "trial 1 complete: val MSE " in err
    assert "\r" not in err  # plain lines, no bar
    assert "] done 2/2 (complete 2, pruned 0, failed 0)" in err


def test_log_format_bar_draws_a_bar_even_into_a_file(command):
    code, _, err = command.run("--log-format", "bar")
    assert code == 0, err
    assert "\r" in err and "2/2" in err.split("\r")[-1]


def test_a_resume_with_other_training_settings_is_one_line_and_exit_1(command):
    command.live = {"edge": 1, "train": 1}
    code, _, err = command.run("--log-format", "plain")
    assert code == 0, err
    code, out, err = command.run("--log-format", "plain", "--epochs", "3", "--trials", "3")
    assert "Pareto front" not in out
    assert code == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [
        "hpc2edge: error: study 'cmd' was started with other settings (epochs: the study has 2, "
        "this run asks 3); rerun with the same options or pick another --study name"
    ], err


def test_the_learning_rate_schedule_reaches_the_trainings_and_is_checked_on_resume(command):
    command.live = {"edge": 1, "train": 1}
    code, _, err = command.run(
        "--log-format", "plain", "--lr-step-epochs", "1", "--lr-gamma", "0.6"
    )
    assert code == 0, err
    trains = [p for kind, _, p in command.made[0].sent if kind == "train"]
    assert trains and all(
        (p["hparams"]["lr_step_epochs"], p["hparams"]["lr_gamma"]) == (1, 0.6) for p in trains
    )
    code, _, err = command.run("--log-format", "plain", "--lr-step-epochs", "1", "--trials", "3")
    assert code == 1
    assert "(lr gamma: the study has 0.6, this run asks 0.5)" in err.splitlines()[-1]


@pytest.mark.parametrize(
    "args", [("--lr-gamma", "1.5"), ("--lr-gamma", "0"), ("--lr-step-epochs", "0")]
)
def test_a_bad_learning_rate_schedule_is_refused_before_anything_is_asked(command, args):
    import optuna

    command.live = {"edge": 1, "train": 1}
    code, out, err = command.run("--log-format", "plain", *args)
    assert code == 2 and out == ""
    assert args[0] in err and "Traceback" not in err
    assert command.made == []  # no dispatcher: nothing sent
    with pytest.raises(KeyError):
        optuna.load_study(study_name="cmd", storage=command.storage)


# --- the constant predictor ----------------------------------------------------------------------


def _baseline_mse() -> float:
    from hpc2edge.space import get_space
    from hpc2edge.testing.fakes import fake_val_mse

    return fake_val_mse(get_space("cnn3d").baseline().with_input(8, 41))


def test_the_front_shows_the_constant_and_marks_the_models_not_better_than_it(command):
    import json

    from hpc2edge.cli.search import CONSTANT_MARK

    command.constant = _baseline_mse()  # the baseline's own loss: not below it
    code, out, err = command.run("--baseline", "--trials", "4")
    assert code == 0, err
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("Pareto front"))
    assert lines[head + 2].split()[:2] == ["mean", "(constant)"]
    assert lines[head + 2].split()[5] == f"{command.constant:.5f}"
    base = lines[head + 3].split()
    assert base[0] == "base" and base[5].endswith(CONSTANT_MARK)  # exactly equal is flagged
    legend = f"  {CONSTANT_MARK} no better than the constant predictor"
    assert sum(line.startswith(legend) for line in lines) == 1
    assert any(
        line.startswith("  loss ratios: the baseline is no better than predicting the mean")
        for line in lines
    )
    code, out, err = command.run("--baseline", "--trials", "4", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["constant_predictor"]["val_mse"] == command.constant
    for r in summary["front_rows"]:
        assert r["no_better_than_constant"] is (r["val_mse"] >= command.constant)


def test_no_mark_and_no_caveat_when_every_model_beats_the_constant(command):
    from hpc2edge.cli.search import CONSTANT_MARK

    command.constant = 1.0
    code, out, err = command.run("--baseline")
    assert code == 0, err
    mean = [line.split() for line in out.splitlines() if line.split()[:1] == ["mean"]]
    assert len(mean) == 1 and mean[0][1] == "(constant)" and mean[0][5] == "1.00000"
    assert CONSTANT_MARK not in out and "loss ratios:" not in out
