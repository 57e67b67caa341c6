"""What a running search shows (:mod:`hpc2edge.search.progress`): plain lines, the tqdm bar, and
that nothing it does can stop the search.

Searches here are real orchestrators over the inline dispatcher with the doubles of
:mod:`hpc2edge.testing.fakes`; a small stand-in orchestrator covers what a real one cannot be
made to do (a ``counts()`` that raises, a resumed study's counts).
"""

from __future__ import annotations

import enum
import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from hpc2edge.search.progress import Progress, choose_format
from hpc2edge.testing.fakes import FakeClock

pytestmark = pytest.mark.unit

PIN = {"frames": 8, "size": 41}


def real_orchestrator(tmp: Path, clock: FakeClock, **config: Any) -> Any:
    """A search of the cnn3d space over the inline dispatcher and the fake device and trainer."""
    pytest.importorskip("torch")
    pytest.importorskip("optuna")
    from hpc2edge.search import candidate as cand
    from hpc2edge.search import study as st
    from hpc2edge.search.dispatch import InlineDispatcher
    from hpc2edge.search.objectives import Objective
    from hpc2edge.search.orchestrator import Orchestrator, SearchConfig
    from hpc2edge.space import get_space
    from hpc2edge.space.base import TrainingHParams
    from hpc2edge.store.artifacts import DirectoryArtifactStore
    from hpc2edge.store.measurements import MeasurementStore
    from hpc2edge.testing.fakes import FakeEdge, FakeTrainer

    st.quiet_optuna()
    artifacts = DirectoryArtifactStore(tmp / "artifacts")
    dispatcher = InlineDispatcher(
        {"measure": FakeEdge(artifacts), "train": FakeTrainer()}, artifacts
    )
    objective = Objective("pareto", config.pop("latency_budget_ms", None))
    config = {"trials": 3, "parallel": 2, "pin": PIN, "baseline": False, **config}
    study = st.open_study(
        "progress",
        f"sqlite:///{tmp / 'search.db'}",
        objective,
        st.make_sampler("random", objective, seed=0, trials=config["trials"]),
    )
    return Orchestrator(
        study,
        dispatcher,
        get_space("cnn3d"),
        objective,
        MeasurementStore(f"sqlite:///{tmp / 'measurements.db'}"),
        cand.TrainPlan(("/data/x.hdf5",), TrainingHParams(), epochs=1),
        SearchConfig(**config),
        clock=clock,
    )


def watch(o: Any, clock: FakeClock, stream: Any, log_format: str = "plain") -> Progress:
    # The orchestrator's fake clock for the elapsed time too: the lines are deterministic.
    p = Progress(o, log_format=log_format, stream=stream, clock=clock.time)
    o.callbacks.append(p)
    return p


def test_plain_mode_prints_a_line_per_event_and_a_status_after_each_trial(tmp_path):
    clock = FakeClock()
    o = real_orchestrator(tmp_path, clock)
    out = io.StringIO()
    p = watch(o, clock, out)
    summary = o.run()
    p.close()
    lines = out.getvalue().splitlines()
    assert all(re.match(r"\[ +\d+\.\d s\] ", line) for line in lines), lines
    text = "\n".join(lines)
    for expected in (
        "measure sent to the edge queue",
        "measured on the edge, ",
        "train sent to the train queue",
        "trained, val MSE ",
    ):
        assert expected in text, expected
    finished = [line for line in lines if " complete: " in line]
    assert len(finished) == summary["complete"] == 3
    for line in finished:  # the line a finished trial always had, after its time stamp
        assert re.search(r"\] trial \d complete: val MSE \d\.\d{5}, \d+\.\d{3} ms$", line), line
    status = [line for line in lines if "] done " in line]
    assert [s.split("] done ")[1].split(" ")[0] for s in status] == ["1/3", "2/3", "3/3"]
    assert "complete 3, pruned 0, failed 0" in status[-1]
    assert "in flight: edge 0, train 0" in status[-1]
    assert f"front {len(summary['front'])}, best loss " in status[-1]


