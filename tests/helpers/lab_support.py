"""Helpers for the lab tier: reach nodes the way an admin would, from the lab's public side."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from infra import tuning
from lab.standin import call_api
from lab.topology import SSH_OPTS, SWITCH_NS, LabNode, run_dir



def in_lab(*cmd: str, timeout: float = 120, netns: str = SWITCH_NS) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", netns, *cmd], capture_output=True, text=True, timeout=timeout)


@dataclass
class Admin:
    """SSH as the deploy user with the lab's admin key over one multiplexed connection.

    Multiplexing keeps the tests far below the nodes' SSH rate limit (new
    connections per source, infra/tuning.py SSH_RATE_*), which is itself under test.
    """

    node: LabNode

    def run(self, command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        for attempt in range(5):
            result = in_lab("ssh", "-i", str(run_dir() / "admin_key"), *SSH_OPTS,
                            "-o", "ControlMaster=auto", "-o", f"ControlPath={run_dir()}/cm-%C",
                            "-o", "ControlPersist=300", f"deploy@{self.node.public_ip}", command, timeout=timeout)
            # A new connection refused by the SSH rate limit: the next one gets
            # through once the source's bucket has a token again.
            if result.returncode != 255 or "Connection refused" not in result.stderr or attempt == 4:
                break
            time.sleep(60 / tuning.SSH_RATE_PER_MINUTE + 1)
        if check and result.returncode != 0:
            raise AssertionError(f"{self.node.name}: {command!r} exited {result.returncode}: "
                                 f"{result.stdout[-1500:]}{result.stderr[-1500:]}")
        return result

    def sudo(self, command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.run(f"sudo -n {command}", check=check, timeout=timeout)


PROBE = r"""
import json, socket, sys
host, ports, source = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
out = {}
for port in ports:
    s = socket.socket(); s.settimeout(2.0)
    if source: s.bind((source, 0))
    try:
        s.connect((host, port)); out[port] = "open"
    except ConnectionRefusedError:
        out[port] = "refused"
    except OSError:
        out[port] = "filtered"
    finally:
        s.close()
print(json.dumps(out))
"""


def probe_tcp(host: str, ports: list[int], source: str = "", netns: str = SWITCH_NS) -> dict[int, str]:
    """open / refused (the host answered) / filtered (no answer) for each port, seen from `netns`."""
    result = subprocess.run(["ip", "netns", "exec", netns, "python3", "-c", PROBE, host, json.dumps(ports), source],
                            capture_output=True, text=True, timeout=10 + 3 * len(ports), check=True)
    return {int(k): v for k, v in json.loads(result.stdout).items()}


__all__ = ["Admin", "in_lab", "probe_tcp", "SSH_OPTS", "socket"]


def api(method: str, path: str, body: dict | None = None, token: str | None = None) -> tuple[int, dict]:
    """Call the lab's DigitalOcean stand-in from the lab's public side."""
    return call_api(method, path, body, token)


@contextmanager
def unmanaged(node: LabNode, resource: str) -> Iterator[None]:
    """Pacemaker leaves `resource` alone while a test moves it by hand (only that
    resource: pausing the whole cluster would make the database agents re-probe
    and reset replication afterwards)."""
    admin = Admin(node)
    admin.sudo(f"pcs resource unmanage {resource}")
    try:
        yield
    finally:
        admin.sudo(f"pcs resource manage {resource}")
        admin.sudo(f"pcs resource cleanup {resource}")


def mail_subject(record: dict) -> str:
    """The Subject header of a message the lab's relay took (lab.mailsink.received)."""
    import email

    return str(email.message_from_string(record["data"]).get("Subject", "")).replace("\n", " ")


def wait_for_mail(since: float, *fragments: str, timeout_s: float = 120, body: bool = False) -> dict:
    """The first message the lab's relay took after `since` (epoch seconds) whose subject
    (or with `body`, whole text) holds every fragment, with "after_s" (seconds from
    `since`); fails on timeout, listing what did arrive."""
    from lab.mailsink import received

    deadline = time.monotonic() + timeout_s
    while True:
        mails = [m for m in received() if m["received"] >= since]
        for m in mails:
            if all(f in (m["data"] if body else mail_subject(m)) for f in fragments):
                return m | {"after_s": round(m["received"] - since, 1), "subject": mail_subject(m)}
        if time.monotonic() > deadline:
            raise AssertionError(f"no mail with {fragments} within {timeout_s} s; "
                                 f"got: {[mail_subject(m) for m in mails]}")
        time.sleep(1)
