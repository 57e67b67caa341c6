"""What the launcher and every training child share: a parent-death signal and atomic JSON.

The launcher (:mod:`hpc2edge.training.launcher`) starts the child, the child's entry point
(:mod:`hpc2edge.training.worker_main`) runs a rank; both import this module and neither imports
the other.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

from hpc2edge.util.files import write_atomic


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (a no-op elsewhere).

    Used in the launched child (through ``preexec_fn``) and in every rank (``worker_main``), so
    that neither torchrun nor its ranks outlive a worker killed by a signal.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def write_json_atomic(path: Path, data: Any) -> None:
    """``data`` as JSON, all or nothing (the launcher may read while a rank writes)."""
    write_atomic(path, json.dumps(data, sort_keys=True).encode())
