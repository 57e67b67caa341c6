"""The sample index of one file: every scan line's frame range and label, built once and cached.

A sample is one scan line: (object, layer, line) with the frames whose ``scan_line_index`` equals
the line. Building the index reads only ``scan_line_index`` and ``laser_params`` (small integer and
float arrays), never ``frame``; this is also where each file is validated, once, so that reading
samples later needs no checks.

Decisions:

- **Contiguity is verified, not assumed.** The published description (docs/data-format.md, "Scan
  lines: the samples") only infers that a line's frames are contiguous in time. For each line the
  index records ``[start, stop)`` and whether exactly those frames carry the line (the positions of
  a line's frames, sorted, span ``count`` frames). Lines that are not contiguous keep the sorted
  frame positions in ``gather`` and are read with one increasing index list (h5py needs increasing
  indices; ~100x slower, so the exception).
- **Negative ``scan_line_index`` values** are read as "frame belongs to no line" (an inference:
  frames between lines when the laser jumps) and ignored. Lines without any frame are not samples.
- **Validation** (each a ``DataError`` naming file, group and dataset): missing ``frame`` or
  ``scan_line_index``, ``frame`` not ``(N, H, W)`` uint8, an empty layer, ``scan_line_index`` not
  1-D integers of length N, ``laser_params`` not ``(rows, 2)``, fewer label rows than lines, NaN,
  infinite or negative labels on a line that has frames. Files without ``laser_params`` are valid
  (the label-free test file); their targets are NaN.
- **Cache**: one ``.npz`` per data file, keyed on (absolute path, size, mtime_ns, index format
  version); any difference rebuilds it. Default location: beside the data as
  ``<file>.h2e-index.npz`` when that folder is writable, else ``~/.cache/hpc2edge/index``. A cache
  that cannot be written is only a warning: the index is still returned. (On a file system with
  coarse timestamps, a rewrite of the same size within one tick goes unnoticed: delete the cache
  or pass ``use_cache=False`` after editing files in place.)
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpc2edge.data import layout as lay
from hpc2edge.errors import DataError
from hpc2edge.util.filemodes import default_file_mode
from hpc2edge.util.files import write_atomic

log = logging.getLogger(__name__)

#: Bump when the index content or its meaning changes: old caches are then rebuilt.
INDEX_FORMAT = 1
CACHE_SUFFIX = ".h2e-index.npz"

_LINE_ARRAYS = ("group", "line", "start", "stop", "gather_lo", "gather_hi", "speed_mm_s", "power_w")
_GROUP_ARRAYS = ("group_layer", "group_frames", "group_height", "group_width")


@dataclass(frozen=True, eq=False)
class FileIndex:
    """Index of one file. Per-group arrays are indexed by ``group``; per-line arrays align.

    Attributes:
        path: absolute path of the data file.
        layout: ``"v1.0"`` or ``"v1.1"``.
        size_bytes, mtime_ns: the file's stat when indexed (the cache key).
        group_paths, group_objects: per layer group, its path inside the file and object name.
        group_layer, group_frames, group_height, group_width: layer number, frames N, H, W.
        group, line, start, stop: per sample, its group, line number and frame range.
        gather_lo, gather_hi: ``[lo, hi)`` into ``gather`` for non-contiguous lines, else -1.
        speed_mm_s, power_w: labels (NaN when the layer has no ``laser_params``).
        gather: sorted frame positions of the non-contiguous lines, concatenated.
    """

    path: str
    layout: str
    size_bytes: int
    mtime_ns: int
    group_paths: tuple[str, ...]
    group_objects: tuple[str, ...]
    arrays: dict[str, np.ndarray]

    def __getattr__(self, name: str) -> np.ndarray:
        # Arrays are reached as attributes (index.start) but kept in one dict for (de)serialising.
        try:
            return self.__dict__["arrays"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __len__(self) -> int:
        return int(self.arrays["line"].shape[0])

    def key(self) -> dict[str, Any]:
        """The cache key this index was built under (see :func:`cache_key`)."""
        return {
            "format": INDEX_FORMAT,
            "path": self.path,
            "size": self.size_bytes,
            "mtime_ns": self.mtime_ns,
        }

    @property
    def has_labels(self) -> bool:
        return bool(np.isfinite(self.arrays["speed_mm_s"]).any())


def cache_key(path: Path) -> dict[str, Any]:
    """The values a cached index must match to be reused."""
    st = path.stat()
    return {
        "format": INDEX_FORMAT,
        "path": str(path.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
    }


def default_cache_dir() -> Path:
    """``~/.cache/hpc2edge/index``: used when the data's folder is not writable."""
    return Path.home() / ".cache" / "hpc2edge" / "index"


