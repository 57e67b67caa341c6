"""The reference model: one fixed workload that every unit of a device kind measures.

Units of a kind are meant to be interchangeable, and one that is not (hot, throttling, on another
power mode or runtime) would rank candidates differently from its neighbours. So each unit
measures this model with its own backend and :data:`PROTOCOL` when it joins and after every
``edge.reference_every`` measurements, and reports the ``compute`` median
(:func:`check`, a :class:`~hpc2edge.transport.units.ReferenceCheck`); the orchestrator compares
the units of a kind (:mod:`hpc2edge.transport.fleet`; docs/measurement.md, "Units of a kind").

**The model**: Conv3d(1 -> 8, 3x3x3, padding 1), ReLU, GlobalAveragePool, Flatten, Gemm(8 -> 2),
on ``frames [batch, 1, 16, 64, 64]`` (channels, frames, height, width, as the search spaces'
inputs) to ``speed_power [batch, 2]``: about 14 M multiply-adds, one of the search's own layer
types, small enough to time in a second on a CPU. Its weights are exact binary fractions from a
formula, so it is the same bytes everywhere. An edge device has no ``onnx`` package, so the model
ships as bytes (:data:`MODEL`); :func:`build_model` makes it with ``onnx.helper`` (the ``dev``
extra) and a unit test checks that the two agree.

**The table backend** replays recordings keyed by a model's sha256: a table that should answer
reference checks holds a recording of :data:`MODEL_SHA256` at fp32, batch 1
(:func:`table_record`). Without one, the check reports the backend's error and the unit is
judged on throttling alone.

**Time scale** (``edge.time_scale``, a drill and test knob): :class:`TimeScaled` multiplies
every timed sample of a backend by a factor, in the timed call itself, so the statistics, the
stopping rule and the result all see the scaled samples. The task applies it to every
measurement and :func:`check` is given the same scaled backend: a unit drilled at 2.0 looks like
a unit twice as slow, and nothing else about it changes (its fingerprint included).
"""

from __future__ import annotations

import base64
import hashlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from hpc2edge.latency import telemetry
from hpc2edge.latency.backends.table import Record
from hpc2edge.latency.base import LatencyBackend, Prepared
from hpc2edge.latency.protocol import Clock, Protocol, TimedCall
from hpc2edge.transport.units import ReferenceCheck, StackValue

#: The model's input without the batch axis: channels, frames, height, width.
INPUT_SHAPE = (1, 16, 64, 64)
CHANNELS = 8
OUTPUTS = 2
#: Short and fixed. A 5 % interval is ample to see a unit 1.5x slower; a check takes one or two
#: seconds on a CPU, and at most 2 x (1 s warm-up + 1 s timing) plus the model's build.
PROTOCOL = Protocol(
    warmup_min_s=0.1,
    warmup_min_runs=5,
    min_runs=30,
    min_time_s=0.2,
    max_runs=20_000,
    max_time_s=1.0,
    target_rel_ci=0.05,
)

