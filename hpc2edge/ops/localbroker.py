"""The local broker: its configuration files, passwords, scripts, and a TLS-only redis-server.

Clients connect with :func:`hpc2edge.transport.broker.client`; this module is the admin's and
the local stack's, never imported by code that runs on a worker.

Production runs Redis wherever the two sites can both reach it (``k8s/``); a laptop or one-node
deployment runs it here with :func:`start`. Both use the same ``broker/redis.conf`` (policy: TLS
only, client certificates, AOF) and ``broker/users.acl`` (one least-privilege user per role),
plus one user per registered edge device (:mod:`hpc2edge.pki.devices`), confined to its kind's
keys (:func:`device_patterns`).

Layout under a state folder (``.hpc2edge/`` by default)::

    tls/                 CA and certificates (hpc2edge.pki.ca)
    secrets/<role>.password   one random password per ACL user, 0600
    secrets/edge-<name>.password, secrets/devices.json   device users and their registry
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
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from hpc2edge import config
from hpc2edge.config import pid_file
from hpc2edge.errors import BrokerError, BrokerUnreachable
from hpc2edge.roles import ADMIN, EDGE, ROLES, edge_queue
from hpc2edge.transport import deadletters, liveness
from hpc2edge.transport.broker import client, translate_errors
from hpc2edge.transport.units import quarantine_key
from hpc2edge.util import procs
from hpc2edge.util.files import ensure_password_file, write_private

if TYPE_CHECKING:
    import redis

    from hpc2edge.config import Settings
    from hpc2edge.pki.devices import Login

# hpc2edge.pki.devices is imported where it is used: `hpc2edge k8s --help` loads this module,
# and a command's help loads no part of the tree it does not need (tests/unit/test_cli_layout).

INSTALL_HINT = (
    "redis-server (>= 7.0, built with TLS) was not found on PATH. Install it with "
    "`sudo apt-get install redis-server` (Debian/Ubuntu), `sudo dnf install redis` (Fedora/RHEL) "
    "or `brew install redis` (macOS), or point HPC2EDGE at a remote broker in the config."
)


def resource_text(name: str) -> str:
    """The shipped ``broker/<name>`` file (``redis.conf`` or ``users.acl``)."""
    return resources.files("hpc2edge.resources").joinpath(name).read_text()


#: kombu's Redis transport keeps a queue's priority levels in sub-lists named queue + this +
#: a digit (``kombu.transport.redis.Channel.sep``).
KOMBU_PRIORITY_SEP = "\x06\x16"
#: The random part of a task id (:mod:`hpc2edge.transport.taskids`): exactly 32 hex digits.
_TASK_HEX = "[0-9a-f]" * 32


def device_patterns(kind: str) -> list[str]:
    """The keys and channels of a device user of ``kind``: the edge role's, cut to the kind.

    Every name is exact or ends in a part no other kind's name can have, so kind ``orin`` gets
    nothing of ``edge.orin-nano`` (a kind name is ``[a-z0-9-]``; ``:``, the priority separator
    and a task id's ``-`` plus exactly 32 hex digits cannot continue one):

    - its queue ``Q`` and kombu's priority sub-lists ``Q\\x06\\x16<digit>``;
    - its kind's unacked messages ``hpc2edge:unacked:Q`` and ``...:Q:*`` (``:index``,
      ``:mutex``), dead letters ``hpc2edge:dead:Q`` and ``...:Q:*`` (redelivery counts),
      liveness set ``hpc2edge:alive:Q`` and ``...:Q:*`` (the units' reports), and, read only,
      the orchestrator's quarantine decisions ``hpc2edge:fleet:quarantine:Q``;
    - the one key every edge worker shares, the index of kinds seen
      (:data:`hpc2edge.transport.liveness.KINDS_KEY`): a device can add or drop kind names
      there, which its readers check (known limit (i) of docs/security.md);
    - the bindings of its exchange ``_kombu.binding.Q`` (and kombu 5.7's
      ``_kombu.binding_permanent.Q``);
    - the result keys and channels of its queue's tasks, ``celery-task-meta-Q-`` + 32 hex;
    - as the edge role: every binding read-only, the binding deadlines, the event plumbing
      (``celeryev.*``, ``/0.celeryev/*``) and model artifacts read-only.
    """
    queue = edge_queue(kind)
    unacked = f"hpc2edge:unacked:{queue}"  # hpc2edge.transport.app.unacked_prefix
    dead = deadletters.key(queue)
    result = f"celery-task-meta-{queue}-{_TASK_HEX}"
    return [
        f"~{queue}",
        f"~{queue}{KOMBU_PRIORITY_SEP}[0-9]",
        f"~{unacked}",
        f"~{unacked}:*",
        f"~_kombu.binding.{queue}",
        f"~_kombu.binding_permanent.{queue}",
        "%R~_kombu.binding*",
        "~_kombu.binding_deadlines",
        "~_kombu.binding*.celeryev",
        "~celeryev.*",
        f"~{result}",
        f"~{dead}",
        f"~{dead}:*",
        f"~{liveness.key(queue)}",
        f"~{liveness.key(queue)}:*",
        f"~{liveness.KINDS_KEY}",
        f"%R~{quarantine_key(queue)}",
        "%R~hpc2edge:artifact:*",
        f"&{result}",
        "&/0.celeryev/*",
        "&/0.celeryev/worker.*",
    ]


def _edge_commands(template: str) -> list[str]:
    """The command rules of the template's ``edge`` user (its key, channel and password rules
    left out): device users get exactly these, so they can never drift from the role's."""
    for line in template.splitlines():
        words = line.split()
        if words[:2] == ["user", EDGE]:
            return [w for w in words[2:] if w != "on" and not w.startswith(("#", "~", "%", "&"))]
    raise ValueError(
        "the ACL template has no `user edge` line to take the device users' rules from"
    )


def device_rules(login: Login, template: str | None = None) -> list[str]:
    """A device user's ACL rules: on, its password's SHA-256, the edge role's commands and
    :func:`device_patterns`. The same list goes into the ACL file and into ``ACL SETUSER``."""
    text = template if template is not None else resource_text("users.acl")
    digest = hashlib.sha256(login.password.encode()).hexdigest()
    return ["on", f"#{digest}", *_edge_commands(text), *device_patterns(login.kind)]


def render_acl(
    passwords: dict[str, str],
    template: str | None = None,
    *,
    device_logins: Sequence[Login] = (),
) -> str:
    """``users.acl`` with each ``${role}`` replaced by the SHA-256 of that role's password, and
    one line per active device user (:func:`device_rules`) after the roles.

    Comment lines are dropped: they document the template; Redis's ACL file format has no comments.
    """
    missing = [u for u in ROLES if u not in passwords]
    if missing:
        raise ValueError(f"no password for ACL users: {', '.join(missing)}")
    text = template if template is not None else resource_text("users.acl")
    hashes = {user: hashlib.sha256(pw.encode()).hexdigest() for user, pw in passwords.items()}
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    lines = string.Template("\n".join(lines)).substitute(hashes).splitlines()
    for login in device_logins:
        lines.append(" ".join(["user", login.user, *device_rules(login, text)]))
    return "\n".join(lines) + "\n"


def write_acl(
    path: Path,
    passwords: dict[str, str],
    *,
    device_logins: Sequence[Login] = (),
    admin_only: bool = False,
) -> None:
    """Write the rendered ACL file, readable by its owner only.

    ``admin_only`` switches every user but ``admin`` (and ``default``) ``off``, device users
    included: :func:`start` runs the broker so until the admin has preloaded the Lua scripts,
    then loads the real file.
    """
    text = render_acl(passwords, device_logins=device_logins)
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

    Certificates must exist (``hpc2edge tls init``); role passwords are created on first use,
    and the ACL holds a user for every active device of the registry in the secrets folder
    (:mod:`hpc2edge.pki.devices`). Returns the server's pid, also recorded in
    ``<state_dir>/run/broker.pid``.

    Raises:
        BrokerError: redis-server missing, already running, or not answering in time.
        TLSError: the device registry is unreadable, or an active device has no password file.
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
    from hpc2edge.pki import devices

    secrets_dir = config.secrets_dir(settings)
    passwords = ensure_secrets(secrets_dir)
    # Every active device's user, from the registry: a restart keeps them, and no revoked one.
    logins = devices.logins(secrets_dir)
    local.data_dir.mkdir(parents=True, exist_ok=True)
    local.conf_file.write_text(resource_text("redis.conf"))
    # No role may log in before the admin has preloaded the scripts: a worker reconnecting in
    # that window would get NOSCRIPT, fall back to SCRIPT LOAD and be refused.
    write_acl(local.acl_file, passwords, device_logins=logins, admin_only=True)
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
                write_acl(local.acl_file, passwords, device_logins=logins)
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


def apply_device_user(admin: redis.Redis, login: Login) -> None:
    """Create (or replace) a device's user in a running broker, as ``admin``.

    ``ACL SETUSER <user> reset <rules>``, not a rewritten file and ``ACL LOAD``: Redis 7.0's
    ``ACL LOAD`` recreates every user and so disconnects every client of every user (tested
    on 7.0.15), which would cut the whole fleet's connections, in-flight ``BRPOP`` and result
    subscriptions included, to add one device. ``reset`` first makes the rules exactly
    :func:`device_rules`, whatever the user had before.
    """
    with translate_errors(f"creating the broker user {login.user}"):
        admin.execute_command("ACL", "SETUSER", login.user, "reset", *device_rules(login))


def remove_device_user(admin: redis.Redis, user: str) -> int:
    """Shut ``user`` out of a running broker at once, as ``admin``; returns how many of its
    connections were closed.

    In one ``MULTI``: ``ACL SETUSER user reset`` (off, no password, no rights: no new login and
    no further command), ``CLIENT KILL USER user`` (its open connections, a blocked ``BRPOP``
    included), ``ACL DELUSER user``. The reset also makes the kill valid for a user the broker
    did not have (``CLIENT KILL USER`` refuses an unknown user), so this is idempotent.
    """
    with translate_errors(f"removing the broker user {user}"):
        pipe = admin.pipeline(transaction=True)
        pipe.execute_command("ACL", "SETUSER", user, "reset")
        pipe.execute_command("CLIENT", "KILL", "USER", user)
        pipe.execute_command("ACL", "DELUSER", user)
        _, killed, _ = pipe.execute()
    return int(killed)


@dataclass(frozen=True)
class DeviceSync:
    """What a device change did to the broker the settings name.

    ``applied`` is true when the running broker has the change; ``detail`` says where, or why
    not. ``acl_file`` is the local broker's rendered ACL file when it was rewritten (so an
    ``ACL LOAD`` or a restart agrees with the registry)."""

    applied: bool
    detail: str
    acl_file: Path | None = None
    killed: int = 0


def sync_devices(
    settings: Settings, secrets_dir: Path, *, add: Sequence[str] = (), remove: Sequence[str] = ()
) -> DeviceSync:
    """Make the broker of ``settings`` agree with the device registry in ``secrets_dir``.

    Logged in as ``admin``: removes the users in ``remove`` first (:func:`remove_device_user`),
    so that no later problem can keep a revoked device in, and any other ``edge-*`` user the
    registry does not hold as active; then rewrites the local broker's
    rendered ACL file when there is one (``<state_dir>/broker/users.acl``, also when the broker
    cannot be reached); then creates the users of the active devices named in ``add``
    (:func:`apply_device_user`). Nothing is applied when ``secrets_dir`` is not the folder the
    settings' broker renders its users from (:func:`hpc2edge.config.secrets_dir`): that broker
    would lose the change at its next start.

    Raises:
        TLSError: the registry is unreadable, or an active device has no password file.
        BrokerError: the broker answered but refused a command.
    """
    from hpc2edge.pki import devices

    own = config.secrets_dir(settings)
    if own.resolve() != secrets_dir.resolve():
        return DeviceSync(
            applied=False,
            detail=f"the broker of {settings.source} renders its users from {own}, "
            f"not {secrets_dir}",
        )
    admin: redis.Redis | None = None
    unreachable = ""
    try:
        admin = client(config.for_role(settings, ADMIN), retries=0)
    except BrokerUnreachable as exc:
        unreachable = str(exc)
    try:
        killed = sum(remove_device_user(admin, user) for user in remove) if admin else 0
        logins = {login.user: login for login in devices.logins(secrets_dir)}
        if admin is not None:
            # A device user the registry does not hold as active (a restored or edited
            # registry): the broker must not keep it. Role names have no "-", device users do.
            on_broker = [u.decode() if isinstance(u, bytes) else str(u) for u in admin.acl_users()]
            stale = [u for u in on_broker if u.startswith("edge-") and u not in logins]
            killed += sum(remove_device_user(admin, user) for user in stale if user not in remove)
        local = LocalBroker(settings.state_dir)
        acl_file = None
        if local.acl_file.is_file():
            passwords = ensure_secrets(secrets_dir)
            write_acl(local.acl_file, passwords, device_logins=list(logins.values()))
            acl_file = local.acl_file
        if admin is None:
            return DeviceSync(applied=False, detail=unreachable, acl_file=acl_file)
        for user in add:
            if user in logins:
                apply_device_user(admin, logins[user])
    finally:
        if admin is not None:
            admin.close()
    where = f"{settings.broker.host}:{settings.broker.port}"
    return DeviceSync(applied=True, detail=f"applied to {where}", acl_file=acl_file, killed=killed)


__all__ = [
    "DeviceSync",
    "LocalBroker",
    "apply_device_user",
    "device_patterns",
    "device_rules",
    "ensure_secrets",
    "find_redis_server",
    "lua_scripts",
    "preload_scripts",
    "remove_device_user",
    "render_acl",
    "resource_text",
    "script_sha",
    "start",
    "stop",
    "sync_devices",
    "write_acl",
]
