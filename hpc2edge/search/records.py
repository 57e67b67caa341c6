"""What the search stores about each trial, in one versioned schema, and the code that reads it.

The orchestrator keeps everything a restarted run needs in the study storage, as Optuna user
attributes (readable in any Optuna tool, written *before* the action they describe). The report,
the CLI and the orchestrator read them through this module, so the layout is written down once.

Schema 2 (``study.user_attrs["schema"] == 2``; a study without the key is schema 1, which has the
same trial keys without ``kind``/``queue``/``send_failures`` in its task records and is read the
same way). Per trial (the baseline keeps the same keys in ``study.user_attrs["baseline"]``, plus
``state``, since it is no Optuna trial):

===================  =========================================================================
``arch_id``          the network's id (:attr:`~hpc2edge.space.base.ArchSpec.arch_id`)
``spec``             the network (``ArchSpec.to_dict``)
``duplicate_of``     job key of the earlier trial with the same network (``None``: released,
                     because that trial failed; this one runs on its own)
``onnx_sha256``,     the exported model's hash and size figures
``params``,
``flops``
``<stage>_task``     the stage's current task: a :class:`TaskRecord` (``measure_task``, ...)
``<stage>_errors``   reasons of the stage's earlier failed attempts
``latency``          the measurement's summary (p50/p90/p99, CI, backend, worker, ``cached``)
``latency_ms``       the p50 the objective uses
``constraint_...``   ``constraint_latency_ms``: latency minus the budget (feasible when <= 0)
``train``            the training's summary (RMSEs, epochs, worker, test metrics)
``val_mse``          the loss the objective uses
``reason``           why the trial failed or was pruned
===================  =========================================================================

Study attributes: ``search`` and ``plan`` (the settings a trial's meaning depends on, see
:mod:`hpc2edge.search.settings`), ``search_id``, ``schema``, ``baseline``, ``confirm``,
``orchestrator_lease``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpc2edge.search.candidate import Candidate
    from hpc2edge.space.base import ArchSpec

SCHEMA = 2
SCHEMA_ATTR = "schema"


class JobState(str, enum.Enum):
    """A job's state; finished ones match an Optuna state (``running`` covers every stage)."""

    RUNNING = "running"
    COMPLETE = "complete"
    PRUNED = "pruned"
    FAILED = "failed"

    @property
    def done(self) -> bool:
        return self is not JobState.RUNNING

    def __str__(self) -> str:
        return self.value


#: Optuna's trial states as job states (WAITING: asked through ``enqueue_trial``, not begun).
OPTUNA_STATES = {
    "RUNNING": JobState.RUNNING,
    "WAITING": JobState.RUNNING,
    "COMPLETE": JobState.COMPLETE,
    "PRUNED": JobState.PRUNED,
    "FAIL": JobState.FAILED,
}


@dataclass(frozen=True)
class TaskRecord:
    """One stage's current task, as recorded before the action it describes.

    ``id`` is ``None`` while the task waits for ``retry_at`` (a back-off after an error or a
    failed send); ``sent`` is False between recording the id and the send completing (a
    restarted orchestrator sends it again under the same id). ``attempt`` numbers the stage's
    attempts (a new one begins after a timeout or an error, before it is sent); ``send_failures``
    counts failed sends of this attempt (the broker away, an artifact that could not be stored).
    """

    kind: str
    queue: str
    attempt: int
    id: str | None = None
    label: str = ""
    sent: bool = False
    sent_at: float | None = None
    retry_at: float = 0.0
    send_failures: int = 0

    @property
    def waiting(self) -> bool:
        """Waiting for its back-off: nothing is on the queue."""
        return self.id is None

    @property
    def in_flight(self) -> bool:
        """An id was recorded: on the queue, or about to be (re)sent under that id."""
        return self.id is not None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any, *, kind: str, queue: str) -> TaskRecord:
        """Read a stored record (schema 1 records have no ``kind``/``queue``: the stage's).

        Raises:
            RecordError: the record is not one this code wrote (any writer of the study
                storage can store anything; the trial fails with the reason, not the search).
        """
        if not isinstance(data, Mapping):
            raise RecordError(f"{kind} task record is a {type(data).__name__}, not a record")
        attempt = _count(data, "attempt", low=1)
        task_id = data.get("id")
        if task_id is not None and not (isinstance(task_id, str) and 0 < len(task_id) <= 200):
            raise RecordError(f"{kind} task record has a malformed id")
        sent = data.get("sent", False)
        if not isinstance(sent, bool) or (sent and task_id is None):
            raise RecordError(f"{kind} task record says sent without an id")
        label = data.get("label") or ""
        return cls(
            kind=_text(data.get("kind"), kind),
            queue=_text(data.get("queue"), queue),
            attempt=attempt,
            id=task_id,
            label=label[:200] if isinstance(label, str) else "",
            sent=sent,
            sent_at=_time(data, "sent_at", required=sent),
            retry_at=_time(data, "retry_at") or 0.0,
            send_failures=_count(data, "send_failures", low=0, default=0),
        )

    def evolve(self, **changes: Any) -> TaskRecord:
        return replace(self, **changes)


