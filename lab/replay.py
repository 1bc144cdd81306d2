"""Replay the program's remote commands on the lab nodes, as pulumi-command would.

Same user and automation key, the exact command text, stdin as given, and the
environment sent as SSH environment requests, which the nodes' hardened sshd
accepts only for what its AcceptEnv allows (as with the provider). Like the
engine (whose --parallel is unbounded by default), a command starts as soon as
every command it depends on has finished, so independent commands run at once;
after a failure nothing new starts and the running ones finish. What ran is
remembered, so a second replay of an unchanged program runs nothing (as `pulumi
up` would not).

Host keys as the provider checks them: a command whose connection has a host key
is refused by a node that shows another. The program takes a node's key from its
first-boot gate's output; under mocks that output is a placeholder, so the replay
keeps what each such command really printed and puts it where the placeholder is
(the engine's data flow), remembered like the rest of its state.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from infra import tuning
from lab.topology import SSH_OPTS, SWITCH_NS, run_dir

SSH_UNREACHABLE = 255
# pulumi-command dials again after a failed dial with pulumi's retry.Until defaults:
# 100 ms, then 1.5 times longer each time, at most 5 s; it gives up once it has
# failed more than the connection's dial_error_limit times.
DIAL_FIRST_DELAY_S = 0.1
DIAL_BACKOFF = 1.5
DIAL_MAX_DELAY_S = 5.0


def log(msg: str) -> None:
    print(f"replay: {msg}", file=sys.stderr, flush=True)


def fingerprint(cmd: dict[str, Any]) -> str:
    """What makes pulumi-command run a command again: its inputs (secrets included, hashed)."""
    keys = ("host", "port", "user", "hostKey", "create", "update", "delete", "stdin", "environment", "triggers")
    return hashlib.sha256(json.dumps({k: cmd.get(k) for k in keys}, sort_keys=True).encode()).hexdigest()


def dial_delays(limit: int = tuning.SSH_DIAL_ERROR_LIMIT) -> Iterator[float]:
    """The waits between the provider's dials: one per failed dial it retries after."""
    delay = DIAL_FIRST_DELAY_S
    for _ in range(limit):
        yield delay
        delay = min(delay * DIAL_BACKOFF, DIAL_MAX_DELAY_S)


def outputs_path() -> Path:
    return run_dir() / "replay-outputs.json"


def recorded_outputs() -> dict[str, str]:
    """What each command whose output the program uses printed when it last ran."""
    path = outputs_path()
    return json.loads(path.read_text()) if path.exists() else {}


def _record_output(name: str, stdout: str) -> None:
    outputs = recorded_outputs() | {name: stdout}
    tmp = outputs_path().with_suffix(".tmp")
    tmp.write_text(json.dumps(outputs, indent=1))
    tmp.replace(outputs_path())


def resolved(cmd: dict[str, Any], plan: Iterable[dict[str, Any]], outputs: dict[str, str]) -> dict[str, Any]:
    """`cmd` with its host key as the engine would have it: a placeholder that is the
    mocked output of another command of the plan becomes what that command printed."""
    key = (cmd.get("hostKey") or "").strip()
    if not key:
        return cmd
    for source in plan:
        if (source.get("stdout") or "").strip() == key:
            if source["name"] not in outputs:
                raise RuntimeError(f"{cmd['name']}: its host key is {source['name']}'s output, "
                                   "which has not run")
            printed = outputs[source["name"]].strip().splitlines()
            return cmd | {"hostKey": printed[-1].strip() if printed else ""}
    return cmd


def host_key_options(cmd: dict[str, Any], directory: Path) -> list[str]:
    """ssh options that accept only the command's host key (pulumi-command's
    FixedHostKey, which also offers only that key's algorithm), else none."""
    key = (cmd.get("hostKey") or "").strip()
    if not key:
        return []
    host = cmd["host"] if int(cmd["port"]) == 22 else f"[{cmd['host']}]:{cmd['port']}"
    fd, name = tempfile.mkstemp(prefix="known_hosts-", dir=directory)
    with open(fd, "w") as f:
        f.write(f"{host} {key}\n")
    return ["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={name}",
            "-o", f"HostKeyAlgorithms={key.split()[0]}"]


