"""The lab tier: db-seed makes a replica of the current primary out of an empty or
diverged data directory while the primary keeps taking writes, and leaves a
healthy replica (and the primary) alone.

The seeding figures at real sizes come from `make bench-seed` (bench/seed.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from bench.seed import argv_watch, secret_from
from infra.paths import REPO_ROOT
from lab import replay
from lab.stack import lab_plan
from lab.topology import RESERVED_IP, SWITCH_NS, LabNode, run_dir
from tests.helpers.lab_support import Admin
from tests.lab.test_lab_cluster import _apps, _promoted, _settled, _sql, _wait

pytestmark = pytest.mark.lab
URL = f"http://{RESERVED_IP}"
HOST = "do-ha-stack-lab-{}"


def _seed(node: LabNode, nodes: list[LabNode], watch: list[LabNode] | None = None) -> str:
    """Run the program's db-seed step on `node` as the engine would; its log. With
    `watch`, every process's argv on those nodes is sampled for the password meanwhile."""
    plan = lab_plan(nodes)
    cmd = next(c for c in plan if c["name"] == f"{node.name}-db-seed")
    seen: list[str] = []
    with argv_watch(watch or [], secret_from(cmd, "REPL_PASSWORD"), seen):
        result = replay.run_one(cmd, plan)
    assert result.returncode == 0, result.stderr[-3000:]
    assert seen == [], seen
    return result.stderr


def _state(node: LabNode) -> dict[str, str]:
    """What a seed would change: the server process, its data directory, the lineage file."""
    out = Admin(node).sudo("sh -c 'pidof mariadbd; stat -c %i /var/lib/mysql; md5sum "
                           "/var/lib/mysql/do-ha-stack.lineage; ls -d /var/lib/mysql.* 2>/dev/null || true'").stdout
    return {"pid": out.splitlines()[0], "rest": "\n".join(out.splitlines()[1:])}


@contextmanager
def _writer(tag: str, result: dict) -> Iterator[None]:
    out, stop = run_dir() / f"writer-{tag}.json", run_dir() / f"writer-{tag}.stop"
    stop.unlink(missing_ok=True)
    writer = subprocess.Popen(["ip", "netns", "exec", SWITCH_NS, sys.executable, "-m", "lab.writer", URL,
                               str(out), str(stop)], cwd=REPO_ROOT)
    try:
        time.sleep(1)
        yield
    finally:
        stop.touch()
        writer.wait(timeout=60)
        result["attempts"] = json.loads(out.read_text())


def _holds_every_acked_write(primary: LabNode, replica: LabNode, attempts: list[dict], may_fail: int = 0) -> None:
    acked = {a["key"] for a in attempts if a["outcome"] == "ok"}
    assert acked, "the writer got no write through"
    failed = [a for a in attempts if a["outcome"] != "ok"]
    assert len(failed) <= may_fail, failed
    query = "SELECT COUNT(*), MAX(id) FROM writes"
    _wait("the replica to catch up", 60, lambda: _sql(replica, query) == _sql(primary, query))
    keys = set(_sql(replica, "SELECT client_key FROM writes WHERE client_key LIKE 'w%'").split())
    assert acked <= keys, sorted(acked - keys)[:5]


def test_db_seed_twice_on_a_healthy_cluster_changes_nothing(nodes: list[LabNode]) -> None:
    _wait("a settled cluster", 180, lambda: _settled(nodes))
    primary = _promoted(nodes)
    assert primary is not None
    before = {n.name: _state(n) for n in _apps(nodes)}
    for _ in range(2):
        for node in _apps(nodes):
            out = _seed(node, nodes)
            expected = "this node is the primary" if node is primary else "a healthy replica"
            assert expected in out and "seeding from" not in out, out
    assert {n.name: _state(n) for n in _apps(nodes)} == before
    assert _settled(nodes)
    assert "do-ha-seeding" not in Admin(primary).sudo("cibadmin --query --scope constraints").stdout


def test_the_donor_streams_only_to_the_stacks_own_nodes_and_is_verified(nodes: list[LabNode]) -> None:
    _wait("a settled cluster", 180, lambda: _settled(nodes))
    primary = _promoted(nodes)
    replica = next(n for n in _apps(nodes) if n is not primary)
    target = f"OPENSSL:{primary.private_ip}:4444"
    tls = "cert=/etc/mysql/tls/server.pem,key=/etc/mysql/tls/server-key.pem,cafile=/etc/mysql/tls/ca.pem"
    donor_log = "journalctl -t do-ha-stack --no-pager -o cat | grep -c 'db-donor: streaming' || true"
    served = Admin(primary).sudo(donor_log).stdout.strip()
    own = "/tmp/not-the-stack"
    Admin(replica).sudo(f"openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=x "
                        f"-keyout {own}.key -out {own}.pem")
    def received(address: str) -> str:
        return Admin(replica).sudo(f"sh -c 'timeout 20 socat -u {address} - | wc -c'", check=False).stdout.strip()

    # The donor refuses clients it cannot authenticate: no copy is even started.
    refused = {"no client certificate": f"{target},verify=0",
               "a certificate of another CA": f"{target},verify=0,cert={own}.pem,key={own}.key"}
    for what, address in refused.items():
        assert received(address) == "0", what
    assert Admin(primary).sudo(donor_log).stdout.strip() == served
    # A client (db-seed) takes nothing from a donor that is not the node it asked for.
    # The donor may have started by then: it authenticated the client, which hangs up.
    assert received(f"{target},{tls},verify=1,commonname=10.99.0.99") == "0"
    time.sleep(2)  # such a copy has logged its start by now
    served = Admin(primary).sudo(donor_log).stdout.strip()
    unpack = (f"d=/var/tmp/donor-test; rm -rf $d {own}.*; mkdir $d; timeout 120 socat -u {target},{tls},verify=1 - "
              "| mbstream -x -C $d && test -s $d/mariadb_backup_checkpoints && echo unpacked; rm -rf $d")
    assert Admin(replica).sudo(f"bash -c '{unpack}'", timeout=180).stdout.strip() == "unpacked"
    assert int(Admin(primary).sudo(donor_log).stdout.strip()) == int(served) + 1


