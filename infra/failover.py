"""What pacemaker runs, configured last: DigitalOcean fencing, the promotable
MariaDB, and nginx with the reserved IP on the promoted node.

Built from explicit inputs once everything it starts is in place on every node:
the cluster formed, each database handed over, each web tier installed.
"""

from __future__ import annotations

import pulumi

from infra import tuning
from infra.cluster import member_specs
from infra.config import MAX_APP_NODES, StackConfig, app_names
from infra.naming import droplet_name, moved_from
from infra.nodes import Nodes
from infra.remote import Bundle, Connector, step_command


# What the nodes' agents do with failoverApiToken, and DigitalOcean's custom scopes for
# it (its OpenAPI `security`): the fence agent reads a droplet and powers it off or on,
# the reserved-IP agent reads the IP and assigns it. Nothing more: the token sits on
# every internet-facing node. (README, "Secrets"; the lab's stand-in enforces them.)
FAILOVER_TOKEN_SCOPES = ("droplet:read", "droplet:update", "reserved_ip:read", "reserved_ip:update")


class Failover(pulumi.ComponentResource):
    """`configured`: pacemaker's resources are pushed and the active role is running."""

    def __init__(self, name: str, cfg: StackConfig, nodes: Nodes, connect: Connector,
                 reserved_ip: pulumi.Input[str], replication_password: pulumi.Input[str],
                 after: list[pulumi.Resource], opts: pulumi.ResourceOptions) -> None:
        super().__init__("do-ha-stack:failover:Failover", name, None, opts)
        names = [droplet_name(cfg, n.name) for n in nodes.nodes]
        host_map = pulumi.Output.all(*[n.droplet.id for n in nodes.nodes]).apply(
            lambda ids: ";".join(f"{name}:{i}" for name, i in zip(names, ids, strict=True)))
        # Every app node the stack can have, the bootstrap node last: on equal GTIDs
        # the agent promotes the last one (see cluster-resources.sh).
        bootstrap = droplet_name(cfg, nodes.bootstrap.name)
        db_nodes = [n for n in (droplet_name(cfg, a) for a in app_names(MAX_APP_NODES)) if n != bootstrap] + [bootstrap]
        self.configured: pulumi.Resource = step_command(
            "cluster-resources", "cluster-resources", nodes.control,
            {"RESERVED_IP": reserved_ip, "API_URL": cfg.cluster_api_url, "HOST_MAP": host_map,
             "WITNESS": droplet_name(cfg, nodes.witness.name) if nodes.witness else "-",
             "APP_MEMBERS": member_specs(cfg, nodes.app_nodes), "DB_NODES": " ".join(db_nodes),
             "STONITH_TIMEOUT": tuning.STONITH_TIMEOUT, "FENCE_MONITOR": tuning.FENCE_MONITOR_INTERVAL,
             "DB_PROMOTED_MONITOR": tuning.DB_PROMOTED_MONITOR,
             "DB_UNPROMOTED_MONITOR": tuning.DB_UNPROMOTED_MONITOR,
             "DB_MONITOR_TIMEOUT": tuning.DB_MONITOR_TIMEOUT, "DB_OP_TIMEOUT": tuning.DB_OP_TIMEOUT,
             "WEB_MONITOR": tuning.WEB_MONITOR, "WEB_MONITOR_TIMEOUT": tuning.WEB_MONITOR_TIMEOUT,
             "RESERVED_IP_MONITOR": tuning.RESERVED_IP_MONITOR,
             "RESERVED_IP_MONITOR_TIMEOUT": tuning.RESERVED_IP_MONITOR_TIMEOUT,
             "RESERVED_IP_START_TIMEOUT": tuning.RESERVED_IP_START_TIMEOUT,
             "PROMOTION_WAIT_S": tuning.PROMOTION_WAIT_S, "RESERVED_IP_WAIT_S": tuning.RESERVED_IP_WAIT_S},
            connect, Bundle({"REPL_PASSWORD": replication_password}), cfg, self, depends_on=after,
            # It was a child of the cluster component before the split.
            aliases=moved_from("do-ha-stack:cluster:Cluster", "cluster", opts.parent))
        self.register_outputs({})
