"""The embedded single-machine stack: ``hpc2edge up`` / ``down`` / ``status``.

(``ping`` works against any broker: :mod:`hpc2edge.transport.probes`.)

``up`` starts, as background processes recorded under ``<state_dir>/run/``:

- a TLS-only redis-server with the shipped ACL (``localbroker.start``),
- one ``train`` worker (``celery -A hpc2edge worker -Q train -c 1``) as the ``hpc`` role,
- one ``edge`` worker (``--pool solo -c 1``: one measurement at a time, CUDA never forked) as the
  ``edge`` role, or with ``--edge`` one worker per unit of each device kind asked for
  (:class:`EdgeUnit`: ``cpu-1t=onnxruntime:threads=1``, ``orin=table:table=orin.json,units=2``),
  so several kinds and several units of a kind run on one machine,

and, with ``--monitor``, Flower as the ``monitor`` role (:mod:`hpc2edge.ops.flower`); each
reading its own config file from ``<state_dir>/conf/<role>.toml`` (written here, absolute
paths, no secret inside) exactly as a remote worker would. Certificates and passwords are created
on first use. ``down`` stops exactly these processes (see :mod:`hpc2edge.util.procs`).

``HPC2EDGE_SECURITY_SIGN=true hpc2edge up`` (or ``[security] sign = true`` in the config) runs
the stack with message signing (:mod:`hpc2edge.transport.signing`): the role configs carry it, so
the workers run only tasks the orchestrator signed; later commands need the same setting. Workers
already running keep the mode they started with: ``down`` first to switch.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hpc2edge.config import (
    Settings,
    absolute,
    for_role,
    pid_file,
    role_config_path,
    secrets_dir,
    write_role_config,
)
from hpc2edge.errors import StackError
from hpc2edge.ops import flower, localbroker
from hpc2edge.pki import ca
from hpc2edge.roles import (
    ADMIN,
    DEFAULT_KIND,
    EDGE,
    HPC,
    ORCHESTRATOR,
    QUEUE_TRAIN,
    ROLES,
    check_kind,
    edge_queue,
)
from hpc2edge.transport import probes
from hpc2edge.util import filemodes, procs

CONFIG_ROLES = tuple(r for r in ROLES if r != ADMIN)  # the roles the local stack writes configs for
#: The backends ``--edge`` starts and the options each takes (``threads``: ONNX Runtime's
#: intra-op threads; ``table``: the recorded table's file); ``units`` is for every backend.
EDGE_OPTIONS = {"onnxruntime": ("threads",), "table": ("table",), "tensorrt": ()}
MAX_UNITS = 16


@dataclass(frozen=True)
class EdgeUnit:
    """One local edge worker: a unit of a device kind, with the backend it measures with."""

    kind: str = DEFAULT_KIND
    backend: str = "onnxruntime"
    threads: int | None = None
    table: Path | None = None
    index: int = 1

    @property
    def queue(self) -> str:
        return edge_queue(self.kind)

    @property
    def name(self) -> str:
        """The unit's name: its process (``worker-<name>``), config and Celery hostname."""
        return self.queue if self.index == 1 else f"{self.queue}-{self.index}"

    def settings(self, base: Settings) -> Settings:
        """The edge role's settings for this unit."""
        s = for_role(base, EDGE)
        e = replace(s.edge, kind=self.kind, backend=self.backend)
        if self.threads is not None:
            e = replace(e, intra_op_threads=self.threads)
        if self.table is not None:
            e = replace(e, table=self.table.resolve())
        return replace(s, edge=e)


