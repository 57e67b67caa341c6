"""The search core's parts (issue 15): stages, the task runner's send budget, the send policy and
capacity, results checked at the boundary, the recorder, the study settings, the export pool.

The orchestrator runs over the inline dispatcher with real Optuna (SQLite), a real measurement
store and real ONNX export (each network exported once for the module), as in
``test_search_orchestrator.py``; the device and the trainer are the doubles of
:mod:`hpc2edge.testing.fakes`. Each extension point is shown with one new object
(a second device kind, a second training rung, another send policy), nothing else changed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
optuna = pytest.importorskip("optuna")

from hpc2edge.errors import BrokerError, SearchError  # noqa: E402
from hpc2edge.search import study as st  # noqa: E402
from hpc2edge.search.objectives import CONSTRAINT_ATTR, Objective  # noqa: E402
from hpc2edge.search.policy import Ready  # noqa: E402
from hpc2edge.search.records import RecordError, TaskRecord, readable_task, task  # noqa: E402
from hpc2edge.search.settings import difference  # noqa: E402
from hpc2edge.search.stages import LatencyGate, MeasureStage, Pipeline, TrainStage  # noqa: E402
from hpc2edge.space.base import ArchSpec  # noqa: E402
from hpc2edge.testing.fakes import FakeEdge  # noqa: E402
from tests.support.search import ONE_POINT, Harness, one_build_per_network, step_until  # noqa: E402

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True, scope="module")
def _one_export_per_network() -> Any:
    """The tests here run the same seeded networks again and again: each is exported and
    checked once for the module (:func:`tests.support.search.one_build_per_network`); the pool
    test's spawned exporter always exports for real."""
    with one_build_per_network() as built:
        yield built


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    st.quiet_optuna()
    return Harness(tmp_path)


def _trials(o: Any) -> list[Any]:
    return o.study.get_trials(deepcopy=False)


# --- records ----------------------------------------------------------------------------------


def test_a_task_record_round_trips_and_reads_a_schema_1_record() -> None:
    rec = TaskRecord("measure", "edge", 2, id="edge-x", label="l", sent=True, sent_at=5.0)
    assert TaskRecord.from_json(rec.to_json(), kind="?", queue="?") == rec
    old = {"id": None, "attempt": 3, "retry_at": 12.5}  # what schema 1 wrote for a back-off
    read = TaskRecord.from_json(old, kind="train", queue="train")
    assert (read.kind, read.queue, read.attempt, read.waiting, read.retry_at) == (
        "train", "train", 3, True, 12.5,
    )  # fmt: skip
    with pytest.raises(RecordError, match="is a str, not a record"):
        task({"measure_task": "not a record"}, "measure")
    assert readable_task({"measure_task": {"attempt": -1}}, "measure") is None


# --- bug 4: a send that fails is retried, with a back-off, a bounded number of times -----------


class FailingPuts:
    """An artifact store whose ``put`` fails ``n`` times (the broker away), then works."""

    def __init__(self, real: Any, n: int) -> None:
        self.real = real
        self.left = n
        self.calls = 0

    def put(self, data: bytes) -> str:
        self.calls += 1
        if self.left:
            self.left -= 1
            raise BrokerError("cannot store the artifact: connection refused")
        return str(self.real.put(data))

    def get(self, key: str) -> bytes:
        return bytes(self.real.get(key))


def test_a_failing_artifact_put_fails_the_trial_after_its_send_budget(h: Harness) -> None:
    puts = FailingPuts(h.artifacts, n=10**6)
    h.dispatcher.artifacts = puts  # type: ignore[assignment]
    o = h.orchestrator(trials=1, parallel=1, send_retries=3, backoff_s=2)
    summary = o.run()
    (t,) = o.study.trials
    assert summary["failed"] == 1 and t.state.name == "FAIL"
    assert t.user_attrs["reason"].startswith("measure: cannot send: BrokerError")
    assert "4 sends failed" in t.user_attrs["reason"]
    assert puts.calls == 4 and h.sent("measure") == 0
    # Backed off 2 + 4 + 8 s between the four tries (a fake clock: no real waiting).
    assert h.clock.now - 1_800_000_000.0 >= 14


