"""LPBFReader on real generated HDF5 files of both layouts."""

from __future__ import annotations

import multiprocessing
import os
import pickle

import numpy as np
import pytest

from hpc2edge.data import LPBFReader, Preprocess, Selection, SynthSpec, render_layer
from hpc2edge.errors import DataError
from tests.data.fixtures import SMALL, blob_frames, make, write_layer

pytestmark = pytest.mark.unit

N_SAMPLES = SMALL.objects * SMALL.layers * SMALL.lines


@pytest.fixture(scope="module")
def v11(tmp_path_factory):
    return make(tmp_path_factory.mktemp("v11"), "v1.1")


@pytest.fixture(scope="module")
def v10(tmp_path_factory):
    return make(tmp_path_factory.mktemp("v10"), "v1.0")


@pytest.mark.parametrize("which", ["v10", "v11"])
def test_counts_shapes_dtypes(which, request):
    reader = LPBFReader(request.getfixturevalue(which))
    assert len(reader) == N_SAMPLES
    assert reader.layouts == ["v1.0" if which == "v10" else "v1.1"]
    assert reader.objects == SMALL.object_names()
    x, y = reader.sample(0)
    assert x.shape == (1, 16, 41, 41) and x.dtype == np.float32
    assert y.shape == (2,) and y.dtype == np.float32
    assert np.isfinite(x).all() and np.isfinite(y).all()
    truth = render_layer(SMALL, SMALL.first_object, SMALL.first_layer).laser_params[0]
    np.testing.assert_allclose(y, [truth[0] / 900, truth[1] / 215], rtol=1e-6)
    info = reader.info(0)
    assert (info.object_name, info.layer, info.line) == ("C027", 1, 0)
    assert reader.read_frames(0).shape == (info.n_frames, 32, 32)


def test_both_layouts_serve_the_same_samples(v10, v11):
    a, b = LPBFReader(v10), LPBFReader(v11)
    for i in (0, 7, N_SAMPLES - 1):
        assert a.info(i).line == b.info(i).line
        np.testing.assert_array_equal(a.sample(i)[0], b.sample(i)[0])
    np.testing.assert_array_equal(a.targets(), b.targets())


@pytest.mark.parametrize("size", [41, 64, 112])
def test_output_size(v11, size):
    x, _ = LPBFReader(v11, preprocess=Preprocess(frames=8, size=size)).sample(3)
    assert x.shape == (1, 8, size, size) and x.dtype == np.float32


def test_several_paths_and_globs(v11):
    files = sorted(v11.glob("*.hdf5"))
    assert len(LPBFReader(files[:2])) == 2 * SMALL.layers * SMALL.lines
    assert len(LPBFReader(str(v11 / "C02[78].hdf5"))) == 2 * SMALL.layers * SMALL.lines
    assert list(v11.glob("*.h2e-index.npz"))  # caches sit beside the data ...
    assert len(LPBFReader(str(v11 / "*"))) == N_SAMPLES  # ... and a glob does not take them


def test_evaluation_windows_are_deterministic_and_centred(v11):
    spec = Preprocess(frames=4, margin_frames=0)
    a, b = LPBFReader(v11, preprocess=spec), LPBFReader(v11, preprocess=spec)
    i = next(k for k in range(len(a)) if a.info(k).n_frames > 20)
    np.testing.assert_array_equal(a.sample(i)[0], b.sample(i)[0])
    np.testing.assert_array_equal(a.sample(i)[0], a.sample(i)[0])  # centre now remembered
    frames = a.read_frames(i)
    start = (frames.shape[0] - 4) // 2
    from hpc2edge.data.preprocess import melt_pool_centre, preprocess_window

    expected = preprocess_window(frames[start : start + 4], melt_pool_centre(frames), spec)
    np.testing.assert_array_equal(a.sample(i)[0], expected)


def test_training_windows_vary_within_the_margin(v11):
    reader = LPBFReader(v11, preprocess=Preprocess(frames=4, margin_frames=3))
    i = next(k for k in range(len(reader)) if reader.info(k).n_frames > 30)
    rng = np.random.default_rng(0)
    draws = {reader.sample(i, rng=rng)[0].tobytes() for _ in range(20)}
    assert len(draws) > 1
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    np.testing.assert_array_equal(reader.sample(i, rng=rng_a)[0], reader.sample(i, rng=rng_b)[0])


def test_crop_is_centred_on_the_melt_pool(tmp_path):
    frames = np.concatenate([blob_frames(10, 64, (20, 45)), blob_frames(10, 64, (2, 60))])
    sli = np.repeat([0, 1], 10)
    path = write_layer(tmp_path / "C027.hdf5", frames, sli, np.array([[500.0, 100], [600, 150]]))
    reader = LPBFReader(path, preprocess=Preprocess(frames=4, margin_frames=0))
    raw = lambda x: np.rint((x * 0.225 + 0.45) * 255).astype(int)  # noqa: E731
    inner = raw(reader.sample(0)[0])[0]
    assert inner.shape == (4, 41, 41)
    assert inner[0, 20, 20] == 255 and inner[0, 19, 19] == 200 and inner[0, 0, 0] == 5
    corner = raw(reader.sample(1)[0])[0]  # pool at row 2, col 60: top and right padded black
    assert corner[0, 20, 20] == 255
    assert (corner[:, :18, :] == 0).all() and (corner[:, :, 24:] == 0).all()
    assert corner[0, 18, 0] == 5


