"""The nodes' alert mail on the running lab: every node proved its relay at bring-up
(alert-mail's test mail through the lab's relay stand-in, over STARTTLS with the
stack's login), and pacemaker runs the alert agent. The degraded states and the
failover are mailed in the tests that cause them (test_status.py, test_lab_cluster.py)."""

from __future__ import annotations

import hashlib

import pytest

from infra.alerts import ALERT_AGENT, PASSWORD_FILE
from lab.mailsink import SMTP_USER, ensure_password, received
from lab.topology import LabNode
from tests.helpers.lab_support import Admin, mail_subject

pytestmark = pytest.mark.lab


def test_every_node_mailed_its_test_alert_through_the_relay_over_tls(nodes: list[LabNode]) -> None:
    mails = received()
    tests = {mail_subject(m).rsplit(" ", 1)[-1]: m for m in mails if "alert mail works from" in mail_subject(m)}
    assert set(tests) == {f"do-ha-stack-lab-{n.name}" for n in nodes}, [mail_subject(m) for m in mails]
    for mail in tests.values():
        assert mail["tls"] and mail["login"] == SMTP_USER and mail["rcpt_tos"] == ["ops@example.com"]
        assert "From: do-ha-stack lab <ops@example.com>" in mail["data"]


def test_the_relay_password_is_root_only_and_nowhere_else_on_the_nodes(nodes: list[LabNode]) -> None:
    password = ensure_password()
    for node in nodes:
        admin = Admin(node)
        assert admin.sudo(f"stat -c '%a %U' {PASSWORD_FILE}").stdout.split() == ["600", "root"]
        # compared by digest: a failed assertion must not print the secret
        digest = admin.sudo(f"sha256sum {PASSWORD_FILE}").stdout.split()[0]
        assert digest == hashlib.sha256(password.encode()).hexdigest(), node.name
        # not in msmtp's settings, the journal or any unit, file or log the stack wrote
        found = admin.sudo(f"grep -rlF -f {PASSWORD_FILE} /etc /var/log /usr/local/lib /var/spool/do-ha-stack "
                           f"--exclude={PASSWORD_FILE.rsplit('/', 1)[1]}", check=False).stdout.split()
        assert found == [], node.name
        journal = admin.sudo("journalctl --no-pager -o cat").stdout
        assert (password in journal) is False, node.name


def test_pacemaker_runs_the_alert_agent_on_every_node(nodes: list[LabNode]) -> None:
    admin = Admin(nodes[0])
    alerts = admin.sudo("cibadmin --query --scope alerts").stdout
    assert f'path="{ALERT_AGENT}"' in alerts and 'id="do-ha-mail"' in alerts
    for node in nodes:
        Admin(node).sudo(f"test -x {ALERT_AGENT}")
        assert Admin(node).run("systemctl is-active do-ha-alert-send.path do-ha-health-watch.timer",
                               check=False).stdout.split() == ["active", "active"], node.name
