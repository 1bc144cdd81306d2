"""The nodes' alerts (infra/alerts.py, cloudinit/alerts/): what the program installs,
what pacemaker's alert agent spools for each kind of event, what the watch finds in
degraded states recorded from the lab (tests/unit/data/status), and how the sender
batches, mails and defers. The scripts run here as they do on a node, with stand-ins
for msmtp and the cluster tools; the lab proves the mail arrives
(tests/lab/test_lab_chaos.py)."""

from __future__ import annotations

import base64
import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from infra.alerts import MSMTPRC, PASSWORD_FILE, alert_files, alerts_conf, msmtprc
from infra.config import parse
from infra.firewall import specs
from infra.paths import CLOUDINIT_DIR, REPO_ROOT
from tests.helpers.stacks import plain_config
from tests.helpers.node_scripts import load_node_script
from tests.helpers.stubs import write_stubs
from tooling.mocks import run_program
from tooling.render import commands

RELAY = {"alertSmtpHost": "smtp.example.com", "alertSmtpUser": "alerts@example.com"}
PASSWORD = "relay-password-0123456789"
STATUS = REPO_ROOT / "tests/unit/data/status"


WATCH = load_node_script("alerts/health-watch", "health_watch")


# --- what the program installs --------------------------------------------------------

def test_the_relay_port_is_opened_outbound_only_with_a_relay() -> None:
    def smtp_rules(raw: dict) -> set[str]:
        cfg = parse("staging", plain_config("staging") | raw)
        return {r.ports for s in specs(cfg) for r in s.outbound if r.ports == str(cfg.alert_smtp_port)}

    assert smtp_rules({}) == set()
    assert smtp_rules(RELAY | {"alertSmtpPassword": PASSWORD}) == {"587"}
    assert smtp_rules({"alertSmtpHost": "smtp.example.com", "alertSmtpPort": 465}) == {"465"}


def test_msmtp_always_uses_tls_and_reads_the_password_from_its_own_file() -> None:
    cfg = parse("staging", plain_config("staging") | RELAY | {"alertSmtpPassword": PASSWORD})
    text = msmtprc(cfg)
    assert "tls on\n" in text and "tls_starttls on\n" in text and "host smtp.example.com\n" in text
    assert f"passwordeval cat {PASSWORD_FILE}\n" in text and "user alerts@example.com\n" in text
    assert PASSWORD not in text
    implicit = msmtprc(parse("staging", plain_config("staging") | {"alertSmtpHost": "mx.example.com",
                                                                  "alertSmtpPort": 465}))
    assert "tls_starttls off\n" in implicit and "auth off\n" in implicit and "user " not in implicit


def test_alerts_conf_maps_droplets_to_node_names() -> None:
    cfg = parse("staging", plain_config("staging"))
    conf = tmp_conf = alerts_conf(cfg)
    values = dict(line.split("=", 1) for line in tmp_conf.splitlines())
    assert shlex.split(values["ALERT_TO"]) == [cfg.alert_email] == shlex.split(values["ALERT_FROM"])
    nodes = dict(p.split("=") for p in shlex.split(values["NODES"])[0].split())
    assert sorted(nodes.values()) == sorted(cfg.node_names) and "STACK=staging" in conf
    assert all(name.endswith(node) for name, node in nodes.items())


def test_without_a_relay_no_relay_files_are_installed() -> None:
    cfg = parse("staging", plain_config("staging"))
    paths = {f.path for f in alert_files(cfg)}
    assert MSMTPRC not in paths and PASSWORD_FILE not in paths


def test_every_node_gets_the_step_and_the_relay_password_only_as_a_secret() -> None:
    run = run_program("staging", plain_config("staging") | RELAY | {"alertSmtpPassword": PASSWORD})
    plan = {c["name"]: c for c in commands(run, reveal=True)}
    steps = sorted(n for n in plan if n.endswith("-alert-mail"))
    assert steps == ["app1-alert-mail", "app2-alert-mail", "witness-alert-mail"]
    secret_line = f"secretfile 0600 root:root {PASSWORD_FILE} {base64.b64encode(PASSWORD.encode()).decode()}"
    for name in steps:
        step = plan[name]
        assert "MAIL=yes" in step["create"] and PASSWORD not in step["create"]
        assert secret_line in step["stdin"].splitlines() and step["logging"] == "none"
    # what the engine shows and logs: the stdin is a secret as a whole
    assert all(c["stdin"] == "[secret]" for c in commands(run) if c["name"] in steps)
    quiet = {c["name"]: c for c in commands(run_program("staging", plain_config("staging")), reveal=True)}
    assert "MAIL=no" in quiet["app1-alert-mail"]["create"] and PASSWORD_FILE not in quiet["app1-alert-mail"]["stdin"]