def test_short_lines_are_padded_with_black_frames(tmp_path):
    frames = blob_frames(5, 41, (20, 20))
    path = write_layer(tmp_path / "C027.hdf5", frames, np.zeros(5, int), np.array([[500.0, 90]]))
    x, _ = LPBFReader(path, preprocess=Preprocess(frames=8)).sample(0)
    black = np.float32(-0.45 / 0.225)
    assert (x[0, 5:] == black).all()
    assert (x[0, :5, 20, 20] > 2).all()


def test_non_contiguous_lines_fall_back_to_a_sorted_gather(tmp_path):
    frames = np.stack([np.full((8, 8), v, dtype=np.uint8) for v in range(10)])
    sli = np.array([0, 0, 1, 1, 0, 1, -1, 2, 2, 0])
    path = write_layer(tmp_path / "C027.hdf5", frames, sli, np.ones((3, 2)) * 100)
    reader = LPBFReader(path)
    assert [reader.info(i).line for i in range(3)] == [0, 1, 2]
    assert reader.read_frames(0)[:, 0, 0].tolist() == [0, 1, 4, 9]
    assert reader.read_frames(1)[:, 0, 0].tolist() == [2, 3, 5]
    assert reader.read_frames(2)[:, 0, 0].tolist() == [7, 8]  # contiguous; -1 is no line
    assert reader.indexes[0].start.tolist() == [-1, -1, 7]


def test_memory_map_and_h5py_slices_agree(v10):
    a, b = LPBFReader(v10), LPBFReader(v10, mmap=False)
    for i in range(0, N_SAMPLES, 9):
        np.testing.assert_array_equal(a.sample(i)[0], b.sample(i)[0])
        np.testing.assert_array_equal(a.read_frames(i), b.read_frames(i))


def test_object_split_is_disjoint_and_uses_the_papers_held_out_objects(v11):
    test = LPBFReader(v11, selection=Selection(split="test"))
    train = LPBFReader(v11, selection=Selection(split="train"))
    assert test.objects == ["C029", "C032"]
    assert train.objects == ["C027", "C028", "C030", "C031"]
    assert len(test) + len(train) == N_SAMPLES


def test_fraction_split_is_disjoint_seeded_and_stable_under_selection(v11):
    def keys(**kw):
        r = LPBFReader(v11, selection=Selection(test_fraction=0.3, **kw))
        return {(r.info(i).object_name, r.info(i).layer, r.info(i).line) for i in range(len(r))}

    test, train = keys(split="test", seed=1), keys(split="train", seed=1)
    assert test and train and not test & train and len(test | train) == N_SAMPLES
    assert keys(split="test", seed=1) == test
    assert keys(split="test", seed=2) != test
    assert keys(split="test", seed=1, objects=("C028",)) == {k for k in test if k[0] == "C028"}


def test_object_and_layer_selection(v10):
    r = LPBFReader(v10, selection=Selection(objects=("C027", "30")))
    assert r.objects == ["C027", "C030"] and len(r) == 2 * SMALL.layers * SMALL.lines
    last = LPBFReader(v10, selection=Selection(layers="-1:"))
    assert {last.info(i).layer for i in range(len(last))} == {2}
    first = LPBFReader(v10, selection=Selection(layers="1"))
    assert {first.info(i).layer for i in range(len(first))} == {1}
    with pytest.raises(ValueError, match="C099"):
        LPBFReader(v10, selection=Selection(objects=("C099",)))
    with pytest.raises(ValueError, match="matches no sample"):
        LPBFReader(v10, selection=Selection(layers="5:"))
    with pytest.raises(ValueError, match="layers must be"):
        Selection(layers="a:b")


def test_test_split_without_held_out_objects_is_an_error(tmp_path):
    folder = make(tmp_path, "v1.1", objects=2)  # C027, C028
    with pytest.raises(ValueError, match="held-out"):
        LPBFReader(folder, selection=Selection(split="test"))
    assert len(LPBFReader(folder, selection=Selection(split="train"))) == 2 * 2 * 6


def test_files_without_labels_give_nan_targets(tmp_path):
    folder = make(tmp_path, "v1.0", labels=False, objects=1)
    assert [p.name for p in folder.iterdir() if p.suffix == ".hdf5"] == ["RAISE_LPBF_test.hdf5"]
    reader = LPBFReader(folder)
    x, y = reader.sample(0)
    assert np.isnan(y).all() and np.isfinite(x).all()
    assert not reader.indexes[0].has_labels


def _read_in_child(reader, queue):
    queue.put((os.getpid(), reader.sample(1)[0].sum().item()))


def test_forked_and_unpickled_readers_reopen(v10):
    reader = LPBFReader(v10)
    expected = reader.sample(1)[0].sum().item()  # parent opened the file before forking
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(reader, queue))
    child.start()
    pid, value = queue.get(timeout=30)
    child.join(timeout=30)
    assert pid != os.getpid() and value == pytest.approx(expected)
    # The parent holds an open h5py file, which cannot be pickled: dumps succeeding shows the
    # reader travels without its handles, and the clone opens the file again to read.
    clone = pickle.loads(pickle.dumps(reader))
    assert clone.sample(1)[0].sum().item() == pytest.approx(expected)
    reader.close()
    assert reader.sample(1)[0].sum().item() == pytest.approx(expected)  # reopens


def test_a_file_changed_after_indexing_is_refused(tmp_path):
    folder = make(tmp_path, "v1.1", objects=1)
    reader = LPBFReader(folder)
    path = next(folder.glob("*.hdf5"))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(DataError, match="changed"):
        reader.sample(0)


def test_synth_spec_and_selection_validate_arguments():
    with pytest.raises(ValueError, match="layout"):
        SynthSpec(layout="v2")
    with pytest.raises(ValueError, match="split"):
        Selection(split="val")
    with pytest.raises(ValueError, match="frames"):
        Preprocess(frames=0)
