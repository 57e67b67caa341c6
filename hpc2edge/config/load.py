"""Loading :class:`~hpc2edge.config.settings.Settings`: a TOML file, then ``HPC2EDGE_*`` variables.

Every problem found is collected and raised together in one :class:`~hpc2edge.errors.ConfigError`.
Relative paths in a file are relative to its folder; built-in defaults live under ``state_dir``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from hpc2edge.config.derived import default_cert_store
from hpc2edge.config.files import file_problems
from hpc2edge.config.settings import (
    DEFAULT_STATE_DIR,
    ENV_CONFIG,
    ENV_PASSWORD,
    ENV_PREFIX,
    SECRET_KEYS,
    SECTIONS,
    TOP_LEVEL,
    BrokerSettings,
    EdgeSettings,
    SearchSettings,
    SecuritySettings,
    Settings,
    TLSSettings,
    WorkerSettings,
)
from hpc2edge.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


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
        if key in TOP_LEVEL:
            tree[key] = value
            continue
        for section in SECTIONS:
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
        if key in SECTIONS:
            if not isinstance(value, Mapping):
                problems.append(f"[{key}]: expected a table, got {value!r}")
            continue
        if key not in TOP_LEVEL:
            problems.append(
                f"{key}: unknown setting (known: {', '.join(TOP_LEVEL)}, "
                f"and the tables {', '.join(SECTIONS)})"
            )
            continue
        type_name = "Path" if key == "state_dir" else "str"
        top[key] = _coerce(value, type_name, key, problems)

    role = top.get("role") or Settings.role
    state_dir = top.get("state_dir") or DEFAULT_STATE_DIR
    if base_dir is not None and not state_dir.is_absolute() and "state_dir" in raw:
        state_dir = base_dir / state_dir

    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        given = merged.get(name, {})
        if not isinstance(given, Mapping):
            given = {}
        types = _field_types(cls)
        values: dict[str, Any] = {}
        for key, value in given.items():
            if (name, key) in SECRET_KEYS or key not in types:
                problems.append(
                    f"{name}.{key}: unknown setting (known: "
                    f"{', '.join(k for k in types if (name, k) not in SECRET_KEYS)})"
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
    security_values["cert_store"] = resolve("security", "cert_store", default_cert_store(role))
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
        problems.extend(file_problems(settings))
    if problems:
        raise ConfigError(problems, source=source)
    return settings
