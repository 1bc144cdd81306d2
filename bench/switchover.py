"""Benchmark (not a test): planned switchovers in the lab, phase by phase (root, under
the lab lock).

    python -m bench.switchover [--runs 6] [--keep]

Each run moves the active role to the other app node with tooling.switchover.switch
(what `make switchover` runs) while a client writes through the reserved IP without
pause, as the lab tier's switchover test does; the runs alternate between the app
nodes. For each run it prints, in seconds after the primary was asked to turn
read-only: the promotion scores moved (the target's SSH call returned), the old
primary demoted, the target promoted, the reserved IP's move done, the sync guard
letting the new primary's first commits go, the first acknowledged write, and the
longest pause in acknowledged writes (the issue's figure; target 2 s). Then their
median and p95, recorded in build/lab-report.json ("switchover_bench").

Brings the lab up if it is not (and down at the end unless --keep).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

from lab import failover_phases
from lab.bringup import for_a_bench
from lab.stack import lab_config, lab_nodes
from lab.topology import LabNode
from tests.helpers.day2 import apps, host, lab_health, lab_run_on, writes_through_the_reserved_ip
from tests.helpers.lab_support import Admin
from tests.lab.test_lab_cluster import _promoted, _settled, _wait
from tooling.node_ops import Operations
from tooling.switchover import switch

REPORT = Path(os.environ.get("LAB_REPORT", "build/lab-report.json"))
PHASES = ("scores_moved", "demoted", "promoted", "ip_moved", "guard_released", "first_write", "write_gap")


def _journal(node: LabNode, since: float, until: float) -> list[tuple[float, str]]:
    out = Admin(node).sudo(f"journalctl --no-pager -o short-unix --since @{since:.3f} --until @{until:.3f}",
                           check=False).stdout
    lines = []
    for line in out.splitlines():
        stamp, _, text = line.partition(" ")
        with contextlib.suppress(ValueError):
            lines.append((float(stamp), text))
    return lines


def _first(lines: list[tuple[float, str]], pattern: str, after: float) -> float | None:
    found = [t for t, text in lines if t >= after and re.search(pattern, text)]
    return min(found, default=None)


def one_run(index: int) -> dict:
    nodes = lab_nodes()
    _wait("a settled cluster", 300, lambda: _settled(nodes))
    primary = _promoted(nodes)
    assert primary is not None
    target = next(n for n in apps(nodes) if n != primary)
    calls: list[tuple[float, float]] = []

    def run_on(name: str, argv: Sequence[str]):  # a node operation's run_on, timed
        started = time.time()
        result = lab_run_on(name, argv)
        calls.append((started, time.time()))
        return result

    ops = Operations(lab_health, run_on, pulumi=lambda argv: None, say=lambda _: None)
    hosts = {n.name: host(n) for n in apps(nodes)}
    with writes_through_the_reserved_ip(f"switchover-bench-{index}", primary) as load:
        switch(lab_config().stack, hosts, ops, to=target.name)
    # calls: the two warm-ups, the read-only step, the take-over, the wait
    read_only_at, scores_at = calls[2][0], calls[3][1]
    lines = _journal(primary, read_only_at - 1, time.time()) + _journal(target, read_only_at - 1, time.time())
    target_name = re.escape(host(target))
    refused_at = min((a["t"] for a in load.failed if a["t"] >= read_only_at), default=read_only_at)
    marks = {
        "scores_moved": scores_at,
        "demoted": _first(lines, rf"Result of demote operation for mariadb on {re.escape(host(primary))}: OK",
                          read_only_at),
        "promoted": _first(lines, rf"Result of promote operation for mariadb on {target_name}: OK", read_only_at),
        "ip_moved": _first(lines, rf"Result of start operation for reserved-ip on {target_name}: OK", read_only_at),
        "guard_released": _first(lines, r"db-sync-guard\[\d+\]: released the commits", read_only_at),
        # the first acknowledged after the first refused one (writes in flight as the
        # primary turned read-only may still be acknowledged)
        "first_write": min((a["t"] + a["took"] for a in load.acked if a["t"] >= refused_at), default=None),
    }
    phases = {k: (round(v - read_only_at, 2) if v is not None else None) for k, v in marks.items()}
    phases["write_gap"] = load.figures()["longest_write_gap_s"]
    return {"from": primary.name, "to": target.name, "phases": phases, "writes_failed": len(load.failed)}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.switchover", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=6, help="switchovers, alternating between the app nodes (default 6)")
    p.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    args = p.parse_args()
    if args.runs < 1:
        p.error("--runs takes at least 1")
    with for_a_bench(args.keep):
        runs = []
        for i in range(args.runs):
            run = one_run(i)
            runs.append(run)
            print(f"run {i + 1}: {run['from']} -> {run['to']}, longest pause {run['phases']['write_gap']:.2f} s",
                  flush=True)
        phases = [r["phases"] for r in runs]
        summary = failover_phases.summary(phases, PHASES)
        print("\nswitchover: seconds after the primary was asked to turn read-only")
        print(failover_phases.table(phases, PHASES))
        report = json.loads(REPORT.read_text()) if REPORT.exists() else {}
        report["switchover_bench"] = {"runs": runs, "phases": summary}
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(json.dumps(report, indent=2))
        print(f"\nrecorded in {REPORT} (switchover_bench)")


if __name__ == "__main__":
    main()
