"""Rendered node artifacts checked by the tools that consume them (Debian 13 versions)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from infra.config import parse
from tooling.mocks import Run, run_program
from tooling.render import commands, stack_config, user_data
from infra.remote import step_script, steps
from infra.paths import CLOUDINIT_DIR, REPO_ROOT
from infra.userdata import packages_for, render, sshd_dropin
from tests.helpers.stacks import bundle_files, plain_config
from tests.helpers.expect import EXPECTED_SSHD
from tests.helpers.tools_root import chroot, cloud_init_schema, scratch, shellcheck, sshd_effective, tools_root

pytestmark = pytest.mark.tools

# What cloud-init itself writes on DigitalOcean (ssh_pwauth), made hostile on
# purpose: our drop-in must win over it.
HOSTILE_CLOUD_INIT = "PasswordAuthentication yes\nPermitRootLogin yes\nKbdInteractiveAuthentication yes\n"


@pytest.fixture(scope="module")
def root() -> Path:
    return tools_root()


@pytest.fixture(scope="module")
def no_packages() -> Run:
    return run_program("staging", stack_config("staging") | {"do-ha-stack:installPackages": False})


def test_user_data_passes_cloud_init_schema(root: Path, stack_run: Run, no_packages: Run) -> None:
    for run in (stack_run, no_packages):
        for node, text in user_data(run).items():
            result = cloud_init_schema(root, text)
            assert result.returncode == 0, f"{run.stack}/{node}: {result.stdout}{result.stderr}"
            assert "Valid schema" in result.stdout


def test_schema_check_can_fail(root: Path, staging: Run) -> None:
    broken = user_data(staging)["app1"].replace("ssh_pwauth: false", "ssh_pwauth: {nope: 1}")
    result = cloud_init_schema(root, broken)
    assert result.returncode != 0 and "ssh_pwauth" in (result.stdout + result.stderr)


def test_skipping_packages_changes_nothing_else(staging: Run, no_packages: Run) -> None:
    for node, text in user_data(staging).items():
        full, bare = yaml.safe_load(text), yaml.safe_load(user_data(no_packages)[node])
        assert full.pop("packages") == packages_for("witness" if node == "witness" else "app")
        assert full.pop("package_update") is True and full.pop("package_upgrade") is True
        assert full == bare




@pytest.mark.parametrize("fallback", [True, False])
def test_effective_sshd_configuration(root: Path, fallback: bool) -> None:
    cfg = parse("prod", plain_config("prod") | {"sshClassicalKexFallback": fallback})
    result, effective = sshd_effective(
        root, {"00-do-ha-stack.conf": sshd_dropin(cfg), "50-cloud-init.conf": HOSTILE_CLOUD_INIT},
        ["-C", "user=deploy,host=admin.example,addr=198.51.100.7"])
    assert result.returncode == 0, result.stderr
    for key, value in EXPECTED_SSHD.items():
        assert effective.get(key) == value, f"{key}: {effective.get(key)!r}"
    kex = effective["kexalgorithms"].split(",")
    assert kex[:2] == ["mlkem768x25519-sha256", "sntrup761x25519-sha512"]
    assert ("curve25519-sha256" in kex) is fallback
    assert not [k for k in kex if k.startswith(("diffie-hellman", "ecdh-"))]
    assert effective["hostkey"] == "/etc/ssh/ssh_host_ed25519_key"


def test_sshd_rejects_a_broken_dropin(root: Path) -> None:
    result, _ = sshd_effective(root, {"00-do-ha-stack.conf": "MACs hmac-ripemd160\n"})
    assert result.returncode != 0


def test_rendered_dropin_is_the_one_in_user_data(staging: Run) -> None:
    cfg = parse("staging", plain_config("staging"))
    doc = yaml.safe_load(user_data(staging)["app1"])
    files = {f["path"]: f for f in doc["write_files"]}
    assert files["/etc/ssh/sshd_config.d/00-do-ha-stack.conf"]["content"] == sshd_dropin(cfg)
    assert render(cfg, "x", "app", ["ssh-ed25519 AAAA k"]).startswith("#cloud-config\n")


def _shell_scripts() -> list[Path]:
    assembled = {f"{s}.sh" for s in steps()} | {"lib.sh"}  # checked as assembled, below
    nodes_run = sorted(p for p in CLOUDINIT_DIR.rglob("*")
                       if p.is_file() and p.name not in assembled
                       and (p.suffix == ".sh" or p.read_text(errors="ignore").startswith("#!/bin/")))
    # scripts the tooling sends to the nodes (make status's gather script)
    return nodes_run + sorted((REPO_ROOT / "tooling").glob("*.sh"))


@pytest.mark.parametrize("step", steps())
def test_remote_steps_pass_shellcheck_as_they_run(root: Path, tmp_path: Path, step: str) -> None:
    """Each bootstrap step exactly as a node runs it: lib.sh inside the step script."""
    script = tmp_path / f"{step}.sh"
    script.write_text(step_script(step))
    result = shellcheck(root, script)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script", _shell_scripts(), ids=lambda p: p.name)
def test_shell_scripts_pass_shellcheck(root: Path, script: Path) -> None:
    result = shellcheck(root, script)
    assert result.returncode == 0, result.stdout


def test_shellcheck_can_fail(root: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/bin/bash\nrm -rf $1/*\n")
    assert shellcheck(root, bad).returncode != 0


DROP_IN = re.compile(r"/etc/systemd/system/([\w@.-]+\.service)\.d/[\w.-]+\.conf")


def _units_landing(run: Run) -> dict[str, str]:
    """The systemd units that land on nodes, as they land: first boot's, and those the
    steps' bundles carry (rendered from templates)."""
    units = {p.name: p.read_text() for p in (CLOUDINIT_DIR / "firstboot/files").iterdir()
             if p.suffix in (".service", ".timer")}
    for command in commands(run, reveal=True):
        for path, (_, _, content) in bundle_files(command.get("stdin") or "").items():
            if path.startswith("/etc/systemd/system/") and path.endswith((".service", ".timer", ".path")):
                units[path.rsplit("/", 1)[1]] = content
            elif extended := DROP_IN.fullmatch(path):
                # a packaged unit's drop-in (Debian's nginx is not in the tools root): its
                # settings, checked on a stand-in of the unit they extend
                unit = extended.group(1)
                units[unit] = (f"[Unit]\nDescription=stand-in for the packaged {unit}\n[Service]\n"
                               f"ExecStart=/usr/sbin/{unit.removesuffix('.service')}\n{content}")
    return units


