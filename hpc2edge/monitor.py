"""Flower, Celery's web monitor, as the ``monitor`` role: ``hpc2edge monitor``, ``up --monitor``.

Flower connects to the broker like any other client of this project: mutual TLS, the ``monitor``
client certificate and the ``monitor`` ACL user, which may read queue lengths and results, listen
to events and broadcast remote-control commands (inspect), but may not enqueue or delete tasks
(``broker/users.acl``, ``docs/security.md``). Its Celery app is ``hpc2edge.celery.app``, configured
by ``HPC2EDGE_CONFIG`` pointing at a config with ``role = "monitor"``.

Authentication. HTTP basic auth is always on:

- the password is random (``secrets.token_urlsafe(32)``), created on first use in the secrets
  folder beside the role passwords (``<secrets>/flower.password``, 0600), never printed or logged;
  the user name is ``admin`` unless ``--user`` says otherwise;
- ``hpc2edge monitor`` / ``up --monitor`` hand it to Flower in ``FLOWER_BASIC_AUTH`` (Flower
  2.x reads ``FLOWER_<OPTION>`` variables), not on the command line, so ``ps`` never shows it;
- a bare ``celery -A hpc2edge flower`` started without ``--basic-auth`` / ``FLOWER_BASIC_AUTH``
  / ``--auth`` gets the same credentials and the loopback address filled in by
  :func:`secure_flower_defaults`, which ``hpc2edge.celery`` calls when Flower configures the app.
  Flower 2.x does not read its own options from the Celery configuration (only from
  ``FLOWER_*``, its command line and ``flowerconfig.py``), so that hook is the only place where
  the app can carry them. Without it Flower answers 401 on ``/api/*`` but serves its HTML pages
  to anyone.

What stays open. Flower 2.2 serves ``/metrics`` (Prometheus) and ``/healthcheck`` without
authentication, by upstream decision (mher/flower#1342): the metrics name workers and tasks and
count events and runtimes, but hold no task arguments or results. Flower therefore binds
127.0.0.1 unless told otherwise; reach it from elsewhere through ``ssh -L`` or a proxy that
authenticates.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from hpc2edge import procs, stack
from hpc2edge.config import Settings, for_role, load_settings, secrets_dir, write_role_config
from hpc2edge.errors import Hpc2EdgeError, StackError
from hpc2edge.fsutil import ensure_password_file

logger = logging.getLogger(__name__)

DEFAULT_PORT = 5555
DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_USER = "admin"
PASSWORD_FILE = "flower.password"  # noqa: S105 - a file name, not a secret
PROCESS_NAME = "flower"
ROLE = "monitor"


def password_path(settings: Settings) -> Path:
    """Where Flower's basic-auth password lives: the secrets folder of these settings."""
    return secrets_dir(settings) / PASSWORD_FILE


def ensure_password(settings: Settings) -> str:
    """Flower's password, created (random, 0600) when missing.

    Raises:
        StackError: the password file is missing and cannot be written (a read-only mount).
    """
    path = password_path(settings)
    try:
        password = ensure_password_file(path)
    except OSError as exc:
        raise StackError(
            f"cannot create Flower's password file {path}: {exc.strerror}; write one there "
            "(one line, chmod 600) or give Flower FLOWER_BASIC_AUTH=user:password"
        ) from None
    if not password:
        raise StackError(f"Flower's password file {path} is empty")
    return password


def basic_auth(user: str, password: str) -> str:
    """Flower's ``user:password`` credential (it splits on ``,`` and compares the whole string)."""
    if not user or any(c in user for c in ":,") or user != user.strip():
        raise ValueError(f"Flower user name {user!r}: must be non-empty, without ':' ',' or spaces")
    return f"{user}:{password}"


