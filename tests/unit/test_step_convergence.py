"""The membership steps converge a running cluster to what the program declares.

cluster-setup and storage-volume run here as the program renders them (lib.sh
included), against stand-ins for pcs, crm_node, cibadmin, crm_mon and gluster
that answer from a small recorded state and log every command: a replaced node
(same name, new address) leaves and joins again, its brick moves, its old peer is
detached, and a second run with nothing changed does nothing. The lab tier
(tests/lab/test_lab_replace.py) proves the same against the real tools.
"""

from __future__ import annotations

import os
import sys
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from infra.remote import step_script
from tests.helpers.stacks import plain_config
from tests.unit.test_step_args import passed_args
from tooling.mocks import Addresses, run_program
from tests.helpers.stubs import write_stubs

NAME = "do-ha-stack-t"
BRICK = "/var/lib/do-ha-stack/bricks/shared"

# Each stand-in logs its argv to $STUB/calls and answers from files in $STUB.
STUBS = {
    "pcs": r"""
echo "pcs $*" >> "$STUB/calls"
case "$1 $2" in
"cluster corosync") cat "$STUB/corosync.conf" ;;
"cluster setup")
	shift 3; : > "$STUB/members"
	while [ "$#" -gt 1 ] && [ "${2#addr=}" != "$2" ]; do echo "$1 ${2#addr=}" >> "$STUB/members"; shift 2; done
	: > "$STUB/totem"; set_totem "$@"
	render_conf ;;
"cluster config") shift 3; set_totem "$@"; render_conf ;;
"cluster node")
	if [ "$3" = remove ]; then grep -v "^$4 " "$STUB/members" > "$STUB/m" || true; mv "$STUB/m" "$STUB/members"
	else echo "$4 ${5#addr=}" >> "$STUB/members"; fi
	render_conf ;;
esac
""",
    "crm_mon": r"""
n=$(wc -l < "$STUB/members")
for i in $(seq "$n"); do echo "<node name=\"n$i\" online=\"true\"/>"; done""",
    "cibadmin": r"""
if [ "$1" = --empty ]; then echo "cibadmin --empty" >> "$STUB/calls"; echo "<cib/>"; exit 0; fi
awk '{ print "<node id=\"" NR "\" uname=\"" $1 "\"/>" }' "$STUB/cib-nodes" """,
    "crm_attribute": r"""echo "crm_attribute $* (CIB_file ${CIB_file:+set})" >> "$STUB/calls" """,
    "crm_node": r"""echo "crm_node $*" >> "$STUB/calls" """,
    "logger": "true",
    "install": r"""echo "install $*" >> "$STUB/calls" """,
    "hostname": r"""echo "$SELF_IP" """,
    # like getent: exit 2 when the name is not found
    "getent": r"""grep -q " $2\$" "$STUB/hosts" || exit 2
awk -v n="$2" '$2 == n { print $1 "  STREAM " n }' "$STUB/hosts" """,
    "gluster": r"""
args=("$@"); [[ "${args[0]}" == --* ]] && args=("${args[@]:1}")
echo "gluster ${args[*]}" >> "$STUB/calls"
# busy: this many volume commands meet another node's operation (glusterd's lock)
busy=$(cat "$STUB/busy" 2>/dev/null || echo 0)
if [ "${args[0]}" = volume ] && [ "$busy" -gt 0 ]; then
	echo $((busy - 1)) > "$STUB/busy"
	echo "Another transaction is in progress for shared. Please try again after some time." >&2; exit 1
fi
case "${args[0]} ${args[1]}" in
"pool list")
	echo "UUID Hostname State"; echo "u0 localhost Connected"
	while read -r ip state; do echo "u-$ip $ip $state"; done < "$STUB/pool" ;;
"peer status")
	while read -r ip state; do
		printf 'Hostname: %s\nUuid: u-%s\nState: Peer in Cluster (%s)\n\n' "$ip" "$ip" "$state"
	done < "$STUB/pool" ;;
"peer probe") echo "${args[2]} Connected" >> "$STUB/pool" ;;
"peer detach") grep -v "^${args[2]} " "$STUB/pool" > "$STUB/p" || true; mv "$STUB/p" "$STUB/pool" ;;
"volume info")
	echo "Volume Name: shared"; echo "Status: $(cat "$STUB/status" 2>/dev/null || echo Started)"
	i=0; while read -r b; do i=$((i + 1)); echo "Brick$i: $b"; done < "$STUB/bricks" ;;
"volume set") { grep -v "^${args[3]} " "$STUB/options" 2>/dev/null || true; echo "${args[3]} ${args[4]}"; } > "$STUB/o"
	mv "$STUB/o" "$STUB/options" ;;
"volume get")
	printf 'Option Value\n------ -----\n'
	grep "^${args[3]} " "$STUB/options" 2>/dev/null || echo "${args[3]} off" ;;
"volume stop") echo Stopped > "$STUB/status" ;;
"volume start") echo Started > "$STUB/status"
	if [ "${args[3]:-}" = force ]; then
		rm -f "$STUB/heal-down"
		# shd-stuck: this node's self-heal daemon refuses heals until started again ("forever": always)
		[ "$(cat "$STUB/shd-stuck" 2>/dev/null)" = forever ] || rm -f "$STUB/shd-stuck"
	fi ;;
"volume replace-brick") sed -i "s|^${args[3]}\$|${args[4]}|" "$STUB/bricks" ;;
"volume heal")
	# heal-down: a brick (its number) not running until `start force`; pending: entries
	# on the first brick; heal-lost: requests taken but lost; info-fails: glusterd gone
	pending=$(cat "$STUB/pending" 2>/dev/null || echo 0)
	if [ "${args[3]:-}" = info ]; then
		if [ -e "$STUB/info-fails" ]; then
			echo "Connection failed. Please check if gluster daemon is operational."; exit 1
		fi
		i=0
		while read -r b; do
			i=$((i + 1))
			if [ "$i" = "$(cat "$STUB/heal-down" 2>/dev/null)" ]; then
				printf 'Brick %s\nStatus: Transport endpoint is not connected\nNumber of entries: -\n\n' "$b"
			else
				n=0; [ "$i" != 1 ] || n=$pending
				printf 'Brick %s\nStatus: Connected\nNumber of entries: %s\n\n' "$b" "$n"
			fi
		done < "$STUB/bricks"
	elif [ -e "$STUB/shd-stuck" ]; then
		echo "Launching heal operation to perform index self heal on volume shared has been unsuccessful:"
		echo "Glusterd Syncop Mgmt brick op 'Heal' failed. Please check glustershd log file for details."; exit 1
	elif [ -s "$STUB/heal-lost" ] && [ "$(cat "$STUB/heal-lost")" -gt 0 ]; then
		echo $(($(cat "$STUB/heal-lost") - 1)) > "$STUB/heal-lost"
	elif [ ! -e "$STUB/heal-down" ]; then
		echo 0 > "$STUB/pending"
	fi ;;
esac
""",
}
RENDER_CONF = r"""
# totem KEY=VALUE... (up to the next non-assignment) into $STUB/totem, replacing earlier values
set_totem() {
	while [ "$#" -gt 0 ] && [ "$1" != totem ]; do shift; done
	[ "$#" -gt 0 ] || return 0
	shift
	touch "$STUB/totem"
	while [ "$#" -gt 0 ] && [ "${1#*=}" != "$1" ]; do
		grep -v "^${1%%=*} " "$STUB/totem" > "$STUB/t" || true
		echo "${1%%=*} ${1#*=}" >> "$STUB/t"; mv "$STUB/t" "$STUB/totem"; shift
	done
}
render_conf() {
	{
		echo "totem {"; echo "    cluster_name: t"
		while read -r k v; do echo "    $k: $v"; done < <(cat "$STUB/totem" 2>/dev/null)
		echo "}"; echo "nodelist {"
		while read -r n a; do
			printf '    node {\n        ring0_addr: %s\n        name: %s\n    }\n' "$a" "$n"
		done < "$STUB/members"
		echo "}"
	} > "$STUB/corosync.conf"
}
"""


