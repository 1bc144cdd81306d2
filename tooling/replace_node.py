"""`make replace STACK=… NODE=…`: replace one node's droplet while the stack serves.

    python -m tooling.replace_node --stack prod --node app2 [--yes] [status options]

The supported way to roll a cloud-init change out, or to swap a broken droplet,
for any role (a replica app node, the active app node, the witness):

1. the stack apart from NODE must be healthy (`make status`), otherwise replacing
   NODE could break quorum or take the last good copy of the data away; a
   problem of NODE itself (it is why you replace it) is allowed;
2. if NODE runs the cluster-wide steps (setting controlNode), they move to
   another app node first: `pulumi config set do-ha-stack:controlNode …` and a
   `pulumi up` that re-runs them there (they converge, so nothing changes); a
   fresh droplet must never be the one that forms the cluster or the volume.
   Pulumi.<stack>.yaml changes: commit it;
3. if NODE is the primary, the active role moves first (`make switchover`, a
   pause in writes of about two seconds); then NODE is put in pacemaker standby from
   another member, so whatever else runs there moves off;
4. on a protected stack, `pulumi state unprotect` of NODE's droplet only (the
   program protects everything but what it re-derives; the new droplet is
   protected again by the same `up`);
5. `pulumi up --replace <droplet URN>`: the droplet is deleted, then created with
   the same name, and every step converges the cluster to it (corosync
   membership, the GlusterFS brick, a replica seeded from the primary, the
   fence host map);
6. NODE leaves standby, and the command waits until the stack is healthy.

One node per run: NODE takes exactly one name.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from infra import tuning
from infra.config import PROJECT
from infra.naming import droplet_name
from tooling import render
from tooling import resource_types as types
from tooling.health import Report
from tooling.mocks import run_program
from tooling.node_ops import (
    OperationError, Operations, add_operation_options, cli_operations, member_to_drive_from, pcs, run_operation,
    settled, stack_config,
)
from tooling.switchover import app_hosts, switch


@dataclass(frozen=True)
class Replacement:
    stack: str
    node: str  # the program's node name: app1.., witness
    host: str  # its droplet's name, which is its pacemaker node name
    urn: str  # its droplet's URN, as the engine has it in the state
    protect: bool
    control: str  # the app node that runs the cluster-wide steps (controlNode)
    apps: dict[str, str]  # the stack's app nodes and their pacemaker node names


def plan(stack: str, node: str) -> Replacement:
    """Check the request against the stack's config; find the droplet's URN."""
    names = [n for n in re.split(r"[\s,]+", node.strip()) if n]
    if len(names) != 1:
        raise OperationError(f"NODE={node!r}: give exactly one node; replace nodes one at a time, each after the "
                             "previous one is healthy again")
    cfg = stack_config(stack)
    if names[0] not in cfg.node_names:
        raise OperationError(f"NODE={names[0]!r} is not a node of {stack}; allowed: {', '.join(cfg.node_names)}")
    # The mocks build URNs as the engine does (tooling/mocks.py), so this is the state's URN.
    droplet = run_program(stack, render.stack_config(stack)).by_name(names[0])
    assert droplet.type == types.DROPLET
    return Replacement(stack, names[0], droplet_name(cfg, names[0]), droplet.urn, cfg.protect, cfg.control_node,
                       app_hosts(cfg))


def blocking_problems(report: Report, node: str) -> list[str]:
    """The report's problems that are not NODE's own (those name it as a word)."""
    own = re.compile(rf"(?<![\w-]){re.escape(node)}(?![\w-])")
    return [p for p in report.problems if not own.search(p)]


def replace(r: Replacement, ops: Operations, yes: bool = False) -> Report:
    before = ops.health()
    blocking = blocking_problems(before, r.node)
    if blocking:
        raise OperationError(f"refusing to replace {r.node}: the rest of {r.stack} is degraded, and replacing "
                             f"{r.node} now could break quorum or take away the last good copy of the data:\n  "
                             + "\n  ".join(blocking))
    helper = member_to_drive_from(before, r.node)
    if r.node == r.control:
        move_control(r, ops, yes)
    if before.database.get("primary") == r.node and not before.problems:
        # A planned switchover first (a pause of about two seconds); standby alone would
        # also move the primary, but through a full stop of its MariaDB (seconds more).
        # After a control move the health is taken again (an `up` ran since).
        moved = switch(r.stack, r.apps, ops, before=None if r.node == r.control else before)
        if not moved.healthy:
            raise OperationError(f"the switchover away from {r.node} is done but the stack is not healthy yet; "
                                 f"nothing was replaced:\n  " + "\n  ".join(moved.problems))
    ops.say(f"{r.node}: standby (its resources move to the other nodes first)")
    pcs(ops, helper, "node", "standby", r.host, f"--wait={tuning.REPLACE_DRAIN_TIMEOUT_S}")
    if r.protect:
        ops.say(f"{r.node}: unprotecting its droplet for this replacement only")
        if ops.pulumi(["state", "unprotect", r.urn, "--stack", r.stack, "--yes"]) != 0:
            raise OperationError(f"pulumi state unprotect failed; {r.node} is in standby: "
                               f"`pcs node unstandby {r.host}` on {helper} to undo")
    ops.say(f"{r.node}: pulumi up --replace {r.urn}")
    if ops.pulumi(["up", "--replace", r.urn, "--stack", r.stack, *(["--yes"] if yes else [])]) != 0:
        raise OperationError(f"pulumi up failed or was declined; {r.node} stays in standby until it runs through "
                             f"(re-run make replace), or `pcs node unstandby {r.host}` on {helper} to undo")
    pcs(ops, helper, "node", "unstandby", r.host)
    return settled(ops)


def move_control(r: Replacement, ops: Operations, yes: bool) -> None:
    """Run the cluster-wide steps from another app node before r.node is replaced."""
    target = next(a for a in r.apps if a != r.node)  # the config allows 2 app nodes at least
    setting = f"{PROJECT}:controlNode"
    ops.say(f"{r.node} runs the cluster-wide steps: moving them to {target} ({setting}; "
            f"Pulumi.{r.stack}.yaml changes, commit it)")
    if ops.pulumi(["config", "set", setting, target, "--stack", r.stack]) != 0:
        raise OperationError(f"pulumi config set {setting} {target} failed; nothing else was done")
    if ops.pulumi(["up", "--stack", r.stack, *(["--yes"] if yes else [])]) != 0:
        raise OperationError(f"pulumi up with {setting}={target} failed or was declined; nothing was replaced. "
                             f"Run it again (make up STACK={r.stack}), then make replace again")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.replace_node", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", required=True)
    parser.add_argument("--node", required=True, help="exactly one node: app1.., witness")
    add_operation_options(parser)
    args = parser.parse_args(argv)
    return run_operation(lambda: replace(plan(args.stack, args.node), cli_operations(args, os.environ), args.yes))


if __name__ == "__main__":
    sys.exit(main())
