"""``hpc2edge simulate``: try a search strategy on a recorded benchmark before spending GPU hours.

The real orchestrator runs against simulated train workers and edge units on a virtual clock
(:mod:`hpc2edge.sim`); durations, latencies and learning curves come from the benchmark (the
recorded cnn3d one by default). One study per seed; a line per seed and the mean with its 95 %
confidence interval over seeds.
"""

from __future__ import annotations

import statistics
import sys
from typing import Any

import click

from hpc2edge.cli.context import BadInput, print_json


@click.command("simulate")
@click.option(
    "--benchmark",
    "benchmark_name",
    default=None,
    metavar="NAME|PATH",
    help="A shipped benchmark's name or a benchmark file (default: the recorded cnn3d one).",
)
@click.option("--trials", type=click.IntRange(1, 100_000), default=64, show_default=True)
@click.option(
    "--seeds",
    type=click.IntRange(1, 1000),
    default=1,
    show_default=True,
    help="Studies, with seeds --seed, --seed+1, ...",
)
@click.option("--seed", "first_seed", type=click.IntRange(0), default=0, show_default=True)
@click.option(
    "--sampler",
    type=click.Choice(["tpe", "nsga2", "random", "gp"]),
    default="tpe",
    show_default=True,
)
@click.option(
    "--objective", type=click.Choice(["pareto", "paper"]), default="pareto", show_default=True
)
@click.option("--latency-budget", "budget_ms", type=float, default=None, metavar="MS")
@click.option("--train-workers", type=click.IntRange(1, 100_000), default=4, show_default=True)
@click.option(
    "--devices",
    "devices",
    multiple=True,
    metavar="KIND:UNITS[:SCALE]",
    help="Edge units per device kind (repeatable; the first kind is the objective's). "
    "A kind the benchmark did not record is its first kind times SCALE. "
    "Default: one unit of the benchmark's first kind.",
)
@click.option(
    "--epochs",
    type=click.IntRange(1),
    default=None,
    help="Epochs per training (default: the benchmark's recipe).",
)
@click.option(
    "--parallel",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Candidates in flight (0: twice the live workers).",
)
@click.option("--latency-first/--no-latency-first", default=True, show_default=True)
@click.option("--baseline/--no-baseline", default=True, show_default=True)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="unit[:KIND]@S|train@S",
    help="A unit or train worker that stops S virtual seconds in (repeatable).",
)
@click.option(
    "--train-scale",
    type=float,
    default=1.0,
    show_default=True,
    help="Training time as a multiple of the benchmark's.",
)
@click.option(
    "--build-s",
    type=float,
    default=0.0,
    show_default=True,
    help="Seconds per engine build on a unit (TensorRT: a minute or more).",
)
@click.option(
    "--storage",
    default=None,
    metavar="URL",
    help="Optuna storage for the studies (sqlite:///F, postgresql://..., journal:///F); "
    "default: memory.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def simulate_cmd(
    benchmark_name: str | None,
    trials: int,
    seeds: int,
    first_seed: int,
    sampler: str,
    objective: str,
    budget_ms: float | None,
    train_workers: int,
    devices: tuple[str, ...],
    epochs: int | None,
    parallel: int,
    latency_first: bool,
    baseline: bool,
    faults: tuple[str, ...],
    train_scale: float,
    build_s: float,
    storage: str | None,
    as_json: bool,
) -> None:
    """Try a search strategy on a recorded benchmark: the real orchestrator against simulated
    workers and devices on a virtual clock.

    The sampler and settings are those ``hpc2edge search`` would use; per seed and as a mean with
    its 95 % CI: hypervolume, the front, virtual and GPU hours, and each queue's use."""
    from hpc2edge.search import study as st
    from hpc2edge.sim import benchmark as bm
    from hpc2edge.sim.fleet import Fault, SimTimes, units_of
    from hpc2edge.sim.run import SimConfig, simulate

    bench = bm.load(benchmark_name or bm.DEFAULT)
    try:
        units, scales = units_of(devices or (bench.kinds[0],))
        fault_list = tuple(Fault.parse(f) for f in faults)
        times = SimTimes(train_scale=train_scale, build_s=build_s)
        configs = [
            SimConfig(
                trials=trials,
                sampler=sampler,
                seed=first_seed + k,
                objective=objective,
                latency_budget_ms=budget_ms,
                train_workers=train_workers,
                units=units,
                scales=scales,
                epochs=epochs,
                parallel=parallel,
                latency_first=latency_first,
                baseline=baseline,
                faults=fault_list,
                times=times,
                storage=storage,
            )
            for k in range(seeds)
        ]
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    st.quiet_optuna()
    results = []
    with _bar(trials * seeds) as bar:

        def tick(event: str, job: Any) -> None:
            if event == "finished" and job is not None and job.number is not None:
                bar.update(1)

        for c in configs:
            results.append(simulate(bench, c, callbacks=[tick]))
    summary = _summary(results)
    if as_json:
        print_json(
            {
                "benchmark": bench.header.get("name"),
                "summary": summary,
                "runs": [r.to_json() for r in results],
            }
        )
        return
    _print_table(bench, results, summary)


