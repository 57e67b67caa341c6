"""TensorRT backend: engines built on the device, timed with CUDA events (TensorRT >= 8.5, 10.x).

Why one module of ~600 lines: one backend, its build, engine cache and timing, each needing the
same lazily imported TensorRT and CUDA handles; split, the halves would share private state.

Building (:meth:`TensorRTBackend.prepare`):

- The ONNX model is parsed into an explicit-batch network with **one optimisation profile** for
  its input: ``min`` batch 1, ``opt`` = ``max`` = the largest batch size requested. One engine then
  serves every batch size of a request. TensorRT picks tactics for ``opt``, so batch 1 can be a
  little slower than in an engine built for batch 1 only; the profile is part of the cache key and
  of ``Prepared.info``, so results always say which engine produced them.
- ``fp16`` sets ``BuilderFlag.FP16``. ``int8`` sets ``INT8`` and ``FP16`` (layers without an int8
  kernel fall back to fp16, not fp32). There is no calibration data on the device, so, like
  ``trtexec --int8`` without ``--calib``, every float tensor gets a *placeholder* dynamic range
  (inputs +-2, other tensors +-4): the engine runs real int8 kernels, so its **latency** is
  representative, but its **accuracy is not**. The output check
  (:meth:`~hpc2edge.latency.base.LatencyBackend.check_outputs`) compares it with the fp32
  reference and the measurement marks the precision as failing when it is off. Without these
  ranges TensorRT would silently run the "int8" engine in fp16 and report fp16 latency as int8.
  A calibrator (or a Q/DQ model) is the way to accurate int8; it can be added here later.
- Engines are specific to the device and the TensorRT version, so they are cached on the device,
  keyed by the sha256 of (ONNX sha256, precision, input shape, batch sizes and profile, TensorRT
  version, device name and compute capability, workspace, int8 ranges) in
  ``<cache_dir>/engines/<key>.plan`` (written atomically, with a ``.json`` beside it saying what
  the key stands for). The builder's timing cache ``<cache_dir>/timing.cache`` is loaded before and
  saved after every build, so later builds of similar layers skip most tactic timing.

Running: one execution context per prepared engine, with device buffers and page-locked (pinned)
host buffers allocated once per batch size, and its own CUDA stream and pair of events. Before
every series the context is bound to the batch size (``set_input_shape`` + ``set_tensor_address``
for every I/O tensor); that is host-side work and happens outside the timed region.

- ``compute``: ``start.record(stream)``, ``execute_async_v3``, ``end.record(stream)``,
  ``end.synchronize()``; the sample is ``end.time_since(start)``, the device-side time between the
  two events (ms), with the input already on the device.
- ``end_to_end``: pinned host input -> ``memcpy_htod_async`` -> execute -> ``memcpy_dtoh_async``
  -> ``stream.synchronize()``, timed with ``time.perf_counter``: what an application sees includes
  host-side work (the Python call, the driver enqueueing three operations, waking up after the
  synchronise) that CUDA events on the stream cannot see.

CUDA context: no ``pycuda.autoinit``. The constructor calls ``cuda.init()`` and *retains the
device's primary context* (``Device.retain_primary_context``), the same context the CUDA runtime
API, and therefore TensorRT, uses. A second context created with ``make_context`` would work but
costs memory (significant on a Jetson, whose GPU shares the RAM) and makes runtime and driver
calls disagree about which context is current unless pushed carefully. The context is pushed
around every piece of work (build, run, free) and popped afterwards, so nothing is left current on
the thread between tasks; a push/pop costs about a microsecond and is outside every timed region.
The edge worker runs ``--pool solo -c 1``: one thread, one measurement at a time; this backend
is not thread-safe. :meth:`TensorRTBackend.close` releases everything and the context.

Errors: parser errors and a build that returns no engine raise
:class:`~hpc2edge.errors.EngineBuildError` (with the parser's and the builder's error messages);
CUDA and other runtime failures raise :class:`~hpc2edge.errors.MeasurementError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from hpc2edge.errors import EngineBuildError, Hpc2EdgeError, MeasurementError
from hpc2edge.latency.base import LatencyBackend, Prepared, reference_input
from hpc2edge.latency.protocol import TimedCall
from hpc2edge.util.files import write_atomic

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "TensorRT and pycuda come with JetPack on a Jetson (create the venv with "
    "--system-site-packages); on x86 GPU hosts `pip install 'hpc2edge[tensorrt]'`"
)
#: Seed of the input the timed calls run on (the output check uses the reference's own seed).
TIMING_SEED = 0
#: Bump when the engine build recipe changes, so old cached engines are not reused.
CACHE_FORMAT = 1
#: trtexec's placeholder int8 dynamic ranges when no calibration is given.
INT8_INPUT_RANGE = 2.0
INT8_TENSOR_RANGE = 4.0


def _import_runtime() -> tuple[Any, Any]:
    """``(tensorrt, pycuda.driver)``, or MeasurementError saying what to install."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise MeasurementError(
            f"the tensorrt backend needs TensorRT ({exc}). {INSTALL_HINT}"
        ) from None
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise MeasurementError(
            f"the tensorrt backend needs pycuda ({exc}). {INSTALL_HINT}"
        ) from None
    return trt, cuda


