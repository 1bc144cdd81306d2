"""Day 2 in the lab: `make replace NODE=app1` on the active node, which is also the
control node (it runs the cluster-wide steps), under load.

The test drives tooling.replace_node.replace itself, the code `make replace` runs,
with the lab standing in for its operations: the stack's health is `make status`
against the lab, commands on nodes go over SSH as the admin's would, and the Pulumi
CLI is the lab doing what the engine does (`config set` changes the lab stack's
setting, `up` replays the commands whose inputs changed, `up --replace` replaces the
droplet: lab.replace). So the order under test is the tool's own: the control role
moves to app2, app1 goes to standby (the planned switchover), app1 is replaced and
joins, app1 leaves standby.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import pytest

from infra.naming import droplet_name
from lab import replay
from lab.containers import load_state, state_file
from lab.health import status
from lab.replace import replace as lab_replace
from lab.stack import lab_config, lab_nodes, lab_plan, lab_program
from lab.topology import LabNode
from tests.helpers.day2 import apps, assert_converged, host, sql, writes_through_the_reserved_ip
from tests.helpers.lab_support import Admin
from tests.lab.test_lab_cluster import _promoted, _settled, _wait
from tooling.health import Report
from tooling.replace_node import Operations, Replacement, replace

pytestmark = pytest.mark.lab
FILES = 10
Around = dict[str, Callable[[], AbstractContextManager[None]]]


def _health() -> Report:
    result = status(["--json"], capture=True)
    assert result.returncode in (0, 1), f"status could not run: {result.stderr[-2000:]}"
    data = json.loads(result.stdout)
    return Report(**{k: v for k, v in data.items() if k in Report.__dataclass_fields__})


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
            key, value = argv[2].split(":", 1)[1], argv[3]
            state = load_state()
            state_file().write_text(json.dumps(state | {"settings": (state.get("settings") or {}) | {key: value}}))
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


def _run_on(name: str, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    node = next(n for n in lab_nodes() if n.name == name)
    return Admin(node).run(shlex.join(argv), check=False, timeout=400)


@pytest.mark.disruptive(order=4)
def test_replacing_the_active_control_node_is_one_planned_switchover(nodes: list[LabNode], report: dict) -> None:
    _wait("a settled cluster", 300, lambda: _settled(nodes))
    old = nodes[0]
    assert _promoted(nodes) == old, f"expected {old.name} to be primary"
    cfg = lab_config()
    assert cfg.control_node == old.name
    Admin(old).sudo(f"sh -c 'mkdir -p /srv/shared/active && for i in $(seq {FILES}); do "
                    "head -c 4096 /dev/urandom > /srv/shared/active/f$i; done'")
    r = Replacement(stack=cfg.stack, node=old.name, host=droplet_name(cfg, old.name),
                    urn=lab_program(nodes).by_name(old.name).urn, protect=cfg.protect,
                    control=cfg.control_node, apps=tuple(n.name for n in apps(nodes)))

    with writes_through_the_reserved_ip("replace-active", old, lead_s=10) as load:
        pulumi = LabPulumi(lambda: load.around([c["name"] for c in lab_plan(lab_nodes())]))
        after = replace(r, Operations(_health, _run_on, pulumi), yes=True)
    report.setdefault("operations", {})["replace-active"] = pulumi.figures["replace"] | load.figures() | {
        "control_move_commands_run": pulumi.figures["ups"][0]["commands_run"]}

    # The tool's order: control moved (config set, up), then the replacement.
    assert [c[0] + (" --replace" if "--replace" in c else "") for c in pulumi.calls] == \
        ["config", "up", "up --replace"], pulumi.calls
    # Moving the control role re-ran exactly the three cluster-wide steps.
    assert pulumi.figures["ups"][0]["commands_run"] == 3
    assert lab_config().control_node != old.name
    assert after.healthy, after.problems

    nodes = lab_nodes()
    new, survivor = nodes[0], nodes[1]
    assert new.droplet_id != old.droplet_id and new.private_ip != old.private_ip
    _wait("a settled cluster with the new node", 300, lambda: _settled(nodes))
    # The active role moved once, to the survivor, and stays there (stickiness).
    assert _promoted(nodes) == survivor
    assert sql(new, "SELECT @@read_only") == "1"
    standby = Admin(survivor).sudo("crm_mon -1 --output-as=xml").stdout
    assert f'name="{host(new)}"' in standby and 'standby="true"' not in standby
    assert_converged(nodes, [old], {a["key"] for a in load.acked}, {f"active/f{i}" for i in range(1, FILES + 1)})
    # The switchover's gap in acknowledged writes is a figure (target <= 2 s), as are
    # failed writes: a timing matter on the lab's two shared cores.
