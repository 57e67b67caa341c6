"""A PyTorch ``Dataset`` over :class:`~hpc2edge.data.reader.LPBFReader`.

This is the only data module that imports torch; ``hpc2edge.data`` reaches it lazily
(``hpc2edge.data.LPBFDataset``), so reading and generating data needs only h5py and numpy.

Random training windows: each process draws from its own numpy generator seeded from
``torch.initial_seed()`` (which the ``DataLoader`` sets per worker and per epoch from its base
seed) and the dataset's ``seed``. Seeding torch therefore makes training windows reproducible,
and two workers never draw the same windows. Evaluation windows are centred and need no seed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from hpc2edge.data.preprocess import Preprocess
from hpc2edge.data.reader import LPBFReader
from hpc2edge.data.selection import Selection


class LPBFDataset(Dataset):
    """Map-style dataset of (``float32 [1, T, S, S]``, ``float32 [2]``) tensors.

    Args:
        reader: the samples to serve.
        train: random windows (with the preprocessing's margin) instead of centred ones.
        seed: mixed into each process's window generator.
    """

    def __init__(self, reader: LPBFReader, *, train: bool = False, seed: int = 0) -> None:
        self.reader = reader
        self.train = train
        self.seed = seed
        self._rng_key: tuple[int, int] | None = None
        self._rng: np.random.Generator | None = None

    @classmethod
    def from_paths(
        cls,
        paths: str | Path | Iterable[str | Path],
        *,
        split: str = "all",
        train: bool | None = None,
        objects: str | None = None,
        layers: str | None = None,
        test_fraction: float | None = None,
        frames: int = 16,
        size: int = 41,
        seed: int = 0,
        cache_dir: Path | None = None,
    ) -> LPBFDataset:
        """Reader and dataset in one call; ``train`` defaults to ``split == "train"``."""
        selection = Selection(
            objects=tuple(objects.split(",")) if objects else None,
            layers=layers,
            split=split,
            test_fraction=test_fraction,
            seed=seed,
        )
        reader = LPBFReader(
            paths,
            selection=selection,
            preprocess=Preprocess(frames=frames, size=size),
            cache_dir=cache_dir,
        )
        return cls(reader, train=split == "train" if train is None else train, seed=seed)

    def __len__(self) -> int:
        return len(self.reader)

    def _generator(self) -> np.random.Generator:
        key = (os.getpid(), torch.initial_seed())
        if self._rng is None or self._rng_key != key:
            self._rng_key = key
            self._rng = np.random.default_rng([self.seed, key[1] % (1 << 63)])
        return self._rng

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = self._generator() if self.train else None
        x, y = self.reader.sample(i, rng=rng)
        return torch.from_numpy(x), torch.from_numpy(y)
