"""``hpc2edge data``: generate synthetic files, inspect files, benchmark the reader.

The group is registered on the main command with ``cli.add_command(data_group)``. Data problems
raise :class:`~hpc2edge.errors.DataError` (the main CLI prints one line, exit 1); bad arguments
raise ``click.BadParameter`` (exit 2).

Only click is imported here: the data modules (h5py, numpy) are imported inside the commands, so
registering the group costs nothing and works where h5py is not installed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

#: The layouts of :mod:`hpc2edge.data.layout`, repeated to keep h5py out of this import.
LAYOUTS = ("v1.1", "v1.0")

_CACHE_OPTION = click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where index caches live (default: beside the data, else ~/.cache/hpc2edge/index).",
)


@click.group("data")
def data_group() -> None:
    """RAISE-LPBF-Laser data: synthetic files, inspection, reader speed."""


@data_group.command("synth")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder to write into (v1.0: RAISE_LPBF_train.hdf5, v1.1: one C0NN.hdf5 per object).",
)
@click.option("--layout", type=click.Choice(LAYOUTS), default="v1.1", show_default=True)
@click.option("--objects", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--layers", type=click.IntRange(min=1), default=2, show_default=True)
@click.option(
    "--lines", type=click.IntRange(min=1), default=8, show_default=True, help="Per layer."
)
@click.option("--frame-size", type=click.IntRange(min=8), default=64, show_default=True)
@click.option(
    "--line-length-mm", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-labels", is_flag=True, help="Write no laser_params (the test-file variant).")
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def synth_cmd(
    out_dir: Path,
    layout: str,
    objects: int,
    layers: int,
    lines: int,
    frame_size: int,
    line_length_mm: float,
    seed: int,
    no_labels: bool,
    force: bool,
) -> None:
    """Write synthetic RAISE-LPBF files with the real structure and a learnable signal."""
    from hpc2edge.data.synth import SynthSpec, generate

    spec = SynthSpec(
        layout=layout,
        objects=objects,
        layers=layers,
        lines=lines,
        frame_size=frame_size,
        line_length_mm=line_length_mm,
        labels=not no_labels,
        seed=seed,
    )
    t0 = time.perf_counter()
    try:
        files = generate(out_dir, spec, overwrite=force)
    except FileExistsError as exc:
        raise click.BadParameter(f"{exc} (pass --force)", param_hint="--out") from None
    total = sum(p.stat().st_size for p in files)
    click.echo(
        f"wrote {len(files)} file(s), {total / 1e6:.1f} MB, layout {layout}, "
        f"{objects * layers * lines} lines in {time.perf_counter() - t0:.1f} s: "
        + ", ".join(str(p) for p in files[:4])
        + (" …" if len(files) > 4 else "")
    )


def _fmt_range(values: list[float] | None, unit: str) -> str:
    return f"{values[0]:g}–{values[1]:g} {unit}" if values else "none (no labels)"


@data_group.command("inspect")
@click.argument("paths", nargs=-1, required=True)
@_CACHE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect_cmd(paths: tuple[str, ...], cache_dir: Path | None, as_json: bool) -> None:
    """Layout, objects, layers, lines, frames, frame size, label ranges and bytes of PATHS.

    PATHS are files, folders of .hdf5 files or globs. Reads the index only, never frames.
    """
    from hpc2edge.data.summary import summarize

    info = summarize(paths, cache_dir=cache_dir)
    if as_json:
        click.echo(json.dumps(info, indent=2, sort_keys=True))
        return
    sizes = ", ".join(f"{h}x{w}" for h, w in info["frame_sizes"])
    numbers = info["layer_numbers"]
    click.echo(
        f"files    {len(info['files'])} ({info['bytes'] / 1e6:.1f} MB), "
        f"layout {', '.join(info['layouts'])}"
    )
    click.echo(f"objects  {len(info['objects'])}: {', '.join(info['objects'])}")
    click.echo(f"layers   {info['layers']} (numbers {numbers[0]}–{numbers[1]})")
    click.echo(
        f"lines    {info['lines']} ({info['lines_contiguous']} contiguous, "
        f"{info['lines_labelled']} labelled)"
    )
    click.echo(f"frames   {info['frames']} ({info['frames_per_line_mean']} per line), {sizes} px")
    click.echo(f"speed    {_fmt_range(info['speed_mm_s_range'], 'mm/s')}")
    click.echo(f"power    {_fmt_range(info['power_w_range'], 'W')}")


@data_group.command("bench")
@click.argument("paths", nargs=-1, required=True)
@click.option("--samples", type=click.IntRange(min=1), default=None, help="Default: all.")
@click.option("--frames", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--size", type=click.IntRange(min=1), default=41, show_default=True)
@click.option("--passes", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--objects", default=None, help="Objects to read, e.g. C027,C030.")
@click.option("--layers", default=None, help="Layer slice (100:-8) or numbers (3,5).")
@_CACHE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def bench_cmd(
    paths: tuple[str, ...],
    samples: int | None,
    frames: int,
    size: int,
    passes: int,
    objects: str | None,
    layers: str | None,
    cache_dir: Path | None,
    as_json: bool,
) -> None:
    """Samples/s of the reader on PATHS (evaluation windows, one process).

    Clears the shared crop-centre table of PATHS first, so the first pass is a cold one.
    """
    from hpc2edge.data.preprocess import Preprocess
    from hpc2edge.data.reader import LPBFReader
    from hpc2edge.data.selection import Selection
    from hpc2edge.data.summary import bench_reader

    try:
        selection = Selection(objects=tuple(objects.split(",")) if objects else None, layers=layers)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    t0 = time.perf_counter()
    try:
        reader = LPBFReader(
            paths,
            selection=selection,
            preprocess=Preprocess(frames=frames, size=size),
            cache_dir=cache_dir,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    open_s = time.perf_counter() - t0
    with reader:
        result = bench_reader(reader, max_samples=samples, repeats=passes)
    result.update(open_s=open_s, frames=frames, size=size)
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
        return
    click.echo(f"{reader!r}, index ready in {open_s * 1e3:.0f} ms")
    click.echo(
        f"{result['samples']} samples [1, {frames}, {size}, {size}]: "
        f"{result['samples_per_s_first_pass']:.0f} samples/s first pass (whole lines)"
        + (
            f", {result['samples_per_s_later_passes']:.0f} samples/s later passes (windows only)"
            if result["samples_per_s_later_passes"]
            else ""
        )
    )
