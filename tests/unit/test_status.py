"""`make status`: the verdict from facts recorded on the lab (tests/unit/data/status/, each
the `--dump` of a real run: the nodes' raw probe outputs, the API stand-in's answers and
the stack outputs; its README says how each state was made), variations of them, the
parsers, the gather script's framing, and the CLI end to end with ssh and the API
replaced by local stand-ins.
"""

from __future__ import annotations

import copy
import http.server
import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from infra import tuning
from infra.paths import REPO_ROOT
from tooling import status, status_gather
from tooling.health import Report, assess, pcmk_time, render
from tooling.health_parse import gtid_gap, parse_gtid, parse_heal_info, parse_host_map, parse_quorumtool
from tooling.status_gather import GATHER_SCRIPT

DATA = Path(__file__).parent / "data" / "status"
PROBES = {"clock", "host", "units", "metadata", "crm_mon", "quorum", "host_map", "mariadb", "replica", "heal"}
# Probes added after the recordings were made (the sync guard's): judged when present.
LATER_PROBES = {"in_sync", "sync_guard"}


def facts(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"{name}.json").read_text())


def judge(f: dict[str, Any]) -> Report:
    return assess(f, f.get("outputs"))


def edit(f: dict[str, Any], node: str, probe: str, old: str, new: str, count: int = -1) -> None:
    entry = f["nodes"][node]["probes"][probe]
    assert old in entry["out"], f"{old!r} not in {node}'s {probe} output"
    entry["out"] = entry["out"].replace(old, new, count)


def edit_all(f: dict[str, Any], probe: str, old: str, new: str) -> None:
    for node, fact in f["nodes"].items():
        if old in (fact["probes"].get(probe) or {}).get("out", ""):
            edit(f, node, probe, old, new)


# --- the recorded states ------------------------------------------------------------------

@pytest.mark.parametrize("name", ["healthy", "healthy-after-failover"])
def test_a_healthy_recording_is_healthy_with_every_field_known(name: str) -> None:
    report = judge(facts(name))
    assert report.problems == [] and report.healthy
    primary = report.database["primary"]
    assert primary in ("app1", "app2")
    assert report.holder == {"pacemaker": [primary], "nodes": [primary], "api": primary, "primary": primary}
    assert report.cluster["quorum"] is True
    assert all(row["ok"] and row["cluster"] == "online" and row["ssh"] == "ok" for row in report.nodes.values())
    assert all(report.nodes[n][unit] == "active" for n in report.nodes for unit in ("corosync", "pacemaker"))
    replica = next(r for n, r in report.database["nodes"].items() if n != primary)
    assert (replica["io"], replica["sql"], replica["lag_s"], replica["gtid_gap"], replica["semi_sync"]) == \
        ("Yes", "Yes", 0, 0, "ON")
    assert report.database["nodes"][primary]["semi_sync"] == "ON"
    assert [(b["node"], b["status"], b["entries"], b["split_brain"]) for b in report.storage["bricks"]] == \
        [(n, "Connected", 0, 0) for n in ("app1", "app2", "witness")]
    assert report.fencing["fenced"] == [] and report.fencing["device_on"]
    assert set(report.fencing["droplets"].values()) == {"active"}
    assert report.failed_actions == []
    assert report.last_failover["promoted"]["node"] == primary


def test_the_last_failover_after_a_fencing_is_dated_from_pacemakers_history_and_the_api() -> None:
    report = judge(facts("healthy-after-failover"))
    lf = report.last_failover
    at = datetime(2026, 12, 3, 11, 22, 10, tzinfo=UTC).timestamp()
    assert lf["promoted"] == {"node": "app2", "at": at}
    assert lf["ip_started"] == {"node": "app2", "at": at + 2}
    assert lf["fenced"]["node"] == "app1" and lf["fenced"]["action"] == "off" and lf["fenced"]["by"] == "witness"
    assert lf["api_assign"] == at + 3
    # the old primary, fenced then powered on, is back and is not counted as fenced
    assert report.fencing["fenced"] == [] and report.fencing["latest"][0]["status"] == "success"


