"""Every write the search makes about its jobs and settings, through Optuna's public API.

(The lease, :mod:`~hpc2edge.search.lease`, writes its own study attribute: its heartbeat runs on
its own rhythm and must not wait for a job's flush.)

A job's attributes change in memory (:meth:`Recorder.set`) and reach the storage on
:meth:`Recorder.flush`: before anything is sent (what a restarted run needs is recorded before
the action it describes), before a trial is told (a finished trial takes no more attributes) and
at the end of every step. A key set twice between flushes is written once; an unchanged value is
not written at all.

Writes go through a trial's :class:`optuna.trial.Trial` handle: the one ``study.ask`` returned.
A trial re-attached after a restart has no such handle and Optuna offers no public way to get
one for a running trial, so :meth:`Recorder.attach` builds it once per trial and run (the one
place this code makes a ``Trial``: its constructor asks the storage and the sampler, which cost
milliseconds per call when it was done per write, see docs/decisions.md).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpc2edge.search.records import JobState

if TYPE_CHECKING:
    from hpc2edge.search.records import Job

_UNSET = object()


class Recorder:
    """Buffered attribute writes, tells and constraints for the jobs of one study."""

    def __init__(self, study: optuna.Study) -> None:
        self.study = study
        self._handles: dict[str, optuna.trial.Trial] = {}
        self._stored: dict[str, dict[str, Any]] = {}
        self._dirty: dict[str, set[str]] = {}
        self._jobs: dict[str, Job] = {}
        #: Storage writes made (tests and the bench count them).
        self.writes = 0

    # --- handles ---------------------------------------------------------------------------

    def adopt(self, job: Job, trial: optuna.trial.Trial) -> None:
        """A trial this run asked for: write through the handle ``study.ask`` returned."""
        self._handles[job.key] = trial
        self._track(job, {})

    def attach(self, job: Job, frozen: FrozenTrial) -> None:
        """A trial recorded by an earlier run: a handle for it if it still runs."""
        if job.state is JobState.RUNNING:
            # The one Trial this code builds, and the one private attribute it reads: Optuna
            # has no public way from a frozen trial to a handle that can write.
            self._handles[job.key] = optuna.trial.Trial(self.study, frozen._trial_id)
        self._track(job, dict(job.attrs))

    def track_study_record(self, job: Job, stored: dict[str, Any]) -> None:
        """A job kept as one study attribute (the baseline) under ``job.key``."""
        self._track(job, dict(stored))

    def _track(self, job: Job, stored: dict[str, Any]) -> None:
        self._jobs[job.key] = job
        self._stored[job.key] = stored
        self._dirty.setdefault(job.key, set())

    # --- attributes ------------------------------------------------------------------------

    def set(self, job: Job, key: str, value: Any) -> None:
        job.attrs[key] = value
        if self._stored.get(job.key, {}).get(key, _UNSET) != value:
            self._dirty.setdefault(job.key, set()).add(key)

    def flush(self, job: Job | None = None) -> None:
        """Write what changed (for ``job``, or for every job)."""
        keys = [job.key] if job is not None else [k for k, d in self._dirty.items() if d]
        for key in keys:
            dirty = self._dirty.get(key)
            if not dirty:
                continue
            j = self._jobs[key]
            stored = self._stored[key]
            if j.number is None:
                self.study.set_user_attr(j.key, dict(j.attrs))
                self.writes += 1
                stored.update(j.attrs)
            else:
                handle = self._handles[key]
                for name in sorted(dirty):
                    handle.set_user_attr(name, j.attrs[name])
                    stored[name] = j.attrs[name]
                    self.writes += 1
            dirty.clear()

    def set_study(self, key: str, value: Any) -> None:
        self.study.set_user_attr(key, value)
        self.writes += 1

    # --- endings ---------------------------------------------------------------------------

    def constraint(self, job: Job, name: str, value: float) -> None:
        """Optuna's own constraint record (samplers read it there), once per trial."""
        handle = self._handles.get(job.key)
        if handle is None:
            return
        with warnings.catch_warnings():
            # Set by an earlier run already (a restart between latency and training): Optuna
            # keeps the first value, which is this one, and warns.
            warnings.simplefilter("ignore")
            handle.set_constraint(name, value)
        self.writes += 1

    def tell(self, job: Job, state: JobState, values: Sequence[float] | None = None) -> None:
        """Finish ``job``: attributes first (a finished trial takes no more), then the state."""
        if job.number is None:
            self.set(job, "state", state.value)
            self.flush(job)
            return
        self.flush(job)
        optuna_state = {
            JobState.COMPLETE: TrialState.COMPLETE,
            JobState.PRUNED: TrialState.PRUNED,
            JobState.FAILED: TrialState.FAIL,
        }[state]
        self.study.tell(job.number, values, state=optuna_state, skip_if_finished=True)
        self.writes += 1
        self._handles.pop(job.key, None)


__all__ = ["Recorder"]