def parse_edge(spec: str) -> list[EdgeUnit]:
    """``KIND=BACKEND[:key=value,...]`` -> the units it asks for (``units=N``, default 1).

    Raises:
        ValueError: one line naming what is wrong (kind, backend, option or value).
    """
    kind, eq, rest = spec.partition("=")
    if not eq:
        raise ValueError(f"--edge {spec}: expected KIND=BACKEND[:key=value,...]")
    check_kind(kind)
    backend, _, opts = rest.partition(":")
    if backend not in EDGE_OPTIONS:
        known = ", ".join(EDGE_OPTIONS)
        raise ValueError(f"--edge {spec}: backend {backend!r} is not one of {known}")
    values: dict[str, str] = {}
    for item in filter(None, opts.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in (*EDGE_OPTIONS[backend], "units") or not value:
            allowed = ", ".join((*EDGE_OPTIONS[backend], "units"))
            raise ValueError(f"--edge {spec}: {item!r} is not an option of {backend} ({allowed})")
        values[key] = value
    try:
        units = int(values.get("units", "1"))
        threads = int(values["threads"]) if "threads" in values else None
    except ValueError:
        raise ValueError(f"--edge {spec}: units and threads are whole numbers") from None
    if not 1 <= units <= MAX_UNITS or (threads is not None and threads < 0):
        raise ValueError(f"--edge {spec}: units is 1-{MAX_UNITS}, threads >= 0 (0: all cores)")
    if backend == "table" and "table" not in values:
        raise ValueError(f"--edge {spec}: the table backend needs table=FILE (a recording)")
    table = Path(values["table"]) if "table" in values else None
    if table is not None and not table.is_file():
        raise ValueError(f"--edge {spec}: no table file {table}")
    return [EdgeUnit(kind, backend, threads, table, i + 1) for i in range(units)]


def edge_units(specs: Sequence[str], settings: Settings) -> list[EdgeUnit]:
    """The units ``--edge`` specs ask for (none: one unit of the default kind, as configured)."""
    if not specs:
        e = settings.edge
        return [EdgeUnit(DEFAULT_KIND, e.backend, None, e.table)]
    units = [u for spec in specs for u in parse_edge(spec)]
    kinds = [u.kind for u in units if u.index == 1]
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"--edge: each kind once (use units=N for more units), got {kinds}")
    return units


def worker_argv(queue: str, hostname: str | None = None) -> list[str]:
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
        f"{hostname or queue}@%h",
        "--loglevel",
        "INFO",
        # Mingle and gossip sync revoked ids between workers over broadcast: we need neither,
        # and each adds a round of broadcast traffic at start across two sites.
        "--without-mingle",
        "--without-gossip",
    ]
    if queue != QUEUE_TRAIN:
        argv += ["--pool", "solo"]  # the edge role's config forces it anyway (workerrole)
    return argv


def prepare(settings: Settings) -> Settings:
    """Create what a local stack needs and is missing: certificates, passwords, role configs.

    With ``security.sign``, every role that signs gets ``[security] sign = true`` in its config
    (``HPC2EDGE_SECURITY_SIGN=true hpc2edge up``), and a CA made before signing existed gets its
    signing certificates.
    """
    s = absolute(settings)
    tls_dir = s.tls.ca_cert.parent
    if not (tls_dir / "ca.pem").exists():
        hosts = [] if s.broker.host in ca.server_names() else [s.broker.host]
        ca.init(tls_dir, hosts)
    elif s.security.sign and not ca.signing_files(tls_dir, ORCHESTRATOR).cert.exists():
        ca.init_signing(tls_dir)
    localbroker.ensure_secrets(secrets_dir(s))
    for role in CONFIG_ROLES:
        write_role_config(role_config_path(s, role), for_role(s, role))
    filemodes.tighten(s.state_dir)  # folders 0700, files 0600, also those of older versions
    return for_role(s, s.role)


