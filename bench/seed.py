"""Benchmark (not a test): seeding a replica at real sizes, in the lab (root, under the lab lock).

    python -m bench.seed [--gib 1.0] [--methods logical,physical] [--keep]

Gives the primary a dataset of at least GIB GiB (written without binlog, so
only a seed can bring it to the replica), then, for each method, empties the
replica's data directory and seeds it again while the primary takes single-row
commits without pause (lab.seed_probe) and a client writes through the reserved
IP (lab.writer):

- logical: mariadb-dump streamed into a freshly initialised server, as
  db-seed.sh did before (bench/seed-logical.sh);
- physical: the program's own db-seed step (mariadb-backup streamed from the
  primary's donor over mutual TLS, prepared, swapped in), exactly as replayed.

Per method it prints and records (build/lab-report.json, key "seeding"): the
dataset's bytes, the bytes the replica received, seconds, MB/s (dataset bytes,
10^6), the primary's worst commit latency and its write errors, the client's
failed writes, the same probe's worst commit over a quiet window before the
seed (the lab shares one disk and its host with others: commits are not free
there either), whether the replication password showed in any process's argv
on either node, and whether the replica then holds every row.
Target: 1 GiB in <= 60 s, worst commit <= 50 ms, no write error.

Each node's disk is a filesystem of its own in memory by default (--node-disks
memory): on this machine every node's disk is otherwise one directory on the host's
one disk, where the replica's copy and the primary's commits meet in one queue, as
no two droplets' do. Memory is faster than a droplet's disk (a sync costs
microseconds, not a fraction of a millisecond), so that figure is what the seed
itself costs the primary's commits; --node-disks host measures the shared disk.

Brings the lab up if it is not, or on other disks (and down at the end unless --keep).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from infra.paths import REPO_ROOT
from infra.remote import lib_settings
from lab import replay
from lab.bringup import down, is_up, up
from lab.containers import NODE_DISKS
from lab.seed_probe import seed_probe, sql, ssh_args
from lab.stack import lab_nodes, lab_plan
from lab.topology import RESERVED_IP, SWITCH_NS, LabNode, run_dir

REPORT = Path(os.environ.get("LAB_REPORT", "build/lab-report.json"))
CHUNK_ROWS = 131_072  # rows per INSERT ... SELECT while the dataset grows (~140 MB)
TARGET_SECONDS, TARGET_COMMIT_MS = 60, 50
BASELINE_S = 20  # the probe alone, before each seed: the machine's own commit latency
# db-seed.sh's own hold: the benchmark empties the replica under the same
# constraint, as if an earlier seed had died half-way.
HOLD = "do-ha-seeding-{host}"
OCF_MARIADB_AGENT = "/usr/lib/ocf/resource.d/heartbeat/mariadb"  # upstream's, as pacemaker runs it
DATASET = """
SET SESSION sql_log_bin = 0;
CREATE DATABASE IF NOT EXISTS bench_seed;
CREATE TABLE IF NOT EXISTS bench_seed.rows (
  id BIGINT PRIMARY KEY, k INT NOT NULL, note VARCHAR(64) NOT NULL, body VARBINARY(1000) NOT NULL, KEY (k)
) ENGINE=InnoDB;
"""
GROW = """
SET SESSION sql_log_bin = 0;
USE bench_seed;
INSERT INTO bench_seed.rows SELECT seq, seq * 7919 % 1000003, CONCAT('row ', seq), RANDOM_BYTES(1000)
  FROM seq_{first}_to_{last};
