"""One search from its options: open (or resume) the study, build the orchestrator, run it.

What ``hpc2edge search`` and ``demo`` run, and what the end-to-end tests and ``bench/search.py``
call with their own dispatcher. ``o`` holds the search's options under the names of the command's
options (``space_name``, ``objective``, ``latency_budget_ms``, ``sampler``, ``seed``, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hpc2edge.config import Settings, measurement_store_url, study_storage_url
from hpc2edge.search.progress import Progress


def run_search(
    settings: Settings,
    *,
    study_name: str,
    data: Path,
    trials: int,
    storage_url: str | None = None,
    store_url: str | None = None,
    dispatcher: Any = None,
    progress: bool = True,
    **o: Any,
) -> tuple[dict[str, Any], Any]:
    """Open (or resume) the study and run it; returns (summary, study)."""
    from hpc2edge.search import candidate as cand
    from hpc2edge.search import study as st
    from hpc2edge.search.dispatch import CeleryDispatcher
    from hpc2edge.search.objectives import Objective
    from hpc2edge.search.orchestrator import Orchestrator, SearchConfig
    from hpc2edge.space import get_space
    from hpc2edge.space.base import TrainingHParams
    from hpc2edge.store.measurements import MeasurementStore

    st.quiet_optuna()
    space = get_space(o["space_name"])
    objective = Objective(o["objective"], o["latency_budget_ms"])
    pin = {k: o[k] for k in ("frames", "size") if o.get(k)}
    config = SearchConfig(
        trials=trials,
        parallel=o["parallel"],
        latency_first=o["latency_first"],
        batch_size=o["batch_size"],
        precision=o["precision"],
        protocol=o["protocol"],
        measure_timeout_s=float(settings.search.measure_timeout_s),
        train_timeout_s=float(settings.search.train_timeout_s),
        retries=settings.search.retries,
        baseline=o["baseline"],
        confirm_front=o["confirm_front"],
        pin=pin,
    )
    plan = cand.TrainPlan(
        data_paths=cand.data_paths(data),
        hparams=TrainingHParams(
            lr=o["lr"], batch_size_per_gpu=o["train_batch_size"], epochs=o["epochs"]
        ),
        epochs=o["epochs"],
        test_fraction=o["test_fraction"],
        resources={"engine": o["engine"], "nproc": "auto"},
    )
    url = study_storage_url(settings, storage_url)
    sampler = st.make_sampler(o["sampler"], objective, seed=o["seed"], trials=trials)
    study = st.open_study(study_name, url, objective, sampler)
    done = len(study.get_trials(deepcopy=False))
    if done and o["seed"] is not None:
        # Resuming: a sampler seeded as at the start would replay the first asks (duplicates).
        study.sampler = st.make_sampler(
            o["sampler"], objective, seed=o["seed"] + done, trials=trials
        )
    store = MeasurementStore(measurement_store_url(settings, store_url))
    own_dispatcher = dispatcher is None
    dispatcher = dispatcher or CeleryDispatcher(settings)
    try:
        orch = Orchestrator(study, dispatcher, space, objective, store, plan, config)
        if progress:
            p = Progress(orch)
            orch.callbacks.append(p)
        summary = orch.run()
        if progress:
            p.tick(force=True)
    finally:
        if own_dispatcher:
            dispatcher.close()
        store.close()
    summary["storage"] = url
    return summary, study
