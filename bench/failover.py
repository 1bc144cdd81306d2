"""Benchmark (not a test): failovers in the lab, phase by phase (root, under the lab lock).

    python -m bench.failover [--runs 5] [--latency instant,pessimistic] [--keep]

Each run kills the active node (it holds the reserved IP and the primary) while a
client writes through the reserved IP without pause, exactly as the lab tier's
failover test does, then powers the fenced droplet on through the API and waits
for it to rejoin as a replica; the next run kills whichever node is active then,
so the runs alternate between the app nodes.

Each run is also drawn (lab/timeline.py): build/failover-bench-SETTING-N.png, the
writes acknowledged per 100 ms with the phases marked.

For each API latency setting it prints every run's phases (lab/failover_phases.py:
seconds after the kill until detection, the fence request, the fence, the
election, the promotion, the reserved IP's move and the first acknowledged
write), then their median and p95, and records them in build/lab-report.json
("failover_bench"). Settings (the DigitalOcean stand-in's action delays):
  instant      every action completes at once: the stack's own cost
  lab          0.5 s for every action (the lab's default)
  pessimistic  power-off confirmed after 5 s, the reserved IP's move after 3 s
Every run also checks that no acknowledged write was lost.

Brings the lab up if it is not (and down at the end unless --keep).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
from pathlib import Path

from lab import failover_phases
from lab.bringup import for_a_bench
from lab.stack import lab_nodes
from tests.helpers.lab_support import api
from tests.lab.test_lab_cluster import _draw_timeline, _promoted, _settled, _wait, _write_through_failover

REPORT = Path(os.environ.get("LAB_REPORT", "build/lab-report.json"))
LATENCIES: dict[str, tuple[float, dict[str, float]]] = {
    "instant": (0.0, {}),
    "lab": (0.5, {}),
    "pessimistic": (0.5, {"power_off": 5.0, "assign_ip": 3.0}),
}


def set_latency(name: str) -> None:
    seconds, by_type = LATENCIES[name]
    status, body = api("POST", "/_lab/action_delay", {"seconds": seconds, "by_type": by_type})
    if status != 200:
        raise SystemExit(f"the API stand-in refused the action delays: {status} {body}")


def one_run(tag: str, title: str) -> dict:
    nodes = lab_nodes()
    result = _write_through_failover(nodes, tag)  # it waits for a settled cluster first
    result["timeline"] = str(_draw_timeline(result, REPORT.parent / f"failover-{tag}.png",
                                            f"{title}: {result['victim']} killed, {result['survivor']} takes over"))
    victim = next(n for n in nodes if n.name == result["victim"])
    status, body = api("POST", f"/v2/droplets/{victim.droplet_id}/actions", {"type": "power_on"})
    if status != 201:
        raise SystemExit(f"power_on of {victim.name} refused: {status} {body}")
    _wait(f"{victim.name} back as a replica", 300, lambda: _settled(nodes) and _promoted(nodes) != victim)
    return result


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5, help="failovers per latency setting (default 5)")
    p.add_argument("--latency", default="instant,pessimistic",
                   help=f"comma-separated settings among {', '.join(LATENCIES)} (default instant,pessimistic)")
    p.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    args = p.parse_args()
    settings = [s for s in args.latency.split(",") if s]
    unknown = [s for s in settings if s not in LATENCIES]
    if unknown or not settings or args.runs < 1:
        p.error(f"--latency takes {', '.join(LATENCIES)}; --runs at least 1")
    with for_a_bench(args.keep), contextlib.ExitStack() as after:
        after.callback(_lab_latency_again)
        figures: dict[str, dict] = {}
        for setting in settings:
            set_latency(setting)
            runs = [one_run(f"bench-{setting}-{i}", f"API '{setting}', run {i + 1}") for i in range(args.runs)]
            phases = [r["phases"] for r in runs]
            lost = sum(len(r["lost"]) for r in runs)
            print(f"\nfailover, API latency '{setting}' {LATENCIES[setting]}: seconds after the kill")
            print(failover_phases.table(phases))
            print(f"writes acknowledged {sum(r['acked'] for r in runs)}, lost {lost}; "
                  f"longest gap median {statistics.median(r['unavailable_s'] for r in runs):.2f} s")
            figures[setting] = {"latency": {"seconds": LATENCIES[setting][0], "by_type": LATENCIES[setting][1]},
                                "runs": runs, "phases": failover_phases.summary(phases), "lost_writes": lost}
            if lost:
                raise SystemExit(f"acknowledged writes were lost: {[r['lost'] for r in runs]}")
        report = json.loads(REPORT.read_text()) if REPORT.exists() else {}
        report.setdefault("failover_bench", {}).update(figures)
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(json.dumps(report, indent=2))
        print(f"\nrecorded in {REPORT} (failover_bench)")


def _lab_latency_again() -> None:
    with contextlib.suppress(Exception):  # the lab may be gone
        set_latency("lab")


if __name__ == "__main__":
    main()
