"""The sync guard (cloudinit/app/db-sync-guard) against stand-ins for pacemaker, the
mark stores and the server, on a clock of its own: the order of a release (marks on a
majority, override, semi-sync off, then the CIB's mark), what keeps commits waiting
(no quorum, marks short of a majority), a CIB that takes the mark late, a busy
primary that is not stalled, turning semi-sync on again and marking in sync only
after an acknowledgement. The lab runs it for real (tests/lab/test_lab_chaos.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.helpers.node_scripts import load_node_script


G = load_node_script("app/db-sync-guard", "db_sync_guard")


class FakeCluster:
    """The CIB's marks ("0", or "1" for any in-sync mark; the values in `values`) and the
    stores' (`stored`), `holders` of `total` nodes answering a store request."""

    def __init__(self, log: list[str]) -> None:
        self.log, self.quorum, self.refuse = log, [True], False
        self.marks: dict[str, str] = {}
        self.values: dict[str, int] = {"app2": 5}  # in sync since long ago
        self.in_sync_of: dict[str, int] = {"app2": 5}
        self.holders, self.total = ["app1", "witness"], 3  # a majority
        self.stored: dict[str, int] = {}

    def managed(self) -> bool:
        return True

    def quorate(self) -> bool:
        q = self.quorum.pop(0) if len(self.quorum) > 1 else self.quorum[0]
        self.log.append(f"quorate={q}")
        return q

    peer_list: list[str] | None = ["app2"]
    member: bool | None = True

    def any_peer_member(self) -> bool | None:
        return self.member

    def peers(self) -> list[str] | None:
        return self.peer_list

    def mark(self, node: str, value: int) -> bool:
        if self.refuse:
            return False
        self.values[node], self.marks[node] = value, "0" if value == 0 else "1"
        self.log.append(f"mark {node}={self.marks[node]}")
        return True

    def marked(self, node: str) -> int | None:
        return None if self.refuse else self.values.get(node, 0)

    def store_out_of_sync(self, nodes: list[str], value: int) -> tuple[list[str], int]:
        self.log.append(f"store {' '.join(nodes)}")
        if len(self.holders) >= self.total // 2 + 1:
            self.stored |= dict.fromkeys(nodes, value)
        return self.holders, self.total

    def stored_marks(self, node: str) -> list[int]:
        return [self.stored[node]] if node in self.stored else []


