"""Files 0600 and folders 0700 under the state folder (issue 13, item 9).

Every test runs with the common umask 022, so a file that is private here is private because
hpc2edge made it so, not because of the tester's shell.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import weakref
from pathlib import Path

import click
import pytest

from hpc2edge.util import filemodes, procs
from tests.support.filemodes import mode, umask_022  # noqa: F401 - umask_022 is autouse

pytestmark = pytest.mark.unit


def _wait(record: procs.ProcRecord, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while procs.alive(record) and time.monotonic() < deadline:
        procs._reap(record.pid)
        time.sleep(0.02)
    assert not procs.alive(record)


# --- procs.spawn ------------------------------------------------------------------------------


def test_a_spawned_process_creates_private_files(tmp_path: Path) -> None:
    record = procs.spawn(
        "umask",
        ["sh", "-c", "umask > umask.txt; echo data > made.txt; mkdir made.d; echo logged"],
        cwd=tmp_path,
        log=tmp_path / "logs" / "child.log",
        pid_file=tmp_path / "run" / "child.pid",
        log_mode="w",
    )
    _wait(record)
    assert (tmp_path / "umask.txt").read_text().strip() == "0077"
    assert mode(tmp_path / "made.txt") == 0o600
    assert mode(tmp_path / "made.d") == 0o700
    assert mode(tmp_path / "logs") == 0o700 and mode(tmp_path / "run") == 0o700
    assert mode(tmp_path / "logs" / "child.log") == 0o600
    assert (tmp_path / "logs" / "child.log").read_text() == "logged\n"
    assert mode(tmp_path / "run" / "child.pid") == 0o600
    assert procs.read(tmp_path / "run" / "child.pid") == record


def test_spawn_tightens_an_existing_log_and_appends(tmp_path: Path) -> None:
    log = tmp_path / "old.log"
    log.write_text("before\n")
    log.chmod(0o644)
    record = procs.spawn(
        "echo", ["sh", "-c", "echo after"], log=log, pid_file=tmp_path / "e.pid", log_mode="a"
    )
    _wait(record)
    assert mode(log) == 0o600
    assert log.read_text() == "before\nafter\n"


def test_spawn_refuses_an_unknown_log_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="log mode"):
        procs.spawn("x", ["true"], log=tmp_path / "l", pid_file=tmp_path / "p", log_mode="r")


# --- the umask of the CLI and of workers ------------------------------------------------------


def test_the_cli_runs_with_umask_077_and_restores_the_callers(tmp_path: Path) -> None:
    from hpc2edge.cli import root as cli

    seen: list[int] = []

    @click.command("probe-umask")
    def probe() -> None:
        current = os.umask(0)
        os.umask(current)
        seen.append(current)
        (tmp_path / "written-by-cli").write_text("x")

    cli.cli.add_command(probe)
    try:
        assert cli.main(["probe-umask"]) == 0
    finally:
        cli.cli.commands.pop("probe-umask")
    assert seen == [0o077]
    assert mode(tmp_path / "written-by-cli") == 0o600
    assert os.umask(0o022) == 0o022  # the caller's umask is back


def test_current_umask_and_default_file_mode() -> None:
    assert filemodes.current_umask() == 0o022 and filemodes.default_file_mode() == 0o644
    with filemodes.umask_private():
        assert filemodes.current_umask() == 0o077 and filemodes.default_file_mode() == 0o600


def test_private_umask_keeps_a_stricter_umask() -> None:
    os.umask(0o277)
    assert filemodes.private_umask() == 0o277
    assert os.umask(0o022) == 0o277
    with filemodes.umask_private():
        assert os.umask(0o077) == 0o077
    assert os.umask(0o022) == 0o022


def test_a_celery_worker_sets_umask_077_when_it_initialises(tmp_path: Path) -> None:
    # A real Celery worker object (not started): Celery sends celeryd_init and worker_init.
    code = (
        "import os\n"
        "from hpc2edge.transport.app import connect_celery_signals\n"
        "connect_celery_signals()  # the app's construction connected them once already\n"
        "connect_celery_signals()  # and again: still one handler\n"
        "from celery import Celery, signals\n"
        "assert len(signals.celeryd_init.receivers) == 1, signals.celeryd_init.receivers\n"
        "before = os.umask(0o022); os.umask(before)\n"
        "app = Celery('probe', broker='memory://', backend='cache+memory://')\n"
        "app.Worker(pool='solo', concurrency=1, quiet=True, hostname='probe@test')\n"
        "after = os.umask(0); os.umask(after)\n"
        "print(oct(before), oct(after))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        umask=0o022,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0o22", "0o77"]


def test_the_hpc2edge_celery_app_connects_the_worker_umask() -> None:
    from celery import signals

    from hpc2edge.transport import app  # building the app connects them

    receivers = [
        r() if isinstance(r, weakref.ReferenceType) else r
        for _, r in signals.celeryd_init.receivers
    ]
    assert app._on_worker_init in receivers


# --- SQLite files -----------------------------------------------------------------------------


def _sqlite_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if ".db" in p.name)


def test_the_measurement_store_is_created_0600(tmp_path: Path) -> None:
    pytest.importorskip("sqlalchemy")
    from hpc2edge.store.measurements import MeasurementStore

    state = tmp_path / "state"
    store = MeasurementStore(f"sqlite:///{state / 'measurements.db'}")
    store.close()
    assert mode(state) == 0o700
    files = _sqlite_files(state)
    assert files and all(mode(p) == 0o600 for p in files), [(p, oct(mode(p))) for p in files]


def test_private_sqlite_makes_a_study_database_0600(tmp_path: Path) -> None:
    optuna = pytest.importorskip("optuna")
    from hpc2edge.search import study as st

    st.quiet_optuna()
    url = f"sqlite:///{tmp_path / 'studies' / 'search.db'}"
    filemodes.private_sqlite(url)
    study = optuna.create_study(study_name="s", storage=st.storage(url))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert mode(tmp_path / "studies") == 0o700
    files = _sqlite_files(tmp_path / "studies")
    assert files and all(mode(p) == 0o600 for p in files)
    # An existing file is left alone (tighten() is for those), other URLs are ignored.
    (tmp_path / "old.db").write_bytes(b"")
    filemodes.private_sqlite(f"sqlite:///{tmp_path / 'old.db'}")
    assert mode(tmp_path / "old.db") == 0o644
    for other in ("sqlite:///:memory:", "sqlite://", "postgresql://u:p@h/db"):
        filemodes.private_sqlite(other)


def test_sqlite_path() -> None:
    assert filemodes.sqlite_path("sqlite:////abs/s.db") == Path("/abs/s.db")
    assert filemodes.sqlite_path("sqlite:///rel/s.db?timeout=3") == Path("rel/s.db")
    assert filemodes.sqlite_path("sqlite:///:memory:") is None
    assert filemodes.sqlite_path("postgresql://h/db") is None


# --- tighten ----------------------------------------------------------------------------------


def test_tighten_makes_the_tree_private_without_following_links(tmp_path: Path) -> None:
    state = tmp_path / "state"
    outside = tmp_path / "outside"
    (state / "broker" / "data").mkdir(parents=True)
    (state / "logs").mkdir()
    outside.mkdir()
    (outside / "shared.txt").write_text("public")
    (outside / "deep").mkdir()
    (outside / "deep" / "f").write_text("x")
    (state / "search.db").write_text("")
    (state / "broker" / "data" / "appendonly.aof").write_text("")
    (state / "logs" / "w.log").write_text("")
    (state / "tool.sh").write_text("#!/bin/sh\n")
    (state / "tool.sh").chmod(0o755)
    (state / "logs").chmod(0o777)
    (state / "link-to-file").symlink_to(outside / "shared.txt")
    (state / "link-to-dir").symlink_to(outside)
    os.mkfifo(state / "fifo", 0o666)
    assert filemodes.loose(state)

    changed = filemodes.tighten(state)

    assert filemodes.loose(state) == []
    assert state / "search.db" in changed and state.resolve() in changed
    assert mode(state) == 0o700 and mode(state / "broker" / "data") == 0o700
    assert mode(state / "search.db") == 0o600 and mode(state / "logs" / "w.log") == 0o600
    assert mode(state / "tool.sh") == 0o700  # still executable by its owner
    assert mode(state / "fifo") == 0o600
    # Links are neither changed nor followed.
    assert mode(outside) == 0o755 and mode(outside / "shared.txt") == 0o644
    assert mode(outside / "deep") == 0o755 and mode(outside / "deep" / "f") == 0o644
    assert (state / "link-to-dir").is_symlink()
    assert filemodes.tighten(state) == []  # nothing left to change


def test_tighten_follows_a_linked_state_dir_itself(tmp_path: Path) -> None:
    real = tmp_path / "scratch" / "state"
    real.mkdir(parents=True)
    (real / "f").write_text("x")
    (tmp_path / ".hpc2edge").symlink_to(real)
    filemodes.tighten(tmp_path / ".hpc2edge")
    assert mode(real) == 0o700 and mode(real / "f") == 0o600
    assert mode(tmp_path / "scratch") == 0o755  # above the state folder: not ours to change


def test_tighten_of_a_missing_folder_changes_nothing(tmp_path: Path) -> None:
    assert filemodes.tighten(tmp_path / "nope") == []
