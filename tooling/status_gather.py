"""Collect a stack's health facts: one SSH session per node, in parallel, each running
tooling/status-gather.sh (sent on stdin, read-only), and the DigitalOcean API's view
when a token is given. Nothing here judges; tooling/health.py does, from these facts,
so a recorded set of facts replays the same verdict offline.

Facts (JSON-serialisable; `--dump` writes them with the stack outputs added as
"outputs", and the unit tests load such dumps):
    {"stack", "taken_at", "reserved_ip",
     "nodes": {name: {"address", "role", "ssh_rc", "ssh_err", "probes": {probe: {rc, out, err}}}},
     "api": null (no token) | {"error": text} | {"reserved_ip", "droplets": {id: droplet},
            "actions": [assign actions of the reserved IP]}}
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra import tuning
from infra.storage import VOLUME
from tooling.health import droplet_ids

GATHER_SCRIPT = Path(__file__).with_name("status-gather.sh")
# The whole session may take every probe's timeout, plus this for ssh itself.
SSH_SESSION_SLACK_S = 30


@dataclass(frozen=True)
class NodeTarget:
    name: str  # the program's node name (app1, witness)
    address: str  # where SSH reaches it (its public IPv4)
    role: str
    host_key: str | None = None  # what its first-boot gate pinned (outputs nodes.<name>.hostKey)


@dataclass(frozen=True)
class SshSettings:
    user: str
    identity: str | None = None
    options: Sequence[str] = field(default_factory=tuple)  # extra `-o` values, e.g. "StrictHostKeyChecking=no"
    connect_timeout_s: int = tuning.STATUS_SSH_CONNECT_TIMEOUT_S
    known_hosts: str | None = None  # a file of the stack's pinned host keys (pin_host_keys)
    pinned: frozenset[str] = frozenset()  # the addresses it lists

    def argv(self, address: str) -> list[str]:
        argv = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout_s}"]
        if self.identity:
            argv += ["-i", self.identity, "-o", "IdentitiesOnly=yes"]
        for option in self.options:  # ssh keeps an option's first value: the user's win
            argv += ["-o", option]
        if self.known_hosts and address in self.pinned:
            argv += ["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={self.known_hosts}"]
        return argv + [f"{self.user}@{address}"]


def pin_host_keys(ssh: SshSettings, targets: Sequence[NodeTarget], directory: Path) -> SshSettings:
    """`ssh` accepting, for each target that has a pinned host key, that key only:
    a known_hosts file in `directory` (the caller's to remove)."""
    keyed = [t for t in targets if t.host_key]
    if not keyed:
        return ssh  # outputs from before host keys were pinned: ssh's own defaults
    path = directory / "known_hosts"
    path.write_text("".join(f"{t.address} {t.host_key}\n" for t in keyed))
    return dataclasses.replace(ssh, known_hosts=str(path), pinned=frozenset(t.address for t in keyed))


def gather_node(target: NodeTarget, ssh: SshSettings, probe_timeout_s: int = tuning.STATUS_PROBE_TIMEOUT_S,
                script: str | None = None) -> dict[str, Any]:
    """One SSH session: the gather script on stdin, its JSON on stdout. An unreachable
    node, a refused sudo or garbled output is recorded as such, never raised."""
    remote = ["sudo", "-n", "bash", "-s", "--", str(probe_timeout_s), VOLUME]
    text = script if script is not None else GATHER_SCRIPT.read_text()
    limit = text.count("\n\tprobe ") * probe_timeout_s + SSH_SESSION_SLACK_S
    fact: dict[str, Any] = {"address": target.address, "role": target.role, "ssh_rc": None, "ssh_err": "",
                            "probes": {}}
    try:
        result = subprocess.run([*ssh.argv(target.address), *remote], input=text, capture_output=True,
                                text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        fact["ssh_err"] = f"no answer within {limit} s"
        return fact
    fact["ssh_rc"], fact["ssh_err"] = result.returncode, result.stderr.strip()[-2000:]
    if result.returncode == 0:
        try:
            fact["probes"] = json.loads(result.stdout)
        except ValueError:
            fact["ssh_err"] = f"the gather script's output is not JSON: {result.stdout[:200]!r}"
    return fact


def gather_nodes(targets: Sequence[NodeTarget], ssh: SshSettings,
                 probe_timeout_s: int = tuning.STATUS_PROBE_TIMEOUT_S) -> dict[str, dict[str, Any]]:
    script = GATHER_SCRIPT.read_text()
    with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
        futures = {t.name: pool.submit(gather_node, t, ssh, probe_timeout_s, script) for t in targets}
    return {name: f.result() for name, f in futures.items()}


# --- the DigitalOcean API ---------------------------------------------------------------

class ApiError(Exception):
    pass


def _get(api_url: str, token: str, path: str) -> dict[str, Any]:
    # The token travels only in this request's header: never argv, never a log line.
    request = urllib.request.Request(api_url.rstrip("/") + path,
                                     headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=tuning.STATUS_API_TIMEOUT_S) as reply:
            return json.loads(reply.read() or b"{}")
    except urllib.error.HTTPError as e:
        raise ApiError(f"GET {path}: HTTP {e.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as e:
        raise ApiError(f"GET {path}: {getattr(e, 'reason', e)}") from None


def gather_api(api_url: str, token: str, reserved_ip: str, ids: Sequence[int]) -> dict[str, Any]:
    """The API's view: the reserved IP's holder, each droplet's status, and the IP's
    latest actions (the first page and the last one, whatever order the API lists)."""
    try:
        ip = _get(api_url, token, f"/v2/reserved_ips/{reserved_ip}").get("reserved_ip") or {}
        droplets = {}
        for droplet_id in ids:
            try:
                droplets[str(droplet_id)] = _get(api_url, token, f"/v2/droplets/{droplet_id}").get("droplet") or {}
            except ApiError as e:
                droplets[str(droplet_id)] = {"error": str(e)}
        first = _get(api_url, token, f"/v2/reserved_ips/{reserved_ip}/actions?per_page=50")
        actions = list(first.get("actions") or [])
        last = ((first.get("links") or {}).get("pages") or {}).get("last")
        if last and "?" in last:
            actions += _get(api_url, token, f"/v2/reserved_ips/{reserved_ip}/actions?{last.split('?', 1)[1]}"
                            ).get("actions") or []
    except ApiError as e:
        return {"error": str(e)}
    return {"reserved_ip": ip, "droplets": droplets, "actions": actions}


def gather(stack: str, reserved_ip: str, targets: Sequence[NodeTarget], ssh: SshSettings,
           api_url: str | None = None, token: str | None = None,
           probe_timeout_s: int = tuning.STATUS_PROBE_TIMEOUT_S) -> dict[str, Any]:
    nodes = gather_nodes(targets, ssh, probe_timeout_s)
    api = None
    if token and api_url:
        api = gather_api(api_url, token, reserved_ip, droplet_ids(nodes))
    return {"stack": stack, "taken_at": round(time.time(), 1), "reserved_ip": reserved_ip, "nodes": nodes,
            "api": api}
