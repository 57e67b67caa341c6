"""The fleet simulator: the real orchestrator over simulated workers on a virtual clock.

Runs the real :class:`~hpc2edge.search.orchestrator.Orchestrator`, Optuna samplers, measurement
store and benchmark (a formula-made one, :mod:`tests.support.benchmarks`, through the real
:class:`~hpc2edge.sim.benchmark.Benchmark` and its surrogate).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner

from hpc2edge.cli import main
from hpc2edge.cli.root import cli
from hpc2edge.search.dispatch import InlineDispatcher
from hpc2edge.search.records import JobState
from hpc2edge.sim.clock import VirtualClock
from hpc2edge.sim.fleet import Fault, SimFleet, SimTimes, units_of
from hpc2edge.sim.run import SimConfig, make_fleet, make_orchestrator, simulate
from hpc2edge.store.measurements import MeasurementStore
from hpc2edge.testing.fakes import FakeClock
from hpc2edge.transport import taskids

from ..support.benchmarks import formula_benchmark

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def bench():
    b = formula_benchmark(40)
    b.surrogate()  # fitted once for the module
    return b


@pytest.fixture(autouse=True)
def _quiet():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _trace(result):
    return [(f.number, f.state, f.virtual_s, f.val_mse, f.latency_ms) for f in result.finished]


def test_a_seeded_simulated_study_is_deterministic(bench) -> None:
    config = SimConfig(trials=10, sampler="tpe", seed=3, train_workers=2)
    first, second = simulate(bench, config), simulate(bench, config)
    assert first.asks == second.asks
    assert _trace(first) == _trace(second)
    assert first.hypervolume == second.hypervolume > 0
    assert first.virtual_s == second.virtual_s > 0
    other = simulate(bench, SimConfig(trials=10, sampler="tpe", seed=4, train_workers=2))
    assert other.asks != first.asks  # the seed matters: the test above can fail


def test_a_simulated_study_asks_what_a_real_one_over_the_inline_dispatcher_asks(
    bench, tmp_path: Path
) -> None:
    """The same seed and the same results give the same sequence of asks: the simulator drives
    the orchestrator as a real search does. One candidate in flight, so the order of results
    does not depend on durations."""
    config = SimConfig(trials=9, sampler="tpe", seed=1, parallel=1)
    simulated = simulate(bench, config)

    clock = FakeClock()
    fleet = make_fleet(bench, config, VirtualClock())  # its answers, as in-process handlers
    inline = InlineDispatcher(fleet.handlers(), artifacts=fleet.artifacts)
    store = MeasurementStore(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        o = make_orchestrator(bench, config, store, inline, clock)
        o.run()
    finally:
        store.close()
    asked = [j.attrs.get("arch_id") for j in sorted(
        (j for j in o.jobs.values() if j.number is not None), key=lambda j: j.number)]  # fmt: skip
    assert asked == [a["arch_id"] for a in simulated.asks]
    losses = sorted(j.attrs.get("val_mse") for j in o.jobs.values() if j.number is not None)
    assert losses == sorted(f.val_mse for f in simulated.finished)


def test_durations_follow_the_benchmark_and_the_fleet_runs_tasks_in_parallel(bench) -> None:
    one = simulate(bench, SimConfig(trials=8, sampler="random", train_workers=1, baseline=False))
    four = simulate(bench, SimConfig(trials=8, sampler="random", train_workers=4, baseline=False))
    assert one.asks == four.asks  # random sampling: the same networks
    assert four.gpu_s == pytest.approx(one.gpu_s)  # the same trainings, the same GPU time
    assert four.virtual_s < one.virtual_s / 2  # ... on four workers at once
    assert one.use["train"]["busy_share"] > 0.9  # one worker: never idle while work waits
    assert all(u["idle_while_queued_s"] == 0 for u in four.use.values())
    # Each finished trial carries its own training time (the training loop's, as a worker
    # reports it); with each task's start-up they are the GPU time.
    assert all(f.train_s > 0 for f in one.finished if f.state == JobState.COMPLETE.value)
    start_ups = len(one.finished) * SimTimes().train_overhead_s
    assert sum(f.train_s for f in one.finished) + start_ups == pytest.approx(one.gpu_s)


def test_the_hypervolume_is_a_share_of_the_benchmarks_log_box(bench) -> None:
    result = simulate(bench, SimConfig(trials=8, sampler="random", seed=2))
    (ideal_loss, ideal_ms), (ref_loss, ref_ms) = result.ideal, result.reference
    assert 0 < ideal_loss < ref_loss and 0 < ideal_ms < ref_ms
    assert 0 < result.hypervolume == result.hv_share < 1
    assert result.hv_after(len(result.finished)) == pytest.approx(result.hypervolume)
    # Growing with the trials (the front only improves).
    hvs = [result.hv_after(n) for n in range(1, len(result.finished) + 1)]
    assert hvs == sorted(hvs) and hvs[0] < hvs[-1]


def test_latency_first_prunes_over_budget_candidates_before_training(bench) -> None:
    budget = sorted(r.latency["default"]["median_ms"] for r in bench.rows.values())[20]
    r = simulate(bench, SimConfig(trials=12, sampler="random", latency_budget_ms=budget))
    pruned = [f for f in r.finished if f.state == JobState.PRUNED.value]
    assert pruned and all(f.latency_ms > budget for f in pruned)
    assert r.counts["tasks_sent"]["train"] < r.counts["tasks_sent"]["measure"]
    assert all(p["latency_ms"] <= budget for p in r.front)


def test_a_unit_that_drops_mid_measurement_costs_a_timeout_and_the_search_goes_on(bench) -> None:
    config = SimConfig(
        trials=6, sampler="random", units={"default": 2}, faults=(Fault(5.0, "unit"),),
        measure_timeout_s=600.0, baseline=False,
    )  # fmt: skip
    r = simulate(bench, config)
    assert r.use["edge"]["lost"] == 1
    assert r.counts["complete"] == 6  # the lost measurement was sent again, to the other unit
    assert r.virtual_s > 600.0  # ... after its timeout


def test_a_train_worker_that_dies_mid_task_costs_its_gpu_time(bench) -> None:
    healthy = SimConfig(trials=4, sampler="random", train_workers=2, baseline=False,
                        train_timeout_s=900.0)  # fmt: skip
    dying = SimConfig(**{**healthy.__dict__, "faults": (Fault(20.0, "train"),)})
    a, b = simulate(bench, healthy), simulate(bench, dying)
    assert b.use["train"]["lost"] == 1
    assert b.counts["complete"] == a.counts["complete"] == 4
    assert b.gpu_s > a.gpu_s  # the lost training's time was spent for nothing


def test_an_architecture_the_benchmark_cannot_answer_fails_its_trial_only(bench) -> None:
    config = SimConfig(trials=4, sampler="random", baseline=False)
    clock = VirtualClock()
    fleet = make_fleet(bench, config, clock)
    task_id = taskids.new("edge")
    key = fleet.artifacts.put(b"\x00not a spec")
    fleet.submit("measure", {"artifact_key": key, "arch_id": "x", "protocol": {}}, task_id, 60)
    clock.sleep(5.0)
    out = fleet.poll(task_id)
    assert out is not None and not out.ok and out.error is not None


def test_the_fleet_refuses_tasks_for_queues_it_does_not_have(bench) -> None:
    fleet = make_fleet(bench, SimConfig(trials=1), VirtualClock())
    with pytest.raises(ValueError, match="no simulated queue"):
        fleet.submit("measure", {}, taskids.new("edge.orin"), 60)
    with pytest.raises(ValueError, match="no simulated queue"):
        fleet.submit("train", {}, taskids.new("edge"), 60)


def test_a_sleep_moves_to_the_next_event_but_never_past_the_longest_jump(bench) -> None:
    def clock_with(*faults: Fault) -> VirtualClock:
        clock = VirtualClock(max_jump_s=60.0)
        SimFleet(bench, clock, faults=faults)
        return clock

    soon = clock_with(Fault(30.0, "train"))
    soon.sleep(1.0)
    assert soon.elapsed_s == 30.0  # to the next event
    soon.sleep(1.0)
    assert soon.elapsed_s == 90.0  # nothing will happen: waiting for a timeout, 60 s at most
    late = clock_with(Fault(600.0, "train"))
    late.sleep(1.0)
    assert late.elapsed_s == 60.0  # towards the fault, 60 s at most
    late.sleep(100.0)
    assert late.elapsed_s == 160.0  # a longer sleep is a longer sleep


def test_cpu_time_moves_a_charging_clock() -> None:
    clock = VirtualClock(charge_cpu=True)
    start = clock.time()
    sum(i * i for i in range(300_000))
    assert clock.time() > start
    assert clock.busy_s > 0


def test_the_simulators_own_work_is_not_the_orchestrators() -> None:
    """CPU inside ``excluded`` neither moves a charging clock nor counts as the loop's, and is
    counted once however deep the nesting."""
    clock = VirtualClock(charge_cpu=True)
    t0, start = time.process_time(), clock.time()
    with clock.excluded():
        sum(i * i for i in range(300_000))
        with clock.excluded():
            sum(i * i for i in range(300_000))
    spent = time.process_time() - t0
    assert clock.time() - start < 0.2 * spent  # only the calls' own moments, not the work
    assert 0.8 * spent <= clock.own_cpu_s <= spent


@pytest.mark.parametrize(
    ("values", "problem"),
    [(["orin:0"], "at least one unit"), (["orin:x"], "KIND:UNITS"), (["Orin"], "kind"),
     (["orin", "orin:2"], "twice"), (["orin:1:-2"], "positive")],
)  # fmt: skip
def test_bad_device_lists_are_one_line_errors(values, problem) -> None:
    with pytest.raises(ValueError, match=problem):
        units_of(values)


@pytest.mark.parametrize("text", ["unit", "unit@x", "gpu@5", "unit:Bad@5", "train@-1"])
def test_bad_faults_are_one_line_errors(text) -> None:
    with pytest.raises(ValueError, match="fault"):
        Fault.parse(text)


def test_sim_times_refuse_negative_durations() -> None:
    with pytest.raises(ValueError, match="build_s"):
        SimTimes(build_s=-1.0)


def test_simulate_command_prints_a_table_and_json(bench, tmp_path: Path) -> None:
    path = tmp_path / "b.json.gz"
    bench.save(path)
    runner = CliRunner()
    out = runner.invoke(
        cli, ["simulate", "--benchmark", str(path), "--trials", "5", "--seeds", "2",
              "--sampler", "random", "--train-workers", "2"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "mean HV" in out.output and "formula" in out.output
    js = runner.invoke(cli, ["simulate", "--benchmark", str(path), "--trials", "4", "--json"])
    assert js.exit_code == 0, js.output
    data = json.loads(js.output)
    assert len(data["runs"]) == 1 and data["summary"]["hv_share"]["n"] == 1


@pytest.mark.parametrize(
    "args",
    [["--devices", "orin:0"], ["--fault", "gpu@3"], ["--build-s", "-1"]],
)
def test_simulate_command_refuses_bad_options_in_one_line(bench, tmp_path: Path, args) -> None:
    path = tmp_path / "b.json.gz"
    bench.save(path)
    out = CliRunner().invoke(cli, ["simulate", "--benchmark", str(path), "--trials", "2", *args])
    assert out.exit_code == 2
    assert "Traceback" not in out.output and len(out.output.strip().splitlines()) <= 3


def test_simulate_command_names_a_missing_benchmark(tmp_path: Path, capsys) -> None:
    assert main(["simulate", "--benchmark", "no-such-benchmark"]) != 0
    err = capsys.readouterr().err
    assert "no-such-benchmark" in err and "Traceback" not in err
    bad = tmp_path / "bad.json.gz"
    bad.write_bytes(b"not gzip")
    assert main(["simulate", "--benchmark", str(bad)]) != 0
    err = capsys.readouterr().err
    assert str(bad) in err and len(err.strip().splitlines()) == 1


def test_a_study_on_a_journal_file_is_a_study_the_report_can_read(bench, tmp_path: Path) -> None:
    """``journal:///PATH``: Optuna's journal storage (asks read an in-memory replay, not every
    running trial from a database), private like the SQLite file, readable afterwards."""
    from hpc2edge.errors import StudyStorageError
    from hpc2edge.search import study as st
    from hpc2edge.search.storage import open_storage

    path = tmp_path / "state" / "search.journal"
    url = f"journal:///{path}"
    with pytest.raises(StudyStorageError, match="no study storage"):
        open_storage(url)
    r = simulate(bench, SimConfig(trials=4, sampler="random", storage=url))
    assert path.is_file() and (path.stat().st_mode & 0o777) == 0o600
    again = st.load_study("sim-random-0", url)
    assert len([t for t in again.trials if t.state.name == "COMPLETE"]) == r.counts["complete"]
    assert open_storage(url) is not None


def test_idle_while_the_loop_is_busy_is_split_at_the_moment_the_fleet_filled(bench) -> None:
    """The start-up (every worker waits for the first asks) is counted, and counted apart from
    the steady state that follows the first moment every worker had a task."""
    clock = VirtualClock()
    fleet = SimFleet(bench, clock, train_workers=2)
    fleet.advance(clock.now + 10.0, loop_busy=True)  # nothing sent yet: both idle
    use = fleet.use["train"]
    assert use.idle_while_loop_busy_s == pytest.approx(20.0)
    assert use.idle_while_loop_busy_filled_s == 0.0 and use.filled_at_s is None

    r = simulate(
        bench,
        SimConfig(trials=12, sampler="random", train_workers=2, charge_cpu=True, baseline=False),
    )
    train = r.use["train"]
    assert train["filled_at_s"] is not None and train["filled_at_s"] > 0
    assert 0.0 <= train["idle_while_loop_busy_filled_s"] <= train["idle_while_loop_busy_s"]
