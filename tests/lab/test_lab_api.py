"""The lab's DigitalOcean stand-in acting for real: metadata per node, the reserved IP
moving between nodes, and power actions that really stop and start a node."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from lab.procfs import pids_in_netns, pids_rooted_under
from lab.seed_probe import ssh_args
from lab.stack import lab_config
from lab.standin import reserved_ip_only_token
from lab.topology import LAB_API_URL, RESERVED_IP, LabNode, run_dir
from tests.helpers.lab_support import SSH_OPTS, Admin, api, in_lab, unmanaged

pytestmark = pytest.mark.lab


def _wait_action(path: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, body = api("GET", path)
        assert status == 200, body
        if body["action"]["status"] != "in-progress":
            return body["action"]
        assert time.monotonic() < deadline, body
        time.sleep(0.3)


def _assign(ip: str, node: LabNode) -> None:
    for _ in range(20):  # 422 while an earlier action on the IP is pending
        status, body = api("POST", f"/v2/reserved_ips/{ip}/actions", {"type": "assign", "droplet_id": node.droplet_id})
        if status != 422:
            break
        time.sleep(0.5)
    assert status == 201, body
    action = _wait_action(f"/v2/reserved_ips/{ip}/actions/{body['action']['id']}")
    assert action["status"] == "completed", action


def _holder_hostname() -> str:
    """Whoever answers on the reserved IP, asked over SSH through it."""
    result = in_lab("ssh", "-i", str(run_dir() / "admin_key"), *SSH_OPTS, f"deploy@{RESERVED_IP}", "hostname")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _metadata(node: LabNode, path: str) -> str:
    return Admin(node).run(f"curl -fsS http://169.254.169.254/metadata/v1/{path}").stdout.strip()


def test_metadata_answers_each_node_about_itself(nodes: list[LabNode]) -> None:
    for node in nodes:
        assert _metadata(node, "id") == str(node.droplet_id)
        assert _metadata(node, "interfaces/public/0/ipv4/address") == node.public_ip
        assert _metadata(node, "interfaces/public/0/anchor_ipv4/address") == node.anchor_ip
        assert _metadata(node, "interfaces/private/0/ipv4/address") == node.private_ip


def test_api_refuses_a_wrong_token(nodes: list[LabNode]) -> None:
    status, body = api("GET", "/v2/reserved_ips", token="not-the-token")
    assert status == 401 and body["id"] == "unauthorized"


def test_reserved_ip_really_moves_with_its_assignment(nodes: list[LabNode]) -> None:
    _, body = api("GET", f"/v2/reserved_ips/{RESERVED_IP}")
    holder = next(n for n in nodes if n.droplet_id == body["reserved_ip"]["droplet"]["id"])
    other = next(n for n in nodes[:2] if n is not holder)
    with unmanaged(nodes[-1], "reserved-ip"):
        assert _metadata(holder, "reserved_ip/ipv4/active") == "true"
        assert _holder_hostname() == f"do-ha-stack-lab-{holder.name}"
        _assign(RESERVED_IP, other)
        assert _holder_hostname() == f"do-ha-stack-lab-{other.name}"
        assert _metadata(other, "reserved_ip/ipv4/active") == "true"
        assert _metadata(holder, "reserved_ip/ipv4/active") == "false"
        status, body = api("GET", f"/v2/reserved_ips/{RESERVED_IP}")
        assert body["reserved_ip"]["droplet"]["id"] == other.droplet_id
        _assign(RESERVED_IP, holder)  # leave it with the cluster's active node
        assert _holder_hostname() == f"do-ha-stack-lab-{holder.name}"


# After the cluster's failover tests (order 0): in a run where it came right before
# them, the first failover missed its 60 s.
@pytest.mark.disruptive(order=1)
def test_power_off_really_stops_the_node_and_power_on_boots_it(nodes: list[LabNode]) -> None:
    # The witness runs no resource; the cluster fences it (off) when it goes, and it
    # rejoins after the power_on.
    _power_cycle(nodes[-1], nodes[0])


def _power_cycle(witness: LabNode, observer: LabNode) -> None:
    # --verbose: every event. Without it pacemaker 3.0 sums a target up in one line whose
    # "last-successful" can stay at an earlier fence (one of a chaos test's), so a new
    # fence would not show.
    history = f"stonith_admin --history do-ha-stack-lab-{witness.name} --verbose"
    before = Admin(observer).sudo(history, check=False).stdout
    status, body = api("POST", f"/v2/droplets/{witness.droplet_id}/actions", {"type": "power_off"})
    assert status == 201, body
    assert _wait_action(f"/v2/actions/{body['action']['id']}")["status"] == "completed"
    assert pids_rooted_under(witness.root) == [] and pids_in_netns(Path(f"/run/netns/{witness.netns}")) == []
    assert api("GET", f"/v2/droplets/{witness.droplet_id}")[1]["droplet"]["status"] == "off"
    # The cluster fences the vanished node (the fence agent finds it off): wait for
    # that, or the fence would stop the node again after the power_on.
    deadline = time.monotonic() + 90
    while (now := Admin(observer).sudo(history, check=False).stdout) == before or "successful" not in now:
        assert time.monotonic() < deadline, "the cluster did not fence the powered-off witness"
        time.sleep(2)
    status, body = api("POST", f"/v2/droplets/{witness.droplet_id}/actions", {"type": "power_on"})
    assert status == 201, body
    assert _wait_action(f"/v2/actions/{body['action']['id']}")["status"] == "completed"
    deadline = time.monotonic() + 120
    while Admin(witness).run("systemctl is-system-running --wait", check=False).stdout.strip() not in (
            "running", "degraded"):
        assert time.monotonic() < deadline, "the witness did not come back"
        time.sleep(2)
    # the node came back from its own disk: same instance, first boot not repeated
    assert Admin(witness).run("cloud-init status --wait").stdout.strip().endswith("done")
    assert Admin(witness).run("test -s /var/lib/do-ha-stack/hardened").returncode == 0


def test_the_nodes_call_the_api_over_https_and_verify_its_certificate(nodes: list[LabNode]) -> None:
    """clusterApiUrl is https only; the lab's stand-in answers there under a CA only the
    lab's nodes trust. Both agents' clients (Python's, the fence agent; curl, the
    reserved-IP agent) check it: with another CA they refuse the stand-in."""
    assert lab_config().cluster_api_url == LAB_API_URL
    witness = next(n for n in nodes if n.name == "witness")
    other_ca = Admin(witness).run("ls /usr/share/ca-certificates/mozilla/*.crt | head -n 1").stdout.strip()
    status = f"fence_digitalocean --api-url {LAB_API_URL} -o status --plug {nodes[0].droplet_id}"
    trusted = Admin(witness).sudo(status, check=False)
    assert trusted.returncode == 0 and "ON" in trusted.stdout.upper(), trusted.stdout + trusted.stderr
    refused = Admin(witness).sudo(f"env SSL_CERT_FILE={other_ca} {status}", check=False)
    assert refused.returncode != 0 and "certificate" in (refused.stdout + refused.stderr).lower(), refused
    curl = f"curl -sS -o /dev/null -w '%{{http_code}}' {LAB_API_URL}/v2/account"
    assert Admin(witness).run(curl).stdout == "401"  # TLS verified; no token sent
    assert Admin(witness).run(f"{curl} --cacert {other_ca}", check=False).returncode == 60  # curl: peer not verified


def test_the_nodes_token_holds_exactly_the_failover_scopes(nodes: list[LabNode]) -> None:
    """The stand-in enforces DigitalOcean's documented scopes per token, and the token the
    nodes hold has FAILOVER_TOKEN_SCOPES: the whole lab tier fences and moves the IP with
    it. Beyond them, DigitalOcean's 403; an agent whose token lacks its scopes says which."""
    token = (run_dir() / "api_token").read_text().strip()
    assert api("GET", f"/v2/droplets/{nodes[0].droplet_id}", token=token)[0] == 200
    assert api("GET", f"/v2/reserved_ips/{RESERVED_IP}", token=token)[0] == 200
    status, body = api("GET", "/v2/actions", token=token)  # actions:read: not the nodes'
    assert (status, body["id"]) == (403, "forbidden"), body
    assert api("DELETE", "/v2/droplets/999999", token=token)[0] == 403  # droplet:delete: never
    # The fence device's start and monitor (no plug) with the nodes' own token.
    witness = next(n for n in nodes if n.name == "witness")
    monitor = Admin(witness).sudo(f"fence_digitalocean --api-url {LAB_API_URL} -o monitor", check=False)
    assert monitor.returncode == 0, monitor.stdout + monitor.stderr
    # The fence agent with a token that may move reserved IPs only.
    token_file = "/run/do-ha-test-ip-only-token"
    subprocess.run(ssh_args(witness, f"sudo install -m 0600 /dev/stdin {token_file}"), check=True, text=True,
                   input=reserved_ip_only_token().read_text().strip(), capture_output=True, timeout=60)
    try:
        refused = Admin(witness).sudo(f"fence_digitalocean --api-url {LAB_API_URL} --token-file {token_file} "
                                      f"-o status --plug {nodes[0].droplet_id}", check=False)
    finally:
        Admin(witness).sudo(f"rm -f {token_file}")
    assert refused.returncode != 0, refused
    assert "it lacks a scope: fencing needs droplet:read and droplet:update" in refused.stderr, refused.stderr
