"""Paired ratios after a search (:mod:`hpc2edge.search.pairing`): one paired task per front
member and device kind, recorded before it is sent, checked at the boundary, and the report's
speed-up taken from it.

The orchestrator runs over the inline dispatcher with real Optuna (SQLite), real stores and
real ONNX export (:mod:`tests.support.search`), each network exported once for the module; the
device is :class:`FakeEdge`, whose pair mode answers with the ratio of its two noise-free
latencies.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("optuna")

from hpc2edge.errors import BrokerError
from hpc2edge.report.collect import front_rows, kind_fronts
from hpc2edge.search import study as st
from hpc2edge.search.objectives import kind_front
from hpc2edge.search.pairing import PairRecord, PairState, stored
from hpc2edge.testing.fakes import FakeEdge
from hpc2edge.transport.taskids import queue_of
from tests.support.search import Harness, one_build_per_network

pytestmark = pytest.mark.unit

Result = dict[str, Any]


@pytest.fixture(autouse=True, scope="module")
def _one_export_per_network() -> Any:
    """Every test here runs the same seeded networks and baseline: each is exported and checked
    once for the module (:func:`tests.support.search.one_build_per_network`)."""
    with one_build_per_network() as built:
        yield built


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    st.quiet_optuna()
    return Harness(tmp_path)


def paired_sent(h: Harness) -> list[tuple[str, Result]]:
    """(task id, payload) of every paired task sent."""
    return [(tid, p) for k, tid, p in h.dispatcher.sent if k == "measure" and "pair" in p]


def corrupt_pairs(h: Harness, change: Callable[[Result], Any]) -> None:
    """The device answers paired tasks with ``change(good result)``; the others as always."""
    real = h.edge

    def edge(payload: Result) -> Any:
        good = real(payload)
        return change(good) if "pair" in payload else good

    h.dispatcher.handlers["measure"] = edge


# --- the fake device answers like the real one ------------------------------------------------


def test_fake_edge_answers_a_paired_request_like_measure_request() -> None:
    from hpc2edge.latency.service import measure_request
    from hpc2edge.search.dispatch import Outcome
    from hpc2edge.store.artifacts import MemoryArtifactStore
    from hpc2edge.testing.dispatch import measure_payload
    from hpc2edge.testing.latency import contract_model, recorded_table
    from tests.unit.test_search_doubles import as_sent, differences

    store = MemoryArtifactStore()
    key = store.put(contract_model().onnx_bytes)
    payload = measure_payload(key, [1, 2])
    payload["pair"] = {k: payload[k] for k in ("arch_id", "artifact_key", "input_shape",
                                               "reference")}  # fmt: skip
    real = measure_request(payload, fetch=store.get, backend_for=lambda _: recorded_table())
    assert real["status"] == "ok", real["error"]
    real["worker"], real["kind"] = "edge@device", "default"  # what the task adds
    fake = FakeEdge(store)(payload)
    assert differences(as_sent(fake), as_sent(real)) == []
    assert differences(as_sent(fake["pair"]), as_sent(real["pair"])) == []
    assert set(fake["pair"]) == set(real["pair"])
    assert len(fake["pair"]["ratios"]) == len(real["pair"]["ratios"]) == 2
    assert Outcome.from_result(as_sent(fake), "measure").ok


# --- a finished search ----------------------------------------------------------------------------


def test_every_front_member_gets_a_paired_speedup_that_the_report_uses(h: Harness) -> None:
    o = h.orchestrator(trials=6, baseline=True)
    o.run()
    base = o.study.user_attrs["baseline"]
    front = o.front()
    records = stored(o.study.user_attrs, "paired")
    assert set(records) == {t.number for t in front} and len(front) >= 2
    sent = dict(paired_sent(h))
    assert len(sent) == len(front), "one paired task per front member"
    measured = {tid for k, tid, p in h.dispatcher.sent if k == "measure" and "pair" not in p}
    for t in front:
        rec = records[t.number]
        assert rec.state is PairState.OK and rec.unit == "fake-edge" and rec.pairs == 12
        # The fake device is noise-free: the paired ratio is the unpaired one.
        assert rec.speedup == pytest.approx(base["latency_ms"] / t.user_attrs["latency_ms"])
        assert rec.ci95 is not None and rec.ci95[0] < rec.speedup < rec.ci95[1]
        # A fresh task on the kind's queue, the member as A and the baseline as B.
        assert rec.task in sent and rec.task not in measured and queue_of(rec.task) == "edge"
        payload = sent[rec.task]
        assert payload["arch_id"] == t.user_attrs["arch_id"]
        assert payload["pair"]["arch_id"] == base["arch_id"]
        assert payload["pair"]["reference"] and payload["keep_samples"] is False
    rows = {r["trial"]: r for r in front_rows(o.study, base)}
    for t in front:
        row, rec = rows[t.number], records[t.number]
        assert row["speedup"] == rec.speedup and row["speedup_source"] == "paired"
        assert row["speedup_ci95"] == list(rec.ci95 or ())
        assert row["speedup_unpaired"] == pytest.approx(rec.speedup)


def test_a_rerun_of_a_finished_study_pairs_nothing_twice(h: Harness) -> None:
    h.orchestrator(trials=4, baseline=True).run()
    n = len(paired_sent(h))
    h.orchestrator(trials=4, baseline=True).run()
    assert len(paired_sent(h)) == n


def test_each_device_kind_pairs_its_own_front_on_its_own_queue(h: Harness) -> None:
    nano = FakeEdge(h.artifacts, kind="nano", scale=3.0, worker="fake-nano")
    h.dispatcher.handlers["edge.nano"] = nano
    o = h.orchestrator(trials=5, baseline=True, devices=(("default", None), ("nano", None)))
    o.run()
    ua = o.study.user_attrs
    on_nano = stored(ua, "paired@nano")
    assert set(on_nano) == {t.number for t in kind_front(o.study, "latency_ms@nano")}
    assert set(stored(ua, "paired")) == {t.number for t in o.front()}
    for rec in on_nano.values():
        assert rec.state is PairState.OK and rec.unit == "fake-nano"
        assert queue_of(rec.task) == "edge.nano"
    rows = kind_fronts(o.study, ua["baseline"])["nano"]
    assert rows and all(r["speedup_source"] == "paired" for r in rows)
    assert all(r["speedup"] == on_nano[r["trial"]].speedup for r in rows)


def test_without_paired_ratios_or_a_baseline_nothing_is_paired(h: Harness) -> None:
    o = h.orchestrator("off", trials=3, baseline=True, paired_ratios=False)
    o.run()
    assert "paired" not in o.study.user_attrs and not paired_sent(h)
    rows = front_rows(o.study, o.study.user_attrs["baseline"])
    assert rows and all(r["speedup_source"] == "unpaired" for r in rows)
    assert all(r["speedup_ci95"] is None and r["speedup"] == r["speedup_unpaired"] for r in rows)
    o = h.orchestrator("none", trials=3, baseline=False)
    o.run()
    assert "paired" not in o.study.user_attrs and not paired_sent(h)
    assert all(r["speedup"] is None and r["speedup_source"] is None
               for r in front_rows(o.study, None))  # fmt: skip


# --- what a restart finds ---------------------------------------------------------------------


def test_a_pair_is_recorded_before_it_is_sent(h: Harness) -> None:
    o = h.orchestrator(trials=3, baseline=True)
    submit = h.dispatcher.submit
    seen: list[str] = []

    def recorded_first(kind: str, payload: Result, task_id: str, expires_s: float) -> None:
        if "pair" in payload:
            records = o.study.user_attrs["paired"]
            (rec,) = [r for r in records.values() if r.get("task") == task_id]
            assert rec["state"] == "sent" and isinstance(rec["sent_at"], float)
            seen.append(task_id)
        submit(kind, payload, task_id, expires_s)

    h.dispatcher.submit = recorded_first  # type: ignore[method-assign]
    o.run()
    assert seen and len(seen) == len(o.front())


def test_a_pair_sent_by_a_stopped_run_is_polled_not_sent_again(h: Harness) -> None:
    h.orchestrator(trials=4, baseline=True, paired_ratios=False).run()
    # What a run killed while pairing leaves: a record ``sent`` and its task on the queue.
    o = h.orchestrator(trials=4, baseline=True)
    o.start()
    t = o.front()[0]
    job, base = o.jobs[f"trial-{t.number}"], o.jobs["baseline"]
    from hpc2edge.search import pairing
    from hpc2edge.transport import taskids

    pairing._build(o, job)
    pairing._build(o, base)
    stage = o.pipeline.measure
    payload = stage.payload(o, job)
    b = stage.payload(o, base)
    payload["pair"] = {k: b[k] for k in ("arch_id", "artifact_key", "input_shape", "reference")}
    task = taskids.new("edge")
    assert base.candidate is not None
    rec = PairRecord(PairState.SENT, task=task, sent_at=h.clock.time(),
                     baseline_sha256=base.candidate.onnx_sha256)  # fmt: skip
    o.study.set_user_attr("paired", {str(t.number): rec.to_json()})
    h.dispatcher.submit("measure", payload, task, 60.0)
    before = len(h.dispatcher.sent)
    o.run()
    records = stored(o.study.user_attrs, "paired")
    assert records[t.number].state is PairState.OK and records[t.number].task == task
    again = [tid for _, tid, p in h.dispatcher.sent[before:] if "pair" in p]
    assert task not in again and len(again) == len(o.front()) - 1


def test_an_unreadable_stored_pair_is_measured_again(h: Harness) -> None:
    o = h.orchestrator(trials=3, baseline=True, paired_ratios=False)
    o.run()
    t = o.front()[0]
    o.study.set_user_attr("paired", {str(t.number): {"state": "sent", "task": 7}, "x": "y"})
    o = h.orchestrator(trials=3, baseline=True)
    o.run()
    assert stored(o.study.user_attrs, "paired")[t.number].state is PairState.OK


# --- hostile or failing answers fail one pair, never the study ------------------------------------


def _other_sha(r: Result) -> Result:
    return {**r, "pair": {**r["pair"], "onnx_sha256": "0" * 64}}


def _ratio(**over: Any) -> Callable[[Result], Result]:
    def change(r: Result) -> Result:
        ratios = [{**x, "compute": {**x["compute"], **over}} for x in r["pair"]["ratios"]]
        return {**r, "pair": {**r["pair"], "ratios": ratios}}

    return change


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Harness, Any]:
    """A finished search with its pairs, and the orchestrator that ran it."""
    st.quiet_optuna()
    h = Harness(tmp_path_factory.mktemp("paired"))
    o = h.orchestrator(trials=4, baseline=True)
    o.run()
    return h, o


HOSTILE = [
    (lambda r: {k: v for k, v in r.items() if k != "pair"}, "no paired measurement"),
    (lambda r: {**r, "pair": "yes"}, "no paired measurement"),
    (_other_sha, "another ONNX model than the baseline"),
    (lambda r: {**r, "arch_id": "0" * 64}, "for network"),
    (lambda r: {**r, "onnx_sha256": "0" * 64}, "another ONNX model than the one sent"),
    (lambda r: {**r, "kind": "nano"}, "of kind 'nano'"),
    (lambda r: {**r, "batches": []}, "ResultRejected: measure result has no batches"),
    (lambda r: {**r, "pair": {**r["pair"], "ratios": None}}, "no ratios"),
    (lambda r: {**r, "pair": {**r["pair"], "ratios": []}}, "no ratio at batch size 1"),
    (_ratio(median=math.nan), "ratio median"),
    (_ratio(median="2.5"), "ratio median"),
    (_ratio(median=10**400), "ratio median"),
    (_ratio(median=1e9), "ratio ci95 must hold its median"),
    (_ratio(ci95=[1, 2, 3]), "ratio ci95"),
    (_ratio(pairs=True), "ratio pairs"),
    (_ratio(stopped_by="'; DROP TABLE"), "ratio stopped_by"),
    (lambda r: {**r, "pair": {**r["pair"], "ratios": [{"batch_size": 1, "compute": 7}]}},
     "a ratio record must be an object"),
    (lambda r: {"status": "error", "error": {"type": "ArtifactNotFound", "message": "gone"}},
     "ArtifactNotFound: gone"),
    (lambda r: {"status": "error", "error": "<b>no</b>"}, "without a typed error"),
    (lambda r: ["not", "a", "record"], "ResultRejected"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "reason"), HOSTILE)
def test_a_malformed_or_foreign_paired_result_is_that_pairs_failure(
    finished: tuple[Harness, Any], change: Callable[[Result], Any], reason: str
) -> None:
    from hpc2edge.search.dispatch import Outcome
    from hpc2edge.search.pairing import paired

    h, o = finished
    records = stored(o.study.user_attrs, "paired")
    number, good = next(iter(records.items()))
    payload = dict(paired_sent(h))[good.task]
    sent = PairRecord(PairState.SENT, task=good.task, sent_at=good.sent_at,
                      baseline_sha256=good.baseline_sha256)  # fmt: skip
    outcome = Outcome.from_result(change(h.edge(payload)), "measure")
    rec = paired(o.pipeline.measure, o.jobs[f"trial-{number}"], sent, outcome)
    assert rec.state is PairState.FAILED and rec.speedup is None and rec.task == good.task
    assert rec.reason is not None and reason in rec.reason and len(rec.reason) <= 500
    # The good answer to the same task is accepted: it is the change that was refused.
    ok = paired(o.pipeline.measure, o.jobs[f"trial-{number}"], sent,
                Outcome.from_result(h.edge(payload), "measure"))  # fmt: skip
    assert ok.state is PairState.OK and ok.speedup == good.speedup


@pytest.mark.parametrize(("change", "reason"), [HOSTILE[0], HOSTILE[2], HOSTILE[9]])
def test_a_search_whose_device_answers_pairs_badly_still_finishes(
    h: Harness, change: Callable[[Result], Any], reason: str
) -> None:
    corrupt_pairs(h, change)
    o = h.orchestrator(trials=4, baseline=True)
    summary = o.run()
    assert summary["complete"] == 4 and summary["failed"] == 0
    records = stored(o.study.user_attrs, "paired")
    assert set(records) == {t.number for t in o.front()}
    for rec in records.values():
        assert rec.state is PairState.FAILED and rec.reason and reason in rec.reason
    rows = front_rows(o.study, o.study.user_attrs["baseline"])
    assert all(r["speedup_source"] == "unpaired" for r in rows)


def test_a_device_that_raises_or_never_answers_fails_the_pair(h: Harness) -> None:
    def raising(r: Result) -> Result:
        raise RuntimeError("worker lost")

    corrupt_pairs(h, raising)
    o = h.orchestrator("raises", trials=3, baseline=True)
    o.run()
    assert all("RuntimeError: worker lost" in (r.reason or "")
               for r in stored(o.study.user_attrs, "paired").values())  # fmt: skip
    corrupt_pairs(h, lambda r: None)
    o = h.orchestrator("silent", trials=3, baseline=True, measure_timeout_s=10.0)
    o.run()
    records = stored(o.study.user_attrs, "paired")
    assert records and all(r.reason == "timeout" for r in records.values())
    assert h.clock.now - 1_800_000_000.0 >= 20.0  # twice a measurement's timeout


def test_a_send_that_fails_fails_the_pair_and_the_others_go_on(h: Harness) -> None:
    o = h.orchestrator(trials=4, baseline=True)
    submit = h.dispatcher.submit
    failed: list[str] = []

    def flaky(kind: str, payload: Result, task_id: str, expires_s: float) -> None:
        if "pair" in payload and not failed:
            failed.append(task_id)
            raise BrokerError("the broker went away")
        submit(kind, payload, task_id, expires_s)

    h.dispatcher.submit = flaky  # type: ignore[method-assign]
    o.run()
    records = list(stored(o.study.user_attrs, "paired").values())
    assert [r.reason for r in records if r.state is PairState.FAILED] == [
        "not sent: BrokerError: the broker went away"
    ]
    assert sum(r.state is PairState.OK for r in records) == len(records) - 1


def test_a_baseline_that_cannot_be_built_fails_every_pair_once(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hpc2edge.errors import ExportError
    from hpc2edge.search import prepare

    h.orchestrator(trials=3, baseline=True, paired_ratios=False).run()
    real = prepare.build
    builds: list[str] = []

    def build(spec: Any, seed: int) -> Any:
        if spec.arch_id == base_id:
            builds.append(spec.arch_id)
            return ExportError("torch refuses it")
        return real(spec, seed)

    o = h.orchestrator(trials=3, baseline=True)
    base_id = o.study.user_attrs["baseline"]["arch_id"]
    monkeypatch.setattr(prepare, "build", build)
    o.run()
    records = stored(o.study.user_attrs, "paired")
    assert records and len(builds) == 1
    assert all(r.reason == "not sent: ExportError: the baseline: ExportError: torch refuses it"
               for r in records.values())  # fmt: skip


def test_stored_records_of_the_wrong_shape_are_left_out_of_the_report() -> None:
    attrs = {
        "paired": {
            "1": {"state": "ok", "speedup": 2.0, "ci95": [1.9, 2.1], "pairs": 8,
                  "stopped_by": "converged"},
            "2": {"state": "ok", "speedup": "fast"},
            "3": {"state": "weird"},
            "4": [1],
            "x": {"state": "ok"},
        }
    }  # fmt: skip
    assert set(stored(attrs, "paired")) == {1}
    assert stored({"paired": "nope"}, "paired") == {}