def test_plain_mode_keeps_the_reason_of_a_pruned_trial(tmp_path):
    clock = FakeClock()
    o = real_orchestrator(tmp_path, clock, trials=2, latency_budget_ms=1e-6)
    out = io.StringIO()
    p = watch(o, clock, out)
    o.run()
    p.close()
    pruned = [line for line in out.getvalue().splitlines() if " pruned: " in line]
    assert len(pruned) == 2
    assert all("over the latency budget: " in line for line in pruned)
    assert "(not trained)" in pruned[0]
    assert "train sent" not in out.getvalue()


def test_bar_mode_draws_the_counts_and_writes_finished_trials_above_the_bar(tmp_path):
    clock = FakeClock()
    o = real_orchestrator(tmp_path, clock)
    out = io.StringIO()
    p = watch(o, clock, out, log_format="bar")
    summary = o.run()
    p.close()
    text = out.getvalue()
    assert "\r" in text  # redrawn in place
    assert "trials:   0%" in text and "0/3" in text
    final = text.rstrip("\n").split("\r")[-1]
    # tqdm's rate: trial/s, or s/trial on a machine slower than a trial a second
    assert "trials: 100%" in final and "3/3" in final and ("trial/s" in final or "s/trial" in final)
    assert "in flight: edge 0, train 0" in final
    assert f"front {len(summary['front'])}, best loss " in final
    finished = [line for line in text.split("\n") if " complete: val MSE " in line]
    assert len(finished) == 3  # whole lines: written above the bar, not through it
    assert "measure sent" not in text  # the other events are in the postfix only


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_is_a_bar_on_a_terminal_and_plain_lines_elsewhere():
    assert choose_format("auto", FakeTerminal()) == "bar"
    assert choose_format("auto", io.StringIO()) == "plain"
    assert choose_format("plain", FakeTerminal()) == "plain"
    assert choose_format("bar", io.StringIO()) == "bar"
    closed = io.StringIO()
    closed.close()
    assert choose_format("auto", closed) == "plain"
    with pytest.raises(ValueError, match="log format"):
        choose_format("rich", io.StringIO())
    stub = StubOrchestrator()
    bar = Progress(stub, stream=FakeTerminal())
    assert bar.mode == "bar"
    bar.close()
    assert Progress(stub, stream=io.StringIO()).mode == "plain"


# --- a stand-in orchestrator for what a real one cannot be made to do -------------------------


@dataclass
class StubOrchestrator:
    """What Progress reads of an orchestrator: counts, front, config.trials, queue depths, and
    the pipeline's stages (which task was sent)."""

    count: dict[str, Any] = field(
        default_factory=lambda: {"complete": 0, "pruned": 0, "failed": 0, "in_flight": 0}
    )
    trials: int = 10
    losses: list[float] = field(default_factory=list)
    broken: bool = False

    def __post_init__(self) -> None:
        self.config = SimpleNamespace(trials=self.trials)
        self.dispatcher = SimpleNamespace(queue_depths=lambda: {})
        from hpc2edge.search.orchestrator import SearchConfig

        self.pipeline = SearchConfig(trials=1).pipeline()

    def counts(self) -> dict[str, Any]:
        if self.broken:
            raise RuntimeError("counts are gone")
        return dict(self.count)

    def front(self) -> list[Any]:
        return [SimpleNamespace(values=[v, 1.0]) for v in self.losses]


class State(str, enum.Enum):  # the orchestrator's JobState has this shape
    RUNNING = "running"
    COMPLETE = "complete"


@dataclass
class StubJob:
    label: str
    state: Any
    attrs: dict[str, Any]


