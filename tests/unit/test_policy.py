"""The policy pack (policy/): every rule passes on the real prod and staging
renders and fails on broken copies of them.

The rules are pure functions (policy/rules.py) fed with the offline render: each
Registration's type, inputs (camelCase, secrets as "[secret]") and protect flag
are what the engine hands a resource policy. The stack rule sees the Vpc with the
outputs the mocked provider gave it, as the engine hands a stack policy outputs.

The last tests start the pack itself the way the Pulumi CLI does
(`python -m pulumi.policy ENGINE .` in policy/) and talk to it over the analyzer
gRPC protocol on the loopback interface, so the pulumi_policy wiring in
policy/__main__.py is exercised without the CLI.
"""

from __future__ import annotations

import copy
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pulumi
import pytest
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

from infra.paths import REPO_ROOT
from tooling.mocks import Addresses, Registration, Run, StackMocks
from infra.userdata import USER_DATA_LIMIT
from tooling import resource_types as types
from policy import rules

POLICY_DIR = REPO_ROOT / "policy"


# --- the render as the rules see it -----------------------------------------------------

def options(r: Registration) -> rules.Options:
    return rules.Options(protect=r.protect, stack=rules.stack_of(r.urn))


def vpc_outputs(run: Run, r: Registration) -> dict[str, Any]:
    """The Vpc's outputs from the same mocked provider the render used."""
    mocks = StackMocks(run.stack, Addresses({}, {}, "198.51.100.10"))
    _, state = mocks.new_resource(pulumi.runtime.MockResourceArgs(r.type, r.name, dict(r.inputs)))
    return state


def stack_resources(run: Run) -> list[rules.Resource]:
    return [
        rules.Resource(type=r.type, urn=r.urn, protect=r.protect,
                       props=vpc_outputs(run, r) if r.type == types.VPC else copy.deepcopy(r.inputs))
        for r in run.registrations
    ]


def resource_violations(run: Run) -> list[str]:
    return [f"{r.name}: {message}"
            for r in run.registrations for info in rules.RESOURCE_RULES
            for message in info.check(r.type, r.inputs, options(r))]


def broken(run: Run) -> Run:
    """A deep copy of a render to break."""
    return copy.deepcopy(run)


def first(run: Run, kind: str, name: str | None = None) -> Registration:
    return next(r for r in run.of_type(kind) if name is None or r.name == name)


def check(info_name: str, r: Registration) -> list[str]:
    info = next(i for i in rules.RESOURCE_RULES if i.name == info_name)
    return info.check(r.type, r.inputs, options(r))


# --- the real renders pass -------------------------------------------------------------

def test_the_renders_have_what_the_rules_look_at(stack_run: Run) -> None:
    # Guards against vacuous passes: a rule keyed to a wrong type name would see nothing.
    assert len(stack_run.of_type(types.DROPLET)) == 3
    assert len(stack_run.of_type(types.VPC)) == 1
    cluster = first(stack_run, types.FIREWALL, "cluster-firewall")
    assert {"protocol": "tcp", "portRange": "3306", "sourceTags": [f"do-ha-stack-{stack_run.stack}"]} \
        in cluster.inputs["inboundRules"]
    assert all(rules.stack_of(r.urn) == stack_run.stack for r in stack_run.registrations)


def test_every_rule_passes_on_the_real_render(stack_run: Run) -> None:
    assert resource_violations(stack_run) == []
    assert rules.droplets_in_stack_vpc(stack_resources(stack_run)) == []


def test_the_render_ties_droplets_to_the_vpc_by_value(stack_run: Run) -> None:
    vpc_id = rules._vpc_id(next(r for r in stack_resources(stack_run) if r.type == types.VPC))
    assert vpc_id and all(d.inputs["vpcUuid"] == vpc_id for d in stack_run.of_type(types.DROPLET))


# --- (a) droplets in the stack's VPC --------------------------------------------------

def _resources_with(run: Run, droplet: str, **props: Any) -> list[rules.Resource]:
    out = []
    for res in stack_resources(run):
        if res.type == types.DROPLET and res.name == droplet:
            new = {k: v for k, v in {**res.props, **props}.items() if v is not None}
            res = rules.Resource(res.type, res.urn, new, res.protect, res.property_dependencies)
        out.append(res)
    return out


def test_droplet_outside_the_vpc_fails(prod: Run) -> None:
    problems = rules.droplets_in_stack_vpc(_resources_with(prod, "app2", vpcUuid="vpc-0123456789ab"))
    assert len(problems) == 1 and "app2" in problems[0] and "vpc-0123456789ab" in problems[0]