def test_a_broker_that_comes_back_within_the_send_budget_loses_nothing(h: Harness) -> None:
    puts = FailingPuts(h.artifacts, n=2)
    h.dispatcher.artifacts = puts  # type: ignore[assignment]
    o = h.orchestrator(trials=2, parallel=1, send_retries=3, backoff_s=1)
    summary = o.run()
    assert summary["complete"] == 2
    first = o.study.trials[0].user_attrs["measure_task"]
    assert first["attempt"] == 1 and first["send_failures"] == 2 and first["sent"] is True


def first_submit_fails(h: Harness) -> list[str]:
    """Make the dispatcher's first submit raise (the broker reset the connection); returns the
    task ids of every submit, as they come."""
    real_submit = h.dispatcher.submit
    ids: list[str] = []

    def submit(kind: str, payload: dict[str, Any], task_id: str, expires_s: float) -> None:
        ids.append(task_id)
        if len(ids) == 1:
            raise BrokerError("connection reset while sending")
        real_submit(kind, payload, task_id, expires_s)

    h.dispatcher.submit = submit  # type: ignore[method-assign]
    return ids


def first_answer_changed(real: Any, change: Any) -> Any:
    """A handler that answers as ``real`` does, its first answer passed through ``change``."""
    calls = {"n": 0}

    def handler(payload: dict[str, Any]) -> dict[str, Any]:
        calls["n"] += 1
        good = real(payload)
        return change(good) if calls["n"] == 1 else good

    return handler


def test_a_submit_that_fails_is_sent_again_under_the_recorded_id(h: Harness) -> None:
    ids = first_submit_fails(h)
    o = h.orchestrator(trials=1, parallel=1, backoff_s=1)
    assert o.run()["complete"] == 1
    assert ids[0] == ids[1], "the message may have gone out: the resend reuses its id"


# --- bug 3: results are checked at the orchestrator's boundary --------------------------------


def test_a_result_for_another_network_is_rejected(h: Harness) -> None:
    h.dispatcher.handlers["measure"] = first_answer_changed(
        h.edge, lambda good: {**good, "arch_id": "0" * 64}
    )
    o = h.orchestrator(trials=1, parallel=1)
    assert o.run()["complete"] == 1
    (t,) = o.study.trials
    assert t.user_attrs["measure_errors"] == [
        "measure: result rejected: ResultRejected: the result is for network '" + "0" * 64 + "'"
    ]


def test_a_forged_result_every_time_fails_the_trial_not_the_search(h: Harness) -> None:
    real = h.edge
    h.dispatcher.handlers["measure"] = lambda p: {**real(p), "onnx_sha256": "f" * 64}
    o = h.orchestrator(trials=2, parallel=1, retries=1)
    summary = o.run()
    assert summary["failed"] == 2
    for t in o.study.trials:
        assert (
            "another ONNX model" in t.user_attrs["reason"]
            and "(2 attempts)" in t.user_attrs["reason"]
        )


