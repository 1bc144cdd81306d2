"""A deployed stack keeps every resource across changes to the program's layout.

The engine keys state by URN, which carries the whole parent chain: moving a
resource to another component, or renaming it, creates it anew and deletes the
old one (on prod, where all is protected, the update is refused). Every URN a
deployed stack holds must still be answered, by the resource itself or an alias.
"""

from __future__ import annotations

import json

import pytest

from infra.paths import REPO_ROOT
from tests.helpers.engine_urns import engine_urns
from tooling.mocks import Run
from tooling.state_upgrade import retired_urns

DATA = REPO_ROOT / "tests" / "unit" / "data"


def deployed(stack: str) -> set[str]:
    lines = (DATA / f"state-urns-{stack}.txt").read_text().splitlines()
    return {line for line in lines if line and not line.startswith("#")}


def answered(run: Run) -> set[str]:
    resources = [r.to_json() for r in run.registrations]
    return {u for names in engine_urns(run.stack, resources).values() for u in names}


@pytest.mark.parametrize("stack", ["prod", "staging"])
def test_every_deployed_resource_keeps_its_identity(stack: str, prod: Run, staging: Run) -> None:
    """...or is retired on purpose: taken out of the state by `make state-upgrade`."""
    run = {"prod": prod, "staging": staging}[stack]
    export = {"deployment": {"resources": [{"urn": u} for u in deployed(stack)]}}
    missing = sorted(deployed(stack) - answered(run) - set(retired_urns(export)))
    assert not missing, "these resources would be replaced or deleted:\n" + "\n".join(missing)
    assert set(retired_urns(export)) <= deployed(stack) - answered(run), "a retired resource is still declared"


def test_aliases_point_at_the_former_parent(prod: Run) -> None:
    cmd = prod.by_name("cluster-resources")
    own, *aliases = sorted(engine_urns("prod", [r.to_json() for r in prod.registrations])[cmd.urn])
    assert "do-ha-stack:failover:Failover$command:remote:Command::cluster-resources" in json.dumps(
        [own, *aliases])
    assert ("urn:pulumi:prod::do-ha-stack::do-ha-stack:index:HaStack$do-ha-stack:cluster:Cluster"
            "$command:remote:Command::cluster-resources") in aliases + [own]


def test_a_move_without_alias_is_caught(prod: Run) -> None:
    resources = [r.to_json() for r in prod.registrations]
    for r in resources:
        if r["name"] == "cluster-resources":
            r["aliases"] = []
    urns = {u for names in engine_urns("prod", resources).values() for u in names}
    assert any(u.endswith("Cluster$command:remote:Command::cluster-resources") for u in deployed("prod") - urns)


def test_mocks_build_urns_as_the_engine_does(prod: Run) -> None:
    """A URN from a render or a test must be one the engine gives: `pulumi up --replace URN`
    and `pulumi state unprotect URN` take URNs copied from there."""
    resources = [r.to_json() for r in prod.registrations]
    chains = engine_urns("prod", [{**r, "aliases": []} for r in resources])
    mismatched = [r["urn"] for r in resources if chains[r["urn"]] != {r["urn"]}]
    assert not mismatched, mismatched[:3]
    droplet = prod.by_name("app2")
    assert droplet.urn == ("urn:pulumi:prod::do-ha-stack::do-ha-stack:index:HaStack$do-ha-stack:nodes:Nodes"
                           "$digitalocean:index/droplet:Droplet::app2")
