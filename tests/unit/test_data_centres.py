"""Crop centres shared across readers, processes and runs through a memory-mapped table."""

from __future__ import annotations

import multiprocessing

import h5py
import numpy as np
import pytest

from hpc2edge.data import LPBFReader, centres
from tests.data.fixtures import make

pytestmark = pytest.mark.unit


def _table(reader: LPBFReader, fi: int = 0) -> np.ndarray:
    ix = reader.indexes[fi]
    return centres.open_table(reader.files[fi], ix.key(), len(ix))


def test_a_centre_computed_once_is_seen_by_every_later_reader(tmp_path):
    folder = make(tmp_path, "v1.0", objects=2)
    first = LPBFReader(folder)
    assert (_table(first) == -1).all()
    x_whole, _ = first.sample(3)  # reads the whole line, stores its centre
    table = _table(first)
    assert (table[3] >= 0).all() and (np.delete(table, 3, axis=0) == -1).all()
    second = LPBFReader(folder)
    x_window, _ = second.sample(3)  # reads only the window, with the stored centre
    np.testing.assert_array_equal(x_whole, x_window)
    frames = second.read_frames(3)
    total = frames.sum(axis=0, dtype=np.int64)
    assert tuple(table[3]) == np.unravel_index(int(total.argmax()), total.shape)


def _fill(folder, lo, hi):
    reader = LPBFReader(folder)
    for i in range(lo, hi):
        reader.sample(i)


def test_worker_processes_share_the_table(tmp_path):
    folder = make(tmp_path, "v1.1", objects=1)
    reader = LPBFReader(folder)
    n = len(reader)
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: nothing inherited
    # Two processes fill overlapping halves at once: racing writes are identical values.
    halves = [(0, n * 2 // 3), (n // 3, n)]
    workers = [ctx.Process(target=_fill, args=(folder, lo, hi)) for lo, hi in halves]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    assert (_table(reader) >= 0).all()


def test_a_changed_file_gets_a_fresh_table_and_the_old_one_goes(tmp_path):
    folder = make(tmp_path, "v1.1", objects=1)
    path = next(folder.glob("*.hdf5"))
    LPBFReader(folder).sample(0)
    old = list(folder.glob("*.h2e-centres.npy"))
    assert len(old) == 1
    with h5py.File(path, "r+") as f:
        f["layer0001/frame"][:] = 0  # the melt pool is gone: old centres would be wrong
    reader = LPBFReader(folder)
    assert (_table(reader) == -1).all()
    reader.sample(0)
    now = list(folder.glob("*.h2e-centres.npy"))
    assert len(now) == 1 and now != old
    assert tuple(_table(reader)[0]) == (0, 0)


def test_without_a_writable_cache_centres_stay_in_the_process(tmp_path, monkeypatch):
    folder = make(tmp_path, "v1.1", objects=1)
    reader = LPBFReader(folder, use_cache=False)
    x1, _ = reader.sample(2)
    x2, _ = reader.sample(2)
    np.testing.assert_array_equal(x1, x2)
    assert not list(folder.glob("*.npy"))

    def refuse(*args, **kwargs):
        raise PermissionError("read-only")

    monkeypatch.setattr(centres, "_create", refuse)
    other = LPBFReader(folder)
    np.testing.assert_array_equal(other.sample(2)[0], x1)
    assert not list(folder.glob("*.npy"))


def test_forget_centres_clears_the_shared_table(tmp_path):
    folder = make(tmp_path, "v1.1", objects=1)
    reader = LPBFReader(folder)
    for i in range(4):
        reader.sample(i)
    assert (_table(reader)[:4] >= 0).all()
    reader.forget_centres()
    assert (_table(reader) == -1).all()


def test_a_second_creator_keeps_the_table_the_first_one_mapped(tmp_path):
    folder = make(tmp_path, "v1.1", objects=1)
    reader = LPBFReader(folder)
    first = _table(reader)
    first[0] = (1, 2)
    ix = reader.indexes[0]
    centres._create(centres.table_path(reader.files[0], ix.key()), len(ix))  # lost the race
    assert tuple(_table(reader)[0]) == (1, 2)
    assert not list(folder.glob("*.tmp"))