"""


def log(msg: str) -> None:
    print(f"bench.seed: {msg}", file=sys.stderr, flush=True)


def sudo(node: LabNode, command: str, stdin: str = "", timeout: float = 600) -> str:
    result = subprocess.run(ssh_args(node, f"sudo -n {command}"), input=stdin, capture_output=True, text=True,
                            timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{node.name}: {command[:80]!r} exited {result.returncode}: {result.stderr[-800:]}")
    return result.stdout


def host(node: LabNode) -> str:
    return f"do-ha-stack-lab-{node.name}"


def roles(nodes: list[LabNode]) -> tuple[LabNode, LabNode]:
    """(primary, replica): the writable app node and another app node."""
    apps = [n for n in nodes if n.name != "witness"]
    writable = [n for n in apps if sql(n, "SELECT @@read_only").strip() == "0"]
    if len(writable) != 1:
        raise RuntimeError(f"expected one writable MariaDB, found {[n.name for n in writable]}")
    return writable[0], next(n for n in apps if n is not writable[0])


def dataset_bytes(primary: LabNode) -> int:
    out = sudo(primary, "sh -c 'du -sb /var/lib/mysql/bench_seed /var/lib/mysql/do_ha_canary'")
    return sum(int(line.split()[0]) for line in out.splitlines())


def ensure_dataset(primary: LabNode, gib: float) -> int:
    """Grow bench_seed.rows on the primary to at least `gib` GiB; its bytes on disk."""
    sql(primary, DATASET)
    target = int(gib * 2**30)
    rows = int(sql(primary, "SELECT COALESCE(MAX(id), 0) FROM bench_seed.rows"))
    start = time.monotonic()
    while (size := dataset_bytes(primary)) < target:
        sql(primary, GROW.format(first=rows + 1, last=rows + CHUNK_ROWS), timeout=900)
        rows += CHUNK_ROWS
        log(f"dataset: {rows} rows, {size / 2**30:.2f} GiB")
    log(f"dataset ready: {size} bytes ({rows} rows) after {time.monotonic() - start:.0f} s")
    return size


def empty_replica(replica: LabNode) -> None:
    """The replica's MariaDB stopped and kept from pacemaker (db-seed's hold), its data directory empty."""
    hold = HOLD.format(host=host(replica))
    xml = f"<rsc_location id='{hold}' rsc='mariadb-clone' node='{host(replica)}' score='-INFINITY'/>"
    sudo(replica, "bash -s", f"""set -e
cibadmin --query --scope constraints --xpath "//rsc_location[@id='{hold}']" >/dev/null 2>&1 ||
  cibadmin --create --scope constraints --xml-text "{xml}"
systemctl stop mariadb.service || true
for _ in $(seq 120); do pidof mariadbd mariadbd-safe >/dev/null || break; sleep 1; done
! pidof mariadbd mariadbd-safe >/dev/null
rm -rf /var/lib/mysql /var/lib/mysql.seed /var/lib/mysql.old
install -d -m 0755 -o mysql -g mysql /var/lib/mysql
""")


def rx_bytes(node: LabNode) -> int:
    out = subprocess.run(["ip", "netns", "exec", node.netns, "cat", "/sys/class/net/eth1/statistics/rx_bytes"],
                         capture_output=True, text=True, check=True)
    return int(out.stdout)


def secret_from(cmd: dict, name: str) -> str:
    for line in (cmd.get("stdin") or "").splitlines():
        kind, *rest = line.split()
        if kind == "secret" and rest[0] == name:
            return base64.b64decode(rest[1]).decode()
    raise KeyError(name)


@contextmanager
def argv_watch(nodes: list[LabNode], secret: str, seen: list[str]) -> Iterator[None]:
    """Sample every process's argv on `nodes` while the body runs; note any that holds `secret`.
    Not the MariaDB resource agent's own clients: upstream's agent passes the replication
    password in argv, which the nodes' /proc hidepid shows to root alone."""
    stop = threading.Event()
    # Each process: its argv, a tab, its parent's argv.
    dump = ("bash -c 'for d in /proc/[0-9]*; do { tr \"\\0\" \" \" < $d/cmdline; printf \"\\t\";"
            " tr \"\\0\" \" \" < /proc/$(awk \"/^PPid:/ {print \\$2}\" $d/status)/cmdline; echo; } 2>/dev/null;"
            " done'")

    def sample() -> None:
        while not stop.is_set():
            for node in nodes:
                out = subprocess.run(ssh_args(node, f"sudo -n {dump}"), capture_output=True, text=True, timeout=60)
                for line in out.stdout.splitlines():
                    argv, _, parent = line.partition("\t")
                    if secret in argv and OCF_MARIADB_AGENT not in parent:
                        seen.append(f"{node.name}: {argv[:60]}... (parent {parent[:60]})")
            stop.wait(0.5)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=120)


