"""The orchestrator's own CPU per trial: the working tree against a git ref, side by side.

What it measures: :meth:`Orchestrator.run` of one search with instant workers, so everything
timed is the orchestrator itself (and its Optuna sampler and storages), not measuring or
training. For each code version and each trial count (``--trials``, default 100, 500, 2000):

- **loop thread CPU** (``time.thread_time`` of the thread that runs ``Orchestrator.run``): the
  figure of the issue's goal, "the loop itself <= 50 ms per trial at 2,000 trials (export may
  run in a pool beside the loop)". Today's main spends about 350 ms per trial (TPE, SQLite).
- **process CPU** (``time.process_time``): the loop plus any threads beside it (a pool that
  builds candidates). CPU of child processes, if a version starts any, is reported apart
  (``os.times``, counted once they are reaped).
- **wall time**, which also holds SQLite's fsyncs and the artifact store's.
- **a breakdown**, where it can be had without editing library code: the driver wraps
  ``hpc2edge.search.candidate.build`` (ONNX export and reference outputs; patched before the
  orchestrator module is imported, so a ``from ... import build`` sees the wrapper too),
  ``optuna.Study.ask`` and ``.tell``, ``optuna.trial.Trial._suggest`` (the sampler's choice of
  one parameter and its write), ``optuna.trial.Trial.__init__`` when the loop itself builds a
  trial handle (each costs a ``get_trial`` and the sampler's ``before_trial``),
  ``RDBStorage.set_trial_user_attr`` / ``set_study_user_attr`` (user-attribute writes) and
  ``set_trial_state_values`` (the state write of ``tell``), the measurement store's ``find`` and
  ``record``, the artifact store's ``put``, and the fake workers (their CPU is not the
  orchestrator's, but the inline dispatcher runs them on the loop thread, so it is shown to be
  subtracted). Each region's CPU is *exclusive* (a wrapped call inside another is counted once,
  in the inner region) and summed over the threads it ran on, so with everything on one thread
  the regions and "rest of the loop thread" add up to the loop thread's CPU. A region a version
  does not reach through these names shows 0 calls; its time then lands in the rest. The
  wrappers cost about 2 us a call, tens of microseconds per trial. Even with one torch thread,
  about 3 % of the CPU is off the loop thread: the driver has one native thread besides its
  main one (from torch or its ONNX export; Python sees only the main thread).

The set-up is that of ``tests/unit/test_search_orchestrator.py``'s ``Harness``: a fresh SQLite
study (``open_study`` with ``make_sampler(--sampler, seed=0)``, TPE by default) and measurement
store, a directory artifact store, ``FakeEdge`` and ``FakeTrainer`` behind the
``InlineDispatcher``, a ``FakeClock`` (no real sleeps), the ``cnn3d`` space pinned to 8 x 41 x 41,
Pareto objective without budget, ``parallel=8``, no baseline job, the default export seed. Only
:class:`SearchConfig` fields that a version has are passed (``--config KEY=VALUE`` adds more, for
a version that has them); each run records the full config it used.

Choices that keep the two versions comparable:

- **One driver, two source trees.** Each run is a subprocess running this file's driver with
  ``PYTHONPATH`` set to the version's root: the repository root for the working tree, and
  ``git archive <ref> hpc2edge`` unpacked in a temporary folder for the baseline. The driver
  checks that ``hpc2edge`` was imported from where it should be and records a digest of its
  sources. This process never imports ``hpc2edge``, so a working tree caught mid-refactor fails
  its own runs only. Same interpreter, same installed Optuna, torch and SQLAlchemy for both.
- **One thread for torch** (``torch.set_num_threads(1)``, ``OMP_NUM_THREADS=1``): ONNX export
  then costs the same in both, whatever the machine's core count.
- **A warm-up search first** (3 trials, same sampler, its own files, untimed), so lazy imports
  (``torch.onnx``, the sampler's numerics) are not charged to the first trials.
- **One run at a time, versions interleaved**: for each trial count the baseline, then the
  working tree, so a change in the machine's load hits both of a pair alike.

Read the figures with care: TPE's cost per ask grows with the trials in the study (it refits on
all of them), so at 2,000 trials its share can dominate; ``--sampler random`` shows the loop
without it, and the rows "study.ask" and "trial suggest" give the sampler's share in either case.
On a shared 2-core VM the absolute figures move between runs; the ratios, taken a few minutes
apart, move less. Duplicates (a spec proposed again) cost no export, so the share of builds falls
as the space fills.

Run time: about the wall ms/trial of both versions times the trials, plus ~10 s per run (imports,
warm-up). Today's main spends 250-300 ms of CPU per trial, which was 0.3-0.6 s of wall time on a
2-core VM (the more the machine is shared, the more): the default (100, 500, 2000) is then 15-25
minutes for the baseline alone, 30-50 minutes for both; ``--quick`` (50, 200) took 3.5 minutes.

Usage::

    python bench/orchestrator.py [--trials 100,500,2000 | --quick] [--sampler tpe|random]
        [--baseline-ref c1a982f | --baseline-ref none] [--config KEY=VALUE ...] [--json OUT]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import _machine

ROOT = Path(__file__).resolve().parents[1]
#: "Today's main", before the search core's refactor.
DEFAULT_BASELINE_REF = "c1a982f"
DEFAULT_TRIALS = (100, 500, 2000)
QUICK_TRIALS = (50, 200)
#: The issue's goal for the loop thread at 2,000 trials (ms of CPU per trial).
GOAL_LOOP_MS = 50.0
GOAL_TRIALS = 2000
WARMUP_TRIALS = 3
SPACE = "cnn3d"
#: SearchConfig of every run, as the orchestrator's unit tests set it up.
CONFIG: dict[str, Any] = {"parallel": 8, "pin": {"frames": 8, "size": 41}, "baseline": False}
#: Seconds one driver run may take before it is declared broken.
RUN_TIMEOUT_S = 3600.0

#: Breakdown regions: (key, label). Order is the printout's.
REGIONS = (
    ("build", "candidate build (ONNX export + reference)"),
    ("ask", "study.ask"),
    ("suggest", "trial suggest (sampler + param write)"),
    ("tell", "study.tell, without the state write"),
    ("state_writes", "trial state writes (set_trial_state_values)"),
    ("user_attrs", "user-attr writes (trial + study)"),
    ("trial_handles", "Trial(...) handles built by the loop"),
    ("measurement_store", "measurement store (find + record)"),
    ("artifact_put", "artifact store put"),
    ("fake_workers", "fake workers (not the orchestrator's)"),
)


# --- the driver: one version, one trial count, in its own process -------------------------------


class Regions:
    """Exclusive CPU and wall time of wrapped calls, per region, from any thread."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self.loop_thread: int | None = None
        self.totals: dict[str, dict[str, float]] = {}
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.totals = {
                key: {"calls": 0, "cpu_s": 0.0, "cpu_loop_s": 0.0, "wall_s": 0.0}
                for key, _ in REGIONS
            }

    def wrap(
        self, region: str, fn: Callable[..., Any], *, outermost_only: bool = False
    ) -> Callable[..., Any]:
        """``fn``, timed into ``region``; with ``outermost_only``, only when no region is open
        on this thread (inside another region it counts as that region's time)."""

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            stack: list[list[float]] = self._local.__dict__.setdefault("stack", [])
            if outermost_only and stack:
                return fn(*args, **kwargs)
            stack.append([0.0, 0.0])  # CPU and wall of the wrapped calls inside this one
            cpu0_s, wall0_s = time.thread_time(), time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                cpu_s, wall_s = time.thread_time() - cpu0_s, time.perf_counter() - wall0_s
                inner_cpu_s, inner_wall_s = stack.pop()
                if stack:
                    stack[-1][0] += cpu_s
                    stack[-1][1] += wall_s
                on_loop = threading.get_ident() == self.loop_thread
                with self._lock:
                    t = self.totals[region]
                    t["calls"] += 1
                    t["cpu_s"] += cpu_s - inner_cpu_s
                    t["cpu_loop_s"] += (cpu_s - inner_cpu_s) if on_loop else 0.0
                    t["wall_s"] += wall_s - inner_wall_s

        return timed


