"""The lab's replay schedules commands like the engine: by their dependencies, at once
where the graph allows, and dials like pulumi-command."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from infra import tuning
from lab import replay
from tooling.mocks import Run
from tooling.render import commands

BASE = {"host": "h", "port": 22, "user": "deploy", "privateKey": "KEY", "update": None, "delete": None,
        "stdin": None, "environment": {}, "triggers": [], "logging": None, "dependsOn": []}


def _cmd(name: str, *deps: str) -> dict[str, Any]:
    return BASE | {"name": name, "create": f"run {name}", "dependsOn": list(deps)}


@pytest.fixture
def lab_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DO_HA_LAB_DIR", str(tmp_path))
    (tmp_path / "run").mkdir()
    return tmp_path


def test_independent_commands_run_at_once_and_dependents_wait(lab_dir: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # a and b only finish once both are running: run one after the other, the barrier breaks.
    both = threading.Barrier(2, timeout=5)
    events: list[tuple[str, str]] = []
    lock = threading.Lock()

    def fake_ssh(cmd: dict, text: str, key_file: Path) -> subprocess.CompletedProcess[str]:
        name = text.removeprefix("run ")
        with lock:
            events.append(("start", name))
        if name in ("a", "b"):
            both.wait()
        time.sleep(0.05)
        with lock:
            events.append(("end", name))
        return subprocess.CompletedProcess([], 0, "", "")

    monkeypatch.setattr(replay, "ssh", fake_ssh)
    record: dict[str, dict] = {}
    assert replay.replay_all([_cmd("a"), _cmd("b"), _cmd("c", "a", "b")], record=record) == 3
    assert events.index(("start", "c")) > max(events.index(("end", "a")), events.index(("end", "b")))
    assert set(record) == {"a", "b", "c"} and record["c"]["start_s"] >= record["a"]["took_s"]


def test_a_failure_starts_nothing_new_and_lets_running_commands_finish(lab_dir: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    finished: list[str] = []

    def fake_ssh(cmd: dict, text: str, key_file: Path) -> subprocess.CompletedProcess[str]:
        name = text.removeprefix("run ")
        if name == "bad":
            return subprocess.CompletedProcess([], 3, "", "boom")
        time.sleep(0.3)  # still running when "bad" fails
        finished.append(name)
        return subprocess.CompletedProcess([], 0, "", "")

    monkeypatch.setattr(replay, "ssh", fake_ssh)
    plan = [_cmd("bad"), _cmd("slow"), _cmd("after-bad", "bad"), _cmd("after-slow", "slow")]
    with pytest.raises(RuntimeError, match=r"bad failed on h \(exit 3\): boom.*not run: after-bad, after-slow"):
        replay.replay_all(plan)
    assert finished == ["slow"]
    # what finished is remembered: the next replay runs only what did not
    ran: list[str] = []
    monkeypatch.setattr(replay, "ssh", lambda cmd, text, key: ran.append(text) or subprocess.CompletedProcess([], 0))
    assert replay.replay_all(plan) == 3 and sorted(ran) == ["run after-bad", "run after-slow", "run bad"]


def test_an_unchanged_dependency_does_not_hold_a_changed_command(lab_dir: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []
    monkeypatch.setattr(replay, "ssh", lambda cmd, text, key: ran.append(text) or subprocess.CompletedProcess([], 0))
    plan = [_cmd("a"), _cmd("b", "a")]
    assert replay.replay_all(plan) == 2
    plan[1] = plan[1] | {"create": "run b2"}
    assert replay.replay_all(plan) == 1 and ran[-1] == "run b2"


def test_a_command_waits_for_a_changed_one_through_an_unchanged_one(lab_dir: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # web -> resources (unchanged) -> cert: the engine runs cert after web's update,
    # as resources' empty step waits for web (the lab found cert racing web).
    events: list[str] = []

    def fake_ssh(cmd: dict, text: str, key_file: Path) -> subprocess.CompletedProcess[str]:
        events.append(f"start {text}")
        time.sleep(0.2)
        events.append(f"end {text}")
        return subprocess.CompletedProcess([], 0, "", "")

    monkeypatch.setattr(replay, "ssh", fake_ssh)
    plan = [_cmd("web"), _cmd("resources", "web"), _cmd("cert", "resources")]
    assert replay.replay_all(plan) == 3
    plan[0] = plan[0] | {"create": "run web2"}
    plan[2] = plan[2] | {"create": "run cert2"}
    events.clear()
    assert replay.replay_all(plan) == 2
    assert events == ["start run web2", "end run web2", "start run cert2", "end run cert2"]


def test_the_replay_dials_like_pulumi_command(monkeypatch: pytest.MonkeyPatch) -> None:
    # pulumi's retry.Until defaults: 100 ms, x1.5, at most 5 s; dial_error_limit failures are allowed.
    slept: list[float] = []
    dials: list[int] = []
    monkeypatch.setattr(replay.time, "sleep", slept.append)

    def refused(args: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        dials.append(1)
        return subprocess.CompletedProcess(args, 255, "", "Connection refused")

    monkeypatch.setattr(replay.subprocess, "run", refused)
    assert replay.ssh(BASE | {"name": "x"}, "true", Path("/nonexistent")).returncode == 255
    assert len(dials) == tuning.SSH_DIAL_ERROR_LIMIT + 1
    assert slept[:4] == pytest.approx([0.1, 0.15, 0.225, 0.3375]) and max(slept) == 5.0


def test_replay_refuses_a_plan_whose_commands_wait_on_each_other(lab_dir: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replay, "ssh", lambda cmd, text, key: subprocess.CompletedProcess([], 0))
    with pytest.raises(ValueError, match="cycle"):
        replay.replay_all([_cmd("x", "y"), _cmd("y", "x")])


def test_dependencies_through_outputs_reach_the_plan(staging: Run) -> None:
    # The database files carry the node certificate only as an Output in the stdin
    # bundle, never in depends_on: the engine still waits for it, and so does the plan.
    db_node = staging.by_name("app1-db-node")
    assert staging.by_name("app1-db-cert").urn in db_node.dependencies
    assert staging.by_name("automation").urn in db_node.dependencies  # the key, in the connection
    assert staging.by_name("app1-first-boot").urn in db_node.dependencies  # the host key, in the connection
    plan = {c["name"]: c for c in commands(staging)}
    # ...and after every node's cluster-node: the sync guard it installs writes marks to
    # the stores, and relies on the promotion's check of them, that cluster-node installs
    assert plan["app1-db-node"]["dependsOn"] == ["app1-cluster-node", "app1-first-boot", "app2-cluster-node",
                                                 "witness-cluster-node"]
    # cluster-resources runs on app1: its connection waits for app1's gate's host key.
    # Every node's alert agent is in place before pacemaker is told to run it.
    assert plan["cluster-resources"]["dependsOn"] == [
        "app1-alert-mail", "app1-db-handover", "app1-first-boot", "app1-web-node", "app2-alert-mail",
        "app2-db-handover", "app2-web-node", "cluster-setup", "witness-alert-mail"]