@contextmanager
def client_writer(result: dict) -> Iterator[None]:
    out, stop = run_dir() / "bench-seed-writer.json", run_dir() / "bench-seed-writer.stop"
    stop.unlink(missing_ok=True)
    writer = subprocess.Popen(["ip", "netns", "exec", SWITCH_NS, sys.executable, "-m", "lab.writer",
                               f"http://{RESERVED_IP}", str(out), str(stop)], cwd=REPO_ROOT)
    try:
        yield
    finally:
        stop.touch()
        writer.wait(timeout=60)
        attempts = json.loads(out.read_text())
        result.update(client_writes=len(attempts), client_failed=sum(a["outcome"] != "ok" for a in attempts),
                      client_worst_ms=round(max((a["took"] for a in attempts), default=0) * 1000, 1))


# What mariadb-dump needs of the account it logs in with. The program's `repl`
# account may only replicate (db-node.sh), so the benchmark lends it these for the
# logical seed and takes them back after.
DUMP_GRANTS = "SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES, RELOAD, BINLOG MONITOR, REPLICA MONITOR"


def logical(primary: LabNode, replica: LabNode, plan_cmd: dict) -> str:
    """A freshly initialised server on the replica, then bench/seed-logical.sh."""
    sudo(replica, "bash -s", """set -e
TMPDIR=/tmp mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
systemctl start mariadb.service
""")
    lib = (REPO_ROOT / "cloudinit/steps/lib.sh").read_text()
    shebang, _, body = (REPO_ROOT / "bench/seed-logical.sh").read_text().partition("\n")
    script = f"{shebang}\n{lib_settings()}\n{lib}\n{body}"
    cmd = dict(plan_cmd, create=f"sudo -n bash -c {shlex.quote(script)} seed-logical "
                                f"PRIMARY={primary.private_ip} START_WAIT_S=120")
    account = "'repl'@'" + sql(primary, "SELECT host FROM mysql.user WHERE user = 'repl' AND host <> 'localhost'"
                               " LIMIT 1").strip() + "'"
    # Not binlogged (db-node's own rule for users): the seeded replica has no such account.
    sql(primary, f"SET SESSION sql_log_bin = 0; GRANT {DUMP_GRANTS} ON *.* TO {account};")
    try:
        return _run(cmd)
    finally:
        sql(primary, f"SET SESSION sql_log_bin = 0; REVOKE {DUMP_GRANTS} ON *.* FROM {account};")


def physical(plan_cmd: dict) -> str:
    """The program's db-seed step on the replica, as the engine would run it."""
    return _run(plan_cmd)


def _run(cmd: dict) -> str:
    result = replay.run_one(cmd)
    if result.returncode != 0:
        raise RuntimeError(f"seeding failed (exit {result.returncode}): {result.stderr[-1500:]}")
    return result.stderr


def same_rows(primary: LabNode, replica: LabNode) -> bool:
    query = "SELECT COUNT(*), COALESCE(MAX(id), 0) FROM bench_seed.rows"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if sql(primary, query) == sql(replica, query):
                return True
        except RuntimeError:
            pass
        time.sleep(2)
    return False