def _patch(owner: Any, name: str, region: str, regions: Regions, found: list[str],
           missing: list[str], *, outermost_only: bool = False) -> None:  # fmt: skip
    where = f"{getattr(owner, '__name__', type(owner).__name__)}.{name}"
    fn = getattr(owner, name, None)
    if fn is None:
        missing.append(where)
        return
    try:
        setattr(owner, name, regions.wrap(region, fn, outermost_only=outermost_only))
    except (AttributeError, TypeError):  # slots, a frozen dataclass
        missing.append(where)
        return
    found.append(where)


def _source_digest(package: Path) -> str:
    """SHA-256 (12 hex) over the package's ``.py`` files: which tree a run measured."""
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        h.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def drive(trials: int, sampler: str, extra_config: dict[str, Any], expect_root: Path) -> dict:
    """One timed search in this process; its figures (seconds, counts), as one JSON object."""
    import torch

    torch.set_num_threads(1)
    import optuna

    # Patched before the orchestrator module is imported: a `from ... import build` there
    # binds the wrapper, not the original.
    from hpc2edge.search import candidate as cand

    regions = Regions()
    patched: list[str] = []
    missing: list[str] = []
    _patch(cand, "build", "build", regions, patched, missing)

    import hpc2edge
    from hpc2edge.search import study as st
    from hpc2edge.search.dispatch import InlineDispatcher
    from hpc2edge.search.objectives import Objective
    from hpc2edge.search.orchestrator import Orchestrator, SearchConfig
    from hpc2edge.space import get_space
    from hpc2edge.space.base import TrainingHParams
    from hpc2edge.store.artifacts import DirectoryArtifactStore
    from hpc2edge.store.measurements import MeasurementStore
    from hpc2edge.testing.fakes import FakeClock, FakeEdge, FakeTrainer

    package = Path(hpc2edge.__file__).resolve().parent
    if package.parent != expect_root.resolve():
        raise SystemExit(f"hpc2edge was imported from {package}, not from {expect_root}")
    # Now, not after the run: a working tree being edited may have moved on by then.
    source_sha256 = _source_digest(package)

    rdb = optuna.storages.RDBStorage
    for name in ("set_trial_user_attr", "set_study_user_attr"):
        _patch(rdb, name, "user_attrs", regions, patched, missing)
    _patch(rdb, "set_trial_state_values", "state_writes", regions, patched, missing)
    _patch(optuna.study.Study, "ask", "ask", regions, patched, missing)
    _patch(optuna.study.Study, "tell", "tell", regions, patched, missing)
    _patch(optuna.trial.Trial, "_suggest", "suggest", regions, patched, missing)
    _patch(optuna.trial.Trial, "__init__", "trial_handles", regions, patched, missing,
           outermost_only=True)  # fmt: skip

    st.quiet_optuna()
    fields = {f.name for f in dataclasses.fields(SearchConfig)}
    wanted = {**CONFIG, **extra_config}
    skipped = sorted(k for k in wanted if k not in fields)
    kwargs = {k: v for k, v in wanted.items() if k in fields}

    def search(tmp: Path, n: int, *, instrument: bool) -> Orchestrator:
        objective = Objective("pareto")
        study = st.open_study(
            "bench",
            f"sqlite:///{tmp / 'search.db'}",
            objective,
            st.make_sampler(sampler, objective, seed=0, trials=n),
        )
        store = MeasurementStore(f"sqlite:///{tmp / 'measurements.db'}")
        artifacts = DirectoryArtifactStore(tmp / "artifacts")
        handlers: dict[str, Any] = {"measure": FakeEdge(artifacts), "train": FakeTrainer()}
        if instrument:
            for name in ("find", "record"):
                _patch(store, name, "measurement_store", regions, patched, missing)
            _patch(artifacts, "put", "artifact_put", regions, patched, missing)
            handlers = {k: regions.wrap("fake_workers", h) for k, h in handlers.items()}
        return Orchestrator(
            study,
            InlineDispatcher(handlers, artifacts),
            get_space(SPACE),
            objective,
            store,
            cand.TrainPlan(("/data/x.hdf5",), TrainingHParams(), epochs=1),
            SearchConfig(trials=n, **kwargs),
            clock=FakeClock(),
        )

    with tempfile.TemporaryDirectory(prefix="h2e-bench-orch-") as tmp:
        warm, timed = Path(tmp) / "warmup", Path(tmp) / "timed"
        search(warm, WARMUP_TRIALS, instrument=False).run()
        orchestrator = search(timed, trials, instrument=True)
        regions.reset()
        regions.loop_thread = threading.get_ident()
        children0 = os.times()
        thread0_s, process0_s = time.thread_time(), time.process_time()
        wall0_s = time.perf_counter()
        summary = orchestrator.run()
        wall_s = time.perf_counter() - wall0_s
        thread_s, process_s = time.thread_time() - thread0_s, time.process_time() - process0_s
        children1 = os.times()
        threads_at_end = threading.active_count()
        # Native threads too (torch's, SQLite's): Python's count misses them.
        tasks = Path("/proc/self/task")
        os_threads_at_end = len(list(tasks.iterdir())) if tasks.is_dir() else None
        storage = type(orchestrator.study._storage).__name__

    config = dataclasses.asdict(orchestrator.config)
    return {
        "ok": True,
        "trials": trials,
        "sampler": sampler,
        "hpc2edge_package": str(package),
        "source_sha256": source_sha256,
        "config": json.loads(json.dumps(config, default=repr)),
        "config_skipped": skipped,
        "storage": storage,
        "counts": {k: summary.get(k) for k in ("trials", "complete", "pruned", "failed",
                                                "tasks_sent", "measurements_reused")},
        "front_size": len(summary.get("front") or []),
        "loop_thread_cpu_s": thread_s,
        "process_cpu_s": process_s,
        "children_cpu_s": (children1.children_user + children1.children_system)
        - (children0.children_user + children0.children_system),
        "wall_s": wall_s,
        "threads_at_end": threads_at_end,
        "os_threads_at_end": os_threads_at_end,
        "torch_threads": torch.get_num_threads(),
        "regions": regions.totals,
        "patched": sorted(set(patched)),
        "not_patched": sorted(set(missing)),
    }  # fmt: skip


