"""The watch that restarts a GlusterFS client stuck on a brick's old port
(cloudinit/app/gluster-reconnect): what it reads from `gluster volume status --xml`,
`ss` and /proc, when it acts (only a client missing a brick several checks in a row,
while the brick answers on its port, and at most once per hold-off), and what it
runs then, against stand-ins for gluster, ss, mount and umount. The lab reproduces
the stuck client itself (tests/lab/test_lab_storage_tls.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.node_scripts import load_node_script
from tests.helpers.stubs import write_stubs

G = load_node_script("app/gluster-reconnect", "gluster_reconnect")
B = G.Brick


def _node(host: str, path: str, status: int, port: str, pid: int) -> str:
    return (f"<node><hostname>{host}</hostname><path>{path}</path><status>{status}</status><port>{port}</port>"
            f"<ports><tcp>{port}</tcp><rdma>N/A</rdma></ports><pid>{pid}</pid></node>")


def status_xml(*nodes: str, op_ret: int = 0, errstr: str = "") -> str:
    return (f'<?xml version="1.0"?><cliOutput><opRet>{op_ret}</opRet><opErrno>0</opErrno><opErrstr>{errstr}'
            f"</opErrstr><volStatus><volumes><volume><volName>shared</volName>{''.join(nodes)}"
            "</volume></volumes></volStatus></cliOutput>")


BRICKS = [_node("10.99.0.11", "/b", 1, "49218", 4160), _node("10.99.0.12", "/b", 1, "49154", 4851),
          _node("10.99.0.13", "/b", 1, "49245", 4176)]
SHD_HERE = _node("Self-heal Daemon", "localhost", 1, "N/A", 4196)
SHD_THERE = _node("Self-heal Daemon", "10.99.0.12", 1, "N/A", 4870)

# `ss -Htnp state established` on app1 (the lab): the mount (4539) and the daemon (4196).
SS = """\
0      0        10.99.0.11:49141  10.99.0.11:24007 users:(("glusterfs",pid=4539,fd=9))
0      0        10.99.0.11:49134  10.99.0.12:49154 users:(("glusterfs",pid=4539,fd=11))
0      0        10.99.0.11:49140  10.99.0.12:49154 users:(("glusterfs",pid=4196,fd=13))
0      0        10.99.0.11:49133  10.99.0.13:49245 users:(("glusterfs",pid=4539,fd=12))
0      0        10.99.0.11:49139  10.99.0.13:49245 users:(("glusterfs",pid=4196,fd=11))
0      0        10.99.0.11:49135  10.99.0.11:49218 users:(("glusterfs",pid=4539,fd=10))
0      0        10.99.0.11:49218  10.99.0.11:49135 users:(("glusterfsd",pid=4160,fd=272))
0      0         127.0.0.1:49148   127.0.0.1:24007 users:(("glusterfs",pid=4196,fd=9))
0      0    [::ffff:10.0.0.1]:22  [::ffff:10.0.0.9]:5000 users:(("sshd",pid=77,fd=3),("sshd",pid=78,fd=3))
"""


INFO = """
Volume Name: shared
Type: Replicate
Status: Started
Number of Bricks: 1 x (2 + 1) = 3
Bricks:
Brick1: 10.99.0.11:/var/lib/do-ha-stack/bricks/shared
Brick2: 10.99.0.12:/var/lib/do-ha-stack/bricks/shared
Brick3: 10.99.0.13:/var/lib/do-ha-stack/bricks/shared (arbiter)
Options Reconfigured:
auth.allow: 10.99.0.11,10.99.0.12,10.99.0.13
"""
PEERS = """Number of Peers: 2

Hostname: 10.99.0.12
Uuid: f7527b4b-3589-4094-a589-43f8546d62d3
State: Peer in Cluster (Disconnected)

