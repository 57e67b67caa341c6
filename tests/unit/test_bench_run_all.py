"""bench/run_all.py: the README's summary table is generated from results.json, nothing else."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run_all():
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "bench" / "run_all.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_all"] = module
    spec.loader.exec_module(module)
    return module


RESULTS = {
    "generated_utc": "2026-11-25T20:00:00+00:00",
    "machine": {"cpu": "Test CPU", "cpu_count": 2, "python": "3.11.7", "load_avg_1m": 0.5},
    "benchmarks": {
        "dispatch": {"ok": True, "headline": {"task_round_trip_p50_ms": 1.85,
                                              "redis_ping_p50_ms": 0.085,
                                              "ratio_task_over_ping_p50": 21.76}},
        "loader": {"ok": True, "headline": {"reference_samples_per_s": 2111,
                                            "ratio_first_pass": 7.6, "ratio_later_passes": 21.6}},
        "search": {"ok": False, "exit_code": 3, "output_tail": "boom"},
    },
}  # fmt: skip


def test_table_rows_come_from_the_results(run_all) -> None:
    table = run_all.render_table(RESULTS)
    assert (
        "| dispatch | edge task round trip p50 / raw TLS PING p50 | 1.85 ms / 0.085 ms (21.8x) |"
        in table
    )
    assert (
        "| loader | samples/s vs the reference reader, first / later passes | 7.60x / 21.6x |"
        in table
    )
    assert "| search | failed | exit 3 |" in table
    assert "Test CPU, 2 CPUs" in table


def test_readme_is_rewritten_between_the_markers_only(run_all, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\nbefore\n{run_all.START}\nold table\n{run_all.END}\nafter\n")
    assert run_all.update_readme(RESULTS, readme)
    text = readme.read_text()
    assert text.startswith("# x\nbefore\n") and text.endswith("\nafter\n")
    assert "old table" not in text and "21.8x" in text
    assert run_all.update_readme(RESULTS, readme)  # idempotent
    assert readme.read_text() == text
    other = tmp_path / "OTHER.md"
    other.write_text("no markers\n")
    assert not run_all.update_readme(RESULTS, other)
    assert other.read_text() == "no markers\n"


def test_every_benchmark_script_exists_and_takes_json(run_all) -> None:
    for bench in run_all.BENCHES:
        script = ROOT / "bench" / f"{bench.name}.py"
        assert script.is_file()
        assert bench.json_flag.lstrip("-") in script.read_text()


def test_orchestrator_row_reads_the_largest_trial_count(run_all) -> None:
    report = {
        "settings": {"sampler": "tpe"},
        "versions": {"baseline": {"ref": "c1a982f"}, "working": {}},
        "ratios_working_over_baseline": {"200": {"loop_thread_cpu": 0.125}},
        "goal": {"goal_loop_ms": 50.0, "trials": 200,
                 "loop_thread_cpu_ms": {"baseline": 320.0, "working": 40.0}},
    }  # fmt: skip
    bench = next(b for b in run_all.BENCHES if b.name == "orchestrator")
    entry = {"ok": True, "headline": bench.headline(report)}
    results = {**RESULTS, "benchmarks": {"orchestrator": entry}}
    assert (
        "| orchestrator | loop thread CPU per trial at 200 trials (tpe), working tree / c1a982f "
        "| 40 ms / 320 ms (0.12x); goal <= 50 ms at 2000 trials |" in run_all.render_table(results)
    )
