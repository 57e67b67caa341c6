"""Software versions for results and fingerprints, read from package metadata, never by import.

Reporting torch's or TensorRT's version must not import them: an edge worker has no torch, and
importing TensorRT initialises CUDA. ``importlib.metadata`` reads the installed distribution's
files instead, and the answers are cached per process (they cannot change while it runs).
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Iterable
from importlib import metadata


@functools.lru_cache(maxsize=64)
def package_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or None when it is not installed."""
    try:
        return metadata.version(name)
    except (metadata.PackageNotFoundError, ValueError):
        return None


def versions(names: Iterable[str]) -> dict[str, str | None]:
    """``{"python": ..., name: version or None, ...}`` for ``names``."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    out.update({name: package_version(name) for name in names})
    return out
