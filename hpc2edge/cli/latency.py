"""``hpc2edge measure``: the edge protocol on this machine, without a broker.

Useful on a new device before it joins the pool, and to compare backends by hand. It runs the
same :class:`~hpc2edge.latency.base.LatencyBackend` code and protocol as the ``hpc2edge.measure``
task.
"""

from __future__ import annotations

import json
from pathlib import Path

import click


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{what}: comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise click.BadParameter(f"{what}: positive integers, got {text!r}")
    return values


@click.command("measure")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--backend",
    type=click.Choice(["onnxruntime", "tensorrt", "table"]),
    default="onnxruntime",
    show_default=True,
)
@click.option(
    "--batch",
    "batch_text",
    default="1",
    show_default=True,
    help="Batch sizes, comma-separated, e.g. 1,2,4.",
)
@click.option(
    "--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32", show_default=True
)
@click.option(
    "--input-shape",
    "shape_text",
    default=None,
    help="Input shape without batch, e.g. 1,16,224,224 (default: read from the model).",
)
@click.option("--quick", is_flag=True, help="A short protocol (CPU smoke tests), not for figures.")
@click.option(
    "--threads",
    type=int,
    default=0,
    show_default=True,
    help="ONNX Runtime intra-op threads (0: all cores).",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".hpc2edge/cache"),
    show_default=True,
    help="TensorRT engine cache.",
)
@click.option(
    "--table",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Recordings for --backend table.",
)
@click.option("--json", "as_json", is_flag=True, help="The full LatencyResult-style JSON.")
def measure_cmd(
    model: Path,
    backend: str,
    batch_text: str,
    precision: str,
    shape_text: str | None,
    quick: bool,
    threads: int,
    cache_dir: Path,
    table: Path | None,
    as_json: bool,
) -> None:
    """Measure MODEL (ONNX) here with the edge protocol; print the statistics per batch size."""
    from hpc2edge.latency import get_backend, telemetry
    from hpc2edge.latency.backends.onnxruntime import model_input_shape
    from hpc2edge.latency.protocol import Protocol

    batches = _ints(batch_text, "--batch")
    onnx_bytes = model.read_bytes()
    shape = _ints(shape_text, "--input-shape") if shape_text else model_input_shape(onnx_bytes)
    options: dict[str, object] = {}
    if backend == "onnxruntime":
        options = {"intra_op_threads": threads}
    elif backend == "tensorrt":
        options = {"cache_dir": cache_dir}
    elif table is None:
        raise click.BadParameter("--backend table needs --table FILE")
    else:
        options = {"table": table}
    runner = get_backend(backend, **options)
    protocol = Protocol.quick() if quick else Protocol()
    prepared = runner.prepare(onnx_bytes, precision, shape, batches)
    try:
        results = [runner.measure(prepared, b, protocol) for b in batches]
    finally:
        runner.release(prepared)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "model": str(model),
                    "onnx_sha256": prepared.onnx_sha256,
                    "backend": runner.name,
                    "precision": precision,
                    "input_shape": shape,
                    "build_s": prepared.build_s,
                    "batches": [r.to_json(with_samples=False) for r in results],
                    "backend_fingerprint": runner.fingerprint(),
                    "device": telemetry.fingerprint(),
                },
                indent=2,
                default=str,
            )
        )
        return
    click.echo(
        f"{model.name}  sha256 {prepared.onnx_sha256[:16]}  {runner.name} {precision}  "
        f"input [batch, {', '.join(map(str, shape))}]  prepared in {prepared.build_s:.2f} s"
    )
    click.echo(
        f"{'batch':>5} {'series':<10} {'n':>6} {'p50 ms':>9} {'p90 ms':>9} "
        f"{'p99 ms':>9} {'CI95 of p50':>19} {'CV':>6}  stop"
    )
    for r in results:
        for name, run in (("compute", r.compute), ("end2end", r.end_to_end)):
            s = run.stats
            ci = f"{s.ci95_median_ms[0]:.3f}-{s.ci95_median_ms[1]:.3f}"
            click.echo(
                f"{r.batch_size:>5} {name:<10} {s.n:>6} {s.median_ms:>9.3f} "
                f"{s.p90_ms:>9.3f} {s.p99_ms:>9.3f} {ci:>19} {s.cv:>6.1%}  "
                f"{run.stopped_by}"
            )
