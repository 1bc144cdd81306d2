"""DigitalOcean cloud firewalls: what may reach the droplets, and what they may reach.

Three firewalls, selected by tag (a droplet may carry several; rules add up):
- public-app / public-witness: SSH from the configured ranges, ICMP, and on app
  nodes the public TCP ports.
- cluster: corosync, pcsd, GlusterFS and MariaDB, only from droplets with the
  stack's tag. Cloud firewalls also filter VPC traffic, so this is what lets the
  nodes talk to each other at all.
Outbound is limited to what nodes need: DNS, NTP, HTTP(S) for packages and the
DigitalOcean API, ICMP, the alert relay's SMTP port (alertSmtpHost), and the cluster
ports towards the stack's own nodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_digitalocean as do

from infra.config import StackConfig
from infra.naming import child_opts, role_tag, stack_tag
from infra.network import Network
from infra.ports import CLUSTER_TCP_PORT_RANGES, CLUSTER_UDP_PORT_RANGES, SSH_PORT, port_range

ANYWHERE = ["0.0.0.0/0", "::/0"]


@dataclass(frozen=True)
class Rule:
    protocol: str  # tcp, udp, icmp
    ports: str | None  # "22", "5404-5406"; None for icmp
    addresses: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class FirewallSpec:
    name: str
    tags: tuple[str, ...]
    inbound: list[Rule] = field(default_factory=list)
    outbound: list[Rule] = field(default_factory=list)


def cluster_rules(tag: str) -> list[Rule]:
    return [Rule("tcp", port_range(a, b), tags=(tag,)) for a, b in CLUSTER_TCP_PORT_RANGES.values()] + \
        [Rule("udp", port_range(a, b), tags=(tag,)) for a, b in CLUSTER_UDP_PORT_RANGES.values()]


def specs(cfg: StackConfig) -> list[FirewallSpec]:
    """Every firewall of the stack as plain data (tested without Pulumi)."""
    ssh = Rule("tcp", str(SSH_PORT), addresses=cfg.ssh_allowed_cidrs)
    icmp = Rule("icmp", None, addresses=tuple(ANYWHERE))
    public = [Rule("tcp", str(p), addresses=tuple(ANYWHERE)) for p in cfg.public_tcp_ports]
    outbound = [
        Rule("udp", "53", addresses=tuple(ANYWHERE)),
        Rule("tcp", "53", addresses=tuple(ANYWHERE)),
        Rule("udp", "123", addresses=tuple(ANYWHERE)),
        Rule("tcp", "80", addresses=tuple(ANYWHERE)),
        Rule("tcp", "443", addresses=tuple(ANYWHERE)),
        Rule("icmp", None, addresses=tuple(ANYWHERE)),
    ]
    if cfg.alert_smtp_host:  # the nodes' alert mail to the relay (its address may change: anywhere)
        outbound.append(Rule("tcp", str(cfg.alert_smtp_port), addresses=tuple(ANYWHERE)))
    result = [
        FirewallSpec(f"{stack_tag(cfg)}-public-app", (role_tag(cfg, "app"),), [ssh, icmp] + public, outbound),
        FirewallSpec(f"{stack_tag(cfg)}-cluster", (stack_tag(cfg),),
                     cluster_rules(stack_tag(cfg)), cluster_rules(stack_tag(cfg))),
    ]
    if cfg.witness:
        result.insert(1, FirewallSpec(f"{stack_tag(cfg)}-public-witness", (role_tag(cfg, "witness"),),
                                      [ssh, icmp], outbound))
    return result


def _inbound(rule: Rule) -> do.FirewallInboundRuleArgs:
    return do.FirewallInboundRuleArgs(protocol=rule.protocol, port_range=rule.ports,
                                      source_addresses=list(rule.addresses) or None,
                                      source_tags=list(rule.tags) or None)


def _outbound(rule: Rule) -> do.FirewallOutboundRuleArgs:
    return do.FirewallOutboundRuleArgs(protocol=rule.protocol, port_range=rule.ports,
                                       destination_addresses=list(rule.addresses) or None,
                                       destination_tags=list(rule.tags) or None)


class Firewalls(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, network: Network,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("do-ha-stack:firewall:Firewalls", name, None, opts)
        tags = [network.stack_tag, *network.role_tags.values()]
        self.firewalls = [
            do.Firewall(
                spec.name.removeprefix(f"{stack_tag(cfg)}-") + "-firewall",
                name=spec.name,
                tags=list(spec.tags),
                inbound_rules=[_inbound(r) for r in spec.inbound],
                outbound_rules=[_outbound(r) for r in spec.outbound],
                opts=child_opts(cfg, self, depends_on=tags),
            )
            for spec in specs(cfg)
        ]
        self.register_outputs({"firewalls": [f.name for f in self.firewalls]})
