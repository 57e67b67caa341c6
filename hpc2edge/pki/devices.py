"""Per-device identities: each edge device's certificates, its own broker user, and the registry.

``hpc2edge tls add-device NAME --kind KIND`` (:func:`issue`) gives a device:

- its TLS certificate ``edge-NAME.pem`` and result-signing certificate ``edge-NAME-sign.pem``
  (:func:`hpc2edge.pki.ca.add_device`);
- its own Redis ACL user, :func:`user_of` = ``edge-NAME``, with a fresh random password in
  ``<secrets>/edge-NAME.password`` (0600, beside the roles' passwords). That user has the edge
  role's commands but only its kind's keys and channels
  (:func:`hpc2edge.ops.localbroker.device_patterns`);
- an entry in the registry ``<secrets>/devices.json``.

Redis 7.0 cannot tie a client certificate to a user (``tls-auth-clients`` only checks the CA),
so what identifies a device to the broker is its user and password, and that is what
:func:`revoke` takes away. The certificate stays valid for the TLS handshake.

The registry is the one record the broker's users are rendered from: ``hpc2edge broker start``,
``hpc2edge broker acl`` and ``hpc2edge k8s secrets`` read it from the secrets folder they already
read the role passwords from, so a broker restart re-creates every active device's user and no
revoked one. It is written atomically, 0600, and read through :class:`Registry` only. Schema
(version 1)::

    {"version": 1, "devices": [{"name": "orin-07", "kind": "orin-agx", "user": "edge-orin-07",
      "issued_at": "2025-01-31T09:00:00+00:00", "revoked_at": null}]}

One entry per name: ``add-device --force`` re-issues a name (new certificate and password) and
replaces its entry, revoked or not. Devices issued before this registry existed have none and
log in as the shared ``edge`` user, which keeps its fleet-wide rights.

This module runs on the admin's machine only; it imports no broker client. Applying a change to a
running broker is :mod:`hpc2edge.ops.localbroker`'s.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hpc2edge.errors import TLSError
from hpc2edge.pki import ca
from hpc2edge.roles import DEFAULT_KIND, EDGE, check_kind
from hpc2edge.util.files import write_private

REGISTRY_FILE = "devices.json"
SCHEMA_VERSION = 1
#: A device's broker user is this plus its name: it can never be a role's name.
USER_PREFIX = f"{EDGE}-"

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    """The current time in UTC, to the second (what the registry records)."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def user_of(name: str) -> str:
    """The broker user of device ``name`` (``edge-<name>``, the stem of its certificate too)."""
    return USER_PREFIX + name


def registry_path(secrets_dir: Path) -> Path:
    return secrets_dir / REGISTRY_FILE


def password_file(secrets_dir: Path, name: str) -> Path:
    """Where device ``name``'s password lives: ``<secrets>/edge-<name>.password``, the default
    ``broker.password_file`` of a config with ``username = "edge-<name>"``."""
    return secrets_dir / f"{user_of(name)}.password"


class DeviceState(enum.Enum):
    ACTIVE = "active"
    REVOKED = "revoked"


@dataclass(frozen=True)
class Device:
    """One registry entry: who the device is, which kind it serves, when it was issued and
    revoked."""

    name: str
    kind: str
    issued_at: dt.datetime
    revoked_at: dt.datetime | None = None

    @property
    def user(self) -> str:
        return user_of(self.name)

    @property
    def state(self) -> DeviceState:
        return DeviceState.ACTIVE if self.revoked_at is None else DeviceState.REVOKED

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "user": self.user,
            "issued_at": self.issued_at.isoformat(),
            "revoked_at": None if self.revoked_at is None else self.revoked_at.isoformat(),
        }

    @classmethod
    def from_json(cls, data: object) -> Device:
        """An entry as stored; ValueError saying what is wrong with one that is not."""
        if not isinstance(data, dict):
            raise ValueError(f"an entry is not an object: {str(data)[:80]!r}")
        name, kind, user = data.get("name"), data.get("kind"), data.get("user")
        if not isinstance(name, str):
            raise ValueError(f"an entry has no name: {str(data)[:80]!r}")
        ca.check_device_name(name)
        check_kind(kind)
        if user != user_of(name):
            raise ValueError(f"device {name!r}: user {user!r} is not {user_of(name)!r}")
        return cls(
            name=name,
            kind=str(kind),
            issued_at=_time(data.get("issued_at"), f"device {name!r}: issued_at"),
            revoked_at=(
                None
                if data.get("revoked_at") is None
                else _time(data["revoked_at"], f"device {name!r}: revoked_at")
            ),
        )