def test_a_stopped_pacemaker_on_the_witness_is_named() -> None:
    report = judge(facts("witness-pacemaker-stopped"))
    assert report.problems == ["witness: pacemaker inactive, pending in the cluster (as app1 sees it)"]
    assert report.nodes["witness"]["cluster"] == "pending"


def test_a_stopped_corosync_on_the_witness_is_an_offline_member() -> None:
    report = judge(facts("witness-corosync-stopped"))
    assert report.problems == ["witness: corosync inactive, pacemaker inactive, offline in the cluster "
                               "(as app1 sees it)"]
    assert report.cluster["quorum"] is True  # two of three votes


def test_a_dead_brick_and_the_heal_backlog_it_leaves() -> None:
    report = judge(facts("brick-down"))
    assert report.problems == ["storage: brick on app1 has 4 entries to heal",
                               "storage: brick on app2 not connected (Transport endpoint is not connected)",
                               "storage: brick on witness has 4 entries to heal"]


def test_a_stopped_replica_and_the_semi_sync_fallback_it_causes() -> None:
    report = judge(facts("replica-io-stopped"))
    assert report.problems == [
        "database on app1: semi-sync is OFF on the primary (commits are asynchronous: a failover can lose "
        "acknowledged writes)",
        "database on app2: replication IO thread not running (stopped); semi-sync replica is OFF"]
    assert report.database["nodes"]["app2"]["gtid_gap"] == 3  # three writes went by meanwhile


def test_a_killed_primary_is_unreachable_fenced_and_off_while_the_replica_took_over() -> None:
    report = judge(facts("primary-killed"))
    assert report.problems == [
        "app1: unreachable over SSH (ssh: connect to host 203.0.113.11 port 22: Connection refused), "
        "offline in the cluster (as app2 sees it)",
        "database on app1: unknown (node unreachable)",
        "storage: brick on app1 not connected (Transport endpoint is not connected)",
        "fencing: app1 was fenced (off) at 2026-12-03 11:22:07Z by witness and has not rejoined",
        "fencing: droplet of app1 is off (API)"]
    assert report.database["primary"] == "app2" and report.holder["api"] == "app2"
    assert report.fencing["fenced"] == ["app1"]


def test_a_failed_resource_action_is_degraded() -> None:
    report = judge(facts("failed-action"))
    # a stonith resource's monitor is recorded as asyncmon
    assert report.problems == ["failed action: fence-do_asyncmon_0 on app1: Error occurred (Simulated failure) "
                               "at 2026-12-03 11:20:02Z"]
    assert report.cluster["quorum"] is True and report.fencing["device_on"] == ["app1"]


# --- variations of a recording ------------------------------------------------------------

def test_replica_lag_is_judged_against_the_tuning_threshold() -> None:
    limit = tuning.STATUS_MAX_REPLICA_LAG_S
    at_limit, above = facts("healthy"), facts("healthy")
    edit(at_limit, "app2", "replica", "Seconds_Behind_Master: 0", f"Seconds_Behind_Master: {limit}")
    edit(above, "app2", "replica", "Seconds_Behind_Master: 0", f"Seconds_Behind_Master: {limit + 1}")
    assert judge(at_limit).healthy
    assert judge(above).problems == [f"database on app2: lags {limit + 1} s behind the primary "
                                     f"(threshold {limit} s)"]


def test_no_quorum() -> None:
    f = facts("healthy")
    edit_all(f, "crm_mon", 'with_quorum="true"', 'with_quorum="false"')
    problems = judge(f).problems
    assert problems[0] == "cluster: no quorum (as app1 sees it)"
    assert set(problems[1:]) == {f"{n}: sees no quorum" for n in ("app1", "app2", "witness")}


