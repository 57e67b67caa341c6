"""A recorded benchmark: real latencies and real training curves of a sample of a search space,
and the answers a simulated search gets from it (the table, or its surrogate for the rest).

The table is recorded by ``bench/record_benchmark.py`` on one machine, on one problem (the demo's
calibrated synthetic data and training recipe, :mod:`hpc2edge.search.problem`), and shipped as
package data (``hpc2edge/resources/benchmarks/<name>.json.gz``) so that ``hpc2edge simulate``
finds it after ``pip install``. In the spirit of Syne Tune's blackbox repository (a table of
learning curves and costs per configuration, replayed by a simulator back-end) and of
NAS-Bench-201 / HW-NAS-Bench (latency per device beside accuracy) / NAS-Bench-301 (a surrogate
answers for configurations not in the table).

File format ``hpc2edge-benchmark/1``: gzip of one JSON object::

    {"header": {"format": "hpc2edge-benchmark/1", "name": "cnn3d-cpu",
                "spaces": ["cnn3d", ...],          # registry names; the first is the main space
                "pin": {"frames": 8, "size": 41},  # every spec's input
                "data": {...}, "recipe": {...}, "max_epochs": E,
                "latency": {kind: {"backend", "protocol", "device", ...}},   # first: default
                "machine": {...}, "versions": {...}, "created": ISO-8601, ...},
     "rows": [{"arch_id", "space", "spec", "params", "flops",
               "latency": {kind: {"median_ms", "ci95_ms": [lo, hi], "p90_ms", "n",
                                  "stopped_by"}},
               "curves": [{"seed", "val_mse": [...E], "train_loss": [...E], "s_per_epoch",
                           "val_mse_constant"}, ...]}, ...]}   # rows sorted by arch_id

A file is input a user may hand in: :func:`load` checks the format version, every type, that
every number is finite and in range, the sizes (rows, strings, curve lengths, the decompressed
bytes), and that each row's ``arch_id`` is its spec's; anything else is a one-line
:class:`BenchmarkError`.

Answers (:meth:`Benchmark.answer`) are deterministic. The val MSE after ``e`` epochs of an
``E``-epoch run is the one of an ``e``-epoch run: the recipe's StepLR schedule does not depend
on the epoch budget and the data order depends on the seed and epoch only
(:mod:`hpc2edge.training.loop`), so one curve serves every budget up to ``max_epochs``.

numpy only: this module imports neither torch nor optuna (the surrogate computes exact params
and FLOPs of an unseen architecture with :mod:`hpc2edge.models` when torch is installed).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import tempfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from hpc2edge.errors import Hpc2EdgeError, SpecError
from hpc2edge.roles import KIND_RE
from hpc2edge.sim.surrogate import Surrogate, fit
from hpc2edge.space.base import ArchSpec
from hpc2edge.space.registry import get_space

FORMAT = "hpc2edge-benchmark/1"
#: The default benchmark: the cnn3d space on the demo's problem and recipe (``cnn3d-cpu`` is the
#: earlier recording, on the constant learning rate the demo no longer uses).
DEFAULT = "cnn3d-cpu-v2"
RESOURCE_PACKAGE = "hpc2edge.resources"
RESOURCE_DIR = "benchmarks"
SUFFIX = ".json.gz"

#: Bounds of a file a user may hand in.
MAX_FILE_BYTES = 64 * 2**20  # decompressed JSON
MAX_ROWS = 100_000
MAX_EPOCHS = 1_000
MAX_CURVES = 16
MAX_KINDS = 16
MAX_STR = 200
MAX_HEADER_BYTES = 256 * 2**10
MAX_SPEC_BYTES = 4096
MAX_SEED = 2**31 - 1
MAX_COUNT = 2**62  # params, FLOPs, sample counts
#: Significant digits a float keeps in the file (the recording's noise is far larger).
FLOAT_DIGITS = 7

ROW_FIELDS = frozenset({"arch_id", "space", "spec", "params", "flops", "latency", "curves"})
CURVE_FIELDS = frozenset({"seed", "val_mse", "train_loss", "s_per_epoch", "val_mse_constant"})
LATENCY_FIELDS = frozenset({"median_ms", "ci95_ms", "p90_ms", "n", "stopped_by"})
HEADER_REQUIRED = ("format", "name", "spaces", "pin", "max_epochs", "latency")


class BenchmarkError(Hpc2EdgeError):
    """A benchmark file is missing, unreadable or malformed (one line: what and where)."""


# --- records ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Curve:
    """One training run of one architecture."""

    seed: int
    val_mse: tuple[float, ...]  # after epoch 1..E
    train_loss: tuple[float, ...]
    s_per_epoch: float  # wall seconds of training per epoch on the recording machine
    val_mse_constant: float

    def __post_init__(self) -> None:
        # Rounded as the file keeps them, so a saved and loaded curve equals the original.
        object.__setattr__(self, "val_mse", tuple(_round(v) for v in self.val_mse))
        object.__setattr__(self, "train_loss", tuple(_round(v) for v in self.train_loss))
        object.__setattr__(self, "s_per_epoch", _round(self.s_per_epoch))
        object.__setattr__(self, "val_mse_constant", _round(self.val_mse_constant))

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "val_mse": list(self.val_mse),
            "train_loss": list(self.train_loss),
            "s_per_epoch": self.s_per_epoch,
            "val_mse_constant": self.val_mse_constant,
        }


@dataclass(frozen=True)
class Row:
    """One architecture: its size, its latency per device kind, its training curves."""

    arch_id: str
    space: str
    spec: dict[str, Any]  # ArchSpec.to_dict()
    params: int
    flops: int
    latency: dict[str, dict[str, Any]]  # kind -> {median_ms, ci95_ms, p90_ms, n, stopped_by}
    curves: tuple[Curve, ...]  # seed 0 first

    def __post_init__(self) -> None:
        latency = {
            kind: {
                "median_ms": _round(s["median_ms"]),
                "ci95_ms": [_round(x) for x in s["ci95_ms"]],
                "p90_ms": _round(s["p90_ms"]),
                "n": int(s["n"]),
                "stopped_by": str(s["stopped_by"]),
            }
            for kind, s in sorted(self.latency.items())
        }
        object.__setattr__(self, "latency", latency)
        object.__setattr__(self, "curves", tuple(self.curves))

    def arch(self) -> ArchSpec:
        return ArchSpec.from_dict(self.spec)

    def curve(self, seed: int) -> Curve | None:
        """The recorded curve of ``seed``, or None."""
        return next((c for c in self.curves if c.seed == seed), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "arch_id": self.arch_id,
            "space": self.space,
            "spec": self.spec,
            "params": self.params,
            "flops": self.flops,
            "latency": {kind: dict(s) for kind, s in self.latency.items()},
            "curves": [c.to_json() for c in self.curves],
        }


@dataclass(frozen=True)
class Answer:
    """What a simulated training and measurement of one architecture report."""

    val_mse_per_epoch: tuple[float, ...]  # epochs 1..min(epochs, max_epochs)
    val_mse: float  # the last of those
    val_mse_constant: float
    s_per_epoch: float
    latency_ms: dict[str, float]  # kind -> median ms
    params: int
    flops: int
    source: str  # "table" or "surrogate"


def _round(x: float) -> float:
    return float(f"{float(x):.{FLOAT_DIGITS}g}")


# --- the benchmark ------------------------------------------------------------------------------


@dataclass
class Benchmark:
    """A recorded table and its answers; see the module docstring."""

    header: dict[str, Any]
    rows: dict[str, Row] = field(default_factory=dict)
    _surrogate: Surrogate | None = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        return str(self.header["name"])

    @property
    def kinds(self) -> tuple[str, ...]:
        """Device kinds with latencies; the first is the default kind."""
        return tuple(self.header["latency"])

    @property
    def max_epochs(self) -> int:
        return int(self.header["max_epochs"])

    @property
    def spaces(self) -> tuple[str, ...]:
        """Registry names of the spaces the table samples; the first is the main one."""
        return tuple(self.header["spaces"])

    @property
    def pin(self) -> dict[str, int]:
        """The input every architecture of the table has: ``{"frames": T, "size": S}``."""
        return {
            "frames": int(self.header["pin"]["frames"]),
            "size": int(self.header["pin"]["size"]),
        }

    @property
    def seed_sigma(self) -> float:
        """Standard deviation of the final log val MSE between seeds of one architecture,
        pooled over the rows with 2+ curves (0.0 when there are none)."""
        sq, dof = 0.0, 0
        for row in self.rows.values():
            if len(row.curves) < 2:
                continue
            logs = np.log([c.val_mse[-1] for c in row.curves])
            sq += float(((logs - logs.mean()) ** 2).sum())
            dof += len(logs) - 1
        return math.sqrt(sq / dof) if dof else 0.0

    def space_of(self, spec: ArchSpec) -> str:
        """The table's space that ``spec`` is a point of; ValueError when none is."""
        if not isinstance(spec, ArchSpec):
            raise ValueError(f"expected an ArchSpec, got {type(spec).__name__}")
        pin = self.pin
        if (spec.frames, spec.size) != (pin["frames"], pin["size"]):
            raise ValueError(
                f"benchmark {self.name!r} covers inputs {pin['frames']} x {pin['size']} x "
                f"{pin['size']} only, not {spec.frames} x {spec.size} x {spec.size}"
            )
        problems = []
        for name in self.spaces:
            try:
                get_space(name).validate(spec)
            except SpecError as exc:
                problems.append(f"{name}: {exc}")
                continue
            return name
        raise ValueError(
            f"benchmark {self.name!r} does not cover this {spec.space!r} architecture "
            f"({'; '.join(problems)[:300]})"
        )

    def answer(self, spec: ArchSpec, epochs: int, seed: int = 0) -> Answer:
        """The training curve up to ``epochs`` (clipped to :attr:`max_epochs`), cost and latency
        of ``spec`` trained with ``seed``.

        A table row answers for its architecture: the curve recorded for ``seed`` when there is
        one, else the seed-0 curve times ``exp(noise)``, ``noise ~ N(0, seed_sigma)`` drawn from
        a generator seeded by (arch_id, seed), one draw for the whole curve (a seed shifts a
        curve, it does not reshuffle its epochs). An architecture not in the table is answered
        by the surrogate, with the same noise rule for seeds other than 0. Deterministic.
        Raises ValueError for a spec outside the table's spaces and input, or ``epochs < 1``.
        """
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs: expected a positive integer, got {epochs!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise ValueError(f"seed: expected an integer in [0, {MAX_SEED}], got {seed!r}")
        e = min(epochs, self.max_epochs)
        row = self.rows.get(spec.arch_id) if isinstance(spec, ArchSpec) else None
        if row is None:
            self.space_of(spec)  # ValueError for a spec the table does not cover
            guess = self.surrogate().predict(spec)
            curve = guess.val_mse_per_epoch
            constant, s_per_epoch = guess.val_mse_constant, guess.s_per_epoch
            latency, params, flops, source = (
                guess.latency_ms,
                guess.params,
                guess.flops,
                "surrogate",
            )
            if seed != 0:
                curve = self._noisy(curve, spec.arch_id, seed)
        else:
            recorded = row.curve(seed)
            base = recorded or row.curves[0]
            curve, constant, s_per_epoch = base.val_mse, base.val_mse_constant, base.s_per_epoch
            if recorded is None:
                curve = self._noisy(curve, row.arch_id, seed)
            latency = {k: float(v["median_ms"]) for k, v in row.latency.items()}
            params, flops, source = row.params, row.flops, "table"
        per_epoch = tuple(float(v) for v in curve[:e])
        return Answer(
            val_mse_per_epoch=per_epoch,
            val_mse=per_epoch[-1],
            val_mse_constant=float(constant),
            s_per_epoch=float(s_per_epoch),
            latency_ms={k: float(latency[k]) for k in self.kinds if k in latency},
            params=int(params),
            flops=int(flops),
            source=source,
        )

    def _noisy(self, curve: tuple[float, ...], arch_id: str, seed: int) -> tuple[float, ...]:
        sigma = self.seed_sigma
        if sigma <= 0.0:
            return tuple(curve)
        digest = hashlib.sha256(f"{arch_id}:{seed}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        factor = math.exp(float(rng.normal(0.0, sigma)))
        return tuple(v * factor for v in curve)

    def surrogate(self) -> Surrogate:
        """The surrogate fitted on every row (lazily, once)."""
        if self._surrogate is None:
            self._surrogate = fit(self)
        return self._surrogate

    def add(self, row: Row) -> None:
        """Put ``row`` in the table (replacing its architecture's); drops the fitted surrogate."""
        self.rows[row.arch_id] = row
        self._surrogate = None

    # --- files ----------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "header": self.header,
            "rows": [self.rows[k].to_json() for k in sorted(self.rows)],
        }

    def save(self, path: Path) -> None:
        """Write gzip JSON atomically (a temporary file beside ``path``, then a rename); rows
        sorted by arch_id, so equal tables give equal files."""
        path = Path(path)
        data = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"), allow_nan=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with (
                os.fdopen(fd, "wb") as raw,
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
            ):
                gz.write(data.encode("ascii"))
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


