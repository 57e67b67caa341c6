"""Kubernetes Secrets for the manifests in ``k8s/``, printed from the files ``tls init`` wrote.

``hpc2edge k8s secrets --dir tls [--secrets secrets] [--namespace hpc2edge]`` prints one Secret
document per entry of :data:`SECRETS` (base64 ``data``) on stdout, for
``... | kubectl apply -f -``. It writes nothing, and only ``--create-passwords`` creates the
missing password files (random, 0600) as ``hpc2edge broker acl`` does. By default a missing
password is an error: a mistyped ``--secrets`` must not quietly give the broker new passwords that
no client has.

Inputs: ``--dir`` is the ``hpc2edge tls init`` folder; ``--secrets`` holds ``<user>.password``
for each ACL user (``hpc2edge broker acl`` creates them) and ``flower.password`` (Flower's HTTP
basic auth), and defaults to the folder ``secrets`` beside ``--dir``, the layout of both the
local state folder and the deployment guide.

What goes where (names and keys are fixed here, in ``k8s/secrets/templates.yaml`` and in the
manifests that mount them; ``tests/unit/test_k8s.py`` keeps the three in step)::

    hpc2edge-broker-tls       ca.pem, server.pem, server-key.pem     the broker's TLS files
    hpc2edge-broker-acl       users.acl                              hashes only (render_acl):
                                                                     the roles, and one user per
                                                                     active device of
                                                                     --secrets/devices.json
    hpc2edge-monitor-client   ca.pem, monitor.pem, monitor-key.pem,  Flower's login, and the
                              monitor.password                       broker's TLS probes
    hpc2edge-flower-auth      FLOWER_BASIC_AUTH = <user>:<password>  Flower's basic auth

Never printed: ``ca-key.pem`` (it stays on the admin machine), and the certificates, keys and
passwords of the other roles and of the devices, which belong to the sites that run them.

Device users come from the registry (:mod:`hpc2edge.pki.devices`): after ``tls add-device`` or
``tls revoke-device``, apply the Secrets again, so that the broker Pod's next start loads the
same users as the running broker (``revoke-device`` removes the user live, but a Pod restarted
from an old Secret would bring it back).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from pathlib import Path

from hpc2edge.errors import TLSError
from hpc2edge.ops import localbroker
from hpc2edge.roles import ROLES
from hpc2edge.transport.flowerguard import DEFAULT_USER, PASSWORD_FILE, basic_auth
from hpc2edge.util.files import ensure_password_file

DEFAULT_NAMESPACE = "hpc2edge"
# The in-cluster Service Flower connects to; the broker certificate must name it.
BROKER_SERVICE = "hpc2edge-redis"
LABELS = {"app.kubernetes.io/part-of": "hpc2edge"}

# Secret name -> key -> where its value comes from: "tls:<file>" in --dir, "password:<file>" in
# --secrets, "acl" (users.acl rendered from the role passwords), "flower-auth".
SECRETS: dict[str, dict[str, str]] = {
    "hpc2edge-broker-tls": {
        "ca.pem": "tls:ca.pem",
        "server.pem": "tls:server.pem",
        "server-key.pem": "tls:server-key.pem",
    },
    "hpc2edge-broker-acl": {"users.acl": "acl"},
    "hpc2edge-monitor-client": {
        "ca.pem": "tls:ca.pem",
        "monitor.pem": "tls:monitor.pem",
        "monitor-key.pem": "tls:monitor-key.pem",
        "monitor.password": "password:monitor.password",
    },
    "hpc2edge-flower-auth": {"FLOWER_BASIC_AUTH": "flower-auth"},
}

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_FLOWER_USER = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class InputError(ValueError):
    """Input files are missing or unusable; ``problems`` lists each one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def tls_files() -> list[str]:
    """The ``tls init`` files the Secrets carry, in a stable order."""
    names = {s[4:] for keys in SECRETS.values() for s in keys.values() if s.startswith("tls:")}
    return sorted(names)


def ensure_passwords(secrets_dir: Path) -> list[Path]:
    """Create the missing password files (ACL users and Flower) in ``secrets_dir``.

    Returns:
        The files created (random, 0600); existing ones are kept as they are.
    """
    before = set(secrets_dir.glob("*.password")) if secrets_dir.is_dir() else set()
    localbroker.ensure_secrets(secrets_dir)
    ensure_password_file(secrets_dir / PASSWORD_FILE)
    return sorted(p for p in secrets_dir.glob("*.password") if p not in before)


