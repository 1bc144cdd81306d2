"""The resource graph each stack registers, checked under Pulumi mocks."""

from __future__ import annotations

import ipaddress
import json

from infra.config import parse
from tooling.mocks import SECRET_MARKER, Run, run_program
from infra.ports import CLUSTER_TCP_PORT_RANGES, CLUSTER_UDP_PORT_RANGES
from tooling.render import stack_config
from infra.userdata import USER_DATA_LIMIT
from tests.helpers.stacks import plain_config
from tooling import resource_types as types

PUBLIC = {"0.0.0.0/0", "::/0"}


def _ports(rule: dict) -> set[int]:
    if rule["protocol"] == "icmp":
        return set()
    lo, _, hi = rule["portRange"].partition("-")
    return set(range(int(lo), int(hi or lo) + 1))


def _cluster_ports() -> dict[str, set[int]]:
    tcp = {p for lo, hi in CLUSTER_TCP_PORT_RANGES.values() for p in range(lo, hi + 1)}
    udp = {p for lo, hi in CLUSTER_UDP_PORT_RANGES.values() for p in range(lo, hi + 1)}
    return {"tcp": tcp, "udp": udp}


def test_resource_counts(stack_run: Run) -> None:
    assert len(stack_run.of_type(types.DROPLET)) == 3
    assert len(stack_run.of_type(types.VPC)) == 1
    assert len(stack_run.of_type(types.RESERVED_IP)) == 1
    assert len(stack_run.of_type(types.RESERVED_IP_ASSIGNMENT)) == 0  # the cluster assigns it
    assert len(stack_run.of_type(types.FIREWALL)) == 3
    assert len(stack_run.of_type(types.MONITOR_ALERT)) == 3
    assert len(stack_run.of_type(types.PROJECT)) == 1


def test_every_resource_sits_under_the_stack_component(stack_run: Run) -> None:
    top = stack_run.by_name(stack_run.stack)
    assert top.type == "do-ha-stack:index:HaStack"
    urns = {r.urn: r for r in stack_run.registrations}
    for r in stack_run.registrations:
        if r is top:
            continue
        chain, parent = [], r.parent
        while parent in urns:
            chain.append(parent)
            parent = urns[parent].parent
        assert top.urn in chain, f"{r.type} {r.name} is not under the stack component"
        if r.custom:
            assert not urns[r.parent].custom, f"{r.name} is parented to a custom resource"


def test_every_droplet_is_in_the_vpc_with_monitoring(stack_run: Run) -> None:
    vpc = stack_run.of_type(types.VPC)[0]
    cfg = parse(stack_run.stack, plain_config(stack_run.stack))
    assert vpc.inputs["ipRange"] == cfg.vpc_ip_range
    for droplet in stack_run.of_type(types.DROPLET):
        assert vpc.urn in droplet.dependencies
        assert droplet.inputs["vpcUuid"].startswith("vpc-")
        assert droplet.inputs["monitoring"] is True
        assert droplet.inputs["dropletAgent"] is False
        assert droplet.inputs["image"] == "debian-13-x64"
        assert f"do-ha-stack-{stack_run.stack}" in droplet.inputs["tags"]
    private = [a["privateIpv4"] for a in stack_run.outputs["nodes"].values()]
    assert all(ipaddress.ip_address(a) in ipaddress.ip_network(cfg.vpc_ip_range) for a in private)


def test_witness_is_smaller_and_untagged_as_app(stack_run: Run) -> None:
    cfg = parse(stack_run.stack, plain_config(stack_run.stack))
    witness = stack_run.by_name("witness")
    assert witness.inputs["size"] == cfg.witness_size
    assert f"do-ha-stack-{stack_run.stack}-witness" in witness.inputs["tags"]
    assert f"do-ha-stack-{stack_run.stack}-app" not in witness.inputs["tags"]


def test_no_cluster_port_is_reachable_from_outside_the_stack_tag(stack_run: Run) -> None:
    cluster = _cluster_ports()
    stack_tag = f"do-ha-stack-{stack_run.stack}"
    for fw in stack_run.of_type(types.FIREWALL):
        for rule in fw.inputs["inboundRules"]:
            exposed = _ports(rule) & cluster.get(rule["protocol"], set())
            if exposed:
                assert not rule.get("sourceAddresses"), f"{fw.name} opens cluster ports to addresses"
                assert rule["sourceTags"] == [stack_tag], f"{fw.name} opens cluster ports to {rule['sourceTags']}"
    # ...and the cluster firewall really opens every cluster port within the stack
    cluster_fw = stack_run.by_name("cluster-firewall")
    for proto, ports in cluster.items():
        opened = set().union(*(_ports(r) for r in cluster_fw.inputs["inboundRules"] if r["protocol"] == proto))
        assert ports <= opened


def test_public_exposure_is_ssh_from_allowed_ranges_and_public_ports(stack_run: Run) -> None:
    cfg = parse(stack_run.stack, plain_config(stack_run.stack))
    for fw in stack_run.of_type(types.FIREWALL):
        for rule in fw.inputs["inboundRules"]:
            sources = set(rule.get("sourceAddresses") or [])
            if rule["protocol"] == "icmp" or not sources:
                continue
            ports = _ports(rule)
            if ports == {22}:
                assert sources == set(cfg.ssh_allowed_cidrs)
            else:
                assert fw.name == "public-app-firewall" and sources == PUBLIC
                assert ports <= set(cfg.public_tcp_ports)
    witness_fw = stack_run.by_name("public-witness-firewall")
    assert {p for r in witness_fw.inputs["inboundRules"] for p in _ports(r)} == {22}


