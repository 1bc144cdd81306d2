"""The stack's private network, its tags and the reserved (floating) IP."""

from __future__ import annotations

import pulumi
import pulumi_digitalocean as do

from infra import tuning
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
    """The reserved IP, reserved in the region and never assigned by the program.

    The cluster owns the assignment: pacemaker's reserved-ip agent assigns it to
    the active node when it starts there, the first time and on every failover.
    A program-side assignment would fight it: a `digitalocean_reserved_ip_assignment`
    drops itself from state on refresh once the IP has moved (its Read clears the
    id), so the next `up` would assign the IP back to the first node; and a
    `droplet_id` on the reserved IP itself would be diffed against the holder.
    Without either, refresh only records who holds the IP and no `up` moves it.
    """

    def __init__(self, name: str, cfg: StackConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("do-ha-stack:network:ReservedAddress", name, None, opts)
        self.ip = do.ReservedIp("reserved-ip", region=cfg.region, opts=child_opts(cfg, self))
        self.address: pulumi.Output[str] = self.ip.ip_address
        if cfg.dns_zone:  # the site's name points at the reserved IP, whoever holds it
            name = cfg.domain.removesuffix(cfg.dns_zone).rstrip(".") or "@"
            do.DnsRecord("site-record", domain=cfg.dns_zone, type="A", name=name, value=self.address,
                         ttl=tuning.SITE_DNS_TTL_S, opts=child_opts(cfg, self))
        self.register_outputs({"address": self.address})
