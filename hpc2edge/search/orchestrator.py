"""The asynchronous ask/tell orchestrator: Optuna proposes, the edge measures, the HPC trains.

Why one module of ~800 lines: the loop, its per-trial bookkeeping and the lease are one state
machine read top to bottom; issue 15 splits it into typed job states, stages and send policies.

One thread, no blocking waits: :meth:`Orchestrator.step` advances every trial in flight by one
look (poll a task, send the next one, tell Optuna) and asks for new trials while fewer than
``parallel`` are in flight. :meth:`Orchestrator.run` steps until ``trials`` trials are finished.

A trial's life (latency first, the default)::

    ask -> spec -> (duplicate of an earlier trial? reuse its outcome)
        -> measurement store hit? -> latency, no device time
           else export ONNX -> artifact store -> hpc2edge.measure (edge queue)
        -> over the latency budget? -> PRUNED, constraint recorded, never trained
        -> hpc2edge.train (train queue) -> tell COMPLETE (values, constraint)
    any failure -> tell FAIL with a ``reason`` user attribute; never a placeholder number

Everything a restarted orchestrator needs lives in the study storage, as the trial's user
attributes, written *before* the action they describe: the spec, each task's id and attempt and
whether the send completed, the results. A task's id is random and bound to its queue
(:mod:`hpc2edge.transport.taskids`), recorded before the send with a label derived from (study,
trial, kind, attempt), so a ``SIGKILL`` at any point leaves a trial that the next ``run``
re-attaches to (its task is polled by id) or re-sends under the same id (when the kill fell
between recording and sending).
``tell`` is idempotent (``skip_if_finished``) and measurements are stored once per task id, so a
result processed twice is counted once.

Timeouts count from the send, on the wall clock (they survive restarts). A task that times out
is sent again (a new attempt, a new id) up to ``retries`` times; the old message carries an
``expires`` and is dropped by the worker if it surfaces late. Transient errors (an artifact that
expired, a broker hiccup) are retried after an exponential back-off; errors that are about the
candidate (bad model, output mismatch, NaN loss) fail the trial at once.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpc2edge.errors import BrokerError, Hpc2EdgeError
from hpc2edge.roles import QUEUE_EDGE, QUEUE_TRAIN
from hpc2edge.search import candidate as cand
from hpc2edge.search.dispatch import Dispatcher, Outcome
from hpc2edge.search.objectives import CONSTRAINT_ATTR, Objective, native_constraints
from hpc2edge.space.base import ArchSpec, SearchSpace
from hpc2edge.store.measurements import DeviceContext, MeasurementStore
from hpc2edge.transport import taskids
from hpc2edge.util import procs

log = logging.getLogger(__name__)

BASELINE = "baseline"
LEASE_ATTR = "orchestrator_lease"
LEASE_STALE_S = 60.0
QUEUE_OF = {"measure": QUEUE_EDGE, "train": QUEUE_TRAIN}


class SearchError(Hpc2EdgeError):
    """The search cannot start or go on (a study that does not match, a study in use, ...)."""


class Clock(Protocol):
    def time(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Wall-clock time: timeouts are stored as Unix times and must survive a restart."""

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass(frozen=True)
class SearchConfig:
    """How a search runs (what it optimises is the :class:`Objective`).

    Attributes:
        trials: Optuna trials to finish (the baseline is not one of them).
        parallel: candidates in flight at once; 0 means one per live worker (at least 2).
        latency_first: measure before training; with False both are sent at once.
        batch_size, precision, protocol: how the edge measures (``protocol``: a name from
            :data:`candidate.PROTOCOLS` or a protocol dict).
        measure_timeout_s, train_timeout_s: from the send to the result, queueing included.
        retries: further attempts after a timeout or a transient error.
        backoff_s: first back-off after a transient error; doubles per attempt, up to 300 s.
        baseline: also measure and train the space's baseline (outside the trials), so results
            can be stated as speed-up and loss ratio against it.
        confirm_front: re-measure the final Pareto front (fresh tasks, not the store).
        pin: parameters fixed for every trial (e.g. ``{"frames": 8, "size": 41}``): Optuna does
            not search them.
        export_seed: weights of the exported models (latency does not depend on them).
        poll_interval_s: sleep between steps when nothing changed.
    """

    trials: int
    parallel: int = 0
    latency_first: bool = True
    batch_size: int = 1
    precision: str = "fp32"
    protocol: str | dict[str, Any] = "default"
    measure_timeout_s: float = 1800.0
    train_timeout_s: float = 24 * 3600.0
    retries: int = 2
    backoff_s: float = 5.0
    baseline: bool = True
    confirm_front: bool = False
    pin: dict[str, Any] = field(default_factory=dict)
    export_seed: int = 0
    poll_interval_s: float = 0.25

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise ValueError("trials must be >= 1")
        if self.parallel < 0:
            raise ValueError("parallel must be >= 0 (0: one per live worker)")
        if self.measure_timeout_s <= 0 or self.train_timeout_s <= 0:
            raise ValueError("timeouts must be positive")
        if not 0 <= self.retries <= 10:
            raise ValueError("retries must be in 0-10")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")


