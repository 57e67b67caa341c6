"""The units of a kind: their reports, hostile ones included, and the rule that quarantines.

Everything here is pure (no broker): the records of :mod:`hpc2edge.transport.units`, the rule of
:func:`hpc2edge.transport.fleet.decide`, the worker's :class:`UnitState` and the consumer gate of
:mod:`hpc2edge.transport.liveness` with a fake consumer. The reads and writes over a real TLS
redis with the ACL are in tests/integration/test_fleet.py.
"""

from __future__ import annotations

import json
import logging
import math

import pytest

from hpc2edge.transport import fleet, liveness
from hpc2edge.transport.fleet import Decision, Fleet, UnitStatus, Verdict, decide, status_of
from hpc2edge.transport.units import (
    MAX_REPORT_BYTES,
    Activity,
    QuarantineEntry,
    QuarantineState,
    ReferenceCheck,
    UnitReport,
    UnitState,
    check_unit,
)

pytestmark = pytest.mark.unit

NOW = 1_800_000_000.0


def report(
    unit: str = "edge@a",
    p50: float | None = 1.0,
    *,
    seen: float = NOW,
    throttled: bool | None = False,
    reference_throttled: bool = False,
    at: float = NOW - 10,
    activity: Activity = Activity.IDLE,
) -> UnitReport:
    reference = None if p50 is None else ReferenceCheck(at, p50, 100, reference_throttled)
    return UnitReport(
        unit=unit,
        activity=activity,
        started_unix_s=NOW - 100,
        seen_unix_s=seen,
        measurements=3,
        throttled=throttled,
        throttle_at_unix_s=None if throttled is None else at,
        stack={"backend": "onnxruntime", "onnxruntime": "1.32.0"},
        reference=reference,
    )


def fleet_of(*reports: UnitReport, entries: dict[str, QuarantineEntry] | None = None) -> Fleet:
    return Fleet("edge", {r.unit: r for r in reports}, entries=entries or {})


def verdicts(review: fleet.Review) -> dict[str, Verdict]:
    return {u: d.verdict for u, d in review.decisions.items()}


# --- records ------------------------------------------------------------------------------------


def test_a_report_round_trips_through_its_compact_json():
    r = report()
    text = r.encode()
    assert " " not in text and len(text) < MAX_REPORT_BYTES
    assert UnitReport.from_json("edge@a", text) == r
    assert json.loads(text)["format"] == "hpc2edge-unit-report/1"


def test_an_oversized_stack_is_cut_to_its_backend_not_the_whole_report():
    big = {f"k{i}": "v" * 290 for i in range(20)}
    r = UnitReport("edge@a", Activity.BUSY, NOW, NOW, task_id="edge-1", stack=big)
    text = r.encode()
    assert len(text.encode()) <= MAX_REPORT_BYTES
    back = UnitReport.from_json("edge@a", text)
    assert back.activity is Activity.BUSY and back.task_id == "edge-1"
    assert back.stack == {"backend": None, "truncated": True}


def _valid() -> dict:
    return json.loads(report().encode())


def _with(**changes) -> str:
    d = _valid()
    d.update(changes)
    return json.dumps(d)


def _with_reference(**changes) -> str:
    d = _valid()
    d["reference"].update(changes)
    return json.dumps(d)


