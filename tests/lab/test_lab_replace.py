"""Day 2 in the lab: replacing a node as `pulumi up --replace <droplet>` does, under load.

A replica app node is destroyed with its disk and comes back as a new droplet
(new id, new addresses) from its user-data; the commands whose inputs changed run
again (lab.replace). The cluster must converge to the declared membership by name
and address while a client writes through the reserved IP without a failed write.
Figures (duration, longest gap in acknowledged writes) go to the lab report under
"operations".
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest

from infra.paths import REPO_ROOT
from lab import replay
from lab.replace import replace
from lab.stack import lab_nodes, lab_plan
from lab.topology import API_URL, SWITCH_NS, LabNode, run_dir
from tests.helpers.lab_support import Admin, api
from tests.lab.test_lab_cluster import URL, _apps, _promoted, _settled, _sql, _wait

pytestmark = pytest.mark.lab
BRICK = "/var/lib/do-ha-stack/bricks/shared"
NAME_PREFIX = "do-ha-stack-lab-"
SEEDED_FILES = 30


def _brick_files(node: LabNode) -> set[str]:
    out = Admin(node).sudo(f"find {BRICK} -path {BRICK}/.glusterfs -prune -o -type f -printf '%P\\n'").stdout
    return set(out.split())


def _heal_entries(node: LabNode) -> list[str]:
    return re.findall(r"^Number of entries: (\S+)", Admin(node).sudo("gluster volume heal shared info").stdout,
                      re.MULTILINE)


def _writes(out_name: str) -> tuple[subprocess.Popen[bytes], object, object]:
    out, stop = run_dir() / f"{out_name}.json", run_dir() / f"{out_name}.stop"
    stop.unlink(missing_ok=True)
    writer = subprocess.Popen(["ip", "netns", "exec", SWITCH_NS, sys.executable, "-m", "lab.writer", URL,
                               str(out), str(stop)], cwd=REPO_ROOT)
    return writer, out, stop


def _longest_gap(acked: list[dict]) -> float:
    done = sorted(a["t"] + a["took"] for a in acked)
    return max((b - a for a, b in itertools.pairwise(done)), default=0.0)


def _timeline(names: list[str], since: Callable[[], float], into: list[dict]
              ) -> dict[str, Callable[[], AbstractContextManager[None]]]:
    """Contexts for lab.replay that note when each command ran (seconds since the start)."""
    def timed(name: str) -> Callable[[], AbstractContextManager[None]]:
        @contextmanager
        def run() -> Iterator[None]:
            start = since()
            yield
            into.append({"command": name, "start_s": round(start, 1), "end_s": round(since(), 1)})
        return run
    return {name: timed(name) for name in names}


@pytest.mark.disruptive(order=2)
def test_replacing_a_replica_converges_the_cluster_under_load(nodes: list[LabNode], report: dict) -> None:
    _wait("a settled cluster", 300, lambda: _settled(nodes))
    bootstrap = nodes[0]
    active = _promoted(nodes)
    # The bootstrap node runs the cluster-wide steps; replacing it (or the active
    # node) is another operation.
    assert active == bootstrap, f"expected the bootstrap node {bootstrap.name} to be primary, not {active}"
    victim = next(n for n in _apps(nodes) if n is not active)
    witness = nodes[-1]

    # Files on the shared volume before the replacement; they must reach the new brick.
    Admin(active).sudo(f"sh -c 'mkdir -p /srv/shared/replace && for i in $(seq {SEEDED_FILES}); do "
                       "head -c 65536 /dev/urandom > /srv/shared/replace/f$i; done'")
    Admin(active).sudo("mariadb do_ha_canary -e \"DELETE FROM writes WHERE client_key LIKE 'w%'\"")

    timeline: list[dict] = []
    writer, out, stop = _writes("writer-replace")
    try:
        time.sleep(3)
        started = time.time()
        around = _timeline([c["name"] for c in lab_plan(nodes)], lambda: time.time() - started, timeline)
        figures = replace(victim.name, around)
        finished = time.time()
        time.sleep(3)
    finally:
        stop.touch()
        writer.wait(timeout=30)
    nodes = lab_nodes()
    new = next(n for n in nodes if n.name == victim.name)
    assert (new.droplet_id, new.private_ip) != (victim.droplet_id, victim.private_ip)

    attempts = json.loads(out.read_text())
    acked = [a for a in attempts if a["outcome"] == "ok"]
    failed = [a for a in attempts if a["outcome"] != "ok"]
    during = [a for a in acked if started <= a["t"] <= finished]
    report.setdefault("operations", {})["replace-replica"] = figures | {
        "writes_acked": len(acked), "writes_failed": len(failed),
        "longest_write_gap_s": round(_longest_gap(acked), 2), "writes_during_replace": len(during),
        # When writes failed and what ran then (seconds since the replacement began).
        "failed_writes_at_s": [round(a["t"] - started, 1) for a in failed][:50], "timeline": timeline}
    assert during, "no write was acknowledged while the replica was replaced"
    assert not failed, f"{len(failed)} writes failed, first: {failed[:3]}"

    _wait("a settled cluster with the new node", 300, lambda: _settled(nodes))
    # Every acknowledged write is on every database.
    keys = {a["key"] for a in acked}
    for node in _apps(nodes):
        _wait(f"every write on {node.name}", 60, lambda node=node: keys <= set(
            _sql(node, "SELECT client_key FROM writes WHERE client_key LIKE 'w%'").split()))
    assert _sql(new, "SELECT @@read_only") == "1"
    status = Admin(new).sudo("mariadb -e 'SHOW SLAVE STATUS\\G'").stdout
    assert "Master_SSL_Allowed: Yes" in status and f"Master_Host: {bootstrap.private_ip}" in status

    # Pacemaker: all members online, the configuration valid, the new address in corosync.
    xml = Admin(witness).sudo("crm_mon -1 --output-as=xml").stdout
    assert xml.count('online="true"') == len(nodes)
    verify = Admin(bootstrap).sudo("crm_verify -L -V", check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    for node in nodes:
        conf = Admin(node).sudo("cat /etc/corosync/corosync.conf").stdout
        assert f"ring0_addr: {new.private_ip}" in conf and victim.private_ip not in conf, node.name
    links = Admin(bootstrap).sudo("corosync-cfgtool -n").stdout
    assert new.private_ip in links and victim.private_ip not in links, links
    nodes_section = Admin(bootstrap).sudo("cibadmin --query --scope nodes").stdout
    assert nodes_section.count(f'uname="{NAME_PREFIX}{new.name}"') == 1

    # GlusterFS: the brick moved, the old peer is gone, nothing left to heal, every file on every brick.
    info = Admin(bootstrap).sudo("gluster volume info shared").stdout
    assert f"{new.private_ip}:{BRICK}" in info and victim.private_ip not in info
    assert victim.private_ip not in Admin(bootstrap).sudo("gluster pool list").stdout
    entries = _heal_entries(bootstrap)
    assert entries and set(entries) == {"0"}, entries
    files = {node.name: _brick_files(node) for node in nodes}
    assert {f"replace/f{i}" for i in range(1, SEEDED_FILES + 1)} <= files[bootstrap.name]
    assert files[new.name] == files[bootstrap.name] == files[witness.name]

    # Fencing: the host map names the new droplet, which the stand-in knows by that name.
    host_map = Admin(bootstrap).sudo("crm_resource --resource fence-do --get-parameter pcmk_host_map").stdout
    assert f"{NAME_PREFIX}{new.name}:{new.droplet_id}" in host_map and str(victim.droplet_id) not in host_map
    status_code, droplet = api("GET", f"/v2/droplets/{new.droplet_id}")
    assert status_code == 200 and droplet["droplet"]["name"] == f"{NAME_PREFIX}{new.name}"
    assert api("GET", f"/v2/droplets/{victim.droplet_id}")[0] == 404
    agent = Admin(witness).sudo(f"fence_digitalocean --api-url {API_URL} -o status --plug {new.droplet_id}",
                                check=False)
    assert agent.returncode == 0 and "ON" in agent.stdout.upper(), agent.stdout + agent.stderr

    # A second run changes nothing.
    assert replay.replay_all(lab_plan(nodes)) == 0
