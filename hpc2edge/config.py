"""Typed, frozen, validated-at-once settings.

One TOML file (``--config`` or ``HPC2EDGE_CONFIG``) plus ``HPC2EDGE_<SECTION>_<KEY>`` environment
overrides make one :class:`Settings`. Every problem found (unknown key, wrong type, out of range,
inconsistent values) is collected and raised together in one :class:`~hpc2edge.errors.ConfigError`,
so a user fixes a file in one pass, not one error per run.

The file::

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
    backend = "onnxruntime"             # onnxruntime | tensorrt | table
    intra_op_threads = 0                # ONNX Runtime threads; 0: all cores
    cache_dir = "cache"                 # TensorRT engines and timing cache
    # table = "recorded.json"           # the table backend's recordings
    artifact_max_mib = 512
    max_input_mib = 256                 # largest float32 input batch a request may ask for

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

Relative paths in a file are relative to that file's folder; built-in defaults are relative to
``state_dir``, laid out as ``hpc2edge up`` and ``hpc2edge tls init`` create them, so a local stack
needs no file at all.

Secrets: the broker password is never written in the TOML file (it is refused there); it comes
from ``broker.password_file`` or ``HPC2EDGE_BROKER_PASSWORD``, is kept out of ``repr`` and is
masked by :func:`render_masked`. Only entry points read the environment: library code receives a
``Settings``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from hpc2edge.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

ROLES = ("orchestrator", "hpc", "edge", "monitor", "admin")
SIGNING_ROLES = ("orchestrator", "hpc", "edge")  # the roles that sign messages (security.sign)
WORKER_ROLES = ("hpc", "edge")
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
    """How an edge worker measures."""

    backend: str = "onnxruntime"
    intra_op_threads: int = 0
    cache_dir: Path | None = None
    table: Path | None = None
    artifact_max_mib: int = 512
    max_input_mib: int = 256


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
    """Message signing with Celery's ``auth`` serializer (:mod:`hpc2edge.signing`).

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

    def file_problems(self) -> list[str]:
        """Problems with the files these settings point at (certificates, key, password)."""
        out: list[str] = []
        for name in ("ca_cert", "cert", "key"):
            path = getattr(self.tls, name)
            if not path.is_file():
                out.append(f"tls.{name}: {path} does not exist (run `hpc2edge tls init`)")
        if self.tls.key.is_file() and self.tls.key.stat().st_mode & 0o077:
            out.append(f"tls.key: {self.tls.key} is readable by others (chmod 600 it)")
        if self.broker.password is None:
            where = self.broker.password_file or "broker.password_file"
            out.append(f"broker.password: none given ({where} missing and {ENV_PASSWORD} unset)")
        if self.security.sign and self.role in SIGNING_ROLES:
            from hpc2edge import signing  # lazy: it loads cryptography and Celery's security

            out.extend(signing.file_problems(self.security))
        return out

    @property
    def username(self) -> str:
        """The Redis ACL user: ``broker.username`` or, when empty, the role."""
        return self.broker.username or self.role


# --- loading ----------------------------------------------------------------------------------

_SECTIONS: dict[str, type] = {
    "broker": BrokerSettings,
    "tls": TLSSettings,
    "worker": WorkerSettings,
    "edge": EdgeSettings,
    "search": SearchSettings,
    "security": SecuritySettings,
}
_TOP_LEVEL = ("role", "state_dir")
_SECRET_KEYS = {("broker", "password")}


def _field_types(cls: type) -> dict[str, str]:
    return {f.name: str(f.type) for f in fields(cls)}


def _coerce(value: Any, type_name: str, where: str, problems: list[str]) -> Any:
    """Convert ``value`` (from TOML or an env string) to the declared type, or record why not."""
    from_env = isinstance(value, str)
    try:
        if type_name == "int":
            if isinstance(value, bool) or (not from_env and not isinstance(value, int)):
                raise TypeError
            return int(value)
        if type_name == "float":
            if isinstance(value, bool) or (not from_env and not isinstance(value, (int, float))):
                raise TypeError
            return float(value)
        if type_name == "bool":
            if isinstance(value, bool):
                return value
            if from_env and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                return value.lower() in ("1", "true", "yes", "on")
            raise TypeError
        if type_name in ("str", "str | None"):
            if not isinstance(value, str):
                raise TypeError
            return value
        if type_name in ("Path", "Path | None"):
            if not isinstance(value, str):
                raise TypeError
            return Path(value).expanduser()
    except (TypeError, ValueError):
        expected = type_name.replace(" | None", "")
        problems.append(f"{where}: expected {expected}, got {value!r}")
        return None
    raise AssertionError(f"unhandled type {type_name}")  # a bug in the schema, not user input


