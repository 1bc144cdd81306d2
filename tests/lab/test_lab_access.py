"""Access changes reach running nodes (node-access), with no droplet replaced: an
admin key added to the config logs in on every node after an `up`, and is refused
again once removed; an SSH range added opens port 22 to it, removed closes it; a
never-ban source reaches fail2ban's ignore list."""

from __future__ import annotations

import subprocess

import pytest

from lab import replay
from lab.stack import config_set, lab_nodes, lab_plan, stack_settings
from lab.topology import STRANGER_IP, LabNode, run_dir
from tests.helpers.lab_support import SSH_OPTS, Admin, in_lab, probe_tcp

pytestmark = pytest.mark.lab


def _logs_in(node: LabNode, key: str) -> bool:
    # A connection of its own (no multiplexing): each check is a real authentication.
    return in_lab("ssh", "-i", key, *SSH_OPTS, "-o", "ControlPath=none", f"deploy@{node.public_ip}",
                  "true").returncode == 0


def _up() -> set[str]:
    """`pulumi up` as the lab plays it: the names of the commands whose inputs changed."""
    ran: dict[str, dict] = {}
    replay.replay_all(lab_plan(lab_nodes()), record=ran)
    return set(ran)


def _access_steps(nodes: list[LabNode]) -> set[str]:
    # node-access on each node; web-node on each app node too, as the SSH ranges are
    # also the canary's trusted sources (nginx's canary-sources.conf).
    return {f"{n.name}-node-access" for n in nodes} | {f"{n.name}-web-node" for n in nodes if n.name != "witness"}


def test_admin_keys_and_ssh_ranges_follow_the_config_on_running_nodes(nodes: list[LabNode]) -> None:
    key = run_dir() / "second_admin_key"
    key.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "second admin", "-f", str(key)], check=True)
    admin_pub = (run_dir() / "admin_key.pub").read_text().strip()
    second_pub = key.with_suffix(".pub").read_text().strip()
    ids = [n.droplet_id for n in nodes]
    ranges = stack_settings()["do-ha-stack:sshAllowedCidrs"]
    try:
        assert not any(_logs_in(n, str(key)) for n in nodes)

        config_set("adminSshKeys", [admin_pub, second_pub])
        config_set("sshAllowedCidrs", [*ranges, f"{STRANGER_IP}/32"])
        config_set("sshNeverBanCidrs", [f"{STRANGER_IP}/32"])
        assert _up() == _access_steps(nodes)
        assert all(_logs_in(n, str(key)) for n in nodes)
        for node in nodes:
            assert probe_tcp(node.public_ip, [22], source=STRANGER_IP)[22] == "open", node.name
            ignored = Admin(node).sudo("fail2ban-client get sshd ignoreip").stdout
            assert STRANGER_IP in ignored, (node.name, ignored)

        config_set("adminSshKeys", None)
        config_set("sshAllowedCidrs", None)
        config_set("sshNeverBanCidrs", None)
        assert _up() == _access_steps(nodes)
        assert not any(_logs_in(n, str(key)) for n in nodes)
        assert all(Admin(n).run("true").returncode == 0 for n in nodes)  # the lab's own key still works
        for node in nodes:
            assert probe_tcp(node.public_ip, [22], source=STRANGER_IP)[22] == "filtered", node.name
            assert STRANGER_IP not in Admin(node).sudo("fail2ban-client get sshd ignoreip").stdout
        assert [n.droplet_id for n in lab_nodes()] == ids  # no droplet was replaced
        assert _up() == set()
    finally:
        for setting in ("adminSshKeys", "sshAllowedCidrs", "sshNeverBanCidrs"):
            config_set(setting, None)
        _up()  # the nodes as the config has them again, whatever failed above


HOST_KEY = "/etc/ssh/ssh_host_ed25519_key"


def test_every_later_command_verifies_its_node_s_host_key_and_a_changed_one_is_refused(
        nodes: list[LabNode]) -> None:
    plan = lab_plan(lab_nodes())
    printed = replay.recorded_outputs()
    for node in nodes:
        shown = Admin(node).run(f"cut -d' ' -f1,2 {HOST_KEY}.pub").stdout.strip()
        assert shown.startswith("ssh-ed25519 "), shown
        for cmd in (c for c in plan if c["host"] == node.public_ip):
            key = replay.resolved(cmd, plan, printed).get("hostKey")
            # the gate reads the key (it cannot check it); every later command pins it
            assert key == (None if cmd["name"] == f"{node.name}-first-boot" else shown), cmd["name"]

    witness = next(n for n in nodes if n.name == "witness")
    step = next(c for c in plan if c["name"] == "witness-node-access")
    admin = Admin(witness)
    # The lab's admin sessions share one connection made before the swap: they go on.
    admin.sudo(f"cp -a {HOST_KEY} {HOST_KEY}.pub /run/")
    try:
        admin.sudo(f"rm -f {HOST_KEY} {HOST_KEY}.pub")
        admin.sudo(f"ssh-keygen -q -t ed25519 -N '' -C another -f {HOST_KEY}")
        admin.sudo("systemctl restart ssh")
        # One dial, not the connection's 30: the refusal is the first answer, and 30
        # dials would spend the lab's SSH rate-limit bucket on the witness.
        refused = replay.run_one(step, plan, dial_limit=0)
        assert refused.returncode == replay.SSH_UNREACHABLE, refused.stderr[-800:]
        assert "Host key verification failed" in refused.stderr, refused.stderr[-800:]
    finally:
        admin.sudo("cp -a /run/ssh_host_ed25519_key /run/ssh_host_ed25519_key.pub /etc/ssh/")
        admin.sudo("systemctl restart ssh")
    assert replay.run_one(step, plan, dial_limit=0).returncode == 0  # its own key again: accepted
