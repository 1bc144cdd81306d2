"""Remote commands that turn hardened droplets into one pacemaker cluster.

Every command connects as the deploy user with the automation key. The first
command on each node waits for cloud-init (hardening included) to finish; all
later steps depend on it. The steps themselves are shell in cloudinit/steps/,
each safe to run again (see infra/remote.py for how secrets travel).

Order: first-boot -> cluster-node (every node) -> cluster-setup (bootstrap node)
-> [storage, database] -> cluster-resources (bootstrap node).
"""

from __future__ import annotations

import pulumi
import pulumi_command as command
import pulumi_random as random

from infra.access import Access
from infra.config import StackConfig, secret_setting
from infra.naming import child_opts, droplet_name, stack_tag
from infra.nodes import Node, Nodes
from infra.ports import CLUSTER_TCP_PORT_RANGES
from infra.remote import Bundle, NodeFile, step_command
from infra.paths import read

# cloud-init exits 0 when done, 1 on errors, 2 on recoverable errors; hardening
# leaves a marker last, so its presence proves the whole first boot ran.
WAIT_FOR_FIRST_BOOT = (
    "cloud-init status --wait >/dev/null; rc=$?; "
    'if [ "$rc" -ne 0 ]; then cloud-init status --long; exit "$rc"; fi; '
    "test -s /var/lib/do-ha-stack/hardened || { echo 'hardening did not finish' >&2; exit 1; }"
)

# corosync's token timeout: a silent node is declared dead after token +
# consensus (1.2 x token), about 2.6 s; long enough not to flap on a busy droplet.
TOKEN_MS = 1200

BRICK_PORTS = CLUSTER_TCP_PORT_RANGES["gluster-bricks"]

OCF_AGENT_PATH = "/usr/lib/ocf/resource.d/do-ha-stack/reserved-ip"
FENCE_AGENT_PATH = "/usr/sbin/fence_digitalocean"


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


def member_spec(cfg: StackConfig, node: Node) -> pulumi.Output[str]:
    """NAME=PRIVATE_IP for a step's arguments (pacemaker node names are the hostnames)."""
    return node.droplet.ipv4_address_private.apply(lambda ip: f"{droplet_name(cfg, node.name)}={ip}")


class Cluster(pulumi.ComponentResource):
    """first-boot gates, node preparation and the cluster itself."""

    def __init__(self, name: str, cfg: StackConfig, nodes: Nodes, access: Access,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("do-ha-stack:cluster:Cluster", name, None, opts)
        self.cfg, self.nodes, self.access = cfg, nodes, access
        self.name = stack_tag(cfg)
        self.bootstrap = nodes.app_nodes[0]
        self.ready: dict[str, command.remote.Command] = {
            node.name: command.remote.Command(
                f"{node.name}-first-boot",
                connection=connection(cfg, node, access),
                create=WAIT_FOR_FIRST_BOOT,
                opts=child_opts(cfg, self, deleted_with=node.droplet),
            )
            for node in nodes.nodes
        }
        self.hacluster_password = random.RandomPassword(
            "hacluster-password", length=32, special=False, opts=child_opts(cfg, self))
        self.api_token = secret_setting("failoverApiToken")
        agents = [NodeFile(OCF_AGENT_PATH, read("agents/reserved-ip"), "0755"),
                  NodeFile(FENCE_AGENT_PATH, read("agents/fence_digitalocean"), "0755")]
        members = pulumi.Output.all(*[member_spec(cfg, n) for n in nodes.nodes])
        self.prepared: dict[str, command.remote.Command] = {
            node.name: step_command(
                f"{node.name}-cluster-node", "cluster-node",
                members.apply(lambda specs: [self.name, *map(str, BRICK_PORTS), *specs]),
                connection(cfg, node, access),
                Bundle({"HACLUSTER_PASSWORD": self.hacluster_password.result,
                        "DO_API_TOKEN": self.api_token}, agents),
                child_opts(cfg, self, deleted_with=node.droplet, depends_on=[self.ready[node.name]]))
            for node in nodes.nodes
        }
        self.formed = step_command(
            "cluster-setup", "cluster-setup",
            members.apply(lambda specs: [self.name, str(TOKEN_MS), *specs]),
            connection(cfg, self.bootstrap, access),
            Bundle({"HACLUSTER_PASSWORD": self.hacluster_password.result}),
            child_opts(cfg, self, deleted_with=self.bootstrap.droplet, depends_on=list(self.prepared.values())))
        self.register_outputs({})

    def configure_resources(self, replication_password: pulumi.Output[str], reserved_ip: pulumi.Output[str],
                            after: list[pulumi.Resource]) -> command.remote.Command:
        """Fencing, the promotable MariaDB and nginx + reserved IP on the promoted node."""
        cfg, nodes = self.cfg, self.nodes
        host_map = pulumi.Output.all(*[n.droplet.id for n in nodes.nodes]).apply(
            lambda ids: ";".join(f"{droplet_name(cfg, n.name)}:{i}" for n, i in zip(nodes.nodes, ids)))
        witness = next((droplet_name(cfg, n.name) for n in nodes.nodes if n.role == "witness"), "-")
        # The bootstrap node goes last: on equal GTIDs the agent promotes the last one.
        apps = nodes.app_nodes[1:] + nodes.app_nodes[:1]
        args = pulumi.Output.all(reserved_ip, host_map, *[member_spec(cfg, n) for n in apps]).apply(
            lambda v: [v[0], cfg.cluster_api_url, v[1], witness, *v[2:]])
        return step_command(
            "cluster-resources", "cluster-resources", args,
            connection(cfg, self.bootstrap, access=self.access),
            Bundle({"REPL_PASSWORD": replication_password}),
            child_opts(cfg, self, deleted_with=self.bootstrap.droplet, depends_on=[self.formed, *after]))
