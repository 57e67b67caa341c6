"""The project's private CA: role, device, host and signing certificates (the admin's machine).

``hpc2edge tls init --dir DIR`` writes::

    DIR/ca.pem, ca-key.pem                 the private CA (keep ca-key.pem offline in production)
    DIR/server.pem, server-key.pem         the broker: SANs localhost, 127.0.0.1, ::1 + --host names
    DIR/<role>.pem, <role>-key.pem         one client certificate per role
    DIR/edge-<name>.pem, edge-<name>-key.pem   more edge devices (``tls add-device NAME``; their
                                           broker users: :mod:`hpc2edge.pki.devices`)
    DIR/<role>-sign.pem, <role>-sign-key.pem   message signing (orchestrator, hpc, edge; and
                                           edge-<name>-sign.pem per added device)
    DIR/signers/tasks/orchestrator-sign.pem    the only signer whose tasks workers run
    DIR/signers/results/*.pem              the workers' (hpc, edge, edge-<name>): signers of
                                           results and remote-control replies

TLS keys are ECDSA P-256 and written 0600. The server certificate carries extendedKeyUsage
serverAuth and client certificates clientAuth, so a client certificate cannot impersonate the
broker. Nothing is overwritten without ``force``.

Signing keys are RSA 3072 because Celery's ``auth`` serializer (5.7) accepts nothing else: its
``PrivateKey`` and ``Certificate`` raise "Non-RSA ... not supported" and it signs RSA-PSS. Their
certificates carry keyUsage digitalSignature and extendedKeyUsage id-kp-documentSigning
(RFC 9336) only, so Redis refuses them as TLS client certificates, and a TLS certificate (ECDSA)
cannot sign a task. Celery does not check chains: a ``signers/`` folder *is* the trust decision,
so each holds exactly the certificates whose signatures it stands for
(:mod:`hpc2edge.transport.signing`).

The client side of these certificates (what every connection checks) is
:func:`hpc2edge.transport.tls.ssl_options`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpc2edge.errors import TLSError
from hpc2edge.roles import EDGE, RESULT_SIGNERS, ROLES, SIGNING_ROLES, TASK_SIGNERS
from hpc2edge.util.files import write_private

SIGNING_RSA_BITS = 3072  # ~128-bit security, like P-256; RSA because Celery's auth needs it
#: id-kp-documentSigning (RFC 9336): signing content that is neither code, mail nor TLS.
DOCUMENT_SIGNING_OID = "1.3.6.1.5.5.7.3.36"
SIGNERS_DIR = "signers"
CA_DAYS = 3650
LEAF_DAYS = 825
_DEVICE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


@dataclass(frozen=True)
class Issued:
    """Paths of one issued certificate and its key."""

    cert: Path
    key: Path


def _crypto() -> Any:
    # Imported lazily: only certificate issuance needs `cryptography`; clients need just `ssl`.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    return x509, hashes, serialization, ec, ExtendedKeyUsageOID, NameOID


def _name(common_name: str, unit: str) -> Any:
    x509, _, _, _, _, NameOID = _crypto()
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hpc2edge"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _new_key() -> Any:
    _, _, _, ec, _, _ = _crypto()
    return ec.generate_private_key(ec.SECP256R1())


def _new_signing_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=SIGNING_RSA_BITS)


def _pem_key(key: Any) -> bytes:
    _, _, serialization, _, _, _ = _crypto()
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_cert(cert: Any) -> bytes:
    _, _, serialization, _, _, _ = _crypto()
    return cert.public_bytes(serialization.Encoding.PEM)


def _load_ca(directory: Path) -> tuple[Any, Any]:
    x509, _, serialization, _, _, _ = _crypto()
    cert_path, key_path = directory / "ca.pem", directory / "ca-key.pem"
    if not cert_path.is_file() or not key_path.is_file():
        raise TLSError(f"no CA in {directory}: run `hpc2edge tls init --dir {directory}` first")
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise TLSError(f"cannot read the CA in {directory}: {exc}") from None
    return cert, key


def _builder(
    subject: Any,
    issuer: Any,
    public_key: Any,
    *,
    days: int,
    is_ca: bool,
    key_agreement: bool | None = None,
) -> Any:
    """The parts every certificate shares: names, key, serial, validity, constraints, key usage.

    A CA signs certificates and CRLs; a TLS leaf only does ECDHE/ECDSA (digital signature, key
    agreement); a signing leaf (``key_agreement=False``) only signs. Validity starts five minutes
    back to tolerate clock skew between sites.
    """
    if key_agreement is None:
        key_agreement = not is_ca
    x509 = _crypto()[0]
    now = dt.datetime.now(dt.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(
            x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None), critical=True
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=key_agreement,
                key_cert_sign=is_ca,
                crl_sign=is_ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )


def _sign(
    ca_cert: Any,
    ca_key: Any,
    common_name: str,
    unit: str,
    *,
    server_names: Sequence[str] = (),
    is_server: bool = False,
    signing: bool = False,
) -> tuple[Any, Any]:
    x509, hashes, _, _, ExtendedKeyUsageOID, _ = _crypto()
    key = _new_signing_key() if signing else _new_key()
    if signing:
        usage = x509.ObjectIdentifier(DOCUMENT_SIGNING_OID)
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if is_server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        _builder(
            _name(common_name, unit),
            ca_cert.subject,
            key.public_key(),
            days=LEAF_DAYS,
            is_ca=False,
            key_agreement=not signing,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if server_names:
        alt: list[Any] = []
        for name in server_names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _refuse_existing(paths: Iterable[Path], force: bool) -> None:
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        names = ", ".join(str(p) for p in existing)
        raise TLSError(f"refusing to overwrite {names} (use --force to replace them)")


def _issue(
    directory: Path, stem: str, ca: tuple[Any, Any], cn: str, unit: str, **kw: Any
) -> Issued:
    cert, key = _sign(ca[0], ca[1], cn, unit, **kw)
    issued = Issued(cert=directory / f"{stem}.pem", key=directory / f"{stem}-key.pem")
    write_private(issued.key, _pem_key(key))
    issued.cert.write_bytes(_pem_cert(cert))
    return issued


def server_names(hosts: Sequence[str] = ()) -> list[str]:
    """The SANs of the broker certificate: loopback names plus ``hosts``, without duplicates."""
    names = ["localhost", "127.0.0.1", "::1"]
    for host in hosts:
        if host and host not in names:
            names.append(host)
    return names


def init(
    directory: str | os.PathLike[str], hosts: Sequence[str] = (), *, force: bool = False
) -> dict[str, Issued]:
    """Create a CA, the broker's server certificate, one client certificate per role and the
    message-signing certificates with their ``signers/`` folders (:func:`init_signing`).

    Args:
        directory: where to write (created if missing, mode 0700).
        hosts: extra DNS names or IP addresses the broker is reached by.
        force: replace existing files instead of refusing.

    Returns:
        ``{"ca": ..., "server": ..., <role>: ..., "<signing role>-sign": ...}``.

    Raises:
        TLSError: when any target file exists and ``force`` is false.
    """
    x509, hashes, _, _, _, _ = _crypto()
    d = Path(directory)
    stems = ["ca", "server", *ROLES]
    targets = [d / f"{s}{suffix}" for s in stems for suffix in (".pem", "-key.pem")]
    _refuse_existing([*targets, *_signing_targets(d)], force)
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)

    ca_key = _new_key()
    subject = _name("hpc2edge CA", "ca")
    ca_cert = (
        _builder(subject, subject, ca_key.public_key(), days=CA_DAYS, is_ca=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    write_private(d / "ca-key.pem", _pem_key(ca_key))
    (d / "ca.pem").write_bytes(_pem_cert(ca_cert))
    issued = {"ca": Issued(cert=d / "ca.pem", key=d / "ca-key.pem")}
    ca = (ca_cert, ca_key)
    issued["server"] = _issue(
        d,
        "server",
        ca,
        "hpc2edge broker",
        "broker",
        server_names=server_names(hosts),
        is_server=True,
    )
    for role in ROLES:
        issued[role] = _issue(d, role, ca, role, role)
    issued.update(_init_signing(d, ca))
    return issued


def signing_files(directory: str | os.PathLike[str], stem: str) -> Issued:
    """Where the signing certificate and key of ``stem`` (a role, or ``edge-<name>``) live."""
    d = Path(directory)
    return Issued(cert=d / f"{stem}-sign.pem", key=d / f"{stem}-sign-key.pem")


def _signing_targets(d: Path) -> list[Path]:
    out: list[Path] = []
    for role in SIGNING_ROLES:
        files = signing_files(d, role)
        out += [files.cert, files.key]
    out += sorted((d / SIGNERS_DIR).glob("*/*.pem"))
    return out


def signers_dir(directory: str | os.PathLike[str], kind: str) -> Path:
    """``signers/tasks`` (the orchestrator's certificate) or ``signers/results`` (the workers')."""
    if kind not in ("tasks", "results"):
        raise ValueError(f"signers kind {kind!r}: expected 'tasks' or 'results'")
    return Path(directory) / SIGNERS_DIR / kind


def _issue_signing(d: Path, stem: str, ca: tuple[Any, Any], cn: str, unit: str) -> Issued:
    cert, key = _sign(ca[0], ca[1], f"{cn} signing", unit, signing=True)
    issued = signing_files(d, stem)
    write_private(issued.key, _pem_key(key))
    issued.cert.write_bytes(_pem_cert(cert))
    return issued


def _init_signing(d: Path, ca: tuple[Any, Any]) -> dict[str, Issued]:
    # A signers/ folder is a trust list (Celery checks no chain): start it empty, so a
    # certificate of an earlier CA or device can never stay trusted after a re-issue.
    for stale in (d / SIGNERS_DIR).glob("*/*.pem"):
        stale.unlink()
    issued = {f"{r}-sign": _issue_signing(d, r, ca, r, r) for r in SIGNING_ROLES}
    for kind, signers in (("tasks", TASK_SIGNERS), ("results", RESULT_SIGNERS)):
        folder = signers_dir(d, kind)
        folder.mkdir(parents=True, exist_ok=True)
        for signer in signers:
            (folder / f"{signer}-sign.pem").write_bytes(issued[f"{signer}-sign"].cert.read_bytes())
    return issued


def init_signing(directory: str | os.PathLike[str], *, force: bool = False) -> dict[str, Issued]:
    """Issue the message-signing certificates from the CA in ``directory`` (done by :func:`init`;
    on its own for a CA made before signing existed).

    Writes ``<role>-sign.pem`` / ``<role>-sign-key.pem`` for orchestrator, hpc and edge,
    ``signers/tasks/`` (the orchestrator's certificate) and ``signers/results/`` (the workers').
    With ``force``, ``signers/`` is emptied first: devices added before need ``add-device`` again.

    Raises:
        TLSError: no CA in ``directory``, or signing files exist and ``force`` is false.
    """
    d = Path(directory)
    ca = _load_ca(d)
    _refuse_existing(_signing_targets(d), force)
    return _init_signing(d, ca)


def check_device_name(name: object) -> str:
    """``name`` if it is a legal device name (it becomes a file stem, a certificate's CN and a
    broker user); ValueError saying what a legal one is."""
    if not isinstance(name, str) or not _DEVICE_NAME.fullmatch(name):
        raise ValueError(
            f"device name {str(name)[:70]!r}: use lower-case letters, digits and '-', "
            "at most 63 characters"
        )
    if name == "sign" or name.endswith("-sign"):
        # edge-<name>-sign.pem are a device's signing files: edge-sign is the edge role's,
        # edge-x-sign would be device x's.
        raise ValueError(f"device name {name!r}: a name may not be or end in 'sign'")
    return name


def add_device(directory: str | os.PathLike[str], name: str, *, force: bool = False) -> Issued:
    """Issue another edge certificate, ``edge-<name>.pem``, signed by the CA in ``directory``.

    The certificate's common name is ``edge:<name>``, so the device is identifiable wherever the
    certificate is inspected; its OU stays ``edge``, the role whose results it may sign. This is
    the certificate half of a device's identity: :func:`hpc2edge.pki.devices.issue` (what ``tls
    add-device`` runs) adds the device's own broker user, password and registry entry. Redis 7.0
    cannot map a certificate to a user, so the broker tells devices apart by that user, not by
    this certificate.

    The device also gets its own result-signing key, ``edge-<name>-sign.pem`` (paths:
    :func:`signing_files`), whose certificate is added to ``signers/results/``: copy that file to
    the orchestrator and every worker (workers re-read results) and restart them, or they refuse
    the device's signed results.

    Raises:
        ValueError: ``name`` is not a legal device name (checked before anything is written).
        TLSError: its files exist and ``force`` is false, or there is no CA in ``directory``.
    """
    check_device_name(name)
    d = Path(directory)
    stem = f"edge-{name}"
    signing = signing_files(d, stem)
    trusted = signers_dir(d, "results") / signing.cert.name
    _refuse_existing([d / f"{stem}.pem", d / f"{stem}-key.pem", signing.cert, signing.key], force)
    ca = _load_ca(d)
    issued = _issue(d, stem, ca, f"{EDGE}:{name}", EDGE)
    _issue_signing(d, stem, ca, f"{EDGE}:{name}", EDGE)
    trusted.parent.mkdir(parents=True, exist_ok=True)
    trusted.write_bytes(signing.cert.read_bytes())
    return issued


def untrust_signer(directory: str | os.PathLike[str], stem: str) -> Path | None:
    """Take ``stem``'s signing certificate out of ``signers/results/`` (a revoked device's), so
    the orchestrator and workers stop accepting its signed results once they re-read the folder
    (at their next start: Celery reads it once). Returns the file removed, None when it was not
    there. ``signers/tasks/`` never holds a device's certificate."""
    trusted = signers_dir(directory, "results") / signing_files(directory, stem).cert.name
    if not trusted.is_file():
        return None
    trusted.unlink()
    return trusted
