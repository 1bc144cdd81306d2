"""Bring the lab stack up on this machine as systemd-nspawn containers, and take it down.

`up` renders the `lab` stack with the lab's addresses (tooling.render, the same code
users run), boots every node from the cached Debian 13 image with its rendered
user-data as a NoCloud seed, waits for cloud-init, replays the program's remote
commands, and prints how to reach the nodes. A lab left over from an earlier
(failed or interrupted) run is detected and removed first.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from infra.naming import role_of
from infra.paths import REPO_ROOT
from lab import containers, image, phases, replay
from lab.containers import (
    boot, heal_spawn_failures, kill_node, load_state, log, make_network, prepare_root, sh, state_file,
    wait_for_cloud_init,
)
from lab.seed_probe import seed_probe
from lab.spaces import start_spaces
from lab.stack import lab_config, lab_nodes, lab_plan, render_lab
from lab.mailsink import start_mail
from lab.standin import ensure_api_token, start_lab_api
from lab.topology import API_PORT, GATEWAY, PREFIX, RESERVED_IP, SWITCH_NS, LabNode, run_dir


def down() -> None:
    """Remove every container, process, mount and namespace the lab made."""
    start = time.monotonic()
    containers.teardown(PREFIX, run_dir())
    log(f"down in {time.monotonic() - start:.1f} s")


def is_stale() -> bool:
    return containers.is_stale(PREFIX, run_dir())


def is_up(node_disks: str = "host") -> bool:
    """A lab this checkout brought up is running, its nodes on `node_disks` (another
    checkout's runs that one's hook and user-data: it is replaced, as a fresh clone in
    CI must be; one on other disks is replaced too, so no figure measures those)."""
    state = load_state()
    return ("timings" in state and state.get("repo") == str(REPO_ROOT)
            and state.get("node_disks", "host") == node_disks
            and all(containers.cloud_init_result(n) for n in lab_nodes()))


@contextmanager
def for_a_bench(keep: bool) -> Iterator[None]:
    """A benchmark's lab: root, the lab up (brought up if it was not), and down again
    at the end unless `keep` or it was up already."""
    if os.geteuid() != 0:
        raise SystemExit("the lab needs root")
    brought_up = not is_up()
    if brought_up:
        up()
    try:
        yield
    finally:
        if brought_up and not keep:
            down()


# Memory disks take RAM as the nodes write: an app node about 1.6 GB after a 1 GiB
# seed. Without room, MariaDB would meet I/O errors instead of a clear message.
MEMORY_DISKS_MIN_FREE_GB = 6


def check_node_disks(node_disks: str) -> None:
    """Refuse disks the lab does not have, or memory disks without room for them."""
    if node_disks not in containers.NODE_DISKS:
        raise SystemExit(f"LAB_NODE_DISKS={node_disks!r}: one of {', '.join(containers.NODE_DISKS)}")
    if node_disks == "memory":
        stat = os.statvfs("/dev/shm")
        free_gb = stat.f_bavail * stat.f_frsize / 2**30
        if free_gb < MEMORY_DISKS_MIN_FREE_GB:
            raise SystemExit(f"LAB_NODE_DISKS=memory: /dev/shm has {free_gb:.1f} GB free, "
                             f"the nodes' disks need {MEMORY_DISKS_MIN_FREE_GB} GB")


def up(node_disks: str = "host") -> None:
    """Bring the lab up, each node's disk where `node_disks` says (containers.NODE_DISKS)."""
    check_node_disks(node_disks)
    t0 = time.monotonic()
    if is_stale():
        log("a previous lab is still here; removing it")
        down()
    base = image.ensure_image("node")
    nodes = lab_nodes()
    run_dir().mkdir(parents=True)
    os.chmod(run_dir(), 0o700)
    # The checkout that brought the lab up: its hook and user-data are that checkout's.
    state_file().write_text(json.dumps({"nodes": [n.name for n in nodes], "started": time.time(),
                                        "repo": str(REPO_ROOT), "node_disks": node_disks}))
    admin_key = run_dir() / "admin_key"
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lab-admin", "-f", str(admin_key))
    ensure_api_token()
    make_network(nodes)
    start_lab_api(nodes)
    start_mail()  # the stack's alert relay (alertSmtpHost in lab/stack.yaml)
    cfg = lab_config()
    if cfg.backups:  # the bucket and its key first: the render hands the key to the nodes
        start_spaces(cfg.backup_bucket)
    out = render_lab(nodes)
    booted_at: dict[str, float] = {}
    for node in nodes:
        prepare_root(node, base, (out / node.name / "user-data").read_text(), node_disks)
        boot(node)
        booted_at[node.name] = phases.uptime()
    t_boot = time.monotonic()
    noticed_at: dict[str, float] = {}
    results = wait_for_cloud_init(nodes, on_result=lambda node: noticed_at.setdefault(node.name, phases.uptime()))
    failed = {name: r["errors"] for name, r in results.items() if r.get("errors")}
    if failed:
        raise RuntimeError(f"cloud-init reported errors: {failed}")
    for node in nodes:
        heal_spawn_failures(node)
    t_ready = time.monotonic()
    probe: dict = {}
    primary, replicas = nodes[0], [n for n in nodes[1:] if role_of(n.name) == "app"]
    plan = lab_plan(nodes)
    steps: dict[str, dict] = {}
    ran = replay.replay_all(plan, around={f"{n.name}-db-seed": lambda: seed_probe(primary, probe)
                                          for n in replicas[:1]}, record=steps)
    t_done = time.monotonic()
    timings = {"render_and_network_s": round(t_boot - t0, 1), "cloud_init_s": round(t_ready - t_boot, 1),
               "replay_s": round(t_done - t_ready, 1), "total_s": round(t_done - t0, 1),
               "commands_run": ran,
               "cloud_init_nodes": {n.name: phases.cloud_init_phases(n, booted_at[n.name], noticed_at[n.name])
                                    for n in nodes},
               "steps": steps, "critical_path": phases.critical_path(steps, plan)}
    state = load_state() | {"timings": timings, "seed_probe": probe}
    state_file().write_text(json.dumps(state))
    print_summary(nodes, timings)


def boot_again(name: str) -> None:
    """Start a node of the running lab again (the stand-in's power_on)."""
    node = next(n for n in lab_nodes() if n.name == name)
    kill_node(node)  # nothing may be left of the previous boot
    boot(node)


def print_summary(nodes: list[LabNode], timings: dict) -> None:
    key = run_dir() / "admin_key"
    print(f"lab is up in {timings['total_s']} s (cloud-init {timings['cloud_init_s']} s, "
          f"replay {timings['replay_s']} s, {timings['commands_run']} commands)")
    print(phases.table(timings))
    print(f"reserved IP: {RESERVED_IP} (DigitalOcean API stand-in on {GATEWAY}:{API_PORT})")
    for node in nodes:
        print(f"  {node.name:8} public {node.public_ip:15} private {node.private_ip:12} "
              f"ssh: ip netns exec {SWITCH_NS} ssh -i {key} deploy@{node.public_ip}")
