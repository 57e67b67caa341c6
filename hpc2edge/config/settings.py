"""The typed, frozen settings of one process, and the checks that need no files.

:mod:`hpc2edge.config.load` makes one :class:`Settings` from a TOML file (``--config`` or
``HPC2EDGE_CONFIG``) and ``HPC2EDGE_<SECTION>_<KEY>`` variables, raising every problem at once;
:meth:`Settings.problems` is the part of that check that needs no file. The file::

    role = "edge"                       # orchestrator | hpc | edge | monitor | admin
    state_dir = ".hpc2edge"             # logs, pid files, local broker data

    [broker]
    host = "broker.example.org"
    port = 6390
    username = "edge"                   # the Redis ACL user; defaults to the role
    password_file = "secrets/edge.password"
    visibility_timeout_s = 43200        # must exceed worker.train_time_limit_s
    result_expires_s = 604800
    connect_timeout_s = 10
    maxmemory_mib = 0                   # local broker only (`broker start`); 0: redis.conf's 2 GiB

    [tls]
    ca_cert = "tls/ca.pem"
    cert = "tls/edge.pem"
    key = "tls/edge-key.pem"
    check_hostname = true

    [worker]
    train_time_limit_s = 21600
    measure_time_limit_s = 1800

    [edge]                              # only read by edge workers
    kind = "default"                    # the device kind: queue edge (default) or edge.<kind>
    backend = "onnxruntime"             # onnxruntime | tensorrt | table
    intra_op_threads = 0                # ONNX Runtime threads; 0: all cores
    cache_dir = "cache"                 # TensorRT engines and timing cache
    # table = "recorded.json"           # the table backend's recordings
    artifact_max_mib = 512
    max_input_mib = 256                 # largest float32 input batch a request may ask for
    reference_every = 50                # measure the reference model after this many; 0: never
    time_scale = 1.0                    # drills and tests only: report every sample this x slower

    [search]                            # only read by the orchestrator
    storage = ""                        # Optuna storage URL; "": sqlite:///<state_dir>/search.db
    store = ""                          # measurement store URL; "": <state_dir>/measurements.db
    measure_timeout_s = 1800            # dispatch -> result, queueing included; then retry
    train_timeout_s = 86400
    retries = 2                         # extra attempts after a timeout or a transient error

    [security]                          # message signing (Celery's auth serializer), off by default
    sign = false                        # the same on every role of a deployment
    key = "tls/edge-sign-key.pem"       # this role's RSA signing key (`hpc2edge tls init`)
    cert = "tls/edge-sign.pem"          # ... and its certificate
    cert_store = "tls/signers/tasks"    # whose tasks we run: the orchestrator's cert, nothing else
                                        # (orchestrator: tls/signers/results, for control replies)
    result_cert_store = "tls/signers/results"   # whose results we accept: the workers' certs

Built-in defaults are relative to ``state_dir``, laid out as ``hpc2edge up`` and ``hpc2edge tls
init`` create them, so a local stack needs no file at all.

Secrets: the broker password is never written in the TOML file (the loader refuses it there); it
comes from ``broker.password_file`` or ``HPC2EDGE_BROKER_PASSWORD``, is kept out of ``repr`` and
is masked by :func:`hpc2edge.config.render.render_masked`. Only entry points read the
environment: library code receives a ``Settings``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from hpc2edge.roles import DEFAULT_KIND, ROLES, SIGNING_ROLES, check_kind

ENV_PREFIX = "HPC2EDGE_"
ENV_CONFIG = "HPC2EDGE_CONFIG"
ENV_PASSWORD = "HPC2EDGE_BROKER_PASSWORD"  # noqa: S105 - the variable name, not a secret
DEFAULT_STATE_DIR = Path(".hpc2edge")
DEFAULT_PORT = 6390
MASK = "********"


@dataclass(frozen=True)
class BrokerSettings:
    """Where the Redis broker is and how this role logs in."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    username: str = ""
    password_file: Path | None = None
    password: str | None = field(default=None, repr=False)
    visibility_timeout_s: int = 12 * 3600
    result_expires_s: int = 7 * 24 * 3600
    connect_timeout_s: float = 10.0
    # The cap `hpc2edge broker start` gives its local redis-server (--maxmemory), in MiB; 0 keeps
    # broker/redis.conf's maxmemory. Writes are refused at the cap (noeviction), nothing evicted.
    maxmemory_mib: int = 0


