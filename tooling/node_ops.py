"""What the node operations (`make replace`, `make scale`, `make switchover`) share:
the operations they run outside this process, their error, waiting for a healthy
stack, and their command line."""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra import tuning
from infra.config import ConfigError, StackConfig, parse
from tooling import render
from tooling.health import Report, assess
from tooling.health import render as render_screen
from tooling.mocks import MOCK_SECRETS
from tooling.status import (
    StatusError, api_token, load_outputs, pulumi_outputs, stack_setting, targets_from_outputs,
)
from tooling.status_gather import NodeTarget, SshSettings, gather, pin_host_keys


class OperationError(Exception):
    """Why nothing (more) was done; the message is meant for the user."""


@dataclass
class Operations:
    """What a node operation does outside this module: the stack's health, a command on
    a node, the Pulumi CLI. The lab supplies its own (tests/lab)."""

    health: Callable[[], Report]
    run_on: Callable[[str, Sequence[str]], subprocess.CompletedProcess[str]]
    pulumi: Callable[[Sequence[str]], int]
    say: Callable[[str], None] = print
    sleep: Callable[[float], None] = time.sleep
    # A command on a node with text on its stdin (secrets go there, never in argv).
    run_with_input: Callable[[str, Sequence[str], str], subprocess.CompletedProcess[str]] | None = None


def member_to_drive_from(report: Report, node: str) -> str:
    """A member other than NODE to run pcs on: an app node first."""
    others = sorted((n for n in report.nodes if n != node), key=lambda n: (not n.startswith("app"), n))
    if not others:
        raise OperationError(f"no member but {node} to drive the cluster from")
    return others[0]


def pcs(ops: Operations, on: str, *args: str) -> None:
    result = ops.run_on(on, ["sudo", "-n", "pcs", *args])
    if result.returncode != 0:
        raise OperationError(f"pcs {' '.join(args)} on {on} failed: {(result.stderr or result.stdout).strip()[-300:]}")


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
    # The shared connections' sockets and the stack's pinned host keys, gone at exit.
    sockets = tempfile.mkdtemp(prefix="do-ha-ssh-")
    atexit.register(shutil.rmtree, sockets, True)
    user = args.user or stack_setting(args.stack, "deployUser", None)
    api_url = stack_setting(args.stack, "clusterApiUrl", None)

    @dataclass
    class View:  # the nodes as the stack's outputs have them now
        outputs: dict[str, Any]
        reserved_ip: str
        targets: list[NodeTarget]
        ssh: SshSettings

    def load() -> View:
        outputs = load_outputs(Path(args.outputs)) if args.outputs else pulumi_outputs(args.stack)
        reserved_ip, targets = targets_from_outputs(outputs)
        ssh = pin_host_keys(SshSettings(user=user, identity=args.identity, options=tuple(args.ssh_option)),
                            targets, Path(sockets))
        return View(outputs, reserved_ip, targets, ssh)

    view = load()

    def health() -> Report:
        return assess(gather(args.stack, view.reserved_ip, view.targets, view.ssh, api_url, api_token(env)),
                      view.outputs)

    def connect(node: str) -> list[str]:
        # One connection per node, reused by every command (a switchover's read-only
        # window holds two commands; a fresh handshake each would add to the pause).
        shared = dataclasses.replace(view.ssh, options=(*view.ssh.options, "ControlMaster=auto",
                                                        f"ControlPath={sockets}/%C", "ControlPersist=30"))
        return shared.argv({t.name: t for t in view.targets}[node].address)

    def run_on(node: str, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        # One word for ssh: the remote shell must see argv as it is, spaces included.
        return subprocess.run([*connect(node), shlex.join(argv)], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=tuning.REPLACE_DRAIN_TIMEOUT_S + 60)

    def run_with_input(node: str, argv: Sequence[str], text: str) -> subprocess.CompletedProcess[str]:
        # Long work (a restore takes as long as its data): no overall limit, but a
        # connection that stops answering ends it.
        alive = ["-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=8"]
        target = connect(node)
        return subprocess.run([*target[:-1], *alive, target[-1], shlex.join(argv)], input=text,
                              capture_output=True, text=True)

    def pulumi(argv: Sequence[str]) -> int:
        nonlocal view
        # Interactive: `up` shows its preview and asks unless --yes.
        code = subprocess.run(["pulumi", *argv]).returncode
        if not args.outputs:
            # An `up` that replaced or added a droplet gave it a new address and host key.
            view = load()
        return code

    return Operations(health, run_on, pulumi, run_with_input=run_with_input)


def add_operation_options(parser: argparse.ArgumentParser) -> None:
    """What every node operation that runs `pulumi up` takes besides its own arguments."""
    parser.add_argument("--yes", action="store_true", help="pass --yes to pulumi up (no confirmation)")
    add_ssh_options(parser)


def add_ssh_options(parser: argparse.ArgumentParser) -> None:
    """How a node operation finds and reaches the nodes (as `make status` does)."""
    parser.add_argument("--outputs", help="the stack outputs as JSON instead of asking pulumi")
    parser.add_argument("--user", help="SSH user (default: the stack's deployUser)")
    parser.add_argument("--identity", help="SSH private key")
    parser.add_argument("--ssh-option", action="append", default=[], metavar="OPTION")


def run_operation(operation: Callable[[], Report]) -> int:
    """A node operation's exit code: 2 refused or failed (why on stderr), 1 done but the
    stack is not healthy yet, 0 done and healthy; the health screen is printed."""
    try:
        after = operation()
    except (OperationError, StatusError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(render_screen(after))
    return 0 if after.healthy else 1


def stack_config(stack: str) -> StackConfig:
    """The stack's checked config (secrets stand in: no operation reads them here)."""
    raw = render.stack_config(stack)
    plain = {k.split(":", 1)[1]: v for k, v in raw.items() if k.startswith("do-ha-stack:")}
    try:
        cfg = parse(stack, plain | {k: v for k, v in MOCK_SECRETS.items() if k not in plain})
    except ConfigError as e:
        raise OperationError(f"Pulumi.{stack}.yaml: {e}") from None
    # A supplied certificate is a secret the file holds encrypted: present, not read.
    if cfg.domain and "tlsCertificate" in render.secret_settings(stack):
        cfg = dataclasses.replace(cfg, tls="supplied")
    return cfg
