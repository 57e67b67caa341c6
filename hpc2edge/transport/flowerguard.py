"""The guard around ``celery -A hpc2edge flower``: basic auth on and loopback by default.

Flower 2.x does not read its options from the Celery configuration (only ``FLOWER_*``, its
command line and ``flowerconfig.py``), so the app's configure hook
(:class:`hpc2edge.transport.app.Hpc2EdgeCelery`) is the one place the app can set them: a bare
``celery -A hpc2edge flower`` without ``--basic-auth``/``FLOWER_BASIC_AUTH``/``--auth`` gets a
random password (``<secrets>/flower.password``, 0600) and ``127.0.0.1``. This runs wherever
Flower runs, so it lives with the wire; launching Flower is :mod:`hpc2edge.ops.flower`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from hpc2edge.config import Settings, secrets_dir
from hpc2edge.roles import MONITOR
from hpc2edge.util import files

logger = logging.getLogger(__name__)

DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_USER = "admin"
PASSWORD_FILE = "flower.password"  # noqa: S105 - a file name, not a secret


def password_path(settings: Settings) -> Path:
    """Where Flower's basic-auth password lives: the secrets folder of these settings."""
    return secrets_dir(settings) / PASSWORD_FILE


def ensure_password(settings: Settings) -> str:
    """Flower's password, created (random, 0600) when missing.

    Raises:
        StackError: the password file is missing and cannot be written (a read-only mount).
    """
    return files.ensure_password(
        password_path(settings),
        what="Flower's",
        hint=" or give Flower FLOWER_BASIC_AUTH=user:password",
    )


def basic_auth(user: str, password: str) -> str:
    """Flower's ``user:password`` credential (it splits on ``,`` and compares the whole string)."""
    if not user or any(c in user for c in ":,") or user != user.strip():
        raise ValueError(f"Flower user name {user!r}: must be non-empty, without ':' ',' or spaces")
    return f"{user}:{password}"


def running_flower() -> bool:
    """True inside the ``celery ... flower`` command (Flower's click command is running)."""
    ctx = click.get_current_context(silent=True)
    return ctx is not None and ctx.command.name == "flower"


def secure_flower_defaults(settings: Settings) -> None:
    """Turn basic auth on and bind loopback when a bare ``celery -A hpc2edge flower`` did not.

    Called by :class:`hpc2edge.transport.app.Hpc2EdgeCelery` when Flower configures the app: after
    Flower parsed its options, before it binds its socket or serves a request. Explicit
    ``--basic-auth``/``FLOWER_BASIC_AUTH``, ``--auth`` (OAuth), ``--address`` or
    ``--unix-socket`` are kept.
    """
    from tornado.options import options

    if settings.role != MONITOR:
        logger.warning(
            "hpc2edge: Flower runs as role %r; the %r role is the one with least privilege",
            settings.role,
            MONITOR,
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
