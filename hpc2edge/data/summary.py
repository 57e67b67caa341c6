"""What a set of files holds (``hpc2edge data inspect``) and how fast we read it (``data bench``).

Both work from the sample index, so inspecting a terabyte of data reads no frame.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from hpc2edge.data import index as idx
from hpc2edge.data import layout as lay
from hpc2edge.data.reader import LPBFReader


def _range(values: np.ndarray) -> list[float] | None:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    return [round(float(finite.min()), 3), round(float(finite.max()), 3)]


def summarize(
    paths: str | Path | Iterable[str | Path], *, cache_dir: Path | None = None
) -> dict[str, Any]:
    """Layout, objects, layers, lines, frames, frame sizes, label ranges and bytes of ``paths``.

    Raises:
        DataError: a file is missing or malformed.
    """
    files = lay.expand_paths(paths)
    indexes = [idx.load_or_build(p, cache_dir=cache_dir) for p in files]
    objects: dict[str, set[int]] = {}
    sizes: set[tuple[int, int]] = set()
    contiguous = lines = frames = 0
    for ix in indexes:
        for name, layer in zip(ix.group_objects, ix.group_layer.tolist(), strict=True):
            objects.setdefault(name, set()).add(int(layer))
        sizes.update(zip(ix.group_height.tolist(), ix.group_width.tolist(), strict=True))
        lines += len(ix)
        frames += int(ix.group_frames.sum())
        contiguous += int((ix.start >= 0).sum())
    speed = np.concatenate([ix.speed_mm_s for ix in indexes])
    power = np.concatenate([ix.power_w for ix in indexes])
    all_layers = sorted(set().union(*objects.values()))
    labelled = int(np.isfinite(speed).sum())
    return {
        "files": [ix.path for ix in indexes],
        "layouts": list(dict.fromkeys(ix.layout for ix in indexes)),
        "objects": sorted(objects),
        "layers": sum(len(v) for v in objects.values()),
        "layer_numbers": [all_layers[0], all_layers[-1]] if all_layers else None,
        "lines": lines,
        "lines_contiguous": contiguous,
        "lines_labelled": labelled,
        "frames": frames,
        "frames_per_line_mean": round(frames / lines, 1) if lines else 0.0,
        "frame_sizes": [list(s) for s in sorted(sizes)],
        "speed_mm_s_range": _range(speed),
        "power_w_range": _range(power),
        "bytes": sum(ix.size_bytes for ix in indexes),
    }


def bench_reader(
    reader: LPBFReader, *, max_samples: int | None = None, warmup: int = 2, repeats: int = 1
) -> dict[str, Any]:
    """Time evaluation samples read in sequence, one process; returns samples/s and counts.

    The first ``repeats`` pass reads whole lines (the crop centre is not known yet); later
    passes read only the window, as later epochs do. Both are reported.
    """
    n = len(reader) if max_samples is None else min(max_samples, len(reader))
    for i in range(min(warmup, n)):
        reader.sample(i)  # opens the files and warms the code paths
    reader.forget_centres()  # the first timed pass then reads whole lines, like a first epoch
    passes = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        for i in range(n):
            reader.sample(i)
        passes.append(time.perf_counter() - t0)
    return {
        "samples": n,
        "samples_per_s_first_pass": n / passes[0],
        "samples_per_s_later_passes": n / min(passes[1:]) if len(passes) > 1 else None,
        "seconds": passes,
    }