@dataclass(frozen=True)
class TLSSettings:
    """The client side of mutual TLS: our CA, and this role's certificate and key."""

    ca_cert: Path = Path("tls/ca.pem")
    cert: Path = Path("tls/orchestrator.pem")
    key: Path = Path("tls/orchestrator-key.pem")
    check_hostname: bool = True


@dataclass(frozen=True)
class WorkerSettings:
    """Limits that workers apply to tasks."""

    train_time_limit_s: int = 6 * 3600
    measure_time_limit_s: int = 1800


@dataclass(frozen=True)
class EdgeSettings:
    """How an edge worker measures, and which device kind it is (its queue: ``edge`` for the
    default kind, ``edge.<kind>`` for any other, :func:`hpc2edge.roles.edge_queue`)."""

    kind: str = DEFAULT_KIND
    backend: str = "onnxruntime"
    intra_op_threads: int = 0
    cache_dir: Path | None = None
    table: Path | None = None
    artifact_max_mib: int = 512
    max_input_mib: int = 256
    # The unit measures the fixed reference model when it joins and after this many
    # measurements (0: never), so the orchestrator can compare the units of a kind
    # (docs/measurement.md, "Units of a kind: reference checks and quarantine").
    reference_every: int = 50
    # A drill and test knob, never for production: every timed sample this unit reports,
    # reference included, is multiplied by it (2.0: a unit that reports twice as slow).
    time_scale: float = 1.0


@dataclass(frozen=True)
class SearchSettings:
    """Where the orchestrator keeps its study and measurements, and how long it waits.

    A database URL may carry a password (``postgresql://user:pw@host/db``): prefer a
    ``~/.pgpass`` file or the ``HPC2EDGE_SEARCH_STORAGE`` variable; shown URLs are masked.
    """

    storage: str = ""
    store: str = ""
    measure_timeout_s: int = 1800
    train_timeout_s: int = 24 * 3600
    retries: int = 2


@dataclass(frozen=True)
class SecuritySettings:
    """Message signing with Celery's ``auth`` serializer (:mod:`hpc2edge.transport.signing`).

    With ``sign`` on, the orchestrator signs every task with its RSA key and a worker runs only
    tasks whose signature verifies against a certificate in its ``cert_store``; a worker's holds
    only the orchestrator's signing certificate, so no other certificate of our CA (an edge
    device's, say) can sign a task. Workers sign results with their own keys, checked against
    ``result_cert_store`` (the workers' certificates). The orchestrator's ``cert_store`` is the
    workers' too: it receives only their remote-control replies. Defaults follow ``hpc2edge tls
    init``: ``tls/<role>-sign-key.pem``, ``tls/<role>-sign.pem``, ``tls/signers/tasks`` (workers)
    or ``tls/signers/results`` (orchestrator), and ``tls/signers/results``.
    """

    sign: bool = False
    key: Path = Path("tls/orchestrator-sign-key.pem")
    cert: Path = Path("tls/orchestrator-sign.pem")
    cert_store: Path = Path("tls/signers/results")
    result_cert_store: Path = Path("tls/signers/results")


