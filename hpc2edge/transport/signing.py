"""Message signing: Celery's ``auth`` serializer over the signing certificates of ``tls init``.

Turned on by ``[security] sign = true`` (:class:`~hpc2edge.config.SecuritySettings`) on every
role of a deployment. What Celery 5.7 does (``celery/security/``), and what we build on it:

- **Who signs what.** The ``auth`` serializer JSON-encodes a message body, signs those bytes
  (RSA-PSS, MGF1, ``sha256``) with ``security_key`` and sends ``signer id | signature | content
  type | encoding | body``. The signer id is the certificate's issuer and serial number. With
  ``task_serializer = "auth"`` the orchestrator signs tasks (remote control, which Celery signs
  the same way, is off on every worker: docs/security.md).
- **Who verifies.** A receiver looks the signer id up in ``security_cert_store`` (every file in a
  folder, each an RSA certificate) and verifies the signature with that certificate's public key.
  Celery checks no chain, no key usage and no name: *membership of the store is the trust
  decision*. A worker's store (``tls/signers/tasks``) therefore holds the orchestrator's signing
  certificate and nothing else, so another valid certificate of our CA (an edge device's) cannot
  sign a task; the orchestrator's (``tls/signers/results``) holds the workers'.
- **Results need a second serializer.** Celery registers *one* ``auth`` serializer with one store
  per process, and its Redis result backend reads a task's stored result back before writing a
  new state (so a lost duplicate cannot overwrite SUCCESS). With ``result_serializer = "auth"``
  a worker would have to verify its own and the other workers' result signatures with its task
  store, i.e. trust worker keys to sign tasks. So results use :data:`RESULT_SERIALIZER`: Celery's
  own ``SecureSerializer`` with this role's key and ``result_cert_store`` (the workers'
  certificates), under a content type of its own that kombu's accept lists enforce (``auth``'s
  ``application/data`` is one kombu always lets through to its decoder).
- **RSA only.** Celery's ``PrivateKey`` and ``Certificate`` raise "Non-RSA ... not supported":
  our ECDSA TLS keys cannot sign, so ``tls init`` issues separate RSA 3072 signing keys.
- **Unsigned or tampered input.** ``accept_content = ["auth"]``: a JSON or pickle message is
  refused before decoding; a signature that fails, or a signer not in the store, raises
  ``SecurityError`` while the worker decodes the body, before the task runs. The worker logs it,
  acknowledges the message (it is not redelivered) and serves on.
- **Not signed:** message headers (task name, id, ``eta``/``expires``, retries) and events; and
  nothing stops a replay of a signed body. See docs/security.md, "Message signing".

Celery's ``setup_security`` is process-wide: it registers one ``auth`` serializer in kombu's
global registry. :func:`install` therefore refuses a second, different signing identity in the
same process rather than letting the last app silently re-key the others. It keeps ``json``
decodable for the process (events are JSON, and unsigned apps in the same process would break);
each app's ``accept_content``, not the global registry, is what refuses unsigned messages.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from hpc2edge.config import signing_file_problems
from hpc2edge.errors import ConfigError
from hpc2edge.transport import taskids

if TYPE_CHECKING:
    from celery import Celery

    from hpc2edge.config import SecuritySettings

SERIALIZER = "auth"
RESULT_SERIALIZER = "auth-result"
RESULT_CONTENT_TYPE = "application/vnd.hpc2edge.auth-result"
INNER_SERIALIZER = "json"
DIGEST = "sha256"
#: Decoders left on process-wide by ``setup_security``: JSON (events, unsigned apps) and the two
#: signed content types. Pickle, YAML and msgpack stay off.
ALLOWED_DECODERS = ["json", "application/data", RESULT_CONTENT_TYPE]

_installed: tuple[str, ...] | None = None


def celery_settings(security: SecuritySettings) -> dict[str, Any]:
    """The Celery settings that sign and verify every task and result with ``security``'s files."""
    return {
        "task_serializer": SERIALIZER,
        "accept_content": [SERIALIZER],
        "result_serializer": RESULT_SERIALIZER,
        "result_accept_content": [RESULT_CONTENT_TYPE],
        "security_key": str(security.key),
        "security_certificate": str(security.cert),
        "security_cert_store": str(security.cert_store),
        "security_digest": DIGEST,
    }


