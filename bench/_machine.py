"""The machine a benchmark ran on, as every ``bench/*.py`` records it beside its figures.

Importable by the scripts (``python bench/<name>.py`` puts ``bench/`` first on the path). It does
not need hpc2edge: ``bench/orchestrator.py``'s parent process never imports the package, so a
working tree caught mid-change fails only its own runs.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any


def version(name: str) -> str | None:
    """The installed version of distribution ``name``, or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str | None:
    """``model name`` from /proc/cpuinfo (as hpc2edge's telemetry reads it), else the platform's."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def describe(packages: Mapping[str, str], **extra: Any) -> dict[str, Any]:
    """Platform, Python, CPUs, the 1-minute load now (how shared the machine was), and the
    versions of ``packages`` (``{"key": "distribution"}``) and whatever ``extra`` adds."""
    try:
        load_avg_1m: float | None = os.getloadavg()[0]
    except OSError:  # not available on every platform
        load_avg_1m = None
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "load_avg_1m": load_avg_1m,
        **{key: version(name) for key, name in packages.items()},
        **extra,
    }
