"""Backups in the lab (issue 14): the stack's bucket is moto's S3 server in the
switch namespace, with real credential checking (lab/spaces.py).

The first story: the nightly backup, run now, is taken on the replica only; what
it holds restores (into a scratch server on the node); the uptime check's endpoint
says so; an upload killed half-way leaves the previous backup the latest; a wrong
key fails loudly on every node and at the uptime check, and the next good run
clears it. The second: the drill of issue 14, a table dropped by mistake after a
switchover, restored to the second before the drop from the nightly backup and the
binlogs both primaries shipped (and to a GTID); then `make restore` rolls the running
cluster back to that second: the primary takes the restored copy, the replica is
re-seeded from it, and the stack serves and ships on.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time

import pytest

from infra import tuning
from lab import replay
from lab.containers import kill_node
from lab.spaces import ENDPOINT, OTHER_BUCKET
from lab.stack import lab_config, lab_nodes, lab_plan, lab_program
from lab.topology import RESERVED_IP, LabNode
from tests.helpers.day2 import apps, host, lab_health, lab_run_on, lab_run_with_input, sql
from tests.helpers.lab_support import Admin, api, in_lab
from tests.lab.test_lab_cluster import _promoted, _settled, _wait
from tooling.node_ops import Operations
from tooling.restore import Restore, restore
from tooling.switchover import switch

pytestmark = pytest.mark.lab

BACKUP = "/usr/local/lib/do-ha-stack/db-backup"
RESTORE = "/usr/local/lib/do-ha-stack/db-restore"
ENV = "/etc/do-ha-stack/backup.env"
RESTIC = f"bash -c 'set -a; . {ENV}; set +a; restic --no-cache "


# A restore from a repository given on stdin (db-restore --source -), made of this
# node's own settings; its backup.env is moved away meanwhile, so it cannot be read.
FROM_STDIN = f"""set -euo pipefail
set -a; . {ENV}; . /etc/do-ha-stack/backup.conf; set +a
src=$(printf 'RESTIC_REPOSITORY=%q\\nRESTIC_PASSWORD=%q\\nAWS_ACCESS_KEY_ID=%q\\n' \\
  "$RESTIC_REPOSITORY" "$(cat "$RESTIC_PASSWORD_FILE")" "$AWS_ACCESS_KEY_ID"
  printf 'AWS_SECRET_ACCESS_KEY=%q\\nHOST=%q\\n' "$AWS_SECRET_ACCESS_KEY" "$HOST")
mv {ENV} {ENV}.away
trap 'mv {ENV}.away {ENV}' EXIT
printf '%s\\n' "$src" | {RESTORE} --source - --sql "$1"
"""


def _restic(node: LabNode, args: str, check: bool = True) -> str:
    done = Admin(node).sudo(f"{RESTIC}{args}'", check=check)
    return done.stdout if check else done.stdout + done.stderr


def _snapshots(node: LabNode, tag: str) -> list[dict]:
    return json.loads(_restic(node, f"snapshots --json --tag {tag}"))


def _status(node: LabNode, name: str = "status") -> dict[str, str]:
    """A status file of db-backup's (status: the nightly runs; binlog: the shipments)."""
    text = Admin(node).sudo(f"cat /srv/shared/backup/{name}").stdout
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _canary_backup() -> tuple[int, str]:
    out = in_lab("curl", "-s", "-m", "10", "-w", " %{http_code}", f"http://{RESERVED_IP}/canary/backup").stdout
    body, _, code = out.rpartition(" ")
    return int(code), body


def _write(prefix: str, count: int) -> set[str]:
    keys = {f"{prefix}-{i}" for i in range(count)}
    for key in keys:
        out = in_lab("curl", "-s", "-m", "10", "-X", "POST", "-o", "/dev/null", "-w", "%{http_code}",
                     f"http://{RESERVED_IP}/canary/write?key={key}").stdout
        assert out == "200", (key, out)
    return keys


def _nightly(node: LabNode, check: bool = True) -> int:
    """The nightly unit, started now (as its timer would); a run that hangs says where."""
    try:
        return Admin(node).sudo("systemctl start do-ha-backup.service", check=check, timeout=300).returncode
    except subprocess.TimeoutExpired:
        where = Admin(node).sudo("bash -c 'journalctl -b --no-pager -n 30 -t do-ha-backup; ps -ef | grep [r]estic'",
                                 check=False).stdout
        locks = [(lock["hostname"], lock["pid"], lock["exclusive"], lock["time"])
                 for other in lab_nodes() if other.name.startswith("app")
                 for lock in _locks_from(node, other)]
        pytest.fail(f"the nightly run on {node.name} did not end in 300 s; locks {locks}:\n{where}")