@pytest.fixture
def stub(tmp_path: Path) -> Path:
    write_stubs(tmp_path / "bin", STUBS, prelude=f"set -u\n{RENDER_CONF}\n")
    (tmp_path / "calls").write_text("")
    (tmp_path / "hosts").write_text("")
    return tmp_path


def run_step(stub: Path, step: str, args: dict[str, str], stdin: str = "", self_ip: str = "10.0.0.11",
             paths: dict[str, Path] | None = None) -> subprocess.CompletedProcess[str]:
    text = step_script(step)
    for path, replacement in (paths or {}).items():
        text = text.replace(path, str(replacement))
    (stub / "calls").write_text("")
    env = {"PATH": f"{stub / 'bin'}:{os.environ['PATH']}", "STUB": str(stub), "SELF_IP": self_ip}
    return subprocess.run(["bash", "-c", text, step, *(f"{k}={v}" for k, v in args.items())],
                          input=stdin, capture_output=True, text=True, env=env, timeout=60)


def calls(stub: Path, prefix: str) -> list[str]:
    return [c for c in (stub / "calls").read_text().splitlines() if c.startswith(prefix)]


# --- corosync / pacemaker -------------------------------------------------------------------

# corosync.conf's totem timings as the step sets them (setup_args)
TOTEM = {"token": "1200", "token_coefficient": "0", "consensus": "1440", "join": "100"}


