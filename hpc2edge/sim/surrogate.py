"""A surrogate of a recorded benchmark: predictions for architectures that are not in the table.

NAS-Bench-301's idea at the size of this project: fit a regression model on the recorded rows
and let it answer for the rest of the space, and say how good it is on rows it did not see
(:func:`evaluate`: Kendall tau and the share of predictions within +-10 %, k-fold).

**Features**, derived generically from the specs' own parameters (``hpc2edge.space`` is the only
place that knows parameter names; nothing here names one): numbers and booleans as they are,
strings one-hot over the levels seen, tuples as their length, sum and max and their values per
position (padded with 0 up to the longest seen). Positive numbers spanning a factor of 4 or more
(channels 8..128) enter as logarithms. Then the log of the parameter count and of the FLOPs:
exact from :mod:`hpc2edge.models` (torch) when installed, else predicted from the other
features. Features are standardised on the training rows; constant ones are dropped.

**Targets**: log val MSE after each epoch 1..E (the mean over a row's seeds), log latency per
device kind, log seconds per epoch (and log params / log FLOPs, from the spec-only features).

**Model**: kernel ridge regression (the posterior mean of a GP) with the kernel
``RBF(lengthscale) + w * linear``; the lengthscale, the weight of the linear part, the ridge and
the feature weighting (all alike, the size features only, the size features weighted 3x) are
chosen per target by exact leave-one-out error over a small grid (one eigendecomposition of the
kernel per (weighting, lengthscale, w), shared by every ridge and every target). Chosen over plain
k-nearest neighbours in the standardised feature space by held-out quality on the recorded
table (``python bench/record_benchmark.py --report`` prints both). numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from hpc2edge.space.base import ArchSpec


# What is read of a benchmark (:mod:`hpc2edge.sim.benchmark`, which imports this module).
class _Curve(Protocol):
    @property
    def val_mse(self) -> tuple[float, ...]: ...
    @property
    def s_per_epoch(self) -> float: ...
    @property
    def val_mse_constant(self) -> float: ...


class Row(Protocol):
    """A row of a benchmark (:class:`hpc2edge.sim.benchmark.Row`)."""

    @property
    def arch_id(self) -> str: ...
    @property
    def space(self) -> str: ...
    @property
    def params(self) -> int: ...
    @property
    def flops(self) -> int: ...
    @property
    def latency(self) -> Mapping[str, Mapping[str, Any]]: ...
    @property
    def curves(self) -> Sequence[_Curve]: ...
    def arch(self) -> ArchSpec: ...


class Benchmark(Protocol):
    """A benchmark (:class:`hpc2edge.sim.benchmark.Benchmark`)."""

    @property
    def name(self) -> str: ...
    @property
    def rows(self) -> Mapping[str, Row]: ...
    @property
    def kinds(self) -> tuple[str, ...]: ...
    @property
    def max_epochs(self) -> int: ...
    @property
    def spaces(self) -> tuple[str, ...]: ...
    def space_of(self, spec: ArchSpec) -> str: ...


#: Positive numeric features spanning at least this factor enter as logarithms.
LOG_SPAN = 4.0
LENGTHSCALES = (0.5, 1.0, 2.0, 4.0)  # times sqrt(number of features)
LINEAR_WEIGHTS = (0.0, 0.1, 1.0)
RIDGES = (1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
MIN_ROWS = 4  # fewer rows of a space: the surrogate answers their mean
KNN_K = 5


# --- features -----------------------------------------------------------------------------------


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class _Column:
    """How one parameter becomes features."""

    name: str
    kind: str  # "number", "bool", "category", "tuple"
    log: bool = False
    levels: tuple[str, ...] = ()
    width: int = 0  # tuple: positions kept

    def names(self) -> list[str]:
        if self.kind in ("number", "bool"):
            return [self.name, f"{self.name}?"]
        if self.kind == "category":
            return [f"{self.name}={level}" for level in self.levels]
        pos = [f"{self.name}[{i}]" for i in range(self.width)]
        return [f"len({self.name})", f"sum({self.name})", f"max({self.name})", *pos]

    def encode(self, value: Any) -> list[float]:
        if self.kind in ("number", "bool"):
            if value is None:
                return [0.0, 0.0]
            return [self._num(value), 1.0]
        if self.kind == "category":
            key = _level(value)
            return [1.0 if key == level else 0.0 for level in self.levels]
        values = [float(v) for v in value] if isinstance(value, tuple) else []
        values = [v for v in values if math.isfinite(v)]
        if not values:
            return [0.0] * (3 + self.width)
        per = [self._num(v) for v in values[: self.width]]
        per += [0.0] * (self.width - len(per))
        return [float(len(values)), self._num(sum(values)), self._num(max(values)), *per]

    def _num(self, v: Any) -> float:
        x = float(v)
        return math.log(x) if self.log and x > 0 else x


def _level(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


class Encoder:
    """Spec (+ params and FLOPs) -> feature vector, derived from the training specs."""

    def __init__(self, specs: Sequence[ArchSpec], *, with_size: bool = True) -> None:
        keys = sorted({k for s in specs for k in s.params})
        self.columns: list[_Column] = [
            _Column("input.frames", "number", _wide([float(s.frames) for s in specs])),
            _Column("input.size", "number", _wide([float(s.size) for s in specs])),
        ]
        for key in keys:
            values = [s.params[key] for s in specs if key in s.params]
            self.columns.append(_column(key, values))
        self.with_size = with_size

    def names(self) -> list[str]:
        out = [n for c in self.columns for n in c.names()]
        return [*out, "log(params)", "log(flops)"] if self.with_size else out

    def encode(self, spec: ArchSpec, params: float = 1.0, flops: float = 1.0) -> np.ndarray:
        row: list[float] = []
        for col in self.columns:
            if col.name == "input.frames":
                row += col.encode(spec.frames)
            elif col.name == "input.size":
                row += col.encode(spec.size)
            else:
                row += col.encode(spec.params.get(col.name))
        if self.with_size:
            row += [math.log(max(params, 1.0)), math.log(max(flops, 1.0))]
        return np.asarray(row, dtype=float)


def _wide(values: Sequence[float]) -> bool:
    pos = [v for v in values if v > 0]
    return len(pos) == len(values) and bool(pos) and max(pos) >= LOG_SPAN * min(pos)


def _column(key: str, values: Sequence[Any]) -> _Column:
    if values and all(isinstance(v, bool) for v in values):
        return _Column(key, "bool")
    if values and all(_is_number(v) for v in values):
        return _Column(key, "number", _wide([float(v) for v in values]))
    if values and all(isinstance(v, tuple) and all(_is_number(x) for x in v) for v in values):
        flat = [float(x) for v in values for x in v]
        width = max(len(v) for v in values)
        return _Column(key, "tuple", _wide(flat) if flat else False, width=width)
    return _Column(key, "category", levels=tuple(sorted({_level(v) for v in values})))


class _Scaler:
    """Standardisation on the training rows; constant columns dropped."""

    def __init__(self, x: np.ndarray) -> None:
        self.mean = x.mean(axis=0)
        std = x.std(axis=0)
        self.keep = std > 1e-12
        self.std = np.where(self.keep, std, 1.0)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std)[..., self.keep]


# --- kernel ridge regression with leave-one-out model selection ---------------------------------


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def _kernel(a: np.ndarray, b: np.ndarray, ls: float, w: float, d: float) -> np.ndarray:
    k = np.exp(-_sqdist(a, b) / (2.0 * ls * ls))
    return k + w * (a @ b.T) / d if w else k


@dataclass
class KernelRidge:
    """One fitted KRR per target column, each with its own LOO-chosen hyper-parameters: the
    length scale, the linear part's weight, the ridge, and the feature weighting (all features
    alike, the size features only, or the size features weighted up: with few rows the size
    alone often predicts latency and training time best, and LOO says when)."""

    x: np.ndarray  # standardised training features
    y_mean: np.ndarray
    y_std: np.ndarray
    alphas: np.ndarray  # (n, targets), in standardised target units
    ls: np.ndarray
    w: np.ndarray
    ridge: np.ndarray
    scales: list[np.ndarray]  # feature weights per target
    loo_rmse: np.ndarray  # per target, in the target's units

    @classmethod
    def fit(
        cls, x: np.ndarray, y: np.ndarray, scales: Sequence[np.ndarray] | None = None
    ) -> KernelRidge:
        n, m = y.shape
        y_mean = y.mean(axis=0)
        y_std = y.std(axis=0)
        y_std = np.where(y_std > 1e-12, y_std, 1.0)
        ys = (y - y_mean) / y_std
        options = list(scales) if scales else [np.ones(x.shape[1])]
        best = np.full(m, np.inf)
        choice: list[tuple[float, float, float, int]] = [(1.0, 0.0, 1.0, 0)] * m
        for si, scale in enumerate(options):
            xs = x * scale
            d = max(float((scale**2).sum()), 1.0)
            for ls0 in LENGTHSCALES:
                ls = ls0 * math.sqrt(d)
                for w in LINEAR_WEIGHTS:
                    s, v = np.linalg.eigh(_kernel(xs, xs, ls, w, d))
                    s = np.maximum(s, 0.0)
                    vty = v.T @ ys  # (n, m)
                    for ridge in RIDGES:
                        inv = 1.0 / (s + ridge)
                        alpha = v @ (vty * inv[:, None])
                        diag = (v * v) @ inv
                        loo = ((alpha / diag[:, None]) ** 2).mean(axis=0)
                        for better in np.flatnonzero(loo < best):
                            best[better] = loo[better]
                            choice[better] = (ls, w, ridge, si)
        alphas = np.zeros((n, m))
        for j, (ls, w, ridge, si) in enumerate(choice):
            xs = x * options[si]
            d = max(float((options[si] ** 2).sum()), 1.0)
            k = _kernel(xs, xs, ls, w, d) + ridge * np.eye(n)
            alphas[:, j] = np.linalg.solve(k, ys[:, j])
        return cls(
            x=x,
            y_mean=y_mean,
            y_std=y_std,
            alphas=alphas,
            ls=np.array([c[0] for c in choice]),
            w=np.array([c[1] for c in choice]),
            ridge=np.array([c[2] for c in choice]),
            scales=[options[c[3]] for c in choice],
            loo_rmse=np.sqrt(best) * y_std,
        )

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(x)
        out = np.empty((x.shape[0], self.alphas.shape[1]))
        for j in range(self.alphas.shape[1]):
            scale = self.scales[j]
            d = max(float((scale**2).sum()), 1.0)
            k = _kernel(x * scale, self.x * scale, float(self.ls[j]), float(self.w[j]), d)
            out[:, j] = k @ self.alphas[:, j]
        return out * self.y_std + self.y_mean


@dataclass
class NearestNeighbours:
    """Distance-weighted k-NN in the standardised feature space (the baseline model)."""

    x: np.ndarray
    y: np.ndarray
    k: int = KNN_K

    @classmethod
    def fit(
        cls, x: np.ndarray, y: np.ndarray, scales: Sequence[np.ndarray] | None = None
    ) -> NearestNeighbours:
        return cls(x, y)

    def predict(self, x: np.ndarray) -> np.ndarray:
        d = np.sqrt(_sqdist(np.atleast_2d(x), self.x))
        k = min(self.k, self.x.shape[0])
        idx = np.argsort(d, axis=1)[:, :k]
        w = 1.0 / (np.take_along_axis(d, idx, axis=1) + 1e-6)
        w /= w.sum(axis=1, keepdims=True)
        return np.einsum("ik,ikm->im", w, self.y[idx])


@dataclass
class _Mean:
    """The rows' mean: what a space with too few rows answers."""

    y: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, scales: Sequence[np.ndarray] | None = None) -> _Mean:
        return cls(y.mean(axis=0))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.tile(self.y, (np.atleast_2d(x).shape[0], 1))


