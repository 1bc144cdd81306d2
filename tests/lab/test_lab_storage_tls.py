"""GlusterFS over TLS on the lab's nodes: glusterd's management port and every brick
take only TLS connections whose client certificate the storage CA issued, the mounts
say both of their paths are encrypted, and the volume admits the members by name."""

from __future__ import annotations

import re
import shlex
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from lab import replay
from lab.stack import lab_nodes, lab_plan
from lab.topology import LabNode
from tests.helpers.day2 import apps, writes_through_the_reserved_ip
from tests.helpers.lab_support import Admin
from tests.lab.test_lab_cluster import _promoted, _settled, _wait

pytestmark = pytest.mark.lab
GLUSTERD_PORT = 24007
MEMBERS = "do-ha-stack-lab-app1,do-ha-stack-lab-app2,do-ha-stack-lab-witness"

# Run on a node as root: a TLS connection to HOST:PORT verified against the CA file
# CA (the server's certificate must name HOST), with the client certificate CERT/KEY
# ("-": none). A server that refuses the client closes or alerts; one that accepts
# waits for the client's first RPC.
PROBE = r"""
import socket, ssl, sys
host, port, cert, key, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=ca)
ctx.verify_flags &= ~ssl.VERIFY_X509_STRICT  # GlusterFS's OpenSSL verifies without it
if cert != "-":
    ctx.load_cert_chain(cert, key)
try:
    with socket.create_connection((host, port), 5) as raw, ctx.wrap_socket(raw, server_hostname=host) as tls:
        tls.settimeout(3)
        try:
            print("closed" if not tls.recv(1) else "answered")
        except TimeoutError:
            print("accepted")
except (ssl.SSLError, OSError) as e:
    print("refused", type(e).__name__, e)
"""


def _probe(node: LabNode, host: str, port: int, cert: str = "/etc/ssl/glusterfs.pem",
           key: str = "/etc/ssl/glusterfs.key", ca: str = "/etc/ssl/glusterfs.ca") -> str:
    return Admin(node).sudo(f"python3 -c {shlex.quote(PROBE)} {host} {port} {cert} {key} {ca}").stdout.strip()


def _brick_port(node: LabNode, host: str) -> int:
    status = Admin(node).sudo("gluster volume status shared").stdout
    match = re.search(rf"^Brick {re.escape(host)}:\S*\s*\n?\s*\S*\s+(\d+)\s", status, re.MULTILINE)
    assert match, status
    return int(match.group(1))


def test_glusterfs_takes_only_tls_from_the_members_certificates(nodes: list[LabNode]) -> None:
    _assert_tls_only(nodes)


def _assert_tls_only(nodes: list[LabNode]) -> None:
    app1, witness = nodes[0], nodes[-1]
    info = Admin(app1).sudo("gluster volume info shared").stdout
    for option in ("client.ssl: on", "server.ssl: on", f"auth.ssl-allow: {MEMBERS}"):
        assert option in info, info
    for node in nodes:
        assert Admin(node).sudo("test -e /var/lib/glusterd/secure-access", check=False).returncode == 0, node.name
    for app in nodes[:-1]:
        line = Admin(app).sudo("grep -h 'SSL support' /var/log/glusterfs/srv-shared.log", check=False).stdout
        assert "SSL support for MGMT is ENABLED IO path is ENABLED" in line.splitlines()[-1], (app.name, line)

    # A throwaway certificate from another CA, for the refusal.
    Admin(witness).sudo("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 "
                        "-subj /CN=do-ha-stack-lab-app2 -keyout /root/other.key -out /root/other.pem")
    try:
        for port in (GLUSTERD_PORT, _brick_port(app1, app1.private_ip)):
            # a TLS handshake at all: a plain server would fail it
            assert _probe(witness, app1.private_ip, port) == "accepted", port
            assert _probe(witness, app1.private_ip, port, "-", "-").startswith(("refused", "closed")), port
            assert _probe(witness, app1.private_ip, port, "/root/other.pem", "/root/other.key").startswith(
                ("refused", "closed")), port
    finally:
        Admin(witness).sudo("rm -f /root/other.key /root/other.pem")


# --- a stack from before TLS ------------------------------------------------------------

MOVED_STEPS = ("cluster-node", "storage-volume", "shared-mount")
SHARED_WRITER = ("nohup bash -c 'while [ ! -e /root/tls-move.stop ]; do t=$(date +%s.%N); "
                 "if echo $t > /srv/shared/tls-move-$(hostname) 2>/dev/null; then echo ok $t; else echo fail $t; fi; "
                 "sleep 0.1; done' > /root/tls-move.log 2>&1 &")