def test_backups_are_taken_on_the_replica_restore_and_fail_loudly(nodes: list[LabNode], report: dict) -> None:
    nodes = lab_nodes()
    _wait("a settled cluster", 300, lambda: _settled(nodes))
    primary = _promoted(nodes)
    assert primary is not None
    replica = next(n for n in apps(nodes) if n is not primary)
    figures = report.setdefault("backups", {})

    # Set up by the backup-node steps: the repository exists, every node can reach
    # it, nothing is stale yet, and the key opens this stack's bucket only.
    for node in apps(nodes):
        assert Admin(node).sudo(f"stat -c '%a %U' {ENV}").stdout.strip() == "600 root"
        assert Admin(node).sudo("systemctl is-enabled do-ha-backup.timer do-ha-backup-check.timer "
                                "do-ha-binlog.timer").stdout.split() == ["enabled"] * 3
        assert Admin(node).sudo(f"{BACKUP} check").stdout.startswith("ok: ")
    other = _restic(replica, f"-r s3:{ENDPOINT}/{OTHER_BUCKET}/restic cat config", check=False)
    assert "Access Denied" in other or "AccessDenied" in other, other[-600:]

    # The nightly run on every app node: only the replica backs up.
    run = f"bk{int(time.time())}"  # this run's rows (the lab may be a kept one)
    earlier = {s["id"] for s in _snapshots(replica, "mariadb")}
    before = _write(f"{run}-before", 20)
    _wait("the replica has the writes", 60,
          lambda: sql(replica, f"SELECT COUNT(*) FROM writes WHERE client_key LIKE '{run}-before-%'") == "20")
    started = time.monotonic()
    for node in apps(nodes):
        assert _nightly(node) == 0, node.name
    figures["nightly_run_s"] = round(time.monotonic() - started, 1)
    said = Admin(primary).sudo("journalctl -t do-ha-backup --no-pager -o cat -n 20").stdout
    assert "backs up tonight" in said and "backing up MariaDB" not in said, said
    status = _status(replica)
    assert status["last_result"] == "ok" and status["last_success_node"].endswith(f"-{replica.name}"), status
    figures |= {"mariadb_bytes": int(status["last_bytes"]), "duration_s": int(status["last_duration_s"])}
    [db] = [s for s in _snapshots(replica, "mariadb") if s["id"] not in earlier]
    assert db["id"].startswith(status["last_snapshot"][:8]) and db["paths"] == ["/mariadb.xbstream"]
    assert _snapshots(replica, "shared")
    assert _canary_backup()[0] == 200

    # What it holds restores (into a scratch server on the node): every row
    # acknowledged before the backup.
    restored = Admin(replica).sudo(
        f"{RESTORE} --sql \"SELECT client_key FROM do_ha_canary.writes WHERE client_key LIKE '{run}-%'\"",
        timeout=300).stdout.split("\n")
    assert restored[0].startswith("restored: backup "), restored[:3]
    assert before <= {line for line in restored[1:] if line}
    # The same from "another stack's" repository (make restore FROM=...): its settings on
    # stdin only, this node's own key file out of the way meanwhile.
    script = base64.b64encode(FROM_STDIN.encode()).decode()
    Admin(replica).sudo(f"sh -c 'echo {script} | base64 -d > /run/from-stdin.sh'")
    restored = Admin(replica).sudo(
        f"bash /run/from-stdin.sh \"SELECT client_key FROM do_ha_canary.writes WHERE client_key LIKE '{run}-%'\"",
        timeout=300).stdout.split("\n")
    assert restored[0].startswith("restored: backup "), restored[:3]
    assert before <= {line for line in restored[1:] if line}
    assert Admin(replica).sudo(f"test -f {ENV}", check=False).returncode == 0

    # An upload killed half-way: no snapshot, the previous backup stays the latest.
    # (Watched on the node itself: the lab's small database streams in about a second.)
    killed = Admin(replica).sudo(
        "bash -c 'systemctl start --no-block do-ha-backup.service; for _ in $(seq 1 1200); do "
        "if pgrep -x mariadb-backup >/dev/null; then systemctl kill --signal=KILL do-ha-backup.service; "
        "exit 0; fi; sleep 0.05; done; exit 1'", check=False, timeout=120)
    assert killed.returncode == 0, "the run never got to streaming the database"
    _wait("the run gone", 30, lambda: Admin(replica).sudo("systemctl is-active do-ha-backup.service",
                                                          check=False).stdout.strip() != "activating")
    assert max(_snapshots(replica, "mariadb"), key=lambda s: s["time"])["id"] == db["id"]
    assert Admin(replica).sudo("systemctl is-failed do-ha-backup.service", check=False).stdout.strip() == "failed"

    # A wrong key: the run fails, every node's check and the uptime check say so, the
    # key itself shows nowhere; the next good run clears it.
    secret = Admin(replica).sudo(f"sed -n 's/^AWS_SECRET_ACCESS_KEY=//p' {ENV}").stdout.strip().strip("'")
    Admin(replica).sudo(f"cp -p {ENV} {ENV}.good")
    try:
        Admin(replica).sudo(f"sed -i 's/^AWS_SECRET_ACCESS_KEY=.*/AWS_SECRET_ACCESS_KEY=wrong/' {ENV}")
        assert _nightly(replica, check=False) != 0
        status = _status(replica)
        assert status["last_result"] == "failed", status
        assert "SignatureDoesNotMatch" in status["last_error"] or "signature" in status["last_error"].lower(), status
        for node in apps(nodes):
            check = Admin(node).sudo(f"{BACKUP} check", check=False)
            assert check.returncode == 1 and check.stdout.startswith("the last backup failed on"), check.stdout
        code, body = _canary_backup()
        assert code == 503 and "failed" in body, body
        assert "do-ha-backup.service" in Admin(replica).sudo("systemctl --failed --no-legend").stdout
    finally:
        Admin(replica).sudo(f"mv -f {ENV}.good {ENV}")
    assert _nightly(replica) == 0
    assert _status(replica)["last_result"] == "ok" and _canary_backup()[0] == 200
    assert len({s["id"] for s in _snapshots(replica, "mariadb")} - earlier) == 2
    for node in apps(nodes):
        logs = Admin(node).sudo("journalctl --no-pager -o cat").stdout
        assert secret and secret not in logs, node.name


