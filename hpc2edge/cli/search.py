"""``hpc2edge search`` and ``hpc2edge demo``.

``search`` runs (or resumes: same ``--study``, same storage) an orchestrator against the broker in
the config, shows its progress on stderr (a bar in a terminal, a line per event otherwise:
``--log-format``), and ends with the front as a table against the baseline. It exits 2 before
asking anything when a queue it needs has no live worker (``--wait-workers S`` waits for one),
and 1 when the search finished without a single complete trial. ``demo`` is the whole mission on
one machine: synthetic data, the local stack, a search sized for minutes on a laptop CPU, the
front, and the stack down again.

Heavy imports (optuna, torch) happen inside the commands: ``hpc2edge --help`` stays fast and
works on an edge device.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections import Counter
from pathlib import Path
from typing import Any

import click

from hpc2edge.cli.context import BadInput, command_settings
from hpc2edge.config import Settings, measurement_store_url
from hpc2edge.search.run import run_search


def __getattr__(name: str) -> Any:
    # DEMO_PIN moved to hpc2edge.search.problem (with the demo's data and recipe); loaded on
    # use so that `search --help` imports no data code.
    if name == "DEMO_PIN":
        from hpc2edge.search.problem import DEMO_PIN

        return DEMO_PIN
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


FRONT_COLUMNS = (
    "trial", "arch_id", "params", "latency_ms", "p90_ms", "val_mse", "rmse_speed_mm_s",
    "rmse_power_w", "speedup", "loss_ratio", "unstable", "val_mse_constant",
    "no_better_than_constant",
)  # fmt: skip
#: Marks a p50 whose measurement stayed unstable (it ended by its cap before its CI target).
UNSTABLE_MARK = "!"
#: Marks a val MSE that is not below the constant predictor's (a model that learned nothing).
CONSTANT_MARK = "*"


def _mse(value: Any, flagged: Any) -> str:
    return ("-" if value is None else f"{value:.5f}") + (CONSTANT_MARK if flagged else " ")


def constant_legend(constant: float | None) -> str:
    """The legend line of :data:`CONSTANT_MARK`."""
    from hpc2edge.report.collect import NO_BETTER_THAN_CONSTANT

    value = "" if constant is None else f", val MSE {constant:.5f}"
    return f"  {CONSTANT_MARK} {NO_BETTER_THAN_CONSTANT}{value}: it learned nothing"


def front_table(study: Any, baseline: dict[str, Any] | None) -> tuple[list[dict[str, Any]], str]:
    """The front as rows (also for ``--json``) and as a text table with baseline ratios, the
    constant predictor's val MSE (row ``mean``) and a mark on every model not better than it."""
    from hpc2edge.report.collect import (
        baseline_caveat,
        front_rows,
        no_better_than_constant,
        study_constant,
    )

    base_ms = (baseline or {}).get("latency_ms")
    base_mse = (baseline or {}).get("val_mse")
    base_train = (baseline or {}).get("train") or {}
    constant = (study_constant(study) or {}).get("val_mse")
    base_const = base_train.get("val_mse_constant", constant)
    base_flag = no_better_than_constant(base_mse, base_const)
    # The report's rows (one computation of the ratios), cut to the columns `search` shows.
    rows = [{k: r[k] for k in FRONT_COLUMNS} for r in front_rows(study, baseline)]

    def fmt(v: Any, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    lines = [
        f"{'trial':>5} {'arch':12} {'params':>9} {'p50 ms':>8} {'p90 ms':>8} {'val MSE':>9} "
        f"{'mm/s':>7} {'W':>6} {'speed-up':>8} {'loss ratio':>10}"
    ]
    if constant is not None:
        lines.append(
            f"{'mean':>5} {'(constant)':12} {'-':>9} {'-':>8} {'-':>8} {_mse(constant, False):>9} "
            f"{'-':>7} {'-':>6} {'-':>8} {'-':>10}"
        )
    shown_base = bool(baseline and baseline.get("latency_ms") is not None)
    if shown_base:
        assert baseline is not None
        lines.append(
            f"{'base':>5} {str(baseline.get('arch_id', ''))[:12]:12} "
            f"{fmt(baseline.get('params'), ','):>9} {fmt(base_ms, '.3f'):>8} "
            f"{fmt((baseline.get('latency') or {}).get('p90_ms'), '.3f'):>8} "
            f"{_mse(base_mse, base_flag):>9} "
            f"{fmt(base_train.get('val_rmse_speed_mm_s'), '.1f'):>7} "
            f"{fmt(base_train.get('val_rmse_power_w'), '.1f'):>6} "
            f"{'1.00x':>8} {'1.00x':>10}"
        )
    for r in rows:
        p50 = fmt(r["latency_ms"], ".3f") + (UNSTABLE_MARK if r["unstable"] else "")
        lines.append(
            f"{r['trial']:>5} {str(r['arch_id'])[:12]:12} {fmt(r['params'], ','):>9} "
            f"{p50:>8} {fmt(r['p90_ms'], '.3f'):>8} "
            f"{_mse(r['val_mse'], r['no_better_than_constant']):>9} "
            f"{fmt(r['rmse_speed_mm_s'], '.1f'):>7} "
            f"{fmt(r['rmse_power_w'], '.1f'):>6} "
            f"{fmt(r['speedup'], '.2f') + 'x' if r['speedup'] else '-':>8} "
            f"{fmt(r['loss_ratio'], '.2f') + 'x' if r['loss_ratio'] else '-':>10}"
        )
    if any(r["unstable"] for r in rows):
        lines.append(
            f"  {UNSTABLE_MARK} unstable: still after re-measuring (at most twice, within the "
            "retries), its CI never reached the protocol's target (a loaded or throttled device)"
        )
    if (shown_base and base_flag) or any(r["no_better_than_constant"] for r in rows):
        lines.append(constant_legend(constant))
    caveat = baseline_caveat(
        {"val_mse": base_mse, "val_mse_constant": base_const, "no_better_than_constant": base_flag}
        if shown_base
        else None
    )
    if caveat:
        lines.append(f"  loss ratios: {caveat}")
    return rows, "\n".join(lines)


def _check_devices(_ctx: Any, _param: Any, values: tuple[str, ...]) -> tuple[str, ...]:
    from hpc2edge.search.run import parse_devices

    try:
        parse_devices(values)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    return values


def search_options(f: Any) -> Any:
    """The options ``search`` and ``demo`` share (what is searched and how)."""
    options = [
        click.option("--space", "space_name", default="cnn3d", show_default=True,
                     help="Search space (`hpc2edge space show NAME`)."),
        click.option("--objective", type=click.Choice(["pareto", "paper"]), default="pareto",
                     show_default=True,
                     help="pareto: minimise (val MSE, latency); paper: 1000*val_loss + ms."),
        click.option("--latency-budget-ms", type=float, default=None,
                     help="Constraint on the p50 latency; over-budget networks are not trained."),
        click.option("--device", "devices", multiple=True, metavar="KIND[:BUDGET_MS]",
                     callback=_check_devices,
                     help="Device kind to measure on (queue edge.KIND; repeatable; default: "
                     "the default kind, queue edge). The first kind's latency is the "
                     "objective; every other kind is measured too, gets its own front, and "
                     "with :BUDGET_MS prunes candidates over that budget before training."),
        click.option("--sampler", type=click.Choice(["tpe", "nsga2", "random"]), default="tpe",
                     show_default=True),
        click.option("--seed", type=int, default=None, help="Sampler seed (reproducible asks)."),
        click.option("--parallel", type=click.IntRange(0), default=0, show_default=True,
                     help="Candidates in flight, the pool each queue's next task is chosen "
                     "from; 0: twice the live workers (at least 2)."),
        click.option("--export-workers", type=click.IntRange(0, 64), default=0,
                     show_default=True,
                     help="Processes that export candidates beside the loop (0: in the loop)."),
        click.option("--latency-first/--no-latency-first", default=True, show_default=True,
                     help="Measure before training, or send both at once."),
        click.option("--batch-size", type=click.IntRange(1), default=1, show_default=True,
                     help="Inference batch size the latency is measured at."),
        click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32",
                     show_default=True),
        click.option("--protocol", type=click.Choice(["default", "quick"]), default="default",
                     show_default=True,
                     help="Measurement protocol; quick: seconds per model, for CPU demos."),
        click.option("--epochs", type=click.IntRange(1), default=2, show_default=True),
        click.option("--lr", type=float, default=1e-3, show_default=True),
        click.option("--lr-step-epochs", type=click.IntRange(1), default=20, show_default=True,
                     help="Multiply the learning rate by --lr-gamma every this many epochs "
                     "(the paper's StepLR: 20 and 0.5)."),
        click.option("--lr-gamma", type=click.FloatRange(0, 1, min_open=True), default=0.5,
                     show_default=True, help="The learning rate's factor at each step."),
        click.option("--train-batch-size", type=click.IntRange(1), default=8, show_default=True,
                     help="Training batch size per GPU (or process)."),
        click.option("--engine", type=click.Choice(["auto", "deepspeed", "ddp", "single"]),
                     default="auto", show_default=True, help="Training engine on the workers."),
        click.option("--frames", type=click.IntRange(1), default=None,
                     help="Fix the input frames (not searched)."),
        click.option("--size", type=click.IntRange(1), default=None,
                     help="Fix the input size (not searched)."),
        click.option("--test-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True),
                     default=None,
                     help="Hold out a random fraction of lines; default: the paper's objects."),
        click.option("--baseline/--no-baseline", default=True, show_default=True,
                     help="Also measure and train the space's baseline, for the ratios."),
        click.option("--confirm-front", is_flag=True, help="Re-measure the final front."),
        click.option("--paired-ratios/--no-paired-ratios", default=True, show_default=True,
                     help="Speed-ups from paired measurements: after the search, one task per "
                     "front member and device kind times it and the baseline in alternation "
                     "on one unit (each costs about one measurement of both)."),
        click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON."),
    ]  # fmt: skip
    for option in reversed(options):
        f = option(f)
    return f


