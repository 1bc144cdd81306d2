"""Benchmark (not a test): backups at a real size, in the lab (root, under the lab lock).

    python -m bench.backup [--gib 1.0] [--keep]

Gives the replica a dataset of at least GIB GiB (bench.seed's table, written
without binlog on the replica itself: the nightly backup is taken there), then
runs the nightly backup unit on the replica while the primary takes single-row
commits without pause (lab.seed_probe), and restores it with db-restore into a
scratch server, to the latest state and to a point in time; then rolls the running
cluster back to the latest state with `make restore`'s code (tooling.restore): the
primary takes the restored copy, the replica is re-seeded from it (--no-into-cluster
leaves that out).

It prints and records (build/lab-report.json, key "backup_bench"): the dataset's
bytes, the backup's seconds and MB/s (dataset bytes, 10^6), the repository's size
in the bucket after it (restic's raw data: compressed, encrypted, deduplicated),
the restore times (RTO on the node, scratch server up and checked), the primary's
worst commit while the backup ran, the shipped binlogs' lag behind the
primary when the backup ended (the recovery point), and the cluster restore's
total time and how long the database was down in it.

Brings the lab up if it is not (and down at the end unless --keep).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from bench.seed import ensure_dataset, log, roles, sudo
from lab import replay
from lab.bringup import down, up
from lab.containers import load_state
from lab.seed_probe import seed_probe, sql
from lab.stack import lab_config, lab_nodes, lab_plan, lab_program
from lab.topology import LabNode
from tests.helpers.day2 import lab_health, lab_run_on, lab_run_with_input
from tooling.node_ops import Operations
from tooling.restore import Restore, restore

REPORT = Path(os.environ.get("LAB_REPORT", "build/lab-report.json"))
RESTIC = "bash -c 'set -a; . /etc/do-ha-stack/backup.env; set +a; restic --no-lock {}'"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.backup")
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--keep", action="store_true", help="leave the lab up")
    parser.add_argument("--no-into-cluster", action="store_true", help="no cluster restore")
    args = parser.parse_args()
    brought_up = not load_state().get("nodes")
    if brought_up:
        up()
    try:
        nodes = lab_nodes()
        primary, replica = roles(nodes)
        size = ensure_dataset(replica, args.gib)
        probe: dict = {}
        with seed_probe(primary, probe):
            started = time.monotonic()
            sudo(replica, "systemctl start do-ha-backup.service", timeout=3600)
            took = time.monotonic() - started
        status = dict(line.split("=", 1) for line in sudo(replica, "cat /srv/shared/backup/status").splitlines()
                      if "=" in line)
        stats = json.loads(sudo(replica, RESTIC.format("stats --json --mode raw-data")))
        restored = {}
        point = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        for name, extra in (("latest", ""), ("point_in_time", f"--at '{point}' ")):
            begin = time.monotonic()
            out = sudo(replica, f"/usr/local/lib/do-ha-stack/db-restore {extra}--sql "
                                "'SELECT COUNT(*) FROM bench_seed.rows'", timeout=3600)
            restored[name] = {"s": round(time.monotonic() - begin, 1), "rows": int(out.splitlines()[-1])}
        binlog = dict(line.split("=", 1) for line in sudo(primary, "cat /srv/shared/backup/binlog").splitlines()
                      if "=" in line)
        shipped_s_ago = round(time.time() - int(binlog["binlog_last_success"]), 1)  # now, not after what follows
        if not args.no_into_cluster:
            restored["into_cluster"] = into_cluster(nodes)
        figures = {
            "dataset_bytes": size,
            "backup_s": round(took, 1), "backup_unit_s": int(status["last_duration_s"]),
            "backup_mb_per_s": round(size / 1e6 / took, 1), "stream_bytes": int(status["last_bytes"]),
            "bucket_bytes": stats.get("total_size"), "bucket_blobs": stats.get("total_blob_count"),
            "restore": restored, "primary_worst_commit_ms": probe.get("max_ms"),
            "primary_commits": probe.get("writes"), "primary_commits_over_50ms": probe.get("over_50ms"),
            "binlog_shipped_s_ago": shipped_s_ago,
        }
        print(json.dumps(figures, indent=2))
        earlier = json.loads(REPORT.read_text()) if REPORT.exists() else {}
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(json.dumps(earlier | {"backup_bench": figures}, indent=2))
        log("backup bench done")
    finally:
        if brought_up and not args.keep:
            down()
    return 0


def into_cluster(nodes: list[LabNode]) -> dict:
    """make restore STACK=lab AT=latest, timed; the database's downtime as db-restore said."""
    said: list[str] = []
    program = lab_program(nodes)
    apps = [n.name for n in nodes if n.name != "witness"]
    ops = Operations(lab_health, lab_run_on, lambda argv: replay.up_replacing(list(argv), lab_plan(lab_nodes()))[0],
                     say=lambda line: (said.append(line), log(line)), run_with_input=lab_run_with_input)
    begin = time.monotonic()
    after = restore(Restore(lab_config().stack, "latest", {n: program.by_name(f"{n}-db-seed").urn for n in apps}),
                    ops, yes=True)
    took = time.monotonic() - begin
    down = next((line for line in said if "the database was down" in line), "")
    rows = {n.name: int(sql(n, "SELECT COUNT(*) FROM bench_seed.rows").strip()) for n in lab_nodes()
            if n.name != "witness"}
    return {"s": round(took, 1), "db_down_s": float(down.split("down ")[1].split(" s")[0]) if down else None,
            "healthy_after": after.healthy, "rows": rows}


if __name__ == "__main__":
    raise SystemExit(main())