def _sql(node: LabNode, query: str) -> str:
    return Admin(node).sudo(f"mariadb -N -B -e {json.dumps(query)}").stdout.strip()


def _ship(node: LabNode) -> None:
    Admin(node).sudo("systemctl start do-ha-binlog.service", timeout=300)


def _restore(node: LabNode, sql_text: str, at: str = "") -> tuple[str, float]:
    started = time.monotonic()
    out = Admin(node).sudo(f"{RESTORE} {f'--at {json.dumps(at)} ' if at else ''}--sql {json.dumps(sql_text)}",
                           timeout=600).stdout
    return out, round(time.monotonic() - started, 1)


class SeedReplay:
    """`pulumi up --replace <db-seed URN>...` as the lab plays it: those steps run again."""

    def __init__(self) -> None:
        self.replaced: list[str] = []

    def __call__(self, argv: list[str]) -> int:
        code, ran = replay.up_replacing(list(argv), lab_plan(lab_nodes()))
        self.replaced += ran
        return code


def _locks_from(node: LabNode, on: LabNode) -> list[dict]:
    """The repository's locks that `on` made (read with restic on `node`)."""
    hostname = Admin(on).run("hostname").stdout.strip()
    found = []
    for lock_id in _restic(node, "list locks --no-lock").split():
        # A shipment's lock may go between the listing and the reading.
        done = Admin(node).sudo(f"{RESTIC}cat lock --no-lock {lock_id}'", check=False)
        lock = json.loads(done.stdout) if done.returncode == 0 else {}
        if lock.get("hostname") == hostname:
            found.append(lock)
    return found


