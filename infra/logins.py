"""Who may log in on a running node, kept in line with the config: the deploy
user's authorized_keys, the SSH sources ufw allows, the sources fail2ban never
bans (cloudinit/steps/node-access.sh)."""

from __future__ import annotations

import pulumi

from infra.config import StackConfig
from infra.nodes import Nodes
from infra.remote import Bundle, Connector, NodeFile, step_command


def authorized_keys(cfg: StackConfig, automation_public_key: str) -> str:
    """The deploy user's authorized_keys: the admins' keys, then the automation's."""
    return "".join(f"{key}\n" for key in dict.fromkeys([*cfg.admin_ssh_keys, automation_public_key]))


class NodeAccess(pulumi.ComponentResource):
    """`reconciled[node]`: the node's logins match the config (node-access.sh).

    User-data set them at first boot only; a key or range changed later reaches
    every running node through this step, which re-runs whenever they change.
    """

    def __init__(self, name: str, cfg: StackConfig, nodes: Nodes, connect: Connector,
                 ready: dict[str, pulumi.Resource], automation_public_key: pulumi.Input[str],
                 opts: pulumi.ResourceOptions) -> None:
        super().__init__("do-ha-stack:logins:NodeAccess", name, None, opts)
        home = f"/home/{cfg.deploy_user}"
        keys = NodeFile(f"{home}/.ssh/authorized_keys",
                        pulumi.Output.from_input(automation_public_key).apply(lambda k: authorized_keys(cfg, k)),
                        "0600", f"{cfg.deploy_user}:{cfg.deploy_user}")
        args = {"DEPLOY_USER": cfg.deploy_user, "SSH_CIDRS": " ".join(cfg.ssh_allowed_cidrs),
                "NEVER_BAN": " ".join(cfg.ssh_never_ban_cidrs) or "-"}
        self.reconciled: dict[str, pulumi.Resource] = {
            node.name: step_command(f"{node.name}-node-access", "node-access", node, args, connect,
                                    Bundle(files=[keys]), cfg, self, depends_on=[ready[node.name]])
            for node in nodes.nodes
        }
        self.register_outputs({})
