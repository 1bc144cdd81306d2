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
3. NODE is put in pacemaker standby from another member: whatever runs there
   moves off first, so replacing the active node is a planned switchover;
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
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from infra import tuning
from infra.config import PROJECT, ConfigError, parse
from infra.naming import droplet_name
from tooling import render
from tooling import resource_types as types
from tooling.health import Report, assess
from tooling.health import render as render_screen
from tooling.mocks import MOCK_SECRETS, run_program
from tooling.status import (
    StatusError, api_token, load_outputs, pulumi_outputs, stack_setting, targets_from_outputs,
)
from tooling.status_gather import NodeTarget, SshSettings, gather


class ReplaceError(Exception):
    """Why nothing (more) was done; the message is meant for the user."""


@dataclass(frozen=True)
class Replacement:
    stack: str
    node: str  # the program's node name: app1.., witness
    host: str  # its droplet's name, which is its pacemaker node name
    urn: str  # its droplet's URN, as the engine has it in the state
    protect: bool
    control: str  # the app node that runs the cluster-wide steps (controlNode)
    apps: tuple[str, ...]  # the stack's app nodes


def plan(stack: str, node: str) -> Replacement:
    """Check the request against the stack's config; find the droplet's URN."""
    names = [n for n in re.split(r"[\s,]+", node.strip()) if n]
    if len(names) != 1:
        raise ReplaceError(f"NODE={node!r}: give exactly one node; replace nodes one at a time, each after the "
                           "previous one is healthy again")
    raw = render.stack_config(stack)
    plain = {k.split(":", 1)[1]: v for k, v in raw.items() if k.startswith("do-ha-stack:")}
    try:
        cfg = parse(stack, plain | {k: v for k, v in MOCK_SECRETS.items() if k not in plain})
    except ConfigError as e:
        raise ReplaceError(f"Pulumi.{stack}.yaml: {e}") from None
    if names[0] not in cfg.node_names:
        raise ReplaceError(f"NODE={names[0]!r} is not a node of {stack}; allowed: {', '.join(cfg.node_names)}")
    # The mocks build URNs as the engine does (tooling/mocks.py), so this is the state's URN.
    droplet = run_program(stack, raw).by_name(names[0])
    assert droplet.type == types.DROPLET
    apps = tuple(n for n in cfg.node_names if n.startswith("app"))
    return Replacement(stack, names[0], droplet_name(cfg, names[0]), droplet.urn, cfg.protect, cfg.control_node, apps)


def blocking_problems(report: Report, node: str) -> list[str]:
    """The report's problems that are not NODE's own (those name it as a word)."""
    own = re.compile(rf"(?<![\w-]){re.escape(node)}(?![\w-])")
    return [p for p in report.problems if not own.search(p)]


@dataclass
class Operations:
    """What a replacement does outside this module: the stack's health, a command on
    a node, the Pulumi CLI. The lab supplies its own (tests/lab)."""

    health: Callable[[], Report]
    run_on: Callable[[str, Sequence[str]], subprocess.CompletedProcess[str]]
    pulumi: Callable[[Sequence[str]], int]
    say: Callable[[str], None] = print
    sleep: Callable[[float], None] = time.sleep


def member_to_drive_from(report: Report, node: str) -> str:
    """A member other than NODE to run pcs on: an app node first."""
    others = sorted((n for n in report.nodes if n != node), key=lambda n: (not n.startswith("app"), n))
    if not others:
        raise ReplaceError(f"no member but {node} to drive the cluster from")
    return others[0]


def pcs(ops: Operations, on: str, *args: str) -> None:
    result = ops.run_on(on, ["sudo", "-n", "pcs", *args])
    if result.returncode != 0:
        raise ReplaceError(f"pcs {' '.join(args)} on {on} failed: {(result.stderr or result.stdout).strip()[-300:]}")


