"""The broker accepts only mutual TLS from our CA with a valid ACL login; everything else fails."""

from __future__ import annotations

import socket
import ssl
import warnings
from dataclasses import replace

import pytest
import redis

from hpc2edge.errors import BrokerUnreachable
from hpc2edge.pki import ca
from hpc2edge.transport import broker

pytestmark = pytest.mark.integration


REFUSED = (ssl.SSLError, ConnectionResetError, BrokenPipeError)


def _raw_tls(stack, *, certfile=None, keyfile=None, cafile=None):
    """One PING over a hand-made TLS connection: the server's reply, or the refusal raised."""
    ctx = ssl.create_default_context(cafile=str(cafile or stack.settings.tls.ca_cert))
    if certfile:
        ctx.load_cert_chain(str(certfile), str(keyfile))
    address = ("127.0.0.1", stack.settings.broker.port)
    with (
        socket.create_connection(address, timeout=5) as sock,
        ctx.wrap_socket(sock, server_hostname="localhost") as tls_sock,
    ):
        # With TLS 1.3 the client's handshake completes before the server checks the client
        # certificate: the refusal arrives on first read (an alert, a reset or an EOF).
        tls_sock.sendall(b"PING\r\n")
        return tls_sock.recv(64)


def _assert_refused(stack, **kw):
    try:
        reply = _raw_tls(stack, **kw)
    except REFUSED:
        return
    assert reply == b"", f"the broker answered {reply!r}"


def test_the_raw_harness_gets_an_answer_with_a_valid_certificate(broker_stack):
    edge = broker_stack.as_role("edge")
    # A positive control for the refusals below: TLS is accepted, then the ACL wants a login.
    assert _raw_tls(broker_stack, certfile=edge.tls.cert, keyfile=edge.tls.key).startswith(
        b"-NOAUTH"
    )


def test_the_role_certificate_and_password_get_in(broker_stack):
    with broker.client(broker_stack.as_role("edge")) as c:
        assert c.ping() is True
        assert broker.tls_version(c) in ("TLSv1.2", "TLSv1.3")


def test_no_client_certificate_is_refused(broker_stack):
    _assert_refused(broker_stack)


def test_certificate_from_another_ca_is_refused(broker_stack, tmp_path):
    other = ca.init(tmp_path / "other-ca")
    _assert_refused(broker_stack, certfile=other["edge"].cert, keyfile=other["edge"].key)
    # Through our own client too: a role holding a foreign certificate is unreachable.
    edge = broker_stack.as_role("edge")
    foreign = replace(edge, tls=replace(edge.tls, cert=other["edge"].cert, key=other["edge"].key))
    with pytest.raises(BrokerUnreachable):
        broker.client(foreign)


def test_a_client_that_trusts_another_ca_refuses_the_broker(broker_stack, tmp_path):
    other = ca.init(tmp_path / "other-ca")
    edge = broker_stack.as_role("edge")
    with pytest.raises(ssl.SSLCertVerificationError):
        _raw_tls(
            broker_stack, certfile=edge.tls.cert, keyfile=edge.tls.key, cafile=other["ca"].cert
        )


def test_plain_tcp_is_refused(broker_stack):
    c = redis.Redis(
        host="127.0.0.1",
        port=broker_stack.settings.broker.port,
        username="edge",
        password=broker_stack.password("edge"),
        socket_timeout=5,
        socket_connect_timeout=5,
    )
    with pytest.raises(redis.exceptions.ConnectionError):
        c.ping()


def test_wrong_acl_password_is_refused(broker_stack):
    edge = broker_stack.as_role("edge")
    wrong = replace(edge, broker=replace(edge.broker, password="not-the-password"))
    with pytest.raises(BrokerUnreachable, match=r"WRONGPASS|invalid username-password"):
        broker.client(wrong)


def test_another_roles_password_is_refused(broker_stack):
    edge = broker_stack.as_role("edge")
    wrong = replace(edge, broker=replace(edge.broker, password=broker_stack.password("hpc")))
    with pytest.raises(BrokerUnreachable):
        broker.client(wrong)


def test_the_default_user_cannot_log_in(broker_stack):
    edge = broker_stack.as_role("edge")
    as_default = replace(edge, broker=replace(edge.broker, username="default", password="x"))
    with pytest.raises(BrokerUnreachable):
        broker.client(as_default)


def test_tls_below_1_2_is_refused(broker_stack):
    edge = broker_stack.as_role("edge")
    with broker.client(broker_stack.as_role("admin")) as admin:
        assert admin.config_get("tls-protocols") == {"tls-protocols": "TLSv1.2 TLSv1.3"}
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(edge.tls.ca_cert))
    ctx.load_cert_chain(str(edge.tls.cert), str(edge.tls.key))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 is the point here
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.1 at all
            ctx.minimum_version = ssl.TLSVersion.TLSv1_1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError) as exc:
        pytest.skip(f"this OpenSSL cannot offer TLS 1.1: {exc}")
    with (
        socket.create_connection(("127.0.0.1", edge.broker.port), timeout=5) as sock,
        pytest.raises(REFUSED) as info,
    ):
        ctx.wrap_socket(sock, server_hostname="localhost")
    if "NO_PROTOCOLS_AVAILABLE" in str(info.value):
        pytest.skip("this OpenSSL build refuses to offer TLS 1.1, so the server was not asked")