def up(
    settings: Settings,
    *,
    timeout_s: float = 60.0,
    monitor_port: int | None = None,
    edge: Sequence[str] = (),
) -> dict[str, Any]:
    """Start broker and workers (those already running are kept) and wait until each answers.

    ``edge``: ``--edge`` specs (:func:`parse_edge`), the device kinds and units to start; none
    starts one unit of the default kind. With ``monitor_port``, also Flower as the monitor role
    on 127.0.0.1 (:mod:`hpc2edge.ops.flower`).

    Raises:
        ValueError: an ``edge`` spec that is not one (before anything starts).
    """
    units = edge_units(edge, settings)
    s = prepare(settings)
    local = localbroker.LocalBroker(s.state_dir)
    running = procs.read(local.pid_file)
    started: list[str] = []
    if running is None or not procs.alive(running):
        localbroker.start(s)
        started.append("broker")
    workers = [(QUEUE_TRAIN, QUEUE_TRAIN, role_config_path(s, HPC))]
    for unit in units:
        path = role_config_path(s, unit.name)
        write_role_config(path, unit.settings(s))
        workers.append((unit.queue, unit.name, path))
    for queue, name, config in workers:
        record = procs.read(pid_file(s.state_dir, f"worker-{name}"))
        if record is not None and procs.alive(record):
            continue
        # The worker's role config is its whole configuration: no HPC2EDGE_* of the caller's
        # (a role, a password, a relative state dir) may override it.
        env = {k: v for k, v in os.environ.items() if not k.startswith("HPC2EDGE_")}
        env["HPC2EDGE_CONFIG"] = str(config)
        procs.spawn(
            f"worker-{name}",
            worker_argv(queue, name),
            env=env,
            cwd=s.state_dir,
            log=s.state_dir / "logs" / f"worker-{name}.log",
            pid_file=pid_file(s.state_dir, f"worker-{name}"),
        )
        started.append(f"worker-{name}")
    answers = {}
    for queue, name, _ in workers:
        record = procs.read(pid_file(s.state_dir, f"worker-{name}"))
        if queue not in answers:
            answers[queue] = wait_for_worker(s, queue, timeout_s=timeout_s, record=record)
    for queue in answers:
        wanted = sum(1 for q, _, _ in workers if q == queue)
        wait_for_units(s, queue, wanted, timeout_s=timeout_s)
    out: dict[str, Any] = {"started": started, "workers": answers, "state_dir": str(s.state_dir)}
    if monitor_port is not None:
        out["monitor"] = flower.start_background(s, port=monitor_port, timeout_s=timeout_s)
        if out["monitor"]["started"]:
            started.append(flower.PROCESS_NAME)
    return out


def wait_for_units(settings: Settings, queue: str, n: int, *, timeout_s: float) -> list[str]:
    """Wait until ``n`` workers of ``queue`` announce themselves (units of one kind share the
    queue, so a ping reaches only one of them); their hostnames."""
    deadline = time.monotonic() + timeout_s
    while True:
        live = probes.probe_broker(settings, timeout_s=5.0).workers.get(queue, [])
        if len(live) >= n:
            return live
        if time.monotonic() > deadline:
            raise StackError(
                f"{len(live)} of {n} workers of queue {queue!r} live after {timeout_s:.0f} s "
                f"(logs in {settings.state_dir / 'logs'})"
            )
        time.sleep(0.5)


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
    record = record or procs.read(pid_file(settings.state_dir, f"worker-{queue}"))

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
            answer = probes.ping(settings, queue, timeout_s=min(5.0, remaining))
        except StackError:
            continue
        if hostname is None or answer["hostname"] == hostname:
            return answer


def worker_names(state_dir: Path) -> list[str]:
    """The local stack's worker processes that have a pid file (``worker-train``,
    ``worker-edge``, ``worker-edge.<kind>[-<n>]``)."""
    run = state_dir / "run"
    return sorted(p.stem for p in run.glob("worker-*.pid")) if run.is_dir() else []


def down(settings: Settings) -> list[str]:
    """Stop the workers, then the broker, started from this state folder. Returns what stopped."""
    state_dir = settings.state_dir.resolve()
    stopped = []
    if flower.stop(state_dir):
        stopped.append(flower.PROCESS_NAME)
    for name in worker_names(state_dir):
        worker_pid = pid_file(state_dir, name)
        record = procs.read(worker_pid)
        if record is not None:
            # A warm shutdown lets a running task finish or be given back (acks_late).
            if procs.stop(record, timeout_s=20.0):
                stopped.append(name)
            worker_pid.unlink(missing_ok=True)
    if localbroker.stop(state_dir):
        stopped.append("broker")
    return stopped


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
    b = settings.broker
    st = Status(broker=f"{b.host}:{b.port}", user=settings.username, reachable=False)
    for name in ("broker", *worker_names(settings.state_dir), flower.PROCESS_NAME):
        record = procs.read(pid_file(settings.state_dir, name))
        if record is not None:
            st.local_processes[name] = procs.alive(record)
    st.monitor_url = flower.running_url(settings.state_dir)
    probe = probes.probe_broker(settings, timeout_s=timeout_s)
    st.reachable, st.tls_version, st.error = probe.reachable, probe.tls_version, probe.error
    st.queue_depths, st.workers = probe.queue_depths, probe.workers
    return st
