"""`make replace`: what it refuses, and the order of what it does (fake operations
record every call; the lab runs the real thing, tests/lab)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

import pytest

from tests.unit.test_state_identity import deployed
from tooling.health import Report
from tooling.node_ops import OperationError, Operations
from tooling.replace_node import blocking_problems, plan, replace


def report(*problems: str) -> Report:
    return Report(stack="prod", taken_at=0.0, reserved_ip="198.51.100.10",
                  nodes={"app1": {}, "app2": {}, "witness": {}}, problems=list(problems))


class Recorder:
    def __init__(self, health: list[Report], pulumi_rc: int = 0) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.inputs: list[str] = []
        self._health = health
        self.pulumi_rc = pulumi_rc

    def ops(self) -> Operations:
        def health() -> Report:
            self.calls.append(("health",))
            return self._health.pop(0) if len(self._health) > 1 else self._health[0]

        def run_on(node: str, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
            self.calls.append(("ssh", node, *argv))
            return subprocess.CompletedProcess(argv, 0, "", "")

        def pulumi(argv: Sequence[str]) -> int:
            self.calls.append(("pulumi", *argv))
            return self.pulumi_rc if argv[0] == "up" else 0

        def run_with_input(node: str, argv: Sequence[str], text: str) -> subprocess.CompletedProcess[str]:
            self.inputs.append(text)
            return run_on(node, argv)

        return Operations(health, run_on, pulumi, say=lambda _: None, sleep=lambda _: None,
                          run_with_input=run_with_input)


def test_plan_finds_the_droplet_the_state_holds() -> None:
    r = plan("prod", "app2")
    assert r.urn in deployed("prod")
    assert r.host == "do-ha-stack-prod-app2" and r.protect


@pytest.mark.parametrize("node, message", [
    ("app2,witness", "give exactly one node"),
    ("app1 app2", "give exactly one node"),
    ("", "give exactly one node"),
    ("app7", "NODE='app7' is not a node of prod; allowed: app1, app2, witness"),
])
def test_bad_requests_are_refused_before_anything_runs(node: str, message: str) -> None:
    with pytest.raises(OperationError, match=message.replace("(", r"\(")):
        plan("prod", node)


def test_the_nodes_own_problems_do_not_block_its_replacement() -> None:
    r = report("app2: offline", "database on app2: replication stopped", "storage: brick on app2 not connected")
    assert blocking_problems(r, "app2") == []
    assert blocking_problems(r, "app1") == [*r.problems]


def test_a_replacement_on_prod_drains_unprotects_replaces_and_rejoins() -> None:
    rec = Recorder([report("app2: offline"), report()])
    after = replace(plan("prod", "app2"), rec.ops(), yes=True)
    urn = plan("prod", "app2").urn
    assert after.healthy
    assert rec.calls == [
        ("health",),
        ("ssh", "app1", "sudo", "-n", "pcs", "node", "standby", "do-ha-stack-prod-app2", "--wait=300"),
        ("pulumi", "state", "unprotect", urn, "--stack", "prod", "--yes"),
        ("pulumi", "up", "--replace", urn, "--stack", "prod", "--yes"),
        ("ssh", "app1", "sudo", "-n", "pcs", "node", "unstandby", "do-ha-stack-prod-app2"),
        ("health",),
    ]


def test_the_active_node_is_drained_from_another_member() -> None:
    rec = Recorder([report(), report()])
    replace(plan("staging", "app2"), rec.ops())
    standby = next(c for c in rec.calls if "standby" in c)
    assert standby[1] == "app1" and "do-ha-stack-staging-app2" in standby
    assert not any(c[:3] == ("pulumi", "state", "unprotect") for c in rec.calls)  # staging is not protected
    assert not any(c[:2] == ("pulumi", "config") for c in rec.calls)  # app2 does not run the cluster-wide steps


def test_the_control_node_hands_the_cluster_wide_steps_over_before_it_goes() -> None:
    r = plan("prod", "app1")
    assert r.control == "app1"
    rec = Recorder([report(), report()])
    replace(r, rec.ops(), yes=True)
    assert rec.calls[:4] == [
        ("health",),
        ("pulumi", "config", "set", "do-ha-stack:controlNode", "app2", "--stack", "prod"),
        ("pulumi", "up", "--stack", "prod", "--yes"),
        ("ssh", "app2", "sudo", "-n", "pcs", "node", "standby", "do-ha-stack-prod-app1", "--wait=300"),
    ]
    assert ("pulumi", "up", "--replace", r.urn, "--stack", "prod", "--yes") in rec.calls


def test_a_failed_control_move_replaces_nothing() -> None:
    rec = Recorder([report()], pulumi_rc=1)
    with pytest.raises(OperationError, match="nothing was replaced"):
        replace(plan("staging", "app1"), rec.ops())
    assert not any("standby" in c or "--replace" in c for c in rec.calls)


def test_a_degraded_stack_is_refused_with_nothing_done() -> None:
    rec = Recorder([report("cluster: no quorum (as app1 sees it)", "app1: offline")])
    with pytest.raises(OperationError, match="could break quorum") as e:
        replace(plan("prod", "app2"), rec.ops(), yes=True)
    assert "cluster: no quorum" in str(e.value) and "app1: offline" in str(e.value)
    assert rec.calls == [("health",)]


def test_a_failed_up_leaves_the_node_drained_and_says_how_to_undo() -> None:
    rec = Recorder([report()], pulumi_rc=1)
    with pytest.raises(OperationError, match="pcs node unstandby do-ha-stack-prod-witness"):
        replace(plan("prod", "witness"), rec.ops(), yes=True)
    assert not any("unstandby" in c for c in rec.calls)
