"""The web tier on every app node: nginx's site and the canary write endpoint.

nginx serves /srv/shared/www, so each node's step waits for its shared mount.
Pacemaker starts nginx on the active node only (infra/failover.py).
"""

from __future__ import annotations

import pulumi

from infra.config import StackConfig
from infra.nodes import Nodes
from infra.paths import read
from infra.remote import Bundle, Connector, NodeFile, step_command
from infra.storage import MOUNTPOINT

DOCUMENT_ROOT = f"{MOUNTPOINT}/www"


class Web(pulumi.ComponentResource):
    """`installed[node]`: the site and the canary are in place, nginx left to pacemaker."""

    def __init__(self, name: str, cfg: StackConfig, nodes: Nodes, connect: Connector,
                 mounts: dict[str, pulumi.Resource], opts: pulumi.ResourceOptions) -> None:
        super().__init__("do-ha-stack:web:Web", name, None, opts)
        files = [
            NodeFile("/usr/local/lib/do-ha-stack/canary.py", read("app/canary.py"), "0755"),
            NodeFile("/etc/systemd/system/do-ha-canary.service", read("app/do-ha-canary.service")),
            NodeFile("/etc/nginx/sites-available/do-ha-stack", read("app/nginx-site.conf")),
        ]
        self.installed: dict[str, pulumi.Resource] = {
            node.name: step_command(
                f"{node.name}-web-node", "web-node", node, {"DOCUMENT_ROOT": DOCUMENT_ROOT},
                connect, Bundle(files=files), cfg, self, depends_on=[mounts[node.name]])
            for node in nodes.app_nodes
        }
        self.register_outputs({})
