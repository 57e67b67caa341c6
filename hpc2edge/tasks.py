"""Thin Celery task adapters: decode JSON arguments, call a plain function, encode the result.

Registered names are the contract between orchestrator and workers:

- ``hpc2edge.ping`` (any queue; the caller picks it): who answered, from which queue, with which
  software. Used by ``hpc2edge ping`` / ``status`` and to check routing.
- ``hpc2edge.measure`` (queue ``edge``, or ``edge.<kind>`` per device kind): a latency
  measurement of an ONNX model fetched from the artifact store by key
  (:func:`hpc2edge.latency.service.measure_request`). Bad input comes back as a result with a
  typed error; the worker goes on serving. The result names the worker and its kind.
  The unit counts its measurements for its heartbeat's report and checks the reference model
  when it joins and every ``edge.reference_every`` measurements (:func:`unit_joined`,
  :mod:`hpc2edge.latency.reference`).
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

from celery import Task, shared_task, signals

import hpc2edge
from hpc2edge.config import Settings
from hpc2edge.errors import MeasurementError, as_result
from hpc2edge.roles import EDGE, is_edge_queue
from hpc2edge.transport.app import train_limits_s
from hpc2edge.transport.units import UNIT, ReferenceCheck
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

    From an edge queue (``edge``, ``edge.<kind>``) the answer also carries ``measurement``: the
    device kind, the device's and the default backend's fingerprints, which is what the
    orchestrator needs to look a measurement up in its store before sending anything
    (:class:`hpc2edge.store.measurements.DeviceContext`).
    """
    info = self.request.delivery_info or {}
    queue = info.get("routing_key") or info.get("queue")
    answer = describe_worker(self.request.hostname or socket.gethostname(), queue)
    if is_edge_queue(queue):
        from hpc2edge.latency import telemetry

        settings: Settings = self.app.settings
        try:
            backend = _backend(settings.edge.backend, settings).fingerprint()
        except Exception as exc:  # a broken backend is reported, not a failed ping
            backend = {"backend": settings.edge.backend, "error": as_result(exc)}
        answer["measurement"] = {
            "kind": settings.edge.kind,
            "device": telemetry.fingerprint(),
            "backend": backend,
        }
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


def _scaled_backend(name: str | None, settings: Settings) -> LatencyBackend:
    """The backend ``name`` (None: the worker's) with ``edge.time_scale`` applied: the one
    place where a drilled unit's samples are scaled, for tasks and reference checks alike."""
    from hpc2edge.latency.reference import time_scaled

    return time_scaled(_backend(name or settings.edge.backend, settings), settings.edge.time_scale)


def _check_reference(settings: Settings) -> None:
    """Measure the reference model here and keep the result for the unit's report."""
    from hpc2edge.latency import reference

    try:
        backend = _scaled_backend(None, settings)
    except Exception as exc:  # a backend that cannot start is reported, the worker goes on
        UNIT.set_reference(ReferenceCheck(at_unix_s=time.time(), error=str(exc)[:300]))
        return
    UNIT.set_reference(reference.check(backend))


@signals.worker_ready.connect(weak=False, dispatch_uid="hpc2edge.tasks.unit_joined")
def unit_joined(sender: Any = None, **_: Any) -> None:
    """An edge unit that joins its kind notes its software stack and checks the reference
    model, before its first task: in the consumer's thread, as tasks run, so never beside a
    measurement (a second or two under the reference protocol)."""
    from hpc2edge.latency import reference, telemetry

    settings: Settings = sender.app.settings
    if settings.role != EDGE:
        return
    try:
        fingerprint = _backend(settings.edge.backend, settings).fingerprint()
    except Exception as exc:  # as in ping: a broken backend is reported
        fingerprint = {"backend": settings.edge.backend, "error": str(exc)[:120]}
    UNIT.set_stack(reference.software_stack(fingerprint, telemetry.fingerprint()))
    if settings.edge.reference_every > 0:
        _check_reference(settings)


@shared_task(name="hpc2edge.measure", bind=True)
def measure(self: Task, request: dict[str, Any]) -> dict[str, Any]:
    """Measure the latency of the ONNX model in ``request`` on this device (a LatencyResult).

    Every timed sample is multiplied by ``edge.time_scale`` (a drill knob; 1.0 is off). When
    ``edge.reference_every`` measurements have passed, the unit checks the reference model
    before it answers.
    """
    from hpc2edge.latency.service import measure_request

    settings: Settings = self.app.settings

    def backend_for(name: str | None) -> LatencyBackend:
        return _scaled_backend(name, settings)

    def fetch(key: str) -> bytes:
        # Connecting inside the measurement: an unreachable store is a typed error result too.
        data: bytes = _artifact_store(settings).get(key)
        return data

    UNIT.task_started(self.request.id)
    result: dict[str, Any] = {"status": "error"}  # what a fault of the worker itself counts as
    try:
        result = measure_request(
            request,
            fetch=fetch,
            backend_for=backend_for,
            time_limit_s=settings.worker.measure_time_limit_s,
            max_input_bytes=settings.edge.max_input_mib * 2**20,
        )
    finally:
        UNIT.task_finished(result)
    if UNIT.reference_due(settings.edge.reference_every):
        _check_reference(settings)
    result["worker"] = self.request.hostname
    result["kind"] = settings.edge.kind
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