def test_no_primary() -> None:
    f = facts("healthy")
    edit_all(f, "crm_mon", 'role="Promoted" active="true"', 'role="Unpromoted" active="true"')
    report = judge(f)
    assert report.database["primary"] is None
    assert "database: no promoted MariaDB (no primary)" in report.problems


def test_a_writable_replica() -> None:
    f = facts("healthy")
    edit(f, "app2", "mariadb", "read_only\tON", "read_only\tOFF")
    assert judge(f).problems == ["database on app2: writable, but not the primary"]


def test_a_replica_that_replicates_from_elsewhere() -> None:
    f = facts("healthy")
    edit(f, "app2", "replica", "Master_Host: 10.99.0.11", "Master_Host: 10.99.0.99")
    assert judge(f).problems == ["database on app2: replicates from 10.99.0.99, not from the primary app1 "
                                 "(10.99.0.11)"]


def test_a_stopped_sql_thread_with_its_error() -> None:
    f = facts("healthy")
    edit(f, "app2", "replica", "Slave_SQL_Running: Yes", "Slave_SQL_Running: No")
    edit(f, "app2", "replica", "Last_SQL_Error: \n", "Last_SQL_Error: Duplicate entry '7' for key 'PRIMARY'\n")
    assert judge(f).problems == ["database on app2: replication SQL thread not running (Duplicate entry '7' "
                                 "for key 'PRIMARY')"]


def test_split_brain_entries() -> None:
    f = facts("healthy")
    edit(f, "witness", "heal", "Number of entries in split-brain: 0", "Number of entries in split-brain: 2", 1)
    assert judge(f).problems == ["storage: brick on app1 has 2 entries in split-brain"]


def test_sources_that_disagree_on_the_reserved_ip() -> None:
    f = facts("healthy")
    f["api"]["reserved_ip"]["droplet"]["id"] = 5001
    assert judge(f).problems == ["reserved IP 203.0.113.100: sources disagree (pacemaker: app1; nodes' "
                                 "metadata: app1; API: app2)"]
    f["api"]["reserved_ip"]["droplet"] = None
    assert "API: unassigned" in judge(f).problems[0]


def test_a_pending_fencing() -> None:
    f = facts("healthy-after-failover")
    edit_all(f, "crm_mon", "</fence_history>",
             '<fence_event action="off" target="do-ha-stack-lab-witness" client="stonith_admin.1" '
             'origin="do-ha-stack-lab-app2" status="pending" delegate="do-ha-stack-lab-app2"/></fence_history>')
    assert judge(f).problems == ["fencing: off of witness in progress"]


def test_no_running_fence_device() -> None:
    f = facts("healthy")
    edit_all(f, "crm_mon", 'resource_agent="stonith:fence_digitalocean" role="Started" active="true"',
             'resource_agent="stonith:fence_digitalocean" role="Stopped" active="false"')
    assert judge(f).problems == ["fencing: no fence device is running (a failed node could not be fenced, "
                                 "so nothing would fail over)"]


def test_fencing_turned_off() -> None:
    f = facts("healthy")
    edit_all(f, "crm_mon", 'stonith-enabled="true"', 'stonith-enabled="false"')
    assert judge(f).problems == ["fencing: turned off (stonith-enabled=false): a lost node would not be powered "
                                 "off before its resources ran elsewhere; `pulumi up` (cluster-resources) turns it on"]


def test_without_a_token_the_api_is_left_out_and_with_a_failing_one_it_is_a_problem() -> None:
    f = facts("healthy")
    f["api"] = None
    report = judge(f)
    assert report.healthy and report.holder["api"] is None and report.api.startswith("no token")
    assert "no token" in render(report)
    f["api"] = {"error": "GET /v2/reserved_ips/203.0.113.100: HTTP 401"}
    assert judge(f).problems == ["API: GET /v2/reserved_ips/203.0.113.100: HTTP 401 (its view of the reserved "
                                 "IP and droplets is missing)"]


