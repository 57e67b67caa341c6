"""The work a candidate needs, as classes: measure stages, train stages, and gates between them.

A :class:`Stage` is one task kind on one queue with the attributes its result goes to: a
:class:`MeasureStage` for one device kind (its queue, protocol, precision and batch size), a
:class:`TrainStage` for one fidelity rung (its epochs; the rung is part of the train worker's
idempotency key). A :class:`Gate` looks at what is known and may end a trial before the stages
it guards are spent on it: :class:`LatencyGate` prunes a candidate over the latency budget
before it is trained.

A :class:`Pipeline` is the stages and gates of a search in one ordering. Latency first (the
default) and concurrent are two orderings of the same stages: in the first, train stages wait
for the measure stages (``after``); in the second, nothing waits, and a gate can no longer save
a training that is already running (the trial completes with its constraint violated).

Adding a device kind, a rung or a gate is one more object in the pipeline; the orchestrator and
the task runner (:mod:`hpc2edge.search.runner`) do not change.
"""

from __future__ import annotations

import abc
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from hpc2edge.latency.protocol import Protocol as TimingProtocol
from hpc2edge.roles import DEFAULT_KIND, QUEUE_TRAIN, check_kind, edge_queue
from hpc2edge.search import candidate as cand
from hpc2edge.search.records import task
from hpc2edge.store.measurements import DeviceContext

if TYPE_CHECKING:
    from hpc2edge.search.dispatch import Dispatcher
    from hpc2edge.search.lease import Clock
    from hpc2edge.search.objectives import Objective
    from hpc2edge.search.recorder import Recorder
    from hpc2edge.search.records import Job, TaskRecord
    from hpc2edge.space.base import SearchSpace
    from hpc2edge.store.measurements import MeasurementStore


class RunConfig(Protocol):
    """The parts of :class:`~hpc2edge.search.orchestrator.SearchConfig` stages and tasks read."""

    @property
    def measure_timeout_s(self) -> float: ...

    @property
    def train_timeout_s(self) -> float: ...

    @property
    def retries(self) -> int: ...

    @property
    def send_retries(self) -> int: ...

    @property
    def backoff_s(self) -> float: ...

    @property
    def export_seed(self) -> int: ...

    @property
    def poll_interval_s(self) -> float: ...


class Host(Protocol):
    """What stages and the task runner use of the orchestrator that runs them."""

    clock: Clock
    dispatcher: Dispatcher
    store: MeasurementStore
    objective: Objective
    plan: cand.TrainPlan
    space: SearchSpace
    recorder: Recorder
    tag: str
    contexts: dict[str, DeviceContext]
    pipeline: Pipeline
    #: Units under quarantine per edge queue, with why (refreshed by ``refresh_quarantine``).
    quarantine: dict[str, dict[str, str]]

    @property
    def config(self) -> RunConfig: ...

    def set(self, job: Job, key: str, value: Any) -> None: ...

    def emit(self, event: str, job: Job | None) -> None: ...

    def fail(self, job: Job, reason: str) -> None: ...

    def set_latency(self, job: Job, stage: MeasureStage, latency_ms: float) -> None: ...

    def refresh_quarantine(self, queue: str) -> dict[str, str]: ...


log = logging.getLogger(__name__)


class ResultRejected(ValueError):
    """An ``ok`` result that does not fit the task it answers (any worker can write one)."""

    #: Send the next attempt after the search's back-off instead of at once.
    backoff = False


class Unstable(ResultRejected):
    """A measurement that ended by its cap before its CI target: measured again."""


class Quarantined(ResultRejected):
    """A measurement by a unit under quarantine: set aside, measured again on another unit.

    After the back-off: the unit stops consuming at its next heartbeat, and a resend at once
    could reach it again."""

    backoff = True


#: How many times an unstable measurement is sent again before it is kept, flagged (within the
#: search's retries).
UNSTABLE_REMEASURES = 2


