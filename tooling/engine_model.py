"""What a later `pulumi up` would do to a deployed stack, modelled offline.

The Pulumi CLI and the providers cannot run here, so day-2 safety (an `up` after
a failover, a refresh, months of certificate ageing, a node replacement) is
checked against this model of the engine and of the pinned providers' rules,
each taken from their source (versions in requirements.txt):

- identity: the engine matches a goal resource to state by URN or by an alias;
- diff: inputs compared after `ignoreChanges`; a change to an input the provider
  marks ForceNew / RequiresReplace (or `replaceOnChanges`) replaces, any other
  change updates;
- refresh: each provider's Read, given what the cloud looks like now (the
  `Cloud` facts), rewrites or drops the resource's state;
- protect: the engine refuses to replace or delete a protected resource.

The model is deliberately small: it knows the resource types this program
uses, and nothing in it is specific to this program's names.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tooling import resource_types as types
from tooling.mocks import STACK_TYPE, Registration, Run

# Inputs whose change makes the provider replace the resource (ForceNew in the
# Terraform providers, RequiresReplace in terraform-provider-tls, ReplaceOnChanges
# in pulumi-command); any other input change is an in-place update.
REPLACED_BY: dict[str, frozenset[str]] = {
    # digitalocean/droplet/resource_droplet.go: image, region, user_data, ssh_keys,
    # vpc_uuid, monitoring, droplet_agent (and ipv6 turned off) are ForceNew; size,
    # backups, tags, name are updated in place.
    types.DROPLET: frozenset({"image", "region", "userData", "sshKeys", "vpcUuid", "monitoring", "dropletAgent"}),
    types.VPC: frozenset({"region", "ipRange"}),
    types.TAG: frozenset({"name"}),
    types.SSH_KEY: frozenset({"publicKey"}),
    types.RESERVED_IP: frozenset({"region"}),
    types.RESERVED_IP_ASSIGNMENT: frozenset({"ipAddress", "dropletId"}),
    # terraform-provider-tls: every attribute of these resources is RequiresReplace.
    types.TLS_PRIVATE_KEY: frozenset({"*"}),
    types.TLS_CERT_REQUEST: frozenset({"*"}),
    types.TLS_SELF_SIGNED_CERT: frozenset({"*"}),
    types.TLS_LOCALLY_SIGNED_CERT: frozenset({"*"}),
    types.RANDOM_PASSWORD: frozenset({"*"}),
    # digitalocean/spaces/resource_spaces_bucket.go: region is ForceNew; name is not
    # (an "update" that renames nothing: the program asks for replaceOnChanges).
    types.SPACES_BUCKET: frozenset({"region"}),
    # pulumi-command: only `triggers` replaces; create/stdin/connection... update.
    types.REMOTE_COMMAND: frozenset({"triggers"}),
}

# Certificates whose provider replaces them once "ready for renewal": at
# validity end minus early_renewal_hours (terraform-provider-tls ModifyPlan).
CERT_TYPES = frozenset({types.TLS_SELF_SIGNED_CERT, types.TLS_LOCALLY_SIGNED_CERT})


@dataclass
class Cloud:
    """What the cloud looks like when a refresh or an up runs."""

    # reserved IP address -> the droplet id it is assigned to now (None: unassigned)
    reserved_ip_holder: dict[str, str | None] = field(default_factory=dict)
    # when the cloud is looked at; certificates created at `created` age until then
    now: dt.datetime = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)


@dataclass
class StateEntry:
    urn: str
    type: str
    inputs: dict[str, Any]
    protect: bool
    created: dt.datetime


@dataclass
class State:
    resources: dict[str, StateEntry]

    @staticmethod
    def after_up(run: Run, when: dt.datetime) -> State:
        return State({r.urn: _entry(r, when) for r in run.registrations if r.custom})


def _entry(r: Registration, when: dt.datetime) -> StateEntry:
    return StateEntry(r.urn, r.type, dict(r.raw_inputs), r.protect, when)


@dataclass(frozen=True)
class Step:
    op: str  # create | update | replace | delete
    urn: str
    type: str
    why: str
    refused: str = ""  # the engine's refusal, if any (protect)


def refresh(state: State, cloud: Cloud) -> State:
    """`pulumi refresh` (or `up --refresh`): every provider's Read against the cloud."""
    out: dict[str, StateEntry] = {}
    for urn, entry in state.resources.items():
        inputs = dict(entry.inputs)
        if entry.type == types.RESERVED_IP_ASSIGNMENT:
            # resource_reserved_ip_assignment.go Read: an IP held by another droplet
            # (or none) makes it d.SetId(""): gone from state.
            holder = cloud.reserved_ip_holder.get(str(inputs.get("ipAddress")))
            if holder is None or str(holder) != str(inputs.get("dropletId")):
                continue
        if entry.type == types.RESERVED_IP and "dropletId" in inputs:
            # Read sets droplet_id to the current holder; the bridge hands it back as an input.
            for ip, holder in cloud.reserved_ip_holder.items():
                if inputs.get("ipAddress") in (None, ip):
                    inputs["dropletId"] = holder
        out[urn] = StateEntry(urn, entry.type, inputs, entry.protect, entry.created)
    return State(out)


