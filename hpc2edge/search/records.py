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
    restarted orchestrator sends it again under the same id). ``attempt`` counts tasks that
    reached the broker's side of a send; ``send_failures`` counts sends of this attempt that did
    not (the broker away, an artifact that could not be stored).
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
    def from_json(cls, data: Mapping[str, Any], *, kind: str, queue: str) -> TaskRecord:
        """Read a stored record (schema 1 records have no ``kind``/``queue``: the stage's)."""
        sent_at = data.get("sent_at")
        return cls(
            kind=str(data.get("kind") or kind),
            queue=str(data.get("queue") or queue),
            attempt=int(data["attempt"]),
            id=None if data.get("id") is None else str(data["id"]),
            label=str(data.get("label") or ""),
            sent=bool(data.get("sent", False)),
            sent_at=None if sent_at is None else float(sent_at),
            retry_at=float(data.get("retry_at") or 0.0),
            send_failures=int(data.get("send_failures") or 0),
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


def task_key(stage: str) -> str:
    return f"{stage}_task"


def errors_key(stage: str) -> str:
    return f"{stage}_errors"


def task(attrs: Mapping[str, Any], stage: str, queue: str = "") -> TaskRecord | None:
    """The stage's recorded task, or None when it never had one."""
    data = attrs.get(task_key(stage))
    if not isinstance(data, Mapping):
        return None
    return TaskRecord.from_json(data, kind=stage, queue=queue)


def tasks_sent(records: Iterable[Mapping[str, Any]], stages: Iterable[str]) -> dict[str, int]:
    """Tasks sent per stage over ``records`` (every attempt counts, as the orchestrator counts)."""
    names = list(stages)
    sent = dict.fromkeys(names, 0)
    for attrs in records:
        for name in names:
            t = task(attrs, name)
            if t is not None:
                sent[name] += t.attempt
    return sent


def errors(attrs: Mapping[str, Any], stages: Iterable[str]) -> list[str]:
    """Reasons of every failed attempt, prefixed by the stage."""
    return [f"{s}: {e}" for s in stages for e in attrs.get(errors_key(s)) or []]


def waits_for_source(attrs: Mapping[str, Any]) -> bool:
    """A duplicate still waiting for the trial it copies (``None``: released, on its own)."""
    return attrs.get("duplicate_of") is not None


def is_duplicate(attrs: Mapping[str, Any]) -> bool:
    """A trial that copied (or was meant to copy) an earlier trial's network."""
    return "duplicate_of" in attrs


def cached(attrs: Mapping[str, Any]) -> bool:
    """Its latency came from the measurement store, not from a task."""
    return bool((attrs.get("latency") or {}).get("cached"))


__all__ = [
    "OPTUNA_STATES",
    "SCHEMA",
    "SCHEMA_ATTR",
    "Job",
    "JobState",
    "TaskRecord",
    "cached",
    "errors",
    "errors_key",
    "is_duplicate",
    "task",
    "task_key",
    "tasks_sent",
    "waits_for_source",
]