def flower_argv(port: int, address: str = DEFAULT_ADDRESS, *, read_only: bool = False) -> list[str]:
    """``celery -A hpc2edge flower`` with the listening address; no secret on the command line."""
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is not a TCP port (1-65535)")
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "hpc2edge",
        "flower",
        f"--port={port}",
        f"--address={address}",
    ]
    if read_only:
        argv.append("--read_only=True")  # no revoke / shutdown / pool buttons or API calls
    return argv


def url(address: str, port: int) -> str:
    """The URL a browser on this machine opens (``0.0.0.0`` / ``::`` are reached via loopback)."""
    host = {"": DEFAULT_ADDRESS, "0.0.0.0": "127.0.0.1", "::": "::1"}.get(address, address)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def is_loopback(address: str) -> bool:
    """True when ``address`` is reachable only from this machine."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class FlowerLaunch:
    """Everything needed to start Flower as the monitor role. ``env`` holds the credential."""

    argv: list[str]
    env: dict[str, str] = field(repr=False)
    url: str
    user: str
    password_file: Path
    settings: Settings  # the monitor role's, as the Flower process will load them
    config_file: Path | None  # what HPC2EDGE_CONFIG names in ``env`` (None: env/defaults only)


def plan(
    settings: Settings,
    *,
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    port: int = DEFAULT_PORT,
    address: str = DEFAULT_ADDRESS,
    user: str = DEFAULT_USER,
    read_only: bool = False,
) -> FlowerLaunch:
    """How to start Flower for ``settings``.

    Settings of role ``monitor`` are used as they are: the Flower process inherits ``environ``
    (with its ``HPC2EDGE_*`` overrides) and ``config_path``, so it loads the same settings. Any
    other role stands for a local stack: Flower then runs as that stack's monitor role, from
    ``<state_dir>/conf/monitor.toml`` (written here, no secret inside) and without the caller's
    ``HPC2EDGE_*`` variables, exactly as ``hpc2edge up`` runs its workers.

    Raises:
        ConfigError: the monitor role's configuration or its files (certificate, key, broker
            password) are missing or invalid.
        StackError: Flower is not installed, or its password file cannot be created.
        ValueError: a bad port or user name.
    """
    if importlib.util.find_spec("flower") is None:
        raise StackError("Flower is not installed: pip install 'hpc2edge[monitor]'")
    base = dict(os.environ if environ is None else environ)
    if settings.role == ROLE:
        env = dict(base)
        if config_path is not None:
            env["HPC2EDGE_CONFIG"] = str(config_path)
        config_file = Path(env["HPC2EDGE_CONFIG"]) if env.get("HPC2EDGE_CONFIG") else None
        # Load as Flower's app will, to fail here with every problem rather than in its log.
        monitor_settings = load_settings(config_file, env, require_files=True)
    else:
        s = stack.absolute(settings)
        config_file = stack.role_config_path(s, ROLE)
        write_role_config(config_file, for_role(s, ROLE))
        env = {k: v for k, v in base.items() if not k.startswith("HPC2EDGE_")}
        env["HPC2EDGE_CONFIG"] = str(config_file)
        monitor_settings = load_settings(config_file, {}, require_files=True)
    credential = basic_auth(user, ensure_password(monitor_settings))
    env["FLOWER_BASIC_AUTH"] = credential
    return FlowerLaunch(
        argv=flower_argv(port, address, read_only=read_only),
        env=env,
        url=url(address, port),
        user=user,
        password_file=password_path(monitor_settings),
        settings=monitor_settings,
        config_file=config_file,
    )


# --- the background process of the local stack ------------------------------------------------


def pid_file(state_dir: Path) -> Path:
    return state_dir / "run" / f"{PROCESS_NAME}.pid"


def log_file(state_dir: Path) -> Path:
    return state_dir / "logs" / f"{PROCESS_NAME}.log"


def start_background(
    settings: Settings,
    *,
    port: int = DEFAULT_PORT,
    address: str = DEFAULT_ADDRESS,
    user: str = DEFAULT_USER,
    timeout_s: float = 30.0,
) -> dict[str, Any]:
    """Start Flower beside the local stack of ``settings`` (kept when already running).

    Recorded in ``<state_dir>/run/flower.pid`` and logging to ``<state_dir>/logs/flower.log``
    like the workers; :func:`stop` (``hpc2edge down``) ends it. Waits until Flower answers and
    refuses a request without credentials.

    Returns:
        ``{"url", "user", "password_file", "started"}``.
    """
    state_dir = settings.state_dir.resolve()
    record = procs.read(pid_file(state_dir))
    if record is not None and procs.alive(record):
        return {
            "url": record_url(record),
            "user": user,
            "password_file": str(password_path(for_role(stack.absolute(settings), ROLE))),
            "started": False,
        }
    launch = plan(settings, environ=os.environ, port=port, address=address, user=user)
    record = procs.spawn(
        PROCESS_NAME,
        launch.argv,
        env=launch.env,
        cwd=state_dir,
        log=log_file(state_dir),
        pid_file=pid_file(state_dir),
    )
    try:
        wait_ready(launch.url, record, timeout_s=timeout_s)
    except StackError:
        procs.stop(record)
        pid_file(state_dir).unlink(missing_ok=True)
        raise
    return {
        "url": launch.url,
        "user": launch.user,
        "password_file": str(launch.password_file),
        "started": True,
    }


def wait_ready(base_url: str, record: procs.ProcRecord, *, timeout_s: float) -> None:
    """Wait until Flower answers ``/healthcheck``, then check that ``/`` wants credentials.

    Raises:
        StackError: Flower exited, did not answer in time, or served a page without a password.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if not procs.alive(record):
            raise StackError(f"Flower exited at start; its log ends:\n{procs.tail(record.log, 40)}")
        if _http_status(base_url + "/healthcheck") == 200:
            break
        if time.monotonic() > deadline:
            raise StackError(
                f"Flower did not answer on {base_url} within {timeout_s:.0f} s; its log ends:\n"
                f"{procs.tail(record.log, 40)}"
            )
        time.sleep(0.2)
    if _http_status(base_url + "/") != 401:
        raise StackError(f"Flower on {base_url} served a page without credentials")


