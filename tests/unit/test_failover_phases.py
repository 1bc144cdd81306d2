"""A failover's phases read from the cluster's logs (lab/failover_phases.py), on
lines as the lab's Debian 13 nodes and the API stand-in write them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from lab import timeline
from lab.failover_phases import Event, parse_api_log, parse_journal, phases, summary, table

DAY = datetime(2026, 12, 5, tzinfo=UTC)
KILLED = DAY.replace(hour=0, minute=9, second=41).timestamp()
VICTIM, SURVIVOR = "do-ha-stack-lab-app1", "do-ha-stack-lab-app2"
IP = "203.0.113.100"


def entry(offset: float, ident: str, message: str) -> str:
    return json.dumps({"__REALTIME_TIMESTAMP": str(int((KILLED + offset) * 1e6)), "SYSLOG_IDENTIFIER": ident,
                       "MESSAGE": message})


JOURNAL = "\n".join([
    # before the kill: an earlier failover's lines are not this one's
    entry(-30, "pacemaker-controld", f"Result of promote operation for mariadb on {SURVIVOR}: OK"),
    entry(0.9, "corosync", "[TOTEM ] Token has not been received in 900 ms"),
    entry(2.64, "corosync", "[TOTEM ] A new membership (2.5a) was formed. Members left: 1"),
    entry(2.73, "pacemaker-controld", f"Requesting fencing (off) targeting node {VICTIM}"),
    entry(3.78, "pacemaker-attrd", f"Setting master-mariadb[{SURVIVOR}] in instance_attributes: (unset) -> 100"),
    # a standing score raised once promoted is no election
    entry(3.70, "pacemaker-attrd", f"Setting master-mariadb[{SURVIVOR}] in instance_attributes: 10 -> 100"),
    entry(4.13, "pacemaker-fenced", f"Operation 'off' targeting {VICTIM} by do-ha-stack-lab-witness for "
                                    f"pacemaker-controld.3658@do-ha-stack-lab-witness: OK (Done)"),
    entry(6.62, "pacemaker-controld", f"Result of promote operation for mariadb on {SURVIVOR}: OK"),
    "not json",
])
API = "\n".join([
    '00:09:44.100 fake_do: api 203.0.113.12 "POST /v2/droplets/5000/actions" 201 11ms',
    "00:09:45.700 fake_do: action 100026 power_off droplet:5000 completed",
    f"00:09:48.369 fake_do: action 100027 assign_ip reserved_ip:{IP} completed",
])


def events() -> list[Event]:
    return parse_journal("app2", JOURNAL) + parse_api_log(API, DAY)


def test_each_phase_is_read_from_its_own_log_line() -> None:
    found = phases(events(), VICTIM, SURVIVOR, IP, KILLED, KILLED + 7.41)
    assert found == {"detected": 2.64, "fence_requested": 2.73, "fenced": 4.13, "elected": 3.78,
                     "promoted": 6.62, "ip_assigned": 7.37, "first_write": 7.41}


def test_a_phase_not_reached_is_none_and_other_nodes_lines_do_not_count() -> None:
    # the same lines about the other node (a failover the other way) match nothing here
    found = phases(events(), SURVIVOR, VICTIM, "203.0.113.200", KILLED, None)
    assert found["detected"] == 2.64  # corosync names no node
    assert {k for k, v in found.items() if v is None} == {
        "fence_requested", "fenced", "elected", "promoted", "ip_assigned", "first_write"}


def test_api_log_times_after_midnight_belong_to_the_next_day() -> None:
    late = datetime(2026, 12, 4, 23, 59, 59, tzinfo=UTC)
    [event] = parse_api_log(f"00:00:01.500 fake_do: action 1 assign_ip reserved_ip:{IP} completed", late)
    assert event.at - late.timestamp() == 2.5


def test_median_and_p95_over_runs() -> None:
    runs = [{"first_write": v} for v in (7.4, 7.36, 8.45, 7.42, 7.39)]
    stats = summary(runs)
    assert stats["first_write"] == {"median": 7.4, "p95": 8.45, "runs": 5}
    assert summary([{"first_write": 5.0}, {"first_write": 6.0}])["first_write"]["median"] == 5.5
    assert "promoted" not in stats
    text = table(runs)
    assert text.splitlines()[-2].split()[:1] == ["median"] and "7.40" in text.splitlines()[-2]


def test_the_timeline_counts_acknowledged_writes_per_100_ms_by_their_answer() -> None:
    killed = 1000.0
    attempts = [
        {"t": 998.0, "took": 0.01, "outcome": "ok"},  # -1.99 s: bucket 10 of a -3 s start
        {"t": 999.95, "took": 0.02, "outcome": "ok"},  # answered at -0.03 s: the bucket before the kill
        {"t": 999.99, "took": 1.0, "outcome": "error"},  # a timeout is no write
        {"t": 1003.0, "took": 0.15, "outcome": "ok"},  # 3.15 s
        {"t": 1003.1, "took": 0.06, "outcome": "ok"},  # 3.16 s: same bucket
        {"t": 1020.0, "took": 0.0, "outcome": "ok"},  # past the end
    ]
    buckets = timeline.acked_per_bucket(attempts, killed, -3.0, 4.0)
    assert len(buckets) == 70 and sum(buckets) == 4
    assert buckets[10] == 1 and buckets[29] == 1 and buckets[61] == 2


def test_the_timeline_is_drawn_as_a_png(tmp_path: Path) -> None:
    attempts = [{"t": 1000.0 + i * 0.05, "took": 0.01, "outcome": "ok" if not 60 <= i < 140 else "error"}
                for i in range(200)]
    phases = {"detected": 2.5, "fenced": 3.5, "elected": None, "promoted": 4.6, "first_write": 5.3}
    out = timeline.draw(tmp_path / "sub" / "run.png", attempts, 1003.0, phases, "a failover")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
