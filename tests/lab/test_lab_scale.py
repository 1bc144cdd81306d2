"""Day 2 in the lab: the app tier scaled out (2 -> 3) and back in (3 -> 2) on a running
stack, as `pulumi config set appNodeCount N; pulumi up` does (lab.scale), under load.

The added node joins corosync, replicates the database and mounts the shared
volume without a brick (infra/storage.py says why); scaled back in, nothing of it
is left in the cluster. Figures go to the lab report under "operations".
"""

from __future__ import annotations

import pytest

from lab.scale import scale
from lab.stack import lab_nodes, lab_plan
from lab.topology import LabNode
from tests.helpers.day2 import assert_converged, sql, write_shared_files, writes_through_the_reserved_ip
from tests.lab.test_lab_cluster import _promoted, _settled, _wait

pytestmark = pytest.mark.lab
FILES = 10


# After the replacement test (order 2): it leaves the lab at two app nodes.
@pytest.mark.disruptive(order=3)
def test_scaling_the_app_tier_out_and_in_converges_under_load(nodes: list[LabNode],
                                                                         report: dict) -> None:
    _wait("a settled cluster", 300, lambda: _settled(nodes))
    bootstrap = _promoted(nodes)
    assert bootstrap == nodes[0], "the bootstrap node is expected to be primary"
    files = write_shared_files(bootstrap, "scale", FILES, 4096)
    operations = report.setdefault("operations", {})

    with writes_through_the_reserved_ip("scale-out", bootstrap) as load:
        figures = scale(3, load.around([c["name"] for c in lab_plan(nodes)] + [
            f"app3-{step}" for step in ("first-boot", "cluster-node", "db-node", "db-seed", "db-handover",
                                        "shared-mount", "web-node")]))
    operations["scale-out-2-3"] = figures | load.figures()
    bigger = lab_nodes()
    added = next(n for n in bigger if n.name == "app3")
    _wait("a settled cluster of three app nodes", 300, lambda: _settled(bigger))
    assert sql(added, "SELECT @@read_only") == "1"
    assert_converged(bigger, [], {a["key"] for a in load.acked}, files)
    # The client-visible target (no failed write) is a figure, not an assertion: a write
    # fails when one commit outlasts the client's 1 s timeout, a timing matter on the
    # lab's two shared cores; what is asserted is that no acknowledged write is lost.

    with writes_through_the_reserved_ip("scale-in", bootstrap) as load:
        figures = scale(2, load.around([c["name"] for c in lab_plan(bigger)]))
    operations["scale-in-3-2"] = figures | load.figures()
    smaller = lab_nodes()
    assert [n.name for n in smaller] == [n.name for n in nodes]
    _wait("a settled cluster of two app nodes", 300, lambda: _settled(smaller))
    assert_converged(smaller, [added], {a["key"] for a in load.acked}, files)
    # The client-visible target (no failed write) is a figure, not an assertion: a write
    # fails when one commit outlasts the client's 1 s timeout, a timing matter on the
    # lab's two shared cores; what is asserted is that no acknowledged write is lost.