#: :func:`build_model`'s output (``onnx`` 1.16+), base64.
_MODEL_BASE64 = (
    "CAg6yQoKVAoGZnJhbWVzCgZjb252X3cKBmNvbnZfYhIEY29udiIEQ29udioXCgxrZXJuZWxfc2hhcGVAA0ADQAOg"
    "AQcqFQoEcGFkc0ABQAFAAUABQAFAAaABBwoSCgRjb252EgRyZWx1IgRSZWx1Ch8KBHJlbHUSBHBvb2wiEUdsb2Jh"
    "bEF2ZXJhZ2VQb29sCiIKBHBvb2wSBGZsYXQiB0ZsYXR0ZW4qCwoEYXhpcxgBoAECCiUKBGZsYXQKBGZjX3cKBGZj"
    "X2ISC3NwZWVkX3Bvd2VyIgRHZW1tEhJocGMyZWRnZS1yZWZlcmVuY2Uq9wYICAgBCAMIAwgDEAFCBmNvbnZfd0rg"
    "BgAAoL4AAAA+AAAAvgAAoD4AAIA9AABAvgAAgD4AAAAAAACAvgAAQD4AAIC9AACgvgAAAD4AAAC+AACgPgAAgD0A"
    "AEC+AACAPgAAAAAAAIC+AABAPgAAgL0AAKC+AAAAPgAAAL4AAKA+AACAPQAAQL4AAIA+AAAAAAAAgL4AAEA+AACA"
    "vQAAoL4AAAA+AAAAvgAAoD4AAIA9AABAvgAAgD4AAAAAAACAvgAAQD4AAIC9AACgvgAAAD4AAAC+AACgPgAAgD0A"
    "AEC+AACAPgAAAAAAAIC+AABAPgAAgL0AAKC+AAAAPgAAAL4AAKA+AACAPQAAQL4AAIA+AAAAAAAAgL4AAEA+AACA"
    "vQAAoL4AAAA+AAAAvgAAoD4AAIA9AABAvgAAgD4AAAAAAACAvgAAQD4AAIC9AACgvgAAAD4AAAC+AACgPgAAgD0A"
    "AEC+AACAPgAAAAAAAIC+AABAPgAAgL0AAKC+AAAAPgAAAL4AAKA+AACAPQAAQL4AAIA+AAAAAAAAgL4AAEA+AACA"
    "vQAAoL4AAAA+AAAAvgAAoD4AAIA9AABAvgAAgD4AAAAAAACAvgAAQD4AAIC9AACgvgAAAD4AAAC+AACgPgAAgD0A"
    "AEC+AACAPgAAAAAAAIC+AABAPgAAgL0AAKC+AAAAPgAAAL4AAKA+AACAPQAAQL4AAIA+AAAAAAAAgL4AAEA+AACA"
    "vQAAoL4AAAA+AAAAvgAAoD4AAIA9AABAvgAAgD4AAAAAAACAvgAAQD4AAIC9AACgvgAAAD4AAAC+AACgPgAAgD0A"
    "AEC+AACAPgAAAAAAAIC+AABAPgAAgL0AAKC+AAAAPgAAAL4AAKA+AACAPQAAQL4AAIA+AAAAAAAAgL4AAEA+AACA"
    "vQAAoL4AAAA+AAAAvgAAoD4AAIA9AABAvgAAgD4AAAAAAACAvgAAQD4AAIC9AACgvgAAAD4AAAC+AACgPgAAgD0A"
    "AEC+AACAPgAAAAAAAIC+AABAPgAAgL0AAKC+AAAAPgAAAL4AAKA+AACAPQAAQL4AAIA+AAAAAAAAgL4AAEA+AACA"
    "vQAAoL4AAAA+AAAAvgAAoD4AAIA9AABAvgAAgD4AAAAAAACAvgAAQD4AAIC9AACgvgAAAD4AAAC+AACgPgAAgD0A"
    "AEC+AACAPiouCAgQAUIGY29udl9iSiAAAKC+AAAAPgAAAL4AAKA+AACAPQAAQL4AAIA+AAAAACpOCAgIAhABQgRm"
    "Y193SkAAAKC+AAAAPgAAAL4AAKA+AACAPQAAQL4AAIA+AAAAAAAAgL4AAEA+AACAvQAAoL4AAAA+AAAAvgAAoD4A"
    "AIA9KhQIAhABQgRmY19iSggAAKC+AAAAPlopCgZmcmFtZXMSHwodCAESGQoHEgViYXRjaAoCCAEKAggQCgIIQAoC"
    "CEBiIgoLc3BlZWRfcG93ZXISEwoRCAESDQoHEgViYXRjaAoCCAJCBAoAEBE="
)
MODEL = base64.b64decode(_MODEL_BASE64)
MODEL_SHA256 = hashlib.sha256(MODEL).hexdigest()


def _weights(shape: tuple[int, ...]) -> np.ndarray:
    """Exact binary fractions in [-5/16, 5/16] (no random generator: the same on every numpy)."""
    n = math.prod(shape)
    values = [((i * 7) % 11 - 5) / 16 for i in range(n)]
    return np.array(values, dtype=np.float32).reshape(shape)


def build_model() -> bytes:
    """The reference model, built with ``onnx.helper`` (what :data:`MODEL` holds)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = {
        "conv_w": _weights((CHANNELS, INPUT_SHAPE[0], 3, 3, 3)),
        "conv_b": _weights((CHANNELS,)),
        "fc_w": _weights((CHANNELS, OUTPUTS)),
        "fc_b": _weights((OUTPUTS,)),
    }
    nodes = [
        helper.make_node(
            "Conv", ["frames", "conv_w", "conv_b"], ["conv"], kernel_shape=[3, 3, 3], pads=[1] * 6
        ),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["speed_power"]),
    ]
    graph = helper.make_graph(
        nodes,
        "hpc2edge-reference",
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["batch", *INPUT_SHAPE])],
        [helper.make_tensor_value_info("speed_power", TensorProto.FLOAT, ["batch", OUTPUTS])],
        initializer=[numpy_helper.from_array(array, name) for name, array in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every ONNX Runtime >= 1.10 and TensorRT 8.6+
    onnx.checker.check_model(model, full_check=True)
    data: bytes = model.SerializeToString()
    return data


def table_record(compute_ms: Sequence[float], end_to_end_ms: Sequence[float]) -> Record:
    """A table backend's recording of the reference model (fp32, batch 1)."""
    return Record(MODEL_SHA256, "fp32", 1, tuple(compute_ms), tuple(end_to_end_ms))