# --- the versions ------------------------------------------------------------------------------


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"git {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout.strip()


def extract_ref(ref: str, into: Path) -> dict[str, Any]:
    """``hpc2edge/`` of ``ref`` unpacked under ``into``; what the ref is."""
    sha = _git("rev-parse", "--verify", f"{ref}^{{commit}}")
    archive = subprocess.run(
        ["git", "archive", sha, "hpc2edge"], cwd=ROOT, capture_output=True, check=True
    )
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return {"ref": ref, "commit": sha, "subject": _git("log", "-1", "--format=%s", sha)}


def describe_working_tree() -> dict[str, Any]:
    changed = _git("status", "--porcelain", "--", "hpc2edge").splitlines()
    return {"head": _git("rev-parse", "HEAD"), "changed_files_in_hpc2edge": len(changed)}


def run_driver(
    root: Path, trials: int, sampler: str, extra: dict[str, Any], timeout_s: float
) -> dict[str, Any]:
    """Run :func:`drive` in a subprocess with ``hpc2edge`` imported from ``root``."""
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONHASHSEED": "0"}  # fmt: skip
    # -P: bench/ (this script's folder) is not put on sys.path, so only `root` provides modules.
    safe_path = ["-P"] if sys.version_info >= (3, 11) else []
    argv = [sys.executable, *safe_path, str(Path(__file__).resolve()), "--driver",
            "--trials", str(trials), "--sampler", sampler, "--driver-root", str(root),
            "--driver-config", json.dumps(extra)]  # fmt: skip
    t0_s = time.monotonic()
    try:
        proc = subprocess.run(
            argv, cwd=root, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "trials": trials, "error": f"timed out after {timeout_s:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stdout + proc.stderr).strip()[-2000:]
        return {"ok": False, "trials": trials, "error": f"exit {proc.returncode}", "tail": tail}
    return {**json.loads(lines[-1]), "run_s": time.monotonic() - t0_s}


# --- figures -----------------------------------------------------------------------------------


def figures(run: dict[str, Any]) -> dict[str, float]:
    """ms per trial of one run: the headline figures and the breakdown."""
    n = run["trials"]
    ms = 1000.0 / n
    regions = run["regions"]
    loop_regions_s = sum(r["cpu_loop_s"] for r in regions.values())
    sampler_loop_s = regions["ask"]["cpu_loop_s"] + regions["suggest"]["cpu_loop_s"]
    out = {
        "loop_thread_cpu": run["loop_thread_cpu_s"] * ms,
        "loop_without_sampler": (run["loop_thread_cpu_s"] - sampler_loop_s) * ms,
        "loop_without_sampler_and_fakes": (
            run["loop_thread_cpu_s"] - sampler_loop_s - regions["fake_workers"]["cpu_loop_s"]
        )
        * ms,
        "process_cpu": run["process_cpu_s"] * ms,
        "off_loop_cpu": (run["process_cpu_s"] - run["loop_thread_cpu_s"]) * ms,
        "children_cpu": run["children_cpu_s"] * ms,
        "wall": run["wall_s"] * ms,
    }
    for key, _ in REGIONS:
        out[key] = regions[key]["cpu_s"] * ms
    out["rest_of_loop"] = (run["loop_thread_cpu_s"] - loop_regions_s) * ms
    return out


ROWS = (
    ("loop_thread_cpu", "loop thread CPU"),
    ("loop_without_sampler", "  minus ask + suggest (the loop's own)"),
    ("loop_without_sampler_and_fakes", "  minus ask + suggest + fake workers"),
    ("process_cpu", "process CPU (all threads)"),
    ("off_loop_cpu", "  of which off the loop thread"),
    ("children_cpu", "child processes CPU"),
    ("wall", "wall"),
    ("", "breakdown, CPU on any thread (exclusive):"),
    *((key, f"  {label}") for key, label in REGIONS),
    ("rest_of_loop", "  rest of the loop thread"),
)


def _ratio(new: float, old: float) -> float | None:
    return new / old if old > 1e-9 else None


def run_benchmark(
    trial_counts: Sequence[int],
    sampler: str,
    baseline_ref: str | None,
    extra: dict[str, Any],
    timeout_s: float,
) -> dict[str, Any]:
    """Every (trial count, version) run, one after the other; the figures, as ``--json`` writes."""
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="h2e-bench-ref-") as tmp:
        versions: dict[str, dict[str, Any]] = {}
        roots: dict[str, Path] = {}
        if baseline_ref is not None:
            versions["baseline"] = extract_ref(baseline_ref, Path(tmp) / "baseline")
            roots["baseline"] = Path(tmp) / "baseline"
        versions["working"] = describe_working_tree()
        roots["working"] = ROOT
        for n in trial_counts:
            for label, root in roots.items():
                print(f"== {label}, {n} trials ({sampler})", file=sys.stderr, flush=True)
                run = run_driver(root, n, sampler, extra, timeout_s)
                run["version"] = label
                if run["ok"]:
                    run["ms_per_trial"] = figures(run)
                    print(f"   {run['run_s']:.0f} s, loop thread "
                          f"{run['ms_per_trial']['loop_thread_cpu']:.1f} ms/trial",
                          file=sys.stderr, flush=True)  # fmt: skip
                else:
                    print(f"   failed: {run['error']}\n{run.get('tail', '')}", file=sys.stderr)
                runs.append(run)

    ratios: dict[str, dict[str, float | None]] = {}
    for n in trial_counts:
        pair = {r["version"]: r for r in runs if r["trials"] == n and r["ok"]}
        if "baseline" in pair and "working" in pair:
            old, new = pair["baseline"]["ms_per_trial"], pair["working"]["ms_per_trial"]
            ratios[str(n)] = {k: _ratio(new[k], old[k]) for k in new}
    return {
        "benchmark": "hpc2edge orchestrator CPU per trial",
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": {"trials": list(trial_counts), "sampler": sampler, "space": SPACE,
                     "config": {**CONFIG, **extra}, "warmup_trials": WARMUP_TRIALS,
                     "storage": "sqlite", "dispatcher": "inline, FakeEdge + FakeTrainer"},
        "versions": versions,
        "runs": runs,
        "ratios_working_over_baseline": ratios,
        "goal": goal(runs),
        "machine": _machine.describe(
            {"optuna": "optuna", "torch": "torch", "sqlalchemy": "sqlalchemy"}
        ),
    }  # fmt: skip


