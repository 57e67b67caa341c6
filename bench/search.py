"""Search efficiency at scale, on the simulator: samplers against random, the paper's headline,
and the orchestrator at fleet scale.

Every run is the real orchestrator and the real Optuna samplers against a simulated fleet
(``hpc2edge.sim``) whose latencies, learning curves and training times come from the recorded
benchmark (``hpc2edge/resources/benchmarks/cnn3d-cpu-v2.json.gz``, recorded by
``bench/record_benchmark.py``; its surrogate answers for networks the table does not hold). One
run prints three tables:

1. **Samplers.** random, TPE as ``hpc2edge search`` configures it, NSGA-II, Optuna's GP sampler
   (where the installed Optuna has one) and the paper's scalarised objective (TPE on
   ``1000 * val_mse + latency_ms``), ``--seeds`` seeds each, at each budget of ``--trials``.
   Per sampler and budget: the hypervolume (validation MSE against p50 latency, both minimised)
   as a ratio to random's of the same seed, with the mean and its 95 % CI over seeds (Student
   t), and the GPU-hours of training spent until the hypervolume first reached 95 % of the best
   sampler's mean at that budget (the median over the seeds that reached it, and how many did;
   the best single run is a lucky draw of the training noise, which hardly any run matches).
   The hypervolume is a share of the benchmark's box, log scale on both axes
   (``hpc2edge.sim.run.box``): from the lowest loss and fastest latency recorded (over 1.1) to
   the constant predictor's validation MSE and 1.1 x the slowest latency, so a network no better
   than the mean adds nothing. In linear scale the fast, mediocre corner is nearly the whole box
   (random fills 0.8 of it in 64 trials), and no sampler could show anything. A sampler's seed
   is the study's and the training noise's: seed k of every sampler sees the same loss for the
   same network.

   The smaller budgets are the first trials of the largest budget's runs: a run of N trials
   asks its first N exactly as an N-trial run does (same start-up trials, 10 at every budget
   here; each ask sees the same history), so one 128-trial run gives the 32- and 64-trial
   figures. GPU-hours count the training time of the trials finished by then (what a study of
   that budget had paid), not training still running.
2. **The paper's headline, in kind.** At 64 trials: the speed-up (p50) of the fastest front
   member whose validation loss is at least 1.35x lower than the trained baseline's (the paper
   reports ~8.8x), per sampler: the geometric mean and its 95 % CI over the seeds that found
   one (a speed-up is a ratio; one 300x run would make an arithmetic mean meaningless), and how
   many did.
3. **Fleet scale.** 256 train workers, 16 edge units, 2,000 trials of one-minute trainings (the
   benchmark's training times scaled so that their mean is 60 s), on each study storage
   (SQLite, PostgreSQL when a server can be started here, Optuna's journal file): the
   orchestrator's CPU per trial in each quarter of the run (flat, or growing with the trials),
   and the time the fleet's workers stood idle because of the orchestrator, over the whole run
   and after the fleet first filled (every worker had a task: the start-up, when all wait for
   the first asks, left out). The orchestrator's CPU time moves the virtual clock here (a busy
   loop makes workers wait, as it would in a real fleet), so these runs are not deterministic.
   ``--fleet-samplers tpe,tpe-unbounded`` runs TPE without its bounded history beside it and
   prints the ratios (what the bound saves).

Usage::

    python bench/search.py [--seeds 20] [--trials 32,64,128] [--samplers ...] [--fleet-trials
        2000] [--no-fleet] [--json OUT]

The defaults take hours on 2 CPU cores (20 seeds of 5 samplers at 128 trials: ~25 min without GP,
which costs more; SQLite alone at 2,000 fleet trials: over half an hour); ``--seeds 5 --fleet-trials
500 --fleet-storages journal`` takes minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import _machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402

from hpc2edge.sim import benchmark as bm  # noqa: E402
from hpc2edge.sim.fleet import SimTimes  # noqa: E402
from hpc2edge.sim.run import (  # noqa: E402
    HEADLINE_LOSS_RATIO,
    Finished,
    SimConfig,
    SimResult,
    mean_ci95,
    simulate,
)

#: name -> (sampler, objective). The paper's entry is TPE on its scalarised score.
SAMPLERS = {
    "random": ("random", "pareto"),
    "tpe": ("tpe", "pareto"),
    "nsga2": ("nsga2", "pareto"),
    "gp": ("gp", "pareto"),
    "paper": ("tpe", "paper"),
}
DEFAULT_SAMPLER = "tpe"
HEADLINE_TRIALS = 64
REACH = 0.95


# --- one run, cut at a budget -------------------------------------------------------------------


def upto(result: SimResult, n: int) -> list[Finished]:
    """The run's first ``n`` trials (by number), in the order they finished."""
    return [f for f in result.finished if f.number < n]


