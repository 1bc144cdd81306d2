"""Bring a deployed stack's state up to this version of the program.

    python -m tooling.state_upgrade STACK [--dry-run]     (make state-upgrade STACK=...)

A resource a former version declared and this one does not is deleted by the
next `up` through its provider, which is sometimes exactly wrong. Those listed
in RETIRED leave the state instead (`pulumi state unprotect`, then `pulumi state
delete`), so nothing in the cloud is touched. `make up` refuses while any of
them is still in the state (tooling/cli_guard.py). A project's recorded list
loses the reserved IP the same way (`pulumi stack import` of the edited export).
Re-running this is harmless.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import sys
from collections.abc import Sequence
from typing import Any

# "type::name" of a retired resource -> why it must leave the state untouched.
RETIRED: dict[str, str] = {
    "digitalocean:index/reservedIpAssignment:ReservedIpAssignment::reserved-ip-initial-assignment":
        "the cluster assigns the reserved IP; the provider's Delete would unassign it from the active node "
        "(and panics when the IP is unassigned)",
}


def _retired_key(urn: str) -> str | None:
    """A URN's "type::name" (its own type, not its parents'), if this version retires it."""
    parts = urn.split("::")
    key = f"{parts[2].rsplit('$', 1)[-1]}::{parts[3]}" if len(parts) == 4 else None
    return key if key in RETIRED else None


def retired_urns(export: dict[str, Any]) -> list[str]:
    """The URNs in a `pulumi stack export` that this version retires."""
    resources = export.get("deployment", {}).get("resources") or []
    return [urn for r in resources if _retired_key(urn := str(r.get("urn", "")))]


# Reserved-IP URNs as the project held them: ours, and the API's older name for them.
_IP_URN_PREFIXES = ("do:reservedip:", "do:floatingip:")


def without_listed_ips(export: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The export with reserved IPs taken out of every project's `resources`, and the
    URNs of the projects changed. A former version listed the IP there; the new
    program does not, and the provider would answer the difference by moving the
    IP to the default project, which the API refuses while it is assigned."""
    changed = []
    for r in export.get("deployment", {}).get("resources") or []:
        if not str(r.get("type", "")).endswith("/project:Project"):
            continue
        for part in ("inputs", "outputs"):
            listed = (r.get(part) or {}).get("resources")
            if isinstance(listed, list) and any(str(u).startswith(_IP_URN_PREFIXES) for u in listed):
                r[part]["resources"] = [u for u in listed if not str(u).startswith(_IP_URN_PREFIXES)]
                if r["urn"] not in changed:
                    changed.append(r["urn"])
    return export, changed


def _pulumi(args: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["pulumi", *args, "--non-interactive"], input=stdin or "",
                          capture_output=True, text=True)


def stack_export(stack: str) -> dict[str, Any]:
    """The stack's state (secrets stay encrypted in it; it is never printed)."""
    result = _pulumi(["stack", "export", "--stack", stack])
    if result.returncode != 0:
        raise RuntimeError(f"pulumi stack export --stack {stack} failed: {result.stderr.strip()[-500:]}")
    return json.loads(result.stdout)


def upgrade(stack: str, dry_run: bool = False) -> list[str]:
    """Make the state what this version expects; returns the URNs it changed."""
    export, projects = without_listed_ips(stack_export(stack))
    for urn in projects:
        print(f"{'would take' if dry_run else 'taking'} the reserved IP out of the project's state: {urn}")
    if projects and not dry_run:
        # stack import reads a file; the export holds only ciphertext of secrets.
        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            os.fchmod(f.fileno(), 0o600)
            json.dump(export, f)
            f.flush()
            result = _pulumi(["stack", "import", "--stack", stack, "--file", f.name])
        if result.returncode != 0:
            raise RuntimeError(f"pulumi stack import failed: {result.stderr.strip()[-500:]}")
    urns = retired_urns(export)
    for urn in urns:
        why = RETIRED[str(_retired_key(urn))]
        print(f"{'would remove' if dry_run else 'removing'} from the state only: {urn}\n  because {why}")
        if dry_run:
            continue
        for args in (["state", "unprotect", urn], ["state", "delete", urn]):
            result = _pulumi([*args, "--stack", stack, "--yes"])
            if result.returncode != 0:
                raise RuntimeError(f"pulumi {' '.join(args[:2])} failed: {result.stderr.strip()[-500:]}")
    if not urns and not projects:
        print(f"{stack}: the state is up to date")
    return projects + urns


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