def _identity(security: SecuritySettings) -> tuple[str, ...]:
    paths = (security.key, security.cert, security.cert_store, security.result_cert_store)
    return tuple(os.path.realpath(p) for p in paths)


def check(security: SecuritySettings) -> None:
    """Raise :class:`ConfigError` when signing with ``security`` cannot work in this process.

    Called where an error stops the app
    (:meth:`hpc2edge.transport.app.Hpc2EdgeCelery.on_configure`): Celery's signals, from which
    :func:`install` runs, log a handler's exception and go on.
    """
    problems = signing_file_problems(security)
    if _installed is not None and _installed != _identity(security):
        problems.append(
            f"security: this process already signs with {_installed[1]}; Celery's auth "
            "serializer is process-wide, so one process has one signing identity"
        )
    if problems:
        raise ConfigError(problems, source="message signing")


def install(app: Celery, security: SecuritySettings) -> None:
    """Register the ``auth`` serializer for ``app`` (Celery's ``setup_security``) and the result
    serializer beside it, process-wide.

    Needs ``app``'s configuration loaded with :func:`celery_settings` (Celery checks that tasks
    are signed and only ``auth`` is accepted). Safe to repeat with the same identity.
    """
    from celery.security.certificate import Certificate, FSCertStore
    from celery.security.key import PrivateKey
    from kombu.serialization import registry

    global _installed
    identity = _identity(security)
    if _installed is not None and _installed != identity:
        raise ConfigError(
            [f"security: this process already signs with {_installed[1]}"], source="message signing"
        )
    app.setup_security(
        allowed_serializers=ALLOWED_DECODERS,
        key=str(security.key),
        cert=str(security.cert),
        store=str(security.cert_store),
        digest=DIGEST,
        serializer=INNER_SERIALIZER,
    )
    results = _role_checked_serializer()(
        PrivateKey(security.key.read_text()),
        Certificate(security.cert.read_text()),
        FSCertStore(str(security.result_cert_store)),
        DIGEST,
        serializer=INNER_SERIALIZER,
    )
    registry.register(
        RESULT_SERIALIZER,
        results.serialize,
        results.deserialize,
        content_type=RESULT_CONTENT_TYPE,
        content_encoding="utf-8",
    )
    _installed = identity


def _role_checked_serializer() -> type:
    """Celery's ``SecureSerializer`` that also checks *who* signed a result.

    Celery accepts any certificate of the folder for any message. A result record names its
    task (``task_id``), and a task id names its queue (:mod:`hpc2edge.transport.taskids`): the
    record must be signed by a certificate of that queue's worker role (its OU, which ``tls
    init`` sets to the role), so an edge device's key cannot sign a training result.
    """
    from celery.exceptions import SecurityError
    from celery.security.serialization import SecureSerializer

    class RoleChecked(SecureSerializer):  # type: ignore[misc]
        def deserialize(self, data: Any) -> Any:
            meta = super().deserialize(data)
            signer = self._unpack(data)["signer"]
            role = _unit(self._cert_store[signer])
            task_id = meta.get("task_id") if isinstance(meta, dict) else None
            expected = taskids.role_of(task_id)
            if expected is None or role != expected:
                raise SecurityError(
                    f"result for task {str(task_id)[:80]} signed by role {role!r}; "
                    f"only {expected!r} may answer it"
                )
            return meta

    return RoleChecked


def _unit(cert: Any) -> str | None:
    from cryptography.x509.oid import NameOID

    units = cert._cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    return str(units[0].value) if units else None


def reset() -> None:
    """Undo :func:`install` in this process (tests): unregister both signed serializers and make
    JSON kombu's default again. Apps configured for signing cannot send or decode afterwards."""
    from kombu.serialization import registry

    global _installed
    for name in (SERIALIZER, RESULT_SERIALIZER):
        if name in registry.name_to_type:
            registry.unregister(name)
    registry._set_default_serializer(INNER_SERIALIZER)
    _installed = None
