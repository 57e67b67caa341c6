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
     "keep_samples": true,
     "pair": {"arch_id": "...", "artifact_key": "sha256:...",           # optional: model B
              "input_shape": [...], "reference": {...} | null} | null}

With ``pair``, the device prepares and checks both models and times every series of every
batch size in alternation (:mod:`hpc2edge.latency.pairing`): ``batches`` are model A's, as
always, and the result's ``pair`` holds B's identity, output check and ``batches``, and per
batch size the ratio B/A of each series (``ratios``: median, 95 % CI, pairs, stopped_by).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hpc2edge.errors import Hpc2EdgeError, MeasurementError, OutputMismatch, as_result
from hpc2edge.latency import pairing
from hpc2edge.latency.base import (
    PRECISIONS,
    BatchMeasurement,
    LatencyBackend,
    OutputCheck,
    Prepared,
    Reference,
)
from hpc2edge.latency.protocol import Protocol

RESULT_FORMAT = "hpc2edge-latency-result/1"
MAX_BATCH_SIZE = 4096
#: Reference outputs a request may carry (a candidate has a handful: speed and power).
MAX_REFERENCE_OUTPUTS = 4096
FIELDS = frozenset(
    {
        "arch_id",
        "artifact_key",
        "input_shape",
        "batch_sizes",
        "precision",
        "backend",
        "protocol",
        "reference",
        "keep_samples",
        "pair",
    }
)
PAIR_FIELDS = frozenset({"arch_id", "artifact_key", "input_shape", "reference"})
_KEY = re.compile(r"sha256:[0-9a-f]{64}")


class _Fields:
    """Reads the fields of one JSON object, noting every problem instead of stopping at one."""

    def __init__(self, data: dict[str, Any], problems: list[str], where: str = "") -> None:
        self.data = data
        self.problems = problems
        self.where = where

    def problem(self, key: str, what: str) -> None:
        self.problems.append(f"{self.where}{key}: {what}")

    def unknown(self, known: frozenset[str]) -> None:
        for key in sorted(str(k)[:40] for k in set(self.data) - known):
            self.problem(key, "unknown field")

    def text(self, key: str, limit: int = 200) -> str:
        value = self.data.get(key)
        if not isinstance(value, str) or not value or len(value) > limit:
            self.problem(key, f"expected a non-empty string of at most {limit} chars")
            return ""
        return value

    def ints(self, key: str, lo: int, hi: int, max_len: int) -> tuple[int, ...]:
        value = self.data.get(key)
        ok = (
            isinstance(value, list)
            and 0 < len(value) <= max_len
            and all(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi for v in value)
        )
        if not ok:
            self.problem(key, f"expected 1-{max_len} integers in [{lo}, {hi}]")
            return ()
        return tuple(int(v) for v in value)  # type: ignore[union-attr]

    def artifact_key(self) -> str:
        key = self.text("artifact_key", 80)
        if key and not _KEY.fullmatch(key):
            self.problem("artifact_key", "expected 'sha256:<64 lowercase hex>'")
            return ""
        return key

    def input_shape(self) -> tuple[int, ...]:
        return self.ints("input_shape", 1, 4096, 6)

    def reference(self) -> Reference | None:
        value = self.data.get("reference")
        if value is None:
            return None
        if not isinstance(value, dict):
            self.problem("reference", "expected an object or null")
            return None
        outputs = value.get("outputs")
        if isinstance(outputs, list) and len(outputs) > MAX_REFERENCE_OUTPUTS:
            self.problem("reference", f"at most {MAX_REFERENCE_OUTPUTS} outputs")
            return None
        seed = value.get("seed")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            self.problem("reference", "seed: expected an integer in [0, 2**63)")
            return None
        try:
            return Reference.from_json(value)
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            self.problem("reference", str(exc)[:200])
            return None


@dataclass(frozen=True)
class PairRequest:
    """Model B of a paired request: measured in alternation with the request's model A."""

    arch_id: str
    artifact_key: str
    input_shape: tuple[int, ...]
    reference: Reference | None


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
    pair: PairRequest | None = None

    @classmethod
    def from_json(cls, data: Any) -> MeasureRequest:
        """Validate every field; raise ValueError listing all problems at once."""
        if not isinstance(data, dict):
            raise ValueError(f"request must be a JSON object, got {type(data).__name__}")
        problems: list[str] = []
        f = _Fields(data, problems)
        f.unknown(FIELDS)
        arch_id = f.text("arch_id")
        key = f.artifact_key()
        shape = f.input_shape()
        batches = f.ints("batch_sizes", 1, MAX_BATCH_SIZE, 16)
        precision = data.get("precision", "fp32")
        if precision not in PRECISIONS:
            problems.append(
                f"precision: {str(precision)[:40]!r} is not one of {', '.join(PRECISIONS)}"
            )
        backend = data.get("backend")
        if backend is not None and not isinstance(backend, str):
            problems.append("backend: expected a string or null")
        protocol = Protocol()
        try:
            protocol = Protocol.from_json(data.get("protocol"))
        except (TypeError, ValueError) as exc:
            problems.append(f"protocol: {exc}")
        reference = f.reference()
        keep = data.get("keep_samples", True)
        if not isinstance(keep, bool):
            problems.append("keep_samples: expected true or false")
        pair = _pair(data.get("pair"), problems)
        if problems:
            raise ValueError("invalid measure request: " + "; ".join(problems))
        return cls(
            arch_id, key, shape, batches, precision, backend, protocol, reference, keep, pair
        )


