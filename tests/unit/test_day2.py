"""Every later `pulumi up` is as safe as the first: modelled with tooling.engine_model
(the engine's diff and protect rules, the pinned providers' Read and replace rules).

Sequences: "up, up"; "up, failover, refresh, up"; "up, two years later, up" on
prod; and a node replacement on prod. Each shows nothing created, replaced, moved
or deleted that should not be, and nothing the engine would refuse.
"""

from __future__ import annotations

import datetime as dt

import pytest

from tooling import resource_types as types
from tooling.engine_model import Cloud, State, StateEntry, Step, identities, plan, refresh
from infra.config import parse
from tooling.mocks import MOCK_SECRETS, Addresses, Run, run_program
from tooling.render import stack_config

DEPLOYED = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)


def up_again(state: State, run: Run, cloud: Cloud) -> list[Step]:
    return plan(state, run, cloud, identities(run))


def reserved_ip(run: Run) -> str:
    return str(run.of_type(types.RESERVED_IP)[0].urn)


def failover_to(run: Run, node: str) -> Cloud:
    """The cloud after the cluster moved the reserved IP to `node`."""
    address = run.outputs["reservedIp"]
    return Cloud(reserved_ip_holder={address: run.by_name(node).id}, now=DEPLOYED + dt.timedelta(days=3))


def test_up_then_up_changes_nothing(stack_run: Run) -> None:
    state = State.after_up(stack_run, DEPLOYED)
    assert up_again(state, stack_run, Cloud(now=DEPLOYED + dt.timedelta(hours=1))) == []


def test_up_failover_refresh_up_moves_nothing(stack_run: Run) -> None:
    cloud = failover_to(stack_run, "app2")
    state = refresh(State.after_up(stack_run, DEPLOYED), cloud)
    steps = up_again(state, stack_run, cloud)
    assert steps == [], steps
    # and nothing in the program would assign the IP (the cluster owns it)
    assert not stack_run.of_type(types.RESERVED_IP_ASSIGNMENT)
    assert "dropletId" not in stack_run.of_type(types.RESERVED_IP)[0].raw_inputs


def test_the_model_catches_an_assignment_that_refresh_drops(stack_run: Run) -> None:
    """The design this replaced: an initial assignment to app1, ignoring later changes.
    After a failover a refresh drops it (its Read clears the id) and the next up
    creates it again, moving the IP back to app1."""
    cloud = failover_to(stack_run, "app2")
    state = State.after_up(stack_run, DEPLOYED)
    urn = reserved_ip(stack_run).replace("reservedIp:ReservedIp::reserved-ip",
                                         "reservedIpAssignment:ReservedIpAssignment::initial")
    state.resources[urn] = StateEntry(urn, types.RESERVED_IP_ASSIGNMENT,
                                      {"ipAddress": stack_run.outputs["reservedIp"],
                                       "dropletId": stack_run.by_name("app1").id}, True, DEPLOYED)
    assert urn not in refresh(state, cloud).resources
    assert urn in refresh(state, Cloud(reserved_ip_holder={
        stack_run.outputs["reservedIp"]: stack_run.by_name("app1").id})).resources


def test_project_lists_no_reserved_ip(stack_run: Run) -> None:
    project = stack_run.of_type(types.PROJECT)[0]
    listed = project.raw_inputs["resources"]
    assert listed and all(str(u).startswith("do:droplet:") for u in listed), listed


def test_certificates_renew_without_blocking_prod(prod: Run) -> None:
    """Two years on, the node certificates are in their renewal window: the up replaces
    them (re-issued from the protected keys) and the engine refuses nothing."""
    later = Cloud(now=DEPLOYED + dt.timedelta(days=23 * 30 + 10))
    steps = up_again(State.after_up(prod, DEPLOYED), prod, later)
    replaced = {s.urn.rsplit("::", 1)[1] for s in steps if s.op == "replace"}
    assert replaced == {"app1-db-cert", "app2-db-cert",  # MariaDB's
                        "app1-storage-cert", "app2-storage-cert", "witness-storage-cert"}, steps  # GlusterFS's
    assert not [s for s in steps if s.refused], steps
    # Everything else on prod stays protected.
    unprotected = {r.type for r in prod.registrations if r.custom and not r.protect}
    assert unprotected == types.REPLACED_BY_DESIGN


