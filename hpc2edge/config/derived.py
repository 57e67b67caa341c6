"""Values that follow from the settings: storage URLs, the secrets folder, another role's view."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from hpc2edge.config.settings import Settings
from hpc2edge.roles import ROLES, SIGNING_ROLES, WORKER_ROLES


def default_cert_store(role: str) -> Path:
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
            cert_store=tls_dir / default_cert_store(role).relative_to("tls"),
            result_cert_store=tls_dir / "signers" / "results",
        ),
    )


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


def role_config_path(settings: Settings, role: str) -> Path:
    """The config file the local stack writes for ``role``: ``<state_dir>/conf/<role>.toml``."""
    return settings.state_dir / "conf" / f"{role}.toml"


def pid_file(state_dir: Path, name: str) -> Path:
    """Where a background process ``name`` of the local stack records itself (``broker``,
    ``worker-<queue>``, ``flower``): ``<state_dir>/run/<name>.pid``."""
    return state_dir / "run" / f"{name}.pid"