def test_droplet_without_a_vpc_fails(staging: Run) -> None:
    problems = rules.droplets_in_stack_vpc(_resources_with(staging, "witness", vpcUuid=None))
    assert len(problems) == 1 and "witness has no vpcUuid" in problems[0]


def test_a_second_vpc_fails(prod: Run) -> None:
    resources = stack_resources(prod)
    vpc = next(r for r in resources if r.type == types.VPC)
    other = rules.Resource(types.VPC, vpc.urn + "-other", {"urn": "do:vpc:another"})
    assert "2 Vpc resources" in rules.droplets_in_stack_vpc(resources + [other])[0]


def test_vpc_rule_during_a_preview_follows_property_dependencies(prod: Run) -> None:
    """Before the VPC exists its id is unknown: the droplet's vpcUuid must come from it."""
    resources = stack_resources(prod)
    vpc = next(r for r in resources if r.type == types.VPC)
    unknown = rules.Unknown(UNKNOWN_STRING_VALUE)

    def previewed(dep: str | None) -> list[rules.Resource]:
        out = []
        for r in resources:
            if r.type == types.VPC:
                r = rules.Resource(r.type, r.urn, {**r.props, "urn": unknown}, r.protect)
            elif r.type == types.DROPLET:
                r = rules.Resource(r.type, r.urn, {**r.props, "vpcUuid": unknown}, r.protect,
                                   {"vpcUuid": [dep]} if dep else {})
            out.append(r)
        return out

    assert rules.droplets_in_stack_vpc(previewed(vpc.urn)) == []
    other = "urn:pulumi:prod::do-ha-stack::digitalocean:index/vpc:Vpc::someone-elses"
    assert len(rules.droplets_in_stack_vpc(previewed(other))) == 3
    with pytest.raises(rules.NotKnownYet):
        rules.droplets_in_stack_vpc(previewed(None))


def test_a_literal_vpc_id_before_the_stack_vpc_exists_fails(prod: Run) -> None:
    vpc_urn = first(prod, types.VPC).urn
    resources = []
    for r in _resources_with(prod, "app1", vpcUuid="vpc-hardcoded"):
        if r.type == types.VPC:
            r = rules.Resource(r.type, r.urn, {**r.props, "urn": rules.Unknown()}, r.protect)
        elif r.type == types.DROPLET and r.name != "app1":  # the others take the VPC's id
            r = rules.Resource(r.type, r.urn, r.props, r.protect, {"vpcUuid": [vpc_urn]})
        resources.append(r)
    problems = rules.droplets_in_stack_vpc(resources)
    assert len(problems) == 1 and "vpc-hardcoded" in problems[0]


# --- (b) firewall: cluster ports only to tags ------------------------------------------

RULE_B = "firewall-cluster-ports-tags-only"


@pytest.mark.parametrize("rule, hit", [
    ({"protocol": "tcp", "portRange": "3306", "sourceAddresses": ["0.0.0.0/0", "::/0"]}, "mariadb 3306"),
    ({"protocol": "tcp", "portRange": "3000-4000", "sourceAddresses": ["203.0.113.0/24"]}, "mariadb 3306"),
    ({"protocol": "tcp", "portRange": "all", "sourceAddresses": ["0.0.0.0/0"]}, "gluster-bricks 49152-49251"),
    ({"protocol": "tcp", "sourceAddresses": ["0.0.0.0/0"]}, "pcsd 2224"),
    ({"protocol": "udp", "portRange": "5405", "sourceAddresses": ["0.0.0.0/0"]}, "corosync-knet 5404-5406"),
    ({"protocol": "tcp", "portRange": "24007", "sourceDropletIds": [123]}, "glusterd 24007-24008"),
])
def test_firewall_opening_a_cluster_port_to_sources_other_than_tags_fails(prod: Run, rule: dict, hit: str) -> None:
    run = broken(prod)
    firewall = first(run, types.FIREWALL, "public-app-firewall")
    firewall.inputs["inboundRules"].append(rule)
    problems = check(RULE_B, firewall)
    assert len(problems) == 1 and hit in problems[0], problems


def test_cluster_firewall_rule_with_addresses_besides_tags_fails(staging: Run) -> None:
    run = broken(staging)
    firewall = first(run, types.FIREWALL, "cluster-firewall")
    mariadb = next(r for r in firewall.inputs["inboundRules"] if r.get("portRange") == "3306")
    mariadb["sourceAddresses"] = ["0.0.0.0/0"]
    problems = check(RULE_B, firewall)
    assert len(problems) == 1 and "source_addresses [0.0.0.0/0]" in problems[0]