class TimeScaled(LatencyBackend):
    """``inner`` with every timed sample multiplied by ``factor`` (see the module docstring).

    The public policy is the base class's, run over ``inner``'s hooks; only the two timed calls
    change.
    """

    def __init__(self, inner: LatencyBackend, factor: float) -> None:
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"time scale {factor!r} must be a finite number > 0")
        self.inner = inner
        self.factor = float(factor)

    # The base's class attributes, here the wrapped backend's: a result names the real backend.
    @property
    def name(self) -> str:  # type: ignore[override]
        return self.inner.name

    @property
    def precisions(self) -> tuple[str, ...]:  # type: ignore[override]
        return self.inner.precisions

    def fingerprint(self) -> dict[str, Any]:
        # The drill is part of the runtime: a scaled unit's measurements get a context of their
        # own in the store and never stand in for the kind's real ones (or the reverse).
        return {**self.inner.fingerprint(), "time_scale": self.factor}

    def release(self, prepared: Prepared) -> None:
        self.inner.release(prepared)

    def _prepare(
        self,
        onnx_bytes: bytes,
        sha256: str,
        precision: str,
        input_shape: tuple[int, ...],
        batch_sizes: tuple[int, ...],
    ) -> Prepared:
        return self.inner._prepare(onnx_bytes, sha256, precision, input_shape, batch_sizes)

    def _infer(self, prepared: Prepared, x: np.ndarray) -> np.ndarray:
        return self.inner._infer(prepared, x)

    def _scaled(self, call: TimedCall) -> TimedCall:
        factor = self.factor
        return lambda: call() * factor

    def _compute_call(self, prepared: Prepared, batch_size: int) -> TimedCall:
        return self._scaled(self.inner._compute_call(prepared, batch_size))

    def _end_to_end_call(self, prepared: Prepared, batch_size: int) -> TimedCall:
        return self._scaled(self.inner._end_to_end_call(prepared, batch_size))

    def _clock(self, prepared: Prepared, batch_size: int) -> Clock:
        return self.inner._clock(prepared, batch_size)


def time_scaled(backend: LatencyBackend, factor: float) -> LatencyBackend:
    """``backend`` itself at factor 1.0, else :class:`TimeScaled`."""
    return backend if factor == 1.0 else TimeScaled(backend, factor)


def check(
    backend: LatencyBackend,
    *,
    protocol: Protocol = PROTOCOL,
    clock: Callable[[], float] = time.time,
) -> ReferenceCheck:
    """Measure the reference model on ``backend``: the ``compute`` median at batch 1.

    Never raises for the backend's sake: a check that fails (no recording in a table, a runtime
    that refuses the model) is a ReferenceCheck with the error, and the unit goes on serving.
    """
    at = clock()
    try:
        before = telemetry.snapshot()
        prepared = backend.prepare(MODEL, "fp32", INPUT_SHAPE, (1,))
        try:
            measured = backend.measure(prepared, 1, protocol)
        finally:
            backend.release(prepared)
        throttle = telemetry.throttled(before, telemetry.snapshot())
    except Exception as exc:
        return ReferenceCheck(at_unix_s=at, error=f"{type(exc).__name__}: {exc}"[:300])
    stats = measured.compute.stats
    return ReferenceCheck(
        at_unix_s=at, p50_ms=stats.median_ms, n=stats.n, throttled=bool(throttle["throttled"])
    )


def software_stack(
    backend_fingerprint: Mapping[str, Any], device: Mapping[str, Any]
) -> dict[str, StackValue]:
    """The few facts of a unit's software that explain a difference in speed: the backend and
    its runtime's version, JetPack and L4T, the power mode and whether clocks are pinned, and
    the device model (entries the fingerprints lack are left out)."""
    fp, versions = backend_fingerprint, device.get("versions") or {}
    nvpmodel, clocks = device.get("nvpmodel") or {}, device.get("jetson_clocks") or {}
    found: dict[str, Any] = {
        "backend": fp.get("backend"),
        "onnxruntime": fp.get("onnxruntime") or versions.get("onnxruntime"),
        "tensorrt": fp.get("tensorrt_version") or versions.get("tensorrt"),
        "cuda_driver": fp.get("cuda_driver_version"),
        "jetpack": device.get("jetpack_version"),
        "l4t": device.get("l4t_release"),
        "power_mode": nvpmodel.get("name"),
        "clocks_pinned": clocks.get("active"),
        "device": device.get("device_model") or fp.get("device_name"),
    }
    return {
        name: value if isinstance(value, (bool, int, float)) else str(value)[:120]
        for name, value in found.items()
        if value is not None
    }
