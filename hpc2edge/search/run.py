"""One search from its options: open (or resume) the study, build the orchestrator, run it.

What ``hpc2edge search`` and ``demo`` run, and what the end-to-end tests and ``bench/search.py``
call with their own dispatcher. ``o`` holds the search's options under the names of the command's
options (``space_name``, ``objective``, ``latency_budget_ms``, ``sampler``, ``seed``, ...).

Before the first trial is asked, :func:`preflight` checks that the queues the search sends to
have a live worker: a search against a queue nobody consumes would only time out, trial after
trial, half an hour each. A dispatcher that cannot tell (``workers()`` is ``{}``, as the inline
one in tests answers) is not stopped. The commands ask for the check (``wait_workers_s``); a
caller that leaves it out (the tests of a device that goes away) runs without it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hpc2edge.config import Settings, measurement_store_url, study_storage_url
from hpc2edge.errors import SearchError
from hpc2edge.roles import DEFAULT_KIND, QUEUE_EDGE, QUEUE_TRAIN, check_kind, kind_of_queue

#: The queues a search of the default device kind sends to, and how to start a worker for each
#: (as docs/design.md); a search of other kinds needs theirs (``edge.<kind>``).
NEEDED_QUEUES = (QUEUE_EDGE, QUEUE_TRAIN)
START_WORKER = {
    QUEUE_EDGE: "`celery -A hpc2edge worker -Q edge --pool solo -c 1` on the edge device",
    QUEUE_TRAIN: "`celery -A hpc2edge worker -Q train -c 1` on a GPU node "
    "(workers/hpc/train-worker.sbatch)",
}
POLL_WORKERS_S = 2.0


class NoLiveWorkers(SearchError):
    """A queue the search needs has no live worker (exit status 2: start one, rerun)."""

    exit_code = 2

    def __init__(self, queues: Sequence[str], waited_s: float = 0.0) -> None:
        self.queues = list(queues)
        names = " and ".join(self.queues)
        noun = "queue" if len(self.queues) == 1 else "queues"
        waited = f" after waiting {waited_s:g} s" if waited_s > 0 else ""
        start = "; ".join(START_WORKER.get(q) or _start_kind(q) for q in self.queues)
        super().__init__(
            f"no live worker on the {names} {noun}{waited}: start {start} "
            "(`hpc2edge up` starts both on this machine, `hpc2edge status` lists the workers; "
            "--wait-workers S waits for them)"
        )


def _start_kind(queue: str) -> str:
    kind = kind_of_queue(queue) or queue
    return (
        f"`celery -A hpc2edge worker -Q {queue}` on a device whose config says "
        f'[edge] kind = "{kind}" (no worker of that kind has announced itself)'
    )


def parse_devices(values: Sequence[str]) -> tuple[tuple[str, float | None], ...]:
    """``--device KIND[:BUDGET_MS]`` values -> ``((kind, budget), ...)``; none: the default kind.

    Raises:
        ValueError: a kind that is not a kind name, a budget that is not a positive number of
            ms, or a kind given twice (one line naming it).
    """
    out: list[tuple[str, float | None]] = []
    for value in values or (DEFAULT_KIND,):
        kind, _, budget_text = value.partition(":")
        check_kind(kind)
        budget = None
        if budget_text:
            try:
                budget = float(budget_text)
            except ValueError:
                budget = -1.0
            if not (0 < budget < float("inf")):
                raise ValueError(f"--device {value}: the budget is a positive number of ms")
        if any(k == kind for k, _ in out):
            raise ValueError(f"--device {kind}: given twice")
        out.append((kind, budget))
    return tuple(out)


def missing_workers(dispatcher: Any, queues: Sequence[str] = NEEDED_QUEUES) -> list[str]:
    """The queues of ``queues`` that have no live worker, as the dispatcher reports them.

    A dispatcher that cannot tell (``workers()`` is ``{}``) misses nothing; one that reports
    workers misses every queue it reports none for, a device kind nobody serves included.
    """
    live = dispatcher.workers(queues)
    if not live:
        return []
    return [q for q in queues if live.get(q, 0) == 0]


def preflight(
    dispatcher: Any,
    wait_s: float = 0.0,
    *,
    queues: Sequence[str] = NEEDED_QUEUES,
    say: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    poll_s: float = POLL_WORKERS_S,
) -> None:
    """Return when every queue the search needs has a live worker (or nobody can tell).

    Args:
        dispatcher: asked through ``workers()``.
        wait_s: how long to wait for missing workers, polling every ``poll_s``.
        say: where the waiting is announced (default: a line on stderr).
        clock, sleep: monotonic time and sleeping (tests pass fakes).

    Raises:
        NoLiveWorkers: a needed queue still has no live worker.
    """
    say = say or _say
    missing = missing_workers(dispatcher, queues)
    if missing and wait_s > 0:
        say(
            f"waiting up to {wait_s:g} s for a worker on the {' and '.join(missing)} "
            f"queue{'s' if len(missing) > 1 else ''}"
        )
        deadline = clock() + wait_s
        while missing and clock() < deadline:
            sleep(max(0.0, min(poll_s, deadline - clock())))
            missing = missing_workers(dispatcher, queues)
        if not missing:
            say("workers are live on every queue: starting")
    if missing:
        raise NoLiveWorkers(missing, waited_s=wait_s)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


#: Live train workers from which an RDB study storage is the loop's bottleneck (measured in the
#: simulator: docs/decisions.md, "At fleet scale the study storage is the bottleneck").
RDB_FLEET_WORKERS = 32


def storage_advice(url: str, dispatcher: Any) -> str | None:
    """A line of advice when ``url`` is an RDB storage (SQLite, PostgreSQL) and the train queue
    has :data:`RDB_FLEET_WORKERS` or more live workers: every ask then reads every running
    trial back from the database (twice the live workers are in flight). None otherwise, or
    when the dispatcher cannot tell."""
    if url.startswith("journal:"):
        return None
    try:
        train = int(dispatcher.workers([QUEUE_TRAIN]).get(QUEUE_TRAIN, 0))
    except Exception:  # advice only: a broker that cannot answer now changes nothing
        return None
    if train < RDB_FLEET_WORKERS:
        return None
    return (
        f"{train} live train workers on an RDB study storage: every ask reads all the trials "
        f"in flight back from the database, and at this scale that is most of the loop's time "
        f"(simulated: ~0.5 s per trial on SQLite at 256 workers, idling half the fleet); a "
        f'journal file is ~10x cheaper on one host: search.storage = "journal:///PATH"'
    )


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
    log_format: str = "auto",
    wait_workers_s: float | None = None,
    **o: Any,
) -> tuple[dict[str, Any], Any]:
    """Open (or resume) the study and run it; returns (summary, study).

    ``progress`` shows it on stderr (:class:`~hpc2edge.search.progress.Progress`, as
    ``log_format``). With ``wait_workers_s`` (0: check, do not wait) :func:`preflight` checks
    for live workers first, waiting that long for missing ones; ``None`` skips the check.

    Raises:
        NoLiveWorkers: a queue the search needs has no live worker (after ``wait_workers_s``).
    """
    from hpc2edge.search import candidate as cand
    from hpc2edge.search import study as st
    from hpc2edge.search.dispatch import CeleryDispatcher
    from hpc2edge.search.objectives import Objective
    from hpc2edge.search.orchestrator import Orchestrator, SearchConfig
    from hpc2edge.search.progress import Progress
    from hpc2edge.space import get_space
    from hpc2edge.space.base import TrainingHParams
    from hpc2edge.store.measurements import MeasurementStore

    st.quiet_optuna()
    space = get_space(o["space_name"])
    devices = parse_devices(o.get("devices") or ())
    budget = o["latency_budget_ms"]
    first, first_budget = devices[0]
    if first_budget is not None:
        if budget is not None and budget != first_budget:
            raise ValueError(
                f"--device {first}:{first_budget:g} and --latency-budget {budget:g} disagree: "
                "the first kind's budget is the latency budget; give it once"
            )
        budget = first_budget
        devices = ((first, None), *devices[1:])
    objective = Objective(o["objective"], budget)
    pin = {k: o[k] for k in ("frames", "size") if o.get(k)}
    config = SearchConfig(
        trials=trials,
        parallel=o["parallel"],
        export_workers=o.get("export_workers", 0),
        latency_first=o["latency_first"],
        batch_size=o["batch_size"],
        precision=o["precision"],
        protocol=o["protocol"],
        measure_timeout_s=float(settings.search.measure_timeout_s),
        train_timeout_s=float(settings.search.train_timeout_s),
        retries=settings.search.retries,
        baseline=o["baseline"],
        confirm_front=o["confirm_front"],
        paired_ratios=o.get("paired_ratios", True),
        pin=pin,
        devices=devices,
    )
    plan = cand.TrainPlan(
        data_paths=cand.data_paths(data),
        hparams=TrainingHParams(
            lr=o["lr"],
            batch_size_per_gpu=o["train_batch_size"],
            epochs=o["epochs"],
            lr_step_epochs=o.get("lr_step_epochs", TrainingHParams.lr_step_epochs),
            lr_gamma=o.get("lr_gamma", TrainingHParams.lr_gamma),
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
        if wait_workers_s is not None:
            preflight(dispatcher, wait_workers_s, queues=config.pipeline().queues)
            advice = storage_advice(url, dispatcher)
            if advice:
                _say(f"warning: {advice}")
        orch = Orchestrator(study, dispatcher, space, objective, store, plan, config)
        shown = Progress(orch, log_format=log_format) if progress else None
        if shown is not None:
            orch.callbacks.append(shown)
        try:
            summary = orch.run()
        except BaseException:
            if shown is not None:
                shown.close(finished=False)  # the error says what happened, not a status line
            raise
        if shown is not None:
            shown.close()
    finally:
        if own_dispatcher:
            dispatcher.close()
        store.close()
    summary["storage"] = url
    return summary, study
