"""The search spaces by name: what ``--space`` accepts and what a spec's ``space`` field names.

The registry imports the spaces; the spaces import only :mod:`hpc2edge.space.base`. A new space
is a module beside ``cnn3d.py`` and one entry in :data:`SPACES`.
"""

from __future__ import annotations

from collections.abc import Callable

from hpc2edge.errors import SpecError
from hpc2edge.space.base import SearchSpace
from hpc2edge.space.cnn3d import Cnn3DSpace
from hpc2edge.space.swin3d import Swin3DSpace

SPACES: dict[str, Callable[[], SearchSpace]] = {
    "swin3d": Swin3DSpace,
    "swin3d-input": lambda: Swin3DSpace(search_input=True),
    "cnn3d": Cnn3DSpace,
}


def list_spaces() -> tuple[str, ...]:
    """Names :func:`get_space` accepts."""
    return tuple(SPACES)


def get_space(name: str) -> SearchSpace:
    """The search space registered as ``name``; SpecError for an unknown name."""
    make = SPACES.get(name)
    if make is None:
        raise SpecError(f"unknown search space {name!r} (known: {', '.join(SPACES)})")
    return make()
