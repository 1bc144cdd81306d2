"""The stack's private network, its tags and the reserved (floating) IP."""

from __future__ import annotations

import pulumi
import pulumi_digitalocean as do

from infra.config import StackConfig
from infra.naming import child_opts, role_tag, stack_tag


class Network(pulumi.ComponentResource):
    """VPC plus the tags that firewalls and alerts select droplets by.

    Tags are created explicitly: a firewall that names a tag which does not exist
    yet is rejected by the API.
    """

    def __init__(self, name: str, cfg: StackConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("do-ha-stack:network:Network", name, None, opts)
        self.vpc = do.Vpc(
            "vpc",
            name=stack_tag(cfg),
            region=cfg.region,
            ip_range=cfg.vpc_ip_range,
            description=f"do-ha-stack {cfg.stack}: private cluster network",
            opts=child_opts(cfg, self),
        )
        self.stack_tag = do.Tag("stack-tag", name=stack_tag(cfg), opts=child_opts(cfg, self))
        roles = ["app"] + (["witness"] if cfg.witness else [])
        self.role_tags = {
            role: do.Tag(f"{role}-tag", name=role_tag(cfg, role), opts=child_opts(cfg, self))
            for role in roles
        }
        self.register_outputs({"vpcId": self.vpc.id})


class ReservedAddress(pulumi.ComponentResource):
    """The reserved IP, assigned once to the first app node.

    After that the cluster owns the assignment (it moves the IP on failover), so
    the assignment ignores later changes of droplet: a `pulumi up` or
    `pulumi up --refresh` must never move the IP back.
    """

    def __init__(self, name: str, cfg: StackConfig, initial_droplet: do.Droplet,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("do-ha-stack:network:ReservedAddress", name, None, opts)
        self.ip = do.ReservedIp("reserved-ip", region=cfg.region, opts=child_opts(cfg, self))
        self.assignment = do.ReservedIpAssignment(
            "reserved-ip-initial-assignment",
            ip_address=self.ip.ip_address,
            droplet_id=initial_droplet.id.apply(int),
            opts=child_opts(cfg, self, ignore_changes=["dropletId"]),
        )
        self.address: pulumi.Output[str] = self.ip.ip_address
        self.register_outputs({"address": self.address})
