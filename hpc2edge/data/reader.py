"""``LPBFReader``: indexed, selected, preprocessed samples of RAISE-LPBF-Laser files (h5py + numpy).

One sample is one scan line: input ``float32 [1, T, S, S]``, target ``float32 [2]`` =
[speed / 900, power / 215] (NaN when the file has no labels).

Why it is fast (``bench/loader.py`` compares it with the reference-style reader):

- the sample index is built once per file and cached (:mod:`hpc2edge.data.index`), so an item
  never reads ``scan_line_index`` again;
- a line's frames are one contiguous hyperslab ``frame[start:stop]``, not an index array;
- files stay open in the process that reads, and the ``frame`` datasets are looked up once;
- where the ``frame`` dataset is stored contiguously and unfiltered (what h5py writes by
  default, and what our generator writes), the file is memory-mapped and a line is a numpy view
  at the dataset's byte offset (``DatasetID.get_offset``): no HDF5 call per item at all. Chunked,
  compressed or external datasets fall back to the h5py slice (``mmap=False`` forces it);
- the crop centre of a line is remembered once computed, in a table shared by all processes
  and runs (:mod:`hpc2edge.data.centres`), so later epochs and DataLoader workers read only the
  T frames of the window instead of the whole line.

Process safety (h5py must not share an open file across ``fork``): files are opened lazily and
owned by the process id that opened them; a forked DataLoader worker sees a different pid and
reopens, and pickling (spawned workers) drops handles. Before its first read in a process the
reader checks that a file's size and mtime still match the index: a file changed underneath it is
a ``DataError``, never garbage.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hpc2edge.data import centres
from hpc2edge.data import index as idx
from hpc2edge.data import layout as lay
from hpc2edge.data import preprocess as pp
from hpc2edge.data.selection import Selection, select
from hpc2edge.errors import DataError


def _contiguous_offset(ds: h5py.Dataset) -> int | None:
    """Byte offset of ``ds`` in its file when it is one unfiltered contiguous block, else None."""
    plist = ds.id.get_create_plist()
    if plist.get_layout() != h5py.h5d.CONTIGUOUS or plist.get_external_count() > 0:
        return None
    if plist.get_nfilters() > 0:
        return None
    offset = ds.id.get_offset()  # None while the storage is not allocated
    return None if offset is None else int(offset)


@dataclass(frozen=True)
class SampleInfo:
    """Where one sample comes from."""

    object_name: str
    layer: int
    line: int
    n_frames: int
    path: str
    group_path: str


class LPBFReader:
    """Samples of one or several RAISE-LPBF files (either layout, auto-detected per file).

    Args:
        paths: a file, a folder of ``.hdf5`` files, a glob, or several of these.
        selection: objects, layers and split to serve.
        preprocess: crop, window, normalisation and output size.
        cache_dir: where index caches live (``None``: beside the data, else the user cache).
        use_cache: ``False`` rebuilds the index and writes no cache.
        mmap: read contiguous unfiltered datasets through a memory map (see module docstring).

    Raises:
        DataError: a file is missing, not HDF5 or malformed (the message names file/group/dataset).
        ValueError: the selection names absent objects or matches nothing.
    """

    def __init__(
        self,
        paths: str | Path | Iterable[str | Path],
        *,
        selection: Selection | None = None,
        preprocess: pp.Preprocess | None = None,
        cache_dir: Path | None = None,
        use_cache: bool = True,
        mmap: bool = True,
    ) -> None:
        self.selection = selection or Selection()
        self.preprocess = preprocess or pp.Preprocess()
        self.mmap = mmap
        self.cache_dir = cache_dir
        self.use_cache = use_cache
        self.files = lay.expand_paths(paths)
        self.indexes = [
            idx.load_or_build(p, cache_dir=cache_dir, use_cache=use_cache) for p in self.files
        ]
        self._build_tables()
        mask = select(self.selection, self._objects_all, self._layer_all, self._line_all)
        if not mask.any():
            raise ValueError(f"the selection {self.selection} matches no sample in the data")
        self._rows = np.flatnonzero(mask)
        self._pid: int | None = None
        self._handles: dict[int, h5py.File] = {}
        self._maps: dict[int, np.memmap] = {}
        self._datasets: dict[int, Any] = {}
        self._tables: dict[int, np.ndarray] = {}

    # --- tables -------------------------------------------------------------------------------

    def _build_tables(self) -> None:
        # Groups of all files get global numbers; per-sample arrays point at them.
        group_file, group_path, group_object, group_layer = [], [], [], []
        cols: dict[str, list[np.ndarray]] = {
            k: []
            for k in ("group", "line", "frow", "start", "stop", "glo", "ghi", "speed", "power")
        }
        gathers, n_groups, n_gather = [], 0, 0
        for fi, ix in enumerate(self.indexes):
            group_file += [fi] * len(ix.group_paths)
            group_path += list(ix.group_paths)
            group_object += list(ix.group_objects)
            group_layer.append(ix.group_layer)
            cols["group"].append(ix.group.astype(np.int64) + n_groups)
            cols["line"].append(ix.line)
            cols["frow"].append(np.arange(len(ix), dtype=np.int64))  # row in its file's index
            cols["start"].append(ix.start)
            cols["stop"].append(ix.stop)
            shift = np.where(ix.gather_lo >= 0, n_gather, 0)
            cols["glo"].append(ix.gather_lo + shift)
            cols["ghi"].append(ix.gather_hi + shift)
            cols["speed"].append(ix.speed_mm_s)
            cols["power"].append(ix.power_w)
            gathers.append(ix.gather)
            n_groups += len(ix.group_paths)
            n_gather += ix.gather.size
        t = {k: np.concatenate(v) for k, v in cols.items()}
        self._group_file = np.array(group_file, dtype=np.int64)
        self._group_path = group_path
        self._group_object = np.array(group_object)
        self._group_layer_arr = np.concatenate(group_layer)
        self._group, self._line_all, self._frow = t["group"], t["line"], t["frow"]
        self._start, self._stop, self._glo, self._ghi = t["start"], t["stop"], t["glo"], t["ghi"]
        self._speed, self._power = t["speed"], t["power"]
        self._gather = np.concatenate(gathers).astype(np.int64)
        self._objects_all = self._group_object[self._group]
        self._layer_all = self._group_layer_arr[self._group]
        contiguous = self._start >= 0
        self._n_frames = np.where(contiguous, self._stop - self._start, self._ghi - self._glo)
        self._targets = pp.normalise_targets(self._speed, self._power)

    # --- public view --------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._rows.size)

    @property
    def layouts(self) -> list[str]:
        return list(dict.fromkeys(ix.layout for ix in self.indexes))

    @property
    def objects(self) -> list[str]:
        """Objects of the selected samples, sorted."""
        return sorted(set(self._objects_all[self._rows].tolist()))

    def info(self, i: int) -> SampleInfo:
        """Where sample ``i`` comes from."""
        r = self._row(i)
        g = int(self._group[r])
        return SampleInfo(
            object_name=str(self._group_object[g]),
            layer=int(self._group_layer_arr[g]),
            line=int(self._line_all[r]),
            n_frames=int(self._n_frames[r]),
            path=str(self.files[int(self._group_file[g])]),
            group_path=self._group_path[g],
        )

    def targets(self) -> np.ndarray:
        """``float32 [len, 2]`` normalised targets of every selected sample."""
        return self._targets[self._rows]

    def target(self, i: int) -> np.ndarray:
        """``float32 [2]`` normalised target of sample ``i``."""
        return self._targets[self._row(i)].copy()

    # --- reading ------------------------------------------------------------------------------

    def _row(self, i: int) -> int:
        n = self._rows.size
        if not -n <= i < n:
            raise IndexError(f"sample {i} out of range for {n} samples")
        return int(self._rows[i])

    def _this_process(self) -> None:
        pid = os.getpid()
        if self._pid != pid:
            # A forked child must not touch the parent's HDF5 ids: forget them and reopen.
            self._handles, self._maps, self._datasets, self._tables = {}, {}, {}, {}
            self._pid = pid

    def _centre_table(self, fi: int) -> np.ndarray:
        self._this_process()
        table = self._tables.get(fi)
        if table is None:
            ix = self.indexes[fi]
            if self.use_cache:
                table = centres.open_table(
                    self.files[fi], ix.key(), len(ix), cache_dir=self.cache_dir
                )
            else:
                table = centres.in_memory(len(ix))
            self._tables[fi] = table
        return table

    def _frame_dataset(self, group: int) -> Any:
        """The group's frames: a numpy view of a memory map, or the h5py dataset."""
        self._this_process()
        ds = self._datasets.get(group)
        if ds is None:
            fi = int(self._group_file[group])
            f = self._handles.get(fi)
            if f is None:
                f = self._handles[fi] = self._open(fi)
            ds = f[self._group_path[group]][lay.FRAME]
            offset = _contiguous_offset(ds) if self.mmap else None
            if offset is not None:
                mm = self._maps.get(fi)
                if mm is None:
                    mm = self._maps[fi] = np.memmap(self.files[fi], dtype=np.uint8, mode="r")
                ds = mm[offset : offset + ds.size].reshape(ds.shape)
            self._datasets[group] = ds
        return ds

    def _open(self, fi: int) -> h5py.File:
        path, ix = self.files[fi], self.indexes[fi]
        st = path.stat() if path.exists() else None
        if st is None or (st.st_size, st.st_mtime_ns) != (ix.size_bytes, ix.mtime_ns):
            raise DataError(f"{path}: changed or removed since it was indexed; open it again")
        return lay.open_file(path)

    def _read(self, r: int, lo: int, hi: int) -> np.ndarray:
        """Frames ``[lo, hi)`` of the line in row ``r`` (positions within the line)."""
        g = int(self._group[r])
        ds = self._frame_dataset(g)
        try:
            if self._start[r] >= 0:
                base = int(self._start[r])
                return np.asarray(ds[base + lo : base + hi])
            positions = self._gather[self._glo[r] + lo : self._glo[r] + hi]
            return np.asarray(ds[positions])  # sorted positions: h5py's increasing-index gather
        except (OSError, ValueError) as exc:
            path = self.files[int(self._group_file[g])]
            where = lay.where(path, self._group_path[g], lay.FRAME)
            raise DataError(f"{where}: read failed ({exc})") from None

    def read_frames(self, i: int) -> np.ndarray:
        """Every frame of sample ``i``'s line, ``uint8 [n, H, W]``, in time order."""
        r = self._row(i)
        return self._read(r, 0, int(self._n_frames[r]))

    def sample(
        self, i: int, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``i`` as (``float32 [1, T, S, S]``, ``float32 [2]``).

        Args:
            i: sample number within the selection.
            rng: ``None`` for the centred evaluation window, a generator for a random one.
        """
        r = self._row(i)
        n = int(self._n_frames[r])
        spec = self.preprocess
        table = self._centre_table(int(self._group_file[self._group[r]]))
        row, col = (int(v) for v in table[self._frow[r]])
        if row < 0 or col < 0:
            frames = self._read(r, 0, n)
            centre = pp.melt_pool_centre(frames)
            table[self._frow[r]] = centre
            x = pp.preprocess_line(frames, spec, rng=rng, centre=centre)
        else:
            centre = (row, col)
            start = pp.window_start(n, spec, rng)
            window = self._read(r, start, min(start + spec.frames, n))
            x = pp.preprocess_window(window, centre, spec)
        return x, self._targets[r].copy()

    def forget_centres(self) -> None:
        """Forget every crop centre, for all processes (the next read of a line reads it whole)."""
        for fi in range(len(self.files)):
            self._centre_table(fi)[:] = -1

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.sample(i)

    # --- handles ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the files this process opened (reading again reopens them)."""
        if self._pid == os.getpid():
            for f in self._handles.values():
                f.close()
        self._handles, self._maps, self._datasets, self._tables = {}, {}, {}, {}
        self._pid = None

    def __enter__(self) -> LPBFReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        # HDF5 handles and memory maps never cross processes: the receiver reopens its own.
        state.update(_handles={}, _maps={}, _datasets={}, _tables={}, _pid=None)
        return state

    def __repr__(self) -> str:
        return (
            f"LPBFReader({len(self)} samples, {len(self.files)} file(s), "
            f"layouts {'/'.join(self.layouts)}, objects {','.join(self.objects)})"
        )
