"""RAISE-LPBF-Laser data: a fast HDF5 reader, a synthetic generator, the ``data`` CLI.

Modules, one concept each:

- :mod:`~hpc2edge.data.layout`: the v1.0 / v1.1 layouts, opening files, ``DataError`` messages;
- :mod:`~hpc2edge.data.index`: the per-file sample index, its validation and cache;
- :mod:`~hpc2edge.data.selection`: objects, layers, train/test splits;
- :mod:`~hpc2edge.data.preprocess`: the paper's crop / window / normalise / resize;
- :mod:`~hpc2edge.data.centres`: crop centres shared by all processes reading a file;
- :mod:`~hpc2edge.data.reader`: :class:`LPBFReader`, samples as numpy arrays;
- :mod:`~hpc2edge.data.synth`: synthetic files with the real structure and learnable physics;
- :mod:`~hpc2edge.data.dataset`: :class:`LPBFDataset`, the PyTorch view (the only torch import);
- :mod:`~hpc2edge.data.summary`, :mod:`~hpc2edge.cli.data`: ``hpc2edge data inspect|bench|synth``.

Importing this package (or its CLI group) reads nothing and imports neither torch nor h5py:
names are resolved on first access, so the main ``hpc2edge`` command, which registers
``hpc2edge data``, still starts on an edge device that has no h5py.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpc2edge.data.dataset import LPBFDataset
    from hpc2edge.data.index import FileIndex, load_or_build
    from hpc2edge.data.layout import LAYOUT_V10, LAYOUT_V11, expand_paths
    from hpc2edge.data.preprocess import Preprocess, normalise_targets, preprocess_line
    from hpc2edge.data.reader import LPBFReader, SampleInfo
    from hpc2edge.data.selection import DEFAULT_TEST_OBJECTS, Selection
    from hpc2edge.data.summary import summarize
    from hpc2edge.data.synth import SynthSpec, generate, render_layer

#: Public name -> the module that defines it (imported on first access).
_WHERE = {
    "LPBFDataset": "dataset",
    "FileIndex": "index",
    "load_or_build": "index",
    "LAYOUT_V10": "layout",
    "LAYOUT_V11": "layout",
    "expand_paths": "layout",
    "Preprocess": "preprocess",
    "normalise_targets": "preprocess",
    "preprocess_line": "preprocess",
    "LPBFReader": "reader",
    "SampleInfo": "reader",
    "DEFAULT_TEST_OBJECTS": "selection",
    "Selection": "selection",
    "summarize": "summary",
    "SynthSpec": "synth",
    "generate": "synth",
    "render_layer": "synth",
}

__all__ = [
    "DEFAULT_TEST_OBJECTS",
    "LAYOUT_V10",
    "LAYOUT_V11",
    "FileIndex",
    "LPBFDataset",
    "LPBFReader",
    "Preprocess",
    "SampleInfo",
    "Selection",
    "SynthSpec",
    "expand_paths",
    "generate",
    "load_or_build",
    "normalise_targets",
    "preprocess_line",
    "render_layer",
    "summarize",
]


def __getattr__(name: str) -> Any:
    # h5py and torch are heavy or absent on edge devices: import a module only when used.
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
