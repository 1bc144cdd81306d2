"""Where a failover's time goes, phase by phase, from the cluster's own logs.

Each phase is the moment (seconds after the active node was killed) the cluster
reached it, read from the surviving nodes' journals (corosync, pacemaker, the
MariaDB agent) and from the DigitalOcean stand-in's log:

  detected         corosync formed a membership without the killed node
  fence_requested  the DC asked for the killed node to be powered off
  fenced           fencing confirmed: the droplet is off
  elected          the survivor's promotion score was set (it will be promoted); none
                   when it already held a standing one (the one replica of two)
  promoted         the survivor's MariaDB is promoted (writable)
  ip_assigned      the API completed the reserved IP's move to the survivor
  first_write      the first write acknowledged through the reserved IP

The floor is detection + fencing + the later of the promotion and the IP move;
the gaps between these markers are what the stack itself adds.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


PHASES = ("detected", "fence_requested", "fenced", "elected", "promoted", "ip_assigned", "first_write")
# journalctl's own filter: only these programs' lines come back (SYSLOG_IDENTIFIER)
IDENTIFIERS = ("corosync", "pacemaker-controld", "pacemaker-fenced", "pacemaker-attrd")


@dataclass(frozen=True)
class Event:
    at: float  # seconds since the epoch
    node: str  # the node whose journal holds it
    ident: str  # SYSLOG_IDENTIFIER
    message: str


def journal_command(since: float, until: float) -> str:
    """The journalctl call (run as root on a node) for the events between two epochs."""
    idents = " ".join(f"-t {i}" for i in IDENTIFIERS)
    return (f"journalctl --no-pager -o json --output-fields=MESSAGE,SYSLOG_IDENTIFIER "
            f"--since @{since:.3f} --until @{until:.3f} {idents}")


def parse_journal(node: str, text: str) -> list[Event]:
    """journalctl -o json output into events (lines that are not JSON are skipped)."""
    events = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        message = entry.get("MESSAGE")
        if isinstance(message, list):  # journald gives non-UTF-8 messages as byte lists
            message = bytes(message).decode(errors="replace")
        events.append(Event(int(entry["__REALTIME_TIMESTAMP"]) / 1e6, node,
                            str(entry.get("SYSLOG_IDENTIFIER", "")), str(message or "")))
    return events


def parse_api_log(text: str, day: datetime) -> list[Event]:
    """The stand-in's completed actions ("HH:MM:SS.mmm fake_do: action N KIND TARGET
    completed", UTC) as events; `day` is the UTC date of the failover (a line more
    than 12 hours before it belongs to the next day)."""
    events = []
    for line in text.splitlines():
        m = re.match(r"(\d\d):(\d\d):(\d\d)\.(\d{3}) fake_do: (action \d+ \S+ \S+ completed)$", line)
        if not m:
            continue
        h, mi, s, ms = (int(x) for x in m.groups()[:4])
        at = day.replace(hour=h, minute=mi, second=s, microsecond=ms * 1000, tzinfo=UTC)
        if at < day - timedelta(hours=12):
            at += timedelta(days=1)
        events.append(Event(at.timestamp(), "api", "fake_do", m.group(5)))
    return events


def phases(events: Iterable[Event], victim: str, survivor: str, reserved_ip: str, killed_at: float,
           first_write_at: float | None) -> dict[str, float | None]:
    """Each phase's first moment after the kill, in seconds after it (None: not seen).
    `victim` and `survivor` are pacemaker node names."""
    patterns = {
        "detected": ("corosync", re.compile(r"A new membership .* was formed\. Members left")),
        "fence_requested": ("pacemaker-controld",
                            re.compile(rf"Requesting fencing \(off\) targeting node {re.escape(victim)}$")),
        "fenced": ("pacemaker-fenced",
                   re.compile(rf"Operation 'off' targeting {re.escape(victim)} by .*: OK")),
        "elected": ("pacemaker-attrd",
                    re.compile(rf"Setting master-mariadb\[{re.escape(survivor)}\] in instance_attributes: "
                               r"\(unset\) -> \d+")),
        "promoted": ("pacemaker-controld",
                     re.compile(rf"Result of promote operation for mariadb on {re.escape(survivor)}: OK")),
        "ip_assigned": ("fake_do", re.compile(rf"action \d+ assign_ip reserved_ip:{re.escape(reserved_ip)} completed")),
    }
    found: dict[str, float | None] = dict.fromkeys(PHASES)
    for event in sorted(events, key=lambda e: e.at):
        if event.at < killed_at:
            continue
        for phase, (ident, pattern) in patterns.items():
            if found[phase] is None and event.ident == ident and pattern.search(event.message):
                found[phase] = round(event.at - killed_at, 2)
    if first_write_at is not None:
        found["first_write"] = round(first_write_at - killed_at, 2)
    return found


def summary(runs: list[dict[str, float | None]],
            phases: Sequence[str] = PHASES) -> dict[str, dict[str, float]]:
    """Median and p95 (nearest rank) of each phase over the runs that saw it (the
    failover's phases, or another benchmark's)."""
    out: dict[str, dict[str, float]] = {}
    for phase in phases:
        values = sorted(v for r in runs if (v := r.get(phase)) is not None)
        if values:
            p95 = values[min(len(values) - 1, max(0, -(-95 * len(values) // 100) - 1))]
            out[phase] = {"median": round(statistics.median(values), 2), "p95": p95, "runs": len(values)}
    return out


def table(runs: list[dict[str, float | None]], phases: Sequence[str] = PHASES) -> str:
    """Runs as rows, phases as columns, then median and p95."""
    width = 16
    lines = ["run " + "".join(p.rjust(width) for p in phases)]
    for i, run in enumerate(runs, 1):
        lines.append(f"{i:<4}" + "".join(("-" if run.get(p) is None else f"{run[p]:.2f}").rjust(width)
                                       for p in phases))
    stats = summary(runs, phases)
    for stat in ("median", "p95"):
        lines.append(f"{stat:<4}" + "".join(
            (f"{stats[p][stat]:.2f}" if p in stats else "-").rjust(width) for p in phases))
    return "\n".join(lines)