def cluster(stub: Path, members: dict[str, str], cib_nodes: list[str],
            totem: dict[str, str] | None = None) -> None:
    (stub / "members").write_text("".join(f"{n} {a}\n" for n, a in members.items()))
    (stub / "totem").write_text("".join(f"{k} {v}\n" for k, v in (TOTEM if totem is None else totem).items()))
    (stub / "cib-nodes").write_text("".join(f"{n}\n" for n in cib_nodes))
    subprocess.run(["bash", "-c", f"{RENDER_CONF}\nrender_conf"], env={**os.environ, "STUB": str(stub)}, check=True)


def setup_args(members: dict[str, str]) -> dict[str, str]:
    return {"CLUSTER_NAME": "t", "MEMBERS": " ".join(f"{n}={a}" for n, a in members.items()),
            "TOKEN_MS": "1200", "TOKEN_COEFFICIENT_MS": "0", "CONSENSUS_MS": "1440", "JOIN_MS": "100",
            "START_WAIT_S": "5", "DC_DEADTIME": "5s",
            "STICKINESS": "200", "MIGRATION_THRESHOLD": "3", "FAILURE_TIMEOUT": "120s", "NO_QUORUM_POLICY": "stop",
            "LOAD_THRESHOLD": "400%", "PE_ERROR_SERIES_MAX": "4000",
            "TRANSITION_DELAY": "100ms"}


