"""``hpc2edge train``: one training run here, as a train worker would run it.

Useful to check a node before it joins the pool: the same request, launcher, child process and
result as the ``hpc2edge.train`` task, without a broker. Failures print one line and exit
non-zero (the main command turns ``Hpc2EdgeError`` into that line).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from hpc2edge.errors import SpecError, TrainingError


def _summary(result: dict[str, Any]) -> str:
    lines = [
        f"engine            {result['engine']} (world size {result['world_size']}, "
        f"{result['device']}, {result['precision']})",
        f"epochs            {result['epochs_run']}/{result['epochs_budget']}"
        + (" (stopped early)" if result["stopped_early"] else ""),
        f"val MSE (norm.)   {result['val_mse']:.6g}  "
        f"(constant predictor {result['val_mse_constant']:.6g})",
        f"val RMSE          {result['val_rmse']:.6g} normalised, "
        f"{result['val_rmse_speed_mm_s']:.1f} mm/s, {result['val_rmse_power_w']:.1f} W",
    ]
    if result.get("test"):
        t = result["test"]
        lines.append(
            f"test RMSE         {t['rmse']:.6g} normalised, {t['rmse_speed_mm_s']:.1f} mm/s, "
            f"{t['rmse_power_w']:.1f} W ({t['samples']} lines)"
        )
    lines += [
        f"throughput        {result['samples_per_s']:.1f} samples/s, wall {result['wall_s']:.1f} s",
        f"checkpoint        {result['checkpoint_path']}",
        f"sha256            {result['checkpoint_sha256']}",
    ]
    if result.get("engine_note"):
        lines.append(f"note              {result['engine_note']}")
    return "\n".join(lines)


@click.command("train")
@click.option("--space", "space_name", default="cnn3d", show_default=True, help="Search space.")
@click.option(
    "--spec",
    "spec_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="ArchSpec JSON file.",
)
@click.option("--baseline", is_flag=True, help="Train the space's hand-designed baseline.")
@click.option("--data", "data_paths", multiple=True, required=True, help="HDF5 file(s) or folder.")
@click.option("--epochs", type=click.IntRange(1), default=2, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True, help="Per GPU.")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option(
    "--engine",
    type=click.Choice(["auto", "deepspeed", "ddp", "single"]),
    default="auto",
    show_default=True,
)
@click.option("--nproc", default="1", show_default=True, help="Processes, or 'auto' (one/GPU).")
@click.option("--objects", default=None, help="Objects to use, e.g. C027,C028.")
@click.option(
    "--test-fraction",
    type=float,
    default=None,
    help="Split lines at random (default: split by the paper's held-out objects).",
)
@click.option("--evaluate-test", is_flag=True, help="Also report the test split's errors.")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".hpc2edge"),
    show_default=True,
    help="Runs (log, checkpoint) go under STATE_DIR/train-runs.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the full TrainResult JSON.")
def train_cmd(
    space_name: str,
    spec_file: Path | None,
    baseline: bool,
    data_paths: tuple[str, ...],
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    engine: str,
    nproc: str,
    objects: str | None,
    test_fraction: float | None,
    evaluate_test: bool,
    state_dir: Path,
    as_json: bool,
) -> None:
    """Train one candidate locally and print its TrainResult."""
    import time

    from hpc2edge.data.layout import expand_paths
    from hpc2edge.space.registry import get_space
    from hpc2edge.training.service import train_request

    if (spec_file is None) == (not baseline):
        raise click.UsageError("give exactly one of --spec FILE and --baseline")
    space = get_space(space_name)
    if baseline:
        spec = space.baseline()
    else:
        assert spec_file is not None
        from hpc2edge.space.base import ArchSpec

        spec = ArchSpec.from_json(spec_file.read_text())
    # Absolute: the training runs in a child process whose working folder is its run folder.
    paths = [str(p.resolve()) for p in expand_paths([Path(p) for p in data_paths])]
    request = {
        # A fresh key per call: the CLI always trains (the result store is for redeliveries).
        "trial_key": f"cli-{spec.arch_id[:12]}-{os.getpid()}-{time.time_ns()}",
        "space": space_name,
        "spec": spec.to_dict(),
        "hparams": {"lr": lr, "batch_size_per_gpu": batch_size, "epochs": epochs},
        "epochs": epochs,
        "seed": seed,
        "data": {
            "paths": paths,
            "objects": objects,
            "test_fraction": test_fraction,
            "evaluate_test": evaluate_test,
        },
        "resources": {"engine": engine, "nproc": nproc if nproc == "auto" else _int(nproc)},
    }
    result = train_request(request, state_dir=state_dir)
    if result["status"] != "ok":
        err = result["error"]
        # One line: the message without the log tail, and where the log is.
        head, _, rest = err["message"].partition("\n--- ")
        if rest:
            head += f" (log: {rest.split(' (tail) ---', 1)[0]})"
        if err["type"] == "SpecError":
            raise SpecError(head)
        raise TrainingError(head if err["type"] == "TrainingError" else f"{err['type']}: {head}")
    click.echo(json.dumps(result, indent=2, sort_keys=True) if as_json else _summary(result))


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise click.BadParameter(f"expected an integer or 'auto', got {text!r}") from None
