"""After a disruptive lab test fails: what the lab looked like, and the lab put back.

CI keeps only the test output, so a failure carries the cluster's own view (crm_mon,
the fencing history, the API stand-in's last requests). A disruptive test that fails
midway can leave a node killed, fenced off or cut off the VPC; every later test would
then time out waiting for a settled cluster and one fault would read as a dozen.
`restore` does what an operator would: power on what is off, plug the cables in;
`converge` what they would do next: run `pulumi up` again and wait for the cluster."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

from lab.containers import container_init, set_cables
from lab.fake_do.account import DEFAULT_ACTION_DELAY
from lab.hook import power_on as boot_node
from lab import replay
from lab.stack import lab_nodes, lab_plan
from lab.topology import LabNode, run_dir
from tests.helpers.lab_support import Admin, api

# Read-only commands whose output carries no secret (no resource parameters).
CLUSTER_VIEW = ("crm_mon -1 -r -f", "stonith_admin --history '*'")
API_LOG_LINES = 25
# A killed node is fenced (powered off through the API) once the cluster notices it
# is gone; booting it before that would have the fence kill it again.
FENCE_WAIT_S = 90


def cut_off_vpc(node: LabNode, cut: bool) -> None:
    """Cut a node off the VPC (or plug it in again): its link down, and every packet to
    or from the VPC range dropped in its namespace whatever route it would take."""
    subprocess.run(["ip", "-n", node.netns, "link", "set", "eth1", "down" if cut else "up"], check=cut)
    rules = ("table inet lab_cut { chain in { type filter hook input priority -300; ip saddr 10.99.0.0/24 drop; }; "
             "chain out { type filter hook output priority -300; ip daddr 10.99.0.0/24 drop; }; }")
    script = rules if cut else "delete table inet lab_cut"
    subprocess.run(["ip", "netns", "exec", node.netns, "nft", "-f", "-"], input=script, text=True, check=cut,
                   capture_output=not cut)


def _droplet_status(node: LabNode) -> str:
    status, body = api("GET", f"/v2/droplets/{node.droplet_id}")
    return body.get("droplet", {}).get("status", f"HTTP {status}") if status == 200 else f"HTTP {status}"


def describe() -> str:
    """The lab's state in a few dozen lines, for a failed test's report."""
    out, running = [], []
    for node in lab_nodes():
        alive = container_init(node) is not None
        out.append(f"{node.name}: container {'running' if alive else 'not running'}, "
                   f"droplet {_droplet_status(node)}")
        if alive:
            running.append(node)
    for node in running[-1:]:  # the witness when it runs: never the node a test kills
        for command in CLUSTER_VIEW:
            result = Admin(node).sudo(command, check=False, timeout=20)
            out += [f"$ {command}  (on {node.name})", (result.stdout + result.stderr).rstrip()[-3000:]]
    log = run_dir() / "api.log"
    if log.exists():
        # API calls only: the metadata service's polls drown them.
        calls = [line for line in log.read_text().splitlines() if " metadata " not in line]
        out += ["api.log, last API lines:", *calls[-API_LOG_LINES:]]
    return "\n".join(out)


def restore() -> list[str]:
    """Every node plugged in and running again; the names of the nodes powered on."""
    # the API as the lab started it: no fault queued, every action at the default pace
    api("POST", "/_lab/faults", {"clear": True})
    api("POST", "/_lab/action_delay", {"seconds": DEFAULT_ACTION_DELAY, "by_type": {}})
    powered = []
    for node in lab_nodes():
        cut_off_vpc(node, False)
        if container_init(node) is not None:
            set_cables(node, "up")
            continue
        deadline = time.monotonic() + FENCE_WAIT_S
        while _droplet_status(node) != "off" and time.monotonic() < deadline:
            time.sleep(2)
        if _droplet_status(node) == "off":  # fenced or powered off through the API
            status, body = api("POST", f"/v2/droplets/{node.droplet_id}/actions", {"type": "power_on"})
            assert status == 201, body
            deadline = time.monotonic() + 120
            while container_init(node) is None and time.monotonic() < deadline:
                time.sleep(1)
        else:  # killed and never fenced (no quorum): as far as the API knows it never lost power
            boot_node(node)
        powered.append(node.name)
    return powered


def converge(settled: Callable[[list[LabNode]], bool], seconds: float) -> int:
    """The stack converged again (the lab's replay of every command whose inputs or
    earlier run changed, as `pulumi up` would) and the cluster settled within
    `seconds`; how many commands ran. Raises if either fails."""
    ran = replay.replay_all(lab_plan(lab_nodes()))
    deadline = time.monotonic() + seconds
    while not _holds(settled):
        if time.monotonic() > deadline:
            raise AssertionError(f"the cluster did not settle within {seconds} s after the replay")
        time.sleep(3)
    return ran


def _holds(settled: Callable[[list[LabNode]], bool]) -> bool:
    try:
        return settled(lab_nodes())
    except Exception:  # a node not answering yet, or pacemaker's status half written
        return False
