"""``celery -A hpc2edge worker`` is safe as typed: the role's own config decides what runs.

Users are told to run ``celery -A hpc2edge worker -Q edge`` on a device. As Celery reads that
line, it starts a prefork pool with one process per core (measurements overlap and time each
other) and, without ``HPC2EDGE_CONFIG``, loads the built-in defaults, which are the
orchestrator's, and dies in a traceback about certificates. Here:

- no role config (``HPC2EDGE_CONFIG`` unset) or a config that does not load: one message that
  names the file to write, exit status 2, no traceback (:func:`load_or_exit`);
- a role that runs no workers (orchestrator, monitor, admin): refused the same way;
- the edge role always runs ``--pool solo`` with concurrency 1, whatever the command line says
  (it says so in the log when it overrides);
- a worker consumes only its role's queue (the edge role: its kind's; hpc: ``train``): ``-Q``
  left out means that queue, and a ``-Q`` naming anything else is refused
  (:class:`RoleWorker`).

The hpc role keeps the command line's pool and concurrency: a train worker runs one training
at a time by ``-c 1`` in the shipped units, and a node may choose otherwise.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any, NoReturn

import click
from celery.apps.worker import Worker
from celery.concurrency import get_implementation

from hpc2edge.config import Settings, load_settings
from hpc2edge.config.settings import ENV_CONFIG
from hpc2edge.errors import ConfigError
from hpc2edge.roles import EDGE, HPC, QUEUE_TRAIN, WORKER_ROLES, edge_queue

log = logging.getLogger("hpc2edge.worker")

#: What the message says to do when there is no role config.
HOW_TO_CONFIGURE = (
    f"set {ENV_CONFIG} to this worker's role config, e.g. "
    f"`{ENV_CONFIG}=/etc/hpc2edge/edge.toml celery -A hpc2edge worker -Q edge` "
    "(start from workers/edge/edge.toml.example or workers/hpc/hpc.toml.example; "
    "`hpc2edge up` writes one per role under .hpc2edge/conf/)"
)


def running_worker() -> bool:
    """True inside the ``celery ... worker`` command (Celery's click command is running)."""
    ctx = click.get_current_context(silent=True)
    return ctx is not None and ctx.command.name == "worker"


def fail(message: str) -> NoReturn:
    """End the worker command with one message and exit status 2 (a usage error)."""
    click.echo(f"celery -A hpc2edge worker: {message}", err=True)
    sys.exit(2)


def load_or_exit(environ: Mapping[str, str]) -> Settings:
    """The worker's settings from its role config, or :func:`fail` saying what to write."""
    if not environ.get(ENV_CONFIG):
        fail(f"no role config: {HOW_TO_CONFIGURE}")
    try:
        settings = load_settings(environ=environ, require_files=True)
    except ConfigError as exc:
        fail(str(exc))
    if settings.role not in WORKER_ROLES:
        fail(
            f"{settings.source} is the {settings.role} role's config, which runs no worker; "
            f"a worker's config has role = {' or '.join(repr(r) for r in WORKER_ROLES)}"
        )
    return settings


def role_queues(settings: Settings) -> tuple[str, ...]:
    """The queues a worker of this role may consume."""
    if settings.role == EDGE:
        return (edge_queue(settings.edge.kind),)
    if settings.role == HPC:
        return (QUEUE_TRAIN,)
    return ()


class RoleWorker(Worker):
    """Celery's worker program with the role config's last word on pool and queues."""

    def setup_defaults(self, *args: Any, **kwargs: Any) -> None:
        super().setup_defaults(*args, **kwargs)
        settings: Settings = self.app.settings
        if settings.role != EDGE:
            return
        solo = get_implementation("solo")
        me: Any = self  # Celery sets these attributes untyped, in setup_defaults
        if me.pool_cls is not solo or me.concurrency not in (None, 1):
            log.warning(
                "the edge role measures one model at a time: running --pool solo -c 1 "
                "(the command line asked for %s, concurrency %s)",
                getattr(me.pool_cls, "__name__", me.pool_cls),
                me.concurrency,
            )
        me.pool_cls = solo
        me.concurrency = 1

    def setup_queues(self, include: Any, exclude: Any = None) -> None:
        settings: Settings = self.app.settings
        allowed = role_queues(settings)
        asked = _queue_names(include)
        if not asked:
            asked = list(allowed)  # not every queue the app knows: the role's own
        wrong = [q for q in asked if q not in allowed]
        if allowed and wrong:
            kind = f" of kind {settings.edge.kind!r}" if settings.role == EDGE else ""
            fail(
                f"the {settings.role} role{kind} ({settings.source}) consumes "
                f"{', '.join(allowed)}, not {', '.join(wrong)}: start it with -Q {allowed[0]}"
                + (" or set [edge] kind in its config" if settings.role == EDGE else "")
            )
        super().setup_queues(asked or include, exclude)


def _queue_names(include: Any) -> list[str]:
    if not include:
        return []
    if isinstance(include, str):
        include = include.split(",")
    return [str(q).strip() for q in include if str(q).strip()]


__all__ = ["RoleWorker", "load_or_exit", "role_queues", "running_worker"]