def _on_every_node(nodes: list[LabNode], command: str) -> None:
    with ThreadPoolExecutor(len(nodes)) as pool:  # at once, as a pool can only switch all together
        list(pool.map(lambda n: Admin(n).sudo(command), nodes))


def _make_plain(nodes: list[LabNode]) -> None:
    """The pool as a release before TLS left it: no TLS files, no secure-access, the
    volume's I/O plain, mounts made without TLS."""
    app1, witness = nodes[0], nodes[-1]
    kept = "/root/glusterfs-kept"  # the witness's TLS files, to show the pool no longer speaks TLS
    Admin(witness).sudo(f"sh -c 'mkdir -p {kept} && cp /etc/ssl/glusterfs.* {kept}/'")
    for option in ("client.ssl", "server.ssl", "auth.ssl-allow"):
        Admin(app1).sudo(f"gluster volume reset shared {option}")
    _on_every_node(nodes, "sh -c 'rm -f /var/lib/glusterd/secure-access /etc/ssl/glusterfs.* && "
                          "systemctl reset-failed glusterd && systemctl restart glusterd'")
    _wait("the plain pool connected", 60, lambda: Admin(app1).sudo("gluster peer status").stdout.count(
        "Peer in Cluster (Connected)") == len(nodes) - 1)
    Admin(app1).sudo("gluster --mode=script volume stop shared")
    Admin(app1).sudo("gluster volume start shared")
    _on_every_node(apps(nodes), "sh -c 'umount -l /srv/shared; mount /srv/shared'")
    plain = _probe(witness, app1.private_ip, GLUSTERD_PORT, f"{kept}/glusterfs.pem", f"{kept}/glusterfs.key",
                   f"{kept}/glusterfs.ca")
    Admin(witness).sudo(f"rm -rf {kept}")
    assert plain.startswith("refused"), plain  # no TLS handshake: the pool is plain
    _wait("the plain mounts writable", 60, lambda: all(
        Admin(n).sudo("touch /srv/shared/.plain", check=False).returncode == 0 for n in apps(nodes)))


def _failure_windows(log: str) -> list[float]:
    """The lengths of the runs of failed writes in a shared writer's log."""
    windows: list[float] = []
    first: float | None = None
    for outcome, t in (line.split() for line in log.splitlines() if line.startswith(("ok ", "fail "))):
        if outcome == "fail":
            first = first or float(t)
        elif first is not None:
            windows.append(round(float(t) - first, 2))
            first = None
    if first is not None:
        windows.append(float("inf"))  # still failing at the end
    return windows


@pytest.mark.disruptive(order=-1)  # it stops and starts the shared volume
def test_a_volume_that_ran_plain_moves_to_tls_in_one_up(nodes: list[LabNode], report: dict) -> None:
    """A stack deployed before TLS: its next `up` carries the TLS files (cluster-node),
    the volume's TLS options (storage-volume) and the mounts' TLS flag (storage-mount):
    those steps run, the pool moves, /srv/shared comes back on its own, and the
    database never notices."""
    nodes = lab_nodes()
    _wait("a settled cluster", 300, lambda: _settled(nodes))
    _make_plain(nodes)
    names = {c["name"] for c in lab_plan(nodes) if c["name"].endswith(MOVED_STEPS)}
    replay.forget_commands(names)  # what the new release changed in their inputs

    for node in apps(nodes):
        Admin(node).sudo(f"sh -c {shlex.quote('rm -f /root/tls-move.stop; ' + SHARED_WRITER)}")
    record: dict[str, dict] = {}
    try:
        with writes_through_the_reserved_ip("storage-tls", _promoted(nodes)) as load:
            replay.replay_all(lab_plan(nodes), load.around(sorted(names)), record=record)
        time.sleep(2)
    finally:
        for node in apps(nodes):
            Admin(node).sudo("touch /root/tls-move.stop")
    assert set(record) == names, record

    _assert_tls_only(nodes)
    windows = {}
    for node in apps(nodes):
        log = Admin(node).sudo("cat /root/tls-move.log").stdout
        windows[node.name] = _failure_windows(log)
        assert log.splitlines()[-1].startswith("ok "), (node.name, log[-500:])  # written again after the move
        assert max(windows[node.name], default=0) != float("inf"), node.name
    report["storage_tls_move"] = {"shared_write_outage_s": {n: max(w, default=0) for n, w in windows.items()},
                                  "canary": load.figures(), "steps": record}
    assert load.failed == [], load.failed[:5]  # the database does not depend on the volume
    assert replay.replay_all(lab_plan(nodes)) == 0