def cache_path(path: Path, cache_dir: Path | None = None) -> Path:
    """Where the index of ``path`` is cached (see the module docstring for the rule)."""
    path = path.resolve()
    if cache_dir is None and os.access(path.parent, os.W_OK):
        return path.with_name(path.name + CACHE_SUFFIX)
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    return (cache_dir or default_cache_dir()) / f"{path.name}-{digest}{CACHE_SUFFIX}"


def _check_labels(path: Path, group: str, labels: np.ndarray, lines: np.ndarray) -> None:
    bad_nan = ~np.isfinite(labels).all(axis=1)
    bad_neg = (labels < 0).any(axis=1)
    for bad, what in ((bad_nan, "NaN or infinite"), (bad_neg, "negative")):
        if bad.any():
            first = int(lines[np.argmax(bad)])
            raise DataError(
                f"{lay.where(path, group, lay.LASER_PARAMS)}: {what} label on {int(bad.sum())} "
                f"line(s), first line {first}: {labels[np.argmax(bad)].tolist()}"
            )


def _index_group(f: Any, path: Path, group: str) -> dict[str, Any]:
    frame = lay.dataset(f, path, group, lay.FRAME)
    if frame.ndim != 3:
        raise DataError(f"{lay.where(path, group, lay.FRAME)}: shape {frame.shape}, need (N, H, W)")
    if frame.dtype != np.uint8:
        raise DataError(f"{lay.where(path, group, lay.FRAME)}: dtype {frame.dtype}, need uint8")
    n_frames = int(frame.shape[0])
    if n_frames == 0:
        raise DataError(f"{lay.where(path, group, lay.FRAME)}: empty layer (0 frames)")
    sli_ds = lay.dataset(f, path, group, lay.SCAN_LINE_INDEX)
    if sli_ds.ndim != 1 or sli_ds.dtype.kind not in "iu":
        raise DataError(
            f"{lay.where(path, group, lay.SCAN_LINE_INDEX)}: shape {sli_ds.shape} dtype "
            f"{sli_ds.dtype}, need 1-D integers"
        )
    if sli_ds.shape[0] != n_frames:
        raise DataError(
            f"{lay.where(path, group, lay.SCAN_LINE_INDEX)}: length {sli_ds.shape[0]} != "
            f"{n_frames} frames"
        )
    sli = np.asarray(sli_ds[()], dtype=np.int64)
    order = np.argsort(sli, kind="stable")  # stable: a line's positions come out increasing
    ordered = sli[order]
    first_valid = int(np.searchsorted(ordered, 0))
    if first_valid == n_frames:
        raise DataError(f"{lay.where(path, group, lay.SCAN_LINE_INDEX)}: no frame is on a line")
    lines, firsts, counts = np.unique(ordered[first_valid:], return_index=True, return_counts=True)
    firsts = firsts + first_valid
    lo = order[firsts]
    hi = order[firsts + counts - 1]
    contiguous = hi - lo + 1 == counts
    gather_parts = [
        order[a : a + c] for a, c, ok in zip(firsts, counts, contiguous, strict=True) if not ok
    ]

    lp = lay.dataset(f, path, group, lay.LASER_PARAMS, required=False)
    if lp is None:
        labels = np.full((lines.size, 2), np.nan)
    else:
        if lp.ndim != 2 or lp.shape[1] != 2 or lp.dtype.kind not in "iuf":
            raise DataError(
                f"{lay.where(path, group, lay.LASER_PARAMS)}: shape {lp.shape} dtype {lp.dtype}, "
                "need (lines, 2) numbers [speed, power]"
            )
        n_lines = int(lines[-1]) + 1
        if lp.shape[0] < n_lines:
            raise DataError(
                f"{lay.where(path, group, lay.LASER_PARAMS)}: {lp.shape[0]} label rows for "
                f"{n_lines} lines (scan_line_index reaches {n_lines - 1})"
            )
        labels = np.asarray(lp[()], dtype=np.float64)[lines]
        _check_labels(path, group, labels, lines)
    return {
        "n_frames": n_frames,
        "height": int(frame.shape[1]),
        "width": int(frame.shape[2]),
        "line": lines,
        "start": np.where(contiguous, lo, -1),
        "stop": np.where(contiguous, hi + 1, -1),
        "contiguous": contiguous,
        "gather_parts": gather_parts,
        "labels": labels,
    }


