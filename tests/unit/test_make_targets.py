"""`make preview|up|destroy|state-bucket`: the checks in front of the Pulumi CLI.

make runs for real; `pulumi` is either absent from PATH or a fake in tmp_path
that records every invocation, answers `whoami` and `config get` as told, and
does nothing else. So the tests see exactly which pulumi commands make would
have run, and that a refused target runs none.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infra.paths import REPO_ROOT

MAKE = shutil.which("make") or "make"
FAKE_PULUMI = f"""#!{sys.executable}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_PULUMI_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
args = [a for a in args if a != "--non-interactive"]
if args[:1] == ["whoami"]:
    if os.environ.get("FAKE_PULUMI_LOGGED_IN") != "yes":
        sys.exit("error: PULUMI_ACCESS_TOKEN must be set for login during non-interactive CLI sessions")
    print("ops")
elif args[:2] == ["stack", "import"]:
    with open(args[args.index("--file") + 1]) as src, open(os.environ["FAKE_PULUMI_IMPORTED"], "w") as dst:
        dst.write(src.read())
elif args[:2] == ["stack", "export"]:
    print(os.environ.get("FAKE_PULUMI_EXPORT", '{{"deployment": {{"resources": []}}}}'))
elif args[:2] == ["config", "get"]:
    if os.environ.get("FAKE_PULUMI_TOKEN") is None:
        sys.exit("error: configuration key 'digitalocean:token' not found for stack")
    print(os.environ["FAKE_PULUMI_TOKEN"])
else:
    print("fake pulumi:", *args)
"""
# Variables of the caller's shell that would change what make does.
_SCRUB = ("STACK", "OUTPUTS", "CONFIRM_DESTROY_PROD", "DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN", "ARGS",
          "BUCKET", "REGION", "ENDPOINT", "NODE", "APP_NODES", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEFILES")


def _path_without_pulumi() -> list[str]:
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and not os.access(os.path.join(d, "pulumi"), os.X_OK)]
    return dirs + [d for d in ("/usr/bin", "/bin") if d not in dirs]


class Make:
    def __init__(self, tmp_path: Path, with_pulumi: bool) -> None:
        self.log = tmp_path / "pulumi-calls.jsonl"
        self.path = _path_without_pulumi()
        if with_pulumi:
            bin_dir = tmp_path / "bin"
            bin_dir.mkdir()
            fake = bin_dir / "pulumi"
            fake.write_text(FAKE_PULUMI)
            fake.chmod(0o755)
            self.path.insert(0, str(bin_dir))

    def __call__(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        base = {k: v for k, v in os.environ.items() if k not in _SCRUB}
        base.update(PATH=os.pathsep.join(self.path), FAKE_PULUMI_LOG=str(self.log))
        # -o: never rebuild the venv here; these tests are about the guard.
        return subprocess.run([MAKE, "--no-print-directory", "-o", ".venv/.installed", *args],
                              cwd=REPO_ROOT, env={**base, **env}, capture_output=True, text=True, timeout=120)

    @property
    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    @property
    def runs(self) -> list[list[str]]:
        """The pulumi calls other than the guard's read-only checks."""
        return [c for c in self.calls if c[0] not in ("whoami", "config") and c[:2] != ["stack", "export"]]


@pytest.fixture
def make(tmp_path: Path) -> Make:
    return Make(tmp_path, with_pulumi=True)


@pytest.fixture
def make_without_pulumi(tmp_path: Path) -> Make:
    return Make(tmp_path, with_pulumi=False)


READY = {"FAKE_PULUMI_LOGGED_IN": "yes", "DIGITALOCEAN_TOKEN": "dop_v1_from_env"}


# --- refusals ---------------------------------------------------------------------

def test_up_without_stack_is_refused(make: Make) -> None:
    run = make("up", **READY)
    assert run.returncode != 0
    assert "error: STACK is required: make up STACK=staging (or STACK=prod)" in run.stderr
    assert make.calls == []