def goal(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The issue's goal, read at 2,000 trials, or at the largest count measured."""
    ok = [r for r in runs if r["ok"]]
    if not ok:
        return {}
    n = GOAL_TRIALS if any(r["trials"] == GOAL_TRIALS for r in ok) else max(r["trials"] for r in ok)
    at = {r["version"]: r["ms_per_trial"]["loop_thread_cpu"] for r in ok if r["trials"] == n}
    met = {k: v <= GOAL_LOOP_MS for k, v in at.items()}
    return {"goal_loop_ms": GOAL_LOOP_MS, "trials": n, "loop_thread_cpu_ms": at, "met": met}


# --- output -------------------------------------------------------------------------------------


def render(report: dict[str, Any]) -> str:
    """The side-by-side table of ``report`` (the dict :func:`run_benchmark` returns)."""
    s, v, m = report["settings"], report["versions"], report["machine"]
    load = "n/a" if m["load_avg_1m"] is None else f"{m['load_avg_1m']:.2f}"
    lines = [
        f"hpc2edge orchestrator CPU per trial ({report['time_utc']})",
        f"machine: {m['platform']}, Python {m['python']}, {m['cpu_count']} CPUs "
        f"({m['cpu_model'] or 'unknown model'}), load avg 1 min {load} at the end; "
        f"optuna {m['optuna']}, torch {m['torch']}, SQLAlchemy {m['sqlalchemy']}",
        f"set-up: {s['sampler']} sampler, SQLite study, inline dispatcher with instant fake "
        f"workers, space {s['space']}, config {json.dumps(s['config'])}",
    ]
    if "baseline" in v:
        b = v["baseline"]
        lines.append(f"baseline: {b['ref']} = {b['commit'][:10]} ({b['subject']})")
    w = v["working"]
    lines.append(f"working tree: HEAD {w['head'][:10]} + {w['changed_files_in_hpc2edge']} "
                 "changed file(s) under hpc2edge/")  # fmt: skip
    labels = [k for k in ("baseline", "working") if k in v]
    for n in s["trials"]:
        runs = {r["version"]: r for r in report["runs"] if r["trials"] == n}
        lines += ["", f"{n} trials, ms per trial{'':20}"
                  + "".join(f"{lab:>12}" for lab in labels)
                  + (f"{'working/base':>14}" if len(labels) == 2 else "")]  # fmt: skip
        for label in labels:
            r = runs.get(label)
            if r and not r["ok"]:
                lines.append(f"  {label} FAILED: {r['error']}")
            elif r:
                c = r["counts"]
                lines.append(
                    f"  {label}: source {r['source_sha256']}, {c['complete']} complete, "
                    f"{c['pruned']} pruned, {c['failed']} failed, tasks {c['tasks_sent']}, "
                    f"run {r['run_s']:.0f} s" + (f"; config skipped {r['config_skipped']}"
                                                 if r["config_skipped"] else "")
                )  # fmt: skip
        ratio = report["ratios_working_over_baseline"].get(str(n), {})
        for key, label in ROWS:
            if not key:
                lines.append(label)
                continue
            values = [runs[lab]["ms_per_trial"][key] if runs.get(lab, {}).get("ok") else None
                      for lab in labels]  # fmt: skip
            if key == "children_cpu" and not any(values):
                continue
            cells = "".join(f"{'-':>12}" if x is None else f"{x:>12.2f}" for x in values)
            if len(labels) == 2:
                q = ratio.get(key)
                cells += f"{'n/a':>14}" if q is None else f"{q:>13.2f}x"
            calls = ""
            if key in dict(REGIONS):
                counts = [str(int(runs[lab]["regions"][key]["calls"])) if runs.get(lab, {}).get(
                    "ok") else "-" for lab in labels]  # fmt: skip
                calls = f"  calls {' / '.join(counts)}"
            lines.append(f"{label:46}{cells}{calls}")
    digests = {r["source_sha256"] for r in report["runs"] if r["ok"] and r["version"] == "working"}
    if len(digests) > 1:
        changed = ", ".join(sorted(digests))
        lines += ["", f"note: the working tree changed between its runs (sources {changed})"]
    g = report["goal"]
    if g:
        at = ", ".join(f"{k} {ms:.1f} ms ({'met' if g['met'][k] else 'not met'})"
                       for k, ms in g["loop_thread_cpu_ms"].items())  # fmt: skip
        where = "" if g["trials"] == GOAL_TRIALS else f" (measured up to {g['trials']} only)"
        lines += ["", f"goal: loop thread <= {g['goal_loop_ms']:g} ms/trial at {GOAL_TRIALS} "
                      f"trials{where}: {at}"]  # fmt: skip
    return "\n".join(lines)


# --- entry point --------------------------------------------------------------------------------


def _trial_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}"
        ) from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("trial counts must be positive integers")
    return counts