def setup(stub: Path, members: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # The step knows its cluster exists by /etc/corosync/corosync.conf: here, the stand-in's.
    return run_step(stub, "cluster-setup", setup_args(members), stdin="secret HACLUSTER_PASSWORD cHc=\n",
                    paths={"/etc/corosync/corosync.conf": stub / "corosync.conf"})


OLD = {f"{NAME}-app1": "10.0.0.11", f"{NAME}-app2": "10.0.0.12", f"{NAME}-witness": "10.0.0.13"}
NEW = OLD | {f"{NAME}-app2": "10.0.0.22"}


def test_a_re_addressed_member_leaves_and_joins_again_at_its_new_address(stub: Path) -> None:
    cluster(stub, OLD, list(OLD))
    result = setup(stub, NEW)
    assert result.returncode == 0, result.stderr
    assert calls(stub, "pcs cluster node") == [
        f"pcs cluster node remove {NAME}-app2 --force",
        f"pcs cluster node add {NAME}-app2 addr=10.0.0.22 --enable --start --wait=5"]
    assert f"{NAME}-app2 10.0.0.22" in (stub / "members").read_text()


def test_a_new_cluster_starts_from_a_cib_that_already_holds_its_dc_deadtime(stub: Path) -> None:
    # No corosync.conf of ours: the cluster is formed. pcs sets it up without
    # starting it, the control node's CIB gets dc-deadtime and fencing off (until
    # cluster-resources adds the device), then the cluster starts.
    (stub / "cib-nodes").write_text("".join(f"{n}\n" for n in OLD))
    result = setup(stub, OLD)
    assert result.returncode == 0, result.stderr
    steps = ("pcs cluster setup", "cibadmin --empty", "crm_attribute", "install -o", "pcs cluster start")
    order = [c for c in (stub / "calls").read_text().splitlines() if c.startswith(steps)
             and "transition-delay" not in c]
    assert [" ".join(c.split()[:3]) for c in order] == [
        "pcs cluster setup", "cibadmin --empty", "crm_attribute --type crm_config", "crm_attribute --type crm_config",
        "install -o hacluster", "pcs cluster start"], order
    assert "--start" not in order[0] and order[0].endswith(" --enable")
    # written into the file, not a running CIB
    assert order[2] == "crm_attribute --type crm_config --name dc-deadtime --update 5s (CIB_file set)"
    assert order[3] == "crm_attribute --type crm_config --name stonith-enabled --update false (CIB_file set)"
    assert order[4].endswith(" /var/lib/pacemaker/cib/cib.xml") and "-m 0600" in order[4]
    # the property stays set on the running cluster too, fencing is not touched there
    # (cluster-resources turns it on), and the scheduler's error inputs are bounded
    props = calls(stub, "pcs property set")
    assert any("dc-deadtime=5s" in c and "pe-error-series-max=4000" in c for c in props), props
    assert not any("stonith" in c for c in props), props
    # the scheduler's wait after a change, in milliseconds (which pcs refuses), on the running CIB
    assert calls(stub, "crm_attribute --type crm_config --name transition-delay") == [
        "crm_attribute --type crm_config --name transition-delay --update 100ms (CIB_file )"]


def test_a_second_run_changes_no_membership(stub: Path) -> None:
    cluster(stub, NEW, list(NEW))
    result = setup(stub, NEW)
    assert result.returncode == 0, result.stderr
    assert calls(stub, "pcs cluster node") == [] and calls(stub, "crm_node") == []
    # a cluster formed before the setting gets it too
    assert calls(stub, "crm_attribute --type crm_config --name transition-delay --update 100ms")


def test_a_cluster_formed_with_other_failure_timings_gets_the_declared_ones_in_place(stub: Path) -> None:
    # formed before token_coefficient was set (corosync then adds 650 ms per node
    # beyond two), with an older token
    cluster(stub, OLD, list(OLD), totem={"token": "3000", "consensus": "1440", "join": "100"})
    result = setup(stub, OLD)
    assert result.returncode == 0, result.stderr
    assert calls(stub, "pcs cluster config") == ["pcs cluster config update totem token=1200 token_coefficient=0"]
    assert calls(stub, "pcs cluster node") == [] and calls(stub, "pcs cluster setup") == []
    # and once they are in place, nothing more
    result = setup(stub, OLD)
    assert result.returncode == 0, result.stderr
    assert calls(stub, "pcs cluster config") == []


def test_a_new_cluster_is_formed_with_the_declared_failure_timings(stub: Path) -> None:
    (stub / "cib-nodes").write_text("".join(f"{n}\n" for n in OLD))
    result = setup(stub, OLD)
    assert result.returncode == 0, result.stderr
    [formed] = calls(stub, "pcs cluster setup")
    assert " totem token=1200 token_coefficient=0 consensus=1440 join=100 " in formed
    assert calls(stub, "pcs cluster config") == []


def test_members_added_and_removed_and_leftover_pacemaker_nodes_forgotten(stub: Path) -> None:
    gone = f"{NAME}-app3"
    cluster(stub, OLD | {gone: "10.0.0.14"}, [*OLD, gone, f"{NAME}-app9"])
    result = setup(stub, OLD)
    assert result.returncode == 0, result.stderr
    assert calls(stub, "pcs cluster node") == [f"pcs cluster node remove {gone} --force"]
    # the stand-in's CIB still lists both; pacemaker is told to forget them
    assert calls(stub, "crm_node") == [f"crm_node --force --remove {gone}", f"crm_node --force --remove {NAME}-app9"]

    cluster(stub, OLD, list(OLD))
    result = setup(stub, OLD | {f"{NAME}-app3": "10.0.0.14"})
    assert result.returncode == 0, result.stderr
    assert calls(stub, "pcs cluster node") == [
        f"pcs cluster node add {NAME}-app3 addr=10.0.0.14 --enable --start --wait=5"]


def test_two_members_changed_at_once_are_refused_before_anything_changes(stub: Path) -> None:
    cluster(stub, OLD, list(OLD))
    result = setup(stub, NEW | {f"{NAME}-witness": "10.0.0.23"})
    assert result.returncode != 0
    assert "one node at a time" in result.stderr
    assert calls(stub, "pcs cluster node") == []


# --- GlusterFS ----------------------------------------------------------------------------------

def volume(stub: Path, pool: dict[str, str], bricks: list[str]) -> None:
    (stub / "pool").write_text("".join(f"{ip} {state}\n" for ip, state in pool.items()))
    (stub / "bricks").write_text("".join(f"{ip}:{BRICK}\n" for ip in bricks))


def storage_args(bricks: list[str], clients: tuple[str, ...] = ()) -> dict[str, str]:
    peers = [*bricks, *clients]
    return {"VOLUME": "shared", "BRICK_DIR": BRICK, "ARBITER": "yes", "ALLOW": ",".join(peers),
            "TLS_ALLOW": ",".join(f"{NAME}-{ip}" for ip in peers), "PEERS": " ".join(peers), "BRICKS": " ".join(bricks),
            "PING_TIMEOUT_S": "5", "QUORUM_TYPE": "auto", "PROBE_TIMEOUT_S": "5", "HEAL_WAIT_S": "5",
            "HEAL_NUDGE_S": "1"}


def storage(stub: Path, bricks: list[str], clients: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    # the self-heal daemon's pidfile in the stub, never a real one on this machine
    return run_step(stub, "storage-volume", storage_args(bricks, clients), paths={"/run/gluster/shd": stub / "shd"})


def test_a_replaced_peer_gets_the_old_brick_and_the_old_peer_is_detached(stub: Path) -> None:
    volume(stub, {"10.0.0.12": "Disconnected", "10.0.0.13": "Connected"}, ["10.0.0.11", "10.0.0.12", "10.0.0.13"])
    result = storage(stub, ["10.0.0.11", "10.0.0.22", "10.0.0.13"])
    assert result.returncode == 0, result.stderr
    assert calls(stub, "gluster peer probe") + calls(stub, "gluster peer detach") == [
        "gluster peer probe 10.0.0.22", "gluster peer detach 10.0.0.12"]
    assert calls(stub, "gluster volume replace-brick") == [
        f"gluster volume replace-brick shared 10.0.0.12:{BRICK} 10.0.0.22:{BRICK} commit force"]
    assert (stub / "bricks").read_text().split() == [f"10.0.0.{h}:{BRICK}" for h in (11, 22, 13)]

    second = storage(stub, ["10.0.0.11", "10.0.0.22", "10.0.0.13"])
    assert second.returncode == 0, second.stderr
    assert calls(stub, "gluster peer probe") + calls(stub, "gluster peer detach") == []
    assert calls(stub, "gluster volume replace-brick") == []


def test_a_command_that_meets_another_nodes_operation_is_tried_again(stub: Path) -> None:
    bricks = ["10.0.0.11", "10.0.0.12", "10.0.0.13"]
    volume(stub, {"10.0.0.12": "Connected", "10.0.0.13": "Connected"}, bricks)
    (stub / "busy").write_text("3\n")
    result = storage(stub, bricks)
    assert result.returncode == 0, result.stderr
    assert calls(stub, "gluster volume info")[:4] == ["gluster volume info shared"] * 4  # 3 refused, then taken
    (stub / "busy").write_text("100\n")  # held for good: the step fails, naming glusterd's reason
    result = storage(stub, bricks)
    assert result.returncode != 0 and "Another transaction is in progress" in result.stderr, result.stderr


def stalled_heal(stub: Path, pending: int, **state: str) -> list[str]:
    """A healthy pool whose volume has `pending` entries to heal on its first brick, and
    the stub's heal state (`heal_down`: a brick not running, `heal_lost`: requests taken
    but lost, `shd_stuck`: a daemon that refuses until restarted, `info_fails`); its bricks."""
    bricks = ["10.0.0.11", "10.0.0.12", "10.0.0.13"]
    volume(stub, {"10.0.0.12": "Connected", "10.0.0.13": "Connected"}, bricks)
    (stub / "pending").write_text(f"{pending}\n")
    for name, value in state.items():
        (stub / name.replace("_", "-")).write_text(f"{value}\n" if value else "")
    return bricks


@contextmanager
def heal_daemon(stub: Path, is_shd: bool = True) -> Iterator[subprocess.Popen[bytes]]:
    """A process in the self-heal daemon's pidfile (the stub's /run/gluster/shd): one
    whose command line names that pidfile, as glustershd's does, or (is_shd False) a
    process that took over a stale pid."""
    pidfile = stub / "shd" / "shared" / "shared-shd.pid"
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    named = ["-p", "/var/run/gluster/shd/shared/shared-shd.pid"] if is_shd else []
    daemon = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *named])
    reaper = threading.Thread(target=daemon.wait)  # reaped as it dies, as init would
    reaper.start()
    pidfile.write_text(f"{daemon.pid}\n")
    try:
        yield daemon
    finally:
        daemon.kill()
        reaper.join()