def test_preview_without_the_pulumi_cli(make_without_pulumi: Make) -> None:
    assert shutil.which("pulumi", path=os.pathsep.join(make_without_pulumi.path)) is None
    run = make_without_pulumi("preview", "STACK=staging", **READY)
    assert run.returncode != 0
    assert "error: pulumi CLI not found on PATH: install it from https://www.pulumi.com/docs/iac/download-install/" \
        in run.stderr


@pytest.mark.parametrize("confirm", [None, "no", "YES", "y", ""])
def test_destroy_prod_without_confirmation_never_runs_pulumi(make: Make, confirm: str | None) -> None:
    args = ["destroy", "STACK=prod"] + ([f"CONFIRM_DESTROY_PROD={confirm}"] if confirm is not None else [])
    run = make(*args, **READY)
    assert run.returncode != 0
    assert "error: refusing to destroy prod" in run.stderr
    assert "make destroy STACK=prod CONFIRM_DESTROY_PROD=yes" in run.stderr
    assert "pulumi state unprotect --all --stack prod" in run.stderr
    assert make.calls == []


def test_not_logged_in_to_a_backend(make: Make) -> None:
    run = make("preview", "STACK=staging", DIGITALOCEAN_TOKEN="dop_v1_from_env")
    assert run.returncode != 0
    assert "error: not logged in to a Pulumi backend: run `pulumi login`" in run.stderr
    assert "PULUMI_ACCESS_TOKEN must be set" in run.stderr  # what pulumi said
    assert make.runs == []


def test_no_digitalocean_token_anywhere(make: Make) -> None:
    run = make("up", "STACK=staging", FAKE_PULUMI_LOGGED_IN="yes")
    assert run.returncode != 0
    assert "error: no DigitalOcean token: set DIGITALOCEAN_TOKEN" in run.stderr
    assert ["config", "get", "digitalocean:token", "--stack", "staging", "--non-interactive"] in make.calls
    assert make.runs == []


def test_state_bucket_needs_bucket_and_region(make: Make) -> None:
    run = make("state-bucket", "REGION=fra1")
    assert run.returncode != 0
    assert "BUCKET is required: make state-bucket BUCKET=name REGION=fra1" in run.stderr
    run = make("state-bucket", "BUCKET=team-state")
    assert run.returncode != 0
    assert "REGION is required" in run.stderr


# --- what runs when the checks pass ---------------------------------------------------

def test_preview_runs_pulumi_preview_diff(make: Make) -> None:
    run = make("preview", "STACK=staging", **READY)
    assert run.returncode == 0, run.stderr
    assert make.calls == [["whoami", "--non-interactive"], ["preview", "--diff", "--stack", "staging"]]
    assert "fake pulumi: preview --diff --stack staging" in run.stdout


def test_up_with_the_token_in_the_stack_config(make: Make) -> None:
    run = make("up", "STACK=staging", FAKE_PULUMI_LOGGED_IN="yes", FAKE_PULUMI_TOKEN="dop_v1_secret_in_config")
    assert run.returncode == 0, run.stderr
    assert make.runs == [["up", "--stack", "staging"]]
    assert "dop_v1_secret_in_config" not in run.stdout + run.stderr


def test_destroy_prod_with_confirmation(make: Make) -> None:
    run = make("destroy", "STACK=prod", "CONFIRM_DESTROY_PROD=yes", **READY)
    assert run.returncode == 0, run.stderr
    assert make.runs == [["destroy", "--stack", "prod"]]
    assert "pulumi state unprotect --all --stack prod" in run.stderr


def test_destroy_staging_needs_no_confirmation(make: Make) -> None:
    run = make("destroy", "STACK=staging", **READY)
    assert run.returncode == 0, run.stderr
    assert make.runs == [["destroy", "--stack", "staging"]]


def test_extra_pulumi_flags_pass_through(make: Make) -> None:
    run = make("up", "STACK=staging", "ARGS=--yes --skip-preview", **READY)
    assert run.returncode == 0, run.stderr
    assert make.runs == [["up", "--stack", "staging", "--yes", "--skip-preview"]]


