"""The lab's command line (root):

    python -m lab up          # make lab: bring the lab stack up (lab.bringup); with
                              # LAB_NODE_DISKS=memory each node's disk is its own (lab.containers)
    python -m lab down        # make lab-down: remove everything the lab made
    python -m lab status      # the running lab's state
    python -m lab boot NODE   # start a node again (the API stand-in's power_on)
    python -m lab health [ARGS]  # make status STACK=lab: tooling.status against the lab
    python -m lab replace NODE  # a new droplet for NODE, as `pulumi up --replace` (lab.replace)
    python -m lab scale COUNT   # the app tier scaled to COUNT nodes (lab.scale)
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from lab.bringup import boot_again, check_node_disks, down, up
from lab.replace import replace
from lab.scale import scale
from lab.containers import load_state, log, state_file
from lab.health import status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab")
    parser.add_argument("action", choices=["up", "down", "status", "boot", "health", "replace", "scale"])
    parser.add_argument("node", nargs="?", help="for boot: the node to start again (power_on); "
                        "for replace: the node to replace; for scale: the number of app nodes")
    argv = sys.argv[1:] if argv is None else argv
    # everything after `health` is tooling.status's
    args = parser.parse_args(argv[:1] if argv[:1] == ["health"] else argv)
    if os.geteuid() != 0:
        print("the lab needs root (namespaces, mounts, containers)", file=sys.stderr)
        return 1
    if args.action == "up":
        node_disks = os.environ.get("LAB_NODE_DISKS", "host")
        check_node_disks(node_disks)  # before anything is made
        try:
            up(node_disks)
        except BaseException:
            log("bring-up failed; the lab is left for inspection, `make lab-down` removes it")
            raise
    elif args.action == "down":
        down()
    elif args.action in ("boot", "replace", "scale") and not args.node:
        parser.error(f"{args.action} needs {'a count' if args.action == 'scale' else 'the name of a node'}")
    elif args.action == "boot":
        boot_again(args.node)
    elif args.action == "health":
        return status(argv[1:]).returncode
    elif args.action == "replace":
        print(json.dumps(replace(args.node), indent=2))
    elif args.action == "scale":
        if not args.node.isdigit():
            parser.error(f"scale: {args.node!r} is not a number of app nodes")
        print(json.dumps(scale(int(args.node)), indent=2))
    else:
        print(json.dumps(load_state(), indent=2) if state_file().exists() else "no lab")
    return 0


if __name__ == "__main__":
    sys.exit(main())