def test_a_stalled_heal_is_asked_for_again_until_nothing_is_pending(stub: Path) -> None:
    # The first two requests are lost (made while the moved brick was coming up): the
    # step asks again after HEAL_NUDGE_S without progress instead of waiting out HEAL_WAIT_S.
    bricks = stalled_heal(stub, 6, heal_lost="2")
    with heal_daemon(stub) as daemon:
        result = storage(stub, bricks)
        assert daemon.poll() is None  # the requests were taken, not refused: no restart
    assert result.returncode == 0, result.stderr
    assert calls(stub, "gluster volume heal shared").count("gluster volume heal shared") == 3
    assert "healing shared (6 entries pending, 0 bricks not connected)" in result.stderr
    assert result.stderr.count("no heal progress in 1s (6 entries pending): asking again") == 2
    assert "self-heal daemon" not in result.stderr
    assert "nothing to heal" in result.stderr


def test_a_brick_that_is_not_running_is_started_and_then_healed(stub: Path) -> None:
    bricks = stalled_heal(stub, 6, heal_down="2")
    result = storage(stub, bricks)
    assert result.returncode == 0, result.stderr
    assert calls(stub, "gluster volume start shared force") == ["gluster volume start shared force"]
    assert "1 bricks of shared not connected: starting the ones not running" in result.stderr