def _pair(data: Any, problems: list[str]) -> PairRequest | None:
    """The ``pair`` field: None, or model B with the same checks as model A's fields."""
    if data is None:
        return None
    if not isinstance(data, dict):
        problems.append(f"pair: expected an object or null, got {type(data).__name__}")
        return None
    f = _Fields(data, problems, "pair.")
    f.unknown(PAIR_FIELDS)
    return PairRequest(f.text("arch_id"), f.artifact_key(), f.input_shape(), f.reference())


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
    # Two models: charged as twice the series. A paired series stops at max_time_s like one,
    # but its last call (a block of each model) can run past the cap by two blocks, not a run.
    models = 1 if req.pair is None else 2
    series = 2 * len(req.batch_sizes) * models
    # protocol.run stops warm-up and timing at max_time_s each, and the cool-down gate once.
    worst_s = p.cooldown_timeout_s + series * (min(p.warmup_min_s, p.max_time_s) + 2 * p.max_time_s)
    if time_limit_s is not None and worst_s > time_limit_s:
        paired = " of two models" if req.pair is not None else ""
        raise ValueError(
            f"protocol: up to {worst_s:.0f} s for {len(req.batch_sizes)} batch size(s){paired}, "
            f"over this worker's measure time limit of {time_limit_s:.0f} s; lower max_time_s, "
            "warmup_min_s or cooldown_timeout_s, or send fewer batch sizes"
        )
    shapes = [req.input_shape] + ([] if req.pair is None else [req.pair.input_shape])
    elements = 1
    for shape in shapes:
        elements = max(elements, math.prod(shape))
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
        # Both models fetched before anything is prepared: a missing B costs no device time.
        pair = None if req.pair is None else (req.pair, fetch(req.pair.artifact_key))
        backend = backend_for(req.backend)
        before = telemetry.snapshot()
        prepared = backend.prepare(onnx_bytes, req.precision, req.input_shape, req.batch_sizes)
        try:
            check = _output_check(backend, prepared, req.reference, req.precision)
            paired: dict[str, Any] = {}
            if pair is None:
                batches = [backend.measure(prepared, b, req.protocol) for b in req.batch_sizes]
            else:
                batches, paired["pair"] = _measure_paired(backend, prepared, req, *pair)
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
        **paired,
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


def _output_check(
    backend: LatencyBackend,
    prepared: Prepared,
    reference: Reference | None,
    precision: str,
    which: str = "",
) -> OutputCheck | None:
    """The model's outputs against ``reference`` (None without one); a mismatch raises."""
    if reference is None:
        return None
    check = backend.check_outputs(prepared, reference)
    if not check.ok:
        raise OutputMismatch(
            f"{which}{precision} outputs differ from the reference by "
            f"{check.max_abs_error:.3g} (tolerance {check.tolerance:g})"
        )
    return check


def _measure_paired(
    backend: LatencyBackend,
    a: Prepared,
    req: MeasureRequest,
    pair: PairRequest,
    onnx_b: bytes,
) -> tuple[list[BatchMeasurement], dict[str, Any]]:
    """Model B prepared beside A, checked, and every series of both timed in alternation:
    A's measurements, and the result's ``pair`` record (module docstring)."""
    b = backend.prepare(onnx_b, req.precision, pair.input_shape, req.batch_sizes)
    try:
        check = _output_check(backend, b, pair.reference, req.precision, "pair: ")
        measured = [
            pairing.measure_pair(backend, a, b, size, req.protocol) for size in req.batch_sizes
        ]
    finally:
        backend.release(b)
    keep = req.keep_samples
    return [m.a for m in measured], {
        "arch_id": pair.arch_id,
        "artifact_key": pair.artifact_key,
        "onnx_sha256": b.onnx_sha256,
        "input_shape": list(pair.input_shape),
        "build_s": b.build_s,
        "output_check": None if check is None else check.to_json(),
        "block_runs": pairing.BLOCK_RUNS,
        "batches": [m.b.to_json(with_samples=keep) for m in measured],
        "latency_ms_p50": {str(m.batch_size): m.b.compute.stats.median_ms for m in measured},
        "ratios": [m.ratio_json(with_samples=keep) for m in measured],
    }


__all__ = [
    "MeasureRequest",
    "MeasurementError",
    "PairRequest",
    "error_result",
    "measure_request",
]