def alias_urn(stack: str, project: str, type_: str, name: str, alias: dict[str, Any]) -> str | None:
    """The URN an alias (as the engine gets it) names: a whole former URN, or the
    resource under a former parent (whose whole type chain prefixes the type)."""
    if "urn" in alias:
        return str(alias["urn"])
    spec = alias.get("spec", {})
    if "parentUrn" not in spec:
        return None
    chain = spec["parentUrn"].split("::")[2]
    prefix = "" if chain == STACK_TYPE else f"{chain}$"
    return f"urn:pulumi:{stack}::{project}::{prefix}{type_}::{spec.get('name', name)}"


def identities(run: Run) -> dict[str, set[str]]:
    """Each resource's URN -> every URN the engine matches it by: its own and its aliases'."""
    out: dict[str, set[str]] = {}
    for r in run.registrations:
        project = r.urn.split("::")[1]
        aliased = (alias_urn(run.stack, project, r.type, r.name, a) for a in r.aliases)
        out[r.urn] = {r.urn, *(u for u in aliased if u)}
    return out


def _ready_for_renewal(entry: StateEntry, now: dt.datetime) -> bool:
    if entry.type not in CERT_TYPES:
        return False
    hours = float(entry.inputs.get("validityPeriodHours", 0))
    early = float(entry.inputs.get("earlyRenewalHours", 0) or 0)
    return now >= entry.created + dt.timedelta(hours=hours - early)


def _changed(old: dict[str, Any], new: dict[str, Any], ignored: Iterable[str]) -> set[str]:
    skip = set(ignored)
    return {k for k in set(old) | set(new) if k not in skip and old.get(k) != new.get(k)}


def _replace_deleted_with(steps: list[Step], goal: Run, state: State) -> list[Step]:
    """Since pulumi 3.260 (pulumi#23818) a resource `deleted_with` a replaced resource is
    replaced with it; its delete is skipped, its create runs against the new one."""
    replaced = {s.urn for s in steps if s.op == "replace"}
    by_urn = {s.urn: s for s in steps}
    for r in goal.registrations:
        if r.deleted_with in replaced and (r.urn not in by_urn or by_urn[r.urn].op == "update"):
            old = state.resources.get(r.urn)
            refused = f"resource {r.urn} is protected: it cannot be replaced" if old and old.protect else ""
            by_urn[r.urn] = Step("replace", r.urn, r.type, "deleted_with a replaced resource", refused)
    order = [s.urn for s in steps] + [u for u in by_urn if u not in {s.urn for s in steps}]
    return [by_urn[u] for u in order]


def plan(state: State, goal: Run, cloud: Cloud, identities: dict[str, set[str]],
         replace: Iterable[str] = ()) -> list[Step]:
    """The steps `pulumi up` takes from `state` to the program `goal`. `identities`
    maps each goal URN to every URN that names it (its own and its aliases');
    `replace` holds the URNs given to `pulumi up --replace`."""
    forced = set(replace)
    steps: list[Step] = []
    matched: set[str] = set()
    for r in (g for g in goal.registrations if g.custom):
        old_urn = next((u for u in sorted(identities.get(r.urn, {r.urn})) if u in state.resources), None)
        if old_urn is None:
            steps.append(Step("create", r.urn, r.type, "not in state"))
            continue
        matched.add(old_urn)
        old = state.resources[old_urn]
        changed = _changed(old.inputs, r.raw_inputs, r.ignore_changes)
        forcing = REPLACED_BY.get(r.type, frozenset()) | set(r.replace_on_changes)
        replacing = sorted(changed) if "*" in forcing else sorted(changed & forcing)
        if _ready_for_renewal(old, cloud.now):
            replacing.append("ready_for_renewal")
        if r.urn in forced or old_urn in forced:
            replacing.append("--replace")
        if replacing:
            refused = f"resource {old_urn} is protected: it cannot be replaced" if old.protect else ""
            steps.append(Step("replace", r.urn, r.type, f"changed: {', '.join(replacing)}", refused))
        elif changed:
            steps.append(Step("update", r.urn, r.type, f"changed: {', '.join(sorted(changed))}"))
    steps = _replace_deleted_with(steps, goal, state)
    for urn, old in state.resources.items():
        if urn not in matched:
            refused = f"resource {urn} is protected: it cannot be deleted" if old.protect else ""
            steps.append(Step("delete", urn, old.type, "not in the program", refused))
    return steps
