"""The lab's own certificate authority, so that libvirt and QEMU can talk TLS.

``orbit lab up`` makes a CA and one certificate per host (its lab address and name in the
subject alternative name; usable as server and as client, since a host's libvirtd and
QEMU are clients of the peer's in a peer-to-peer migration) and one client certificate for
the control plane. The files are laid out where each consumer looks for them:

``<lab>/pki/client/``            cacert.pem, clientcert.pem, clientkey.pem: libvirt's
                                 ``?pkipath=`` for ``qemu+tls://`` URIs (orbit-server, and
                                 a source libvirtd connecting to a destination)
``<lab>/hosts/hN/pki/``          cacert.pem, servercert.pem, serverkey.pem: libvirtd's
                                 ``ca_file``, ``cert_file``, ``key_file``
``<lab>/hosts/hN/migrate-tls/``  ca-cert.pem, server-cert.pem, server-key.pem,
                                 client-cert.pem, client-key.pem: QEMU's
                                 ``migrate_tls_x509_cert_dir`` (``VIR_MIGRATE_TLS``)

Keys are RSA 2048 (what libvirt's and QEMU's GnuTLS checks expect of key usage), written
0600; the CA's key stays in ``<lab>/pki/ca/``. A lab lives for hours: a year of validity.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KEY_BITS = 2048
VALID_DAYS = 365
CLIENT_CN = "orbit-control-plane"


#: the CA signs certificates; a host's or client's key signs and enciphers (TLS)
CA_USAGE = x509.KeyUsage(
    digital_signature=False, content_commitment=False, key_encipherment=False,
    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
    encipher_only=False, decipher_only=False,
)  # fmt: skip
LEAF_USAGE = x509.KeyUsage(
    digital_signature=True, content_commitment=False, key_encipherment=True,
    data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
    encipher_only=False, decipher_only=False,
)  # fmt: skip


@dataclass(frozen=True)
class Issued:
    cert_pem: bytes
    key_pem: bytes


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ORBIT lab"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


class Authority:
    """A self-signed CA that issues the lab's certificates."""

    def __init__(self) -> None:
        self.key = _key()
        now = dt.datetime.now(dt.UTC)
        name = _name("ORBIT lab CA")
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(CA_USAGE, critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, cn: str, *, addresses: tuple[str, ...] = (), server: bool) -> Issued:
        """A certificate for ``cn``: client auth always, server auth too if ``server``
        (then ``addresses``, IPs or names, are its subject alternative names)."""
        key = _key()
        now = dt.datetime.now(dt.UTC)
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if server:
            usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(LEAF_USAGE, critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if addresses:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_general_name(a) for a in addresses]),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _pem(key))


def _general_name(value: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        return x509.DNSName(value)


def _write(path: Path, data: bytes, *, secret: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def client_dir(lab_dir: Path) -> Path:
    """The ``pkipath`` of ``qemu+tls://`` URIs."""
    return lab_dir / "pki" / "client"


def new_authority(lab_dir: Path) -> Authority:
    """A new CA for the lab, and the control plane's client certificate."""
    ca = Authority()
    _write(lab_dir / "pki" / "ca" / "cacert.pem", ca.cert_pem)
    _write(lab_dir / "pki" / "ca" / "cakey.pem", _pem(ca.key), secret=True)
    client = ca.issue(CLIENT_CN, server=False)
    _write(client_dir(lab_dir) / "cacert.pem", ca.cert_pem)
    _write(client_dir(lab_dir) / "clientcert.pem", client.cert_pem)
    _write(client_dir(lab_dir) / "clientkey.pem", client.key_pem, secret=True)
    return ca


def issue_host(ca: Authority, name: str, address: str, host_dir: Path) -> None:
    """Host ``name``'s certificate, for its libvirtd and for its QEMUs' migration TLS."""
    issued = ca.issue(name, addresses=(address, name), server=True)
    pki, migrate = host_dir / "pki", host_dir / "migrate-tls"
    _write(pki / "cacert.pem", ca.cert_pem)
    _write(pki / "servercert.pem", issued.cert_pem)
    _write(pki / "serverkey.pem", issued.key_pem, secret=True)
    _write(migrate / "ca-cert.pem", ca.cert_pem)
    for role in ("server", "client"):
        _write(migrate / f"{role}-cert.pem", issued.cert_pem)
        _write(migrate / f"{role}-key.pem", issued.key_pem, secret=True)