def _time(value: object, what: str) -> dt.datetime:
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is not None:
                return parsed
    raise ValueError(f"{what} {str(value)[:40]!r} is not an ISO 8601 time with a UTC offset")


@dataclass(frozen=True)
class Registry:
    """Every device issued from one secrets folder, by name."""

    devices: tuple[Device, ...] = ()

    def get(self, name: str) -> Device | None:
        return next((d for d in self.devices if d.name == name), None)

    def active(self) -> tuple[Device, ...]:
        return tuple(d for d in self.devices if d.state is DeviceState.ACTIVE)

    def with_device(self, device: Device) -> Registry:
        """This registry with ``device``'s entry added or replaced (entries sorted by name)."""
        kept = [d for d in self.devices if d.name != device.name]
        return Registry(tuple(sorted([*kept, device], key=lambda d: d.name)))

    def to_json(self) -> str:
        body = {"version": SCHEMA_VERSION, "devices": [d.to_json() for d in self.devices]}
        return json.dumps(body, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Registry:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != SCHEMA_VERSION:
            raise ValueError(f"not a version {SCHEMA_VERSION} device registry")
        entries = data.get("devices")
        if not isinstance(entries, list):
            raise ValueError("'devices' is not a list")
        devices = [Device.from_json(entry) for entry in entries]
        names = [d.name for d in devices]
        if len(set(names)) != len(names):
            raise ValueError("a device name appears twice")
        return cls(tuple(devices))


def load(secrets_dir: Path) -> Registry:
    """The registry in ``secrets_dir``; empty when there is none yet.

    Raises:
        TLSError: the file exists but cannot be read or is not a registry (never guessed
            around: the broker's users are rendered from it).
    """
    path = registry_path(secrets_dir)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return Registry()
    except OSError as exc:
        raise TLSError(f"cannot read the device registry {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise TLSError(f"the device registry {path} is not UTF-8 text") from None
    try:
        return Registry.from_json(text)
    except (ValueError, RecursionError) as exc:
        raise TLSError(f"the device registry {path} is malformed: {exc}") from None


def save(secrets_dir: Path, registry: Registry) -> None:
    """Write the registry atomically, 0600, into ``secrets_dir`` (created 0700)."""
    _private_dir(secrets_dir)
    write_private(registry_path(secrets_dir), registry.to_json().encode())


def _private_dir(folder: Path) -> None:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)


@dataclass(frozen=True)
class Login:
    """What the broker needs to create a device's user: its name, kind and password."""

    user: str
    kind: str
    password: str = field(repr=False)


def logins(secrets_dir: Path) -> list[Login]:
    """The broker users of the active devices in ``secrets_dir``'s registry, with passwords.

    Raises:
        TLSError: the registry is unreadable, or an active device's password file is missing or
            empty (listing each; a missing password is never made up: the device would not know
            it).
    """
    out: list[Login] = []
    problems: list[str] = []
    for device in load(secrets_dir).active():
        path = password_file(secrets_dir, device.name)
        try:
            password = path.read_text().strip()
        except OSError as exc:
            password = ""
            problems.append(f"{path}: {exc.strerror}")
        except UnicodeDecodeError:
            password = ""
            problems.append(f"{path} is not UTF-8 text")
        else:
            if not password:
                problems.append(f"{path} is empty")
        if password:
            out.append(Login(user=device.user, kind=device.kind, password=password))
    if problems:
        raise TLSError(
            f"no password for active devices ({'; '.join(problems)}): re-issue each with "
            "`hpc2edge tls add-device NAME --kind KIND --force`, or `hpc2edge tls revoke-device "
            "NAME`"
        )
    return out


@dataclass(frozen=True)
class Issue:
    """What :func:`issue` wrote for one device."""

    device: Device
    tls: ca.Issued
    signing: ca.Issued
    password_file: Path
    login: Login


def issue(
    ca_dir: Path,
    secrets_dir: Path,
    name: str,
    kind: str = DEFAULT_KIND,
    *,
    force: bool = False,
    now: Clock = utc_now,
) -> Issue:
    """Issue device ``name`` of ``kind``: certificates, broker user and password, registry entry.

    Both names are checked before anything is read or written. The password is new on every
    issue (a re-issued device is one whose old secrets may be known).

    Raises:
        ValueError: ``name`` or ``kind`` is not a legal name.
        TLSError: the name is registered already, or its certificate files exist, and ``force``
            is false; no CA in ``ca_dir``; an unreadable registry.
    """
    ca.check_device_name(name)
    check_kind(kind)
    registry = load(secrets_dir)
    known = registry.get(name)
    if known is not None and not force:
        raise TLSError(
            f"device {name!r} is registered already (kind {known.kind}, issued "
            f"{known.issued_at.isoformat()}, {known.state.value}); --force re-issues it with a "
            "new certificate and password"
        )
    tls = ca.add_device(ca_dir, name, force=force)
    password = secrets.token_urlsafe(32)
    _private_dir(secrets_dir)
    path = password_file(secrets_dir, name)
    write_private(path, (password + "\n").encode())
    device = Device(name=name, kind=kind, issued_at=now())
    save(secrets_dir, registry.with_device(device))
    return Issue(
        device=device,
        tls=tls,
        signing=ca.signing_files(ca_dir, device.user),
        password_file=path,
        login=Login(user=device.user, kind=kind, password=password),
    )


@dataclass(frozen=True)
class Revocation:
    """What :func:`revoke` changed: the entry as it is now, when it was revoked, whether it was
    revoked before, and the result-signing certificate it took out of ``signers/results/``
    (None: not there)."""

    device: Device
    revoked_at: dt.datetime
    already: bool
    untrusted: Path | None


def revoke(ca_dir: Path, secrets_dir: Path, name: str, *, now: Clock = utc_now) -> Revocation:
    """Mark device ``name`` revoked, forget its password and stop trusting its signatures.

    Idempotent: revoking a revoked device keeps its first revocation time and changes nothing
    else. The certificate files stay (for the record); what the broker knows is the user.

    Raises:
        ValueError: no device of that name in the registry.
        TLSError: an unreadable registry.
    """
    ca.check_device_name(name)
    registry = load(secrets_dir)
    device = registry.get(name)
    if device is None:
        raise ValueError(f"no device {name!r} in {registry_path(secrets_dir)}")
    already = device.revoked_at is not None
    revoked_at = device.revoked_at or now()
    if not already:
        device = replace(device, revoked_at=revoked_at)
        save(secrets_dir, registry.with_device(device))
    password_file(secrets_dir, name).unlink(missing_ok=True)
    untrusted = ca.untrust_signer(ca_dir, device.user)
    return Revocation(device=device, revoked_at=revoked_at, already=already, untrusted=untrusted)


def device_config(device: Device, *, broker_host: str, broker_port: int) -> str:
    """The device's config file (TOML, no secret inside), for a folder that also holds the
    ``tls/`` and ``secrets/`` files copied from the admin machine: ``state_dir = "."`` makes
    every default path relative to it (the password file is ``secrets/edge-NAME.password``)."""
    user = device.user
    return "\n".join(
        [
            f"# edge device {device.name} (kind {device.kind}), written by `hpc2edge tls "
            "add-device`",
            f"# beside it: tls/ca.pem, tls/{user}*.pem, tls/signers/, secrets/{user}.password",
            'role = "edge"',
            'state_dir = "."',
            "",
            "[broker]                           # host: the address the device reaches it by",
            f'host = "{broker_host}"',
            f"port = {broker_port}",
            f'username = "{user}"',
            "",
            "[tls]",
            f'cert = "tls/{user}.pem"',
            f'key = "tls/{user}-key.pem"',
            "",
            "[edge]",
            f'kind = "{device.kind}"',
            "",
            "[security]                         # used when sign = true",
            f'key = "tls/{user}-sign-key.pem"',
            f'cert = "tls/{user}-sign.pem"',
            "",
        ]
    )
