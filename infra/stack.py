"""The top-level component: one HA web stack per Pulumi stack.

It reads top to bottom in bootstrap order; each component gets what it needs
explicitly and hands on only what later ones depend on.
"""

from __future__ import annotations

import pulumi

from infra.access import Access
from infra.alerts import AlertMail
from infra.backups import Backups
from infra.cluster import Cluster
from infra.config import StackConfig, secret_setting
from infra.database import Database
from infra.failover import Failover
from infra.firewall import Firewalls
from infra.first_boot import FirstBoot
from infra.logins import NodeAccess
from infra.monitoring import Monitoring
from infra.network import Network, ReservedAddress
from infra.nodes import Nodes
from infra.remote import Connector
from infra.site_certificate import SiteCertificate
from infra.storage import SharedStorage, StorageTls
from infra.web import Web


class HaStack(pulumi.ComponentResource):
    def __init__(self, cfg: StackConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("do-ha-stack:index:HaStack", cfg.stack, None,
                         pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(protect=cfg.protect)))
        child = pulumi.ResourceOptions(parent=self, protect=cfg.protect)

        # Cloud resources: network, keys, droplets (hardened by their user-data), firewalls.
        network = Network("network", cfg, child)
        access = Access("access", cfg, child)
        nodes = Nodes("nodes", cfg, network, access, child)
        Firewalls("firewalls", cfg, network, child)
        reserved = ReservedAddress("reserved-address", cfg, child)

        # The bootstrap over SSH, in order.
        connect = Connector(cfg.deploy_user, access.automation_private_key)
        first_boot = FirstBoot("first-boot", cfg, nodes, connect, child)
        connect = connect.pinned(first_boot.host_keys)  # every later command verifies its node's host key
        NodeAccess("node-access", cfg, nodes, connect, first_boot.ready, access.automation_public_key, child)
        alerts = AlertMail("alerts", cfg, nodes, connect, first_boot.ready, child)
        storage_tls = StorageTls("storage-tls", cfg, nodes, child)
        cluster = Cluster("cluster", cfg, nodes, connect, first_boot.ready,
                          secret_setting("failoverApiToken"), storage_tls.files, child)
        storage = SharedStorage("storage", cfg, nodes, connect, cluster.prepared, child)
        database = Database("database", cfg, nodes, connect, first_boot.ready, cluster.formed, child,
                            mark_stores=list(cluster.prepared.values()))
        web = Web("web", cfg, nodes, connect, storage.mounts, child)
        failover = Failover("failover", cfg, nodes, connect, reserved.address, database.replication_password,
                            [cluster.formed, *database.handed_over.values(), *web.installed.values(),
                             *alerts.installed.values()], child)
        # Backups need pacemaker's view of the database (which node is a replica) and
        # the shared volume (what is backed up, and where each run's outcome goes).
        backups = Backups("backups", cfg, nodes, connect,
                          {n.name: [database.handed_over[n.name], storage.mounts[n.name], failover.configured]
                           for n in nodes.app_nodes}, child)
        if cfg.tls == "acme":  # the CA's check needs the reserved IP on a running web tier
            SiteCertificate("acme", cfg, nodes, connect, failover.configured, child)

        # The project lists the droplets only: the API reports a reserved IP back under
        # another URN and refuses to move an assigned one (see infra/monitoring.py).
        Monitoring("monitoring", cfg, network.stack_tag, [n.droplet.droplet_urn for n in nodes.nodes],
                   reserved.address, child)

        self.outputs = {
            "reservedIp": reserved.address,
            "siteUrl": f"https://{cfg.domain}/" if cfg.https else reserved.address.apply(lambda ip: f"http://{ip}/"),
            # For monitoring outside the trusted ranges (X-Canary-Token); a Pulumi secret.
            "canaryToken": pulumi.Output.secret(web.canary_token.result),
            # restic's repository and its password: keep the password outside the stack
            # too (`pulumi stack output backupRepositoryPassword --show-secrets`).
            **({"backupRepository": backups.repository,
                "backupRepositoryPassword": pulumi.Output.secret(backups.password)} if cfg.backups else {}),
            "nodes": {
                n.name: {
                    "role": n.role,
                    "publicIpv4": n.droplet.ipv4_address,
                    "privateIpv4": n.droplet.ipv4_address_private,
                    "ssh": n.droplet.ipv4_address.apply(lambda ip: f"ssh {cfg.deploy_user}@{ip}"),
                    # What the node's first-boot gate read; make status and the node
                    # operations check it (README, "Host keys").
                    "hostKey": first_boot.host_keys[n.name],
                }
                for n in nodes.nodes
            },
        }
        self.register_outputs(self.outputs)
