"""Scale the running lab's app tier as `pulumi config set appNodeCount N; pulumi up` does.

Out: the new droplets boot from their user-data (each in an address slot of its
own: no other node's addresses change), then the commands whose inputs changed run
in dependency order. In: the engine updates the remaining nodes' commands first and
deletes the droplets last, so the lab replays first (the leaving node is still
running while the cluster lets it go) and then destroys the node and its disk.

    python -m lab scale COUNT
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from infra.config import MAX_APP_NODES, MIN_APP_NODES
from lab import replay
from lab.containers import load_state, log, state_file
from lab.replace import create, destroy
from lab.stack import lab_config, lab_nodes, lab_plan, render_lab


def _save(**changes: Any) -> None:
    state_file().write_text(json.dumps(load_state() | changes))


def scale(count: int,
          around: dict[str, Callable[[], AbstractContextManager[None]]] | None = None) -> dict[str, Any]:
    """Make the lab's app tier `count` nodes; returns what happened and how long it took."""
    if not MIN_APP_NODES <= count <= MAX_APP_NODES:
        raise SystemExit(f"appNodeCount {count}: allowed {MIN_APP_NODES} to {MAX_APP_NODES} "
                         "(fewer than two app nodes would leave no replica)")
    t0 = time.monotonic()
    state = load_state()
    before = lab_nodes()
    indexes = {n.name: n.index for n in before}
    settings = dict(state.get("settings") or {}) | {"appNodeCount": count}
    names = list(lab_config().node_names)  # the current program's nodes, before the change
    _save(settings=settings)
    wanted = list(lab_config().node_names)
    if wanted == names:
        _save(nodes=wanted)
        ran = replay.replay_all(lab_plan(lab_nodes()), around)
        return {"app_nodes": count, "added": [], "removed": [], "commands_run": ran,
                "total_s": round(time.monotonic() - t0, 1)}
    added = [n for n in wanted if n not in indexes]
    removed = [n for n in before if n.name not in wanted]
    for name in added:
        indexes[name] = max(indexes.values(), default=-1) + 1
    _save(nodes=wanted, indexes=indexes)
    nodes = lab_nodes()
    for node in (n for n in nodes if n.name in added):
        create(node)
    t_booted = time.monotonic()
    ran = replay.replay_all(lab_plan(nodes), around)
    t_replayed = time.monotonic()
    generations = dict(load_state().get("generations") or {})
    for node in removed:
        destroy(node)
        replay.forget(node.name)
        # A droplet of that name made later is a new one: new id, new addresses.
        generations[node.name] = node.generation + 1
    _save(generations=generations)
    render_lab(lab_nodes())  # the stack's outputs (make status reads them) without the removed nodes
    figures = {"app_nodes": count, "added": added, "removed": [n.name for n in removed],
               "boot_s": round(t_booted - t0, 1), "replay_s": round(t_replayed - t_booted, 1),
               "destroy_s": round(time.monotonic() - t_replayed, 1), "total_s": round(time.monotonic() - t0, 1),
               "commands_run": ran}
    log(f"app tier scaled to {count} in {figures['total_s']} s ({ran} commands)")
    return figures