class _bar:
    """A tqdm bar on stderr in a terminal; nothing elsewhere."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._bar: Any = None

    def __enter__(self) -> _bar:
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, unit="trial", file=sys.stderr, leave=False)
        return self

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()


def _summary(results: list[Any]) -> dict[str, Any]:
    from hpc2edge.sim.run import mean_ci95

    def stat(values: list[float]) -> dict[str, float]:
        m, lo, hi = mean_ci95(values)
        return {"mean": m, "ci95_low": lo, "ci95_high": hi, "n": len(values)}

    headline = [r.headline_speedup for r in results if r.headline_speedup is not None]
    return {
        "hv_share": stat([r.hv_share for r in results]),
        "gpu_hours": stat([r.gpu_s / 3600 for r in results]),
        "virtual_hours": stat([r.virtual_s / 3600 for r in results]),
        "headline_speedup": stat(headline),
        "headline_missing": len(results) - len(headline),
    }


def _print_table(bench: Any, results: list[Any], summary: dict[str, Any]) -> None:
    c0 = results[0].config
    click.echo(
        f"benchmark {bench.header.get('name')}: {len(bench.rows)} recorded architectures; "
        f"sampler {c0['sampler']}, {c0['trials']} trials, {c0['train_workers']} train workers, "
        f"units {c0['units']}, {c0['epochs']} epochs"
    )
    click.echo(
        f"{'seed':>4} {'HV':>6} {'front':>5} {'done':>5} {'pruned':>6} {'failed':>6} "
        f"{'hours':>7} {'GPU h':>7} {'edge busy':>9} {'speed-up*':>9}"
    )
    for r in results:
        edge = [u["busy_share"] for q, u in r.use.items() if q != "train"]
        speed = f"{r.headline_speedup:.2f}x" if r.headline_speedup is not None else "-"
        click.echo(
            f"{r.config['seed']:>4} {r.hv_share:>6.3f} {len(r.front):>5} "
            f"{r.counts.get('complete', 0):>5} {r.counts.get('pruned', 0):>6} "
            f"{r.counts.get('failed', 0):>6} {r.virtual_s / 3600:>7.2f} {r.gpu_s / 3600:>7.2f} "
            f"{statistics.fmean(edge):>9.0%} {speed:>9}"
        )
    hv = summary["hv_share"]
    click.echo(
        f"mean HV {hv['mean']:.3f} (95 % CI {hv['ci95_low']:.3f}-{hv['ci95_high']:.3f}) "
        "as a share of the benchmark's box (log scale: best recorded / 1.1 to the constant "
        "predictor's MSE and 1.1 x the slowest latency)"
    )
    h = summary["headline_speedup"]
    if h["n"]:
        click.echo(
            f"* speed-up of the fastest front member >= 1.35x more accurate than the "
            f"trained baseline: mean {h['mean']:.2f}x (95 % CI {h['ci95_low']:.2f}-"
            f"{h['ci95_high']:.2f}), {summary['headline_missing']} run(s) without one"
        )
    else:
        click.echo("* no run found a front member >= 1.35x more accurate than the baseline")