@dataclass(frozen=True)
class Stage(abc.ABC):
    """One task kind on one queue, and where its result goes.

    Attributes:
        name: the stage's record prefix (``measure`` -> ``measure_task``, ``measure_errors``).
        after: names of the stages whose results it waits for.
    """

    name: str
    after: tuple[str, ...] = ()

    #: The dispatcher's task kind.
    kind: str = field(default="", init=False)

    @property
    @abc.abstractmethod
    def queue(self) -> str: ...

    @property
    @abc.abstractmethod
    def result_key(self) -> str:
        """The attribute that holds the stage's number once it is settled."""

    @property
    def summary_key(self) -> str | None:
        """The attribute that holds the summary of its result, if it keeps one."""
        return None

    @property
    def needs_candidate(self) -> bool:
        """The payload needs the exported model (its artifact, its reference outputs)."""
        return False

    def settled(self, job: Job) -> bool:
        return self.result_key in job.attrs

    def started(self, job: Job) -> bool:
        """Anything was spent on it: a task recorded, or a result."""
        return self.settled(job) or task(job.attrs, self.name) is not None

    @abc.abstractmethod
    def timeout_s(self, o: Host) -> float: ...

    def lookup(self, o: Host, job: Job) -> bool:
        """Settle the stage without a task (a stored result); True when it did."""
        return False

    @abc.abstractmethod
    def payload(self, o: Host, job: Job) -> dict[str, Any]:
        """The task's payload (may store an artifact, so may raise ``BrokerError``)."""

    @abc.abstractmethod
    def accept(self, o: Host, job: Job, rec: TaskRecord, result: dict[str, Any]) -> None:
        """Record an ``ok`` result; raise :class:`ResultRejected` when it does not fit."""


@dataclass(frozen=True)
class MeasureStage(Stage):
    """Latency on one device kind: ``hpc2edge.measure`` on its queue, looked up in the store first.

    ``device`` is the kind (its queue: :func:`hpc2edge.roles.edge_queue`). The ``primary`` kind
    is the objective's (attributes ``latency``, ``latency_ms``; its budget is the objective's);
    another kind keeps its figures under ``latency@<kind>`` and ``latency_ms@<kind>`` and has
    its own optional ``budget_ms``.
    """

    name: str = "measure"
    device: str = DEFAULT_KIND
    primary: bool = True
    budget_ms: float | None = None
    batch_size: int = 1
    precision: str = "fp32"
    protocol: str | dict[str, Any] = "default"
    kind: str = field(default="measure", init=False)

    def __post_init__(self) -> None:
        check_kind(self.device)
        if self.primary and self.budget_ms is not None:
            raise ValueError("the primary device kind's budget is the objective's")
        if self.budget_ms is not None and not (
            math.isfinite(self.budget_ms) and self.budget_ms > 0
        ):
            raise ValueError(f"{self.device}: a latency budget is a positive number of ms")

    @property
    def queue(self) -> str:
        return edge_queue(self.device)

    @property
    def protocol_json(self) -> dict[str, Any]:
        """The protocol as the device runs it and its result records it (a store lookup key)."""
        named = cand.PROTOCOLS[self.protocol] if isinstance(self.protocol, str) else self.protocol
        return TimingProtocol.from_json(named).to_json()

    def budget(self, o: Host) -> float | None:
        """This kind's latency budget in ms, if it has one."""
        return o.objective.latency_budget_ms if self.primary else self.budget_ms

    @property
    def suffix(self) -> str:
        return "" if self.primary else f"@{self.device}"

    @property
    def result_key(self) -> str:
        return f"latency_ms{self.suffix}"

    @property
    def summary_key(self) -> str:
        return f"latency{self.suffix}"

    @property
    def needs_candidate(self) -> bool:
        return True

    def timeout_s(self, o: Host) -> float:
        return o.config.measure_timeout_s

    def lookup(self, o: Host, job: Job) -> bool:
        context = o.contexts.get(self.queue)
        if context is None or job.candidate is None:
            return False
        assert job.spec is not None
        m = o.store.find(
            context,
            job.spec.arch_id,
            job.candidate.onnx_sha256,
            self.precision,
            self.batch_size,
            protocol=self.protocol_json,
        )
        if m is None:
            return False
        try:
            summary = latency_summary(m.results, m.batch_size)
        except (ResultRejected, AttributeError, KeyError, TypeError, ValueError) as exc:
            # A row of the shared store this version cannot read: measure afresh instead.
            log.warning("%s: stored measurement %s unreadable (%s)", job.label, m.id, exc)
            return False
        if summary["unstable"]:
            return False  # measure again: the new one may be stable
        if str(m.results.get("worker")) in o.quarantine.get(self.queue, {}):
            return False  # measured by a unit found out of line since
        o.set(job, self.summary_key, {**summary, "cached": True, "measurement_id": m.id})
        o.set_latency(job, self, m.latency_ms)
        o.emit("cached", job)
        return True

    def check(self, job: Job, result: dict[str, Any]) -> dict[str, Any]:
        """The result's summary, if it answers the task sent for ``job``.

        Raises:
            ResultRejected: it is another network's, another model's, or has no figures at
                this stage's batch size.
        """
        assert job.spec is not None
        if result.get("arch_id") != job.spec.arch_id:
            raise ResultRejected(f"the result is for network {str(result.get('arch_id'))[:80]!r}")
        kind = result.get("kind", DEFAULT_KIND)  # workers before device kinds: the default
        if kind != self.device:
            raise ResultRejected(
                f"the result is from a device of kind {str(kind)[:40]!r}, not {self.device!r}"
            )
        sha = job.attrs.get("onnx_sha256")
        if sha is not None and result.get("onnx_sha256") != sha:
            raise ResultRejected("the result is for another ONNX model than the one sent")
        return latency_summary(result, self.batch_size)

    def payload(self, o: Host, job: Job) -> dict[str, Any]:
        c = job.candidate
        assert c is not None
        key = o.dispatcher.artifacts.put(c.onnx)
        return cand.measure_request(
            c, key, batch_size=self.batch_size, precision=self.precision, protocol=self.protocol
        )

    def accept(self, o: Host, job: Job, rec: TaskRecord, result: dict[str, Any]) -> None:
        summary = self.check(job, result)
        assert job.spec is not None
        why = o.refresh_quarantine(self.queue).get(str(summary["worker"]))
        if why is not None:
            raise Quarantined(f"from {summary['worker']}, under quarantine ({why})")
        if summary["unstable"] and rec.attempt <= min(UNSTABLE_REMEASURES, o.config.retries):
            # Measured again (a later task on the kind's queue: perhaps another unit); the last
            # try is kept, flagged, when it is still unstable.
            raise Unstable(f"unstable on {summary['worker']}: {summary['unstable']}")
        context = DeviceContext.from_result(result)
        a = job.attrs
        rows = o.store.record(
            job.spec, result, task_id=rec.id, params=a.get("params"), flops=a.get("flops")
        )
        row = next((r for r in rows if r.batch_size == self.batch_size), None)
        if row is None:
            raise ResultRejected(f"the store recorded no batch size {self.batch_size} row")
        o.contexts[self.queue] = context
        o.set(job, self.summary_key, {**summary, "cached": False, "measurement_id": row.id})
        o.set_latency(job, self, row.latency_ms)
        o.emit("measured", job)


