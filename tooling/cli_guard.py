"""Checks in front of `make preview|up|destroy`, then the Pulumi CLI itself.

    python -m tooling.cli_guard ACTION STACK [EXTRA PULUMI ARGS...]

Each check stops with one line saying what is missing and how to fix it, and
exit code 2, before pulumi touches anything:

1. a stack is named (the Makefile passes '' unless STACK was given);
2. `destroy` of prod needs CONFIRM_DESTROY_PROD=yes (checked before the CLI
   is ever run, so a refused destroy runs no pulumi at all);
3. the pulumi CLI is on PATH;
4. `pulumi whoami` succeeds, i.e. a backend is logged in to;
5. a DigitalOcean token: DIGITALOCEAN_TOKEN (or DIGITALOCEAN_ACCESS_TOKEN) in
   the environment, or `digitalocean:token` in the stack's config;
6. `up`: the stack's state holds no resource this version retires
   (tooling/state_upgrade.py), whose deletion by the provider would do harm.

Then it execs pulumi, whose exit code becomes make's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence

from tooling.state_upgrade import retired_urns

COMMANDS = {
    "preview": ("preview", "--diff"),
    "up": ("up",),
    "destroy": ("destroy",),
}
PROD_STACK = "prod"
CONFIRM_VARIABLE = "CONFIRM_DESTROY_PROD"
TOKEN_VARIABLES = ("DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN")
INSTALL_URL = "https://www.pulumi.com/docs/iac/download-install/"
# A stack name, optionally org/project/stack qualified, as Pulumi accepts it.
_STACK_RE = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+){0,2}")
_CHECK_TIMEOUT = 120


class GuardError(Exception):
    """Why pulumi is not run; the message is meant for the user."""


def pulumi_argv(action: str, stack: str, extra: Sequence[str] = ()) -> list[str]:
    return ["pulumi", *COMMANDS[action], "--stack", stack, *extra]


def is_prod(stack: str) -> bool:
    return stack.rsplit("/", 1)[-1] == PROD_STACK


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _pulumi(*args: str) -> subprocess.CompletedProcess[str]:
    """Run a read-only pulumi command; stdout is never shown (it may hold a secret)."""
    try:
        return subprocess.run(["pulumi", *args, "--non-interactive"], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=_CHECK_TIMEOUT)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, 1, "", f"timed out after {_CHECK_TIMEOUT} s")


def check(action: str, stack: str, env: Mapping[str, str]) -> list[str]:
    """All checks; returns notes to print before running pulumi, raises GuardError."""
    if action not in COMMANDS:
        raise GuardError(f"unknown action {action!r}; allowed: {', '.join(COMMANDS)}")
    if not stack:
        raise GuardError(f"STACK is required: make {action} STACK=staging (or STACK=prod)")
    if not _STACK_RE.fullmatch(stack):
        raise GuardError(f"STACK={stack!r} is not a stack name; allowed: letters, digits, '-', '_', '.', "
                         "optionally org/project/ qualified")
    notes: list[str] = []
    protected = (f"prod's resources are protected (protect: true), so pulumi destroy refuses until "
                 f"you run `pulumi state unprotect --all --stack {stack}`")
    if action == "destroy" and is_prod(stack):
        if env.get(CONFIRM_VARIABLE) != "yes":
            raise GuardError(f"refusing to destroy {stack}: it deletes the production droplets, data included. "
                             f"If you mean it: make destroy STACK={stack} {CONFIRM_VARIABLE}=yes. "
                             f"Even then {protected}")
        notes.append(f"{CONFIRM_VARIABLE}=yes: destroying {stack}. Note: {protected}")
    if shutil.which("pulumi", path=env.get("PATH")) is None:
        raise GuardError(f"pulumi CLI not found on PATH: install it from {INSTALL_URL} "
                         "(or: curl -fsSL https://get.pulumi.com | sh)")
    whoami = _pulumi("whoami")
    if whoami.returncode != 0:
        raise GuardError("not logged in to a Pulumi backend: run `pulumi login` (Pulumi Cloud, or the state "
                         f"bucket: see README, State on DigitalOcean Spaces); pulumi said: {_last_line(whoami.stderr)}")
    if not any(env.get(name) for name in TOKEN_VARIABLES):
        config = _pulumi("config", "get", "digitalocean:token", "--stack", stack)
        if config.returncode != 0:
            raise GuardError(f"no DigitalOcean token: set DIGITALOCEAN_TOKEN, or store it in the stack with "
                             f"`pulumi config set --secret digitalocean:token --stack {stack}`; "
                             f"pulumi config get said: {_last_line(config.stderr)}")
    if action == "up":
        export = _pulumi("stack", "export", "--stack", stack)
        # A stack that does not exist yet has no state to upgrade.
        retired = retired_urns(json.loads(export.stdout)) if export.returncode == 0 else []
        if retired:
            raise GuardError(f"{stack}'s state holds {len(retired)} resource(s) this version no longer declares "
                             f"and whose deletion would do harm ({retired[0].rsplit('::', 1)[-1]}): run "
                             f"`make state-upgrade STACK={stack}` once, then `make up` again")
    return notes


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        print("usage: python -m tooling.cli_guard {preview|up|destroy} STACK [PULUMI ARGS...]", file=sys.stderr)
        return 2
    action, stack, extra = args[0], args[1].strip(), args[2:]
    try:
        notes = check(action, stack, os.environ)
    except GuardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        print(note, file=sys.stderr)
    command = pulumi_argv(action, stack, extra)
    print("+ " + " ".join(command), file=sys.stderr)
    sys.stderr.flush()
    sys.stdout.flush()
    os.execvp(command[0], command)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