def test_a_protected_certificate_would_block_prod(prod: Run) -> None:
    """What the previous program did: certificates protected like everything else."""
    later = Cloud(now=DEPLOYED + dt.timedelta(days=23 * 30 + 10))
    state = State.after_up(prod, DEPLOYED)
    for entry in state.resources.values():
        entry.protect = True
    assert any(s.refused for s in up_again(state, prod, later))


def replaced_addresses(run: Run, node: str) -> Addresses:
    """The addresses of `run`, but a new droplet (id, public and private IPv4) for `node`."""
    plain = {k.split(":", 1)[1]: v for k, v in stack_config(run.stack).items()} | MOCK_SECRETS
    cfg = parse(run.stack, plain)
    base = Addresses.placeholders(cfg.vpc_ip_range, list(cfg.node_names))
    return Addresses(public={**base.public, node: "198.51.100.77"}, private={**base.private, node: "10.10.0.77"},
                     reserved_ip=base.reserved_ip, droplet_ids={**base.droplet_ids, node: "999001"})


@pytest.mark.parametrize("node", ["app1", "app2", "witness"])
def test_replacing_a_node_on_prod_touches_only_what_it_must(prod: Run, node: str) -> None:
    """`make replace NODE=...`: the droplet (unprotected for this one run) is replaced;
    what derives from its address is re-issued; commands re-run in place."""
    state = State.after_up(prod, DEPLOYED)
    droplet = prod.by_name(node)
    state.resources[droplet.urn].protect = False  # `pulumi state unprotect`, by make replace
    after = evaluated("prod", replaced_addresses(prod, node))
    steps = plan(state, after, Cloud(now=DEPLOYED + dt.timedelta(days=40)), identities(after),
                 replace={droplet.urn})
    assert not [s for s in steps if s.refused], steps
    assert not [s for s in steps if s.op in ("create", "delete")], steps
    replaced = {s.urn.rsplit("::", 1)[1] for s in steps if s.op == "replace"}
    # the droplet; its commands (deleted_with it, re-run on the new node); what derives from its address
    own_commands = {r.name for r in after.of_type(types.REMOTE_COMMAND) if r.deleted_with == droplet.urn}
    expected = ({node} | own_commands | {f"{node}-storage-csr", f"{node}-storage-cert"}
                | ({f"{node}-db-csr", f"{node}-db-cert"} if node != "witness" else set()))
    assert f"{node}-first-boot" in own_commands
    assert replaced == expected
    updated = {s.urn.rsplit("::", 1)[1] for s in steps if s.op == "update"}
    assert "cluster-resources" in updated | replaced and "cluster-setup" in updated | replaced
    assert all(s.type in (types.REMOTE_COMMAND, types.PROJECT) for s in steps if s.op == "update"), steps
    assert after.by_name(node).delete_before_replace


def test_droplets_outlast_a_graceful_shutdown(stack_run: Run) -> None:
    for droplet in stack_run.of_type(types.DROPLET):
        assert droplet.custom_timeouts.get("delete") == "10m"
        assert droplet.raw_inputs["gracefulShutdown"] is True


def test_reruns_send_no_previous_output(stack_run: Run) -> None:
    """pulumi-command would send PULUMI_COMMAND_STDOUT/STDERR on every re-run; the
    nodes' sshd accepts no such environment."""
    for cmd in stack_run.of_type(types.REMOTE_COMMAND):
        assert cmd.raw_inputs.get("addPreviousOutputInEnv") is False, cmd.name


def evaluated(stack: str, addresses: Addresses | None = None, **settings: object) -> Run:
    """The stack's program with `settings` changed, as after `pulumi config set`."""
    return run_program(stack, stack_config(stack) | {f"do-ha-stack:{k}": v for k, v in settings.items()}, addresses)


def test_scale_out_adds_a_node_and_changes_nothing_else(prod: Run) -> None:
    bigger = evaluated("prod", appNodeCount=3)
    steps = up_again(State.after_up(prod, DEPLOYED), bigger, Cloud(now=DEPLOYED + dt.timedelta(days=5)))
    assert not [s for s in steps if s.refused or s.op in ("replace", "delete")], steps
    created = {s.urn.rsplit("::", 1)[1] for s in steps if s.op == "create"}
    assert "app3" in created and all(name.startswith("app3") for name in created), created
    # The data bricks stay on app1 and app2 (+ the witness's arbiter); app3 joins without one.
    def bricks(run: Run) -> str:
        return run.by_name("storage-volume").raw_inputs["create"].split("BRICKS=", 1)[1].split("'")[0]
    assert bricks(bigger) == bricks(prod) == "10.110.0.11 10.110.0.12 10.110.0.30"
    mount = bigger.by_name("app3-shared-mount").raw_inputs["create"]
    assert "SERVER=10.110.0.13 BACKUP_SERVERS=10.110.0.11:10.110.0.12" in mount