#: What a trial keeps of a train result.
TRAIN_KEEP = (
    "val_rmse", "val_rmse_speed_mm_s", "val_rmse_power_w", "val_mse_constant", "epochs_run",
    "train_s", "wall_s", "engine", "world_size", "device", "precision", "samples_per_s",
    "checkpoint_path", "worker", "test",
)  # fmt: skip


@dataclass(frozen=True)
class TrainStage(Stage):
    """Training at one fidelity rung: ``hpc2edge.train`` on the train queue.

    ``rung`` 0 with ``final`` is the only rung of a plain search (attributes ``train`` and
    ``val_mse``, trial key ``<search>/<trial>``). Earlier rungs of a multi-fidelity search keep
    theirs under ``train.r<k>`` / ``val_mse.r<k>``, and every rung but 0 adds ``/r<k>`` to the
    trial key, the worker's idempotency key, so two rungs of one trial are two trainings.
    """

    name: str = "train"
    rung: int = 0
    final: bool = True
    epochs: int | None = None
    kind: str = field(default="train", init=False)

    @property
    def queue(self) -> str:
        return QUEUE_TRAIN

    @property
    def suffix(self) -> str:
        return "" if self.final else f".r{self.rung}"

    @property
    def result_key(self) -> str:
        return f"val_mse{self.suffix}"

    @property
    def summary_key(self) -> str:
        return f"train{self.suffix}"

    def timeout_s(self, o: Host) -> float:
        return o.config.train_timeout_s

    def trial_key(self, o: Host, job: Job) -> str:
        # Unique across storages: train nodes keep results by this key for good.
        key = f"{o.tag}/{job.key}"
        return key if self.rung == 0 else f"{key}/r{self.rung}"

    def payload(self, o: Host, job: Job) -> dict[str, Any]:
        assert job.spec is not None
        plan = o.plan if self.epochs is None else replace(o.plan, epochs=self.epochs)
        return plan.request(self.trial_key(o, job), job.spec, o.space.name)

    def accept(self, o: Host, job: Job, rec: TaskRecord, result: dict[str, Any]) -> None:
        if result.get("trial_key") != self.trial_key(o, job):
            raise ResultRejected("the result is for another training than the one sent")
        val = result.get("val_mse")
        if not isinstance(val, (int, float)) or not math.isfinite(val):
            # A training that diverged: a fact about the candidate, not a bad result.
            o.fail(job, f"train: no finite val_mse in the result ({val!r})")
            return
        o.set(job, self.summary_key, {k: result.get(k) for k in TRAIN_KEEP})
        o.set(job, self.result_key, float(val))
        o.emit("trained", job)


