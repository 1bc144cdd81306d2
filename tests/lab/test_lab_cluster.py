"""The lab tier: the cluster the program's commands build, proven on real nodes.

The tests that kill or cut off nodes are marked `disruptive` (tests/lab/conftest.py
runs them after the others). Figures (failover time, lost writes, bootstrap time, write latency while the
replica was seeded) go to the lab report.
"""

from __future__ import annotations

import json
import shlex
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from xml.etree import ElementTree

import pytest

from infra import tuning
from infra.paths import REPO_ROOT
from lab import failover_phases, replay, timeline
from lab.containers import container_init, kill_node, load_state
from lab.stack import lab_plan
from lab.topology import RESERVED_IP, SWITCH_NS, LabNode, run_dir
from tests.helpers.lab_recovery import cut_off_vpc
from tests.helpers.lab_support import Admin, api, in_lab, wait_for_mail

pytestmark = pytest.mark.lab
URL = f"http://{RESERVED_IP}"
# Clients writing at once through a fault (lab/writer.py): as the users tried it;
# with one, the first write after a failover also waits out that client's 1 s timeout.
WRITER_CLIENTS = 3
# The chaos suite: at least five crashes of the active node, which alternates
# between the app nodes (each run kills whichever is active).
FAILOVER_RUNS = 5


def _apps(nodes: list[LabNode]) -> list[LabNode]:
    return [n for n in nodes if n.name != "witness"]


def _crm(node: LabNode) -> str:
    return Admin(node).sudo("crm_mon -1 --output-as=xml").stdout


def _promoted(nodes: list[LabNode]) -> LabNode | None:
    """The promoted MariaDB's node, as the witness (never killed by a test) sees it."""
    out = Admin(nodes[-1]).sudo("crm_resource --resource mariadb-clone --locate", check=False).stdout
    for line in out.splitlines():
        if "Promoted" in line:
            host = line.split("running on:")[-1].split()[0]
            return next(n for n in nodes if host.endswith(f"-{n.name}"))
    return None


def _holder(nodes: list[LabNode]) -> LabNode | None:
    _, body = api("GET", f"/v2/reserved_ips/{RESERVED_IP}")
    droplet = (body.get("reserved_ip") or {}).get("droplet") or {}
    return next((n for n in nodes if n.droplet_id == droplet.get("id")), None)


def _http(path: str, method: str = "GET") -> tuple[int, str]:
    out = in_lab("curl", "-s", "-m", "5", "-X", method, "-o", "/dev/stdout", "-w", "\n%{http_code}", URL + path)
    body, _, code = out.stdout.rpartition("\n")
    return int(code or 0), body


def _sql(node: LabNode, query: str) -> str:
    return Admin(node).sudo(f"mariadb -N -B do_ha_canary -e {json.dumps(query)}").stdout.strip()


def _wait(what: str, seconds: float, check) -> None:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while True:
        try:
            if check():
                return
        except (AssertionError, subprocess.SubprocessError):
            pass
        assert time.monotonic() < deadline, f"timed out after {seconds} s waiting for {what}"
        time.sleep(3)


