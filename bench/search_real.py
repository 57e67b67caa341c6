"""Search quality and cost with real training: TPE against random, latency first against not.

The small-scale cross-check of ``bench/search.py`` (which compares samplers at scale on the
simulator and a recorded benchmark): here every network is really trained and measured, so the
figures are few and noisy, but nothing is simulated.

Two comparisons, each made in one run and printed side by side, with real latency measurements
and real training in this process (the task functions the workers run, called through the
in-process dispatcher; no broker):

1. **Sampler**: at equal trials, the hypervolume of the Pareto front (validation MSE against
   latency p50 in ms, both minimised) reached by Optuna's TPE (``make_sampler("tpe")``, as
   ``hpc2edge search`` uses it) and by random sampling, over several seeds, with the mean and the
   ratio TPE / random, and the hypervolume after every ``--hv-every`` trials. Both samplers of a
   seed get the same seed; TPE's start-up trials are random draws from it, so the two runs of a
   seed begin with the same networks and part ways when TPE's model takes over.
2. **Latency first**: with a latency budget, the same sampler and seed with ``latency_first`` on
   (measure, then train only what fits) and off (measure and train sent at once); the training
   each makes the train workers do, and the feasible front each reaches. Once with TPE (the
   product's default, which soon proposes networks within the budget) and once with random
   sampling (which keeps proposing over-budget ones, as any search does before it has learnt
   where the budget lies); the random runs draw part 1's networks again, so they cost seconds.

Set-up, the same for every run: the ``cnn3d`` space pinned to 8 x 41 x 41 inputs (the demo's
pin); latency from ONNX Runtime on this CPU (one intra-op thread, the ``quick`` protocol, batch
1); ``train_request`` on the tiny synthetic data of ``make_tiny_data`` (3 objects x 128 lines; a
random 25 % of lines held out as test, 20 % of the rest for validation), engine ``single``, one
epoch, Adam lr 1e-2, batch 8, seed 0; ``--parallel`` candidates in flight (default 2, the
orchestrator's minimum when it counts live workers); no baseline job.

Choices that keep the comparison fair and the run within minutes:

- **One measurement store for the sampler runs**, with the edge probe set so lookups work from
  a run's first trial: a network measured once is looked up afterwards (the product's own
  cache). Latency is a property of the network on this device, so every run sees the same
  number for the same network.
- **An empty measurement store for each latency-first run**: over a store that already knows a
  network, its latency is there before anything is sent, so both modes would skip training the
  same networks and the comparison would show nothing. Latency first pays off on networks new
  to the device: each mode starts with none known and sends its measure tasks.
- **Results memoised by architecture**: a network is trained (and measured) once per bench run;
  later tasks for it get the first result. Requests differ only in their trial key and training
  is seeded (the same network gives the same loss on a rerun), so the fronts are the ones
  retraining would give, and a network has one latency in every run (no flip across the budget
  from timing noise). Times are always those of the first, real, run; the output says how many
  tasks the memo answered.
- **A worker-like dispatcher**: a task runs when it is sent, as an idle worker would take it.
  The plain inline dispatcher runs a task on its first poll, so a train task the orchestrator
  stops caring about (without latency first, a trial is pruned once its latency is over budget)
  would never run and its cost would go missing; a Celery train worker trains it anyway.
- **Hypervolume reference point**, common to every run: loss = the validation MSE of the
  constant predictor (the training split's mean target; one split for all trials), so a network
  no better than predicting the mean adds nothing and one diverged training cannot stretch the
  box; latency = 1.1 x the largest p50 measured in any run. Hypervolumes are printed as a
  fraction of that box (loss_ref x latency_ref).
- **Latency budget** (part 2): the median p50 of the distinct networks random sampling drew in
  part 1, a uniform sample of the pinned space: about half of the space is over it.

Read the sampler figures with care: at the default 10 trials TPE has 6 model-guided asks, a
network's latency is measured afresh in each bench run (its noise moves TPE's later asks and the
reference latency), and one lucky random draw moves a seed's hypervolume a lot. Two runs on a
shared 2-core machine gave TPE / random 0.81x and 0.80x, TPE ahead on 2 and on 1 of 3 seeds;
``--trials 30 --seeds 5`` (several times longer) says more. The defaults take 6-9 minutes on
2 CPU cores: about 47 distinct networks, trained and measured once each.

Usage::

    python bench/search_real.py [--trials 10] [--seeds 3] [--parallel 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import _machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402

from hpc2edge.cli.search import DEMO_PIN  # noqa: E402
from hpc2edge.search import candidate as cand  # noqa: E402
from hpc2edge.search import study as st  # noqa: E402
from hpc2edge.search.dispatch import Handler, InlineDispatcher, local_handlers  # noqa: E402
from hpc2edge.search.objectives import CONSTRAINT_ATTR, Objective, hypervolume_2d  # noqa: E402
from hpc2edge.search.orchestrator import Orchestrator, SearchConfig  # noqa: E402
from hpc2edge.space import get_space  # noqa: E402
from hpc2edge.space.base import ArchSpec, TrainingHParams  # noqa: E402
from hpc2edge.store.artifacts import ArtifactStore, DirectoryArtifactStore  # noqa: E402
from hpc2edge.store.measurements import MeasurementStore  # noqa: E402

SPACE = "cnn3d"
PIN = DEMO_PIN  # 8 x 41 x 41: seconds per candidate on a CPU
PROTOCOL = "quick"
TRAIN = {"epochs": 1, "lr": 1e-2, "batch_size": 8, "test_fraction": 0.25, "engine": "single"}
#: The reference latency is this factor times the largest p50 any run measured.
LATENCY_REF_FACTOR = 1.1
#: Samplers of the latency-first comparison: TPE as the product runs it, and random sampling,
#: which never learns to avoid the over-budget region.
BUDGET_SAMPLERS = ("tpe", "random")


# --- the workers --------------------------------------------------------------------------------


class WorkerLikeDispatcher(InlineDispatcher):
    """Runs a task as soon as it is sent, as an idle worker would, whether or not it is polled."""

    def submit(self, kind: str, payload: dict[str, Any], task_id: str, expires_s: float) -> None:
        super().submit(kind, payload, task_id, expires_s)
        self.poll(task_id)  # runs the handler now and keeps the outcome for the real polls


@dataclass
class TaskLog:
    """Wraps the real handlers: results memoised by architecture, every task recorded.

    ``run`` names the study being run; each record carries it, so costs are counted per run.
    """

    measure_handler: Handler
    train_handler: Handler
    run: str = ""
    memo: dict[str, dict[str, Any]] = field(default_factory=dict)
    measure_memo: dict[tuple, dict[str, Any]] = field(default_factory=dict)
    trains: list[dict[str, Any]] = field(default_factory=list)
    measures: list[dict[str, Any]] = field(default_factory=list)

    def measure(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        # The ONNX bytes (hence the artifact key) follow from the spec and the export seed.
        key = (payload["arch_id"], payload["artifact_key"], payload["precision"],
               tuple(payload["batch_sizes"]))  # fmt: skip
        memoised = key in self.measure_memo
        if not memoised:
            t0_s = time.perf_counter()
            result = self.measure_handler(payload)
            assert result is not None  # measure_request always answers
            self.measure_memo[key] = {**result, "handler_s": time.perf_counter() - t0_s}
        first = self.measure_memo[key]
        self.measures.append({"run": self.run, "memoised": memoised, "seconds": first["handler_s"]})
        return dict(first)

    def train(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        arch_id = ArchSpec.from_dict(payload["spec"]).arch_id
        memoised = arch_id in self.memo
        if not memoised:
            t0_s = time.perf_counter()
            result = self.train_handler(payload)
            assert result is not None  # train_request always answers
            self.memo[arch_id] = {**result, "handler_s": time.perf_counter() - t0_s}
        first = self.memo[arch_id]
        self.trains.append(
            {
                "run": self.run,
                "arch_id": arch_id,
                "memoised": memoised,
                "status": first.get("status"),
                # The first training's figures, also when the memo answered. task_s: the task
                # function from call to return (what a worker is busy for: child start-up and
                # data indexing included); wall_s: the child's own run; train_s: its epochs.
                "task_s": first["handler_s"],
                "train_s": first.get("train_s") or 0.0,
                "wall_s": first.get("wall_s") or 0.0,
            }
        )
        return {**first, "trial_key": payload["trial_key"], "memoised": memoised}

    def handlers(self) -> dict[str, Handler]:
        return {"measure": self.measure, "train": self.train}


# --- one study ----------------------------------------------------------------------------------


@dataclass
class Bench:
    """What every run shares: storage, the measurement store, artifacts, the training plan."""

    trials: int
    parallel: int
    storage_url: str
    store: MeasurementStore
    artifacts: ArtifactStore
    log: TaskLog
    plan: cand.TrainPlan
    edge_probe: dict[str, Any]

    def run(
        self,
        name: str,
        sampler: str,
        seed: int,
        objective: Objective,
        *,
        latency_first: bool,
        store: MeasurementStore | None = None,
    ) -> dict[str, Any]:
        """Run one study to ``trials`` finished trials; its trials and what they cost.

        ``store`` is the measurement store the orchestrator looks latencies up in (default: the
        one the sampler runs share).
        """
        study = st.open_study(
            name,
            self.storage_url,
            objective,
            st.make_sampler(sampler, objective, seed=seed, trials=self.trials),
        )
        dispatcher = WorkerLikeDispatcher(
            self.log.handlers(), self.artifacts, edge_probe=self.edge_probe
        )
        config = SearchConfig(
            trials=self.trials,
            parallel=self.parallel,
            latency_first=latency_first,
            protocol=PROTOCOL,
            baseline=False,
            pin=PIN,
        )
        orchestrator = Orchestrator(
            study, dispatcher, get_space(SPACE), objective, store or self.store, self.plan, config
        )
        self.log.run = name
        t0_s = time.perf_counter()
        summary = orchestrator.run()
        wall_s = time.perf_counter() - t0_s
        trains = [r for r in self.log.trains if r["run"] == name]
        measures = [r for r in self.log.measures if r["run"] == name]
        return {
            "study": name,
            "sampler": sampler,
            "seed": seed,
            "latency_first": latency_first,
            "latency_budget_ms": objective.latency_budget_ms,
            "wall_s": wall_s,
            "complete": summary["complete"],
            "pruned": summary["pruned"],
            "failed": summary["failed"],
            "front_size": len(summary["front"]),
            "measure_tasks": dispatcher.count("measure"),
            "measurements_reused": summary["measurements_reused"],
            "measure_tasks_memoised": sum(r["memoised"] for r in measures),
            "measure_s": sum(r["seconds"] for r in measures),
            "train_tasks": dispatcher.count("train"),
            "train_tasks_memoised": sum(r["memoised"] for r in trains),
            "train_tasks_failed": sum(r["status"] != "ok" for r in trains),
            # What the train workers spent on this run's tasks (the first training's figures).
            "train_task_s": sum(r["task_s"] for r in trains),
            "train_wall_s": sum(r["wall_s"] for r in trains),
            "train_s": sum(r["train_s"] for r in trains),
            "trials": [_trial_record(t) for t in study.get_trials(deepcopy=False)],
        }


def _trial_record(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    a = t.user_attrs
    return {
        "number": t.number,
        "state": t.state.name,
        "arch_id": a.get("arch_id"),
        "val_mse": a.get("val_mse"),
        "latency_ms": a.get("latency_ms"),
        "constraint": a.get(CONSTRAINT_ATTR),
        "val_mse_constant": (a.get("train") or {}).get("val_mse_constant"),
        "reason": a.get("reason"),
    }


# --- hypervolume --------------------------------------------------------------------------------


def front_points(trials: Sequence[dict[str, Any]], below: int | None = None) -> list[tuple]:
    """(val MSE, latency) of the feasible complete trials numbered below ``below`` (all: None)."""
    return [
        (t["val_mse"], t["latency_ms"])
        for t in trials
        if t["state"] == "COMPLETE"
        and (t["constraint"] or 0.0) <= 0.0
        and (below is None or t["number"] < below)
    ]


def hv_fraction(points: Sequence[tuple], reference: tuple[float, float]) -> float:
    """The hypervolume of ``points`` as a fraction of the box from (0, 0) to ``reference``."""
    return hypervolume_2d(points, reference) / (reference[0] * reference[1])


def checkpoints(trials: int, every: int) -> list[int]:
    """Trial counts the hypervolume is reported after: every ``every``, and the last."""
    counts = list(range(every, trials + 1, every)) if every > 0 else []
    return counts if counts and counts[-1] == trials else [*counts, trials]


def reference_point(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The common reference: the constant predictor's val MSE, 1.1 x the largest p50."""
    trials = [t for r in runs for t in r["trials"]]
    constants = {round(t["val_mse_constant"], 12) for t in trials if t["val_mse_constant"]}
    latencies = [t["latency_ms"] for t in trials if t["latency_ms"] is not None]
    if not constants or not latencies:
        raise RuntimeError("no trial was both trained and measured: nothing to compare")
    # One data split for every trial, so one constant; should that ever change, the largest
    # keeps every run's box the same.
    return {
        "val_mse": max(constants),
        "val_mse_constants_seen": len(constants),
        "latency_ms": LATENCY_REF_FACTOR * max(latencies),
        "max_latency_ms": max(latencies),
    }


