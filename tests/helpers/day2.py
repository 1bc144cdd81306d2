"""Checks shared by the lab's day-2 tests (replace, scale): a client writing through
the reserved IP while an operation runs, and what "converged" means afterwards."""

from __future__ import annotations

import itertools
import json
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from infra.paths import REPO_ROOT
from lab import replay
from lab.health import status
from lab.seed_probe import ssh_args
from lab.stack import lab_nodes, lab_plan
from lab.topology import LAB_API_URL, RESERVED_IP, SWITCH_NS, LabNode, run_dir
from tests.helpers.lab_support import Admin, api
from tooling.health import Report

URL = f"http://{RESERVED_IP}"
BRICK = "/var/lib/do-ha-stack/bricks/shared"
NAME_PREFIX = "do-ha-stack-lab-"
BRICK_HOLDERS = 2  # data bricks on the first two app nodes (infra/storage.py), the witness's arbiter


def host(node: LabNode) -> str:
    return f"{NAME_PREFIX}{node.name}"


def apps(nodes: list[LabNode]) -> list[LabNode]:
    return [n for n in nodes if n.name != "witness"]


@dataclass
class Load:
    """What the writer saw; `around` notes when each replayed command ran."""

    started: float = 0.0
    finished: float = 0.0
    attempts: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)

    @property
    def acked(self) -> list[dict[str, Any]]:
        return [a for a in self.attempts if a["outcome"] == "ok"]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [a for a in self.attempts if a["outcome"] != "ok"]

    def around(self, names: list[str]) -> dict[str, Callable[[], AbstractContextManager[None]]]:
        def timed(name: str) -> Callable[[], AbstractContextManager[None]]:
            @contextmanager
            def run() -> Iterator[None]:
                start = time.time() - self.started
                yield
                self.timeline.append({"command": name, "start_s": round(start, 1),
                                      "end_s": round(time.time() - self.started, 1)})
            return run
        return {name: timed(name) for name in names}

    def figures(self) -> dict[str, Any]:
        done = sorted(a["t"] + a["took"] for a in self.acked)
        if self.attempts and self.attempts[-1]["outcome"] != "ok":  # still failing when the writer stopped
            done.append(self.attempts[-1]["t"] + self.attempts[-1]["took"])
        gap = max((b - a for a, b in itertools.pairwise(done)), default=0.0)
        during = [a for a in self.acked if self.started <= a["t"] <= self.finished]
        return {"writes_acked": len(self.acked), "writes_during_operation": len(during),
                "writes_failed": len(self.failed), "longest_write_gap_s": round(gap, 2),
                # When writes failed and what ran then (seconds since the operation began).
                "failed_writes_at_s": [round(a["t"] - self.started, 1) for a in self.failed][:50],
                "timeline": self.timeline}


@contextmanager
def writes_through_the_reserved_ip(tag: str, primary: LabNode, lead_s: float = 3.0) -> Iterator[Load]:
    """A client writing without pause from `lead_s` before to 3 s after the block (the
    lead is a baseline: failures at negative times happened before the operation);
    the canary table's earlier writer keys are cleared first (a duplicate would count
    as written)."""
    Admin(primary).sudo("mariadb do_ha_canary -e \"DELETE FROM writes WHERE client_key LIKE 'w%'\"")
    out, stop = run_dir() / f"writer-{tag}.json", run_dir() / f"writer-{tag}.stop"
    stop.unlink(missing_ok=True)
    writer = subprocess.Popen(["ip", "netns", "exec", SWITCH_NS, sys.executable, "-m", "lab.writer", URL,
                               str(out), str(stop)], cwd=REPO_ROOT)
    load = Load()
    try:
        time.sleep(lead_s)
        load.started = time.time()
        yield load
        load.finished = time.time()
        time.sleep(3)
    finally:
        stop.touch()
        writer.wait(timeout=30)
        if out.exists():
            load.attempts = json.loads(out.read_text())


