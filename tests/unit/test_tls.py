"""The private CA and role certificates made by `hpc2edge tls`."""

from __future__ import annotations

import ipaddress
import ssl

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hpc2edge import tls
from hpc2edge.cli import main
from hpc2edge.errors import TLSError

pytestmark = pytest.mark.unit


def _load(path):
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_init_writes_ca_server_and_one_cert_per_role(tmp_path):
    issued = tls.init(tmp_path / "tls", ["broker.example.org", "10.1.2.3"])
    assert set(issued) == {"ca", "server", *tls.CLIENT_ROLES}
    for item in issued.values():
        assert item.cert.is_file()
        assert item.key.stat().st_mode & 0o777 == 0o600
    ca = _load(issued["ca"].cert)
    for role in ("server", *tls.CLIENT_ROLES):
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
    issued = tls.init(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(issued["ca"].cert))
    ctx.load_cert_chain(str(issued["edge"].cert), str(issued["edge"].key))


def test_init_refuses_to_overwrite_without_force(tmp_path):
    tls.init(tmp_path)
    before = (tmp_path / "ca.pem").read_bytes()
    with pytest.raises(TLSError, match="--force"):
        tls.init(tmp_path)
    assert (tmp_path / "ca.pem").read_bytes() == before
    tls.init(tmp_path, force=True)
    assert (tmp_path / "ca.pem").read_bytes() != before


def test_add_device_issues_an_edge_certificate(tmp_path):
    issued = tls.init(tmp_path)
    device = tls.add_device(tmp_path, "orin-hall-3")
    cert = _load(device.cert)
    cert.verify_directly_issued_by(_load(issued["ca"].cert))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "edge:orin-hall-3"
    assert device.key.stat().st_mode & 0o777 == 0o600
    with pytest.raises(TLSError):
        tls.add_device(tmp_path, "orin-hall-3")


@pytest.mark.parametrize("name", ["", "Orin", "a/b", "../x", "x" * 64])
def test_add_device_rejects_bad_names(tmp_path, name):
    tls.init(tmp_path)
    with pytest.raises(ValueError):
        tls.add_device(tmp_path, name)


def test_add_device_without_ca_says_what_to_do(tmp_path):
    with pytest.raises(TLSError, match="tls init"):
        tls.add_device(tmp_path, "orin")


def test_cli_tls_init_and_add_device(tmp_path, capsys):
    assert main(["tls", "init", "--dir", str(tmp_path), "--host", "b.example.org"]) == 0
    assert "b.example.org" in capsys.readouterr().out
    assert main(["tls", "init", "--dir", str(tmp_path)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert main(["tls", "add-device", "orin1", "--dir", str(tmp_path)]) == 0
    assert (tmp_path / "edge-orin1.pem").is_file()
    assert main(["tls", "add-device", "Bad Name", "--dir", str(tmp_path)]) == 2


def test_ssl_options_always_verify(tmp_path):
    from hpc2edge.config import load_settings

    opts = tls.ssl_options(load_settings(environ={}).tls)
    assert opts["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert opts["ssl_check_hostname"] is True
    assert opts["ssl_min_version"] == ssl.TLSVersion.TLSv1_2
