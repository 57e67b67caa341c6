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


def test_python_ssl_accepts_the_chain(tmp_path):
    issued = pki.init(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(issued["ca"].cert))
    ctx.load_cert_chain(str(issued["edge"].cert), str(issued["edge"].key))


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