@dataclass(frozen=True)
class Settings:
    """The effective configuration of one process."""

    role: str = "orchestrator"
    state_dir: Path = DEFAULT_STATE_DIR
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    tls: TLSSettings = field(default_factory=TLSSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    edge: EdgeSettings = field(default_factory=EdgeSettings)
    search: SearchSettings = field(default_factory=SearchSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    source: str = field(default="built-in defaults", compare=False)

    def problems(self) -> list[str]:
        """Every inconsistency of these settings, one message each (empty when valid)."""
        out: list[str] = []
        if self.role not in ROLES:
            out.append(f"role: {self.role!r} is not one of {', '.join(ROLES)}")
        b = self.broker
        if not b.host:
            out.append("broker.host: must not be empty")
        if not 1 <= b.port <= 65535:
            out.append(f"broker.port: {b.port} is not a TCP port (1-65535)")
        if b.result_expires_s <= 0:
            out.append("broker.result_expires_s: must be positive")
        if b.connect_timeout_s <= 0:
            out.append("broker.connect_timeout_s: must be positive")
        if b.maxmemory_mib < 0:
            out.append("broker.maxmemory_mib: must be >= 0 (0: redis.conf's maxmemory)")
        w = self.worker
        for name in ("train_time_limit_s", "measure_time_limit_s"):
            if getattr(w, name) <= 0:
                out.append(f"worker.{name}: must be positive")
        longest = max(w.train_time_limit_s, w.measure_time_limit_s)
        if b.visibility_timeout_s <= longest:
            # Redis redelivers an unacknowledged task after visibility_timeout: a shorter
            # timeout than the longest task would run every long training twice.
            out.append(
                f"broker.visibility_timeout_s: {b.visibility_timeout_s} must exceed the longest "
                f"task limit ({longest} s), or long tasks are delivered twice"
            )
        e = self.edge
        try:
            check_kind(e.kind)
        except ValueError as exc:
            out.append(f"edge.kind: {exc}")
        if e.backend not in ("onnxruntime", "tensorrt", "table"):
            out.append(f"edge.backend: {e.backend!r} is not onnxruntime, tensorrt or table")
        if e.backend == "table" and e.table is None:
            out.append("edge.table: the table backend needs a recorded table file")
        if e.intra_op_threads < 0:
            out.append("edge.intra_op_threads: must be >= 0 (0: all cores)")
        if e.artifact_max_mib <= 0:
            out.append("edge.artifact_max_mib: must be positive")
        if e.max_input_mib <= 0:
            out.append("edge.max_input_mib: must be positive")
        if e.reference_every < 0:
            out.append("edge.reference_every: must be >= 0 (0: no reference checks)")
        if not (math.isfinite(e.time_scale) and e.time_scale > 0):
            out.append(f"edge.time_scale: {e.time_scale!r} must be a finite number > 0 (1.0: off)")
        s = self.search
        for name in ("measure_timeout_s", "train_timeout_s"):
            if getattr(s, name) <= 0:
                out.append(f"search.{name}: must be positive")
        if not 0 <= s.retries <= 10:
            out.append(f"search.retries: {s.retries} is not in 0-10")
        for name in ("storage", "store"):
            url = getattr(s, name)
            if url and "://" not in url:
                out.append(f"search.{name}: {url!r} is not a database URL (sqlite:///path, ...)")
        if self.security.sign and self.role not in SIGNING_ROLES:
            out.append(
                f"security.sign: the {self.role} role neither sends nor runs tasks; only "
                f"{', '.join(SIGNING_ROLES)} sign (workers refuse its unsigned remote control)"
            )
        return out

    @property
    def username(self) -> str:
        """The Redis ACL user: ``broker.username`` or, when empty, the role."""
        return self.broker.username or self.role


SECTIONS: dict[str, type] = {
    "broker": BrokerSettings,
    "tls": TLSSettings,
    "worker": WorkerSettings,
    "edge": EdgeSettings,
    "search": SearchSettings,
    "security": SecuritySettings,
}
TOP_LEVEL = ("role", "state_dir")
SECRET_KEYS = {("broker", "password")}
