"""Offline render: what a stack would create and what lands on its nodes.

    python -m tooling.render --stack prod --out build/prod
    python -m tooling.render --stack lab --config lab/stack.yaml --addresses lab.json \
        --set installPackages=false --out build/lab --secrets-dir build/lab-secrets

Runs the program under Pulumi mocks with the stack's config file: no Pulumi CLI,
no credentials, no network. Writes
  OUT/<node>/user-data   exactly what the droplet receives
  OUT/resources.json     every registered resource, secret inputs as "[secret]"
  OUT/commands.json      the remote commands in order, secrets as "[secret]"
  OUT/outputs.json       the stack outputs
and, only with --secrets-dir, the generated secrets the lab needs (mode 0600).
The generated secrets are deterministic mock values, never a real stack's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from infra.config import PROJECT, ConfigError
from infra.paths import REPO_ROOT
from tooling.mocks import SECRET_MARKER, Addresses, Run, run_program
from tooling import resource_types as types



def stack_config(stack: str, config_file: Path | None = None) -> dict[str, Any]:
    """The plain (non-secret) project settings of a stack's config file."""
    path = config_file or REPO_ROOT / f"Pulumi.{stack}.yaml"
    if not path.exists():
        raise SystemExit(f"no config file {path} for stack {stack!r}")
    data = yaml.safe_load(path.read_text()) or {}
    return {k: v for k, v in (data.get("config") or {}).items()
            if k.startswith(f"{PROJECT}:") and not (isinstance(v, dict) and "secure" in v)}


def secret_settings(stack: str, config_file: Path | None = None) -> set[str]:
    """The project settings a stack's config file holds encrypted (names without prefix)."""
    path = config_file or REPO_ROOT / f"Pulumi.{stack}.yaml"
    data = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    return {k.split(":", 1)[1] for k, v in (data.get("config") or {}).items()
            if k.startswith(f"{PROJECT}:") and isinstance(v, dict) and "secure" in v}


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`key=value` pairs; values are YAML, so lists and booleans work."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected key=value")
        out[f"{PROJECT}:{key.removeprefix(PROJECT + ':')}"] = yaml.safe_load(value)
    return out


def user_data(run: Run) -> dict[str, str]:
    """node name -> user-data text, as the droplets receive it."""
    return {r.name: r.raw_inputs["userData"] for r in run.of_type(types.DROPLET)}


def commands(run: Run, reveal: bool = False) -> list[dict[str, Any]]:
    """The program's remote commands in registration order, as a replay needs them.

    Each names the commands it depends on (directly, or through a component it
    depends on). Secret values (the private key, secret stdin) are replaced by
    the marker unless `reveal` is set (the lab's replay, in-process only).
    """
    by_urn = {r.urn: r for r in run.registrations}
    command_urns = {r.urn for r in run.of_type(types.REMOTE_COMMAND)}

    def command_deps(urn: str) -> set[str]:
        if urn in command_urns:
            return {by_urn[urn].name}
        # a component: every command below it
        return {by_urn[c].name for c in command_urns if _under(by_urn, c, urn)}

    plan = []
    for r in run.of_type(types.REMOTE_COMMAND):
        conn = r.raw_inputs["connection"]
        entry = {
            "name": r.name,
            "host": conn["host"], "port": int(conn.get("port", 22)), "user": conn["user"],
            "privateKey": conn["privateKey"] if reveal else SECRET_MARKER,
            "hostKey": conn.get("hostKey"),
            "create": r.raw_inputs.get("create"), "update": r.raw_inputs.get("update"),
            "delete": r.raw_inputs.get("delete"),
            "stdin": r.raw_inputs.get("stdin") if reveal or "stdin" not in r.secret_inputs else SECRET_MARKER,
            "environment": r.raw_inputs.get("environment") or {},
            "triggers": r.inputs.get("triggers") or [],
            "logging": r.raw_inputs.get("logging"),
            # what the mocked provider gave as its stdout (a gate's placeholder host key)
            "stdout": run.command_stdout.get(r.name),
            "dependsOn": sorted(set().union(*[command_deps(d) for d in r.dependencies]) - {r.name})
            if r.dependencies else [],
        }
        plan.append(entry)
    return dependency_order(plan)


def dependency_order(plan: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Commands sorted so each follows what it depends on; ties by name (stable diffs)."""
    remaining = {c["name"]: c for c in plan}
    done: list[dict[str, Any]] = []
    while remaining:
        ready = sorted(n for n, c in remaining.items() if not set(c["dependsOn"]) & set(remaining))
        if not ready:
            raise ValueError(f"dependency cycle among commands {sorted(remaining)}")
        done += [remaining.pop(n) for n in ready]
    return done


def _under(by_urn: dict[str, Any], urn: str, ancestor: str) -> bool:
    parent = by_urn[urn].parent
    while parent in by_urn:
        if parent == ancestor:
            return True
        parent = by_urn[parent].parent
    return False


def write(run: Run, out: Path, secrets_dir: Path | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for node, text in user_data(run).items():
        (out / node).mkdir(exist_ok=True)
        (out / node / "user-data").write_text(text)
    resources = [r.to_json() for r in sorted(run.registrations, key=lambda r: r.urn)]
    (out / "resources.json").write_text(json.dumps(resources, indent=2, sort_keys=True) + "\n")
    (out / "commands.json").write_text(json.dumps(commands(run), indent=2) + "\n")
    (out / "outputs.json").write_text(json.dumps(run.outputs, indent=2, sort_keys=True) + "\n")
    if secrets_dir is not None:
        write_secrets(run, secrets_dir)


def write_secrets(run: Run, directory: Path) -> None:
    """Generated secrets, for the lab only: one file per resource output, mode 0600."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    for resource, values in run.generated_secrets.items():
        for output, value in values.items():
            path = directory / f"{resource}.{output}"
            path.touch(mode=0o600)
            path.write_text(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.render", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", required=True, help="stack name (reads Pulumi.STACK.yaml)")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--config", type=Path, help="config file instead of Pulumi.STACK.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting (value in YAML); repeatable")
    parser.add_argument("--addresses", type=Path,
                        help="JSON {public: {node: ip}, private: {node: ip}, reservedIp: ip}")
    parser.add_argument("--secrets-dir", type=Path, help="also write generated secrets here (lab only)")
    args = parser.parse_args(argv)

    raw = stack_config(args.stack, args.config) | parse_overrides(args.overrides)
    addresses = Addresses.from_file(args.addresses) if args.addresses else None
    try:
        run = run_program(args.stack, raw, addresses)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write(run, args.out, args.secrets_dir)
    print(f"rendered {len(run.registrations)} resources, {len(user_data(run))} nodes into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