def _trt_major(trt: Any) -> int:
    try:
        return int(str(trt.__version__).split(".")[0])
    except ValueError:
        return 0


def _make_logger(trt: Any) -> Any:
    """A TensorRT logger forwarding to :mod:`logging` and keeping the errors of the last build."""
    severity = trt.ILogger.Severity
    levels = {
        severity.INTERNAL_ERROR: logging.CRITICAL,
        severity.ERROR: logging.ERROR,
        severity.WARNING: logging.WARNING,
        severity.INFO: logging.DEBUG,
        severity.VERBOSE: logging.DEBUG,
    }
    errors = (severity.INTERNAL_ERROR, severity.ERROR)

    class _Logger(trt.ILogger):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, level: Any, msg: str) -> None:
            if level in errors:
                self.errors.append(str(msg))
            python_level = levels.get(level, logging.DEBUG)
            if log.isEnabledFor(python_level):  # a build logs thousands of verbose lines
                log.log(python_level, "TensorRT: %s", msg)

    return _Logger()


def _write_cache_file(path: Path, data: bytes) -> None:
    """An engine, its key or the timing cache: readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data, durable=True)


@dataclass
class _Buffers:
    """Everything one batch size needs: pinned host and device memory for every I/O tensor."""

    host_in: np.ndarray
    device_in: Any
    host_out: list[np.ndarray]
    device_out: list[Any]


@dataclass
class _Engine:
    """``Prepared.handle`` of this backend."""

    engine: Any
    context: Any
    stream: Any
    start: Any
    end: Any
    input_name: str
    output_names: list[str]
    buffers: dict[int, _Buffers] = field(default_factory=dict)
    bound_batch: int | None = None


class TensorRTBackend(LatencyBackend):
    """TensorRT engines on CUDA device ``device``, cached under ``cache_dir``.

    Args:
        cache_dir: holds ``engines/<key>.plan`` and ``timing.cache``; created when needed.
        workspace_mib: the builder's workspace memory pool limit (part of the cache key).
        device: CUDA device index.

    Raises:
        MeasurementError: TensorRT or pycuda missing (with what to install), or no usable device.
    """

    name = "tensorrt"
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "fp16", "int8")

    def __init__(self, cache_dir: Path, workspace_mib: int = 1024, device: int = 0) -> None:
        if workspace_mib <= 0:
            raise ValueError(f"workspace_mib must be positive, got {workspace_mib}")
        self.cache_dir = Path(cache_dir)
        self.workspace_mib = int(workspace_mib)
        self.device_index = int(device)
        self._trt, self._cuda = _import_runtime()
        cuda = self._cuda
        try:
            cuda.init()
            count = cuda.Device.count()
            if not 0 <= self.device_index < count:
                raise MeasurementError(
                    f"CUDA device {self.device_index} does not exist ({count} device(s) found)"
                )
            self._device = cuda.Device(self.device_index)
            self._ctx = self._device.retain_primary_context()
            major, minor = self._device.compute_capability()
            self.device_name = str(self._device.name())
            self.compute_capability = f"{major}.{minor}"
            self.total_memory_bytes = int(self._device.total_memory())
        except cuda.Error as exc:
            raise MeasurementError(f"CUDA could not be initialised: {exc}") from None
        self._logger = _make_logger(self._trt)
        self._open: dict[int, Prepared] = {}
        with self._active():
            self._runtime = self._trt.Runtime(self._logger)

    # --- context ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _active(self) -> Iterator[None]:
        """Make our CUDA context current; translate foreign errors into MeasurementError."""
        if self._ctx is None:
            raise MeasurementError("the tensorrt backend was closed")
        try:
            self._ctx.push()
        except self._cuda.Error as exc:
            raise MeasurementError(f"CUDA context cannot be made current: {exc}") from None
        try:
            yield
        except Hpc2EdgeError:
            raise
        except self._cuda.Error as exc:
            raise MeasurementError(f"CUDA error: {exc}") from None
        except (RuntimeError, TypeError, ValueError, MemoryError) as exc:
            raise MeasurementError(f"TensorRT error: {type(exc).__name__}: {exc}") from None
        finally:
            self._cuda.Context.pop()

    def close(self) -> None:
        """Release every prepared engine and the CUDA context; the backend is unusable after."""
        for prepared in list(self._open.values()):
            self.release(prepared)
        self._runtime = None
        if self._ctx is not None:
            with contextlib.suppress(Exception):
                self._ctx.detach()
            self._ctx = None

    # --- identity -----------------------------------------------------------------------------

    def fingerprint(self) -> dict[str, Any]:
        import pycuda

        driver = int(self._cuda.get_driver_version())  # e.g. 12020
        return {
            "backend": self.name,
            "tensorrt_version": str(self._trt.__version__),
            "pycuda_version": str(getattr(pycuda, "VERSION_TEXT", "unknown")),
            "cuda_driver_version": f"{driver // 1000}.{driver % 1000 // 10}",
            "cuda_version_pycuda_built_with": ".".join(map(str, self._cuda.get_version())),
            "device_index": self.device_index,
            "device_name": self.device_name,
            "compute_capability": self.compute_capability,
            "total_memory_bytes": self.total_memory_bytes,
            "workspace_mib": self.workspace_mib,
        }

    # --- building -----------------------------------------------------------------------------

    def _cache_key(
        self, sha256: str, precision: str, input_shape: tuple[int, ...], batches: tuple[int, ...]
    ) -> dict[str, Any]:
        return {
            "format": CACHE_FORMAT,
            "onnx_sha256": sha256,
            "precision": precision,
            "input_shape": list(input_shape),
            "batch_sizes": list(batches),
            "profile": {"min": 1, "opt": max(batches), "max": max(batches)},
            "tensorrt_version": str(self._trt.__version__),
            "device_name": self.device_name,
            "compute_capability": self.compute_capability,
            "workspace_mib": self.workspace_mib,
            "int8_ranges": "placeholder" if precision == "int8" else None,
        }

    def _prepare(
        self,
        onnx_bytes: bytes,
        sha256: str,
        precision: str,
        input_shape: tuple[int, ...],
        batch_sizes: tuple[int, ...],
    ) -> Prepared:
        started = time.perf_counter()
        key_fields = self._cache_key(sha256, precision, input_shape, batch_sizes)
        key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()
        plan_path = self.cache_dir / "engines" / f"{key}.plan"
        with self._active():
            engine, cache = None, "miss"
            cached = None
            with contextlib.suppress(OSError):
                cached = plan_path.read_bytes()
            if cached:
                try:
                    engine = self._runtime.deserialize_cuda_engine(cached)
                except (RuntimeError, TypeError, ValueError):
                    engine = None
                if engine is None:  # damaged, or written by another TensorRT: rebuild it
                    log.warning("cached engine %s does not load; rebuilding", plan_path)
                else:
                    cache = "hit"
            if engine is None:
                plan = self._build(onnx_bytes, precision, input_shape, batch_sizes)
                try:
                    _write_cache_file(plan_path, plan)
                    _write_cache_file(
                        plan_path.with_suffix(".json"), json.dumps(key_fields).encode()
                    )
                except OSError as exc:  # the engine is in memory; only the next prepare pays
                    log.warning("could not cache the engine in %s: %s", plan_path, exc)
                engine = self._runtime.deserialize_cuda_engine(plan)
                if engine is None:
                    raise EngineBuildError("TensorRT built an engine it cannot deserialize")
            handle = self._load(engine, input_shape, batch_sizes)
        prepared = Prepared(
            backend=self.name,
            onnx_sha256=sha256,
            precision=precision,
            input_shape=input_shape,
            batch_sizes=batch_sizes,
            build_s=time.perf_counter() - started,
            handle=handle,
            info={
                "engine_cache": cache,
                "engine_key": key,
                "profile": key_fields["profile"],
                "input_name": handle.input_name,
                "output_names": list(handle.output_names),
                "int8_calibration": "placeholder ranges" if precision == "int8" else None,
            },
        )
        self._open[id(prepared)] = prepared
        return prepared

    def _build(
        self,
        onnx_bytes: bytes,
        precision: str,
        input_shape: tuple[int, ...],
        batch_sizes: tuple[int, ...],
    ) -> bytes:
        """Parse and build; the serialized engine. Runs with the context current."""
        trt = self._trt
        self._logger.errors.clear()
        builder = trt.Builder(self._logger)
        flags = 0
        if _trt_major(trt) < 10:  # explicit batch is the only mode from TensorRT 10 on
            flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(onnx_bytes):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise EngineBuildError(
                "TensorRT cannot parse the ONNX model:\n"
                + "\n".join(f"  - {e}" for e in errors or self._logger.errors or ["(no details)"])
            )
        if network.num_inputs != 1:
            raise EngineBuildError(f"expected a model with one input, got {network.num_inputs}")
        tensor = network.get_input(0)
        declared = tuple(int(d) for d in tensor.shape)
        if len(declared) != len(input_shape) + 1:
            raise EngineBuildError(
                f"model input {tensor.name!r} has shape {list(declared)}, expected "
                f"[batch, {', '.join(map(str, input_shape))}]"
            )
        for got, want in zip(declared[1:], input_shape, strict=True):
            if got not in (-1, want):
                raise EngineBuildError(
                    f"model input {tensor.name!r} has shape {list(declared)}, expected "
                    f"[batch, {', '.join(map(str, input_shape))}]"
                )
        max_batch = max(batch_sizes)
        if declared[0] != -1 and any(b != declared[0] for b in batch_sizes):
            raise EngineBuildError(
                f"the model's batch axis is fixed to {declared[0]}; export it with a dynamic "
                f"batch axis to measure batch sizes {list(batch_sizes)}"
            )

        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_mib * 2**20)
        if precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
            self._set_placeholder_ranges(network)
        if -1 in declared:
            profile = builder.create_optimization_profile()
            profile.set_shape(
                tensor.name, (1, *input_shape), (max_batch, *input_shape), (max_batch, *input_shape)
            )
            config.add_optimization_profile(profile)

        timing_path = self.cache_dir / "timing.cache"
        timing = self._load_timing_cache(config, timing_path)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            details = self._logger.errors or ["(TensorRT logged no error)"]
            raise EngineBuildError(
                f"TensorRT could not build a {precision} engine:\n"
                + "\n".join(f"  - {e}" for e in details)
            )
        if timing is not None:
            try:
                _write_cache_file(timing_path, bytes(config.get_timing_cache().serialize()))
            except OSError as exc:  # a lost timing cache only makes the next build slower
                log.warning("could not save the timing cache %s: %s", timing_path, exc)
        return bytes(plan)

    def _load_timing_cache(self, config: Any, path: Path) -> Any:
        """Attach the timing cache in ``path`` (or a fresh one) to ``config``."""
        data = b""
        with contextlib.suppress(OSError):
            data = path.read_bytes()
        for attempt in (data, b""):
            try:
                cache = config.create_timing_cache(attempt)
            except (RuntimeError, TypeError, ValueError):
                cache = None
            # ignore_mismatch=False: a cache from another device or version is not used.
            if cache is not None and config.set_timing_cache(cache, False):
                return cache
            if attempt:
                log.warning("timing cache %s is unusable here; starting a new one", path)
        return None

    def _set_placeholder_ranges(self, network: Any) -> None:
        """trtexec's ranges for int8 without calibration: latency valid, accuracy not."""
        trt = self._trt
        floats = (trt.DataType.FLOAT, trt.DataType.HALF)

        def set_range(t: Any, r: float) -> None:
            if t is not None and t.dtype in floats and t.dynamic_range is None:
                t.set_dynamic_range(-r, r)

        try:
            for i in range(network.num_inputs):
                set_range(network.get_input(i), INT8_INPUT_RANGE)
            for i in range(network.num_layers):
                layer = network.get_layer(i)
                for j in range(layer.num_outputs):
                    set_range(layer.get_output(j), INT8_TENSOR_RANGE)
        except AttributeError as exc:  # a TensorRT without implicit quantization
            raise EngineBuildError(
                f"this TensorRT cannot set int8 dynamic ranges ({exc}); "
                "int8 needs a calibrated or Q/DQ model here"
            ) from None

    # --- loading and buffers ------------------------------------------------------------------

    def _load(self, engine: Any, input_shape: tuple[int, ...], batches: tuple[int, ...]) -> _Engine:
        """Context, stream, events and per-batch buffers for ``engine``. Context current."""
        trt, cuda = self._trt, self._cuda
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or not outputs:
            raise MeasurementError(f"engine has inputs {inputs} and outputs {outputs}")
        context = engine.create_execution_context()
        if context is None:
            raise MeasurementError(
                "TensorRT could not create an execution context (out of memory?)"
            )
        handle = _Engine(
            engine=engine,
            context=context,
            stream=cuda.Stream(),
            start=cuda.Event(),
            end=cuda.Event(),
            input_name=inputs[0],
            output_names=outputs,
        )
        try:
            for b in batches:
                handle.buffers[b] = self._allocate(handle, (b, *input_shape))
                # The timed calls run on the seeded input, already on the device.
                buf = handle.buffers[b]
                np.copyto(
                    buf.host_in, reference_input(input_shape, b, TIMING_SEED), casting="unsafe"
                )
                cuda.memcpy_htod(buf.device_in, buf.host_in)
        except BaseException:
            self._free(handle)
            raise
        return handle

    def _allocate(self, handle: _Engine, shape: tuple[int, ...]) -> _Buffers:
        trt, cuda = self._trt, self._cuda
        engine, context = handle.engine, handle.context
        if not context.set_input_shape(handle.input_name, shape):
            raise MeasurementError(f"the engine rejects input shape {list(shape)}")
        handle.bound_batch = None

        def pinned(name: str, dims: Any) -> tuple[np.ndarray, Any]:
            host = cuda.pagelocked_empty(
                tuple(int(d) for d in dims), trt.nptype(engine.get_tensor_dtype(name))
            )
            return host, cuda.mem_alloc(max(int(host.nbytes), 1))

        host_in, device_in = pinned(handle.input_name, shape)
        host_out, device_out = [], []
        for name in handle.output_names:
            dims = tuple(int(d) for d in context.get_tensor_shape(name))
            if any(d < 0 for d in dims):
                raise MeasurementError(f"output {name!r} has unresolved shape {list(dims)}")
            h, d = pinned(name, dims)
            host_out.append(h)
            device_out.append(d)
        return _Buffers(
            host_in=host_in, device_in=device_in, host_out=host_out, device_out=device_out
        )

    def _bind(self, handle: _Engine, batch_size: int) -> _Buffers:
        """Point the context at ``batch_size``'s buffers (host-side only; cheap when already)."""
        buf = handle.buffers[batch_size]
        if handle.bound_batch != batch_size:
            context = handle.context
            if not context.set_input_shape(handle.input_name, buf.host_in.shape):
                raise MeasurementError(f"the engine rejects batch size {batch_size}")
            context.set_tensor_address(handle.input_name, int(buf.device_in))
            for name, device in zip(handle.output_names, buf.device_out, strict=True):
                context.set_tensor_address(name, int(device))
            handle.bound_batch = batch_size
        return buf

    def _free(self, handle: _Engine) -> None:
        for buf in handle.buffers.values():
            for device in (buf.device_in, *buf.device_out):
                with contextlib.suppress(Exception):
                    device.free()
        handle.buffers.clear()
        # The context must go before its engine.
        handle.context = None
        handle.engine = None
        handle.stream = handle.start = handle.end = None

    def release(self, prepared: Prepared) -> None:
        self._open.pop(id(prepared), None)
        handle = prepared.handle
        if not isinstance(handle, _Engine) or self._ctx is None:
            prepared.handle = None
            return
        prepared.handle = None
        with self._active():
            self._free(handle)

    # --- running ------------------------------------------------------------------------------

    def _handle(self, prepared: Prepared) -> _Engine:
        if not isinstance(prepared.handle, _Engine):
            raise MeasurementError(
                "this model was released or not prepared by the tensorrt backend"
            )
        return prepared.handle

    def _infer(self, prepared: Prepared, x: np.ndarray) -> np.ndarray:
        handle = self._handle(prepared)
        cuda = self._cuda
        batch = int(x.shape[0])
        if batch not in handle.buffers:
            raise MeasurementError(f"batch size {batch} was not prepared")
        with self._active():
            buf = self._bind(handle, batch)
            np.copyto(buf.host_in, x.reshape(buf.host_in.shape), casting="unsafe")
            cuda.memcpy_htod_async(buf.device_in, buf.host_in, handle.stream)
            if not handle.context.execute_async_v3(handle.stream.handle):
                raise MeasurementError("TensorRT failed to enqueue the inference")
            for host, device in zip(buf.host_out, buf.device_out, strict=True):
                cuda.memcpy_dtoh_async(host, device, handle.stream)
            handle.stream.synchronize()
            outs = [np.array(h, dtype=np.float32) for h in buf.host_out]
        if len(outs) == 1:
            return outs[0]
        return np.concatenate([o.reshape(batch, -1) for o in outs], axis=1)

    def _compute_call(self, prepared: Prepared, batch_size: int) -> TimedCall:
        handle = self._handle(prepared)
        with self._active():
            self._bind(handle, batch_size)
        active, bind = self._active, self._bind
        context, stream, start, end = handle.context, handle.stream, handle.start, handle.end

        def timed() -> float:
            with active():
                bind(handle, batch_size)  # no-op unless another series rebound the context
                start.record(stream)
                ok = context.execute_async_v3(stream.handle)
                end.record(stream)
                end.synchronize()
                if not ok:
                    raise MeasurementError("TensorRT failed to enqueue the inference")
                return float(end.time_since(start))

        return timed

    def _end_to_end_call(self, prepared: Prepared, batch_size: int) -> TimedCall:
        handle = self._handle(prepared)
        with self._active():
            buf = self._bind(handle, batch_size)
        active, bind, cuda = self._active, self._bind, self._cuda
        context, stream = handle.context, handle.stream
        outputs = list(zip(buf.host_out, buf.device_out, strict=True))

        def timed() -> float:
            with active():
                bind(handle, batch_size)
                started = time.perf_counter()
                cuda.memcpy_htod_async(buf.device_in, buf.host_in, stream)
                ok = context.execute_async_v3(stream.handle)
                for host, device in outputs:
                    cuda.memcpy_dtoh_async(host, device, stream)
                stream.synchronize()
                elapsed_ms = (time.perf_counter() - started) * 1000.0
                if not ok:
                    raise MeasurementError("TensorRT failed to enqueue the inference")
                return elapsed_ms

        return timed
