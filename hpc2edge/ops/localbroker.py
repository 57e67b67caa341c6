"""The local broker: its configuration files, passwords, scripts, and a TLS-only redis-server.

Clients connect with :func:`hpc2edge.transport.broker.client`; this module is the admin's and
the local stack's, never imported by code that runs on a worker.

Production runs Redis wherever the two sites can both reach it (``k8s/``); a laptop or one-node
deployment runs it here with :func:`start`. Both use the same ``broker/redis.conf`` (policy: TLS
only, client certificates, AOF) and ``broker/users.acl`` (one least-privilege user per role).

Layout under a state folder (``.hpc2edge/`` by default)::

    tls/                 CA and certificates (hpc2edge.pki.ca)
    secrets/<role>.password   one random password per ACL user, 0600
    broker/users.acl     the ACL file rendered with the passwords' SHA-256
    broker/data/         AOF and Redis working directory
    broker/redis.log, run/broker.pid
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import string
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from hpc2edge import config
from hpc2edge.config import pid_file
from hpc2edge.errors import BrokerError, BrokerUnreachable
from hpc2edge.roles import ADMIN, ROLES
from hpc2edge.transport.broker import client, translate_errors
from hpc2edge.util import procs
from hpc2edge.util.files import ensure_password_file, write_private

if TYPE_CHECKING:
    import redis

    from hpc2edge.config import Settings

INSTALL_HINT = (
    "redis-server (>= 7.0, built with TLS) was not found on PATH. Install it with "
    "`sudo apt-get install redis-server` (Debian/Ubuntu), `sudo dnf install redis` (Fedora/RHEL) "
    "or `brew install redis` (macOS), or point HPC2EDGE at a remote broker in the config."
)


def resource_text(name: str) -> str:
    """The shipped ``broker/<name>`` file (``redis.conf`` or ``users.acl``)."""
    return resources.files("hpc2edge.resources").joinpath(name).read_text()


def render_acl(passwords: dict[str, str], template: str | None = None) -> str:
    """``users.acl`` with each ``${role}`` replaced by the SHA-256 of that role's password.

    Comment lines are dropped: they document the template; Redis's ACL file format has no comments.
    """
    missing = [u for u in ROLES if u not in passwords]
    if missing:
        raise ValueError(f"no password for ACL users: {', '.join(missing)}")
    text = template if template is not None else resource_text("users.acl")
    hashes = {user: hashlib.sha256(pw.encode()).hexdigest() for user, pw in passwords.items()}
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return string.Template("\n".join(lines)).substitute(hashes) + "\n"


def write_acl(path: Path, passwords: dict[str, str], *, admin_only: bool = False) -> None:
    """Write the rendered ACL file, readable by its owner only.

    ``admin_only`` switches every user but ``admin`` (and ``default``) ``off``: :func:`start`
    runs the broker so until the admin has preloaded the Lua scripts, then loads the real file.
    """
    text = render_acl(passwords)
    if admin_only:
        text = re.sub(r"^user (?!admin |default )(\S+) on ", r"user \1 off ", text, flags=re.M)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, text.encode())


def ensure_secrets(secrets_dir: Path) -> dict[str, str]:
    """Read each role's password from ``secrets_dir``, creating random ones that are missing."""
    secrets_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(secrets_dir, 0o700)
    out: dict[str, str] = {}
    for user in ROLES:
        out[user] = ensure_password_file(secrets_dir / f"{user}.password")
    return out


def find_redis_server() -> str:
    """The ``redis-server`` executable, or a BrokerError that says how to install it."""
    found = shutil.which("redis-server")
    if not found:
        raise BrokerError(INSTALL_HINT)
    return found


@dataclass(frozen=True)
class LocalBroker:
    """Files of a broker run from a state folder."""

    state_dir: Path

    @property
    def root(self) -> Path:
        return self.state_dir / "broker"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def acl_file(self) -> Path:
        return self.root / "users.acl"

    @property
    def conf_file(self) -> Path:
        return self.root / "redis.conf"

    @property
    def log_file(self) -> Path:
        return self.root / "redis.log"

    @property
    def pid_file(self) -> Path:
        return pid_file(self.state_dir, "broker")

    def command(self, tls_dir: Path, host: str, port: int, *, maxmemory_mib: int = 0) -> list[str]:
        """The redis-server command line: shipped policy, then absolute paths and the port.

        ``maxmemory_mib`` > 0 replaces redis.conf's ``maxmemory`` (``broker.maxmemory_mib``).
        """
        a = lambda p: str(p.resolve())  # noqa: E731 - Redis chdirs to `dir` before loading files
        limits = ["--maxmemory", f"{maxmemory_mib}mb"] if maxmemory_mib > 0 else []
        return [
            find_redis_server(),
            a(self.conf_file),
            "--tls-port",
            str(port),
            "--bind",
            host,
            "--tls-cert-file",
            a(tls_dir / "server.pem"),
            "--tls-key-file",
            a(tls_dir / "server-key.pem"),
            "--tls-ca-cert-file",
            a(tls_dir / "ca.pem"),
            "--aclfile",
            a(self.acl_file),
            "--dir",
            a(self.data_dir),
            "--logfile",
            a(self.log_file),
            "--pidfile",
            a(self.root / "redis-server.pid"),
            *limits,
        ]