def test_a_raising_counts_never_reaches_the_search():
    stub = StubOrchestrator(broken=True)
    for log_format in ("plain", "bar"):
        out = io.StringIO()
        p = Progress(stub, log_format=log_format, stream=out, every_s=0, redraw_s=0)
        job = StubJob("trial 1", "complete", {"val_mse": 0.01, "latency_ms": 2.0})
        p("sent", job)
        p("finished", job)
        p("tick", None)
        p.tick()
        p.close()
        notices = [line for line in out.getvalue().splitlines() if line.startswith("progress:")]
        assert notices == [
            "progress: cannot show the progress (RuntimeError: counts are gone); the search goes on"
        ], out.getvalue()


def test_a_search_goes_on_when_its_progress_cannot_write(tmp_path):
    class Gone(io.StringIO):
        def write(self, s: str) -> int:
            raise OSError("stderr is closed")

    clock = FakeClock()
    o = real_orchestrator(tmp_path, clock, trials=2)
    p = watch(o, clock, Gone())
    summary = o.run()
    p.close()
    assert summary["complete"] == 2


def test_a_str_enum_state_and_counts_without_queues():
    stub = StubOrchestrator(losses=[0.02, 0.03])
    stub.count.update(complete=1, in_flight=2)
    out = io.StringIO()
    clock = FakeClock(0.0)
    p = Progress(stub, stream=out, clock=clock.time)
    clock.sleep(12.5)
    job = StubJob("trial 4", State.COMPLETE, {"val_mse": 0.02, "latency_ms": 1.5})
    job.attrs["latency"] = {"cached": True}
    p("finished", job)
    assert out.getvalue().splitlines() == [
        "[   12.5 s] trial 4 complete: val MSE 0.02000, 1.500 ms (latency from the store)",
        "[   12.5 s] done 1/10 (complete 1, pruned 0, failed 0), 4.8 trials/min, ETA 2 min "
        "| in flight 2 | front 2, best loss 0.02000",
    ]


def test_ticks_print_a_status_line_only_after_a_quiet_stretch():
    stub = StubOrchestrator()
    stub.count.update(in_flight_by_queue={"edge": 0, "train": 2}, in_flight=2)
    out = io.StringIO()
    clock = FakeClock(0.0)
    p = Progress(stub, stream=out, clock=clock.time, every_s=60)
    for _ in range(5):
        clock.sleep(10)
        p("tick", None)
    assert out.getvalue() == ""
    clock.sleep(10)
    p("tick", None)
    p("tick", None)
    assert out.getvalue().splitlines() == [
        "[   60.0 s] done 0/10 (complete 0, pruned 0, failed 0) | in flight: edge 0, train 2"
    ]
    p.close()
    assert len(out.getvalue().splitlines()) == 1  # nothing changed: no second status line


def test_ticks_redraw_the_bar_at_most_every_redraw_s():
    stub = StubOrchestrator()
    out = io.StringIO()
    clock = FakeClock(0.0)
    p = Progress(stub, log_format="bar", stream=out, clock=clock.time, redraw_s=1.0)
    drawn = out.getvalue().count("\r")
    for _ in range(10):
        clock.sleep(0.25)  # the orchestrator's poll interval
        p("tick", None)
    assert out.getvalue().count("\r") - drawn == 2  # at 1.0 s and at 2.0 s
    p.close()


def test_warnings_are_written_above_the_bar_while_it_is_up(monkeypatch):
    # Nobody configured logging: no handler on the root (pytest's capture handler aside) or on
    # ours. A logger of its own: a library's dictConfig in another test may disable old ones.
    ours = logging.getLogger("hpc2edge")
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    monkeypatch.setattr(ours, "handlers", [])
    out = io.StringIO()
    p = Progress(StubOrchestrator(), log_format="bar", stream=out)
    logging.getLogger("hpc2edge.test_progress").warning("trial 2: cannot send yet")
    assert "trial 2: cannot send yet\n" in out.getvalue()
    p.close()
    assert ours.handlers == []
    plain = Progress(StubOrchestrator(), log_format="plain", stream=io.StringIO())
    assert ours.handlers == []  # plain lines and log lines do not fight
    plain.close()
