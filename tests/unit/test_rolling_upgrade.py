"""`make upgrade`: the order of nodes and of what it does to each, what it refuses,
where it stops (fake operations answer like the nodes; the lab runs the real
thing, tests/lab/test_lab_upgrade.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

import pytest

from infra import tuning
from tests.unit.test_switchover import Nodes, healthy
from tooling.health import Report
from tooling.node_ops import OperationError, Operations, stack_config
from tooling.rolling_upgrade import BOOT_ID, UPGRADE_SCRIPT, order, plan, upgrade


class Rebooting(Nodes):
    """Nodes that reboot: a node's boot id changes once it has been unreachable a while;
    `stuck` nodes never come back, `failing` nodes' upgrades fail."""

    def __init__(self, health: list[Report], stuck: tuple[str, ...] = (), failing: tuple[str, ...] = ()) -> None:
        super().__init__(health)
        self.boots: dict[str, int] = {}
        self.down: dict[str, int] = {}  # node -> polls left before it answers again
        self.stuck, self.failing = stuck, failing

    def ops(self) -> Operations:
        ops = super().ops()
        answer = ops.run_on

        def run_on(node: str, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
            if list(argv) == ["cat", BOOT_ID]:
                self.calls.append(("boot-id", node))
                if self.down.get(node, 0) > 0 or node in self.stuck and node in self.down:
                    self.down[node] -= 1
                    return subprocess.CompletedProcess(argv, 255, "", "Connection refused")
                return subprocess.CompletedProcess(argv, 0, f"boot-{self.boots.get(node, 0)}\n", "")
            if list(argv) == ["sudo", "-n", "systemctl", "reboot"]:
                self.calls.append(("reboot", node))
                self.boots[node] = self.boots.get(node, 0) + 1
                self.down[node] = 2
                return subprocess.CompletedProcess(argv, 255, "", "Connection closed")
            return answer(node, argv)

        def run_with_input(node: str, argv: Sequence[str], text: str) -> subprocess.CompletedProcess[str]:
            self.calls.append(("upgrade", node))
            self.inputs.append(text)
            rc = 100 if node in self.failing else 0
            return subprocess.CompletedProcess(argv, rc, "3 upgraded, 0 newly installed, 0 to remove and 0 not "
                                                        "upgraded.\n", "E: dpkg was interrupted" * (rc != 0))

        ops.run_on, ops.run_with_input = run_on, run_with_input
        return ops

    def steps(self) -> list[tuple[str, ...]]:
        """What happened to each node, without the health checks and boot id polls."""
        out = []
        for c in self.calls:
            if c[0] in ("upgrade", "reboot"):
                out.append(c)
            elif c[0] == "ssh" and "standby" in c:
                out.append(("standby", c[-2]))
            elif c[0] == "ssh" and "unstandby" in c:
                out.append(("unstandby", c[-1]))
            elif c[0] == "ssh" and c[2:5] == ("sudo", "-n", "sh") and "MASTER_GTID_WAIT" in c[-1]:
                out.append(("switchover-to", c[1]))
        return out


def test_the_witness_goes_first_and_the_active_node_last() -> None:
    assert order(["app1", "app2", "witness", "app3"], "app2") == ["witness", "app1", "app3", "app2"]
    assert order(["app2", "app1"], None) == ["app1", "app2"]


@pytest.mark.parametrize("nodes, message", [
    ("app7", "NODES: app7 is not a node of prod; allowed: app1, app2, witness"),
    ("app1,app1", "names a node twice"),
])
def test_bad_requests_are_refused_before_anything_runs(nodes: str, message: str) -> None:
    with pytest.raises(OperationError, match=message):
        plan(stack_config("prod"), nodes)


def test_every_node_in_turn_standby_upgrade_reboot_unstandby_the_active_one_after_a_switchover() -> None:
    # health: at the start, after witness, before app2, after app2, before app1 (the
    # primary), after the switchover, after app1
    rec = Rebooting([healthy("app1", {"app2": 0})] * 5 + [healthy("app2", {"app1": 0})] * 2)
    after = upgrade(plan(stack_config("prod"), None), rec.ops())
    assert after.healthy
    app = "do-ha-stack-prod-"
    assert rec.steps() == [
        ("standby", f"{app}witness"), ("upgrade", "witness"), ("reboot", "witness"), ("unstandby", f"{app}witness"),
        ("standby", f"{app}app2"), ("upgrade", "app2"), ("reboot", "app2"), ("unstandby", f"{app}app2"),
        ("switchover-to", "app2"),
        ("standby", f"{app}app1"), ("upgrade", "app1"), ("reboot", "app1"), ("unstandby", f"{app}app1"),
    ]
    assert rec.inputs == [UPGRADE_SCRIPT.read_text()] * 3
    # a node leaves standby only once it answers with a new boot id
    for node in ("witness", "app2", "app1"):
        reboot = rec.calls.index(("reboot", node))
        unstandby = next(i for i, c in enumerate(rec.calls) if "unstandby" in c and c[-1].endswith(node))
        polls = [c for c in rec.calls[reboot:unstandby] if c == ("boot-id", node)]
        assert len(polls) == 3, polls  # two while it is down, one that sees the new boot


def test_only_the_nodes_asked_for() -> None:
    rec = Rebooting([healthy("app1", {"app2": 0})])
    upgrade(plan(stack_config("prod"), "app2"), rec.ops())
    assert [s for s in rec.steps() if s[0] == "upgrade"] == [("upgrade", "app2")]
    assert not any(s[0] == "switchover-to" for s in rec.steps())


def test_a_degraded_stack_stops_the_upgrade_before_the_next_node_naming_what_is_done() -> None:
    rec = Rebooting([healthy("app1", {"app2": 0}), healthy("app1", {"app2": 0}),
                     healthy("app1", {"app2": 0}, "storage: brick on app2 has 3 entries to heal")])
    with pytest.raises(OperationError, match=r"(?s)stopping after witness: prod is degraded.*entries to heal"):
        upgrade(plan(stack_config("prod"), None), rec.ops())
    assert [s for s in rec.steps() if s[0] == "upgrade"] == [("upgrade", "witness")]


def test_a_degraded_stack_is_refused_with_nothing_done() -> None:
    rec = Rebooting([healthy("app1", {"app2": 0}, "app2: offline")])
    with pytest.raises(OperationError, match="stopping before any node"):
        upgrade(plan(stack_config("prod"), None), rec.ops())
    assert rec.steps() == []


def test_a_failed_upgrade_leaves_the_node_in_standby_and_says_how_to_go_on() -> None:
    rec = Rebooting([healthy("app1", {"app2": 0})], failing=("witness",))
    expected = (r"(?s)the upgrade failed on witness \(exit 100\).*dpkg was interrupted"
                r".*witness stays in standby.*pcs node unstandby do-ha-stack-prod-witness")
    with pytest.raises(OperationError, match=expected):
        upgrade(plan(stack_config("prod"), None), rec.ops())
    assert rec.steps() == [("standby", "do-ha-stack-prod-witness"), ("upgrade", "witness")]  # no reboot


def test_a_node_that_does_not_come_back_stops_everything() -> None:
    rec = Rebooting([healthy("app1", {"app2": 0})], stuck=("witness",))
    with pytest.raises(OperationError, match=f"witness did not come back from its reboot within "
                                             f"{tuning.UPGRADE_REBOOT_TIMEOUT_S} s"):
        upgrade(plan(stack_config("prod"), None), rec.ops())
    assert rec.steps()[-1] == ("reboot", "witness")
    polls = tuning.UPGRADE_REBOOT_TIMEOUT_S // tuning.UPGRADE_REBOOT_POLL_S
    assert rec.calls.count(("boot-id", "witness")) == 1 + polls