# --- GlusterFS 11.1's stale brick port (cloudinit/app/gluster-reconnect) ---------------------

RECONNECT_TIMER = "do-ha-gluster-reconnect.timer"
BRICK_DOWN_S = 10
DEAD_PORT = 49999  # outside the bricks' port range (infra/ports.py): no brick listens there
PORT_HOLDER = "do-ha-lab-hold-brick-port"
# Listens on the port in argv[1] for two minutes, longer than the waits it spans
# (SO_REUSEADDR: the dead brick's connections may linger in TIME_WAIT; glusterd's
# own bind test has no such flag).
HOLD_PORT = """
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen()
time.sleep(120)
"""


def _wait_brick_moved(node: LabNode, host: str, old: int, seconds: float = 60) -> None:
    """Until the brick on `host` is listed online on a port other than `old`; a timeout
    shows what glusterd lists."""
    try:
        _wait(f"{host}'s brick online on a new port (was {old})", seconds,
              lambda: _online_port(node, host) not in (None, old))
    except AssertionError as e:
        status = Admin(node).sudo("gluster volume status shared", check=False)
        pytest.fail(f"{e}\n{status.stdout}{status.stderr}")


def _client_pids(node: LabNode) -> dict[str, str]:
    """The node's GlusterFS clients: the mount's FUSE process (the youngest) and the self-heal daemon."""
    admin = Admin(node)
    fuse = [line.split(None, 2) for line in admin.sudo("ps -C glusterfs -o pid=,etimes=,args=").stdout.splitlines()
            if " --process-name fuse " in line and line.rstrip().endswith(" /srv/shared")]
    assert fuse, f"no FUSE process serves /srv/shared on {node.name}"  # mid-remount: _wait looks again
    return {"mount": min(fuse, key=lambda f: int(f[1]))[0],
            "self-heal-daemon": admin.sudo("cat /run/gluster/shd/shared/shared-shd.pid").stdout.strip()}


def _clients_cut_off(node: LabNode, host: str, port: int) -> list[str]:
    """Which of the node's GlusterFS clients hold no connection to the brick at host:port."""
    held = Admin(node).sudo(f"ss -Htnp state established dst {host}:{port}").stdout
    return sorted(name for name, pid in _client_pids(node).items() if f"pid={pid}," not in held)


def _online_port(node: LabNode, host: str) -> int | None:
    try:
        return _brick_port(node, host)
    except AssertionError:  # listed without a port: not running (yet)
        return None


def _heal_backlog(node: LabNode) -> int:
    info = Admin(node).sudo("gluster volume heal shared info", check=False).stdout
    counts = re.findall(r"^Number of entries: (\d+)", info, re.MULTILINE)
    return sum(map(int, counts)) if counts else -1


@pytest.mark.disruptive(order=-1)  # it kills a brick
def test_a_brick_restarted_on_a_new_port_is_found_again(nodes: list[LabNode], report: dict) -> None:
    """app2's brick process dies and is started again (on a new port) while app1
    writes: every app node's mount and self-heal daemon reach the new port, and the
    heal backlog empties. Clients mostly find the port by themselves; the watch may
    restart only a client cut off from that brick on its new port."""
    nodes = lab_nodes()
    _wait("a settled cluster", 300, lambda: _settled(nodes))
    app_nodes = apps(nodes)
    app1, app2 = app_nodes[0], app_nodes[1]
    since = Admin(app1).sudo("date +%s").stdout.strip()
    old = _brick_port(app1, app2.private_ip)
    Admin(app2).sudo("pkill -KILL -x glusterfsd")
    Admin(app1).sudo("sh -c 'for i in 1 2 3 4 5; do date > /srv/shared/reconnect-probe-$i; done'")
    time.sleep(BRICK_DOWN_S)  # down a while, as until an operator or storage-volume starts it
    # glusterd picks a brick's port at random in the range and may pick the old one
    # again (about one start in a hundred): held here, it cannot.
    Admin(app2).sudo(f"systemd-run --unit={PORT_HOLDER} --collect python3 -c {shlex.quote(HOLD_PORT)} {old}")
    try:
        _wait(f"port {old} held on app2", 10,
              lambda: Admin(app2).sudo(f"ss -Hltn 'sport = :{old}'").stdout.strip() != "")
        Admin(app2).sudo("gluster volume start shared force")
        _wait_brick_moved(app1, app2.private_ip, old)
    finally:
        Admin(app2).sudo(f"systemctl stop {PORT_HOLDER}", check=False)
    new = _brick_port(app1, app2.private_ip)
    started = time.monotonic()
    _wait("every client connected to app2's brick", 90,
          lambda: not any(_clients_cut_off(n, app2.private_ip, new) for n in app_nodes))
    reconnected_s = round(time.monotonic() - started, 1)
    _wait("the heal backlog empty", 180, lambda: _heal_backlog(app1) == 0)
    acted = {n.name: _watch_lines(n, since) for n in app_nodes}
    report.setdefault("gluster_reconnect", {})["brick_restarted"] = {
        "brick_port": [old, new], "all_clients_connected_s": reconnected_s, "watch_restarted": acted}
    for name, lines in acted.items():
        restarts = [line for line in lines if "restarting it" in line]
        assert all(f"brick {app2.private_ip}:{new} " in line for line in restarts), (name, restarts)
    Admin(app1).sudo("sh -c 'rm -f /srv/shared/reconnect-probe-*'")