def lua_scripts() -> dict[str, str]:
    """The Lua scripts our clients run, by name: their text as the installed libraries send it.

    Roles may not run EVAL or SCRIPT LOAD (``users.acl``), only EVALSHA of a script the broker
    already holds, so the admin loads exactly these at every broker start
    (:func:`preload_scripts`). The texts come from the installed kombu and redis-py, never from a
    copy, so their SHA-1 is what a client of the same versions sends.

    - kombu's Redis transport: ``REFRESH_BINDING`` and ``SWEEP_BINDINGS`` (expiry of the
      remote-control reply bindings).
    - redis-py's ``Lock`` (kombu's ``Mutex`` around the restore of unacked messages): release,
      extend and reacquire.
    """
    from kombu.transport import redis as kombu_redis
    from redis.lock import Lock

    return {
        "kombu.refresh_binding": kombu_redis.REFRESH_BINDING,
        "kombu.sweep_bindings": kombu_redis.SWEEP_BINDINGS,
        "redis.lock.release": Lock.LUA_RELEASE_SCRIPT,
        "redis.lock.extend": Lock.LUA_EXTEND_SCRIPT,
        "redis.lock.reacquire": Lock.LUA_REACQUIRE_SCRIPT,
    }


def script_sha(text: str) -> str:
    """The SHA-1 a client's EVALSHA names ``text`` by (redis-py encodes it as UTF-8)."""
    return hashlib.sha1(text.encode()).hexdigest()  # noqa: S324 - Redis's script id, not security


def preload_scripts(admin: redis.Redis) -> dict[str, str]:
    """SCRIPT LOAD every script of :func:`lua_scripts` through ``admin``; returns name -> SHA-1.

    Idempotent (loading a script again is a no-op). Redis 7 keeps scripts in memory only: they
    are gone after every restart and after SCRIPT FLUSH, so whoever starts the broker runs this
    right after it answers (:func:`start` does).

    Raises:
        BrokerError: the broker refused a script, or returned another SHA-1 than the client's.
    """
    out: dict[str, str] = {}
    with translate_errors("preloading the Lua scripts"):
        for name, text in lua_scripts().items():
            sha = admin.script_load(text)
            if sha != script_sha(text):
                raise BrokerError(
                    f"script {name}: the broker named it {sha}, not {script_sha(text)}"
                )
            out[name] = sha
    return out


def start(settings: Settings, *, timeout_s: float = 15.0) -> int:
    """Start a local TLS-only redis-server for ``settings`` and wait until it answers.

    Certificates must exist (``hpc2edge tls init``); passwords are created on first use. Returns
    the server's pid, also recorded in ``<state_dir>/run/broker.pid``.

    Raises:
        BrokerError: redis-server missing, already running, or not answering in time.
    """
    local = LocalBroker(settings.state_dir)
    running = procs.read(local.pid_file)
    if running is not None and procs.alive(running):
        raise BrokerError(
            f"a broker started from {settings.state_dir} is already running "
            f"(pid {running.pid}); `hpc2edge broker stop` first"
        )
    tls_dir = settings.tls.ca_cert.parent
    for name in ("ca.pem", "server.pem", "server-key.pem"):
        if not (tls_dir / name).is_file():
            raise BrokerError(
                f"{tls_dir / name} is missing: run `hpc2edge tls init --dir {tls_dir}`"
            )
    passwords = ensure_secrets(config.secrets_dir(settings))
    local.data_dir.mkdir(parents=True, exist_ok=True)
    local.conf_file.write_text(resource_text("redis.conf"))
    # No role may log in before the admin has preloaded the scripts: a worker reconnecting in
    # that window would get NOSCRIPT, fall back to SCRIPT LOAD and be refused.
    write_acl(local.acl_file, passwords, admin_only=True)
    command = local.command(
        tls_dir,
        settings.broker.host,
        settings.broker.port,
        maxmemory_mib=settings.broker.maxmemory_mib,
    )
    record = procs.spawn(
        "broker", command, log=local.log_file, pid_file=local.pid_file, log_mode="a"
    )
    admin = config.for_role(settings, ADMIN)
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not procs.alive(record):
            tail = procs.tail(local.log_file)
            raise BrokerError(f"redis-server exited at start; its log ends:\n{tail}")
        try:
            c = client(admin, retries=0)
        except BrokerUnreachable as exc:
            last = exc
            time.sleep(0.1)
            continue
        try:
            with c:
                preload_scripts(c)
                write_acl(local.acl_file, passwords)
                with translate_errors("loading the ACL file"):
                    c.acl_load()
        except BrokerError:
            procs.stop(record)
            raise
        return record.pid
    procs.stop(record)
    raise BrokerError(f"redis-server did not answer within {timeout_s:.0f} s: {last}")


def stop(state_dir: Path, *, timeout_s: float = 10.0) -> bool:
    """Stop the broker started from ``state_dir``; False when none was running."""
    local = LocalBroker(state_dir)
    record = procs.read(local.pid_file)
    if record is None:
        return False
    stopped = procs.stop(record, timeout_s=timeout_s)
    local.pid_file.unlink(missing_ok=True)
    return stopped


__all__ = [
    "LocalBroker",
    "ensure_secrets",
    "find_redis_server",
    "lua_scripts",
    "preload_scripts",
    "render_acl",
    "resource_text",
    "script_sha",
    "start",
    "stop",
    "write_acl",
]
