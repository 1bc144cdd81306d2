"""The offline render CLI and the command list it gives the lab's replay."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tooling.mocks import MOCK_SECRETS, Run
from tooling import resource_types as types
from tooling.render import commands, dependency_order, main

from lab import replay

def test_render_writes_exactly_what_droplets_receive(tmp_path: Path, staging: Run) -> None:
    assert main(["--stack", "staging", "--out", str(tmp_path)]) == 0
    for droplet in staging.of_type(types.DROPLET):
        assert (tmp_path / droplet.name / "user-data").read_text() == droplet.raw_inputs["userData"]
    resources = json.loads((tmp_path / "resources.json").read_text())
    assert {r["name"] for r in resources} == {r.name for r in staging.registrations}
    for r in resources:
        assert {"type", "name", "parent", "dependencies", "inputs"} <= set(r)
    assert json.loads((tmp_path / "outputs.json").read_text())["reservedIp"] == "198.51.100.10"

def test_render_is_deterministic(tmp_path: Path) -> None:
    for out in ("a", "b"):
        assert main(["--stack", "prod", "--out", str(tmp_path / out)]) == 0
    diff = subprocess.run(["diff", "-r", str(tmp_path / "a"), str(tmp_path / "b")], capture_output=True)
    assert diff.returncode == 0, diff.stdout

def test_no_secret_in_any_rendered_file(tmp_path: Path, staging: Run) -> None:
    assert main(["--stack", "staging", "--out", str(tmp_path)]) == 0
    key = staging.generated_secrets["automation"]["privateKeyOpenssh"]
    body = "".join(key.splitlines()[1:-1])
    for path in tmp_path.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert body[:40] not in text and "PRIVATE KEY" not in text, path
    plan = json.loads((tmp_path / "commands.json").read_text())
    assert plan and all(c["privateKey"] == "[secret]" for c in plan)

def test_overrides_and_address_map(tmp_path: Path) -> None:
    addresses = tmp_path / "addresses.json"
    addresses.write_text(json.dumps({"public": {"app1": "192.0.2.1", "app2": "192.0.2.2", "app3": "192.0.2.3"},
                                     "private": {"app1": "10.120.0.1", "app2": "10.120.0.2", "app3": "10.120.0.3"},
                                     "reservedIp": "192.0.2.100"}))
    out = tmp_path / "out"
    assert main(["--stack", "staging", "--out", str(out), "--addresses", str(addresses),
                 "--set", "witness=false", "--set", "appNodeCount=3"]) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["app1", "app2", "app3"]
    plan = json.loads((out / "commands.json").read_text())
    assert {c["host"] for c in plan} == {"192.0.2.1", "192.0.2.2", "192.0.2.3"}
    doc = yaml.safe_load((out / "app3" / "user-data").read_text())
    assert doc["hostname"] == "do-ha-stack-staging-app3"

def test_bad_override_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--stack", "staging", "--out", str(tmp_path), "--set", "region=mars1"]) == 2
    assert "do-ha-stack:region: unknown region 'mars1'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())

def test_commands_wait_for_first_boot_and_carry_no_secret(staging: Run) -> None:
    plan = commands(staging)
    by_name = {c["name"]: c for c in plan}
    first_boot = {c["host"]: c["name"] for c in plan if c["name"].endswith("-first-boot")}
    assert set(first_boot.values()) == {"app1-first-boot", "app2-first-boot", "witness-first-boot"}
    for c in plan:
        assert c["user"] == "deploy"
        if c["name"].endswith("-first-boot"):
            assert "cloud-init status --wait" in c["create"]
            continue
        assert c["create"].startswith("sudo -n bash -c ")

        def ancestors(name: str) -> set[str]:
            deps = set(by_name[name]["dependsOn"])
            return deps.union(*(ancestors(d) for d in deps)) if deps else set()
        assert first_boot[c["host"]] in ancestors(c["name"]), c["name"]
    revealed = commands(staging, reveal=True)
    assert all(c["privateKey"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----") for c in revealed)
    secrets = [v for values in staging.generated_secrets.values() for v in values.values()]
    secrets.append(MOCK_SECRETS["failoverApiToken"])
    for shown, real in zip(plan, revealed, strict=True):
        text = json.dumps(shown)
        assert not any(s in text for s in secrets), shown["name"]
        if real["stdin"] and any(s in real["stdin"] or base64.b64encode(s.encode()).decode() in real["stdin"]
                                 for s in secrets):
            # a step that carries secrets: hidden stdin, no logs
            assert shown["stdin"] == "[secret]" and shown["logging"] == "none", shown["name"]

def test_dependency_order_and_cycles() -> None:
    plan = [{"name": "b", "dependsOn": ["a"]}, {"name": "c", "dependsOn": []}, {"name": "a", "dependsOn": ["c"]}]
    assert [c["name"] for c in dependency_order(plan)] == ["c", "a", "b"]
    with pytest.raises(ValueError, match="cycle"):
        dependency_order([{"name": "x", "dependsOn": ["y"]}, {"name": "y", "dependsOn": ["x"]}])

def test_replay_runs_changed_commands_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DO_HA_LAB_DIR", str(tmp_path))
    (tmp_path / "run").mkdir()
    ran: list[str] = []

    def fake_ssh(cmd: dict, text: str, key_file: Path) -> subprocess.CompletedProcess[str]:
        assert key_file.read_text() == "KEY" and oct(key_file.stat().st_mode)[-3:] == "600"
        ran.append(text)
        return subprocess.CompletedProcess([], 0, "", "")

    monkeypatch.setattr(replay, "ssh", fake_ssh)
    base = {"host": "h", "port": 22, "user": "deploy", "privateKey": "KEY", "update": None, "delete": None,
            "stdin": None, "environment": {}, "triggers": [], "logging": None, "dependsOn": []}
    plan = [base | {"name": "one", "create": "echo 1"}, base | {"name": "two", "create": "echo 2"}]
    assert replay.replay_all(plan) == 2 and sorted(ran) == ["echo 1", "echo 2"]  # independent: at once
    assert replay.replay_all(plan) == 0
    plan[1] = plan[1] | {"create": "echo 2b", "update": "echo up"}
    assert replay.replay_all(plan) == 1 and ran[-1] == "echo up"
    plan[0] = plan[0] | {"stdin": "changed"}
    assert replay.replay_all(plan) == 1 and ran[-1] == "echo 1"
