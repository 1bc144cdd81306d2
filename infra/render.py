"""Offline render: what a stack would create and what lands on its nodes.

    python -m infra.render --stack prod --out build/prod
    python -m infra.render --stack lab --config lab/stack.yaml --addresses lab.json \
        --set installPackages=false --out build/lab --secrets-dir build/lab-secrets

Runs the program under Pulumi mocks with the stack's config file: no Pulumi CLI,
no credentials, no network. Writes
  OUT/<node>/user-data   exactly what the droplet receives
  OUT/resources.json     every registered resource, secret inputs as "[secret]"
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
from infra.mocks import ROOT, Addresses, Run, run_program

DROPLET = "digitalocean:index/droplet:Droplet"


def stack_config(stack: str, config_file: Path | None = None) -> dict[str, Any]:
    """The plain (non-secret) project settings of a stack's config file."""
    path = config_file or ROOT / f"Pulumi.{stack}.yaml"
    if not path.exists():
        raise SystemExit(f"no config file {path} for stack {stack!r}")
    data = yaml.safe_load(path.read_text()) or {}
    return {k: v for k, v in (data.get("config") or {}).items()
            if k.startswith(f"{PROJECT}:") and not (isinstance(v, dict) and "secure" in v)}


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
    return {r.name: r.raw_inputs["userData"] for r in run.of_type(DROPLET)}


def write(run: Run, out: Path, secrets_dir: Path | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for node, text in user_data(run).items():
        (out / node).mkdir(exist_ok=True)
        (out / node / "user-data").write_text(text)
    resources = [r.to_json() for r in run.registrations]
    (out / "resources.json").write_text(json.dumps(resources, indent=2, sort_keys=True) + "\n")
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
    parser = argparse.ArgumentParser(prog="python -m infra.render", description=__doc__.split("\n\n")[0])
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
