"""The synthetic generator: structure, determinism, physics, and a learnable signal."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from hpc2edge.data import LPBFReader, Selection, SynthSpec, generate, render_layer
from hpc2edge.data.synth import CAMERA_FPS, _melt_pool
from tests.data.fixtures import SMALL, make

pytestmark = pytest.mark.unit


def test_layouts_and_file_names(tmp_path):
    v11 = make(tmp_path, "v1.1", objects=3)
    assert sorted(p.name for p in v11.glob("*.hdf5")) == ["C027.hdf5", "C028.hdf5", "C029.hdf5"]
    with h5py.File(v11 / "C028.hdf5") as f:
        assert sorted(f) == ["layer0001", "layer0002"]
        layer = f["layer0002"]
        assert layer["frame"].dtype == np.uint8 and layer["frame"].shape[1:] == (32, 32)
        assert layer["laser_params"].shape == (6, 2)
        assert layer["scan_line_index"].shape == layer["frame"].shape[:1]
    v10 = make(tmp_path, "v1.0", objects=2)
    with h5py.File(v10 / "RAISE_LPBF_train.hdf5") as f:
        assert sorted(f) == ["C027", "C028"] and sorted(f["C027"]) == ["layer0001", "layer0002"]


def test_refuses_to_overwrite_without_permission(tmp_path):
    spec = SynthSpec(objects=1, layers=1, lines=1, frame_size=16, line_length_mm=0.5)
    generate(tmp_path, spec)
    with pytest.raises(FileExistsError):
        generate(tmp_path, spec)
    generate(tmp_path, spec, overwrite=True)


def test_seeded_and_deterministic(tmp_path):
    a = make(tmp_path / "a", "v1.0", objects=2)
    b = make(tmp_path / "b", "v1.0", objects=2)
    c = make(tmp_path / "c", "v1.0", objects=2, seed=8)
    name = "RAISE_LPBF_train.hdf5"
    assert (a / name).read_bytes() == (b / name).read_bytes()
    with h5py.File(a / name) as fa, h5py.File(c / name) as fc:
        assert not np.array_equal(
            fa["C027/layer0001/laser_params"], fc["C027/layer0001/laser_params"]
        )
    # A layer does not depend on how many objects were generated around it.
    small = render_layer(SMALL, 28, 2)
    other = render_layer(SynthSpec(**{**SMALL.__dict__, "objects": 1, "lines": 6}), 28, 2)
    np.testing.assert_array_equal(small.frames, other.frames)


def test_frames_per_line_follow_the_camera_rate():
    spec = SynthSpec(objects=1, layers=1, lines=30, frame_size=16, line_length_mm=2.0)
    layer = render_layer(spec, 27, 1)
    counts = np.bincount(layer.scan_line_index)
    length_mm = counts * layer.laser_params[:, 0] / CAMERA_FPS
    assert (length_mm > 0.5 * 2.0 - 0.05).all() and (length_mm < 2.0 + 0.05).all()
    assert np.corrcoef(counts, 1 / layer.laser_params[:, 0])[0, 1] > 0.5


def test_dim_frames_at_line_ends_and_brightness_saturates():
    spec = SynthSpec(
        objects=1,
        layers=1,
        lines=4,
        frame_size=32,
        line_length_mm=2.0,
        power_w=(214.0, 215.0),
        speed_mm_s=(400.0, 500.0),
        spatter_per_frame=0.0,
    )
    layer = render_layer(spec, 27, 1)
    frames = layer.frames[layer.scan_line_index == 0]
    peaks = frames.reshape(len(frames), -1).max(axis=1)
    assert peaks[0] < peaks[len(frames) // 2] and peaks[-1] < peaks[len(frames) // 2]
    assert peaks[len(frames) // 2] == 255  # 215 W saturates the sensor


def test_melt_pool_width_grows_with_power_over_speed_and_tail_with_speed():
    centre = np.array([32.0, 32.0])

    def width(power_w, speed_mm_s):
        pool = _melt_pool(64, centre, 0.0, speed_mm_s, power_w)
        return int((pool[:, 32] > pool.max() / 2).sum())  # across the scan direction

    def tail(speed_mm_s, power_w=100.0):
        pool = _melt_pool(64, centre, 0.0, speed_mm_s, power_w)
        behind = pool[32, :32] / pool.max()
        return int((behind > 0.2).sum())

    assert width(200, 300) > width(100, 300) > width(100, 900)
    assert tail(900, 300) > tail(300, 100)  # same P/v, faster -> longer tail


def _features(reader):
    """Simple image features of each sample's window mean: peak, mass, spread, areas."""
    yy, xx = np.mgrid[0:41, 0:41]
    rows = []
    for i in range(len(reader)):
        x, _ = reader.sample(i)
        m = ((x[0] * 0.225 + 0.45) * 255).mean(axis=0)
        w = np.clip(m - np.median(m), 0, None)
        mass = w.sum() + 1e-6
        cy, cx = (w * yy).sum() / mass, (w * xx).sum() / mass
        cyy, cxx = (w * (yy - cy) ** 2).sum() / mass, (w * (xx - cx) ** 2).sum() / mass
        cxy = (w * (yy - cy) * (xx - cx)).sum() / mass
        spread = np.sqrt(np.clip(np.linalg.eigvalsh([[cyy, cxy], [cxy, cxx]]), 0, None))
        areas = [(m > t).sum() for t in (40, 80, 120, 160, 200, 240)]
        rows.append([m.max(), mass / 1000, *spread, *areas])
    return np.asarray(rows, dtype=float)


