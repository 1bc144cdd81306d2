"""A private CA the stack generates, and the node certificates it issues.

Each purpose (MariaDB replication, GlusterFS) has its own CA: a node's key for
one never authenticates it to the other, where certificates carry the same
names. Keys and the CA live only in the stack's state (Pulumi secrets) and on the
nodes that need them; certificates renew by replacement in their early-renewal
window (pulumi-tls), and the step that carries them re-runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_tls as tls

from infra.config import StackConfig
from infra.naming import child_opts, derived_opts, stack_tag

NODE_CERT_USES = ["digital_signature", "key_encipherment", "server_auth", "client_auth"]


@dataclass(frozen=True)
class Issued:
    key_pem: pulumi.Output[str]
    cert_pem: pulumi.Output[str]


class InternalCa:
    """Resources `<purpose>-ca-key`, `<purpose>-ca`, and per node `<node>-<purpose>-key`,
    `-csr`, `-cert`, all children of `parent`."""

    def __init__(self, purpose: str, title: str, cfg: StackConfig, parent: pulumi.Resource,
                 validity_hours: int) -> None:
        self.purpose, self.cfg, self.parent = purpose, cfg, parent
        self.key = tls.PrivateKey(f"{purpose}-ca-key", algorithm="ECDSA", ecdsa_curve="P256",
                                  opts=child_opts(cfg, parent))
        self.cert = tls.SelfSignedCert(
            f"{purpose}-ca", private_key_pem=self.key.private_key_pem, is_ca_certificate=True,
            subject=tls.SelfSignedCertSubjectArgs(common_name=f"{stack_tag(cfg)} {title} CA",
                                                  organization="do-ha-stack"),
            validity_period_hours=validity_hours, allowed_uses=["cert_signing", "crl_signing"],
            opts=derived_opts(parent))
        self.cert_pem: pulumi.Output[str] = self.cert.cert_pem

    def issue(self, node: str, common_name: str, ip: pulumi.Input[str], validity_hours: int,
              renew_before_hours: int) -> Issued:
        """A key (kept: protected on prod) and a certificate for `common_name` at `ip`."""
        key = tls.PrivateKey(f"{node}-{self.purpose}-key", algorithm="ECDSA", ecdsa_curve="P256",
                             opts=child_opts(self.cfg, self.parent))
        csr = tls.CertRequest(
            f"{node}-{self.purpose}-csr", private_key_pem=key.private_key_pem,
            subject=tls.CertRequestSubjectArgs(common_name=common_name, organization="do-ha-stack"),
            ip_addresses=[ip], dns_names=[common_name], opts=derived_opts(self.parent))
        cert = tls.LocallySignedCert(
            f"{node}-{self.purpose}-cert", cert_request_pem=csr.cert_request_pem,
            ca_private_key_pem=self.key.private_key_pem, ca_cert_pem=self.cert.cert_pem,
            validity_period_hours=validity_hours, early_renewal_hours=renew_before_hours,
            allowed_uses=NODE_CERT_USES, opts=derived_opts(self.parent))
        return Issued(key.private_key_pem, cert.cert_pem)