def test_no_node_reachable_is_reported_not_raised() -> None:
    f = facts("healthy")
    for fact in f["nodes"].values():
        fact.update(ssh_rc=255, ssh_err="ssh: connect to host x port 22: Connection timed out", probes={})
    f["api"] = None
    report = judge(f)
    assert "cluster: no node answered crm_mon (pacemaker down everywhere, or no node reachable)" in report.problems
    assert "database: no promoted MariaDB (no primary)" in report.problems
    assert "storage: no node reported the volume's heal state" in report.problems
    assert sum(p.endswith("(ssh: connect to host x port 22: Connection timed out)") for p in report.problems) == 3
    assert "DEGRADED" in render(report)


def test_garbled_probe_output_is_a_missing_view() -> None:
    f = facts("healthy")
    for fact in f["nodes"].values():
        fact["probes"]["crm_mon"]["out"] = "<pacemaker-result"
        fact["probes"]["metadata"]["out"] = "{not json"
    report = judge(f)
    assert "cluster: no node answered crm_mon (pacemaker down everywhere, or no node reachable)" in report.problems


def test_the_screen_shows_every_part_and_each_problem() -> None:
    report = judge(facts("primary-killed"))
    screen = render(report)
    assert screen.splitlines()[0] == "do-ha-stack lab at 2026-12-03 11:22:21Z: DEGRADED (5 problems)"
    for text in ("reserved IP 203.0.113.100: pacemaker app2, metadata app2, API app2",
                 "last failover (promotion): 2026-12-03 11:22:10Z",
                 "app1 fenced (off) 2026-12-03 11:22:07Z by witness",
                 "cluster: quorum yes, DC app2, fence device on app2, failed actions 0",
                 "PRIMARY read_only OFF", *report.problems):
        assert text in screen, text
    rows = {line.split()[0]: line.split() for line in screen.splitlines() if line.split()[:1] in
            (["app1"], ["app2"], ["witness"])}
    assert rows["app1"][:6] == ["app1", "FAIL", "-", "-", "offline", "off"]
    assert len(screen.splitlines()) <= 25  # one screen


# --- parsers ------------------------------------------------------------------------------

def test_gtid_positions_and_gap_over_domains() -> None:
    assert parse_gtid("0-1-3668,1-2-10") == {0: 3668, 1: 10}
    assert parse_gtid("") == {}
    assert gtid_gap({0: 3668, 1: 10}, {0: 3660}) == 18
    assert gtid_gap({0: 5}, {0: 9}) == 0  # a replica read a moment later is not "ahead"


def test_pacemaker_timestamps_in_the_nodes_zone() -> None:
    plus_one = timezone(timedelta(hours=1))
    utc = datetime(2026, 12, 3, 10, 25, 33, tzinfo=UTC).timestamp()
    assert pcmk_time("Thu Dec  3 10:25:33 2026") == utc
    assert pcmk_time("Thu Dec  3 11:25:33 2026", plus_one) == utc
    assert pcmk_time("2026-12-03 10:25:33.977539Z") == utc + 0.977539
    assert pcmk_time("") is None and pcmk_time("yesterday") is None


def test_heal_info_summary_with_a_disconnected_brick() -> None:
    text = facts("brick-down")["nodes"]["app1"]["probes"]["heal"]["out"]
    assert [(b.brick.split(":")[0], b.status, b.entries, b.split_brain) for b in parse_heal_info(text)] == [
        ("10.99.0.11", "Connected", 4, 0), ("10.99.0.12", "Transport endpoint is not connected", None, None),
        ("10.99.0.13", "Connected", 4, 0)]


def test_quorumtool_and_host_map() -> None:
    f = facts("witness-corosync-stopped")
    q = parse_quorumtool(f["nodes"]["app1"]["probes"]["quorum"]["out"])
    assert (q.quorate, q.expected_votes, q.total_votes) == (True, 3, 2)
    assert parse_host_map("a:1;b:22") == {"a": 1, "b": 22}


# --- the gather script --------------------------------------------------------------------

