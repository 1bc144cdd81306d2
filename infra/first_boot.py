"""The first remote command on every node: it waits until first boot is over.

Every later step depends on its node's gate, so nothing runs on a node before
cloud-init (hardening included) has finished there.
"""

from __future__ import annotations

import pulumi
import pulumi_command as command

from infra.config import StackConfig
from infra.naming import derived_opts, moved_from
from infra.nodes import Nodes
from infra.remote import NO_PREVIOUS_OUTPUT, Connector

# cloud-init exits 0 when done, 1 on errors, 2 on recoverable errors; hardening
# leaves a marker last, so its presence proves the whole first boot ran (rkhunter's
# baseline goes on in the background: nothing here needs it, see harden.sh).
WAIT_FOR_FIRST_BOOT = (
    "cloud-init status --wait >/dev/null; rc=$?; "
    'if [ "$rc" -ne 0 ]; then cloud-init status --long; exit "$rc"; fi; '
    "test -s /var/lib/do-ha-stack/hardened || { echo 'hardening did not finish' >&2; exit 1; }"
)


class FirstBoot(pulumi.ComponentResource):
    """One gate per node: `ready[node]` is what a node's first step depends on."""

    def __init__(self, name: str, cfg: StackConfig, nodes: Nodes, connect: Connector,
                 opts: pulumi.ResourceOptions) -> None:
        super().__init__("do-ha-stack:bootstrap:FirstBoot", name, None, opts)
        # The gates were children of the cluster component before it was split.
        moved = moved_from("do-ha-stack:cluster:Cluster", "cluster", opts.parent)
        self.ready: dict[str, pulumi.Resource] = {
            node.name: command.remote.Command(
                f"{node.name}-first-boot",
                connection=connect.to(node),
                create=WAIT_FOR_FIRST_BOOT,
                add_previous_output_in_env=NO_PREVIOUS_OUTPUT,
                opts=derived_opts(self, deleted_with=node.droplet, aliases=moved),
            )
            for node in nodes.nodes
        }
        self.register_outputs({})