@dataclass(frozen=True)
class Gate(abc.ABC):
    """A check between stages: may end a trial before the stages it ``guards`` are spent.

    ``needs`` are the result attributes it reads; it is asked once they are all known.
    """

    guards: tuple[str, ...] = ()

    @property
    @abc.abstractmethod
    def needs(self) -> tuple[str, ...]: ...

    @abc.abstractmethod
    def verdict(self, o: Host, job: Job) -> str | None:
        """Why the trial should stop here, or None to go on."""


@dataclass(frozen=True)
class LatencyGate(Gate):
    """Over the latency budget: pruned, never trained (when nothing was spent on training)."""

    measure: str = "latency_ms"

    @property
    def needs(self) -> tuple[str, ...]:
        return (self.measure,)

    def verdict(self, o: Host, job: Job) -> str | None:
        stage = next(
            s
            for s in o.pipeline.stages
            if isinstance(s, MeasureStage) and s.result_key == self.measure
        )
        budget = stage.budget(o)
        latency = job.attrs[self.measure]
        if budget is None or latency <= budget:
            return None
        where = "" if stage.primary else f" of {stage.device}"
        return f"over the latency budget{where}: {latency:.3f} ms > {budget:g} ms (not trained)"


@dataclass(frozen=True)
class Pipeline:
    """A search's stages in one ordering, and the gates between them."""

    stages: tuple[Stage, ...]
    gates: tuple[Gate, ...] = ()

    def __post_init__(self) -> None:
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique: {names}")
        for s in self.stages:
            unknown = set(s.after) - set(names)
            if unknown:
                raise ValueError(f"stage {s.name!r} waits for unknown stages {sorted(unknown)}")
        keys = [k for s in self.stages for k in (s.result_key, s.summary_key) if k]
        if len(set(keys)) != len(keys):
            raise ValueError(f"stages must keep their results under distinct keys: {keys}")
        for g in self.gates:
            unknown = set(g.guards) - set(names)
            if unknown:
                raise ValueError(f"a gate guards unknown stages {sorted(unknown)}")
            missing = set(g.needs) - {s.result_key for s in self.stages}
            if missing:
                raise ValueError(f"a gate needs results no stage gives: {sorted(missing)}")
        primary = [s for s in self.stages if isinstance(s, MeasureStage) and s.primary]
        if len(primary) != 1:
            raise ValueError("a pipeline needs one measure stage for the study's device (primary)")
        kinds = [s.device for s in self.stages if isinstance(s, MeasureStage)]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"one measure stage per device kind: {kinds}")
        if not any(isinstance(s, TrainStage) and s.final for s in self.stages):
            raise ValueError("a pipeline needs a final train stage")

    @classmethod
    def latency_first(
        cls, measures: Sequence[MeasureStage], trains: Sequence[TrainStage], gates: Sequence[Gate]
    ) -> Pipeline:
        """Train stages wait for every measure stage (and each rung for the one before)."""
        return cls._ordered(measures, trains, gates, wait=tuple(m.name for m in measures))

    @classmethod
    def concurrent(
        cls, measures: Sequence[MeasureStage], trains: Sequence[TrainStage], gates: Sequence[Gate]
    ) -> Pipeline:
        """Everything at once (rungs still in order): gates only prune what has not started."""
        return cls._ordered(measures, trains, gates, wait=())

    @classmethod
    def _ordered(
        cls,
        measures: Sequence[MeasureStage],
        trains: Sequence[TrainStage],
        gates: Sequence[Gate],
        *,
        wait: tuple[str, ...],
    ) -> Pipeline:
        chained: list[Stage] = []
        previous: tuple[str, ...] = ()
        for t in trains:
            chained.append(replace(t, after=wait + previous))
            previous = (t.name,)
        guarded = tuple(g if g.guards else replace(g, guards=tuple(t.name for t in trains))
                        for g in gates)  # fmt: skip
        return cls((*measures, *chained), guarded)

    @property
    def measure(self) -> MeasureStage:
        """The measure stage of the study's device (its latency is the objective's)."""
        return next(s for s in self.stages if isinstance(s, MeasureStage) and s.primary)

    @property
    def measures(self) -> tuple[MeasureStage, ...]:
        """Every device kind's measure stage, the primary first."""
        ms = [s for s in self.stages if isinstance(s, MeasureStage)]
        return tuple(sorted(ms, key=lambda s: not s.primary))

    @property
    def loss_key(self) -> str:
        return next(s for s in self.stages if isinstance(s, TrainStage) and s.final).result_key

    @property
    def queues(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.queue for s in self.stages))

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def ready(self, stage: Stage, job: Job) -> bool:
        """Its dependencies are settled and it still has to run."""
        return not stage.settled(job) and all(self.stage(n).settled(job) for n in stage.after)