def test_a_store_that_records_no_row_fails_an_attempt(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A concurrent writer on a shared store can leave ``record`` with no row for us."""
    real = h.store.record
    calls = {"n": 0}

    def record(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        return [] if calls["n"] == 1 else real(*args, **kwargs)

    monkeypatch.setattr(h.store, "record", record)
    o = h.orchestrator(trials=1, parallel=1)
    assert o.run()["complete"] == 1
    assert "recorded no batch size 1 row" in o.study.trials[0].user_attrs["measure_errors"][0]


# --- the send policy and capacity ---------------------------------------------------------------


def test_capacity_per_queue_bounds_what_is_in_flight(h: Harness) -> None:
    held: list[dict[str, Any]] = []

    def device(payload: dict[str, Any]) -> dict[str, Any] | None:
        held.append(payload)
        return None  # keeps the task on the device

    h.dispatcher.handlers["measure"] = device
    o = h.orchestrator(trials=4, parallel=4, slots={"edge": 1})
    o.start()
    for _ in range(6):
        o.step()
    assert o.counts()["in_flight_by_queue"]["edge"] == 1
    assert h.sent("measure") == 1, "one device slot: the other three candidates wait"
    assert o.counts()["running"] == 4  # asked and exported ahead: the ready pool
    o.release()


class Largest:
    """A policy that gives the device the biggest network first."""

    def __init__(self) -> None:
        self.offered: list[list[int]] = []

    def order(self, queue: str, ready: Sequence[Ready]) -> Sequence[Ready]:
        self.offered.append([r.job.number or 0 for r in ready])
        return sorted(ready, key=lambda r: -r.job.attrs.get("params", 0))


def test_a_send_policy_chooses_what_the_device_gets_next(h: Harness) -> None:
    policy = Largest()
    o = h.orchestrator(trials=4, parallel=4, slots={"edge": 1}, orchestrator={"policy": policy})
    o.start()
    o.step()  # four trials asked and exported, then the device's one slot: the policy picks
    (first,) = [p for k, _, p in h.dispatcher.sent if k == "measure"]
    params = {t.user_attrs["arch_id"]: t.user_attrs["params"] for t in _trials(o)}
    assert params[first["arch_id"]] == max(params.values())
    assert policy.offered[0] == [0, 1, 2, 3]
    o.run()
    assert all(t.state.name == "COMPLETE" for t in _trials(o))


# --- one new stage: a second device kind, a second training rung -------------------------------


def nano_edge(h: Harness, scale: float = 3.0) -> FakeEdge:
    """A second device kind, ``nano`` on queue ``edge.nano``, ``scale`` times slower."""
    nano = FakeEdge(h.artifacts, kind="nano", scale=scale, worker="fake-nano")
    h.dispatcher.handlers["edge.nano"] = nano
    h.dispatcher.edge_probes = {"edge": h.edge.probe(), "edge.nano": nano.probe()}
    return nano


def test_a_second_device_kind_is_one_more_measure_stage(h: Harness) -> None:
    cfg = dict(batch_size=1, precision="fp32", protocol="quick")
    nano_edge(h)
    orin, nano = (
        MeasureStage(**cfg),
        MeasureStage(name="measure_nano", device="nano", primary=False, **cfg),
    )
    pipeline = Pipeline.latency_first([orin, nano], [TrainStage()], [LatencyGate()])
    o = h.orchestrator(trials=3, parallel=2, orchestrator={"pipeline": pipeline})
    summary = o.run()
    assert summary["complete"] == 3
    assert summary["tasks_sent"]["measure"] == summary["tasks_sent"]["measure_nano"] == 3
    for t in o.study.trials:
        a = t.user_attrs
        assert a["latency_ms@nano"] > 0 and a["latency@nano"]["cached"] is False
        assert a["latency@nano"]["kind"] == "nano" and a["latency"]["kind"] == "default"
        assert a["latency_ms@nano"] == pytest.approx(3 * a["latency_ms"])
        assert a["measure_nano_task"]["sent"] is True
        assert a["measure_nano_task"]["queue"] == "edge.nano"
        assert t.values == [a["val_mse"], a["latency_ms"]]  # the study's device decides
    # Each trial's training started only once both devices had answered; the kinds' queues
    # are two devices, so the next trial's measurements did not wait for the first training.
    sent = [(k, p.get("arch_id") or ArchSpec.from_dict(p["spec"]).arch_id)
            for k, _, p in h.dispatcher.sent]  # fmt: skip
    for i, (k, arch) in enumerate(sent):
        if k == "train":
            assert [kk for kk, a in sent[:i] if a == arch] == ["measure", "measure"]


def test_one_kinds_measurement_is_never_stored_or_used_as_anothers(h: Harness) -> None:
    nano_edge(h)
    devices = (("default", None), ("nano", None))
    h.orchestrator("a", trials=2, parallel=1, devices=devices).run()
    # A second study over the same networks: each kind finds its own rows, never the other's.
    o = h.orchestrator("b", trials=2, parallel=1, devices=devices)
    o.run()
    for t in o.study.trials:
        a = t.user_attrs
        assert a["latency"]["cached"] and a["latency@nano"]["cached"]
        assert a["latency_ms@nano"] == pytest.approx(3 * a["latency_ms"])
    by_kind = {m.results["kind"] for m in h.store.measurements()}
    assert by_kind == {"default", "nano"}
    # A result that says it comes from another kind than the queue's is refused.
    h.dispatcher.handlers["edge.nano"] = FakeEdge(h.artifacts, kind="default")
    h.dispatcher.edge_probes = {}  # no lookups: the task is sent
    o = h.orchestrator("c", trials=1, parallel=1, retries=0, devices=(("nano", None),))
    o.run()
    (t,) = o.study.trials
    assert t.state.name == "FAIL" and "of kind 'default', not 'nano'" in t.user_attrs["reason"]


def test_a_budget_on_a_second_kind_prunes_before_training(h: Harness) -> None:
    nano_edge(h, scale=100.0)
    o = h.orchestrator(trials=3, parallel=1, devices=(("default", None), ("nano", 1.0)))
    o.run()
    for t in o.study.trials:
        a = t.user_attrs
        assert t.state.name == "PRUNED" and "budget of nano" in a["reason"]
        assert a[CONSTRAINT_ATTR] == pytest.approx(a["latency_ms@nano"] - 1.0)
        assert "train_task" not in a
    assert h.trainer.calls == 0


def test_a_second_training_rung_is_one_more_train_stage(h: Harness) -> None:
    rungs = [
        TrainStage(name="train_r0", rung=0, final=False, epochs=1),
        TrainStage(rung=1, epochs=3),
    ]
    measure = MeasureStage()
    pipeline = Pipeline.latency_first([measure], rungs, [LatencyGate()])
    o = h.orchestrator(trials=2, parallel=1, orchestrator={"pipeline": pipeline})
    assert o.run()["complete"] == 2
    trains = [p for k, _, p in h.dispatcher.sent if k == "train"]
    assert [p["epochs"] for p in trains] == [1, 3, 1, 3]
    keys = [p["trial_key"] for p in trains]
    assert keys[1] == keys[0] + "/r1", "the rung is part of the worker's idempotency key"
    a = o.study.trials[0].user_attrs
    assert "val_mse.r0" in a and "val_mse" in a and a["train_r0_task"]["sent"] is True


def test_a_pipeline_without_the_studys_device_or_a_final_rung_is_refused() -> None:
    with pytest.raises(ValueError, match="measure stage for the study's device"):
        Pipeline((TrainStage(),))
    with pytest.raises(ValueError, match="final train stage"):
        Pipeline((MeasureStage(), TrainStage(final=False)))
    with pytest.raises(ValueError, match="unknown stages"):
        Pipeline((MeasureStage(), TrainStage(after=("nope",))))


# --- the recorder ---------------------------------------------------------------------------------


def test_every_write_is_made_once_and_only_when_the_value_changed(h: Harness) -> None:
    o = h.orchestrator(trials=3, parallel=1)
    o.run()
    # Per trial: arch_id, spec, onnx_sha256, params, flops, 2 x measure_task, latency,
    # latency_ms, 2 x train_task, train, val_mse, the tell; the study: search_id, schema,
    # search, plan; the lease is not the recorder's.
    assert o.recorder.writes == 3 * 14 + 4


# --- study settings -----------------------------------------------------------------------------


def test_resuming_with_other_epochs_is_refused_naming_the_setting(h: Harness) -> None:
    h.orchestrator(trials=1, parallel=1).run()
    h.plan = replace(h.plan, epochs=2)
    with pytest.raises(SearchError) as err:
        h.orchestrator(trials=2, parallel=1).start()
    message = str(err.value)
    assert "epochs: the study has 1, this run asks 2" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda p: replace(p, data_paths=("/data/y.hdf5",)), "data: the study has"),
        (lambda p: replace(p, test_fraction=0.3), "test fraction: the study has None"),
        (lambda p: replace(p, hparams=replace(p.hparams, lr=0.5)), "lr: the study has"),
        (lambda p: replace(p, hparams=replace(p.hparams, lr_gamma=0.6)), "lr gamma: the study"),
        (
            lambda p: replace(p, hparams=replace(p.hparams, lr_step_epochs=1)),
            "lr step epochs: the study has 20, this run asks 1",
        ),
        (lambda p: replace(p, resources={"engine": "deepspeed"}), "engine: the study does not"),
    ],
)
def test_every_training_setting_is_checked_on_resume(h: Harness, change: Any, named: str) -> None:
    h.orchestrator(trials=1, parallel=1).run()
    h.plan = change(h.plan)
    with pytest.raises(SearchError, match=named):
        h.orchestrator(trials=2, parallel=1).start()


def test_resuming_with_another_protocol_or_budget_is_refused(h: Harness) -> None:
    h.orchestrator(trials=1, parallel=1).run()
    with pytest.raises(SearchError, match="protocol: the study has 'default', this run asks"):
        h.orchestrator(trials=2, parallel=1, protocol="quick").start()
    with pytest.raises(SearchError, match=r"latency budget \(ms\): the study has None"):
        h.orchestrator(trials=2, parallel=1, objective=Objective("pareto", 5.0)).start()
    with pytest.raises(SearchError, match=r"pin\.size: the study has 41, this run does not set it"):
        h.orchestrator(trials=2, parallel=1, pin={"frames": 8}).start()


def test_a_setting_an_older_version_did_not_record_is_adopted() -> None:
    old = {"search": {"space": "cnn3d", "pin": {}}, "plan": {"epochs": 1}}
    new = {"search": {"space": "cnn3d", "pin": {}, "protocol": "quick"}, "plan": {"epochs": 1}}
    assert difference(old, new) is None
    assert difference(new, {**new, "search": {**new["search"], "protocol": "default"}})


def test_the_same_settings_resume(h: Harness) -> None:
    h.orchestrator(trials=1, parallel=1).run()
    assert h.orchestrator(trials=2, parallel=1).run()["complete"] == 2


# --- the export pool ----------------------------------------------------------------------------


def test_candidates_exported_in_a_pool_give_the_same_search(h: Harness, tmp_path: Path) -> None:
    inline = h.orchestrator("inline", trials=4, parallel=2, seed=5)
    inline.run()
    pooled = h.orchestrator("pooled", trials=4, parallel=2, seed=5, export_workers=1)
    summary = pooled.run()
    assert summary["complete"] == 4

    def sha(o: Any) -> list[str]:
        return [t.user_attrs["onnx_sha256"] for t in _trials(o)]

    assert sha(pooled) == sha(inline), "the same networks export to the same bytes"


def test_a_network_the_exporter_refuses_comes_back_from_the_pool_as_the_error() -> None:
    from hpc2edge.errors import ExportError
    from hpc2edge.search.prepare import Preparer
    from hpc2edge.space import get_space

    spec = get_space("cnn3d").baseline().to_dict()
    channels = spec["params"]["channels"]
    bad = ArchSpec.from_dict(
        {**spec, "params": {**spec["params"], "channels": [0] * len(channels)}}
    )
    pool = Preparer(workers=1)
    try:
        pool.request("bad", bad)
        deadline = time.monotonic() + 120  # a spawned process imports torch: seconds, not more
        while (built := pool.take("bad")) is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        pool.close()
    assert isinstance(built, ExportError) and "ONNX export failed" in str(built)


def test_configs_that_cannot_work_are_refused() -> None:
    from hpc2edge.search.orchestrator import SearchConfig

    with pytest.raises(ValueError, match="slots"):
        SearchConfig(trials=1, slots={"edge": 0})
    with pytest.raises(ValueError, match="send_retries"):
        SearchConfig(trials=1, send_retries=-1)


# --- review of the search core: restarts, hostile stored records, the seams' guard rails -------


def _storage_set(h: Harness, o: Any, number: int, key: str, value: Any) -> None:
    """Write a trial attribute as another writer of the study storage would."""
    storage = st.storage(h.url)
    study_id = storage.get_study_id_from_name(o.study.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    storage.set_trial_user_attr(trial_id, key, value)


def test_a_finished_measurement_does_not_time_out_while_the_training_runs(h: Harness) -> None:
    start = h.clock.now
    real = h.trainer
    h.dispatcher.handlers["train"] = lambda p: real(p) if h.clock.now > start + 1900 else None
    o = h.orchestrator(trials=1, parallel=1, retries=0, measure_timeout_s=60)
    summary = o.run()
    assert summary["complete"] == 1, o.study.trials[0].user_attrs.get("reason")
    assert "measure_errors" not in o.study.trials[0].user_attrs
    assert summary["tasks_sent"]["measure"] == 1


def test_a_result_is_recorded_before_its_stored_copy_is_forgotten(h: Harness) -> None:
    real_forget = h.dispatcher.forget
    seen: list[set[str]] = []

    def forget(task_id: str) -> None:
        fresh = optuna.load_study(study_name="s", storage=st.storage(h.url))
        seen.append(set(fresh.trials[0].user_attrs))
        real_forget(task_id)

    h.dispatcher.forget = forget  # type: ignore[method-assign]
    h.orchestrator(trials=1, parallel=1).run()
    assert "latency_ms" in seen[0] and "val_mse" in seen[1]


@pytest.mark.parametrize("named", ["trial-999", "trial-0", ["trial-0"], "baseline"])
def test_a_duplicate_of_a_job_that_is_not_there_runs_on_its_own(h: Harness, named: Any) -> None:
    o = h.orchestrator(trials=1, parallel=1)
    o.start()
    o.step()  # trial 0 asked
    o.release()
    _storage_set(h, o, 0, "duplicate_of", named)
    again = h.orchestrator(trials=1, parallel=1)
    again.start()
    assert step_until(again, h.clock, again.finished), "a dangling duplicate_of hung the run"
    assert again.study.trials[0].state.name == "COMPLETE"


def test_two_duplicates_of_a_failed_trial_measure_the_network_once(h: Harness) -> None:
    real = h.edge
    calls = {"n": 0}

    def edge(payload: dict[str, Any]) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 1:
            return {"status": "error", "error": {"type": "MeasurementError", "message": "no"}}
        return real(payload)

    h.dispatcher.handlers["measure"] = edge
    o = h.orchestrator(trials=3, parallel=3, pin=ONE_POINT, retries=0)
    o.run()
    assert [t.state.name for t in o.study.trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert h.sent("measure") == 2 and h.sent("train") == 1


def test_an_enqueued_trial_is_asked_not_reattached(h: Harness) -> None:
    o = h.orchestrator(trials=2, parallel=1, pin=ONE_POINT)
    o.study.enqueue_trial({"n_blocks": 1})
    assert o.run()["complete"] == 2


MALFORMED = {
    "a task record that is a string": ("measure_task", "edge-x"),
    "an attempt that is text": ("measure_task", {"attempt": "2", "id": None}),
    "sent without an id": ("measure_task", {"attempt": 1, "sent": True}),
    "a send time in the year 10^300": (
        "measure_task", {"attempt": 1, "id": "edge-" + "a" * 32, "sent": True, "sent_at": 1e300},
    ),
    "a back-off ending in a year": (
        "measure_task", {"attempt": 1, "id": None, "retry_at": 1_800_000_000.0 + 3e7},
    ),
    "errors that are a number": ("measure_errors", 5),
    "a spec that is no spec": ("spec", "not a spec"),
    "a latency that is text": ("latency_ms", "fast"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_stored_record_fails_one_trial_and_the_search_goes_on(
    h: Harness, case: str
) -> None:
    key, value = MALFORMED[case]
    h.dispatcher.handlers["measure"] = lambda p: None  # trial 0 stays in flight
    o = h.orchestrator(trials=2, parallel=1)
    o.start()
    o.step()
    o.step()  # trial 0's measurement sent
    o.release()
    _storage_set(h, o, 0, key, value)
    h.dispatcher.handlers["measure"] = h.edge
    h.dispatcher.drop_pending()
    again = h.orchestrator(trials=2, parallel=1, measure_timeout_s=60)
    again.start()
    assert step_until(again, h.clock, again.finished, limit=2000), f"{case} hung the search"
    first, second = again.study.trials
    assert second.state.name == "COMPLETE"
    if first.state.name == "FAIL":
        assert first.user_attrs["reason"].startswith(("stored record unreadable", "edge timeout"))
    again.counts()  # progress reads every record on every tick


def test_an_unreadable_baseline_record_is_measured_again(h: Harness) -> None:
    o = h.orchestrator(trials=1, parallel=1, baseline=True)
    o.study.set_user_attr("baseline", {"state": "bogus"})
    summary = o.run()
    assert summary["baseline"]["state"] == "complete"


def test_a_lease_taken_over_while_this_run_stalled_stops_it(h: Harness) -> None:
    from hpc2edge.search.lease import ATTR, LeaseHeld

    o = h.orchestrator(trials=2, parallel=1)
    o.start()
    o.step()
    o.study.set_user_attr(ATTR, {"host": "elsewhere", "pid": 1, "heartbeat": h.clock.now})
    h.clock.sleep(20)
    with pytest.raises(LeaseHeld, match="taken over by pid 1 on elsewhere"):
        o.step()


def test_a_failed_worker_count_keeps_the_last_capacity(h: Harness) -> None:
    answers = [{"edge": 1, "train": 1}, {}]
    h.dispatcher.workers = lambda *_: answers.pop(0) if answers else {}  # type: ignore[method-assign]
    o = h.orchestrator(trials=2, parallel=4)
    o.start()
    assert o.capacity.of("edge") == 2  # the one it runs, one waiting (queue_ahead 1)
    h.clock.sleep(31)
    o.step()  # the count is taken again, and fails
    assert o.capacity.of("edge") == 2, "a failed count must not open every queue to parallel"
    o.release()


@pytest.mark.parametrize("ahead", [0, 1, 3])
def test_each_counted_worker_gets_its_task_and_queue_ahead_more(h: Harness, ahead: int) -> None:
    """Tasks wait on the broker's queue for a worker that finishes, but the ready pool (what
    the sampler waits on) follows the workers, not the slots."""
    h.dispatcher.workers = lambda *_: {"edge": 2, "train": 3}  # type: ignore[method-assign]
    o = h.orchestrator(trials=2, parallel=0, queue_ahead=ahead)
    o.start()
    assert o.capacity.of("edge") == 2 * (1 + ahead)
    assert o.capacity.of("train") == 3 * (1 + ahead)
    assert o._parallel == 2 * (2 + 3)
    o.release()
    # Configured slots win over the count, ahead or not.
    h.dispatcher.workers = lambda *_: {"edge": 2, "train": 3}  # type: ignore[method-assign]
    fixed = h.orchestrator("t", trials=2, parallel=0, queue_ahead=ahead, slots={"edge": 1})
    fixed.start()
    assert fixed.capacity.of("edge") == 1 and fixed._parallel == 2 * (1 + 3)
    fixed.release()


class Greedy:
    """A policy that returns everything twice and something it was never offered."""

    def order(self, queue: str, ready: Sequence[Ready]) -> Sequence[Ready]:
        foreign = [Ready(r.job, r.stage) for r in ready]  # equal, but not what was offered
        return [*ready, *ready, *foreign]


def test_a_policy_cannot_send_twice_or_past_the_capacity(h: Harness) -> None:
    h.dispatcher.handlers["measure"] = lambda p: None
    o = h.orchestrator(trials=3, parallel=3, slots={"edge": 2}, orchestrator={"policy": Greedy()})
    o.start()
    for _ in range(4):
        o.step()
    ids = [tid for k, tid, _ in h.dispatcher.sent if k == "measure"]
    assert len(ids) == len(set(ids)) == 2
    o.release()


def test_a_failed_submit_holds_its_slot(h: Harness) -> None:
    ids = first_submit_fails(h)
    h.dispatcher.handlers["measure"] = lambda p: None
    o = h.orchestrator(trials=2, parallel=2, slots={"edge": 1}, backoff_s=100)
    o.start()
    o.step()
    o.step()  # trial 0's submit fails; trial 1 must not take the slot it holds
    assert len(ids) == 1
    o.release()


def test_a_train_result_for_another_training_is_rejected(h: Harness) -> None:
    h.dispatcher.handlers["train"] = first_answer_changed(
        h.trainer, lambda good: {**good, "trial_key": "someone/else"}
    )
    o = h.orchestrator(trials=1, parallel=1)
    assert o.run()["complete"] == 1
    assert "another training" in o.study.trials[0].user_attrs["train_errors"][0]


def test_pipelines_that_cannot_work_are_refused() -> None:
    with pytest.raises(ValueError, match="distinct keys"):
        rung0 = TrainStage(name="a", final=False)
        Pipeline((MeasureStage(), rung0, replace(rung0, name="b"), TrainStage()))
    with pytest.raises(ValueError, match="guards unknown"):
        Pipeline((MeasureStage(), TrainStage()), (LatencyGate(guards=("nope",)),))
    with pytest.raises(ValueError, match="needs results no stage gives"):
        Pipeline((MeasureStage(), TrainStage()), (LatencyGate(measure="latency_ms@x"),))


def test_resuming_with_another_pipeline_or_a_newer_schema_is_refused(h: Harness) -> None:
    h.orchestrator(trials=1, parallel=1).run()
    nano = MeasureStage(name="measure_nano", device="nano", primary=False)
    pipeline = Pipeline.latency_first([MeasureStage(), nano], [TrainStage()], [LatencyGate()])
    with pytest.raises(SearchError, match="stages: the study has"):
        h.orchestrator(trials=2, parallel=1, orchestrator={"pipeline": pipeline}).start()
    study = optuna.load_study(study_name="s", storage=st.storage(h.url))
    study.set_user_attr("schema", 99)
    with pytest.raises(SearchError, match="newer hpc2edge"):
        h.orchestrator(trials=2, parallel=1).start()


def test_a_confirmation_for_another_network_is_an_error(h: Harness) -> None:
    o = h.orchestrator(trials=2, confirm_front=True)
    real = h.edge

    def edge(payload: dict[str, Any]) -> dict[str, Any]:
        good = real(payload)
        return {**good, "arch_id": "0" * 64} if o.finished() else good

    h.dispatcher.handlers["measure"] = edge
    o.run()
    confirmed = o.study.user_attrs["confirm"]
    assert confirmed and all("for network" in c["error"] for c in confirmed.values())


def test_a_worker_count_claiming_a_billion_workers_is_capped(h: Harness) -> None:
    from hpc2edge.search.policy import MAX_SLOTS

    h.dispatcher.workers = lambda *_: {"edge": 10**9, "train": 1}  # type: ignore[method-assign]
    o = h.orchestrator(trials=3, parallel=0)
    o.start()
    assert o.capacity.of("edge") == MAX_SLOTS and o.capacity.of("train") == 2
    assert o.run()["complete"] == 3  # asks are bounded by --trials whatever the pool


# --- the measurement quality gate -----------------------------------------------------------------


def test_an_unstable_measurement_is_measured_again_and_then_kept_flagged(h: Harness) -> None:
    h.edge.unstable = 1  # the first measurement hits its time cap with a wide CI
    o = h.orchestrator(trials=1, parallel=1, retries=2)
    o.run()
    (t,) = o.study.trials
    a = t.user_attrs
    assert t.state.name == "COMPLETE" and h.edge.calls == 2
    assert a["latency"]["unstable"] is None
    assert "unstable on fake-edge" in a["measure_errors"][0]
    # Still unstable after the re-measures: kept, flagged, and never reused from the store.
    h.edge.unstable = 10**6
    h.dispatcher.edge_probe = h.edge.probe()  # stored measurements are looked up from now on
    o = h.orchestrator("again", trials=1, parallel=1, retries=2, seed=1)
    o.run()
    (t,) = o.study.trials
    a = t.user_attrs
    assert t.state.name == "COMPLETE" and len(a["measure_errors"]) == 2
    assert "over the protocol's" in a["latency"]["unstable"]
    calls = h.edge.calls
    o = h.orchestrator("third", trials=1, parallel=1, retries=0, seed=1)
    o.run()
    assert o.study.trials[0].user_attrs["arch_id"] == a["arch_id"]
    assert o.study.trials[0].user_attrs["latency"]["cached"] is False
    assert h.edge.calls == calls + 1


# --- units under quarantine ---------------------------------------------------------------------


def test_a_quarantined_units_results_are_set_aside_and_measured_on_another(h: Harness) -> None:
    slow = FakeEdge(h.artifacts, scale=2.0, worker="edge@slow")
    fast = FakeEdge(h.artifacts, worker="edge@fast")
    turn = iter(range(10**6))
    # Two units of the default kind take the queue's tasks in turn; the slow one is found out.
    h.dispatcher.handlers["edge"] = lambda p: (slow if next(turn) % 2 == 0 else fast)(p)
    h.dispatcher.quarantine = {"edge": {"edge@slow": "reference 2x the kind's"}}
    o = h.orchestrator(trials=3, parallel=1, retries=2)
    o.run()
    assert slow.calls >= 1
    for t in o.study.trials:
        a = t.user_attrs
        assert t.state.name == "COMPLETE" and a["latency"]["worker"] == "edge@fast"
    errors = [e for t in o.study.trials for e in t.user_attrs.get("measure_errors", [])]
    assert errors and all("from edge@slow, under quarantine" in e for e in errors)
    assert {m.results["worker"] for m in h.store.measurements()} == {"edge@fast"}
