"""Model cost: the paper's baseline (Video Swin-T) vs. the ends of the Swin3D space and a CNN.

What it measures, in one run and side by side, on this machine's CPU:

- **parameters** (trainable weights) and **FLOPs** (2 per multiply-accumulate of matmuls and
  convolutions, counted by ``torch.utils.flop_counter``, batch 1);
- **forward time**: PyTorch eager, fp32, batch 1, ``torch.no_grad()``, a fixed number of CPU
  threads; one untimed warm-up call, then the median of ``--repeats`` timed calls
  (``time.perf_counter``). Weights are random (seed 0): time does not depend on their values.

for four networks, each at its space's own input:

- ``swin3d baseline``: Video Swin-T (embed 96, depths 2-2-6-2) at 16 x 224 x 224;
- ``swin3d smallest`` / ``swin3d largest``: every searched choice at its minimum / maximum;
- ``cnn3d mid``: a mid-size point of the CPU-demo space (3 blocks 16-32-64, 3x3x3 kernels,
  pool, batch norm, ReLU, head 128) at 16 x 64 x 64.

Ratios are to the baseline (baseline / other for time: "x faster"; other / baseline for
parameters). Why: the search space should span networks much cheaper than the human design
(the paper's found model is ~8.8x faster on a Jetson); this shows the span on a CPU. It is not
an edge measurement: latency for the search is measured by the latency backends on the device.

Usage::

    python bench/models.py [--repeats 3] [--threads 2] [--small] [--json OUT]

``--small`` runs every network at 16 x 64 x 64 instead (seconds instead of minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from typing import Any

import torch

from hpc2edge.models import build_model, example_input, flops, params
from hpc2edge.space import ArchSpec, get_space


def networks(small: bool) -> dict[str, ArchSpec]:
    swin = get_space("swin3d")
    cnn = get_space("cnn3d").baseline()
    cnn_mid = ArchSpec(
        "cnn3d",
        16,
        64,
        {
            **cnn.params,
            "channels": (16, 32, 64),
            "kernel_t": (3, 3, 3),
            "kernel_s": (3, 3, 3),
            "batch_norm": True,
            "head_hidden": (128,),
        },
    )
    get_space("cnn3d").validate(cnn_mid)
    specs = {
        "swin3d baseline": swin.baseline(),
        "swin3d smallest": swin.smallest(),
        "swin3d largest": swin.largest(),
        "cnn3d mid": cnn_mid,
    }
    if small:
        specs = {k: v.with_input(frames=16, size=64) for k, v in specs.items()}
    return specs


def forward_times_ms(spec: ArchSpec, repeats: int) -> list[float]:
    torch.manual_seed(0)
    model = build_model(spec).eval()
    x = example_input(spec)
    times = []
    with torch.no_grad():
        model(x)  # warm-up: allocator, oneDNN primitive creation
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - start) * 1e3)
    return times


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--small", action="store_true", help="all at 16x64x64")
    parser.add_argument("--json", dest="json_out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    for name, spec in networks(args.small).items():
        times = forward_times_ms(spec, args.repeats)
        rows.append(
            {
                "name": name,
                "arch_id": spec.arch_id,
                "input": f"{spec.frames}x{spec.size}x{spec.size}",
                "params": params(spec),
                "gflops": flops(spec) / 1e9,
                "forward_ms_median": statistics.median(times),
                "forward_ms_all": times,
            }
        )
    base = rows[0]
    info = machine()
    print(f"machine: {json.dumps(info)}")
    print(f"forward: PyTorch eager fp32, batch 1, median of {args.repeats} after 1 warm-up")
    header = (
        f"{'network':<16} {'input':>10} {'params':>10} {'GFLOPs':>8} {'fwd ms':>10} "
        f"{'params/base':>11} {'base/fwd (x faster)':>20}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['name']:<16} {r['input']:>10} {r['params'] / 1e6:>9.3f}M {r['gflops']:>8.2f} "
            f"{r['forward_ms_median']:>10.1f} {r['params'] / base['params']:>11.4f} "
            f"{base['forward_ms_median'] / r['forward_ms_median']:>20.2f}"
        )
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"machine": info, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
