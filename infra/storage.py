"""GlusterFS: one volume replicated over the app nodes, the witness as arbiter,
mounted at /srv/shared on every app node."""

from __future__ import annotations

import pulumi

from infra import tuning
from infra.config import StackConfig
from infra.nodes import Nodes
from infra.remote import Bundle, Connector, step_command

VOLUME = "shared"
MOUNTPOINT = "/srv/shared"
BRICK_DIR = "/var/lib/do-ha-stack/bricks/shared"


# Data bricks live on the first two app nodes; more app nodes mount the volume as
# clients. The arbiter layout (replica 3 arbiter 1) takes exactly two data bricks
# and the witness's arbiter per replica set: a third data brick would mean a
# full third copy written synchronously on every write (slower, and no arbiter),
# and a second replica set would need three more bricks. So scaling out adds web
# capacity, not copies, and scaling in never takes a brick away.
DATA_BRICKS = 2


class SharedStorage(pulumi.ComponentResource):
    """`volume`: created and started on the bootstrap node; `mounts[node]`: mounted there."""

    def __init__(self, name: str, cfg: StackConfig, nodes: Nodes, connect: Connector,
                 prepared: dict[str, pulumi.Resource], opts: pulumi.ResourceOptions) -> None:
        super().__init__("do-ha-stack:storage:SharedStorage", name, None, opts)
        # App bricks first, the arbiter (witness) last: gluster makes the last
        # brick of each replica set the arbiter.
        data = nodes.app_nodes[:DATA_BRICKS]
        bricks = data + ([nodes.witness] if nodes.witness else [])
        if not cfg.witness:
            pulumi.log.warn("no witness: the shared volume is plain replica 2, which can split-brain; "
                            "set do-ha-stack:witness true for an arbiter", resource=self)
        brick_ips = pulumi.Output.all(*[n.droplet.ipv4_address_private for n in bricks])
        client_ips = pulumi.Output.all(*[n.droplet.ipv4_address_private for n in nodes.nodes])
        self.volume: pulumi.Resource = step_command(
            "storage-volume", "storage-volume", nodes.bootstrap,
            {"VOLUME": VOLUME, "BRICK_DIR": BRICK_DIR, "ARBITER": "yes" if cfg.witness else "no",
             "ALLOW": client_ips.apply(",".join), "PEERS": brick_ips.apply(" ".join),
             "PING_TIMEOUT_S": tuning.GLUSTER_PING_TIMEOUT_S, "QUORUM_TYPE": tuning.GLUSTER_QUORUM_TYPE,
             "PROBE_TIMEOUT_S": tuning.GLUSTER_PROBE_TIMEOUT_S},
            connect, Bundle(), cfg, self, depends_on=list(prepared.values()))
        servers = pulumi.Output.all(*[n.droplet.ipv4_address_private for n in data])
        self.mounts: dict[str, pulumi.Resource] = {}
        for node in nodes.app_nodes:
            # A brick node fetches the volume layout from itself first, a client node
            # from the first brick node; the other brick nodes are the backups.
            own = data.index(node) if node in data else 0
            self.mounts[node.name] = step_command(
                f"{node.name}-shared-mount", "storage-mount", node,
                {"VOLUME": VOLUME, "MOUNTPOINT": MOUNTPOINT,
                 "SERVER": servers.apply(lambda a, i=own: a[i]),
                 "BACKUP_SERVERS": servers.apply(lambda a, i=own: ":".join(a[:i] + a[i + 1:]))},
                connect, Bundle(), cfg, self, depends_on=[self.volume])
        self.register_outputs({"mountpoint": MOUNTPOINT})
