"""A real local stack keeps its state folder private: files 0600, folders 0700 (issue 13, item 9).

Real redis-server (its AOF holds every task and result), a real Celery worker, the CLI as users
run it, and the measurement store, all under the common umask 022: whatever is private here is
private because hpc2edge made it so.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpc2edge.config import derived, for_role, load_settings
from hpc2edge.transport import broker
from hpc2edge.util import filemodes, net, procs
from tests.conftest import REPO_ROOT, _require_redis_server, own_broker, start_worker, wait_ready
from tests.support.filemodes import mode, umask_022  # noqa: F401 - umask_022 is autouse

pytestmark = pytest.mark.integration


def _loose(state: Path) -> list[str]:
    return [f"{oct(mode(p))} {p.relative_to(state.resolve())}" for p in filemodes.loose(state)]


def _write_through_the_broker(admin_settings: object) -> None:
    with broker.client(admin_settings) as c:  # type: ignore[arg-type]
        for i in range(20):
            c.rpush("file-modes-test", f"task {i}: secret arguments")
        c.bgrewriteaof()  # a rewrite makes new AOF files: the child's umask, not ours
        deadline = time.monotonic() + 60  # polled: a rewrite on a loaded machine may be slow
        while c.info("persistence")["aof_rewrite_in_progress"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not c.info("persistence")["aof_rewrite_in_progress"], "the AOF rewrite never ended"
    time.sleep(1.2)  # appendfsync everysec


def _check_aof(state: Path) -> None:
    data = state / "broker" / "data"
    aof_dirs = [p for p in data.iterdir() if p.is_dir()]
    assert aof_dirs, list(data.iterdir())  # redis 7: appendonlydir/
    for folder in aof_dirs:
        assert mode(folder) == 0o700, folder
        files = list(folder.iterdir())
        assert files
        assert all(mode(f) == 0o600 for f in files), [(f.name, oct(mode(f))) for f in files]
    assert any(b"secret arguments" in f.read_bytes() for d in aof_dirs for f in d.iterdir())


def test_a_stack_started_by_the_cli_is_private(tmp_path: Path) -> None:
    """`hpc2edge broker start` from a shell with umask 022: nothing under the state folder is
    readable by group or others (AOF, logs, pid files, certificates, role configs)."""
    _require_redis_server()
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPC2EDGE_")}
    env.update(
        HPC2EDGE_STATE_DIR=str(state),
        HPC2EDGE_BROKER_PORT=str(net.free_port()),
        PYTHONPATH=str(REPO_ROOT),
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hpc2edge.cli", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            umask=0o022,
        )

    started = cli("broker", "start")
    assert started.returncode == 0, started.stderr
    try:
        hpc = {k: v for k, v in env.items() if k.startswith("HPC2EDGE_")}
        admin = for_role(derived.absolute(load_settings(environ=hpc)), "admin")
        _write_through_the_broker(admin)
        _check_aof(state)
        assert mode(state / "broker" / "redis.log") == 0o600
        assert mode(state / "run" / "broker.pid") == 0o600
        assert (state / "tls" / "ca.pem").exists() and (state / "conf").is_dir()
        # The measurement store beside it, made by the project's own code in this process.
        pytest.importorskip("sqlalchemy")
        from hpc2edge.store.measurements import MeasurementStore

        MeasurementStore(f"sqlite:///{state / 'measurements.db'}").close()
        assert _loose(state) == []
    finally:
        stopped = cli("broker", "stop")
        assert stopped.returncode == 0, stopped.stderr
    assert _loose(state) == []


def test_what_the_broker_and_a_worker_write_is_private(tmp_path: Path) -> None:
    """Library use (no CLI, this process keeps umask 022): the processes procs.spawn starts
    write private files; tighten() then closes what this process made with 0644/0755."""
    with own_broker(tmp_path / "state") as s:
        record = start_worker(s, "edge", "edge@modes")
        try:
            wait_ready(s, "edge", record)
            _write_through_the_broker(s.as_role("admin"))
            _check_aof(s.state_dir)
            assert mode(s.state_dir / "broker" / "redis.log") == 0o600
            assert mode(s.state_dir / "logs") == 0o700
            assert mode(s.state_dir / "logs" / "edge@modes.log") == 0o600
            assert (s.state_dir / "logs" / "edge@modes.log").stat().st_size > 0
            assert mode(s.state_dir / "run" / "broker.pid") == 0o600
            assert mode(s.state_dir / "run" / "test-edge@modes.pid") == 0o600
            # What this process created itself (umask 022) is loose until tightened.
            assert _loose(s.state_dir)
            filemodes.tighten(s.state_dir)
            assert _loose(s.state_dir) == []
            # The running stack does not mind: the broker still answers, the worker too.
            with broker.client(s.as_role("admin")) as c:
                assert c.llen("file-modes-test") == 20
            wait_ready(s, "edge", record)
        finally:
            procs.stop(record)
        assert _loose(s.state_dir) == []
