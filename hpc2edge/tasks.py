"""Thin Celery task adapters: decode JSON arguments, call a plain function, encode the result.

Registered names are the contract between orchestrator and workers:

- ``hpc2edge.ping`` (any queue; the caller picks it): who answered, from which queue, with which
  software. Used by ``hpc2edge ping`` / ``status`` and to check routing.
- ``hpc2edge.train`` (queue ``train``) and ``hpc2edge.measure`` (queue ``edge``): reserved names,
  routed in :mod:`hpc2edge.celery`, implemented by the training and latency issues.

Nothing heavy is imported here: this module loads on a Jetson without torch.
"""

from __future__ import annotations

import functools
import os
import platform
import socket
import time
from importlib import metadata
from typing import Any

from celery import Task, shared_task

import hpc2edge

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
    """Versions of Python, hpc2edge and the packages that matter, read from package metadata.

    Metadata, not imports: reporting torch's version must not import torch on an edge worker.
    """
    versions: dict[str, str | None] = {
        "python": platform.python_version(),
        "hpc2edge": hpc2edge.__version__,
    }
    for name in REPORTED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


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
    """Answer with this worker's hostname, the queue the message came from and versions."""
    info = self.request.delivery_info or {}
    queue = info.get("routing_key") or info.get("queue")
    return describe_worker(self.request.hostname or socket.gethostname(), queue)