class FakeServer:
    """Answers the poll with `sample`; records every other statement."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.sample = {"read_only": 0, "enabled": 1, "status": "ON", "clients": 1, "waiting": 0, "yes_tx": 10,
                       "caught_up": 1}

    def query(self, sql: str) -> list[str]:
        if sql == G.QUERY:
            s = self.sample
            return [f"{s['read_only']}\t{s['enabled']}\tRPL_SEMI_SYNC_MASTER_STATUS={s['status']},"
                    f"RPL_SEMI_SYNC_MASTER_CLIENTS={s['clients']},RPL_SEMI_SYNC_MASTER_WAIT_SESSIONS={s['waiting']},"
                    f"RPL_SEMI_SYNC_MASTER_YES_TX={s['yes_tx']}\t{s['caught_up']}"]
        self.log.append(sql)
        if "enabled = OFF" in sql:
            self.sample.update(enabled=0, status="OFF", waiting=0)
        if "enabled = ON" in sql:
            self.sample.update(enabled=1, status="ON")
        return []


@pytest.fixture
def guard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    log: list[str] = []
    monkeypatch.setattr(G, "OVERRIDE", tmp_path / "70-do-ha-sync-guard.cnf")
    orig_write = G.write_override

    def write() -> None:
        orig_write()
        log.append("override")
    monkeypatch.setattr(G, "write_override", write)
    proofs: list[int] = []

    class Proof:
        def poll(self) -> int:
            return 0
    monkeypatch.setattr(G, "proof_write", lambda: proofs.append(1) or Proof())
    clock = [100.0]
    g = G.Guard(FakeCluster(log), FakeServer(log), clock=lambda: clock[0])
    g.proofs, g.log, g.clock_value = proofs, log, clock
    return g


def _poll(g, seconds: float = G.POLL_S, times: int = 1) -> None:
    for _ in range(times):
        g.clock_value[0] += seconds
        g.step()


def test_a_primary_in_sync_raises_the_timeout_and_marks_once_acknowledged(guard) -> None:
    _poll(guard)
    assert guard.state == "probing" and f"SET GLOBAL rpl_semi_sync_master_timeout = {G.BACKSTOP_MS}" in guard.log
    guard.server.sample["yes_tx"] = 11  # a commit acknowledged
    _poll(guard)
    assert guard.state == "in-sync" and guard.cluster.marks == {"app2": "1"}


def test_a_release_marks_the_replica_before_the_commits_go_and_keeps_them_after_a_crash(guard) -> None:
    _poll(guard)
    guard.server.sample["yes_tx"] = 11
    _poll(guard)
    guard.log.clear()
    guard.server.sample["waiting"] = 3  # commits wait, no acknowledgement arrives
    _poll(guard, times=round(G.STALL_S / G.POLL_S) + 2)
    assert guard.state == "released"
    # the order is the guarantee: quorum, marks a majority holds, override, then off; the
    # CIB's mark after (corosync may deliver it only seconds later)
    assert guard.log == ["quorate=True", "store app2", "override", "SET GLOBAL rpl_semi_sync_master_enabled = OFF",
                         "quorate=True", "mark app2=0"]
    assert "init_rpl_role = MASTER" in G.OVERRIDE.read_text()


def test_a_busy_primary_whose_acknowledgements_flow_is_not_stalled(guard) -> None:
    _poll(guard)
    guard.server.sample["waiting"] = 5  # always some commit waiting...
    for _ in range(50):
        guard.server.sample["yes_tx"] += 3  # ...and acknowledgements arriving
        _poll(guard)
    assert guard.state == "in-sync" and not any("OFF" in line for line in guard.log)


def test_without_quorum_the_commits_keep_waiting(guard) -> None:
    _poll(guard)
    guard.cluster.quorum = [False]
    guard.server.sample["waiting"] = 1
    _poll(guard, times=20)
    assert not any("enabled = OFF" in line for line in guard.log) and not G.OVERRIDE.exists()
    assert guard.state != "released" and not any(line.startswith("store") for line in guard.log)


@pytest.mark.parametrize("holders, total", [([], 3), (["app1"], 3), ([], 2)])
def test_without_a_majority_of_stores_the_cib_is_marked_first(guard, holders: list[str], total: int) -> None:
    """Stores short of a majority (not installed yet, down), or a cluster of two nodes
    (no majority without both): the order before the stores, CIB mark and quorum first."""
    _poll(guard)
    guard.cluster.holders, guard.cluster.total = holders, total
    guard.server.sample["waiting"] = 1
    guard.log.clear()
    _poll(guard, times=5)
    assert guard.state == "released" and guard.cib_unmarked == []
    assert guard.log[:6] == ["quorate=True", "store app2", "mark app2=0", "quorate=True", "override",
                             "SET GLOBAL rpl_semi_sync_master_enabled = OFF"]


@pytest.mark.parametrize("quorum", [[True, False]])
def test_a_cib_first_release_without_quorum_after_the_mark_keeps_waiting(guard, quorum: list[bool]) -> None:
    _poll(guard)
    guard.cluster.holders, guard.cluster.quorum = [], list(quorum)
    guard.server.sample["waiting"] = 1
    _poll(guard, times=20)
    assert not any("enabled = OFF" in line for line in guard.log) and guard.state != "released"


def test_the_marks_order_above_each_other_whatever_the_clocks(guard) -> None:
    """An out-of-sync mark is above the node's in-sync mark, and an in-sync mark above the
    stored marks, even when another node's clock wrote the one before (far ahead here)."""
    ahead = G.wall_ms() + 10**9
    guard.cluster.values["app2"] = guard.cluster.in_sync_of["app2"] = ahead
    _poll(guard)
    guard.server.sample["waiting"] = 1
    _poll(guard, times=5)
    assert guard.state == "released" and guard.cluster.stored["app2"] == ahead + 1 == guard.released_mark
    assert guard.cluster.values["app2"] == 0  # the CIB mark (its in-sync mark was older)
    guard.server.sample.update(waiting=0)
    _poll(guard, seconds=5.0)  # semi-sync on again (a replica connected and caught up)
    guard.server.sample["yes_tx"] += 1
    _poll(guard)
    assert guard.state == "in-sync" and guard.cluster.values["app2"] > ahead + 1


