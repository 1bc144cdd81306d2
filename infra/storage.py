"""GlusterFS: one volume with a full copy on each of the first two app nodes and
the witness as arbiter, mounted at /srv/shared on every app node.

GlusterFS speaks TLS only, on its management connections and its I/O, under a
CA of its own (`StorageTls`): every node (server and client alike) holds a key
and a certificate named after its droplet, bricks admit exactly the members'
names, and `/var/lib/glusterd/secure-access` (cluster-node.sh) turns TLS on for
glusterd, the CLI and the mounts.

App nodes beyond the first two are peers of the pool and mount the volume, but
hold no brick: GlusterFS's arbiter layout is exactly two data bricks and one
arbiter per replica set, two full copies already survive the loss of any one
node, and a third would add a synchronous write to every file operation. Scaling
the app tier in or out therefore never moves data (see README, "Scaling")."""

from __future__ import annotations

from string import Template

import pulumi

from infra import tuning
from infra.config import StackConfig
from infra.internal_ca import InternalCa
from infra.naming import droplet_name
from infra.nodes import Node, Nodes
from infra.paths import read
from infra.remote import Bundle, Connector, NodeFile, step_command

VOLUME = "shared"
MOUNTPOINT = "/srv/shared"
BRICK_DIR = "/var/lib/do-ha-stack/bricks/shared"
# Where GlusterFS looks for its TLS files (fixed in GlusterFS itself).
TLS_CERT, TLS_KEY, TLS_CA = "/etc/ssl/glusterfs.pem", "/etc/ssl/glusterfs.key", "/etc/ssl/glusterfs.ca"


# Data bricks live on the first two app nodes; more app nodes are pool peers that
# mount the volume. The arbiter layout (replica 3 arbiter 1) takes exactly two data
# bricks and the witness's arbiter per replica set: a third data brick would mean a
# full third copy written synchronously on every write (slower, and no arbiter),
# and a second replica set would need three more bricks. So scaling out adds web
# capacity, not copies, and scaling in never takes a brick away.
DATA_BRICKS = 2


def reconnect_files() -> list[NodeFile]:
    """The watch that restarts a mount or self-heal daemon stuck on a brick's old
    port (cloudinit/app/gluster-reconnect), with its units."""
    service = Template(read("app/templates/do-ha-gluster-reconnect.service")).substitute(
        volume=VOLUME, mountpoint=MOUNTPOINT, misses=tuning.GLUSTER_RECONNECT_MISSES,
        holdoff_s=tuning.GLUSTER_RECONNECT_HOLDOFF_S)
    timer = Template(read("app/templates/do-ha-gluster-reconnect.timer")).substitute(
        interval_s=tuning.GLUSTER_RECONNECT_INTERVAL_S)
    return [NodeFile("/usr/local/lib/do-ha-stack/gluster-reconnect", read("app/gluster-reconnect"), "0755"),
            NodeFile("/etc/systemd/system/do-ha-gluster-reconnect.service", service),
            NodeFile("/etc/systemd/system/do-ha-gluster-reconnect.timer", timer)]


def brick_nodes(nodes: Nodes) -> list[Node]:
    """The nodes holding a brick, in the volume's brick order (the arbiter last)."""
    return nodes.app_nodes[:DATA_BRICKS] + ([nodes.witness] if nodes.witness else [])


class StorageTls(pulumi.ComponentResource):
    """The storage CA and each node's key and certificate: `files[node]`, for the step
    that prepares the node's glusterd (cluster-node)."""

    def __init__(self, name: str, cfg: StackConfig, nodes: Nodes, opts: pulumi.ResourceOptions) -> None:
        super().__init__("do-ha-stack:storage:StorageTls", name, None, opts)
        ca = InternalCa("storage", "GlusterFS", cfg, self, tuning.STORAGE_CA_VALIDITY_HOURS)
        self.files: dict[str, list[NodeFile]] = {}
        for node in nodes.nodes:
            issued = ca.issue(node.name, droplet_name(cfg, node.name), node.droplet.ipv4_address_private,
                              tuning.STORAGE_CERT_VALIDITY_HOURS, tuning.STORAGE_CERT_RENEW_BEFORE_HOURS)
            self.files[node.name] = [NodeFile(TLS_CA, ca.cert_pem), NodeFile(TLS_CERT, issued.cert_pem),
                                     NodeFile(TLS_KEY, issued.key_pem, "0600", secret=True)]
        self.register_outputs({})


class SharedStorage(pulumi.ComponentResource):
    """`volume`: created and started (or converged) from the control node; `mounts[node]`: mounted there."""

    def __init__(self, name: str, cfg: StackConfig, nodes: Nodes, connect: Connector,
                 prepared: dict[str, pulumi.Resource], opts: pulumi.ResourceOptions) -> None:
        super().__init__("do-ha-stack:storage:SharedStorage", name, None, opts)
        # Data bricks first, the arbiter (witness) last: gluster makes the last
        # brick of each replica set the arbiter.
        if not cfg.witness:
            pulumi.log.warn("no witness: the shared volume is plain replica 2, which can split-brain; "
                            "set do-ha-stack:witness true for an arbiter", resource=self)
        ips = pulumi.Output.all(*[n.droplet.ipv4_address_private for n in nodes.nodes])
        bricks = pulumi.Output.all(*[n.droplet.ipv4_address_private for n in brick_nodes(nodes)])
        self.volume: pulumi.Resource = step_command(
            "storage-volume", "storage-volume", nodes.control,
            {"VOLUME": VOLUME, "BRICK_DIR": BRICK_DIR, "ARBITER": "yes" if cfg.witness else "no",
             "ALLOW": ips.apply(",".join),
             # The names in the members' certificates: glustershd on every node is a client too.
             "TLS_ALLOW": ",".join(droplet_name(cfg, n.name) for n in nodes.nodes),
             "PEERS": ips.apply(" ".join), "BRICKS": bricks.apply(" ".join),
             "PING_TIMEOUT_S": tuning.GLUSTER_PING_TIMEOUT_S, "QUORUM_TYPE": tuning.GLUSTER_QUORUM_TYPE,
             "PROBE_TIMEOUT_S": tuning.GLUSTER_PROBE_TIMEOUT_S, "HEAL_WAIT_S": tuning.GLUSTER_HEAL_WAIT_S,
             "HEAL_NUDGE_S": tuning.GLUSTER_HEAL_NUDGE_S},
            connect, Bundle(), cfg, self, depends_on=list(prepared.values()))
        app_ips = pulumi.Output.all(*[n.droplet.ipv4_address_private for n in nodes.app_nodes])
        self.mounts: dict[str, pulumi.Resource] = {}
        for i, node in enumerate(nodes.app_nodes):
            # Every app node is a pool peer: it fetches the volume layout from its own
            # glusterd first, the other app nodes as backups.
            self.mounts[node.name] = step_command(
                f"{node.name}-shared-mount", "storage-mount", node,
                {"VOLUME": VOLUME, "MOUNTPOINT": MOUNTPOINT, "TLS": "yes", "SERVER": app_ips.apply(lambda a, i=i: a[i]),
                 "BACKUP_SERVERS": app_ips.apply(lambda a, i=i: ":".join(a[:i] + a[i + 1:]))},
                connect, Bundle(files=reconnect_files()), cfg, self, depends_on=[self.volume])
        self.register_outputs({"mountpoint": MOUNTPOINT})
