"""The droplets: app nodes and the optional witness, with their first-boot user-data."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_digitalocean as do

from infra import tuning, userdata
from infra.access import Access
from infra.config import StackConfig
from infra.naming import child_opts, droplet_name, role_of
from infra.network import Network


@dataclass(frozen=True)
class Node:
    name: str  # short name within the stack: app1.., witness
    role: str
    droplet: do.Droplet


def _immutable_after_create(cfg: StackConfig) -> list[str]:
    """Inputs whose change would replace a droplet, ignored unless the stack opts in.

    user_data and ssh_keys only matter at first boot, yet DigitalOcean replaces
    the droplet (and its data) when they change. By default a cloud-init edit
    therefore applies to new droplets only; existing nodes are rolled one at a
    time with `pulumi up --replace URN` (see README, "Changing cloud-init").
    """
    return [] if cfg.replace_on_user_data_change else ["userData", "sshKeys"]


class Nodes(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, network: Network, access: Access,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("do-ha-stack:nodes:Nodes", name, None, opts)
        authorized = pulumi.Output.all(access.automation_public_key).apply(
            lambda keys: list(cfg.admin_ssh_keys) + keys
        )
        self.nodes: list[Node] = []
        self._control_node = cfg.control_node
        for node in cfg.node_names:
            role = role_of(node)
            host = droplet_name(cfg, node)
            droplet = do.Droplet(
                node,
                name=host,
                region=cfg.region,
                image=cfg.image,
                size=cfg.witness_size if role == "witness" else cfg.node_size,
                vpc_uuid=network.vpc.id,
                monitoring=True,
                ipv6=True,
                # The web console agent would be a second way in around sshd's rules.
                droplet_agent=False,
                graceful_shutdown=True,
                backups=cfg.droplet_backups and role == "app",
                ssh_keys=access.fingerprints,
                tags=[network.stack_tag.name, network.role_tags[role].name],
                user_data=authorized.apply(
                    lambda keys, host=host, role=role: userdata.render(cfg, host, role, keys)
                ),
                opts=child_opts(
                    cfg, self, ignore_changes=_immutable_after_create(cfg),
                    # A replacement takes the old node out of the cluster before its
                    # successor boots under the same name: no two members answer to one
                    # name, and no check of the bootstrap passes against the old node.
                    delete_before_replace=True,
                    # The provider's default delete timeout is 60 s; a graceful shutdown
                    # of a cluster node (pacemaker moving resources off it) takes longer.
                    custom_timeouts=pulumi.CustomTimeouts(delete=tuning.DROPLET_DELETE_TIMEOUT)),
            )
            self.nodes.append(Node(node, role, droplet))
        self.register_outputs({n.name: n.droplet.ipv4_address for n in self.nodes})

    @property
    def app_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.role == "app"]

    @property
    def witness(self) -> Node | None:
        return next((n for n in self.nodes if n.role == "witness"), None)

    @property
    def bootstrap(self) -> Node:
        """The first app node: the first primary (its MariaDB starts the data set)."""
        return self.app_nodes[0]

    @property
    def control(self) -> Node:
        """The app node that runs the cluster-wide steps (setting controlNode)."""
        return next(n for n in self.app_nodes if n.name == self._control_node)