STUBS = {
    "crm_mon": "sleep 30",  # hangs: ended by the probe timeout
    "corosync-quorumtool": "echo 'Quorate: Yes'; echo 'a warning' >&2",
    "crm_resource": "echo 'n1:1;n2:2'",
    "mariadb": "printf 'tab\\there \"quoted\" back\\\\slash \\303\\251\\n'; exit 1",
    "gluster": "echo \"$@\"",
    "curl": "echo '{\"droplet_id\": 7, \"user_data\": \"secret-ish\", "
            "\"reserved_ip\": {\"ipv4\": {\"active\": false}}}'",
    "systemctl": "printf 'active\\ninactive\\nactive\\n'; exit 3",
}


def _stub_path(tmp_path: Path) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in STUBS.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/bash\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return f"{bin_dir}:{os.environ['PATH']}"


def test_the_gather_script_frames_every_probe_as_json(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": _stub_path(tmp_path)}
    result = subprocess.run(["bash", "-s", "--", "1", "shared"], input=GATHER_SCRIPT.read_text(),
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert set(out) == PROBES | LATER_PROBES
    assert out["crm_mon"]["rc"] == 124  # timeout's code: a hung tool does not hang the gather
    assert out["quorum"] == {"rc": 0, "out": "Quorate: Yes", "err": "a warning\n"}
    assert out["mariadb"] == {"rc": 1, "out": 'tab\there "quoted" back\\slash é', "err": ""}
    assert out["heal"]["out"] == "volume heal shared info summary"
    assert out["units"] == {"rc": 3, "out": "active\ninactive\nactive", "err": ""}
    # only the droplet id and the reserved IP leave the node
    assert json.loads(out["metadata"]["out"]) == {"droplet_id": 7, "reserved_ip": {"ipv4": {"active": False}}}


@pytest.mark.parametrize("args", [["x", "shared"], ["5", "bad;name"], []])
def test_the_gather_script_refuses_bad_arguments(args: list[str]) -> None:
    result = subprocess.run(["bash", "-s", "--", *args], input=GATHER_SCRIPT.read_text(), capture_output=True,
                            text=True, timeout=30)
    assert result.returncode != 0 and result.stdout == ""


# --- the CLI end to end, with ssh and the API as local stand-ins ---------------------------

FAKE_SSH = f"""#!{sys.executable}
import json, os, sys
args = sys.argv[1:]
script = sys.stdin.read()
target = next(a for a in args if "@" in a)
with open(os.environ["FAKE_SSH_LOG"], "a") as log:
    log.write(json.dumps({{"argv": args, "stdin": script}}) + "\\n")
probes = json.load(open(os.environ["FAKE_SSH_FACTS"])).get(target.split("@", 1)[1])
if probes is None:
    sys.stderr.write("ssh: connect to host %s port 22: Connection refused\\n" % target.split("@", 1)[1])
    sys.exit(255)
print(json.dumps(probes))
"""
TOKEN = "dop_v1_" + "5" * 64


class FakeApi(http.server.BaseHTTPRequestHandler):
    api: dict[str, Any] = {}
    seen: list[tuple[str, str]] = []

    def do_GET(self) -> None:
        FakeApi.seen.append((self.path, self.headers.get("Authorization", "")))
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._reply(401, {"id": "unauthorized"})
        path = self.path.split("?", 1)[0]
        if path.endswith("/actions"):
            return self._reply(200, {"actions": self.api["actions"], "links": {}, "meta": {"total": 1}})
        if path.startswith("/v2/reserved_ips/"):
            return self._reply(200, {"reserved_ip": self.api["reserved_ip"]})
        droplet = self.api["droplets"].get(path.rsplit("/", 1)[-1])
        return self._reply(200, {"droplet": droplet}) if droplet else self._reply(404, {"id": "not_found"})

    def _reply(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_api() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
    FakeApi.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recording: str, api_url: str,
         capsys: pytest.CaptureFixture[str]) -> tuple[int, str, list[dict[str, Any]], Path]:
    f = facts(recording)
    FakeApi.api = f["api"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(FAKE_SSH)
    (bin_dir / "ssh").chmod(0o755)
    (tmp_path / "probes.json").write_text(json.dumps(
        {n["address"]: n["probes"] for n in f["nodes"].values() if n["ssh_rc"] == 0}))
    (tmp_path / "outputs.json").write_text(json.dumps(f["outputs"]))
    log = tmp_path / "ssh.log"
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SSH_LOG", str(log))
    monkeypatch.setenv("FAKE_SSH_FACTS", str(tmp_path / "probes.json"))
    monkeypatch.setenv("DIGITALOCEAN_TOKEN", TOKEN)
    dump = tmp_path / "facts.json"
    code = status.main(["--stack", "lab", "--outputs", str(tmp_path / "outputs.json"),
                        "--config", str(REPO_ROOT / "lab/stack.yaml"), "--api-url", api_url,
                        "--ssh-option", "StrictHostKeyChecking=accept-new", "--dump", str(dump)])
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    return code, capsys.readouterr().out, calls, dump


def test_cli_healthy_exits_0_one_session_per_node_token_only_in_the_header(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_api: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, calls, dump = _cli(tmp_path, monkeypatch, "healthy", fake_api, capsys)
    assert code == 0, out
    assert out.splitlines()[0].endswith(": HEALTHY")
    assert sorted(c["argv"][-8] for c in calls) == ["deploy@203.0.113.11", "deploy@203.0.113.12",
                                                   "deploy@203.0.113.13"]
    for call in calls:
        assert call["argv"][-7:] == ["sudo", "-n", "bash", "-s", "--", str(tuning.STATUS_PROBE_TIMEOUT_S), "shared"]
        assert "StrictHostKeyChecking=accept-new" in call["argv"] and "BatchMode=yes" in call["argv"]
        assert call["stdin"] == GATHER_SCRIPT.read_text()
        assert TOKEN not in json.dumps(call)
    assert FakeApi.seen and all(auth == f"Bearer {TOKEN}" for _, auth in FakeApi.seen)
    assert {p.split("?")[0] for p, _ in FakeApi.seen} >= {"/v2/reserved_ips/203.0.113.100",
                                                          "/v2/droplets/5000", "/v2/droplets/5001", "/v2/droplets/5002"}
    assert TOKEN not in out and TOKEN not in dump.read_text()
    assert judge(json.loads(dump.read_text())).healthy  # the dump replays the same verdict


def test_cli_an_unreachable_node_exits_1_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_api: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, calls, _ = _cli(tmp_path, monkeypatch, "primary-killed", fake_api, capsys)
    assert code == 1
    assert len(calls) == 3
    assert "app1: unreachable over SSH (ssh: connect to host 203.0.113.11 port 22: Connection refused)" in out
    assert "fencing: droplet of app1 is off (API)" in out


def test_cli_replays_recorded_facts(capsys: pytest.CaptureFixture[str]) -> None:
    assert status.main(["--stack", "lab", "--facts", str(DATA / "brick-down.json")]) == 1
    assert "storage: brick on app2 not connected" in capsys.readouterr().out
    assert status.main(["--stack", "lab", "--facts", str(DATA / "healthy.json"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["healthy"] is True


@pytest.mark.parametrize(("outputs", "message"), [
    ({}, "the stack outputs have no `nodes`"),
    ({"nodes": {"app1": {"role": "app"}}, "reservedIp": "192.0.2.1"}, "nodes.app1 has no publicIpv4"),
    ({"nodes": {"app1": {"publicIpv4": "192.0.2.2"}}}, "the stack outputs have no `reservedIp`"),
])
def test_cli_bad_outputs_are_refused_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             outputs: dict[str, Any], message: str) -> None:
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs))
    assert status.main(["--stack", "staging", "--outputs", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_cli_a_bad_deploy_user_in_the_config_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "Pulumi.x.yaml"
    config.write_text("config:\n  do-ha-stack:deployUser: root\n")
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(facts("healthy")["outputs"]))
    assert status.main(["--stack", "x", "--outputs", str(outputs), "--config", str(config)]) == 2
    assert "do-ha-stack:deployUser" in capsys.readouterr().err


def test_the_stack_settings_default_as_the_program_does() -> None:
    assert status.stack_setting("nosuchstack", "deployUser", None) == "deploy"
    assert status.stack_setting("lab", "clusterApiUrl", REPO_ROOT / "lab/stack.yaml") == "https://203.0.113.1:8443"
    assert status.api_token({"DIGITALOCEAN_ACCESS_TOKEN": " t "}) == "t"
    assert status.api_token({}) is None


def test_every_recording_has_every_probe_of_the_script() -> None:
    for path in DATA.glob("*.json"):
        for name, fact in json.loads(path.read_text())["nodes"].items():
            if fact["ssh_rc"] == 0:
                assert PROBES <= set(fact["probes"]) <= PROBES | LATER_PROBES, (path.name, name)


def test_a_copy_of_facts_is_not_changed_by_assessing() -> None:
    f = facts("primary-killed")
    before = copy.deepcopy(f)
    judge(f)
    assert f == before


@pytest.mark.parametrize(("body", "expected", "problem"), [
    ("sleep 5", "no answer within 1 s", "app1: unreachable over SSH (no answer within 1 s)"),
    ("cat >/dev/null; echo 'sudo: a password is required' >&2; exit 1", "sudo: a password is required",
     "app1: its facts could not be read (sudo: a password is required)"),
    ("cat >/dev/null; echo 'not json'", "the gather script's output is not JSON: 'not json\\n'",
     "app1: its facts could not be read (the gather script's output is not JSON: 'not json\\n')"),
])
def test_a_node_that_hangs_refuses_or_garbles_is_recorded_not_raised(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, expected: str, problem: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(f"#!/bin/bash\n{body}\n")
    (bin_dir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(status_gather, "SSH_SESSION_SLACK_S", 1)
    fact = status_gather.gather_node(status_gather.NodeTarget("app1", "192.0.2.1", "app"),
                                     status_gather.SshSettings("deploy"), probe_timeout_s=0)
    assert fact["probes"] == {} and fact["ssh_err"] == expected
    report = assess({"stack": "x", "taken_at": 0, "reserved_ip": "192.0.2.9", "nodes": {"app1": fact},
                     "api": None})
    assert problem in report.problems


def _with_guard(f: dict[str, Any], marks: dict[str, tuple[int, str]], guard: str = "active") -> dict[str, Any]:
    for node, (rc, out) in marks.items():
        f["nodes"][node]["probes"]["in_sync"] = {"rc": rc, "out": out, "err": ""}
        f["nodes"][node]["probes"]["sync_guard"] = {"rc": 0 if guard == "active" else 3, "out": guard, "err": ""}
    return f


def test_a_replica_the_sync_guard_marked_out_of_sync_is_degraded() -> None:
    healthy = judge(_with_guard(facts("healthy"), {"app1": (105, ""), "app2": (0, "1")}))
    assert healthy.problems == []
    assert {n: r["in_sync"] for n, r in healthy.database["nodes"].items()} == {"app1": "never marked", "app2": "1"}
    primary = healthy.database["primary"]
    replica = "app2" if primary == "app1" else "app1"
    report = judge(_with_guard(facts("healthy"), {primary: (105, ""), replica: (0, "0")}))
    assert [p for p in report.problems if "out of sync" in p] == [
        f"database on {replica}: out of sync: the primary's commits went on without it, so it is not promoted "
        "automatically (it is marked in sync again once it confirms commits)"]
    assert "OUT OF SYNC" in render(report)
    stopped = judge(_with_guard(facts("healthy"), {primary: (105, ""), replica: (0, "1")}, guard="inactive"))
    assert any("sync guard (do-ha-db-sync-guard.service) is inactive" in p for p in stopped.problems)