Hostname: 10.99.0.13
Uuid: 4e27f0e5-0582-4897-9e04-845324acb15b
State: Peer in Cluster (Connected)
"""


def test_brick_hosts_and_the_peers_glusterd_cannot_reach() -> None:
    assert G.brick_hosts(INFO) == ["10.99.0.11", "10.99.0.12", "10.99.0.13"]
    assert G.disconnected_peers(PEERS) == {"10.99.0.12"}


def test_status_gives_the_online_bricks_with_their_ports() -> None:
    down = _node("10.99.0.14", "/b", 0, "N/A", -1)
    assert G.online_bricks(status_xml(*BRICKS, down, SHD_HERE, SHD_THERE)) == [
        B("10.99.0.11", 49218), B("10.99.0.12", 49154), B("10.99.0.13", 49245)]


def test_a_failed_status_is_an_error_not_an_empty_volume() -> None:
    with pytest.raises(ValueError, match="Volume shared does not exist"):
        G.online_bricks(status_xml(op_ret=-1, errstr="Volume shared does not exist"))


def test_connections_by_process() -> None:
    conns = G.connections(SS)
    assert conns[4539] == {B("10.99.0.11", 24007), B("10.99.0.12", 49154), B("10.99.0.13", 49245),
                           B("10.99.0.11", 49218)}
    assert conns[4196] == {B("10.99.0.12", 49154), B("10.99.0.13", 49245), B("127.0.0.1", 24007)}
    assert conns[77] == conns[78] == {B("10.0.0.9", 5000)}  # an IPv4-mapped peer as its IPv4 address


def _proc(root: Path, pid: int, argv: list[str], started: int) -> None:
    d = root / str(pid)
    d.mkdir()
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    # /proc/PID/stat: the start time is field 22; a command name with a space and ")" in it
    fields = ["S"] + ["0"] * 18 + [str(started)] + ["0"] * 10
    (d / "stat").write_text(f"{pid} (gluster fs)) " + " ".join(fields) + "\n")


def test_the_mounts_client_is_the_youngest_fuse_process_for_it(tmp_path: Path) -> None:
    fuse = ["/usr/sbin/glusterfs", "--process-name", "fuse", "--volfile-server=10.99.0.11", "--volfile-id=/shared"]
    _proc(tmp_path, 100, [*fuse, "/srv/shared"], started=500)  # lazily unmounted, still serving an open file
    _proc(tmp_path, 200, [*fuse, "/srv/shared"], started=900)
    _proc(tmp_path, 300, [*fuse, "/srv/other"], started=999)
    _proc(tmp_path, 400, ["/usr/sbin/glusterfs", "-p", "/run/gluster/shd/shared/shared-shd.pid",
                          "--process-name", "glustershd", "/srv/shared"], started=999)
    (tmp_path / "self").mkdir()
    assert G.fuse_client("/srv/shared", tmp_path) == 200
    assert G.fuse_client("/srv/none", tmp_path) is None


HOSTS = ["10.99.0.11", "10.99.0.12", "10.99.0.13"]
# 10.99.0.12's brick moved to another port; the client still reaches that node's glusterd only.
HELD = {B("10.99.0.11", 49218), B("10.99.0.13", 49245), B("10.99.0.12", 24007)}


def test_a_client_missing_a_brick_is_due_on_the_second_check_in_a_row() -> None:
    clients = {"mount": 10, "daemon": 20}
    conns = {10: HELD, 20: HELD | {B("10.99.0.12", 49200)}}
    state, due = G.decide(clients, HOSTS, conns, {}, now=1000, misses=2, holdoff_s=300)
    assert due == {}
    state, due = G.decide(clients, HOSTS, conns, state, now=1015, misses=2, holdoff_s=300)
    assert due == {"mount": ["10.99.0.12"]}


def test_a_client_that_reconnects_starts_counting_again() -> None:
    clients = {"mount": 10}
    state, _ = G.decide(clients, HOSTS, {10: HELD}, {}, now=0, misses=2, holdoff_s=300)
    state, due = G.decide(clients, HOSTS, {10: HELD | {B("10.99.0.12", 49200)}}, state, now=15, misses=2,
                          holdoff_s=300)
    assert due == {} and state["misses"]["mount"] == {}
    state, due = G.decide(clients, HOSTS, {10: HELD}, state, now=30, misses=2, holdoff_s=300)
    assert due == {}


def test_a_new_process_starts_counting_afresh() -> None:
    state, _ = G.decide({"mount": 10}, HOSTS, {10: HELD}, {}, now=0, misses=2, holdoff_s=300)
    state, due = G.decide({"mount": 11}, HOSTS, {11: HELD}, state, now=15, misses=2, holdoff_s=300)
    assert due == {} and state["misses"]["mount"] == {"10.99.0.12": 1}


def test_a_brick_only_just_back_is_looked_at_once_more_before_a_restart() -> None:
    due = {"mount": ["10.99.0.12"]}
    back = [B("10.99.0.11", 49218), B("10.99.0.12", 49200)]
    assert G.confirmed(due, back, {}, lambda b: True) == ({}, True)  # down at the last look
    assert G.confirmed(due, back, {"10.99.0.12": 49100}, lambda b: True) == ({}, True)  # on another port then
    assert G.confirmed(due, back, {"10.99.0.12": 49200}, lambda b: True) == ({"mount": [B("10.99.0.12", 49200)]},
                                                                            False)
    assert G.confirmed(due, back, {"10.99.0.12": 49200}, lambda b: False) == ({}, False)  # nothing answers
    assert G.confirmed(due, back[:1], {"10.99.0.12": 49200}, lambda b: True) == ({}, False)  # not online


def test_a_client_is_restarted_at_most_once_per_holdoff_and_one_not_running_is_left_alone() -> None:
    state = {"misses": {"mount": {"10.99.0.12": 5}}, "pids": {"mount": 10}, "restarted": {"mount": 1000.0}}
    _, due = G.decide({"mount": 10, "daemon": None}, HOSTS, {10: HELD}, state, now=1200, misses=2, holdoff_s=300)
    assert due == {}
    _, due = G.decide({"mount": 10}, HOSTS, {10: HELD}, state, now=1300, misses=2, holdoff_s=300)
    assert due == {"mount": ["10.99.0.12"]}


# --- the whole script, as the timer runs it ------------------------------------------------

STUB = {
    "gluster": r"""echo "gluster $*" >> "$STUB/calls"
