"""Checks of the files the settings point at: certificates, keys, password, signing stores.

Run by entry points (``load_settings(require_files=True)``, the worker at start) so a missing or
misplaced file is one clear list of problems, not a TLS handshake failure later. The signing
checks load the files as Celery's ``auth`` serializer will (cryptography and Celery's security
modules, imported lazily: only roles that sign pay for them).
"""

from __future__ import annotations

from hpc2edge.config.settings import ENV_PASSWORD, SecuritySettings, Settings
from hpc2edge.roles import SIGNING_ROLES


def file_problems(settings: Settings) -> list[str]:
    """Problems with the files these settings point at (certificates, key, password, and the
    signing files when this role signs)."""
    out: list[str] = []
    for name in ("ca_cert", "cert", "key"):
        path = getattr(settings.tls, name)
        if not path.is_file():
            out.append(f"tls.{name}: {path} does not exist (run `hpc2edge tls init`)")
    if settings.tls.key.is_file() and settings.tls.key.stat().st_mode & 0o077:
        out.append(f"tls.key: {settings.tls.key} is readable by others (chmod 600 it)")
    if settings.broker.password is None:
        where = settings.broker.password_file or "broker.password_file"
        out.append(f"broker.password: none given ({where} missing and {ENV_PASSWORD} unset)")
    if settings.security.sign and settings.role in SIGNING_ROLES:
        out.extend(signing_file_problems(settings.security))
    return out


def signing_file_problems(security: SecuritySettings) -> list[str]:
    """What is wrong with the signing key, certificate and store, loaded as Celery will load them.

    Catches the likely mistakes: missing files, an ECDSA (TLS) key or certificate, a key that
    does not belong to the certificate, a key readable by others, an empty, unreadable or expired
    store (Celery refuses to start on any expired certificate in it).
    """
    from celery.exceptions import SecurityError
    from celery.security.certificate import Certificate, FSCertStore
    from celery.security.key import PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    out: list[str] = []
    hint = "run `hpc2edge tls init`, or `tls init-signing` for an older CA"
    public_key = cert = None
    try:
        pem = security.key.read_bytes()
        PrivateKey(pem)  # Celery's own checks: readable, unencrypted, RSA
        public_key = load_pem_private_key(pem, password=None).public_key()
    except FileNotFoundError:
        out.append(f"security.key: {security.key} does not exist ({hint})")
    except (OSError, ValueError, TypeError, SecurityError) as exc:
        out.append(f"security.key: {security.key}: {_reason(exc)}")
    if security.key.is_file() and security.key.stat().st_mode & 0o077:
        out.append(f"security.key: {security.key} is readable by others (chmod 600 it)")
    try:
        cert = Certificate(security.cert.read_text())
        if cert.has_expired():
            out.append(f"security.cert: {security.cert} has expired")
    except FileNotFoundError:
        out.append(f"security.cert: {security.cert} does not exist ({hint})")
    except (OSError, ValueError, SecurityError) as exc:
        out.append(f"security.cert: {security.cert}: {_reason(exc)}")
    if public_key is not None and cert is not None and public_key != cert.get_pubkey():
        out.append(f"security.key: {security.key} is not the key of {security.cert}")
    for name in ("cert_store", "result_cert_store"):
        store = getattr(security, name)
        if not store.is_dir():
            out.append(f"security.{name}: {store} is not a folder ({hint})")
        elif not any(p.is_file() for p in store.iterdir()):
            out.append(f"security.{name}: {store} holds no certificate: nothing would be accepted")
        else:
            try:
                FSCertStore(str(store))
            except (OSError, ValueError, SecurityError) as exc:
                out.append(f"security.{name}: {store}: {_reason(exc)}")
    return out


def _reason(exc: BaseException) -> str:
    if "Non-RSA" in str(exc):
        # The likely mistake: pointing at the TLS files, which are ECDSA.
        return (
            "not RSA; Celery's auth serializer signs with RSA only: use the <role>-sign files "
            "of `hpc2edge tls init`, not the ECDSA TLS ones"
        )
    return str(exc)
