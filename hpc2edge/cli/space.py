"""``hpc2edge space show|sample`` and ``hpc2edge export``: look at spaces, write ONNX files.

The main CLI (:mod:`hpc2edge.cli.root`) registers :data:`space_group` and :data:`export_cmd`.
Unknown spaces and malformed specs raise :class:`~hpc2edge.errors.SpecError`, which the main CLI
prints as one line with exit code 2. Counting parameters and FLOPs needs torch; without it
``sample`` prints the specs and ids only.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import click

from hpc2edge.errors import SpecError
from hpc2edge.space.base import ArchSpec
from hpc2edge.space.registry import get_space, list_spaces


def _counts(spec: ArchSpec) -> tuple[int | None, int | None]:
    try:
        from hpc2edge import models
    except ImportError:  # no torch on this host (an edge device): specs and ids only
        return None, None
    return models.params(spec), models.flops(spec)


def _human(n: int | None, unit: str) -> str:
    if n is None:
        return f"? {unit}"
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.2f} {prefix}{unit}"
    return f"{n} {unit}"


@click.group("space")
def space_group() -> None:
    """Inspect search spaces: their parameters, baselines and samples."""


@space_group.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the whole description as JSON.")
def space_show(name: str, as_json: bool) -> None:
    """Parameters, choices and fixed values of search space NAME."""
    info = get_space(name).describe()
    if as_json:
        click.echo(json.dumps(info, indent=2, sort_keys=True))
        return
    click.echo(
        f"space {info['name']} (family {info['family']}): {info['n_architectures']:,} architectures"
    )
    click.echo(f"input: frames {info['input']['frames']}, size {info['input']['size']}")
    click.echo("searched:")
    for pname, p in info["parameters"].items():
        when = f"  (when {p['when']})" if "when" in p else ""
        click.echo(f"  {pname:<18} {p['choices']}{when}")
    click.echo("fixed:")
    for fname, value in info["fixed"].items():
        click.echo(f"  {fname:<18} {value}")
    click.echo(f"baseline: {json.dumps(info['baseline'], sort_keys=True)}")
    click.echo(f"known spaces: {', '.join(list_spaces())}")


@space_group.command("sample")
@click.argument("name")
@click.option("--n", "count", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON list of {arch_id, spec, ...}.")
def space_sample(name: str, count: int, seed: int, as_json: bool) -> None:
    """Draw N seeded specs from space NAME with their ids, parameters and FLOPs."""
    space = get_space(name)
    rng = random.Random(seed)  # noqa: S311 (seeded sampling, not secrets)
    rows: list[dict[str, Any]] = []
    for _ in range(count):
        spec = space.sample(rng)
        n_params, n_flops = _counts(spec)
        rows.append(
            {"arch_id": spec.arch_id, "spec": spec.to_dict(), "params": n_params, "flops": n_flops}
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2, sort_keys=True))
        return
    for row in rows:
        click.echo(
            f"{row['arch_id'][:12]}  {_human(row['params'], 'params'):>14}  "
            f"{_human(row['flops'], 'FLOPs'):>13}  {json.dumps(row['spec'], sort_keys=True)}"
        )


@click.command("export")
@click.option("--space", "space_name", required=True, help="Search space the spec belongs to.")
@click.option(
    "--spec",
    "spec_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="ArchSpec JSON file (as `space sample --json` prints under 'spec').",
)
@click.option("--baseline", is_flag=True, help="Export the space's hand-designed baseline.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Weight seed.")
def export_cmd(
    space_name: str, spec_file: Path | None, baseline: bool, out: Path, seed: int
) -> None:
    """Export one architecture to ONNX (opset 17, dynamic batch), checked with ONNX Runtime."""
    if (spec_file is None) == (not baseline):
        raise click.UsageError("give exactly one of --spec FILE and --baseline")
    space = get_space(space_name)
    if baseline:
        spec = space.baseline()
    else:
        assert spec_file is not None
        try:
            spec = ArchSpec.from_json(spec_file.read_bytes())
        except SpecError as exc:
            raise SpecError(f"{spec_file}: {exc}") from None
    space.validate(spec)

    from hpc2edge.models.export import export_onnx

    data = export_onnx(spec, seed)
    out.write_bytes(data)
    click.echo(
        f"wrote {out} ({len(data) / 1e6:.1f} MB, sha256 {hashlib.sha256(data).hexdigest()[:12]}): "
        f"{spec.space} {spec.arch_id[:12]} at {spec.frames}x{spec.size}x{spec.size}, "
        "checked against PyTorch with ONNX Runtime"
    )
