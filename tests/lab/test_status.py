"""`make status STACK=lab`: the real command (tooling.status through lab.health, from the
lab's public side, with the lab's outputs, admin key and API token) against the healthy
lab, then against the lab degraded one way at a time: each test breaks one thing,
expects a non-zero exit naming it, restores it and waits for a healthy verdict again, so
the tests after it find the lab as it was. The facts of each run are saved under
build/status/ (the unit tests' recordings in tests/unit/data/status/ come from such runs).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from infra import tuning
from lab.health import status
from lab.topology import RESERVED_IP, LabNode
from tests.helpers.lab_support import Admin, in_lab, wait_for_mail

pytestmark = pytest.mark.lab
FACTS_DIR = Path("build/status")
HEALTHY_WAIT_S = 240
DEGRADED_WAIT_S = 90


def _status(tag: str, *extra: str) -> tuple[int, str]:
    FACTS_DIR.mkdir(parents=True, exist_ok=True)
    result = status(["--dump", str(FACTS_DIR / f"{tag}.json"), *extra], capture=True)
    assert result.returncode in (0, 1), f"status could not run ({result.returncode}): {result.stderr[-2000:]}"
    return result.returncode, result.stdout


def _until(tag: str, wanted: Callable[[int, str], bool], seconds: float, *extra: str) -> tuple[int, str]:
    """Run status until its exit code and output are as wanted; the last run on timeout."""
    deadline = time.monotonic() + seconds
    while True:
        code, out = _status(tag, *extra)
        if wanted(code, out) or time.monotonic() > deadline:
            return code, out
        time.sleep(5)


def _healthy(tag: str) -> tuple[int, str]:
    return _until(tag, lambda code, _: code == 0, HEALTHY_WAIT_S)


def _report(tag: str) -> dict:
    code, out = _status(tag, "--json")
    return json.loads(out) | {"exit": code}


def _primary(nodes: list[LabNode]) -> tuple[LabNode, LabNode]:
    """(primary, replica), as status reports them."""
    report = _report("roles")
    primary = report["database"]["primary"]
    assert primary, report["problems"]
    by_name = {n.name: n for n in nodes}
    replica = next(n for n, row in report["database"]["nodes"].items() if row["role"] == "replica")
    return by_name[primary], by_name[replica]


@contextmanager
def _degraded(tag: str, expected: str, report: dict, restore: Callable[[], None]) -> Iterator[None]:
    """Inside: the caller breaks something. Then: status must exit 1 naming `expected`;
    whatever happens, `restore` runs and status must come back to 0."""
    try:
        yield
        code, out = _until(tag, lambda c, o: c == 1 and expected in o, DEGRADED_WAIT_S)
        report.setdefault("status_degraded", {})[tag] = out
        assert code == 1 and expected in out, out
    finally:
        restore()
    code, out = _healthy(f"{tag}-restored")
    assert code == 0, f"not healthy again after restoring {tag}:\n{out}"


def test_status_of_the_healthy_lab_exits_0_with_every_field_known(nodes: list[LabNode], report: dict) -> None:
    code, screen = _healthy("healthy")
    assert code == 0, screen
    report["status_healthy"] = screen
    r = _report("healthy-json")
    assert r["exit"] == 0 and r["healthy"] is True and r["problems"] == []
    primary = r["database"]["primary"]
    assert primary in ("app1", "app2")
    # who holds the reserved IP: pacemaker, the nodes' metadata and the API agree, on the primary
    assert r["holder"] == {"pacemaker": [primary], "nodes": [primary], "api": primary, "primary": primary}
    assert r["api"] == "ok" and r["cluster"]["quorum"] is True and r["cluster"]["dc"]
    assert set(r["nodes"]) == {n.name for n in nodes}
    for name, row in r["nodes"].items():
        assert row["ok"] and row["ssh"] == "ok" and row["cluster"] == "online", (name, row)
        assert (row["corosync"], row["pacemaker"], row["glusterd"]) == ("active",) * 3, (name, row)
        assert row["corosync_quorate"] is True and row["sees_quorum"] is True, (name, row)
    db = r["database"]["nodes"]
    assert db[primary]["read_only"] == "OFF" and db[primary]["semi_sync"] == "ON"
    for name, row in db.items():
        if name != primary:
            assert (row["io"], row["sql"], row["semi_sync"], row["read_only"]) == ("Yes", "Yes", "ON", "ON"), row
            assert row["lag_s"] <= tuning.STATUS_MAX_REPLICA_LAG_S and row["gtid_gap"] >= 0
    assert {b["node"] for b in r["storage"]["bricks"]} == {n.name for n in nodes}
    assert all(b["status"] == "Connected" and b["entries"] == 0 and b["split_brain"] == 0
               for b in r["storage"]["bricks"])
    assert r["fencing"]["device_on"] and r["fencing"]["fenced"] == []
    assert r["fencing"]["droplets"] == {n.name: "active" for n in nodes}
    assert r["failed_actions"] == []
    assert r["last_failover"]["promoted"]["node"] == primary and r["last_failover"]["promoted"]["at"] > 0


@pytest.mark.disruptive(order=-1)
def test_status_names_a_witness_whose_pacemaker_stopped(nodes: list[LabNode], report: dict) -> None:
    witness = Admin(next(n for n in nodes if n.name == "witness"))
    with _degraded("witness-pacemaker-stopped", "witness: pacemaker inactive", report,
                   lambda: witness.sudo("systemctl start pacemaker")):
        stopped_at = time.time()
        witness.sudo("systemctl stop pacemaker")
        # the operator hears of it: the DC's watch mails the node out of the cluster
        mail = wait_for_mail(stopped_at, "DEGRADED: do-ha-stack-lab-witness is out of the cluster")
        report.setdefault("alert_mail_s", {})["node_out_of_cluster"] = mail["after_s"]
        assert "NODE=witness" in mail["data"], mail["data"]
    wait_for_mail(stopped_at, "recovered: do-ha-stack-lab-witness is out of the cluster")


@pytest.mark.disruptive(order=-1)
def test_status_names_a_dead_brick_and_the_heal_backlog(nodes: list[LabNode], report: dict) -> None:
    primary, replica = _primary(nodes)

    def restore() -> None:
        Admin(primary).sudo("gluster volume start shared force")
        Admin(primary).sudo("gluster volume heal shared", check=False)

    with _degraded("brick-down", f"storage: brick on {replica.name} not connected", report, restore):
        Admin(replica).sudo("pkill -x glusterfsd")
        # files written while the brick is away become the heal backlog
        Admin(primary).sudo("sh -c 'for i in 1 2 3; do date > /srv/shared/status-probe-$i; done'")
    Admin(primary).sudo("sh -c 'rm -f /srv/shared/status-probe-*'")
    assert "entries to heal" in report["status_degraded"]["brick-down"]


@pytest.mark.disruptive(order=-1)
def test_status_names_a_replica_that_stopped_replicating(nodes: list[LabNode], report: dict) -> None:
    primary, replica = _primary(nodes)
    with _degraded("replica-io-stopped", f"database on {replica.name}: replication IO thread not running", report,
                   lambda: Admin(replica).sudo("mariadb -e 'START SLAVE IO_THREAD'")):
        stopped_at = time.time()
        Admin(replica).sudo("mariadb -e 'STOP SLAVE IO_THREAD'")
        for i in range(3):  # writes the replica misses: a GTID gap, and semi-sync falls back
            in_lab("curl", "-s", "-m", "5", "-X", "POST", f"http://{RESERVED_IP}/canary/write?key=status-{i}")
        # both ends tell the operator: the replica of its replication, the primary of its
        # commits that no replica confirms
        broken = wait_for_mail(stopped_at, f"DEGRADED: replication is broken on do-ha-stack-lab-{replica.name}")
        semi = wait_for_mail(stopped_at, f"DEGRADED: semi-sync is off on the primary do-ha-stack-lab-{primary.name}")
        report.setdefault("alert_mail_s", {}).update(replication_broken=broken["after_s"],
                                                     semi_sync_off=semi["after_s"])
        assert f"make replace STACK=lab NODE={replica.name}" in broken["data"], broken["data"]
    wait_for_mail(stopped_at, f"recovered: replication is broken on do-ha-stack-lab-{replica.name}")
    facts = json.loads((FACTS_DIR / "replica-io-stopped.json").read_text())
    assert "Slave_IO_Running: No" in facts["nodes"][replica.name]["probes"]["replica"]["out"]
    assert primary.name in report["status_degraded"]["replica-io-stopped"]


@pytest.mark.disruptive(order=-1)
def test_status_names_a_failed_resource_action(nodes: list[LabNode], report: dict) -> None:
    r = _report("fence-device")
    holder = next(n for n in nodes if n.name == r["fencing"]["device_on"][0])
    cluster_name = f"do-ha-stack-lab-{holder.name}"
    admin = Admin(nodes[-1])
    # a stonith resource's monitor failure is recorded as fence-do_asyncmon_0
    with _degraded("failed-action", "failed action: fence-do_", report,
                   lambda: admin.sudo("crm_resource --cleanup --resource fence-do")):
        # a monitor failure as pacemaker records one; it restarts the fence device
        admin.sudo(f"crm_resource --fail --resource fence-do --node {cluster_name}")
