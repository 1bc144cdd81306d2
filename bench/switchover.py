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
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from lab.bringup import for_a_bench
from lab.stack import lab_config, lab_nodes
from lab.topology import LabNode
from tests.helpers.day2 import apps, host, lab_health, lab_run_on, writes_through_the_reserved_ip
from tests.helpers.lab_support import Admin
from tests.lab.test_lab_cluster import _promoted, _settled, _wait
from tooling.node_ops import Operations
from tooling.switchover import switch

REPORT = Path(os.environ.get("LAB_REPORT", "build/lab-report.json"))
PHASES = ("scores_moved", "demoted", "promoted", "ip_moved", "commits_released", "first_write", "write_gap")


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
        "commits_released": _first(lines, r"db-sync-guard\[\d+\]: released the commits", read_only_at),
        # the first acknowledged after the first refused one (writes in flight as the
        # primary turned read-only may still be acknowledged)
        "first_write": min((a["t"] + a["took"] for a in load.acked if a["t"] >= refused_at), default=None),
    }
    phases = {k: (round(v - read_only_at, 2) if v is not None else None) for k, v in marks.items()}
    phases["write_gap"] = load.figures()["longest_write_gap_s"]
    return {"from": primary.name, "to": target.name, "phases": phases, "writes_failed": len(load.failed)}


def _summary(runs: list[dict]) -> dict[str, dict[str, float]]:
    out = {}
    for phase in PHASES:
        values = sorted(r["phases"][phase] for r in runs if r["phases"][phase] is not None)
        if values:
            p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
            out[phase] = {"median": round(statistics.median(values), 2), "p95": p95, "runs": len(values)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.switchover", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=6, help="switchovers, alternating between the app nodes (default 6)")
    p.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    args = p.parse_args()
    if args.runs < 1:
        p.error("--runs takes at least 1")
    with for_a_bench(args.keep):
        runs = []
        print("switchover: seconds after the primary was asked to turn read-only")
        print("run  from -> to   " + "  ".join(f"{p:>16}" for p in PHASES))
        for i in range(args.runs):
            run = one_run(i)
            runs.append(run)
            cells = "  ".join(f"{'-' if v is None else f'{v:.2f}':>16}" for v in (run["phases"][p] for p in PHASES))
            print(f"{i + 1:>3}  {run['from']:>4} -> {run['to']:<4} {cells}", flush=True)
        summary = _summary(runs)
        for stat in ("median", "p95"):
            cells = "  ".join(f"{summary[p][stat] if p in summary else '-':>16}" for p in PHASES)
            print(f"{stat:>6}            {cells}")
        report = json.loads(REPORT.read_text()) if REPORT.exists() else {}
        report["switchover_bench"] = {"runs": runs, "phases": summary}
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(json.dumps(report, indent=2))
        print(f"\nrecorded in {REPORT} (switchover_bench)")


if __name__ == "__main__":
    main()
