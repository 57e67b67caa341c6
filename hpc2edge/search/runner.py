"""A stage's task from send to result, once for every stage: send, poll, time out, retry, back off.

The runner owns a job's :class:`~hpc2edge.search.records.TaskRecord` for each stage and the rules
that move it:

- **send**: build the payload (an artifact may be stored), record the task with a new random id
  bound to its queue (:mod:`hpc2edge.transport.taskids`), *then* submit it. A send that fails
  (the broker away, an artifact that cannot be stored) is counted in ``send_failures`` and tried
  again after an exponential back-off (``backoff_s``, doubling, at most 60 s), under the same id
  when one was recorded; after ``send_retries`` failed sends of one attempt the trial fails. A
  payload that cannot be built for reasons of the candidate (export, spec) fails it at once.
- **poll**: ``None`` until the stage's timeout from the send, then a new attempt; an ``ok``
  result goes to the stage (:meth:`~hpc2edge.search.stages.Stage.accept`), which may reject it;
  a transient error is retried after a back-off, a rejected result (forged, malformed) at once,
  an error about the candidate fails the trial.

Every attempt after a failure is a new task id; the old message carries an ``expires`` and is
dropped by the worker if it surfaces late.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from hpc2edge.errors import BrokerError, Hpc2EdgeError
from hpc2edge.search.dispatch import Outcome
from hpc2edge.search.records import TaskRecord, errors_key, stage_errors, task, task_key
from hpc2edge.transport import taskids

if TYPE_CHECKING:
    from hpc2edge.search.records import Job
    from hpc2edge.search.stages import Host, Stage

log = logging.getLogger(__name__)

MAX_SEND_BACKOFF_S = 60.0
MAX_RETRY_BACKOFF_S = 300.0
MAX_REASON_CHARS = 500


class TaskRunner:
    """Sends and polls the tasks of one orchestrator's jobs."""

    def __init__(self, o: Host) -> None:
        self.o = o

    def record(self, job: Job, stage: Stage) -> TaskRecord | None:
        return task(job.attrs, stage.name, stage.queue)

    def _store(self, job: Job, stage: Stage, rec: TaskRecord) -> None:
        self.o.set(job, task_key(stage.name), rec.to_json())

    # --- sending ---------------------------------------------------------------------------

    def due(self, job: Job, stage: Stage) -> bool:
        """The stage's task should be sent now (first time, after a back-off, or re-sent)."""
        rec = self.record(job, stage)
        if rec is None:
            return True
        if rec.sent:
            return False
        # A back-off never lasts longer than the longest one this code sets (a stored time far
        # ahead, from a skewed clock or a hostile writer, must not park the task for good).
        wait = rec.retry_at - self.o.clock.time()
        return wait <= 0 or wait > MAX_RETRY_BACKOFF_S

    def send(self, job: Job, stage: Stage) -> bool:
        """Send the stage's task; True when it reached the broker."""
        o = self.o
        rec = self.record(job, stage)
        attempt = rec.attempt if rec else 1
        failures = rec.send_failures if rec else 0
        try:
            payload = stage.payload(o, job)
        except BrokerError as exc:
            self._send_failed(job, stage, rec, attempt, failures, exc)
            return False
        except Hpc2EdgeError as exc:
            o.fail(job, f"{stage.name}: {type(exc).__name__}: {exc}")
            return False
        # A random id bound to the queue (an id derived from the trial could be planted before
        # the send); a killed-mid-send task keeps its id. The derived name is the label.
        task_id = rec.id if rec is not None and rec.id else taskids.new(stage.queue)
        new = TaskRecord(
            kind=stage.name,
            queue=stage.queue,
            attempt=attempt,
            id=task_id,
            label=f"h2e-{o.tag}-{job.key}-{stage.name}-{attempt}",
            sent=False,
            sent_at=o.clock.time(),
            send_failures=failures,
        )
        self._store(job, stage, new)
        o.recorder.flush(job)  # recorded before it is sent
        try:
            o.dispatcher.submit(stage.kind, payload, task_id, expires_s=stage.timeout_s(o))
        except BrokerError as exc:
            self._send_failed(job, stage, new, attempt, failures, exc)
            return False
        self._store(job, stage, new.evolve(sent=True))
        o.emit("sent", job)
        return True

    def _send_failed(
        self,
        job: Job,
        stage: Stage,
        rec: TaskRecord | None,
        attempt: int,
        failures: int,
        exc: Exception,
    ) -> None:
        failures += 1
        cfg = self.o.config
        what = f"{stage.name}: cannot send: {type(exc).__name__}: {exc}"[:MAX_REASON_CHARS]
        if failures > cfg.send_retries:
            self.o.fail(job, f"{what} ({failures} sends failed)")
            return
        delay = min(MAX_SEND_BACKOFF_S, cfg.backoff_s * 2 ** (failures - 1))
        log.warning("%s: %s; next send in %.0f s", job.label, what, delay)
        base = rec or TaskRecord(kind=stage.name, queue=stage.queue, attempt=attempt)
        # An id already recorded stays: the message may have gone out; a resend reuses it.
        self._store(
            job,
            stage,
            base.evolve(sent=False, send_failures=failures, retry_at=self.o.clock.time() + delay),
        )

    # --- polling ---------------------------------------------------------------------------

    def poll(self, job: Job, stage: Stage) -> bool:
        """Look at the stage's task once; True when something changed."""
        o = self.o
        rec = self.record(job, stage)
        if stage.settled(job) or rec is None or rec.id is None or not rec.sent:
            return False
        try:
            outcome = o.dispatcher.poll(rec.id)
        except BrokerError as exc:
            # The broker is away: the task is not lost (results are kept there); look again.
            log.warning("%s: cannot read the %s result yet: %s", job.label, stage.name, exc)
            outcome = None
        except Exception as exc:  # a trust boundary: whatever the record did, it fails alone
            outcome = Outcome.rejected_because(f"{type(exc).__name__}: {exc}")
        if outcome is None:
            timeout = stage.timeout_s(o)
            age = o.clock.time() - (rec.sent_at or 0.0)
            if age > timeout or -age > timeout:  # a send time far ahead is no excuse to wait
                q = stage.queue
                what = f"{q} timeout: no answer from the {q} queue in {timeout:g} s"
                self.retry_or_fail(job, stage, rec, what, backoff=False)
                return True
            return False
        if outcome.ok:
            assert outcome.result is not None
            try:
                stage.accept(o, job, rec, outcome.result)
            except Exception as exc:
                # Checked on arrival (dispatch.result_problem); what still does not fit (another
                # network's result, a store that recorded no row) is a failed attempt.
                reason = f"{stage.name}: result rejected: {type(exc).__name__}: {exc}"
                later = bool(getattr(exc, "backoff", False))
                self.retry_or_fail(job, stage, rec, reason[:MAX_REASON_CHARS], backoff=later)
                return True
            if not job.done:
                o.recorder.flush(job)  # the result is recorded before its stored copy goes
            o.dispatcher.forget(rec.id)
        elif outcome.transient:
            # A result that was not one (forged, malformed, wrongly signed) is retried at once:
            # waiting would only give whoever planted it more time.
            reason = f"{stage.name}: {outcome.reason}"
            self.retry_or_fail(job, stage, rec, reason, backoff=not outcome.rejected)
        else:
            o.fail(job, f"{stage.name}: {outcome.reason}")
        return True

    def retry_or_fail(
        self, job: Job, stage: Stage, rec: TaskRecord, reason: str, *, backoff: bool
    ) -> None:
        o = self.o
        if rec.attempt > o.config.retries:
            tries = "attempt" if rec.attempt == 1 else "attempts"
            o.fail(job, f"{reason} ({rec.attempt} {tries})")
            return
        delay = (
            min(MAX_RETRY_BACKOFF_S, o.config.backoff_s * 2 ** (rec.attempt - 1)) if backoff else 0
        )
        log.warning("%s: %s; attempt %d in %.0f s", job.label, reason, rec.attempt + 1, delay)
        o.set(job, errors_key(stage.name), [*stage_errors(job.attrs, stage.name), reason])
        self._store(
            job,
            stage,
            TaskRecord(
                kind=stage.name,
                queue=stage.queue,
                attempt=rec.attempt + 1,
                retry_at=o.clock.time() + delay,
            ),
        )


__all__ = ["MAX_SEND_BACKOFF_S", "TaskRunner"]
