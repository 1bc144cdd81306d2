"""Replay the program's remote commands on the lab nodes, as pulumi-command would.

Same user and automation key, the exact command text, stdin as given, and the
environment sent as SSH environment requests, which the nodes' hardened sshd
accepts only for what its AcceptEnv allows (as with the provider). Commands run
in dependency order; what ran is remembered, so a second replay of an unchanged
program runs nothing (as `pulumi up` would not).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from lab.topology import SSH_OPTS, SWITCH_NS, run_dir

DIAL_ATTEMPTS = 30  # as the program's dial_error_limit
SSH_UNREACHABLE = 255


def log(msg: str) -> None:
    print(f"replay: {msg}", file=sys.stderr, flush=True)


def fingerprint(cmd: dict[str, Any]) -> str:
    """What makes pulumi-command run a command again: its inputs (secrets included, hashed)."""
    keys = ("host", "port", "user", "create", "update", "delete", "stdin", "environment", "triggers")
    return hashlib.sha256(json.dumps({k: cmd.get(k) for k in keys}, sort_keys=True).encode()).hexdigest()


def ssh(cmd: dict[str, Any], text: str, key_file: Path) -> subprocess.CompletedProcess[str]:
    """Run `text` on the command's host like the provider: one connection, one session."""
    args = ["ip", "netns", "exec", SWITCH_NS, "ssh", "-i", str(key_file), "-p", str(cmd["port"]), *SSH_OPTS]
    for name, value in sorted((cmd.get("environment") or {}).items()):
        args += ["-o", f"SetEnv={name}={value}"]
    args += [f"{cmd['user']}@{cmd['host']}", text]
    for attempt in range(1, DIAL_ATTEMPTS + 1):
        result = subprocess.run(args, input=cmd.get("stdin") or "", capture_output=True, text=True)
        # 255 is ssh's own failure (dial, rate limit); anything else is the command's.
        if result.returncode != SSH_UNREACHABLE or attempt == DIAL_ATTEMPTS:
            return result
        time.sleep(min(2.0 * attempt, 10.0))
    raise AssertionError("unreachable")


def replay_all(plan: list[dict[str, Any]],
               around: dict[str, Callable[[], AbstractContextManager[None]]] | None = None) -> int:
    """Run what changed of `plan` (the program's commands, as tooling.render.commands
    gives them with reveal=True); return how many commands ran. `around` wraps named
    commands in a context (the lab measures things while they run)."""
    state_path = run_dir() / "replay.json"
    state: dict[str, str] = json.loads(state_path.read_text()) if state_path.exists() else {}
    ran = 0
    with tempfile.TemporaryDirectory(dir=run_dir()) as tmp:
        for cmd in plan:
            print_ = fingerprint(cmd)
            if state.get(cmd["name"]) == print_:
                continue
            key_file = Path(tmp) / "key"
            key_file.write_text(cmd["privateKey"])
            key_file.chmod(0o600)
            # Changed inputs: an update command if the resource has one, else create again
            # (pulumi-command replaces a command whose create or triggers changed).
            text = cmd["update"] if cmd["name"] in state and cmd.get("update") else cmd["create"]
            start = time.monotonic()
            with (around or {}).get(cmd["name"], nullcontext)():
                result = ssh(cmd, text, key_file)
            took = time.monotonic() - start
            if result.returncode != 0:
                # Output may carry secrets only when the program marks it; show stderr tail.
                shown = "[hidden]" if cmd.get("logging") == "none" else \
                    f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
                raise RuntimeError(f"{cmd['name']} failed on {cmd['host']} (exit {result.returncode}): {shown}")
            log(f"{cmd['name']} on {cmd['host']}: ok in {took:.1f} s")
            state[cmd["name"]] = print_
            state_path.write_text(json.dumps(state, indent=1))
            ran += 1
    if not ran:
        log("nothing changed; no command ran")
    return ran


def forget(node: str) -> list[str]:
    """Drop what ran on a destroyed node from the replay state (the engine deletes a
    droplet's commands with it), so a node of that name made later runs them all."""
    state_path = run_dir() / "replay.json"
    state: dict[str, str] = json.loads(state_path.read_text()) if state_path.exists() else {}
    gone = sorted(name for name in state if name.startswith(f"{node}-"))
    state_path.write_text(json.dumps({k: v for k, v in state.items() if k not in gone}, indent=1))
    return gone