def _marks(nodes: list[LabNode]) -> dict[str, str]:
    """Each app node's sync-guard mark ("0", "1", or "" for none), as the witness sees it."""
    script = "; ".join(f"echo {n.name}=$(crm_attribute --lifetime forever --node do-ha-stack-lab-{n.name} "
                       "--name do-ha-db-in-sync --query --quiet 2>/dev/null)" for n in _apps(nodes))
    out = Admin(nodes[-1]).sudo(f"sh -c {shlex.quote(script)}", check=False).stdout  # run as root, not deploy
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _settled(nodes: list[LabNode]) -> bool:
    """Every node online, nginx on every app node, one promoted MariaDB, one unpromoted
    replica replicating, no app node marked out of sync (the next failover may pick it),
    and with two app nodes the replica holding its standing promotion score (the next
    failover plans its promotion with the fence)."""
    xml = _crm(nodes[-1])  # the witness: never the node a test kills
    if xml.count('online="true"') < len(nodes):
        return False
    web_on = {n.get("name") for r in ElementTree.fromstring(xml).iter("resource")
              if r.get("id") == "web" and r.get("role") == "Started" for n in r.iter("node")}
    if web_on != {f"do-ha-stack-lab-{n.name}" for n in _apps(nodes)}:
        return False
    active = _promoted(nodes)
    if active is None or _holder(nodes) != active:
        return False
    for node in _apps(nodes):
        if node is active:
            continue
        status = Admin(node).sudo("mariadb -e 'SHOW SLAVE STATUS\\G'", check=False).stdout
        if "Slave_IO_Running: Yes" not in status or "Slave_SQL_Running: Yes" not in status:
            return False
        if len(_apps(nodes)) == 2 and not Admin(nodes[-1]).sudo(
                f"crm_attribute --node do-ha-stack-lab-{node.name} --name master-mariadb --lifetime reboot "
                "--query --quiet", check=False).stdout.strip():
            return False
    return "0" not in _marks(nodes).values()


