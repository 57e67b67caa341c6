"""The client side of mutual TLS, the same for every role and library (redis-py, kombu, Celery)."""

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