# --- pacemaker's alert agent ----------------------------------------------------------

CRM_MON_DC = '<pacemaker-result><summary><current_dc present="true" name="{dc}"/></summary></pacemaker-result>'


@pytest.fixture
def node(tmp_path: Path) -> dict[str, str]:
    """A node's directories and tool stand-ins: this node is app1, the DC is app2
    (write tmp_path/dc to change it)."""
    for d in ("bin", "spool", "deferred"):
        (tmp_path / d).mkdir()
    (tmp_path / "dc").write_text("stk-app2")
    conf = tmp_path / "alerts.conf"
    conf.write_text("STACK=prod\nALERT_TO=ops@example.com\nALERT_FROM=cluster@example.com\nVOLUME=shared\n"
                    "NODES='stk-app1=app1 stk-app2=app2'\n")
    bin_dir = write_stubs(tmp_path / "bin", {
        "crm_mon": f"printf '{CRM_MON_DC}\\n' \"$(cat {tmp_path}/dc)\"".replace("{dc}", "%s"),
        "crm_node": "echo stk-app1",
        "logger": f'echo "$*" >> {tmp_path}/journal',
        # msmtp: records its arguments and the message; fails while tmp_path/refuse exists
        "msmtp": (f'[ ! -e {tmp_path}/refuse ] || exit 75\n'
                  f'n=$(ls {tmp_path} | grep -c "^sent"); echo "$*" > {tmp_path}/sent$n.args; '
                  f'cat > {tmp_path}/sent$n.eml'),
    })
    (tmp_path / "msmtprc").write_text("account default\nhost smtp.example.com\n")
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "DO_HA_ALERT_SPOOL": str(tmp_path / "spool"),
            "DO_HA_ALERT_DEFERRED": str(tmp_path / "deferred"), "DO_HA_ALERT_CONF": str(conf),
            "DO_HA_MSMTPRC": str(tmp_path / "msmtprc"), "DO_HA_ALERT_BATCH_S": "0", "ROOT": str(tmp_path)}


def _agent(env: dict[str, str], **event: str) -> list[str]:
    subprocess.run([str(CLOUDINIT_DIR / "alerts/alert-agent")], check=True, timeout=30,
                   env=env | {f"CRM_alert_{k}": v for k, v in event.items()})
    return [p.read_text() for p in sorted(Path(env["DO_HA_ALERT_SPOOL"]).glob("*.alert"))]


def test_a_fence_is_spooled_by_the_dc_only_with_what_repairs_it(node: dict[str, str]) -> None:
    fence = {"kind": "fencing", "node": "stk-app1", "desc": "Operation off of stk-app1 by stk-app2: OK"}
    assert _agent(node, **fence) == []  # app1 is not the DC: the DC speaks for the cluster
    (Path(node["ROOT"]) / "dc").write_text("stk-app1")
    [message] = _agent(node, **fence)
    assert message.startswith("Subject: fenced stk-app1\n\n")
    assert "Operation off of stk-app1 by stk-app2: OK" in message
    assert "power-on" in message and "make replace STACK=prod" in message


@pytest.mark.parametrize("event, subject", [
    ({"rsc": "web", "task": "monitor", "rc": "7", "target_rc": "0", "status": "0", "interval": "2000",
      "desc": "not running"}, "web monitor failed on stk-app1"),
    ({"rsc": "mariadb", "task": "start", "rc": "0", "target_rc": "0", "status": "2", "desc": "Timed Out"},
     "mariadb start failed on stk-app1"),
    ({"rsc": "mariadb", "task": "promote", "rc": "0", "target_rc": "0", "status": "0", "desc": "ok"},
     "MariaDB primary is now stk-app1"),
    ({"rsc": "reserved-ip", "task": "start", "rc": "0", "target_rc": "0", "status": "0", "desc": "ok"},
     "the reserved IP is now on stk-app1"),
    ({"rsc": "web", "task": "monitor", "rc": "7", "target_rc": "7", "status": "0", "interval": "0",
      "desc": "not running"}, None),  # a probe that found nothing, as expected
    ({"rsc": "web", "task": "start", "rc": "0", "target_rc": "0", "status": "0", "desc": "ok"}, None),
])
def test_resource_events_spool_failures_and_moves_of_the_active_role(
        node: dict[str, str], event: dict[str, str], subject: str | None) -> None:
    messages = _agent(node, kind="resource", node="stk-app1", **event)
    if subject is None:
        assert messages == []
    else:
        assert [m.splitlines()[0] for m in messages] == [f"Subject: {subject}"]
    if subject and "failed" in subject:
        assert f"crm_resource --cleanup --resource {event['rsc']} --node stk-app1" in messages[0]