def test_firewall_rule_accepts_snake_case_props() -> None:
    props = {"inbound_rules": [{"protocol": "tcp", "port_range": "3306", "source_addresses": ["10.0.0.0/8"]}]}
    assert rules.firewall_cluster_ports_private(types.FIREWALL, props)
    props["inbound_rules"][0] = {"protocol": "tcp", "port_range": "3306", "source_tags": ["t"]}
    assert rules.firewall_cluster_ports_private(types.FIREWALL, props) == []


def test_public_ports_and_icmp_stay_allowed() -> None:
    props = {"inboundRules": [{"protocol": "tcp", "portRange": "443", "sourceAddresses": ["0.0.0.0/0"]},
                              {"protocol": "tcp", "portRange": "8080-8090", "sourceAddresses": ["0.0.0.0/0"]},
                              {"protocol": "icmp", "sourceAddresses": ["0.0.0.0/0"]}]}
    assert rules.firewall_cluster_ports_private(types.FIREWALL, props) == []


# --- (c) prod resources protected -------------------------------------------------------

RULE_C = "prod-resources-protected"


@pytest.mark.parametrize("kind", [types.VPC, types.DROPLET, types.FIREWALL, "do-ha-stack:index:HaStack",
                                  types.TLS_PRIVATE_KEY, types.RANDOM_PASSWORD])
def test_an_unprotected_prod_resource_fails(prod: Run, kind: str) -> None:
    run = broken(prod)
    target = first(run, kind)
    target.protect = False
    problems = resource_violations(run)
    assert len(problems) == 1 and problems[0].startswith(f"{target.name}: {kind} on the prod stack is not protected")


@pytest.mark.parametrize("kind", sorted(types.REPLACED_BY_DESIGN))
def test_a_protected_resource_replaced_by_design_fails(prod: Run, kind: str) -> None:
    run = broken(prod)
    target = first(run, kind)
    assert not target.protect
    target.protect = True
    problems = resource_violations(run)
    assert len(problems) == 1 and problems[0].startswith(f"{target.name}: {kind} on the prod stack is protected, but")


def test_staging_resources_need_no_protection(staging: Run) -> None:
    assert not any(r.protect for r in staging.registrations)
    assert all(check(RULE_C, r) == [] for r in staging.registrations)


@pytest.mark.parametrize("kind", ["pulumi:pulumi:Stack", "pulumi:providers:digitalocean"])
def test_stack_and_provider_resources_are_exempt(kind: str) -> None:
    opts = rules.Options(protect=False, stack="prod")
    assert rules.prod_resources_protected(kind, {}, opts) == []
    assert rules.prod_resources_protected(types.VPC, {}, opts)


def test_stack_name_comes_from_the_urn() -> None:
    assert rules.stack_of("urn:pulumi:prod::do-ha-stack::digitalocean:index/vpc:Vpc::vpc") == "prod"
    assert rules.stack_of("urn:pulumi:prod-copy::p::t::n") == "prod-copy"
    assert rules.stack_of("not-a-urn") == ""


# --- (d) monitoring ---------------------------------------------------------------------

@pytest.mark.parametrize("value", [False, None])
def test_droplet_without_monitoring_fails(stack_run: Run, value: bool | None) -> None:
    run = broken(stack_run)
    droplet = first(run, types.DROPLET, "app1")
    droplet.inputs["monitoring"] = value
    if value is None:
        del droplet.inputs["monitoring"]
    problems = resource_violations(run)
    assert len(problems) == 1 and problems[0].startswith("app1: droplet monitoring is not enabled")


# --- (e) user-data: size and secrets ------------------------------------------------

RULE_E = "droplet-user-data"


def _user_data(run: Run, node: str, change: Callable[[str], str]) -> Registration:
    droplet = first(run, types.DROPLET, node)
    droplet.inputs["userData"] = change(droplet.inputs["userData"])
    return droplet


def test_oversized_user_data_fails(prod: Run) -> None:
    run = broken(prod)
    droplet = _user_data(run, "app1", lambda text: text + "#" * (USER_DATA_LIMIT + 1 - len(text.encode())))
    problems = check(RULE_E, droplet)
    assert len(problems) == 1 and f"{USER_DATA_LIMIT + 1} bytes" in problems[0]


def test_user_data_at_the_limit_passes(prod: Run) -> None:
    run = broken(prod)
    droplet = _user_data(run, "app2", lambda text: text + "#" * (USER_DATA_LIMIT - len(text.encode())))
    assert len(droplet.inputs["userData"].encode()) == USER_DATA_LIMIT
    assert check(RULE_E, droplet) == []


