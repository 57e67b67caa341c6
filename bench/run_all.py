"""Run every benchmark of the project, write ``bench/results.json``, regenerate the README's table.

Each benchmark is its own script (``bench/<name>.py``) that measures two things side by side in one
run and writes its full figures with ``--json``. This runs them one after the other (never in
parallel: they would time each other), keeps each one's JSON under ``benchmarks.<name>`` and the
headline figures under ``headline``, with a description of the machine, in ``bench/results.json``.
The README's summary table (between ``<!-- bench:summary:start -->`` and ``:end -->``) is
generated from that file, so the figures in the README are the ones on record.

Usage::

    python bench/run_all.py                     # everything (about 40 minutes on 2 CPU cores)
    python bench/run_all.py --only dispatch,loader
    python bench/run_all.py --readme-only       # regenerate the README table from results.json

A benchmark that fails is recorded with its exit code and the tail of its output, the others
still run, and the exit status is non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results.json"
README = ROOT / "README.md"
START = "<!-- bench:summary:start -->"
END = "<!-- bench:summary:end -->"


@dataclass(frozen=True)
class Bench:
    """One benchmark script: its arguments and how to read its headline figures."""

    name: str
    args: tuple[str, ...]
    json_flag: str
    headline: Callable[[dict[str, Any]], dict[str, Any]]
    what: str


def _dispatch(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "task_round_trip_p50_ms": r["task_round_trip_ms"]["p50"],
        "redis_ping_p50_ms": r["redis_ping_ms"]["p50"],
        "ratio_task_over_ping_p50": r["ratio_p50"],
    }


def _loader(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "reference_samples_per_s": r["samples_per_s"]["reference"]["best"],
        "ratio_first_pass": r["ratio_first_pass"],
        "ratio_later_passes": r["ratio_later_passes"],
    }


def _repeatability(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "protocol_max_deviation_from_median": r["protocol_max_deviation_from_median"],
        "protocol_spread": r["protocol_spread"],
        "paper_style_spread": r["paper_style_spread"],
    }


def _models(r: dict[str, Any]) -> dict[str, Any]:
    rows = {row["name"]: row for row in r["rows"]}
    base = r["rows"][0]
    return {
        row["name"]: {
            "params": row["params"],
            "gflops": row["gflops"],
            "forward_ms": row["forward_ms_median"],
            "x_faster_than_baseline": base["forward_ms_median"] / row["forward_ms_median"],
        }
        for row in rows.values()
    }


def _search(r: dict[str, Any]) -> dict[str, Any]:
    budget = "64" if "64" in r["samplers"] else max(r["samplers"], key=int)
    tpe = r["samplers"][budget]["samplers"]["tpe"]
    fleet = r.get("fleet") or {}
    storages = fleet.get("storages", {})
    worst = max(storages.values(), key=lambda f: f["train_idle_while_loop_busy_share"],
                default=None)  # fmt: skip
    return {
        "benchmark": r["benchmark"]["name"],
        "seeds": r["settings"]["seeds"],
        "trials": int(budget),
        "hv_ratio_tpe_over_random": tpe["hv_ratio_vs_random"]["mean"],
        "hv_ratio_tpe_over_random_ci95": tpe["hv_ratio_vs_random"]["ci95"],
        "headline_speedup_tpe_geomean": tpe["headline_speedup"]["geomean"],
        "headline_speedup_tpe_ci95": tpe["headline_speedup"]["ci95"],
        "fleet_trials": fleet.get("trials"),
        "fleet_train_workers": fleet.get("train_workers"),
        "fleet_cpu_ms_per_trial": {k: f["cpu_ms_per_trial"] for k, f in storages.items()},
        "fleet_train_idle_while_loop_busy_share": (
            None if worst is None else worst["train_idle_while_loop_busy_share"]
        ),
        # the steady state: from the moment every worker first had a task
        "fleet_train_idle_while_loop_busy_after_fill_share": (
            None if worst is None else worst.get("train_idle_while_loop_busy_after_fill_share")
        ),
        "fleet_edge_idle_while_ready_s": max(
            (f["edge_idle_while_ready_s"] for f in storages.values()), default=None
        ),
    }


def _orchestrator(r: dict[str, Any]) -> dict[str, Any]:
    goal = r["goal"]
    n = goal["trials"]  # 2000, or the largest count measured (run_all passes --quick)
    ms = goal["loop_thread_cpu_ms"]
    return {
        "trials": n,
        "sampler": r["settings"]["sampler"],
        "baseline_ref": (r["versions"].get("baseline") or {}).get("ref"),
        "loop_thread_ms_per_trial_baseline": ms.get("baseline"),
        "loop_thread_ms_per_trial_working": ms.get("working"),
        "ratio_working_over_baseline": r["ratios_working_over_baseline"]
        .get(str(n), {})
        .get("loop_thread_cpu"),
        "goal_loop_ms": goal["goal_loop_ms"],
        # The loop without Optuna's ask and suggest: what the orchestrator's own code costs.
        **{
            f"loop_without_sampler_ms_per_trial_{run['version']}": run["ms_per_trial"].get(
                "loop_without_sampler"
            )
            for run in r.get("runs", [])
            if run.get("ok") and run.get("trials") == n
        },
    }


BENCHES = (
    Bench("dispatch", ("--n", "500"), "--json", _dispatch,
          "edge task round trip through Celery vs a raw TLS PING"),
    Bench("repeatability", ("--runs", "5"), "--json", _repeatability,
          "the edge protocol's medians over 5 runs vs the paper's 10-run mean"),
    Bench("loader", (), "--json", _loader, "LPBFReader vs a reference-style HDF5 reader"),
    Bench("models", ("--repeats", "3"), "--json", _models, "forward time on CPU vs the baseline"),
    Bench("search", ("--seeds", "10", "--trials", "32,64", "--fleet-trials", "1000"), "--json",
          _search, "samplers vs random on the simulator; the orchestrator at fleet scale"),
    Bench("orchestrator", ("--quick",), "--json", _orchestrator,
          "the orchestrator's own CPU per trial, working tree vs today's main"),
)  # fmt: skip


def machine() -> dict[str, Any]:
    from hpc2edge.latency.telemetry import cpu_model

    cpu = cpu_model() or platform.processor() or platform.machine()

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_avg_1m": os.getloadavg()[0],
        "versions": {n: version(n) for n in ("torch", "onnxruntime", "optuna", "celery", "redis")},
    }


def run(bench: Bench, python: str, timeout_s: float) -> dict[str, Any]:
    """Run one benchmark script; its JSON, or the failure."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{bench.name}-") as tmp:
        out = Path(tmp) / "out.json"
        argv = [python, str(ROOT / "bench" / f"{bench.name}.py"), *bench.args, bench.json_flag,
                str(out)]  # fmt: skip
        print(f"== {bench.name}: {' '.join(argv[1:])}", flush=True)
        t0 = time.monotonic()
        try:
            proc = subprocess.run(
                argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": f"timed out after {timeout_s:.0f} s"}
        took = time.monotonic() - t0
        print(proc.stdout[-4000:], flush=True)
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stdout + proc.stderr)[-3000:]
            print(tail, file=sys.stderr)
            return {"ok": False, "exit_code": proc.returncode, "output_tail": tail, "run_s": took}
        data = json.loads(out.read_text())
    return {
        "ok": True,
        "command": f"python bench/{bench.name}.py {' '.join(bench.args)}".strip(),
        "run_s": took,
        "headline": bench.headline(data),
        "result": data,
    }


