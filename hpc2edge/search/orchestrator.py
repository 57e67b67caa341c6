"""The asynchronous ask/tell orchestrator: Optuna proposes, the edge measures, the HPC trains.

A composition of small parts, each in its own module:

- :mod:`~hpc2edge.search.stages`: what a candidate needs (measure stages per device kind, train
  stages per fidelity rung, gates such as the latency budget) and in which order (a
  :class:`~hpc2edge.search.stages.Pipeline`: latency first, or concurrent);
- :mod:`~hpc2edge.search.runner`: one task's life (send, poll, time out, retry, back off);
- :mod:`~hpc2edge.search.policy`: which ready task each queue gets next, within its capacity;
- :mod:`~hpc2edge.search.prepare`: ONNX export and reference outputs, in the loop or a pool;
- :mod:`~hpc2edge.search.recorder`, :mod:`~hpc2edge.search.records`: every write to the study
  storage, in one versioned schema; :mod:`~hpc2edge.search.lease`: one orchestrator per study;
  :mod:`~hpc2edge.search.settings`: what a study was started with, checked on resume;
  :mod:`~hpc2edge.search.runconfig`: how a search runs; :mod:`~hpc2edge.search.confirm`: the
  front measured again.

What stays here (about 600 lines) is the jobs' own life: re-attaching
them from the storage, duplicates, their candidates, offering their tasks to the policy, and
ending them; the parts above know nothing of each other.

One thread, no blocking waits. :meth:`Orchestrator.step` looks once at every job (polls its
tasks, applies results, runs its gates, completes it), sends what the policy picks for each queue,
and asks Optuna for new trials while fewer than ``parallel`` candidates are in flight.
:meth:`Orchestrator.run` steps until ``trials`` trials are finished.

A trial's life (latency first, the default)::

    ask -> spec -> (duplicate of an earlier trial? reuse its outcome)
        -> candidate (ONNX, reference outputs) -> measurement store hit? -> latency, no device time
           else artifact store -> hpc2edge.measure (edge queue)
        -> over the latency budget? -> PRUNED, constraint recorded, never trained
        -> hpc2edge.train (train queue) -> tell COMPLETE (values, constraint)
    any failure -> tell FAIL with a ``reason`` user attribute; never a placeholder number

Everything a restarted orchestrator needs is in the study storage, written *before* the action
it describes (:mod:`~hpc2edge.search.records` lists it). A task's id is random and bound to its
queue, recorded before the send, so a ``SIGKILL`` at any point leaves a trial that the next
``run`` re-attaches to (its task is polled by id) or re-sends under the same id. ``tell`` is
idempotent (``skip_if_finished``) and measurements are stored once per task id, so a result
processed twice is counted once.

Timeouts count from the send, on the wall clock (they survive restarts); transient errors are
retried after an exponential back-off; errors about the candidate fail its trial at once; a
malformed or forged result fails one attempt, never the search.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpc2edge.errors import Hpc2EdgeError, SearchError
from hpc2edge.roles import DEFAULT_KIND
from hpc2edge.search import candidate as cand
from hpc2edge.search import confirm, pairing
from hpc2edge.search import settings as study_settings
from hpc2edge.search.dispatch import Dispatcher
from hpc2edge.search.lease import ATTR as LEASE_ATTR
from hpc2edge.search.lease import STALE_S as LEASE_STALE_S
from hpc2edge.search.lease import Clock, Lease
from hpc2edge.search.objectives import (
    CONSTRAINT_ATTR,
    Objective,
    front_trials,
    native_constraints,
)
from hpc2edge.search.policy import Capacity, Fifo, Ready, SendPolicy
from hpc2edge.search.prepare import Preparer
from hpc2edge.search.recorder import Recorder
from hpc2edge.search.records import (
    OPTUNA_STATES,
    SCHEMA,
    SCHEMA_ATTR,
    Job,
    JobState,
    RecordError,
    cached,
    task,
    tasks_sent,
    waits_for_source,
)
from hpc2edge.search.runconfig import Pinned, SearchConfig, SystemClock
from hpc2edge.search.runner import TaskRunner
from hpc2edge.search.stages import (
    Gate,
    MeasureStage,
    Pipeline,
    Stage,
)
from hpc2edge.space.base import ArchSpec, SearchSpace
from hpc2edge.store.measurements import DeviceContext, MeasurementStore

log = logging.getLogger(__name__)

BASELINE = "baseline"
#: Results of the baseline a duplicate of it, or of a trial, copies.
COPIED = ("onnx_sha256", "params", "flops")
#: How often the live workers (each queue's capacity) are counted again.
WORKERS_EVERY_S = 30.0
#: How long one step may keep asking new trials before it sends what it asked.
ASK_BUDGET_S = 1.0


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
            ``trained``, ``finished`` and, once per step, ``tick`` (with ``job`` None).
        clock: time source (tests pass a fake one).
        pipeline: the stages and gates (default: :meth:`SearchConfig.pipeline`).
        policy: what each queue gets next (default: :class:`~hpc2edge.search.policy.Fifo`).
        preparer: builds candidates (default: ONNX export with ``config.export_seed``, in
            ``config.export_workers`` processes; the simulator passes its own).
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
        *,
        pipeline: Pipeline | None = None,
        policy: SendPolicy | None = None,
        preparer: Preparer | None = None,
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
        self.pipeline = pipeline or config.pipeline()
        self.policy = policy or Fifo()
        self.recorder = Recorder(study)
        self.runner = TaskRunner(self)
        self.preparer = preparer or Preparer(config.export_seed, config.export_workers)
        self.lease = Lease(study, self.clock)
        #: Device context per edge queue (from the probe, then from each result).
        self.contexts: dict[str, DeviceContext] = {}
        #: Units under quarantine per edge queue (:meth:`refresh_quarantine`).
        self.quarantine: dict[str, dict[str, str]] = {}
        self.jobs: dict[str, Job] = {}
        self.tag = ""
        self.capacity = Capacity({}, config.parallel)
        self._by_arch: dict[str, str] = {}
        self._parallel = config.parallel
        self._workers_at = 0.0
        self._live: dict[str, int] = {}
        #: (job, stage) -> the device context of its last store miss (:meth:`_lookup`).
        self._misses: dict[tuple[str, str], DeviceContext | None] = {}
        self._started = False

    # --- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Take the study's lease, check its settings, re-attach to its trials, probe the edge."""
        self.lease.take()
        self._check_settings()
        for t in self.study.get_trials(deepcopy=False):
            if t.state is TrialState.WAITING:
                continue  # enqueued, not begun: ``study.ask`` hands it out as a new trial
            job = self._job_from_trial(t)
            self.jobs[job.key] = job
            if job.spec is not None and job.state is not JobState.FAILED:
                self._by_arch.setdefault(job.spec.arch_id, job.key)
        if self.config.baseline:
            self._start_baseline()
        self._set_capacity(self._count_workers())
        for measure in self.pipeline.measures:
            self._probe(measure)
            self.refresh_quarantine(measure.queue)
        self.recorder.flush()
        self._started = True

    def _probe(self, measure: MeasureStage) -> None:
        """The device context of a kind's queue from one of its units, for store lookups before
        anything is sent (none: the first result gives it)."""
        probe = self.dispatcher.probe_edge(timeout_s=5.0, queue=measure.queue)
        m = probe.get("measurement") if isinstance(probe, dict) else None
        if not isinstance(m, dict) or m.get("kind", DEFAULT_KIND) != measure.device:
            return
        if isinstance(m.get("backend"), dict) and "error" not in m["backend"]:
            with contextlib.suppress(KeyError, TypeError, ValueError):  # an answer we cannot read
                self.contexts[measure.queue] = DeviceContext.from_fingerprints(
                    m["device"], m["backend"], measure.device
                )

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
            if self.config.paired_ratios:
                pairing.pair_front(self, self.jobs.get(BASELINE))
        finally:
            self.recorder.flush()
            self.preparer.close()
            self.release()
        return self.summary()

    def release(self) -> None:
        """Give up the study's lease (the next orchestrator need not wait for it to go stale)."""
        self.lease.release()

    def finished(self) -> bool:
        return self._n_trials() >= self.config.trials and not self.active()

    def active(self) -> list[Job]:
        return [j for j in self.jobs.values() if not j.done]

    def wants_trials(self) -> bool:
        """Whether a step would ask a new trial now: trials remain to be asked and fewer than
        ``parallel`` candidates are in flight."""
        return self._n_trials() < self.config.trials and self._busy() < self._parallel

    def step(self) -> bool:
        """Look at every job once, send what the policy picks, ask; True if anything changed."""
        changed = False
        for job in self.active():
            changed |= self._isolated(job, self._advance)
        changed |= self._send()
        # Ask for about ASK_BUDGET_S at most, then send what was asked in this step: a step
        # that asked hundreds of trials first (a fleet's start, each ask a sampler's fit) kept
        # every worker idle until the next step. The rest are asked in the next steps.
        deadline, asked = self.clock.time() + ASK_BUDGET_S, []
        while self.wants_trials():
            asked.append(self._new_trial())
            changed = True
            if self.clock.time() >= deadline:
                break
        for job in asked:
            if not job.done:  # its store lookup, before anything is sent for it
                self._isolated(job, self._advance)
        if asked:
            self._send()
        self.recorder.flush()
        self.lease.beat()
        if self.clock.time() - self._workers_at >= WORKERS_EVERY_S:
            self._set_capacity(self._count_workers())
        self.emit("tick", None)
        return changed

    def _count_workers(self) -> dict[str, int]:
        """Live workers per queue; an answer of ``{}`` (the count failed) keeps the last one."""
        self._workers_at = self.clock.time()
        live = self.dispatcher.workers(self.pipeline.queues)
        if live:
            self._live = dict(live)
        return self._live

    def _set_capacity(self, live: dict[str, int]) -> None:
        """``1 + queue_ahead`` slots per live worker where they are counted, ``parallel``
        elsewhere; the configured ``slots`` win. ``parallel`` 0 follows the workers: twice
        their count (the tasks queued ahead are not more candidates for the sampler to wait
        on)."""
        queues = self.pipeline.queues
        workers = {**Capacity.from_workers(live, queues, 0).slots, **self.config.slots}
        ahead = Capacity.from_workers(live, queues, 0, ahead=self.config.queue_ahead).slots
        slots = {**ahead, **self.config.slots}
        if self.config.parallel == 0:
            self._parallel = max(2, 2 * sum(workers.get(q, 0) for q in queues))
        self.capacity = Capacity(slots, self._parallel)

    # --- what jobs the orchestrator has -----------------------------------------------------

    def _n_trials(self) -> int:
        return sum(1 for j in self.jobs.values() if j.number is not None)

    def _busy(self) -> int:
        return sum(1 for j in self.active() if not waits_for_source(j.attrs))

    def _new_trial(self) -> Job:
        trial = self.study.ask()
        job = Job(f"trial-{trial.number}", trial.number, {})
        self.jobs[job.key] = job
        self.recorder.adopt(job, trial)
        try:
            spec = self.space.validate(self.space.suggest(Pinned(trial, self.config.pin)))
        except Hpc2EdgeError as exc:
            self.fail(job, f"spec: {exc}")
            return job
        self._take_spec(job, spec)
        return job

    def _take_spec(self, job: Job, spec: ArchSpec) -> None:
        job.spec = spec
        self.set(job, "arch_id", spec.arch_id)
        self.set(job, "spec", spec.to_dict())
        first = self._by_arch.get(spec.arch_id)
        if first is not None and first != job.key:
            self.set(job, "duplicate_of", first)
        else:
            self._by_arch[spec.arch_id] = job.key
            self._prepare(job)

    def _job_from_trial(self, t: FrozenTrial) -> Job:
        state = OPTUNA_STATES[t.state.name]
        job = Job(f"trial-{t.number}", t.number, dict(t.user_attrs), state=state)
        self.recorder.attach(job, t)
        if "spec" in t.user_attrs:
            try:
                job.spec = ArchSpec.from_dict(t.user_attrs["spec"])
            except (Hpc2EdgeError, ValueError, TypeError, KeyError, AttributeError) as exc:
                if job.state is JobState.RUNNING:  # a finished trial's spec is not needed
                    self.fail(job, f"stored record unreadable: spec: {exc}"[:500])
        elif job.state is JobState.RUNNING:
            # Killed between ask and the spec being recorded: rebuild it from the parameters
            # Optuna recorded, if all of them were.
            try:
                fixed = optuna.trial.FixedTrial(t.params, t.number)
                spec = self.space.validate(self.space.suggest(Pinned(fixed, self.config.pin)))
            except (ValueError, Hpc2EdgeError) as exc:
                self.fail(job, f"orchestrator stopped before the candidate was built ({exc})")
                return job
            job.spec = spec
            self.set(job, "arch_id", spec.arch_id)
            self.set(job, "spec", spec.to_dict())
        return job

    def _start_baseline(self) -> None:
        stored = self.study.user_attrs.get(BASELINE)
        attrs = dict(stored) if isinstance(stored, dict) else {}
        try:
            state = JobState(attrs.get("state", "running"))
        except ValueError:
            log.warning("baseline: unreadable stored state %r; measured again", attrs["state"])
            attrs, state = {}, JobState.RUNNING
        job = Job(BASELINE, None, attrs, state=state)
        spec = self.space.baseline()
        if self.config.pin.get("frames") or self.config.pin.get("size"):
            spec = spec.with_input(self.config.pin.get("frames"), self.config.pin.get("size"))
        job.spec = spec
        self.recorder.track_study_record(job, attrs)
        if "spec" not in attrs:
            self.set(job, "arch_id", spec.arch_id)
            self.set(job, "spec", spec.to_dict())
        self.jobs[BASELINE] = job
        if job.state is not JobState.FAILED:
            self._by_arch.setdefault(spec.arch_id, BASELINE)

    # --- one job, one look ------------------------------------------------------------------

    def _isolated(self, job: Job, look: Callable[[Job], bool]) -> bool:
        """``look(job)``; a stored record that cannot be read fails that job, not the search."""
        try:
            return look(job)
        except RecordError as exc:
            self.fail(job, f"stored record unreadable: {exc}"[:500])
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # Stored values of the wrong type (any writer of the study storage can store any).
            log.exception("%s: cannot go on", job.label)
            self.fail(job, f"stored record unreadable: {type(exc).__name__}: {exc}"[:500])
        return True

    def _advance(self, job: Job) -> bool:
        if waits_for_source(job.attrs):
            return self._advance_duplicate(job)
        changed = False
        for stage in self.pipeline.stages:
            changed |= self.runner.poll(job, stage)
            if job.done:
                return True
        for stage in self.pipeline.stages:
            unsent = self.pipeline.ready(stage, job) and task(job.attrs, stage.name) is None
            if unsent and self._candidate_for(job, stage) and self._lookup(job, stage):
                changed = True
            if job.done:
                return True
        for gate in self.pipeline.gates:
            if self._gate_stops(gate, job):
                return True
        if all(s.settled(job) for s in self.pipeline.stages):
            self._complete(job)
            return True
        return changed

    def _lookup(self, job: Job, stage: Stage) -> bool:
        """The stage's store lookup, once per job and device context: a miss stays a miss until
        the kind's context changes (the probe or the first result gives it), so a candidate
        waiting for a free device is not looked up again on every step (a query each, for
        every waiting candidate: the loop's largest cost with hundreds of them)."""
        key = (job.key, stage.name)
        context = self.contexts.get(stage.queue)
        if key in self._misses and self._misses[key] == context:
            return False
        if stage.lookup(self, job):
            self._misses.pop(key, None)
            return True
        self._misses[key] = context
        return False

    def _gate_stops(self, gate: Gate, job: Job) -> bool:
        # The baseline is always trained: it is the yardstick, not a candidate. Pruned only when
        # nothing was spent on what the gate guards; without latency first the training is
        # already running: its loss is recorded and the trial is COMPLETE with the constraint
        # violated, which the samplers learn from.
        if job.number is None or not all(k in job.attrs for k in gate.needs):
            return False
        if any(self.pipeline.stage(g).started(job) for g in gate.guards):
            return False
        reason = gate.verdict(self, job)
        if reason is None:
            return False
        self._finish(job, JobState.PRUNED, reason)
        return True

    def _advance_duplicate(self, job: Job) -> bool:
        named = job.attrs["duplicate_of"]
        source = self.jobs.get(named) if isinstance(named, str) else None
        if source is None or source is job or waits_for_source(source.attrs):
            # Not a trial this study runs (the baseline of a run with --no-baseline, or a
            # stored name that never was one): this one runs on its own.
            return self._release(job)
        if not source.done:
            return False
        if source.state is JobState.FAILED:
            # The first one failed (perhaps for a passing reason): this one tries on its own.
            return self._release(job)
        results = [k for s in self.pipeline.stages for k in (s.result_key, s.summary_key) if k]
        for key in (*COPIED, *results):
            if key in source.attrs:
                self.set(job, key, source.attrs[key])
        for measure in self.pipeline.measures:
            if measure.result_key in source.attrs:
                self.set_latency(job, measure, source.attrs[measure.result_key])  # constraint
        if source.state is JobState.PRUNED:
            self._finish(job, JobState.PRUNED, source.attrs.get("reason", "pruned"))
        else:
            self._complete(job)
        return True

    def _release(self, job: Job) -> bool:
        """A duplicate on its own; stored as None (released), read the same after a restart.

        The first duplicate released takes the network over; the others copy it in turn.
        """
        assert job.spec is not None
        heir = self.jobs.get(self._by_arch.get(job.spec.arch_id, ""))
        if (
            heir is not None
            and heir is not job
            and not heir.done
            and not waits_for_source(heir.attrs)
        ):
            self.set(job, "duplicate_of", heir.key)
            return True
        self.set(job, "duplicate_of", None)
        self._by_arch[job.spec.arch_id] = job.key
        self._prepare(job)
        return True

    # --- candidates ---------------------------------------------------------------------------

    def _prepare(self, job: Job) -> None:
        """Start building the candidate early (a pool builds it while the loop goes on)."""
        if job.spec is None or job.candidate is not None:
            return
        if not self.pipeline.measure.settled(job):
            self.preparer.request(job.key, job.spec)

    def _candidate_for(self, job: Job, stage: Stage) -> bool:
        """The stage has what it needs to look up or send (building the candidate if need be)."""
        if not stage.needs_candidate or job.candidate is not None:
            return True
        assert job.spec is not None
        self.preparer.request(job.key, job.spec)
        c = self.preparer.take(job.key)
        if c is None:
            return False
        if isinstance(c, Hpc2EdgeError):
            self.fail(job, f"{stage.name}: {type(c).__name__}: {c}")
            return False
        job.candidate = c
        measure = task(job.attrs, self.pipeline.measure.name)
        sent_old_model = measure is not None and measure.in_flight
        for key in COPIED:
            # A re-export after a restart may hash differently (another torch): the hash of
            # what is on the device stays until its answer is in.
            if key not in job.attrs or not sent_old_model:
                self.set(job, key, getattr(c, key))
        return True

    # --- sending ------------------------------------------------------------------------------

    def _send(self) -> bool:
        """Offer each queue's policy the tasks that could go now; send what fits its capacity."""
        ready: dict[str, list[Ready]] = {}
        on_queue: dict[str, int] = {}
        changed = False
        for job in self.active():
            if not waits_for_source(job.attrs):
                changed |= self._isolated(job, lambda j: self._offer(j, ready, on_queue))
        for queue, offered in ready.items():
            free = self.capacity.of(queue) - on_queue.get(queue, 0)
            # Only what was offered, once each: a policy cannot send twice or jump a queue.
            ids = {id(r) for r in offered}
            chosen = [r for r in self.policy.order(queue, offered) if id(r) in ids]
            for r in {id(r): r for r in chosen}.values():
                if free <= 0:
                    break
                if r.job.done or not self.runner.due(r.job, r.stage):
                    continue
                self._isolated(r.job, functools.partial(self.runner.send, stage=r.stage))
                rec = task(r.job.attrs, r.stage.name) if not r.job.done else None
                if rec is not None and rec.in_flight:
                    free -= 1  # sent, or holding its id for a resend: a slot either way
                changed = True
        return changed

    def _offer(self, job: Job, ready: dict[str, list[Ready]], on_queue: dict[str, int]) -> bool:
        """Count the job's tasks on their queues, resend a half-sent one, offer what is ready."""
        changed = False
        for stage in self.pipeline.stages:
            if stage.settled(job):
                continue
            rec = task(job.attrs, stage.name)
            if rec is not None and rec.in_flight:
                on_queue[stage.queue] = on_queue.get(stage.queue, 0) + 1
                due = not rec.sent and self.runner.due(job, stage)
                if due and self._candidate_for(job, stage):
                    # Recorded by a run killed mid-send (or a failed send): same id, again.
                    self.runner.send(job, stage)
                    changed = True
            elif self.pipeline.ready(stage, job) and self.runner.due(job, stage):
                if self._candidate_for(job, stage):
                    ready.setdefault(stage.queue, []).append(Ready(job, stage))
                changed |= job.done
            if job.done:
                return True
        return changed

    # --- what stages and the runner call -------------------------------------------------------

    def set(self, job: Job, key: str, value: Any) -> None:
        self.recorder.set(job, key, value)

    def emit(self, event: str, job: Job | None) -> None:
        for cb in self.callbacks:
            cb(event, job)  # type: ignore[arg-type]

    def set_latency(self, job: Job, stage: MeasureStage, latency_ms: float) -> None:
        """The stage's latency; once every device kind with a budget is measured, the trial's
        constraint: the worst excess over a kind's budget (<= 0: feasible on every kind), one
        number because Optuna keeps a trial's first constraint record (samplers read it)."""
        self.set(job, stage.result_key, latency_ms)
        budgets = [(m, m.budget(self)) for m in self.pipeline.measures]
        limited = [(m.result_key, b) for m, b in budgets if b is not None]
        if stage.result_key not in {k for k, _ in limited}:
            return
        if not all(k in job.attrs for k, _ in limited):
            return
        constraint = max(job.attrs[k] - b for k, b in limited)
        self.set(job, CONSTRAINT_ATTR, constraint)
        if native_constraints():
            self.recorder.constraint(job, "latency_ms", constraint)

    def refresh_quarantine(self, queue: str) -> dict[str, str]:
        """Apply the fleet's rule to ``queue``'s units now and keep who is under quarantine
        (asked before a result is accepted: a unit found out of line has its results set
        aside and measured again on another unit)."""
        self.quarantine[queue] = self.dispatcher.quarantined(queue)
        return self.quarantine[queue]

    def fail(self, job: Job, reason: str) -> None:
        self._finish(job, JobState.FAILED, reason)

    # --- endings ----------------------------------------------------------------------------

    def _complete(self, job: Job) -> None:
        values = self.objective.values(
            job.attrs[self.pipeline.loss_key], job.attrs[self.pipeline.measure.result_key]
        )
        self.recorder.tell(job, JobState.COMPLETE, values)
        job.state = JobState.COMPLETE
        self._forget(job)
        self.emit("finished", job)

    def _finish(self, job: Job, state: JobState, reason: str) -> None:
        self.set(job, "reason", reason)
        self.recorder.tell(job, state)
        job.state = state
        self._forget(job)
        log.info("%s %s: %s", job.label, state, reason)
        self.emit("finished", job)

    def _forget(self, job: Job) -> None:
        for stage in self.pipeline.stages:
            self._misses.pop((job.key, stage.name), None)

    # --- settings -----------------------------------------------------------------------------

    def _check_settings(self) -> None:
        ua = self.study.user_attrs
        asked = study_settings.asked(
            space=self.space.name,
            objective=self.objective.to_json(),
            config=self.config,
            pipeline=self.pipeline,
            plan=self.plan.to_json(),
        )
        if ua.get("search") is None:
            # Task ids carry this id: two studies of one name in two storages never collide.
            self.recorder.set_study("search_id", uuid.uuid4().hex[:12])
            self.recorder.set_study("search", asked["search"])
            self.recorder.set_study("plan", asked["plan"])
        else:
            study_settings.check(self.study.study_name, ua, asked)
            for part, adopted in study_settings.adopted(ua, asked).items():
                # Settings an older version did not record: this run's, from now on.
                self.recorder.set_study(part, {**ua[part], **adopted})
        if ua.get(SCHEMA_ATTR) != SCHEMA:
            self.recorder.set_study(SCHEMA_ATTR, SCHEMA)  # what this run writes
        self.tag = f"{self.study.user_attrs['search_id']}-{_slug(self.study.study_name)}"

    # --- results ----------------------------------------------------------------------------

    def confirm_front(self) -> dict[int, float | None]:
        """Measure the front again with fresh tasks (:mod:`~hpc2edge.search.confirm`)."""
        return confirm.confirm_front(self)

    def front(self) -> list[FrozenTrial]:
        """The feasible Pareto-optimal (or, single-objective, the best) complete trials."""
        return front_trials(self.study)

    def counts(self) -> dict[str, Any]:
        """Trials by state, tasks sent and in flight, reuses: from memory, no I/O."""
        trials = [j for j in self.jobs.values() if j.number is not None]
        count = {s.value: sum(1 for j in trials if j.state is s) for s in JobState if s.done}
        by_queue = dict.fromkeys(self.pipeline.queues, 0)
        for j in self.active():
            for stage in self.pipeline.stages:
                rec = task(j.attrs, stage.name)
                if rec is not None and rec.in_flight and not stage.settled(j):
                    by_queue[stage.queue] += 1
        names = [s.name for s in self.pipeline.stages]
        return {
            "trials": len(trials),
            **count,
            "running": sum(1 for j in trials if not j.done),
            "in_flight": self._busy(),
            "in_flight_by_queue": by_queue,
            "exporting": self.preparer.pending(),
            "tasks_sent": tasks_sent((j.attrs for j in trials), names),
            "measurements_reused": sum(1 for j in trials if cached(j.attrs)),
        }

    def summary(self) -> dict[str, Any]:
        """:meth:`counts`, the front (read from the study) and the baseline."""
        return {
            "study": self.study.study_name,
            **self.counts(),
            "front": [t.number for t in self.front()],
            "baseline": self.jobs[BASELINE].attrs if BASELINE in self.jobs else None,
        }


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:60]


__all__ = [
    "BASELINE",
    "LEASE_ATTR",
    "LEASE_STALE_S",
    "Clock",
    "Job",
    "JobState",
    "Orchestrator",
    "SearchConfig",
    "SearchError",
    "SystemClock",
    "front_trials",
]
