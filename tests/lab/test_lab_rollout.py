"""Day 2 in the lab: roll a cloud-init change out to every node, one `make replace`
at a time (the README's "Changing cloud-init"), under load. The last node is app1,
the active node and the control node (it runs the cluster-wide steps).

The test drives tooling.replace_node.replace itself, the code `make replace` runs,
with the lab standing in for its operations: the stack's health is `make status`
against the lab, commands on nodes go over SSH as the admin's would, and the Pulumi
CLI is the lab doing what the engine does (`config set` changes the lab stack's
setting, `up` replays the commands whose inputs changed, `up --replace` replaces the
droplet: lab.replace). So the order under test is the tool's own; for app1: the
control role moves to app2, app1 goes to standby (the planned switchover), app1 is
replaced and joins, app1 leaves standby.

The change: sshClassicalKexFallback off (post-quantum key exchange only), which
only the user-data carries (sshd's drop-in). The program ignores user-data changes
on existing droplets, so the `up` after `config set` runs nothing; each replaced
node comes back with the new sshd configuration, the others keep the old one until
their turn (the lab's OpenSSH client speaks sntrup761x25519 to both).

It leaves the lab as it would leave a stack: controlNode app2, the fallback off,
every droplet new. Tests after it find the primary and control node themselves.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import pytest

from infra.naming import droplet_name
from lab import replay
from lab.replace import replace as lab_replace
from lab.stack import config_set, lab_config, lab_nodes, lab_plan, lab_program
from lab.topology import LabNode
from tests.helpers.day2 import (
    apps, assert_converged, host, lab_health, lab_run_on, sql, write_shared_files, writes_through_the_reserved_ip,
)
from tests.helpers.lab_support import Admin
from tests.lab.test_lab_cluster import _promoted, _settled, _wait
from tooling.node_ops import Operations
from tooling.replace_node import Replacement, replace

pytestmark = pytest.mark.lab
FILES = 10
SETTING = "sshClassicalKexFallback"
CLASSICAL = "curve25519-sha256"  # what the fallback adds to sshd's KexAlgorithms (on by default)
Around = dict[str, Callable[[], AbstractContextManager[None]]]


class LabPulumi:
    """The Pulumi CLI as the lab can play it; records what it was asked."""

    def __init__(self, around: Callable[[], Around]) -> None:
        self.around = around
        self.calls: list[list[str]] = []
        self.figures: dict[str, dict] = {}

    def __call__(self, argv: Sequence[str]) -> int:
        argv = list(argv)
        self.calls.append(argv)
        if argv[:2] == ["config", "set"]:
            config_set(argv[2].split(":", 1)[1], argv[3])
            return 0
        if argv[0] == "up" and "--replace" in argv:
            urn = argv[argv.index("--replace") + 1]
            self.figures["replace"] = lab_replace(urn.rsplit("::", 1)[1], self.around())
            return 0
        if argv[0] == "up":
            self.figures.setdefault("ups", []).append({"commands_run": replay.replay_all(lab_plan(lab_nodes()),
                                                                                           self.around())})
            return 0
        raise AssertionError(f"the lab plays no `pulumi {' '.join(argv)}`")


def _kex(node: LabNode) -> str:
    found = re.search(r"^kexalgorithms (\S+)", Admin(node).sudo("sshd -T").stdout, re.MULTILINE)
    assert found, node.name
    return found.group(1)


def _replacement(name: str) -> Replacement:
    cfg = lab_config()
    return Replacement(stack=cfg.stack, node=name, host=droplet_name(cfg, name),
                       urn=lab_program(lab_nodes()).by_name(name).urn, protect=cfg.protect,
                       control=cfg.control_node, apps={n.name: host(n) for n in apps(lab_nodes())})


@pytest.mark.disruptive(order=4)
def test_a_cloud_init_change_rolls_out_to_every_node_one_replacement_at_a_time(nodes: list[LabNode],
                                                                                 report: dict) -> None:
    _wait("a settled cluster", 300, lambda: _settled(nodes))
    active = nodes[0]
    assert _promoted(nodes) == active, f"expected {active.name} to be primary"
    assert lab_config().control_node == active.name
    assert all(CLASSICAL in _kex(n).split(",") for n in nodes)
    files = write_shared_files(active, "rollout", FILES, 4096)

    # The change itself: set, and an `up` that runs nothing on the running nodes.
    change = LabPulumi(dict)
    change(["config", "set", f"do-ha-stack:{SETTING}", "false"])
    change(["up"])
    assert change.figures["ups"][0]["commands_run"] == 0
    assert all(CLASSICAL in _kex(n).split(",") for n in lab_nodes())

    operations = report.setdefault("operations", {})
    done: list[str] = []
    # The witness, the replica, then the active control node: the README's order.
    for name in ("witness", next(n.name for n in apps(nodes) if n != active), active.name):
        old = next(n for n in lab_nodes() if n.name == name)
        primary = _promoted(lab_nodes())
        assert primary is not None
        with writes_through_the_reserved_ip(f"rollout-{name}", primary, lead_s=5) as load:
            pulumi = LabPulumi(lambda: load.around([c["name"] for c in lab_plan(lab_nodes())]))
            after = replace(_replacement(name), Operations(lab_health, lab_run_on, pulumi), yes=True)
        figures = pulumi.figures["replace"] | load.figures()
        if name == active.name:
            figures["control_move_commands_run"] = pulumi.figures["ups"][0]["commands_run"]
        operations[f"rollout-{name}"] = figures
        assert after.healthy, (name, after.problems)

        nodes_now = lab_nodes()
        new = next(n for n in nodes_now if n.name == name)
        assert new.droplet_id != old.droplet_id and new.private_ip != old.private_ip
        _wait(f"a settled cluster with the new {name}", 300, lambda: _settled(lab_nodes()))
        # The change reached the new droplet; the ones not yet replaced keep the old file.
        done.append(name)
        assert {n.name for n in nodes_now if CLASSICAL not in _kex(n).split(",")} == set(done), name
        assert_converged(nodes_now, [old], {a["key"] for a in load.acked}, files)

        calls = [c[0] + (" --replace" if "--replace" in c else "") for c in pulumi.calls]
        if name != active.name:
            assert calls == ["up --replace"], pulumi.calls
            continue
        # app1: the control role moved first (config set, an up that re-ran exactly the
        # three cluster-wide steps), then the replacement; the active role moved once,
        # to the survivor, and stays there (stickiness).
        assert calls == ["config", "up", "up --replace"], pulumi.calls
        assert pulumi.figures["ups"][0]["commands_run"] == 3
        assert lab_config().control_node != active.name
        survivor = next(n for n in nodes_now if n.name == lab_config().control_node)
        assert _promoted(nodes_now) == survivor
        assert sql(new, "SELECT @@read_only") == "1"
        standby = Admin(survivor).sudo("crm_mon -1 --output-as=xml").stdout
        assert f'name="{host(new)}"' in standby and 'standby="true"' not in standby

    assert all(CLASSICAL not in _kex(n).split(",") for n in lab_nodes())
    # Client-visible: the switchover's gap and any failed write are figures (targets:
    # none failed while a non-active node is replaced, a gap <= 2 s for the active
    # one), a timing matter on the lab's two shared cores; what is asserted is that
    # no acknowledged write is lost.
