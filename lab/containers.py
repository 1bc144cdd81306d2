"""The lab's containers and their network on this machine: namespaces, bridges and
veth pairs, overlay roots with a NoCloud seed, systemd-nspawn boot and hard kill,
waiting for cloud-init, teardown, and the running lab's state file.

The building blocks take a namespace prefix and a directory, so the agent sandbox
(tests/helpers/agent_sandbox.py) makes and removes its own namespaces and overlays
with the same code; the lab's own layout is `make_network` and `lab.topology`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import yaml

from lab import api_tls
from lab.procfs import mounts_under, pids_in_netns, pids_rooted_under
from lab.topology import (
    AUDITOR_IP, AUDITOR_NS, GATEWAY, METADATA_IP, PUBLIC_NET, SECOND_CLIENT, STRANGER_IP, SWITCH_NS, LabNode,
    nodes_for, run_dir,
)

BOOT_TIMEOUT = 300.0
NSPAWN_ENV = {
    "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1",  # trixie's systemd under bookworm's nspawn
    # A node's network sysctls are its own namespace's (as a droplet's are its own):
    # writable, so the lab applies and tests the network hardening. Kernel-wide
    # ones stay the host's, read-only.
    "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network",
}


def log(msg: str) -> None:
    print(f"lab: {msg}", file=sys.stderr, flush=True)


def sh(*cmd: str, check: bool = True, capture: bool = False) -> str:
    result = subprocess.run(cmd, check=False, text=True,
                            stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {result.stderr.strip()}")
    return result.stdout or ""


# --- state --------------------------------------------------------------------

def state_file() -> Path:
    return run_dir() / "state.json"


def load_state() -> dict:
    try:
        return json.loads(state_file().read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def running_nodes() -> list[LabNode] | None:
    """The running lab's nodes from its state file (names, address slots, each
    replaced node's generation); None without a lab. Cheap: the API stand-in's hook
    calls it on every action, inside the failover figures."""
    state = load_state()
    names = state.get("nodes")
    if names is None:
        return None
    return nodes_for(names, generations=state.get("generations") or {}, indexes=state.get("indexes") or {})


# --- network --------------------------------------------------------------------

def namespaces(prefix: str) -> list[str]:
    """Network namespaces whose name starts with `prefix`."""
    return [n for n in sh("ip", "netns", "list", capture=True).split() if n.startswith(prefix)]


def add_namespace(ns: str) -> None:
    sh("ip", "netns", "add", ns)
    sh("ip", "-n", ns, "link", "set", "lo", "up")


def add_switch(ns: str, bridges: Mapping[str, Sequence[str]]) -> None:
    """A namespace holding bridges (name: its addresses), the lab's "switch"."""
    add_namespace(ns)
    for i, bridge in enumerate(bridges, start=1):
        sh("ip", "-n", ns, "link", "add", bridge, "type", "bridge")
        # A MAC of its own: otherwise a bridge takes its lowest port's, and a node
        # plugged in or out (a replaced droplet) changes the gateway's MAC under
        # the other nodes' ARP caches, dropping their replies for seconds.
        sh("ip", "-n", ns, "link", "set", bridge, "address", f"02:00:00:00:00:{i:02x}")
        sh("ip", "-n", ns, "link", "set", bridge, "up")
    for bridge, addresses in bridges.items():
        for address in addresses:
            sh("ip", "-n", ns, "addr", "add", address, "dev", bridge)


def plug(switch_ns: str, bridge: str, switch_end: str, ns: str, ns_end: str) -> None:
    """A veth pair from a bridge of the switch to interface `ns_end` in namespace `ns`."""
    sh("ip", "-n", switch_ns, "link", "add", switch_end, "type", "veth", "peer", "name", ns_end, "netns", ns)
    sh("ip", "-n", switch_ns, "link", "set", switch_end, "master", bridge, "up")


def configure(ns: str, dev: str, address: str, via: str | None = None) -> None:
    """Address an interface from the host (for namespaces without a system of their own)."""
    sh("ip", "-n", ns, "link", "set", dev, "up")
    sh("ip", "-n", ns, "addr", "add", address, "dev", dev)
    if via is not None:
        sh("ip", "-n", ns, "route", "add", "default", "via", via)


