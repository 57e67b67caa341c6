"""Flower, Celery's web monitor, as the ``monitor`` role: ``hpc2edge monitor``, ``up --monitor``.

Flower connects to the broker like any other client of this project: mutual TLS, the ``monitor``
client certificate and the ``monitor`` ACL user, which may read queue lengths, results, the live
workers and the dead letters and listen to events, but may not enqueue or delete tasks nor use
the remote-control channel (``broker/users.acl``, ``docs/security.md``). Its Celery app is
:data:`hpc2edge.celery.app`, configured by ``HPC2EDGE_CONFIG`` pointing at a config with
``role = "monitor"``.

Authentication. HTTP basic auth is always on:

- the password is random (``secrets.token_urlsafe(32)``), created on first use in the secrets
  folder beside the role passwords (``<secrets>/flower.password``, 0600), never printed or logged;
  the user name is ``admin`` unless ``--user`` says otherwise;
- ``hpc2edge monitor`` / ``up --monitor`` hand it to Flower in ``FLOWER_BASIC_AUTH`` (Flower
  2.x reads ``FLOWER_<OPTION>`` variables), not on the command line, so ``ps`` never shows it;
- a bare ``celery -A hpc2edge flower`` started without ``--basic-auth`` / ``FLOWER_BASIC_AUTH``
  / ``--auth`` gets the same credentials and the loopback address filled in by
  :func:`hpc2edge.transport.flowerguard.secure_flower_defaults`, which
  :mod:`hpc2edge.transport.app` calls when Flower configures the app. Flower 2.x does not read its
  own options from the Celery configuration (only from ``FLOWER_*``, its command line and
  ``flowerconfig.py``), so that hook is the only place where the app can carry them. Without it
  Flower answers 401 on ``/api/*`` but serves its HTML pages to anyone.

What stays open. Flower 2.2 serves ``/metrics`` (Prometheus) and ``/healthcheck`` without
authentication, by upstream decision (mher/flower#1342): the metrics name workers and tasks and
count events and runtimes, but hold no task arguments or results. Flower therefore binds
127.0.0.1 unless told otherwise; reach it from elsewhere through ``ssh -L`` or a proxy that
authenticates.
"""

from __future__ import annotations

import importlib.util
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

from hpc2edge.config import (
    Settings,
    absolute,
    for_role,
    load_settings,
    pid_file,
    role_config_path,
    write_role_config,
)
from hpc2edge.errors import Hpc2EdgeError, StackError
from hpc2edge.roles import MONITOR
from hpc2edge.transport.flowerguard import (
    DEFAULT_ADDRESS,
    DEFAULT_USER,
    basic_auth,
    ensure_password,
    password_path,
)
from hpc2edge.util import procs
from hpc2edge.util.net import browser_url

logger = logging.getLogger(__name__)

DEFAULT_PORT = 5555
PROCESS_NAME = "flower"


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
    return browser_url(address, port, default=DEFAULT_ADDRESS)


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
    if settings.role == MONITOR:
        env = dict(base)
        if config_path is not None:
            env["HPC2EDGE_CONFIG"] = str(config_path)
        config_file = Path(env["HPC2EDGE_CONFIG"]) if env.get("HPC2EDGE_CONFIG") else None
        # Load as Flower's app will, to fail here with every problem rather than in its log.
        monitor_settings = load_settings(config_file, env, require_files=True)
    else:
        s = absolute(settings)
        config_file = role_config_path(s, MONITOR)
        write_role_config(config_file, for_role(s, MONITOR))
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
    record = procs.read(pid_file(state_dir, PROCESS_NAME))
    if record is not None and procs.alive(record):
        return {
            "url": record_url(record),
            "user": user,
            "password_file": str(password_path(for_role(absolute(settings), MONITOR))),
            "started": False,
        }
    launch = plan(settings, environ=os.environ, port=port, address=address, user=user)
    record = procs.spawn(
        PROCESS_NAME,
        launch.argv,
        env=launch.env,
        cwd=state_dir,
        log=log_file(state_dir),
        pid_file=pid_file(state_dir, PROCESS_NAME),
    )
    try:
        wait_ready(launch.url, record, timeout_s=timeout_s)
    except StackError:
        procs.stop(record)
        pid_file(state_dir, PROCESS_NAME).unlink(missing_ok=True)
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
    record = procs.read(pid_file(state_dir.resolve(), PROCESS_NAME))
    if record is None or not procs.alive(record):
        return None
    return record_url(record)


def stop(state_dir: Path, *, timeout_s: float = 10.0) -> bool:
    """Stop the Flower started from ``state_dir``; False when none was running."""
    path = pid_file(state_dir.resolve(), PROCESS_NAME)
    record = procs.read(path)
    if record is None:
        return False
    stopped = procs.stop(record, timeout_s=timeout_s)
    path.unlink(missing_ok=True)
    return stopped


def exec_flower(argv: Sequence[str], env: Mapping[str, str]) -> None:
    """Replace this process with Flower (``argv`` and ``env`` from :func:`plan`)."""
    # Replace this process: Ctrl-C and a service manager's SIGTERM reach Flower directly.
    try:
        os.execve(argv[0], list(argv), dict(env))  # noqa: S606 - argv is ours, no shell
    except OSError as exc:
        raise Hpc2EdgeError(f"cannot start Flower ({argv[0]}): {exc.strerror}") from None
