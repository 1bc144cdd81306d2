"""The lab stack (lab/stack.yaml): its settings, its nodes, and the program evaluated
under mocks with the lab's addresses, admin key and API token (tooling.render, the
same code users run)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from infra.config import PROJECT, StackConfig, parse
from infra.paths import REPO_ROOT
from infra.first_boot import GATE_SUFFIX
from lab.containers import load_state, running_nodes, state_file
from lab.replay import recorded_outputs
from lab.mailsink import ensure_password
from lab.spaces import spaces_key
from lab.topology import RESERVED_IP, STACK, LabNode, nodes_for, run_dir
from tooling import render
from tooling.mocks import MOCK_SECRETS, Addresses, Run, run_program

STACK_FILE = REPO_ROOT / "lab/stack.yaml"
# Stands in for the lab's admin key where only names and addresses are needed.
# Where only the settings' shape matters (lab_config): the relay's password is checked
# for presence, and the real one (lab.mailsink) goes only into the program's run.
LAB_SECRETS = {"alertSmtpPassword": "lab-placeholder-smtp-password"}
PLACEHOLDER_ADMIN_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKEEDKvaNL0z6KEvR1fQ3iWj9K3r4lzzh+husUhCQxzO lab"


def stack_settings() -> dict[str, Any]:
    """lab/stack.yaml's settings (prefixed), with what the running lab changed since
    its bring-up (`python -m lab scale` sets appNodeCount), as a `pulumi config set` would."""
    overrides = {f"{PROJECT}:{k}": v for k, v in (load_state().get("settings") or {}).items()}
    return render.stack_config(STACK, STACK_FILE) | overrides


def config_set(key: str, value: Any) -> None:
    """`pulumi config set do-ha-stack:KEY VALUE` on the running lab's stack (None: `config rm`)."""
    state = load_state()
    settings = {k: v for k, v in (state.get("settings") or {}).items() if k != key}
    if value is not None:
        settings[key] = value
    state_file().write_text(json.dumps(state | {"settings": settings}))


def lab_config(admin_key: str = PLACEHOLDER_ADMIN_KEY) -> StackConfig:
    """The lab stack's validated settings (the admin key is the lab's own, made at `up`)."""
    plain = {k.split(":", 1)[1]: v for k, v in stack_settings().items()}
    return parse(STACK, plain | {"adminSshKeys": [admin_key], **MOCK_SECRETS, **LAB_SECRETS})


def lab_nodes() -> list[LabNode]:
    """The running lab's nodes (its state file: names, each node's address slot and
    each replaced node's generation), else the stack's."""
    running = running_nodes()
    return nodes_for(list(lab_config().node_names)) if running is None else running


def lab_program(nodes: list[LabNode]) -> Run:
    """The `lab` stack evaluated under mocks with the lab's addresses and admin key."""
    addresses = Addresses(
        public={n.name: n.public_ip for n in nodes},
        private={n.name: n.private_ip for n in nodes},
        reserved_ip=RESERVED_IP,
        droplet_ids={n.name: n.droplet_id for n in nodes},
        spaces_key=spaces_key(),
        # What each node's first-boot gate printed when the replay ran it (its host
        # key), as the engine's state would hold it; a placeholder before that.
        host_keys=gate_outputs(n.name for n in nodes),
    )
    admin_pub = (run_dir() / "admin_key.pub").read_text().strip()
    settings = stack_settings()
    # The lab's own admin key always, then any a test added (`config set` in its state).
    added = [k for k in settings.get(f"{PROJECT}:adminSshKeys") or [] if k != admin_pub]
    # The cluster's agents call the lab's API stand-in with the lab's own token.
    raw = settings | {
        "do-ha-stack:adminSshKeys": [admin_pub, *added],
        "do-ha-stack:failoverApiToken": (run_dir() / "api_token").read_text().strip(),
        # the lab relay's login (lab.mailsink), a secret as a real stack's would be
        "do-ha-stack:alertSmtpPassword": ensure_password()}
    return run_program(STACK, raw, addresses)


def gate_outputs(names: Iterable[str]) -> dict[str, str]:
    """Node name -> the host key its first-boot gate printed when the replay ran it
    (the last line), for the nodes whose gate has run."""
    outputs = recorded_outputs()
    printed = {name: outputs.get(f"{name}{GATE_SUFFIX}", "").strip().splitlines() for name in names}
    return {name: lines[-1].strip() for name, lines in printed.items() if lines}


def lab_plan(nodes: list[LabNode]) -> list[dict[str, Any]]:
    """The program's remote commands with their secrets (what lab.replay runs)."""
    return render.commands(lab_program(nodes), reveal=True)


def render_lab(nodes: list[LabNode]) -> Path:
    out = run_dir() / "render"
    render.write(lab_program(nodes), out)
    return out