def measure(method: str, nodes: list[LabNode], gib: float) -> dict:
    primary, replica = roles(nodes)
    size = ensure_dataset(primary, gib)
    plan = {c["name"]: c for c in lab_plan(nodes)}
    seed_cmd = plan[f"{replica.name}-db-seed"]
    secret = secret_from(seed_cmd, "REPL_PASSWORD")
    # The same probe over a quiet window first, the replica still healthy: what
    # commits cost on this machine without a seed. (Not after emptying the replica:
    # the primary's first commit then waits out the semi-sync timeout.)
    baseline: dict = {}
    with seed_probe(primary, baseline, ballast_rows=0):
        time.sleep(BASELINE_S)
    log(f"{method}: emptying {replica.name}'s data directory")
    empty_replica(replica)
    probe: dict = {}
    client: dict = {}
    in_argv: list[str] = []
    rx0 = rx_bytes(replica)
    with seed_probe(primary, probe, ballast_rows=0), client_writer(client), \
            argv_watch([primary, replica], secret, in_argv):
        start = time.monotonic()
        output = logical(primary, replica, seed_cmd) if method == "logical" else physical(seed_cmd)
        took = time.monotonic() - start
    received = rx_bytes(replica) - rx0
    result = {
        "method": method, "primary": primary.name, "replica": replica.name,
        "dataset_bytes": size, "received_bytes": received, "seconds": round(took, 1),
        "mb_per_s": round(size / took / 1e6, 1),
        "primary_worst_commit_ms": probe["max_ms"], "primary_commits": probe["writes"],
        "primary_commits_over_50ms": probe["over_50ms"], "primary_write_errors": probe["errors"],
        "primary_slowest_commits": probe["slowest"],
        f"baseline_{BASELINE_S}s_worst_commit_ms": baseline["max_ms"],
        f"baseline_{BASELINE_S}s_commits_over_50ms": baseline["over_50ms"],
        **client,
        "secret_in_argv": bool(in_argv), "replica_has_every_row": same_rows(primary, replica),
        "step_log": [line for line in output.splitlines() if re.search(r"seed", line)][-3:],
    }
    result["meets_target"] = (result["seconds"] <= TARGET_SECONDS * gib
                              and result["primary_worst_commit_ms"] <= TARGET_COMMIT_MS
                              and result["primary_write_errors"] == 0 and result["client_failed"] == 0)
    return result


def restore(nodes: list[LabNode]) -> None:
    """Leave the replica as the program wants it: the db-seed step, once more (it seeds if needed)."""
    _, replica = roles(nodes)
    plan = {c["name"]: c for c in lab_plan(nodes)}
    _run(plan[f"{replica.name}-db-seed"])


def record(results: list[dict]) -> None:
    report = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    report["seeding"] = {r["method"]: r for r in results} | {"measured_at": time.strftime("%FT%TZ", time.gmtime())}
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.seed", description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="dataset size on the primary (default 1.0)")
    parser.add_argument("--methods", default="logical,physical", help="comma-separated: logical, physical")
    parser.add_argument("--node-disks", choices=NODE_DISKS, default="memory",
                        help="each node's disk: memory, a filesystem of its own (default), or host, "
                             "this machine's one disk shared by every node (lab.containers)")
    parser.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    if not methods or set(methods) - {"logical", "physical"}:
        parser.error("--methods: a comma-separated list of logical, physical")
    if os.geteuid() != 0:
        parser.error("the lab needs root")
    brought_up = False
    # A lab on other disks (or another checkout's) would measure those: up() replaces it.
    if not is_up(args.node_disks):
        up(args.node_disks)
        brought_up = True
    results = []
    try:
        nodes = lab_nodes()
        for method in methods:
            result = measure(method, nodes, args.gib) | {"node_disks": args.node_disks}
            results.append(result)
            print(json.dumps(result), flush=True)
        if methods[-1] == "logical":
            restore(nodes)
    finally:
        if results:
            record(results)
        if brought_up and not args.keep:
            down()
    print(f"{'method':9} {'GiB':>5} {'received':>9} {'s':>6} {'MB/s':>6} {'worst commit':>13} "
          f"{'errors':>6} {'client fails':>12} {'argv':>5} {'rows':>5}")
    for r in results:
        print(f"{r['method']:9} {r['dataset_bytes'] / 2**30:5.2f} {r['received_bytes'] / 2**30:8.2f}G "
              f"{r['seconds']:6.1f} {r['mb_per_s']:6.1f} {r['primary_worst_commit_ms']:10.1f} ms "
              f"{r['primary_write_errors']:6} {r['client_failed']:12} {'leak' if r['secret_in_argv'] else 'ok':>5} "
              f"{'all' if r['replica_has_every_row'] else 'MISS':>5}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
