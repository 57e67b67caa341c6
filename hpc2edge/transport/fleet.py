"""The trusted side of a device kind's units: read their reports, decide, record, release.

Every unit of a kind reports itself in ``hpc2edge:alive:<queue>:units`` on each heartbeat, and
reads its own entry of ``hpc2edge:fleet:quarantine:<queue>`` (both described in
:mod:`hpc2edge.transport.units`). Only the orchestrator and the admin write that second hash:
the decisions are made here, on the trusted side, never by a unit about itself.

**The rule** (:func:`decide` is the pure function; :func:`review` reads, decides and records):

- *gone*: the unit's report is older than :data:`~hpc2edge.transport.liveness.STALE_S` (three
  missed heartbeats), or its last report said it shut down;
- the kind's reference is the fastest reference p50 among its live units that are not
  throttled (their last throttle flag and their reference check both say no);
- *quarantined*: a live unit whose last throttle flag or reference check says throttled, or
  whose reference p50 is more than ``tolerance`` times the kind's reference
  (:data:`DEFAULT_TOLERANCE`, 1.5: half as slow again as the fastest unit);
- a quarantine holds until an operator releases the unit (:func:`release`, ``hpc2edge devices
  --release UNIT``): a quarantined unit measures nothing, so it brings no newer evidence. After
  a release, only evidence newer than the release quarantines the unit again;
- otherwise *ok*. A unit without a reference check is judged on throttling alone;
- the kind's last healthy live unit is never quarantined by the rule: the kind's queue would
  stall with nobody to measure again. It stays *ok* with the finding as its note (shown by
  ``hpc2edge devices``), and a second unit joining lets the rule act.

Units' reports are claims (any edge login can write any field of its kinds' hashes): the rule
catches a degraded honest unit and proves nothing about a hostile one. Malformed reports are
kept apart (:attr:`Fleet.malformed`) and never judged; at most :data:`MAX_UNITS` are read per
queue.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from hpc2edge.errors import BrokerError
from hpc2edge.transport import liveness
from hpc2edge.transport.units import (
    Activity,
    QuarantineEntry,
    QuarantineState,
    UnitReport,
    check_unit,
    quarantine_key,
)

DEFAULT_TOLERANCE = 1.5
#: The most fields read from one hash (reports or decisions); more are counted, not read.
MAX_UNITS = 1024


class Verdict(str, enum.Enum):
    """The rule's answer about one unit (docs/measurement.md, "Units of a kind")."""

    OK = "ok"
    QUARANTINED = "quarantined"
    GONE = "gone"


@dataclass(frozen=True)
class Decision:
    """The rule's verdict about one unit, with the figures it rests on."""

    unit: str
    verdict: Verdict
    reason: str = ""
    reference_p50_ms: float | None = None
    ratio: float | None = None  # the unit's reference p50 over the kind's
    recorded: bool = False  # a quarantine already in the decisions hash (not a new one)

    def to_json(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "verdict": self.verdict.value,
            "reason": self.reason,
            "reference_p50_ms": self.reference_p50_ms,
            "ratio": self.ratio,
            "recorded": self.recorded,
        }


@dataclass(frozen=True)
class Fleet:
    """One kind queue's units as read now: good reports, malformed ones, and the decisions."""

    queue: str
    reports: dict[str, UnitReport] = field(default_factory=dict)
    malformed: dict[str, str] = field(default_factory=dict)  # name (escaped) -> problem
    entries: dict[str, QuarantineEntry] = field(default_factory=dict)
    entries_error: str | None = None  # the decisions could not be read (a monitor's login)
    left_off: int = 0  # fields beyond MAX_UNITS, not read


@dataclass(frozen=True)
class Review:
    """:func:`decide`'s answer: the kind's reference and a decision per well-formed unit."""

    reference_ms: float | None
    reference_unit: str | None
    decisions: dict[str, Decision]


# --- reading ------------------------------------------------------------------------------------


def _scan(client: Any, key: str) -> tuple[list[tuple[Any, Any]], int]:
    """Up to :data:`MAX_UNITS` (field, value) pairs of hash ``key``, and how many were left."""
    total = int(client.hlen(key))
    items: list[tuple[Any, Any]] = []
    if total:
        for item in client.hscan_iter(key, count=100):
            items.append(item)
            if len(items) >= MAX_UNITS:
                break
    return items, max(0, total - len(items))


