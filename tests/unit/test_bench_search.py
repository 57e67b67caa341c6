"""bench/search.py end to end at a tiny scale: its tables, its JSON, and run_all's headline of it.

Runs the script as a user does, on a formula-made benchmark file (tests/support/benchmarks.py),
every sampler but GP (scipy may be absent), two seeds, and the fleet-scale part on the journal
storage; then reads the JSON with bench/run_all.py's headline function and README table.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ..support.benchmarks import formula_benchmark

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _run_all():
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "bench" / "run_all.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_all"] = module
    spec.loader.exec_module(module)
    return module


def test_bench_search_prints_both_tables_and_run_all_reads_its_json(tmp_path: Path) -> None:
    bench = tmp_path / "formula.json.gz"
    formula_benchmark(40).save(bench)
    out = tmp_path / "search.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "search.py"), "--benchmark", str(bench),
         "--seeds", "2", "--trials", "4,6", "--samplers", "random,tpe,nsga2,paper",
         "--fleet-trials", "24", "--fleet-workers", "4", "--fleet-units", "2",
         "--fleet-storages", "journal", "--json", str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "6 trials (hypervolume as a share of the log box" in proc.stdout
    assert "default sampler (tpe) at 64 trials" not in proc.stdout  # no 64-trial budget asked
    assert "fleet scale: 24 trials" in proc.stdout and "journal" in proc.stdout
    report = json.loads(out.read_text())
    row = report["samplers"]["6"]["samplers"]
    assert set(row) == {"random", "tpe", "nsga2", "paper"}
    assert row["random"]["hv_ratio_vs_random"]["mean"] == pytest.approx(1.0)
    for s in row.values():
        assert 0 < s["hv_share_mean"] < 1
        head = s["headline_speedup"]
        if head["n"]:  # a geometric mean lies inside its CI
            assert head["ci95"][0] <= head["geomean"] <= head["ci95"][1]
    fleet = report["fleet"]["storages"]["journal"]
    assert fleet["cpu_ms_per_trial"] > 0 and 0 <= fleet["train_busy_share"] <= 1

    run_all = _run_all()
    headline = run_all._search(report)
    assert headline["trials"] == 6 and headline["fleet_trials"] == 24
    results = {
        "generated_utc": "2026-12-02T00:00:00+00:00",
        "machine": {"cpu": "Test CPU", "cpu_count": 2, "python": "3.11.7", "load_avg_1m": 0.5},
        "benchmarks": {"search": {"ok": True, "headline": headline}},
    }
    table = run_all.render_table(results)
    assert "hypervolume TPE / random at 6 simulated trials (2 seeds, formula)" in table
    assert "orchestrator at 24 simulated trials, 4 train workers" in table
