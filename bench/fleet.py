"""Measurement throughput of a device kind: two units against one, side by side in one run.

The units of a kind consume one queue (``edge.<kind>``), so a second unit should double how
many measurements a kind makes per second when the work is the device's. This script starts a
throwaway local stack with two kinds of ONNX Runtime units on this CPU, one intra-op thread
each (``hpc2edge up --edge one=onnxruntime:threads=1 --edge two=onnxruntime:threads=1,units=2``),
stores one cnn3d model (8 x 41 x 41, the demo's pin) in the artifact store, and sends N identical
``hpc2edge.measure`` tasks through the real broker with :class:`~hpc2edge.search.dispatch.
CeleryDispatcher`, all at once, to one kind's queue; it times from the first send until every
result is in, then does the same on the other kind. Rounds alternate one, two, two, one (ABBA),
so a neighbour's load on a shared machine hits both. It prints both throughputs and the ratio.

Every task is the same work: a protocol with a fixed number of runs (``min_runs = max_runs``,
no time rule, no cool-down), so a measurement costs the same CPU whichever unit runs it and
however busy the machine is; it takes longer on a busy machine instead of measuring less. The
units' reference checks (``edge.reference_every``) are off, so they do only these tasks. On a
2-core machine two one-thread units can at best double the throughput; the goal is >= 1.8x.
Beside the throughput it prints the CPU each configuration's units used per task (the same
when a second unit adds no overhead) and the cores used meanwhile by the units, by the rest of
the stack and by other tenants of the machine (from /proc), which is what bounds the ratio on a
shared machine.

Usage::

    python bench/fleet.py [--tasks 32] [--runs 400] [--rounds 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import _machine

#: The two kinds, as ``hpc2edge up --edge`` takes them.
KINDS = {"one": "one=onnxruntime:threads=1", "two": "two=onnxruntime:threads=1,units=2"}
#: The network every task measures: one conv block, the demo's input (8 x 41 x 41).
POINT = {"n_blocks": 1, "block1_channels": 16, "block1_kernel_t": 1, "block1_kernel_s": 5,
         "downsample": "pool", "batch_norm": False, "activation": "relu", "head_width": 32,
         "head_layers": 1, "frames": 8, "size": 41}  # fmt: skip
GOAL = 1.8
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
TASK_TIMEOUT_S = 300.0  # one round's tasks all answered within this, or the run is broken
#: Only the oldest unanswered task is polled (one GET per POLL_S; answers come nearly in order
#: from units that take one task at a time), so the script costs the machine next to nothing.
POLL_S = 0.02


def fixed_protocol(runs: int) -> dict[str, Any]:
    """Exactly ``runs`` timed runs per series after 20 warm-up runs: the same work every time."""
    return {"warmup_min_s": 0.0, "warmup_min_runs": 20, "min_runs": runs, "max_runs": runs,
            "min_time_s": 0.0, "max_time_s": 30.0, "target_rel_ci": 0.5,
            "cooldown_timeout_s": 0.0}  # fmt: skip


def build_request(dispatcher: Any, runs: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The measure payload of :data:`POINT` (exported as the search exports it) and a
    description of the model."""
    from optuna.trial import FixedTrial

    from hpc2edge.search import candidate as cand
    from hpc2edge.search.runconfig import Pinned
    from hpc2edge.space import get_space

    space = get_space("cnn3d")
    pin = {k: POINT[k] for k in ("frames", "size")}
    spec = space.validate(space.suggest(Pinned(FixedTrial(POINT), pin)))
    c = cand.build(spec, seed=0)
    key = dispatcher.artifacts.put(c.onnx)
    request = cand.measure_request(
        c, key, batch_size=1, precision="fp32", protocol=fixed_protocol(runs)
    )
    model = {"arch_id": spec.arch_id, "onnx_sha256": c.onnx_sha256, "onnx_bytes": len(c.onnx),
             "params": c.params, "flops": c.flops, "input": [8, 41, 41]}  # fmt: skip
    return request, model