def _watch_lines(node: LabNode, since: str) -> list[str]:
    journal = Admin(node).sudo(f"journalctl -t do-ha-stack --since @{since} --no-pager -o cat").stdout
    return [line.split("gluster-reconnect: ", 1)[1] for line in journal.splitlines() if "gluster-reconnect: " in line]


@pytest.mark.disruptive(order=-1)  # it mounts /srv/shared on app1 again
def test_a_mount_stuck_on_a_dead_brick_port_is_mounted_again(nodes: list[LabNode], report: dict) -> None:
    """What GlusterFS 11.1's client does once it was handed a dead brick's port (it
    never asks glusterd again), made on purpose: app1's mount is made again with its
    connection to app2's brick pinned to a port nothing listens on. Writes go on to
    the other bricks. The watch finds the mount cut off, mounts it again, and the
    heal backlog empties."""
    nodes = lab_nodes()
    _wait("a settled cluster", 300, lambda: _settled(nodes))
    app1, app2 = apps(nodes)[0], apps(nodes)[1]
    admin = Admin(app1)
    bricks = re.findall(r"^Brick\d+: ([^:]+):", admin.sudo("gluster volume info shared").stdout, re.MULTILINE)
    pinned = f"shared-client-{bricks.index(app2.private_ip)}.remote-port={DEAD_PORT}"
    since = admin.sudo("date +%s").stdout.strip()
    admin.sudo(f"systemctl stop {RECONNECT_TIMER}")
    # The watch's memory: a restart of its own within the hold-off (an earlier run)
    # would hold this one back (the hold-off is tests/unit/test_gluster_reconnect.py's).
    admin.sudo("rm -f /run/do-ha-stack/gluster-reconnect.json")
    try:
        admin.sudo("umount -l /srv/shared")
        admin.sudo(f"glusterfs --process-name fuse --volfile-server={app1.private_ip} --volfile-id=/shared "
                   f"--xlator-option={pinned} /srv/shared")
        admin.sudo("sh -c 'for i in 1 2 3 4 5; do date > /srv/shared/stuck-probe-$i; done'")
        time.sleep(10)  # the client retries every 3 s: it stays cut off
        port = _brick_port(app1, app2.private_ip)
        assert _clients_cut_off(app1, app2.private_ip, port) == ["mount"]
    finally:
        admin.sudo(f"systemctl start {RECONNECT_TIMER}")
    started = time.monotonic()
    _wait("app1's mount connected to app2's brick", 90, lambda: _clients_cut_off(app1, app2.private_ip, port) == [])
    remounted_s = round(time.monotonic() - started, 1)
    # mounted by its mount unit, as at boot: it outlives the watch's run
    mount_pid = _client_pids(app1)["mount"]
    assert "srv-shared.mount" in admin.sudo(f"cat /proc/{mount_pid}/cgroup").stdout
    _wait("the heal backlog empty", 180, lambda: _heal_backlog(app1) == 0)
    assert _clients_cut_off(app1, app2.private_ip, port) == []
    acted = [line for line in _watch_lines(app1, since) if "restarting it" in line]
    report.setdefault("gluster_reconnect", {})["mount_stuck"] = {"remounted_after_s": remounted_s,
                                                                 "watch_restarted": acted}
    assert len(acted) == 1 and acted[0].startswith("mount /srv/shared (pid ") and \
        f"brick {app2.private_ip}:{port} for 2 checks" in acted[0], acted
    # what was written while the mount missed app2's brick is on that brick now
    assert Admin(app2).sudo("test -s /var/lib/do-ha-stack/bricks/shared/stuck-probe-5", check=False).returncode == 0
    admin.sudo("sh -c 'rm -f /srv/shared/stuck-probe-*'")