def secret_data(
    tls_dir: Path, secrets_dir: Path, *, flower_user: str = DEFAULT_USER
) -> dict[str, dict[str, bytes]]:
    """The content of every Secret in :data:`SECRETS`, read from ``tls_dir`` and ``secrets_dir``.

    TLS and password files are carried byte for byte; ``users.acl`` is rendered from the ACL
    users' passwords and the active devices of ``secrets_dir``'s registry
    (:func:`hpc2edge.ops.localbroker.render_acl`).

    Raises:
        InputError: listing every missing folder or file, an empty password, an unreadable
            device registry and an active device without its password file.
        ValueError: ``flower_user`` is not a plain user name.
    """
    if not _FLOWER_USER.match(flower_user):
        raise ValueError(f"flower user {flower_user!r}: use letters, digits, '.', '_' or '-'")
    problems: list[str] = []
    if not tls_dir.is_dir():
        problems.append(f"{tls_dir} is not a folder: run `hpc2edge tls init --dir {tls_dir}`")
    if not secrets_dir.is_dir():
        problems.append(
            f"{secrets_dir} is not a folder of password files: run `hpc2edge broker acl "
            f"--secrets {secrets_dir} --out users.acl`, or pass --create-passwords"
        )
    if problems:
        raise InputError(problems)

    files: dict[str, bytes] = {}
    for name in tls_files():
        path = tls_dir / name
        if not path.is_file():
            problems.append(f"{path} is missing: run `hpc2edge tls init --dir {tls_dir}`")
        else:
            files[f"tls:{name}"] = path.read_bytes()
    passwords: dict[str, str] = {}
    for name in [f"{user}.password" for user in ROLES] + [PASSWORD_FILE]:
        path = secrets_dir / name
        if not path.is_file():
            problems.append(f"{path} is missing: pass --create-passwords to create it")
            continue
        raw = path.read_bytes()
        if not raw.strip():
            problems.append(f"{path} is empty")
            continue
        files[f"password:{name}"] = raw
        passwords[name.removesuffix(".password")] = raw.decode().strip()
    from hpc2edge.pki import devices  # not at the top: `hpc2edge k8s --help` loads this module

    try:
        device_logins = devices.logins(secrets_dir)
    except TLSError as exc:
        problems.append(str(exc))
    if problems:
        raise InputError(problems)

    role_passwords = {u: passwords[u] for u in ROLES}
    files["acl"] = localbroker.render_acl(role_passwords, device_logins=device_logins).encode()
    files["flower-auth"] = basic_auth(flower_user, passwords["flower"]).encode()
    return {
        secret: {key: files[source] for key, source in keys.items()}
        for secret, keys in SECRETS.items()
    }


def server_names(tls_dir: Path) -> list[str]:
    """The DNS names and addresses in ``server.pem``'s subjectAltName."""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate((tls_dir / "server.pem").read_bytes())
    except ValueError as exc:
        raise InputError([f"{tls_dir / 'server.pem'} is not a PEM certificate: {exc}"]) from None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(name.value) for name in san]


def check_namespace(namespace: str) -> None:
    """Raise ValueError unless ``namespace`` is a valid Kubernetes namespace name."""
    if not _DNS_LABEL.match(namespace):
        raise ValueError(f"namespace {namespace!r} is not a DNS label (RFC 1123)")


def render(data: Mapping[str, Mapping[str, bytes]], namespace: str) -> str:
    """Secret documents as YAML, every value base64 in ``data`` and every string quoted.

    Written by hand (JSON-quoted scalars are valid YAML) so the core package needs no YAML
    library.
    """
    check_namespace(namespace)
    q = json.dumps
    out = [
        "# Kubernetes Secrets for hpc2edge (k8s/README.md), from `hpc2edge k8s secrets`.",
        "# They hold private keys and passwords: pipe them to `kubectl apply -f -`; never commit.",
    ]
    for name, items in data.items():
        out += [
            "---",
            "apiVersion: v1",
            "kind: Secret",
            "metadata:",
            f"  name: {q(name)}",
            f"  namespace: {q(namespace)}",
            "  labels:",
            *(f"    {q(k)}: {q(v)}" for k, v in LABELS.items()),
            "type: Opaque",
            "data:",
            *(f"  {q(key)}: {q(base64.b64encode(value).decode())}" for key, value in items.items()),
        ]
    return "\n".join(out) + "\n"