def test_node_and_attribute_events(node: dict[str, str]) -> None:
    (Path(node["ROOT"]) / "dc").write_text("stk-app1")
    assert _agent(node, kind="attribute", node="stk-app1", attribute_name="x", attribute_value="1") == []
    [lost] = _agent(node, kind="node", node="stk-app2", desc="lost")
    assert lost.startswith("Subject: stk-app2 left the cluster")


# --- the sender -----------------------------------------------------------------------

def _web_start_failed(env: dict[str, str]) -> None:
    _agent(env, kind="resource", node="stk-app1", rsc="web", task="start", rc="1", target_rc="0", status="0",
           desc="error")


def _send(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLOUDINIT_DIR / "alerts/alert-send"), *args], env=env, text=True,
                          capture_output=True, timeout=30)


def test_a_burst_goes_out_as_one_mail_and_leaves_the_spool(node: dict[str, str]) -> None:
    (Path(node["ROOT"]) / "dc").write_text("stk-app1")
    _agent(node, kind="fencing", node="stk-app2", desc="Operation off of stk-app2: OK")
    _agent(node, kind="resource", node="stk-app1", rsc="mariadb", task="promote", rc="0", target_rc="0",
           status="0", desc="ok")
    assert _send(node).returncode == 0
    root = Path(node["ROOT"])
    assert list(root.glob("spool/*.alert")) == [] and list(root.glob("deferred/*")) == []
    [mail] = [p.read_text() for p in root.glob("sent*.eml")]
    assert (root / "sent0.args").read_text().split() == [f"--file={root}/msmtprc", "--", "ops@example.com"]
    headers = mail.split("\n\n", 1)[0]
    assert "Subject: [prod] fenced stk-app2 (+1 more: MariaDB primary is now stk-app1)" in headers
    assert "From: do-ha-stack prod <cluster@example.com>" in headers and "To: ops@example.com" in headers
    assert "== fenced stk-app2 ==" in mail and "== MariaDB primary is now stk-app1 ==" in mail
    assert "make status STACK=prod" in mail
    assert "fenced stk-app2" in (root / "journal").read_text()  # in the journal, mail or not


def test_a_refused_mail_is_deferred_and_retried(node: dict[str, str]) -> None:
    root = Path(node["ROOT"])
    (root / "refuse").touch()
    _web_start_failed(node)
    assert _send(node).returncode == 0
    assert list(root.glob("spool/*.alert")) == [] and len(list(root.glob("deferred/*.alert"))) == 1
    assert "did not take 1 alert(s) (msmtp exit 75)" in (root / "journal").read_text()
    (root / "refuse").unlink()
    assert _send(node, "retry").returncode == 0 and len(list(root.glob("spool/*.alert"))) == 1
    assert _send(node).returncode == 0 and list(root.glob("spool/*.alert")) == []
    assert "web start failed on stk-app1" in (root / "sent0.eml").read_text()


def test_without_a_relay_alerts_reach_the_journal_only(node: dict[str, str]) -> None:
    root = Path(node["ROOT"])
    (root / "msmtprc").unlink()
    _web_start_failed(node)
    assert _send(node).returncode == 0
    assert list(root.glob("spool/*")) == [] and list(root.glob("sent*")) == []
    assert "web start failed" in (root / "journal").read_text()
    assert _send(node, "test").returncode != 0  # the step's test mail fails without a relay


# --- the degraded-state watch ---------------------------------------------------------

def _facts(recording: str, node: str) -> object:
    watch = WATCH
    probes = json.loads((STATUS / f"{recording}.json").read_text())["nodes"][node]["probes"]
    semi = dict(line.split("\t") for line in probes["mariadb"]["out"].splitlines() if "\t" in line)
    return watch.Facts(
        me=probes["host"]["out"].strip(),
        crm_mon=probes["crm_mon"]["out"] if probes["crm_mon"]["rc"] == 0 else None,
        semi_sync_master=semi.get("Rpl_semi_sync_master_status"),
        slave_status=watch.parse_slave_status(probes["replica"]["out"]) if probes["replica"]["rc"] == 0 else None,
        heal_entries=watch.parse_heal_entries(probes["heal"]["out"]) if probes["heal"]["rc"] == 0 else None)


NAMES = {"do-ha-stack-lab-app1": "app1", "do-ha-stack-lab-app2": "app2", "do-ha-stack-lab-witness": "witness"}


def _found(recording: str, node: str) -> dict[str, object]:
    return WATCH.problems(_facts(recording, node), "lab", NAMES)


