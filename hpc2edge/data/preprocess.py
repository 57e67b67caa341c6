"""The paper's preprocessing of one scan line, in numpy: crop, window, normalise, resize.

Steps (docs/data-format.md, "Preprocessing"), in this order:

1. **Crop centre**: the argmax of the line's mean frame over *all* its frames (the melt pool is
   the brightest spot on average; spatter is not, because it moves). The sum in uint32 has the
   same argmax as the mean and is exact.
2. **Temporal window** of ``frames`` (T) frames: centred in evaluation; in training uniform among
   the starts that keep ``margin_frames`` away from both ends (the dim frames at line start and
   stop), the margin shrinking when the line is too short for it. Lines shorter than T are padded
   at the end.
3. **Crop** ``crop`` x ``crop`` (41) pixels around the centre.
4. **Normalise**: ``(x / 255 - mean) / std`` with mean 0.45, std 0.225.
5. **Resize** to ``size`` (S) with bilinear interpolation, ``align_corners=False`` (what
   ``torch.nn.functional.interpolate`` does), as two small matrix products.

Padding, spatial and temporal, is with black pixels (0 *before* normalisation): outside the
sensor and beyond the line's end nothing is lit, and a padded frame then looks like the dim
frames at a line's end that the model already sees. The spatial crop is taken by slicing with
clamped bounds into a zero array, so a melt pool at the border is never shifted.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

#: Sizes the paper and our search space use; any size >= 1 works.
COMMON_SIZES = (41, 64, 112, 224)
#: Target normalisation: [speed / 900 mm/s, power / 215 W].
SPEED_SCALE_MM_S = 900.0
POWER_SCALE_W = 215.0


@dataclass(frozen=True)
class Preprocess:
    """How a line becomes a model input ``float32 [1, frames, size, size]``.

    Attributes:
        frames: temporal window T.
        size: output side S (41 keeps the native crop; 64, 112, 224 upsample).
        crop: side of the square crop around the melt pool, in source pixels.
        margin_frames: frames kept away from line ends by the random training window.
        mean, std: normalisation applied after dividing by 255.
    """

    frames: int = 16
    size: int = 41
    crop: int = 41
    margin_frames: int = 15
    mean: float = 0.45
    std: float = 0.225

    def __post_init__(self) -> None:
        problems = []
        for name in ("frames", "size", "crop"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.margin_frames < 0:
            problems.append(f"margin_frames must be >= 0, got {self.margin_frames}")
        if self.std <= 0:
            problems.append(f"std must be > 0, got {self.std}")
        if problems:
            raise ValueError("; ".join(problems))


def melt_pool_centre(frames: np.ndarray) -> tuple[int, int]:
    """(row, col) of the brightest pixel of the mean of ``frames`` ``[n, H, W]`` uint8."""
    # Summing in uint16 is ~4x faster than uint32 and exact for up to 257 frames (257 * 255 <
    # 2**16); longer lines are summed in blocks of 257 and the blocks added in uint32.
    block = 257
    if frames.shape[0] <= block:
        total = frames.sum(axis=0, dtype=np.uint16)
    else:
        total = np.zeros(frames.shape[1:], dtype=np.uint32)
        for lo in range(0, frames.shape[0], block):
            total += frames[lo : lo + block].sum(axis=0, dtype=np.uint16)
    row, col = np.unravel_index(int(np.argmax(total)), total.shape)
    return int(row), int(col)


def window_start(n_frames: int, spec: Preprocess, rng: np.random.Generator | None) -> int:
    """First frame of the window: centred when ``rng`` is None, else random within the margin."""
    spare = n_frames - spec.frames
    if spare <= 0:
        return 0
    if rng is None:
        return spare // 2
    margin = min(spec.margin_frames, spare // 2)
    return int(rng.integers(margin, spare - margin + 1))


def crop_window(
    frames: np.ndarray, centre: tuple[int, int], side: int, length: int | None = None
) -> np.ndarray:
    """``[length, side, side]`` uint8 crop centred on ``centre``, black outside the frames.

    ``length`` (default: the number of frames) pads with black frames at the end.
    """
    n, height, width = frames.shape
    top = centre[0] - side // 2
    left = centre[1] - side // 2
    out = np.zeros((max(n, length or 0), side, side), dtype=frames.dtype)
    r0, r1 = max(top, 0), min(top + side, height)
    c0, c1 = max(left, 0), min(left + side, width)
    if r0 < r1 and c0 < c1:
        out[:n, r0 - top : r1 - top, c0 - left : c1 - left] = frames[:, r0:r1, c0:c1]
    return out


@functools.lru_cache(maxsize=32)
def _bilinear_matrix(src: int, dst: int) -> np.ndarray:
    # Row i holds the weights of source pixels for output pixel i, half-pixel centres and
    # clamping as torch's bilinear with align_corners=False (and no antialiasing).
    m = np.zeros((dst, src), dtype=np.float32)
    pos = (np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5
    pos = np.clip(pos, 0.0, None)
    lo = np.minimum(np.floor(pos).astype(np.int64), src - 1)
    hi = np.minimum(lo + 1, src - 1)
    frac = (pos - lo).astype(np.float32)
    rows = np.arange(dst)
    np.add.at(m, (rows, lo), 1.0 - frac)
    np.add.at(m, (rows, hi), frac)
    m.setflags(write=False)
    return m


def resize(x: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of ``[n, h, w]`` float32 to ``[n, size, size]``."""
    n, h, w = x.shape
    if (h, w) == (size, size):
        return x
    rows = _bilinear_matrix(h, size)
    cols = _bilinear_matrix(w, size)
    # Two large GEMMs instead of n small batched ones (batched matmul is ~50x slower here):
    # columns of all frames at once, then rows with the frames laid side by side.
    wide = (x.reshape(n * h, w) @ cols.T).reshape(n, h, size)
    side = rows @ wide.transpose(1, 0, 2).reshape(h, n * size)
    return np.ascontiguousarray(side.reshape(size, n, size).transpose(1, 0, 2), dtype=np.float32)


