"""The lab's fixed layout: names, addresses and paths. Everything stays inside
network namespaces the lab creates; no lab address is ever routed off this machine.

    [dohs-lab namespace: the "internet" side, the DO API and metadata stand-in]
        br-pub 203.0.113.1/24 (+ .250 as a second client, 169.254.169.254)
          |-- eth0 of each node: public 203.0.113.H, anchor 10.19.0.H
          |-- eth0 of the auditor namespace: 203.0.113.251
        br-vpc (no address: the lab namespace is outside the VPC)
          |-- eth1 of each node: private 10.99.0.H

H is 11 + the node's index for the nodes of the first bring-up. A replaced node
(`python -m lab replace`) is a new droplet: its generation (kept in the lab's
state) moves it to the next block of ten addresses and gives it a new droplet id,
as DigitalOcean gives a replacement droplet new addresses and a new id.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PREFIX = "dohs-"
SWITCH_NS = f"{PREFIX}lab"
PUBLIC_NET = "203.0.113.0/24"
GATEWAY = "203.0.113.1"
SECOND_CLIENT = "203.0.113.250"  # the fail2ban test bans this one, never the gateway
# An internet client outside every range the lab stack trusts (sshAllowedCidrs is
# PUBLIC_NET): the canary must refuse its writes.
STRANGER_IP = "198.51.100.66"
# An admin workstation of its own (namespace + address), for scans such as
# ssh-audit whose connections count against the SSH rate limit per source.
AUDITOR_NS = f"{PREFIX}auditor"
AUDITOR_IP = "203.0.113.251"
RESERVED_IP = "203.0.113.100"
METADATA_IP = "169.254.169.254"
API_PORT = 8080
API_URL = f"http://{GATEWAY}:{API_PORT}"  # the lab's own test clients and the agent sandbox
API_TLS_PORT = 8443
LAB_API_URL = f"https://{GATEWAY}:{API_TLS_PORT}"  # the lab stack's clusterApiUrl (lab/stack.yaml)
VPC_RANGE = "10.99.0.0/24"
STACK = "lab"
# How the lab's own clients (replay, probes, tests) call ssh: keys only, lab
# host keys are throwaway.
SSH_OPTS = ["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10"]


def lab_dir() -> Path:
    return Path(os.environ.get("DO_HA_LAB_DIR", "/var/lib/do-ha-stack-lab"))


def run_dir() -> Path:
    """Per-run state (overlays, render, keys, logs); removed by `make lab-down`."""
    return lab_dir() / "run"


GENERATION_BLOCK = 10  # addresses per generation: room for the most nodes a stack has
FIRST_HOST = 11
# Host numbers a node never gets: the reserved IP's block (203.0.113.100), and from
# .250 the lab's own clients.
SKIPPED_BLOCKS = range(91, 111)
LAST_HOST = 249
MAX_GENERATION = 20  # the last block that fits below LAST_HOST


def host_number(index: int, generation: int) -> int:
    """The last octet of a node's addresses (public, private, anchor)."""
    if not 0 <= index < GENERATION_BLOCK:
        raise ValueError(f"node index {index}: the lab has room for {GENERATION_BLOCK} nodes")
    if not 0 <= generation <= MAX_GENERATION:
        raise ValueError(f"generation {generation}: a lab node can be replaced {MAX_GENERATION} times; "
                         "bring the lab up again")
    host = FIRST_HOST + GENERATION_BLOCK * generation + index
    if host >= SKIPPED_BLOCKS.start:
        host += len(SKIPPED_BLOCKS)
    assert host <= LAST_HOST
    return host


@dataclass(frozen=True)
class LabNode:
    name: str  # app1, app2, witness (the program's node names)
    index: int
    # Where the node lives: the lab's own namespaces and run directory, unless another
    # user of the lab's code (the agent sandbox) gives its own.
    prefix: str = PREFIX
    base: Path | None = None  # None: run_dir(), looked up when used
    generation: int = 0  # how many times the node was replaced (new droplet, new addresses)

    @property
    def netns(self) -> str:
        return f"{self.prefix}{self.name}"

    @property
    def machine(self) -> str:
        return f"{self.prefix}{self.name}"

    @property
    def host(self) -> int:
        return host_number(self.index, self.generation)

    @property
    def public_ip(self) -> str:
        return f"203.0.113.{self.host}"

    @property
    def private_ip(self) -> str:
        return f"10.99.0.{self.host}"

    @property
    def anchor_ip(self) -> str:
        return f"10.19.0.{self.host}"

    @property
    def droplet_id(self) -> int:
        return 5000 + 100 * self.generation + self.index

    @property
    def veth_pub(self) -> str:  # lab-side end; 15 characters at most
        return f"p-{self.name}"[:15]

    @property
    def veth_vpc(self) -> str:
        return f"v-{self.name}"[:15]

    @property
    def dir(self) -> Path:
        return (self.base or run_dir()) / "nodes" / self.name

    @property
    def root(self) -> Path:
        return self.dir / "root"


def nodes_for(names: list[str], prefix: str = PREFIX, base: Path | None = None,
              generations: Mapping[str, int] | None = None, indexes: Mapping[str, int] | None = None,
              ) -> list[LabNode]:
    """LabNodes for `names` (the program's order). A node's index (its address slot)
    is its place in `names` unless `indexes` fixes it: a node added later gets a slot
    of its own, so no other node's addresses change."""
    slots = indexes or {}
    return [LabNode(name, slots.get(name, i), prefix, base, (generations or {}).get(name, 0))
            for i, name in enumerate(names)]
