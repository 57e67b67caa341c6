"""The process-wide side of message signing (hpc2edge.transport.signing); the wire is tested in
tests/integration/test_signing.py."""

from __future__ import annotations

from dataclasses import replace

import pytest
from celery import Celery
from kombu.exceptions import ContentDisallowed
from kombu.serialization import loads as kombu_loads
from kombu.serialization import registry

from hpc2edge.config import load_settings
from hpc2edge.errors import ConfigError
from hpc2edge.pki import ca
from hpc2edge.transport import signing

pytestmark = pytest.mark.unit

PICKLE = "application/x-python-serialize"


def test_one_signing_identity_per_process(tmp_path):
    ca.init(tmp_path / "tls")
    env = {"HPC2EDGE_STATE_DIR": str(tmp_path), "HPC2EDGE_ROLE": "edge"}
    edge = load_settings(environ={**env, "HPC2EDGE_SECURITY_SIGN": "true"}).security
    hpc_files = ca.signing_files(tmp_path / "tls", "hpc")
    other = replace(edge, key=hpc_files.key, cert=hpc_files.cert)
    app = Celery("t", set_as_current=False)
    app.conf.update(signing.celery_settings(edge))
    try:
        signing.install(app, edge)
        signing.install(app, edge)  # the same identity again: fine
        assert registry.name_to_type[signing.RESULT_SERIALIZER] == signing.RESULT_CONTENT_TYPE
        with pytest.raises(ContentDisallowed):  # pickle off: refused before any decoding
            kombu_loads(b"never decoded", PICKLE, "binary")
        with pytest.raises(ConfigError, match="one signing identity"):
            signing.check(other)
        with pytest.raises(ConfigError, match="already signs"):
            signing.install(app, other)
    finally:
        signing.reset()
    assert signing.SERIALIZER not in registry.name_to_type
    signing.check(other)  # free again after reset
