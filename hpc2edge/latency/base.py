"""``LatencyBackend``: the measurement contract every backend implements.

What "latency" means in hpc2edge (the paper timed PyTorch eager with ``time.time()``, no CUDA
synchronisation, 10 runs, and reported the mean; none of that survives here):

- **Unit**: milliseconds, wall time of one inference of one batch.
- **What is timed**: two series, both recorded.
  ``compute``: the model's execution only, inputs already on the device and outputs left there
  (TensorRT: ``execute_async_v3`` bracketed by CUDA events on the stream; ONNX Runtime:
  ``run_with_iobinding`` on pre-bound buffers).
  ``end_to_end``: host input -> device -> execute -> device -> host output, what an application
  on the printer sees (TensorRT: H2D copy, execute, D2H copy, stream synchronised; ONNX Runtime:
  ``session.run`` from and to numpy).
- **Synchronisation**: every timed call returns only after the device finished its work (event
  synchronise / blocking call), so the time covers the work and not just its launch.
- **Warm-up, stopping rule, statistics**: :mod:`hpc2edge.latency.protocol` (one implementation for
  all backends) and :mod:`hpc2edge.latency.stats` (n, min, median, mean, std, p90, p99, max, CV,
  95 % CI of the median, raw samples kept).
- **Inputs**: pre-allocated once per batch size before warm-up, filled with a seeded standard
  normal (:func:`reference_input`); the same seed reproduces the orchestrator's reference input.
- **Output check**: before timing, the model runs on the reference input and its outputs are
  compared with the reference outputs computed in PyTorch by the orchestrator; the max absolute
  error is recorded and a precision whose error exceeds its tolerance is flagged
  (:class:`~hpc2edge.errors.OutputMismatch`).
- **One measurement at a time**: the edge worker runs ``--pool solo -c 1``; a backend is not
  required to be thread-safe.

Subclasses implement the private hooks; the public methods hold this policy. Errors from the
runtime (TensorRT, ONNX Runtime, CUDA) are translated into :class:`MeasurementError` (or its
:class:`EngineBuildError` subclass) at this boundary.
"""

from __future__ import annotations

import abc
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from hpc2edge.errors import Hpc2EdgeError, MeasurementError
from hpc2edge.latency import protocol as protocol_mod
from hpc2edge.latency.protocol import Clock, Protocol, ProtocolRun, TimedCall

PRECISIONS = ("fp32", "fp16", "int8")
#: Max absolute error on the reference input, per precision, on outputs of order 1 (normalised
#: speed and power). fp16 keeps ~3 decimal digits; int8 without calibration data is coarse.
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "int8": 1e-1}


def reference_input(input_shape: Sequence[int], batch_size: int, seed: int) -> np.ndarray:
    """The seeded float32 standard-normal input both the orchestrator and the device build.

    ``input_shape`` excludes the batch axis, e.g. ``(1, 16, 224, 224)`` for (C, T, H, W).
    """
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch_size, *input_shape), dtype=np.float32)


@dataclass(frozen=True)
class Reference:
    """Reference outputs for batch 1 of :func:`reference_input` with ``seed``."""

    seed: int
    outputs: tuple[float, ...]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Reference:
        outputs = tuple(float(v) for v in data["outputs"])
        if not outputs or not all(math.isfinite(v) for v in outputs):
            raise ValueError("reference outputs must be a non-empty list of finite numbers")
        return cls(seed=int(data["seed"]), outputs=outputs)

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "outputs": list(self.outputs)}


@dataclass
class Prepared:
    """A model made ready to run: session or engine, buffers, and what it was made from."""

    backend: str
    onnx_sha256: str
    precision: str
    input_shape: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    build_s: float
    handle: Any = field(repr=False, default=None)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutputCheck:
    """The model's outputs on the reference input against the reference outputs."""

    max_abs_error: float
    tolerance: float
    ok: bool

    def to_json(self) -> dict[str, Any]:
        return {"max_abs_error": self.max_abs_error, "tolerance": self.tolerance, "ok": self.ok}


@dataclass(frozen=True)
class BatchMeasurement:
    """Both timed series for one batch size."""

    batch_size: int
    compute: ProtocolRun
    end_to_end: ProtocolRun

    def to_json(self, *, with_samples: bool = True) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "compute": self.compute.to_json(with_samples=with_samples),
            "end_to_end": self.end_to_end.to_json(with_samples=with_samples),
        }