class _Pinned:
    """A trial whose pinned parameters are answered without asking Optuna."""

    def __init__(self, trial: Any, pin: dict[str, Any]) -> None:
        self._trial = trial
        self._pin = pin

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        if name in self._pin:
            value = self._pin[name]
            if value not in choices:
                raise SearchError(f"pinned {name}={value!r} is not one of {list(choices)}")
            return value
        return self._trial.suggest_categorical(name, choices)

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float:
        if name in self._pin:
            return float(self._pin[name])
        return float(self._trial.suggest_float(name, low, high, log=log))


@dataclass
class Job:
    """One candidate in flight (an Optuna trial, or the baseline) and its recorded state."""

    key: str
    number: int | None
    trial_id: int | None
    attrs: dict[str, Any]
    spec: ArchSpec | None = None
    state: str = "running"  # running | complete | pruned | failed
    candidate: cand.Candidate | None = None

    @property
    def done(self) -> bool:
        return self.state != "running"

    @property
    def label(self) -> str:
        return self.key if self.number is None else f"trial {self.number}"


Callback = Callable[[str, Job], None]


class Orchestrator:
    """Runs a study; see the module docstring.

    Args:
        study: the Optuna study (directions must match ``objective``).
        dispatcher: where tasks go (:class:`~hpc2edge.search.dispatch.CeleryDispatcher`, or
            the inline one in tests).
        space: the search space; ``config.pin`` fixes some of its parameters.
        objective: what is minimised, and the latency budget.
        store: the measurement store shared across studies.
        plan: how candidates are trained (data, recipe, resources).
        config: how the search runs.
        callbacks: called as ``callback(event, job)`` for ``sent``, ``cached``, ``measured``,
            ``trained`` and ``finished``.
        clock: time source (tests pass a fake one).
    """

    def __init__(
        self,
        study: optuna.Study,
        dispatcher: Dispatcher,
        space: SearchSpace,
        objective: Objective,
        store: MeasurementStore,
        plan: cand.TrainPlan,
        config: SearchConfig,
        callbacks: Sequence[Callback] = (),
        clock: Clock | None = None,
    ) -> None:
        if len(study.directions) != len(objective.directions):
            raise SearchError(
                f"study {study.study_name!r} has {len(study.directions)} objective(s); "
                f"objective {objective.name!r} has {len(objective.directions)}"
            )
        self.study = study
        self.dispatcher = dispatcher
        self.space = space
        self.objective = objective
        self.store = store
        self.plan = plan
        self.config = config
        self.callbacks = list(callbacks)
        self.clock = clock or SystemClock()
        self.context: DeviceContext | None = None
        self.jobs: dict[str, Job] = {}
        self._by_arch: dict[str, str] = {}
        self._parallel = config.parallel
        self._tag = ""
        self._lease_at = 0.0
        self._started = False

    # --- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Take the study's lease, re-attach to trials left running, probe the device."""
        self._take_lease()
        self._check_study_attrs()
        for t in self.study.get_trials(deepcopy=False):
            job = self._job_from_trial(t)
            self.jobs[job.key] = job
            if job.spec is not None and job.state in ("running", "complete", "pruned"):
                self._by_arch.setdefault(job.spec.arch_id, job.key)
        if self.config.baseline:
            self._start_baseline()
        if self._parallel == 0:
            live = self.dispatcher.workers()
            self._parallel = max(2, live.get(QUEUE_EDGE, 0) + live.get(QUEUE_TRAIN, 0))
        probe = self.dispatcher.probe_edge(timeout_s=5.0)
        if probe and isinstance(probe.get("measurement"), dict):
            m = probe["measurement"]
            if isinstance(m.get("backend"), dict) and "error" not in m["backend"]:
                self.context = DeviceContext.from_fingerprints(m["device"], m["backend"])
        self._started = True

    def run(self) -> dict[str, Any]:
        """Step until ``trials`` trials are finished; return :meth:`summary`."""
        if not self._started:
            self.start()
        try:
            while not self.finished():
                if not self.step():
                    self.clock.sleep(self.config.poll_interval_s)
            if self.config.confirm_front:
                self.confirm_front()
        finally:
            self.release()
        return self.summary()

    def release(self) -> None:
        """Give up the study's lease (the next orchestrator need not wait for it to go stale)."""
        lease = self.study.user_attrs.get(LEASE_ATTR) or {}
        if lease.get("pid") == os.getpid() and lease.get("host") == socket.gethostname():
            self.study.set_user_attr(LEASE_ATTR, None)

    def finished(self) -> bool:
        return self._n_trials() >= self.config.trials and not self.active()

    def active(self) -> list[Job]:
        return [j for j in self.jobs.values() if not j.done]

    def step(self) -> bool:
        """Advance every job once, then ask for new trials; True if anything changed."""
        changed = False
        for job in list(self.active()):
            changed |= self._advance(job)
        while self._n_trials() < self.config.trials and self._busy() < self._parallel:
            self._new_trial()
            changed = True
        self._heartbeat()
        return changed

    # --- trials -----------------------------------------------------------------------------

    def _n_trials(self) -> int:
        return sum(1 for j in self.jobs.values() if j.number is not None)

    def _busy(self) -> int:
        return sum(1 for j in self.active() if not _waits_for_source(j))

    def _new_trial(self) -> None:
        trial = self.study.ask()
        job = Job(f"trial-{trial.number}", trial.number, trial._trial_id, {})
        self.jobs[job.key] = job
        try:
            spec = self.space.suggest(_Pinned(trial, self.config.pin))
            spec = self.space.validate(spec)
        except Hpc2EdgeError as exc:
            self._fail(job, f"spec: {exc}")
            return
        job.spec = spec
        self._set(job, "arch_id", spec.arch_id)
        self._set(job, "spec", spec.to_dict())
        first = self._by_arch.get(spec.arch_id)
        if first is not None and first != job.key:
            self._set(job, "duplicate_of", first)
        else:
            self._by_arch[spec.arch_id] = job.key

    def _job_from_trial(self, t: FrozenTrial) -> Job:
        job = Job(f"trial-{t.number}", t.number, t._trial_id, dict(t.user_attrs))
        job.state = {
            TrialState.RUNNING: "running",
            TrialState.WAITING: "running",
            TrialState.COMPLETE: "complete",
            TrialState.PRUNED: "pruned",
            TrialState.FAIL: "failed",
        }[t.state]
        if "spec" in t.user_attrs:
            job.spec = ArchSpec.from_dict(t.user_attrs["spec"])
        elif job.state == "running":
            # Killed between ask and the spec being recorded: rebuild it from the parameters
            # Optuna recorded, if all of them were.
            try:
                fixed = optuna.trial.FixedTrial(t.params, t.number)
                job.spec = self.space.validate(self.space.suggest(_Pinned(fixed, self.config.pin)))
            except (ValueError, Hpc2EdgeError) as exc:
                self._fail(job, f"orchestrator stopped before the candidate was built ({exc})")
                return job
            self._set(job, "arch_id", job.spec.arch_id)
            self._set(job, "spec", job.spec.to_dict())
        return job

    def _start_baseline(self) -> None:
        attrs = dict(self.study.user_attrs.get(BASELINE) or {})
        job = Job(BASELINE, None, None, attrs)
        spec = self.space.baseline()
        if self.config.pin.get("frames") or self.config.pin.get("size"):
            spec = spec.with_input(self.config.pin.get("frames"), self.config.pin.get("size"))
        job.spec = spec
        job.state = attrs.get("state", "running")
        if "spec" not in attrs:
            self._set(job, "arch_id", spec.arch_id)
            self._set(job, "spec", spec.to_dict())
        self.jobs[BASELINE] = job
        if job.state in ("running", "complete", "pruned"):
            self._by_arch.setdefault(spec.arch_id, BASELINE)

    # --- one job, one look ------------------------------------------------------------------

    def _advance(self, job: Job) -> bool:
        if _waits_for_source(job):
            return self._advance_duplicate(job)
        before = dict(job.attrs)
        if "latency_ms" not in job.attrs:
            self._stage(job, "measure")
            if job.done:
                return True
        # The baseline is always trained: it is the yardstick, not a candidate.
        over = "latency_ms" in job.attrs and self.objective.over_budget(job.attrs["latency_ms"])
        # Pruned only when nothing was spent on training; without latency first the training is
        # already running: its loss is recorded and the trial is COMPLETE with the constraint
        # violated, which the samplers learn from.
        untrained = "val_mse" not in job.attrs and "train_task" not in job.attrs
        if over and job.number is not None and untrained:
            self._finish(job, "pruned", self._budget_reason(job))
            return True
        train_now = "val_mse" not in job.attrs and (
            not self.config.latency_first or "latency_ms" in job.attrs
        )
        if train_now:
            self._stage(job, "train")
            if job.done:
                return True
        if "latency_ms" in job.attrs and "val_mse" in job.attrs:
            self._complete(job)
            return True
        return job.attrs != before

    def _advance_duplicate(self, job: Job) -> bool:
        source = self.jobs.get(job.attrs["duplicate_of"])
        if source is None or not source.done:
            return False
        if source.state == "failed":
            # The first one failed (perhaps for a passing reason): this one tries on its own.
            # Stored as None (a released duplicate), which a restarted run reads the same way.
            self._set(job, "duplicate_of", None)
            if job.spec is not None:
                self._by_arch[job.spec.arch_id] = job.key
            return True
        for key in ("onnx_sha256", "params", "flops", "latency", "val_mse", "train"):
            if key in source.attrs:
                self._set(job, key, source.attrs[key])
        if "latency_ms" in source.attrs:
            self._set_latency(job, source.attrs["latency_ms"])  # with its constraint
        if source.state == "pruned":
            self._finish(job, "pruned", source.attrs.get("reason", "pruned"))
        else:
            self._complete(job)
        return True

    def _stage(self, job: Job, kind: str) -> None:
        """Look at (or start) ``kind`` for ``job``: lookup, send, poll, time out, retry."""
        now = self.clock.time()
        task = job.attrs.get(f"{kind}_task")
        if task is None:
            if kind == "measure" and self._lookup(job):
                return
            self._send(job, kind, attempt=1)
            return
        if task.get("id") is None:  # a retry waiting for its back-off
            if now >= task.get("retry_at", 0):
                self._send(job, kind, attempt=task["attempt"])
            return
        if not task.get("sent"):
            # Killed between recording the id and the send completing: send again, same id.
            self._send(job, kind, attempt=task["attempt"], task_id=task["id"])
            return
        try:
            outcome = self.dispatcher.poll(task["id"])
        except BrokerError as exc:
            # The broker is away: the task is not lost (results are kept there); look again.
            log.warning("%s: cannot read the %s result yet: %s", job.label, kind, exc)
            outcome = None
        except Exception as exc:  # a trust boundary: whatever the record did, it fails alone
            outcome = Outcome.rejected_because(f"{type(exc).__name__}: {exc}")
        if outcome is None:
            timeout = self._timeout(kind)
            if now - task["sent_at"] > timeout:
                queue = QUEUE_OF[kind]
                what = f"{queue} timeout: no answer from the {queue} queue in {timeout:g} s"
                self._retry_or_fail(job, kind, task, what, backoff=False)
            return
        if outcome.ok:
            assert outcome.result is not None
            apply = self._measured if kind == "measure" else self._trained
            try:
                apply(job, task, outcome.result)
            except Exception as exc:
                # Checked on arrival (dispatch.result_problem); what still does not fit (or a
                # store that recorded no row for it) is a failed attempt, not a crash.
                reason = f"{kind}: result rejected: {type(exc).__name__}: {exc}"
                self._retry_or_fail(job, kind, task, reason[:500], backoff=False)
                return
            self.dispatcher.forget(task["id"])
        elif outcome.transient:
            # A result that was not one (forged, malformed, wrongly signed) is retried at once:
            # waiting would only give whoever planted it more time.
            backoff = not outcome.rejected
            self._retry_or_fail(job, kind, task, f"{kind}: {outcome.reason}", backoff=backoff)
        else:
            self._fail(job, f"{kind}: {outcome.reason}")

    def _timeout(self, kind: str) -> float:
        return self.config.measure_timeout_s if kind == "measure" else self.config.train_timeout_s

    def _retry_or_fail(
        self, job: Job, kind: str, task: dict[str, Any], reason: str, *, backoff: bool
    ) -> None:
        attempt = int(task["attempt"])
        if attempt > self.config.retries:
            tries = "attempt" if attempt == 1 else "attempts"
            self._fail(job, f"{reason} ({attempt} {tries})")
            return
        delay = min(300.0, self.config.backoff_s * 2 ** (attempt - 1)) if backoff else 0.0
        log.warning("%s: %s; attempt %d in %.0f s", job.label, reason, attempt + 1, delay)
        history = [*job.attrs.get(f"{kind}_errors", []), reason]
        self._set(job, f"{kind}_errors", history)
        self._set(
            job,
            f"{kind}_task",
            {"id": None, "attempt": attempt + 1, "retry_at": self.clock.time() + delay},
        )

    def _send(self, job: Job, kind: str, *, attempt: int, task_id: str | None = None) -> None:
        assert job.spec is not None
        # A random id bound to the queue (an id derived from the trial could be planted before
        # the send: hpc2edge.transport.taskids); the derived name is kept as the label.
        label = f"h2e-{self._tag}-{job.key}-{kind}-{attempt}"
        task_id = task_id or taskids.new(QUEUE_OF[kind])
        try:
            if kind == "measure":
                c = self._candidate(job)
                key = self.dispatcher.artifacts.put(c.onnx)
                payload = cand.measure_request(
                    c,
                    key,
                    batch_size=self.config.batch_size,
                    precision=self.config.precision,
                    protocol=self.config.protocol,
                )
            else:
                # Unique across storages: train nodes keep results by this key for good.
                trial_key = f"{self._tag}/{job.key}"
                payload = self.plan.request(trial_key, job.spec, self.space.name)
        except BrokerError as exc:
            log.warning("%s: cannot send the %s task yet: %s", job.label, kind, exc)
            return  # nothing recorded: the next step tries again
        except Hpc2EdgeError as exc:
            self._fail(job, f"{kind}: {type(exc).__name__}: {exc}")
            return
        now = self.clock.time()
        record = {"id": task_id, "label": label, "attempt": attempt, "sent_at": now, "sent": False}
        self._set(job, f"{kind}_task", record)
        try:
            self.dispatcher.submit(kind, payload, task_id, expires_s=self._timeout(kind))
        except BrokerError as exc:
            # Recorded as not (surely) sent: the next step sends it again under the same id.
            log.warning("%s: cannot send the %s task yet: %s", job.label, kind, exc)
            return
        self._set(job, f"{kind}_task", {**record, "sent": True})
        self._emit("sent", job)

    def _candidate(self, job: Job, *, record: bool = True) -> cand.Candidate:
        assert job.spec is not None
        if job.candidate is None:
            job.candidate = cand.build(job.spec, seed=self.config.export_seed)
        if record and "onnx_sha256" not in job.attrs:
            self._set(job, "onnx_sha256", job.candidate.onnx_sha256)
            self._set(job, "params", job.candidate.params)
            self._set(job, "flops", job.candidate.flops)
        return job.candidate

    def _lookup(self, job: Job) -> bool:
        """Reuse a stored measurement with the same context; True when the stage is settled:
        a hit, or a candidate that cannot be built (the trial fails alone, as in :meth:`_send`).
        """
        if self.context is None:
            return False
        try:
            c = self._candidate(job)
        except Hpc2EdgeError as exc:
            self._fail(job, f"measure: {type(exc).__name__}: {exc}")
            return True
        assert job.spec is not None
        cfg = self.config
        m = self.store.find(
            self.context, job.spec.arch_id, c.onnx_sha256, cfg.precision, cfg.batch_size
        )
        if m is None:
            return False
        summary = _latency_summary(m.results, m.batch_size)
        self._set(job, "latency", {**summary, "cached": True, "measurement_id": m.id})
        self._set_latency(job, m.latency_ms)
        self._emit("cached", job)
        return True

    def _measured(self, job: Job, task: dict[str, Any], result: dict[str, Any]) -> None:
        assert job.spec is not None
        self.context = DeviceContext.from_result(result)
        a = job.attrs
        rows = self.store.record(
            job.spec, result, task_id=task["id"], params=a.get("params"), flops=a.get("flops")
        )
        row = next(r for r in rows if r.batch_size == self.config.batch_size)
        summary = _latency_summary(result, self.config.batch_size)
        self._set(job, "latency", {**summary, "cached": False, "measurement_id": row.id})
        self._set_latency(job, row.latency_ms)
        self._emit("measured", job)

    def _set_latency(self, job: Job, latency_ms: float) -> None:
        constraint = self.objective.constraint(latency_ms)
        if constraint is not None:
            self._set(job, CONSTRAINT_ATTR, constraint)
            if job.trial_id is not None and native_constraints():
                trial = optuna.trial.Trial(self.study, job.trial_id)
                trial.set_constraint("latency_ms", constraint)
        self._set(job, "latency_ms", latency_ms)

    def _trained(self, job: Job, task: dict[str, Any], result: dict[str, Any]) -> None:
        val = result.get("val_mse")
        if not isinstance(val, (int, float)) or not math.isfinite(val):
            self._fail(job, f"train: no finite val_mse in the result ({val!r})")
            return
        keep = (
            "val_rmse", "val_rmse_speed_mm_s", "val_rmse_power_w", "val_mse_constant",
            "epochs_run", "train_s", "wall_s", "engine", "world_size", "device", "precision",
            "samples_per_s", "checkpoint_path", "worker", "test",
        )  # fmt: skip
        self._set(job, "train", {k: result.get(k) for k in keep})
        self._set(job, "val_mse", float(val))
        self._emit("trained", job)

    # --- endings ----------------------------------------------------------------------------

    def _budget_reason(self, job: Job) -> str:
        return (
            f"over the latency budget: {job.attrs['latency_ms']:.3f} ms > "
            f"{self.objective.latency_budget_ms:g} ms (not trained)"
        )

    def _complete(self, job: Job) -> None:
        values = self.objective.values(job.attrs["val_mse"], job.attrs["latency_ms"])
        if job.number is not None:
            self.study.tell(job.number, values, skip_if_finished=True)
        job.state = "complete"
        if job.number is None:
            self._set(job, "state", job.state)
        self._emit("finished", job)

    def _fail(self, job: Job, reason: str) -> None:
        self._finish(job, "failed", reason)

    def _finish(self, job: Job, state: str, reason: str) -> None:
        self._set(job, "reason", reason)
        if job.number is not None:
            optuna_state = TrialState.FAIL if state == "failed" else TrialState.PRUNED
            self.study.tell(job.number, state=optuna_state, skip_if_finished=True)
        else:
            self._set(job, "state", state)
        job.state = state
        log.info("%s %s: %s", job.label, state, reason)
        self._emit("finished", job)

    # --- storage ----------------------------------------------------------------------------

    def _set(self, job: Job, key: str, value: Any) -> None:
        job.attrs[key] = value
        if job.trial_id is not None:
            optuna.trial.Trial(self.study, job.trial_id).set_user_attr(key, value)
        else:
            self.study.set_user_attr(job.key, {k: v for k, v in job.attrs.items()})

    def _emit(self, event: str, job: Job) -> None:
        for cb in self.callbacks:
            cb(event, job)

    def _check_study_attrs(self) -> None:
        recorded = self.study.user_attrs.get("search")
        mine = {
            "space": self.space.name,
            "objective": self.objective.to_json(),
            "latency_first": self.config.latency_first,
            "batch_size": self.config.batch_size,
            "precision": self.config.precision,
            "pin": self.config.pin,
        }
        if recorded is None:
            # Task ids carry this id: two studies of one name in two storages never collide.
            self.study.set_user_attr("search_id", uuid.uuid4().hex[:12])
            self.study.set_user_attr("search", mine)
            self.study.set_user_attr("plan", self.plan.to_json())
        self._tag = f"{self.study.user_attrs['search_id']}-{_slug(self.study.study_name)}"
        diff = [k for k in mine if recorded is not None and recorded.get(k) != mine[k]]
        if diff:
            assert recorded is not None
            details = "; ".join(
                f"{k}: study has {recorded.get(k)!r}, asked {mine[k]!r}" for k in diff
            )
            raise SearchError(
                f"study {self.study.study_name!r} was started with other settings ({details}); "
                "rerun with the same options or pick another --study name"
            )

    def _take_lease(self) -> None:
        lease = self.study.user_attrs.get(LEASE_ATTR)
        me = {"host": socket.gethostname(), "pid": os.getpid()}
        if lease and (lease.get("host"), lease.get("pid")) != (me["host"], me["pid"]):
            age = self.clock.time() - float(lease.get("heartbeat", 0))
            same_host_dead = lease.get("host") == me["host"] and not procs.pid_exists(
                lease.get("pid")
            )
            if age < LEASE_STALE_S and not same_host_dead:
                raise SearchError(
                    f"study {self.study.study_name!r} is being run by pid {lease.get('pid')} on "
                    f"{lease.get('host')} (heartbeat {age:.0f} s ago); stop it first, or wait "
                    f"{LEASE_STALE_S:.0f} s if it is gone"
                )
        self._lease_at = 0.0
        self._heartbeat()

    def _heartbeat(self) -> None:
        now = self.clock.time()
        if now - self._lease_at >= LEASE_STALE_S / 4:
            self.study.set_user_attr(
                LEASE_ATTR, {"host": socket.gethostname(), "pid": os.getpid(), "heartbeat": now}
            )
            self._lease_at = now

    # --- results ----------------------------------------------------------------------------

    def confirm_front(self) -> dict[int, float]:
        """Measure the front again with fresh tasks (no store lookup); record p50 per trial."""
        confirmed: dict[str, Any] = dict(self.study.user_attrs.get("confirm") or {})
        pending: dict[int, tuple[str, float]] = {}
        for t in self.front():
            if str(t.number) in confirmed:
                continue
            job = self.jobs[f"trial-{t.number}"]
            task_id = taskids.new(QUEUE_OF["measure"])
            c = self._candidate(job, record=False)
            payload = cand.measure_request(
                c,
                self.dispatcher.artifacts.put(c.onnx),
                batch_size=self.config.batch_size,
                precision=self.config.precision,
                protocol=self.config.protocol,
            )
            self.dispatcher.submit("measure", payload, task_id, self.config.measure_timeout_s)
            pending[t.number] = (task_id, self.clock.time())
        while pending:
            for number, (task_id, sent_at) in list(pending.items()):
                try:
                    outcome = self.dispatcher.poll(task_id)
                except BrokerError as exc:  # the broker is away, or a result failed to verify
                    log.warning("confirming trial %d: %s", number, exc)
                    outcome = None
                late = self.clock.time() - sent_at > self.config.measure_timeout_s
                if outcome is None and not late:
                    continue
                del pending[number]
                confirmed[str(number)] = self._confirmation(outcome)
                self.study.set_user_attr("confirm", confirmed)
            self._heartbeat()  # a long confirmation must not let the lease go stale
            if pending:
                self.clock.sleep(self.config.poll_interval_s)
        return {int(k): v.get("p50_ms") for k, v in confirmed.items()}

    def _confirmation(self, outcome: Outcome | None) -> dict[str, Any]:
        """What one confirming measurement recorded: its summary, or why there is none."""
        if outcome is None:
            return {"error": "timeout"}
        if not outcome.ok or outcome.result is None:
            return {"error": outcome.reason}
        try:
            return _latency_summary(outcome.result, self.config.batch_size)
        except (ValueError, TypeError, KeyError) as exc:  # any worker can write any result
            return {"error": f"result rejected: {type(exc).__name__}: {exc}"[:500]}

    def front(self) -> list[FrozenTrial]:
        """The feasible Pareto-optimal (or, single-objective, the best) complete trials."""
        return front_trials(self.study)

    def counts(self) -> dict[str, Any]:
        """Trials by state, tasks sent, reuses, candidates in flight: from memory, no I/O."""
        trials = [j for j in self.jobs.values() if j.number is not None]
        count = {
            s: sum(1 for j in trials if j.state == s) for s in ("complete", "pruned", "failed")
        }
        sent = {"measure": 0, "train": 0}
        cached = 0
        for j in trials:
            for kind in sent:
                task = j.attrs.get(f"{kind}_task")
                if task:
                    sent[kind] += int(task["attempt"])
            cached += bool((j.attrs.get("latency") or {}).get("cached"))
        return {
            "trials": len(trials),
            **count,
            "running": sum(1 for j in trials if not j.done),
            "in_flight": self._busy(),
            "tasks_sent": sent,
            "measurements_reused": cached,
        }

    def summary(self) -> dict[str, Any]:
        """:meth:`counts`, the front (read from the study) and the baseline."""
        return {
            "study": self.study.study_name,
            **self.counts(),
            "front": [t.number for t in self.front()],
            "baseline": self.jobs[BASELINE].attrs if BASELINE in self.jobs else None,
        }


def front_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Feasible complete trials on the Pareto front (best trial for one objective), by latency."""
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if (t.user_attrs.get(CONSTRAINT_ATTR) or 0.0) <= 0.0
    ]
    if not complete:
        return []
    if len(study.directions) == 1:
        return [min(complete, key=lambda t: t.values[0])]
    from hpc2edge.search.objectives import pareto_front

    points = [(t.values[0], t.values[1]) for t in complete]
    return [complete[i] for i in pareto_front(points)]


def _latency_summary(result: dict[str, Any], batch_size: int) -> dict[str, Any]:
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
                "worker": result.get("worker"),
                "throttle": result.get("throttle"),
            }
    raise ValueError(f"no batch size {batch_size} in the measurement")


def _waits_for_source(job: Job) -> bool:
    """A duplicate still waiting for the trial it copies (``None``: released, on its own)."""
    return job.attrs.get("duplicate_of") is not None


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:60]


__all__ = [
    "BASELINE",
    "Clock",
    "Job",
    "Orchestrator",
    "SearchConfig",
    "SearchError",
    "SystemClock",
    "front_trials",
]
