"""The lab's bring-up figures: cloud-init stages per node, the replay's critical path, the table."""

from __future__ import annotations

import json
from pathlib import Path

from lab import phases
from lab.topology import nodes_for


def test_cloud_init_phases_line_up_with_the_boot(tmp_path: Path) -> None:
    node = nodes_for(["app1"], base=tmp_path)[0]
    status = node.root / phases.STATUS
    status.parent.mkdir(parents=True)
    stage = {"errors": [], "recoverable_errors": {}}
    status.write_text(json.dumps({"v1": {
        "init-local": stage | {"start": 108.0, "finished": 108.2},
        "init": stage | {"start": 108.5, "finished": 109.0},
        "modules-config": stage | {"start": 109.1, "finished": 110.0},
        "modules-final": stage | {"start": 125.0, "finished": 167.5}, "stage": None}}))
    assert phases.cloud_init_phases(node, booted_at=100.0, noticed_at=168.0) == {
        "boot_s": 8.0, "init_and_config_s": 2.0, "services_s": 15.0, "final_s": 42.5, "total_s": 68.0}


def test_the_critical_path_follows_the_dependency_that_ended_last() -> None:
    plan = [{"name": "gate", "dependsOn": []}, {"name": "quick", "dependsOn": ["gate"]},
            {"name": "slow", "dependsOn": ["gate"]}, {"name": "last", "dependsOn": ["quick", "slow"]},
            {"name": "side", "dependsOn": ["gate"]}]
    steps = {"gate": {"start_s": 0.0, "took_s": 1.0}, "quick": {"start_s": 1.0, "took_s": 1.0},
             "slow": {"start_s": 1.0, "took_s": 30.0}, "last": {"start_s": 31.0, "took_s": 5.0},
             "side": {"start_s": 1.0, "took_s": 20.0}}
    assert phases.critical_path(steps, plan) == ["gate", "slow", "last"]
    assert phases.critical_path({}, plan) == []


def test_the_table_shows_every_phase_node_and_step() -> None:
    timings = {"render_and_network_s": 1.0, "cloud_init_s": 70.0, "replay_s": 80.0, "total_s": 151.0,
               "commands_run": 2,
               "cloud_init_nodes": {"app1": {"boot_s": 8.0, "init_and_config_s": 2.0, "services_s": 15.0,
                                             "final_s": 42.5, "total_s": 68.0}},
               "steps": {"b": {"host": "h2", "start_s": 1.0, "took_s": 79.0},
                         "a": {"host": "h1", "start_s": 0.0, "took_s": 1.0}},
               "critical_path": ["a", "b"]}
    lines = phases.table(timings).splitlines()
    assert [line.split()[0] for line in lines] == ["render", "boot", "app1", "replay", "*a", "*b", "total"]
    assert "services 15.0, final 42.5" in lines[2] and "h2, started at +1.0" in lines[5]
