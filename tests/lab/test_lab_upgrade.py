"""`make upgrade` in the lab, under the writer through the reserved IP: every node
in turn goes to standby, takes its updates from apt, reboots itself and rejoins;
the active node last, after a planned switchover.

The test drives tooling.rolling_upgrade.upgrade itself, with the lab standing in for
its operations (`make status` against the lab, SSH as an admin's). The lab has no
Debian mirror, so each node gets a local repository instead (the only source its
apt knows for the test) holding version 2.0 of a probe package it has 1.0 of; the
upgrade is real apt (update, dist-upgrade), the reboot is the node's own
`systemctl reboot` (the lab starts a container again when it asks for one).

Asserted: every node has 2.0 and a new boot, nothing was fenced, the active role
moved exactly once (to a node already upgraded), the stack is healthy, every
acknowledged write is on every database and every file on every brick; the pause
in writes and any failed write are figures (build/lab-report.json, `upgrade`).
"""

from __future__ import annotations

import email.utils
import hashlib
import subprocess
from pathlib import Path

import pytest

from lab.stack import lab_config, lab_nodes
from lab.topology import LabNode, run_dir
from tests.helpers.day2 import (
    assert_converged, lab_health, lab_run_on, lab_run_with_input, write_shared_files, writes_through_the_reserved_ip,
)
from tests.helpers.lab_support import Admin
from tests.lab.test_lab_cluster import _promoted, _settled, _wait
from tests.lab.test_lab_switchover import _holder, _power_actions
from tooling.node_ops import Operations
from tooling.rolling_upgrade import BOOT_ID, plan, upgrade

pytestmark = pytest.mark.lab
PROBE = "do-ha-lab-upgrade-probe"
REPO = "/var/lib/do-ha-lab-repo"  # on each node
SOURCES = "/etc/apt/sources.list.d"
PARKED = "/var/lib/do-ha-lab-apt-parked"  # the node's own sources during the test


def _deb(out: Path, version: str) -> Path:
    root = out / f"build-{version}"
    (root / "DEBIAN").mkdir(parents=True, exist_ok=True)
    (root / "DEBIAN/control").write_text(f"Package: {PROBE}\nVersion: {version}\nArchitecture: all\n"
                                         "Maintainer: lab <lab@localhost>\nDescription: the lab's upgrade probe\n")
    path = out / f"{PROBE}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(path)],
                   check=True, capture_output=True)
    return path


def _repository(out: Path) -> list[Path]:
    """A flat apt repository offering 2.0, and the 1.0 package to install first."""
    out.mkdir(parents=True, exist_ok=True)
    old, new = _deb(out, "1.0"), _deb(out, "2.0")
    data = new.read_bytes()
    packages = (f"Package: {PROBE}\nVersion: 2.0\nArchitecture: all\nMaintainer: lab <lab@localhost>\n"
                f"Filename: ./{new.name}\nSize: {len(data)}\nSHA256: {hashlib.sha256(data).hexdigest()}\n"
                "Description: the lab's upgrade probe\n\n").encode()
    (out / "Packages").write_bytes(packages)
    (out / "Release").write_text(f"Origin: do-ha-stack-lab\nSuite: lab\nCodename: lab\n"
                                 f"Date: {email.utils.formatdate(usegmt=True)}\n"
                                 f"SHA256:\n {hashlib.sha256(packages).hexdigest()} {len(packages)} Packages\n")
    return [old, new, out / "Packages", out / "Release"]


def _offer_the_update(node: LabNode, files: list[Path]) -> None:
    repo = node.root / REPO.lstrip("/")
    repo.mkdir(mode=0o755, parents=True, exist_ok=True)
    for f in files:
        (repo / f.name).write_bytes(f.read_bytes())
        (repo / f.name).chmod(0o644)
    admin = Admin(node)
    admin.sudo(f"dpkg -i {REPO}/{PROBE}_1.0_all.deb")
    # every source the node has, parked: the lab's repository is the only one
    admin.sudo(f"sh -c 'mkdir -p {PARKED}/d && {{ [ ! -f /etc/apt/sources.list ] || mv /etc/apt/sources.list "
               f"{PARKED}/; }} && find {SOURCES} -maxdepth 1 -type f -exec mv -t {PARKED}/d {{}} +'")
    admin.sudo(f"sh -c 'printf \"Types: deb\\nURIs: file:{REPO}\\nSuites: ./\\nTrusted: yes\\n\" "
               f"> {SOURCES}/do-ha-lab-upgrade.sources'")


def _put_back(node: LabNode) -> None:
    admin = Admin(node)
    admin.sudo(f"sh -c 'rm -f {SOURCES}/do-ha-lab-upgrade.sources; p={PARKED}; "
               f"[ ! -f $p/sources.list ] || mv $p/sources.list /etc/apt/; "
               f"[ ! -d $p/d ] || find $p/d -type f -exec mv -t {SOURCES} {{}} +; rm -rf $p {REPO}; "
               f"dpkg -P {PROBE} >/dev/null 2>&1; apt-get update -qq >/dev/null 2>&1; true'", check=False)


def _boot_id(node: LabNode) -> str:
    return Admin(node).run(f"cat {BOOT_ID}").stdout.strip()


@pytest.mark.disruptive(order=4)  # after the rollout (same rank, file order), before the certificate renewal,
# whose renewed certificates the program no longer declares once its patch is undone
def test_make_upgrade_upgrades_and_reboots_every_node_in_turn_under_load(nodes: list[LabNode],
                                                                         report: dict) -> None:
    _wait("a settled cluster", 300, lambda: _settled(lab_nodes()))
    nodes = lab_nodes()
    files = _repository(run_dir() / "upgrade-repo")
    boots = {n.name: _boot_id(n) for n in nodes}
    try:
        for node in nodes:
            _offer_the_update(node, files)
        primary = _promoted(nodes)
        assert primary is not None
        shared = write_shared_files(primary, "upgrade", 10, 4096)
        fenced_before = _power_actions()
        ops = Operations(lab_health, lab_run_on, pulumi=lambda argv: pytest.fail(f"no pulumi in an upgrade: {argv}"),
                         say=print, run_with_input=lab_run_with_input)
        with writes_through_the_reserved_ip("upgrade", primary, lead_s=5) as load:
            after = upgrade(plan(lab_config(), None), ops)
        report.setdefault("operations", {})["upgrade"] = {"nodes": len(nodes)} | load.figures()
        assert after.healthy, after.problems

        now = lab_nodes()
        for node in now:
            version = Admin(node).run(f"dpkg-query -W -f '${{Version}}' {PROBE}").stdout.strip()
            assert version == "2.0", (node.name, version)
            assert _boot_id(node) != boots[node.name], f"{node.name} did not reboot"
            # what its first boot set up comes back with every boot
            assert "hidepid=invisible" in Admin(node).run("findmnt -no OPTIONS /proc").stdout, node.name
            # ufw, started at every boot after the node's sysctls, applies the same file
            martians = Admin(node).run("/usr/sbin/sysctl -n net.ipv4.conf.all.log_martians").stdout.strip()
            assert martians == "1", node.name
        assert _power_actions() == fenced_before, "an upgrade fenced a node"
        # The active role moved once, away from the old primary, which went last.
        new_primary = _promoted(now)
        assert new_primary is not None and new_primary.name != primary.name
        assert _holder(now) == new_primary
        assert_converged(now, [], {a["key"] for a in load.acked}, shared)
    finally:
        for node in lab_nodes():
            _put_back(node)