def build(path: Path) -> FileIndex:
    """Validate ``path`` and build its index (reads no ``frame`` data).

    Raises:
        DataError: the file is missing, not HDF5, not a RAISE-LPBF layout, or malformed.
    """
    path = path.resolve()
    key = cache_key(path) if path.is_file() else None
    with lay.open_file(path) as f:
        fl = lay.detect(f, path)
        per_group = [_index_group(f, path, g.group_path) for g in fl.groups]
    cols: dict[str, list[np.ndarray]] = {k: [] for k in _LINE_ARRAYS}
    gather: list[np.ndarray] = []
    n_gather = 0
    for gi, info in enumerate(per_group):
        n = info["line"].size
        cols["group"].append(np.full(n, gi, dtype=np.int32))
        cols["line"].append(info["line"])
        cols["start"].append(info["start"])
        cols["stop"].append(info["stop"])
        glo = np.full(n, -1, dtype=np.int64)
        ghi = np.full(n, -1, dtype=np.int64)
        for pos, part in zip(
            np.flatnonzero(~info["contiguous"]), info["gather_parts"], strict=True
        ):
            glo[pos], ghi[pos] = n_gather, n_gather + part.size
            n_gather += part.size
            gather.append(part)
        cols["gather_lo"].append(glo)
        cols["gather_hi"].append(ghi)
        cols["speed_mm_s"].append(info["labels"][:, 0])
        cols["power_w"].append(info["labels"][:, 1])
    arrays = {k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()}
    for k in ("line", "start", "stop", "gather_lo", "gather_hi"):
        arrays[k] = arrays[k].astype(np.int64)
    arrays["group"] = arrays["group"].astype(np.int32)
    arrays["gather"] = np.concatenate(gather) if gather else np.zeros(0, dtype=np.int64)
    arrays["group_layer"] = np.array([g.layer for g in fl.groups], dtype=np.int64)
    for name, field in (("group_frames", "n_frames"), ("group_height", "height")):
        arrays[name] = np.array([i[field] for i in per_group], dtype=np.int64)
    arrays["group_width"] = np.array([i["width"] for i in per_group], dtype=np.int64)
    assert key is not None
    return FileIndex(
        path=str(path),
        layout=fl.layout,
        size_bytes=int(key["size"]),
        mtime_ns=int(key["mtime_ns"]),
        group_paths=tuple(g.group_path for g in fl.groups),
        group_objects=tuple(g.object_name for g in fl.groups),
        arrays=arrays,
    )


def save(index: FileIndex, target: Path) -> None:
    """Write ``index`` to ``target`` atomically (temporary file, then rename)."""
    meta = {
        "key": index.key(),
        "layout": index.layout,
        "group_paths": list(index.group_paths),
        "group_objects": list(index.group_objects),
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    payload: dict[str, Any] = {"meta": np.array(json.dumps(meta)), **index.arrays}
    np.savez(buffer, **payload)
    write_atomic(target, buffer.getvalue(), mode=default_file_mode())  # as open() would


def load(target: Path, key: dict[str, Any]) -> FileIndex | None:
    """Read a cached index; ``None`` when absent, unreadable or its key differs from ``key``."""
    try:
        with np.load(target, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            if meta.get("key") != key:
                return None
            arrays = {k: npz[k] for k in npz.files if k != "meta"}
    except (OSError, ValueError, KeyError):
        return None
    if any(k not in arrays for k in (*_LINE_ARRAYS, *_GROUP_ARRAYS, "gather")):
        return None
    return FileIndex(
        path=key["path"],
        layout=meta["layout"],
        size_bytes=int(key["size"]),
        mtime_ns=int(key["mtime_ns"]),
        group_paths=tuple(meta["group_paths"]),
        group_objects=tuple(meta["group_objects"]),
        arrays=arrays,
    )


def load_or_build(
    path: Path, *, cache_dir: Path | None = None, use_cache: bool = True
) -> FileIndex:
    """The index of ``path``: from the cache when its key matches, else built (and cached).

    Args:
        path: one data file.
        cache_dir: where to keep caches; ``None`` means beside the data, else the user cache.
        use_cache: ``False`` always builds and writes nothing.
    """
    path = path.resolve()
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if not use_cache:
        return build(path)
    target = cache_path(path, cache_dir)
    key = cache_key(path)
    cached = load(target, key)
    if cached is not None:
        return cached
    index = build(path)
    try:
        save(index, target)
    except OSError as exc:
        log.warning("could not write the index cache %s: %s", target, exc)
    return index