def test_a_late_cib_mark_never_overwrites_a_newer_in_sync_mark(guard) -> None:
    _poll(guard)
    guard.cluster.refuse = True  # the CIB takes nothing for now
    guard.server.sample["waiting"] = 1
    _poll(guard, times=5)
    assert guard.state == "released" and guard.cib_unmarked == ["app2"]
    guard.cluster.refuse = False
    guard.cluster.values["app2"] = guard.released_mark + 1  # marked in sync since (a switchover)
    _poll(guard, seconds=1.0)
    assert guard.cib_unmarked == [] and guard.cluster.values["app2"] == guard.released_mark + 1


def test_the_cib_mark_is_tried_again_only_while_released(guard) -> None:
    """A CIB call can block for seconds: never while commits may wait on the guard's
    stall check (probing, in sync), nor once it is no longer the primary (the
    promotion's check writes the mark itself then)."""
    _poll(guard)
    guard.cluster.refuse = True
    guard.server.sample["waiting"] = 1
    _poll(guard, times=5)
    assert guard.state == "released" and guard.cib_unmarked == ["app2"]
    guard.log.clear()
    _poll(guard, seconds=1.0)
    assert "quorate=True" in guard.log  # released: tried again
    guard.server.sample["read_only"] = 1  # demoted
    _poll(guard)
    guard.cluster.refuse = False
    guard.log.clear()
    _poll(guard, seconds=1.0, times=3)
    assert guard.state == "idle" and guard.log == [] and guard.cluster.marks == {}


def test_no_in_sync_mark_while_the_stores_marks_are_unreadable(guard) -> None:
    guard.server.sample.update(clients=0, caught_up=0)
    _poll(guard)
    guard.server.sample.update(clients=1, caught_up=1)
    _poll(guard, seconds=5.0)
    assert guard.state == "probing"
    guard.cluster.stored_marks = lambda node: None  # no majority of the stores answers
    guard.server.sample["yes_tx"] += 1
    _poll(guard, times=3)
    assert guard.state == "probing" and guard.cluster.marks == {"app2": "0"}
    guard.cluster.stored_marks = lambda node: [guard.released_mark + 50]
    _poll(guard)
    assert guard.state == "in-sync" and guard.cluster.values["app2"] > guard.released_mark + 50


def test_a_cib_that_takes_the_mark_late_does_not_hold_the_commits(guard) -> None:
    """A lost node: corosync delivers no CIB write until its new membership. The marks a
    majority holds stand in meanwhile; the CIB's mark is tried again each second."""
    _poll(guard)
    guard.cluster.refuse = True
    guard.server.sample["waiting"] = 1
    _poll(guard, times=5)
    assert guard.state == "released" and "SET GLOBAL rpl_semi_sync_master_enabled = OFF" in guard.log
    assert guard.cluster.marks == {}
    guard.server.sample.update(clients=0, caught_up=0)  # the replica's node is gone
    guard.log.clear()
    _poll(guard, times=3)
    assert "mark app2=0" not in guard.log and guard.log.count("quorate=True") == 0  # not before a second
    guard.cluster.refuse = False
    _poll(guard, seconds=1.0)
    assert guard.cluster.marks == {"app2": "0"} and guard.cib_unmarked == []
    guard.log.clear()
    _poll(guard, seconds=1.0, times=2)
    assert guard.log == []  # written: not again, and no second release


def test_a_replica_gone_is_marked_after_the_stall_even_without_commits(guard) -> None:
    _poll(guard)
    guard.server.sample.update(clients=0, caught_up=0)
    _poll(guard)
    assert guard.state == "probing"  # a blip of the connection is not a departure
    _poll(guard, times=round(G.STALL_S / G.POLL_S) + 2)
    assert guard.state == "released" and guard.cluster.marks == {"app2": "0"}


def test_just_promoted_with_no_replica_releases_at_once(guard) -> None:
    guard.server.sample.update(clients=0, caught_up=0)
    _poll(guard)
    assert guard.state == "released" and guard.cluster.marks == {"app2": "0"}


def test_semi_sync_comes_back_once_the_replica_caught_up_and_is_in_sync_after_an_ack(guard) -> None:
    guard.server.sample.update(clients=0, caught_up=0)
    _poll(guard)
    guard.server.sample.update(clients=1, caught_up=0)
    _poll(guard, seconds=5.0)
    assert guard.state == "released"  # still reading the binlog
    guard.server.sample["caught_up"] = 1
    _poll(guard, seconds=5.0)
    assert guard.state == "probing" and guard.log[-1] == "SET GLOBAL rpl_semi_sync_master_enabled = ON"
    assert guard.cluster.marks == {"app2": "0"}  # not before an acknowledgement
    _poll(guard, seconds=G.PROOF_AFTER_S + 0.1)
    assert guard.proofs == [1]  # a quiet stack: the guard writes the commit to be acknowledged
    guard.server.sample["yes_tx"] += 1
    _poll(guard)
    assert guard.state == "in-sync" and guard.cluster.marks == {"app2": "1"} and not G.OVERRIDE.exists()


