"""The top-level component: one HA web stack per Pulumi stack."""

from __future__ import annotations

import pulumi

from infra.access import Access
from infra.cluster import Cluster
from infra.config import StackConfig
from infra.database import Database
from infra.firewall import Firewalls
from infra.monitoring import Monitoring
from infra.network import Network, ReservedAddress
from infra.nodes import Nodes
from infra.storage import SharedStorage


class HaStack(pulumi.ComponentResource):
    def __init__(self, cfg: StackConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("do-ha-stack:index:HaStack", cfg.stack, None,
                         pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(protect=cfg.protect)))
        child = pulumi.ResourceOptions(parent=self, protect=cfg.protect)
        self.cfg = cfg
        self.network = Network("network", cfg, child)
        self.access = Access("access", cfg, child)
        self.nodes = Nodes("nodes", cfg, self.network, self.access, child)
        self.reserved = ReservedAddress("reserved-address", cfg, self.nodes.app_nodes[0].droplet, child)
        self.cluster = Cluster("cluster", cfg, self.nodes, self.access, child)
        self.storage = SharedStorage("storage", cfg, self.cluster, child)
        # nginx serves /srv/shared: each node's database step waits for its mount.
        self.database = Database("database", cfg, self.cluster,
                                 {name: [mount] for name, mount in self.storage.mounts.items()}, child)
        self.active = self.cluster.configure_resources(
            self.database.replication_password, self.reserved.address,
            [*self.database.handed_over.values(), *self.storage.mounts.values()])
        self.firewalls = Firewalls("firewalls", cfg, self.network, child)
        self.monitoring = Monitoring(
            "monitoring", cfg, self.network.stack_tag,
            [n.droplet.droplet_urn for n in self.nodes.nodes] + [self.reserved.ip.reserved_ip_urn],
            child,
        )
        self.outputs = {
            "reservedIp": self.reserved.address,
            "nodes": {
                n.name: {
                    "role": n.role,
                    "publicIpv4": n.droplet.ipv4_address,
                    "privateIpv4": n.droplet.ipv4_address_private,
                    "ssh": n.droplet.ipv4_address.apply(lambda ip: f"ssh {cfg.deploy_user}@{ip}"),
                }
                for n in self.nodes.nodes
            },
        }
        self.register_outputs(self.outputs)
