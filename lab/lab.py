"""Bring the stack up on this machine as systemd-nspawn containers, and tear it down.

    python -m lab.lab up      # make lab
    python -m lab.lab down    # make lab-down

`up` renders the `lab` stack with the lab's addresses (tooling.render, the same code
users run), boots every node from the cached Debian 13 image with its rendered
user-data as a NoCloud seed, waits for cloud-init, replays the program's remote
commands, and prints how to reach the nodes. A lab left over from an earlier
(failed or interrupted) run is detected and removed first.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from infra.paths import REPO_ROOT
from tooling import render
from infra.config import StackConfig, parse
from tooling.mocks import MOCK_SECRETS, Addresses, Run, run_program
from infra.naming import droplet_name, role_of, role_tag, stack_tag
from lab import image
from lab.procfs import mounts_under, pids_in_netns, pids_rooted_under
from lab.topology import (
    API_PORT, AUDITOR_IP, AUDITOR_NS, GATEWAY, METADATA_IP, PREFIX, PUBLIC_NET, RESERVED_IP, SECOND_CLIENT, STACK,
    SWITCH_NS, LabNode, nodes_for, run_dir,
)

BOOT_TIMEOUT = 300.0
# Stands in for the lab's admin key where only names and addresses are needed.
PLACEHOLDER_ADMIN_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKEEDKvaNL0z6KEvR1fQ3iWj9K3r4lzzh+husUhCQxzO lab"
NSPAWN_ENV = {"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}  # trixie's systemd under bookworm's nspawn


def log(msg: str) -> None:
    print(f"lab: {msg}", file=sys.stderr, flush=True)


def sh(*cmd: str, check: bool = True, capture: bool = False) -> str:
    result = subprocess.run(cmd, check=False, text=True,
                            stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {result.stderr.strip()}")
    return result.stdout or ""


def in_switch(*cmd: str, check: bool = True, capture: bool = False) -> str:
    return sh("ip", "netns", "exec", SWITCH_NS, *cmd, check=check, capture=capture)


# --- state --------------------------------------------------------------------

def state_file() -> Path:
    return run_dir() / "state.json"


def load_state() -> dict:
    try:
        return json.loads(state_file().read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def lab_nodes() -> list[LabNode]:
    names = load_state().get("nodes")
    if names is None:
        names = list(lab_config().node_names)
    return nodes_for(names)


def lab_config(admin_key: str = PLACEHOLDER_ADMIN_KEY) -> StackConfig:
    """The lab stack's validated settings (the admin key is the lab's own, made at `up`)."""
    plain = {k.split(":", 1)[1]: v for k, v in render.stack_config(STACK, REPO_ROOT / "lab/stack.yaml").items()}
    return parse(STACK, plain | {"adminSshKeys": [admin_key], **MOCK_SECRETS})


# --- teardown -------------------------------------------------------------------

def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def kill_node(node: LabNode) -> None:
    """Hard power-off: SIGKILL nspawn and every process of the container (its init first)."""
    pid_file = node.dir / "nspawn.pid"
    if pid_file.exists():
        _kill([int(pid_file.read_text())])
    for _ in range(50):
        pids = sorted(set(pids_rooted_under(node.root)) | set(pids_in_netns(Path(f"/run/netns/{node.netns}"))))
        if not pids:
            return
        _kill(pids)
        time.sleep(0.1)
    raise RuntimeError(f"{node.name}: processes survive SIGKILL: {pids}")


def down() -> None:
    """Remove every container, process, mount and namespace the lab made."""
    start = time.monotonic()
    base = run_dir()
    # nspawn processes first (they would otherwise restart nothing, but hold mounts),
    # then whatever runs with a root inside the lab (orphaned container inits).
    for pid_file in base.glob("nodes/*/nspawn.pid"):
        try:
            _kill([int(pid_file.read_text())])
        except (ValueError, OSError):
            pass
    for _ in range(20):
        pids = pids_rooted_under(base)
        if not pids:
            break
        _kill(pids)
        time.sleep(0.1)
    # Processes started inside lab namespaces from the host (API stand-in, clients).
    namespaces = [n for n in sh("ip", "netns", "list", capture=True).split() if n.startswith(PREFIX)]
    for ns in namespaces:
        _kill([int(p) for p in sh("ip", "netns", "pids", ns, capture=True, check=False).split()])
    for point in mounts_under(base):
        sh("umount", "-l", point, check=False)
    for ns in namespaces:
        sh("ip", "netns", "delete", ns, check=False)
    if base.exists():
        sh("rm", "-rf", "--one-file-system", str(base))
    log(f"down in {time.monotonic() - start:.1f} s")


def is_stale() -> bool:
    namespaces = [n for n in sh("ip", "netns", "list", capture=True).split() if n.startswith(PREFIX)]
    return bool(namespaces) or run_dir().exists()


# --- network --------------------------------------------------------------------

def make_network(nodes: list[LabNode]) -> None:
    sh("ip", "netns", "add", SWITCH_NS)
    in_switch("ip", "link", "set", "lo", "up")
    for bridge in ("br-pub", "br-vpc"):
        in_switch("ip", "link", "add", bridge, "type", "bridge")
        in_switch("ip", "link", "set", bridge, "up")
    prefix = PUBLIC_NET.split("/")[1]
    for address in (f"{GATEWAY}/{prefix}", f"{SECOND_CLIENT}/{prefix}", f"{METADATA_IP}/32"):
        in_switch("ip", "addr", "add", address, "dev", "br-pub")
    sh("ip", "netns", "add", AUDITOR_NS)
    sh("ip", "-n", SWITCH_NS, "link", "add", "p-auditor", "type", "veth", "peer", "name", "eth0", "netns", AUDITOR_NS)
    in_switch("ip", "link", "set", "p-auditor", "master", "br-pub", "up")
    for cmd in (("link", "set", "lo", "up"), ("link", "set", "eth0", "up"),
                ("addr", "add", f"{AUDITOR_IP}/{prefix}", "dev", "eth0")):
        sh("ip", "-n", AUDITOR_NS, *cmd)
    for node in nodes:
        sh("ip", "netns", "add", node.netns)
        sh("ip", "-n", node.netns, "link", "set", "lo", "up")
        for lab_end, node_end, bridge in ((node.veth_pub, "eth0", "br-pub"), (node.veth_vpc, "eth1", "br-vpc")):
            sh("ip", "-n", SWITCH_NS, "link", "add", lab_end, "type", "veth", "peer", "name", node_end,
               "netns", node.netns)
            in_switch("ip", "link", "set", lab_end, "master", bridge, "up")


# --- nodes ------------------------------------------------------------------------

def network_config(node: LabNode) -> str:
    """NoCloud network-config v2: the two interfaces a droplet has."""
    return yaml.safe_dump({"version": 2, "ethernets": {
        "eth0": {"addresses": [f"{node.public_ip}/24", f"{node.anchor_ip}/16"],
                 "routes": [{"to": "0.0.0.0/0", "via": GATEWAY}]},
        "eth1": {"addresses": [f"{node.private_ip}/24"]},
    }}, sort_keys=False)


def prepare_root(node: LabNode, base: Path, user_data: str) -> None:
    for sub in ("upper", "work", "root"):
        (node.dir / sub).mkdir(parents=True, exist_ok=True)
    sh("mount", "-t", "overlay", "overlay", "-o",
       f"lowerdir={base},upperdir={node.dir / 'upper'},workdir={node.dir / 'work'}", str(node.root))
    # Container-only: the overlay root cannot be remounted, so this unit would fail
    # on every lab node (a droplet remounts its disk fine). Masked per node, not in the image.
    units = node.root / "etc/systemd/system"
    units.mkdir(parents=True, exist_ok=True)
    (units / "systemd-remount-fs.service").symlink_to("/dev/null")
    seed = node.root / "var/lib/cloud/seed/nocloud"
    seed.mkdir(parents=True, exist_ok=True)
    (seed / "user-data").write_text(user_data)
    (seed / "meta-data").write_text(yaml.safe_dump({
        "instance-id": f"lab-{node.name}-{node.droplet_id}", "local-hostname": node.name}))
    (seed / "network-config").write_text(network_config(node))


def boot(node: LabNode) -> None:
    logfile = open(node.dir / "console.log", "w")
    proc = subprocess.Popen(
        ["systemd-nspawn", "-q", "-D", str(node.root), "-M", node.machine, "--boot",
         "--register=no", "--keep-unit", "--console=passive",
         f"--network-namespace-path=/run/netns/{node.netns}",
         "--capability=CAP_NET_ADMIN,CAP_NET_RAW,CAP_SYS_NICE,CAP_IPC_LOCK",
         "--bind=/dev/fuse"],
        env=os.environ | NSPAWN_ENV, stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    (node.dir / "nspawn.pid").write_text(str(proc.pid))


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


def wait_for_cloud_init(nodes: list[LabNode], timeout: float = BOOT_TIMEOUT) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    results: dict[str, dict] = {}
    while len(results) < len(nodes):
        for node in nodes:
            if node.name not in results and (result := cloud_init_result(node)) is not None:
                results[node.name] = result
                log(f"{node.name}: cloud-init finished, errors: {result.get('errors') or 'none'}")
        if time.monotonic() > deadline:
            missing = [n.name for n in nodes if n.name not in results]
            raise TimeoutError(f"cloud-init did not finish on {missing} within {timeout:.0f} s")
        time.sleep(0.5)
    return results


# --- the DigitalOcean stand-in ----------------------------------------------------------

def ensure_api_token() -> Path:
    """The stand-in's bearer token; the program hands it to the nodes as failoverApiToken."""
    token = run_dir() / "api_token"
    if not token.exists():
        token.touch(mode=0o600)
        token.write_text(os.urandom(24).hex())
    return token


