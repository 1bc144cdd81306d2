"""GlusterFS: one volume replicated over the app nodes, the witness as arbiter,
mounted at /srv/shared on every app node."""

from __future__ import annotations

import pulumi
import pulumi_command as command

from infra.cluster import Cluster, connection
from infra.config import StackConfig
from infra.naming import child_opts
from infra.remote import Bundle, step_command

VOLUME = "shared"
MOUNTPOINT = "/srv/shared"
BRICK_DIR = "/var/lib/do-ha-stack/bricks/shared"


class SharedStorage(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, cluster: Cluster,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("do-ha-stack:storage:SharedStorage", name, None, opts)
        nodes = cluster.nodes
        # App bricks first, the arbiter (witness) last: gluster makes the last
        # brick of each replica set the arbiter.
        ordered = nodes.app_nodes + [n for n in nodes.nodes if n.role == "witness"]
        if not cfg.witness:
            pulumi.log.warn("no witness: the shared volume is plain replica 2, which can split-brain; "
                            "set do-ha-stack:witness true for an arbiter", resource=self)
        ips = pulumi.Output.all(*[n.droplet.ipv4_address_private for n in ordered])
        self.volume = step_command(
            "storage-volume", "storage-volume",
            ips.apply(lambda a: [VOLUME, BRICK_DIR, "yes" if cfg.witness else "no", ",".join(a), *a]),
            connection(cfg, cluster.bootstrap, cluster.access), Bundle(),
            child_opts(cfg, self, deleted_with=cluster.bootstrap.droplet,
                       depends_on=list(cluster.prepared.values())))
        app_ips = pulumi.Output.all(*[n.droplet.ipv4_address_private for n in nodes.app_nodes])
        self.mounts: dict[str, command.remote.Command] = {}
        for i, node in enumerate(nodes.app_nodes):
            # Each node fetches the volume layout from itself first, the others as backups.
            args = app_ips.apply(lambda a, i=i: [VOLUME, MOUNTPOINT, a[i], ":".join(a[:i] + a[i + 1:])])
            self.mounts[node.name] = step_command(
                f"{node.name}-shared-mount", "storage-mount", args,
                connection(cfg, node, cluster.access), Bundle(),
                child_opts(cfg, self, deleted_with=node.droplet, depends_on=[self.volume]))
        self.register_outputs({"mountpoint": MOUNTPOINT})
