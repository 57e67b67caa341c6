"""ONNX Runtime backend: runs everywhere (CPU), and on NVIDIA GPUs with the CUDA provider.

``compute`` is timed around ``run_with_iobinding`` with the input already placed where the
provider wants it (an ``OrtValue`` on the device) and the output bound to a device buffer, so no
host copy is inside the timed region; ``end_to_end`` times ``session.run`` from a numpy array to
numpy outputs. On CPU the two differ only by ONNX Runtime's own copies.

Threads are pinned by configuration (``intra_op_threads``, default: all cores; ``inter_op``
1) so that repeated measurements on one host compare. ONNX Runtime's CPU provider runs fp32
models only: fp16/int8 are refused with a clear error rather than measured wrongly.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np

from hpc2edge.errors import MeasurementError
from hpc2edge.latency.base import LatencyBackend, Prepared, reference_input
from hpc2edge.latency.protocol import TimedCall

REFERENCE_SEED = 0


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise MeasurementError(
            "onnxruntime is not installed: `pip install 'hpc2edge[edge]'`"
        ) from None
    return onnxruntime


class OnnxRuntimeBackend(LatencyBackend):
    """ONNX Runtime on ``providers`` (default: CPU only, for reproducibility)."""

    name = "onnxruntime"
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)

    def __init__(
        self,
        providers: list[str] | None = None,
        intra_op_threads: int = 0,
        inter_op_threads: int = 1,
    ) -> None:
        ort = _ort()
        available = ort.get_available_providers()
        self.providers = list(providers or ["CPUExecutionProvider"])
        missing = [p for p in self.providers if p not in available]
        if missing:
            raise MeasurementError(
                f"ONNX Runtime providers not available here: {', '.join(missing)} "
                f"(available: {', '.join(available)})"
            )
        if intra_op_threads < 0 or inter_op_threads < 0:
            raise ValueError("thread counts must be >= 0 (0: ONNX Runtime's default)")
        self.intra_op_threads = intra_op_threads
        self.inter_op_threads = inter_op_threads

    @property
    def _device(self) -> str:
        return "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"

    def fingerprint(self) -> dict[str, Any]:
        ort = _ort()
        return {
            "backend": self.name,
            "onnxruntime": ort.__version__,
            "providers": self.providers,
            "device": ort.get_device(),
            "intra_op_threads": self.intra_op_threads,
            "inter_op_threads": self.inter_op_threads,
        }

    def _prepare(
        self,
        onnx_bytes: bytes,
        sha256: str,
        precision: str,
        input_shape: tuple[int, ...],
        batch_sizes: tuple[int, ...],
    ) -> Prepared:
        ort = _ort()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = self.inter_op_threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        started = time.perf_counter()
        try:
            session = ort.InferenceSession(onnx_bytes, options, providers=self.providers)
        except Exception as exc:  # ORT raises its own classes (InvalidProtobuf, Fail, ...)
            raise MeasurementError(
                f"ONNX Runtime cannot load the model: {type(exc).__name__}: {exc}"
            ) from None
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise MeasurementError(f"expected a model with one input, got {len(inputs)}")
        declared = inputs[0].shape
        if len(declared) != len(input_shape) + 1:
            raise MeasurementError(
                f"model input {inputs[0].name!r} has rank {len(declared)}, expected "
                f"batch + {list(input_shape)}"
            )
        for got, want in zip(declared[1:], input_shape, strict=True):
            if isinstance(got, int) and got != want:
                raise MeasurementError(
                    f"model input {inputs[0].name!r} has shape {declared}, expected "
                    f"[batch, {', '.join(map(str, input_shape))}]"
                )
        fixed_batch = declared[0] if isinstance(declared[0], int) else None
        if fixed_batch is not None and any(b != fixed_batch for b in batch_sizes if b != 1):
            raise MeasurementError(f"the model's batch axis is fixed to {fixed_batch}")
        prepared = Prepared(
            backend=self.name,
            onnx_sha256=sha256,
            precision=precision,
            input_shape=input_shape,
            batch_sizes=batch_sizes,
            build_s=time.perf_counter() - started,
            handle=session,
            info={"input_name": inputs[0].name, "providers": session.get_providers()},
        )
        # Fail now, with the runtime's words, if the graph cannot actually run.
        self._infer(prepared, reference_input(input_shape, 1, REFERENCE_SEED))
        return prepared

    def _infer(self, prepared: Prepared, x: np.ndarray) -> np.ndarray:
        try:
            outputs = prepared.handle.run(None, {prepared.info["input_name"]: x})
        except Exception as exc:
            raise MeasurementError(f"inference failed: {type(exc).__name__}: {exc}") from None
        return np.asarray(outputs[0])

    def _compute_call(self, prepared: Prepared, batch_size: int) -> TimedCall:
        ort = _ort()
        session = prepared.handle
        x = reference_input(prepared.input_shape, batch_size, REFERENCE_SEED)
        binding = session.io_binding()
        x_device = ort.OrtValue.ortvalue_from_numpy(x, self._device, 0)
        binding.bind_ortvalue_input(prepared.info["input_name"], x_device)
        for output in session.get_outputs():
            binding.bind_output(output.name, self._device)
        session.run_with_iobinding(binding)  # allocate outputs before the first timed call

        def timed() -> float:
            started = time.perf_counter()
            session.run_with_iobinding(binding)
            binding.synchronize_outputs()
            return (time.perf_counter() - started) * 1000.0

        return timed

    def _end_to_end_call(self, prepared: Prepared, batch_size: int) -> TimedCall:
        session = prepared.handle
        feed = {prepared.info["input_name"]: reference_input(prepared.input_shape, batch_size, 1)}

        def timed() -> float:
            started = time.perf_counter()
            session.run(None, feed)
            return (time.perf_counter() - started) * 1000.0

        return timed

    def release(self, prepared: Prepared) -> None:
        prepared.handle = None


def model_input_shape(onnx_bytes: bytes) -> list[int]:
    """The model's input shape without the batch axis, read with ONNX Runtime."""
    try:
        session = _ort().InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT's own exception classes
        raise MeasurementError(f"ONNX Runtime cannot load the model: {exc}") from None
    (first, *rest) = session.get_inputs() or [None]
    if first is None or rest:
        raise MeasurementError("expected a model with exactly one input")
    dims = first.shape[1:]
    if not all(isinstance(d, int) and d > 0 for d in dims):
        raise MeasurementError(
            f"input {first.name!r} has dynamic dims {first.shape}: give --input-shape"
        )
    return [int(d) for d in dims]