def _http_status(address: str) -> int | None:
    try:
        with urllib.request.urlopen(address, timeout=2.0) as response:  # noqa: S310 - http only
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None


def record_url(record: procs.ProcRecord) -> str | None:
    """The URL of the Flower process of ``record``, from its ``--port`` / ``--address``."""
    opts = dict(a[2:].split("=", 1) for a in record.argv if a.startswith("--") and "=" in a)
    try:
        return url(opts.get("address", ""), int(opts["port"]))
    except (KeyError, ValueError):
        return None


def running_url(state_dir: Path) -> str | None:
    """The URL of the Flower that ``up --monitor`` started from ``state_dir``, while it runs."""
    record = procs.read(pid_file(state_dir.resolve()))
    if record is None or not procs.alive(record):
        return None
    return record_url(record)


def stop(state_dir: Path, *, timeout_s: float = 10.0) -> bool:
    """Stop the Flower started from ``state_dir``; False when none was running."""
    path = pid_file(state_dir.resolve())
    record = procs.read(path)
    if record is None:
        return False
    stopped = procs.stop(record, timeout_s=timeout_s)
    path.unlink(missing_ok=True)
    return stopped


# --- `celery -A hpc2edge flower` --------------------------------------------------------------


def running_flower() -> bool:
    """True inside the ``celery ... flower`` command (Flower's click command is running)."""
    ctx = click.get_current_context(silent=True)
    return ctx is not None and ctx.command.name == "flower"