def _verify_units(root: Path, units: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """systemd's own check of unit files, together (a timer needs its service)."""
    # The stack's programs a unit runs are put in place by the steps: stand-ins here.
    commands_run = {m for text in units.values() for m in re.findall(r"^Exec\w+=[-@:+!]*(/\S+)", text, re.M)}
    stand_ins = [root / c.lstrip("/") for c in sorted(commands_run) if not (root / c.lstrip("/")).exists()]
    with scratch(root) as (host, inside):
        for name, text in units.items():
            (host / name).write_text(text)
        try:
            for stand_in in stand_ins:
                stand_in.parent.mkdir(parents=True, exist_ok=True)
                stand_in.write_text("#!/bin/sh\n")
                stand_in.chmod(0o755)
            return chroot(root, "systemd-analyze", "verify", "--man=no", *(f"{inside}/{name}" for name in units))
        finally:
            for stand_in in stand_ins:
                stand_in.unlink(missing_ok=True)


def test_systemd_units_pass_systemd_analyze_verify(root: Path) -> None:
    raw = {f"do-ha-stack:{k}": v for k, v in plain_config("staging").items()}
    https = run_program("staging", raw | {"do-ha-stack:domain": "www.example.com"})  # ACME: site-cert's timers
    units = _units_landing(https)
    assert {"do-ha-hidepid.service", "do-ha-backup.timer", "do-ha-db-donor.service", "do-ha-sync-marks.service",
            "do-ha-site-cert-sync.timer", "do-ha-alert-send.path", "do-ha-health-watch.timer",
            "do-ha-gluster-reconnect.timer",
            "nginx.service"} <= set(units), \
        sorted(units)
    result = _verify_units(root, units)
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_unit_check_can_fail(root: Path) -> None:
    result = _verify_units(root, {"do-ha-bad.service": "[Service]\nType=oneshot\nExecStrat=/bin/true\n"})
    assert result.returncode != 0 and "ExecStrat" in result.stderr, result


def _python_scripts() -> list[Path]:
    return sorted(p for p in CLOUDINIT_DIR.rglob("*")
                  if p.is_file() and p.read_text(errors="ignore").startswith("#!/usr/bin/python3"))


def _compiles(root: Path, script: Path) -> subprocess.CompletedProcess[str]:
    """Byte-compiled by the nodes' own Python (Debian 13's), as it will run there."""
    with scratch(root) as (host, inside):
        shutil.copy(script, host / "script.py")
        return chroot(root, "python3", "-m", "py_compile", f"{inside}/script.py")


@pytest.mark.parametrize("script", _python_scripts(), ids=lambda p: p.name)
def test_python_node_scripts_compile_with_the_nodes_python(root: Path, script: Path) -> None:
    result = _compiles(root, script)
    assert result.returncode == 0, result.stderr


def test_python_compile_check_can_fail(root: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_text("#!/usr/bin/python3\ndef f(:\n")
    assert _compiles(root, bad).returncode != 0
    assert {p.name for p in _python_scripts()} >= {"canary.py", "db-restore"}
