"""The client side of mutual TLS, the same for every role and library (redis-py, kombu, Celery).

Every connection this project opens to the broker verifies the server's certificate chain
(CERT_REQUIRED, our CA added to the trust store), checks its host name unless
``tls.check_hostname = false`` (for brokers reached by an address not in the SANs), presents the
role's certificate and refuses TLS below 1.2 (:func:`ssl_options`). Chain verification cannot be
turned off. Known limit: redis-py builds its context with ``ssl.create_default_context()``, so the
system's public CAs are trusted beside ours (docs/security.md).
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpc2edge.config import TLSSettings


def ssl_options(tls: TLSSettings) -> dict[str, Any]:
    """Options for redis-py / kombu / Celery (``broker_use_ssl``, ``redis_backend_use_ssl``).

    Chain verification is always on (CERT_REQUIRED, our CA), the host name is checked unless the
    settings say otherwise, TLS >= 1.2, and this role's client certificate is presented.
    """
    return {
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        "ssl_ca_certs": str(tls.ca_cert),
        "ssl_certfile": str(tls.cert),
        "ssl_keyfile": str(tls.key),
        "ssl_check_hostname": tls.check_hostname,
        "ssl_min_version": ssl.TLSVersion.TLSv1_2,
    }
