"""A planned switchover in the lab (`make switchover`), under the writer through the
reserved IP: the active role moves to the other app node and back, driven by
tooling.switchover.switch itself with the lab standing in for its operations
(`make status` against the lab, SSH as an admin's).

What is asserted: the target is the primary and holds the reserved IP afterwards,
nothing was fenced, the stack is healthy, and every acknowledged write is on every
database. The pause in writes is a figure (build/lab-report.json; target <= 2 s).
"""

from __future__ import annotations

import pytest

from lab.stack import lab_config, lab_nodes
from lab.topology import RESERVED_IP, LabNode, run_dir
from tests.helpers.day2 import apps, host, lab_health, lab_run_on, sql, writes_through_the_reserved_ip
from tests.helpers.lab_support import Admin, api
from tests.lab.test_lab_cluster import _promoted, _settled, _wait
from tooling.node_ops import OperationError, Operations
from tooling.switchover import switch

pytestmark = pytest.mark.lab


def _holder(nodes: list[LabNode]) -> LabNode | None:
    _, body = api("GET", f"/v2/reserved_ips/{RESERVED_IP}")
    droplet = (body.get("reserved_ip") or {}).get("droplet") or {}
    return next((n for n in nodes if n.droplet_id == droplet.get("id")), None)


def _power_actions() -> int:
    return sum('"POST /v2/droplets/' in line and '/actions"' in line
               for line in (run_dir() / "api.log").read_text().splitlines())


@pytest.mark.disruptive(order=1)
def test_a_planned_switchover_moves_the_active_role_there_and_back(nodes: list[LabNode], report: dict) -> None:
    _wait("a settled cluster", 300, lambda: _settled(nodes))
    ops = Operations(lab_health, lab_run_on, pulumi=lambda argv: pytest.fail(f"no pulumi in a switchover: {argv}"),
                     say=print)
    hosts = {n.name: host(n) for n in apps(nodes)}
    stack = lab_config().stack

    with pytest.raises(OperationError, match="TO='witness' is not an app node"):
        switch(stack, hosts, ops, to="witness")
    first = _promoted(nodes)
    assert first is not None
    with pytest.raises(OperationError, match="it is the primary already"):
        switch(stack, hosts, ops, to=first.name)

    figures = report.setdefault("operations", {})
    for leg in ("there", "back"):
        primary = _promoted(lab_nodes())
        assert primary is not None
        target = next(n for n in apps(lab_nodes()) if n != primary)
        power_actions = _power_actions()
        with writes_through_the_reserved_ip(f"switchover-{leg}", primary) as load:
            after = switch(stack, hosts, ops)  # no TO: the replica that lags least, the only one here
        figures[f"switchover-{leg}"] = {"from": primary.name, "to": target.name} | load.figures()
        assert after.healthy, after.problems
        assert _promoted(lab_nodes()) == target and _holder(lab_nodes()) == target
        assert _power_actions() == power_actions, "a planned switchover fenced a node"
        assert sql(primary, "SELECT @@read_only") == "1" and sql(target, "SELECT @@read_only") == "0"
        acked = {a["key"] for a in load.acked}
        assert acked, "the writer got no write through"
        for node in apps(lab_nodes()):
            _wait(f"every acknowledged write on {node.name}", 60, lambda node=node, acked=acked: acked <= set(
                sql(node, "SELECT client_key FROM writes WHERE client_key LIKE 'w%'").split()))
        # The old primary replicates from the new one, through its private address.
        status = Admin(primary).sudo("mariadb -e 'SHOW SLAVE STATUS\\G'").stdout
        assert f"Master_Host: {target.private_ip}" in status and "Slave_SQL_Running: Yes" in status, status
    assert _promoted(lab_nodes()) == first
    # The agent's replication account had every privilege its demotions and promotions used.
    for node in apps(lab_nodes()):
        refused = Admin(node).sudo("journalctl -b --no-pager -o cat -t 'mariadb(mariadb)' --grep 'Access denied'",
                                   check=False).stdout
        assert refused.strip() == "", (node.name, refused[-1500:])