def _x(v: float) -> str:
    return f"{v:.1f}x" if v >= 10 else f"{v:.2f}x"


def summary_rows(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(benchmark, figure, value) rows for the README, from ``results.json``."""
    rows: list[tuple[str, str, str]] = []
    b = results.get("benchmarks", {})

    def ok(name: str) -> dict[str, Any] | None:
        entry = b.get(name)
        return entry["headline"] if entry and entry.get("ok") else None

    if h := ok("dispatch"):
        rows.append(("dispatch", "edge task round trip p50 / raw TLS PING p50",
                     f"{h['task_round_trip_p50_ms']:.2f} ms / {h['redis_ping_p50_ms']:.3f} ms "
                     f"({_x(h['ratio_task_over_ping_p50'])})"))  # fmt: skip
    if h := ok("repeatability"):
        rows.append(("repeatability", "largest deviation of 5 protocol medians from their median",
                     f"{h['protocol_max_deviation_from_median']:.1%} (goal within 5 %); "
                     f"paper-style spread {h['paper_style_spread']:.1%}"))  # fmt: skip
    if h := ok("loader"):
        rows.append(("loader", "samples/s vs the reference reader, first / later passes",
                     f"{_x(h['ratio_first_pass'])} / {_x(h['ratio_later_passes'])}"))  # fmt: skip
    if h := ok("models"):
        smallest = h.get("swin3d smallest") or next(iter(h.values()))
        rows.append(("models", "smallest swin3d vs Video Swin-T, forward on CPU",
                     f"{_x(smallest['x_faster_than_baseline'])} faster, "
                     f"{smallest['params'] / 1e6:.2f} M params"))  # fmt: skip
    if h := ok("search"):
        lo, hi = h["hv_ratio_tpe_over_random_ci95"]
        ratio = f"{_x(h['hv_ratio_tpe_over_random'])} (95 % CI {lo:.2f}-{hi:.2f})"
        rows.append(("search", f"hypervolume TPE / random at {h['trials']} simulated trials "
                     f"({h['seeds']} seeds, {h['benchmark']})", ratio))  # fmt: skip
        speedup = h["headline_speedup_tpe_geomean"]
        if speedup == speedup:  # not NaN: some run had one
            lo, hi = h["headline_speedup_tpe_ci95"]
            rows.append(("search", "speed-up of the fastest front member >= 1.35x more accurate "
                         "than the trained baseline (TPE, geometric mean over seeds)",
                         f"{_x(speedup)} (95 % CI {lo:.2f}-{hi:.2f}; paper: ~8.8x)"))  # fmt: skip
        if h["fleet_trials"]:
            cpu = ", ".join(f"{k} {v:.0f} ms" for k, v in h["fleet_cpu_ms_per_trial"].items())
            idle = f"{h['fleet_train_idle_while_loop_busy_share']:.2%}"
            steady = h.get("fleet_train_idle_while_loop_busy_after_fill_share")
            if steady is not None:
                idle += f" ({steady:.2%} after the fleet filled)"
            rows.append(("search", f"orchestrator at {h['fleet_trials']} simulated trials, "
                         f"{h['fleet_train_workers']} train workers: CPU per trial; worker time "
                         "idle while the loop was busy", f"{cpu}; {idle}"))  # fmt: skip
    if h := ok("orchestrator"):
        ms = [h["loop_thread_ms_per_trial_working"]]
        if h["baseline_ref"] is not None:
            ms.append(h["loop_thread_ms_per_trial_baseline"])
        value = " / ".join("failed" if v is None else f"{v:.0f} ms" for v in ms)
        if h["ratio_working_over_baseline"] is not None:
            value += f" ({_x(h['ratio_working_over_baseline'])})"
        rows.append(("orchestrator",
                     f"loop thread CPU per trial at {h['trials']} trials ({h['sampler']}), "
                     f"working tree / {h['baseline_ref'] or 'no baseline'}",
                     f"{value}; goal <= {h['goal_loop_ms']:g} ms at 2000 trials"))  # fmt: skip
        own = [h.get(f"loop_without_sampler_ms_per_trial_{v}") for v in ("working", "baseline")]
        if own[0] is not None:
            rows.append(("orchestrator",
                         "the same without Optuna's ask and suggest (the loop's own code)",
                         " / ".join(f"{v:.0f} ms" for v in own if v is not None)))  # fmt: skip
    for name, entry in b.items():
        if not entry.get("ok"):
            rows.append((name, "failed", entry.get("error") or f"exit {entry.get('exit_code')}"))
    return rows  # fmt: skip


def render_table(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        START,
        f"Generated by `python bench/run_all.py` from `bench/results.json` "
        f"({results['generated_utc']}; {m['cpu']}, {m['cpu_count']} CPUs, Python {m['python']}, "
        f"load {m['load_avg_1m']:.1f} at the start). Details of each in the sections below.",
        "",
        "| benchmark | figure | value |",
        "|---|---|---|",
        *(f"| {n} | {f} | {v} |" for n, f, v in summary_rows(results)),
        END,
    ]
    return "\n".join(lines)


def update_readme(results: dict[str, Any], readme: Path = README) -> bool:
    """Replace the summary between the markers; False when the markers are missing."""
    text = readme.read_text()
    if START not in text or END not in text:
        return False
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(head + render_table(results) + tail)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="comma-separated names: " +
                        ", ".join(b.name for b in BENCHES))  # fmt: skip
    parser.add_argument("--readme-only", action="store_true",
                        help="only regenerate the README table from results.json")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=1800, help="per benchmark, seconds")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if not args.readme_only:
        names = {b.name for b in BENCHES}
        chosen = set(args.only.split(",")) if args.only else names
        if unknown := chosen - names:
            parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
        results["machine"] = machine()
        results["generated_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        benchmarks = results.setdefault("benchmarks", {})
        for bench in BENCHES:
            if bench.name in chosen:
                benchmarks[bench.name] = run(bench, sys.executable, args.timeout)
                args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        results["headline"] = {
            name: entry["headline"] for name, entry in benchmarks.items() if entry.get("ok")
        }
        args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        print(f"wrote {args.out}")
    if not results:
        parser.error(f"{args.out} does not exist: run the benchmarks first")
    if update_readme(results):
        print(f"updated the summary table in {README}")
    else:
        print(f"{README} has no {START} ... {END} markers: table not written", file=sys.stderr)
    print(render_table(results))
    failed = [n for n, e in results.get("benchmarks", {}).items() if not e.get("ok")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
