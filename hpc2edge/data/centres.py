"""Crop centres shared by every process that reads a file: a small memory-mapped table.

The crop centre of a line (argmax of its mean frame) needs *all* of the line's frames, while a
sample needs only T of them. Once a centre is known, reading a sample is ~3x cheaper. Keeping the
centres in each reader object would help only the process that computed them, and DataLoader
workers are new processes every epoch (unless persistent) that each see a fraction of the lines.
So the centres live in one ``int32 [lines, 2]`` ``.npy`` file per data file, memory-mapped
shared (``MAP_SHARED``) by every reader of that file, in every process and every run.

Concurrency without locks: an entry only ever goes from ``-1`` (unknown) to the line's centre,
which is deterministic, so two processes racing on one line write the same values. A half-written
entry has a ``-1`` left and reads as unknown. The table is created under a temporary name and
hard-linked into place, so nobody maps a half-initialised file and, of two processes creating it
at once, both end up mapping the same one.

Invalidation: the file name carries a digest of the data file's cache key (path, size, mtime_ns,
format), so a changed data file gets a fresh table; stale tables of that file are removed when a
new one is created. Where no table can be written (read-only folders, ``use_cache=False``), the
table is an ordinary in-process array.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import string
from pathlib import Path
from typing import Any

import numpy as np

from hpc2edge.data import index as idx

CENTRES_SUFFIX = ".h2e-centres.npy"
_DIGEST_CHARS = 12
_HEX = set(string.hexdigits.lower())


def table_path(path: Path, key: dict[str, Any], cache_dir: Path | None = None) -> Path:
    """Where the centre table of data file ``path`` with cache key ``key`` lives."""
    base = idx.cache_path(path, cache_dir)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:_DIGEST_CHARS]
    stem = base.name.removesuffix(idx.CACHE_SUFFIX)
    return base.with_name(f"{stem}.{digest}{CENTRES_SUFFIX}")


def in_memory(n_lines: int) -> np.ndarray:
    """A private table: every centre unknown."""
    return np.full((n_lines, 2), -1, dtype=np.int32)


def _create(target: Path, n_lines: int) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    fresh = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int32, shape=(n_lines, 2))
    fresh[:] = -1
    fresh.flush()
    del fresh
    try:
        # link, not rename: when two processes create the table at once, the first one wins
        # and the second maps the same file; a rename would orphan what the first one mapped.
        os.link(tmp, target)
    except FileExistsError:
        tmp.unlink(missing_ok=True)
        return
    except OSError:  # a file system without hard links: rename (a lost race only costs reads)
        os.replace(tmp, target)
    else:
        tmp.unlink(missing_ok=True)
    # Tables of earlier versions of the same data file: "<stem>.<12 hex digits><suffix>".
    stem = target.name[: -len(CENTRES_SUFFIX) - _DIGEST_CHARS - 1]
    for other in target.parent.glob(f"{glob.escape(stem)}.*{CENTRES_SUFFIX}"):
        digest = other.name[len(stem) + 1 : -len(CENTRES_SUFFIX)]
        if other != target and len(digest) == _DIGEST_CHARS and set(digest) <= _HEX:
            other.unlink(missing_ok=True)


def open_table(
    path: Path, key: dict[str, Any], n_lines: int, *, cache_dir: Path | None = None
) -> np.ndarray:
    """The shared centre table of ``path`` (created if absent), or a private one if impossible.

    Args:
        path: the data file.
        key: its cache key (:func:`hpc2edge.data.index.cache_key` at indexing time).
        n_lines: number of lines (samples) in its index.
        cache_dir: as for the index cache.

    Returns:
        ``int32 [n_lines, 2]``: (row, col) per line, ``-1`` where not yet known.
    """
    target = table_path(path, key, cache_dir)
    try:
        if not target.exists():
            _create(target, n_lines)
        table = np.lib.format.open_memmap(target, mode="r+")
    except (OSError, ValueError):
        return in_memory(n_lines)
    if table.shape != (n_lines, 2) or table.dtype != np.int32:
        return in_memory(n_lines)
    return table
