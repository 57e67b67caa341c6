"""The edge side runs with only the core and `edge` extras: no torch, no DeepSpeed, no TensorRT,
no optuna, h5py, SQLAlchemy or matplotlib.

The test blocks those modules from import in a child process (:mod:`tests.support.blocker`)
and runs the user's command in it.
"""

from __future__ import annotations

import subprocess
import textwrap

import pytest

from hpc2edge.util import procs

from ..conftest import REPO_ROOT, wait_ready, worker_env
from ..support import blocker

pytestmark = pytest.mark.integration

BLOCKED = blocker.HEAVY


@pytest.fixture
def blocked_env(tmp_path):
    blocker.write(tmp_path)

    def env(base: dict[str, str]) -> dict[str, str]:
        out = dict(base)
        out["PYTHONPATH"] = f"{tmp_path}:{REPO_ROOT}"
        return out

    return env


def test_import_hpc2edge_pulls_in_nothing_heavy(blocked_env, python):
    code = f"BLOCKED = {BLOCKED!r}\n" + textwrap.dedent("""
        import sys
        try:
            import torch
        except ModuleNotFoundError:
            pass
        else:
            raise SystemExit("the blocker is not active")
        import hpc2edge, hpc2edge.transport.app, hpc2edge.tasks, hpc2edge.cli.root, hpc2edge.config
        import hpc2edge.pki.ca, hpc2edge.ops.localbroker, hpc2edge.ops.stack
        assert not any(m.split('.')[0] in BLOCKED for m in sys.modules)
        print("ok")
    """)
    out = subprocess.run(
        [python, "-c", code],
        env=blocked_env({}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_edge_worker_serves_with_heavy_modules_blocked(broker_stack, workers, blocked_env, python):
    # The exact command users run on the device (plus a hostname so the test can tell it apart);
    # mingle and gossip stay on, as in the plain command, so the ACL must allow them too.
    argv = [
        python,
        "-m",
        "celery",
        "-A",
        "hpc2edge",
        "worker",
        "-Q",
        "edge",
        "--pool",
        "solo",
        "-c",
        "1",
        "--hostname",
        "noheavy@test",
    ]
    env = blocked_env(worker_env(broker_stack, "edge"))
    record = procs.spawn(
        "noheavy@test",
        argv,
        env=env,
        cwd=broker_stack.state_dir,
        log=broker_stack.state_dir / "logs" / "noheavy.log",
        pid_file=broker_stack.state_dir / "run" / "noheavy.pid",
        log_mode="w",
    )
    try:
        # edge@test also serves this queue: ping until the blocked worker itself answered.
        wait_ready(broker_stack, "edge", record)
        log = procs.tail(record.log, 200)
        assert "blocked by the test" not in log
        assert "Unrecoverable error" not in log
    finally:
        procs.stop(record)
