"""The site's certificate by ACME (a domain without a supplied certificate).

Obtained once per stack, after the reserved IP reaches the web tier: the CA's
HTTP-01 check comes through the reserved IP to whichever app node holds it, and
every node answers it from the shared webroot. The control node asks, every app
node installs. Renewal is then the nodes' own (site-cert's timers, installed by
web-node); this runs again only when the domain or the ACME server changes, or a
node is new.
"""

from __future__ import annotations

import pulumi

from infra.config import StackConfig
from infra.nodes import Nodes
from infra.remote import Bundle, Connector, step_command


class SiteCertificate(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, nodes: Nodes, connect: Connector,
                 after: pulumi.Resource, opts: pulumi.ResourceOptions) -> None:
        super().__init__("do-ha-stack:site:SiteCertificate", name, None, opts)
        # The server and the account address are in site-cert's settings (web-node);
        # as arguments here they make a change of either obtain again.
        obtained = step_command(
            "site-certificate", "site-cert", nodes.control,
            {"ACTION": "obtain", "DOMAIN": cfg.domain, "SERVER": cfg.acme_directory_url,
             "EMAIL": cfg.acme_email}, connect, Bundle(), cfg, self, depends_on=[after])
        for node in nodes.app_nodes:
            step_command(f"{node.name}-site-tls", "site-cert", node,
                         {"ACTION": "install", "DOMAIN": cfg.domain, "SERVER": cfg.acme_directory_url,
                          "EMAIL": cfg.acme_email}, connect, Bundle(), cfg, self, depends_on=[obtained])
        self.register_outputs({})