def machine_busy_s() -> float | None:
    """CPU seconds the whole machine has been busy (all cores; steal counts as busy), or None
    where there is no /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    ticks = [int(x) for x in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / CLOCK_TICKS


def process_cpu_s(pids: Sequence[int]) -> float | None:
    """CPU seconds (user + system) the processes ``pids`` have used, or None."""
    total = 0.0
    try:
        for pid in pids:
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
    except (OSError, ValueError, IndexError):
        return None
    return total


def run_round(
    dispatcher: Any,
    kind: str,
    request: dict[str, Any],
    n: int,
    pids: Sequence[int] = (),
    stack_pids: Sequence[int] = (),
) -> dict[str, Any]:
    """Send ``n`` copies of ``request`` to ``kind``'s queue at once; time until all are in.

    Also the cores used meanwhile (CPU seconds per wall second) by the kind's units (``pids``),
    by the rest of the stack (``stack_pids``: broker, other workers, and this script), and by
    everything else on the machine (other tenants of a shared machine).
    """
    from hpc2edge.transport import taskids

    queue = f"edge.{kind}"
    stack_pids = [*stack_pids, os.getpid()]
    busy0, units0, stack0 = machine_busy_s(), process_cpu_s(pids), process_cpu_s(stack_pids)
    t0 = time.perf_counter()
    pending = []
    for _ in range(n):
        task_id = taskids.new(queue)
        dispatcher.submit("measure", request, task_id, expires_s=TASK_TIMEOUT_S)
        pending.append(task_id)
    results: list[dict[str, Any]] = []
    deadline = t0 + TASK_TIMEOUT_S
    while pending:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{len(pending)} of {n} tasks on {queue} unanswered")
        outcome = dispatcher.poll(pending[0])
        if outcome is None:
            time.sleep(POLL_S)
            continue
        if not outcome.ok:
            raise RuntimeError(f"a task on {queue} failed: {outcome.reason}")
        assert outcome.result is not None
        results.append(outcome.result)
        dispatcher.forget(pending.pop(0))
    wall_s = time.perf_counter() - t0
    busy1, units1, stack1 = machine_busy_s(), process_cpu_s(pids), process_cpu_s(stack_pids)
    task_s = [r["finished_unix_s"] - r["started_unix_s"] for r in results]
    cores: dict[str, float | None] = dict.fromkeys(("units", "stack", "others"))
    if None not in (busy0, busy1, units0, units1, stack0, stack1):
        cores["units"] = (units1 - units0) / wall_s  # type: ignore[operator]
        cores["stack"] = (stack1 - stack0) / wall_s  # type: ignore[operator]
        cores["others"] = (busy1 - busy0) / wall_s - cores["units"] - cores["stack"]  # type: ignore
    return {
        "kind": kind,
        "tasks": n,
        "wall_s": wall_s,
        "units_cores": cores["units"],
        "stack_cores": cores["stack"],
        "others_cores": cores["others"],
        "units_cpu_s_per_task": None if cores["units"] is None else cores["units"] * wall_s / n,
        "tasks_per_s": n / wall_s,
        "task_s_median": statistics.median(task_s),
        "by_unit": dict(Counter(str(r["worker"]).split("@")[0] for r in results)),
        "latency_ms_p50_median": statistics.median(
            r["batches"][0]["compute"]["stats"]["median_ms"] for r in results
        ),
    }


def unit_pids(settings: Any, spec: str) -> list[int]:
    """The worker processes of the units ``spec`` started (from their pid files)."""
    from hpc2edge.config import pid_file
    from hpc2edge.ops.stack import parse_edge
    from hpc2edge.util import procs

    out = []
    for unit in parse_edge(spec):
        record = procs.read(pid_file(settings.state_dir, f"worker-{unit.name}"))
        if record is not None:
            out.append(record.pid)
    return out


def stack_pids(settings: Any) -> list[int]:
    """The broker's and every worker's process (from the stack's pid files)."""
    from hpc2edge.config import pid_file
    from hpc2edge.ops.stack import worker_names
    from hpc2edge.util import procs

    names = ["broker", *worker_names(settings.state_dir)]
    records = [procs.read(pid_file(settings.state_dir, name)) for name in names]
    return [r.pid for r in records if r is not None]


def _cores(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _mean(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else statistics.fmean(values)  # type: ignore


def run_benchmark(tasks: int, runs: int, rounds: int, state_dir: Path) -> dict[str, Any]:
    """Start a throwaway stack in ``state_dir``, run the rounds, always stop the stack."""
    from hpc2edge.config import load_settings
    from hpc2edge.ops import stack
    from hpc2edge.search.dispatch import CeleryDispatcher
    from hpc2edge.util import net

    settings = load_settings(
        environ={
            "HPC2EDGE_STATE_DIR": str(state_dir),
            "HPC2EDGE_BROKER_PORT": str(net.free_port()),  # never 6379 or the stack's default
            "HPC2EDGE_EDGE_REFERENCE_EVERY": "0",  # the units do only the benchmark's tasks
        }
    )
    machine = _machine.describe(
        {"celery": "celery", "kombu": "kombu", "onnxruntime": "onnxruntime"}
    )
    order = [k for _ in range(rounds) for k in ("one", "two", "two", "one")]
    out_rounds: list[dict[str, Any]] = []
    try:
        orchestrator = stack.prepare(settings)
        t0 = time.perf_counter()
        stack.up(settings, edge=list(KINDS.values()), timeout_s=120.0)
        stack_up_s = time.perf_counter() - t0
        pids = {kind: unit_pids(settings, spec) for kind, spec in KINDS.items()}
        everyone = stack_pids(settings)
        dispatcher = CeleryDispatcher(orchestrator)
        try:
            request, model = build_request(dispatcher, runs)
            for kind in KINDS:  # warm-up, untimed: every unit has run the model once
                run_round(dispatcher, kind, request, 2 * (1 if kind == "one" else 2))
            for i, kind in enumerate(order, 1):
                rest = [p for p in everyone if p not in pids[kind]]
                r = run_round(dispatcher, kind, request, tasks, pids[kind], rest)
                print(
                    f"  round {i}/{len(order)}: {kind:>3} {r['tasks']} tasks in "
                    f"{r['wall_s']:.2f} s ({r['tasks_per_s']:.2f}/s), units {r['by_unit']}; "
                    f"cores: units {_cores(r['units_cores'])}, rest of the stack "
                    f"{_cores(r['stack_cores'])}, other tenants {_cores(r['others_cores'])}",
                    flush=True,
                )
                out_rounds.append(r)
        finally:
            dispatcher.close()
    finally:
        stack.down(settings)

    def total(kind: str) -> dict[str, Any]:
        rs = [r for r in out_rounds if r["kind"] == kind]
        n, wall = sum(r["tasks"] for r in rs), sum(r["wall_s"] for r in rs)
        return {"units": 1 if kind == "one" else 2, "tasks": n, "wall_s": wall,
                "tasks_per_s": n / wall,
                "units_cores": _mean([r["units_cores"] for r in rs]),
                "stack_cores": _mean([r["stack_cores"] for r in rs]),
                "others_cores": _mean([r["others_cores"] for r in rs]),
                "units_cpu_s_per_task": _mean([r["units_cpu_s_per_task"] for r in rs]),
                "task_s_median": statistics.median(r["task_s_median"] for r in rs),
                "latency_ms_p50_median": statistics.median(
                    r["latency_ms_p50_median"] for r in rs)}  # fmt: skip

    one, two = total("one"), total("two")
    ratio = two["tasks_per_s"] / one["tasks_per_s"]
    return {
        "benchmark": "hpc2edge fleet throughput",
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": {
            "tasks_per_round": tasks,
            "runs_per_series": runs,
            "rounds": rounds,
            "order": order,
            "threads_per_unit": 1,
            "protocol": fixed_protocol(runs),
        },
        "model": model,
        "stack_up_s": stack_up_s,
        "rounds": out_rounds,
        "one_unit": one,
        "two_units": two,
        "ratio_two_over_one": ratio,
        "goal_ratio": GOAL,
        "goal_met": ratio >= GOAL,
        "machine": machine,
    }


def render(report: dict[str, Any]) -> str:
    m, s = report["machine"], report["settings"]
    load = "n/a" if m["load_avg_1m"] is None else f"{m['load_avg_1m']:.2f}"
    one, two = report["one_unit"], report["two_units"]
    lines = [
        f"hpc2edge fleet throughput ({report['time_utc']})",
        f"machine: {m['platform']}, Python {m['python']}, {m['cpu_count']} CPUs "
        f"({m['cpu_model'] or 'unknown model'}), load avg 1 min {load} at start",
        f"software: celery {m['celery']}, kombu {m['kombu']}, onnxruntime {m['onnxruntime']}",
        f"model: cnn3d {report['model']['params']:,} params, input 8x41x41, "
        f"{report['model']['onnx_bytes']:,} bytes of ONNX; each task: 20 warm-up + "
        f"{s['runs_per_series']} runs x 2 series, ONNX Runtime CPU, 1 thread per unit",
        f"rounds: {' '.join(s['order'])}, {s['tasks_per_round']} tasks each, sent at once; "
        f"stack up in {report['stack_up_s']:.1f} s",
        "",
        f"{'':22}{'tasks':>6}{'wall s':>8}{'tasks/s':>8}{'task s':>8}{'CPU s':>7}"
        f"{'p50 ms':>8}  {'cores: units':>12}{'stack':>6}{'others':>7}",
    ]
    for label, t in (("one unit  (edge.one)", one), ("two units (edge.two)", two)):
        cpu = t["units_cpu_s_per_task"]
        lines.append(
            f"{label:22}{t['tasks']:>6}{t['wall_s']:>8.2f}{t['tasks_per_s']:>8.2f}"
            f"{t['task_s_median']:>8.3f}{'n/a' if cpu is None else f'{cpu:.3f}':>7}"
            f"{t['latency_ms_p50_median']:>8.3f}  {_cores(t['units_cores']):>12}"
            f"{_cores(t['stack_cores']):>6}{_cores(t['others_cores']):>7}"
        )
    verdict = "met" if report["goal_met"] else "NOT met"
    lines += [
        "",
        f"throughput two units / one unit: {report['ratio_two_over_one']:.2f}x "
        f"(goal >= {report['goal_ratio']:g}x: {verdict})",
        "  task s: median time in the worker per task; CPU s: the units' CPU per task; cores: "
        "CPU seconds per wall second during the rounds, of the kind's units, of the rest of the "
        "stack (broker, other workers, this script) and of other tenants of the machine",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=32, help="tasks per round (default: 32)")
    parser.add_argument(
        "--runs", type=int, default=400, help="timed runs per series of each task (default: 400)"
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="ABBA blocks: one, two, two, one (default: 2)"
    )
    parser.add_argument("--json", type=Path, default=None, metavar="OUT",
                        help="also write the figures as JSON to OUT")  # fmt: skip
    args = parser.parse_args(argv)
    if args.tasks < 2 or args.runs < 1 or args.rounds < 1:
        parser.error("--tasks >= 2, --runs >= 1, --rounds >= 1")
    return args


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through stack.down(), like Ctrl-C


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with tempfile.TemporaryDirectory(prefix="hpc2edge-fleet-") as tmp:
        report = run_benchmark(args.tasks, args.runs, args.rounds, Path(tmp))
    print(render(report))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