@pytest.mark.disruptive(order=1)  # it kills the replica
def test_a_node_that_died_holding_the_repository_lock_does_not_stall_the_nightly(
        nodes: list[LabNode], report: dict) -> None:
    """restic deems a lock stale only on its own host (its process is gone) or after
    30 minutes; until then forgetting, which locks the repository for itself, waits.
    A node killed mid-shipment (or mid-backup) clears its lock once it is back."""
    nodes = lab_nodes()
    _wait("a settled cluster", 300, lambda: _settled(nodes))
    primary = _promoted(nodes)
    replica = next(n for n in apps(nodes) if n is not primary)
    Admin(replica).sudo(f"systemd-run --unit=do-ha-test-lock --collect bash -c 'set -a; . {ENV}; set +a; "
                        "exec restic --no-cache backup --host lock-test --tag lock-test --stdin-from-command "
                        "--stdin-filename hold -- sleep 900'")
    _wait("the replica's lock in the repository", 60, lambda: len(_locks_from(primary, replica)) == 1)
    kill_node(replica)
    _wait("the replica fenced", 120,
          lambda: api("GET", f"/v2/droplets/{replica.droplet_id}")[1]["droplet"]["status"] == "off")
    status, body = api("POST", f"/v2/droplets/{replica.droplet_id}/actions", {"type": "power_on"})
    assert status == 201, body
    _wait(f"{replica.name} back", 300, lambda: _settled(lab_nodes()))
    assert _promoted(lab_nodes()) == primary
    _wait("the dead run's lock cleared by its node", tuning.BINLOG_SHIP_S + 60,
          lambda: _locks_from(primary, replica) == [])
    started = time.monotonic()
    assert _nightly(replica) == 0
    report.setdefault("backups", {})["nightly_after_a_crash_s"] = round(time.monotonic() - started, 1)
    assert _status(replica)["last_result"] == "ok"


