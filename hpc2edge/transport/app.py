"""The one place a Celery application is built (``celery -A hpc2edge`` finds it via
:mod:`hpc2edge.celery`).

Conventions (docs/design.md, "Celery conventions"), each for a reason:

- JSON only, both ways: a pickle message is refused before it is decoded, so a compromised
  broker account cannot run code on a worker.
- ``task_acks_late`` + ``task_reject_on_worker_lost``: a task is acknowledged after it finished,
  so a worker that dies mid-task gives it back; the tasks are idempotent to make that safe.
- ``worker_prefetch_multiplier = 1``: a worker holds only the task it runs; a long training does
  not sit on a queued task another node could take.
- ``visibility_timeout`` above the longest task (validated in :mod:`hpc2edge.config`): Redis
  redelivers any task unacknowledged for longer.
- Routes by task name: ``hpc2edge.train`` -> ``train`` (HPC nodes), ``hpc2edge.measure`` ->
  ``edge`` (devices of the default kind) or the ``edge.<kind>`` queue the caller names (one per
  device kind, :mod:`hpc2edge.roles`). ``task_create_missing_queues`` is off: a typo in a queue
  name is an error, not a queue nobody consumes.
- Each role keeps unacknowledged messages under its own keys (``hpc2edge:unacked:<role>``, and
  ``hpc2edge:unacked:<queue>`` per device kind for the edge role), so
  the Redis ACL can confine the edge user to ``edge``-side keys: with Celery's shared default
  keys an edge worker restoring a timed-out message could push into ``train``.
- Broker and result backend are ``rediss://`` with CERT_REQUIRED, our CA, the role's client
  certificate and host name checking (:func:`hpc2edge.transport.tls.ssl_options`).
- Hostile input (docs/security.md, "Threats"): the worker's kombu channel and Celery consumer are
  ours (:mod:`hpc2edge.transport.intake`): every message is checked before kombu or Celery parse
  it, and what fails is dead-lettered, never run, never re-queued. Remote control is off on
  every worker (workers consume no broadcast channel; :mod:`hpc2edge.transport.liveness` says
  who serves which queue). Task ids are random and name their queue
  (:mod:`hpc2edge.transport.taskids`): every ``send_task`` of this app gets one, so the ACL can
  confine each role to its own queue's result keys. Results are read as untrusted
  (:mod:`hpc2edge.transport.results`). Nothing is compressed.
- With ``security.sign``, tasks and results use Celery's ``auth`` serializer (signed JSON; a
  result must be signed by its queue's role) and only ``auth`` is accepted: workers run only
  what the orchestrator's key signed (:mod:`hpc2edge.transport.signing`). Events stay plain JSON.

Under ``celery -A hpc2edge flower`` the app also turns Flower's basic auth on and binds it to
loopback when the command line did not
(:func:`hpc2edge.transport.flowerguard.secure_flower_defaults`).

``app`` below is what ``celery -A hpc2edge`` finds. It reads its settings lazily, the first time
Celery needs its configuration, from ``HPC2EDGE_CONFIG`` and ``HPC2EDGE_*`` (the worker command
is an entry point); importing this module connects to nothing. Code that already holds a
:class:`~hpc2edge.config.Settings` builds its own client with :func:`make_app`.
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import Any
from urllib.parse import quote

from celery import Celery, signals
from kombu import Exchange, Queue

from hpc2edge.config import Settings, load_settings
from hpc2edge.roles import EDGE, QUEUE_OF_TASK, QUEUES, edge_queue, is_edge_queue
from hpc2edge.transport import flowerguard, intake, liveness, signing, taskids, workerrole
from hpc2edge.transport.tls import ssl_options
from hpc2edge.util import filemodes

TASK_ROUTES = {task: {"queue": queue} for task, queue in QUEUE_OF_TASK.items()}


def task_queue(name: str) -> Queue:
    """The kombu queue ``name`` with its direct exchange of the same name (Celery's layout)."""
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def own_queue(settings: Settings) -> str | None:
    """The queue this role's workers consume: the edge kind's queue for the edge role."""
    return edge_queue(settings.edge.kind) if settings.role == EDGE else None


def unacked_prefix(settings: Settings) -> str:
    """Where this role keeps unacknowledged messages: per role (``hpc2edge:unacked:hpc``), and
    per device kind for the edge role (``hpc2edge:unacked:edge``, ``...:edge.orin-agx``), so
    the units of one kind restore each other's timed-out tasks and no other kind's."""
    return f"hpc2edge:unacked:{own_queue(settings) or settings.role}"


TASK_MODULES = ["hpc2edge.tasks"]


def broker_url(settings: Settings, *, with_password: bool = True) -> str:
    """``rediss://user:password@host:port/0`` for this role (password URL-quoted; always db 0,
    because the shipped ACL names the pub/sub channels of db 0 literally)."""
    b = settings.broker
    secret = quote(b.password or "", safe="") if with_password else "********"
    host = f"[{b.host}]" if ":" in b.host else b.host
    return f"rediss://{quote(settings.username, safe='')}:{secret}@{host}:{b.port}/0"


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings for ``settings`` (a plain dict: inspectable and testable)."""
    url = broker_url(settings)
    tls = ssl_options(settings.tls)
    b = settings.broker
    prefix = unacked_prefix(settings)
    queues = list(QUEUES)
    mine = own_queue(settings)
    if mine is not None and mine not in queues:
        queues.append(mine)
    config: dict[str, Any] = {
        "broker_url": url,
        # Celery's "<backend class>+<url>" form: our Redis backend class over the same URL.
        "result_backend": f"hpc2edge.transport.results:RedisBackend+{url}",
        "broker_use_ssl": tls,
        "redis_backend_use_ssl": tls,
        "broker_transport_options": {
            "visibility_timeout": b.visibility_timeout_s,
            "unacked_key": prefix,
            "unacked_index_key": f"{prefix}:index",
            "unacked_mutex_key": f"{prefix}:mutex",
            "socket_connect_timeout": b.connect_timeout_s,
            "socket_keepalive": True,
            "health_check_interval": 25,
        },
        "result_backend_transport_options": {
            "retry_policy": {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
        },
        "redis_socket_connect_timeout": b.connect_timeout_s,
        "redis_socket_keepalive": True,
        "redis_retry_on_timeout": True,
        "redis_backend_health_check_interval": 25,
        "result_expires": b.result_expires_s,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "event_serializer": "json",
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_queues": tuple(task_queue(q) for q in queues),
        "task_routes": TASK_ROUTES,
        "task_create_missing_queues": False,
        "task_track_started": True,
        # Enforced by prefork workers (train). The edge worker's solo pool cannot interrupt a
        # running task; its protocol bounds each measurement by max_time_s instead.
        "task_annotations": {
            "hpc2edge.train": {
                "time_limit": settings.worker.train_time_limit_s,
                "soft_time_limit": train_limits_s(settings.worker.train_time_limit_s)[1],
            },
            "hpc2edge.measure": {"time_limit": settings.worker.measure_time_limit_s},
        },
        "worker_enable_remote_control": False,
        "task_compression": None,
        "result_compression": None,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        # A long training must survive a broker blip: the Redis transport keeps the message in
        # the role's unacked hash until visibility_timeout, so finishing and acking later is safe.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "worker_hijack_root_logger": False,
        "timezone": "UTC",
        "enable_utc": True,
    }
    if settings.role == EDGE:
        # One measurement at a time on the device (workerrole.RoleWorker enforces it even
        # against the command line; as the defaults, a plain command line says nothing).
        config["worker_pool"] = "solo"
        config["worker_concurrency"] = 1
    # The checked intake, for whatever role a worker is started with (Flower excepted:
    # Hpc2EdgeCelery.on_configure).
    config["broker_transport"] = f"{intake.__name__}:Transport"
    config["worker_consumer"] = f"{intake.__name__}:Consumer"
    if settings.security.sign:
        config.update(signing.celery_settings(settings.security))
    return config


def _on_worker_init(**_: Any) -> None:
    filemodes.private_umask()


def connect_celery_signals() -> None:
    """Make a Celery worker of this app private before it opens a file (its ``--logfile``).

    ``celeryd_init`` comes first, before the worker sets up logging; ``worker_init`` covers a
    worker built without the ``celery worker`` command. Safe to call more than once.
    """
    signals.celeryd_init.connect(_on_worker_init, weak=False, dispatch_uid="hpc2edge.transport.app")
    signals.worker_init.connect(_on_worker_init, weak=False, dispatch_uid="hpc2edge.transport.app")


class Hpc2EdgeCelery(Celery):
    """A Celery app whose settings come from an hpc2edge ``Settings`` (given or read lazily)."""

    def __init__(self, settings: Settings | None = None, **kwargs: Any) -> None:
        super().__init__("hpc2edge", include=TASK_MODULES, **kwargs)
        self._settings = settings
        self.steps["worker"].add(liveness.Heartbeat)
        # A worker started by hand (`celery -A hpc2edge worker`) creates its files 0600 too.
        connect_celery_signals()

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        """Celery's ``send_task``, with a random task id bound to the target queue when the
        caller gave none (:mod:`hpc2edge.transport.taskids`)."""
        if not options.get("task_id"):
            queue = options.get("queue") or TASK_ROUTES.get(name, {}).get("queue")
            queue = getattr(queue, "name", queue)  # a kombu Queue, or its name
            if isinstance(queue, str):
                options["task_id"] = taskids.new(queue)
        queue = options.get("queue")
        if isinstance(queue, str) and is_edge_queue(queue) and queue not in self.amqp.queues:
            # A device kind's queue: declared by its workers, named here by the caller.
            options["queue"] = task_queue(queue)
        return super().send_task(name, args, kwargs, **options)

    @property
    def settings(self) -> Settings:
        """The settings of this app, loaded from the environment on first use when not given."""
        if self._settings is None:
            # The worker command is our entry point here: read the environment once, lazily.
            if workerrole.running_worker():
                # One message naming the file to write, not a traceback (a usage error).
                self._settings = workerrole.load_or_exit(os.environ)
            else:
                self._settings = load_settings(environ=os.environ, require_files=True)
        return self._settings

    @cached_property
    def Worker(self) -> Any:
        """The ``celery worker`` program: Celery's, with the role config deciding the pool and
        the queues (:class:`hpc2edge.transport.workerrole.RoleWorker`)."""
        return self.subclass_with_self(f"{workerrole.__name__}:RoleWorker")

    def on_configure(self) -> None:  # type: ignore[override]
        # Celery calls this once, when the configuration is first needed (not at import).
        config = celery_config(self.settings)
        # The worker's channel finds what it may accept here (hpc2edge.transport.intake).
        config["broker_transport_options"][intake.POLICY_OPTION] = intake.Policy(self)
        if flowerguard.running_flower():
            # Flower consumes no task queue, and finds the broker's kind by the transport's
            # name, which must be kombu's ("rediss").
            del config["broker_transport"]
        self.config_from_object(config)
        if self.settings.security.sign:
            # Checked here, where an error stops the app (a worker exits, a client call raises).
            # setup_security itself needs the loaded configuration, so it runs right after,
            # from on_after_configure, still before any message is sent or received.
            signing.check(self.settings.security)
            self.on_after_configure.connect(self._install_signing, weak=False)
        if flowerguard.running_flower():
            # `celery -A hpc2edge flower` never serves without a password (hpc2edge.ops.flower).
            flowerguard.secure_flower_defaults(self.settings)

    def _install_signing(self, **_: Any) -> None:
        signing.install(self, self.settings.security)


def train_limits_s(limit_s: int) -> tuple[int, int]:
    """(training child's limit, task's soft limit) inside a train task's hard ``limit_s``.

    The child is killed first, the soft limit lets the task report a typed error, the hard
    limit ends it: 120 s and 60 s before the end for long limits, a tenth and a twentieth of a
    short one (a 35 s limit is usable in tests).
    """
    margin = min(120, max(2, limit_s // 10))
    return max(1, limit_s - margin), max(1, limit_s - max(1, margin // 2))


def make_app(settings: Settings) -> Hpc2EdgeCelery:
    """A client (or worker) app for explicit settings; nothing connects until it is used."""
    return Hpc2EdgeCelery(settings)


app = Hpc2EdgeCelery()
