"""The private CA and role certificates made by `hpc2edge tls`."""

from __future__ import annotations

import ipaddress
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hpc2edge.cli.root import main
from hpc2edge.errors import TLSError
from hpc2edge.pki import ca as pki
from hpc2edge.roles import ROLES, SIGNING_ROLES
from hpc2edge.transport.tls import ssl_options

pytestmark = pytest.mark.unit


def _load(path):
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_init_writes_ca_server_and_one_cert_per_role(tmp_path):
    issued = pki.init(tmp_path / "tls", ["broker.example.org", "10.1.2.3"])
    signing = {f"{role}-sign" for role in SIGNING_ROLES}
    assert set(issued) == {"ca", "server", *ROLES, *signing}
    for item in issued.values():
        assert item.cert.is_file()
        assert item.key.stat().st_mode & 0o777 == 0o600
    ca = _load(issued["ca"].cert)
    for role in ("server", *ROLES):
        cert = _load(issued[role].cert)
        cert.verify_directly_issued_by(ca)
    server = _load(issued["server"].cert)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "broker.example.org"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
        ipaddress.ip_address("10.1.2.3"),
    }
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    edge = _load(issued["edge"].cert)
    assert edge.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "edge"
    assert list(edge.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]


def _server_ctx(issued, trust):
    """The broker's side of mutual TLS: its certificate, client certificates required."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(issued["server"].cert), str(issued["server"].key))
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(str(trust["ca"].cert))
    return ctx


def _client_ctx(issued, trust, role="edge"):
    """A role's side: verifies the server's chain and host name, presents the role certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    ctx.load_verify_locations(str(trust["ca"].cert))
    ctx.load_cert_chain(str(issued[role].cert), str(issued[role].key))
    return ctx


def _handshake(server_ctx, client_ctx, server_hostname="localhost"):
    """A real TLS handshake between two contexts over memory BIOs, then one record each way.

    Raises what either end raises (``ssl.SSLError``), so a refused chain fails the call.
    """
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    pending = [client, server]
    for _ in range(10):
        for end in list(pending):
            try:
                end.do_handshake()
                pending.remove(end)
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if not pending:
            break
    assert not pending, "the TLS handshake did not finish"
    client.write(b"ping")
    s_in.write(c_out.read())
    assert server.read(4) == b"ping"
    server.write(b"pong")
    c_in.write(s_out.read())
    assert client.read(4) == b"pong"
    return client, server


def test_python_ssl_accepts_the_chain(tmp_path):
    issued = pki.init(tmp_path)
    for role in ROLES:
        client, server = _handshake(_server_ctx(issued, issued), _client_ctx(issued, issued, role))
        subject = dict(pair for rdn in server.getpeercert()["subject"] for pair in rdn)
        assert subject["commonName"] == role  # the server saw the verified role certificate
        assert ("DNS", "localhost") in client.getpeercert()["subjectAltName"]  # and the client


def test_python_ssl_refuses_certificates_from_another_ca(tmp_path):
    ours = pki.init(tmp_path / "ours")
    other = pki.init(tmp_path / "other")
    # A client that trusts our CA refuses a broker whose certificate another CA issued ...
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        _handshake(_server_ctx(other, other), _client_ctx(ours, ours))
    # ... and our broker refuses a client certificate from another CA.
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        _handshake(_server_ctx(ours, ours), _client_ctx(other, ours))


def test_python_ssl_refuses_a_server_name_outside_the_sans(tmp_path):
    issued = pki.init(tmp_path)
    with pytest.raises(ssl.SSLCertVerificationError, match=r"[Hh]ostname mismatch"):
        _handshake(_server_ctx(issued, issued), _client_ctx(issued, issued), "evil.example.org")


def test_init_refuses_to_overwrite_without_force(tmp_path):
    pki.init(tmp_path)
    before = (tmp_path / "ca.pem").read_bytes()
    with pytest.raises(TLSError, match="--force"):
        pki.init(tmp_path)
    assert (tmp_path / "ca.pem").read_bytes() == before
    pki.init(tmp_path, force=True)
    assert (tmp_path / "ca.pem").read_bytes() != before


def test_add_device_issues_an_edge_certificate(tmp_path):
    issued = pki.init(tmp_path)
    device = pki.add_device(tmp_path, "orin-hall-3")
    cert = _load(device.cert)
    cert.verify_directly_issued_by(_load(issued["ca"].cert))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "edge:orin-hall-3"
    assert device.key.stat().st_mode & 0o777 == 0o600
    with pytest.raises(TLSError):
        pki.add_device(tmp_path, "orin-hall-3")


def _signed_by_ca(path, ca_path):
    cert = _load(path)
    cert.verify_directly_issued_by(_load(ca_path))
    return cert


