"""Trustworthy latency measurement on the edge device.

``base`` holds the contract (:class:`~hpc2edge.latency.base.LatencyBackend`), ``protocol`` the
one warm-up/stopping implementation, ``stats`` the statistics, ``telemetry`` the device state and
fingerprint, and one module per backend, imported lazily by :func:`get_backend` so that a host
without TensorRT (or without ONNX Runtime) still imports this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpc2edge.latency.base import LatencyBackend

BACKENDS = {
    "onnxruntime": "hpc2edge.latency.backends.onnxruntime:OnnxRuntimeBackend",
    "tensorrt": "hpc2edge.latency.backends.tensorrt:TensorRTBackend",
    "table": "hpc2edge.latency.backends.table:TableBackend",
}


def get_backend(name: str, **options: Any) -> LatencyBackend:
    """The backend registered as ``name``, constructed with ``options``.

    Raises:
        ValueError: unknown name.
        MeasurementError: the backend's runtime is not installed.
    """
    import importlib

    try:
        target = BACKENDS[name]
    except KeyError:
        raise ValueError(
            f"unknown latency backend {name!r}; expected one of {', '.join(BACKENDS)}"
        ) from None
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    backend: LatencyBackend = cls(**options)
    return backend
