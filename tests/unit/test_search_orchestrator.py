"""The orchestrator over the inline dispatcher: real Optuna (SQLite), real measurement store, real
ONNX export (each network exported once for the module); the device and the trainer are the
doubles of :mod:`hpc2edge.testing.fakes`.

The same scenarios over real Celery workers are in ``tests/integration/test_search_e2e.py``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
optuna = pytest.importorskip("optuna")

from hpc2edge.search import candidate as cand  # noqa: E402
from hpc2edge.search import study as st  # noqa: E402
from hpc2edge.search.objectives import (  # noqa: E402
    CONSTRAINT_ATTR,
    Objective,
    native_constraints,
)
from hpc2edge.search.orchestrator import (  # noqa: E402
    LEASE_ATTR,
    SearchError,
)
from tests.support.search import (  # noqa: E402
    ONE_POINT,
    PIN,
    Harness,
    one_build_per_network,
    states,
    step_until,
)

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True, scope="module")
def one_export_per_network() -> Any:
    """The tests here run the same seeded networks again and again: each is exported and
    checked once for the module (:func:`tests.support.search.one_build_per_network`)."""
    with one_build_per_network() as built:
        yield built


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    st.quiet_optuna()
    return Harness(tmp_path)


def test_search_completes_all_trials_with_a_front(h: Harness) -> None:
    o = h.orchestrator(trials=8)
    summary = o.run()
    assert summary["trials"] == 8
    assert summary["complete"] == 8
    assert states(o.study) == {"COMPLETE": 8}
    assert summary["front"], "a finished pareto search has a non-empty front"
    # One measurement and one training per distinct network; duplicates send nothing.
    distinct = {t.user_attrs["arch_id"] for t in o.study.trials}
    assert h.sent("measure") == h.sent("train") == len(distinct)
    for t in o.study.trials:
        assert t.values == [t.user_attrs["val_mse"], t.user_attrs["latency_ms"]]
        assert t.user_attrs["measure_task"]["sent"] is True
    assert LEASE_ATTR not in o.study.user_attrs or o.study.user_attrs[LEASE_ATTR] is None


def test_latency_first_never_trains_over_budget(h: Harness) -> None:
    budget = 0.9  # ms: about half of this space's fake latencies are over it
    o = h.orchestrator(trials=10, objective=Objective("pareto", budget))
    summary = o.run()
    pruned = [t for t in o.study.trials if t.state.name == "PRUNED"]
    assert pruned, "the budget was chosen so that some networks are over it"
    for t in pruned:
        assert t.user_attrs["latency_ms"] > budget
        assert t.user_attrs[CONSTRAINT_ATTR] > 0
        assert "over the latency budget" in t.user_attrs["reason"]
        assert "train_task" not in t.user_attrs
    train_archs = {cand_id(p) for kind, _, p in h.dispatcher.sent if kind == "train"}
    assert not train_archs & {t.user_attrs["arch_id"] for t in pruned}
    assert summary["tasks_sent"]["train"] == h.sent("train")
    for t in o.front():
        assert t.user_attrs["latency_ms"] <= budget


def cand_id(payload: dict[str, Any]) -> str:
    from hpc2edge.space.base import ArchSpec

    return ArchSpec.from_dict(payload["spec"]).arch_id


def test_no_latency_first_sends_train_before_the_latency_is_known(h: Harness) -> None:
    o = h.orchestrator(trials=2, parallel=1, latency_first=False)
    o.start()
    o.step()  # ask trial 0 and send both of its tasks at once
    o.step()
    kinds = [k for k, _, _ in h.dispatcher.sent]
    assert kinds[:2] == ["measure", "train"]
    o.run()
    assert states(o.study) == {"COMPLETE": 2}


def test_second_study_reuses_stored_measurements(h: Harness) -> None:
    first = h.orchestrator("a", trials=5, seed=3)
    first.dispatcher.edge_probe = None
    first.run()
    measured = h.sent("measure")
    assert measured > 0
    # The device is known from the first study's results (or the probe): same seed, same asks.
    h.dispatcher.edge_probe = {"measurement": {"device": _device(), "backend": _backend()}}
    second = h.orchestrator("b", trials=5, seed=3)
    summary = second.run()
    assert h.sent("measure") == measured, "no device time for networks already measured"
    assert summary["measurements_reused"] == 5
    for t in second.study.trials:
        assert t.user_attrs["latency"]["cached"] is True


def _device() -> dict[str, Any]:
    from hpc2edge.testing.fakes import DEVICE

    return DEVICE


def _backend() -> dict[str, Any]:
    from hpc2edge.testing.fakes import BACKEND

    return BACKEND


def test_identical_networks_are_measured_and_trained_once(h: Harness) -> None:
    # A one-point space: every trial is the same network.
    pin = {**PIN, "n_blocks": 1, "block1_channels": 8, "block1_kernel_t": 1,
           "block1_kernel_s": 3, "downsample": "pool", "batch_norm": False,
           "activation": "relu", "head_width": 32, "head_layers": 1}  # fmt: skip
    o = h.orchestrator(trials=4, parallel=2, pin=pin)
    o.run()
    assert h.sent("measure") == 1 and h.sent("train") == 1
    trials = o.study.trials
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert len({tuple(t.values) for t in trials}) == 1
    assert [t.user_attrs.get("duplicate_of") for t in trials[1:]] == ["trial-0"] * 3


def test_device_that_never_answers_fails_trials_with_edge_timeout(h: Harness) -> None:
    h.dispatcher.handlers["measure"] = lambda payload: None  # the device is gone
    o = h.orchestrator(trials=3, measure_timeout_s=60, retries=1)
    summary = o.run()
    assert summary["failed"] == 3
    for t in o.study.trials:
        assert t.state.name == "FAIL"
        assert t.user_attrs["reason"].startswith("edge timeout")
        assert "2 attempts" in t.user_attrs["reason"]
    assert h.sent("measure") == 6  # each trial: first attempt + one retry, then given up
    assert h.sent("train") == 0
    assert h.clock.now - 1_800_000_000.0 >= 120


def test_transient_error_is_retried_after_backoff_and_completes(h: Harness) -> None:
    real = h.edge
    failures = {"left": 1}

    def flaky(payload: dict[str, Any]) -> dict[str, Any]:
        if failures["left"]:
            failures["left"] -= 1
            return {"status": "error", "error": {"type": "ArtifactNotFound", "message": "gone"}}
        return real(payload)

    h.dispatcher.handlers["measure"] = flaky
    o = h.orchestrator(trials=1, backoff_s=10)
    o.run()
    t = o.study.trials[0]
    assert t.state.name == "COMPLETE"
    assert t.user_attrs["measure_task"]["attempt"] == 2
    assert t.user_attrs["measure_errors"] == ["measure: ArtifactNotFound: gone"]


def test_error_about_the_candidate_fails_at_once(h: Harness) -> None:
    h.dispatcher.handlers["train"] = lambda p: {
        "status": "error",
        "error": {"type": "TrainingError", "message": "loss became NaN at epoch 1"},
    }
    o = h.orchestrator(trials=2)
    o.run()
    for t in o.study.trials:
        assert t.state.name == "FAIL"
        assert t.user_attrs["reason"] == "train: TrainingError: loss became NaN at epoch 1"
        assert t.user_attrs["train_task"]["attempt"] == 1
        assert t.values is None


def test_a_nan_loss_in_a_result_is_a_failure_not_a_number(h: Harness) -> None:
    real = h.trainer
    h.dispatcher.handlers["train"] = lambda p: {**real(p), "val_mse": float("nan")}
    o = h.orchestrator(trials=1)
    o.run()
    t = o.study.trials[0]
    assert t.state.name == "FAIL" and "no finite val_mse" in t.user_attrs["reason"]


def test_resume_reattaches_to_tasks_in_flight(h: Harness) -> None:
    slow_train: dict[str, Any] = {"hold": True}
    real = h.trainer

    def train(payload: dict[str, Any]) -> dict[str, Any] | None:
        return None if slow_train["hold"] else real(payload)

    h.dispatcher.handlers["train"] = train
    o = h.orchestrator(trials=4, parallel=2)
    o.start()
    for _ in range(6):
        o.step()
    running = [t for t in o.study.get_trials() if t.state.name == "RUNNING"]
    assert len(running) == 2 and all("train_task" in t.user_attrs for t in running)
    sent_before = list(h.dispatcher.sent)
    # The orchestrator dies here (no release: a SIGKILL). A new one takes over on the same
    # storage; the lease of a dead process on this host is taken over at once.
    o.study.set_user_attr(LEASE_ATTR, {"host": os.uname().nodename, "pid": 2**22 + 7,
                                       "heartbeat": h.clock.now})  # fmt: skip
    slow_train["hold"] = False
    o2 = h.orchestrator(trials=4, parallel=2)
    summary = o2.run()
    assert summary["trials"] == 4 and summary["complete"] == 4
    assert [t.number for t in o2.study.trials] == [0, 1, 2, 3]
    # The two trials in flight were not sent again: their tasks were polled by id.
    resent = [
        s for s in h.dispatcher.sent[len(sent_before) :] if s[1] in {x[1] for x in sent_before}
    ]
    assert resent == []


def test_resume_resends_a_task_recorded_but_maybe_not_sent(h: Harness) -> None:
    o = h.orchestrator(trials=1, parallel=1)
    o.start()
    o.step()  # trial 0 asked, and its measurement sent in the same step
    (trial,) = o.study.get_trials()
    task = trial.user_attrs["measure_task"]
    # Pretend the kill fell between recording the id and the send completing.
    storage = st.storage(h.url)
    study_id = storage.get_study_id_from_name(o.study.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
    storage.set_trial_user_attr(trial_id, "measure_task", {**task, "sent": False})
    h.dispatcher.drop_pending()
    o.study.set_user_attr(LEASE_ATTR, None)
    o2 = h.orchestrator(trials=1, parallel=1)
    o2.run()
    ids = [tid for kind, tid, _ in h.dispatcher.sent if kind == "measure"]
    assert ids == [task["id"], task["id"]], "sent again under the same id, not a new one"
    assert o2.study.trials[0].state.name == "COMPLETE"


def test_a_live_lease_blocks_a_second_orchestrator(h: Harness) -> None:
    o = h.orchestrator(trials=1)
    o.start()
    o.study.set_user_attr(LEASE_ATTR, {"host": "elsewhere", "pid": 1, "heartbeat": h.clock.now})
    with pytest.raises(SearchError, match="is being run by pid 1 on elsewhere"):
        h.orchestrator(trials=1).start()


def test_reopening_a_study_with_other_settings_is_refused(h: Harness) -> None:
    h.orchestrator("x", trials=1).run()
    with pytest.raises(SearchError, match="other settings"):
        h.orchestrator("x", trials=1, batch_size=2).start()
    with pytest.raises(SearchError, match="objective"):
        h.orchestrator("x", trials=1, objective=Objective("paper")).start()


def test_paper_objective_and_baseline(h: Harness) -> None:
    o = h.orchestrator(trials=3, objective=Objective("paper"), baseline=True)
    summary = o.run()
    base = summary["baseline"]
    assert base["state"] == "complete" and base["val_mse"] > 0 and base["latency_ms"] > 0
    for t in o.study.trials:
        a = t.user_attrs
        assert t.values == [pytest.approx(1000 * a["val_mse"] + a["latency_ms"])]
    assert len(o.front()) == 1
    # The baseline is measured and trained but is not a trial.
    assert h.sent("train") == len(
        {t.user_attrs["arch_id"] for t in o.study.trials} | {base["arch_id"]}
    )


def test_baseline_is_trained_even_over_the_budget(h: Harness) -> None:
    o = h.orchestrator(trials=1, objective=Objective("pareto", 0.01), baseline=True)
    summary = o.run()
    assert summary["baseline"]["state"] == "complete"
    assert o.study.trials[0].state.name == "PRUNED"


def test_confirm_front_remeasures_with_fresh_tasks(h: Harness) -> None:
    o = h.orchestrator(trials=4, confirm_front=True)
    o.run()
    confirmed = o.study.user_attrs["confirm"]
    assert set(confirmed) == {str(t.number) for t in o.front()}
    for number, c in confirmed.items():
        trial = o.study.trials[int(number)]
        assert c["p50_ms"] == pytest.approx(trial.user_attrs["latency_ms"])


def test_without_latency_first_over_budget_trials_complete_as_infeasible(h: Harness) -> None:
    budget = 0.9
    o = h.orchestrator(trials=8, objective=Objective("pareto", budget), latency_first=False)
    summary = o.run()
    assert summary["pruned"] == 0
    over = [t for t in o.study.trials if t.user_attrs["latency_ms"] > budget]
    assert over, "the budget was chosen so that some networks are over it"
    for t in over:
        # The training was paid for: its loss is recorded, and the constraint marks it infeasible.
        assert t.state.name == "COMPLETE" and t.values[0] == t.user_attrs["val_mse"]
        assert t.user_attrs[CONSTRAINT_ATTR] > 0
        if native_constraints():  # Optuna >= 5: the samplers read it from the trial
            assert t.constraints["latency_ms"] > 0
    assert h.sent("train") == len({t.user_attrs["arch_id"] for t in o.study.trials})
    assert all(t.user_attrs["latency_ms"] <= budget for t in o.front())


def test_a_task_that_raised_a_connection_error_is_retried(h: Harness) -> None:
    """A worker whose broker went away reports its task as failed with a connection error:
    that says nothing about the candidate, so the task is sent again."""
    real = h.trainer
    calls = {"n": 0}

    def flaky(payload: dict[str, Any]) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")
        return real(payload)

    h.dispatcher.handlers["train"] = flaky
    o = h.orchestrator(trials=1, backoff_s=1)
    o.run()
    t = o.study.trials[0]
    assert t.state.name == "COMPLETE"
    assert t.user_attrs["train_task"]["attempt"] == 2
    assert t.user_attrs["train_errors"][0].startswith("train: ConnectionError")


# --- regressions (issue 15, bugs 1 and 2) ------------------------------------------------------


def test_a_duplicate_released_by_its_failed_source_finishes_after_a_restart(h: Harness) -> None:
    real = h.edge
    device = {"calls": 0, "answers": False}

    def edge(payload: dict[str, Any]) -> dict[str, Any] | None:
        device["calls"] += 1
        if device["calls"] == 1:  # the first trial's network fails for good
            return {"status": "error", "error": {"type": "MeasurementError", "message": "no"}}
        return real(payload) if device["answers"] else None  # then the device goes quiet

    h.dispatcher.handlers["measure"] = edge
    o = h.orchestrator(trials=2, parallel=2, pin=ONE_POINT, retries=0)
    o.start()

    def released_and_sent() -> bool:
        t = {t.number: t for t in o.study.get_trials(deepcopy=False)}
        task = t[1].user_attrs.get("measure_task") if 1 in t else None
        return bool(task and task.get("sent"))

    assert step_until(o, h.clock, released_and_sent)
    trials = o.study.get_trials(deepcopy=False)
    assert trials[0].state.name == "FAIL"
    assert trials[1].user_attrs["duplicate_of"] is None  # released, measuring on its own
    o.release()  # the orchestrator stops here; the device answers again
    device["answers"] = True
    again = h.orchestrator(trials=2, parallel=2, pin=ONE_POINT, retries=0)
    again.start()
    assert step_until(again, h.clock, again.finished), "the restarted search never finished"
    assert again.study.get_trials(deepcopy=False)[1].state.name == "COMPLETE"


def test_a_candidate_whose_export_fails_fails_alone_once_the_device_is_known(
    h: Harness, monkeypatch: pytest.MonkeyPatch, one_export_per_network: dict[Any, Any]
) -> None:
    from hpc2edge.errors import ExportError

    one_export_per_network.clear()  # every network of this search is built here, in order
    real_build = cand.build
    builds = {"n": 0}

    def build(spec: Any, **kwargs: Any) -> Any:
        builds["n"] += 1
        if builds["n"] == 3:  # after the first measurement: the device context is known
            raise ExportError("the exporter refused this network")
        return real_build(spec, **kwargs)

    monkeypatch.setattr(cand, "build", build)
    o = h.orchestrator(trials=4, parallel=1)
    summary = o.run()
    assert summary["trials"] == 4
    reasons = [t.user_attrs.get("reason", "") for t in o.study.trials if t.state.name == "FAIL"]
    assert reasons == ["measure: ExportError: the exporter refused this network"]
    assert summary["complete"] == 3


def test_a_long_confirm_front_keeps_the_lease_alive(h: Harness) -> None:
    """Issue 15, bug 5: confirming the front took the heartbeat away; after LEASE_STALE_S a
    second orchestrator could take the study while the first was still measuring."""
    from hpc2edge.search.orchestrator import LEASE_STALE_S

    o = h.orchestrator(trials=2, confirm_front=True, measure_timeout_s=3600)
    real = h.edge
    ages: list[float] = []
    slow = {"from": None}

    def edge(payload: dict[str, Any]) -> dict[str, Any] | None:
        if not o.finished():
            return real(payload)  # the search itself: answered at once
        lease = o.study.user_attrs.get(LEASE_ATTR) or {}
        ages.append(h.clock.now - float(lease.get("heartbeat", 0)))
        slow["from"] = slow["from"] or h.clock.now
        # The confirmation: the device answers after 3 stale periods.
        return real(payload) if h.clock.now - slow["from"] > 3 * LEASE_STALE_S else None

    h.dispatcher.handlers["measure"] = edge
    o.run()
    assert o.study.user_attrs["confirm"]  # the front was confirmed
    assert ages and max(ages) < LEASE_STALE_S, f"lease went stale during confirm: {max(ages)} s"


def test_a_malformed_ok_result_fails_an_attempt_not_the_search(h: Harness) -> None:
    """Issue 15, bug 3: any worker can write any result; one without the batch or the device
    must not crash step()."""
    real = h.edge
    calls = {"n": 0}

    def edge(payload: dict[str, Any]) -> dict[str, Any]:
        calls["n"] += 1
        good = real(payload)
        if calls["n"] == 1:
            return {k: v for k, v in good.items() if k != "device"}
        if calls["n"] == 2:
            return {**good, "batches": []}  # no measurement at the batch size asked
        return good

    h.dispatcher.handlers["measure"] = edge
    o = h.orchestrator(trials=1, retries=2)
    summary = o.run()
    assert summary["complete"] == 1
    t = o.study.trials[0]
    assert t.user_attrs["measure_task"]["attempt"] == 3
    assert len(t.user_attrs["measure_errors"]) == 2


def test_a_malformed_confirmation_is_recorded_as_an_error(h: Harness) -> None:
    o = h.orchestrator(trials=2, confirm_front=True)
    real = h.edge

    def edge(payload: dict[str, Any]) -> dict[str, Any]:
        good = real(payload)
        return {**good, "batches": []} if o.finished() else good

    h.dispatcher.handlers["measure"] = edge
    o.run()
    confirmed = o.study.user_attrs["confirm"]
    assert confirmed and all(
        set(c) == {"error"} and "no batches" in c["error"] for c in confirmed.values()
    )
