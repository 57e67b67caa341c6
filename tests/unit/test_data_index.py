"""The sample index: its cache, its invalidation, and every malformed input as a DataError."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from hpc2edge.data import LPBFReader, index
from hpc2edge.errors import DataError
from tests.data.fixtures import make, write_layer

pytestmark = pytest.mark.unit


def test_cache_is_written_beside_the_data_and_reused(tmp_path):
    folder = make(tmp_path, "v1.0", objects=2)
    path = folder / "RAISE_LPBF_train.hdf5"
    first = index.load_or_build(path)
    cache = path.with_name(path.name + ".h2e-index.npz")
    assert cache.is_file()
    key = index.cache_key(path)
    cached = index.load(cache, key)
    assert cached is not None and len(cached) == len(first) == 2 * 2 * 6
    np.testing.assert_array_equal(cached.start, first.start)
    assert cached.group_paths == first.group_paths
    assert index.load(cache, {**key, "format": index.INDEX_FORMAT + 1}) is None


def test_cache_dir_and_read_only_folders(tmp_path, monkeypatch):
    folder = make(tmp_path, "v1.1", objects=1)
    path = next(folder.glob("*.hdf5"))
    cache_dir = tmp_path / "cache"
    index.load_or_build(path, cache_dir=cache_dir)
    assert len(list(cache_dir.glob("C027.hdf5-*.h2e-index.npz"))) == 1
    assert not list(folder.glob("*.npz"))
    # A read-only data folder (checked with os.access, which root would pass) -> user cache.
    monkeypatch.setattr(index.os, "access", lambda p, mode: False)
    monkeypatch.setattr(index, "default_cache_dir", lambda: tmp_path / "user-cache")
    index.load_or_build(path)
    assert not list(folder.glob("*.npz"))
    assert len(list((tmp_path / "user-cache").glob("*.h2e-index.npz"))) == 1


def test_cache_is_invalidated_when_the_file_changes(tmp_path):
    folder = make(tmp_path, "v1.1", objects=1)
    path = next(folder.glob("*.hdf5"))
    before = LPBFReader(path)
    speed = float(before.indexes[0].speed_mm_s[0])
    with h5py.File(path, "r+") as f:  # same size, new content
        f["layer0001/laser_params"][0, 0] = 123.0
    after = LPBFReader(path)
    assert float(after.indexes[0].speed_mm_s[0]) == 123.0 != speed
    assert after.target(0)[0] == pytest.approx(123.0 / 900)


def test_use_cache_false_writes_nothing(tmp_path):
    folder = make(tmp_path, "v1.1", objects=1)
    LPBFReader(folder, use_cache=False)
    assert not list(folder.glob("*.npz"))


# --- malformed input ------------------------------------------------------------------------

GOOD_FRAMES = np.zeros((6, 8, 8), dtype=np.uint8)
GOOD_SLI = np.array([0, 0, 0, 1, 1, 1])
GOOD_LABELS = np.array([[500.0, 100.0], [700.0, 150.0]])


def _error(path) -> str:
    with pytest.raises(DataError) as info:
        LPBFReader(path, use_cache=False)
    return str(info.value)


def test_missing_file(tmp_path):
    message = _error(tmp_path / "nope.hdf5")
    assert "nope.hdf5" in message and "no such file" in message


def test_not_hdf5(tmp_path):
    path = tmp_path / "C027.hdf5"
    path.write_bytes(b"not an hdf5 file at all")
    assert "not an HDF5 file" in _error(path)


def test_not_a_raise_lpbf_file(tmp_path):
    path = tmp_path / "C027.hdf5"
    with h5py.File(path, "w") as f:
        f["something"] = 1
    assert "not a RAISE-LPBF file" in _error(path)


def test_object_group_without_layers(tmp_path):
    path = tmp_path / "train.hdf5"
    with h5py.File(path, "w") as f:
        f.create_group("C027")
    assert "'/C027'" in _error(path)


@pytest.mark.parametrize("missing", ["frame", "scan_line_index"])
def test_missing_dataset(tmp_path, missing):
    path = tmp_path / "C027.hdf5"
    with h5py.File(path, "w") as f:
        g = f.create_group("layer0003")
        if missing != "frame":
            g["frame"] = GOOD_FRAMES
        if missing != "scan_line_index":
            g["scan_line_index"] = GOOD_SLI
    message = _error(path)
    assert str(path) in message and "'/layer0003'" in message and f"'{missing}'" in message
    assert "missing dataset" in message


@pytest.mark.parametrize(
    ("frames", "sli", "labels", "dataset", "text"),
    [
        (GOOD_FRAMES, GOOD_SLI[:5], GOOD_LABELS, "scan_line_index", "length 5 != 6 frames"),
        (GOOD_FRAMES, GOOD_SLI, GOOD_LABELS[:1], "laser_params", "1 label rows for 2 lines"),
        (GOOD_FRAMES[:0], GOOD_SLI[:0], GOOD_LABELS, "frame", "empty layer"),
        (GOOD_FRAMES, GOOD_SLI, np.array([[500, np.nan], [1, 1]]), "laser_params", "NaN"),
        (GOOD_FRAMES, GOOD_SLI, np.array([[500, 100], [-1, 1]]), "laser_params", "negative"),
        (GOOD_FRAMES.astype(np.uint16), GOOD_SLI, GOOD_LABELS, "frame", "need uint8"),
        (GOOD_FRAMES[0], GOOD_SLI, GOOD_LABELS, "frame", "need (N, H, W)"),
        (GOOD_FRAMES, GOOD_SLI.astype(float), GOOD_LABELS, "scan_line_index", "integers"),
        (GOOD_FRAMES, GOOD_SLI, GOOD_LABELS[:, :1], "laser_params", "need (lines, 2)"),
        (GOOD_FRAMES, -np.ones(6, int), GOOD_LABELS, "scan_line_index", "no frame is on a line"),
    ],
)
def test_malformed_layer(tmp_path, frames, sli, labels, dataset, text):
    path = write_layer(tmp_path / "C027.hdf5", frames, sli, labels)
    message = _error(path)
    assert str(path) in message and "'/layer0001'" in message and f"'{dataset}'" in message
    assert text in message


def test_errors_name_the_group_in_v10_files(tmp_path):
    path = write_layer(
        tmp_path / "train.hdf5", GOOD_FRAMES, GOOD_SLI[:4], GOOD_LABELS, "C031/layer0007"
    )
    assert "'/C031/layer0007': dataset 'scan_line_index'" in _error(path)


def test_extra_label_rows_are_fine(tmp_path):
    labels = np.vstack([GOOD_LABELS, [[np.nan, np.nan]]])  # a row no frame refers to
    path = write_layer(tmp_path / "C027.hdf5", GOOD_FRAMES, GOOD_SLI, labels)
    assert len(LPBFReader(path, use_cache=False)) == 2


def test_a_directory_without_hdf5_files(tmp_path):
    assert "no HDF5 file" in _error(tmp_path)
