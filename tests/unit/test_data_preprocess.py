"""The paper's preprocessing in numpy: centre, window, crop, normalisation, resize."""

from __future__ import annotations

import numpy as np
import pytest

from hpc2edge.data import Preprocess, normalise_targets, preprocess_line
from hpc2edge.data.preprocess import crop_window, melt_pool_centre, resize, window_start

pytestmark = pytest.mark.unit


def test_centre_is_the_argmax_of_the_mean_frame_even_for_long_lines():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 200, (700, 16, 16), dtype=np.uint8)  # > 257: blockwise sum
    frames[:, 3, 11] = 255
    assert melt_pool_centre(frames) == (3, 11)
    frames[5, 0, 0] = 255  # one bright spatter frame does not move the centre
    assert melt_pool_centre(frames) == (3, 11)


@pytest.mark.parametrize(("n_frames", "expected"), [(16, 0), (10, 0), (17, 0), (18, 1), (116, 50)])
def test_evaluation_window_is_centred(n_frames, expected):
    assert window_start(n_frames, Preprocess(), None) == expected


def test_training_window_keeps_the_margin_when_it_can():
    spec = Preprocess(frames=16, margin_frames=15)
    rng = np.random.default_rng(1)
    starts = {window_start(100, spec, rng) for _ in range(500)}
    assert min(starts) == 15 and max(starts) == 100 - 16 - 15
    short = {window_start(24, spec, rng) for _ in range(200)}  # margin shrinks to 4
    assert short == {4}
    assert window_start(10, spec, rng) == 0


def test_crop_pads_black_at_borders():
    frames = np.arange(25, dtype=np.uint8).reshape(1, 5, 5) + 1
    out = crop_window(frames, (0, 4), 3, length=2)
    assert out.shape == (2, 3, 3)
    assert out[0].tolist() == [[0, 0, 0], [4, 5, 0], [9, 10, 0]]
    assert (out[1] == 0).all()


def test_normalisation_and_output_layout():
    frames = np.full((20, 61, 61), 200, dtype=np.uint8)
    frames[:, 30, 30] = 255
    x = preprocess_line(frames, Preprocess(frames=16))
    assert x.shape == (1, 16, 41, 41) and x.dtype == np.float32
    assert x[0, :, 20, 20] == pytest.approx((1.0 - 0.45) / 0.225, rel=1e-6)
    x[0, :, 20, 20] = (200 / 255 - 0.45) / 0.225
    np.testing.assert_allclose(x, (200 / 255 - 0.45) / 0.225, rtol=1e-6)


@pytest.mark.parametrize("size", [41, 64, 112, 224, 20])
def test_resize_matches_torch_bilinear(size):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(2).random((4, 41, 41), dtype=np.float32)
    ours = resize(x, size)
    theirs = torch.nn.functional.interpolate(
        torch.from_numpy(x)[None], size=(size, size), mode="bilinear", align_corners=False
    )[0].numpy()
    assert ours.shape == (4, size, size) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_targets_are_normalised_and_keep_nan():
    np.testing.assert_allclose(normalise_targets(900.0, 215.0), [1.0, 1.0])
    y = normalise_targets(np.array([450.0, np.nan]), np.array([107.5, np.nan]))
    assert y.shape == (2, 2) and y.dtype == np.float32
    np.testing.assert_allclose(y[0], [0.5, 0.5])
    assert np.isnan(y[1]).all()
