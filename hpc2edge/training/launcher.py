"""Run one training in a child process (or one per rank) and read its result back.

Training *always* runs in a child, even with one process, because:

- the Celery worker then never imports torch or initialises CUDA (a forked CUDA context breaks,
  and the worker stays light);
- a crash, an OOM kill or a hang of the training cannot take the worker down: it becomes a
  :class:`~hpc2edge.errors.TrainingError` carrying the exit status and the tail of the log;
- a time limit is enforced by killing the child's whole process group.

One process: ``python -m hpc2edge.training.worker_main PLAN OUT`` with ``RANK=0 WORLD_SIZE=1``
and a free ``MASTER_PORT`` (DeepSpeed needs a process group even for one rank). Several:
``python -m torch.distributed.run --nproc-per-node N ... --module hpc2edge.training.worker_main``.
torchrun rather than the ``deepspeed`` launcher for every engine: one way to start ranks, no
hostfile or pdsh, and ``deepspeed.initialize`` works under it (DeepSpeed reads torchrun's env).

Engine choice (``resources.engine = "auto"``), decided here without importing torch:
DeepSpeed when it is installed and either GPUs are visible or ``DS_ACCELERATOR=cpu`` says its
CPU accelerator is wanted (probing it costs a ~40 s JIT compile, so it is opt-in on CPU); else
DDP when more than one process was asked for; else a single process. If DeepSpeed then fails to
start, an ``auto`` run falls back and the result says so (``engine``, ``engine_note``).
``nproc = "auto"`` is one process per visible GPU (``CUDA_VISIBLE_DEVICES`` or ``nvidia-smi``),
else one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hpc2edge.errors import DataError, TrainingError
from hpc2edge.training.child import die_with_parent, write_json_atomic
from hpc2edge.training.request import TrainRequest
from hpc2edge.training.result import TrainResult
from hpc2edge.util import net, procs

LOG_NAME = "train.log"
LOG_TAIL_LINES = 40
KILL_GRACE_S = 10.0


@dataclass(frozen=True)
class LaunchPlan:
    """What will run: engine, number of processes, whether DeepSpeed may fall back."""

    engine: str
    nproc: int
    allow_fallback: bool
    gpus: int


def visible_gpus(environ: Mapping[str, str]) -> int:
    """Number of NVIDIA GPUs this node shows us, without importing torch or touching CUDA."""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def deepspeed_installed() -> bool:
    return importlib.util.find_spec("deepspeed") is not None


def plan_launch(req: TrainRequest, environ: Mapping[str, str]) -> LaunchPlan:
    """Resolve ``auto`` engine and process count (see the module docstring).

    Raises:
        ValueError: an impossible combination (``single`` with several processes, DeepSpeed
            asked for but not installed).
    """
    res = req.resources
    gpus = visible_gpus(environ)
    nproc = res.nproc or max(gpus, 1)
    engine = res.engine
    if engine == "auto":
        wants_ds = gpus > 0 or environ.get("DS_ACCELERATOR") == "cpu"
        if deepspeed_installed() and wants_ds:
            engine = "deepspeed"
        else:
            engine = "ddp" if nproc > 1 else "single"
    if engine == "single" and nproc > 1:
        raise ValueError(f"resources: engine 'single' runs one process, not {nproc}")
    if engine == "deepspeed" and not deepspeed_installed():
        raise ValueError("resources: engine 'deepspeed' asked for, but deepspeed is not installed")
    if gpus and nproc > gpus:
        raise ValueError(f"resources: nproc {nproc} exceeds the {gpus} visible GPUs")
    return LaunchPlan(engine, nproc, allow_fallback=res.engine == "auto", gpus=gpus)


def log_tail(path: Path) -> str:
    return procs.tail(path, LOG_TAIL_LINES) or "(no log)"


def child_command(plan: LaunchPlan, plan_file: Path, out_file: Path, python: str) -> list[str]:
    entry = ["hpc2edge.training.worker_main", str(plan_file), str(out_file)]
    if plan.nproc == 1:
        return [python, "-m", *entry]
    return [
        python,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        f"--nproc-per-node={plan.nproc}",
        "--master-addr=127.0.0.1",
        f"--master-port={net.free_port()}",
        "--module",
        *entry,
    ]


def child_env(
    plan: LaunchPlan, environ: Mapping[str, str], extensions_dir: Path | None
) -> dict[str, str]:
    env = dict(environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if plan.nproc == 1:
        env.update(
            RANK="0",
            WORLD_SIZE="1",
            LOCAL_RANK="0",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(net.free_port()),
        )
    if plan.engine == "deepspeed":
        if plan.gpus == 0:
            # A CPU-only torch with DeepSpeed's CUDA accelerator crashes; say CPU explicitly.
            env["DS_ACCELERATOR"] = "cpu"
        if extensions_dir is not None and "TORCH_EXTENSIONS_DIR" not in env:
            # JIT-built DeepSpeed ops (shm_comm ~40 s) are compiled once per node, not per run.
            env["TORCH_EXTENSIONS_DIR"] = str(extensions_dir)
    return env


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the child's whole process group (torchrun and its ranks), then kill it."""
    if proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, KILL_GRACE_S)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def launch(
    req: TrainRequest,
    run_dir: Path,
    *,
    timeout_s: float | None = None,
    environ: Mapping[str, str] | None = None,
    extensions_dir: Path | None = None,
    python: str = sys.executable,
) -> TrainResult:
    """Train ``req`` in a child process in ``run_dir`` (emptied first) and return its result.

    Args:
        req: the validated request.
        run_dir: the run's folder: plan, result, ``train.log`` and the checkpoint go here.
        timeout_s: kill the training after this long (``None``: no limit).
        environ: the child's base environment (default: this process's).
        extensions_dir: ``TORCH_EXTENSIONS_DIR`` for DeepSpeed's JIT-compiled ops.
        python: the interpreter to run the child with.

    Raises:
        TrainingError: the child failed, was killed, timed out or wrote no result; the message
            ends with the tail of its log.
        ValueError: impossible resources.
    """
    env_in = os.environ if environ is None else environ
    plan = plan_launch(req, env_in)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    plan_file, out_file, log_file = run_dir / "plan.json", run_dir / "out.json", run_dir / LOG_NAME
    write_json_atomic(
        plan_file,
        {
            "request": req.to_json(),
            "engine": plan.engine,
            "nproc": plan.nproc,
            "allow_fallback": plan.allow_fallback,
        },
    )
    cmd = child_command(plan, plan_file, out_file, python)
    env = child_env(plan, env_in, extensions_dir)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    with log_file.open("ab") as log:
        log.write(("$ " + " ".join(cmd) + "\n").encode())
        log.flush()
        proc = subprocess.Popen(  # our own interpreter and module
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=run_dir,
            start_new_session=True,  # its own process group: killable as a whole
            # If the worker's pool process dies by a signal (no `finally` runs then), the
            # training must not live on holding GPUs: the kernel kills it with its parent.
            preexec_fn=die_with_parent,
        )
        try:
            while proc.poll() is None:
                if deadline is not None and time.monotonic() > deadline:
                    _stop(proc)
                    raise TrainingError(
                        f"training exceeded its time limit of {timeout_s:g} s and was killed\n"
                        f"--- {log_file} (tail) ---\n{log_tail(log_file)}"
                    )
                time.sleep(0.2)
        finally:
            # Also on SoftTimeLimitExceeded or KeyboardInterrupt in the caller: no orphans.
            _stop(proc)
    return _read_result(proc.returncode, out_file, log_file)


