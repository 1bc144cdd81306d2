"""Remote commands that turn hardened droplets into one cluster.

Every command connects as the deploy user with the automation key. The first
command on each node waits for cloud-init (hardening included) to finish; all
later bootstrap steps depend on it.
"""

from __future__ import annotations

import pulumi
import pulumi_command as command

from infra.access import Access
from infra.config import StackConfig
from infra.naming import child_opts
from infra.nodes import Node, Nodes

# cloud-init exits 0 when done, 1 on errors, 2 on recoverable errors; hardening
# leaves a marker last, so its presence proves the whole first boot ran.
WAIT_FOR_FIRST_BOOT = (
    "cloud-init status --wait >/dev/null; rc=$?; "
    'if [ "$rc" -ne 0 ]; then cloud-init status --long; exit "$rc"; fi; '
    "test -s /var/lib/do-ha-stack/hardened || { echo 'hardening did not finish' >&2; exit 1; }"
)


def connection(cfg: StackConfig, node: Node, access: Access) -> command.remote.ConnectionArgs:
    # ufw rate-limits SSH (6 new connections per 30 s and source); a dial that
    # lands in the limit is retried rather than failed.
    return command.remote.ConnectionArgs(
        host=node.droplet.ipv4_address,
        user=cfg.deploy_user,
        private_key=access.automation_private_key,
        dial_error_limit=30,
        per_dial_timeout=10,
    )


class Cluster(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, nodes: Nodes, access: Access,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("do-ha-stack:cluster:Cluster", name, None, opts)
        self.ready: dict[str, command.remote.Command] = {
            node.name: command.remote.Command(
                f"{node.name}-first-boot",
                connection=connection(cfg, node, access),
                create=WAIT_FOR_FIRST_BOOT,
                opts=child_opts(cfg, self, deleted_with=node.droplet),
            )
            for node in nodes.nodes
        }
        self.register_outputs({})
