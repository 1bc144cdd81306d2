"""The sync marks' store and client (cloudinit/app/sync-marks): a store keeps the highest
mark per node durably; only signed requests are served and only signed answers count;
a majority is reached without waiting for a dead or hung node; the promotion's check
refuses a node whose newest mark is newer than its in-sync mark (and marks it out of
sync in the CIB), or when no majority answers. Real stores on loopback addresses here;
the lab runs them on the nodes (tests/lab/test_lab_chaos.py)."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from infra.ports import CLUSTER_TCP_PORT_RANGES
from tests.helpers.node_scripts import load_node_script
from tests.helpers.stubs import write_stubs

M = load_node_script("app/sync-marks", "sync_marks")


@pytest.fixture
def authkey(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    key = tmp_path / "authkey"
    key.write_bytes(os.urandom(256))
    monkeypatch.setattr(M, "AUTHKEY", key)
    return key


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def stores(tmp_path: Path, authkey: Path, monkeypatch: pytest.MonkeyPatch):
    """Start stores on loopback addresses; yields start(address, key=None) -> Store."""
    port = _free_port()
    monkeypatch.setattr(M, "PORT", port)
    servers = []

    def start(address: str, key: Path | None = None) -> object:
        directory = tmp_path / f"store-{address}"
        directory.mkdir()
        server = M.Server((address, port), M.Handler)
        server.store = M.Store(directory)
        if key is not None:  # a store keyed otherwise (another cluster's)
            server.secret = lambda: M.hmac.new(key.read_bytes(), b"do-ha-stack sync marks", M.hashlib.sha256).digest()
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.store

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_the_store_keeps_the_highest_mark_durably(tmp_path: Path) -> None:
    store = M.Store(tmp_path)
    assert store.get("app2") == 0
    assert store.put({"app2": 500, "app3": 7}) == {"app2": 500, "app3": 7}
    assert store.put({"app2": 300}) == {"app2": 500}  # an older mark (a request sent twice) changes nothing
    assert (tmp_path / "app2").read_text() == "500\n" and M.Store(tmp_path).get("app2") == 500
    assert not list(tmp_path.glob(".*.tmp"))


def test_only_signed_requests_are_served_and_answers_are_signed(tmp_path: Path) -> None:
    store, key, nonce = M.Store(tmp_path), b"k" * 32, "0" * 32
    request = f"put {nonce} app2=5"
    good = M.answer(store, key, f"{request} {M.sign(key, f'req put {nonce} app2=5')}")
    status, payload, mac = good.split(" ")
    assert (status, payload) == ("ok", "app2=5") and mac == M.sign(key, f"ans {nonce} ok app2=5")
    assert M.answer(store, key, f"put {nonce} app2=9 {M.sign(key, f'req put {nonce} app2=5')}") == "err unsigned -"
    assert M.answer(store, b"x" * 32, f"{request} {M.sign(key, f'req put {nonce} app2=5')}") == "err unsigned -"
    assert store.get("app2") == 5
    for bad in ("", "put", f"put {nonce} ../etc=1 x", "get short app2 x"):
        assert M.answer(store, key, bad).startswith("err"), bad
    bad_name = f"get {nonce} ../x"
    assert M.answer(store, key, f"{bad_name} {M.sign(key, 'req get ' + nonce + ' ../x')}") == "err malformed -"


def test_marks_reach_a_majority_without_waiting_for_a_dead_or_hung_node(stores, monkeypatch) -> None:
    monkeypatch.setattr(M, "TIMEOUT_S", 30.0)
    a, b = stores("127.0.0.1"), stores("127.0.0.2")
    hung = socket.socket()  # accepts connections (the kernel's backlog) and never answers
    hung.bind(("127.0.0.3", M.PORT))
    hung.listen(8)
    try:
        nodes = [("app1", "127.0.0.1"), ("app2", "127.0.0.2"), ("witness", "127.0.0.3")]
        started = time.monotonic()
        holders, total = M.put_majority({"app2": 1234}, nodes)
        assert total == 3 and holders == ["app1", "app2"]
        assert time.monotonic() - started < M.TIMEOUT_S / 2  # at the majority, not at the hung node's timeout
        assert a.get("app2") == 1234 and b.get("app2") == 1234
        marks, total = M.read_majority("app2", nodes)
        assert marks == {"app1": 1234, "app2": 1234}
        # one store left (and a node with nothing listening): short of a majority
        holders, _ = M.put_majority({"app2": 2000}, [("app1", "127.0.0.1"), ("x", "127.0.0.4"), ("y", "127.0.0.5")])
        assert holders == ["app1"]
    finally:
        hung.close()


def test_an_answer_signed_with_another_key_does_not_count(stores, tmp_path: Path) -> None:
    other = tmp_path / "other-authkey"
    other.write_bytes(os.urandom(256))
    stores("127.0.0.1")
    foreign = stores("127.0.0.2", key=other)
    stores("127.0.0.3")
    nodes = [("app1", "127.0.0.1"), ("app2", "127.0.0.2"), ("witness", "127.0.0.4")]  # nothing on .4
    holders, total = M.put_majority({"app2": 99}, nodes)
    assert (holders, total) == (["app1"], 3)  # 1 of 3 is no majority
    assert foreign.get("app2") == 0  # and our request was unsigned to it


def test_text_that_is_not_ascii_is_refused_not_a_crash(stores) -> None:
    store = stores("127.0.0.1")
    with socket.create_connection(("127.0.0.1", M.PORT), timeout=5) as s:
        s.sendall(("put " + "0" * 32 + " app2=5 " + "\u00e9" * 64 + "\n").encode())
        assert s.makefile("rb").readline().startswith(b"err unsigned")
    assert store.get("app2") == 0
    assert not M.same("\u00e9" * 64, "a" * 64)


def test_two_nodes_have_no_majority_but_both_so_no_store_is_asked(stores) -> None:
    store = stores("127.0.0.1")
    two = [("app1", "127.0.0.1"), ("app2", "127.0.0.2")]
    assert M.put_majority({"app2": 7}, two) == ([], 2) and store.get("app2") == 0
    assert M.read_majority("app2", two) == ({}, 2)


CMAPCTL = """nodelist.local_node_pos (u32) = 0
nodelist.node.0.name (str) = s-app1
nodelist.node.0.nodeid (u32) = 1
nodelist.node.0.ring0_addr (str) = 10.99.0.11
nodelist.node.1.name (str) = s-app2
nodelist.node.1.nodeid (u32) = 2
nodelist.node.1.ring0_addr (str) = 10.99.0.12
nodelist.node.2.name (str) = s-w
nodelist.node.2.nodeid (u32) = 3
nodelist.node.2.ring0_addr (str) = 10.99.0.13
"""


def test_the_voters_are_corosyncs_node_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "out").write_text(CMAPCTL)
    bin_dir = write_stubs(tmp_path / "bin", {"corosync-cmapctl": f'[ "$1" = nodelist.node. ] && cat {tmp_path}/out'})
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    assert M.voters() == [("s-app1", "10.99.0.11"), ("s-app2", "10.99.0.12"), ("s-w", "10.99.0.13")]
    (tmp_path / "out").write_text("")
    assert M.voters() == []


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch):
    """check() with the majority's marks, the CIB's in-sync mark and its writes stood in for."""
    state = {"marks": ({"s-app1": 0, "s-w": 0}, 3), "in_sync": 5000, "written": []}
    monkeypatch.setattr(M, "read_majority", lambda node, *_args, **_kwargs: state["marks"])
    monkeypatch.setattr(M, "in_sync_mark", lambda node: state["in_sync"])

    def run(argv, **_kwargs):
        state["written"].append(" ".join(argv))
        return M.subprocess.CompletedProcess(argv, 0, "", "")
    monkeypatch.setattr(M.subprocess, "run", run)
    return state


def test_the_promotion_gate(gate, capsys: pytest.CaptureFixture[str]) -> None:
    assert M.check("s-app2") == 0 and gate["written"] == []  # no mark at all
    gate["marks"] = ({"s-app1": 4000, "s-w": 4000}, 3)
    assert M.check("s-app2") == 0  # marked out of sync, then in sync since
    gate["marks"] = ({"s-app2": 0, "s-w": 6000}, 3)  # one of the majority holds a newer mark
    assert M.check("s-app2") == 1
    assert gate["written"] == ["crm_attribute --lifetime forever --node s-app2 --update 0 --name do-ha-db-in-sync"]
    said = capsys.readouterr().out
    assert "held by s-w" in said and "sync-marks mark-in-sync s-app2" in said
    gate["in_sync"] = 1  # an in-sync mark from before the marks' time: any mark is newer
    gate["marks"] = ({"s-app2": 0, "s-w": 3}, 3)
    assert M.check("s-app2") == 1
    gate["written"].clear()
    gate["marks"], gate["in_sync"] = ({"s-w": 0}, 3), 5000  # one answer of three: no majority
    assert M.check("s-app2") == 1 and gate["written"] == []
    assert "only 1 of 3 nodes answered" in capsys.readouterr().out
    gate["marks"] = ({}, 0)  # corosync's node list unreadable
    assert M.check("s-app2") == 1
    gate["marks"] = ({}, 2)  # two nodes: the CIB decides (its rule; the guard marks it first there)
    assert M.check("s-app2") == 0
    gate["marks"], gate["in_sync"] = ({"s-app1": 0, "s-w": 0}, 3), None  # the CIB does not answer
    assert M.check("s-app2") == 1
    assert M.check("../etc") == 1


def test_an_operators_in_sync_mark_is_above_every_stored_mark(gate, capsys) -> None:
    gate["marks"] = ({"s-app1": 0, "s-w": M.now_ms() + 10**9}, 3)  # a mark from a clock far ahead
    assert M.mark_in_sync("s-app2") == 0
    [written] = gate["written"]
    value = int(written.split("--update ")[1].split()[0])
    assert value == gate["marks"][0]["s-w"] + 1
    gate["in_sync"] = value
    assert M.check("s-app2") == 0  # now promotable
    gate["written"].clear()
    gate["marks"] = ({"s-w": 0}, 3)  # no majority answers: not marked (the stores may hold newer)
    assert M.mark_in_sync("s-app2") == 1 and gate["written"] == []
    gate["marks"] = ({}, 0)  # corosync's node list unreadable: the stores unknown
    assert M.mark_in_sync("s-app2") == 1 and gate["written"] == []


def test_a_mark_a_minority_holds_is_read_for_an_in_sync_mark(stores) -> None:
    """A promotion reads any majority, so an in-sync mark must be above the marks of
    every node that answers, not only the first majority's."""
    stores("127.0.0.1"), stores("127.0.0.2")
    third = stores("127.0.0.3")
    third.put({"app2": 99})  # left by a release that reached it alone
    nodes = [("app1", "127.0.0.1"), ("app2", "127.0.0.2"), ("witness", "127.0.0.3")]
    marks, _ = M.read_majority("app2", nodes, every=True)
    assert marks == {"app1": 0, "app2": 0, "witness": 99}


