"""Real, deterministic TLS material for the pulumi-tls resources under mocks.

The lab replays the mocked program on real MariaDB servers, so the CA and the
server certificates must be genuine: keys derive from the resource name (stable
across runs), signatures are RFC 6979 deterministic, dates are fixed.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOT_BEFORE = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def ecdsa_key_pem(seed: str) -> str:
    scalar = int.from_bytes(hashlib.sha256(seed.encode()).digest(), "big") % (_P256_ORDER - 1) + 1
    key = ec.derive_private_key(scalar, ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption()).decode()


def _key(pem: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def _name(subject: Any) -> x509.Name:
    subject = (subject or [{}])[0] if isinstance(subject, list) else (subject or {})
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject.get("commonName", "mock")),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, subject.get("organization", "mock"))])


def _sign(builder: x509.CertificateBuilder, key: ec.EllipticCurvePrivateKey) -> str:
    cert = builder.sign(key, hashes.SHA256(), ecdsa_deterministic=True)
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _dates(builder: x509.CertificateBuilder, inputs: dict[str, Any], serial_seed: str) -> x509.CertificateBuilder:
    hours = int(inputs.get("validityPeriodHours", 24 * 365))
    serial = int.from_bytes(hashlib.sha256(serial_seed.encode()).digest()[:16], "big") >> 1
    return builder.serial_number(serial).not_valid_before(NOT_BEFORE).not_valid_after(
        NOT_BEFORE + datetime.timedelta(hours=hours))


def self_signed_cert_pem(name: str, inputs: dict[str, Any]) -> str:
    key = _key(inputs["privateKeyPem"])
    builder = _dates(x509.CertificateBuilder().subject_name(_name(inputs.get("subject")))
                     .issuer_name(_name(inputs.get("subject"))).public_key(key.public_key()), inputs, name)
    if inputs.get("isCaCertificate"):
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False), critical=True)
    return _sign(builder, key)


def cert_request_pem(inputs: dict[str, Any]) -> str:
    key = _key(inputs["privateKeyPem"])
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in inputs.get("dnsNames") or []]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in inputs.get("ipAddresses") or []]
    builder = x509.CertificateSigningRequestBuilder().subject_name(_name(inputs.get("subject")))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256(), ecdsa_deterministic=True).public_bytes(
        serialization.Encoding.PEM).decode()


def locally_signed_cert_pem(name: str, inputs: dict[str, Any]) -> str:
    csr = x509.load_pem_x509_csr(inputs["certRequestPem"].encode())
    ca_cert = x509.load_pem_x509_certificate(inputs["caCertPem"].encode())
    builder = _dates(x509.CertificateBuilder().subject_name(csr.subject).issuer_name(ca_cert.subject)
                     .public_key(csr.public_key()), inputs, name)
    for ext in csr.extensions:
        builder = builder.add_extension(ext.value, critical=ext.critical)
    builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    builder = builder.add_extension(x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return _sign(builder, _key(inputs["caPrivateKeyPem"]))
