"""bench/record_benchmark.py for real: two rows recorded (real export, ONNX Runtime measurement,
training child) with one epoch each, in two sittings: the second resumes and keeps the first."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest

from hpc2edge.sim import benchmark as bm

pytestmark = pytest.mark.slow  # real trainings in child processes

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def recorder():
    sys.path.insert(0, str(ROOT / "bench"))
    path = ROOT / "bench" / "record_benchmark.py"
    spec = importlib.util.spec_from_file_location("record_benchmark", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["record_benchmark"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def small_problem(recorder, monkeypatch):
    """The demo problem with fewer scan lines: the same code path, a quarter of the data."""
    real = recorder.problem

    def problem():
        p = real()
        return dataclasses.replace(p, synth=dataclasses.replace(p.synth, objects=3, lines=32))

    monkeypatch.setattr(recorder, "problem", problem)


def test_records_rows_and_resumes(
    recorder, small_problem, monkeypatch, tmp_path: Path, capsys
) -> None:
    monkeypatch.chdir(tmp_path)  # relative paths, as a user types them
    out = Path("t.json.gz")
    common = ["--out", str(out), "--swin", "0", "--seed-subset", "0", "--max-epochs", "1",
              "--no-baseline", "--data", "data"]  # fmt: skip
    assert recorder.main([*common, "--n", "1"]) == 0
    first = bm.load(out)
    assert len(first.rows) == 1
    assert first.header["max_epochs"] == 1 and first.header["pin"] == {"frames": 8, "size": 41}
    assert recorder.main([*common, "--n", "2"]) == 0
    err = capsys.readouterr().err
    assert "1 rows in" in err and "1 to do" in err  # the second sitting resumed
    second = bm.load(out)
    assert len(second.rows) == 2
    old = next(iter(first.rows))
    assert second.rows[old] == first.rows[old]  # kept as recorded
    for row in second.rows.values():
        (kind,) = second.kinds
        assert row.latency[kind]["median_ms"] > 0 and row.latency[kind]["n"] >= 20
        (curve,) = row.curves
        assert curve.seed == 0 and len(curve.val_mse) == 1 and curve.s_per_epoch > 0
        a = second.answer(row.arch(), 5)
        assert a.source == "table" and a.val_mse == curve.val_mse[0]
    assert len(second.header["sessions"]) == 2
    # Nothing left to do: a third sitting records nothing; the report prints without a surrogate.
    assert recorder.main([*common, "--n", "2"]) == 0
    assert bm.load(out).rows == second.rows
    assert recorder.main(["--out", str(out), "--report"]) == 0
    assert "cnn3d: 2 rows" in capsys.readouterr().out
    # Latencies measured again in one sitting replace the old ones; the curves stay.
    assert recorder.main(["--out", str(out), "--remeasure-latency"]) == 0
    third = bm.load(out)
    (kind,) = third.kinds
    assert third.header["latency"][kind]["remeasured"]["rows"] == 2
    for arch_id, row in third.rows.items():
        assert row.curves == second.rows[arch_id].curves
        assert row.latency[kind]["n"] >= 20
    # Another CPU: refused unless asked for; then training times are calibrated on rows
    # already recorded, and the latencies are flagged until measured again in one sitting.
    real_record = recorder.device_record

    def another_cpu(kind):
        record = real_record(kind)
        return {**record, "device": {**record["device"], "cpu_model": "Another CPU 9000"}}

    monkeypatch.setattr(recorder, "device_record", another_cpu)
    with pytest.raises(SystemExit, match="pass --another-cpu"):
        recorder.main([*common, "--n", "3"])
    assert recorder.main([*common, "--n", "3", "--another-cpu"]) == 0
    fourth = bm.load(out)
    assert len(fourth.rows) == 3
    calibration = fourth.header["sessions"][-1]["calibration"]
    assert calibration["cpu_model"] == "Another CPU 9000" and calibration["speed_factor"] > 0
    assert [c["arch_id"] for c in calibration["rows"]] == list(third.rows)[:2]
    assert fourth.header["latency"][kind]["cpus"][-1] == "Another CPU 9000"
    assert recorder.main(["--out", str(out), "--report"]) == 0
    assert "WARNING: latencies from more than one machine" in capsys.readouterr().out
    assert recorder.main(["--out", str(out), "--remeasure-latency"]) == 0
    fifth = bm.load(out)
    assert "cpus" not in fifth.header["latency"][kind]
    assert fifth.header["latency"][kind]["device"]["cpu_model"] == "Another CPU 9000"
    monkeypatch.setattr(recorder, "device_record", real_record)
    # Another problem (here: other data) is refused, not mixed in.
    small = recorder.problem

    def other_data():
        p = small()
        return dataclasses.replace(p, synth=dataclasses.replace(p.synth, seed=5))

    monkeypatch.setattr(recorder, "problem", other_data)
    with pytest.raises(SystemExit, match="another data"):
        recorder.main([*common[:-1], str(tmp_path / "other-data"), "--n", "3"])
