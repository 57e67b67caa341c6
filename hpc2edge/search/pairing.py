"""``--paired-ratios``: each front member's speed-up measured against the baseline in one task.

A speed-up taken as baseline p50 / member p50 divides two measurements made at different times,
perhaps on different units of a kind: on a loaded CPU the same baseline measured 49 ms in one
demo and 130 ms in another. After the search, every front member of every device kind (the
primary kind's :func:`~hpc2edge.search.objectives.front_trials`, another kind's
:func:`~hpc2edge.search.objectives.kind_front`) is sent once more, on that kind's queue, with
the baseline as the request's ``pair``: one unit times both in alternation
(:mod:`hpc2edge.latency.pairing`) and returns the median per-pair ratio baseline / member with
its 95 % CI.

What is kept, per kind, is one study attribute (a finished trial takes no more attributes):
``paired`` for the primary kind, ``paired@<kind>`` for another (:func:`attr_name`, as
:class:`~hpc2edge.search.stages.MeasureStage` names its own), mapping the trial number to a
:class:`PairRecord`. As everywhere else, the record of a task (state ``sent``) is written
before the task is sent, so a restarted run polls it instead of sending another. A result is
checked at this trust boundary: the member's part by the stage's own check (network, kind,
model), the pair's by :func:`speedup_of` (the baseline's network and model, a well-formed ratio
at the stage's batch size). A candidate that cannot be built, a send that fails, a timeout or a
malformed result fails that pair only (state ``failed``, with the reason); never the study.

Skipped for a kind on which the baseline has no latency (``--no-baseline``, or a baseline that
failed before it was measured there): there is no speed-up to replace; and for a kind whose
queue has no live unit at the end of the search (the front keeps its unpaired speed-ups).
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from hpc2edge.errors import ExportError, Hpc2EdgeError
from hpc2edge.latency.pairing import RatioStats
from hpc2edge.latency.service import PAIR_FIELDS
from hpc2edge.search import prepare
from hpc2edge.search.confirm import Orchestrator  # what a pass over the front uses of it
from hpc2edge.search.objectives import kind_front
from hpc2edge.search.stages import Host, MeasureStage, ResultRejected
from hpc2edge.transport import taskids

if TYPE_CHECKING:
    from hpc2edge.search.candidate import Candidate
    from hpc2edge.search.dispatch import Outcome
    from hpc2edge.search.records import Job


log = logging.getLogger(__name__)

ATTR = "paired"
MAX_REASON_CHARS = 500


def attr_name(kind: str, primary: bool) -> str:
    """The study attribute of a kind's pairs: ``paired`` for the study's own kind,
    ``paired@<kind>`` for another (the suffix of :attr:`MeasureStage.suffix`)."""
    return ATTR if primary else f"{ATTR}@{kind}"


class PairState(str, enum.Enum):
    """A pair's state: its task sent (polled after a restart), measured, or failed."""

    SENT = "sent"
    OK = "ok"
    FAILED = "failed"


@dataclass(frozen=True)
class PairRecord:
    """One front member's paired measurement against the baseline, as stored.

    Attributes:
        state: where it stands.
        task: the task's id (fresh, on the kind's queue).
        sent_at: when it was sent (Unix time; its timeout counts from there).
        baseline_sha256: the baseline's model as sent, which the result must name.
        speedup: median per-pair ratio baseline / member (> 1: the member is faster).
        ci95: that median's 95 % CI.
        pairs: pairs timed.
        stopped_by: the rule that ended the paired series.
        unit: the worker that timed both.
        reason: why there is no speed-up (``failed``).
    """

    state: PairState
    task: str | None = None
    sent_at: float | None = None
    baseline_sha256: str | None = None
    speedup: float | None = None
    ci95: tuple[float, float] | None = None
    pairs: int | None = None
    stopped_by: str | None = None
    unit: str | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if v is not None}
        out["state"] = self.state.value
        if self.ci95 is not None:
            out["ci95"] = list(self.ci95)
        return out

    @classmethod
    def from_json(cls, data: Any) -> PairRecord:
        """A stored record (any writer of the study storage can store any value): the one
        reader of this schema, for the search and the report.

        Raises:
            ValueError: not a record this version wrote.
        """
        if not isinstance(data, dict):
            raise ValueError("a pair record must be an object")
        state = PairState(data.get("state"))

        def typed(key: str, kind: type | tuple[type, ...]) -> Any:
            value = data.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
                raise ValueError(f"a pair record's {key} is a {type(value).__name__}")
            return value

        task, sent_at = typed("task", str), typed("sent_at", (int, float))
        if state is PairState.SENT and (task is None or sent_at is None):
            raise ValueError("a sent pair needs its task id and send time")
        speedup, ci = None, None
        if state is PairState.OK:
            ratio = RatioStats.from_json(
                {**data, "median": data.get("speedup"), "ci95": data.get("ci95")}
            )
            speedup, ci = ratio.median, ratio.ci95
        return cls(
            state,
            task=task,
            sent_at=None if sent_at is None else float(sent_at),
            baseline_sha256=typed("baseline_sha256", str),
            speedup=speedup,
            ci95=ci,
            pairs=typed("pairs", int),
            stopped_by=typed("stopped_by", str),
            unit=typed("unit", str),
            reason=typed("reason", str),
        )

    @classmethod
    def failed(cls, reason: str, task: str | None = None) -> PairRecord:
        return cls(PairState.FAILED, task=task, reason=reason[:MAX_REASON_CHARS])