def lab_health() -> Report:
    """The lab stack's health as `make status` reports it (a node operation's `health`)."""
    result = status(["--json"], capture=True)
    assert result.returncode in (0, 1), f"status could not run: {result.stderr[-2000:]}"
    data = json.loads(result.stdout)
    return Report(**{k: v for k, v in data.items() if k in Report.__dataclass_fields__})


def lab_run_on(name: str, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """A command on a lab node over SSH, as a node operation's `run_on`."""
    node = next(n for n in lab_nodes() if n.name == name)
    return Admin(node).run(shlex.join(argv), check=False, timeout=400)


def lab_run_with_input(name: str, argv: Sequence[str], text: str) -> subprocess.CompletedProcess[str]:
    """The same with `text` on the command's stdin (a node operation's `run_with_input`)."""
    node = next(n for n in lab_nodes() if n.name == name)
    return subprocess.run(ssh_args(node, shlex.join(argv)), input=text, capture_output=True, text=True,
                          timeout=3600)


def write_shared_files(node: LabNode, folder: str, count: int, size: int) -> set[str]:
    """`count` files of `size` random bytes in /srv/shared/FOLDER, written on `node`;
    their names as assert_converged takes them."""
    Admin(node).sudo(f"sh -c 'mkdir -p /srv/shared/{folder} && for i in $(seq {count}); do "
                     f"head -c {size} /dev/urandom > /srv/shared/{folder}/f$i; done'")
    return {f"{folder}/f{i}" for i in range(1, count + 1)}


def sql(node: LabNode, query: str) -> str:
    return Admin(node).sudo(f"mariadb -N -B do_ha_canary -e {json.dumps(query)}").stdout.strip()


def brick_files(node: LabNode) -> set[str]:
    out = Admin(node).sudo(f"find {BRICK} -path {BRICK}/.glusterfs -prune -o -type f -printf '%P\\n'").stdout
    return set(out.split())


def assert_converged(nodes: list[LabNode], gone: list[LabNode], acked_keys: set[str], files: set[str]) -> None:
    """The running cluster is exactly what the program declares for `nodes` (by name,
    address and droplet id), nothing of the `gone` droplets is left, every acknowledged
    write is on every database and every file on every brick."""
    bootstrap, witness = nodes[0], nodes[-1]
    app_nodes = apps(nodes)
    old_ips = {n.private_ip for n in gone} - {n.private_ip for n in nodes}

    # Pacemaker: every member online, the configuration valid, the members' entries only.
    xml = Admin(witness).sudo("crm_mon -1 --output-as=xml").stdout
    online = set(re.findall(r'<node name="([^"]+)" id="[^"]*" online="true"', xml))
    assert online == {host(n) for n in nodes}, online
    verify = Admin(bootstrap).sudo("crm_verify -L -V", check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    cib_nodes = re.findall(r'<node id="[^"]*" uname="([^"]+)"', Admin(bootstrap).sudo(
        "cibadmin --query --scope nodes").stdout)
    assert sorted(cib_nodes) == sorted(host(n) for n in nodes)
    # corosync: the declared addresses on every node, in the file and on the wire.
    for node in nodes:
        conf = Admin(node).sudo("cat /etc/corosync/corosync.conf").stdout
        assert sorted(re.findall(r"ring0_addr: (\S+)", conf)) == sorted(n.private_ip for n in nodes), node.name
    links = Admin(bootstrap).sudo("corosync-cfgtool -n").stdout
    for node in nodes[1:]:
        assert f"->{node.private_ip})" in links, links
    assert not any(ip in links for ip in old_ips), links
    quorum = Admin(bootstrap).sudo("corosync-quorumtool -s").stdout
    assert re.search(rf"Total votes:\s+{len(nodes)}\b", quorum) and "Quorate" in quorum, quorum

    # MariaDB: one writable primary, every app node a replica of it holding every acknowledged write.
    for node in app_nodes:
        def has_all(node: LabNode = node) -> bool:
            return acked_keys <= set(sql(node, "SELECT client_key FROM writes WHERE client_key LIKE 'w%'").split())
        deadline = time.monotonic() + 60
        while not has_all():
            assert time.monotonic() < deadline, f"{node.name} lacks acknowledged writes"
            time.sleep(2)
    clone = Admin(bootstrap).sudo("crm_resource --resource mariadb-clone --locate").stdout
    assert sorted(re.findall(r"running on: (\S+)", clone)) == sorted(host(n) for n in app_nodes), clone
    clone_max = Admin(bootstrap).sudo("crm_resource --resource mariadb-clone --meta --get-parameter clone-max").stdout
    assert clone_max.split()[-1] == str(len(app_nodes)), clone_max

    # GlusterFS: bricks on the holders, the pool exactly the nodes, nothing to heal, every file on every brick.
    holders = app_nodes[:BRICK_HOLDERS] + [witness]
    info = Admin(bootstrap).sudo("gluster volume info shared").stdout
    assert re.findall(r"^Brick\d+: (\S+)", info, re.MULTILINE) == [f"{n.private_ip}:{BRICK}" for n in holders], info
    # Every node knows every other by address (a peer known by node name could never
    # be replaced: the name moves to the new droplet, the pool's entry does not).
    for node in nodes:
        pool = Admin(node).sudo("gluster pool list").stdout
        assert sorted(re.findall(r"^\S+\s+(\S+)\s+Connected", pool, re.MULTILINE)) == sorted(
            ["localhost"] + [n.private_ip for n in nodes if n != node]), (node.name, pool)
    entries = re.findall(r"^Number of entries: (\S+)", Admin(bootstrap).sudo("gluster volume heal shared info").stdout,
                         re.MULTILINE)
    assert len(entries) == len(holders) and set(entries) == {"0"}, entries
    # Listed one brick after another, so a file another writer is replacing at that moment
    # (the binlog shipper's status, written to a temporary name and renamed every 30 s)
    # can be on one list only: the bricks must agree on one of several listings.
    on_bricks = {n.name: brick_files(n) for n in holders}
    deadline = time.monotonic() + 30
    while not all(found == on_bricks[bootstrap.name] for found in on_bricks.values()):
        everywhere = set.intersection(*on_bricks.values())
        assert time.monotonic() < deadline, {k: sorted(v - everywhere) for k, v in on_bricks.items()}
        time.sleep(1)
        on_bricks = {n.name: brick_files(n) for n in holders}
    assert files <= on_bricks[bootstrap.name]
    for node in app_nodes:
        listed = Admin(node).sudo("find /srv/shared -type f -printf '%P\\n'").stdout.split()
        assert files <= set(listed), node.name

    # Fencing: the host map is the declared droplets; the stand-in knows each by that name.
    host_map = Admin(bootstrap).sudo("crm_resource --resource fence-do --get-parameter pcmk_host_map").stdout.strip()
    assert dict(p.split(":") for p in host_map.split(";")) == {host(n): str(n.droplet_id) for n in nodes}
    for node in nodes:
        status, droplet = api("GET", f"/v2/droplets/{node.droplet_id}")
        assert status == 200 and droplet["droplet"]["name"] == host(node)
    for node in gone:
        if node.droplet_id not in {n.droplet_id for n in nodes}:
            assert api("GET", f"/v2/droplets/{node.droplet_id}")[0] == 404
    for node in nodes:  # the fence agent reaches each droplet through the map's id
        agent = Admin(witness).sudo(f"fence_digitalocean --api-url {LAB_API_URL} -o status --plug {node.droplet_id}",
                                    check=False)
        assert agent.returncode == 0 and "ON" in agent.stdout.upper(), agent.stdout + agent.stderr

    # A second run changes nothing.
    assert replay.replay_all(lab_plan(nodes)) == 0
