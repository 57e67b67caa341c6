"""Helpers shared by the data tests: small generated files and hand-made malformed ones."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from hpc2edge.data import SynthSpec, generate

#: Small enough for the whole data suite to run in seconds: 6 objects (C027-C032, so the held-out
#: C029 and C032 are present), 2 layers, 6 lines, 32x32 frames, 11-67 frames per line.
SMALL = SynthSpec(objects=6, layers=2, lines=6, frame_size=32, line_length_mm=1.0, seed=7)


def make(tmp: Path, layout: str = "v1.1", **changes) -> Path:
    """Generate ``SMALL`` (with changes) into ``tmp/<layout>``; returns the folder."""
    fields = {**SMALL.__dict__, "layout": layout, **changes}
    out = tmp / layout
    generate(out, SynthSpec(**fields))
    return out


def write_layer(
    path: Path,
    frames: np.ndarray,
    scan_line_index: np.ndarray,
    laser_params: np.ndarray | None = None,
    group: str = "layer0001",
) -> Path:
    """Write one hand-made v1.1 layer (datasets exactly as given)."""
    with h5py.File(path, "a") as f:
        g = f.require_group(group)
        g.create_dataset("frame", data=frames)
        g.create_dataset("scan_line_index", data=scan_line_index)
        if laser_params is not None:
            g.create_dataset("laser_params", data=laser_params)
    return path


def blob_frames(n: int, size: int, centre: tuple[int, int], value: int = 200) -> np.ndarray:
    """``n`` dark frames with a 3x3 bright square centred on ``centre``."""
    frames = np.full((n, size, size), 5, dtype=np.uint8)
    r, c = centre
    frames[:, max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2] = value
    frames[:, r, c] = 255
    return frames