def test_scale_in_deletes_only_the_extra_node(prod: Run) -> None:
    """3 -> 2: app3 and what is its own go; on prod the engine refuses to delete its
    protected droplet and key until they are unprotected (what `make scale` does)."""
    bigger = evaluated("prod", appNodeCount=3)
    state = State.after_up(bigger, DEPLOYED)
    steps = up_again(state, prod, Cloud(now=DEPLOYED + dt.timedelta(days=5)))
    assert not [s for s in steps if s.op in ("create", "replace")], steps
    deleted = {s.urn.rsplit("::", 1)[1] for s in steps if s.op == "delete"}
    assert deleted and all(name.startswith("app3") for name in deleted), deleted
    refused = {s.urn.rsplit("::", 1)[1] for s in steps if s.refused}
    assert refused == {"app3", "app3-db-key", "app3-storage-key"}



CLUSTER_WIDE = {"cluster-setup", "storage-volume", "cluster-resources"}


def test_moving_the_control_node_re_runs_only_the_cluster_wide_steps(prod: Run) -> None:
    """`make replace NODE=app1`, first step: the cluster-wide steps move to app2 and run
    there again in place (they converge); nothing else changes, nothing is refused."""
    moved = evaluated("prod", controlNode="app2")
    steps = up_again(State.after_up(prod, DEPLOYED), moved, Cloud(now=DEPLOYED + dt.timedelta(days=5)))
    assert not [s for s in steps if s.refused or s.op != "update"], steps
    assert {s.urn.rsplit("::", 1)[1] for s in steps} == CLUSTER_WIDE
    app2 = prod.by_name("app2-first-boot").raw_inputs["connection"]["host"]
    for name in CLUSTER_WIDE:
        assert moved.by_name(name).raw_inputs["connection"]["host"] == app2
        assert moved.by_name(name).deleted_with == prod.by_name("app2").urn


def test_the_replaced_control_node_is_never_the_one_that_forms_the_cluster(prod: Run) -> None:
    """With the steps moved, replacing app1 re-runs them on app2, in place: the fresh
    droplet only joins. Without the move they would be re-created on the fresh app1."""
    for control, fresh in (("app2", False), ("app1", True)):
        before = evaluated("prod", controlNode=control)
        state = State.after_up(before, DEPLOYED)
        droplet = before.by_name("app1")
        state.resources[droplet.urn].protect = False
        after = evaluated("prod", replaced_addresses(before, "app1"), controlNode=control)
        steps = plan(state, after, Cloud(now=DEPLOYED + dt.timedelta(days=40)), identities(after),
                     replace={droplet.urn})
        ops = {s.urn.rsplit("::", 1)[1]: s.op for s in steps if s.urn.rsplit("::", 1)[1] in CLUSTER_WIDE}
        assert ops == dict.fromkeys(CLUSTER_WIDE, "replace" if fresh else "update"), ops


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_a_new_backup_bucket_name_makes_a_new_bucket(stack: str) -> None:
    """The provider cannot rename a bucket (name is not ForceNew): the program asks for a
    replacement, which prod's protection refuses; the nodes' repository follows."""
    before = evaluated(stack, backupBucket="old-backups-bucket")
    after = evaluated(stack, backupBucket="new-backups-bucket")
    steps = up_again(State.after_up(before, DEPLOYED), after, Cloud(now=DEPLOYED + dt.timedelta(days=5)))
    bucket = [s for s in steps if s.type == types.SPACES_BUCKET]
    assert [s.op for s in bucket] == ["replace"] and "name" in bucket[0].why, steps
    assert bool(bucket[0].refused) == (stack == "prod")
    assert {s.urn.rsplit("::", 1)[1] for s in steps if s.type == types.REMOTE_COMMAND} >= {"app1-backup-node",
                                                                                          "app2-backup-node"}
