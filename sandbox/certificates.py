"""Self-signed certificates for a loopback kube-apiserver (sandbox.kubeenv): a CA, the serving
certificate for 127.0.0.1/localhost, the admin's client certificate (group system:masters) and
the service-account signing key pair."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

VALID_FOR = dt.timedelta(days=2)
CLOCK_SKEW = dt.timedelta(minutes=5)  # valid from a little before now, for clocks a little behind


def _key_pem(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(common: str, org: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, common)]
    if org:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(parts)


def _certificate(subject: x509.Name, issuer: x509.Name, public_key: Any, signing_key: Any,
                 extensions: list[tuple[x509.ExtensionType, bool]]) -> x509.Certificate:
    """A certificate for `public_key` signed by `signing_key`; extensions as (extension, critical)."""
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + VALID_FOR)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signing_key, hashes.SHA256())


def _issue(ca_key: Any, ca_name: x509.Name, subject: x509.Name, *, server: bool) -> tuple[Any, x509.Certificate]:
    """(key, certificate) for a server (names localhost, kubernetes.default.svc, 127.0.0.1) or a client."""
    key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.ExtendedKeyUsageOID.SERVER_AUTH if server else x509.ExtendedKeyUsageOID.CLIENT_AUTH
    extensions: list[tuple[x509.ExtensionType, bool]] = [(x509.ExtendedKeyUsage([usage]), False)]
    if server:
        names = [x509.DNSName("localhost"), x509.DNSName("kubernetes.default.svc"),
                 x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        extensions.append((x509.SubjectAlternativeName(names), False))
    return key, _certificate(subject, ca_name, key.public_key(), ca_key, extensions)


def write_certificates(cert_dir: Path) -> None:
    """ca.crt, apiserver.crt/.key, admin.crt/.key and sa.key/.pub in `cert_dir`, each mode 0600."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("istio-canary-test-ca")
    # KeyUsage: digital signature, certificate signing, CRL signing.
    ca_usage = x509.KeyUsage(True, False, False, False, False, True, True, False, False)
    ca_cert = _certificate(ca_name, ca_name, ca_key.public_key(), ca_key,
                           [(x509.BasicConstraints(ca=True, path_length=None), True), (ca_usage, True)])
    serving_key, serving_cert = _issue(ca_key, ca_name, _name("kube-apiserver"), server=True)
    admin_key, admin_cert = _issue(ca_key, ca_name, _name("kubernetes-admin", "system:masters"), server=False)
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = serialization.Encoding.PEM
    files = {
        "ca.crt": ca_cert.public_bytes(pem),
        "apiserver.crt": serving_cert.public_bytes(pem),
        "apiserver.key": _key_pem(serving_key),
        "admin.crt": admin_cert.public_bytes(pem),
        "admin.key": _key_pem(admin_key),
        "sa.key": _key_pem(sa_key),
        "sa.pub": sa_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo),
    }
    for file_name, data in files.items():
        path = cert_dir / file_name
        path.write_bytes(data)
        path.chmod(0o600)
