"""What each unit of a device kind reports about itself, and what the trusted side decides.

A unit is one edge worker process, named by its Celery hostname (``edge@jetson-07``). Two hashes
per kind queue hold the records of this module, each a versioned JSON value per unit::

    hpc2edge:alive:<queue>:units        unit -> UnitReport        (hpc2edge-unit-report/1)
        written by the unit itself, every heartbeat (hpc2edge.transport.liveness)
    hpc2edge:fleet:quarantine:<queue>   unit -> QuarantineEntry   (hpc2edge-quarantine/1)
        written by the orchestrator or an operator only (hpc2edge.transport.fleet);
        each unit reads its own entry and stops consuming while it says "quarantined"

Both are read across a trust boundary. Any login of the edge role may write any field of its
kinds' units hashes (the ACL cannot confine a writer to one hash field), so
:meth:`UnitReport.from_json` checks every field, bounds every string and number, and raises
:class:`ValueError` naming the first problem: a reader turns that into one malformed report,
never an exception of its own. A report says what a unit claims: it helps to find a degraded
honest unit, and it proves nothing about a hostile one (docs/measurement.md).

:class:`UnitState` is the worker's side: the task thread records what the unit does, the
heartbeat thread takes a :class:`UnitReport` from it. Nothing here talks to Redis.
"""

from __future__ import annotations

import enum
import json
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

REPORT_FORMAT = "hpc2edge-unit-report/1"
QUARANTINE_FORMAT = "hpc2edge-quarantine/1"
#: The largest report a unit writes and a reader accepts, in bytes of JSON.
MAX_REPORT_BYTES = 4096
#: A unit's name: a Celery hostname (``name@host``), printable ASCII without spaces.
UNIT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}")
#: Bounds on what a report may carry (a unit writes far less).
MAX_TEXT = 300
MAX_STACK_ENTRIES = 24
#: Counts and times beyond these are not from a real unit (2**53: exact in a JSON float).
MAX_COUNT = 2**53
MAX_UNIX_S = 1e11  # the year 5138

#: One entry of a software stack summary.
StackValue = str | int | float | bool | None


def quarantine_key(queue: str) -> str:
    """The orchestrator's decisions about the units of ``queue``."""
    return f"hpc2edge:fleet:quarantine:{queue}"


def check_unit(name: object) -> str:
    """``name`` if it is a legal unit name; ValueError showing it escaped and cut otherwise."""
    if not isinstance(name, str) or not UNIT_RE.fullmatch(name):
        raise ValueError(f"unit name {ascii(name)[:80]} is not a Celery hostname (name@host)")
    return name


class Activity(str, enum.Enum):
    """What a unit says it is doing."""

    IDLE = "idle"  # consuming its queue, no task running
    BUSY = "busy"  # running a task (``task_id``)
    PAUSED = "paused"  # not consuming: its quarantine entry says so
    OFFLINE = "offline"  # shut down cleanly; the last report it wrote


# --- field checks: every one raises ValueError naming the field ---------------------------------


def _number(
    data: Mapping[str, Any], key: str, *, low: float = 0.0, high: float = MAX_UNIX_S
) -> float:
    value = data.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
        # A JSON integer of thousands of digits: math.isfinite would raise OverflowError.
        raise ValueError(f"{key}: {ascii(value)[:40]}... is no plausible number")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{key}: expected a finite number, got {ascii(value)[:40]}")
    if not low <= value <= high:
        raise ValueError(f"{key}: {value!r} is outside [{low:g}, {high:g}]")
    return float(value)


def _optional_number(data: Mapping[str, Any], key: str, *, low: float = 0.0) -> float | None:
    return None if data.get(key) is None else _number(data, key, low=low)


def _count(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise ValueError(f"{key}: expected a count, got {ascii(value)[:40]}")
    return value


def _text(data: Mapping[str, Any], key: str, *, optional: bool = False) -> str | None:
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT or not value.isprintable():
        raise ValueError(f"{key}: expected printable text of at most {MAX_TEXT} characters")
    return value


def _flag(data: Mapping[str, Any], key: str, *, optional: bool = False) -> bool | None:
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, bool):
        raise ValueError(f"{key}: expected true or false")
    return value


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def _stack(value: Any) -> dict[str, StackValue]:
    """The software stack summary: a flat object of short names to scalars."""
    items = _object(value, "stack")
    if len(items) > MAX_STACK_ENTRIES:
        raise ValueError(f"stack: more than {MAX_STACK_ENTRIES} entries")
    out: dict[str, StackValue] = {}
    for name, item in items.items():
        if not (isinstance(name, str) and 0 < len(name) <= 40 and name.isprintable()):
            raise ValueError("stack: an entry's name is not short printable text")
        if isinstance(item, str):
            if len(item) > MAX_TEXT or not item.isprintable():
                raise ValueError(
                    f"stack.{name}: not printable text of {MAX_TEXT} characters or less"
                )
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"stack.{name}: not a finite number")
        elif item is not None and not isinstance(item, (bool, int, float)):
            raise ValueError(f"stack.{name}: expected text, a number, true/false or null")
        out[name] = item
    return out