@pytest.mark.parametrize("member", [False, None])
def test_semi_sync_stays_off_for_a_replica_whose_node_left_the_membership(guard, member) -> None:
    """A crashed replica's connection outlives it on the primary (until TCP gives up): it
    looks connected and caught up. Only a node in the membership gets semi-sync back."""
    guard.server.sample.update(clients=0, caught_up=0)
    _poll(guard)
    guard.server.sample.update(clients=1, caught_up=1)  # the dead node's connection
    guard.cluster.member = member
    _poll(guard, seconds=5.0, times=3)
    if member is None:  # the membership unreadable: as before, tried
        assert guard.state == "probing"
        return
    assert guard.state == "released" and not any("enabled = ON" in line for line in guard.log)
    guard.cluster.member = True  # back in the membership
    _poll(guard, seconds=30.0)
    assert guard.state == "probing" and guard.log[-1] == "SET GLOBAL rpl_semi_sync_master_enabled = ON"


def test_mariadb_falling_back_on_its_own_is_marked_too(guard) -> None:
    _poll(guard)
    guard.server.sample["yes_tx"] = 11
    _poll(guard)
    guard.server.sample["status"] = "OFF"  # the backstop ran out (enabled stays ON)
    _poll(guard)
    assert guard.state == "released" and guard.cluster.marks == {"app2": "0"}


def test_a_replica_is_left_alone_and_loses_an_old_override(guard) -> None:
    G.OVERRIDE.write_text("stale")
    guard.server.sample["read_only"] = 1
    _poll(guard, times=3)
    assert guard.state == "idle" and guard.log == [] and not G.OVERRIDE.exists()


@pytest.mark.parametrize("peers", [None, []])
def test_no_release_when_the_nodes_to_mark_are_unknown(guard, peers) -> None:
    _poll(guard)
    guard.cluster.peer_list = peers
    guard.server.sample["waiting"] = 1
    _poll(guard, times=20)
    assert not any("enabled = OFF" in line for line in guard.log) and guard.state != "released"


# What `cibadmin --query --xpath` printed for the guard's query on a Debian 13 node
# (its CIB_file holding a pcs-made mariadb-clone): both matches inside <xpath-query>.
FOUND = """<xpath-query>
  <nodes>
    <node id="1" uname="s-app1"/>
    <node id="2" uname="s-app2"/>
    <node id="3" uname="s-w"/>
  </nodes>
  <nvpair id="mariadb-instance_attributes-node_list" name="node_list" value="s-app2 s-app3 s-app1"/>
</xpath-query>"""
QUERY = ("cibadmin", "--query", "--xpath", G.NODES_AND_NODE_LIST)


def test_the_guard_lists_every_other_app_node_the_cib_knows_even_a_dead_one() -> None:
    calls = {QUERY: (0, FOUND), ("crm_node", "--name"): (0, "s-app1\n")}
    asked: list[tuple[str, ...]] = []

    class Canned(G.Cluster):
        def run(self, *argv: str):
            asked.append(argv)
            rc, out = calls[argv]
            return G.subprocess.CompletedProcess(argv, rc, out, "")
    cluster = Canned()
    assert cluster.peers() == ["s-app2"]  # s-app3: never in the cluster; s-app1: itself
    # a node attribute of that name is not the resource's
    calls[QUERY] = (0, FOUND.replace('<node id="2" uname="s-app2"/>',
                                     '<node id="2" uname="s-app2"><instance_attributes id="n2">'
                                     '<nvpair id="n2-l" name="node_list" value="s-w"/></instance_attributes></node>'))
    assert cluster.peers() == ["s-app2"]
    # its own name is asked once; the CIB every time (a scale-out may change it)
    assert asked.count(("crm_node", "--name")) == 1 and len(asked) == 3, asked
    calls[QUERY] = (0, FOUND)
    only_nodes = FOUND[FOUND.index("<nodes>"):FOUND.index("</nodes>") + len("</nodes>")]
    for broken in [(1, ""), (0, "<xpath-query"), (0, only_nodes)]:  # no node_list: nothing to mark by
        calls[QUERY] = broken
        assert cluster.peers() is None, broken
    calls[QUERY] = (0, FOUND)
    calls[("crm_node", "--name")] = (1, "")
    assert Canned().peers() is None  # its own name unknown: it could mark itself