def test_the_port_is_the_one_the_firewalls_open() -> None:
    assert CLUSTER_TCP_PORT_RANGES["sync-marks"] == (int(os.environ.get("SYNC_MARKS_PORT", "7410")),) * 2
    assert 'PORT = int(os.environ.get("SYNC_MARKS_PORT", "7410"))' in Path(M.__file__).read_text()


def test_the_guard_and_the_agent_find_the_store_where_cluster_node_installs_it() -> None:
    from infra.cluster import SYNC_MARKS_PATH, SYNC_MARKS_UNIT
    from infra.paths import CLOUDINIT_DIR
    assert f'"SYNC_GUARD_MARKS", "{SYNC_MARKS_PATH}"' in (CLOUDINIT_DIR / "app/db-sync-guard").read_text()
    assert f"SYNC_MARKS=${{DO_HA_SYNC_MARKS:-{SYNC_MARKS_PATH}}}" in (CLOUDINIT_DIR / "agents/mariadb").read_text()
    unit = (CLOUDINIT_DIR / "steps/templates/do-ha-sync-marks.service").read_text()
    assert f"ExecStart={SYNC_MARKS_PATH} serve" in unit and SYNC_MARKS_UNIT.endswith("/do-ha-sync-marks.service")
    assert "Before=pacemaker.service" in unit