def test_a_self_heal_daemon_that_refuses_to_heal_is_restarted(stub: Path) -> None:
    # GlusterFS 11.1: a daemon cut off from a brick that came back on another port
    # refuses every heal until it is restarted (seen in the lab after a brick restart).
    bricks = stalled_heal(stub, 9, shd_stuck="")
    with heal_daemon(stub) as daemon:
        result = storage(stub, bricks)
    assert daemon.returncode == -15  # stopped (TERM) by the step, then started again by start force
    assert result.returncode == 0, result.stderr
    assert result.stderr.count(f"restarting this node's self-heal daemon (pid {daemon.pid})") == 1
    assert calls(stub, "gluster volume start shared force") == ["gluster volume start shared force"]
    assert "nothing to heal" in result.stderr


def test_a_stale_pid_in_the_daemons_pidfile_is_left_alone(stub: Path) -> None:
    bricks = stalled_heal(stub, 9, shd_stuck="")
    with heal_daemon(stub, is_shd=False) as other:
        result = storage(stub, bricks)
        assert other.poll() is None  # not the daemon: never signalled
    assert result.returncode == 0, result.stderr
    assert "self-heal daemon is not running: starting it" in result.stderr
    assert calls(stub, "gluster volume start shared force") == ["gluster volume start shared force"]


