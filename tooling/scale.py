"""`make scale STACK=… APP_NODES=N`: change the number of app nodes on a running stack.

    python -m tooling.scale --stack prod --app-nodes 3 [--yes] [status options]

Out (2 -> 3): the new nodes join the cluster, mount the shared volume as clients
(the data bricks stay on app1 and app2, see infra/storage.py), and get a replica
seeded from the primary. In (3 -> 2): the highest-numbered nodes leave; they hold
no brick, so no data goes with them. Either way:

1. the stack must be healthy (`make status`);
2. in: the leaving nodes go to pacemaker standby first (a primary among them
   hands over), and on a protected stack exactly their protected resources are
   unprotected (their droplets and database keys), nothing else;
3. `pulumi config set do-ha-stack:appNodeCount N` (commit Pulumi.STACK.yaml
   afterwards), then `pulumi up`, whose steps converge membership;
4. it waits until the stack is healthy.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from infra import tuning
from infra.config import MAX_APP_NODES, MIN_APP_NODES, ConfigError, parse
from infra.naming import droplet_name
from tooling import render
from tooling.engine_model import Cloud, State, identities
from tooling.engine_model import plan as engine_plan
from tooling.health import Report
from tooling.mocks import MOCK_SECRETS, run_program
from tooling.node_ops import (
    OperationError, Operations, add_operation_options, cli_operations, pcs, run_operation, settled, stack_config,
)
from tooling.switchover import app_hosts, switch


def leaving_protected(stack: str, count: int) -> list[str]:
    """URNs a scale-in to `count` app nodes deletes that the stack protects: the
    engine would refuse the `up` until they are unprotected (tooling.engine_model)."""
    raw = render.stack_config(stack)
    now = run_program(stack, raw)
    goal = run_program(stack, raw | {"do-ha-stack:appNodeCount": count})
    state = State.after_up(now, Cloud().now)
    return sorted(s.urn for s in engine_plan(state, goal, Cloud(), identities(goal)) if s.refused)


def check_count(stack: str, count: int) -> tuple[int, list[str]]:
    """The current count and the leaving nodes; a count the program refuses is refused here."""
    raw = render.stack_config(stack)
    plain = {k.split(":", 1)[1]: v for k, v in raw.items()}
    try:
        cfg = parse(stack, plain | {k: v for k, v in MOCK_SECRETS.items() if k not in plain})
        parse(stack, plain | {"appNodeCount": count} | {k: v for k, v in MOCK_SECRETS.items() if k not in plain})
    except ConfigError as e:
        raise OperationError(f"APP_NODES={count}: {e} (between {MIN_APP_NODES} and {MAX_APP_NODES}: two app nodes "
                             "hold the data bricks and the database's copies)") from None
    current = cfg.app_node_count
    if count == current:
        raise OperationError(f"{stack} already has {count} app nodes")
    return current, [f"app{i}" for i in range(count + 1, current + 1)]


def scale(stack: str, count: int, ops: Operations, yes: bool = False) -> Report:
    current, leaving = check_count(stack, count)
    before = ops.health()
    if before.problems:
        raise OperationError(f"refusing to scale {stack}: it is degraded; scale a healthy stack only:\n  "
                             + "\n  ".join(before.problems))
    cfg = stack_config(stack)
    if leaving:
        helper = "app1"  # scaling in never removes app1 or app2
        if before.database.get("primary") in leaving:
            # A planned switchover to a node that stays (a pause of about two seconds).
            switch(stack, app_hosts(cfg), ops, to=helper, before=before)
        for node in leaving:
            ops.say(f"{node}: standby (it leaves the stack)")
            pcs(ops, helper, "node", "standby", droplet_name(cfg, node), f"--wait={tuning.REPLACE_DRAIN_TIMEOUT_S}")
        for urn in leaving_protected(stack, count):
            ops.say(f"unprotecting {urn.rsplit('::', 1)[1]} (it leaves with its node)")
            if ops.pulumi(["state", "unprotect", urn, "--stack", stack, "--yes"]) != 0:
                raise OperationError(f"pulumi state unprotect {urn} failed")
    ops.say(f"{stack}: appNodeCount {current} -> {count}")
    if ops.pulumi(["config", "set", "do-ha-stack:appNodeCount", str(count), "--stack", stack]) != 0:
        raise OperationError("pulumi config set failed")
    if ops.pulumi(["up", "--stack", stack, *(["--yes"] if yes else [])]) != 0:
        raise OperationError(f"pulumi up failed or was declined; Pulumi.{stack}.yaml now says {count} app nodes: "
                             f"run `make up STACK={stack}` again, or set it back to {current}")
    return settled(ops)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", required=True)
    parser.add_argument("--app-nodes", required=True, type=int)
    add_operation_options(parser)
    args = parser.parse_args(argv)

    def operation() -> Report:
        check_count(args.stack, args.app_nodes)  # bad input: refused before anything runs
        return scale(args.stack, args.app_nodes, cli_operations(args, os.environ), args.yes)
    return run_operation(operation)


if __name__ == "__main__":
    sys.exit(main())