HOSTILE = {
    "not-json": "x{",
    "json-array": "[]",
    "json-number": "42",
    "json-string": '"idle"',
    "null": "null",
    "empty": "",
    "not-utf8": b"\xff\xfe\x00garbage",
    "huge": _with(task_id="x" * 200, stack={"k": "v" * 280}) + " " * MAX_REPORT_BYTES,
    "deep": "[" * 2000 + "]" * 2000,  # under the cap: json.loads recurses too deep
    "no-format": json.dumps({k: v for k, v in _valid().items() if k != "format"}),
    "future-format": _with(format="hpc2edge-unit-report/9"),
    "activity-unknown": _with(activity="dancing"),
    "activity-number": _with(activity=1),
    "measurements-negative": _with(measurements=-1),
    "measurements-bool": _with(measurements=True),
    "measurements-float": _with(measurements=1.5),
    "measurements-huge": _with(measurements=10**30),
    "seen-string": _with(seen_unix_s="now"),
    "seen-nan": _with(seen_unix_s=math.nan),
    "seen-inf": _with(seen_unix_s=math.inf),
    "seen-negative": _with(seen_unix_s=-5),
    "time-scale-zero": _with(time_scale=0),
    "throttled-string": _with(throttled="yes"),
    "task-id-control": _with(task_id="edge-1\x1b[2J\r\nforged line"),
    "task-id-object": _with(task_id={"id": 1}),
    "stack-list": _with(stack=["onnxruntime"]),
    "stack-nested": _with(stack={"backend": {"name": "x"}}),
    "stack-control": _with(stack={"backend": "ort\x07"}),
    "stack-too-many": _with(stack={f"k{i}": i for i in range(100)}),
    "stack-nan": _with(stack={"x": math.nan}),
    "reference-negative": _with_reference(p50_ms=-1.0),
    "reference-zero": _with_reference(p50_ms=0.0),
    "reference-nan": _with_reference(p50_ms=math.nan),
    "reference-infinite": _with_reference(p50_ms=math.inf),
    "reference-string": _with_reference(p50_ms="1.0"),
    "reference-both": _with_reference(error="it failed"),
    "reference-neither": _with_reference(p50_ms=None),
    "reference-list": _with(reference=[1.0]),
    "reference-no-time": json.dumps(
        {**_valid(), "reference": {"p50_ms": 1.0, "n": 1, "throttled": False}}
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_report_is_one_value_error_never_another_exception(case):
    with pytest.raises(ValueError):
        UnitReport.from_json("edge@a", HOSTILE[case])


@pytest.mark.parametrize(
    "name",
    ["", " edge@a", "edge@a\n", "edge@\x1b[31mred", "edge@a b", "é@host", "x" * 201, None, 7],
)
def test_a_unit_name_with_control_characters_or_spaces_is_refused_escaped(name):
    with pytest.raises(ValueError) as caught:
        check_unit(name)
    assert "\x1b" not in str(caught.value) and "\n" not in str(caught.value)


def test_legal_unit_names_are_celery_hostnames():
    for name in ("edge@test", "edge@jetson-07.factory.example", "edge.orin@host", "a"):
        assert check_unit(name) == name


def test_a_reference_check_has_a_figure_or_an_error_never_both():
    with pytest.raises(ValueError):
        ReferenceCheck(NOW, p50_ms=1.0, error="x")
    with pytest.raises(ValueError):
        ReferenceCheck(NOW)


def test_a_quarantine_entry_round_trips_and_a_malformed_one_is_a_value_error():
    entry = QuarantineEntry(QuarantineState.QUARANTINED, "slow", NOW, "review")
    assert QuarantineEntry.from_json(entry.encode()) == entry
    for raw in ("{}", "[]", "x", json.dumps({**json.loads(entry.encode()), "state": "gone"})):
        with pytest.raises(ValueError):
            QuarantineEntry.from_json(raw)


# --- the rule -----------------------------------------------------------------------------------


def test_one_unit_is_its_own_reference_and_ok():
    review = decide(fleet_of(report("edge@a", 2.0)), NOW)
    assert review.reference_ms == 2.0 and review.reference_unit == "edge@a"
    assert verdicts(review) == {"edge@a": Verdict.OK}
    assert review.decisions["edge@a"].ratio == 1.0


def test_a_throttled_unit_is_quarantined_and_sets_no_reference():
    review = decide(fleet_of(report("edge@a", 2.0, throttled=True), report("edge@b", 2.0)), NOW)
    assert review.reference_ms == 2.0 and review.reference_unit == "edge@b"
    assert verdicts(review) == {"edge@a": Verdict.QUARANTINED, "edge@b": Verdict.OK}
    assert "throttled" in review.decisions["edge@a"].reason


def test_the_kinds_last_healthy_unit_is_never_quarantined():
    # Quarantining it would stall the kind's queue: it stays ok, the finding in its note.
    review = decide(fleet_of(report("edge@a", 2.0, throttled=True)), NOW)
    assert review.reference_ms is None
    assert verdicts(review) == {"edge@a": Verdict.OK}
    assert "last healthy unit: throttled" in review.decisions["edge@a"].reason


def test_two_units_the_slow_one_is_quarantined_beyond_the_tolerance():
    review = decide(fleet_of(report("edge@a", 1.0), report("edge@b", 2.0)), NOW)
    assert verdicts(review) == {"edge@a": Verdict.OK, "edge@b": Verdict.QUARANTINED}
    slow = review.decisions["edge@b"]
    assert slow.ratio == 2.0 and not slow.recorded
    assert "2.00x" in slow.reason and "edge@a" in slow.reason and "1.5x" in slow.reason


def test_two_units_within_the_tolerance_are_both_ok():
    review = decide(fleet_of(report("edge@a", 1.0), report("edge@b", 1.5)), NOW)
    assert verdicts(review) == {"edge@a": Verdict.OK, "edge@b": Verdict.OK}
    stricter = decide(fleet_of(report("edge@a", 1.0), report("edge@b", 1.5)), NOW, 1.2)
    assert verdicts(stricter)["edge@b"] is Verdict.QUARANTINED


def test_three_units_a_throttled_fastest_unit_does_not_set_the_reference():
    review = decide(
        fleet_of(
            report("edge@a", 0.5, reference_throttled=True),  # fast because it was measured hot?
            report("edge@b", 1.0),
            report("edge@c", 1.2),
        ),
        NOW,
    )
    assert review.reference_ms == 1.0 and review.reference_unit == "edge@b"
    assert verdicts(review) == {
        "edge@a": Verdict.QUARANTINED,
        "edge@b": Verdict.OK,
        "edge@c": Verdict.OK,
    }


def test_three_units_one_slow_one_gone_one_reference():
    review = decide(
        fleet_of(
            report("edge@a", 0.1, seen=NOW - liveness.STALE_S - 1),  # fastest, but gone
            report("edge@b", 1.0),
            report("edge@c", 3.0),
        ),
        NOW,
    )
    assert review.reference_unit == "edge@b"
    assert verdicts(review) == {
        "edge@a": Verdict.GONE,
        "edge@b": Verdict.OK,
        "edge@c": Verdict.QUARANTINED,
    }
    assert "no report for" in review.decisions["edge@a"].reason


def test_a_unit_that_shut_down_is_gone_at_once():
    review = decide(fleet_of(report("edge@a", activity=Activity.OFFLINE)), NOW)
    assert verdicts(review) == {"edge@a": Verdict.GONE}


def test_a_unit_without_a_reference_is_judged_on_throttling_alone():
    review = decide(fleet_of(report("edge@a", 1.0), report("edge@b", None)), NOW)
    assert verdicts(review) == {"edge@a": Verdict.OK, "edge@b": Verdict.OK}
    assert review.decisions["edge@b"].reason == "no reference check yet"
    failed = report("edge@c", None)
    failed = UnitReport(**{**failed.__dict__, "reference": ReferenceCheck(NOW, error="no rec")})
    assert decide(fleet_of(failed), NOW).decisions["edge@c"].reason.endswith("no rec")


def test_a_recorded_quarantine_holds_even_when_the_unit_looks_fine_now():
    held = QuarantineEntry(QuarantineState.QUARANTINED, "was slow", NOW - 5, "review")
    review = decide(fleet_of(report("edge@a", 1.0), entries={"edge@a": held}), NOW)
    d = review.decisions["edge@a"]
    assert d.verdict is Verdict.QUARANTINED and d.recorded and d.reason == "was slow"


def test_a_release_forgives_older_evidence_and_not_newer():
    released = QuarantineEntry(QuarantineState.RELEASED, "released", NOW - 5, "operator")
    old = decide(
        fleet_of(
            report("edge@a", 1.0), report("edge@b", 3.0, at=NOW - 10), entries={"edge@b": released}
        ),
        NOW,
    )
    assert old.decisions["edge@b"].verdict is Verdict.OK
    new = decide(
        fleet_of(
            report("edge@a", 1.0), report("edge@b", 3.0, at=NOW - 1), entries={"edge@b": released}
        ),
        NOW,
    )
    assert new.decisions["edge@b"].verdict is Verdict.QUARANTINED


@pytest.mark.parametrize("tolerance", [0.5, 0.99, math.nan, math.inf, -1, True, "1.5"])
def test_a_tolerance_below_one_or_not_a_number_is_refused(tolerance):
    with pytest.raises(ValueError, match="tolerance"):
        decide(fleet_of(report()), NOW, tolerance)


def test_status_is_gone_quarantined_or_what_the_unit_says():
    ok = Decision("edge@a", Verdict.OK)
    assert status_of(report(activity=Activity.BUSY), ok) is UnitStatus.BUSY
    assert status_of(report(activity=Activity.IDLE), ok) is UnitStatus.IDLE
    assert status_of(report(activity=Activity.PAUSED), ok) is UnitStatus.QUARANTINED
    held = Decision("edge@a", Verdict.QUARANTINED, recorded=True)
    assert status_of(report(), held) is UnitStatus.QUARANTINED
    pending = Decision("edge@a", Verdict.QUARANTINED)  # the review would, has not yet
    assert status_of(report(), pending) is UnitStatus.IDLE
    assert status_of(report(), Decision("edge@a", Verdict.GONE)) is UnitStatus.GONE


# --- the worker's side --------------------------------------------------------------------------


def test_unit_state_counts_measurements_keeps_the_throttle_flag_and_the_busy_task():
    clock = iter(range(1000, 2000)).__next__
    state = UnitState(clock=lambda: float(clock()))
    state.task_started("edge-abc")
    busy = state.report("edge@a", paused=False, time_scale=1.0)
    assert busy.activity is Activity.BUSY and busy.task_id == "edge-abc"
    state.task_finished({"status": "ok", "throttle": {"throttled": True, "reasons": ["hot"]}})
    state.task_finished({"status": "error"})
    idle = state.report("edge@a", paused=False, time_scale=2.0)
    assert idle.activity is Activity.IDLE and idle.task_id is None
    assert (idle.measurements, idle.failures, idle.throttled) == (1, 1, True)
    assert idle.time_scale == 2.0
    assert state.report("edge@a", paused=True, time_scale=1.0).activity is Activity.PAUSED
    last = state.report("edge@a", paused=True, time_scale=1.0, offline=True)
    assert last.activity is Activity.OFFLINE
    assert UnitReport.from_json("edge@a", last.encode()) == last


def test_a_reference_check_is_due_every_n_measurements_and_never_at_zero():
    state = UnitState()
    for _ in range(2):
        state.task_finished({"status": "ok"})
    assert state.reference_due(2) and not state.reference_due(3) and not state.reference_due(0)
    state.set_reference(ReferenceCheck(NOW, p50_ms=1.0, n=10, throttled=False))
    assert not state.reference_due(2)
    state.task_finished({"status": "error"})  # failures are not measurements
    assert not state.reference_due(1)
    state.task_finished({"status": "ok"})
    assert state.reference_due(1)
    r = state.report("edge@a", paused=False, time_scale=1.0)
    assert r.reference is not None and r.reference.p50_ms == 1.0 and r.throttled is False


class FakeConsumer:
    """The two calls of Celery's consumer the gate makes, recorded."""

    def __init__(self, fail: int = 0) -> None:
        self.calls: list[tuple[str, str]] = []
        self.fail = fail

    def cancel_task_queue(self, queue: str) -> None:
        self._call("cancel", queue)

    def add_task_queue(self, queue: str) -> None:
        self._call("add", queue)

    def _call(self, what: str, queue: str) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("between connections")
        self.calls.append((what, queue))


QUARANTINED = QuarantineEntry(QuarantineState.QUARANTINED, "reference 2x", NOW, "review")
RELEASED = QuarantineEntry(QuarantineState.RELEASED, "released", NOW, "operator")


def test_the_gate_stops_the_consumer_once_and_says_so_in_one_line(caplog):
    consumer = FakeConsumer()
    gate = liveness.QuarantineGate("edge", "edge@a", consumer)
    assert not gate.observe(None) and not gate.paused
    with caplog.at_level(logging.WARNING, logger="hpc2edge.liveness"):
        assert gate.observe(QUARANTINED)
        gate.apply()
        gate.apply()  # a second hand-over from a later beat changes nothing
        assert not gate.observe(QUARANTINED)
    assert consumer.calls == [("cancel", "edge")] and gate.paused
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert "edge@a is quarantined" in lines[0] and "reference 2x" in lines[0]
    assert "hpc2edge devices --release edge@a" in lines[0]


@pytest.mark.parametrize("entry", [RELEASED, None])
def test_the_gate_resumes_on_a_release_or_a_deleted_entry(entry, caplog):
    consumer = FakeConsumer()
    gate = liveness.QuarantineGate("edge.orin", "edge@a", consumer)
    gate.observe(QUARANTINED)
    gate.apply()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hpc2edge.liveness"):
        assert gate.observe(entry)
        gate.apply()
    assert consumer.calls == [("cancel", "edge.orin"), ("add", "edge.orin")]
    assert not gate.paused
    assert [r.getMessage() for r in caplog.records] == [
        "edge@a was released from quarantine: consuming edge.orin again"
    ]


def test_a_consumer_that_refuses_is_tried_again_not_taken_as_stopped():
    consumer = FakeConsumer(fail=1)
    gate = liveness.QuarantineGate("edge", "edge@a", consumer)
    gate.observe(QUARANTINED)
    gate.apply()
    assert not gate.paused and consumer.calls == []
    assert gate.observe(QUARANTINED)  # the next beat still wants the change
    gate.apply()
    assert gate.paused and consumer.calls == [("cancel", "edge")]