def make_network(nodes: list[LabNode]) -> None:
    """The lab's layout (lab.topology): public and VPC bridges, the auditor, one namespace per node."""
    prefix = PUBLIC_NET.split("/")[1]
    add_switch(SWITCH_NS, {"br-pub": [f"{GATEWAY}/{prefix}", f"{SECOND_CLIENT}/{prefix}", f"{METADATA_IP}/32",
                                      f"{STRANGER_IP}/32"],
                           "br-vpc": []})
    add_namespace(AUDITOR_NS)
    plug(SWITCH_NS, "br-pub", "p-auditor", AUDITOR_NS, "eth0")
    configure(AUDITOR_NS, "eth0", f"{AUDITOR_IP}/{prefix}")
    for node in nodes:
        plug_node(node)


def plug_node(node: LabNode) -> None:
    """The node's own namespace, cabled to both bridges of the switch. Its addresses
    come from its own network-config (cloud-init)."""
    add_namespace(node.netns)
    plug(SWITCH_NS, "br-pub", node.veth_pub, node.netns, "eth0")
    plug(SWITCH_NS, "br-vpc", node.veth_vpc, node.netns, "eth1")


def unplug_node(node: LabNode, grace: float = 3.0) -> None:
    """Remove the node's namespace (its interfaces, addresses, firewall and
    connection state with it) and the switch's cable ends. The namespace lives on
    while a killed process's orphaned socket still retransmits (minutes with an
    unanswering peer); past `grace` seconds the cables are cut from the switch's
    side, which frees their names for the next droplet and leaves the lingering
    namespace with only its loopback."""
    sh("ip", "netns", "delete", node.netns, check=False)
    links = [node.veth_pub, node.veth_vpc]

    def present() -> list[str]:
        return [link for link in links
                if sh("ip", "-n", SWITCH_NS, "link", "show", link, check=False, capture=True)]

    deadline = time.monotonic() + grace
    while present() and time.monotonic() < deadline:
        time.sleep(0.1)
    for link in present():  # deleting one end of a veth pair deletes both
        sh("ip", "-n", SWITCH_NS, "link", "delete", link, check=False)
    if left := present():
        raise RuntimeError(f"{node.name}: the switch still has {left} after deleting them")


# --- nodes ------------------------------------------------------------------------

def network_config(node: LabNode) -> str:
    """NoCloud network-config v2: the two interfaces a droplet has."""
    return yaml.safe_dump({"version": 2, "ethernets": {
        "eth0": {"addresses": [f"{node.public_ip}/24", f"{node.anchor_ip}/16"],
                 "routes": [{"to": "0.0.0.0/0", "via": GATEWAY}]},
        "eth1": {"addresses": [f"{node.private_ip}/24"]},
    }}, sort_keys=False)


# Where a node's disk (its overlay's writable layer) lives:
# - "host": a directory on this machine's one disk, beside every other node's. Their
#   writes and syncs meet in that disk's queue, which no two droplets share.
# - "memory": a filesystem of its own (ext4 on a loop device over a sparse file in
#   /dev/shm, `discard` giving freed blocks back), for benchmarks that must not
#   measure the shared disk. Faster than any droplet's disk: a sync costs microseconds.
NODE_DISKS = ("host", "memory")
MEMORY_DISK_SIZE = "8G"  # sparse: memory is used only as the node writes


MEMORY_DISKS = Path("/dev/shm")


def _memory_disk_name(prefix: str, name: str) -> str:
    return f"{prefix}disk-{name}.img"


def memory_disk(node: LabNode) -> Path:
    """The backing file of a node's memory disk."""
    return MEMORY_DISKS / _memory_disk_name(node.prefix, node.name)


def mount_overlay(node: LabNode, lower: Path, disk: str = "host") -> Path:
    """The node's writable root: an overlay on `lower` (never written to), its
    writable layer on the node's `disk` (NODE_DISKS); returns it.
    redirect_dir=on: without it, renaming a directory that comes from the image (say
    /var/lib/mysql, as db-restore does) fails with EXDEV, which a droplet's disk never does."""
    if disk not in NODE_DISKS:
        raise ValueError(f"node disk {disk!r}: one of {', '.join(NODE_DISKS)}")
    layers = node.dir
    if disk == "memory":
        layers = node.dir / "disk"
        layers.mkdir(parents=True, exist_ok=True)
        sh("truncate", "-s", MEMORY_DISK_SIZE, str(memory_disk(node)))
        sh("mkfs.ext4", "-q", "-F", str(memory_disk(node)))
        sh("mount", "-o", "loop,discard", str(memory_disk(node)), str(layers))
    for sub in ("upper", "work"):
        (layers / sub).mkdir(parents=True, exist_ok=True)
    node.root.mkdir(parents=True, exist_ok=True)
    sh("mount", "-t", "overlay", "overlay", "-o",
       f"lowerdir={lower},upperdir={layers / 'upper'},workdir={layers / 'work'},redirect_dir=on",
       str(node.root))
    return node.root