def _env_overrides(environ: Mapping[str, str], problems: list[str]) -> dict[str, Any]:
    """``HPC2EDGE_BROKER_HOST=x`` -> ``{"broker": {"host": "x"}}``; unknown names are problems."""
    tree: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_CONFIG:
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key in _TOP_LEVEL:
            tree[key] = value
            continue
        for section in _SECTIONS:
            if key.startswith(section + "_"):
                tree.setdefault(section, {})[key[len(section) + 1 :]] = value
                break
        else:
            problems.append(f"{name}: not a known setting")
    return tree


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"], source=str(path)) from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError([f"{path}: {exc}"], source=str(path)) from None


def load_settings(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    require_files: bool = False,
) -> Settings:
    """Build the effective settings from a TOML file and ``HPC2EDGE_*`` environment variables.

    Args:
        path: the TOML file; ``None`` uses ``HPC2EDGE_CONFIG`` from ``environ`` when set, else the
            built-in defaults (the local stack's layout under ``.hpc2edge/``).
        environ: the environment to read overrides from; entry points pass ``os.environ``.
        require_files: also check that certificates, key and password exist.

    Raises:
        ConfigError: listing every problem found.
    """
    env = {} if environ is None else environ
    if path is None and env.get(ENV_CONFIG):
        path = env[ENV_CONFIG]
    problems: list[str] = []
    raw: dict[str, Any] = {}
    base_dir: Path | None = None
    source = "built-in defaults"
    if path is not None:
        file_path = Path(path).expanduser()
        raw = _read_toml(file_path)
        base_dir = file_path.resolve().parent
        source = str(file_path)
        broker_table = raw.get("broker")
        if isinstance(broker_table, dict) and "password" in broker_table:
            problems.append(
                "broker.password: secrets are not allowed in the config file; "
                f"use broker.password_file or {ENV_PASSWORD}"
            )
            raw["broker"] = {k: v for k, v in raw["broker"].items() if k != "password"}
    env_tree = _env_overrides(env, problems)
    env_password = env_tree.get("broker", {}).pop("password", None)
    merged = _merge(raw, env_tree)

    top: dict[str, Any] = {}
    for key, value in merged.items():
        if key in _SECTIONS:
            if not isinstance(value, Mapping):
                problems.append(f"[{key}]: expected a table, got {value!r}")
            continue
        if key not in _TOP_LEVEL:
            problems.append(
                f"{key}: unknown setting (known: {', '.join(_TOP_LEVEL)}, "
                f"and the tables {', '.join(_SECTIONS)})"
            )
            continue
        type_name = "Path" if key == "state_dir" else "str"
        top[key] = _coerce(value, type_name, key, problems)

    role = top.get("role") or Settings.role
    state_dir = top.get("state_dir") or DEFAULT_STATE_DIR
    if base_dir is not None and not state_dir.is_absolute() and "state_dir" in raw:
        state_dir = base_dir / state_dir

    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        given = merged.get(name, {})
        if not isinstance(given, Mapping):
            given = {}
        types = _field_types(cls)
        values: dict[str, Any] = {}
        for key, value in given.items():
            if (name, key) in _SECRET_KEYS or key not in types:
                problems.append(
                    f"{name}.{key}: unknown setting (known: "
                    f"{', '.join(k for k in types if (name, k) not in _SECRET_KEYS)})"
                )
                continue
            coerced = _coerce(value, types[key], f"{name}.{key}", problems)
            if coerced is not None:
                values[key] = coerced
        sections[name] = values

    # Paths: file values are relative to the file's folder; defaults live under state_dir.
    def resolve(section: str, key: str, default: Path | None) -> Path | None:
        given = sections[section].get(key)
        if given is None:
            return None if default is None else state_dir / default
        table = raw.get(section)
        from_file = isinstance(table, dict) and key in table
        if not given.is_absolute() and from_file and base_dir is not None:
            return base_dir / given
        return given

    tls_values = dict(sections["tls"])
    tls_values["ca_cert"] = resolve("tls", "ca_cert", Path("tls/ca.pem"))
    tls_values["cert"] = resolve("tls", "cert", Path(f"tls/{role}.pem"))
    tls_values["key"] = resolve("tls", "key", Path(f"tls/{role}-key.pem"))
    broker_values = dict(sections["broker"])
    broker_values["password_file"] = resolve(
        "broker", "password_file", Path(f"secrets/{broker_values.get('username') or role}.password")
    )

    password: str | None = env_password
    pw_file = broker_values["password_file"]
    if password is None and pw_file is not None and pw_file.is_file():
        try:
            password = pw_file.read_text().strip() or None
        except OSError as exc:
            problems.append(f"broker.password_file: cannot read {pw_file}: {exc.strerror}")
    broker_values["password"] = password

    edge_values = dict(sections["edge"])
    edge_values["cache_dir"] = resolve("edge", "cache_dir", Path("cache"))
    edge_values["table"] = resolve("edge", "table", None)
    security_values = dict(sections["security"])
    security_values["key"] = resolve("security", "key", Path(f"tls/{role}-sign-key.pem"))
    security_values["cert"] = resolve("security", "cert", Path(f"tls/{role}-sign.pem"))
    security_values["cert_store"] = resolve("security", "cert_store", _task_signers(role))
    security_values["result_cert_store"] = resolve(
        "security", "result_cert_store", Path("tls/signers/results")
    )

    settings = Settings(
        role=role,
        state_dir=state_dir,
        broker=BrokerSettings(**broker_values),
        tls=TLSSettings(**tls_values),
        worker=WorkerSettings(**sections["worker"]),
        edge=EdgeSettings(**edge_values),
        search=SearchSettings(**sections["search"]),
        security=SecuritySettings(**security_values),
        source=source,
    )
    problems.extend(settings.problems())
    if require_files:
        problems.extend(settings.file_problems())
    if problems:
        raise ConfigError(problems, source=source)
    return settings