@pytest.mark.disruptive(order=-1)
def test_a_replica_with_an_emptied_data_directory_is_seeded_from_the_primary(nodes: list[LabNode],
                                                                           report: dict) -> None:
    _wait("a settled cluster", 300, lambda: _settled(nodes))
    primary = _promoted(nodes)
    replica = next(n for n in _apps(nodes) if n is not primary)
    admin = Admin(replica)
    # An operator stops the replica and empties its data directory; pacemaker then
    # fails to start it there.
    admin.sudo(f"crm_resource --ban --resource mariadb-clone --node {HOST.format(replica.name)}")
    # As root: /proc hides other users' processes (hidepid), so the deploy user's
    # pidof never finds mariadbd.
    _wait("MariaDB stopped on the replica", 120,
          lambda: admin.sudo("pidof mariadbd", check=False).returncode != 0)
    admin.sudo("sh -c 'rm -rf /var/lib/mysql/* /var/lib/mysql/.[!.]*'")
    admin.sudo(f"crm_resource --clear --resource mariadb-clone --node {HOST.format(replica.name)}")
    failcount = f"crm_failcount --query --resource mariadb --node {HOST.format(replica.name)} -q"
    _wait("pacemaker to fail starting it there", 120, lambda: admin.sudo(failcount).stdout.strip() not in ("", "0"))
    writes: dict = {}
    started = time.monotonic()
    with _writer("seed-empty", writes):
        out = _seed(replica, nodes, watch=[primary, replica])
    assert "the data directory is empty" in out, out
    report.setdefault("seed_lab", {})["emptied_replica_s"] = round(time.monotonic() - started, 1)
    _wait("a settled cluster", 120, lambda: _settled(nodes))
    _holds_every_acked_write(primary, replica, writes["attempts"])
    assert _sql(replica, "SELECT @@read_only") == "1"
    status = admin.sudo("mariadb -e 'SHOW SLAVE STATUS\\G'").stdout
    assert "Master_SSL_Allowed: Yes" in status and f"Master_Host: {primary.private_ip}" in status


@pytest.mark.disruptive(order=-1)
def test_a_diverged_replica_is_seeded_again_and_loses_its_own_transaction(nodes: list[LabNode],
                                                                           report: dict) -> None:
    _wait("a settled cluster", 300, lambda: _settled(nodes))
    primary = _promoted(nodes)
    replica = next(n for n in _apps(nodes) if n is not primary)
    # A write on the replica itself (root ignores read_only): a transaction the
    # primary never had, under the replica's own server id.
    errant = "INSERT INTO writes (client_key, node) VALUES ('errant', 'replica')"
    Admin(replica).sudo(f"mariadb do_ha_canary -e \"{errant}\"")
    assert _settled(nodes)  # replication itself still runs: only the GTID check sees it
    writes: dict = {}
    started = time.monotonic()
    with _writer("seed-diverged", writes):
        out = _seed(replica, nodes)
    # Diverged either way: the GTID comparison finds the errant transaction, or, once the
    # primary has committed (the writer), replication has already stopped on it: in
    # strict mode the primary's next transaction takes the same sequence number.
    assert "seeding from" in out and ("this node has transactions the primary never had" in out
                                      or "out-of-order sequence number" in out), out
    report.setdefault("seed_lab", {})["diverged_replica_s"] = round(time.monotonic() - started, 1)
    _wait("a settled cluster", 120, lambda: _settled(nodes))
    # The only replica leaving makes the primary wait out semi-sync once
    # (tuning.SEMI_SYNC_TIMEOUT_MS, 1 s, the writer's own timeout) before it
    # commits alone: at most that one write may time out. None may be lost.
    _holds_every_acked_write(primary, replica, writes["attempts"], may_fail=1)
    report["seed_lab"]["diverged_failed_writes"] = sum(a["outcome"] != "ok" for a in writes["attempts"])
    assert _sql(replica, "SELECT COUNT(*) FROM writes WHERE client_key = 'errant'") == "0"
    assert "seeding from" not in _seed(replica, nodes)  # and now it is left alone