def kind_front_lines(fronts: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The front on each other device kind, as text (the report's ``fronts_by_kind``)."""
    lines: list[str] = []
    for kind, rows in fronts.items():
        lines.append(f"Front on device kind {kind} (val MSE against p50 on {kind}):")
        if not rows:
            lines.append(f"  (empty: no feasible complete trial on {kind})")
            continue
        lines.append(f"{'trial':>5} {'arch':12} {'p50 ms':>8} {'p90 ms':>8} {'val MSE':>9} "
                     f"{'speed-up':>8}")  # fmt: skip
        for r in rows:
            p90 = "-" if r["p90_ms"] is None else f"{r['p90_ms']:.3f}"
            p50 = f"{r['latency_ms']:.3f}" + (UNSTABLE_MARK if r["unstable"] else "")
            speedup = "-" if r["speedup"] is None else f"{r['speedup']:.2f}x"
            mse = _mse(r["val_mse"], r.get("no_better_than_constant"))
            lines.append(
                f"{r['trial']:>5} {str(r['arch_id'])[:12]:12} {p50:>8} "
                f"{p90:>8} {mse:>9} {speedup:>8}"
            )
        flagged = [r["val_mse_constant"] for r in rows if r.get("no_better_than_constant")]
        if flagged:
            lines.append(constant_legend(flagged[0]))
    return lines


def _report_front(summary: dict[str, Any], study: Any, as_json: bool) -> None:
    from hpc2edge.report.collect import kind_fronts, study_constant
    from hpc2edge.search.settings import device_kinds

    rows, table = front_table(study, summary.get("baseline"))
    fronts = kind_fronts(study, summary.get("baseline"))
    if as_json:
        out = {
            **summary,
            "front_rows": rows,
            "fronts_by_kind": fronts,
            "constant_predictor": study_constant(study),
        }
        click.echo(json.dumps(out, indent=2, default=str))
        return
    sent = summary["tasks_sent"]
    measures = sum(n for stage, n in sent.items() if stage.startswith("measure"))
    click.echo("")
    click.echo(
        f"study {summary['study']}: {summary['trials']} trials, {summary['complete']} complete, "
        f"{summary['pruned']} pruned, {summary['failed']} failed; tasks sent: "
        f"{measures} measure, {summary['tasks_sent'].get('train', 0)} train; "
        f"{summary['measurements_reused']} measurements reused from the store"
    )
    kinds = [k for k, _ in device_kinds(study.user_attrs)]
    on = f" on {kinds[0]}" if len(kinds) > 1 else ""
    click.echo(f"Pareto front (feasible, by latency{on}; ratios against the baseline):")
    click.echo(table if rows else "  (empty: no trial completed within the constraints)")
    for line in kind_front_lines(fronts):
        click.echo(line)
    failed = [
        (t.number, t.user_attrs.get("reason", ""))
        for t in study.get_trials(deepcopy=False)
        if t.state.name == "FAIL"
    ]
    for number, reason in failed[:10]:
        click.echo(f"  trial {number} failed: {reason}")


def commonest_reasons(study: Any, n: int = 3) -> list[tuple[int, str]]:
    """Why trials failed or were pruned, commonest first: (count, an example reason).

    Reasons that differ only in their numbers (``... 3.1 ms > 2 ms``, ``... in 1800 s``) count
    as one.
    """
    counts: Counter[str] = Counter()
    example: dict[str, str] = {}
    for t in study.get_trials(deepcopy=False):
        if t.state.name not in ("FAIL", "PRUNED"):
            continue
        reason = str(t.user_attrs.get("reason") or t.state.name.lower()).splitlines()[0][:200]
        key = re.sub(r"\d+(?:\.\d+)?", "#", reason)
        counts[key] += 1
        example.setdefault(key, reason)
    return [(count, example[key]) for key, count in counts.most_common(n)]


def _none_complete(summary: dict[str, Any], study: Any, what: str) -> click.ClickException:
    """The error for a search that finished without a complete trial, with the reasons."""
    reasons = "; ".join(f"{c}x {r}" for c, r in commonest_reasons(study))
    return click.ClickException(
        f"{what} finished without a single complete trial ({summary['pruned']} pruned, "
        f"{summary['failed']} failed)" + (f"; commonest reasons: {reasons}" if reasons else "")
    )


def _write_report(settings: Settings, study: Any, storage_url: str) -> Path:
    """``hpc2edge report`` for a finished study, into ``<state_dir>/reports/<study>/``."""
    from hpc2edge.report.collect import collect, write
    from hpc2edge.store.measurements import MeasurementStore

    store = MeasurementStore(measurement_store_url(settings))
    try:
        data = collect(study, store, storage=storage_url)
    finally:
        store.close()
    out = settings.state_dir.absolute() / "reports" / study.study_name
    return write(data, out)["html"]


@click.command("search")
@click.option(
    "--data",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="HDF5 file or folder of files, at the same absolute path on the train nodes.",
)
@click.option("--trials", type=click.IntRange(1), required=True, help="Trials to finish.")
@click.option(
    "--study",
    "study_name",
    default=None,
    help="Study name (default: SPACE-OBJECTIVE); rerun with it to resume.",
)
@click.option(
    "--storage",
    "storage_url",
    default=None,
    help="Optuna storage URL (default: search.storage, else .hpc2edge/search.db).",
)
@search_options
@click.option(
    "--log-format",
    type=click.Choice(["auto", "bar", "plain"]),
    default="auto",
    show_default=True,
    help="Progress on stderr: a bar, or one line per event; auto: a bar in a terminal.",
)
@click.option(
    "--wait-workers",
    "wait_workers_s",
    type=click.FloatRange(0),
    default=0,
    show_default=True,
    metavar="SECONDS",
    help="Wait this long for a live edge and train worker before giving up (exit 2).",
)
@click.pass_context
def search_cmd(ctx: click.Context, data: Path, trials: int, study_name: str | None,
               storage_url: str | None, as_json: bool, **o: Any) -> None:  # fmt: skip
    """Search architectures with the edge in the loop; resumable by --study."""
    settings = command_settings(ctx)
    name = study_name or f"{o['space_name']}-{o['objective']}"
    summary, study = run_search(
        settings, study_name=name, data=data, trials=trials, storage_url=storage_url, **o
    )
    _report_front(summary, study, as_json)
    if summary["complete"] == 0:
        raise _none_complete(summary, study, f"study {name!r}")


#: The demo's measurement protocol (seconds per model on a CPU).
DEMO_PROTOCOL = "quick"


@click.command("demo")
@click.option("--trials", type=click.IntRange(1), default=16, show_default=True)
@click.option("--study", "study_name", default=None, help="Default: demo-<time>.")
@click.option("--keep-up", is_flag=True, help="Leave the local stack running afterwards.")
@click.pass_context
def demo_cmd(ctx: click.Context, trials: int, study_name: str | None, keep_up: bool) -> None:
    """The whole mission on this machine in minutes: synthetic data, the local stack, a search
    of the cnn3d space (8 x 41 x 41 inputs, quick protocol), the front, the report, the stack
    down."""
    from hpc2edge.ops import stack
    from hpc2edge.search.problem import DEMO_DATA, DEMO_PIN, DEMO_RECIPE, write_demo_data

    settings = command_settings(ctx)
    data_dir = settings.state_dir.absolute() / "demo-data"
    click.echo(f"synthetic RAISE-LPBF data in {data_dir}", err=True)
    _, written = write_demo_data(data_dir, DEMO_DATA)
    if written:
        click.echo("  generated (the demo problem's data: hpc2edge.search.problem)", err=True)
    click.echo("starting the local stack (TLS broker, edge and train workers)", err=True)
    settings = stack.prepare(settings)  # certificates and passwords exist from here on
    stack.up(settings)
    name = study_name or time.strftime("demo-%Y%m%d-%H%M%S")
    try:
        summary, study = run_search(
            settings,
            study_name=name,
            data=data_dir,
            trials=trials,
            space_name="cnn3d",
            objective="pareto",
            latency_budget_ms=None,
            sampler="tpe",
            seed=0,
            parallel=3,
            export_workers=0,
            latency_first=True,
            batch_size=1,
            precision="fp32",
            protocol=DEMO_PROTOCOL,
            **DEMO_RECIPE.search_options(),
            baseline=True,
            confirm_front=False,
            frames=DEMO_PIN["frames"],
            size=DEMO_PIN["size"],
            wait_workers_s=30.0,  # `up` waited for their answers; their heartbeats follow
        )
        _report_front(summary, study, as_json=False)
        html = _write_report(settings, study, summary["storage"])
        click.echo(f"\nreport: {html}")
        click.echo(f"study {name!r} is in {summary['storage']}; extend it with:")
        click.echo(f"  hpc2edge up && {extend_command(name, data_dir, trials + 8)}")
    finally:
        if not keep_up:
            stack.down(settings)
    if summary["complete"] == 0:
        raise _none_complete(summary, study, "the demo")


def extend_command(study_name: str, data_dir: Path, trials: int) -> str:
    """The ``hpc2edge search`` line that extends a demo study: the same problem (pin, data,
    recipe) and protocol, or the study would refuse the other settings."""
    from hpc2edge.search.problem import DEMO_RECIPE, pin_args

    args = [
        "hpc2edge", "search", "--study", study_name, "--data", str(data_dir),
        "--trials", str(trials), *pin_args(), "--protocol", DEMO_PROTOCOL,
        *DEMO_RECIPE.cli_args(),
    ]  # fmt: skip
    return shlex.join(args)
