"""Certificates and keys for a throwaway control plane: a CA, serving and admin certs, SA keys."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Names the API server answers to, in-cluster and from the host.
SERVING_DNS_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
# 10.96.0.1 is the first address of the service range, the in-cluster `kubernetes` Service.
SERVING_IPS = ("127.0.0.1", "10.96.0.1")
VALIDITY = dt.timedelta(days=7)
FRONT_PROXY_CLIENT_NAME = "front-proxy-client"


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files a control plane needs, all inside one directory."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_private_key: Path
    sa_public_key: Path
    # The aggregation layer's client cert (kube-apiserver --proxy-client-cert-file): the API server
    # presents it to extension API servers (metrics-server), which trust its X-Remote-* headers.
    front_proxy_cert: Path
    front_proxy_key: Path


def _ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _builder(subject: x509.Name, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


def _leaf(
    subject: x509.Name,
    ca_cert: x509.Certificate,
    ca_key,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName] | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _ec_key()
    builder = (
        _builder(subject, ca_cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_encipherment=True, content_commitment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def generate_pki(directory: Path) -> Pki:
    """Write a fresh CA, API-server serving cert, admin client cert and SA key pair into directory."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _ec_key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chorus-test-ca")])
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_encipherment=False, content_commitment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in SERVING_DNS_NAMES]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVING_IPS]
    serving_cert, serving_key = _leaf(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
        ca_cert, ca_key, ExtendedKeyUsageOID.SERVER_AUTH, sans,
    )
    # O=system:masters: the group the API server grants everything without any RBAC object.
    admin_cert, admin_key = _leaf(
        x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
            x509.NameAttribute(NameOID.COMMON_NAME, "chorus-admin"),
        ]),
        ca_cert, ca_key, ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    # CN=front-proxy-client, the one name kube-apiserver --requestheader-allowed-names accepts.
    front_proxy_cert, front_proxy_key = _leaf(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, FRONT_PROXY_CLIENT_NAME)]),
        ca_cert, ca_key, ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    # Service-account tokens are signed RS256 by default, so an RSA key.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pki = Pki(*(directory / n for n in (
        "ca.crt", "ca.key", "apiserver.crt", "apiserver.key",
        "admin.crt", "admin.key", "sa.key", "sa.pub", "front-proxy-client.crt", "front-proxy-client.key",
    )))
    files = {
        pki.ca_cert: _cert_pem(ca_cert),
        pki.ca_key: _key_pem(ca_key),
        pki.serving_cert: _cert_pem(serving_cert),
        pki.serving_key: _key_pem(serving_key),
        pki.admin_cert: _cert_pem(admin_cert),
        pki.admin_key: _key_pem(admin_key),
        pki.sa_private_key: _key_pem(sa_key),
        pki.sa_public_key: sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        pki.front_proxy_cert: _cert_pem(front_proxy_cert),
        pki.front_proxy_key: _key_pem(front_proxy_key),
    }
    for path, data in files.items():
        path.write_bytes(data)
        path.chmod(0o600)
    return pki
