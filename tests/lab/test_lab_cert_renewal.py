"""Day 2 in the lab: a renewed MariaDB certificate reaches the running nodes without a
restart of the primary.

The program renews the nodes' certificates by replacing them (pulumi-tls,
early_renewal_hours); the next `up` re-runs db-node with the new files, which
loads them with FLUSH SSL where pacemaker runs MariaDB. Here the renewal is a
certificate re-issued with another validity period (the program evaluated with a
different DB_CERT_VALIDITY_HOURS), and the lab replays what changed, under load.
"""

from __future__ import annotations

import pytest

from infra import tuning
from lab import replay
from lab.stack import lab_nodes, lab_plan
from lab.topology import LabNode
from tests.helpers.day2 import apps, sql, writes_through_the_reserved_ip
from tests.helpers.lab_support import Admin
from tests.lab.test_lab_cluster import _promoted, _settled, _wait

pytestmark = pytest.mark.lab


def _served_until(node: LabNode) -> str:
    """The expiry of the certificate the running server holds (not the file's)."""
    return sql(node, "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS "
                     "WHERE VARIABLE_NAME = 'SSL_SERVER_NOT_AFTER'")


def _pid(node: LabNode) -> str:
    return Admin(node).sudo("pidof mariadbd").stdout.strip()


@pytest.mark.disruptive(order=5)
def test_a_renewed_certificate_is_loaded_without_restarting_the_primary(nodes: list[LabNode], report: dict,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    nodes = lab_nodes()
    _wait("a settled cluster", 300, lambda: _settled(nodes))
    primary = _promoted(nodes)
    assert primary is not None
    app_nodes = apps(nodes)
    pids = {n.name: _pid(n) for n in app_nodes}
    served = {n.name: _served_until(n) for n in app_nodes}

    monkeypatch.setattr(tuning, "DB_CERT_VALIDITY_HOURS", tuning.DB_CERT_VALIDITY_HOURS + 24)
    plan = lab_plan(nodes)
    record: dict[str, dict] = {}
    with writes_through_the_reserved_ip("cert-renewal", primary) as load:
        ran = replay.replay_all(plan, load.around([c["name"] for c in plan]), record=record)
    report.setdefault("operations", {})["certificate-renewal"] = load.figures() | {"commands_run": ran}

    # Only the nodes' db-node steps carry the certificates.
    assert sorted(record) == sorted(f"{n.name}-db-node" for n in app_nodes), record
    for node in app_nodes:
        assert _served_until(node) != served[node.name], node.name
        assert _pid(node) == pids[node.name], f"{node.name}'s MariaDB was restarted"
        log = Admin(node).sudo("journalctl -t do-ha-stack --no-pager -o cat").stdout
        assert "reloaded TLS certificates in place" in log, node.name
    assert _promoted(nodes) == primary
    # Replication reconnects with the new certificates and loses nothing acknowledged.
    _wait("replication healthy again", 120, lambda: _settled(nodes))
    acked = {a["key"] for a in load.acked}
    for node in app_nodes:
        _wait(f"{node.name} to hold every acknowledged write", 60, lambda node=node: acked <= set(
            sql(node, "SELECT client_key FROM writes WHERE client_key LIKE 'w%'").split()))
