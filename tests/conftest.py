"""Shared fixtures: a real TLS-only redis-server with ACL, and real celery worker processes.

Nothing here mocks Redis, Celery or TLS. The broker listens on a free loopback port with a fresh
CA made by our own ``hpc2edge.pki.ca`` code, so the shared Redis on 6379 is never touched.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from hpc2edge.config import Settings, derived, for_role, load_settings
from hpc2edge.ops import localbroker, stack
from hpc2edge.roles import ROLE_OF_QUEUE
from hpc2edge.util import net, procs

REPO_ROOT = Path(__file__).resolve().parents[1]


def _sqlite_without_fsync() -> None:
    """SQLite opened through SQLAlchemy in the test process commits without an fsync
    (``PRAGMA synchronous=OFF``), as the tests' PostgreSQL runs without durability
    (tests/support/postgres.py). An Optuna study commits on every write, and each fsync costs
    10-20 ms on a VM disk, CPU idle or not. What a commit makes visible to other connections and
    processes is unchanged (a killed process loses nothing); only a power cut could lose one.
    Processes the tests start (workers, ``hpc2edge search``) keep SQLite's default."""
    try:
        import sqlite3

        from sqlalchemy import event
        from sqlalchemy.engine import Engine
    except ImportError:
        return

    @event.listens_for(Engine, "connect")
    def _no_fsync(dbapi_connection: object, _record: object) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            dbapi_connection.execute("PRAGMA synchronous=OFF")


_sqlite_without_fsync()


def _require_redis_server() -> None:
    if shutil.which("redis-server") is None:
        message = "redis-server is not on PATH (`make setup` installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI must run the integration tier, never skip it silently
        pytest.skip(message)


@dataclass
class Stack:
    """A running broker (and, with the ``workers`` fixture, workers) in ``state_dir``."""

    state_dir: Path
    settings: Settings  # the orchestrator's

    def as_role(self, role: str) -> Settings:
        return for_role(self.settings, role)

    def password(self, role: str) -> str:
        return (self.state_dir / "secrets" / f"{role}.password").read_text().strip()


def make_settings(state_dir: Path, extra_env: dict[str, str] | None = None) -> Settings:
    """A local stack's orchestrator settings on a free port (``extra_env``: more HPC2EDGE_*)."""
    env = {"HPC2EDGE_STATE_DIR": str(state_dir), "HPC2EDGE_BROKER_PORT": str(net.free_port())}
    env.update(extra_env or {})
    return stack.prepare(load_settings(environ=env))


@contextmanager
def own_broker(state_dir: Path, extra_env: dict[str, str] | None = None) -> Iterator[Stack]:
    """A broker of a test's own (own settings, e.g. a short visibility timeout), stopped after."""
    _require_redis_server()
    settings = make_settings(state_dir, extra_env)
    localbroker.start(settings)
    try:
        yield Stack(state_dir=settings.state_dir, settings=settings)
    finally:
        localbroker.stop(settings.state_dir)


@pytest.fixture(scope="session")
def broker_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A TLS-only redis-server with the shipped ACL, for the whole session."""
    _require_redis_server()
    state_dir = tmp_path_factory.mktemp("stack")
    settings = make_settings(state_dir)
    localbroker.start(settings)
    try:
        yield Stack(state_dir=settings.state_dir, settings=settings)
    finally:
        localbroker.stop(settings.state_dir)


def worker_env(stack_: Stack, role: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPC2EDGE_")}
    env["HPC2EDGE_CONFIG"] = str(derived.role_config_path(stack_.settings, role))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def start_worker(
    stack_: Stack, queue: str, hostname: str, *, extra_env: dict[str, str] | None = None
) -> procs.ProcRecord:
    """Start ``celery -A hpc2edge worker -Q queue`` as the queue's role, with test tasks loaded."""
    role = ROLE_OF_QUEUE[queue]
    argv = stack.worker_argv(queue)
    argv[argv.index(f"{queue}@%h")] = hostname
    argv += ["--include", "tests.support.tasks"]
    return procs.spawn(
        hostname,
        argv,
        env=worker_env(stack_, role, extra_env),
        cwd=stack_.state_dir,
        log=stack_.state_dir / "logs" / f"{hostname}.log",
        pid_file=stack_.state_dir / "run" / f"test-{hostname}.pid",
        log_mode="w",
    )


def wait_ready(
    stack_: Stack, queue: str, record: procs.ProcRecord, timeout_s: float = 60.0
) -> None:
    from hpc2edge.errors import StackError

    try:
        stack.wait_for_worker(
            stack_.settings, queue, timeout_s=timeout_s, record=record, hostname=record.name
        )
    except StackError as exc:
        pytest.fail(str(exc))


@dataclass
class Workers:
    edge: procs.ProcRecord
    train: procs.ProcRecord


@pytest.fixture(scope="session")
def workers(broker_stack: Stack) -> Iterator[Workers]:
    """One real edge worker (edge@test, --pool solo) and one train worker (train@test)."""
    w = Workers(
        edge=start_worker(broker_stack, "edge", "edge@test"),
        train=start_worker(broker_stack, "train", "train@test"),
    )
    try:
        wait_ready(broker_stack, "edge", w.edge)
        wait_ready(broker_stack, "train", w.train)
        yield w
    finally:
        # The records in ``w``: a test that restarts a worker puts its new record there.
        procs.stop(w.edge)
        procs.stop(w.train)


@pytest.fixture
def python() -> str:
    return sys.executable


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[object]:
    """A PostgreSQL server of the session's own on a free loopback port (tests/support/postgres).

    Skipped with the reason when PostgreSQL is not installed or cannot run here; under CI
    (``CI`` set) that fails instead, as a missing redis-server does.
    """
    from tests.support import postgres

    try:
        with postgres.server() as srv:
            yield srv
    except postgres.Unavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"no PostgreSQL server for the tests: {exc}")
        pytest.skip(f"no PostgreSQL server for the tests: {exc}")