def test_signing_certificates_are_rsa_sign_only_and_not_for_tls(tmp_path):
    issued = pki.init(tmp_path)
    for role in SIGNING_ROLES:
        item = issued[f"{role}-sign"]
        assert item == pki.signing_files(tmp_path, role)
        assert item.key.stat().st_mode & 0o777 == 0o600
        cert = _signed_by_ca(item.cert, issued["ca"].cert)
        assert isinstance(cert.public_key(), rsa.RSAPublicKey)  # Celery's auth needs RSA
        assert cert.public_key().key_size == pki.SIGNING_RSA_BITS
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.digital_signature and not usage.key_agreement and not usage.key_cert_sign
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [x509.ObjectIdentifier(pki.DOCUMENT_SIGNING_OID)]
    # The TLS certificates stay ECDSA: they cannot sign a Celery message.
    assert not isinstance(_load(issued["orchestrator"].cert).public_key(), rsa.RSAPublicKey)


def test_signers_hold_exactly_whom_each_side_trusts(tmp_path):
    issued = pki.init(tmp_path)
    tasks = sorted(p.name for p in pki.signers_dir(tmp_path, "tasks").iterdir())
    results = sorted(p.name for p in pki.signers_dir(tmp_path, "results").iterdir())
    assert tasks == ["orchestrator-sign.pem"]  # no CA, no worker: only the orchestrator
    assert results == ["edge-sign.pem", "hpc-sign.pem"]
    trusted = pki.signers_dir(tmp_path, "tasks") / "orchestrator-sign.pem"
    assert trusted.read_bytes() == issued["orchestrator-sign"].cert.read_bytes()


def test_add_device_adds_its_signing_certificate_to_the_result_signers(tmp_path):
    issued = pki.init(tmp_path)
    pki.add_device(tmp_path, "orin1")
    signing = pki.signing_files(tmp_path, "edge-orin1")
    cert = _signed_by_ca(signing.cert, issued["ca"].cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "edge:orin1 signing"
    trusted = pki.signers_dir(tmp_path, "results") / "edge-orin1-sign.pem"
    assert trusted.read_bytes() == signing.cert.read_bytes()
    assert not (pki.signers_dir(tmp_path, "tasks") / "edge-orin1-sign.pem").exists()


def test_forced_reinit_empties_the_signers(tmp_path):
    pki.init(tmp_path)
    pki.add_device(tmp_path, "orin1")
    pki.init(tmp_path, force=True)
    # The old device's certificate would otherwise stay trusted: Celery checks no chain.
    assert not (pki.signers_dir(tmp_path, "results") / "edge-orin1-sign.pem").exists()


def test_init_signing_for_a_ca_made_before_signing(tmp_path):
    pki.init(tmp_path)
    for path in tmp_path.glob("*-sign*.pem"):
        path.unlink()
    with pytest.raises(TLSError, match="--force"):  # signers/ still holds certificates
        pki.init_signing(tmp_path)
    issued = pki.init_signing(tmp_path, force=True)
    assert set(issued) == {f"{role}-sign" for role in SIGNING_ROLES}
    with pytest.raises(TLSError, match="tls init"):
        pki.init_signing(tmp_path / "no-ca")


@pytest.mark.parametrize("name", ["", "Orin", "a/b", "../x", "x" * 64])
def test_add_device_rejects_bad_names(tmp_path, name):
    pki.init(tmp_path)
    with pytest.raises(ValueError):
        pki.add_device(tmp_path, name)


def test_add_device_without_ca_says_what_to_do(tmp_path):
    with pytest.raises(TLSError, match="tls init"):
        pki.add_device(tmp_path, "orin")


def test_cli_tls_init_and_add_device(tmp_path, capsys):
    assert main(["tls", "init", "--dir", str(tmp_path), "--host", "b.example.org"]) == 0
    assert "b.example.org" in capsys.readouterr().out
    assert main(["tls", "init", "--dir", str(tmp_path)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert main(["tls", "add-device", "orin1", "--dir", str(tmp_path)]) == 0
    assert (tmp_path / "edge-orin1.pem").is_file()
    assert "edge-orin1-sign.pem" in capsys.readouterr().out
    assert main(["tls", "init-signing", "--dir", str(tmp_path), "--force"]) == 0
    assert "signers/tasks" in capsys.readouterr().out
    assert main(["tls", "add-device", "Bad Name", "--dir", str(tmp_path)]) == 2


def test_ssl_options_always_verify(tmp_path):
    from hpc2edge.config import load_settings

    opts = ssl_options(load_settings(environ={}).tls)
    assert opts["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert opts["ssl_check_hostname"] is True
    assert opts["ssl_min_version"] == ssl.TLSVersion.TLSv1_2