def test_the_peers_in_sync_marks_are_their_instance_attributes_only() -> None:
    found = FOUND.replace('<node id="2" uname="s-app2"/>',
                          '<node id="2" uname="s-app2"><instance_attributes id="n2">'
                          '<nvpair id="n2-s" name="do-ha-db-in-sync" value="1700000000000"/></instance_attributes>'
                          '<utilization id="u2"><nvpair id="u2-s" name="do-ha-db-in-sync" value="9"/></utilization>'
                          '</node>')
    calls = {QUERY: (0, found), ("crm_node", "--name"): (0, "s-app1\n")}

    class Canned(G.Cluster):
        def run(self, *argv: str):
            rc, out = calls[argv]
            return G.subprocess.CompletedProcess(argv, rc, out, "")
    cluster = Canned()
    assert cluster.peers() == ["s-app2"] and cluster.in_sync_of == {"s-app2": 1700000000000}


def test_the_stores_marks_count_only_when_a_majority_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    # the real client (cloudinit/app/sync-marks), the stores' answers stood in for
    stores = load_node_script("app/sync-marks", "sync_marks_for_guard")
    stores.answer = ({"a": 1, "w": 5}, 3)

    def read_majority(node: str, nodes: object = None, every: bool = False) -> tuple[dict[str, int], int]:
        assert every  # every answering node's marks, not the first majority's
        return stores.answer
    monkeypatch.setattr(stores, "read_majority", read_majority)
    cluster = G.Cluster()
    monkeypatch.setattr(cluster, "_stores", lambda: stores)
    assert sorted(cluster.stored_marks("s-app2")) == [1, 5]
    stores.answer = ({"w": 5}, 3)
    assert cluster.stored_marks("s-app2") is None
    stores.answer = ({}, 2)  # two nodes: the CIB's marks only
    assert cluster.stored_marks("s-app2") == []
    stores.answer = ({}, 0)
    assert cluster.stored_marks("s-app2") is None


def test_whether_a_peer_is_in_the_membership_is_read_from_crm_node() -> None:
    listed = "1 s-app1 member\n2 s-app2 lost\n3 s-w member\n"
    calls = {QUERY: (0, FOUND), ("crm_node", "--name"): (0, "s-app1\n"), ("crm_node", "--list"): (0, listed)}

    class Canned(G.Cluster):
        def run(self, *argv: str):
            rc, out = calls[argv]
            return G.subprocess.CompletedProcess(argv, rc, out, "")
    assert Canned().any_peer_member() is False  # s-app2 lost (s-app1 is this node, s-w no app node)
    calls[("crm_node", "--list")] = (0, listed.replace("s-app2 lost", "s-app2 member"))
    assert Canned().any_peer_member() is True
    calls[("crm_node", "--list")] = (1, "")
    assert Canned().any_peer_member() is None


def test_a_missing_pacemaker_tool_is_a_failed_call_not_a_dead_guard() -> None:
    done = G.Cluster().run("/nonexistent/tool")
    assert done.returncode == 124


FAKE_CLIENT = f"""#!{sys.executable}
import sys, time
for line in sys.stdin:
    line = line.strip()
    if line == "SELECT 'do-ha-end';":
        print("do-ha-end", flush=True)
    elif line.startswith("HANG"):
        time.sleep(30)
    elif line.startswith("QUIT"):
        sys.exit(0)
    else:
        print("row-1\\t" + line, flush=True)
        print("row-2", flush=True)
"""


def test_the_server_client_reads_rows_and_gives_up_on_a_hung_or_gone_client(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mariadb").write_text(FAKE_CLIENT)
    (tmp_path / "mariadb").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    server = G.Server()
    server.READ_TIMEOUT_S = 1.0
    assert server.query("SELECT 1") == ["row-1\tSELECT 1;", "row-2"]
    assert server.query("SELECT 2") == ["row-1\tSELECT 2;", "row-2"]  # the same client, in step
    with pytest.raises(OSError, match="no answer"):
        server.query("HANG")
    assert server.proc is None  # killed: the next query starts a new client
    assert server.query("SELECT 3") == ["row-1\tSELECT 3;", "row-2"]
    with pytest.raises(OSError, match="ended"):
        server.query("QUIT")
    server.close()