@pytest.mark.parametrize("recording", ["healthy", "healthy-after-failover"])
def test_a_healthy_stack_has_no_degraded_state(recording: str) -> None:
    nodes = json.loads((STATUS / f"{recording}.json").read_text())["nodes"]
    assert {n: _found(recording, n) for n in nodes if nodes[n]["probes"]} == {n: {} for n in nodes
                                                                              if nodes[n]["probes"]}


def test_stopped_replication_is_reported_by_the_replica_with_its_repair() -> None:
    # the primary's commits went on without a confirmation: it says so itself
    assert list(_found("replica-io-stopped", "app1")) == ["semi-sync-off"]
    found = _found("replica-io-stopped", "app2")
    assert list(found) == ["replication:do-ha-stack-lab-app2"]
    assert "make replace STACK=lab NODE=app2" in found["replication:do-ha-stack-lab-app2"].repair


def test_a_node_out_of_the_cluster_is_reported_by_the_dc() -> None:
    found = _found("witness-corosync-stopped", "app1")  # app1 is the DC
    assert "offline:do-ha-stack-lab-witness" in found
    assert "NODE=witness" in found["offline:do-ha-stack-lab-witness"].repair
    assert _found("witness-corosync-stopped", "app2") == {}  # not the DC
    # pacemaker stopped, corosync running: a member as corosync sees it, "pending" to pacemaker
    assert list(_found("witness-pacemaker-stopped", "app1")) == ["offline:do-ha-stack-lab-witness"]
    killed = _found("primary-killed", "app2")  # the new DC, the new primary: its replica is gone
    assert "offline:do-ha-stack-lab-app1" in killed


def test_a_heal_backlog_waits_longer_before_it_is_mailed() -> None:
    watch = WATCH
    facts = _facts("healthy", "app1")
    facts.heal_entries = 12
    found = watch.problems(facts, "lab", NAMES)
    assert list(found) == ["heal-backlog"] and found["heal-backlog"].debounce_s == watch.HEAL_DEBOUNCE_S
    # the repair for clients stuck on a brick's old port (GlusterFS 11.1), not only "wait"
    repair = found["heal-backlog"].repair
    assert "gluster volume start shared force" in repair and "mount /srv/shared" in repair


def test_a_state_is_mailed_once_after_its_debounce_and_again_when_it_ends(tmp_path: Path) -> None:
    watch = WATCH
    problem = {"semi-sync-off": watch.Problem("semi-sync is off on the primary x", "detail", "repair")}
    messages, state = watch.transitions({}, problem, 100.0)
    assert messages == []  # first sight: could be a switchover's seconds
    messages, state = watch.transitions(state, problem, 100.0 + watch.DEBOUNCE_S)
    assert [m[0] for m in messages] == ["DEGRADED: semi-sync is off on the primary x"]
    assert "What to do: repair" in messages[0][1]
    assert watch.transitions(state, problem, 200.0)[0] == []  # mailed once
    messages, state = watch.transitions(state, {}, 230.0)
    assert [m[0] for m in messages] == ["recovered: semi-sync is off on the primary x"] and state == {}
    # a blip shorter than the debounce is never mailed, nor its end
    _, state = watch.transitions({}, problem, 300.0)
    assert watch.transitions(state, {}, 305.0) == ([], {})
    watch.spool([("DEGRADED: x", "body\n")], tmp_path)
    [spooled] = tmp_path.glob("*.alert")
    assert spooled.read_text() == "Subject: DEGRADED: x\n\nbody\n"


def test_an_outage_waits_out_a_failover_and_a_cluster_not_yet_configured_is_quiet() -> None:
    watch = WATCH
    facts = _facts("healthy", "app1")
    # the reserved IP and the primary stopped, as between a fence and the promotion
    facts.crm_mon = facts.crm_mon.replace('role="Promoted"', 'role="Unpromoted"').replace(
        'reserved-ip" role="Started" active="true"', 'reserved-ip" role="Stopped" active="false"')
    stopped = {k: p for k, p in watch.problems(facts, "lab", NAMES).items() if k.startswith("no-")}
    assert set(stopped) == {"no-primary", "no-active"}
    assert all(p.debounce_s == watch.OUTAGE_DEBOUNCE_S > watch.DEBOUNCE_S for p in stopped.values())
    # cluster-setup done, cluster-resources not yet: nothing to miss
    bare = watch.Facts(me="do-ha-stack-lab-app1", crm_mon=(
        '<pacemaker-result><summary><current_dc name="do-ha-stack-lab-app1"/></summary><nodes>'
        '<node name="do-ha-stack-lab-app1" online="true" type="member"/></nodes><resources/></pacemaker-result>'))
    assert watch.problems(bare, "lab", NAMES) == {}
