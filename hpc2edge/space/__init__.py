"""Search spaces and architecture specs: see :mod:`hpc2edge.space.base` for the contract.

Importing this package pulls in neither torch nor optuna.
"""

from hpc2edge.space.base import (
    ArchSpec,
    RandomTrial,
    SearchSpace,
    TrainingHParams,
    TrialLike,
)
from hpc2edge.space.registry import get_space, list_spaces

__all__ = [
    "ArchSpec",
    "RandomTrial",
    "SearchSpace",
    "TrainingHParams",
    "TrialLike",
    "get_space",
    "list_spaces",
]
