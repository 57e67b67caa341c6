"""The ``hpc2edge report`` command: report.html and report.json of one study."""

from __future__ import annotations

from pathlib import Path

import click

from hpc2edge.cli.context import STORAGE_OPTION, command_settings
from hpc2edge.config import measurement_store_url, study_storage_url
from hpc2edge.report.collect import collect, dumps, load, write


def _reference(value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        mse, ms = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter("expected VAL_MSE,LATENCY_MS, e.g. 0.05,20") from None
    if not (mse > 0 and ms > 0):
        raise click.BadParameter("both coordinates must be positive")
    return mse, ms


@click.command("report")
@click.option("--study", "study_name", required=True, help="The study to report on.")
@STORAGE_OPTION
@click.option(
    "--store",
    "store_url",
    default=None,
    help="Measurement store URL (default: search.store, else .hpc2edge/measurements.db).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for report.html, report.json and the PNGs.",
)
@click.option(
    "--hv-reference",
    default=None,
    metavar="VAL_MSE,LATENCY_MS",
    help="Reference point of the hypervolume (default: from the study; see the report).",
)
@click.option("--json", "as_json", is_flag=True, help="Print report.json to stdout.")
@click.pass_context
def report_cmd(
    ctx: click.Context,
    study_name: str,
    url: str | None,
    store_url: str | None,
    out: Path,
    hv_reference: str | None,
    as_json: bool,
) -> None:
    """Write report.html (Pareto front, hypervolume, tables against the baseline, devices),
    its PNGs and report.json for a study."""
    reference = _reference(hv_reference)
    settings = command_settings(ctx)
    url = study_storage_url(settings, url)
    explicit_store = store_url is not None
    store_url = measurement_store_url(settings, store_url)
    study, store, note = load(study_name, url, store_url, store_required=explicit_store)
    try:
        report = collect(study, store, storage=url, store_note=note, hv_reference=reference)
    finally:
        if store is not None:
            store.close()
    files = write(report, out)
    if as_json:
        click.echo(dumps(report))
        return
    c = report["counts"]
    click.echo(
        f"{files['html']}: study {study_name!r}, {c['trials']} trials ({c['complete']} complete, "
        f"{c['pruned']} pruned, {c['failed']} failed), front of {c['front']}"
    )
    if note:
        click.echo(f"note: {note}", err=True)
