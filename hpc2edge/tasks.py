"""Thin Celery task adapters: decode JSON arguments, call a plain function, encode the result.

Registered names are the contract between orchestrator and workers:

- ``hpc2edge.ping`` (any queue; the caller picks it): who answered, from which queue, with which
  software. Used by ``hpc2edge ping`` / ``status`` and to check routing.
- ``hpc2edge.measure`` (queue ``edge``): a latency measurement of an ONNX model fetched from the
  artifact store by key (:func:`hpc2edge.latency.service.measure_request`). Bad input comes back
  as a result with a typed error; the worker goes on serving.
- ``hpc2edge.train`` (queue ``train``): train one candidate in a child process
  (:func:`hpc2edge.training.service.train_request`) and return its ``TrainResult``, or a result
  with a typed error. Idempotent by ``trial_key``: a redelivered task whose result this worker
  recorded returns it without training again (``"cached": true``).

Nothing heavy is imported here: this module loads on a Jetson without torch.
"""

from __future__ import annotations

import functools
import os
import platform
import socket
import time
from typing import TYPE_CHECKING, Any

from celery import Task, shared_task

import hpc2edge
from hpc2edge.config import Settings
from hpc2edge.errors import MeasurementError, as_result
from hpc2edge.roles import QUEUE_EDGE
from hpc2edge.transport.app import train_limits_s
from hpc2edge.util.versions import versions

if TYPE_CHECKING:
    from hpc2edge.latency.base import LatencyBackend

#: Distributions whose versions a worker reports (absent ones are reported as None).
REPORTED_PACKAGES = (
    "celery",
    "kombu",
    "redis",
    "onnxruntime",
    "onnxruntime-gpu",
    "tensorrt",
    "pycuda",
    "torch",
    "deepspeed",
    "optuna",
)


@functools.lru_cache(maxsize=1)
def software_versions() -> dict[str, str | None]:
    """Versions of Python, hpc2edge and the packages that matter (metadata, not imports)."""
    return {**versions(REPORTED_PACKAGES), "hpc2edge": hpc2edge.__version__}


def describe_worker(hostname: str, queue: str | None) -> dict[str, Any]:
    """The plain function behind ``hpc2edge.ping``."""
    return {
        "hostname": hostname,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "queue": queue,
        "platform": platform.platform(),
        "versions": software_versions(),
        "time_unix_s": time.time(),
    }


@shared_task(name="hpc2edge.ping", bind=True)
def ping(self: Task) -> dict[str, Any]:
    """Answer with this worker's hostname, the queue the message came from and versions.

    From the ``edge`` queue the answer also carries ``measurement``: the device's and the default
    backend's fingerprints, which is what the orchestrator needs to look a measurement up in its
    store before sending anything (:class:`hpc2edge.store.measurements.DeviceContext`).
    """
    info = self.request.delivery_info or {}
    queue = info.get("routing_key") or info.get("queue")
    answer = describe_worker(self.request.hostname or socket.gethostname(), queue)
    if queue == QUEUE_EDGE:
        from hpc2edge.latency import telemetry

        settings: Settings = self.app.settings
        try:
            backend = _backend(settings.edge.backend, settings).fingerprint()
        except Exception as exc:  # a broken backend is reported, not a failed ping
            backend = {"backend": settings.edge.backend, "error": as_result(exc)}
        answer["measurement"] = {"device": telemetry.fingerprint(), "backend": backend}
    return answer


@functools.lru_cache(maxsize=4)
def _backend(name: str, settings: Settings) -> LatencyBackend:
    """One backend per worker process and name: sessions, CUDA context and caches are reused."""
    from hpc2edge.latency import get_backend

    edge = settings.edge
    options: dict[str, Any] = {}
    if name == "onnxruntime":
        options = {"intra_op_threads": edge.intra_op_threads}
    elif name == "tensorrt":
        options = {"cache_dir": edge.cache_dir or settings.state_dir / "cache"}
    elif name == "table":
        if edge.table is None:
            raise MeasurementError("the table backend needs edge.table in the worker's config")
        options = {"table": edge.table}
    return get_backend(name, **options)


@functools.lru_cache(maxsize=1)
def _artifact_store(settings: Settings) -> Any:
    from hpc2edge.store.artifacts import RedisArtifactStore
    from hpc2edge.transport import broker

    return RedisArtifactStore(
        broker.client(settings, retries=3), max_bytes=settings.edge.artifact_max_mib * 2**20
    )


@shared_task(name="hpc2edge.measure", bind=True)
def measure(self: Task, request: dict[str, Any]) -> dict[str, Any]:
    """Measure the latency of the ONNX model in ``request`` on this device (a LatencyResult)."""
    from hpc2edge.latency.service import measure_request

    settings: Settings = self.app.settings

    def backend_for(name: str | None) -> LatencyBackend:
        return _backend(name or settings.edge.backend, settings)

    def fetch(key: str) -> bytes:
        # Connecting inside the measurement: an unreachable store is a typed error result too.
        data: bytes = _artifact_store(settings).get(key)
        return data

    result = measure_request(
        request,
        fetch=fetch,
        backend_for=backend_for,
        time_limit_s=settings.worker.measure_time_limit_s,
        max_input_bytes=settings.edge.max_input_mib * 2**20,
    )
    result["worker"] = self.request.hostname
    return result


@shared_task(name="hpc2edge.train", bind=True, acks_late=True, reject_on_worker_lost=True)
def train(self: Task, request: dict[str, Any]) -> dict[str, Any]:
    """Train the candidate in ``request`` on this node (a TrainResult dict, or a typed error).

    Time limits come from ``worker.train_time_limit_s`` (``task_annotations``); the child is
    killed before the soft limit (two minutes before, or a tenth of a short limit), so the worker
    reports a typed error in time.
    """
    from celery.exceptions import SoftTimeLimitExceeded

    from hpc2edge.errors import TrainingError
    from hpc2edge.training.service import error_result, train_request

    settings: Settings = self.app.settings
    limit_s = settings.worker.train_time_limit_s
    try:
        result = train_request(
            request, state_dir=settings.state_dir, time_limit_s=train_limits_s(limit_s)[0]
        )
    except SoftTimeLimitExceeded:
        # The launcher has already killed the child's process group on the way out.
        result = error_result(TrainingError(f"time limit of {limit_s} s exceeded"), request)
    result["worker"] = self.request.hostname
    return result