def parse_json(raw: bytes | str, limit: int = MAX_REPORT_BYTES) -> Any:
    """The JSON value of ``raw`` (at most ``limit`` bytes); ValueError for anything else."""
    if len(raw) > limit:
        raise ValueError(f"{len(raw)} bytes, over the {limit}-byte cap")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ValueError(f"not JSON: {str(exc)[:80]}") from None


# --- records ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceCheck:
    """One measurement of the reference model (:mod:`hpc2edge.latency.reference`) by a unit.

    ``p50_ms`` is the median of the ``compute`` series; it is None exactly when the check failed,
    and then ``error`` says why (a table backend without a recording of the model, say).
    """

    at_unix_s: float
    p50_ms: float | None = None
    n: int = 0
    throttled: bool = False
    error: str | None = None

    def __post_init__(self) -> None:
        if (self.p50_ms is None) == (self.error is None):
            raise ValueError("reference: exactly one of p50_ms and error")

    def to_json(self) -> dict[str, Any]:
        return {
            "at_unix_s": self.at_unix_s,
            "p50_ms": self.p50_ms,
            "n": self.n,
            "throttled": self.throttled,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: Any) -> ReferenceCheck:
        d = _object(data, "reference")
        error = _text(d, "error", optional=True)
        p50 = None if d.get("p50_ms") is None else _number(d, "p50_ms", low=1e-6, high=1e7)
        return cls(
            at_unix_s=_number(d, "at_unix_s"),
            p50_ms=p50,
            n=_count(d, "n"),
            throttled=bool(_flag(d, "throttled")),
            error=error,
        )


@dataclass(frozen=True)
class UnitReport:
    """What a unit says about itself, every heartbeat (``hpc2edge:alive:<queue>:units``).

    ``throttled`` is the flag of the last throttle check the unit saw (its last measurement or
    reference check; None before the first), seen at ``throttle_at_unix_s``. ``stack`` is a
    flat summary of its software (backend and runtime versions, JetPack, power mode).
    """

    unit: str
    activity: Activity
    started_unix_s: float
    seen_unix_s: float
    task_id: str | None = None
    measurements: int = 0
    failures: int = 0
    time_scale: float = 1.0
    throttled: bool | None = None
    throttle_at_unix_s: float | None = None
    stack: dict[str, StackValue] = field(default_factory=dict)
    reference: ReferenceCheck | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": REPORT_FORMAT,
            "activity": self.activity.value,
            "started_unix_s": self.started_unix_s,
            "seen_unix_s": self.seen_unix_s,
            "task_id": self.task_id,
            "measurements": self.measurements,
            "failures": self.failures,
            "time_scale": self.time_scale,
            "throttled": self.throttled,
            "throttle_at_unix_s": self.throttle_at_unix_s,
            "stack": self.stack,
            "reference": None if self.reference is None else self.reference.to_json(),
        }

    def encode(self) -> str:
        """Compact JSON within :data:`MAX_REPORT_BYTES` (an oversized stack is cut to its
        backend's name: the state and the reference matter more)."""
        text = json.dumps(self.to_json(), separators=(",", ":"), sort_keys=True)
        if len(text.encode()) > MAX_REPORT_BYTES:
            backend = self.stack.get("backend")
            cut = replace(self, stack={"backend": backend, "truncated": True})
            text = json.dumps(cut.to_json(), separators=(",", ":"), sort_keys=True)
        return text

    @classmethod
    def from_json(cls, unit: str, raw: bytes | str) -> UnitReport:
        """Read the report of ``unit`` as stored; ValueError naming the first problem."""
        check_unit(unit)
        d = _object(parse_json(raw), "report")
        if d.get("format") != REPORT_FORMAT:
            raise ValueError(f"format: {ascii(d.get('format'))[:60]} is not {REPORT_FORMAT}")
        try:
            activity = Activity(d.get("activity"))
        except ValueError:
            raise ValueError(f"activity: {ascii(d.get('activity'))[:40]} is not a state") from None
        task_id = _text(d, "task_id", optional=True)
        reference = d.get("reference")
        return cls(
            unit=unit,
            activity=activity,
            started_unix_s=_number(d, "started_unix_s"),
            seen_unix_s=_number(d, "seen_unix_s"),
            task_id=task_id,
            measurements=_count(d, "measurements"),
            failures=_count(d, "failures"),
            time_scale=_number(d, "time_scale", low=1e-6, high=1e6),
            throttled=_flag(d, "throttled", optional=True),
            throttle_at_unix_s=_optional_number(d, "throttle_at_unix_s"),
            stack=_stack(d.get("stack", {})),
            reference=None if reference is None else ReferenceCheck.from_json(reference),
        )


