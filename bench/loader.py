"""Reader speed: ``LPBFReader`` against a reference-style reader, same file, same samples.

What it measures, in one run and side by side, on one synthetic file generated into a temporary
folder (v1.0 layout by default, the layout of the public release):

- **reference-style reader**: what the public baseline code does per item: open the HDF5 file,
  read the layer's whole ``scan_line_index``, find the line's frames with ``np.where`` and read
  them with h5py fancy indexing (an index array), read the label row, close the file.
- **ours** (:class:`hpc2edge.data.LPBFReader`): sample index built once (cached beside the
  file), files kept open per process, one contiguous slice per line. Reported twice: the first
  pass reads whole lines (the crop centre needs the line's mean frame), later passes read only the
  T-frame window because the centre is remembered (what every epoch after the first does).
  The file's ``frame`` datasets are contiguous, so ours reads them through a memory map; the
  same reader with ``mmap=False`` (one h5py hyperslab per read, the path for chunked or
  compressed files) is timed as well.

Both produce the same tensors: the preprocessing is the same function
(:func:`hpc2edge.data.preprocess.preprocess_line`: 41x41 crop at the mean frame's argmax, /255,
mean 0.45 std 0.225, centred 16-frame evaluation window) and the script checks the outputs are
identical before timing. Each reader makes ``--repeats`` passes over the sample list, in
alternation; the best pass of each is compared (the machine is shared; the best pass is the one
least disturbed), the median is printed too. The page cache is warmed first, so this compares
the reading strategies, not the disk.

Usage::

    python bench/loader.py [--lines 64] [--objects 4] [--layers 2] [--repeats 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hpc2edge.data import LPBFReader, Preprocess, SynthSpec, generate
from hpc2edge.data.preprocess import normalise_targets, preprocess_line


class ReferenceReader:
    """Per item: reopen, read scan_line_index, ``np.where``, fancy-index the frames."""

    def __init__(self, path: Path, keys: list[tuple[str, int]], spec: Preprocess) -> None:
        self.path, self.keys, self.spec = path, keys, spec

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        group_path, line = self.keys[i]
        with h5py.File(self.path, "r") as f:
            group = f[group_path]
            positions = np.where(group["scan_line_index"][:] == line)[0]
            frames = group["frame"][positions]
            speed, power = group["laser_params"][line]
        return preprocess_line(frames, self.spec), normalise_targets(speed, power)


def _cpu_model() -> str | None:
    from hpc2edge.latency.telemetry import cpu_model

    return cpu_model() or platform.processor() or None


def describe_machine() -> dict[str, Any]:
    versions = {}
    for name in ("numpy", "h5py"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["hdf5"] = h5py.version.hdf5_version
    return {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": versions,
    }


def _one_pass(reader: Any, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        reader[i]
    return time.perf_counter() - t0


def run(args: argparse.Namespace) -> dict[str, Any]:
    spec = SynthSpec(
        layout=args.layout,
        objects=args.objects,
        layers=args.layers,
        lines=args.lines,
        frame_size=args.frame_size,
        line_length_mm=args.line_length_mm,
        seed=args.seed,
    )
    prep = Preprocess(frames=args.frames, size=args.size)
    with tempfile.TemporaryDirectory(prefix="h2e-bench-") as tmp:
        t0 = time.perf_counter()
        files = generate(Path(tmp), spec)
        generate_s = time.perf_counter() - t0
        if len(files) != 1:
            raise SystemExit("the bench reads one file: use --layout v1.0 or --objects 1")
        path = files[0]
        Path(path).read_bytes()  # warm the page cache for both readers alike

        t0 = time.perf_counter()
        ours = LPBFReader(path, preprocess=prep)  # builds and caches the index
        index_build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ours = LPBFReader(path, preprocess=prep)  # from the cache
        index_cached_s = time.perf_counter() - t0
        sliced = LPBFReader(path, preprocess=prep, mmap=False)
        keys = [(ours.info(i).group_path, ours.info(i).line) for i in range(len(ours))]
        ref = ReferenceReader(path, keys, prep)
        n = len(ours) if args.samples is None else min(args.samples, len(ours))

        for i in range(n):  # same samples, same tensors, or the comparison means nothing
            (xa, ya), (xb, yb), (xc, yc) = ours.sample(i), ref[i], sliced.sample(i)
            same = all(np.array_equal(a, b) for a, b in ((xa, xb), (ya, yb), (xa, xc), (ya, yc)))
            if not same:
                raise SystemExit(f"sample {i}: readers disagree")

        ref_s, first_s, later_s, h5_first_s, h5_later_s = [], [], [], [], []
        for _ in range(args.repeats):
            ref_s.append(_one_pass(ref, n))
            ours.forget_centres()
            first_s.append(_one_pass(ours, n))
            later_s.append(_one_pass(ours, n))
            sliced.forget_centres()
            h5_first_s.append(_one_pass(sliced, n))
            h5_later_s.append(_one_pass(sliced, n))
        ours.close()
        sliced.close()
        frames_per_line = float(np.mean([ours.info(i).n_frames for i in range(n)]))
        file_mb = path.stat().st_size / 1e6

    def rates(seconds: list[float]) -> dict[str, float]:
        return {"best": n / min(seconds), "median": n / statistics.median(seconds)}

    result = {
        "machine": describe_machine(),
        "file": {
            "layout": spec.layout,
            "megabytes": round(file_mb, 1),
            "objects": spec.objects,
            "layers_per_object": spec.layers,
            "lines_per_layer": spec.lines,
            "frame_size": spec.frame_size,
            "frames_per_line_mean": round(frames_per_line, 1),
            "generate_s": round(generate_s, 2),
        },
        "sample_shape": [1, prep.frames, prep.size, prep.size],
        "samples": n,
        "repeats": args.repeats,
        "index_build_ms": round(index_build_s * 1e3, 1),
        "index_cached_ms": round(index_cached_s * 1e3, 1),
        "samples_per_s": {
            "reference": rates(ref_s),
            "ours_first_pass": rates(first_s),
            "ours_later_passes": rates(later_s),
            "ours_h5py_slice_first_pass": rates(h5_first_s),
            "ours_h5py_slice_later_passes": rates(h5_later_s),
        },
    }
    best = {k: v["best"] for k, v in result["samples_per_s"].items()}
    result["ratio_first_pass"] = round(best["ours_first_pass"] / best["reference"], 1)
    result["ratio_later_passes"] = round(best["ours_later_passes"] / best["reference"], 1)
    result["ratio_h5py_slice_first_pass"] = round(
        best["ours_h5py_slice_first_pass"] / best["reference"], 1
    )
    return result


def report(result: dict[str, Any]) -> str:
    m, fl, sps = result["machine"], result["file"], result["samples_per_s"]
    lines = [
        f"machine: {m['cpu']} x{m['cpus']}, {m['platform']}, python {m['python']}, "
        f"numpy {m['versions']['numpy']}, h5py {m['versions']['h5py']} "
        f"(HDF5 {m['versions']['hdf5']}), load {m['load_average']}",
        f"file: {fl['layout']}, {fl['megabytes']} MB, {fl['objects']} objects x "
        f"{fl['layers_per_object']} layers x {fl['lines_per_layer']} lines, "
        f"{fl['frame_size']}x{fl['frame_size']} px, {fl['frames_per_line_mean']} frames/line",
        f"samples: {result['samples']} x {result['sample_shape']} (evaluation windows), "
        f"best of {result['repeats']} passes (median in brackets)",
        f"index: built in {result['index_build_ms']} ms, from cache in "
        f"{result['index_cached_ms']} ms",
    ]
    for name, label in (
        ("reference", "reference (reopen + np.where fancy index)"),
        ("ours_first_pass", "LPBFReader, first pass (whole lines)"),
        ("ours_later_passes", "LPBFReader, later passes (window only)"),
        ("ours_h5py_slice_first_pass", "LPBFReader(mmap=False), first pass"),
        ("ours_h5py_slice_later_passes", "LPBFReader(mmap=False), later passes"),
    ):
        lines.append(
            f"  {label:<44} {sps[name]['best']:>9.0f} samples/s ({sps[name]['median']:.0f})"
        )
    lines.append(
        f"ratio ours/reference: {result['ratio_first_pass']}x first pass, "
        f"{result['ratio_later_passes']}x later passes "
        f"(h5py slices instead of the memory map: {result['ratio_h5py_slice_first_pass']}x "
        "first pass)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layout", default="v1.0", choices=["v1.0", "v1.1"])
    parser.add_argument("--objects", type=int, default=4)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--lines", type=int, default=64, help="scan lines per layer")
    parser.add_argument("--frame-size", type=int, default=64)
    parser.add_argument("--line-length-mm", type=float, default=5.0)
    parser.add_argument("--frames", type=int, default=16, help="window T")
    parser.add_argument("--size", type=int, default=41, help="output side S")
    parser.add_argument("--samples", type=int, default=None, help="default: every line")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    result = run(args)
    print(report(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
