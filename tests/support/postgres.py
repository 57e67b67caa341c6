"""A PostgreSQL server of the tests' own, as ``redis-server`` is: started, used, stopped.

:func:`server` runs ``initdb`` and ``postgres`` in a fresh temporary folder, listening on
127.0.0.1 only, on a free port, with its unix socket in that folder too; a shared server (on
5432 or anywhere else) is never touched. The superuser ``postgres`` connects with ``trust`` (the
throwaway cluster lives for one session). Durability is off (``fsync``, ``synchronous_commit``,
``full_page_writes``): nothing here must survive a crash, and the tests run faster.

PostgreSQL refuses to run as root. Under root the server runs as ``nobody`` (the cluster's folder
is handed to it); where that is impossible :class:`Unavailable` says why. The binaries are found
on ``PATH``, then with ``pg_config --bindir``, then in Debian's ``/usr/lib/postgresql/<n>/bin``
(the ``postgresql`` package installs them there, off ``PATH``; ``make setup`` installs it).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpc2edge.util import net

#: The user the server runs as when the tests run as root.
UNPRIVILEGED_USER = "nobody"
SUPERUSER = "postgres"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
PORT_ATTEMPTS = 3


class Unavailable(RuntimeError):
    """No PostgreSQL server can be started here (the message says why)."""


def _version_key(path: Path) -> tuple[int, ...]:
    match = re.search(r"/postgresql/(\d+(?:\.\d+)?)/bin", str(path))
    return tuple(int(p) for p in match.group(1).split(".")) if match else ()


def find_bindir() -> Path | None:
    """The folder with ``initdb`` and ``postgres``, or None when PostgreSQL is not installed."""
    candidates: list[Path] = []
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)  # a link on PATH: the real folder
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            if out:
                candidates.append(Path(out))
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    candidates.extend(debian)
    for folder in candidates:
        if all(os.access(folder / name, os.X_OK) for name in ("initdb", "postgres")):
            return folder
    return None


def _run_as() -> dict[str, Any]:
    """``subprocess`` arguments that drop root to :data:`UNPRIVILEGED_USER` (none otherwise)."""
    if os.geteuid() != 0:
        return {}
    try:
        user = pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        raise Unavailable(
            f"PostgreSQL refuses to run as root and there is no {UNPRIVILEGED_USER!r} user to "
            "run it as; run the tests as an ordinary user"
        ) from None
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


@dataclass
class PostgresServer:
    """A running throwaway cluster (see the module docstring)."""

    root: Path
    port: int
    process: subprocess.Popen[bytes]
    host: str = "127.0.0.1"
    user: str = SUPERUSER

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL (``postgresql+psycopg``) of ``database`` on this server."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """The URL of a fresh, empty database, dropped afterwards (connections and all)."""
        import sqlalchemy

        admin = sqlalchemy.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        name = f"hpc2edge_test_{uuid.uuid4().hex[:10]}"
        try:
            with admin.connect() as c:
                c.exec_driver_sql(f"CREATE DATABASE {name}")
            try:
                yield self.url(name)
            finally:
                with admin.connect() as c:
                    c.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            admin.dispose()


def _wait_ready(srv: PostgresServer, bindir: Path, timeout_s: float) -> None:
    """Until ``pg_isready`` says the server accepts connections (or it died, or time is up)."""
    isready = bindir / "pg_isready"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if srv.process.poll() is not None:
            raise Unavailable(
                f"postgres exited with status {srv.process.returncode}:\n{srv.log_tail()}"
            )
        if isready.exists():
            probe = subprocess.run(
                [str(isready), "-q", "-h", srv.host, "-p", str(srv.port), "-U", srv.user],
                capture_output=True,
                timeout=10,
            )
            ready = probe.returncode == 0
        else:  # not every packaging ships it: a TCP connect is enough to start trying
            ready = net_connectable(srv.host, srv.port)
        if ready:
            return
        time.sleep(0.1)
    raise Unavailable(
        f"postgres did not accept connections in {timeout_s:.0f} s:\n{srv.log_tail()}"
    )


def net_connectable(host: str, port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _stop(srv: PostgresServer) -> None:
    """Fast shutdown (SIGINT: roll back, disconnect, exit); SIGKILL if it does not exit."""
    if srv.process.poll() is None:
        srv.process.send_signal(signal.SIGINT)
        try:
            srv.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            srv.process.kill()
            srv.process.wait(timeout=STOP_TIMEOUT_S)


def _start(bindir: Path, root: Path, data: Path, as_user: dict[str, Any]) -> PostgresServer:
    port = net.free_port()
    options = {
        "listen_addresses": "127.0.0.1",
        "port": str(port),
        "unix_socket_directories": str(root),
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "50",
        "shared_buffers": "32MB",
    }
    argv = [str(bindir / "postgres"), "-D", str(data)]
    for name, value in options.items():
        argv += ["-c", f"{name}={value}"]
    log_path = root / "postgres.log"
    with log_path.open("wb") as log:
        if as_user:
            os.chown(log_path, as_user["user"], as_user["group"])
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=root, **as_user)
    return PostgresServer(root=root, port=port, process=process)


@contextlib.contextmanager
def server(bindir: Path | None = None) -> Iterator[PostgresServer]:
    """Start a cluster of our own (see the module docstring); stop it and delete it after.

    Raises :class:`Unavailable` when PostgreSQL is not installed or cannot start here.
    """
    bindir = bindir or find_bindir()
    if bindir is None:
        raise Unavailable(
            "PostgreSQL is not installed (no initdb/postgres on PATH, in `pg_config --bindir` or "
            "in /usr/lib/postgresql/*/bin; `make setup` installs it)"
        )
    as_user = _run_as()
    # Not under pytest's basetemp: that is private to root (0700), which ``nobody`` cannot enter.
    root = Path(tempfile.mkdtemp(prefix="hpc2edge-pg-"))
    try:
        if as_user:
            os.chown(root, as_user["user"], as_user["group"])
        data = root / "data"
        quiet = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "cwd": root, **as_user}
        init = subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust",
             "--encoding=UTF8", "--no-locale", "--no-sync"],
            timeout=120, **quiet,
        )  # fmt: skip
        if init.returncode != 0:
            raise Unavailable(f"initdb failed:\n{init.stdout.decode(errors='replace')[-2000:]}")
        for attempt in range(PORT_ATTEMPTS):
            srv = _start(bindir, root, data, as_user)
            try:
                _wait_ready(srv, bindir, START_TIMEOUT_S)
            except Unavailable:
                _stop(srv)
                # The free port was taken between finding it and binding it: try another.
                if attempt + 1 < PORT_ATTEMPTS and "already in use" in srv.log_tail():
                    continue
                raise
            break
        try:
            yield srv
        finally:
            _stop(srv)
    finally:
        shutil.rmtree(root, ignore_errors=True)