class QuarantineState(str, enum.Enum):
    """What the trusted side last decided about a unit."""

    QUARANTINED = "quarantined"  # the unit stops consuming its queue
    RELEASED = "released"  # an operator let it back; evidence older than this is forgiven


@dataclass(frozen=True)
class QuarantineEntry:
    """The trusted side's decision about one unit (``hpc2edge:fleet:quarantine:<queue>``)."""

    state: QuarantineState
    reason: str
    at_unix_s: float
    by: str  # "review" (the orchestrator's rule) or "operator"

    def encode(self) -> str:
        return json.dumps(
            {
                "format": QUARANTINE_FORMAT,
                "state": self.state.value,
                "reason": self.reason[:MAX_TEXT],
                "at_unix_s": self.at_unix_s,
                "by": self.by,
            },
            separators=(",", ":"),
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> QuarantineEntry:
        d = _object(parse_json(raw), "entry")
        if d.get("format") != QUARANTINE_FORMAT:
            raise ValueError(f"format: {ascii(d.get('format'))[:60]} is not {QUARANTINE_FORMAT}")
        try:
            state = QuarantineState(d.get("state"))
        except ValueError:
            raise ValueError(f"state: {ascii(d.get('state'))[:40]} is not a state") from None
        return cls(
            state=state,
            reason=str(_text(d, "reason")),
            at_unix_s=_number(d, "at_unix_s"),
            by=str(_text(d, "by")),
        )


# --- the worker's side --------------------------------------------------------------------------


class UnitState:
    """This worker process's unit: what its tasks did, for its heartbeat to report.

    Thread-safe: the task thread writes (tasks, reference checks), the heartbeat thread reads.
    One per worker process (:data:`UNIT`); tests make their own.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._task_id: str | None = None
        self._measurements = 0
        self._failures = 0
        self._referenced_at = 0  # the measurement count at the last reference check
        self._throttled: bool | None = None
        self._throttle_at: float | None = None
        self._stack: dict[str, StackValue] = {}
        self._reference: ReferenceCheck | None = None

    def task_started(self, task_id: str | None) -> None:
        with self._lock:
            self._task_id = (task_id or "?")[:MAX_TEXT]

    def task_finished(self, result: Mapping[str, Any]) -> None:
        """Count a finished measurement (``status: ok``) or failure, and keep its throttle flag."""
        with self._lock:
            self._task_id = None
            if result.get("status") != "ok":
                self._failures += 1
                return
            self._measurements += 1
            throttle = result.get("throttle")
            if isinstance(throttle, Mapping) and isinstance(throttle.get("throttled"), bool):
                self._throttled, self._throttle_at = throttle["throttled"], self._clock()

    def set_stack(self, stack: Mapping[str, StackValue]) -> None:
        with self._lock:
            self._stack = dict(stack)

    def set_reference(self, check: ReferenceCheck) -> None:
        with self._lock:
            self._reference = check
            self._referenced_at = self._measurements
            if check.error is None:
                self._throttled, self._throttle_at = check.throttled, check.at_unix_s

    def reference_due(self, every: int) -> bool:
        """A reference check is due: ``every`` measurements (0: never) since the last one."""
        with self._lock:
            return every > 0 and self._measurements - self._referenced_at >= every

    def report(
        self, unit: str, *, paused: bool, time_scale: float, offline: bool = False
    ) -> UnitReport:
        """The report of ``unit`` now (``paused``: its consumer is stopped by a quarantine)."""
        with self._lock:
            if offline:
                activity = Activity.OFFLINE
            elif paused:
                activity = Activity.PAUSED
            else:
                activity = Activity.IDLE if self._task_id is None else Activity.BUSY
            return UnitReport(
                unit=unit,
                activity=activity,
                started_unix_s=self._started,
                seen_unix_s=self._clock(),
                task_id=self._task_id,
                measurements=self._measurements,
                failures=self._failures,
                time_scale=time_scale,
                throttled=self._throttled,
                throttle_at_unix_s=self._throttle_at,
                stack=dict(self._stack),
                reference=self._reference,
            )


#: The unit of this worker process: :mod:`hpc2edge.tasks` writes it, the heartbeat reads it.
UNIT = UnitState()
