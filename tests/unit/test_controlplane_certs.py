"""The control plane's generated PKI: chains, names, client identity, key types."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import NameOID

from chorus.controlplane.certs import FRONT_PROXY_CLIENT_NAME, SERVING_DNS_NAMES, SERVING_IPS, generate_pki


def test_certificates_chain_to_the_ca_with_the_expected_names(tmp_path):
    pki = generate_pki(tmp_path)
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    serving = x509.load_pem_x509_certificate(pki.serving_cert.read_bytes())
    admin = x509.load_pem_x509_certificate(pki.admin_cert.read_bytes())
    for leaf in (serving, admin):
        leaf.verify_directly_issued_by(ca)

    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == set(SERVING_DNS_NAMES)
    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address(ip) for ip in SERVING_IPS
    }
    groups = [a.value for a in admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert groups == ["system:masters"]
    # The aggregation layer's client (kube-apiserver --proxy-client-cert-file): the one allowed name.
    front_proxy = x509.load_pem_x509_certificate(pki.front_proxy_cert.read_bytes())
    front_proxy.verify_directly_issued_by(ca)
    assert front_proxy.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == FRONT_PROXY_CLIENT_NAME


def test_tls_handshake_with_strict_verification_and_client_cert(tmp_path):
    pki = generate_pki(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca_cert))
    server_ctx.load_cert_chain(str(pki.serving_cert), str(pki.serving_key))
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    client_ctx.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))

    def handshake(server_name: str) -> dict:
        """One TLS connection to a local server using the serving cert; the client cert it saw."""
        peer: dict = {}
        with socket.create_server(("127.0.0.1", 0)) as listener:
            def serve() -> None:
                conn, _ = listener.accept()
                try:
                    with server_ctx.wrap_socket(conn, server_side=True) as tls:
                        peer.update(tls.getpeercert())
                        tls.sendall(b"ok")
                except ssl.SSLError:  # the client refused us: its side raises what we check
                    conn.close()

            thread = threading.Thread(target=serve)
            thread.start()
            raw = socket.create_connection(listener.getsockname(), timeout=5)
            with client_ctx.wrap_socket(raw, server_hostname=server_name) as tls:
                assert tls.recv(2) == b"ok"
            thread.join(timeout=5)
        return peer

    for name in ("kubernetes.default.svc", "localhost", "127.0.0.1"):
        assert (("organizationName", "system:masters"),) in handshake(name)["subject"]
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake("not-the-apiserver.example")


def test_service_account_key_is_rsa_and_files_are_private(tmp_path):
    pki = generate_pki(tmp_path)
    key = load_pem_private_key(pki.sa_private_key.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048
    for path in tmp_path.iterdir():
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
