"""The API stand-in's HTTPS: a CA of the lab's own, made per run, that only the lab's
nodes trust (lab.containers.prepare_root puts it in their trust store) and the lab's
own clients are pointed at. clusterApiUrl takes https only, as a real stack's does."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lab.topology import GATEWAY, run_dir

# Where a Debian node takes local CAs from (update-ca-certificates), and its bundle.
NODE_CA_FILE = "usr/local/share/ca-certificates/do-ha-stack-lab-api.crt"
NODE_BUNDLE = "etc/ssl/certs/ca-certificates.crt"


def ca_file() -> Path:
    return run_dir() / "api-ca.pem"


def server_files() -> tuple[Path, Path]:
    """The stand-in's certificate (for GATEWAY's address) and key."""
    return run_dir() / "api-cert.pem", run_dir() / "api-key.pem"


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def gateway_certificate(ca_name: str) -> tuple[bytes, bytes, bytes]:
    """A new CA named `ca_name` and a server certificate from it for GATEWAY's address,
    for a lab server there (this stand-in, pebble): (CA, certificate, key) as PEM."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          # Python 3.13's default context checks strictly (VERIFY_X509_STRICT): key identifiers.
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, GATEWAY)]))
            .issuer_name(name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(GATEWAY))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return _pem(ca), _pem(cert), key_pem


def ensure_api_tls() -> None:
    """The CA and the stand-in's certificate, once per run."""
    cert_file, key_file = server_files()
    if ca_file().exists() and cert_file.exists() and key_file.exists():
        return
    ca, cert, key = gateway_certificate("do-ha-stack lab API CA")
    key_file.touch(mode=0o600)
    key_file.write_bytes(key)
    cert_file.write_bytes(cert)
    ca_file().write_bytes(ca)


def trust_on_node(root: Path) -> None:
    """The lab CA in a node's trust store (curl and Python read the bundle), written into
    its root before it boots, as update-ca-certificates would have it."""
    ca = ca_file().read_text()
    (root / NODE_CA_FILE).parent.mkdir(parents=True, exist_ok=True)
    (root / NODE_CA_FILE).write_text(ca)
    bundle = root / NODE_BUNDLE
    text = bundle.read_text() if bundle.exists() else ""
    if ca not in text:
        bundle.write_text(text + ("" if text.endswith("\n") or not text else "\n") + ca)