def prepare_root(node: LabNode, base: Path, user_data: str, disk: str = "host") -> None:
    mount_overlay(node, base, disk)
    # Container-only: the overlay root cannot be remounted, so this unit would fail
    # on every lab node (a droplet remounts its disk fine). Masked per node, not in the image.
    units = node.root / "etc/systemd/system"
    units.mkdir(parents=True, exist_ok=True)
    (units / "systemd-remount-fs.service").symlink_to("/dev/null")
    if api_tls.ca_file().exists():  # the lab's API stand-in speaks HTTPS with a CA of its own
        api_tls.trust_on_node(node.root)
    seed = node.root / "var/lib/cloud/seed/nocloud"
    seed.mkdir(parents=True, exist_ok=True)
    (seed / "user-data").write_text(user_data)
    (seed / "meta-data").write_text(yaml.safe_dump({
        "instance-id": f"lab-{node.name}-{node.droplet_id}", "local-hostname": node.name}))
    (seed / "network-config").write_text(network_config(node))


# A node booted into a running lab (a replaced or added droplet) boots at this
# priority until its first boot is over: on DigitalOcean a new droplet boots on
# CPUs and a disk of its own, in the lab it would take them from the nodes under test.
BACKGROUND_BOOT = ["nice", "-n", "10", "ionice", "-c", "2", "-n", "7"]


# A droplet that reboots itself (`systemctl reboot`) comes back: nspawn ends with
# 133 when the container asks for a reboot (systemd-nspawn(1)), and starts it again
# here. Any other end (a poweroff, a kill) is the end.
NSPAWN_REBOOT = 133
# Each node's nspawn runs in cgroups of its own ($DOHS_CGROUPS, made here). The lab
# host's init is not systemd, so nothing else places it: every container would get
# the same "payload" cgroup, and a unit stopped in one node would wait out its stop
# timeout for its namesakes in the others (a node's reboot took five minutes).
RESTART_ON_REBOOT = (
    'for cg in $DOHS_CGROUPS; do mkdir -p "$cg" && echo $$ >"$cg/cgroup.procs" || exit 1; done; '
    f'while :; do "$@"; rc=$?; [ "$rc" -eq {NSPAWN_REBOOT} ] || exit "$rc"; done')
CGROUP_PREFIX = "do-ha-lab-"


def node_cgroups(machine: str) -> list[Path]:
    """The cgroups a node's nspawn runs in: one per hierarchy nspawn uses (a hybrid
    host like this one: cgroup2 under unified/, and v1's name=systemd)."""
    base = Path("/sys/fs/cgroup")
    roots = [base] if (base / "cgroup.procs").exists() else \
        [r for r in (base / "unified", base / "systemd") if (r / "cgroup.procs").exists()]
    return [r / f"{CGROUP_PREFIX}{machine}" for r in roots]


def remove_cgroups(machine: str = "", wait_s: float = 5.0) -> None:
    """Remove a node's cgroups (`machine`, a glob; every lab node's without one) once
    their killed processes have left them (that takes the kernel a moment)."""
    deadline = time.monotonic() + wait_s
    while True:
        left = []
        for root in {c.parent for c in node_cgroups("")}:
            for top in root.glob(f"{CGROUP_PREFIX}{machine or '*'}"):
                for path in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [top]:
                    try:
                        path.rmdir()
                    except FileNotFoundError:
                        pass
                    except OSError:
                        left.append(path)
        if not left or time.monotonic() > deadline:
            return
        time.sleep(0.2)


def boot(node: LabNode, background: bool = False) -> None:
    """Start the node's container (`background`: at low CPU and I/O priority, until
    `foreground` is called)."""
    set_cables(node, "up")  # after a power-off (kill_node)
    # The container outlives this call: nspawn keeps writing to the file after return.
    logfile = open(node.dir / "console.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [*(BACKGROUND_BOOT if background else []), "sh", "-c", RESTART_ON_REBOOT, "boot",
         "systemd-nspawn", "-q", "-D", str(node.root), "-M", node.machine, "--boot",
         # The console's output is read into console.log. Unread (`passive`), it fills
         # the pty's buffer and systemd blocks writing to it: a shutdown never ends.
         "--register=no", "--keep-unit", "--console=read-only",
         # The image's resolv.conf (no server: a lookup fails at once), not a copy of
         # the host's, whose resolver is out of the lab's reach: every lookup of a
         # name the node does not know (exim, sudo, ...) would wait out its timeout.
         "--resolv-conf=off",
         f"--network-namespace-path=/run/netns/{node.netns}",
         "--capability=CAP_NET_ADMIN,CAP_NET_RAW,CAP_SYS_NICE,CAP_IPC_LOCK,CAP_SYS_PACCT",  # acct
         "--bind=/dev/fuse"],
        env=os.environ | NSPAWN_ENV | {"DOHS_CGROUPS": " ".join(map(str, node_cgroups(node.machine)))},
        stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    (node.dir / "nspawn.pid").write_text(str(proc.pid))  # the loop's: its process group holds nspawn