def replace(r: Replacement, ops: Operations, yes: bool = False) -> Report:
    before = ops.health()
    blocking = blocking_problems(before, r.node)
    if blocking:
        raise ReplaceError(f"refusing to replace {r.node}: the rest of {r.stack} is degraded, and replacing "
                           f"{r.node} now could break quorum or take away the last good copy of the data:\n  "
                           + "\n  ".join(blocking))
    helper = member_to_drive_from(before, r.node)
    if r.node == r.control:
        move_control(r, ops, yes)
    ops.say(f"{r.node}: standby (its resources move to the other nodes first)")
    pcs(ops, helper, "node", "standby", r.host, f"--wait={tuning.REPLACE_DRAIN_TIMEOUT_S}")
    if r.protect:
        ops.say(f"{r.node}: unprotecting its droplet for this replacement only")
        if ops.pulumi(["state", "unprotect", r.urn, "--stack", r.stack, "--yes"]) != 0:
            raise ReplaceError(f"pulumi state unprotect failed; {r.node} is in standby: "
                               f"`pcs node unstandby {r.host}` on {helper} to undo")
    ops.say(f"{r.node}: pulumi up --replace {r.urn}")
    if ops.pulumi(["up", "--replace", r.urn, "--stack", r.stack, *(["--yes"] if yes else [])]) != 0:
        raise ReplaceError(f"pulumi up failed or was declined; {r.node} stays in standby until it runs through "
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
        raise ReplaceError(f"pulumi config set {setting} {target} failed; nothing else was done")
    if ops.pulumi(["up", "--stack", r.stack, *(["--yes"] if yes else [])]) != 0:
        raise ReplaceError(f"pulumi up with {setting}={target} failed or was declined; nothing was replaced. "
                           f"Run it again (make up STACK={r.stack}), then make replace again")


def settled(ops: Operations) -> Report:
    """The stack's health once it is healthy again, or when the settle time is up."""
    deadline = time.monotonic() + tuning.REPLACE_SETTLE_TIMEOUT_S
    while True:
        after = ops.health()
        if after.healthy or time.monotonic() > deadline:
            return after
        ops.sleep(tuning.REPLACE_SETTLE_POLL_S)


def cli_operations(args: argparse.Namespace, env: Mapping[str, str]) -> Operations:
    """Operations against a real stack: SSH as `make status` does, the pulumi CLI."""
    outputs = load_outputs(Path(args.outputs)) if args.outputs else pulumi_outputs(args.stack)
    reserved_ip, targets = targets_from_outputs(outputs)
    by_name: dict[str, NodeTarget] = {t.name: t for t in targets}
    ssh = SshSettings(user=args.user or stack_setting(args.stack, "deployUser", None), identity=args.identity,
                      options=tuple(args.ssh_option))
    api_url = stack_setting(args.stack, "clusterApiUrl", None)

    def health() -> Report:
        return assess(gather(args.stack, reserved_ip, targets, ssh, api_url, api_token(env)), outputs)

    def run_on(node: str, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*ssh.argv(by_name[node].address), *argv], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=tuning.REPLACE_DRAIN_TIMEOUT_S + 60)

    def pulumi(argv: Sequence[str]) -> int:
        # Interactive: `up` shows its preview and asks unless --yes.
        return subprocess.run(["pulumi", *argv]).returncode

    return Operations(health, run_on, pulumi)


def add_operation_options(parser: argparse.ArgumentParser) -> None:
    """What every node operation takes besides its own arguments."""
    parser.add_argument("--yes", action="store_true", help="pass --yes to pulumi up (no confirmation)")
    parser.add_argument("--outputs", help="the stack outputs as JSON instead of asking pulumi")
    parser.add_argument("--user", help="SSH user (default: the stack's deployUser)")
    parser.add_argument("--identity", help="SSH private key")
    parser.add_argument("--ssh-option", action="append", default=[], metavar="OPTION")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.replace_node", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", required=True)
    parser.add_argument("--node", required=True, help="exactly one node: app1.., witness")
    add_operation_options(parser)
    args = parser.parse_args(argv)
    return run_operation(lambda: replace(plan(args.stack, args.node), cli_operations(args, os.environ), args.yes))


def run_operation(operation: Callable[[], Report]) -> int:
    """A node operation's exit code: 2 refused or failed (why on stderr), 1 done but the
    stack is not healthy yet, 0 done and healthy; the health screen is printed."""
    try:
        after = operation()
    except (ReplaceError, StatusError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(render_screen(after))
    return 0 if after.healthy else 1


if __name__ == "__main__":
    sys.exit(main())