case "$*" in
"volume info shared") cat "$STUB/info" ;;
"peer status") cat "$STUB/peers" ;;
"--mode=script volume status shared --xml") cat "$STUB/status.xml" ;;
esac""",
    "ss": 'cat "$STUB/ss"',
    "umount": 'echo "umount $*" >> "$STUB/calls"',
    "systemctl": 'echo "systemctl $*" >> "$STUB/calls"',
    "systemd-escape": 'echo srv-shared.mount',
}
LOOKS = ["gluster volume info shared", "gluster peer status"]
STATUS = "gluster --mode=script volume status shared --xml"


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = write_stubs(tmp_path / "bin", STUB)
    (tmp_path / "calls").write_text("")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("STUB", str(tmp_path))
    monkeypatch.setattr(G, "STATE", tmp_path / "run/state.json")
    return tmp_path


@pytest.fixture
def brick() -> Iterator[socket.socket]:
    """A port something listens on, as a restarted brick does."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener


def _setup(node: Path, brick_port: int, mount_pid: int, shd_pid: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """One brick, on 127.0.0.1:brick_port; both clients reach that node's glusterd only."""
    (node / "info").write_text("Bricks:\nBrick1: 127.0.0.1:/b\n")
    (node / "peers").write_text("Number of Peers: 0\n")
    (node / "status.xml").write_text(status_xml(
        _node("127.0.0.1", "/b", 1, str(brick_port), 1), _node("Self-heal Daemon", "localhost", 1, "N/A", shd_pid)))
    (node / "ss").write_text(f"0 0 127.0.0.1:1000 127.0.0.1:24007 users:((\"glusterfs\",pid={mount_pid},fd=9))\n"
                             f"0 0 127.0.0.1:1001 127.0.0.1:24007 users:((\"glusterfs\",pid={shd_pid},fd=9))\n")
    (node / "shd.pid").write_text(f"{shd_pid}\n")
    monkeypatch.setattr(G, "SHD_PIDFILE", str(node / "shd.pid"))
    monkeypatch.setattr(G, "fuse_client", lambda mountpoint: mount_pid)


def _runs(n: int) -> list[int]:
    return [G.main(["gluster-reconnect", "shared", "/srv/shared", "2", "300"]) for _ in range(n)]


def test_a_stuck_mount_and_heal_daemon_are_restarted_once_the_brick_is_seen_twice(
        node: Path, brick: socket.socket, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # A stand-in daemon: its command line names the pidfile, as glusterd starts it.
    daemon = subprocess.Popen(["bash", "-c", 'exec -a "glusterfs -p /run/gluster/shd/shared/shared-shd.pid" sleep 60'])
    try:
        _setup(node, brick.getsockname()[1], mount_pid=4242, shd_pid=daemon.pid, monkeypatch=monkeypatch)
        assert _runs(2) == [0, 0]
        # no lock taken on a first miss; the brick's port looked at on the second, not acted on
        assert (node / "calls").read_text().splitlines() == [*LOOKS, *LOOKS, STATUS]
        assert daemon.poll() is None
        assert _runs(1) == [0]
        daemon.wait(timeout=15)
        calls = (node / "calls").read_text().splitlines()[5:]
        assert calls == [*LOOKS, STATUS, "umount -l /srv/shared", "systemctl start srv-shared.mount",
                         "gluster --mode=script volume start shared force", "gluster --mode=script volume heal shared"]
        out = capsys.readouterr().out
        assert f"self-heal daemon (pid {daemon.pid}) has had no connection to brick 127.0.0.1:" in out
        assert "mount /srv/shared (pid 4242)" in out
        # and not again within the hold-off, though still cut off
        _runs(2)
        assert (node / "calls").read_text().count("umount") == 1
    finally:
        daemon.kill()


def test_a_client_that_finds_a_brick_back_by_itself_is_left_alone(node: Path, brick: socket.socket,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    port = brick.getsockname()[1]
    _setup(node, port, mount_pid=4242, shd_pid=os.getpid(), monkeypatch=monkeypatch)
    status_up = (node / "status.xml").read_text()
    (node / "status.xml").write_text(status_xml(_node("127.0.0.1", "/b", 0, "N/A", -1)))  # the brick down
    _runs(2)
    (node / "status.xml").write_text(status_up)  # back, on its port
    monkeypatch.setattr(G, "STATUS_BACKOFF_S", 0)
    _runs(1)  # looked at once: just back
    (node / "ss").write_text(f"0 0 127.0.0.1:1000 127.0.0.1:{port} users:((\"glusterfs\",pid=4242,fd=9))\n")
    _runs(3)  # the client reconnected by itself
    assert "umount" not in (node / "calls").read_text()


def test_a_failed_start_of_the_heal_daemon_is_tried_again(node: Path, brick: socket.socket,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    daemon = subprocess.Popen(["bash", "-c", 'exec -a "glusterfs -p /run/gluster/shd/shared/shared-shd.pid" sleep 60'])
    try:
        _setup(node, brick.getsockname()[1], mount_pid=4242, shd_pid=daemon.pid, monkeypatch=monkeypatch)
        monkeypatch.setattr(G, "LOCK_RETRIES", 2)
        (node / "bin/gluster").write_text((node / "bin/gluster").read_text().replace("esac", (
            '"--mode=script volume start shared force") if [ -e "$STUB/refuse-start" ]; then '
            'echo "Another transaction is in progress for shared." >&2; exit 1; fi ;;\nesac')))
        (node / "refuse-start").touch()
        _runs(3)
        daemon.wait(timeout=15)
        assert (node / "calls").read_text().count("volume start shared force") == 2  # tried twice: the lock
        (node / "refuse-start").unlink()
        _runs(1)  # the daemon is gone: still started
        assert (node / "calls").read_text().count("volume start shared force") == 3
        _runs(1)
        assert (node / "calls").read_text().count("volume start shared force") == 3
    finally:
        daemon.kill()


def test_nothing_is_restarted_when_the_brick_does_not_answer_either(
        node: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port nothing listens on: glusterd's list is stale
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    _setup(node, closed, mount_pid=4242, shd_pid=os.getpid(), monkeypatch=monkeypatch)
    assert _runs(3) == [0, 0, 0]
    # one look at the ports, then none for STATUS_BACKOFF_S
    assert (node / "calls").read_text().splitlines() == [*LOOKS, *LOOKS, STATUS, *LOOKS]


def test_a_brick_on_a_node_glusterd_cannot_reach_is_not_judged(node: Path, brick: socket.socket,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    _setup(node, brick.getsockname()[1], mount_pid=4242, shd_pid=os.getpid(), monkeypatch=monkeypatch)
    (node / "peers").write_text("Hostname: 127.0.0.1\nUuid: x\nState: Peer in Cluster (Disconnected)\n")
    assert _runs(3) == [0, 0, 0]
    assert (node / "calls").read_text().splitlines() == LOOKS * 3


def test_a_pid_that_is_not_the_heal_daemon_is_never_killed(node: Path, brick: socket.socket,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    bystander = subprocess.Popen(["sleep", "60"])  # the pidfile's pid, now another process's
    try:
        _setup(node, brick.getsockname()[1], mount_pid=4242, shd_pid=bystander.pid, monkeypatch=monkeypatch)
        _runs(3)
        time.sleep(0.3)
        assert bystander.poll() is None
        calls = (node / "calls").read_text()
        assert "volume start" not in calls and "umount -l /srv/shared" in calls  # the mount alone
    finally:
        bystander.kill()


def test_no_volume_means_no_judgement(node: Path) -> None:
    (node / "peers").write_text("Number of Peers: 0\n")
    (node / "bin/gluster").write_text('#!/bin/bash\necho "gluster $*" >> "$STUB/calls"\n'
                                      '[ "$1" = volume ] && { echo "Volume shared does not exist" >&2; exit 1; }\n'
                                      'cat "$STUB/peers"\n')
    (node / "ss").write_text(SS)
    assert _runs(2) == [0, 0]
    assert not G.STATE.exists()


def test_a_refused_heal_request_is_made_again_at_the_next_run(node: Path, brick: socket.socket,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    _setup(node, brick.getsockname()[1], mount_pid=4242, shd_pid=os.getpid(), monkeypatch=monkeypatch)
    refuse = node / "refuse-heal"
    refuse.touch()
    (node / "bin/gluster").write_text((node / "bin/gluster").read_text().replace(
        "esac", '"--mode=script volume heal shared") if [ -e "$STUB/refuse-heal" ]; then exit 1; fi ;;\nesac'))
    _runs(3)  # the mount restarted, the heal refused
    refuse.unlink()
    _runs(2)  # asked again once, then no more
    heals = [c for c in (node / "calls").read_text().splitlines() if c.endswith("volume heal shared")]
    assert len(heals) == 2 and (node / "calls").read_text().count("umount") == 1
