"""The lab's certificates: what libvirt's and QEMU's TLS checks need of them."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from orbit.lab import pki


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_the_lab_ca_issues_host_and_client_certificates(tmp_path: Path) -> None:
    ca = pki.new_authority(tmp_path)
    host_dir = tmp_path / "hosts" / "h2"
    pki.issue_host(ca, "h2", "198.18.0.2", host_dir)
    ca_cert = _cert(tmp_path / "pki" / "ca" / "cacert.pem")
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    host = _cert(host_dir / "pki" / "servercert.pem")
    host.verify_directly_issued_by(ca_cert)
    san = host.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("198.18.0.2")]
    assert san.get_values_for_type(x509.DNSName) == ["h2"]
    usages = host.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    # QEMU's migration directory: the same certificate as server and as client
    migrate = host_dir / "migrate-tls"
    assert (migrate / "server-cert.pem").read_bytes() == (migrate / "client-cert.pem").read_bytes()
    assert (migrate / "ca-cert.pem").read_bytes() == (tmp_path / "pki/ca/cacert.pem").read_bytes()
    client = _cert(pki.client_dir(tmp_path) / "clientcert.pem")
    client.verify_directly_issued_by(ca_cert)
    client_usages = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(client_usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    # keys are readable by their owner only
    for key in (pki.client_dir(tmp_path) / "clientkey.pem", host_dir / "pki" / "serverkey.pem",
                migrate / "server-key.pem", tmp_path / "pki" / "ca" / "cakey.pem"):  # fmt: skip
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
