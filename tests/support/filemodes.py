"""What the file-mode tests share: the tester's usual umask, and a file's permission bits."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def umask_022() -> Iterator[None]:
    """Run with the common umask 022: a file private here is private because hpc2edge made it."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)
