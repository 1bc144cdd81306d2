"""`make status STACK=...`: one screen of a running stack's health, and an exit code
that can gate a deploy (0 healthy, 1 degraded, 2 could not run).

    python -m tooling.status --stack staging                  # addresses from `pulumi stack output`
    python -m tooling.status --stack prod --outputs out.json  # ... or from its saved JSON
    python -m tooling.status --stack lab --facts facts.json   # judge recorded facts again

Reaches every node as the stack's deploy user (deployUser in Pulumi.STACK.yaml)
with the admin's own SSH key (ssh's defaults, or --identity): one session per
node, in parallel, running a read-only script sent on stdin under sudo
(tooling/status-gather.sh). A node whose outputs carry its pinned host key
(nodes.<name>.hostKey) must show that key, or its session is refused (an
--ssh-option of your own for StrictHostKeyChecking or UserKnownHostsFile comes
first and wins). With DIGITALOCEAN_TOKEN (or DIGITALOCEAN_ACCESS_TOKEN)
in the environment it adds the API's view of the reserved IP and the droplets,
at the stack's clusterApiUrl; the token is sent only in the request header and
never printed. What counts as degraded: tooling/health.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from infra.config import SETTINGS, ConfigError
from infra.first_boot import HOST_KEY_LINE as HOST_KEY
from infra.naming import role_of
from infra.paths import REPO_ROOT
from tooling import render
from tooling.health import assess
from tooling.health import render as render_screen
from tooling.status_gather import NodeTarget, SshSettings, gather, pin_host_keys

TOKEN_VARIABLES = ("DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN")
HEALTHY, DEGRADED, CANNOT_RUN = 0, 1, 2
PULUMI_TIMEOUT_S = 120


class StatusError(Exception):
    """Why status could not run; the message is meant for the user."""


def targets_from_outputs(outputs: Mapping[str, Any]) -> tuple[str, list[NodeTarget]]:
    """The reserved IP and the nodes from stack outputs (`pulumi stack output --json`)."""
    nodes = outputs.get("nodes")
    if not isinstance(nodes, Mapping) or not nodes:
        raise StatusError("the stack outputs have no `nodes` (expected {name: {publicIpv4, role}}, "
                          "as `pulumi stack output --json` prints after a `pulumi up`)")
    reserved_ip = outputs.get("reservedIp")
    if not isinstance(reserved_ip, str) or not reserved_ip:
        raise StatusError("the stack outputs have no `reservedIp`")
    targets = []
    for name, node in nodes.items():
        address = node.get("publicIpv4") if isinstance(node, Mapping) else None
        if not isinstance(address, str) or not address:
            raise StatusError(f"the stack outputs' nodes.{name} has no publicIpv4")
        host_key = node.get("hostKey")
        if host_key is not None and not (isinstance(host_key, str) and HOST_KEY.fullmatch(host_key)):
            raise StatusError(f"the stack outputs' nodes.{name}.hostKey is not an ssh-ed25519 public key")
        targets.append(NodeTarget(name=name, address=address, role=node.get("role") or role_of(name),
                                  host_key=host_key))
    return reserved_ip, targets


def pulumi_outputs(stack: str, show_secrets: bool = False) -> dict[str, Any]:
    """`pulumi stack output --json` for the stack (secrets only when asked for)."""
    if shutil.which("pulumi") is None:
        raise StatusError("pulumi CLI not found on PATH: install it, or give the outputs as a file "
                          "(OUTPUTS=file.json, saved with `pulumi stack output --json --stack STACK`)")
    try:
        result = subprocess.run(["pulumi", "stack", "output", "--json", "--stack", stack, "--non-interactive",
                                 *(["--show-secrets"] if show_secrets else [])],
                                cwd=REPO_ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                timeout=PULUMI_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise StatusError(f"pulumi stack output took more than {PULUMI_TIMEOUT_S} s") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise StatusError(f"pulumi stack output --stack {stack} failed: {last}")
    try:
        return json.loads(result.stdout)
    except ValueError:
        raise StatusError("pulumi stack output did not print JSON") from None


def load_outputs(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise StatusError(f"cannot read the outputs file {path}: {e.strerror}") from None
    except ValueError:
        raise StatusError(f"the outputs file {path} is not JSON (save it with `pulumi stack output --json`)") from None
    if not isinstance(data, dict):
        raise StatusError(f"the outputs file {path} is not a JSON object")
    return data


def stack_setting(stack: str, key: str, config_file: Path | None) -> Any:
    """A plain setting of the stack's config file, checked as the program checks it;
    its default when the file does not set it (or there is no file)."""
    default, check = SETTINGS[key]
    path = config_file or REPO_ROOT / f"Pulumi.{stack.rsplit('/', 1)[-1]}.yaml"
    value = render.stack_config(stack, path).get(f"do-ha-stack:{key}") if path.exists() else None
    try:
        return check(key, default if value is None else value)
    except ConfigError as e:
        raise StatusError(f"{path}: {e}") from None


def api_token(env: Mapping[str, str]) -> str | None:
    return next((env[v].strip() for v in TOKEN_VARIABLES if env.get(v, "").strip()), None)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tooling.status", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", required=True, help="the stack (its Pulumi.STACK.yaml gives deployUser)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--outputs", type=Path, help="the stack outputs as JSON instead of asking pulumi")
    source.add_argument("--facts", type=Path, help="judge facts saved earlier with --dump (no SSH, no API)")
    parser.add_argument("--config", type=Path, help="the stack's config file (default Pulumi.STACK.yaml)")
    parser.add_argument("--user", help="SSH user (default: the stack's deployUser)")
    parser.add_argument("--identity", help="SSH private key (default: ssh's own choice, e.g. the agent)")
    parser.add_argument("--ssh-option", action="append", default=[], metavar="OPTION",
                        help="extra ssh -o option, e.g. StrictHostKeyChecking=accept-new; repeatable")
    parser.add_argument("--api-url", help="DigitalOcean API base (default: the stack's clusterApiUrl)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of the screen")
    parser.add_argument("--dump", type=Path, help="also save the gathered facts (no secrets) to this file")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[int, str]:
    """(exit code, text to print)."""
    if not args.stack.strip():
        raise StatusError("STACK is required: make status STACK=staging (or prod, or lab)")
    outputs: dict[str, Any] | None = None
    if args.facts:
        facts = load_outputs(args.facts)
        if not isinstance(facts.get("nodes"), dict):
            raise StatusError(f"{args.facts} holds no gathered facts (write them with --dump)")
        outputs = facts.get("outputs")
    else:
        outputs = load_outputs(args.outputs) if args.outputs else pulumi_outputs(args.stack)
        reserved_ip, targets = targets_from_outputs(outputs)
        user = args.user or stack_setting(args.stack, "deployUser", args.config)
        api_url = args.api_url or stack_setting(args.stack, "clusterApiUrl", args.config)
        ssh = SshSettings(user=user, identity=args.identity, options=tuple(args.ssh_option))
        with tempfile.TemporaryDirectory(prefix="do-ha-status-") as pins:
            facts = gather(args.stack, reserved_ip, targets, pin_host_keys(ssh, targets, Path(pins)),
                           api_url, api_token(env))
        facts["outputs"] = outputs
        if args.dump:
            args.dump.parent.mkdir(parents=True, exist_ok=True)
            args.dump.write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n")
    report = assess(facts, outputs)
    text = json.dumps(report.to_json(), indent=2, sort_keys=True) if args.json else render_screen(report)
    return (HEALTHY if report.healthy else DEGRADED), text


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        code, text = run(args, os.environ)
    except StatusError as e:
        print(f"error: {e}", file=sys.stderr)
        return CANNOT_RUN
    print(text)
    return code


if __name__ == "__main__":
    sys.exit(main())
