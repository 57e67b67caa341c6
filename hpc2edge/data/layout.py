"""The two RAISE-LPBF-Laser file layouts: finding files, opening them, walking their layer groups.

Layouts (docs/data-format.md, "Files and layouts"), detected per file from its top-level group
names:

- **v1.0**: one file holds many objects: ``C0NN/layerNNNN/{frame, scan_line_index, laser_params}``.
- **v1.1**: one file per object (``C027.hdf5``), layers at the top: ``layerNNNN/{...}``; the
  object's name is the file's stem.

Each layer group holds ``frame`` (N, H, W) uint8, ``scan_line_index`` (N,) integers and, in
labelled files, ``laser_params`` (n_lines, 2) = [speed mm/s, power W]. A file whose top level has
neither ``C…`` groups with ``layer…`` groups inside nor ``layer…`` groups is refused with a
``DataError`` rather than guessed at.

Every foreign failure (missing file, not HDF5, h5py ``OSError``/``KeyError``) is translated here
into :class:`~hpc2edge.errors.DataError` whose message names the file, the group and the dataset,
so a user with a terabyte of data learns *where* a file is broken, never a bare ``KeyError``.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py

from hpc2edge.errors import DataError

#: Layout names as reported by ``inspect`` and accepted by the generator.
LAYOUT_V10 = "v1.0"
LAYOUT_V11 = "v1.1"
LAYOUTS = (LAYOUT_V10, LAYOUT_V11)

#: File suffixes taken when a directory is given.
HDF5_SUFFIXES = (".hdf5", ".h5", ".hdf")
#: Our cache files beside the data (``<file>.h2e-index.npz``, ``….h2e-centres.npy``) carry this;
#: a glob such as ``data/*`` must not hand them to the reader as data.
CACHE_MARKER = ".h2e-"

FRAME = "frame"
SCAN_LINE_INDEX = "scan_line_index"
LASER_PARAMS = "laser_params"

_OBJECT_RE = re.compile(r"^C\d+$")
_LAYER_RE = re.compile(r"^layer(\d+)$")


@dataclass(frozen=True)
class LayerGroup:
    """One ``layerNNNN`` group of one object inside one file."""

    object_name: str
    layer: int
    group_path: str  # absolute path inside the file, e.g. "/C027/layer0003" or "/layer0003"


@dataclass(frozen=True)
class FileLayout:
    """What one file holds, before any dataset is read."""

    path: Path
    layout: str
    groups: tuple[LayerGroup, ...]


def where(path: Path | str, group: str | None = None, dataset: str | None = None) -> str:
    """The "file, group, dataset" prefix of every ``DataError`` message."""
    parts = [str(path)]
    if group is not None:
        parts.append(f"group {group!r}")
    if dataset is not None:
        parts.append(f"dataset {dataset!r}")
    return ": ".join(parts)


def expand_paths(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """Resolve one path or several files, directories and globs into a sorted list of files.

    A directory contributes its HDF5 files (by suffix, not recursive); a glob its matches.

    Raises:
        DataError: a named file does not exist, or nothing matched at all.
    """
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    found: list[Path] = []
    for item in items:
        text = str(item)
        if glob.has_magic(text):
            matches = sorted(Path(m) for m in glob.glob(text))
            if not matches:
                raise DataError(f"{text}: no file matches this pattern")
            found.extend(m for m in matches if m.is_file() and CACHE_MARKER not in m.name)
            continue
        path = Path(text)
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.suffix in HDF5_SUFFIXES and p.is_file())
            if not inside:
                raise DataError(
                    f"{path}: directory holds no HDF5 file ({', '.join(HDF5_SUFFIXES)})"
                )
            found.extend(inside)
        elif path.is_file():
            found.append(path)
        else:
            raise DataError(f"{path}: no such file")
    unique = sorted({p.resolve() for p in found})
    if not unique:
        raise DataError(f"{', '.join(map(str, items))}: no HDF5 file found")
    return unique


def open_file(path: Path) -> h5py.File:
    """Open an HDF5 file read-only, translating every failure into a ``DataError``."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        is_hdf5 = h5py.is_hdf5(str(path))
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None
    if not is_hdf5:
        raise DataError(f"{path}: not an HDF5 file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: cannot be opened as HDF5 ({exc})") from None


def _layer_groups(node: h5py.Group, object_name: str) -> list[LayerGroup]:
    out = []
    for key in node:
        match = _LAYER_RE.match(key)
        if match and isinstance(node[key], h5py.Group):
            path = f"{node.name.rstrip('/')}/{key}"
            out.append(LayerGroup(object_name, int(match.group(1)), path))
    return out


def detect(f: h5py.File, path: Path) -> FileLayout:
    """Detect the layout of an open file and list its layer groups, sorted by object and layer.

    Raises:
        DataError: the top level fits neither layout, or a file mixes both.
    """
    keys = list(f.keys())
    objects = [k for k in keys if _OBJECT_RE.match(k) and isinstance(f[k], h5py.Group)]
    layers = [k for k in keys if _LAYER_RE.match(k)]
    if objects and layers:
        raise DataError(f"{where(path)}: mixes object groups (C…) and layer groups at the top")
    if layers:
        groups = _layer_groups(f, path.stem)
        layout = LAYOUT_V11
    elif objects:
        groups = []
        for name in objects:
            inside = _layer_groups(f[name], name)
            if not inside:
                raise DataError(f"{where(path, '/' + name)}: object group holds no layerNNNN group")
            groups.extend(inside)
        layout = LAYOUT_V10
    else:
        shown = ", ".join(keys[:5]) or "nothing"
        raise DataError(
            f"{where(path)}: not a RAISE-LPBF file: expected C0NN/layerNNNN (v1.0) or "
            f"layerNNNN (v1.1) groups at the top, found {shown}"
        )
    groups.sort(key=lambda g: (g.object_name, g.layer))
    return FileLayout(path=path, layout=layout, groups=tuple(groups))


def dataset(f: h5py.File, path: Path, group: str, name: str, *, required: bool = True) -> Any:
    """Return ``f[group][name]`` as an h5py dataset, or ``None`` when optional and absent.

    Raises:
        DataError: the dataset is missing (and required) or is not a dataset.
    """
    node = f[group]
    if name not in node:
        if required:
            raise DataError(f"{where(path, group, name)}: missing dataset")
        return None
    obj = node[name]
    if not isinstance(obj, h5py.Dataset):
        raise DataError(f"{where(path, group, name)}: is a group, not a dataset")
    return obj


def layouts_of(files: Sequence[FileLayout]) -> list[str]:
    """The distinct layouts among ``files``, in order of first appearance."""
    return list(dict.fromkeys(fl.layout for fl in files))