def test_firewalls_wait_for_their_tags(stack_run: Run) -> None:
    tags = {r.urn for r in stack_run.of_type(types.TAG)}
    for fw in stack_run.of_type(types.FIREWALL):
        assert set(fw.dependencies) & tags


def test_reserved_ip_is_never_assigned_by_the_program(stack_run: Run) -> None:
    """pacemaker's reserved-ip agent assigns it (tests/unit/test_day2.py: refresh-safe)."""
    ip = stack_run.of_type(types.RESERVED_IP)[0]
    assert set(ip.inputs) == {"region"}
    assert stack_run.outputs["reservedIp"] == stack_run.by_name("cluster-resources").raw_inputs["create"].split(
        "RESERVED_IP=", 1)[1].split()[0].strip("'")


def test_cloud_init_changes_never_replace_droplets_silently(stack_run: Run) -> None:
    for droplet in stack_run.of_type(types.DROPLET):
        assert set(droplet.ignore_changes) == {"userData", "sshKeys"}


def test_replacement_on_user_data_change_is_an_explicit_choice() -> None:
    raw = stack_config("staging") | {"do-ha-stack:replaceOnUserDataChange": True}
    run = run_program("staging", raw)
    assert all(d.ignore_changes == [] for d in run.of_type(types.DROPLET))


def test_prod_is_protected_and_staging_is_not(prod: Run, staging: Run) -> None:
    """All but what is re-derived by replacement (see infra/naming.derived_opts)."""
    assert all(r.protect for r in prod.registrations if r.type not in types.REPLACED_BY_DESIGN)
    assert {r.type for r in prod.registrations if not r.protect} == types.REPLACED_BY_DESIGN
    assert not any(r.protect for r in staging.registrations)


def test_private_key_is_secret_and_absent_everywhere(stack_run: Run) -> None:
    key = stack_run.by_name("automation")
    assert {"privateKeyOpenssh", "privateKeyPem"} <= set(key.additional_secret_outputs)
    secret = stack_run.generated_secrets["automation"]["privateKeyOpenssh"]
    body = "".join(secret.splitlines()[1:-1])[:40]
    dumped = json.dumps([r.to_json() for r in stack_run.registrations]) + json.dumps(stack_run.outputs)
    assert body and body not in dumped
    for droplet in stack_run.of_type(types.DROPLET):
        assert body not in droplet.raw_inputs["userData"]
        assert "PRIVATE KEY" not in droplet.raw_inputs["userData"]


def test_secret_inputs_are_redacted_in_records() -> None:
    # A secret config value that reached an input would show as the marker.
    from tooling.mocks import _redact
    from pulumi.runtime import rpc
    assert _redact({"a": rpc.wrap_rpc_secret("x"), "b": ["y"]}) == {"a": SECRET_MARKER, "b": ["y"]}


def test_user_data_fits_and_carries_both_key_kinds(stack_run: Run) -> None:
    cfg = parse(stack_run.stack, plain_config(stack_run.stack))
    automation_pub = stack_run.by_name("automation-key").inputs["publicKey"]
    for droplet in stack_run.of_type(types.DROPLET):
        text = droplet.raw_inputs["userData"]
        assert text.startswith("#cloud-config\n")
        assert len(text.encode()) < USER_DATA_LIMIT
        assert automation_pub in text
        assert all(k in text for k in cfg.admin_ssh_keys)


def test_automation_key_is_attached_and_admin_keys_optional(prod: Run, staging: Run) -> None:
    assert {r.name for r in prod.of_type(types.SSH_KEY)} == {"automation-key", "admin-key-1"}
    assert {r.name for r in staging.of_type(types.SSH_KEY)} == {"automation-key"}
    for droplet in prod.of_type(types.DROPLET):
        assert len(droplet.inputs["sshKeys"]) == 2


def test_outputs_give_addresses_and_ssh_commands(stack_run: Run) -> None:
    nodes = stack_run.outputs["nodes"]
    assert set(nodes) == {"app1", "app2", "witness"}
    for node in nodes.values():
        assert node["ssh"] == f"ssh deploy@{node['publicIpv4']}"


def test_alerts_and_project(stack_run: Run) -> None:
    alerts = stack_run.of_type(types.MONITOR_ALERT)
    assert {a.inputs["type"] for a in alerts} == {
        "v1/insights/droplet/cpu", "v1/insights/droplet/memory_utilization_percent",
        "v1/insights/droplet/disk_utilization_percent"}
    assert all(a.inputs["alerts"]["emails"] == ["ops@example.com"] for a in alerts)
    project = stack_run.of_type(types.PROJECT)[0]
    assert project.inputs["environment"] == {"prod": "Production", "staging": "Staging"}[stack_run.stack]
    assert len(project.inputs["resources"]) == 3  # the droplets only (test_day2: no reserved IP)


def test_no_witness_means_no_witness_resources() -> None:
    run = run_program("staging", stack_config("staging") | {"do-ha-stack:witness": False,
                                                             "do-ha-stack:appNodeCount": 3})
    assert sorted(d.name for d in run.of_type(types.DROPLET)) == ["app1", "app2", "app3"]
    assert "public-witness-firewall" not in {f.name for f in run.of_type(types.FIREWALL)}
