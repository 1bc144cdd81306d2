"""`make status STACK=lab`: tooling.status run against the running lab, as an admin
machine would run it against a real stack, from the lab's public side (its switch
namespace). The lab feeds its own stack outputs (the program's outputs as `lab up`
rendered them with the lab's addresses), its admin key and its API stand-in's token
(in the environment, never in argv)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from infra.paths import REPO_ROOT
from lab.api_tls import ca_file
from lab.stack import STACK_FILE, gate_outputs
from lab.topology import SSH_OPTS, STACK, SWITCH_NS, run_dir

def outputs_file() -> Path:
    """The lab's stack outputs for tooling.status: as `lab up` rendered them, with each
    node's host key as its first-boot gate printed it (as a real stack's state holds
    it), so status pins the keys the nodes really have."""
    rendered = run_dir() / "render" / "outputs.json"
    if not rendered.exists():
        raise SystemExit(f"no lab outputs at {rendered}: bring the lab up first (make lab)")
    outputs = json.loads(rendered.read_text())
    nodes = outputs.get("nodes") or {}
    for name, key in gate_outputs(nodes).items():
        nodes[name]["hostKey"] = key
    fd, tmp = tempfile.mkstemp(dir=run_dir(), prefix="outputs-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(outputs, f)
    path = run_dir() / "status-outputs.json"
    os.replace(tmp, path)
    return path


def status_argv(extra: Sequence[str] = ()) -> list[str]:
    # The lab's ssh options, plus a shared master connection per node: the tests' own
    # sessions (tests/helpers/lab_support.Admin) use the same socket, which keeps every
    # client of the lab under the nodes' SSH rate limit (infra/tuning.py SSH_RATE_*).
    # Not the lab's "accept any host key": status checks the pinned ones.
    options = [o for o in SSH_OPTS if o != "-o" and not o.startswith(("StrictHostKeyChecking=", "UserKnownHostsFile="))]
    options += ["ControlMaster=auto", f"ControlPath={run_dir()}/cm-%C", "ControlPersist=300"]
    return ["ip", "netns", "exec", SWITCH_NS, sys.executable, "-m", "tooling.status", "--stack", STACK,
            "--outputs", str(outputs_file()), "--config", str(STACK_FILE),
            "--identity", str(run_dir() / "admin_key"), *[f"--ssh-option={o}" for o in options], *extra]


def status(extra: Sequence[str] = (), capture: bool = False, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run `tooling.status` against the lab; its exit code is the verdict."""
    token = (run_dir() / "api_token").read_text().strip()
    # The lab stack's clusterApiUrl is its stand-in's HTTPS, under the lab's own CA.
    env = {**os.environ, "DIGITALOCEAN_TOKEN": token, "SSL_CERT_FILE": str(ca_file())}
    return subprocess.run(status_argv(extra), cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
                          capture_output=capture, text=True, timeout=timeout)
