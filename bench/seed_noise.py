"""Seed noise of the demo problem's training recipe, against a variant of it, side by side.

A recorded benchmark can rank architectures only as well as one training seed predicts another
(``record_benchmark.py --report``'s last line). This script trains the same networks of the
recorded table with several seeds under two recipes, on this machine and in one run, and prints
for each recipe:

- **seed sigma**: the pooled standard deviation over seeds of the log final val MSE (0.47 means
  two seeds of one network differ by a factor of about 1.6);
- **epoch swing**: the median over networks and the last three epochs of
  ``|log(val_mse[e] / val_mse[e-1])|`` (how far one more epoch moves the loss);
- **between-seed Kendall tau** of the networks' final val MSE (seed s against seed s+1, mean);
- **val MSE / constant**: the median and the best final val MSE over the constant predictor's;

and the ratio of the two recipes' seed sigmas. The networks are the table's rows trained with two
seeds up to ``--max-s-per-epoch`` seconds per epoch, spread over their sizes, as many as
``--networks``.

Usage::

    python bench/seed_noise.py [--networks 8] [--seeds 3] [--variant lr_step_epochs=1,lr_gamma=0.6]
        [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the training children inherit it
os.environ.setdefault("MKL_NUM_THREADS", "1")

import record_benchmark as rb

from hpc2edge.sim import surrogate as sur
from hpc2edge.sim.benchmark import DEFAULT, load


def parse_variant(text: str) -> dict[str, Any]:
    """``k=v,k=v`` as recipe overrides (numbers where they parse)."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise SystemExit(f"--variant: expected key=value, got {part!r}")
        try:
            out[key] = int(value)
        except ValueError:
            try:
                out[key] = float(value)
            except ValueError:
                out[key] = value
    return out


def summarise(curves: dict[str, list[rb.Curve]]) -> dict[str, Any]:
    """The figures of one recipe from ``{arch_id: [curve per seed]}``."""
    logs = {a: [math.log(c.val_mse[-1]) for c in cs] for a, cs in curves.items()}
    pooled = statistics.fmean(statistics.variance(v) for v in logs.values() if len(v) > 1)
    swings = [
        abs(math.log(c.val_mse[e] / c.val_mse[e - 1]))
        for cs in curves.values()
        for c in cs
        for e in range(max(1, len(c.val_mse) - 3), len(c.val_mse))
    ]
    seeds = min(len(cs) for cs in curves.values())
    taus = [
        sur.kendall_tau(
            [cs[s].val_mse[-1] for cs in curves.values()],
            [cs[s + 1].val_mse[-1] for cs in curves.values()],
        )
        for s in range(seeds - 1)
    ]
    ratio = [c.val_mse[-1] / c.val_mse_constant for cs in curves.values() for c in cs]
    return {
        "seed_sigma": math.sqrt(pooled),
        "epoch_swing_median": statistics.median(swings),
        "between_seed_tau": statistics.fmean(taus) if taus else float("nan"),
        "val_over_constant_median": statistics.median(ratio),
        "val_over_constant_best": min(ratio),
        "s_per_epoch_median": statistics.median(
            c.s_per_epoch for cs in curves.values() for c in cs
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--benchmark",
        default=DEFAULT,
        help=f"the recorded table: a name or a path (default: {DEFAULT})",
    )
    parser.add_argument("--networks", type=int, default=8, help="networks trained (default: 8)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per network (default: 3)")
    parser.add_argument("--epochs", type=int, default=None, help="default: the table's")
    parser.add_argument(
        "--max-s-per-epoch",
        type=float,
        default=5.0,
        help="leave out networks slower than this (recorded seconds per epoch; default: 5)",
    )
    parser.add_argument(
        "--variant",
        default="lr_step_epochs=1,lr_gamma=0.6",
        help="recipe overrides of the variant, k=v,... (default: lr_step_epochs=1,lr_gamma=0.6)",
    )
    parser.add_argument("--data", type=Path, default=Path(".hpc2edge/bench-data"))
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)

    bench = load(args.benchmark)
    header = bench.header
    base = dict(header["recipe"])
    recipes = {"table": base, "variant": {**base, **parse_variant(args.variant)}}
    epochs = args.epochs or int(header["max_epochs"])
    pool_rows = sorted(
        (
            r
            for r in bench.rows.values()
            if len(r.curves) > 1
            and r.space == rb.MAIN_SPACE
            and r.curves[0].s_per_epoch <= args.max_s_per_epoch
        ),
        key=lambda r: r.curves[0].s_per_epoch,
    )
    step = max(1, len(pool_rows) // max(1, args.networks))
    rows = pool_rows[::step][: args.networks]  # spread over sizes, not only the smallest
    data, _ = rb.ensure_data(args.data, rb.problem().synth)
    print(f"{len(rows)} networks x {args.seeds} seeds x 2 recipes, {epochs} epochs; "
          f"variant {recipes['variant']}", file=sys.stderr, flush=True)  # fmt: skip

    jobs = [(name, r, s) for name in recipes for r in rows for s in range(args.seeds)]
    results: dict[str, dict[str, list[rb.Curve]]] = {n: {} for n in recipes}
    started = time.perf_counter()

    def run(job: tuple[str, Any, int]) -> tuple[str, str, rb.Curve]:
        name, row, seed = job
        with tempfile.TemporaryDirectory(prefix="hpc2edge-noise-") as tmp:
            rec = rb.Recorder(data, recipes[name], epochs, Path(tmp), "cpu-x86")
            return name, row.arch_id, rec.train(row.space, row.arch(), seed)

    with ThreadPoolExecutor(max_workers=2) as pool:  # each training is a one-thread child
        for k, (name, arch_id, curve) in enumerate(pool.map(run, jobs), 1):
            results[name].setdefault(arch_id, []).append(curve)
            ratio = curve.val_mse[-1] / curve.val_mse_constant
            took = time.perf_counter() - started
            print(f"[{k}/{len(jobs)}] {name} {arch_id[:12]} seed {curve.seed}: final val/const "
                  f"{ratio:.3f} ({took:.0f} s)", file=sys.stderr, flush=True)  # fmt: skip
    figures = {n: summarise(results[n]) for n in recipes}
    print(f"\n{'recipe':10} {'seed sigma':>10} {'epoch swing':>11} {'seed tau':>9} "
          f"{'val/const med':>13} {'best':>6} {'s/epoch':>8}")  # fmt: skip
    for name, f in figures.items():
        print(f"{name:10} {f['seed_sigma']:10.3f} {f['epoch_swing_median']:11.3f} "
              f"{f['between_seed_tau']:9.3f} {f['val_over_constant_median']:13.3f} "
              f"{f['val_over_constant_best']:6.3f} {f['s_per_epoch_median']:8.2f}")  # fmt: skip
    ratio = figures["variant"]["seed_sigma"] / figures["table"]["seed_sigma"]
    print(f"\nseed sigma, variant / table: {ratio:.2f}x")
    if args.json:
        out = {
            "recipes": recipes,
            "epochs": epochs,
            "networks": [r.arch_id for r in rows],
            "seeds": args.seeds,
            "figures": figures,
            "seed_sigma_ratio": ratio,
            "curves": {
                n: {a: [c.val_mse for c in cs] for a, cs in results[n].items()} for n in recipes
            },
        }
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