def latency_summary(result: dict[str, Any], batch_size: int) -> dict[str, Any]:
    """The figures a trial keeps of a measurement, for ``batch_size``."""
    for b in result.get("batches", []):
        if int(b["batch_size"]) == batch_size:
            stats = b["compute"]["stats"]
            e2e = b["end_to_end"]["stats"]
            return {
                "batch_size": batch_size,
                "p50_ms": stats["median_ms"],
                "p90_ms": stats["p90_ms"],
                "p99_ms": stats["p99_ms"],
                "ci95_ms": list(stats["ci95_median_ms"]),
                "n": stats["n"],
                "end_to_end_p50_ms": e2e["median_ms"],
                "backend": result.get("backend"),
                "precision": result.get("precision"),
                "device": (result.get("device") or {}).get("hostname"),
                "kind": result.get("kind", DEFAULT_KIND),
                "worker": result.get("worker"),
                "throttle": result.get("throttle"),
                "unstable": unstable_reason(b["compute"], result.get("protocol")),
            }
    raise ResultRejected(f"no batch size {batch_size} in the measurement")


def unstable_reason(series: dict[str, Any], protocol: Any) -> str | None:
    """Why a timed series is not a measurement to rest a front on, or None.

    The protocol stops when the 95 % CI of the median is within ``target_rel_ci`` of it; a
    series that ran into its run or time cap first (``stopped_by`` not ``converged``) with a
    wider CI is unstable (a loaded or throttled device; trtexec warns the same above 1 % CV).
    """
    stats = series.get("stats") or {}
    if series.get("stopped_by", "converged") == "converged":
        return None
    given = protocol.get("target_rel_ci") if isinstance(protocol, dict) else None
    target = given if given is not None else TimingProtocol().target_rel_ci
    lo, hi = stats.get("ci95_median_ms") or (0.0, 0.0)
    median = stats.get("median_ms") or 0.0
    if not median or not isinstance(target, (int, float)):
        return None
    rel = (hi - lo) / 2.0 / median
    if rel <= target:
        return None
    return (
        f"the 95 % CI of the median is +-{100 * rel:.1f} %, over the protocol's "
        f"{100 * target:g} % (stopped by {series.get('stopped_by')})"
    )


__all__ = [
    "UNSTABLE_REMEASURES",
    "Gate",
    "Host",
    "LatencyGate",
    "MeasureStage",
    "Pipeline",
    "Quarantined",
    "ResultRejected",
    "Stage",
    "TrainStage",
    "Unstable",
    "latency_summary",
    "unstable_reason",
]