def points(finished: Sequence[Finished]) -> list[tuple[float, float]]:
    return [
        (f.val_mse, f.latency_ms)
        for f in finished
        if f.state == "complete" and f.feasible and f.val_mse is not None and f.latency_ms
    ]


def hv(result: SimResult, n: int) -> float:
    return result.hv_of(upto(result, n))


def gpu_h_to_reach(result: SimResult, n: int, target: float) -> float | None:
    """GPU-hours of the trials finished when the first ``n`` trials' hypervolume first reached
    ``target`` (None: never)."""
    done = upto(result, n)
    spent = 0.0
    for k, f in enumerate(done, 1):
        spent += f.train_s
        if result.hv_of(done[:k]) >= target:
            return spent / 3600
    return None


def headline(result: SimResult, n: int) -> float | None:
    """Speed-up of the fastest front member of the first ``n`` trials whose loss is at least
    1.35x lower than the trained baseline's."""
    if result.baseline is None:
        return None
    b_loss, b_ms = result.baseline["val_mse"], result.baseline["latency_ms"]
    better = [ms for loss, ms in points(upto(result, n)) if loss * HEADLINE_LOSS_RATIO <= b_loss]
    return b_ms / min(better) if better else None


def geometric_ci95(values: Sequence[float]) -> tuple[float, float, float]:
    """The geometric mean of positive ``values`` and its 95 % CI (Student t on the logs)."""
    m, lo, hi = mean_ci95([math.log(v) for v in values])
    return math.exp(m), math.exp(lo), math.exp(hi)


# --- the three parts ----------------------------------------------------------------------------


def run_samplers(
    bench: Any, names: Sequence[str], seeds: int, trials: int, workers: int, units: int
) -> dict[str, list[SimResult]]:
    runs: dict[str, list[SimResult]] = {}
    started = time.monotonic()
    for name in names:
        sampler, objective = SAMPLERS[name]
        runs[name] = []
        for seed in range(seeds):
            config = SimConfig(
                trials=trials,
                sampler=sampler,
                seed=seed,
                objective=objective,
                train_workers=workers,
                units={bench.kinds[0]: units},
            )
            runs[name].append(simulate(bench, config))
            print(
                f"  [{time.monotonic() - started:6.0f} s] {name} seed {seed}: "
                f"HV {runs[name][-1].hv_share:.3f}",
                file=sys.stderr,
                flush=True,
            )
    return runs


