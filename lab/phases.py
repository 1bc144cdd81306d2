"""Where a lab bring-up spends its time: each node's first boot by stage, and each
remote command, as a table for `python -m lab up` and figures for the lab report.

cloud-init stamps its stages (/var/lib/cloud/data/status.json) in seconds of the
kernel's uptime, which the containers share with the host, so a node's stages line
up with the moment the lab booted it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lab.topology import LabNode

STATUS = "var/lib/cloud/data/status.json"


def uptime() -> float:
    """Seconds since the host booted, the clock cloud-init stamps its stages with."""
    return float(Path("/proc/uptime").read_text().split()[0])


def cloud_init_phases(node: LabNode, booted_at: float, noticed_at: float) -> dict[str, float]:
    """A node's first boot in phases (seconds), from its boot (host uptime `booted_at`)
    to the lab noticing cloud-init's result (`noticed_at`)."""
    stages = json.loads((node.root / STATUS).read_text())["v1"]
    local, final = stages["init-local"], stages["modules-final"]
    return {
        # systemd's early boot until cloud-init's first stage starts
        "boot_s": round(local["start"] - booted_at, 1),
        # init-local, init (network, users, ssh keys) and config
        "init_and_config_s": round(stages["modules-config"]["finished"] - local["start"], 1),
        # cloud-final waits for multi-user.target: every service enabled at boot
        "services_s": round(final["start"] - stages["modules-config"]["finished"], 1),
        # the final stage: packages (none in the lab), deferred files, hardening
        "final_s": round(final["finished"] - final["start"], 1),
        "total_s": round(noticed_at - booted_at, 1),
    }


def critical_path(steps: dict[str, dict[str, Any]], plan: list[dict[str, Any]]) -> list[str]:
    """The chain of commands that set the replay's length: from the command that ended
    last, back through the dependency that ended last each time."""
    deps = {c["name"]: c.get("dependsOn") or [] for c in plan}

    def end(name: str) -> float:
        return steps[name]["start_s"] + steps[name]["took_s"]

    chain: list[str] = []
    ran = [n for n in steps if n in deps]
    current = max(ran, key=end) if ran else None
    while current is not None:
        chain.append(current)
        before = [d for d in deps[current] if d in steps]
        current = max(before, key=end) if before else None
    return chain[::-1]


def table(timings: dict[str, Any]) -> str:
    """The bring-up's phases as a plain text table."""
    rows = [("render and network", timings["render_and_network_s"], "")]
    rows.append(("boot and cloud-init", timings["cloud_init_s"], "until the last node's cloud-init finished"))
    for name, p in timings.get("cloud_init_nodes", {}).items():
        rows.append((f"  {name}", p["total_s"], f"boot {p['boot_s']}, init+config {p['init_and_config_s']}, "
                                                f"services {p['services_s']}, final {p['final_s']}"))
    rows.append(("replay", timings["replay_s"], f"{timings['commands_run']} commands"))
    steps = timings.get("steps", {})
    path = set(timings.get("critical_path", []))
    for name, s in sorted(steps.items(), key=lambda item: (item[1]["start_s"], item[0])):
        mark = "*" if name in path else " "
        rows.append((f" {mark}{name}", s["took_s"], f"{s['host']}, started at +{s['start_s']}"))
    rows.append(("total", timings["total_s"], "(* the replay's critical path)" if path else ""))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{label:<{width}}  {seconds:>6.1f} s  {note}".rstrip() for label, seconds, note in rows)