MODELS: dict[str, Any] = {"krr": KernelRidge, "knn": NearestNeighbours}


# --- the surrogate ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Guess:
    """The surrogate's answer for one architecture (curve over epochs 1..max_epochs)."""

    val_mse_per_epoch: tuple[float, ...]
    val_mse_constant: float
    s_per_epoch: float
    latency_ms: dict[str, float]
    params: int
    flops: int


def targets(row: Row, kinds: Sequence[str]) -> np.ndarray:
    """Log targets of one row: val MSE per epoch (mean over seeds), latency per kind, s/epoch."""
    curves = np.log([c.val_mse for c in row.curves]).mean(axis=0)
    latency = [math.log(row.latency[k]["median_ms"]) for k in kinds]
    s = math.log(float(np.mean([c.s_per_epoch for c in row.curves])))
    return np.concatenate([curves, latency, [s]])


@dataclass
class _SpaceModel:
    encoder: Encoder
    scaler: _Scaler
    model: Any
    size_encoder: Encoder
    size_scaler: _Scaler
    size_model: Any


def _fit_space(rows: Sequence[Row], kinds: Sequence[str], model: str) -> _SpaceModel:
    specs = [r.arch() for r in rows]
    cls = MODELS[model] if len(rows) >= MIN_ROWS else _Mean
    enc = Encoder(specs)
    x = np.stack([enc.encode(s, r.params, r.flops) for s, r in zip(specs, rows, strict=True)])
    scaler = _Scaler(x)
    # The size features (log params, log FLOPs: the encoder's last two) among the kept columns.
    size = np.flatnonzero(scaler.keep)[None, :] >= x.shape[1] - 2
    only_size = size[0].astype(float)
    scales = (
        [np.ones(only_size.size), only_size, 1.0 + 2.0 * only_size] if only_size.any() else None
    )
    y = np.stack([targets(r, kinds) for r in rows])
    size_enc = Encoder(specs, with_size=False)
    xs = np.stack([size_enc.encode(s) for s in specs])
    size_scaler = _Scaler(xs)
    ys = np.log([[float(r.params), float(r.flops)] for r in rows])
    return _SpaceModel(
        enc,
        scaler,
        cls.fit(scaler(x), y, scales),
        size_enc,
        size_scaler,
        cls.fit(size_scaler(xs), ys),
    )


