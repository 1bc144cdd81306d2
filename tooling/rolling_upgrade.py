"""`make upgrade STACK=… [NODES=witness,app2]`: Debian's updates, the cluster's own
packages and a new kernel included, installed on one node at a time, each node
rebooted, while the stack serves.

    python -m tooling.rolling_upgrade --stack prod [--nodes witness,app2] [status options]

Unattended upgrades hold the cluster's packages back on every node (README,
"Rolling upgrades"); this is how they reach the nodes. Nodes go in this order:
the witness, then the replicas, the active node last. For each:

1. the stack must be healthy (`make status`), else the upgrade stops there,
   naming what is wrong and the nodes already done;
2. the active node first hands the active role to a replica in sync (a planned
   switchover, as `make switchover`: the only pause in writes);
3. standby, from another member: pacemaker stops or moves what runs there;
4. `apt-get update` and `dist-upgrade` (no questions, changed config files kept;
   a failed index download stops the upgrade before anything is installed);
5. reboot, and wait until the node runs a new boot; then it leaves standby;
6. wait until the stack is healthy again: the replica caught up, the brick healed.

A node that fails in 4 or 5 stays in standby; the message says how to go on.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from infra import tuning
from infra.config import StackConfig
from infra.naming import droplet_name
from tooling.health import Report
from tooling.node_ops import (
    OperationError, Operations, add_ssh_options, cli_operations, member_to_drive_from, pcs, run_operation, settled,
    stack_config,
)
from tooling.switchover import app_hosts, switch

BOOT_ID = "/proc/sys/kernel/random/boot_id"
# What runs on each node (as root, sent on stdin): apt-get update and dist-upgrade.
UPGRADE_SCRIPT = Path(__file__).with_name("upgrade-node.sh")
_SUMMARY = re.compile(r"^\d+ upgraded, \d+ newly installed, \d+ to remove.*$", re.MULTILINE)


@dataclass(frozen=True)
class Upgrade:
    stack: str
    nodes: tuple[str, ...]  # those asked for (every node when none were)
    hosts: dict[str, str]  # every node's pacemaker node name (its droplet's name)
    apps: dict[str, str]  # the app nodes' (what a switchover takes)


def plan(cfg: StackConfig, nodes: str | None) -> Upgrade:
    """Check the request against the stack's config."""
    names = [n for n in re.split(r"[\s,]+", (nodes or "").strip()) if n] or list(cfg.node_names)
    unknown = [n for n in names if n not in cfg.node_names]
    if unknown:
        raise OperationError(f"NODES: {', '.join(unknown)} is not a node of {cfg.stack}; allowed: "
                             f"{', '.join(cfg.node_names)}")
    if len(set(names)) != len(names):
        raise OperationError(f"NODES={nodes!r} names a node twice")
    return Upgrade(cfg.stack, tuple(names), {n: droplet_name(cfg, n) for n in cfg.node_names}, app_hosts(cfg))


def order(nodes: Sequence[str], primary: str | None) -> list[str]:
    """The witness first, then the replicas by name, the active node last: the active
    role moves once, onto a node already upgraded."""
    return sorted(nodes, key=lambda n: (n == primary, n != "witness", n))


def upgrade(u: Upgrade, ops: Operations) -> Report:
    report = ops.health()
    done: list[str] = []
    for node in order(u.nodes, report.database.get("primary")):
        if done:
            report = ops.health()
        if report.problems:
            where = f"after {', '.join(done)}" if done else "before any node"
            raise OperationError(f"stopping {where}: {u.stack} is degraded, and taking {node} out now could "
                                 "break quorum or the last good copy of the data:\n  " + "\n  ".join(report.problems))
        started = time.monotonic()
        if report.database.get("primary") == node:
            moved = switch(u.stack, u.apps, ops, before=report)
            if not moved.healthy:
                raise OperationError(f"the switchover away from {node} is done but the stack is not healthy yet; "
                                     f"{node} was not upgraded:\n  " + "\n  ".join(moved.problems))
            report = moved
        helper = member_to_drive_from(report, node)
        ops.say(f"{node}: standby (what runs there stops or moves)")
        pcs(ops, helper, "node", "standby", u.hosts[node], f"--wait={tuning.REPLACE_DRAIN_TIMEOUT_S}")
        stay = f"{node} stays in standby: fix it, then `pcs node unstandby {u.hosts[node]}` on {helper}"
        boot = _boot_id(ops, node)
        ops.say(f"{node}: apt-get update, dist-upgrade")
        if ops.run_with_input is None:
            raise OperationError("this way of reaching the nodes cannot send the upgrade script")
        result = ops.run_with_input(node, ["sudo", "-n", "sh", "-s"], UPGRADE_SCRIPT.read_text())
        if result.returncode != 0:
            raise OperationError(f"the upgrade failed on {node} (exit {result.returncode}): "
                                 f"{(result.stderr or result.stdout).strip()[-600:]}\n{stay}")
        summary = _SUMMARY.findall(result.stdout)
        ops.say(f"{node}: {summary[-1] if summary else 'apt-get printed no summary'}; rebooting")
        ops.run_on(node, ["sudo", "-n", "systemctl", "reboot"])  # its session ends with the node's
        _wait_for_new_boot(ops, node, boot, stay)
        ops.say(f"{node}: back; leaving standby")
        pcs(ops, helper, "node", "unstandby", u.hosts[node])
        report = settled(ops)
        if not report.healthy:
            raise OperationError(f"{node} is upgraded and back, but {u.stack} did not become healthy within "
                                 f"{tuning.REPLACE_SETTLE_TIMEOUT_S} s; the other nodes were left alone:\n  "
                                 + "\n  ".join(report.problems))
        done.append(node)
        ops.say(f"{node}: done in {time.monotonic() - started:.0f} s")
    return report


def _boot_id(ops: Operations, node: str) -> str:
    result = ops.run_on(node, ["cat", BOOT_ID])
    if result.returncode != 0 or not result.stdout.strip():
        raise OperationError(f"cannot read {node}'s boot id: {(result.stderr or result.stdout).strip()[-300:]}")
    return result.stdout.strip()


def _wait_for_new_boot(ops: Operations, node: str, before: str, stay: str) -> None:
    for _ in range(tuning.UPGRADE_REBOOT_TIMEOUT_S // tuning.UPGRADE_REBOOT_POLL_S):
        ops.sleep(tuning.UPGRADE_REBOOT_POLL_S)
        now = ops.run_on(node, ["cat", BOOT_ID])
        if now.returncode == 0 and now.stdout.strip() not in ("", before):
            return
    raise OperationError(f"{node} did not come back from its reboot within {tuning.UPGRADE_REBOOT_TIMEOUT_S} s "
                         f"(the control panel's console shows why); {stay}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.rolling_upgrade", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", required=True)
    parser.add_argument("--nodes", help="comma-separated nodes to upgrade (default: all), e.g. witness,app2")
    add_ssh_options(parser)
    args = parser.parse_args(argv)
    return run_operation(lambda: upgrade(plan(stack_config(args.stack), args.nodes),
                                         cli_operations(args, os.environ)))


if __name__ == "__main__":
    sys.exit(main())
