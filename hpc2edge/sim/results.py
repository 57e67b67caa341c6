"""Results in the shape the real workers send: what simulated devices and trainers answer.

The simulator (:mod:`hpc2edge.sim.fleet`) and the test doubles (:mod:`hpc2edge.testing.fakes`)
answer ``hpc2edge.measure`` and ``hpc2edge.train`` with figures of their own (a recorded
benchmark's, a formula's), inside the records the real task functions return: a
:class:`~hpc2edge.latency.base.BatchMeasurement` per batch size inside the envelope of
``measure_request``, a :class:`~hpc2edge.training.result.TrainResult` inside that of
``train_request``. ``tests/unit/test_search_doubles.py`` compares them, key by key and type by
type, with what the real functions return, so the orchestrator reads a simulated result with the
same code, and the same checks, as a real one.

Only the numbers are made up: a series is "well behaved" (2 % spread, converged) unless asked to
be ``shaky`` (ended by the time cap with a +-20 % CI).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from hpc2edge.latency.base import TOLERANCE, BatchMeasurement, OutputCheck
from hpc2edge.latency.pairing import BLOCK_RUNS, RatioStats
from hpc2edge.latency.protocol import Protocol, ProtocolRun
from hpc2edge.latency.service import RESULT_FORMAT as LATENCY_FORMAT
from hpc2edge.latency.stats import LatencyStats
from hpc2edge.store.artifacts import parse_key
from hpc2edge.training.result import TrainResult
from hpc2edge.training.service import RESULT_FORMAT as TRAIN_FORMAT

#: A pretend device's fingerprint (the keys of :func:`hpc2edge.latency.telemetry.fingerprint`).
DEVICE: dict[str, Any] = {
    "hostname": "fake-orin",
    "platform": "Linux-fake",
    "machine": "aarch64",
    "python": "3.11.7",
    "cpu_model": "fake",
    "cpu_count": 12,
    "memory_total_bytes": 64 * 2**30,
    "device_model": "Fake AGX Orin",
    "l4t_release": None,
    "jetpack_version": None,
    "nvpmodel": None,
    "jetson_clocks": None,
    "versions": {"onnxruntime": "1.0-fake", "tensorrt": None, "pycuda": None},
}
#: A pretend backend's fingerprint.
BACKEND: dict[str, Any] = {"backend": "fake", "version": "1"}
#: A telemetry snapshot of a device without sensors (the keys of ``telemetry.snapshot``).
TELEMETRY: dict[str, Any] = {
    "timestamp_unix_s": 0.0,
    "temperatures_c": {},
    "cpu_freq_mhz": {},
    "gpu_freq_mhz": None,
    "nvml": None,
    "load_avg": [0.0, 0.0, 0.0],
}


def latency_stats(ms: float) -> LatencyStats:
    """Statistics of a well-behaved series with median ``ms`` (no raw samples)."""
    return LatencyStats(
        n=50, min_ms=ms * 0.95, median_ms=ms, mean_ms=ms, std_ms=ms * 0.02, p90_ms=ms * 1.05,
        p99_ms=ms * 1.1, max_ms=ms * 1.2, cv=0.02, ci95_median_ms=(ms * 0.99, ms * 1.01),
        samples_ms=(),
    )  # fmt: skip


def stats(ms: float) -> dict[str, Any]:
    """:func:`latency_stats` as it travels in a result."""
    return latency_stats(ms).to_json()


def batches(ms: float, batch_sizes: list[int], shaky: bool = False) -> list[BatchMeasurement]:
    """Both series per batch size around ``ms`` per sample; ``shaky``: ended by the time cap
    with a +-20 % CI."""
    out = []
    for bs in batch_sizes:
        st = latency_stats(ms * bs)
        if shaky:
            st = replace(st, ci95_median_ms=(st.median_ms * 0.8, st.median_ms * 1.2), cv=0.3)
        run = ProtocolRun(st, warmup_runs=3, warmup_s=0.1, timed_s=1.0,
                          stopped_by="max_time" if shaky else "converged")  # fmt: skip
        out.append(BatchMeasurement(bs, run, run))
    return out


def output_check(reference: Any, precision: str) -> dict[str, Any] | None:
    """A reference is always matched: a simulated device runs the model as exported."""
    if reference is None:
        return None
    return OutputCheck(0.0, TOLERANCE.get(precision, 1e-4), True).to_json()


def measure_result(
    payload: dict[str, Any],
    ms: float,
    *,
    kind: str,
    worker: str,
    device: dict[str, Any] | None = None,
    backend: dict[str, Any] | None = None,
    shaky: bool = False,
    pair_ms: float | None = None,
) -> dict[str, Any]:
    """The ``hpc2edge.measure`` result for ``payload`` with ``ms`` per sample at batch 1.

    ``pair_ms``: the payload carries a ``pair`` (the baseline, timed interleaved with it) whose
    per-sample latency is that; its ratio is what a noise-free device would time.
    """
    backend = dict(backend or BACKEND)
    with_samples = payload.get("keep_samples", True)
    series = batches(ms, payload["batch_sizes"], shaky)
    sent = [b.to_json(with_samples=with_samples) for b in series]
    extra: dict[str, Any] = {}
    pair = payload.get("pair")
    if pair is not None:
        if pair_ms is None:
            raise ValueError("a paired measurement needs the pair's latency")
        pair_series = batches(pair_ms, payload["batch_sizes"])
        r = pair_ms / ms
        ratio = RatioStats(r, (r * 0.99, r * 1.01), 12, "converged").to_json()
        extra["pair"] = {
            "arch_id": pair["arch_id"],
            "artifact_key": pair["artifact_key"],
            "onnx_sha256": parse_key(pair["artifact_key"]),
            "input_shape": list(pair["input_shape"]),
            "build_s": 0.0,
            "output_check": output_check(pair.get("reference"), payload["precision"]),
            "block_runs": BLOCK_RUNS,
            "batches": [b.to_json(with_samples=with_samples) for b in pair_series],
            "latency_ms_p50": {str(b.batch_size): b.compute.stats.median_ms
                               for b in pair_series},
            "ratios": [{"batch_size": b.batch_size, "compute": ratio, "end_to_end": ratio}
                       for b in pair_series],
        }  # fmt: skip
    return {
        "format": LATENCY_FORMAT,
        "status": "ok",
        "arch_id": payload["arch_id"],
        "artifact_key": payload["artifact_key"],
        "onnx_sha256": parse_key(payload["artifact_key"]),
        "backend": backend["backend"],
        "precision": payload["precision"],
        "input_shape": list(payload["input_shape"]),
        "build_s": 0.0,
        "output_check": output_check(payload.get("reference"), payload["precision"]),
        "batches": sent,
        "latency_ms_p50": {str(b["batch_size"]): b["compute"]["stats"]["median_ms"] for b in sent},
        **extra,
        "protocol": Protocol.from_json(payload.get("protocol")).to_json(),
        "backend_fingerprint": backend,
        "device": dict(device or DEVICE),
        "telemetry_before": dict(TELEMETRY),
        "telemetry_after": dict(TELEMETRY),
        "throttle": {"throttled": False, "reasons": []},
        "started_unix_s": 0.0,
        "finished_unix_s": 0.0,
        "error": None,
        "worker": worker,
        "kind": kind,
    }


def train_result(
    payload: dict[str, Any],
    *,
    arch_id: str,
    val_mse_per_epoch: list[float],
    val_mse_constant: float,
    train_s: float,
    worker: str,
    train_samples: int = 40,
    val_samples: int = 10,
) -> dict[str, Any]:
    """The ``hpc2edge.train`` result for ``payload`` with these learning curve and costs.

    The curve is the validation MSE after each epoch run (its last value is the result's
    ``val_mse``); the training loss is taken to follow it.
    """
    if not val_mse_per_epoch:
        raise ValueError("a training result needs at least one epoch")
    curve = [float(x) for x in val_mse_per_epoch]
    mse = curve[-1]
    epochs = int(payload["epochs"])
    rmse = math.sqrt(mse) if mse >= 0 else float("nan")
    result = TrainResult(
        arch_id=arch_id, engine="single", world_size=1, device="cpu", precision="fp32",
        zero_stage=0, global_batch_size=8, epochs_budget=epochs, epochs_run=len(curve),
        stopped_early=len(curve) < epochs, val_mse=mse, val_rmse=rmse,
        val_rmse_speed_mm_s=rmse * 900, val_rmse_power_w=rmse * 215,
        val_mse_constant=float(val_mse_constant), val_samples=val_samples,
        train_samples=train_samples, train_loss_per_epoch=list(curve), val_mse_per_epoch=curve,
        samples_per_s=train_samples * len(curve) / max(train_s, 1e-9), train_s=float(train_s),
        wall_s=float(train_s), seed=int(payload["seed"]), checkpoint_path="/x.pt",
        checkpoint_sha256="0" * 64, versions={},
    )  # fmt: skip
    return {
        "format": TRAIN_FORMAT,
        "status": "ok",
        "trial_key": payload.get("trial_key"),
        "cached": False,
        **result.to_json(),
        "started_unix_s": 0.0,
        "finished_unix_s": 0.0,
        "error": None,
        "worker": worker,
    }


__all__ = [
    "BACKEND",
    "DEVICE",
    "TELEMETRY",
    "batches",
    "latency_stats",
    "measure_result",
    "output_check",
    "stats",
    "train_result",
]
