"""One simulated study: the real orchestrator, a simulated fleet, a virtual clock; what it found
and what it cost.

:func:`simulate` opens a study (in memory, or in any Optuna storage URL), builds the
:class:`~hpc2edge.search.orchestrator.Orchestrator` exactly as ``hpc2edge search`` does (same
sampler factory, objective, pipeline and send policy) but with three seams swapped: the
dispatcher (:class:`~hpc2edge.sim.fleet.SimFleet`), the clock
(:class:`~hpc2edge.sim.fleet.VirtualClock`) and the preparer (candidates from the benchmark, no
export). So a strategy tried here is the strategy a real search runs.

What it measures (:class:`SimResult`): the front and its hypervolume in a box common to every run
of a benchmark (:func:`box`: log scale on both axes), the hypervolume after each finished trial with
the virtual time and GPU-hours spent so far, the baseline, the paper's headline figure (the
speed-up of the fastest front member at least 1.35x more accurate than the trained baseline),
the orchestrator's own CPU time per trial, and each queue's use.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna

from hpc2edge.errors import Hpc2EdgeError
from hpc2edge.roles import DEFAULT_KIND
from hpc2edge.search import candidate as cand
from hpc2edge.search import study as st
from hpc2edge.search.dispatch import Dispatcher
from hpc2edge.search.history import BoundedHistory
from hpc2edge.search.lease import Clock
from hpc2edge.search.objectives import CONSTRAINT_ATTR, Objective, log_box_share, pareto_front
from hpc2edge.search.orchestrator import BASELINE, Orchestrator
from hpc2edge.search.prepare import Preparer
from hpc2edge.search.records import Job, JobState, task, waits_for_source
from hpc2edge.search.runconfig import SearchConfig
from hpc2edge.sim.clock import VirtualClock
from hpc2edge.sim.fleet import Fault, Memo, SimFleet, SimTimes, candidate
from hpc2edge.space import get_space
from hpc2edge.space.base import ArchSpec, TrainingHParams
from hpc2edge.store.measurements import MeasurementStore

#: The paper's headline: the fastest front member whose loss is this much lower than the
#: trained baseline's.
HEADLINE_LOSS_RATIO = 1.35
#: The box's reference latency is this factor times the slowest latency the benchmark recorded;
#: its ideal corner is the lowest loss and the fastest latency recorded, divided by it.
LATENCY_REF_FACTOR = 1.1

Callback = Callable[[str, Job | None], None]


@dataclass(frozen=True)
class SimConfig:
    """One simulated study: the search's settings and the fleet's.

    Attributes:
        trials: Optuna trials to finish.
        sampler: ``tpe``, ``nsga2``, ``random`` or ``gp`` (:func:`hpc2edge.search.study.
            make_sampler`).
        seed: the sampler's seed and the training noise's (:meth:`Benchmark.answer`).
        objective: ``pareto`` or ``paper`` (the paper's scalarised score).
        latency_budget_ms: prunes over-budget candidates before training (latency first).
        train_workers, units, scales: the fleet (units per device kind; the first kind is the
            objective's).
        epochs: epochs per training (default: the benchmark's recipe).
        parallel: candidates in flight (0: twice the live workers).
        queue_ahead: tasks waiting on each queue per worker (as ``SearchConfig``).
        latency_first, baseline: as ``hpc2edge search``.
        faults: workers that stop at set times.
        times: durations besides the benchmark's.
        storage: an Optuna storage URL (``sqlite:///...``, ``postgresql://...``,
            ``journal:///PATH``), or None for memory.
        charge_cpu: the orchestrator's CPU time moves the virtual clock (fleet-scale runs;
            not deterministic).
        max_jump_s: the longest the virtual clock moves in one sleep.
        measure_timeout_s, train_timeout_s: as ``hpc2edge search`` (what a lost task costs).
    """

    trials: int
    sampler: str = "tpe"
    seed: int = 0
    objective: str = "pareto"
    latency_budget_ms: float | None = None
    train_workers: int = 1
    units: dict[str, int] = field(default_factory=lambda: {DEFAULT_KIND: 1})
    scales: dict[str, float] = field(default_factory=dict)
    epochs: int | None = None
    parallel: int = 0
    queue_ahead: int = SearchConfig.queue_ahead
    latency_first: bool = True
    baseline: bool = True
    faults: tuple[Fault, ...] = ()
    times: SimTimes = field(default_factory=SimTimes)
    storage: str | None = None
    charge_cpu: bool = False
    max_jump_s: float = 60.0
    measure_timeout_s: float = SearchConfig.measure_timeout_s
    train_timeout_s: float = SearchConfig.train_timeout_s


@dataclass
class Finished:
    """A trial as it finished: when, at what cost, with what values."""

    number: int
    state: str
    virtual_s: float
    gpu_s: float
    cpu_s: float
    val_mse: float | None
    latency_ms: float | None
    feasible: bool
    #: The trial's own training time (its result's ``train_s``; 0 when it was not trained).
    train_s: float = 0.0


@dataclass
class SimResult:
    """What one simulated study found and cost; see the module docstring."""

    config: dict[str, Any]
    reference: tuple[float, float]  # the box's worst corner (loss, latency)
    ideal: tuple[float, float]  # its best corner
    finished: list[Finished]
    front: list[dict[str, Any]]
    hypervolume: float
    baseline: dict[str, Any] | None
    headline_speedup: float | None
    counts: dict[str, Any]
    virtual_s: float
    gpu_s: float
    cpu_s: float
    use: dict[str, dict[str, Any]]
    asks: list[dict[str, Any]]
    #: CPU seconds of each new trial's ask and suggestions, in order (the sampler's share).
    ask_cpu_s: list[float] = field(default_factory=list)

    @property
    def hv_share(self) -> float:
        """The hypervolume: already a share of the (log-scale) box."""
        return self.hypervolume

    def hv_after(self, n: int) -> float:
        """The hypervolume of the first ``n`` finished trials."""
        return self.hv_of(self.finished[:n])

    def hv_of(self, finished: Sequence[Finished]) -> float:
        """The hypervolume of ``finished`` (some of this run's trials) in this run's box."""
        return log_box_share(_points(finished), self.ideal, self.reference)

    def gpu_s_to_reach(self, target_hv: float, every: int = 1) -> float | None:
        """GPU-seconds spent when the hypervolume first reached ``target_hv`` (None: never)."""
        for n in range(every, len(self.finished) + every, every):
            n = min(n, len(self.finished))
            if self.hv_after(n) >= target_hv:
                return self.finished[n - 1].gpu_s
        return None

    def ask_cpu_per_trial(self, parts: int = 4) -> list[float]:
        """Mean CPU seconds of an ask in ``parts`` equal stretches of the asks, in order."""
        n, out = len(self.ask_cpu_s), []
        for k in range(parts):
            part = self.ask_cpu_s[n * k // parts : n * (k + 1) // parts]
            if part:
                out.append(statistics.fmean(part))
        return out

    def cpu_per_trial(self, parts: int = 4) -> list[float]:
        """The orchestrator's CPU seconds per finished trial in ``parts`` equal stretches."""
        out = []
        n = len(self.finished)
        for k in range(parts):
            lo, hi = n * k // parts, n * (k + 1) // parts
            if hi <= lo:
                continue
            start = self.finished[lo - 1].cpu_s if lo else 0.0
            out.append((self.finished[hi - 1].cpu_s - start) / (hi - lo))
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "reference": list(self.reference),
            "ideal": list(self.ideal),
            "hypervolume": self.hypervolume,
            "hv_share": self.hv_share,
            "front": self.front,
            "baseline": self.baseline,
            "headline_speedup": self.headline_speedup,
            "counts": self.counts,
            "virtual_hours": self.virtual_s / 3600,
            "gpu_hours": self.gpu_s / 3600,
            "orchestrator_cpu_s": self.cpu_s,
            "cpu_s_per_trial": self.cpu_per_trial(),
            "ask_cpu_s_per_trial": self.ask_cpu_per_trial(),
            "use": self.use,
            "finished": [f.__dict__ for f in self.finished],
        }


#: Two-sided 95 % Student t quantiles by degrees of freedom (beyond 30: the normal's 1.96).
_T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26,
        10: 2.23, 12: 2.18, 15: 2.13, 20: 2.09, 25: 2.06, 30: 2.04}  # fmt: skip


def mean_ci95(values: Sequence[float]) -> tuple[float, float, float]:
    """The mean and its 95 % confidence interval (Student t; one value: the value itself;
    none: NaNs). Degrees of freedom between the table's entries take the next one up, a
    slightly wider interval."""
    if not values:
        return math.nan, math.nan, math.nan
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, mean, mean
    df = len(values) - 1
    t = next((v for k, v in sorted(_T95.items()) if k >= df), 1.96)
    half = t * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def box(
    benchmark: Any, kind: str | None = None, scale: float = 1.0
) -> tuple[tuple[float, float], tuple[float, float]]:
    """The hypervolume box of a benchmark, (ideal, reference), both (loss, latency): every run
    of the benchmark shares it, so their hypervolumes compare.

    The reference is the constant predictor's validation MSE and 1.1 x the slowest median
    latency recorded on ``kind`` (a network no better than predicting the mean adds nothing);
    the ideal is the lowest validation MSE and the fastest latency recorded, each divided by
    1.1. A kind it did not record is simulated as its first kind times ``scale``, and so is its
    box."""
    if kind not in benchmark.kinds:
        kind = benchmark.kinds[0]
    else:
        scale = 1.0
    rows = list(benchmark.rows.values())
    if not rows:
        raise Hpc2EdgeError("the benchmark has no rows")
    constant = max(r.curves[0].val_mse_constant for r in rows)
    lowest = min(min(c.val_mse) for r in rows for c in r.curves)
    latencies = [r.latency[kind]["median_ms"] for r in rows if kind in r.latency]
    f = LATENCY_REF_FACTOR
    ideal = (float(lowest) / f, float(min(latencies)) * scale / f)
    reference = (float(constant), f * float(max(latencies)) * scale)
    return ideal, reference


def simulate(
    benchmark: Any,
    config: SimConfig,
    callbacks: Sequence[Callback] = (),
    *,
    workdir: Path | None = None,
) -> SimResult:
    """Run one simulated study of ``benchmark``; see the module docstring."""
    clock = VirtualClock(max_jump_s=config.max_jump_s, charge_cpu=config.charge_cpu)
    fleet = make_fleet(benchmark, config, clock)
    finished: list[Finished] = []
    cpu0 = time.process_time()
    waits = WaitMeter(fleet, clock)

    def record(event: str, job: Job | None) -> None:
        if event != "finished" or job is None or job.number is None:
            return
        a = job.attrs
        ms = a.get("latency_ms")
        constraint = a.get(CONSTRAINT_ATTR)
        finished.append(
            Finished(
                number=job.number,
                state=job.state.value,
                virtual_s=clock.now - clock.start,
                gpu_s=fleet.train_busy_s(),
                cpu_s=time.process_time() - cpu0 - clock.own_cpu_s,
                val_mse=a.get("val_mse") if job.state is JobState.COMPLETE else None,
                latency_ms=ms if isinstance(ms, (int, float)) else None,
                feasible=constraint is None or constraint <= 0,
                train_s=_train_s(a),
            )
        )
        waits.look()

    with tempfile.TemporaryDirectory(prefix="hpc2edge-sim-", dir=workdir) as tmp:
        store = MeasurementStore(f"sqlite:///{Path(tmp) / 'measurements.db'}")
        try:
            o = make_orchestrator(
                benchmark, config, store, fleet, clock, callbacks=[record, waits, *callbacks]
            )
            waits.orchestrator = o
            ask_cpu_s = _time_asks(o)
            summary = o.run()
        finally:
            store.close()
    # The orchestrator's: the simulator's own work (answers, workers, meters) is not.
    cpu_s = time.process_time() - cpu0 - clock.own_cpu_s
    first = next(iter(config.units))
    corners = box(benchmark, first, config.scales.get(first, 1.0))
    use = fleet.utilisation()
    for q in use:
        use[q]["idle_while_ready_s"] = waits.idle_s.get(q, 0.0)
    result = _result(o, summary, config, corners, finished, use, clock, cpu_s)
    result.ask_cpu_s = ask_cpu_s
    return result


def _time_asks(o: Orchestrator) -> list[float]:
    """CPU seconds of each new trial's ask and suggestions from now on (the sampler's cost,
    which grows with the trials: Optuna samples a parameter when the space suggests it),
    recorded by wrapping this study's ``ask`` and this space's ``suggest``."""
    spent: list[float] = []
    ask, suggest = o.study.ask, o.space.suggest

    def timed_ask(*args: Any, **kwargs: Any) -> Any:
        t0 = time.process_time()
        try:
            return ask(*args, **kwargs)
        finally:
            spent.append(time.process_time() - t0)

    def timed_suggest(trial: Any) -> Any:
        t0 = time.process_time()
        try:
            return suggest(trial)
        finally:
            if spent:
                spent[-1] += time.process_time() - t0

    o.study.ask = timed_ask  # type: ignore[method-assign]
    o.space.suggest = timed_suggest  # type: ignore[method-assign]
    return spent


class WaitMeter:
    """Worker-seconds idle while the orchestrator holds a task ready for that worker's queue
    and has not sent it (a device idle while a measurable candidate waits; a train worker idle
    while a measured one waits). Looked at on every tick of the loop and every finished trial:
    the idle workers and the ready tasks then count until the next look."""

    def __init__(self, fleet: SimFleet, clock: VirtualClock) -> None:
        self.fleet = fleet
        self.clock = clock
        self.orchestrator: Orchestrator | None = None
        self.idle_s: dict[str, float] = {}
        self._last: tuple[float, dict[str, int]] | None = None
        #: At the last look: tasks ready and not sent per queue, and whether the loop would ask
        #: a trial (the fleet's :attr:`~hpc2edge.sim.fleet.SimFleet.demand`).
        self.ready: dict[str, int] = {}
        self.asking = True
        fleet.demand = self.demand

    def demand(self, queue: str) -> bool:
        return self.asking or self.ready.get(queue, 0) > 0

    def __call__(self, event: str, job: Job | None) -> None:
        if event == "tick":
            self.look()

    def look(self) -> None:
        with self.clock.excluded():  # the meter's own work is not the loop's
            self._look()

    def _look(self) -> None:
        now = self.clock.now
        if self._last is not None:
            at, short = self._last
            for q, n in short.items():
                self.idle_s[q] = self.idle_s.get(q, 0.0) + n * (now - at)
        self._last = (now, self._short())

    def _short(self) -> dict[str, int]:
        o = self.orchestrator
        if o is None:
            return {}
        # Work the loop would have given, had it not been busy: trials it would ask (under
        # ``parallel``; a full pool is the send policy's limit, not the loop's CPU), and the
        # tasks it holds ready and has not sent
        self.asking = o.wants_trials()
        ready: dict[str, int] = {}
        for job in o.active():
            if waits_for_source(job.attrs):
                continue
            for stage in o.pipeline.stages:
                if (
                    not stage.settled(job)
                    and task(job.attrs, stage.name) is None
                    and o.pipeline.ready(stage, job)
                ):
                    ready[stage.queue] = ready.get(stage.queue, 0) + 1
        self.ready = ready
        idle = self.fleet.idle()
        return {q: min(n, idle.get(q, 0)) for q, n in ready.items() if idle.get(q, 0)}


def make_fleet(benchmark: Any, config: SimConfig, clock: VirtualClock) -> SimFleet:
    """The simulated fleet of ``config`` on ``clock``."""
    return SimFleet(
        benchmark,
        clock,
        train_workers=config.train_workers,
        units=config.units,
        scales=config.scales,
        seed=config.seed,
        faults=config.faults,
        times=config.times,
    )


def epochs_of(benchmark: Any, config: SimConfig) -> int:
    """Epochs per training: the config's, else the benchmark's recipe, else its maximum."""
    recipe = benchmark.header.get("recipe") or {}
    return int(config.epochs or recipe.get("epochs") or benchmark.max_epochs)


def make_orchestrator(
    benchmark: Any,
    config: SimConfig,
    store: MeasurementStore,
    dispatcher: Dispatcher,
    clock: Clock,
    *,
    callbacks: Sequence[Callback] = (),
) -> Orchestrator:
    """The orchestrator a simulated study runs: as ``hpc2edge search`` builds it (the sampler
    factory, objective, pipeline and policy), over ``dispatcher`` and ``clock``, with
    candidates from the benchmark. A study of ``config.storage`` (memory when None)."""
    header = benchmark.header
    space = get_space(benchmark.spaces[0])
    recipe = dict(header.get("recipe") or {})
    epochs = epochs_of(benchmark, config)
    objective = Objective(config.objective, config.latency_budget_ms)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = make_sampler(config.sampler, objective, seed=config.seed, trials=config.trials)
    study = _study(f"sim-{config.sampler}-{config.seed}", config.storage, objective, sampler)
    search = SearchConfig(
        trials=config.trials,
        parallel=config.parallel,
        queue_ahead=config.queue_ahead,
        latency_first=config.latency_first,
        protocol=_protocol(benchmark, next(iter(config.units))),
        devices=tuple((k, None) for k in config.units),
        baseline=config.baseline,
        confirm_front=False,
        paired_ratios=False,
        pin=dict(benchmark.pin),
        measure_timeout_s=config.measure_timeout_s,
        train_timeout_s=config.train_timeout_s,
        poll_interval_s=1.0,
    )
    plan = cand.TrainPlan(
        data_paths=(f"benchmark:{header.get('name', 'unnamed')}",),
        hparams=TrainingHParams(
            lr=float(recipe.get("lr", 1e-3)),
            batch_size_per_gpu=int(recipe.get("train_batch_size") or recipe.get("batch_size") or 8),
            epochs=epochs,
        ),
        epochs=epochs,
        resources={"engine": "single", "nproc": 1},
    )

    if isinstance(dispatcher, SimFleet):
        answers = dispatcher.benchmark
    else:
        answers = Memo(benchmark, clock if isinstance(clock, VirtualClock) else None)

    def build(spec: ArchSpec, seed: int) -> cand.Candidate | Hpc2EdgeError:
        try:
            return candidate(spec, answers, config.seed)
        except (Hpc2EdgeError, ValueError) as exc:
            return Hpc2EdgeError(f"{type(exc).__name__}: {exc}")

    return Orchestrator(
        study, dispatcher, space, objective, store, plan, search,
        callbacks=callbacks, clock=clock,
        preparer=Preparer(search.export_seed, 0, builder=build),
    )  # fmt: skip


def make_sampler(
    name: str, objective: Objective, *, seed: int, trials: int
) -> optuna.samplers.BaseSampler:
    """The product's samplers (:func:`hpc2edge.search.study.make_sampler`), Optuna's GP
    sampler (``gp``) where the installed Optuna has it, and ``tpe-unbounded``: the product's TPE
    fitted on every trial of the study, without its bounded history (what the bound saves)."""
    if name == "tpe-unbounded":
        sampler = st.make_sampler("tpe", objective, seed=seed, trials=trials)
        return sampler.sampler if isinstance(sampler, BoundedHistory) else sampler
    if name == "gp":
        gp = getattr(optuna.samplers, "GPSampler", None)
        if gp is None:
            raise ValueError("sampler gp: this Optuna has no GPSampler")
        try:
            import scipy  # noqa: F401 - what Optuna's GP sampler needs
        except ImportError:
            raise ValueError("sampler gp needs scipy: pip install 'hpc2edge[sim]'") from None
        return gp(seed=seed, n_startup_trials=max(4, min(10, trials // 3)))
    return st.make_sampler(name, objective, seed=seed, trials=trials)


def _protocol(benchmark: Any, kind: str) -> str | dict[str, Any]:
    """The protocol the benchmark's latencies were measured with (what a simulated unit takes
    to time a network), by name or as a record; ``quick`` when it does not say."""
    recorded = (benchmark.header.get("latency") or {}).get(kind) or {}
    protocol = recorded.get("protocol") if isinstance(recorded, dict) else None
    if isinstance(protocol, str) and protocol in cand.PROTOCOLS:
        return protocol
    if isinstance(protocol, dict):
        if protocol.get("name") in cand.PROTOCOLS:
            return str(protocol["name"])
        return {k: v for k, v in protocol.items() if k != "name"}
    return "quick"


def _study(
    name: str, url: str | None, objective: Objective, sampler: optuna.samplers.BaseSampler
) -> optuna.Study:
    if url is not None:
        return st.open_study(name, url, objective, sampler)
    return optuna.create_study(
        study_name=name,
        storage=optuna.storages.InMemoryStorage(),
        directions=["minimize"] * len(objective.directions),
        sampler=sampler,
    )


def _train_s(attrs: dict[str, Any]) -> float:
    """A trial's training seconds: its ``train`` summary's, plus each earlier rung's
    (``train.r<k>``) in a multi-fidelity search."""
    total = 0.0
    for key, value in attrs.items():
        if (key == "train" or key.startswith("train.r")) and isinstance(value, dict):
            seconds = value.get("train_s")
            total += float(seconds) if isinstance(seconds, (int, float)) else 0.0
    return total


def _points(finished: Sequence[Finished]) -> list[tuple[float, float]]:
    return [
        (f.val_mse, f.latency_ms)
        for f in finished
        if f.state == JobState.COMPLETE.value
        and f.feasible
        and f.val_mse is not None
        and f.latency_ms is not None
        and math.isfinite(f.val_mse)
    ]


def _result(
    o: Orchestrator,
    summary: dict[str, Any],
    config: SimConfig,
    corners: tuple[tuple[float, float], tuple[float, float]],
    finished: list[Finished],
    use: dict[str, dict[str, Any]],
    clock: VirtualClock,
    cpu_s: float,
) -> SimResult:
    points = _points(finished)
    numbers = [f.number for f in finished if (f.val_mse, f.latency_ms) in set(points)]
    front_ix = pareto_front(points)
    front = [
        {"trial": numbers[i], "val_mse": points[i][0], "latency_ms": points[i][1]} for i in front_ix
    ]
    base = o.jobs.get(BASELINE)
    baseline = None
    headline = None
    if base is not None and base.state is JobState.COMPLETE:
        b_loss, b_ms = base.attrs["val_mse"], base.attrs["latency_ms"]
        baseline = {"val_mse": b_loss, "latency_ms": b_ms, "arch_id": base.attrs.get("arch_id")}
        better = [p for p in (points[i] for i in front_ix) if p[0] * HEADLINE_LOSS_RATIO <= b_loss]
        if better:
            headline = b_ms / min(ms for _, ms in better)
    asks = [
        {"number": j.number, "arch_id": j.attrs.get("arch_id")}
        for j in sorted(o.jobs.values(), key=lambda j: -1 if j.number is None else j.number)
        if j.number is not None
    ]
    cfg = {**replace(config, faults=()).__dict__, "faults": [f.__dict__ for f in config.faults]}
    cfg["times"] = config.times.__dict__
    cfg["epochs"] = o.plan.epochs
    return SimResult(
        config=cfg,
        reference=corners[1],
        ideal=corners[0],
        finished=finished,
        front=front,
        hypervolume=log_box_share(points, *corners),
        baseline=baseline,
        headline_speedup=headline,
        counts={k: v for k, v in summary.items() if k not in ("front", "baseline", "study")},
        virtual_s=clock.now - clock.start,
        gpu_s=use["train"]["busy_s"],
        cpu_s=cpu_s,
        use=use,
        asks=asks,
    )


__all__ = [
    "HEADLINE_LOSS_RATIO",
    "Finished",
    "SimConfig",
    "SimResult",
    "WaitMeter",
    "box",
    "epochs_of",
    "make_fleet",
    "make_orchestrator",
    "make_sampler",
    "mean_ci95",
    "simulate",
]