def test_a_heal_that_never_ends_fails_the_step_with_its_backlog(stub: Path) -> None:
    bricks = stalled_heal(stub, 6, shd_stuck="forever")
    with heal_daemon(stub):
        result = storage(stub, bricks)
    assert result.returncode != 0
    assert "timed out after 5s waiting for shared to heal: 6 entries pending, 0 bricks not connected" in result.stderr
    assert len(calls(stub, "gluster volume status shared")) == 1  # its state, for the operator
    # the daemon restarted once only: again would start a long heal over
    assert result.stderr.count("restarting this node's self-heal daemon") == 1
    assert calls(stub, "gluster volume start shared force") == ["gluster volume start shared force"]


def test_a_heal_state_that_cannot_be_read_is_waited_for_not_acted_on(stub: Path) -> None:
    bricks = stalled_heal(stub, 0, info_fails="")
    with heal_daemon(stub) as daemon:
        result = storage(stub, bricks)
        assert daemon.poll() is None
    assert result.returncode != 0
    assert "waiting for shared to heal: Connection failed. Please check if gluster daemon is operational." \
        in result.stderr
    assert calls(stub, "gluster volume start shared force") == []


def test_two_bricks_moved_at_once_are_refused(stub: Path) -> None:
    volume(stub, {"10.0.0.12": "Disconnected", "10.0.0.13": "Disconnected"}, ["10.0.0.11", "10.0.0.12", "10.0.0.13"])
    result = storage(stub, ["10.0.0.11", "10.0.0.22", "10.0.0.23"])
    assert result.returncode != 0 and "one node at a time" in result.stderr
    assert calls(stub, "gluster volume replace-brick") == []


def test_a_changed_brick_count_is_refused_with_a_clear_message(stub: Path) -> None:
    volume(stub, {"10.0.0.12": "Connected", "10.0.0.13": "Connected"}, ["10.0.0.11", "10.0.0.12", "10.0.0.13"])
    result = storage(stub, ["10.0.0.11", "10.0.0.12", "10.0.0.14", "10.0.0.13"])
    assert result.returncode != 0 and "adding or removing bricks is not supported" in result.stderr


def test_an_added_app_node_joins_the_pool_without_a_brick_and_leaves_it_again(stub: Path) -> None:
    bricks = ["10.0.0.11", "10.0.0.12", "10.0.0.13"]
    volume(stub, {"10.0.0.12": "Connected", "10.0.0.13": "Connected"}, bricks)
    result = storage(stub, bricks, clients=("10.0.0.14",))
    assert result.returncode == 0, result.stderr
    assert calls(stub, "gluster peer probe") == ["gluster peer probe 10.0.0.14"]
    assert calls(stub, "gluster volume replace-brick") == [] and calls(stub, "gluster peer detach") == []
    assert "10.0.0.14" in calls(stub, "gluster volume set shared auth.allow")[0]

    result = storage(stub, bricks)
    assert result.returncode == 0, result.stderr
    assert calls(stub, "gluster peer detach") == ["gluster peer detach 10.0.0.14"]
    assert calls(stub, "gluster peer probe") == []


def test_a_peer_known_by_node_name_counts_as_its_address(stub: Path) -> None:
    # A pool formed before addresses were their own canonical names knows the node
    # that probed first by name: it is that address's peer, neither probed again
    # nor detached as undeclared.
    bricks = ["10.0.0.11", "10.0.0.12", "10.0.0.13"]
    (stub / "hosts").write_text(f"10.0.0.11 {NAME}-app1\n")
    volume(stub, {f"{NAME}-app1": "Connected", "10.0.0.13": "Connected"}, bricks)
    result = run_step(stub, "storage-volume", {
        "VOLUME": "shared", "BRICK_DIR": BRICK, "ARBITER": "yes", "ALLOW": ",".join(bricks), "TLS_ALLOW": NAME,
        "PEERS": " ".join(bricks), "BRICKS": " ".join(bricks), "PING_TIMEOUT_S": "5", "QUORUM_TYPE": "auto",
        "PROBE_TIMEOUT_S": "5", "HEAL_WAIT_S": "5", "HEAL_NUDGE_S": "1"}, self_ip="10.0.0.12")
    assert result.returncode == 0, result.stderr
    assert calls(stub, "gluster peer probe") + calls(stub, "gluster peer detach") == []