def pair_front(o: Orchestrator, baseline: Job | None) -> dict[str, dict[int, float | None]]:
    """Pair every front member of every kind with ``baseline``, once; the speed-ups per
    attribute and trial (None where a pair failed). Nothing without a baseline."""
    if baseline is None or baseline.spec is None:
        return {}
    return _Pairing(o, baseline).run()


def stored(user_attrs: Mapping[str, Any], name: str) -> dict[int, PairRecord]:
    """The readable records of study attribute ``name`` by trial number (the others left out:
    any writer of the study storage can store any value)."""
    entries = user_attrs.get(name)
    out: dict[int, PairRecord] = {}
    for key, value in entries.items() if isinstance(entries, dict) else ():
        with contextlib.suppress(ValueError):
            if isinstance(key, str) and key.isdigit():
                out[int(key)] = PairRecord.from_json(value)
    return out


def timeout_s(o: Host, stage: MeasureStage) -> float:
    """From the send to the result: twice a measurement's, as a pair times two models."""
    return 2 * stage.timeout_s(o)


class _Pairing:
    """One :func:`pair_front`: the records of each kind's attribute, and the tasks in flight."""

    def __init__(self, o: Orchestrator, baseline: Job) -> None:
        self.o = o
        self.baseline = baseline
        self.records: dict[str, dict[str, Any]] = {}
        self.pending: dict[tuple[str, str], tuple[MeasureStage, Job, PairRecord]] = {}
        self._baseline_error: Hpc2EdgeError | None = None
        self._pair_field: dict[str, dict[str, Any]] = {}

    def run(self) -> dict[str, dict[int, float | None]]:
        for stage in self.o.pipeline.measures:
            if stage.result_key not in self.baseline.attrs:
                continue  # no speed-up to replace
            if self.o.dispatcher.workers([stage.queue]).get(stage.queue, 1) == 0:
                # Nobody would answer: the search is over, and waiting out the timeout (an
                # hour with the defaults) would only delay its summary.
                log.warning("no live unit on %s: its paired ratios are skipped", stage.queue)
                continue
            self._start(stage)
        while self.pending:
            for (name, key), (stage, job, rec) in list(self.pending.items()):
                self._poll(name, key, stage, job, rec)
            self.o.lease.beat()  # a long wait must not let the lease go stale
            if self.pending:
                self.o.clock.sleep(self.o.config.poll_interval_s)
        return {
            name: {int(k): v.get("speedup") for k, v in entries.items() if isinstance(v, dict)}
            for name, entries in self.records.items()
        }

    def _start(self, stage: MeasureStage) -> None:
        """Send the kind's front members not paired yet; poll those a stopped run sent."""
        o, name = self.o, attr_name(stage.device, stage.primary)
        kept = o.study.user_attrs.get(name)
        self.records[name] = dict(kept) if isinstance(kept, dict) else {}
        front = o.front() if stage.primary else kind_front(o.study, stage.result_key)
        for t in front:
            key, job = str(t.number), o.jobs.get(f"trial-{t.number}")
            if job is None:
                continue  # not a job of this run: nothing to send it from
            try:
                rec = PairRecord.from_json(self.records[name].get(key))
            except ValueError:
                rec = None  # none yet, or unreadable: measured (again)
            if rec is not None and rec.state is not PairState.SENT:
                continue
            if rec is None:
                try:
                    rec = self._send(stage, job, name, key)
                except Hpc2EdgeError as exc:
                    self._record(name, key, PairRecord.failed(f"not sent: {_named(exc)}"))
                    continue
            self.pending[(name, key)] = (stage, job, rec)

    def _send(self, stage: MeasureStage, job: Job, name: str, key: str) -> PairRecord:
        """Send the member (A) with the baseline (B) as its pair; the record is written first."""
        o = self.o
        baseline = self._baseline()
        _build(o, job)
        payload = stage.payload(o, job)
        if stage.name not in self._pair_field:  # the baseline's artifact, stored once per kind
            b = stage.payload(o, self.baseline)
            self._pair_field[stage.name] = {k: b[k] for k in sorted(PAIR_FIELDS)}
        payload["pair"] = self._pair_field[stage.name]
        task = taskids.new(stage.queue)
        rec = PairRecord(
            PairState.SENT, task=task, sent_at=o.clock.time(), baseline_sha256=baseline.onnx_sha256
        )
        self._record(name, key, rec)
        o.dispatcher.submit(stage.kind, payload, task, timeout_s(o, stage))
        return rec

    def _baseline(self) -> Candidate:
        """The baseline's candidate, built once (a failure fails every pair, once)."""
        if self._baseline_error is not None:
            raise self._baseline_error
        try:
            _build(self.o, self.baseline)
        except Hpc2EdgeError as exc:
            self._baseline_error = ExportError(f"the baseline: {_named(exc)}")
            raise self._baseline_error from None
        assert self.baseline.candidate is not None
        return self.baseline.candidate

    def _poll(self, name: str, key: str, stage: MeasureStage, job: Job, rec: PairRecord) -> None:
        o = self.o
        assert rec.task is not None and rec.sent_at is not None
        try:
            outcome = o.dispatcher.poll(rec.task)
        except Hpc2EdgeError as exc:  # the broker is away, or a result failed to verify
            log.warning("pairing trial %s on %s: %s", key, stage.device, exc)
            outcome = None
        if outcome is None and o.clock.time() - rec.sent_at <= timeout_s(o, stage):
            return
        del self.pending[(name, key)]
        self._record(name, key, paired(stage, job, rec, outcome))
        o.dispatcher.forget(rec.task)

    def _record(self, name: str, key: str, rec: PairRecord) -> None:
        self.records[name][key] = rec.to_json()
        self.o.recorder.set_study(name, self.records[name])


