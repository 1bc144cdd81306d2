"""Make the DigitalOcean stand-in's actions real in the lab.

The API stand-in (lab.fake_do, running in the lab's switch namespace) calls
    HOOK assign IP DROPLET_ID | unassign IP | power_off ID | power_on ID | reboot ID
when an action completes. Like DigitalOcean's edge, the reserved IP is translated
to the holder's anchor address (metadata: interfaces/public/0/anchor_ipv4), so
clients in the lab reach whichever node holds it. power_off is a hard stop (the
container's whole PID namespace is killed); power_on boots the node again.
"""

from __future__ import annotations

import subprocess
import sys
import time

from infra.paths import REPO_ROOT
from lab.containers import kill_node, running_nodes
from lab.topology import LabNode

NFT_TABLE = "reserved_ip"


def _node(droplet_id: str) -> LabNode:
    for node in running_nodes() or []:
        if node.droplet_id == int(droplet_id):
            return node
    raise SystemExit(f"no lab node has droplet id {droplet_id}")


def _nft(script: str) -> None:
    subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True)


def route_reserved_ip(ip: str, node: LabNode | None) -> None:
    """Point `ip` at `node`'s anchor address (None: nowhere). Runs in the switch namespace."""
    rules = "" if node is None else (
        f"add rule ip {NFT_TABLE} output ip daddr {ip} dnat to {node.anchor_ip}\n"
        f"add rule ip {NFT_TABLE} prerouting ip daddr {ip} dnat to {node.anchor_ip}\n")
    _nft(f"table ip {NFT_TABLE} {{\n"
         "  chain output { type nat hook output priority -100; }\n"
         "  chain prerouting { type nat hook prerouting priority -100; }\n}\n"
         f"flush chain ip {NFT_TABLE} output\nflush chain ip {NFT_TABLE} prerouting\n" + rules)
    if node is not None:
        subprocess.run(["ip", "route", "replace", f"{node.anchor_ip}/32", "via", node.public_ip], check=True)


def power_off(node: LabNode) -> None:
    kill_node(node)


def power_on(node: LabNode) -> None:
    # The stand-in runs with the host's mount namespace (nsenter --net only), which
    # nspawn needs: `ip netns exec` would remount /sys and hide the cgroups.
    subprocess.run([sys.executable, "-m", "lab", "boot", node.name], cwd=REPO_ROOT, check=True)


def main(argv: list[str]) -> int:
    verb, *args = argv
    if verb == "assign":
        route_reserved_ip(args[0], _node(args[1]))
    elif verb == "unassign":
        route_reserved_ip(args[0], None)
    elif verb == "power_off":
        power_off(_node(args[0]))
    elif verb == "power_on":
        power_on(_node(args[0]))
    elif verb == "reboot":
        power_off(_node(args[0]))
        time.sleep(1)
        power_on(_node(args[0]))
    else:
        print(f"unknown hook verb {verb!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
