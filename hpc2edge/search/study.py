"""Opening studies: the storage URL, the sampler, and a study that matches its objective.

The study lives in an Optuna storage: a SQLite file under the state dir by default (one host), a
PostgreSQL URL when the orchestrator, the dashboard and the report run on several hosts, or an
Optuna journal file (``journal:///PATH``, one host) for searches with hundreds of trials in
flight: an RDB storage reads every running trial back from the database on each ask, which at
fleet scale makes the sampler, not the workers, the bottleneck (docs/decisions.md, "Fleet
simulator").
Samplers:

- ``tpe`` (default): Optuna's TPE, multi-objective when the objective is ``pareto``, with
  ``constant_liar`` so that trials asked while others are in flight spread out, and the latency
  budget as each trial's constraint. Sample-efficient at the tens of trials a real search affords.
  It fits on at most 500 finished trials (the best fronts and the most recent,
  :mod:`hpc2edge.search.history`), so that its ask does not grow with a fleet-scale study.
- ``nsga2``: NSGA-II with constraints; needs a few generations (population 20 here) to pay off.
- ``random``: the control the benchmark compares against.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna

from hpc2edge.errors import SearchError
from hpc2edge.search.history import bounded
from hpc2edge.search.objectives import Objective, constraints_func, native_constraints
from hpc2edge.util.filemodes import journal_path, private_file, private_sqlite

SAMPLERS = ("tpe", "nsga2", "random")


def storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB storage (SQLite waits for its lock instead of failing under concurrent writers),
    or Optuna's journal storage for a ``journal:///PATH`` URL (a file on this host: reads come
    from its in-memory replay, so asks do not slow down with hundreds of trials running)."""
    journal = journal_path(url)
    if journal is not None:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        private_file(journal)  # 0600 from the start, as the SQLite file
        return JournalStorage(JournalFileBackend(str(journal)))
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        private_sqlite(url)  # 0600 from the start: the study holds every trial's record
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 30}})
    return optuna.storages.RDBStorage(url)


def make_sampler(
    name: str, objective: Objective, *, seed: int | None, trials: int
) -> optuna.samplers.BaseSampler:
    budget = objective.latency_budget_ms is not None
    constraints = constraints_func if budget and not native_constraints() else None
    if name == "tpe":
        with warnings.catch_warnings():  # multivariate is "experimental" since Optuna 2.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            tpe = optuna.samplers.TPESampler(
                seed=seed,
                n_startup_trials=max(4, min(10, trials // 3)),
                multivariate=True,
                group=True,
                constant_liar=True,
                constraints_func=constraints,
            )
        return bounded(tpe)  # an ask that does not grow with the study (search/history.py)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(
            seed=seed, population_size=20, constraints_func=constraints
        )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"sampler {name!r} is not one of {', '.join(SAMPLERS)}")


def open_study(
    name: str, url: str, objective: Objective, sampler: optuna.samplers.BaseSampler
) -> optuna.Study:
    """Create the study, or load it to resume; its directions must match ``objective``."""

    st = storage(url)
    study = optuna.create_study(
        study_name=name,
        storage=st,
        directions=[optuna.study.StudyDirection.MINIMIZE] * len(objective.directions),
        sampler=sampler,
        load_if_exists=True,
    )
    want = [optuna.study.StudyDirection.MINIMIZE] * len(objective.directions)
    if list(study.directions) != want:
        raise SearchError(
            f"study {name!r} has {len(study.directions)} objective(s), objective "
            f"{objective.name!r} needs {len(want)}: use another --study name"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(objective.metric_names)
    return study


def load_study(name: str, url: str) -> optuna.Study:
    """An existing study, for reports and dashboards (no sampler needed)."""

    try:
        return optuna.load_study(study_name=name, storage=storage(url))
    except KeyError as exc:
        names = ", ".join(s.study_name for s in optuna.get_all_study_summaries(storage(url)))
        from hpc2edge.config import mask_url

        where = mask_url(url)
        raise SearchError(f"no study {name!r} in {where} (studies: {names or 'none'})") from exc


def study_names(url: str) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(storage(url))]


def quiet_optuna() -> None:
    """Optuna logs every trial at INFO; the orchestrator prints its own progress."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)


__all__ = [
    "SAMPLERS",
    "load_study",
    "make_sampler",
    "open_study",
    "quiet_optuna",
    "storage",
    "study_names",
]
