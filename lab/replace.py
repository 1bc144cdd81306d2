"""Replace a node of the running lab as `pulumi up --replace <droplet URN>` does when
the droplet is deleted before its replacement is created (delete_before_replace):

1. the old droplet shuts down gracefully (the program sets graceful_shutdown) and
   is destroyed with its disk; the API stand-in forgets it;
2. a new droplet of the same name boots from the program's (possibly changed)
   user-data, with a new droplet id and new public and private addresses (the
   node's generation in the lab's state moves it to the next block);
3. the program is evaluated again with the new addresses, and the remote commands
   whose inputs changed run again, in dependency order (lab.replay).

    python -m lab replace NODE
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from lab import image, replay
from lab.containers import (
    boot, destroy_node, foreground, heal_spawn_failures, load_state, log, plug_node, prepare_root, state_file,
    stop_gracefully, wait_for_cloud_init,
)
from lab.stack import lab_config, lab_nodes, lab_plan, render_lab
from lab.standin import call_api, droplet_records
from lab.topology import LabNode

# How long a graceful shutdown may take before the droplet is cut off, as the
# provider's delete would after its timeout.
GRACEFUL_SHUTDOWN_S = 120.0
# What the rest of the cluster sees of a node's shutdown: once these are stopped
# the node has left corosync, handed back its resources and closed its brick and
# replication connections. The container's own remainder (pcsd waits out a 90 s
# stop timeout in a container) is cut short.
CLUSTER_SERVICES = frozenset({"corosync", "pacemakerd", "pacemaker-based", "glusterd", "glusterfsd", "mariadbd"})


def _node(name: str, nodes: list[LabNode]) -> LabNode:
    found = next((n for n in nodes if n.name == name), None)
    if found is None:
        raise SystemExit(f"no lab node {name!r}; the lab has: {', '.join(n.name for n in nodes)}")
    return found


def bump_generation(name: str) -> LabNode:
    """Record in the lab's state that `name` is a new droplet; returns the new node."""
    state = load_state()
    generations = dict(state.get("generations") or {})
    generations[name] = generations.get(name, 0) + 1
    state_file().write_text(json.dumps(state | {"generations": generations}))
    return _node(name, lab_nodes())


def destroy(node: LabNode) -> dict[str, Any]:
    """Shut the droplet down (gracefully if it can), destroy it and its disk, and
    delete it from the API stand-in."""
    start = time.monotonic()
    graceful = stop_gracefully(node, GRACEFUL_SHUTDOWN_S, CLUSTER_SERVICES)
    if not graceful:
        log(f"{node.name}: no clean shutdown within {GRACEFUL_SHUTDOWN_S:.0f} s; cutting it off")
    stopped = time.monotonic()
    destroy_node(node)
    status, body = call_api("DELETE", f"/v2/droplets/{node.droplet_id}")
    if status != 204:
        raise RuntimeError(f"the API stand-in refused to delete droplet {node.droplet_id}: {status} {body}")
    log(f"{node.name}: droplet {node.droplet_id} destroyed ({'clean' if graceful else 'forced'} "
        f"shutdown in {stopped - start:.1f} s)")
    return {"old_droplet_id": node.droplet_id, "old_private_ip": node.private_ip, "graceful_shutdown": graceful,
            "shutdown_s": round(stopped - start, 1)}


def create(node: LabNode) -> None:
    """Boot the new droplet from the program's user-data for it, rendered with the
    lab's current addresses, and register it with the API stand-in."""
    nodes = lab_nodes()
    out = render_lab(nodes)
    record = droplet_records(lab_config(), [node])[0]
    status, body = call_api("POST", "/_lab/droplets", record)
    if status != 201:
        raise RuntimeError(f"the API stand-in refused the new droplet {record['id']}: {status} {body}")
    plug_node(node)
    prepare_root(node, image.ensure_image("node"), (out / node.name / "user-data").read_text(),
                 load_state().get("node_disks", "host"))  # a new droplet's disk is like the others
    boot(node, background=True)
    result = wait_for_cloud_init([node])[node.name]
    foreground(node)
    if result.get("errors"):
        raise RuntimeError(f"cloud-init reported errors on the new {node.name}: {result['errors']}")
    heal_spawn_failures(node)


def replace(name: str,
            around: dict[str, Callable[[], AbstractContextManager[None]]] | None = None) -> dict[str, Any]:
    """Replace node `name` (see the module doc); returns what happened and how long it took."""
    t0 = time.monotonic()
    old = _node(name, lab_nodes())
    figures = destroy(old)
    t_destroyed = time.monotonic()
    new = bump_generation(name)
    create(new)
    t_booted = time.monotonic()
    ran = replay.replay_all(lab_plan(lab_nodes()), around)
    t_done = time.monotonic()
    figures |= {"node": name, "new_droplet_id": new.droplet_id, "new_private_ip": new.private_ip,
                "destroy_s": round(t_destroyed - t0, 1), "boot_s": round(t_booted - t_destroyed, 1),
                "replay_s": round(t_done - t_booted, 1), "total_s": round(t_done - t0, 1), "commands_run": ran}
    log(f"{name} replaced in {figures['total_s']} s (droplet {old.droplet_id} -> {new.droplet_id}, "
        f"{old.private_ip} -> {new.private_ip}, {ran} commands)")
    return figures