# --- the benchmark ------------------------------------------------------------------------------


def run_benchmark(
    trials: int, seeds: int, parallel: int, hv_every: int, tmp: Path
) -> dict[str, Any]:
    """Both comparisons in ``tmp``; returns the figures, as written by ``--json``."""
    from hpc2edge.latency import get_backend, telemetry
    from hpc2edge.testing.training import make_tiny_data

    machine = _machine.describe(
        {"optuna": "optuna", "onnxruntime": "onnxruntime", "torch": "torch"}
    )
    started_s = time.perf_counter()
    paths = make_tiny_data(tmp / "data")
    artifacts = DirectoryArtifactStore(tmp / "artifacts")
    real = local_handlers(tmp / "train-state", artifacts)  # one intra-op thread, as the default
    probe_backend = get_backend("onnxruntime", intra_op_threads=1)
    store = MeasurementStore(f"sqlite:///{tmp / 'measurements.db'}")
    bench = Bench(
        trials=trials,
        parallel=parallel,
        storage_url=f"sqlite:///{tmp / 'search.db'}",
        store=store,
        artifacts=artifacts,
        log=TaskLog(real["measure"], real["train"]),
        plan=cand.TrainPlan(
            data_paths=tuple(str(p) for p in paths),
            hparams=TrainingHParams(
                lr=TRAIN["lr"], batch_size_per_gpu=TRAIN["batch_size"], epochs=TRAIN["epochs"]
            ),
            epochs=TRAIN["epochs"],
            test_fraction=TRAIN["test_fraction"],
            resources={"engine": TRAIN["engine"], "nproc": 1},
        ),
        # What `hpc2edge.ping` on an edge worker answers: lookups hit from a run's first trial.
        edge_probe={
            "measurement": {
                "device": telemetry.fingerprint(),
                "backend": probe_backend.fingerprint(),
            }
        },
    )
    try:
        sampler_runs: list[dict[str, Any]] = []
        for seed in range(seeds):
            for sampler in ("random", "tpe"):
                run = bench.run(f"{sampler}-seed{seed}", sampler, seed, Objective("pareto"),
                                latency_first=True)  # fmt: skip
                sampler_runs.append(run)
                _progress(run, started_s)

        random_latency = {
            t["arch_id"]: t["latency_ms"]
            for r in sampler_runs
            if r["sampler"] == "random"
            for t in r["trials"]
            if t["latency_ms"] is not None
        }
        budget_ms = statistics.median(random_latency.values())
        budget_runs = []
        for sampler in BUDGET_SAMPLERS:
            for latency_first in (True, False):
                name = f"budget-{sampler}-seed0-{'lf' if latency_first else 'no-lf'}"
                # A store of its own, empty: over the shared one every latency would be known
                # before anything is sent, and both modes would skip training the same networks.
                fresh = MeasurementStore(f"sqlite:///{tmp / f'measurements-{name}.db'}")
                try:
                    run = bench.run(name, sampler, 0, Objective("pareto", budget_ms),
                                    latency_first=latency_first, store=fresh)  # fmt: skip
                finally:
                    fresh.close()
                budget_runs.append(run)
                _progress(run, started_s)
    finally:
        store.close()

    reference = reference_point([*sampler_runs, *budget_runs])
    ref = (reference["val_mse"], reference["latency_ms"])
    counts = checkpoints(trials, hv_every)
    for run in [*sampler_runs, *budget_runs]:
        run["hv"] = hv_fraction(front_points(run["trials"]), ref)
        run["hv_curve"] = {k: hv_fraction(front_points(run["trials"], k), ref) for k in counts}

    samplers: dict[str, Any] = {}
    for sampler in ("tpe", "random"):
        runs = [r for r in sampler_runs if r["sampler"] == sampler]
        samplers[sampler] = {
            "hv_by_seed": [r["hv"] for r in runs],
            "hv_mean": statistics.fmean(r["hv"] for r in runs),
            "hv_curve_mean": {k: statistics.fmean(r["hv_curve"][k] for r in runs) for k in counts},
        }
    pairs = zip(samplers["tpe"]["hv_by_seed"], samplers["random"]["hv_by_seed"], strict=True)
    tpe_wins = sum(t > r for t, r in pairs)
    latency_first = {
        sampler: _latency_first_figures(
            *[r for r in budget_runs if r["sampler"] == sampler]  # (latency first, everything)
        )
        for sampler in BUDGET_SAMPLERS
    }
    return {
        "benchmark": "hpc2edge search: TPE vs random, latency first vs not",
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "settings": {
            "space": SPACE,
            "pin": PIN,
            "protocol": PROTOCOL,
            "latency_backend": "onnxruntime, CPU, 1 intra-op thread, batch 1",
            "train": {**TRAIN, "data": "make_tiny_data (3 objects x 1 layer x 128 lines)"},
            "trials": trials,
            "seeds": seeds,
            "parallel": parallel,
            "hv_every": hv_every,
        },
        "reference": {
            **reference,
            "choice": "val MSE of the constant predictor; latency 1.1 x the largest p50 measured",
        },
        "samplers": samplers,
        "hv_ratio_tpe_over_random": _ratio(
            samplers["tpe"]["hv_mean"], samplers["random"]["hv_mean"]
        ),
        "tpe_wins": tpe_wins,
        "latency_budget_ms": budget_ms,
        "latency_budget_choice": f"median p50 of the {len(random_latency)} distinct networks "
        "random sampling drew in part 1",
        "latency_first": latency_first,
        "runs": [*sampler_runs, *budget_runs],
        "train_tasks_total": len(bench.log.trains),
        "train_tasks_memoised": sum(r["memoised"] for r in bench.log.trains),
        "distinct_networks_trained": len(bench.log.memo),
        "measure_tasks_total": len(bench.log.measures),
        "measure_tasks_memoised": sum(r["memoised"] for r in bench.log.measures),
        "distinct_networks_measured": len(bench.log.measure_memo),
        "run_time_s": time.perf_counter() - started_s,
        "load_avg_1m_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def _latency_first_figures(lf: dict[str, Any], everything: dict[str, Any]) -> dict[str, Any]:
    """Latency first against training everything: ratios (first / everything) and savings."""
    same = zip(lf["trials"], everything["trials"], strict=True)
    return {
        "same_networks": sum(a["arch_id"] == b["arch_id"] for a, b in same),
        "over_budget": sum(t["state"] == "PRUNED" for t in lf["trials"]),
        "train_tasks_ratio": _ratio(lf["train_tasks"], everything["train_tasks"]),
        "train_tasks_saved": everything["train_tasks"] - lf["train_tasks"],
        "train_task_s_ratio": _ratio(lf["train_task_s"], everything["train_task_s"]),
        "train_task_s_saved": everything["train_task_s"] - lf["train_task_s"],
        "train_wall_s_ratio": _ratio(lf["train_wall_s"], everything["train_wall_s"]),
        "train_s_ratio": _ratio(lf["train_s"], everything["train_s"]),
        "hv_ratio": _ratio(lf["hv"], everything["hv"]),
    }


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def _progress(run: dict[str, Any], started_s: float) -> None:
    print(
        f"[{time.perf_counter() - started_s:6.0f} s] {run['study']}: {run['complete']} complete, "
        f"{run['pruned']} pruned, {run['failed']} failed; {run['measure_tasks']} measured, "
        f"{run['train_tasks']} trained ({run['train_tasks_memoised']} from the memo) "
        f"in {run['wall_s']:.0f} s",
        file=sys.stderr,
        flush=True,
    )


# --- output -------------------------------------------------------------------------------------


def _load(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _x(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else f"{value:{spec}}x"


def render(report: dict[str, Any]) -> str:
    """The human-readable tables of ``report`` (the dict :func:`run_benchmark` returns)."""
    m, s, ref = report["machine"], report["settings"], report["reference"]
    t = s["train"]
    load = _load(m["load_avg_1m"])
    runs = report["runs"]
    counts = list(runs[0]["hv_curve"])
    lines = [
        f"{report['benchmark']} ({report['time_utc']})",
        f"machine: {m['platform']}, Python {m['python']}, {m['cpu_count']} CPUs "
        f"({m['cpu_model'] or 'unknown model'}), load avg 1 min {load} at start",
        f"software: optuna {m['optuna']}, onnxruntime {m['onnxruntime']}, torch {m['torch']}",
        f"space: {s['space']} pinned to {s['pin']['frames']} x {s['pin']['size']} x "
        f"{s['pin']['size']}; {s['trials']} trials per run, {s['parallel']} in flight",
        f"latency: {s['latency_backend']}, {s['protocol']} protocol",
        f"training: {t['data']}, test fraction {t['test_fraction']}, engine {t['engine']}, "
        f"{t['epochs']} epoch, lr {t['lr']:g}, batch {t['batch_size']}, seed 0; "
        f"{report['distinct_networks_trained']} networks trained, "
        f"{report['train_tasks_memoised']} of {report['train_tasks_total']} train tasks answered "
        "from the memo (times are the first training's)",
        f"measurements: {report['distinct_networks_measured']} networks measured, "
        f"{report['measure_tasks_memoised']} of {report['measure_tasks_total']} measure tasks "
        "answered from the memo; the sampler runs share one measurement store",
        f"hypervolume reference: val MSE {ref['val_mse']:.5f} (constant predictor) x latency "
        f"{ref['latency_ms']:.3f} ms ({LATENCY_REF_FACTOR:g} x the largest p50, "
        f"{ref['max_latency_ms']:.3f} ms); HV = fraction of that box dominated (higher is better)",
        "",
        f"1. sampler: TPE against random at equal trials ({_n(s['seeds'], 'seed')})",
    ]
    head = f"{'seed':>4}  {'sampler':8}{'complete':>9}{'failed':>7}{'front':>6}"
    head += "".join(f"{'HV@' + str(k):>9}" for k in counts)
    lines.append(head)
    for r in runs[: 2 * s["seeds"]]:
        row = f"{r['seed']:>4}  {r['sampler']:8}{r['complete']:>9}{r['failed']:>7}"
        row += f"{r['front_size']:>6}" + "".join(f"{r['hv_curve'][k]:>9.4f}" for k in counts)
        lines.append(row)
    samplers = report["samplers"]
    for name in ("tpe", "random"):
        curve = samplers[name]["hv_curve_mean"]
        lines.append(f"{'mean':>4}  {name:8}{'':22}" + "".join(f"{curve[k]:>9.4f}" for k in counts))
    lines.append(
        f"{'':4}  {'TPE/rand':8}{'':22}"
        + "".join(
            f"{_x(_ratio(samplers['tpe']['hv_curve_mean'][k], samplers['random']['hv_curve_mean'][k])):>9}"  # noqa: E501
            for k in counts
        )
    )
    lines.append(
        f"TPE ahead on {report['tpe_wins']} of {_n(s['seeds'], 'seed')} at {s['trials']} trials"
    )

    lines += [
        "",
        f"2. latency first: budget {report['latency_budget_ms']:.3f} ms "
        f"({report['latency_budget_choice']}); seed 0; each mode over an empty measurement store",
        f"{'sampler':8}{'mode':18}{'complete':>9}{'pruned':>7}{'failed':>7}{'train tasks':>12}"
        f"{'task s':>9}{'wall_s':>9}{'train_s':>9}{'feasible HV':>12}",
    ]
    budget_runs = [r for r in runs if r["latency_budget_ms"] is not None]
    for sampler, figures in report["latency_first"].items():
        lf, everything = (r for r in budget_runs if r["sampler"] == sampler)
        for label, r in (("latency first", lf), ("train everything", everything)):
            lines.append(
                f"{sampler:8}{label:18}{r['complete']:>9}{r['pruned']:>7}{r['failed']:>7}"
                f"{r['train_tasks']:>12}{r['train_task_s']:>9.1f}{r['train_wall_s']:>9.1f}"
                f"{r['train_s']:>9.1f}{r['hv']:>12.4f}"
            )
        lines.append(
            f"{sampler:8}{'first / everything':18}{'':23}{_x(figures['train_tasks_ratio']):>12}"
            f"{_x(figures['train_task_s_ratio']):>9}{_x(figures['train_wall_s_ratio']):>9}"
            f"{_x(figures['train_s_ratio']):>9}{_x(figures['hv_ratio']):>12}"
        )
    same = ", ".join(
        f"{name} {f['same_networks']} of {s['trials']}"
        for name, f in report["latency_first"].items()
    )
    tpe = report["latency_first"]["tpe"]
    rnd = report["latency_first"]["random"]
    lines += [
        f"  trials that drew the same network in both modes: {same}",
        "  task s: the train task from call to return, what a worker is busy for (child start-up "
        "and data indexing included); wall_s: the training child's own run; train_s: its epochs.",
        "  Without latency first an over-budget trial is pruned when its latency arrives, but its "
        "train task was sent with the measure task and a worker trains it all the same.",
        "",
        f"run time {report['run_time_s']:.0f} s (load avg 1 min {_load(report['load_avg_1m_end'])} "
        "at the end)",
        "",
        f"TPE / random hypervolume at {s['trials']} trials: "
        f"{_x(report['hv_ratio_tpe_over_random'])} (mean of {_n(s['seeds'], 'seed')}); "
        f"latency-first training time: {_x(tpe['train_task_s_ratio'])} of training "
        f"everything with TPE ({tpe['train_task_s_saved']:.0f} s, "
        f"{_n(tpe['train_tasks_saved'], 'train task')} saved), "
        f"{_x(rnd['train_task_s_ratio'])} with random sampling ({rnd['train_task_s_saved']:.0f} s, "
        f"{_n(rnd['train_tasks_saved'], 'train task')} saved)",
    ]
    return "\n".join(lines)


# --- entry point --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--trials", type=int, default=10, help="trials per run, equal for all (default: 10)"
    )
    parser.add_argument(
        "--seeds", type=int, default=3, help="seeds per sampler in part 1 (default: 3)"
    )
    parser.add_argument("--parallel", type=int, default=2, help="candidates in flight (default: 2)")
    parser.add_argument(
        "--hv-every",
        type=int,
        default=5,
        help="also report the hypervolume after every N trials (default: 5)",
    )
    parser.add_argument(
        "--json", type=Path, default=None, metavar="OUT", help="also write the figures to OUT"
    )
    args = parser.parse_args(argv)
    if args.trials < 2:
        parser.error("--trials must be at least 2")
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if args.parallel < 1:
        parser.error("--parallel must be at least 1")
    if args.hv_every < 0:
        parser.error("--hv-every must not be negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the tables, optionally write JSON. Returns the exit status."""
    args = parse_args(argv)
    st.quiet_optuna()
    # TPE's multivariate, group and constant_liar options are marked experimental in Optuna;
    # Optuna 5 deprecates samplers' constraints_func (hpc2edge.search.study still passes it).
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*constraints_func", category=FutureWarning)
    with tempfile.TemporaryDirectory(prefix="hpc2edge-bench-search-") as tmp:
        report = run_benchmark(args.trials, args.seeds, args.parallel, args.hv_every, Path(tmp))
    print(render(report))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