def test_cluster_formed_with_every_node_and_a_valid_configuration(nodes: list[LabNode], report: dict) -> None:
    report["bootstrap"] = load_state().get("timings")
    _wait("a settled cluster", 180, lambda: _settled(nodes))
    xml = _crm(nodes[0])
    for node in nodes:
        assert f'name="do-ha-stack-lab-{node.name}" ' in xml and xml.count('online="true"') == len(nodes)
    verify = Admin(nodes[0]).sudo("crm_verify --live-check -V", check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    config = Admin(nodes[0]).sudo("pcs cluster corosync").stdout
    assert "transport: knet" in config and "crypto_cipher: aes256" in config and "crypto_hash: sha256" in config
    assert "two_node" not in config  # three votes with the witness
    props = Admin(nodes[0]).sudo("pcs property config --all").stdout.replace(": ", "=")
    assert "stonith-enabled=true" in props and "pe-error-series-max=4000" in props, props
    # The scheduler waits transition-delay after a change: a DC has run it on that timer
    # (which pacemaker starts only with a value it could read, and logs by this name).
    assert f"transition-delay={tuning.TRANSITION_DELAY}" in props, props
    timer = f"New Transition Timer just popped | input=I_PE_CALC time={tuning.TRANSITION_DELAY}"
    assert any(Admin(n).sudo(f"sh -c \"zcat -f /var/log/pacemaker/pacemaker.log* | grep -cF '{timer}'\"",
                             check=False).stdout.strip() not in ("", "0") for n in nodes), \
        f"no scheduler run on the transition-delay timer ({timer})"
    # No scheduler found a configuration error since it started: fencing was off
    # until its device came (pacemaker 3.0 would have kept such an error, and
    # labelled every later transition with it).
    for node in nodes:
        flagged = Admin(node).sudo("sh -c 'pid=$(pidof pacemaker-schedulerd) && "
                                   "journalctl --no-pager -o cat _PID=$pid | "
                                   "grep -E \"with errors|onfiguration error|start-up disabled\"'",
                                   check=False).stdout
        assert flagged.strip() == "", (node.name, flagged[-1500:])
    # nothing but fencing ever runs on the witness
    on_witness = [r.get("id") for r in ElementTree.fromstring(xml).iter("resource")
                  if any(n.get("name") == "do-ha-stack-lab-witness" for n in r.iter("node"))]
    assert all(r.startswith("fence") for r in on_witness), on_witness
    # and fencing does: a lost app node's failover does not start the device on the survivor
    assert "fence-do" in on_witness, on_witness
    constraints = Admin(nodes[0]).sudo("pcs constraint config").stdout
    assert constraints.count("do-ha-stack-lab-witness") >= 2  # mariadb-clone and active avoid it


def test_failure_detection_and_the_mariadb_agent_are_the_fast_failovers_own(nodes: list[LabNode]) -> None:
    # corosync runs the declared token, not one lengthened for the third node
    for node in nodes:
        runtime = Admin(node).sudo("corosync-cmapctl -g runtime.config.totem.token").stdout
        assert runtime.strip().endswith("= 1200"), (node.name, runtime)
    agent = "/usr/lib/ocf/resource.d/heartbeat/mariadb"
    for node in _apps(nodes):
        admin = Admin(node)
        # the packaged agent diverted (apt upgrades it there), intact; the wrapper in its place
        assert admin.run(f"dpkg-divert --truename {agent}").stdout.strip() == \
            "/usr/lib/do-ha-stack/ocf-distrib/mariadb"
        verify = admin.sudo("dpkg --verify resource-agents", check=False)
        assert verify.returncode == 0 and verify.stdout == "", verify.stdout
        assert "do-ha-stack" in admin.run(f"head -5 {agent}").stdout
        assert _sql(node, "SELECT @@rpl_semi_sync_slave_kill_conn_timeout") == "1"
        # the packaged notify ignores starts and stops (the wrapper answers them itself)
        named = admin.run("grep -c -e pre-start -e post-start -e pre-stop -e post-stop "
                          "/usr/lib/do-ha-stack/ocf-distrib/mariadb", check=False).stdout.strip()
        assert named == "0", named
        # the packaged libraries under the wrapper (its OCF_LIB): the node's name is the one
        # pacemaker gives an action, or else the cluster's answer, as the packaged function's
        libs = ("sh -c 'OCF_ROOT=/usr/lib/ocf OCF_FUNCTIONS_DIR=/usr/lib/do-ha-stack/ocf-lib "
                "OCF_RESOURCE_INSTANCE=mariadb {} bash -c "
                "\". \\$OCF_FUNCTIONS_DIR/ocf-shellfuncs && . \\$OCF_FUNCTIONS_DIR/mysql-common.sh "
                "&& echo \\$NODENAME \\$OCF_FUNCTIONS_DIR\"'")
        given = admin.sudo(libs.format("OCF_RESKEY_CRM_meta_on_node=given-by-pacemaker")).stdout.split()
        asked = admin.sudo(libs.format("")).stdout.split()
        assert given == ["given-by-pacemaker", "/usr/lib/ocf/lib/heartbeat"], given
        assert asked == [f"do-ha-stack-lab-{node.name}", "/usr/lib/ocf/lib/heartbeat"], asked
    # a failed check of the primary demotes it in place (no restart before the replica's promotion)
    check = Admin(nodes[-1]).sudo("cibadmin --query --xpath "
                                  "\"//primitive[@id='mariadb']/operations/op[@role='Promoted']\"").stdout
    assert 'on-fail="demote"' in check and f'interval="{tuning.DB_PROMOTED_MONITOR}"' in check, check
    # the reserved IP moves while a lost node is fenced; the promotion waits for the fence
    cib = ElementTree.fromstring(Admin(nodes[-1]).sudo("cibadmin --query --scope resources").stdout)
    requires = {p.get("id"): {nv.get("value") for nv in p.iter("nvpair") if nv.get("name") == "requires"}
                for p in cib.iter("primitive")}
    assert requires["reserved-ip"] == {"quorum"} and requires["mariadb"] == set(), requires


def test_secrets_are_not_in_the_cib_parameters_or_node_logs(nodes: list[LabNode]) -> None:
    token = (run_dir() / "api_token").read_text().strip()
    cib = Admin(nodes[0]).sudo("cibadmin --query").stdout
    assert token not in cib
    assert "api_token" not in cib and "token=" not in cib
    for node in nodes:
        logs = Admin(node).sudo("journalctl --no-pager -o cat").stdout
        assert token not in logs, node.name
        mode = Admin(node).sudo("stat -c '%a %U' /etc/do-ha-stack/do-api-token").stdout.split()
        assert mode == ["600", "root"]


def test_reserved_ip_serves_http_from_the_active_node(nodes: list[LabNode]) -> None:
    active = _promoted(nodes)
    assert active is not None and _holder(nodes) == active
    code, body = _http("/canary/health")
    assert code == 200, body
    assert json.loads(body) == {"database": "writable", "node": f"do-ha-stack-lab-{active.name}"}


def test_shared_volume_carries_a_file_between_app_nodes(nodes: list[LabNode]) -> None:
    app1, app2 = _apps(nodes)[:2]
    name = f"probe-{uuid.uuid4().hex[:8]}.txt"
    assert Admin(app1).run("stat -c %a /srv/shared/www").stdout.strip() == "755"
    Admin(app1).sudo(f"sh -c 'umask 022; echo from-app1 > /srv/shared/www/{name}'")
    assert Admin(app2).sudo(f"cat /srv/shared/www/{name}").stdout.strip() == "from-app1"
    code, body = _http(f"/{name}")  # and nginx on the active node serves it
    assert (code, body.strip()) == (200, "from-app1")
    for node in _apps(nodes):
        fstab = Admin(node).run("grep /srv/shared /etc/fstab").stdout
        assert "x-systemd.requires=glusterd.service" in fstab and "backup-volfile-servers=" in fstab
        assert ",nofail," in fstab  # not before remote-fs.target, so not before nginx at boot
    info = Admin(app1).sudo("gluster volume info shared").stdout
    assert "Number of Bricks: 1 x (2 + 1) = 3" in info and "(arbiter)" in info
    assert "auth.allow: 10.99.0.11,10.99.0.12,10.99.0.13" in info


def test_a_row_written_on_the_primary_appears_on_the_replica(nodes: list[LabNode]) -> None:
    active = _promoted(nodes)
    replica = next(n for n in _apps(nodes) if n is not active)
    key = f"row-{uuid.uuid4().hex[:8]}"
    code, _ = _http(f"/canary/write?key={key}", "POST")
    assert code == 200
    _wait("the row on the replica", 10,
          lambda: _sql(replica, f"SELECT COUNT(*) FROM writes WHERE client_key='{key}'") == "1")
    status = Admin(replica).sudo("mariadb -e 'SHOW SLAVE STATUS\\G'").stdout
    assert "Master_SSL_Allowed: Yes" in status and "Using_Gtid: Current_Pos" in status
    assert _sql(replica, "SELECT @@read_only") == "1"
    # the replication account refuses a connection without TLS
    plain = Admin(replica).sudo(f"mariadb --skip-ssl -h {active.private_ip} -u repl -pwrong -e 'SELECT 1'", check=False)
    assert plain.returncode != 0


def _privileges(node: LabNode, account: str) -> set[str]:
    grants = _sql(node, f"SHOW GRANTS FOR {account}")
    return {p.strip() for line in grants.splitlines() if " ON *.* " in line
            for p in line.removeprefix("GRANT ").split(" ON *.* ")[0].split(",")}


def test_the_replication_accounts_hold_only_what_replication_needs(nodes: list[LabNode]) -> None:
    """The agent's repl@localhost drives replication (its password is on the agent's
    command lines: root alone sees them, /proc hidepid); repl over the VPC streams."""
    for node in _apps(nodes):
        vpc = _sql(node, "SELECT host FROM mysql.user WHERE user = 'repl' AND host <> 'localhost'")
        assert _privileges(node, f"'repl'@'{vpc}'") == {"REPLICATION SLAVE"}
        assert _privileges(node, "'repl'@'localhost'") == {
            "REPLICATION SLAVE ADMIN", "SLAVE MONITOR", "BINLOG MONITOR", "READ_ONLY ADMIN", "CONNECTION ADMIN",
            "PROCESS", "RELOAD"}


def test_seeding_left_no_dump_and_did_not_stall_the_primary(nodes: list[LabNode], report: dict) -> None:
    replica = _apps(nodes)[1]
    lineage = Admin(replica).sudo("cat /var/lib/mysql/do-ha-stack.lineage", check=False).stdout
    assert lineage.startswith("seeded from do-ha-stack-lab-app1 "), lineage
    dumps = Admin(replica).sudo("find / -xdev -name '*.sql' -newer /etc/hostname -size +0", check=False).stdout
    assert dumps.strip() == ""
    seed = load_state().get("seed_probe")
    assert seed, "the lab's bootstrap measured no writes during seeding"
    report["seed_primary_write_latency_max_ms"] = seed["max_ms"]
    assert seed["writes"] > 0 and seed["errors"] == 0


def _writer(tag: str) -> tuple[subprocess.Popen, Path, Path]:
    """WRITER_CLIENTS clients writing through the reserved IP (lab/writer.py) until the
    stop file exists: (the process, its attempts file, its stop file)."""
    out, stop = run_dir() / f"writer-{tag}.json", run_dir() / f"writer-{tag}.stop"
    stop.unlink(missing_ok=True)
    proc = subprocess.Popen(["ip", "netns", "exec", SWITCH_NS, sys.executable, "-m", "lab.writer", URL,
                             str(out), str(stop), str(WRITER_CLIENTS)], cwd=REPO_ROOT)
    return proc, out, stop


def _write_through_fault(nodes: list[LabNode], tag: str, fault: Callable[[LabNode], None],
                         recovered: Callable[[LabNode], bool], wait_s: float = 60,
                         victim: LabNode | None = None) -> dict:
    """Inject `fault` into the active node (or `victim`) while a client writes through the
    reserved IP, wait until `recovered(victim)` and writes succeed again; measure and
    check every acknowledged write against the primary then."""
    _wait("a settled cluster", 300, lambda: _settled(nodes))
    victim = victim or _promoted(nodes)
    assert victim is not None
    writer, out, stop = _writer(tag)
    try:
        time.sleep(3)
        faulted_at = time.time()
        fault(victim)
        _wait("writes through the reserved IP again", wait_s,
              lambda: recovered(victim) and _http("/canary/health")[0] == 200)
        time.sleep(3)
    finally:
        stop.touch()
        writer.wait(timeout=30)
    attempts = json.loads(out.read_text())
    acked = [a for a in attempts if a["outcome"] == "ok"]
    answered = sorted(a["t"] + a["took"] for a in acked)
    # The outage: the longest pause between two acknowledged writes that ends after the
    # fault. (Not simply the first write after it: with several clients, a write can be
    # acknowledged in the moment between the fault's start and the fault taking hold.)
    pauses = [(end - start, start, end) for start, end in zip(answered, answered[1:], strict=False)
              if end > faulted_at]
    assert answered and answered[0] < faulted_at and pauses, "the writer saw no success before or after the fault"
    _, last_ok_before, recovered_at = max(pauses)
    after = [a for a in acked if a["t"] + a["took"] >= recovered_at]
    primary = _promoted(nodes)
    assert primary is not None
    stored = set(_sql(primary, "SELECT client_key FROM writes WHERE client_key LIKE 'w%'").split())
    lost = sorted({a["key"] for a in acked} - stored)
    return {"victim": victim.name, "primary_after": primary.name, "failover_s": round(recovered_at - faulted_at, 2),
            "unavailable_s": round(recovered_at - last_ok_before, 2), "acked": len(acked), "lost": lost,
            "faulted_at": faulted_at, "first_write_at": recovered_at, "attempts_file": str(out),
            "nodes_after": sorted({a["node"] for a in after})}


def _write_through_failover(nodes: list[LabNode], tag: str) -> dict:
    """Kill the active node while a client writes; measure and check every acked write."""
    _wait("a settled cluster", 300, lambda: _settled(nodes))
    victim = _promoted(nodes)
    survivor = next(n for n in _apps(nodes) if n is not victim)
    result = _write_through_fault(nodes, tag, kill_node, lambda _victim: _promoted(nodes) == survivor)
    assert result["primary_after"] == survivor.name, result
    result["survivor"] = survivor.name
    result["all_after_on"] = result.pop("nodes_after") == [f"do-ha-stack-lab-{survivor.name}"]
    killed_at = result["killed_at"] = result.pop("faulted_at")
    result["phases"] = _phases(nodes, victim, survivor, killed_at, result.pop("first_write_at"))
    # The operator hears of it: the fence, the promotion and the IP's move (one mail for
    # the burst when they come within the sender's batch), through the stack's relay.
    result["alert_mail_s"] = max(wait_for_mail(killed_at, text, body=True)["after_s"] for text in (
        f"== fenced do-ha-stack-lab-{victim.name} ==", f"== MariaDB primary is now do-ha-stack-lab-{survivor.name} ==",
        f"== the reserved IP is now on do-ha-stack-lab-{survivor.name} =="))
    return result


def _draw_timeline(result: dict, path: Path, title: str) -> Path:
    """A failover run's PNG (lab/timeline.py): its writes per 100 ms and its phases."""
    attempts = json.loads(Path(result["attempts_file"]).read_text())
    return timeline.draw(path, attempts, result["killed_at"], result["phases"], title)


def _phases(nodes: list[LabNode], victim: LabNode, survivor: LabNode, killed_at: float,
            first_write_at: float) -> dict[str, float | None]:
    """The failover's phases (lab/failover_phases.py) from the surviving nodes' journals
    (the DC's lines are on the survivor or the witness) and the API stand-in's log."""
    until = time.time()
    events = []
    for node in nodes:
        if node is not victim:
            out = Admin(node).sudo(failover_phases.journal_command(killed_at - 1, until), check=False).stdout
            events += failover_phases.parse_journal(node.name, out)
    day = datetime.fromtimestamp(killed_at, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    events += failover_phases.parse_api_log((run_dir() / "api.log").read_text(), day)
    return failover_phases.phases(events, f"do-ha-stack-lab-{victim.name}", f"do-ha-stack-lab-{survivor.name}",
                                  RESERVED_IP, killed_at, first_write_at)


@pytest.mark.disruptive
def test_failover_keeps_every_acknowledged_write_and_the_old_node_rejoins(nodes: list[LabNode], report: dict) -> None:
    runs = []
    for i in range(FAILOVER_RUNS):
        # each run clears the table of the previous run's keys on the primary
        _wait("a settled cluster", 300, lambda: _settled(nodes))
        Admin(_promoted(nodes)).sudo("mariadb do_ha_canary -e \"DELETE FROM writes WHERE client_key LIKE 'w%'\"")
        result = _write_through_failover(nodes, f"run{i}")
        runs.append(result)
        _draw_timeline(result, REPO_ROOT / "build" / f"failover-run{i}.png",
                       f"lab failover run {i}: {result['victim']} killed, {result['survivor']} takes over")
        assert result["lost"] == [], result
        assert result["all_after_on"], result
        # the fenced node was powered off through the API; an operator powers it on
        # and it rejoins as a replica
        victim = next(n for n in nodes if n.name == result["victim"])
        _, droplet = api("GET", f"/v2/droplets/{victim.droplet_id}")
        assert droplet["droplet"]["status"] == "off"
        status, body = api("POST", f"/v2/droplets/{victim.droplet_id}/actions", {"type": "power_on"})
        assert status == 201, body
        _wait(f"{victim.name} back as a replica", 300,
              lambda victim=victim: _settled(nodes) and _promoted(nodes) != victim)
        assert _sql(victim, "SELECT @@read_only") == "1"
        # hardening that is not a file: /proc's hidepid is back after the boot
        assert "hidepid=invisible" in Admin(victim).run("grep ' /proc ' /proc/mounts").stdout
    # the active role moved each time, so the kills alternated between the app nodes
    victims = [r["victim"] for r in runs]
    assert all(victims[i] != victims[i + 1] for i in range(len(victims) - 1)), victims
    report["failover"] = {"runs": runs, "median_failover_s": statistics.median(r["failover_s"] for r in runs),
                          "alert_mail_s": [r["alert_mail_s"] for r in runs],
                          "lost_writes": sum(len(r["lost"]) for r in runs),
                          "phases": failover_phases.summary([r["phases"] for r in runs])}
    print("\nfailover phases (s after the kill):\n" + failover_phases.table([r["phases"] for r in runs]))
    # every phase was seen in every run (the log lines they are read from still exist),
    # but the election: a survivor that already held a promotion score needs none
    assert all(v is not None for r in runs for k, v in r["phases"].items() if k != "elected"), \
        [r["phases"] for r in runs]
    fenced = [line for line in (run_dir() / "api.log").read_text().splitlines()
              if "power_off" in line or "/actions" in line]
    assert any("POST /v2/droplets/" in line for line in fenced), "no fencing call reached the API"


@pytest.mark.disruptive
def test_a_node_cut_off_the_private_network_never_makes_two_writable_databases(nodes: list[LabNode],
                                                                                report: dict) -> None:
    _wait("a settled cluster", 300, lambda: _settled(nodes))
    active = _promoted(nodes)
    other = next(n for n in _apps(nodes) if n is not active)
    samples: list[dict] = []

    def writable(node: LabNode) -> bool:
        result = Admin(node).sudo("mariadb -N -e 'SELECT @@read_only'", check=False, timeout=5)
        return result.returncode == 0 and result.stdout.strip() == "0"

    def holds(node: LabNode) -> bool:
        result = Admin(node).run("curl -s -m 2 http://169.254.169.254/metadata/v1/reserved_ip/ipv4/active",
                                 check=False, timeout=5)
        return result.stdout.strip() == "true"

    cut_off_vpc(active, True)
    fenced_before = _fenced_count(active)
    cut_at = time.monotonic()
    try:
        while time.monotonic() - cut_at < 90:
            sample = {"t": round(time.monotonic() - cut_at, 1),
                      "writable": [n.name for n in (active, other) if _safe(writable, n)],
                      "holders": [n.name for n in (active, other) if _safe(holds, n)]}
            samples.append(sample)
            assert len(sample["writable"]) <= 1, samples
            assert len(sample["holders"]) <= 1, samples
            if sample["writable"] == [other.name] and sample["holders"] == [other.name]:
                break
            time.sleep(0.5)
    finally:
        diagnostics = Admin(other).sudo("crm_mon -1", check=False).stdout[-1500:]
        cut_off_vpc(active, False)
    assert samples[-1]["writable"] == [other.name], (samples[-3:], diagnostics)
    # the cut-off node was powered off (fenced) before its database moved
    assert _fenced_count(active) > fenced_before
    report["partition"] = {"took_over_after_s": samples[-1]["t"], "samples": len(samples)}
    api("POST", f"/v2/droplets/{active.droplet_id}/actions", {"type": "power_on"})
    _wait("the cut-off node back as a replica", 300, lambda: _settled(nodes))


def _fenced_count(node: LabNode) -> int:
    log = (run_dir() / "api.log").read_text()
    return log.count(f'"POST /v2/droplets/{node.droplet_id}/actions" 201')


def _safe(check, node: LabNode) -> bool:  # noqa: ANN001
    # A node that is off (fenced) is neither writable nor a holder. Asking it over SSH
    # would be refused, which Admin waits out as the SSH rate limit (half a minute),
    # long enough for the sampling above to run out of time.
    if container_init(node) is None:
        return False
    try:
        return check(node)
    except subprocess.SubprocessError:
        return False


def test_a_second_replay_changes_nothing(nodes: list[LabNode]) -> None:
    assert replay.replay_all(lab_plan(nodes)) == 0
    _wait("a settled cluster", 120, lambda: _settled(nodes))
