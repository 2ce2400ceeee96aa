"""A throw-away certificate authority with a server and a client certificate, for TLS tests.

Import with ``tests/support`` on ``sys.path`` (``import tls``). ``make_tls_files(directory)``
writes PEM files into `directory` (a fresh temporary one when omitted) and returns their
paths as a `TlsFiles`: the CA (``ca_cert``: what a client trusts, e.g.
``MLFLOW_TRACKING_SERVER_CERT_PATH`` or ``requests``' ``verify=``), a server certificate for
``127.0.0.1``, ``::1`` and ``localhost`` (subjectAltName, serverAuth) with its key, and, unless
``client=False``, a client certificate (clientAuth) with its key plus ``client_pem``, the
two in one file as ``MLFLOW_TRACKING_CLIENT_CERT_PATH`` and ``requests``' ``cert=`` expect.
Keys are unencrypted ECDSA P-256 (fast to make); certificates are valid from one hour ago
for `days` days and carry the extensions strict verifiers ask for (CA key usage, subject
and authority key identifiers). Built with the ``cryptography`` package, a dependency of
``mlflow`` itself.
"""

from __future__ import annotations

import datetime
import ipaddress
import tempfile
from dataclasses import dataclass
from pathlib import Path

SERVER_HOSTS = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the PEM files written by `make_tls_files` (client ones None without)."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path | None = None
    client_key: Path | None = None
    client_pem: Path | None = None


def _name(common_name):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "synalinks-obs tests"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _builder(subject, issuer, public_key, days):
    from cryptography import x509

    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _leaf(ca_cert, ca_key, common_name, usage, days, hosts=()):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    key = _key()
    builder = (
        _builder(_name(common_name), ca_cert.subject, key.public_key(), days)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=True, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if hosts:
        names = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def make_tls_files(
    directory: str | Path | None = None,
    *,
    client: bool = True,
    hosts: tuple[str, ...] = SERVER_HOSTS,
    days: int = 7,
) -> TlsFiles:
    """Write a new CA, a server certificate for `hosts` and (if `client`) a client
    certificate into `directory` (created if needed; a new temp dir when None)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    directory = Path(directory or tempfile.mkdtemp(prefix="synalinks-obs-tls-"))
    directory.mkdir(parents=True, exist_ok=True)

    ca_key = _key()
    ca_cert = (
        _builder(_name("synalinks-obs test CA"), _name("synalinks-obs test CA"),
                 ca_key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_cert, server_key = _leaf(
        ca_cert, ca_key, hosts[0], ExtendedKeyUsageOID.SERVER_AUTH, days, hosts
    )

    def write(name, data, private=False):
        path = directory / name
        path.write_bytes(data)
        if private:
            path.chmod(0o600)
        return path

    paths = {
        "ca_cert": write("ca.pem", _cert_pem(ca_cert)),
        "ca_key": write("ca-key.pem", _key_pem(ca_key), private=True),
        "server_cert": write("server.pem", _cert_pem(server_cert)),
        "server_key": write("server-key.pem", _key_pem(server_key), private=True),
    }
    if client:
        client_cert, client_key = _leaf(
            ca_cert, ca_key, "synalinks-obs test client", ExtendedKeyUsageOID.CLIENT_AUTH, days
        )
        paths["client_cert"] = write("client.pem", _cert_pem(client_cert))
        paths["client_key"] = write("client-key.pem", _key_pem(client_key), private=True)
        paths["client_pem"] = write(
            "client-combined.pem", _cert_pem(client_cert) + _key_pem(client_key), private=True
        )
    return TlsFiles(directory=directory, **paths)