def exact_size(spec: ArchSpec) -> tuple[int, int] | None:
    """(params, FLOPs) of ``spec`` from :mod:`hpc2edge.models`, or None without torch."""
    try:
        from hpc2edge.models import flops, params
    except ImportError:
        return None
    return params(spec), flops(spec)


class Surrogate:
    """Per-space models fitted on a benchmark's rows; :meth:`predict` answers for any spec of
    the benchmark's spaces and input."""

    def __init__(
        self, benchmark: Benchmark, rows: Sequence[Row] | None = None, model: str = "krr"
    ) -> None:
        if model not in MODELS:
            raise ValueError(f"model: {model!r} is not one of {', '.join(MODELS)}")
        self.benchmark = benchmark
        self.kinds = benchmark.kinds
        self.epochs = benchmark.max_epochs
        rows = list(benchmark.rows.values()) if rows is None else list(rows)
        by_space: dict[str, list[Row]] = {}
        for r in sorted(rows, key=lambda r: r.arch_id):
            by_space.setdefault(r.space, []).append(r)
        self.models = {s: _fit_space(rs, self.kinds, model) for s, rs in by_space.items()}
        constants = [r.curves[0].val_mse_constant for r in rows]
        self.val_mse_constant = float(np.median(constants)) if constants else math.nan

    def predict(
        self, spec: ArchSpec, *, params: int | None = None, flops: int | None = None
    ) -> Guess:
        """Predicted curve, cost and latency of ``spec``; ``params`` / ``flops`` when known
        (else exact from the models with torch, else predicted). ValueError for a spec the
        benchmark does not cover or whose space has no rows."""
        space = self.benchmark.space_of(spec)
        m = self.models.get(space)
        if m is None:
            raise ValueError(
                f"benchmark {self.benchmark.name!r} has no rows of space {space!r} to answer from"
            )
        if params is None or flops is None:
            size = exact_size(spec)
            if size is None:
                xs = m.size_scaler(m.size_encoder.encode(spec)[None, :])
                lp, lf = m.size_model.predict(xs)[0]
                size = (max(1, round(math.exp(lp))), max(1, round(math.exp(lf))))
            params, flops = size
        x = m.scaler(m.encoder.encode(spec, params, flops)[None, :])
        y = np.exp(m.model.predict(x)[0])
        e, k = self.epochs, len(self.kinds)
        return Guess(
            val_mse_per_epoch=tuple(float(v) for v in y[:e]),
            val_mse_constant=self.val_mse_constant,
            s_per_epoch=float(y[e + k]),
            latency_ms={kind: float(y[e + i]) for i, kind in enumerate(self.kinds)},
            params=int(params),
            flops=int(flops),
        )