def ssh(cmd: dict[str, Any], text: str, key_file: Path,
        dial_limit: int = tuning.SSH_DIAL_ERROR_LIMIT) -> subprocess.CompletedProcess[str]:
    """Run `text` on the command's host like the provider: one connection, one session."""
    # ssh takes an option's first value: a pinned key comes before the lab's defaults.
    args = ["ip", "netns", "exec", SWITCH_NS, "ssh", "-i", str(key_file), "-p", str(cmd["port"]),
            *host_key_options(cmd, key_file.parent), *SSH_OPTS]
    for name, value in sorted((cmd.get("environment") or {}).items()):
        args += ["-o", f"SetEnv={name}={value}"]
    args += [f"{cmd['user']}@{cmd['host']}", text]
    delays = dial_delays(dial_limit)
    while True:
        result = subprocess.run(args, input=cmd.get("stdin") or "", capture_output=True, text=True)
        # 255 is ssh's own failure (dial, rate limit); anything else is the command's.
        if result.returncode != SSH_UNREACHABLE:
            return result
        delay = next(delays, None)
        if delay is None:
            return result
        time.sleep(delay)


def run_one(cmd: dict[str, Any], plan: Iterable[dict[str, Any]] = (),
            dial_limit: int = tuning.SSH_DIAL_ERROR_LIMIT) -> subprocess.CompletedProcess[str]:
    """Run one command of the plan again, as the provider would on a replacement
    (its create text, its stdin), whatever replay's state says; its host key as
    `plan`'s gates printed it (`resolved`); `dial_limit` as the connection's."""
    cmd = resolved(cmd, plan, recorded_outputs())
    with tempfile.TemporaryDirectory(dir=run_dir()) as tmp:
        key_file = Path(tmp) / "key"
        key_file.write_text(cmd["privateKey"])
        key_file.chmod(0o600)
        return ssh(cmd, cmd["create"], key_file, dial_limit)


Around = dict[str, Callable[[], AbstractContextManager[None]]]


def _upstream(name: str, deps: dict[str, set[str]]) -> set[str]:
    """Every command that `name` depends on, directly or transitively (`deps`: each
    command's direct dependencies)."""
    found: set[str] = set()
    frontier = list(deps.get(name, ()))
    while frontier:
        dep = frontier.pop()
        if dep not in found:
            found.add(dep)
            frontier.extend(deps.get(dep, ()))
    return found


def replay_all(plan: list[dict[str, Any]], around: Around | None = None,
               record: dict[str, dict[str, Any]] | None = None) -> int:
    """Run what changed of `plan` (the program's commands, as tooling.render.commands
    gives them with reveal=True), each once its `dependsOn` have finished; return how
    many commands ran. `around` wraps named commands in a context (the lab measures
    things while they run); `record`, if given, gets each command's host, start
    (seconds after the replay began) and duration."""
    state_path = run_dir() / "replay.json"
    state: dict[str, str] = json.loads(state_path.read_text()) if state_path.exists() else {}
    # A command gone from the program was deleted by the engine: one that comes back is created anew.
    state = {name: mark for name, mark in state.items() if name in {c["name"] for c in plan}}
    outputs = recorded_outputs()
    # A command whose host key comes from a gate that has not run yet runs anyway.
    todo = {c["name"]: c for c in plan if not _unchanged(c, plan, outputs, state)}
    # The engine runs a resource's step after its dependencies' steps, and an
    # unchanged resource's (empty) step after its own dependencies': so a command
    # waits for every changed command it depends on, directly or through unchanged ones.
    deps = {c["name"]: set(c.get("dependsOn") or []) for c in plan}
    waiting = {name: _upstream(name, deps) & set(todo) for name in todo}
    t0 = time.monotonic()
    failures: list[str] = []
    ran = 0
    with tempfile.TemporaryDirectory(dir=run_dir()) as tmp, \
            ThreadPoolExecutor(max_workers=max(len(todo), 1)) as pool:
        keys = _key_files(Path(tmp), todo.values())
        running: dict[Future[subprocess.CompletedProcess[str]], tuple[str, float]] = {}
        while waiting or running:
            if not failures:
                for name in [n for n in todo if n in waiting and not waiting[n]]:
                    del waiting[name]
                    cmd = todo[name] = resolved(todo[name], plan, recorded_outputs())
                    # Changed inputs: an update command if the resource has one, else create
                    # again (pulumi-command replaces a command whose create or triggers changed).
                    text = cmd["update"] if name in state and cmd.get("update") else cmd["create"]
                    context = (around or {}).get(name, nullcontext)
                    running[pool.submit(_run, cmd, text, keys[cmd["privateKey"]], context)] = \
                        (name, time.monotonic())
            if not running:
                break  # a failure left the rest waiting on it
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                name, started = running.pop(future)
                cmd, took = todo[name], time.monotonic() - started
                try:
                    result = future.result()
                except Exception as exc:  # the `around` context failed
                    failures.append(f"{name} on {cmd['host']}: {exc}")
                    continue
                if result.returncode != 0:
                    # Output may carry secrets only when the program marks it; show stderr tail.
                    shown = "[hidden]" if cmd.get("logging") == "none" else \
                        f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
                    failures.append(f"{name} failed on {cmd['host']} (exit {result.returncode}): {shown}")
                    continue
                log(f"{name} on {cmd['host']}: ok in {took:.1f} s (started at +{started - t0:.1f} s)")
                if record is not None:
                    record[name] = {"host": cmd["host"], "start_s": round(started - t0, 1), "took_s": round(took, 1)}
                if cmd.get("stdout") is not None:  # the program uses its output
                    _record_output(name, result.stdout)
                state[name] = fingerprint(cmd)
                state_path.write_text(json.dumps(state, indent=1))
                for deps in waiting.values():
                    deps.discard(name)
                ran += 1
    if failures:
        not_run = sorted(waiting)
        raise RuntimeError("; ".join(failures) + (f" (not run: {', '.join(not_run)})" if not_run else ""))
    if waiting:  # tooling.render orders the plan and refuses cycles; this is a plan made elsewhere
        raise ValueError(f"commands wait on each other in a cycle: {sorted(waiting)}")
    if not ran:
        log("nothing changed; no command ran")
    return ran