def preprocess_window(window: np.ndarray, centre: tuple[int, int], spec: Preprocess) -> np.ndarray:
    """Crop, normalise, pad and resize an already chosen window ``[<=T, H, W]`` uint8.

    Returns:
        ``float32 [1, T, S, S]``; frames beyond ``window``'s length are black (padding).
    """
    cropped = crop_window(window[: spec.frames], centre, spec.crop, spec.frames)
    # /255, -mean, /std folded into one multiply-add, in place (this is most of an item's time).
    x = cropped.astype(np.float32)
    x *= np.float32(1.0 / (255.0 * spec.std))
    x += np.float32(-spec.mean / spec.std)
    return resize(x, spec.size)[None]


def preprocess_line(
    frames: np.ndarray,
    spec: Preprocess,
    *,
    rng: np.random.Generator | None = None,
    centre: tuple[int, int] | None = None,
) -> np.ndarray:
    """Turn all frames of one line ``[n, H, W]`` uint8 into ``float32 [1, T, S, S]``.

    Args:
        frames: every frame of the line, in time order.
        spec: the preprocessing.
        rng: ``None`` for the centred evaluation window, a generator for a random training one.
        centre: a known crop centre (skips the argmax); computed from ``frames`` when ``None``.
    """
    if frames.ndim != 3 or frames.shape[0] == 0:
        raise ValueError(f"frames must be [n>0, H, W], got {frames.shape}")
    if centre is None:
        centre = melt_pool_centre(frames)
    start = window_start(frames.shape[0], spec, rng)
    return preprocess_window(frames[start : start + spec.frames], centre, spec)


def normalise_targets(speed_mm_s: np.ndarray | float, power_w: np.ndarray | float) -> np.ndarray:
    """``float32 [..., 2]`` = [speed / 900, power / 215] (NaN stays NaN)."""
    return np.stack(
        [np.asarray(speed_mm_s) / SPEED_SCALE_MM_S, np.asarray(power_w) / POWER_SCALE_W], axis=-1
    ).astype(np.float32)
