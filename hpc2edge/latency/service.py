"""The plain function behind ``hpc2edge.measure``: a request in, a ``LatencyResult`` out.

The Celery task (:mod:`hpc2edge.tasks`) only decodes, calls :func:`measure_request` and returns
its dict. Everything a caller can get wrong (a malformed request, a missing or corrupt artifact,
an unknown precision, a model the runtime rejects, outputs that disagree with the reference)
comes back as a *result* with ``status = "error"`` and a typed error (class name + message), not
as an exception: the orchestrator records a reason, and the worker goes on with the next task.
Only faults of the worker itself propagate.

Request (JSON)::

    {"arch_id": "...", "artifact_key": "sha256:...", "input_shape": [1, 16, 224, 224],
     "batch_sizes": [1, 2], "precision": "fp16", "backend": null,       # null: the worker's
     "protocol": {...} | null, "reference": {"seed": 0, "outputs": [..]} | null,
     "keep_samples": true}
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hpc2edge.errors import Hpc2EdgeError, MeasurementError, OutputMismatch, as_result
from hpc2edge.latency.base import PRECISIONS, LatencyBackend, Reference
from hpc2edge.latency.protocol import Protocol

RESULT_FORMAT = "hpc2edge-latency-result/1"
MAX_BATCH_SIZE = 4096


@dataclass(frozen=True)
class MeasureRequest:
    """A validated ``hpc2edge.measure`` request."""

    arch_id: str
    artifact_key: str
    input_shape: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    precision: str
    backend: str | None
    protocol: Protocol
    reference: Reference | None
    keep_samples: bool

    @classmethod
    def from_json(cls, data: Any) -> MeasureRequest:
        """Validate every field; raise ValueError listing all problems at once."""
        if not isinstance(data, dict):
            raise ValueError(f"request must be a JSON object, got {type(data).__name__}")
        problems: list[str] = []
        known = {
            "arch_id",
            "artifact_key",
            "input_shape",
            "batch_sizes",
            "precision",
            "backend",
            "protocol",
            "reference",
            "keep_samples",
        }
        for key in sorted(set(data) - known):
            problems.append(f"{key}: unknown field")

        def text(key: str, limit: int = 200) -> str:
            value = data.get(key)
            if not isinstance(value, str) or not value or len(value) > limit:
                problems.append(f"{key}: expected a non-empty string of at most {limit} chars")
                return ""
            return value

        def ints(key: str, lo: int, hi: int, max_len: int) -> tuple[int, ...]:
            value = data.get(key)
            ok = (
                isinstance(value, list)
                and 0 < len(value) <= max_len
                and all(
                    isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi for v in value
                )
            )
            if not ok:
                problems.append(f"{key}: expected 1-{max_len} integers in [{lo}, {hi}]")
                return ()
            return tuple(int(v) for v in value)  # type: ignore[union-attr]

        arch_id = text("arch_id")
        key = text("artifact_key", 80)
        if key and not key.startswith("sha256:"):
            problems.append("artifact_key: expected 'sha256:<hex>'")
        shape = ints("input_shape", 1, 4096, 6)
        batches = ints("batch_sizes", 1, MAX_BATCH_SIZE, 16)
        precision = data.get("precision", "fp32")
        if precision not in PRECISIONS:
            problems.append(f"precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
        backend = data.get("backend")
        if backend is not None and not isinstance(backend, str):
            problems.append("backend: expected a string or null")
        protocol = Protocol()
        try:
            protocol = Protocol.from_json(data.get("protocol"))
        except (TypeError, ValueError) as exc:
            problems.append(f"protocol: {exc}")
        reference = None
        if data.get("reference") is not None:
            try:
                reference = Reference.from_json(data["reference"])
            except (KeyError, TypeError, ValueError) as exc:
                problems.append(f"reference: {exc}")
        keep = data.get("keep_samples", True)
        if not isinstance(keep, bool):
            problems.append("keep_samples: expected true or false")
        if problems:
            raise ValueError("invalid measure request: " + "; ".join(problems))
        return cls(arch_id, key, shape, batches, precision, backend, protocol, reference, keep)


def error_result(exc: BaseException, request: dict[str, Any] | None = None) -> dict[str, Any]:
    """A result that carries a typed error instead of measurements."""
    req = request if isinstance(request, dict) else {}
    return {
        "format": RESULT_FORMAT,
        "status": "error",
        "arch_id": req.get("arch_id") if isinstance(req.get("arch_id"), str) else None,
        "artifact_key": req.get("artifact_key")
        if isinstance(req.get("artifact_key"), str)
        else None,
        "error": as_result(exc),
    }


def check_budget(
    req: MeasureRequest, *, time_limit_s: float | None, max_input_bytes: int | None
) -> None:
    """Refuse a request that could outlast the task's time limit or exhaust device memory.

    The edge worker runs one task at a time (``--pool solo``), which Celery cannot interrupt:
    these bounds, checked before anything runs, are what keeps one request from blocking or
    OOM-killing the device (an OOM-killed ``acks_late`` task would come back as a poison pill).
    """
    p = req.protocol
    series = 2 * len(req.batch_sizes)
    # protocol.run stops warm-up and timing at max_time_s each, and the cool-down gate once.
    worst_s = p.cooldown_timeout_s + series * (min(p.warmup_min_s, p.max_time_s) + 2 * p.max_time_s)
    if time_limit_s is not None and worst_s > time_limit_s:
        raise ValueError(
            f"protocol: up to {worst_s:.0f} s for {len(req.batch_sizes)} batch size(s), over "
            f"this worker's measure time limit of {time_limit_s:.0f} s; lower max_time_s, "
            "warmup_min_s or cooldown_timeout_s, or send fewer batch sizes"
        )
    elements = 1
    for dim in req.input_shape:
        elements *= dim
    input_bytes = 4 * elements * max(req.batch_sizes)
    if max_input_bytes is not None and input_bytes > max_input_bytes:
        raise ValueError(
            f"input_shape x batch: {input_bytes / 2**20:.0f} MiB of float32 input, over this "
            f"device's cap of {max_input_bytes / 2**20:.0f} MiB (edge.max_input_mib)"
        )


def measure_request(
    request: Any,
    fetch: Callable[[str], bytes],
    backend_for: Callable[[str | None], LatencyBackend],
    *,
    time_limit_s: float | None = None,
    max_input_bytes: int | None = None,
) -> dict[str, Any]:
    """Measure the model named by ``request``; see the module docstring.

    Args:
        request: the decoded task payload.
        fetch: artifact key -> verified bytes (an ``ArtifactStore.get``).
        backend_for: requested backend name (or None for the worker's default) -> backend.
        time_limit_s: refuse requests whose protocol could run longer than this.
        max_input_bytes: refuse requests whose largest input batch is bigger than this.
    """
    from hpc2edge.latency import telemetry

    started = time.time()
    try:
        req = MeasureRequest.from_json(request)
        check_budget(req, time_limit_s=time_limit_s, max_input_bytes=max_input_bytes)
    except ValueError as exc:
        return error_result(exc, request)
    try:
        onnx_bytes = fetch(req.artifact_key)
        backend = backend_for(req.backend)
        before = telemetry.snapshot()
        prepared = backend.prepare(onnx_bytes, req.precision, req.input_shape, req.batch_sizes)
        try:
            check = None
            if req.reference is not None:
                check = backend.check_outputs(prepared, req.reference)
                if not check.ok:
                    raise OutputMismatch(
                        f"{req.precision} outputs differ from the reference by "
                        f"{check.max_abs_error:.3g} (tolerance {check.tolerance:g})"
                    )
            batches = [backend.measure(prepared, b, req.protocol) for b in req.batch_sizes]
        finally:
            backend.release(prepared)
        after = telemetry.snapshot()
    except (Hpc2EdgeError, ValueError) as exc:
        return error_result(exc, request)
    return {
        "format": RESULT_FORMAT,
        "status": "ok",
        "arch_id": req.arch_id,
        "artifact_key": req.artifact_key,
        "onnx_sha256": prepared.onnx_sha256,
        "backend": backend.name,
        "precision": req.precision,
        "input_shape": list(req.input_shape),
        "build_s": prepared.build_s,
        "output_check": None if check is None else check.to_json(),
        "batches": [m.to_json(with_samples=req.keep_samples) for m in batches],
        "latency_ms_p50": {str(m.batch_size): m.compute.stats.median_ms for m in batches},
        "protocol": req.protocol.to_json(),
        "backend_fingerprint": backend.fingerprint(),
        "device": telemetry.fingerprint(),
        "telemetry_before": before,
        "telemetry_after": after,
        "throttle": telemetry.throttled(before, after),
        "started_unix_s": started,
        "finished_unix_s": time.time(),
        "error": None,
    }


__all__ = ["MeasureRequest", "MeasurementError", "error_result", "measure_request"]