def _unchanged(cmd: dict[str, Any], plan: list[dict[str, Any]], outputs: dict[str, str],
               state: dict[str, str]) -> bool:
    try:
        return state.get(cmd["name"]) == fingerprint(resolved(cmd, plan, outputs))
    except RuntimeError:
        return False


def _key_files(directory: Path, commands: Iterable[dict[str, Any]]) -> dict[str, Path]:
    """One private key file (0600) per distinct key of the commands."""
    paths: dict[str, Path] = {}
    for cmd in commands:
        key = cmd["privateKey"]
        if key not in paths:
            path = directory / f"key-{len(paths)}"
            path.touch(mode=0o600)
            path.chmod(0o600)
            path.write_text(key)
            paths[key] = path
    return paths


def _run(cmd: dict[str, Any], text: str, key_file: Path,
         context: Callable[[], AbstractContextManager[None]]) -> subprocess.CompletedProcess[str]:
    with context():
        return ssh(cmd, text, key_file)


def forget(node: str) -> list[str]:
    """Drop what ran on a destroyed node from the replay state (the engine deletes a
    droplet's commands with it), so a node of that name made later runs them all."""
    state_path = run_dir() / "replay.json"
    state: dict[str, str] = json.loads(state_path.read_text()) if state_path.exists() else {}
    gone = sorted(name for name in state if name.startswith(f"{node}-"))
    state_path.write_text(json.dumps({k: v for k, v in state.items() if k not in gone}, indent=1))
    outputs = recorded_outputs()
    if outputs_path().exists():
        outputs_path().write_text(json.dumps({k: v for k, v in outputs.items() if not k.startswith(f"{node}-")}))
    return gone


def forget_commands(names: Iterable[str]) -> None:
    """Drop `names` from the replay state: the next replay runs them, as the engine
    runs a command whose inputs a new release changed."""
    state_path = run_dir() / "replay.json"
    state: dict[str, str] = json.loads(state_path.read_text()) if state_path.exists() else {}
    state_path.write_text(json.dumps({k: v for k, v in state.items() if k not in set(names)}, indent=1))


def up_replacing(argv: list[str], plan: list[dict[str, Any]]) -> tuple[int, list[str]]:
    """`pulumi up --replace <command URN>...` as the lab plays it: those commands run
    again, one after the other, as the engine replaces a command that has no delete
    (its create runs anew). Returns the exit code and the commands that ran."""
    assert argv[0] == "up", argv
    names = [argv[i + 1].rsplit("::", 1)[1] for i, arg in enumerate(argv) if arg == "--replace"]
    commands = {c["name"]: c for c in plan}
    ran: list[str] = []
    for name in names:
        done = run_one(commands[name], plan)
        log(f"{name} (replaced): exit {done.returncode}")
        if done.returncode != 0:
            log(done.stderr[-3000:])
            return 1, ran
        ran.append(name)
    return 0, ran
