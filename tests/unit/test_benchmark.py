"""hpc2edge.sim.benchmark and .surrogate: the file format, its checks, the answers, the surrogate.

Tables here are synthetic (no recording): specs drawn from the cnn3d space, sizes and targets
made up, some following a known function of the architecture, so the surrogate's held-out
quality has a right answer.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from hpc2edge.sim import benchmark as bm
from hpc2edge.sim import surrogate as sur
from hpc2edge.space import get_space
from hpc2edge.space.base import ArchSpec

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
KIND = "cpu-x86"
EPOCHS = 3
PIN = {"frames": 8, "size": 41}


def _specs(count: int, seed: int = 0) -> list[ArchSpec]:
    space = get_space("cnn3d")
    out: dict[str, ArchSpec] = {}
    i = 0
    while len(out) < count:
        spec = space.sample(seed * 100_000 + i).with_input(PIN["frames"], PIN["size"])
        out.setdefault(spec.arch_id, spec)
        i += 1
    return list(out.values())


def _size(spec: ArchSpec) -> tuple[int, int]:
    """Made-up but structured params and FLOPs."""
    ch = [1, *spec.params["channels"]]
    ks, kt = spec.params["kernel_s"], spec.params["kernel_t"]
    params = sum(ch[i] * ch[i + 1] * ks[i] ** 2 * kt[i] for i in range(len(ks)))
    params += sum(spec.params["head_hidden"]) * ch[-1]
    flops = sum(
        2 * ch[i] * ch[i + 1] * ks[i] ** 2 * kt[i] * (8 * 41 * 41) // 8**i for i in range(len(ks))
    )
    return params, max(flops, 1)


def _known(spec: ArchSpec) -> tuple[list[float], float, float]:
    """(val MSE curve, latency ms, s per epoch): smooth functions of the architecture."""
    params, flops = _size(spec)
    blocks = len(spec.params["channels"])
    final = 0.004 * (1.0 + 0.6 * blocks) * (params / 1e4) ** -0.15
    if spec.params["batch_norm"]:
        final *= 0.7
    curve = [final * (1.0 + 1.5 / (e + 1)) for e in range(EPOCHS)]
    latency = 0.2 + flops / 2e7 * (1.3 if spec.params["activation"] == "gelu" else 1.0)
    return curve, latency, 0.5 + flops / 5e7


def _row(spec: ArchSpec, curve: list[float], latency: float, spe: float, seeds: int = 1) -> bm.Row:
    params, flops = _size(spec)
    curves = [
        bm.Curve(
            seed=s,
            val_mse=tuple(v * (1.0 + 0.2 * s) for v in curve),
            train_loss=tuple(v * 1.1 for v in curve),
            s_per_epoch=spe,
            val_mse_constant=0.036,
        )
        for s in range(seeds)
    ]
    stats = {"median_ms": latency, "ci95_ms": [latency * 0.95, latency * 1.05],
             "p90_ms": latency * 1.1, "n": 40, "stopped_by": "ci"}  # fmt: skip
    return bm.Row(spec.arch_id, "cnn3d", spec.to_dict(), params, flops, {KIND: stats},
                  tuple(curves))  # fmt: skip


def _header() -> dict:
    return {"format": bm.FORMAT, "name": "test", "spaces": ["cnn3d"], "pin": dict(PIN),
            "max_epochs": EPOCHS, "latency": {KIND: {"backend": "onnxruntime"}},
            "created": "2026-01-01T00:00:00+00:00"}  # fmt: skip


def make_bench(count: int = 60, *, shuffled: bool = False, two_seeds: int = 5) -> bm.Benchmark:
    specs = _specs(count)
    known = [_known(s) for s in specs]
    if shuffled:
        order = np.random.default_rng(1).permutation(count)
        known = [known[i] for i in order]
    bench = bm.Benchmark(_header())
    for i, (spec, (curve, latency, spe)) in enumerate(zip(specs, known, strict=True)):
        bench.add(_row(spec, curve, latency, spe, seeds=2 if i < two_seeds else 1))
    return bench


@pytest.fixture(autouse=True)
def no_torch_sizes(monkeypatch):
    """Unseen specs get predicted sizes (exact ones need torch, tested once below)."""
    monkeypatch.setattr(sur, "exact_size", lambda spec: None)


@pytest.fixture(scope="module")
def bench() -> bm.Benchmark:
    return make_bench()


# --- files ----------------------------------------------------------------------------------------


def test_round_trip_is_exact_and_deterministic(bench, tmp_path: Path) -> None:
    a, b = tmp_path / "a.json.gz", tmp_path / "b.json.gz"
    bench.save(a)
    loaded = bm.load(a)
    assert loaded.header == bench.header
    assert loaded.rows == bench.rows
    loaded.save(b)
    assert a.read_bytes() == b.read_bytes()  # sorted rows, no gzip timestamp
    rows = json.loads(gzip.decompress(a.read_bytes()))["rows"]
    assert [r["arch_id"] for r in rows] == sorted(r["arch_id"] for r in rows)
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left nothing behind


def _write(path: Path, data: object) -> Path:
    text = data if isinstance(data, str) else json.dumps(data)
    path.write_bytes(gzip.compress(text.encode()))
    return path


def _doc(bench: bm.Benchmark) -> dict:
    return json.loads(json.dumps(bench.to_json()))


def _bad(tmp_path: Path, change) -> str:
    doc = _doc(make_bench(6, two_seeds=0))
    result = change(doc)
    path = _write(tmp_path / "bad.json.gz", doc if result is None else result)
    with pytest.raises(bm.BenchmarkError) as info:
        bm.load(path)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400
    return message


def test_hostile_files_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "plain.json.gz").write_text("{}")
    with pytest.raises(bm.BenchmarkError, match="not a gzip file"):
        bm.load(tmp_path / "plain.json.gz")
    with pytest.raises(bm.BenchmarkError, match="cannot read"):
        bm.load(tmp_path / "missing.json.gz")
    assert "not valid JSON" in _bad(tmp_path, lambda d: "{not json")

    def fmt(d):
        d["header"]["format"] = "hpc2edge-benchmark/2"

    assert "header.format" in _bad(tmp_path, fmt)

    def nan(d):
        return json.dumps(d).replace('"median_ms": ', '"median_ms": NaN, "x": ', 1)

    assert "NaN" in _bad(tmp_path, nan)

    def negative(d):
        d["rows"][0]["curves"][0]["val_mse"][1] = -0.5

    assert "val_mse[1]" in _bad(tmp_path, negative)

    def infinite(d):
        d["rows"][0]["curves"][0]["s_per_epoch"] = 1e999  # json.dumps writes Infinity

    assert _bad(tmp_path, infinite)

    def wrong_type(d):
        d["rows"][0]["params"] = "12"

    assert "rows[0].params" in _bad(tmp_path, wrong_type)

    def short_curve(d):
        d["rows"][0]["curves"][0]["train_loss"].pop()

    assert "train_loss" in _bad(tmp_path, short_curve)

    def many_rows(d):
        d["rows"] = [{}] * (bm.MAX_ROWS + 1)

    assert "over the limit" in _bad(tmp_path, many_rows)

    def long_string(d):
        d["rows"][0]["latency"][KIND]["stopped_by"] = "x" * 100_000

    assert "stopped_by" in _bad(tmp_path, long_string)

    def wrong_id(d):
        d["rows"][0]["arch_id"] = d["rows"][1]["arch_id"]

    assert "not the id of the row's spec" in _bad(tmp_path, wrong_id)

    def edited_spec(d):
        d["rows"][0]["spec"]["params"]["activation"] = "tanh"

    assert "rows[0].spec" in _bad(tmp_path, edited_spec)

    def other_input(d):
        d["header"]["pin"]["size"] = 64

    assert "pinned input" in _bad(tmp_path, other_input)

    def extra_field(d):
        d["rows"][0]["curves"][0]["bonus"] = 1

    assert "unknown field 'bonus'" in _bad(tmp_path, extra_field)

    def ci(d):
        median = d["rows"][0]["latency"][KIND]["median_ms"]
        d["rows"][0]["latency"][KIND]["ci95_ms"] = [2 * median, 3 * median]  # median outside

    assert "ci95_ms" in _bad(tmp_path, ci)

    def not_a_list(d):
        d["rows"] = {"a": 1}

    assert "rows: expected a list" in _bad(tmp_path, not_a_list)


def test_a_gzip_bomb_is_refused_without_inflating_it(tmp_path: Path) -> None:
    path = tmp_path / "bomb.json.gz"
    path.write_bytes(gzip.compress(b" " * (bm.MAX_FILE_BYTES + 10), compresslevel=1))
    with pytest.raises(bm.BenchmarkError, match="MiB decompressed"):
        bm.load(path)


def test_names_and_unknown_names() -> None:
    with pytest.raises(bm.BenchmarkError, match="no benchmark named 'nope'"):
        bm.load("nope")
    for name in bm.names():  # what is shipped loads and passes every check
        assert bm.load(name).rows


# --- answers ----------------------------------------------------------------------------------


def test_a_table_row_answers_for_its_architecture(bench) -> None:
    row = next(r for r in bench.rows.values() if len(r.curves) == 1)
    a = bench.answer(row.arch(), EPOCHS)
    assert a.source == "table"
    assert a.val_mse_per_epoch == row.curves[0].val_mse
    assert a.val_mse == row.curves[0].val_mse[-1]
    assert a.latency_ms == {KIND: row.latency[KIND]["median_ms"]}
    assert (a.params, a.flops, a.s_per_epoch) == (row.params, row.flops, row.curves[0].s_per_epoch)
    assert bench.answer(row.arch(), EPOCHS) == a  # deterministic
    assert bench.kinds == (KIND,) and bench.max_epochs == EPOCHS


def test_epochs_are_clipped_and_checked(bench) -> None:
    spec = next(iter(bench.rows.values())).arch()
    assert len(bench.answer(spec, 1).val_mse_per_epoch) == 1
    assert len(bench.answer(spec, 100).val_mse_per_epoch) == EPOCHS
    with pytest.raises(ValueError, match="epochs"):
        bench.answer(spec, 0)
    with pytest.raises(ValueError, match="seed"):
        bench.answer(spec, 1, seed=-1)


def test_seed_noise_rule(bench) -> None:
    two = next(r for r in bench.rows.values() if len(r.curves) == 2)
    one = next(r for r in bench.rows.values() if len(r.curves) == 1)
    # Recorded seeds answer with their own curve.
    assert bench.answer(two.arch(), EPOCHS, seed=1).val_mse_per_epoch == two.curves[1].val_mse
    # Other seeds: the seed-0 curve times one factor, the same on every call.
    a = bench.answer(one.arch(), EPOCHS, seed=7)
    ratios = np.array(a.val_mse_per_epoch) / np.array(one.curves[0].val_mse)
    assert np.allclose(ratios, ratios[0]) and ratios[0] != 1.0
    assert bench.answer(one.arch(), EPOCHS, seed=7) == a
    b = bench.answer(one.arch(), EPOCHS, seed=8)
    assert b.val_mse != a.val_mse
    assert b.latency_ms == a.latency_ms  # latency does not depend on the training seed
    # seed_sigma: the made-up second seeds are 1.2 x the first: |log 1.2| / sqrt(2) each.
    assert bench.seed_sigma == pytest.approx(math.log(1.2) / math.sqrt(2))
    assert make_bench(8, two_seeds=0).seed_sigma == 0.0


def test_an_unseen_architecture_is_answered_by_the_surrogate(bench) -> None:
    unseen = next(s for s in _specs(200, seed=7) if s.arch_id not in bench.rows)
    a = bench.answer(unseen, 2)
    assert a.source == "surrogate"
    assert len(a.val_mse_per_epoch) == 2 and all(v > 0 for v in a.val_mse_per_epoch)
    assert set(a.latency_ms) == {KIND} and a.latency_ms[KIND] > 0
    assert a.params > 0 and a.flops > 0 and a.s_per_epoch > 0
    assert bench.answer(unseen, 2) == a
    noisy = bench.answer(unseen, 2, seed=3)
    assert noisy.val_mse != a.val_mse and noisy.source == "surrogate"
    assert bench.surrogate() is bench.surrogate()  # fitted once


def test_specs_the_table_does_not_cover_are_value_errors(bench) -> None:
    spec = next(iter(bench.rows.values())).arch()
    with pytest.raises(ValueError, match="covers inputs 8 x 41 x 41 only"):
        bench.answer(spec.with_input(16, 64), 1)
    swin = get_space("swin3d-input").sample(0).with_input(8, 41)
    with pytest.raises(ValueError, match="does not cover"):
        bench.answer(swin, 1)
    with pytest.raises(ValueError):
        bench.answer("not a spec", 1)  # type: ignore[arg-type]


def test_exact_sizes_come_from_the_models(bench, monkeypatch) -> None:
    pytest.importorskip("torch")
    monkeypatch.undo()  # the real exact_size
    from hpc2edge.models import flops, params

    unseen = next(s for s in _specs(200, seed=9) if s.arch_id not in bench.rows)
    guess = bench.surrogate().predict(unseen)
    assert (guess.params, guess.flops) == (params(unseen), flops(unseen))


# --- the surrogate ----------------------------------------------------------------------------


def test_kendall_tau_by_hand() -> None:
    assert sur.kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert sur.kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))  # tau-b
    assert sur.kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(sur.kendall_tau([1, 1], [1, 2]))
    assert sur.within(np.array([1.05, 1.2, 0.91]), np.array([1.0, 1.0, 1.0])) == pytest.approx(
        2 / 3
    )


def test_features_come_from_the_specs_own_parameters() -> None:
    specs = _specs(30)
    enc = sur.Encoder(specs)
    names = enc.names()
    assert "activation=gelu" in names and "batch_norm" in names
    assert "len(channels)" in names and "channels[3]" in names and "log(flops)" in names
    x = enc.encode(specs[0], 1000, 10_000)
    assert x.shape == (len(names),) and np.isfinite(x).all()


@pytest.mark.parametrize("model", list(sur.MODELS))
def test_surrogate_learns_a_known_function(model) -> None:
    quality = sur.evaluate(make_bench(80), folds=5, model=model)
    assert set(quality) == set(sur.target_names(make_bench(4)))
    floor = 0.75 if model == "krr" else 0.4  # k-NN is the weaker baseline
    for name in ("val_mse", f"latency_ms[{KIND}]", "s_per_epoch"):
        assert quality[name]["kendall_tau"] > floor, (name, quality[name])
    if model == "krr":
        assert quality[f"latency_ms[{KIND}]"]["within_10pct"] > 0.5


def test_surrogate_finds_nothing_in_shuffled_targets() -> None:
    quality = sur.evaluate(make_bench(80, shuffled=True), folds=5)
    for name in ("val_mse", f"latency_ms[{KIND}]", "s_per_epoch"):
        assert abs(quality[name]["kendall_tau"]) < 0.25, (name, quality[name])


def test_evaluate_needs_rows() -> None:
    with pytest.raises(ValueError, match="too few"):
        sur.evaluate(make_bench(3), folds=5)


# --- the recorder's plan -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recorder():
    sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location(
        "record_benchmark", ROOT / "bench" / "record_benchmark.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["record_benchmark"] = module
    spec.loader.exec_module(module)
    return module


def test_the_plan_is_seeded_distinct_and_interleaved(recorder) -> None:
    jobs = recorder.plan(40, 4, 8, PIN)
    assert jobs == recorder.plan(40, 4, 8, PIN)
    cnn = [j for j in jobs if j.space == "cnn3d"]
    swin = [j for j in jobs if j.space == "swin3d-input"]
    assert len(cnn) == 40 and len(swin) == 4
    assert cnn[0].spec == get_space("cnn3d").baseline().with_input(8, 41)
    assert len({j.spec.arch_id for j in jobs}) == len(jobs)
    assert sum(j.seeds == (0, 1) for j in jobs) == 8
    assert jobs.index(swin[0]) < len(jobs) // 2  # not all at the end
    for j in jobs:
        assert (j.spec.frames, j.spec.size) == (8, 41)
        get_space(j.space).validate(j.spec)
    # A longer plan starts with the shorter one's cnn3d networks: resuming with a larger --n
    # keeps what is recorded.
    longer = [j.spec for j in recorder.plan(80, 0, 0, PIN)]
    assert longer[:40] == [j.spec for j in cnn]
