"""``--confirm-front``: the final front measured again, with fresh tasks and no store lookup.

A front found from one measurement per network may hold a network whose single measurement was
lucky. Each front trial is measured once more on the study's device; the p50 (or why there is
none) is kept per trial in the study attribute ``confirm``, which the report shows beside the
search's own figure. As everywhere else, a task is recorded (``{"task": id, "sent_at": t}``)
before it is sent, so a restarted run polls it instead of sending another; a result is checked
against the network and the model sent (:meth:`~hpc2edge.search.stages.MeasureStage.check`); a
candidate that cannot be built, a send that fails, a timeout or a malformed result is recorded
as that trial's ``error`` and the others go on. The lease is renewed while it waits.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from hpc2edge.errors import Hpc2EdgeError
from hpc2edge.search import prepare
from hpc2edge.search.dispatch import Outcome
from hpc2edge.search.stages import Host, ResultRejected
from hpc2edge.transport import taskids

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from hpc2edge.search.lease import Lease
    from hpc2edge.search.records import Job
    from hpc2edge.search.stages import Pipeline


class Orchestrator(Host, Protocol):
    """What a confirmation uses of the orchestrator."""

    study: optuna.Study
    jobs: dict[str, Job]
    pipeline: Pipeline
    lease: Lease

    def front(self) -> list[FrozenTrial]: ...


log = logging.getLogger(__name__)

ATTR = "confirm"


def confirm_front(o: Orchestrator) -> dict[int, float | None]:
    """Confirm every front trial not confirmed yet; p50 per trial (None where it failed)."""
    stored = o.study.user_attrs.get(ATTR)
    confirmed: dict[str, Any] = dict(stored) if isinstance(stored, dict) else {}
    measure = o.pipeline.measure
    pending: dict[str, tuple[Job, str, float]] = {}
    for t in o.front():
        key = str(t.number)
        job = o.jobs[f"trial-{t.number}"]
        entry = confirmed.get(key)
        if isinstance(entry, dict) and isinstance(entry.get("task"), str):
            # Sent by a run that stopped before the answer: poll it.
            sent_at = entry.get("sent_at")
            when = float(sent_at) if isinstance(sent_at, (int, float)) else 0.0
            pending[key] = (job, entry["task"], when)
            continue
        if entry is not None:
            continue
        try:
            pending[key] = (job, *_send(o, job, confirmed, key))
        except Hpc2EdgeError as exc:
            confirmed[key] = {"error": f"not sent: {type(exc).__name__}: {exc}"[:500]}
            o.recorder.set_study(ATTR, confirmed)
    while pending:
        for key, (job, task_id, sent_at) in list(pending.items()):
            try:
                outcome = o.dispatcher.poll(task_id)
            except Hpc2EdgeError as exc:  # the broker is away, or a result failed to verify
                log.warning("confirming trial %s: %s", key, exc)
                outcome = None
            late = o.clock.time() - sent_at > measure.timeout_s(o)
            if outcome is None and not late:
                continue
            del pending[key]
            confirmed[key] = confirmation(o, job, outcome)
            o.recorder.set_study(ATTR, confirmed)
        o.lease.beat()  # a long confirmation must not let the lease go stale
        if pending:
            o.clock.sleep(o.config.poll_interval_s)
    return {int(k): v.get("p50_ms") if isinstance(v, dict) else None for k, v in confirmed.items()}


def _send(o: Orchestrator, job: Job, confirmed: dict[str, Any], key: str) -> tuple[str, float]:
    measure = o.pipeline.measure
    assert job.spec is not None
    if job.candidate is None:
        built = prepare.build(job.spec, o.config.export_seed)
        if isinstance(built, Hpc2EdgeError):
            raise built
        job.candidate = built
    payload = measure.payload(o, job)
    task_id = taskids.new(measure.queue)
    sent_at = o.clock.time()
    confirmed[key] = {"task": task_id, "sent_at": sent_at}
    o.recorder.set_study(ATTR, confirmed)  # recorded before it is sent
    o.dispatcher.submit(measure.kind, payload, task_id, measure.timeout_s(o))
    return task_id, sent_at


def confirmation(o: Orchestrator, job: Job, outcome: Outcome | None) -> dict[str, Any]:
    """What one confirming measurement recorded: its summary, or why there is none."""
    if outcome is None:
        return {"error": "timeout"}
    if not outcome.ok or outcome.result is None:
        return {"error": outcome.reason}
    try:
        return o.pipeline.measure.check(job, outcome.result)
    except (ResultRejected, ValueError, TypeError, KeyError) as exc:  # any worker can write any
        return {"error": f"result rejected: {type(exc).__name__}: {exc}"[:500]}


__all__ = ["ATTR", "confirm_front", "confirmation"]