class LatencyBackend(abc.ABC):
    """Turns ONNX bytes into timed runs on one device. See the module docstring: the contract."""

    #: Registry name, e.g. "onnxruntime".
    name: ClassVar[str]
    #: Precisions this backend can build and run.
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)

    # --- public policy ------------------------------------------------------------------------

    def prepare(
        self,
        onnx_bytes: bytes,
        precision: str,
        input_shape: Sequence[int],
        batch_sizes: Sequence[int] = (1,),
    ) -> Prepared:
        """Load or build the model for ``precision`` and every batch size to be measured.

        Raises:
            MeasurementError: unknown or unsupported precision, bad shapes, a model the runtime
                rejects (EngineBuildError for TensorRT build failures).
        """
        if precision not in PRECISIONS:
            raise MeasurementError(
                f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}"
            )
        if precision not in self.precisions:
            raise MeasurementError(
                f"backend {self.name} does not support {precision} "
                f"(supported: {', '.join(self.precisions)})"
            )
        shape = tuple(int(d) for d in input_shape)
        if not shape or any(d <= 0 for d in shape):
            raise MeasurementError(f"input shape {list(input_shape)} must be positive dimensions")
        batches = tuple(sorted({1, *(int(b) for b in batch_sizes)}))
        if batches[0] <= 0:
            raise MeasurementError(f"batch sizes must be positive, got {list(batch_sizes)}")
        if not onnx_bytes:
            raise MeasurementError("empty ONNX model")
        sha = hashlib.sha256(onnx_bytes).hexdigest()
        return self._prepare(onnx_bytes, sha, precision, shape, batches)

    def check_outputs(self, prepared: Prepared, reference: Reference) -> OutputCheck:
        """Run batch 1 of the reference input; compare with ``reference.outputs``."""
        x = reference_input(prepared.input_shape, 1, reference.seed)
        got = np.asarray(self._infer(prepared, x), dtype=np.float64).ravel()
        want = np.asarray(reference.outputs, dtype=np.float64)
        if got.shape != want.shape:
            raise MeasurementError(
                f"model gives {got.size} outputs for batch 1, the reference has {want.size}"
            )
        error = float(np.max(np.abs(got - want))) if got.size else 0.0
        if not math.isfinite(error):
            error = math.inf
        tolerance = TOLERANCE[prepared.precision]
        return OutputCheck(max_abs_error=error, tolerance=tolerance, ok=error <= tolerance)

    def measure(
        self,
        prepared: Prepared,
        batch_size: int,
        protocol: Protocol,
        clock: Clock | None = None,
    ) -> BatchMeasurement:
        """Time ``compute`` and then ``end_to_end`` for ``batch_size`` under ``protocol``."""
        if batch_size not in prepared.batch_sizes:
            raise MeasurementError(
                f"batch size {batch_size} was not prepared (prepared: {list(prepared.batch_sizes)})"
            )
        clock = clock or self._clock(prepared, batch_size)
        try:
            compute = protocol_mod.run(self._compute_call(prepared, batch_size), protocol, clock)
            end_to_end = protocol_mod.run(
                self._end_to_end_call(prepared, batch_size), protocol, clock
            )
        except Hpc2EdgeError:
            raise
        except Exception as exc:  # the runtime's own errors (ORT, CUDA, out of memory), translated
            raise MeasurementError(
                f"{self.name} failed while timing batch {batch_size}: {type(exc).__name__}: {exc}"
            ) from exc
        return BatchMeasurement(batch_size=batch_size, compute=compute, end_to_end=end_to_end)

    def release(self, prepared: Prepared) -> None:  # noqa: B027 - optional hook, default no-op
        """Free the session, engine and buffers of ``prepared`` (optional)."""

    @abc.abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """Backend and runtime identity: name, versions, providers or device, JSON-able."""

    # --- hooks --------------------------------------------------------------------------------

    @abc.abstractmethod
    def _prepare(
        self,
        onnx_bytes: bytes,
        sha256: str,
        precision: str,
        input_shape: tuple[int, ...],
        batch_sizes: tuple[int, ...],
    ) -> Prepared:
        """Build the runnable model; arguments already validated."""

    @abc.abstractmethod
    def _infer(self, prepared: Prepared, x: np.ndarray) -> np.ndarray:
        """One plain inference of host array ``x``; returns the host output."""

    @abc.abstractmethod
    def _compute_call(self, prepared: Prepared, batch_size: int) -> TimedCall:
        """A synchronised call timing the execution only; buffers allocated before it returns."""

    @abc.abstractmethod
    def _end_to_end_call(self, prepared: Prepared, batch_size: int) -> TimedCall:
        """A synchronised call timing host -> device -> execute -> host."""

    def _clock(self, prepared: Prepared, batch_size: int) -> Clock:
        """The clock the protocol paces with (real time; replay backends simulate it)."""
        from hpc2edge.latency import telemetry

        return Clock(temperature_c=telemetry.max_temperature_c)