def kill_supervisor(pid_file: Path) -> None:
    """SIGKILL a node's boot loop and its nspawn (one process group, made by `boot`)."""
    with contextlib.suppress(ValueError, OSError):
        pid = int(pid_file.read_text())
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        kill_pids([pid])


def foreground(node: LabNode) -> None:
    """Give a node booted in the background normal CPU and I/O priority again (its boot
    loop and nspawn too: a reboot starts the container from them)."""
    with contextlib.suppress(ValueError, OSError):
        loop = int((node.dir / "nspawn.pid").read_text())
        os.setpriority(os.PRIO_PGRP, loop, 0)
        sh("ionice", "-c", "2", "-n", "4", "-P", str(loop), check=False)
    for pid in pids_in_netns(Path(f"/run/netns/{node.netns}")):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.setpriority(os.PRIO_PROCESS, pid, 0)
            sh("ionice", "-c", "2", "-n", "4", "-p", str(pid), check=False)


def cloud_init_result(node: LabNode) -> dict | None:
    """cloud-init's final result, read from the node's disk (no SSH needed)."""
    try:
        return json.loads((node.root / "var/lib/cloud/data/result.json").read_text())["v1"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None


def container_init(node: LabNode) -> int | None:
    """Host PID of the node's systemd (PID 1 inside its PID namespace)."""
    for pid in pids_in_netns(Path(f"/run/netns/{node.netns}")):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        nspid = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
        if nspid[-1:] == ["1"]:
            return pid
    return None


def heal_spawn_failures(node: LabNode) -> list[str]:
    """Restart units that failed only because systemd could not spawn them.

    Lab-only: trixie's systemd under bookworm's nspawn sometimes loses a race
    creating a unit's cgroup on a loaded host ("Failed to spawn executor",
    result 'resources'); systemd-user-sessions failing that way blocks every
    login. A unit that failed for any other reason is left failed.
    """
    init = container_init(node)
    if init is None:
        return []
    ns = ["nsenter", "-t", str(init), "-a"]
    failed = sh(*ns, "systemctl", "list-units", "--state=failed", "--plain", "--no-legend", capture=True,
                check=False).split("\n")
    healed = []
    for unit in (line.split()[0] for line in failed if line.strip()):
        result = sh(*ns, "systemctl", "show", "-P", "Result", unit, capture=True, check=False).strip()
        if result == "resources":
            sh(*ns, "systemctl", "restart", unit, check=False)
            healed.append(unit)
    if healed:
        log(f"{node.name}: restarted units systemd failed to spawn: {', '.join(healed)}")
    return healed


def wait_for_cloud_init(nodes: list[LabNode], timeout: float = BOOT_TIMEOUT,
                        on_result: Callable[[LabNode], object] | None = None) -> dict[str, dict]:
    """Each node's cloud-init result once it has one; `on_result` is called as each arrives."""
    deadline = time.monotonic() + timeout
    results: dict[str, dict] = {}
    while len(results) < len(nodes):
        for node in nodes:
            if node.name not in results and (result := cloud_init_result(node)) is not None:
                results[node.name] = result
                if on_result is not None:
                    on_result(node)
                log(f"{node.name}: cloud-init finished, errors: {result.get('errors') or 'none'}")
        if time.monotonic() > deadline:
            missing = [n.name for n in nodes if n.name not in results]
            raise TimeoutError(f"cloud-init did not finish on {missing} within {timeout:.0f} s")
        time.sleep(0.2)
    return results


# --- kill and teardown -------------------------------------------------------------

def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def set_cables(node: LabNode, state: str) -> None:
    """The switch's ends of the node's cables up or down (check=False: a node whose
    namespace is gone has none)."""
    for link in (node.veth_pub, node.veth_vpc):
        sh("ip", "-n", SWITCH_NS, "link", "set", link, state, check=False)


def kill_node(node: LabNode) -> None:
    """Hard power-off: the cables go dead first, then SIGKILL nspawn and every process
    of the container (its init first). A droplet losing power says nothing to its
    peers; killed processes in a live namespace would reset their connections, which
    a replica's MariaDB takes for a broken master (errno 2013) rather than an
    unreachable one. `boot` plugs the cables in again."""
    set_cables(node, "down")
    kill_supervisor(node.dir / "nspawn.pid")
    for _ in range(50):
        pids = sorted(set(pids_rooted_under(node.root)) | set(pids_in_netns(Path(f"/run/netns/{node.netns}"))))
        if not pids:
            return
        kill_pids(pids)
        time.sleep(0.1)
    raise RuntimeError(f"{node.name}: processes survive SIGKILL: {pids}")


def destroy_node(node: LabNode) -> None:
    """The droplet is gone: its processes, its disk (overlay upper layer) and its network."""
    kill_node(node)
    for point in mounts_under(node.dir):
        sh("umount", "-l", point)
    memory_disk(node).unlink(missing_ok=True)  # its loop device goes with the last unmount
    if node.dir.exists():  # its disk, deleted in the background as DigitalOcean does
        sh(*BACKGROUND_BOOT, "rm", "-rf", "--one-file-system", str(node.dir))
    # Cables in again for the namespace's last moments: the killed processes' orphaned
    # sockets keep the namespace (and so the switch's cable ends) alive while they
    # retransmit their FIN into a dead cable, for minutes.
    set_cables(node, "up")
    unplug_node(node)
    remove_cgroups(node.machine)


def _running(node: LabNode, names: frozenset[str]) -> list[str]:
    """Which of the processes `names` (by comm) still run in the node."""
    found = []
    for pid in pids_in_netns(Path(f"/run/netns/{node.netns}")):
        with contextlib.suppress(OSError):
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            if comm in names:
                found.append(comm)
    return found


def stop_gracefully(node: LabNode, timeout: float, services: frozenset[str] = frozenset()) -> bool:
    """What a droplet's graceful shutdown does (ACPI power button): the node's
    systemd powers off, stopping its services in order. Done when the container
    has ended or, if `services` is given, once none of those processes runs (what
    the other nodes see of a shutdown; the rest of it is the container's own).
    True if that happened within `timeout` seconds."""
    init = container_init(node)
    if init is None:
        return True
    # SIGRTMIN+4 asks systemd for a clean poweroff (systemd(1), "Signals").
    os.kill(init, signal.SIGRTMIN + 4)
    deadline = time.monotonic() + timeout
    while container_init(node) is not None and (not services or _running(node, services)):
        if time.monotonic() > deadline:
            # What held the shutdown up, for whoever looks into it.
            left = sorted(set(_running(node, services))) if services else ["the container"]
            log(f"{node.name}: still running after {timeout:.0f} s of shutdown: {', '.join(left)}")
            # systemd's own lines: what it is stopping or unmounting, and waiting on.
            journal = sh("journalctl", "-D", str(node.root / "var/log/journal"), "--no-pager", "-o", "short-precise",
                         "_PID=1", "-n", "25", capture=True, check=False)
            for line in journal.splitlines():
                log(f"{node.name}:   {line}")
            return False
        time.sleep(0.5)
    return True


def teardown(prefix: str, base: Path) -> None:
    """Remove every container, process, mount and namespace made under `base` and
    named `prefix`*, whatever state an interrupted run left them in."""
    # nspawn processes first (they would otherwise restart nothing, but hold mounts),
    # then whatever runs with a root inside `base` (orphaned container inits).
    for pid_file in base.glob("nodes/*/nspawn.pid"):
        kill_supervisor(pid_file)
    for _ in range(20):
        pids = pids_rooted_under(base)
        if not pids:
            break
        kill_pids(pids)
        time.sleep(0.1)
    # Processes started inside the namespaces from the host (API stand-in, clients).
    found = namespaces(prefix)
    for ns in found:
        kill_pids([int(p) for p in sh("ip", "netns", "pids", ns, capture=True, check=False).split()])
    remove_cgroups(f"{prefix}*")  # this prefix's nodes only: the agent sandbox's beside a running lab
    for point in mounts_under(base):
        sh("umount", "-l", point, check=False)
    for disk in MEMORY_DISKS.glob(_memory_disk_name(prefix, "*")):
        disk.unlink()
    for ns in found:
        sh("ip", "netns", "delete", ns, check=False)
    if base.exists():
        sh("rm", "-rf", "--one-file-system", str(base))


def is_stale(prefix: str, base: Path) -> bool:
    """Anything left of an earlier run: a namespace named `prefix`* or the directory."""
    return bool(namespaces(prefix)) or base.exists()