@pytest.mark.disruptive(order=1)  # it moves the active role (and back), and rolls the database back
def test_a_dropped_table_comes_back_to_the_second_before_the_drop_across_a_switchover(
        nodes: list[LabNode], report: dict) -> None:
    nodes = lab_nodes()
    apps_ = apps(nodes)
    _wait("a settled cluster", 300, lambda: _settled(nodes))
    first = _promoted(nodes)
    assert first is not None
    second = next(n for n in apps_ if n is not first)
    drill = f"drill_{int(time.time())}"
    ops = Operations(lab_health, lab_run_on, say=print,
                     pulumi=lambda argv: pytest.fail(f"no pulumi in a switchover: {argv}"))
    figures = report.setdefault("backups", {})
    try:
        # The recovery point: a commit is in the bucket within a shipping period (timer).
        _sql(first, f"CREATE DATABASE {drill}; CREATE TABLE {drill}.t (k INT PRIMARY KEY)")
        committed = float(Admin(first).run("date +%s.%N").stdout)
        seq = int(_sql(first, "SELECT @@gtid_binlog_pos").split("-")[-1])
        _wait("the commit shipped", 120, lambda: int(_status(first, "binlog")["binlog_gtid"].split("-")[-1]) >= seq)
        figures["recovery_point_s"] = round(int(_status(first, "binlog")["binlog_last_success"]) - committed, 1)
        assert figures["recovery_point_s"] <= tuning.BINLOG_SHIP_S + 15, figures
        _sql(first, f"INSERT INTO {drill}.t VALUES " + ",".join(f"({i})" for i in range(1, 21)))
        _wait("the replica has the rows", 60, lambda: _sql(second, f"SELECT COUNT(*) FROM {drill}.t") == "20")
        site_file = f"/srv/shared/www/{drill}.txt"
        Admin(first).sudo(f"sh -c 'echo before > {site_file}'")
        assert _nightly(second) == 0  # the nightly backup, on the replica
        Admin(first).sudo(f"sh -c 'echo after > {site_file}'")
        _sql(first, f"INSERT INTO {drill}.t VALUES " + ",".join(f"({i})" for i in range(21, 41)))
        row_40 = _sql(first, "SELECT @@gtid_binlog_pos")  # that insert's GTID
        _ship(first)

        # The primary changes (a planned failover); writes go on on the other node.
        switch(lab_config().stack, {n.name: host(n) for n in apps_}, ops, to=second.name)
        _sql(second, f"INSERT INTO {drill}.t VALUES " + ",".join(f"({i})" for i in range(41, 61)))
        time.sleep(1.5)
        at = Admin(second).run("date -u '+%F %T'").stdout.strip()
        time.sleep(1.5)
        _sql(second, f"DROP TABLE {drill}.t")  # the mistake
        _sql(second, f"CREATE TABLE {drill}.later (k INT PRIMARY KEY); INSERT INTO {drill}.later VALUES (1)")
        _ship(second)

        # To the second before the drop: exactly the 60 rows, from the backup and
        # the binlogs of both primaries; nothing written after.
        out, took = _restore(first, f"SELECT COUNT(*), MIN(k), MAX(k) FROM {drill}.t; "
                                    f"SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = "
                                    f"'{drill}' AND table_name = 'later'", at)
        lines = out.strip().splitlines()
        assert lines[0].startswith("restored: backup ") and lines[1:] == ["60\t1\t60", "0"], out
        figures["restore_to_point_s"] = took
        # To the latest: the drop and what followed are there too.
        out, took = _restore(first, f"SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = "
                                    f"'{drill}' AND table_name IN ('t', 'later') GROUP BY table_name")
        assert out.strip().splitlines()[1:] == ["1"], out  # `later` only: `t` was dropped
        figures["restore_to_latest_s"] = took
        assert _status(second, "binlog")["binlog_node"].endswith(f"-{second.name}")
        # To a GTID: up to and including the insert of rows 21-40, shipped by the old primary.
        out, _ = _restore(first, f"SELECT COUNT(*), MIN(k), MAX(k) FROM {drill}.t", row_40)
        assert out.strip().splitlines()[1:] == ["40\t1\t40"], out

        # make restore: the running cluster rolled back to the second before the drop.
        program = lab_program(lab_nodes())
        seeds = SeedReplay()
        said: list[str] = []
        ops_restore = Operations(lab_health, lab_run_on, seeds, say=lambda line: (said.append(line), print(line)),
                                 run_with_input=lab_run_with_input)
        started = time.monotonic()
        after = restore(Restore(lab_config().stack, at, {n.name: program.by_name(f"{n.name}-db-seed").urn
                                                        for n in apps_}, files=True), ops_restore, yes=True)
        figures["restore_into_cluster_s"] = round(time.monotonic() - started, 1)
        down = [line for line in said if "the database was down" in line]
        assert down, said
        figures["restore_into_cluster_db_down_s"] = float(down[0].split("down ")[1].split(" s")[0])
        assert after.healthy, after.problems
        assert seeds.replaced == [f"{first.name}-db-seed"]  # the replica, not the primary
        assert _promoted(lab_nodes()) == second
        for node in apps_:
            assert _sql(node, f"SELECT COUNT(*), MIN(k), MAX(k) FROM {drill}.t") == "60\t1\t60", node.name
            assert _sql(node, f"SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '{drill}' "
                              "AND table_name = 'later'") == "0", node.name
        assert "restored at" in Admin(second).sudo("cat /var/lib/mysql/do-ha-stack.lineage").stdout
        for node in apps_:  # the site's files as the nightly backup had them, on the shared volume
            assert Admin(node).sudo(f"cat {site_file}").stdout == "before\n", node.name
        assert "seeded from" in Admin(first).sudo("cat /var/lib/mysql/do-ha-stack.lineage").stdout
        kept = Admin(second).sudo("sh -c 'ls -d /var/lib/mysql.before-restore-*'").stdout.split()
        assert len(kept) == 1, kept
        assert Admin(second).sudo(f"test -d {kept[0]}/{drill}", check=False).returncode == 0
        assert _snapshots(second, "rollback"), "the rollback is recorded for later restores"
        # Each primary's last shipment before it is kept to bridge older backups up to it.
        assert {s["hostname"].rsplit("-", 1)[1] for s in _snapshots(second, "rollback-bridge")} == {
            n.name for n in apps_}
        # The stack goes on: a write replicates, is shipped, and a restore to the
        # latest state has the rolled-back table and the new row, not the dropped history.
        _sql(second, f"INSERT INTO {drill}.t VALUES (61)")
        _wait("the replica has row 61", 60, lambda: _sql(first, f"SELECT COUNT(*) FROM {drill}.t") == "61")
        _ship(second)
        out, _ = _restore(first, f"SELECT COUNT(*), MAX(k) FROM {drill}.t; SELECT COUNT(*) FROM "
                                 f"information_schema.tables WHERE table_schema = '{drill}' AND table_name = 'later'")
        assert out.strip().splitlines()[1:] == ["61\t61", "0"], out
        Admin(second).sudo(f"rm -rf {kept[0]}")
    finally:
        _wait("a settled cluster", 300, lambda: _settled(lab_nodes()))
        if _promoted(lab_nodes()) != apps_[0]:
            switch(lab_config().stack, {n.name: host(n) for n in apps_}, ops, to=apps_[0].name)
        _sql(apps_[0], f"DROP DATABASE IF EXISTS {drill}")
        Admin(apps_[0]).sudo(f"rm -f /srv/shared/www/{drill}.txt")
