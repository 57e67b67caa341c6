"""Entry point of a training child: ``python -m hpc2edge.training.worker_main PLAN.json OUT.json``.

Started by :mod:`hpc2edge.training.launcher`, directly (one process) or once per rank under
torchrun. The plan is ``{"request": TrainRequest JSON, "engine": ..., "allow_fallback": bool}``.

Rank 0 writes ``OUT.json``: ``{"status": "ok", "result": TrainResult}`` or ``{"status": "error",
"error": {"type", "message"}}``; another rank that fails writes ``OUT.rank<r>.json``. Writes are
atomic (temporary file + rename), so the launcher never reads half a file. A process killed
outright writes nothing; the launcher reports its exit status and the log tail instead.

Environment (read here, the entry point, only): ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (set by
torchrun or the launcher) and ``HPC2EDGE_TEST_KILL_AFTER_STEPS``, a test hook: rank 0 SIGKILLs
itself after that many steps, as the kernel's OOM killer would.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path

from hpc2edge.errors import as_result
from hpc2edge.training.child import die_with_parent, write_json_atomic

ENV_KILL_AFTER_STEPS = "HPC2EDGE_TEST_KILL_AFTER_STEPS"


def _out_path(out: Path, rank: int) -> Path:
    return out if rank == 0 else out.with_name(f"{out.stem}.rank{rank}{out.suffix}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m hpc2edge.training.worker_main PLAN.json OUT.json", file=sys.stderr)
        return 2
    plan_path, out = Path(args[0]), Path(args[1])
    die_with_parent()  # a rank never outlives torchrun (or the worker, with one rank)
    rank = int(os.environ.get("RANK", "0"))
    try:
        from hpc2edge.training.loop import DistInfo, run_rank
        from hpc2edge.training.request import TrainRequest

        info = DistInfo(
            rank=rank,
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        )
        plan = json.loads(plan_path.read_text())
        request = TrainRequest.from_json(plan["request"])
        kill_after = int(os.environ.get(ENV_KILL_AFTER_STEPS, "0") or 0)

        def on_step(step: int) -> None:
            if kill_after and rank == 0 and step >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)

        def log(line: str) -> None:
            print(line, flush=True)

        result = run_rank(
            request,
            out.parent,
            info,
            engine_name=plan["engine"],
            allow_fallback=bool(plan.get("allow_fallback", False)),
            on_step=on_step if kill_after else None,
            log=log,
        )
        if rank == 0:
            assert result is not None
            write_json_atomic(out, {"status": "ok", "result": result.to_json()})
        return 0
    except BaseException as exc:  # every failure is reported to the launcher
        traceback.print_exc()
        error = as_result(exc, max_chars=4000)
        write_json_atomic(_out_path(out, rank), {"status": "error", "error": error})
        return 1


if __name__ == "__main__":
    sys.exit(main())
