"""Host keys: each node's first-boot gate prints its ed25519 host key, every later
command's connection pins it (pulumi-command then refuses another), the stack
outputs carry it, `make status` and the node operations check it, and the lab's
replay puts what a gate really printed where the mocks' placeholder is."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import pulumi
import pytest

from infra.first_boot import GATE_SUFFIX, WAIT_FOR_FIRST_BOOT, host_key_line
from lab import replay
from tooling import status
from tooling.mocks import Run, mock_host_key, run_program
from tooling.render import commands, stack_config
from tooling.resource_types import REMOTE_COMMAND
from tooling.status_gather import NodeTarget, SshSettings, pin_host_keys

KEY = mock_host_key("t", "n")
OTHER = mock_host_key("t", "other")


def _blob(type_: str) -> str:
    body = len(type_).to_bytes(4, "big") + type_.encode() + (32).to_bytes(4, "big") + bytes(32)
    return base64.b64encode(body).decode()


def test_a_gate_s_last_line_is_taken_as_its_host_key_when_it_is_one() -> None:
    assert host_key_line("app1", f"some noise\n{KEY}\n") == KEY
    assert KEY.startswith("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5")


@pytest.mark.parametrize("printed", [
    "", "hardening did not finish", f"{KEY} root@app1",  # a comment: not what the gate prints
    "ssh-rsa " + _blob("ssh-rsa"),  # not the key type the nodes' sshd offers
    "ssh-ed25519 " + _blob("ssh-rsa"),  # a blob of another type under the ed25519 name
    "ssh-ed25519 not*base64", f"{KEY}\nafter it",
])
def test_anything_else_fails_the_up_naming_the_gate(printed: str) -> None:
    with pytest.raises(ValueError, match="app1-first-boot printed no ssh-ed25519 host key"):
        host_key_line("app1", printed)


def test_a_preview_of_a_gate_that_ran_before_keys_were_printed_pins_nothing_yet(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The provider's preview of an update hands back the last run's (empty) stdout.
    monkeypatch.setattr(pulumi.runtime, "is_dry_run", lambda: True)
    assert host_key_line("app1", "") is None
    with pytest.raises(ValueError):
        host_key_line("app1", "garbage")  # output there is, and it is wrong: refused even in a preview


def test_the_gate_prints_the_ed25519_key_type_and_key_last() -> None:
    assert WAIT_FOR_FIRST_BOOT.endswith("cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub")


@pytest.fixture(scope="module")
def staging() -> Run:
    return run_program("staging", stack_config("staging"))


def test_every_command_but_the_gates_pins_its_own_node_s_key(staging: Run) -> None:
    nodes = staging.outputs["nodes"]
    key_at = {n["publicIpv4"]: n["hostKey"] for n in nodes.values()}
    assert len(set(key_at.values())) == len(nodes)  # one key per node
    gates = 0
    for r in staging.of_type(REMOTE_COMMAND):
        connection = r.raw_inputs["connection"]
        if r.name.endswith(GATE_SUFFIX):
            gates += 1
            assert "hostKey" not in connection, r.name
            assert nodes[r.name.removesuffix(GATE_SUFFIX)]["hostKey"] == staging.command_stdout[r.name]
        else:
            assert connection.get("hostKey") == key_at[connection["host"]], r.name
            gate = staging.by_name(f"{_node_at(nodes, connection['host'])}{GATE_SUFFIX}")
            assert gate.urn in r.dependencies, r.name  # the engine waits for the gate's output
    assert gates == len(nodes)


def _node_at(nodes: dict[str, Any], address: str) -> str:
    return next(name for name, n in nodes.items() if n["publicIpv4"] == address)


# --- the lab's replay --------------------------------------------------------------

@pytest.fixture
def lab_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DO_HA_LAB_DIR", str(tmp_path))
    (tmp_path / "run").mkdir()
    return tmp_path


BASE = {"host": "h", "port": 22, "user": "deploy", "privateKey": "KEY", "update": None, "delete": None,
        "stdin": None, "environment": {}, "triggers": [], "logging": None}


def _plan(placeholder: str) -> list[dict[str, Any]]:
    gate = BASE | {"name": "n-first-boot", "create": "gate", "dependsOn": [], "stdout": placeholder}
    step = BASE | {"name": "n-step", "create": "step", "dependsOn": ["n-first-boot"], "hostKey": placeholder,
                   "stdout": None}
    return [gate, step]


def test_replay_pins_what_the_gate_really_printed_and_a_render_with_it_changes_nothing(
        lab_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_ssh(cmd: dict, text: str, key_file: Path) -> subprocess.CompletedProcess[str]:
        seen[text] = cmd.get("hostKey")
        return subprocess.CompletedProcess([], 0, f"{OTHER}\n" if text == "gate" else "done\n", "")

    monkeypatch.setattr(replay, "ssh", fake_ssh)
    assert replay.replay_all(_plan(KEY)) == 2  # rendered before the gate ran: the mocks' placeholder
    assert seen == {"gate": None, "step": OTHER}
    assert replay.recorded_outputs() == {"n-first-boot": f"{OTHER}\n"}
    # The lab renders later plans with the printed key (as the engine's state has it): nothing changed.
    assert replay.replay_all(_plan(OTHER)) == 0
    # A key the gate never printed is a changed input: the step runs again (with it).
    assert replay.replay_all(_plan(OTHER)[:1] + [_plan(KEY)[1]]) == 1 and seen["step"] == KEY


def test_a_command_whose_gate_never_ran_cannot_be_replayed_alone(lab_dir: Path) -> None:
    gate, step = _plan(KEY)
    with pytest.raises(RuntimeError, match="n-step: its host key is n-first-boot's output, which has not run"):
        replay.resolved(step, [gate, step], {})


def test_replay_s_ssh_accepts_only_the_pinned_key(tmp_path: Path) -> None:
    options = replay.host_key_options(BASE | {"host": "203.0.113.11", "hostKey": KEY}, tmp_path)
    assert options[:2] == ["-o", "StrictHostKeyChecking=yes"] and options[-1] == "HostKeyAlgorithms=ssh-ed25519"
    known = Path(options[3].removeprefix("UserKnownHostsFile="))
    assert known.read_text() == f"203.0.113.11 {KEY}\n"
    other_port = replay.host_key_options(BASE | {"host": "h", "port": 2222, "hostKey": KEY}, tmp_path)
    assert Path(other_port[3].split("=", 1)[1]).read_text() == f"[h]:2222 {KEY}\n"
    assert replay.host_key_options(BASE, tmp_path) == []  # a gate: nothing to check against


# --- make status and the node operations ---------------------------------------------

OUTPUTS = {"reservedIp": "198.51.100.10", "nodes": {
    "app1": {"role": "app", "publicIpv4": "203.0.113.11", "hostKey": KEY},
    "witness": {"role": "witness", "publicIpv4": "203.0.113.30"}}}  # outputs from before keys were pinned


def test_status_checks_each_pinned_key_and_leaves_unpinned_nodes_to_ssh_s_defaults(tmp_path: Path) -> None:
    _, targets = status.targets_from_outputs(OUTPUTS)
    ssh = pin_host_keys(SshSettings("deploy", options=("ConnectTimeout=3",)), targets, tmp_path)
    assert (tmp_path / "known_hosts").read_text() == f"203.0.113.11 {KEY}\n"
    pinned = ssh.argv("203.0.113.11")
    assert pinned[-5:-3] == ["-o", "StrictHostKeyChecking=yes"]
    assert pinned[-3:-1] == ["-o", f"UserKnownHostsFile={tmp_path}/known_hosts"]
    # the user's own options come first, and ssh keeps an option's first value
    assert pinned.index("ConnectTimeout=3") < pinned.index("StrictHostKeyChecking=yes")
    assert "StrictHostKeyChecking=yes" not in ssh.argv("203.0.113.30")


def test_no_pinned_key_anywhere_changes_nothing(tmp_path: Path) -> None:
    targets = [NodeTarget("app1", "203.0.113.11", "app")]
    ssh = SshSettings("deploy")
    assert pin_host_keys(ssh, targets, tmp_path) is ssh and not (tmp_path / "known_hosts").exists()


def test_status_refuses_outputs_whose_host_key_is_not_one() -> None:
    bad = {**OUTPUTS, "nodes": {"app1": {"publicIpv4": "203.0.113.11", "hostKey": f"{KEY}\n203.0.113.99 {OTHER}"}}}
    with pytest.raises(status.StatusError, match=r"nodes\.app1\.hostKey is not an ssh-ed25519 public key"):
        status.targets_from_outputs(bad)


def test_the_lab_render_carries_keys_through_the_plan(staging: Run) -> None:
    plan = {c["name"]: c for c in commands(staging)}
    assert plan["app1-first-boot"]["stdout"] == staging.outputs["nodes"]["app1"]["hostKey"]
    assert plan["app1-db-node"]["hostKey"] == plan["app1-first-boot"]["stdout"]
    assert plan["app1-db-node"]["stdout"] is None


def test_node_operations_follow_the_outputs_an_up_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    # `make replace` runs `pulumi up`, which gives the new droplet another address and key.
    import argparse

    from tooling import node_ops

    before = {"reservedIp": "198.51.100.10", "nodes": {"app2": {"publicIpv4": "203.0.113.12", "hostKey": KEY}}}
    after = {"reservedIp": "198.51.100.10", "nodes": {"app2": {"publicIpv4": "203.0.113.42", "hostKey": OTHER}}}
    current = [before]
    monkeypatch.setattr(node_ops, "pulumi_outputs", lambda stack: current[0])
    ran: list[list[str]] = []

    def fake_run(argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        ran.append(list(argv))
        if argv[0] == "pulumi":
            current[0] = after
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(node_ops.subprocess, "run", fake_run)
    args = argparse.Namespace(stack="staging", outputs=None, user=None, identity=None, ssh_option=[])
    ops = node_ops.cli_operations(args, {})

    def known_hosts(argv: list[str]) -> str:
        option = next(a for a in argv if a.startswith("UserKnownHostsFile="))
        return Path(option.split("=", 1)[1]).read_text()

    ops.run_on("app2", ["true"])
    assert "deploy@203.0.113.12" in ran[-1] and known_hosts(ran[-1]) == f"203.0.113.12 {KEY}\n"
    assert ops.pulumi(["up", "--yes"]) == 0
    ops.run_on("app2", ["true"])
    assert "deploy@203.0.113.42" in ran[-1] and known_hosts(ran[-1]) == f"203.0.113.42 {OTHER}\n"