def _name(raw: Any) -> str:
    """A field name as text; ValueError unless it is a legal unit name."""
    name = raw.decode(errors="backslashreplace") if isinstance(raw, bytes) else str(raw)
    try:
        return check_unit(name)
    except ValueError:
        raise ValueError("not a unit name (a Celery hostname, name@host)") from None


def _shown(raw: Any) -> str:
    """A field name as an operator may see it: escaped and cut."""
    name = raw.decode(errors="backslashreplace") if isinstance(raw, bytes) else str(raw)
    return ascii(name)[:80]


def read_entries(client: Any, queue: str) -> dict[str, QuarantineEntry]:
    """The recorded decisions of ``queue`` (malformed entries left out: written by the
    orchestrator or the admin, so one that does not parse is a bug, never a unit's doing)."""
    items, _ = _scan(client, quarantine_key(queue))
    out = {}
    for raw_name, raw in items:
        try:
            out[_name(raw_name)] = QuarantineEntry.from_json(raw)
        except ValueError:
            continue
    return out


def read_fleet(client: Any, queue: str) -> Fleet:
    """Read ``queue``'s unit reports and decisions; never raises on their content.

    A login that may not read the decisions (the monitor's) gets the reports and
    :attr:`Fleet.entries_error`.
    """
    import redis

    items, left_off = _scan(client, liveness.units_key(queue))
    reports: dict[str, UnitReport] = {}
    malformed: dict[str, str] = {}
    for raw_name, raw in items:
        try:
            name = _name(raw_name)
        except ValueError as exc:
            malformed[_shown(raw_name)] = str(exc)
            continue
        try:
            reports[name] = UnitReport.from_json(name, raw)
        except ValueError as exc:
            malformed[name] = str(exc)
    entries: dict[str, QuarantineEntry] = {}
    entries_error = None
    try:
        entries = read_entries(client, queue)
    except redis.exceptions.NoPermissionError as exc:
        entries_error = f"decisions unreadable: {exc}"
    return Fleet(queue, reports, malformed, entries, entries_error, left_off)


# --- the rule -----------------------------------------------------------------------------------


def check_tolerance(tolerance: float) -> float:
    """``tolerance`` as a float; ValueError below 1 (the fastest unit would fail its own rule)."""
    if isinstance(tolerance, bool) or not (
        isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 1.0
    ):
        raise ValueError(
            f"tolerance {tolerance!r} must be a finite number >= 1 (1.5: a unit may be half "
            "as slow again as the kind's fastest)"
        )
    return float(tolerance)


def _gone(report: UnitReport, now: float) -> str | None:
    age = now - report.seen_unix_s
    if report.activity is Activity.OFFLINE:
        return f"shut down {max(age, 0):.0f} s ago"
    if age > liveness.STALE_S:
        return f"no report for {age:.0f} s"
    return None


def _throttled(report: UnitReport) -> bool:
    return bool(report.throttled) or (report.reference is not None and report.reference.throttled)


def decide(fleet: Fleet, now: float, tolerance: float = DEFAULT_TOLERANCE) -> Review:
    """Apply the rule of the module docstring to ``fleet`` as of ``now`` (a pure function)."""
    tolerance = check_tolerance(tolerance)
    live = {u: r for u, r in fleet.reports.items() if _gone(r, now) is None}
    candidates = [
        (r.reference.p50_ms, u)
        for u, r in live.items()
        if r.reference is not None and r.reference.p50_ms is not None and not _throttled(r)
    ]
    reference_ms, reference_unit = min(candidates) if candidates else (None, None)
    decisions = {}
    for unit, report in sorted(fleet.reports.items()):
        p50 = report.reference.p50_ms if report.reference is not None else None
        ratio = p50 / reference_ms if p50 is not None and reference_ms else None
        figures = Decision(unit, Verdict.OK, reference_p50_ms=p50, ratio=ratio)
        entry = fleet.entries.get(unit)
        gone = _gone(report, now)
        if gone is not None:
            decisions[unit] = replace(figures, verdict=Verdict.GONE, reason=gone)
        elif entry is not None and entry.state is QuarantineState.QUARANTINED:
            decisions[unit] = replace(
                figures, verdict=Verdict.QUARANTINED, reason=entry.reason, recorded=True
            )
        else:
            forgiven = entry.at_unix_s if entry is not None else -math.inf  # a release
            found = _finding(report, ratio, reference_ms, reference_unit, tolerance, forgiven)
            decisions[unit] = (
                replace(figures, reason=_note(report))
                if found is None
                else replace(figures, verdict=Verdict.QUARANTINED, reason=found)
            )
    if not any(d.verdict is Verdict.OK for d in decisions.values()):
        for unit, d in decisions.items():
            if d.verdict is Verdict.QUARANTINED and not d.recorded:
                why = f"not quarantined, the kind's last healthy unit: {d.reason}"
                decisions[unit] = replace(d, verdict=Verdict.OK, reason=why)
    return Review(reference_ms, reference_unit, decisions)