# --- loading and checking -----------------------------------------------------------------------


def names() -> list[str]:
    """Names of the benchmarks shipped with the package."""
    folder = resources.files(RESOURCE_PACKAGE).joinpath(RESOURCE_DIR)
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(SUFFIX)] for p in folder.iterdir() if p.name.endswith(SUFFIX))


def load(name_or_path: str | Path = DEFAULT) -> Benchmark:
    """A shipped benchmark by name, or the file at a path; BenchmarkError when it is unusable."""
    if isinstance(name_or_path, str) and not _looks_like_path(name_or_path):
        folder = resources.files(RESOURCE_PACKAGE).joinpath(RESOURCE_DIR)
        resource = folder.joinpath(name_or_path + SUFFIX)
        if not resource.is_file():
            known = ", ".join(names()) or "none"
            raise BenchmarkError(f"no benchmark named {name_or_path!r} (shipped: {known})")
        return loads(resource.read_bytes(), f"benchmark {name_or_path!r}")
    path = Path(name_or_path)
    try:
        with path.open("rb") as f:
            blob = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise BenchmarkError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return loads(blob, str(path))


def _looks_like_path(name: str) -> bool:
    return "/" in name or "\\" in name or name.endswith(SUFFIX) or name.startswith(".")


def loads(blob: bytes, where: str = "benchmark") -> Benchmark:
    """Parse and check the bytes of a benchmark file (gzip JSON)."""
    try:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip framing, bounded output
        text = d.decompress(blob, MAX_FILE_BYTES + 1)
        if len(text) > MAX_FILE_BYTES or d.unconsumed_tail:
            raise BenchmarkError(f"{where}: over {MAX_FILE_BYTES // 2**20} MiB decompressed")
    except zlib.error:
        raise BenchmarkError(f"{where}: not a gzip file") from None
    try:
        data = json.loads(text.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BenchmarkError(f"{where}: not valid JSON ({_one_line(exc)})") from None
    return from_json(data, where)


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a finite number")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


class _Check:
    """Typed getters that raise one BenchmarkError naming the file and the field."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, path: str, what: str) -> BenchmarkError:
        return BenchmarkError(f"{self.where}: {path}: {what}")

    def obj(self, value: Any, path: str, fields: frozenset[str] | None = None) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"expected an object, got {type(value).__name__}")
        if fields is not None:
            missing = sorted(fields - set(value))
            if missing:
                raise self.fail(path, f"missing field {missing[0]!r}")
            extra = sorted(str(k)[:40] for k in set(value) - fields)
            if extra:
                raise self.fail(path, f"unknown field {extra[0]!r}")
        return value

    def text(self, value: Any, path: str, limit: int = MAX_STR) -> str:
        if not isinstance(value, str) or not value or len(value) > limit:
            raise self.fail(path, f"expected a non-empty string of at most {limit} characters")
        return value

    def integer(self, value: Any, path: str, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.fail(path, f"expected an integer in [{lo}, {hi}], got {_short(value)}")
        return value

    def number(self, value: Any, path: str, *, positive: bool = False) -> float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or value < 0 or (positive and value == 0):
            sign = "positive" if positive else "non-negative"
            raise self.fail(path, f"expected a finite {sign} number, got {_short(value)}")
        return float(value)

    def numbers(self, value: Any, path: str, length: int, *, positive: bool) -> tuple[float, ...]:
        if not isinstance(value, list) or len(value) != length:
            raise self.fail(path, f"expected a list of {length} numbers")
        return tuple(self.number(v, f"{path}[{i}]", positive=positive) for i, v in enumerate(value))


def _short(value: Any) -> str:
    return repr(value)[:40]


def from_json(data: Any, where: str = "benchmark") -> Benchmark:
    """A checked :class:`Benchmark` from the decoded JSON of a file."""
    c = _Check(where)
    top = c.obj(data, "file", frozenset({"header", "rows"}))
    header = _header(c, top["header"])
    rows_in = top["rows"]
    if not isinstance(rows_in, list):
        raise c.fail("rows", "expected a list")
    if len(rows_in) > MAX_ROWS:
        raise c.fail("rows", f"{len(rows_in)} rows, over the limit of {MAX_ROWS}")
    bench = Benchmark(header)
    kinds = set(header["latency"])
    for i, item in enumerate(rows_in):
        row = _row(c, item, f"rows[{i}]", header, kinds)
        if row.arch_id in bench.rows:
            raise c.fail(f"rows[{i}].arch_id", "appears twice")
        bench.rows[row.arch_id] = row
    return bench


def _header(c: _Check, value: Any) -> dict[str, Any]:
    h = c.obj(value, "header")
    if len(json.dumps(h)) > MAX_HEADER_BYTES:
        raise c.fail("header", f"over {MAX_HEADER_BYTES // 2**10} KiB")
    for key in HEADER_REQUIRED:
        if key not in h:
            raise c.fail("header", f"missing field {key!r}")
    if h["format"] != FORMAT:
        raise c.fail("header.format", f"{_short(h['format'])} is not {FORMAT!r}")
    c.text(h["name"], "header.name", 64)
    spaces = h["spaces"]
    if not isinstance(spaces, list) or not 1 <= len(spaces) <= 8:
        raise c.fail("header.spaces", "expected 1-8 space names")
    for i, name in enumerate(spaces):
        c.text(name, f"header.spaces[{i}]", 50)
        try:
            get_space(name)
        except SpecError:
            raise c.fail(f"header.spaces[{i}]", f"{_short(name)} is not a known space") from None
    pin = c.obj(h["pin"], "header.pin", frozenset({"frames", "size"}))
    for key in ("frames", "size"):
        c.integer(pin[key], f"header.pin.{key}", 1, 4096)
    c.integer(h["max_epochs"], "header.max_epochs", 1, MAX_EPOCHS)
    latency = c.obj(h["latency"], "header.latency")
    if not 1 <= len(latency) <= MAX_KINDS:
        raise c.fail("header.latency", f"expected 1-{MAX_KINDS} device kinds")
    for kind, record in latency.items():
        if not KIND_RE.fullmatch(kind):
            raise c.fail("header.latency", f"{_short(kind)} is not a device kind name")
        c.obj(record, f"header.latency.{kind}")
    return h


def _row(c: _Check, value: Any, path: str, header: Mapping[str, Any], kinds: set[str]) -> Row:
    r = c.obj(value, path, ROW_FIELDS)
    arch_id = c.text(r["arch_id"], f"{path}.arch_id", 64)
    space = c.text(r["space"], f"{path}.space", 50)
    if space not in header["spaces"]:
        raise c.fail(f"{path}.space", f"{_short(space)} is not one of the header's spaces")
    spec_in = c.obj(r["spec"], f"{path}.spec")
    if len(json.dumps(spec_in)) > MAX_SPEC_BYTES:
        raise c.fail(f"{path}.spec", f"over {MAX_SPEC_BYTES} bytes")
    try:
        spec = get_space(space).validate(ArchSpec.from_dict(spec_in))
    except SpecError as exc:
        raise c.fail(f"{path}.spec", _one_line(exc)) from None
    if spec.arch_id != arch_id:
        raise c.fail(f"{path}.arch_id", "is not the id of the row's spec")
    pin = header["pin"]
    if (spec.frames, spec.size) != (pin["frames"], pin["size"]):
        raise c.fail(f"{path}.spec.input", "is not the header's pinned input")
    params = c.integer(r["params"], f"{path}.params", 1, MAX_COUNT)
    flops = c.integer(r["flops"], f"{path}.flops", 1, MAX_COUNT)
    latency_in = c.obj(r["latency"], f"{path}.latency")
    if set(latency_in) != kinds:
        raise c.fail(f"{path}.latency", "does not have the header's device kinds")
    latency: dict[str, dict[str, Any]] = {}
    for kind, stats in latency_in.items():
        where = f"{path}.latency.{kind}"
        s = c.obj(stats, where, LATENCY_FIELDS)
        median = c.number(s["median_ms"], f"{where}.median_ms", positive=True)
        lo, hi = c.numbers(s["ci95_ms"], f"{where}.ci95_ms", 2, positive=False)
        if not lo <= median <= hi:
            raise c.fail(f"{where}.ci95_ms", "does not contain the median")
        latency[kind] = {
            "median_ms": median,
            "ci95_ms": [lo, hi],
            "p90_ms": c.number(s["p90_ms"], f"{where}.p90_ms", positive=True),
            "n": c.integer(s["n"], f"{where}.n", 1, MAX_COUNT),
            "stopped_by": c.text(s["stopped_by"], f"{where}.stopped_by", 40),
        }
    curves_in = r["curves"]
    if not isinstance(curves_in, list) or not 1 <= len(curves_in) <= MAX_CURVES:
        raise c.fail(f"{path}.curves", f"expected 1-{MAX_CURVES} curves")
    epochs = header["max_epochs"]
    curves = []
    for j, item in enumerate(curves_in):
        where = f"{path}.curves[{j}]"
        k = c.obj(item, where, CURVE_FIELDS)
        curves.append(
            Curve(
                seed=c.integer(k["seed"], f"{where}.seed", 0, MAX_SEED),
                val_mse=c.numbers(k["val_mse"], f"{where}.val_mse", epochs, positive=True),
                train_loss=c.numbers(
                    k["train_loss"], f"{where}.train_loss", epochs, positive=False
                ),
                s_per_epoch=c.number(k["s_per_epoch"], f"{where}.s_per_epoch", positive=True),
                val_mse_constant=c.number(
                    k["val_mse_constant"], f"{where}.val_mse_constant", positive=True
                ),
            )
        )
    seeds = [k.seed for k in curves]
    if seeds[0] != 0 or len(set(seeds)) != len(seeds):
        raise c.fail(f"{path}.curves", "expected seed 0 first and distinct seeds")
    return Row(arch_id, space, spec.to_dict(), params, flops, latency, tuple(curves))


__all__ = [
    "DEFAULT",
    "FORMAT",
    "Answer",
    "Benchmark",
    "BenchmarkError",
    "Curve",
    "Row",
    "load",
    "loads",
    "names",
]