def test_a_peer_whose_name_no_longer_resolves_is_left_alone(stub: Path) -> None:
    # An older pool's entry by node name for a node the stack no longer has: neither
    # taken for a declared peer nor detached under a state word.
    bricks = ["10.0.0.11", "10.0.0.12", "10.0.0.13"]
    volume(stub, {"10.0.0.12": "Connected", "10.0.0.13": "Connected", f"{NAME}-app9": "Disconnected"}, bricks)
    result = storage(stub, bricks)
    assert result.returncode == 0, result.stderr
    assert calls(stub, "gluster peer detach") == [] and calls(stub, "gluster peer probe") == []
    assert f"peer {NAME}-app9 is known by a name that no longer resolves" in result.stderr


def test_a_volume_that_ran_plain_moves_to_tls_with_one_restart_and_stays(stub: Path) -> None:
    """A stack from before TLS: the volume's I/O takes TLS at its next start, so the
    step stops and starts it once; later runs leave it running."""
    bricks = ["10.0.0.11", "10.0.0.12", "10.0.0.13"]
    volume(stub, {"10.0.0.12": "Connected", "10.0.0.13": "Connected"}, bricks)
    first = storage(stub, bricks)
    assert first.returncode == 0, first.stderr
    sets = {c.split()[4]: c.split()[5] for c in calls(stub, "gluster volume set shared")}
    assert sets["client.ssl"] == sets["server.ssl"] == "on"
    assert sets["auth.ssl-allow"] == ",".join(f"{NAME}-{ip}" for ip in bricks)
    order = [c for c in (stub / "calls").read_text().splitlines()
             if c.startswith(("gluster volume set shared server.ssl", "gluster volume stop", "gluster volume start"))]
    assert order == ["gluster volume set shared server.ssl on", "gluster volume stop shared",
                     "gluster volume start shared"]
    assert "to move its I/O to TLS" in first.stderr

    again = storage(stub, bricks)
    assert again.returncode == 0, again.stderr
    assert calls(stub, "gluster volume stop") == calls(stub, "gluster volume start") == []


# --- what the program declares when the app tier scales ------------------------------------------

@pytest.mark.parametrize("count", [2, 3, 4])
def test_bricks_stay_on_the_first_two_app_nodes_and_the_witness_whatever_the_app_count(count: int) -> None:
    run = run_program("staging", plain_config("staging") | {"appNodeCount": count})
    apps = [f"app{i}" for i in range(1, count + 1)]
    # the mocks hand out addresses in the program's node order
    ips = Addresses.placeholders(plain_config("staging")["vpcIpRange"], [*apps, "witness"]).private
    _, args = passed_args(run.by_name("storage-volume").raw_inputs["create"])
    assert args["BRICKS"].split() == [ips["app1"], ips["app2"], ips["witness"]]
    assert args["PEERS"].split() == [ips[n] for n in [*apps, "witness"]]
    # every app node mounts the volume, brick or not
    mounts = {r.name for r in run.registrations if r.name.endswith("-shared-mount")}
    assert mounts == {f"{n}-shared-mount" for n in apps}


def test_the_database_agents_node_list_never_changes_when_the_app_tier_scales() -> None:
    # A change to the agent's node_list restarts MariaDB on every node.
    seen = set()
    for count in (2, 3, 4):
        run = run_program("staging", plain_config("staging") | {"appNodeCount": count})
        _, args = passed_args(run.by_name("cluster-resources").raw_inputs["create"])
        names = args["DB_NODES"].split()
        assert names[-1].endswith("-app1")  # the bootstrap node last
        assert {spec.split("=")[0] for spec in args["APP_MEMBERS"].split()} <= set(names)
        seen.add(args["DB_NODES"])
    assert len(seen) == 1, seen
