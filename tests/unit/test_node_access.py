"""node-access keeps a running node's logins in line with the config: the program
hands every node the deploy user's authorized_keys, and the step (run here as
rendered, lib.sh included, against stand-ins for ufw and fail2ban-client that
answer from a recorded rule list) adds and removes exactly what changed. The lab
proves it on real nodes (tests/lab/test_lab_access.py)."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import pytest

from infra.logins import authorized_keys
from infra.remote import step_script
from tests.helpers.stacks import plain_config
from tests.unit.test_step_args import passed_args
from tooling.mocks import MOCK_SECRETS, Run, run_program
from tooling.render import commands, stack_config
from tests.helpers.stubs import write_stubs

COMMENT = "ssh (rate limited)"
STUBS = {
    "ufw": r"""
echo "ufw $*" >> "$STUB/calls"
case "$1" in
show) echo "Added user rules (see 'ufw status' for running firewall):"; echo "ufw allow 80/tcp comment 'public'"
	# as ufw 0.36 prints them: source first, a single address without its prefix length
	while read -r c; do c=${c%/32}
		echo "ufw allow from ${c%/128} to any port 22 proto tcp comment 'ssh (rate limited)'"
	done < "$STUB/ssh" ;;
allow) echo "$5" >> "$STUB/ssh" ;;
delete) grep -vxF "$6" "$STUB/ssh" > "$STUB/s" || true; mv "$STUB/s" "$STUB/ssh" ;;
esac""",
    "fail2ban-client": r"""echo "fail2ban-client $*" >> "$STUB/calls" """,
    "getent": r"""echo "deploy:x:1000:1000::$STUB/home:/bin/bash" """,
    "chown": r"""echo "chown $*" >> "$STUB/calls" """,
    "logger": "true",
}
F2B = "/etc/fail2ban/jail.d/do-ha-stack-never-ban.local"


@pytest.fixture
def stub(tmp_path: Path) -> Path:
    write_stubs(tmp_path / "bin", STUBS, prelude="set -u\n")
    (tmp_path / "home/.ssh").mkdir(parents=True)
    (tmp_path / "f2b").mkdir()
    return tmp_path


def run(stub: Path, keys: str, cidrs: str, never_ban: str = "-") -> subprocess.CompletedProcess[str]:
    (stub / "calls").write_text("")
    text = step_script("node-access").replace(F2B, str(stub / "f2b/never-ban.local"))
    bundle = f"file 0600 deploy:deploy {stub}/home/.ssh/authorized_keys {base64.b64encode(keys.encode()).decode()}\n"
    env = {"PATH": f"{stub / 'bin'}:{os.environ['PATH']}", "STUB": str(stub)}
    return subprocess.run(["bash", "-c", text, "node-access", "DEPLOY_USER=deploy", f"SSH_CIDRS={cidrs}",
                           f"NEVER_BAN={never_ban}"], input=bundle, capture_output=True, text=True, env=env,
                          timeout=60)


def calls(stub: Path, prefix: str) -> list[str]:
    return [c for c in (stub / "calls").read_text().splitlines() if c.startswith(prefix)]


def test_the_program_hands_every_node_its_logins(staging: Run) -> None:
    raw = plain_config("staging")
    real = {c["name"]: c for c in commands(staging, reveal=True)}
    automation = staging.generated_secrets["automation"]["privateKeyOpenssh"]
    for node in ("app1", "app2", "witness"):
        cmd = real[f"{node}-node-access"]
        step, args = passed_args(cmd["create"])
        assert step == "node-access"
        assert args == {"DEPLOY_USER": "deploy", "SSH_CIDRS": " ".join(raw["sshAllowedCidrs"]), "NEVER_BAN": "-"}
        kind, mode, owner, path, content = cmd["stdin"].split()
        assert (kind, mode, owner, path) == ("file", "0600", "deploy:deploy", "/home/deploy/.ssh/authorized_keys")
        lines = base64.b64decode(content).decode().splitlines()
        assert lines[:-1] == raw["adminSshKeys"] and lines[-1].startswith("ssh-ed25519 ")
        assert automation not in cmd["stdin"]
        assert f"{node}-first-boot" in cmd["dependsOn"]


def test_a_removed_admin_key_reaches_the_nodes_as_a_new_run() -> None:
    raw = stack_config("staging")
    keys = raw["do-ha-stack:adminSshKeys"]
    fewer = run_program("staging", raw | {"do-ha-stack:adminSshKeys": keys[:1], "do-ha-stack:sshNeverBanCidrs":
                                          ["192.0.2.7/32"]})
    before = {c["name"]: c for c in commands(run_program("staging", raw), reveal=True)}
    after = {c["name"]: c for c in commands(fewer, reveal=True)}
    changed = sorted(n for n in before if (before[n]["stdin"], before[n]["create"]) != (after[n]["stdin"],
                                                                                      after[n]["create"]))
    assert changed == ["app1-node-access", "app2-node-access", "witness-node-access"]
    assert passed_args(after["app1-node-access"]["create"])[1]["NEVER_BAN"] == "192.0.2.7/32"


def test_authorized_keys_lists_each_key_once() -> None:
    from infra.config import parse
    cfg = parse("staging", plain_config("staging") | MOCK_SECRETS)
    text = authorized_keys(cfg, cfg.admin_ssh_keys[0])
    assert text.splitlines() == list(cfg.admin_ssh_keys)


def test_ssh_ranges_are_added_before_old_ones_go_and_a_second_run_changes_nothing(stub: Path) -> None:
    (stub / "ssh").write_text("198.51.100.0/24\n203.0.113.0/24\n192.0.2.7/32\n2001:db8::1/128\n")
    result = run(stub, "ssh-ed25519 AAAA admin\n", "203.0.113.0/24 2001:db8::/48 2001:db8::1/128")
    assert result.returncode == 0, result.stderr
    ufw = [c for c in calls(stub, "ufw") if not c.startswith("ufw show")]
    assert ufw == [f"ufw allow proto tcp from 2001:db8::/48 to any port 22 comment {COMMENT}",
                   "ufw delete allow proto tcp from 198.51.100.0/24 to any port 22",
                   "ufw delete allow proto tcp from 192.0.2.7/32 to any port 22"]
    assert (stub / "ssh").read_text().split() == ["203.0.113.0/24", "2001:db8::1/128", "2001:db8::/48"]
    assert (stub / "home/.ssh/authorized_keys").read_text() == "ssh-ed25519 AAAA admin\n"
    assert oct((stub / "home/.ssh/authorized_keys").stat().st_mode & 0o777) == "0o600"
    assert "chown deploy:deploy" in " ".join(calls(stub, "chown"))

    again = run(stub, "ssh-ed25519 AAAA admin\n", "203.0.113.0/24 2001:db8::/48 2001:db8::1/128")
    assert again.returncode == 0, again.stderr
    assert [c for c in calls(stub, "ufw") if not c.startswith("ufw show")] == []
    assert calls(stub, "fail2ban-client") == []
    assert "authorized_keys of deploy updated" in result.stderr and "updated" not in again.stderr


def test_fail2ban_learns_the_never_ban_list_and_reloads_once(stub: Path) -> None:
    (stub / "ssh").write_text("203.0.113.0/24\n")
    assert run(stub, "ssh-ed25519 AAAA a\n", "203.0.113.0/24", "203.0.113.7/32").returncode == 0
    assert (stub / "f2b/never-ban.local").read_text().splitlines()[1:] == [
        "[DEFAULT]", "ignoreip = 127.0.0.1/8 ::1 203.0.113.7/32"]
    assert calls(stub, "fail2ban-client") == ["fail2ban-client reload"]
    assert run(stub, "ssh-ed25519 AAAA a\n", "203.0.113.0/24", "203.0.113.7/32").returncode == 0
    assert calls(stub, "fail2ban-client") == []
    assert run(stub, "ssh-ed25519 AAAA a\n", "203.0.113.0/24").returncode == 0
    assert "ignoreip = 127.0.0.1/8 ::1\n" in (stub / "f2b/never-ban.local").read_text()
    assert calls(stub, "fail2ban-client") == ["fail2ban-client reload"]


def test_an_empty_key_list_stops_the_step(stub: Path) -> None:
    (stub / "ssh").write_text("203.0.113.0/24\n")
    result = run(stub, "", "203.0.113.0/24")
    assert result.returncode != 0 and "missing or empty" in result.stderr
    assert calls(stub, "ufw allow") == calls(stub, "ufw delete") == []
