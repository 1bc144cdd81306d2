"""The DigitalOcean API and metadata stand-in (lab.fake_do) as the lab and the agent
sandbox run it: its droplets (names and tags as the program gives them), its token,
and its process in a switch namespace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from infra.config import StackConfig
from infra.failover import FAILOVER_TOKEN_SCOPES
from infra.naming import droplet_name, role_of, role_tag, stack_tag
from infra.paths import REPO_ROOT
from lab.containers import sh
from lab.stack import lab_config
from lab.api_tls import ensure_api_tls, server_files
from lab.topology import API_PORT, API_TLS_PORT, API_URL, GATEWAY, METADATA_IP, RESERVED_IP, SWITCH_NS, LabNode, run_dir

START_TIMEOUT = 20.0


def droplet_records(cfg: StackConfig, nodes: list[LabNode]) -> list[dict[str, Any]]:
    """The stand-in's droplets for `nodes`, named and tagged as the program's droplets are."""
    return [{"id": n.droplet_id, "name": droplet_name(cfg, n.name), "public_ipv4": n.public_ip,
             "private_ipv4": n.private_ip, "anchor_ipv4": n.anchor_ip,
             "tags": [stack_tag(cfg), role_tag(cfg, role_of(n.name))]}
            for n in nodes]


def start_api(run: Path, switch_ns: str, state: dict[str, Any], token_file: Path, hook: Path,
              action_delay: float | None = None, tls: bool = False,
              scoped: dict[Path, Sequence[str]] | None = None) -> subprocess.Popen[bytes]:
    """Start the stand-in with `state` in `switch_ns` (API on GATEWAY:API_PORT, with `tls` on
    GATEWAY:API_TLS_PORT over HTTPS too; metadata on METADATA_IP:80); its files (config,
    state, log, pid) go to `run`. `token_file` holds the full-access token, `scoped` the
    custom-scoped ones (file -> scopes). Returns once it has loaded its state."""
    (run / "api-config.json").write_text(json.dumps(state, indent=1))
    action = [] if action_delay is None else ["--action-delay", str(action_delay)]
    for file, scopes in (scoped or {}).items():
        action.append(f"--scoped-token={file}={','.join(scopes)}")
    if tls:
        ensure_api_tls()
        cert, key = server_files()
        action += ["--api-tls-listen", f"{GATEWAY}:{API_TLS_PORT}", "--tls-cert", str(cert), "--tls-key", str(key)]
    with open(run / "api.log", "w") as log_file:
        proc = subprocess.Popen(
            # Only the network namespace is switched (see lab.hook.power_on).
            ["nsenter", f"--net=/run/netns/{switch_ns}", sys.executable, "-m", "lab.fake_do",
             "--state", str(run / "api-config.json"), "--state-out", str(run / "api-state.json"),
             "--token-file", str(token_file), "--api-listen", f"{GATEWAY}:{API_PORT}",
             "--metadata-listen", f"{METADATA_IP}:80", "--hook", str(hook), *action],
            cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True)
    (run / "api.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + START_TIMEOUT
    while not (run / "api-state.json").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the API stand-in did not start: {(run / 'api.log').read_text()[-2000:]}")
        time.sleep(0.1)
    return proc


def _token_file(name: str) -> Path:
    token = run_dir() / name
    if not token.exists():
        token.touch(mode=0o600)
        token.write_text(os.urandom(24).hex())
    return token


def ensure_api_token() -> Path:
    """The token the program hands the nodes as failoverApiToken: custom-scoped, as the
    README says to make it (FAILOVER_TOKEN_SCOPES)."""
    return _token_file("api_token")


def admin_token() -> Path:
    """The account owner's full-access token: the lab's own clients (tests, hooks)."""
    return _token_file("admin_token")


def reserved_ip_only_token() -> Path:
    """A token with the reserved-IP scopes alone: the tests show an agent refused with it."""
    return _token_file("reserved_ip_only_token")


def start_lab_api(nodes: list[LabNode]) -> None:
    """The lab's stand-in in the switch namespace, its actions made real by lab.hook; the
    reserved IP starts unassigned, as the program leaves it (the cluster assigns it)."""
    cfg = lab_config()
    state = {
        "region": cfg.region,
        "droplets": droplet_records(cfg, nodes),
        "reserved_ips": [{"ip": RESERVED_IP, "droplet_id": None}],
    }
    ensure_api_token()
    hook = run_dir() / "hook"
    hook.write_text(f"#!/bin/sh\ncd {REPO_ROOT} && exec {sys.executable} -m lab.hook \"$@\"\n")
    hook.chmod(0o700)
    sh("ip", "netns", "exec", SWITCH_NS, "ip", "link", "set", "lo", "up")
    start_api(run_dir(), SWITCH_NS, state, admin_token(), hook, tls=True,
              scoped={ensure_api_token(): FAILOVER_TOKEN_SCOPES,
                      reserved_ip_only_token(): ("reserved_ip:read", "reserved_ip:update")})


# A client run inside the switch namespace (where the stand-in listens); the token
# comes on stdin, never in its argv.
_API_CLIENT = r"""
import json, sys, urllib.request, urllib.error
method, url, body = sys.argv[1], sys.argv[2], sys.argv[3]
token = sys.stdin.read().strip()
req = urllib.request.Request(url, method=method, data=body.encode() if body else None,
                             headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        print(json.dumps({"status": r.status, "body": json.loads(r.read() or b"null")}))
except urllib.error.HTTPError as e:
    print(json.dumps({"status": e.code, "body": json.loads(e.read() or b"null")}))
"""


def call_api(method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None,
             switch_ns: str = SWITCH_NS) -> tuple[int, Any]:
    """Call the lab's DigitalOcean stand-in from the lab's public side: (status, parsed body)."""
    token = token if token is not None else admin_token().read_text().strip()
    result = subprocess.run(["ip", "netns", "exec", switch_ns, sys.executable, "-c", _API_CLIENT, method,
                             API_URL + path, json.dumps(body) if body else ""],
                            input=token, capture_output=True, text=True, timeout=30, check=True)
    reply = json.loads(result.stdout)
    return reply["status"], reply["body"]
