"""A ``sitecustomize`` that makes chosen top-level modules unimportable in a child process.

Tests of what an edge-only install can run put it on the child's ``PYTHONPATH``: importing a
blocked module raises ModuleNotFoundError, as on a Jetson without the training or search extras.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

#: What a Jetson with only the core and ``edge`` extras does not have.
HEAVY = ("torch", "deepspeed", "tensorrt", "pycuda", "optuna", "h5py", "sqlalchemy", "matplotlib")


def sitecustomize(blocked: tuple[str, ...] = HEAVY) -> str:
    """The source of a ``sitecustomize.py`` that blocks ``blocked``."""
    return textwrap.dedent(f"""
        import importlib.abc, sys

        BLOCKED = {blocked!r}

        class _Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)")
                return None

        sys.meta_path.insert(0, _Block())
    """)


def write(folder: Path, blocked: tuple[str, ...] = HEAVY) -> Path:
    """Write the ``sitecustomize.py`` into ``folder`` (put ``folder`` first on PYTHONPATH)."""
    path = folder / "sitecustomize.py"
    path.write_text(sitecustomize(blocked))
    return path