def test_user_data_with_a_private_key_fails(prod: Run) -> None:
    # The stack's own automation key: exactly the secret that must never land in user-data.
    private_key = prod.generated_secrets["automation"]["privateKeyOpenssh"]
    run = broken(prod)
    block = "\n".join("      " + line for line in private_key.splitlines())
    droplet = _user_data(run, "witness", lambda text: text + "  - path: /root/.ssh/id_ed25519\n    content: |\n"
                         + block + "\n")
    problems = check(RULE_E, droplet)
    assert len(problems) == 1 and "a private key" in problems[0]


@pytest.mark.parametrize("extra, what", [
    ("runcmd:\n- export DIGITALOCEAN_TOKEN=dop_v1_" + "a1" * 32 + "\n", "a DigitalOcean API token"),
    ("password: hunter2\n", "a password line"),
    ("  - db_password = s3cret\n", "a password line"),
    ('chpasswd: {list: "root:hunter2"}\n', "a password line"),
])
def test_user_data_with_a_secret_fails(staging: Run, extra: str, what: str) -> None:
    run = broken(staging)
    droplet = _user_data(run, "app1", lambda text: text + extra)
    problems = check(RULE_E, droplet)
    assert len(problems) == 1 and what in problems[0], problems


@pytest.mark.parametrize("line", ["lock_passwd: true", "ssh_pwauth: false", "    PasswordAuthentication no",
                                  "  sudo: ALL=(ALL) NOPASSWD:ALL", "password:", "password: ''  # none"])
def test_user_data_password_settings_without_a_password_pass(line: str) -> None:
    assert rules.droplet_user_data(types.DROPLET, {"userData": f"#cloud-config\n{line}\n"}) == []


def test_user_data_rule_accepts_snake_case_props() -> None:
    assert rules.droplet_user_data(types.DROPLET, {"user_data": "-----BEGIN RSA PRIVATE KEY-----"})


def test_unknown_values_are_not_guessed() -> None:
    unknown = rules.Unknown(UNKNOWN_STRING_VALUE)
    with pytest.raises(rules.NotKnownYet) as exc:
        rules.droplet_user_data(types.DROPLET, {"userData": unknown})
    assert exc.value.path == "userData"
    with pytest.raises(rules.NotKnownYet):
        rules.firewall_cluster_ports_private(types.FIREWALL, {"inboundRules": [
            {"protocol": "tcp", "portRange": "3306", "sourceAddresses": unknown}]})


# --- the pack itself, over the analyzer protocol -------------------------------------------