def test_ridge_on_simple_features_beats_the_constant_by_2x_on_held_out_objects(tmp_path):
    spec = SynthSpec(objects=8, layers=2, lines=20, frame_size=64, line_length_mm=1.0, seed=3)
    generate(tmp_path, spec)
    train = LPBFReader(tmp_path, selection=Selection(split="train"))
    test = LPBFReader(tmp_path, selection=Selection(split="test"))
    assert test.objects == ["C029", "C032"] and not set(train.objects) & set(test.objects)
    f_train, f_test = _features(train), _features(test)
    y_train, y_test = train.targets(), test.targets()
    mu, sd = f_train.mean(axis=0), f_train.std(axis=0) + 1e-9

    def design(f):  # standardised features and their pairwise products, plus a bias
        z = (f - mu) / sd
        pairs = [z[:, i] * z[:, j] for i in range(z.shape[1]) for j in range(i, z.shape[1])]
        return np.column_stack([np.ones(len(z)), z, *pairs])

    a = design(f_train)
    ridge = 1.0
    # Ridge as least squares on the design stacked over sqrt(lambda) * I (bias penalised too:
    # harmless here, and it keeps this a single lstsq call).
    a_aug = np.vstack([a, np.sqrt(ridge) * np.eye(a.shape[1])])
    y_aug = np.vstack([y_train, np.zeros((a.shape[1], 2))])
    weights = np.linalg.lstsq(a_aug, y_aug, rcond=None)[0]
    rmse = float(np.sqrt(((design(f_test) @ weights - y_test) ** 2).mean()))
    rmse_constant = float(np.sqrt(((y_train.mean(axis=0) - y_test) ** 2).mean()))
    assert rmse * 2 <= rmse_constant, (rmse, rmse_constant)


def test_the_pool_is_drawn_at_the_cameras_magnification_not_the_frames():
    def width(size: int, pixel_um: float) -> int:
        c = size / 2.0
        pool = _melt_pool(size, np.array([c, c]), 0.0, 500.0, 120.0, pixel_um)
        return int((pool[:, size // 2] > pool.max() / 2).sum())

    assert width(32, 20.0) == width(64, 20.0) == width(128, 20.0)  # the field of view only
    assert width(64, 10.0) >= 2 * width(64, 20.0) - 1  # twice the magnification


def test_the_scene_streams_past_at_the_scan_speed():
    # Frame-to-frame change of the scene grows with the speed; no scene, no such cue.
    def motion(scene_grey: float) -> tuple[np.ndarray, np.ndarray]:
        spec = SynthSpec(objects=1, layers=1, lines=24, frame_size=32, line_length_mm=1.0,
                         spatter_per_frame=0.0, scene_grey=scene_grey, seed=5)  # fmt: skip
        layer = render_layer(spec, 27, 1)
        change = []
        for i in range(spec.lines):
            f = layer.frames[layer.scan_line_index == i].astype(np.float64)
            middle = f[spec.dim_frames : len(f) - spec.dim_frames]  # the laser at full power
            change.append(np.abs(np.diff(middle, axis=0)).mean())
        return np.asarray(change), layer.laser_params[:, 0]

    change, speed = motion(60.0)
    assert np.corrcoef(change, speed)[0, 1] > 0.9
    dark, _ = motion(0.0)
    assert dark.max() < change.min()  # noise and flicker alone move less than the slowest scene
    with pytest.raises(ValueError, match="pixel_um"):
        SynthSpec(pixel_um=0.0)
    with pytest.raises(ValueError, match="scene_grey"):
        SynthSpec(scene_contrast=-1.0)