def fit(benchmark: Benchmark, rows: Sequence[Row] | None = None, model: str = "krr") -> Surrogate:
    """A surrogate of ``benchmark`` fitted on ``rows`` (default: all of them)."""
    return Surrogate(benchmark, rows, model)


# --- held-out quality ---------------------------------------------------------------------------


def kendall_tau(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Kendall's tau-b of two paired samples (ties counted as such); O(n^2). NaN when either
    sample is constant or there are fewer than 2 pairs."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("kendall_tau: expected two 1-d samples of one length")
    n = a.size
    if n < 2:
        return math.nan
    iu = np.triu_indices(n, 1)
    da = np.sign(a[:, None] - a[None, :])[iu]
    db = np.sign(b[:, None] - b[None, :])[iu]
    n0 = da.size
    n1 = int((da == 0).sum())
    n2 = int((db == 0).sum())
    denom = math.sqrt(float(n0 - n1) * float(n0 - n2))
    return float((da * db).sum() / denom) if denom else math.nan


def within(pred: np.ndarray, true: np.ndarray, rel: float = 0.10) -> float:
    """Share of predictions within +-``rel`` of the truth (relative)."""
    pred, true = np.asarray(pred, dtype=float), np.asarray(true, dtype=float)
    return float((np.abs(pred / true - 1.0) <= rel).mean()) if true.size else math.nan


def target_names(benchmark: Benchmark) -> list[str]:
    """What :func:`evaluate` scores: final and first-epoch val MSE, latency per kind, s/epoch."""
    return ["val_mse", "val_mse@1", *(f"latency_ms[{k}]" for k in benchmark.kinds), "s_per_epoch"]


def _truth(row: Row, kinds: Sequence[str]) -> list[float]:
    c = row.curves[0]
    return [c.val_mse[-1], c.val_mse[0], *(row.latency[k]["median_ms"] for k in kinds),
            c.s_per_epoch]  # fmt: skip


def _guess(g: Guess, kinds: Sequence[str]) -> list[float]:
    return [g.val_mse_per_epoch[-1], g.val_mse_per_epoch[0],
            *(g.latency_ms[k] for k in kinds), g.s_per_epoch]  # fmt: skip


def evaluate(
    benchmark: Benchmark,
    folds: int = 5,
    seed: int = 0,
    *,
    space: str | None = None,
    model: str = "krr",
) -> dict[str, dict[str, float]]:
    """Held-out quality of the surrogate on ``space``'s rows (default: the main space):
    ``folds``-fold, rows shuffled by ``seed``; each fold predicted by a surrogate fitted on the
    others (with the rows' recorded params and FLOPs). Per target (:func:`target_names`):
    ``kendall_tau``, ``within_10pct`` (share of predictions within +-10 %) and ``n``. The truth
    is the seed-0 curve, as :meth:`Benchmark.answer` gives it for a table row."""
    space = space or benchmark.spaces[0]
    rows = sorted((r for r in benchmark.rows.values() if r.space == space), key=lambda r: r.arch_id)
    if len(rows) < max(folds, 2):
        raise ValueError(f"{len(rows)} rows of space {space!r}: too few for {folds}-fold")
    if folds < 2:
        raise ValueError("folds: expected at least 2")
    order = np.random.default_rng(seed).permutation(len(rows))
    kinds = benchmark.kinds
    truth = np.array([_truth(rows[i], kinds) for i in order])
    pred = np.empty_like(truth)
    for f in range(folds):
        test = np.arange(len(rows))[f::folds]
        train = np.setdiff1d(np.arange(len(rows)), test)
        s = fit(benchmark, [rows[order[i]] for i in train], model)
        for i in test:
            r = rows[order[i]]
            pred[i] = _guess(s.predict(r.arch(), params=r.params, flops=r.flops), kinds)
    return {
        name: {
            "kendall_tau": kendall_tau(pred[:, j], truth[:, j]),
            "within_10pct": within(pred[:, j], truth[:, j]),
            "n": float(len(rows)),
        }
        for j, name in enumerate(target_names(benchmark))
    }


def seed_agreement(benchmark: Benchmark) -> dict[str, float] | None:
    """How well one seed's final val MSE predicts another's, over rows with 2+ curves: the
    ceiling of any val MSE prediction (``kendall_tau``, ``within_10pct``, ``n``); None with
    fewer than 3 such rows."""
    pairs = [(r.curves[1].val_mse[-1], r.curves[0].val_mse[-1])
             for r in benchmark.rows.values() if len(r.curves) >= 2]  # fmt: skip
    if len(pairs) < 3:
        return None
    a, b = np.array(pairs).T
    return {"kendall_tau": kendall_tau(a, b), "within_10pct": within(a, b), "n": float(len(a))}


__all__ = [
    "Encoder",
    "Guess",
    "KernelRidge",
    "NearestNeighbours",
    "Surrogate",
    "evaluate",
    "fit",
    "kendall_tau",
    "seed_agreement",
    "target_names",
    "within",
]