@dataclass
class Job:
    """One candidate (an Optuna trial, or the baseline): its attributes, as stored, and what the
    orchestrator keeps in memory only (the spec, the exported candidate)."""

    key: str
    number: int | None
    attrs: dict[str, Any]
    spec: ArchSpec | None = None
    state: JobState = JobState.RUNNING
    candidate: Candidate | None = None

    @property
    def done(self) -> bool:
        return self.state.done

    @property
    def label(self) -> str:
        return self.key if self.number is None else f"trial {self.number}"


class RecordError(ValueError):
    """A stored record that this code did not write (malformed, or another version's)."""


#: Bounds of what a record may hold: far beyond any real value, short of what breaks arithmetic.
MAX_COUNT = 10_000
MAX_TIME = 1e11  # Unix seconds: the year 5138


def _count(data: Mapping[str, Any], key: str, *, low: int, default: int | None = None) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_COUNT:
        raise RecordError(f"task record field {key!r} is not a count ({str(value)[:40]!r})")
    return value


def _time(data: Mapping[str, Any], key: str, *, required: bool = False) -> float | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecordError(f"task record field {key!r} is not a time ({str(value)[:40]!r})")
    if not 0 <= value <= MAX_TIME:  # NaN fails this too
        raise RecordError(f"task record field {key!r} is out of range ({value!r})")
    return float(value)


def _text(value: Any, default: str) -> str:
    return value[:100] if isinstance(value, str) and value else default


def task_key(stage: str) -> str:
    return f"{stage}_task"


def errors_key(stage: str) -> str:
    return f"{stage}_errors"


def task(attrs: Mapping[str, Any], stage: str, queue: str = "") -> TaskRecord | None:
    """The stage's recorded task, or None when it never had one.

    Raises:
        RecordError: what is stored under the key is not a task record.
    """
    data = attrs.get(task_key(stage))
    if data is None:
        return None
    return TaskRecord.from_json(data, kind=stage, queue=queue)


def readable_task(attrs: Mapping[str, Any], stage: str) -> TaskRecord | None:
    """:func:`task` for readers that count (the report, progress): a malformed one is None."""
    try:
        return task(attrs, stage)
    except RecordError:
        return None


def tasks_sent(records: Iterable[Mapping[str, Any]], stages: Iterable[str]) -> dict[str, int]:
    """Tasks per stage over ``records``: a stage's attempts so far (as the orchestrator counts,
    an attempt waiting for its back-off included)."""
    names = list(stages)
    sent = dict.fromkeys(names, 0)
    for attrs in records:
        for name in names:
            t = readable_task(attrs, name)
            if t is not None:
                sent[name] += t.attempt
    return sent


def stage_errors(attrs: Mapping[str, Any], stage: str) -> list[str]:
    """Reasons of the stage's earlier failed attempts (a malformed list reads as none)."""
    value = attrs.get(errors_key(stage))
    return [e for e in value if isinstance(e, str)] if isinstance(value, list) else []


def errors(attrs: Mapping[str, Any], stages: Iterable[str]) -> list[str]:
    """Reasons of every failed attempt, prefixed by the stage."""
    return [f"{s}: {e}" for s in stages for e in stage_errors(attrs, s)]


def waits_for_source(attrs: Mapping[str, Any]) -> bool:
    """A duplicate still waiting for the trial it copies (``None``: released, on its own)."""
    return attrs.get("duplicate_of") is not None


def cached(attrs: Mapping[str, Any]) -> bool:
    """Its latency came from the measurement store, not from a task."""
    latency = attrs.get("latency")
    return isinstance(latency, Mapping) and latency.get("cached") is True


__all__ = [
    "OPTUNA_STATES",
    "SCHEMA",
    "SCHEMA_ATTR",
    "Job",
    "JobState",
    "RecordError",
    "TaskRecord",
    "cached",
    "errors",
    "errors_key",
    "readable_task",
    "stage_errors",
    "task",
    "task_key",
    "tasks_sent",
    "waits_for_source",
]
