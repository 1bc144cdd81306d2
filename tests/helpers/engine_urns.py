"""URNs as the Pulumi engine builds them, from the mocks' registrations.

The engine's URN carries the whole chain of parent types below the root stack
(`HaStack$Cluster$command:remote:Command`); this is what a deployed stack's
state is keyed by, so a refactor that changes it replaces the resource.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from infra.config import PROJECT
from tooling.engine_model import alias_urn


def engine_urns(stack: str, resources: Iterable[dict[str, Any]]) -> dict[str, set[str]]:
    """resource URN (the mocks') -> every engine URN it answers to: its own and its aliases'."""
    by_urn = {r["urn"]: r for r in resources}

    def chain(r: dict[str, Any]) -> str:
        parent = by_urn.get(r["parent"])
        return f"{chain(parent)}${r['type']}" if parent else r["type"]

    out: dict[str, set[str]] = {}
    for urn, r in by_urn.items():
        names = {f"urn:pulumi:{stack}::{PROJECT}::{chain(r)}::{r['name']}"}
        aliased = (alias_urn(stack, PROJECT, r["type"], r["name"], a) for a in r.get("aliases", []))
        out[urn] = names | {u for u in aliased if u}
    return out