def _build(o: Orchestrator, job: Job) -> None:
    """Make sure ``job`` has its candidate (export and reference outputs)."""
    assert job.spec is not None
    if job.candidate is None:
        built = prepare.build(job.spec, o.config.export_seed)
        if isinstance(built, Hpc2EdgeError):
            raise built
        job.candidate = built


def _named(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def paired(stage: MeasureStage, job: Job, sent: PairRecord, outcome: Outcome | None) -> PairRecord:
    """What one paired task recorded: its speed-up, or why there is none."""
    if outcome is None:
        return PairRecord.failed("timeout", sent.task)
    if not outcome.ok or outcome.result is None:
        return PairRecord.failed(outcome.reason, sent.task)
    try:
        summary = stage.check(job, outcome.result)
        ratio = speedup_of(stage, outcome.result, sent)
    except (ResultRejected, ValueError, TypeError, KeyError) as exc:  # any worker can write any
        return PairRecord.failed(f"result rejected: {_named(exc)}", sent.task)
    return PairRecord(
        PairState.OK,
        task=sent.task,
        sent_at=sent.sent_at,
        baseline_sha256=sent.baseline_sha256,
        speedup=ratio.median,
        ci95=ratio.ci95,
        pairs=ratio.pairs,
        stopped_by=ratio.stopped_by,
        unit=str(summary["worker"])[:200] if summary.get("worker") is not None else None,
    )


def speedup_of(stage: MeasureStage, result: dict[str, Any], sent: PairRecord) -> RatioStats:
    """The ratio baseline / member of the ``compute`` series at the stage's batch size.

    Raises:
        ResultRejected: the result has no pair, or its pair is another model than the baseline
            sent, or it has no ratio at this batch size.
        ValueError: the ratio record is malformed.
    """
    pair = result.get("pair")
    if not isinstance(pair, dict):
        raise ResultRejected("the result has no paired measurement")
    if pair.get("onnx_sha256") != sent.baseline_sha256:
        raise ResultRejected("the pair is another ONNX model than the baseline sent")
    ratios = pair.get("ratios")
    if not isinstance(ratios, list):
        raise ResultRejected("the pair has no ratios")
    for r in ratios:
        if isinstance(r, dict) and r.get("batch_size") == stage.batch_size:
            return RatioStats.from_json(r.get("compute"))
    raise ResultRejected(f"the pair has no ratio at batch size {stage.batch_size}")


__all__ = [
    "ATTR",
    "PairRecord",
    "PairState",
    "attr_name",
    "pair_front",
    "paired",
    "speedup_of",
    "stored",
]
