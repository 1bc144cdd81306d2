"""MariaDB: per-node replication settings with TLS from an internal CA, each app
node's seed donor, every app node made a replica of the current primary (seeded
by a streamed physical copy when it has none, see db-seed.sh) without downtime,
then the database handed to pacemaker (ocf:heartbeat:mariadb, promotable, GTID
based)."""

from __future__ import annotations

import ipaddress
from string import Template

import pulumi
import pulumi_random as random

from infra import tuning
from infra.cluster import member_specs
from infra.config import StackConfig
from infra.internal_ca import InternalCa
from infra.naming import child_opts, droplet_name
from infra.nodes import Nodes
from infra.paths import read
from infra.ports import CLUSTER_TCP_PORT_RANGES
from infra.remote import Bundle, Connector, NodeFile, step_command

SEED_PORT = CLUSTER_TCP_PORT_RANGES["mariadb-seed"][0]


def replication_cnf(server_id: int, private_ip: str) -> str:
    return Template(read("steps/templates/mariadb-replication.cnf")).substitute(
        server_id=server_id, private_ip=private_ip, semi_sync_timeout_ms=tuning.SEMI_SYNC_TIMEOUT_MS,
        kill_conn_timeout_s=tuning.SEMI_SYNC_KILL_CONN_TIMEOUT_S)


def sync_guard_unit() -> str:
    return Template(read("steps/templates/do-ha-db-sync-guard.service")).substitute(
        poll_s=tuning.SYNC_GUARD_POLL_S, stall_s=tuning.SYNC_GUARD_STALL_S,
        backstop_ms=tuning.SYNC_GUARD_BACKSTOP_MS)


def donor_unit(private_ip: str) -> str:
    """do-ha-db-donor.service for one node: the donor listens on its private address only."""
    return Template(read("steps/templates/do-ha-db-donor.service")).substitute(
        private_ip=private_ip, port=SEED_PORT)


def sql_host_pattern(vpc_range: str) -> str:
    """The VPC as a MariaDB account host: network/netmask (10.10.0.0/255.255.240.0)."""
    net = ipaddress.IPv4Network(vpc_range)
    return f"{net.network_address}/{net.netmask}"


class Database(pulumi.ComponentResource):
    """`configured[node]`: MariaDB set up; `handed_over[node]`: left to pacemaker."""

    def __init__(self, name: str, cfg: StackConfig, nodes: Nodes, connect: Connector,
                 ready: dict[str, pulumi.Resource], cluster_formed: pulumi.Resource,
                 opts: pulumi.ResourceOptions, mark_stores: list[pulumi.Resource] | None = None) -> None:
        super().__init__("do-ha-stack:database:Database", name, None, opts)
        apps, bootstrap = nodes.app_nodes, nodes.bootstrap
        self.replication_password = random.RandomPassword(
            "replication-password", length=32, special=False, opts=child_opts(cfg, self)).result
        ca = InternalCa("db", "MariaDB", cfg, self, tuning.DB_CA_VALIDITY_HOURS)
        self.ca_cert_pem: pulumi.Output[str] = ca.cert_pem

        self.configured: dict[str, pulumi.Resource] = {}
        for server_id, node in enumerate(apps, start=1):
            issued = ca.issue(node.name, droplet_name(cfg, node.name), node.droplet.ipv4_address_private,
                              tuning.DB_CERT_VALIDITY_HOURS, tuning.DB_CERT_RENEW_BEFORE_HOURS)
            files = [
                NodeFile("/etc/mysql/tls/ca.pem", ca.cert_pem),
                NodeFile("/etc/mysql/tls/server.pem", issued.cert_pem),
                NodeFile("/etc/mysql/tls/server-key.pem", issued.key_pem, "0640", "root:mysql"),
                NodeFile("/etc/mysql/mariadb.conf.d/60-do-ha-stack.cnf",
                         node.droplet.ipv4_address_private.apply(lambda ip, s=server_id: replication_cnf(s, ip))),
                NodeFile("/etc/systemd/system/do-ha-db-donor.service",
                         node.droplet.ipv4_address_private.apply(donor_unit)),
                NodeFile("/usr/local/sbin/do-ha-db-donor", read("app/db-donor"), "0755"),
                NodeFile("/etc/systemd/system/do-ha-db-sync-guard.service", sync_guard_unit()),
                NodeFile("/usr/local/lib/do-ha-stack/db-sync-guard", read("app/db-sync-guard"), "0755"),
            ]
            self.configured[node.name] = step_command(
                f"{node.name}-db-node", "db-node", node,
                {"VPC_HOSTS": sql_host_pattern(cfg.vpc_ip_range), "VPC_RANGE": cfg.vpc_ip_range,
                 "SEED_PORT": SEED_PORT, "BOOTSTRAP": "yes" if node is bootstrap else "no",
                 "KILL_CONN_TIMEOUT_S": tuning.SEMI_SYNC_KILL_CONN_TIMEOUT_S},
                connect, Bundle({"REPL_PASSWORD": self.replication_password}, files),
                # mark_stores: every node's cluster-node, which installs the sync marks' store
                # and the promotion's check of them; the guard that writes them comes after
                cfg, self, depends_on=[ready[node.name], *(mark_stores or [])])

        # Every app node, the bootstrap node too: whichever node is replaced is seeded
        # from whichever node is primary then (on a first bring-up, the bootstrap node,
        # whose own step finds itself the primary and does nothing).
        members = member_specs(cfg, apps)
        self.seeded: dict[str, pulumi.Resource] = {
            node.name: step_command(
                f"{node.name}-db-seed", "db-seed", node,
                {"APP_MEMBERS": members, "BOOTSTRAP": droplet_name(cfg, bootstrap.name),
                 "SEED_PORT": SEED_PORT, "WAIT_S": tuning.DB_SEED_WAIT_S},
                connect, Bundle({"REPL_PASSWORD": self.replication_password}),
                cfg, self, depends_on=list(self.configured.values()))
            for node in apps
        }
        # Replicas first, then the bootstrap primary (see db-handover.sh).
        self.handed_over: dict[str, pulumi.Resource] = {}
        for node in sorted(apps, key=lambda n: n is bootstrap):
            first = node is bootstrap
            self.handed_over[node.name] = step_command(
                f"{node.name}-db-handover", "db-handover", node,
                {"BOOTSTRAP": "yes" if first else "no", "JOIN_WAIT_S": tuning.DB_JOIN_WAIT_S},
                connect, Bundle(), cfg, self,
                depends_on=[cluster_formed, self.configured[node.name], *self.seeded.values(),
                            *(list(self.handed_over.values()) if first else [])])
        self.register_outputs({"caCertPem": self.ca_cert_pem})