def test_pulumi_failure_fails_make(make: Make, tmp_path: Path) -> None:
    failing = tmp_path / "bin" / "pulumi"
    failing.write_text(FAKE_PULUMI.replace('print("fake pulumi:", *args)', 'sys.exit(7)'))
    run = make("up", "STACK=staging", **READY)
    assert run.returncode != 0
    assert make.runs == [["up", "--stack", "staging"]]


def _dry_run(*args: str) -> list[str]:
    run = subprocess.run([MAKE, "--no-print-directory", "-n", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k not in _SCRUB}, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout.splitlines()


def _index(lines: list[str], needle: str) -> int:
    return next(i for i, line in enumerate(lines) if needle in line)


@pytest.mark.parametrize("target, pytest_args", [("test", "-m pytest -q --durations=25"),
                                                 ("test-unit", '-m pytest -q -m "not lab"')])
def test_make_test_lints_first(target: str, pytest_args: str) -> None:
    lines = _dry_run(target)
    assert any(line.endswith(pytest_args) for line in lines), lines
    assert _index(lines, "ruff check") < _index(lines, pytest_args), lines


def test_make_setup_installs_the_dev_requirements_and_tracks_every_file(tmp_path: Path) -> None:
    # A fresh venv path, so make plans the whole setup recipe (nothing runs: -n);
    # -p adds make's database, where the stamp's rule lists its prerequisites.
    venv = tmp_path / "venv"
    lines = _dry_run("-p", "setup", f"VENV={venv}")
    assert any(line.endswith("pip install -q -r requirements-dev.txt") for line in lines), lines
    rule = next(line for line in lines if line.startswith(f"{venv}/.installed:"))
    assert set(rule.split(":", 1)[1].split()) >= {"requirements.txt", "requirements-dev.txt",
                                                   "policy/requirements.txt"}, rule


# --- state upgrades ---------------------------------------------------------------

RETIRED_URN = ("urn:pulumi:prod::do-ha-stack::do-ha-stack:index:HaStack$do-ha-stack:network:ReservedAddress"
               "$digitalocean:index/reservedIpAssignment:ReservedIpAssignment::reserved-ip-initial-assignment")
PROJECT_URN = RETIRED_URN.replace(
    "network:ReservedAddress$digitalocean:index/reservedIpAssignment:ReservedIpAssignment::reserved-ip-initial-assignment",
    "monitoring:Monitoring$digitalocean:index/project:Project::project")
OLD_EXPORT = json.dumps({"deployment": {"resources": [
    {"urn": RETIRED_URN, "type": "digitalocean:index/reservedIpAssignment:ReservedIpAssignment", "protect": True},
    {"urn": PROJECT_URN, "type": "digitalocean:index/project:Project", "protect": True,
     "inputs": {"name": "p", "resources": ["do:droplet:1", "do:reservedip:198.51.100.10"]},
     "outputs": {"name": "p", "resources": ["do:droplet:1", "do:floatingip:198.51.100.10"]}}]}})


def test_up_refuses_a_state_that_needs_upgrading(make: Make) -> None:
    run = make("up", "STACK=prod", FAKE_PULUMI_EXPORT=OLD_EXPORT, **READY)
    assert run.returncode != 0
    assert "run `make state-upgrade STACK=prod` once" in run.stderr
    assert make.runs == []


def test_state_upgrade_removes_retired_resources_from_the_state_only(make: Make, tmp_path: Path) -> None:
    imported = tmp_path / "imported.json"
    run = make("state-upgrade", "STACK=prod", FAKE_PULUMI_EXPORT=OLD_EXPORT, FAKE_PULUMI_IMPORTED=str(imported),
               **READY)
    assert run.returncode == 0, run.stderr
    assert make.runs[1:] == [["state", "unprotect", RETIRED_URN, "--stack", "prod", "--yes", "--non-interactive"],
                             ["state", "delete", RETIRED_URN, "--stack", "prod", "--yes", "--non-interactive"]]
    assert make.runs[0][:4] == ["stack", "import", "--stack", "prod"]
    project = next(r for r in json.loads(imported.read_text())["deployment"]["resources"] if r["urn"] == PROJECT_URN)
    assert project["inputs"]["resources"] == project["outputs"]["resources"] == ["do:droplet:1"]
    # Nothing else: the reserved IP itself stays, and no up or destroy ran.
    again = make("state-upgrade", "STACK=prod", **READY)
    assert again.returncode == 0 and "state is up to date" in again.stdout


def test_state_upgrade_needs_a_stack(make: Make) -> None:
    run = make("state-upgrade", **READY)
    assert run.returncode != 0 and "STACK is required" in run.stderr
    assert make.calls == []


# --- make status ------------------------------------------------------------------------

STATUS_DATA = REPO_ROOT / "tests/unit/data/status"


def test_status_without_stack_is_refused(make: Make) -> None:
    run = make("status")
    assert run.returncode != 0
    assert "error: STACK is required: make status STACK=staging (or prod, or lab)" in run.stderr
    assert make.calls == []


def test_status_asks_pulumi_for_the_stack_outputs(make: Make) -> None:
    run = make("status", "STACK=staging")
    assert run.returncode != 0  # the fake pulumi prints no outputs
    assert make.calls == [["stack", "output", "--json", "--stack", "staging", "--non-interactive"]]
    assert "error: pulumi stack output did not print JSON" in run.stderr


def test_status_without_the_pulumi_cli_suggests_an_outputs_file(make_without_pulumi: Make) -> None:
    run = make_without_pulumi("status", "STACK=staging")
    assert run.returncode != 0
    assert "pulumi CLI not found on PATH" in run.stderr and "OUTPUTS=file.json" in run.stderr


def test_status_reads_an_outputs_file(make: Make, tmp_path: Path) -> None:
    outputs = tmp_path / "outputs.json"
    outputs.write_text('{"reservedIp": "192.0.2.1"}')
    run = make("status", "STACK=staging", f"OUTPUTS={outputs}")
    assert run.returncode != 0
    assert "error: the stack outputs have no `nodes`" in run.stderr
    assert make.calls == []


@pytest.mark.parametrize("recording, healthy", [("healthy", True), ("brick-down", False)])
def test_status_exit_code_gates_a_deploy(make: Make, recording: str, healthy: bool) -> None:
    run = make("status", "STACK=staging", f"ARGS=--facts {STATUS_DATA / recording}.json")
    assert (run.returncode == 0) is healthy, run.stdout + run.stderr
    assert ("HEALTHY" if healthy else "DEGRADED") in run.stdout


def test_status_of_the_lab_goes_through_the_lab() -> None:
    lines = _dry_run("status", "STACK=lab", "ARGS=--json")
    assert any(line.endswith("-m lab health --json") for line in lines), lines


def test_switchover_without_stack_is_refused(make: Make) -> None:
    run = make("switchover")
    assert run.returncode != 0
    assert "STACK is required: make switchover STACK=staging [TO=app2]" in run.stderr
    assert make.calls == []


def test_upgrade_without_stack_is_refused(make: Make) -> None:
    run = make("upgrade")
    assert run.returncode != 0
    assert "STACK is required: make upgrade STACK=staging [NODES=witness,app2]" in run.stderr
    assert make.calls == []


def test_upgrade_passes_the_nodes_asked_for() -> None:
    lines = _dry_run("upgrade", "STACK=prod", "NODES=witness,app2")
    wanted = "-m tooling.rolling_upgrade --stack 'prod' --nodes 'witness,app2'"
    assert any(line.rstrip().endswith(wanted) for line in lines), lines


def test_rekey_site_without_stack_is_refused(make: Make) -> None:
    run = make("rekey-site")
    assert run.returncode != 0
    assert "STACK is required: make rekey-site STACK=staging" in run.stderr
    assert make.calls == []