def _config_item(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value  # a bare word: a string


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=_trial_counts, default=None,
                        help="comma-separated trial counts (default: 100,500,2000)")  # fmt: skip
    quick = ",".join(map(str, QUICK_TRIALS))
    parser.add_argument("--quick", action="store_true",
                        help=f"trial counts {quick} (a few minutes)")  # fmt: skip
    parser.add_argument("--sampler", choices=("tpe", "random"), default="tpe",
                        help="the study's sampler (default: tpe, as in a search)")  # fmt: skip
    parser.add_argument("--baseline-ref", default=DEFAULT_BASELINE_REF,
                        help=f"git ref to compare against (default: {DEFAULT_BASELINE_REF}, "
                             "today's main); 'none' measures the working tree only")  # fmt: skip
    parser.add_argument("--config", type=_config_item, action="append", default=[],
                        metavar="KEY=VALUE",
                        help="a further SearchConfig field (JSON value), passed to each version "
                             "that has it; repeatable")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=RUN_TIMEOUT_S,
                        help=f"seconds per run (default: {RUN_TIMEOUT_S:.0f})")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, metavar="OUT",
                        help="also write the figures as JSON to OUT")  # fmt: skip
    # The driver, run by this script in a subprocess per version and trial count.
    parser.add_argument("--driver", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--driver-root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    parser.add_argument("--driver-config", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick and args.trials is not None:
        parser.error("--quick and --trials exclude each other")
    args.trials = args.trials or (QUICK_TRIALS if args.quick else DEFAULT_TRIALS)
    if args.driver and len(args.trials) != 1:
        parser.error("--driver runs one trial count")
    if args.baseline_ref.lower() == "none":
        args.baseline_ref = None
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table, optionally write JSON. Returns the exit status."""
    args = parse_args(argv)
    if args.driver:
        result = drive(args.trials[0], args.sampler, json.loads(args.driver_config),
                       args.driver_root)  # fmt: skip
        print(json.dumps(result))
        return 0
    report = run_benchmark(
        args.trials, args.sampler, args.baseline_ref, dict(args.config), args.timeout
    )
    print(render(report))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0 if all(r["ok"] for r in report["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
