"""Bring a deployed stack's state up to this version of the program.

    python -m tooling.state_upgrade STACK [--dry-run]     (make state-upgrade STACK=...)

A resource a former version declared and this one does not is deleted by the
next `up` through its provider, which is sometimes exactly wrong. Those listed
in RETIRED leave the state instead (`pulumi state unprotect`, then `pulumi state
delete`), so nothing in the cloud is touched. `make up` refuses while any of
them is still in the state (tooling/cli_guard.py). Re-running this is harmless.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

# "type::name" of a retired resource -> why it must leave the state untouched.
RETIRED: dict[str, str] = {
    "digitalocean:index/reservedIpAssignment:ReservedIpAssignment::reserved-ip-initial-assignment":
        "the cluster assigns the reserved IP; the provider's Delete would unassign it from the active node "
        "(and panics when the IP is unassigned)",
}


def retired_urns(export: dict[str, Any]) -> list[str]:
    """The URNs in a `pulumi stack export` that this version retires."""
    resources = export.get("deployment", {}).get("resources") or []
    out = []
    for r in resources:
        urn = str(r.get("urn", ""))
        parts = urn.split("::")
        if len(parts) == 4 and f"{parts[2].rsplit('$', 1)[-1]}::{parts[3]}" in RETIRED:
            out.append(urn)
    return out


def _pulumi(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["pulumi", *args, "--non-interactive"], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True)


def stack_export(stack: str) -> dict[str, Any]:
    """The stack's state (secrets stay encrypted in it; it is never printed)."""
    result = _pulumi(["stack", "export", "--stack", stack])
    if result.returncode != 0:
        raise RuntimeError(f"pulumi stack export --stack {stack} failed: {result.stderr.strip()[-500:]}")
    return json.loads(result.stdout)


def upgrade(stack: str, dry_run: bool = False) -> list[str]:
    urns = retired_urns(stack_export(stack))
    for urn in urns:
        why = RETIRED[f"{urn.split('::')[2].rsplit('$', 1)[-1]}::{urn.split('::')[3]}"]
        print(f"{'would remove' if dry_run else 'removing'} from the state only: {urn}\n  because {why}")
        if dry_run:
            continue
        for args in (["state", "unprotect", urn], ["state", "delete", urn]):
            result = _pulumi([*args, "--stack", stack, "--yes"])
            if result.returncode != 0:
                raise RuntimeError(f"pulumi {' '.join(args[:2])} failed: {result.stderr.strip()[-500:]}")
    if not urns:
        print(f"{stack}: the state is up to date")
    return urns


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    dry_run = "--dry-run" in args
    names = [a for a in args if a != "--dry-run"]
    if len(names) != 1 or not names[0]:
        print("usage: python -m tooling.state_upgrade STACK [--dry-run]", file=sys.stderr)
        return 2
    try:
        upgrade(names[0], dry_run)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