def _task_signers(role: str) -> Path:
    """The default ``security.cert_store``: workers trust the orchestrator's signature on tasks;
    the orchestrator receives only the workers' signed remote-control replies."""
    return Path("tls/signers/tasks" if role in WORKER_ROLES else "tls/signers/results")


def study_storage_url(settings: Settings, given: str | None = None) -> str:
    """The Optuna storage: ``given``, else ``search.storage``, else ``<state_dir>/search.db``."""
    if given:
        return given
    return settings.search.storage or f"sqlite:///{(settings.state_dir / 'search.db').absolute()}"


def measurement_store_url(settings: Settings, given: str | None = None) -> str:
    """The measurement store: ``given``, else ``search.store``, else ``<state_dir>/measurements.db``
    (SQLite)."""
    if given:
        return given
    default = f"sqlite:///{(settings.state_dir / 'measurements.db').absolute()}"
    return settings.search.store or default


def secrets_dir(settings: Settings) -> Path:
    """The folder of the roles' password files: beside this role's, else ``<state_dir>/secrets``."""
    if settings.broker.password_file is not None:
        return settings.broker.password_file.parent
    return settings.state_dir / "secrets"


def for_role(settings: Settings, role: str) -> Settings:
    """The same broker and folders seen as another role of the local stack (its own certs).

    Signing follows ``settings`` for the roles that sign; the monitor and admin never sign.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    tls_dir = settings.tls.ca_cert.parent
    pw_file = secrets_dir(settings) / f"{role}.password"
    password = pw_file.read_text().strip() if pw_file.is_file() else None
    return replace(
        settings,
        role=role,
        broker=replace(settings.broker, username="", password_file=pw_file, password=password),
        tls=replace(settings.tls, cert=tls_dir / f"{role}.pem", key=tls_dir / f"{role}-key.pem"),
        security=replace(
            settings.security,
            sign=settings.security.sign and role in SIGNING_ROLES,
            key=tls_dir / f"{role}-sign-key.pem",
            cert=tls_dir / f"{role}-sign.pem",
            cert_store=tls_dir / _task_signers(role).relative_to("tls"),
            result_cert_store=tls_dir / "signers" / "results",
        ),
    )


def render_masked(settings: Settings) -> str:
    """The effective settings as TOML, with every secret replaced by a mask."""
    lines = [
        f"# effective configuration (from {settings.source})",
        f'role = "{settings.role}"',
        f'state_dir = "{settings.state_dir}"',
    ]
    for name in _SECTIONS:
        lines.append("")
        lines.append(f"[{name}]")
        section = getattr(settings, name)
        for f in fields(section):
            value = getattr(section, f.name)
            if (name, f.name) in _SECRET_KEYS:
                shown = f'"{MASK}"' if value else '""  # not set'
                lines.append(f"{f.name} = {shown}")
                continue
            if name == "broker" and f.name == "username":
                value = settings.username
            if name == "search" and isinstance(value, str):
                value = mask_url(value)
            if value is None:
                lines.append(f"# {f.name} is not set")
            else:
                lines.append(f"{f.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def mask_url(url: str) -> str:
    """``scheme://user:secret@host/db`` -> ``scheme://user:********@host/db``."""
    return re.sub(r"(://[^/:@]*):[^@/]*@", rf"\1:{MASK}@", url)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if value is None:
        return '""'
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_role_config(path: Path, settings: Settings) -> None:
    """Write a role's config file (no secrets inside: the password stays in its own file)."""
    body = render_masked(settings).splitlines()
    kept = [line for line in body if not line.startswith("password =")]
    kept[0] = f"# {settings.role} configuration written by hpc2edge"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(kept) + "\n")
