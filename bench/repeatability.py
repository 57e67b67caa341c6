"""Repeatability of edge measurements: the same model measured N times through the real system.

The paper's latency was the mean of 10 unsynchronised runs; a number that moves between two
measurements of the same model cannot rank architectures. This script starts a throwaway local
stack (TLS broker, real ``celery worker -Q edge --pool solo``), stores one ONNX model in the
artifact store, sends ``hpc2edge.measure`` N times (default 5) and prints the median of each run
(compute series, batch 1), the spread ``max/min - 1`` and each run's CI of the median.

Side by side, for contrast, it times the same model the paper's way (1 warm-up + 10 runs, the
mean) N times in this process and prints that spread too, with the ratio of the two spreads.

Usage::

    python bench/repeatability.py [--runs 5] [--hidden 512] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.support.onnx_models builds the model (needs `onnx`)


def paper_style_ms(onnx_bytes: bytes, input_shape: tuple[int, ...]) -> float:
    """1 warm-up, 10 runs, mean: how the paper timed (there in PyTorch eager, here in ORT)."""
    import onnxruntime as ort

    from hpc2edge.latency.base import reference_input

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # as the edge worker in this bench
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: reference_input(input_shape, 1, 0)}
    session.run(None, feed)
    times = []
    for _ in range(10):
        t0 = time.time()
        session.run(None, feed)
        times.append((time.time() - t0) * 1000.0)
    return sum(times) / len(times)


def spread(values: list[float]) -> float:
    """max / min - 1: 0.05 means the largest run is 5 % above the smallest."""
    return max(values) / min(values) - 1.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=1024, help="MLP width (model size)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.runs < 2:
        parser.error("--runs must be >= 2")

    from hpc2edge.config import load_settings
    from hpc2edge.ops import stack
    from hpc2edge.store.artifacts import RedisArtifactStore
    from hpc2edge.transport import broker
    from hpc2edge.transport.app import make_app
    from hpc2edge.util import net
    from tests.support.onnx_models import tiny_model

    shape = (1, 8, 32, 32)
    model = tiny_model(shape, hidden=args.hidden, seed=0)
    with tempfile.TemporaryDirectory(prefix="h2e-repeat-") as tmp:
        # One ONNX Runtime thread: on a shared 2-core host, a thread pool competing with the
        # broker and other processes measures the scheduler, not the model.
        env = {
            "HPC2EDGE_STATE_DIR": tmp,
            "HPC2EDGE_BROKER_PORT": str(net.free_port()),
            "HPC2EDGE_EDGE_INTRA_OP_THREADS": "1",
        }
        settings = stack.prepare(load_settings(environ=env))
        try:
            stack.up(settings)
            app = make_app(settings)
            client = broker.client(settings)
            key = RedisArtifactStore(client).put(model.onnx_bytes)
            request = {
                "arch_id": "repeatability",
                "artifact_key": key,
                "input_shape": list(shape),
                "batch_sizes": [1],
                "precision": "fp32",
                "keep_samples": False,
            }
            runs: list[dict[str, Any]] = []
            for i in range(args.runs):
                result = app.send_task("hpc2edge.measure", args=[request]).get(timeout=300)
                if result["status"] != "ok":
                    raise SystemExit(f"run {i}: {result['error']}")
                compute = result["batches"][0]["compute"]
                runs.append(
                    {
                        "median_ms": compute["stats"]["median_ms"],
                        "ci95_median_ms": compute["stats"]["ci95_median_ms"],
                        "n": compute["stats"]["n"],
                        "stopped_by": compute["stopped_by"],
                        "cv": compute["stats"]["cv"],
                    }
                )
            client.close()
            app.close()
        finally:
            stack.down(settings)
    paper = [paper_style_ms(model.onnx_bytes, shape) for _ in range(args.runs)]
    medians = [r["median_ms"] for r in runs]
    report = {
        "model": {
            "input_shape": list(shape),
            "hidden": args.hidden,
            "onnx_bytes": len(model.onnx_bytes),
        },
        "protocol_runs": runs,
        "protocol_spread": spread(medians),
        "paper_style_means_ms": paper,
        "paper_style_spread": spread(paper),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "processor": platform.processor(),
        },
    }
    print(f"model: MLP over {shape}, hidden {args.hidden}; ONNX Runtime CPU via the edge worker")
    print(f"{'run':>3} {'median ms':>10} {'CI95 of median':>20} {'n':>6} {'CV':>7}  stop")
    for i, r in enumerate(runs):
        lo, hi = r["ci95_median_ms"]
        print(
            f"{i:>3} {r['median_ms']:>10.4f} {f'{lo:.4f}-{hi:.4f}':>20} {r['n']:>6} "
            f"{r['cv']:>7.1%}  {r['stopped_by']}"
        )
    center = sorted(medians)[len(medians) // 2]
    deviation = max(abs(m / center - 1.0) for m in medians)
    report["protocol_max_deviation_from_median"] = deviation
    print(
        f"protocol: spread of medians over {args.runs} runs = {report['protocol_spread']:.1%}; "
        f"largest deviation from their median {deviation:.1%} "
        f"({'within' if deviation <= 0.05 else 'OUTSIDE'} +-5 %)"
    )
    print(
        f"paper-style (1 warm-up, 10 runs, mean), same model, {args.runs} times: "
        f"spread {report['paper_style_spread']:.1%}"
    )
    if report["protocol_spread"] > 0:
        print(
            f"ratio paper-style spread / protocol spread: "
            f"{report['paper_style_spread'] / report['protocol_spread']:.1f}x"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
