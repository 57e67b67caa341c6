"""The embedded single-machine stack: ``hpc2edge up`` / ``down`` / ``status`` / ``ping``.

``up`` starts, as background processes recorded under ``<state_dir>/run/``:

- a TLS-only redis-server with the shipped ACL (``broker.start``),
- one ``train`` worker (``celery -A hpc2edge worker -Q train -c 1``) as the ``hpc`` role,
- one ``edge`` worker (``--pool solo -c 1``: one measurement at a time, CUDA never forked) as the
  ``edge`` role,

and, with ``--monitor``, Flower as the ``monitor`` role (:mod:`hpc2edge.monitor`); each
reading its own config file from ``<state_dir>/conf/<role>.toml`` (written here, absolute
paths, no secret inside) exactly as a remote worker would. Certificates and passwords are created
on first use. ``down`` stops exactly these processes (see :mod:`hpc2edge.procs`).

``HPC2EDGE_SECURITY_SIGN=true hpc2edge up`` (or ``[security] sign = true`` in the config) runs
the stack with message signing (:mod:`hpc2edge.signing`): the role configs carry it, so the
workers run only tasks the orchestrator signed; later commands need the same setting. Workers
already running keep the mode they started with: ``down`` first to switch.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hpc2edge import broker, filemodes, procs, tls
from hpc2edge.config import Settings, for_role, secrets_dir, write_role_config
from hpc2edge.errors import BrokerUnreachable, StackError

WORKER_ROLES = {"train": "hpc", "edge": "edge"}
CONFIG_ROLES = ("orchestrator", "hpc", "edge", "monitor")


def worker_argv(queue: str) -> list[str]:
    """The worker command for ``queue``, the same one the deployment templates document."""
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "hpc2edge",
        "worker",
        "-Q",
        queue,
        "-c",
        "1",
        "--hostname",
        f"{queue}@%h",
        "--loglevel",
        "INFO",
        # Mingle and gossip sync revoked ids between workers over broadcast: we need neither,
        # and each adds a round of broadcast traffic at start across two sites.
        "--without-mingle",
        "--without-gossip",
    ]
    if queue == "edge":
        argv += ["--pool", "solo"]
    return argv


def absolute(settings: Settings) -> Settings:
    """``settings`` with every path made absolute (config files written from it stay valid)."""
    t, b, e, sec = settings.tls, settings.broker, settings.edge, settings.security
    return replace(
        settings,
        state_dir=settings.state_dir.resolve(),
        edge=replace(
            e,
            cache_dir=e.cache_dir.resolve() if e.cache_dir else None,
            table=e.table.resolve() if e.table else None,
        ),
        tls=replace(t, ca_cert=t.ca_cert.resolve(), cert=t.cert.resolve(), key=t.key.resolve()),
        broker=replace(b, password_file=b.password_file.resolve() if b.password_file else None),
        security=replace(
            sec,
            key=sec.key.resolve(),
            cert=sec.cert.resolve(),
            cert_store=sec.cert_store.resolve(),
            result_cert_store=sec.result_cert_store.resolve(),
        ),
    )


def prepare(settings: Settings) -> Settings:
    """Create what a local stack needs and is missing: certificates, passwords, role configs.

    With ``security.sign``, every role that signs gets ``[security] sign = true`` in its config
    (``HPC2EDGE_SECURITY_SIGN=true hpc2edge up``), and a CA made before signing existed gets its
    signing certificates.
    """
    s = absolute(settings)
    tls_dir = s.tls.ca_cert.parent
    if not (tls_dir / "ca.pem").exists():
        hosts = [] if s.broker.host in tls.server_names() else [s.broker.host]
        tls.init(tls_dir, hosts)
    elif s.security.sign and not tls.signing_files(tls_dir, "orchestrator").cert.exists():
        tls.init_signing(tls_dir)
    broker.ensure_secrets(secrets_dir(s))
    for role in CONFIG_ROLES:
        write_role_config(role_config_path(s, role), for_role(s, role))
    filemodes.tighten(s.state_dir)  # folders 0700, files 0600, also those of older versions
    return for_role(s, s.role)


def role_config_path(settings: Settings, role: str) -> Path:
    return settings.state_dir / "conf" / f"{role}.toml"


def _pid_file(settings: Settings, name: str) -> Path:
    return settings.state_dir / "run" / f"{name}.pid"


def up(
    settings: Settings,
    *,
    timeout_s: float = 60.0,
    monitor_port: int | None = None,
) -> dict[str, Any]:
    """Start broker and workers (those already running are kept) and wait until each answers.

    With ``monitor_port``, also Flower as the monitor role on 127.0.0.1 (:mod:`hpc2edge.monitor`).
    """
    s = prepare(settings)
    local = broker.LocalBroker(s.state_dir)
    running = procs.read(local.pid_file)
    started: list[str] = []
    if running is None or not procs.alive(running):
        broker.start(s)
        started.append("broker")
    for queue, role in WORKER_ROLES.items():
        name = f"worker-{queue}"
        record = procs.read(_pid_file(s, name))
        if record is not None and procs.alive(record):
            continue
        # The worker's role config is its whole configuration: no HPC2EDGE_* of the caller's
        # (a role, a password, a relative state dir) may override it.
        env = {k: v for k, v in os.environ.items() if not k.startswith("HPC2EDGE_")}
        env["HPC2EDGE_CONFIG"] = str(role_config_path(s, role))
        procs.spawn(
            name,
            worker_argv(queue),
            env=env,
            cwd=s.state_dir,
            log=s.state_dir / "logs" / f"{name}.log",
            pid_file=_pid_file(s, name),
        )
        started.append(name)
    answers = {}
    for queue in WORKER_ROLES:
        answers[queue] = wait_for_worker(s, queue, timeout_s=timeout_s)
    out: dict[str, Any] = {"started": started, "workers": answers, "state_dir": str(s.state_dir)}
    if monitor_port is not None:
        from hpc2edge import monitor

        out["monitor"] = monitor.start_background(s, port=monitor_port, timeout_s=timeout_s)
        if out["monitor"]["started"]:
            started.append(monitor.PROCESS_NAME)
    return out


def wait_for_worker(
    settings: Settings,
    queue: str,
    *,
    timeout_s: float,
    record: procs.ProcRecord | None = None,
    hostname: str | None = None,
) -> dict[str, Any]:
    """Ping ``queue`` until a worker answers (the one called ``hostname``, when given).

    Fails early, with the end of its log, when the worker process of ``record`` (default: the
    one ``up`` started for ``queue``) has died.
    """
    deadline = time.monotonic() + timeout_s
    record = record or procs.read(_pid_file(settings, f"worker-{queue}"))

    def log_end() -> str:
        return f"; its log ends:\n{procs.tail(record.log, 40)}" if record else ""

    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            who = f"worker {hostname} did not answer" if hostname else "no worker answered"
            raise StackError(f"{who} on queue {queue!r} within {timeout_s:.0f} s{log_end()}")
        if record is not None and not procs.alive(record):
            raise StackError(f"the {queue} worker exited{log_end()}")
        try:
            answer = ping(settings, queue, timeout_s=min(5.0, remaining))
        except StackError:
            continue
        if hostname is None or answer["hostname"] == hostname:
            return answer


def down(settings: Settings) -> list[str]:
    """Stop the workers, then the broker, started from this state folder. Returns what stopped."""
    from hpc2edge import monitor

    state_dir = settings.state_dir.resolve()
    stopped = []
    if monitor.stop(state_dir):
        stopped.append(monitor.PROCESS_NAME)
    for queue in WORKER_ROLES:
        pid_file = state_dir / "run" / f"worker-{queue}.pid"
        record = procs.read(pid_file)
        if record is not None:
            # A warm shutdown lets a running task finish or be given back (acks_late).
            if procs.stop(record, timeout_s=20.0):
                stopped.append(f"worker-{queue}")
            pid_file.unlink(missing_ok=True)
    if broker.stop(state_dir):
        stopped.append("broker")
    return stopped


def ping(settings: Settings, queue: str, *, timeout_s: float = 10.0) -> dict[str, Any]:
    """Send ``hpc2edge.ping`` to ``queue`` and return the answer with the round trip in ms."""
    from celery.exceptions import TimeoutError as CeleryTimeout

    from hpc2edge.celery import QUEUES, make_app

    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}; expected one of {', '.join(QUEUES)}")
    broker.client(settings).close()  # fail fast, with the reason, when the broker refuses us
    app = make_app(settings)
    try:
        with broker.translate_errors(f"ping on queue {queue!r}"):
            t0 = time.perf_counter()
            # Expires: a ping nobody answered must not wait in the queue ahead of real tasks.
            result = app.send_task("hpc2edge.ping", queue=queue, expires=timeout_s)
            try:
                answer: dict[str, Any] = result.get(timeout=timeout_s)
            except CeleryTimeout:
                answer = {}
            finally:
                # Unsubscribe now: a pending result left to the garbage collector tries to
                # unsubscribe while the interpreter shuts down.
                result.backend.remove_pending_result(result)
            if not answer:
                raise StackError(f"no worker answered on queue {queue!r} within {timeout_s:g} s")
            answer["round_trip_ms"] = (time.perf_counter() - t0) * 1000.0
            result.forget()
        return answer
    finally:
        app.close()


@dataclass
class Status:
    """What ``hpc2edge status`` reports."""

    broker: str
    user: str
    reachable: bool
    tls_version: str | None = None
    error: str | None = None
    queue_depths: dict[str, int] = field(default_factory=dict)
    workers: dict[str, list[str]] = field(default_factory=dict)
    local_processes: dict[str, bool] = field(default_factory=dict)
    monitor_url: str | None = None  # Flower started by `up --monitor`, while it runs


def status(settings: Settings, *, timeout_s: float = 2.0) -> Status:
    """Broker reachability and TLS version, queue depths, workers per queue, local processes."""
    from hpc2edge import monitor
    from hpc2edge.celery import QUEUES
    from hpc2edge.transport import liveness

    b = settings.broker
    st = Status(broker=f"{b.host}:{b.port}", user=settings.username, reachable=False)
    run_dir = settings.state_dir / "run"
    for name in ("broker", *(f"worker-{q}" for q in WORKER_ROLES), monitor.PROCESS_NAME):
        record = procs.read(run_dir / f"{name}.pid")
        if record is not None:
            st.local_processes[name] = procs.alive(record)
    st.monitor_url = monitor.running_url(settings.state_dir)
    try:
        c = broker.client(settings, timeout_s=timeout_s)
    except BrokerUnreachable as exc:
        st.error = str(exc)
        return st
    with c:
        st.reachable = True
        st.tls_version = broker.tls_version(c)
        try:
            st.queue_depths = {q: int(c.llen(q)) for q in QUEUES}
        except Exception as exc:
            st.error = f"queue depths unavailable to {settings.username!r}: {exc}"
        # Workers announce themselves (remote control is off: hpc2edge.transport.liveness).
        with broker.translate_errors("reading the live workers"):
            st.workers = liveness.live_workers(c, QUEUES)
    return st