def _finding(
    report: UnitReport,
    ratio: float | None,
    reference_ms: float | None,
    reference_unit: str | None,
    tolerance: float,
    forgiven: float,
) -> str | None:
    """Why ``report`` is to be quarantined, from evidence newer than ``forgiven``; or None."""
    ref = report.reference
    if report.throttled and (report.throttle_at_unix_s or 0.0) > forgiven:
        return "throttled: its last throttle check flagged it (telemetry)"
    if ref is not None and ref.throttled and ref.at_unix_s > forgiven:
        return "throttled during its reference check (telemetry)"
    if ratio is not None and ratio > tolerance and ref is not None and ref.at_unix_s > forgiven:
        return (
            f"reference {ref.p50_ms:.3g} ms is {ratio:.2f}x the kind's {reference_ms:.3g} ms "
            f"({reference_unit}), over the {tolerance:g}x tolerance"
        )
    return None


def _note(report: UnitReport) -> str:
    if report.reference is None:
        return "no reference check yet"
    if report.reference.error is not None:
        return f"reference check failed: {report.reference.error}"
    return ""


# --- recording ----------------------------------------------------------------------------------


def review(
    client: Any, queue: str, tolerance: float = DEFAULT_TOLERANCE, now: float | None = None
) -> dict[str, Decision]:
    """Decide about ``queue``'s units and record each new quarantine (orchestrator or admin).

    Also drops reports older than :data:`~hpc2edge.transport.liveness.TTL_S`: units that left
    long ago. Returns every well-formed unit's decision.
    """
    now = time.time() if now is None else now
    fleet = read_fleet(client, queue)
    if fleet.entries_error is not None:
        raise BrokerError(
            f"reviewing {queue} needs the orchestrator's or admin's login: {fleet.entries_error}"
        )
    decisions = decide(fleet, now, tolerance).decisions
    pipe = client.pipeline()
    for unit, d in decisions.items():
        if d.verdict is Verdict.QUARANTINED and not d.recorded:
            entry = QuarantineEntry(QuarantineState.QUARANTINED, d.reason, now, by="review")
            pipe.hset(quarantine_key(queue), unit, entry.encode())
    for unit, report in fleet.reports.items():
        if now - report.seen_unix_s > liveness.TTL_S:
            pipe.hdel(liveness.units_key(queue), unit)
    pipe.execute()
    return decisions


def quarantined_units(client: Any, queue: str) -> dict[str, str]:
    """The units of ``queue`` under quarantine now, with the recorded reason: their results
    are to be set aside and measured again on another unit."""
    return {
        unit: entry.reason
        for unit, entry in read_entries(client, queue).items()
        if entry.state is QuarantineState.QUARANTINED
    }


def release(client: Any, unit: str, queues: Iterable[str], now: float | None = None) -> list[str]:
    """Release ``unit`` from quarantine on each of ``queues`` where it is quarantined; the
    queues released (empty: it was quarantined nowhere). The unit resumes on its next beat."""
    check_unit(unit)
    now = time.time() if now is None else now
    released = []
    for queue in queues:
        entry = read_entries(client, queue).get(unit)
        if entry is not None and entry.state is QuarantineState.QUARANTINED:
            note = f"released by an operator (was: {entry.reason})"
            after = QuarantineEntry(QuarantineState.RELEASED, note, now, by="operator")
            client.hset(quarantine_key(queue), unit, after.encode())
            released.append(queue)
    return released


# --- presentation state ---------------------------------------------------------------------


class UnitStatus(str, enum.Enum):
    """What ``hpc2edge devices`` and ``status`` say a unit is."""

    IDLE = "idle"
    BUSY = "busy"
    QUARANTINED = "quarantined"
    GONE = "gone"


def status_of(report: UnitReport, decision: Decision) -> UnitStatus:
    """A unit's status: gone, quarantined (recorded, or paused by its own entry), else what it
    says it does. A quarantine the review would make but has not recorded is not one yet."""
    if decision.verdict is Verdict.GONE:
        return UnitStatus.GONE
    if decision.recorded or report.activity is Activity.PAUSED:
        return UnitStatus.QUARANTINED
    return UnitStatus.BUSY if report.activity is Activity.BUSY else UnitStatus.IDLE
