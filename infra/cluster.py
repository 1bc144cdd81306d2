"""The corosync/pacemaker cluster: every node prepared, then the cluster formed.

Order: each node's first-boot gate -> cluster-node (every node) -> cluster-setup
(the control node, setting controlNode). What runs on the cluster (fencing, MariaDB, nginx, the
reserved IP) is configured last, by infra/failover.py.
"""

from __future__ import annotations

import pulumi
import pulumi_random as random

from infra import tuning
from infra.config import StackConfig
from infra.naming import child_opts, droplet_name, stack_tag
from infra.nodes import Node, Nodes
from infra.ports import CLUSTER_TCP_PORT_RANGES
from infra.remote import Bundle, Connector, NodeFile, step_command
from infra.paths import read

OCF_AGENT_PATH = "/usr/lib/ocf/resource.d/do-ha-stack/reserved-ip"
FENCE_AGENT_PATH = "/usr/sbin/fence_digitalocean"
# cluster-node installs it over the packaged ocf:heartbeat:mariadb (dpkg-divert).
MARIADB_AGENT_PATH = "/usr/lib/do-ha-stack/mariadb-agent"
# What the packaged agent loads as ocf-shellfuncs under the wrapper (its OCF_LIB).
OCF_LIB_PATH = "/usr/lib/do-ha-stack/ocf-lib/ocf-shellfuncs"
# The sync guard's marks on every node (cloudinit/app/sync-marks), and their service.
SYNC_MARKS_PATH = "/usr/local/lib/do-ha-stack/sync-marks"
SYNC_MARKS_UNIT = "/etc/systemd/system/do-ha-sync-marks.service"


def member_spec(cfg: StackConfig, node: Node) -> pulumi.Output[str]:
    """NAME=PRIVATE_IP of one member (pacemaker node names are the hostnames)."""
    return node.droplet.ipv4_address_private.apply(lambda ip: f"{droplet_name(cfg, node.name)}={ip}")


def member_specs(cfg: StackConfig, nodes: list[Node]) -> pulumi.Output[str]:
    """Members as one step argument: NAME=PRIVATE_IP, space separated, in the given order."""
    return pulumi.Output.all(*[member_spec(cfg, n) for n in nodes]).apply(" ".join)


class Cluster(pulumi.ComponentResource):
    """`prepared[node]`: the node is ready to join; `formed`: all members are online."""

    def __init__(self, name: str, cfg: StackConfig, nodes: Nodes, connect: Connector,
                 ready: dict[str, pulumi.Resource], api_token: pulumi.Input[str],
                 storage_files: dict[str, list[NodeFile]], opts: pulumi.ResourceOptions) -> None:
        super().__init__("do-ha-stack:cluster:Cluster", name, None, opts)
        self.hacluster_password = random.RandomPassword(
            "hacluster-password", length=32, special=False, opts=child_opts(cfg, self))
        agents = [NodeFile(OCF_AGENT_PATH, read("agents/reserved-ip"), "0755"),
                  NodeFile(FENCE_AGENT_PATH, read("agents/fence_digitalocean"), "0755"),
                  NodeFile(MARIADB_AGENT_PATH, read("agents/mariadb"), "0755"),
                  NodeFile(OCF_LIB_PATH, read("agents/ocf-shellfuncs"), "0644"),
                  NodeFile(SYNC_MARKS_PATH, read("app/sync-marks"), "0755"),
                  NodeFile(SYNC_MARKS_UNIT, read("steps/templates/do-ha-sync-marks.service"), "0644")]
        members = member_specs(cfg, nodes.nodes)
        first_port, last_port = CLUSTER_TCP_PORT_RANGES["gluster-bricks"]
        marks_port, _ = CLUSTER_TCP_PORT_RANGES["sync-marks"]
        self.prepared: dict[str, pulumi.Resource] = {
            node.name: step_command(
                f"{node.name}-cluster-node", "cluster-node", node,
                {"CLUSTER_NAME": stack_tag(cfg), "BRICK_FIRST_PORT": first_port, "BRICK_LAST_PORT": last_port,
                 "MEMBERS": members, "VPC_RANGE": cfg.vpc_ip_range, "SYNC_MARKS_PORT": marks_port},
                connect,
                # storage_files: glusterd's TLS key, certificate and CA (infra/storage.py)
                Bundle({"HACLUSTER_PASSWORD": self.hacluster_password.result, "DO_API_TOKEN": api_token},
                       agents + storage_files[node.name]),
                cfg, self, depends_on=[ready[node.name]])
            for node in nodes.nodes
        }
        self.formed: pulumi.Resource = step_command(
            "cluster-setup", "cluster-setup", nodes.control,
            {"CLUSTER_NAME": stack_tag(cfg), "MEMBERS": members,
             "TOKEN_MS": tuning.COROSYNC_TOKEN_MS, "TOKEN_COEFFICIENT_MS": tuning.COROSYNC_TOKEN_COEFFICIENT_MS,
             "CONSENSUS_MS": tuning.COROSYNC_CONSENSUS_MS,
             "JOIN_MS": tuning.COROSYNC_JOIN_MS, "START_WAIT_S": tuning.CLUSTER_START_WAIT_S,
             "DC_DEADTIME": tuning.DC_DEADTIME,
             "STICKINESS": tuning.RESOURCE_STICKINESS, "MIGRATION_THRESHOLD": tuning.MIGRATION_THRESHOLD,
             "FAILURE_TIMEOUT": tuning.FAILURE_TIMEOUT, "NO_QUORUM_POLICY": tuning.NO_QUORUM_POLICY,
             "LOAD_THRESHOLD": tuning.LOAD_THRESHOLD, "PE_ERROR_SERIES_MAX": tuning.PE_ERROR_SERIES_MAX,
             "TRANSITION_DELAY": tuning.TRANSITION_DELAY},
            connect, Bundle({"HACLUSTER_PASSWORD": self.hacluster_password.result}),
            cfg, self, depends_on=list(self.prepared.values()))
        self.register_outputs({})