def sampler_table(runs: dict[str, list[SimResult]], budgets: Sequence[int]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for n in budgets:
        best = max(hv(r, n) for rs in runs.values() for r in rs)
        best_mean = max(statistics.fmean(hv(r, n) for r in rs) for rs in runs.values())
        row: dict[str, Any] = {"best_hv_share": best, "best_mean_hv_share": best_mean}
        row["samplers"] = {}
        for name, rs in runs.items():
            ratios = [
                hv(r, n) / hv(b, n) for r, b in zip(rs, runs["random"], strict=True) if hv(b, n) > 0
            ]
            m, lo, hi = mean_ci95(ratios)
            reach = [gpu_h_to_reach(r, n, REACH * best_mean) for r in rs]
            reached = [x for x in reach if x is not None]
            heads = [h for h in (headline(r, n) for r in rs) if h is not None]
            hm, hlo, hhi = geometric_ci95(heads)
            row["samplers"][name] = {
                "hv_share_mean": statistics.fmean(hv(r, n) for r in rs),
                "hv_ratio_vs_random": {"mean": m, "ci95": [lo, hi], "n": len(ratios)},
                "gpu_h_to_95pct_best_mean": {
                    "median": statistics.median(reached) if reached else None,
                    "reached": len(reached),
                    "runs": len(rs),
                },
                "headline_speedup": {
                    "geomean": hm,
                    "ci95": [hlo, hhi],
                    "n": len(heads),
                    "runs": len(rs),
                },
            }
        table[str(n)] = row
    return table


@contextlib.contextmanager
def storages(names: Sequence[str], tmp: Path) -> Iterator[dict[str, str]]:
    """Storage URLs by name; PostgreSQL on a throwaway server of this run's own (skipped, with
    a line saying why, where none can be started)."""
    urls: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        for name in names:
            if name == "sqlite":
                urls[name] = f"sqlite:///{tmp / 'fleet.db'}"
            elif name == "journal":
                urls[name] = f"journal:///{tmp / 'fleet.journal'}"
            elif name == "postgresql":
                try:
                    from tests.support import postgres

                    server = stack.enter_context(postgres.server())
                    urls[name] = stack.enter_context(server.database())
                except Exception as exc:  # no server here: the other storages still run
                    print(f"  postgresql skipped: {exc}", file=sys.stderr)
            else:
                raise ValueError(f"unknown storage {name!r}")
        yield urls


def run_fleet(
    bench: Any,
    trials: int,
    workers: int,
    units: int,
    train_s: float,
    names: Sequence[str],
    samplers: Sequence[str],
) -> dict[str, Any]:
    """The fleet-scale runs: every storage of ``names`` for every sampler of ``samplers``. The
    first sampler's are the figures (``storages``); the others' are beside them under
    ``compare`` (``tpe-unbounded`` is TPE without its bounded history, the cost it removes)."""
    import tempfile

    rows = list(bench.rows.values())
    mean_train = statistics.fmean(r.curves[0].s_per_epoch for r in rows) * _epochs(bench)
    times = SimTimes(train_scale=train_s / mean_train)
    out: dict[str, Any] = {
        "trials": trials,
        "train_workers": workers,
        "units": units,
        "mean_train_s": train_s,
        "sampler": samplers[0],
        "storages": {},
        "compare": {},
    }
    for k, sampler in enumerate(samplers):
        into = out["storages"] if k == 0 else out["compare"].setdefault(sampler, {})
        with tempfile.TemporaryDirectory() as tmp, storages(names, Path(tmp)) as urls:
            for name, url in urls.items():
                t0 = time.monotonic()
                into[name] = fleet_run(bench, trials, workers, units, times, url, sampler)
                into[name]["wall_s"] = time.monotonic() - t0
                print(f"  fleet on {name}, {sampler}: {time.monotonic() - t0:.0f} s",
                      file=sys.stderr, flush=True)  # fmt: skip
    return out


def fleet_run(
    bench: Any, trials: int, workers: int, units: int, times: SimTimes, url: str, sampler: str
) -> dict[str, Any]:
    """One fleet-scale simulated study and what it cost the orchestrator."""
    r = simulate(
        bench,
        SimConfig(
            trials=trials,
            sampler=sampler,
            seed=0,
            train_workers=workers,
            units={bench.kinds[0]: units},
            times=times,
            storage=url,
            charge_cpu=True,
            baseline=False,
        ),
    )
    train, edge = r.use["train"], r.use[_edge_queue(bench)]
    span = r.virtual_s
    asks = r.ask_cpu_per_trial(4)
    loop_ms = 1000 * (r.cpu_s - sum(r.ask_cpu_s)) / trials
    return {
        "cpu_ms_per_trial": 1000 * r.cpu_s / trials,
        "loop_ms_per_trial_without_asks": loop_ms,
        "ask_ms_by_quarter": [1000 * q for q in asks],
        "ask_growth_last_over_first_quarter": asks[-1] / asks[0],
        "virtual_hours": span / 3600,
        "train_busy_share": train["busy_share"],
        "train_idle_while_loop_busy_share": train["idle_while_loop_busy_s"] / (workers * span),
        # the same once the fleet first filled: the steady state, without the start-up
        "train_filled_at_s": train.get("filled_at_s"),
        "train_idle_while_loop_busy_after_fill_share": (
            train.get("idle_while_loop_busy_filled_s", 0.0)
            / (workers * max(span - (train.get("filled_at_s") or 0.0), 1e-9))
        ),
        "train_idle_while_ready_share": train.get("idle_while_ready_s", 0.0) / (workers * span),
        "edge_idle_while_ready_s": edge.get("idle_while_ready_s", 0.0),
        "edge_busy_share": edge["busy_share"],
        "orchestrator_busy_share": r.cpu_s / span,
    }


def table_front_hv(bench: Any) -> float:
    """The hypervolume share of the recorded table's own front: every recorded network of the
    benchmark's first kind trained (seed 0, the recipe's epochs) and measured, what a sampler
    that had tried them all would hold. A ceiling for the ratios of the sampler table, as the
    box and the budget make it (a lucky seed or a surrogate's answer can pass it)."""
    from hpc2edge.search.objectives import log_box_share
    from hpc2edge.sim.run import box

    ideal, reference = box(bench)
    kind, epochs = bench.kinds[0], _epochs(bench)
    points = [
        (c.val_mse[min(epochs, len(c.val_mse)) - 1], row.latency[kind]["median_ms"])
        for row in bench.rows.values()
        if (c := row.curve(0)) is not None and kind in row.latency
    ]
    return log_box_share(points, ideal, reference)


def _epochs(bench: Any) -> int:
    return int((bench.header.get("recipe") or {}).get("epochs") or bench.max_epochs)


def _edge_queue(bench: Any) -> str:
    from hpc2edge.roles import edge_queue

    return edge_queue(bench.kinds[0])


# --- output -------------------------------------------------------------------------------------


def _x(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None else f"{v:{spec}}x"


def render(report: dict[str, Any]) -> str:
    lines = [
        f"benchmark {report['benchmark']['name']}: {report['benchmark']['rows']} recorded "
        f"architectures; {report['settings']['seeds']} seeds per sampler, "
        f"{report['settings']['train_workers']} train workers, "
        f"{report['settings']['units']} edge unit(s)",
        "",
    ]
    ceiling = report["benchmark"].get("table_front_hv_share")
    if ceiling is not None and report["samplers"]:
        lines.append(
            f"the recorded table's own front (every row trained and measured): {ceiling:.3f} of "
            f"the box"
        )
        lines.append("")
    for n, row in report["samplers"].items():
        random_mean = row["samplers"].get("random", {}).get("hv_share_mean")
        vs = (
            f"; the table's front is {ceiling / random_mean:.2f}x random's mean"
            if ceiling is not None and random_mean
            else ""
        )
        lines.append(
            f"{n} trials (hypervolume as a share of the log box; best sampler's mean "
            f"{row['best_mean_hv_share']:.3f}, best run {row['best_hv_share']:.3f}{vs})"
        )
        lines.append(
            f"  {'sampler':8} {'HV':>6} {'HV / random (95 % CI)':>26} "
            f"{'GPU h to 95 % best mean':>24} {'headline speed-up (geomean)':>30}"
        )
        for name, s in row["samplers"].items():
            r = s["hv_ratio_vs_random"]
            g = s["gpu_h_to_95pct_best_mean"]
            h = s["headline_speedup"]
            reach = (
                f"{g['median']:.3g} ({g['reached']}/{g['runs']})"
                if g["median"] is not None
                else f"- (0/{g['runs']})"
            )
            head = (
                f"{h['geomean']:.2f}x ({h['ci95'][0]:.2f}-{h['ci95'][1]:.2f}) {h['n']}/{h['runs']}"
                if h["n"]
                else f"- (0/{h['runs']})"
            )
            lines.append(
                f"  {name:8} {s['hv_share_mean']:>6.3f} {r['mean']:>8.3f}x "
                f"({r['ci95'][0]:.3f}-{r['ci95'][1]:.3f}){'':>3} {reach:>24} "
                f"{head:>30}"
            )
        lines.append("")
    verdict = report.get("verdict")
    if verdict:
        lines.append(verdict)
        lines.append("")
    fleet = report.get("fleet")
    if fleet:
        lines.append(
            f"fleet scale: {fleet['trials']} trials ({fleet['sampler']}), "
            f"{fleet['train_workers']} train workers, {fleet['units']} edge units, "
            f"{fleet['mean_train_s']:.0f} s trainings"
        )
        lines.append(
            f"  {'storage':10} {'CPU ms/trial':>12} {'loop w/o asks':>13} "
            f"{'ask ms by quarter':>24} {'growth':>7} "
            f"{'train busy':>10} {'idle: loop busy':>15} {'after fill':>10} "
            f"{'idle: ready':>11} {'edge idle, ready':>16}"
        )
        runs = [(name, fleet["sampler"], f) for name, f in fleet["storages"].items()]
        for sampler, by_storage in (fleet.get("compare") or {}).items():
            runs += [(name, sampler, f) for name, f in by_storage.items()]
        for name, sampler, f in runs:
            q = " / ".join(f"{v:.0f}" for v in f["ask_ms_by_quarter"])
            lines.append(
                f"  {name + (' ' + sampler if sampler != fleet['sampler'] else ''):10} "
                f"{f['cpu_ms_per_trial']:>12.0f} "
                f"{f['loop_ms_per_trial_without_asks']:>13.0f} "
                f"{q:>24} {f['ask_growth_last_over_first_quarter']:>6.2f}x "
                f"{f['train_busy_share']:>10.1%} "
                f"{f['train_idle_while_loop_busy_share']:>15.2%} "
                f"{f.get('train_idle_while_loop_busy_after_fill_share', float('nan')):>10.2%} "
                f"{f['train_idle_while_ready_share']:>11.2%} "
                f"{f['edge_idle_while_ready_s']:>14.0f} s"
            )
        for sampler, by_storage in (fleet.get("compare") or {}).items():
            for name, other in by_storage.items():
                mine = fleet["storages"].get(name)
                if mine:
                    lines.append(
                        f"  {fleet['sampler']} / {sampler} on {name}: CPU per trial "
                        f"{mine['cpu_ms_per_trial'] / other['cpu_ms_per_trial']:.2f}x, "
                        f"last quarter's ask "
                        f"{mine['ask_ms_by_quarter'][-1] / other['ask_ms_by_quarter'][-1]:.2f}x"
                    )
    return "\n".join(lines)


def verdict(table: dict[str, Any]) -> str | None:
    row = table.get(str(HEADLINE_TRIALS))
    if row is None or DEFAULT_SAMPLER not in row["samplers"]:
        return None
    r = row["samplers"][DEFAULT_SAMPLER]["hv_ratio_vs_random"]
    ok = r["ci95"][0] > 1.0
    return (
        f"default sampler ({DEFAULT_SAMPLER}) at {HEADLINE_TRIALS} trials: "
        f"{r['mean']:.3f}x random's hypervolume, CI lower bound {r['ci95'][0]:.3f} "
        f"({'above' if ok else 'NOT above'} 1.0; goal: >= 1.2x with the lower bound > 1.0)"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--benchmark", default=bm.DEFAULT, help="name or file (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=20, help="seeds per sampler (default: %(default)s)")
    p.add_argument("--trials", default="32,64,128", help="budgets, comma-separated")
    p.add_argument(
        "--samplers", default=",".join(SAMPLERS), help="comma-separated (default: %(default)s)"
    )
    p.add_argument(
        "--train-workers", type=int, default=4, help="of the sampler runs (default: %(default)s)"
    )
    p.add_argument(
        "--units", type=int, default=1, help="edge units of the sampler runs (default: %(default)s)"
    )
    p.add_argument(
        "--fleet-trials", type=int, default=2000, help="fleet-scale trials (default: %(default)s)"
    )
    p.add_argument("--fleet-workers", type=int, default=256, help="default: %(default)s")
    p.add_argument("--fleet-units", type=int, default=16, help="default: %(default)s")
    p.add_argument(
        "--fleet-train-s", type=float, default=60.0, help="mean training seconds (default: 60)"
    )
    p.add_argument(
        "--fleet-samplers",
        default=DEFAULT_SAMPLER,
        help="comma-separated; the first gives the figures, the others are compared with it "
        "(tpe-unbounded: TPE fitted on every trial, without its bounded history; "
        "default: %(default)s)",
    )
    p.add_argument(
        "--fleet-storages",
        default="sqlite,postgresql,journal",
        help="comma-separated (default: %(default)s; postgresql where a server can be started)",
    )
    p.add_argument("--no-fleet", action="store_true", help="skip the fleet-scale table")
    p.add_argument("--no-samplers", action="store_true", help="skip the sampler table")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    bench = bm.load(args.benchmark)
    budgets = sorted(int(x) for x in args.trials.split(","))
    names = [n for n in args.samplers.split(",") if n]
    if "random" not in names:
        names.insert(0, "random")  # the yardstick
    if "gp" in names and getattr(optuna.samplers, "GPSampler", None) is None:
        names.remove("gp")
    report: dict[str, Any] = {
        "benchmark": {
            "name": bench.name,
            "rows": len(bench.rows),
            "table_front_hv_share": table_front_hv(bench),
        },
        "settings": {
            "seeds": args.seeds,
            "budgets": budgets,
            "train_workers": args.train_workers,
            "units": args.units,
            "samplers": names,
        },
        "machine": _machine.describe({"optuna": "optuna", "numpy": "numpy"}),
        "generated_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if not args.no_samplers:
        runs = run_samplers(bench, names, args.seeds, max(budgets), args.train_workers, args.units)
        report["samplers"] = sampler_table(runs, budgets)
        report["verdict"] = verdict(report["samplers"])
    else:
        report["samplers"] = {}
    if not args.no_fleet:
        report["fleet"] = run_fleet(
            bench,
            args.fleet_trials,
            args.fleet_workers,
            args.fleet_units,
            args.fleet_train_s,
            [s for s in args.fleet_storages.split(",") if s],
            [s for s in args.fleet_samplers.split(",") if s],
        )
    print(render(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
