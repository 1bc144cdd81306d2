"""Checks on a site certificate and key supplied in the config, before any resource.

nginx would refuse a key that does not match its certificate only on the nodes,
after the droplets exist; a certificate for another name or an expired one would
be served and fail in every browser. Each problem names its setting, and never
quotes the secret values themselves.
"""

from __future__ import annotations

import datetime as dt
import re

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

CERT_SETTING, KEY_SETTING = "tlsCertificate", "tlsPrivateKey"
MIN_RSA_BITS = 2048
# Curves every browser accepts in a server certificate.
EC_CURVES = ("secp256r1", "secp384r1")


class CertificateError(ValueError):
    """`setting` holds a certificate or key the site cannot use."""

    def __init__(self, setting: str, problem: str, allowed: str) -> None:
        super().__init__(problem)
        self.setting, self.problem, self.allowed = setting, problem, allowed


def _certificates(setting: str, pem: str, problem: str, allowed: str) -> list[x509.Certificate]:
    """The certificates of a PEM text that holds nothing else: a private key pasted
    along (a combined file) would be written where every user can read it."""
    others = sorted({kind for kind in re.findall(r"-----BEGIN ([A-Z0-9 ]+)-----", pem) if kind != "CERTIFICATE"})
    if others:
        raise CertificateError(setting, f"holds a {others[0]} block besides certificates", allowed)
    try:
        return x509.load_pem_x509_certificates(pem.encode())
    except ValueError:
        raise CertificateError(setting, problem, allowed) from None


def _chain(pem: str) -> list[x509.Certificate]:
    allowed = ("a PEM certificate chain and nothing else, the site's certificate first (a full chain file, "
               "such as fullchain.pem; the key goes in tlsPrivateKey)")
    return _certificates(CERT_SETTING, pem, "is not a PEM certificate chain", allowed)


def _issued_in_order(chain: list[x509.Certificate]) -> None:
    """Each certificate signed by the next: a client that does not fetch missing
    intermediates gets the path it needs from the server."""
    for i, (cert, issuer) in enumerate(zip(chain, chain[1:], strict=False)):
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            raise CertificateError(CERT_SETTING, f"lists certificate {i + 2} ({issuer.subject.rfc4514_string()}), "
                                   f"which did not issue certificate {i + 1}",
                                   "the chain in order: the site's certificate, then each issuer up to "
                                   "(not necessarily including) the root") from None


def check_ca_bundle(pem: str) -> None:
    """A PEM bundle of CA certificates (what a TLS client is told to trust)."""
    allowed = "PEM CA certificates (BEGIN CERTIFICATE blocks) and nothing else, or empty for the system's"
    chain = _certificates("acmeServerCa", pem, "is not PEM certificates", allowed)
    for cert in chain:
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise CertificateError("acmeServerCa", "holds a certificate that is not a CA "
                                   f"({cert.subject.rfc4514_string()})", allowed)


def _key(pem: str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    allowed = (f"an unencrypted PEM private key: RSA of at least {MIN_RSA_BITS} bits "
               f"or ECDSA on {' or '.join(EC_CURVES)}")
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except TypeError:
        raise CertificateError(KEY_SETTING, "is protected by a passphrase (nginx starts unattended)",
                               allowed) from None
    except (ValueError, serialization.UnsupportedAlgorithm):
        raise CertificateError(KEY_SETTING, "is not a PEM private key", allowed) from None
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size >= MIN_RSA_BITS:
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in EC_CURVES:
        return key
    raise CertificateError(KEY_SETTING, "is a key type or size browsers or this stack do not accept", allowed)


def _public(key: object) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def names_of(cert: x509.Certificate) -> list[str]:
    """The DNS names a certificate covers (browsers ignore the subject's CN)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [name.lower() for name in san.get_values_for_type(x509.DNSName)]


def covers(pattern: str, domain: str) -> bool:
    """RFC 6125: exact, or a wildcard standing for exactly one leftmost label."""
    if pattern == domain:
        return True
    if pattern.startswith("*.") and "." in domain:
        return domain.split(".", 1)[1] == pattern[2:]
    return False


def check_supplied(domain: str, chain_pem: str, key_pem: str, now: dt.datetime | None = None) -> None:
    """Raise CertificateError unless the chain's first certificate is the key's, covers
    `domain`, and is valid at `now`."""
    chain, key = _chain(chain_pem), _key(key_pem)
    leaf = chain[0]
    mine = _public(key.public_key())
    if _public(leaf.public_key()) != mine:
        later = any(_public(c.public_key()) == mine for c in chain[1:])
        raise CertificateError(
            CERT_SETTING,
            "lists the certificate of tlsPrivateKey after another one" if later
            else "does not belong to tlsPrivateKey (their public keys differ)",
            "the certificate issued for tlsPrivateKey, first in the chain")
    _issued_in_order(chain)
    usable = "a server certificate (not a CA), for TLS servers, signed with SHA-256 or stronger"
    try:
        if leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise CertificateError(CERT_SETTING, "starts with a CA certificate, not the site's", usable)
    except x509.ExtensionNotFound:
        pass
    try:
        usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if x509.ExtendedKeyUsageOID.SERVER_AUTH not in usages:
            raise CertificateError(CERT_SETTING, "is not for TLS servers (no serverAuth usage)", usable)
    except x509.ExtensionNotFound:
        pass
    if isinstance(leaf.signature_hash_algorithm, hashes.SHA1 | hashes.MD5):
        raise CertificateError(CERT_SETTING, f"is signed with {leaf.signature_hash_algorithm.name}, which "
                               "browsers refuse", usable)
    names = names_of(leaf)
    if not any(covers(name, domain) for name in names):
        raise CertificateError(CERT_SETTING, f"does not cover the domain {domain} (it names: "
                               f"{', '.join(names) or 'no DNS name'})",
                               f"a certificate whose subjectAltName includes {domain} or a wildcard for it")
    now = now or dt.datetime.now(dt.UTC)
    if now < leaf.not_valid_before_utc:
        raise CertificateError(CERT_SETTING, f"is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
                               "a certificate valid now")
    if now >= leaf.not_valid_after_utc:
        raise CertificateError(CERT_SETTING, f"expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC",
                               "a certificate valid now (renew it and set it again)")