def start_api(nodes: list[LabNode]) -> None:
    """API and metadata stand-in in the switch namespace; the reserved IP starts on app1,
    as the program's one-time assignment leaves it."""
    cfg = lab_config()
    state = {
        "region": cfg.region,
        "droplets": [{"id": n.droplet_id, "name": droplet_name(cfg, n.name), "public_ipv4": n.public_ip,
                      "private_ipv4": n.private_ip, "anchor_ipv4": n.anchor_ip,
                      "tags": [stack_tag(cfg), role_tag(cfg, role_of(n.name))]}
                     for n in nodes],
        "reserved_ips": [{"ip": RESERVED_IP, "droplet_id": nodes[0].droplet_id}],
    }
    (run_dir() / "api-config.json").write_text(json.dumps(state, indent=1))
    token = ensure_api_token()
    hook = run_dir() / "hook"
    hook.write_text(f"#!/bin/sh\ncd {REPO_ROOT} && exec {sys.executable} -m lab.hook \"$@\"\n")
    hook.chmod(0o700)
    in_switch("ip", "link", "set", "lo", "up")
    log_file = open(run_dir() / "api.log", "w")
    proc = subprocess.Popen(
        # Only the network namespace is switched (see lab.hook.power_on).
        ["nsenter", f"--net=/run/netns/{SWITCH_NS}", sys.executable, "-m", "lab.fake_do",
         "--state", str(run_dir() / "api-config.json"), "--state-out", str(run_dir() / "api-state.json"),
         "--token-file", str(token), "--api-listen", f"{GATEWAY}:{API_PORT}",
         "--metadata-listen", f"{METADATA_IP}:80", "--hook", str(hook)],
        cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    (run_dir() / "api.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + 20
    while not (run_dir() / "api-state.json").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the API stand-in did not start: {(run_dir() / 'api.log').read_text()[-2000:]}")
        time.sleep(0.1)
    # What DigitalOcean does on the program's initial assignment.
    sh("ip", "netns", "exec", SWITCH_NS, str(hook), "assign", RESERVED_IP, str(nodes[0].droplet_id))


# --- up -------------------------------------------------------------------------------

def lab_program() -> Run:
    """The `lab` stack evaluated under mocks with the lab's addresses and admin key."""
    nodes = lab_nodes()
    addresses = Addresses(
        public={n.name: n.public_ip for n in nodes},
        private={n.name: n.private_ip for n in nodes},
        reserved_ip=RESERVED_IP,
        droplet_ids={n.name: n.droplet_id for n in nodes},
    )
    admin_pub = (run_dir() / "admin_key.pub").read_text().strip()
    # The cluster's agents call the lab's API stand-in with the lab's own token.
    raw = render.stack_config(STACK, REPO_ROOT / "lab/stack.yaml") | {
        "do-ha-stack:adminSshKeys": [admin_pub],
        "do-ha-stack:failoverApiToken": (run_dir() / "api_token").read_text().strip()}
    return run_program(STACK, raw, addresses)


def render_lab() -> Path:
    out = run_dir() / "render"
    render.write(lab_program(), out)
    return out


def up() -> None:
    t0 = time.monotonic()
    if is_stale():
        log("a previous lab is still here; removing it")
        down()
    base = image.ensure_image("node")
    nodes = lab_nodes()
    run_dir().mkdir(parents=True)
    os.chmod(run_dir(), 0o700)
    state_file().write_text(json.dumps({"nodes": [n.name for n in nodes], "started": time.time()}))
    admin_key = run_dir() / "admin_key"
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lab-admin", "-f", str(admin_key))
    ensure_api_token()
    out = render_lab()
    make_network(nodes)
    start_api(nodes)
    for node in nodes:
        prepare_root(node, base, (out / node.name / "user-data").read_text())
        boot(node)
    t_boot = time.monotonic()
    results = wait_for_cloud_init(nodes)
    failed = {name: r["errors"] for name, r in results.items() if r.get("errors")}
    if failed:
        raise RuntimeError(f"cloud-init reported errors: {failed}")
    for node in nodes:
        heal_spawn_failures(node)
    t_ready = time.monotonic()
    from lab import replay  # noqa: PLC0415 (needs the booted lab)
    from lab.seed_probe import seed_probe  # noqa: PLC0415
    probe: dict = {}
    primary, replicas = nodes[0], [n for n in nodes[1:] if role_of(n.name) == "app"]
    ran = replay.replay_all(around={f"{n.name}-db-seed": lambda: seed_probe(primary, probe) for n in replicas[:1]})
    t_done = time.monotonic()
    timings = {"render_and_network_s": round(t_boot - t0, 1), "cloud_init_s": round(t_ready - t_boot, 1),
               "replay_s": round(t_done - t_ready, 1), "total_s": round(t_done - t0, 1),
               "commands_run": ran}
    state = load_state() | {"timings": timings, "seed_probe": probe}
    state_file().write_text(json.dumps(state))
    print_summary(nodes, timings)


def print_summary(nodes: list[LabNode], timings: dict) -> None:
    key = run_dir() / "admin_key"
    print(f"lab is up in {timings['total_s']} s (cloud-init {timings['cloud_init_s']} s, "
          f"replay {timings['replay_s']} s, {timings['commands_run']} commands)")
    print(f"reserved IP: {RESERVED_IP} (DigitalOcean API stand-in on {GATEWAY}:{API_PORT})")
    for node in nodes:
        print(f"  {node.name:8} public {node.public_ip:15} private {node.private_ip:12} "
              f"ssh: ip netns exec {SWITCH_NS} ssh -i {key} deploy@{node.public_ip}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.lab")
    parser.add_argument("action", choices=["up", "down", "status", "boot"])
    parser.add_argument("node", nargs="?", help="for boot: the node to start again (power_on)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("the lab needs root (namespaces, mounts, containers)", file=sys.stderr)
        return 1
    if args.action == "up":
        try:
            up()
        except BaseException:
            log("bring-up failed; the lab is left for inspection, `make lab-down` removes it")
            raise
    elif args.action == "down":
        down()
    elif args.action == "boot":
        node = next(n for n in lab_nodes() if n.name == args.node)
        kill_node(node)  # nothing may be left of the previous boot
        boot(node)
    else:
        print(json.dumps(load_state(), indent=2) if state_file().exists() else "no lab")
    return 0


if __name__ == "__main__":
    sys.exit(main())