def secure_flower_defaults(settings: Settings) -> None:
    """Turn basic auth on and bind loopback when a bare ``celery -A hpc2edge flower`` did not.

    Called by :class:`hpc2edge.celery.Hpc2EdgeCelery` when Flower configures the app: after
    Flower parsed its options, before it binds its socket or serves a request. Explicit
    ``--basic-auth``/``FLOWER_BASIC_AUTH``, ``--auth`` (OAuth), ``--address`` or
    ``--unix-socket`` are kept.
    """
    from tornado.options import options

    if settings.role != ROLE:
        logger.warning(
            "hpc2edge: Flower runs as role %r; the %r role is the one with least privilege",
            settings.role,
            ROLE,
        )
    if not options.basic_auth and not options.auth:
        options.basic_auth = [basic_auth(DEFAULT_USER, ensure_password(settings))]
        logger.info(
            "hpc2edge: basic auth on, user %r, password in %s",
            DEFAULT_USER,
            password_path(settings),
        )
    if not options.address and not options.unix_socket:
        options.address = DEFAULT_ADDRESS
        logger.info("hpc2edge: listening on %s only (give --address to change)", DEFAULT_ADDRESS)
    _without_remote_control(options)


def _without_remote_control(options: Any) -> None:
    """Keep Flower's event capture from broadcasting on the remote-control channel.

    Remote control is off on every worker and the ACL refuses the pidbox channel to the monitor
    role (docs/security.md, "Remote control is off"). Flower broadcasts there twice: the
    ``enable_events`` command every few seconds (workers send events anyway:
    ``worker_send_task_events``), and a ``heartbeat`` wake-up each time its event receiver
    starts; the refused wake-up failed the capture, so Flower saw no events at all. Both are
    switched off in the Flower process only: Flower then learns of a worker from its next
    heartbeat (every 2 s) instead of at once.
    """
    from celery.events.receiver import EventReceiver

    options.enable_events = False
    EventReceiver.wakeup_workers = lambda self, channel=None: None  # type: ignore[method-assign]


# --- the command ------------------------------------------------------------------------------


@click.command("monitor")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@click.option(
    "--address",
    default=DEFAULT_ADDRESS,
    show_default=True,
    help="Interface to listen on. /metrics and /healthcheck need no password: keep loopback and "
    "use `ssh -L` unless a firewall or proxy guards the port.",
)
@click.option("--user", default=DEFAULT_USER, show_default=True, help="Basic-auth user name.")
@click.option(
    "--read-only",
    is_flag=True,
    help="Switch off Flower's controls (revoke, shutdown, pool, send task): watch only.",
)
@click.pass_context
def monitor_cmd(ctx: click.Context, port: int, address: str, user: str, read_only: bool) -> None:
    """Run Flower in the foreground as the monitor role, with HTTP basic auth.

    With a config of role `monitor` Flower uses it; otherwise it runs as the monitor role of the
    local stack (`.hpc2edge/conf/monitor.toml`). The password is created on first use in the
    secrets folder (flower.password, 0600) and never printed.
    """
    from hpc2edge import broker

    obj = ctx.obj or {}
    config_path: Path | None = obj.get("config")
    settings = load_settings(config_path, dict(os.environ))
    try:
        launch = plan(
            settings,
            config_path=config_path,
            environ=os.environ,
            port=port,
            address=address,
            user=user,
            read_only=read_only,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    broker.client(launch.settings).close()  # the broker refuses us: say why now, not in a loop
    click.echo(
        f"Flower on {launch.url} as broker user {launch.settings.username!r}; "
        f"basic auth user {launch.user!r}, password in {launch.password_file}"
    )
    if not is_loopback(address):
        click.echo(
            f"warning: listening on {address}: /metrics and /healthcheck answer without a "
            "password; guard the port (firewall, proxy) or use `ssh -L`",
            err=True,
        )
    sys.stdout.flush()
    sys.stderr.flush()
    _exec(launch.argv, launch.env)


def _exec(argv: Sequence[str], env: Mapping[str, str]) -> None:
    # Replace this process: Ctrl-C and a service manager's SIGTERM reach Flower directly.
    try:
        os.execve(argv[0], list(argv), dict(env))  # noqa: S606 - argv is ours, no shell
    except OSError as exc:
        raise Hpc2EdgeError(f"cannot start Flower ({argv[0]}): {exc.strerror}") from None