def _read_result(returncode: int, out_file: Path, log_file: Path) -> TrainResult:
    tail = f"\n--- {log_file} (tail) ---\n{log_tail(log_file)}"
    reports = [out_file, *sorted(out_file.parent.glob(f"{out_file.stem}.rank*{out_file.suffix}"))]
    for path in reports:
        if not path.is_file():
            continue
        try:
            report = json.loads(path.read_text())
        except ValueError:
            continue
        if report.get("status") == "ok" and returncode == 0:
            return TrainResult.from_json(report["result"])
        if report.get("status") == "error":
            err = report.get("error") or {}
            kind = err.get("type", "Error")
            if kind == "DataError":  # the input's fault (a corrupt file), not the training's
                raise DataError(f"{err.get('message', '')} (found by the training process)")
            prefix = "" if kind == "TrainingError" else f"{kind}: "
            raise TrainingError(
                f"{prefix}{err.get('message', '')} "
                f"(training process exit status {returncode}){tail}"
            )
    if returncode < 0:
        name = signal.Signals(-returncode).name
        why = " (out of memory?)" if -returncode == signal.SIGKILL else ""
        raise TrainingError(f"training process killed by {name}{why}{tail}")
    raise TrainingError(f"training process exited with status {returncode} and no result{tail}")