@pytest.fixture(scope="module")
def analyzer() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    """policy/ started as the CLI starts it: `python -m pulumi.policy ENGINE .` in the pack's directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
    proc = subprocess.Popen([sys.executable, "-u", "-m", "pulumi.policy", "127.0.0.1:1", "."], cwd=POLICY_DIR,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()  # type: ignore[union-attr]
    try:
        try:
            port = int(lines.get(timeout=60).strip())
        except (queue.Empty, ValueError):
            proc.kill()
            pytest.fail(f"the policy pack did not start: {proc.stderr.read() if proc.stderr else ''}")
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=30)
        yield analyzer_pb2_grpc.AnalyzerStub(channel)
        channel.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _struct(props: dict[str, Any]) -> struct_pb2.Struct:
    return json_format.ParseDict(props, struct_pb2.Struct())


def analyze(stub: analyzer_pb2_grpc.AnalyzerStub, r: Registration) -> list[analyzer_pb2.AnalyzeDiagnostic]:
    request = analyzer_pb2.AnalyzeRequest(type=r.type, urn=r.urn, name=r.name, properties=_struct(r.inputs),
                                          options=analyzer_pb2.AnalyzerResourceOptions(protect=r.protect))
    return list(stub.Analyze(request).diagnostics)


def analyze_stack(stub: analyzer_pb2_grpc.AnalyzerStub, resources: list[rules.Resource],
                  property_dependencies: dict[str, dict[str, list[str]]] | None = None
                  ) -> list[analyzer_pb2.AnalyzeDiagnostic]:
    deps = property_dependencies or {}
    request = analyzer_pb2.AnalyzeStackRequest(resources=[
        analyzer_pb2.AnalyzerResource(
            type=r.type, urn=r.urn, name=r.name, properties=_struct(dict(r.props)),
            options=analyzer_pb2.AnalyzerResourceOptions(protect=r.protect),
            propertyDependencies={k: analyzer_pb2.AnalyzerPropertyDependencies(urns=v)
                                  for k, v in deps.get(r.urn, {}).items()})
        for r in resources])
    return list(stub.AnalyzeStack(request).diagnostics)


def test_pack_serves_every_rule_as_mandatory(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    assert info.name == "do-ha-stack"
    served = {p.name: p for p in info.policies}
    assert set(served) == {i.name for i in rules.RESOURCE_RULES + rules.STACK_RULES}
    assert {p.enforcementLevel for p in served.values()} == {analyzer_pb2.MANDATORY}
    assert served["droplets-in-stack-vpc"].policy_type == analyzer_pb2.POLICY_TYPE_STACK


def test_pack_passes_the_real_render(analyzer: analyzer_pb2_grpc.AnalyzerStub, stack_run: Run) -> None:
    assert [d.message for r in stack_run.registrations for d in analyze(analyzer, r)] == []
    assert analyze_stack(analyzer, stack_resources(stack_run)) == []


def test_pack_reports_violations(analyzer: analyzer_pb2_grpc.AnalyzerStub, prod: Run) -> None:
    run = broken(prod)
    firewall = first(run, types.FIREWALL, "public-app-firewall")
    firewall.inputs["inboundRules"].append({"protocol": "tcp", "portRange": "3306", "sourceAddresses": ["0.0.0.0/0"]})
    vpc = first(run, types.VPC)
    vpc.protect = False
    found = {(d.policyName, d.enforcementLevel) for r in (firewall, vpc) for d in analyze(analyzer, r)}
    assert found == {(RULE_B, analyzer_pb2.MANDATORY), (RULE_C, analyzer_pb2.MANDATORY)}
    moved = _resources_with(prod, "app1", vpcUuid="vpc-elsewhere")
    diagnostics = analyze_stack(analyzer, moved)
    assert [d.policyName for d in diagnostics] == ["droplets-in-stack-vpc"]
    assert "vpc-elsewhere" in diagnostics[0].message


def test_pack_during_a_preview(analyzer: analyzer_pb2_grpc.AnalyzerStub, prod: Run) -> None:
    """Unknown values: the VPC rule follows property dependencies; others wait for the update."""
    resources = stack_resources(prod)
    vpc = next(r for r in resources if r.type == types.VPC)
    previewed = [rules.Resource(r.type, r.urn, {**r.props, "vpcUuid": UNKNOWN_STRING_VALUE}, r.protect)
                 if r.type == types.DROPLET else r for r in resources]
    deps = {r.urn: {"vpcUuid": [vpc.urn]} for r in previewed if r.type == types.DROPLET}
    assert analyze_stack(analyzer, previewed, deps) == []
    # pulumi_policy keeps only dependencies on resources of the stack: name another one.
    tag = next(r for r in resources if r.type == types.TAG)
    elsewhere = {urn: {"vpcUuid": [tag.urn]} for urn in deps}
    assert len(analyze_stack(analyzer, previewed, elsewhere)) == 3
    run = broken(prod)
    droplet = first(run, types.DROPLET, "app1")
    droplet.inputs["userData"] = UNKNOWN_STRING_VALUE
    diagnostics = analyze(analyzer, droplet)
    assert [(d.policyName, d.enforcementLevel) for d in diagnostics] == [(RULE_E, analyzer_pb2.ADVISORY)]
    assert "can't be known during preview" in diagnostics[0].message


# --- (f) backups ----------------------------------------------------------------------

def test_a_public_or_prod_force_destroyed_bucket_fails(prod: Run, staging: Run) -> None:
    assert check("backup-bucket", first(staging, types.SPACES_BUCKET)) == []  # staging: force_destroy
    run = broken(prod)
    bucket = first(run, types.SPACES_BUCKET)
    bucket.inputs["forceDestroy"] = True
    bucket.inputs["acl"] = "public-read"
    assert [m.split(":")[0] for m in resource_violations(run)] == ["backup-bucket", "backup-bucket"]
    assert any("a destroy would delete its backups" in m for m in resource_violations(run))
    assert any("'public-read'" in m for m in resource_violations(run))


def test_prod_without_a_backup_bucket_fails(prod: Run, staging: Run) -> None:
    assert rules.prod_has_backups(stack_resources(prod)) == []
    without = [r for r in stack_resources(prod) if r.type != types.SPACES_BUCKET]
    assert rules.prod_has_backups(without) == ["the prod stack has no backup bucket: set do-ha-stack:backups true"]
    staging_without = [r for r in stack_resources(staging) if r.type != types.SPACES_BUCKET]
    assert rules.prod_has_backups(staging_without) == []
