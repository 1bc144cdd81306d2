"""The policy pack's rules as pure functions: no Pulumi engine, no CLI.

Resource rules take (resource type, props, Options) and return violation
messages (an empty list means the resource complies). The stack rule takes every
resource of the stack. `policy/__main__.py` wires them into pulumi_policy; the
tests feed them the offline render (`tooling.mocks.run_program`).

Props use the engine's camelCase names (`vpcUuid`, `inboundRules`, ...), the
same as the render's inputs; snake_case names are accepted as well.

During a preview some values are not known yet (an id of a resource still to be
created). The engine hands them over as unknowns; the adapter turns them into
`Unknown`, and a rule that needs one raises `NotKnownYet`, which the pack reports
the way pulumi_policy does for any unknown value (an advisory note: the policy
could not run during this preview). `pulumi up` evaluates again with real values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from infra.ports import CLUSTER_TCP_PORT_RANGES, CLUSTER_UDP_PORT_RANGES
from infra.userdata import USER_DATA_LIMIT
from tooling import resource_types as types

STACK_RESOURCE = "pulumi:pulumi:Stack"
PROVIDER_PREFIX = "pulumi:providers:"
PROD_STACK = "prod"

# Inbound sources other than tags: each can name something outside the stack.
NON_TAG_SOURCES = ("sourceAddresses", "sourceDropletIds", "sourceLoadBalancerUids", "sourceKubernetesIds")


@dataclass(frozen=True)
class Unknown:
    """A value the engine does not know yet (preview of a resource to be created)."""

    detail: str = ""


class NotKnownYet(Exception):
    """A rule needs a value that is unknown during this preview."""

    def __init__(self, path: str, value: Unknown) -> None:
        super().__init__(f"{path} is not known yet")
        self.path = path
        self.value = value


@dataclass(frozen=True)
class Options:
    """What a resource rule may know besides the props."""

    protect: bool = False
    stack: str = ""


@dataclass(frozen=True)
class Resource:
    """One resource of the stack, as the stack rule sees it."""

    type: str
    urn: str
    props: Mapping[str, Any]
    protect: bool = False
    # property name -> URNs of the resources its value came from
    property_dependencies: Mapping[str, Sequence[str]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.urn.rsplit("::", 1)[-1]


# --- helpers ---------------------------------------------------------------------

def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", r"_\1", name).lower()


def prop(props: Mapping[str, Any], name: str, default: Any = None) -> Any:
    """props[name] by its camelCase name, or by the snake_case spelling."""
    if name in props:
        return props[name]
    return props.get(_snake(name), default)


def known(value: Any, path: str) -> Any:
    if isinstance(value, Unknown):
        raise NotKnownYet(path, value)
    return value


def stack_of(urn: str) -> str:
    """The stack name inside a URN: urn:pulumi:STACK::PROJECT::TYPE::NAME."""
    parts = urn.split(":", 2)
    if len(parts) < 3 or parts[0] != "urn" or parts[1] != "pulumi":
        return ""
    return parts[2].split("::", 1)[0]


# --- (a) droplets live in the stack's own VPC (stack rule) ---------------------

def _vpc_id(vpc: Resource) -> Any:
    """The Vpc's id from its outputs: `id` if given, else its `urn` output (do:vpc:ID)."""
    value = prop(vpc.props, "id")
    if value:
        return value
    urn = prop(vpc.props, "urn")
    if isinstance(urn, str) and urn.startswith("do:vpc:"):
        return urn.removeprefix("do:vpc:")
    return urn if isinstance(urn, Unknown) else None


def droplets_in_stack_vpc(resources: Sequence[Resource]) -> list[str]:
    """Every droplet's vpcUuid is the id of the stack's one Vpc.

    Known values are compared; while the Vpc or the droplet's vpcUuid is not known
    (a preview before the VPC exists), the droplet's vpcUuid must come from that
    Vpc (its property dependencies name the Vpc's URN).
    """
    droplets = [r for r in resources if r.type == types.DROPLET]
    if not droplets:
        return []
    vpcs = [r for r in resources if r.type == types.VPC]
    if len(vpcs) != 1:
        return [f"the stack has {len(vpcs)} Vpc resources; its droplets need exactly one VPC of their own"]
    vpc = vpcs[0]
    vpc_id = _vpc_id(vpc)
    out = []
    for droplet in droplets:
        value = prop(droplet.props, "vpcUuid")
        deps = list(droplet.property_dependencies.get("vpcUuid", ()))
        if value is None or value == "":
            out.append(f"droplet {droplet.name} has no vpcUuid: it would land in the region's default VPC, "
                       f"not in the stack's VPC {vpc.name}")
        elif not isinstance(value, Unknown) and vpc_id and not isinstance(vpc_id, Unknown):
            if value != vpc_id:
                out.append(f"droplet {droplet.name} is in VPC {value!r}, not in the stack's VPC {vpc.name} ({vpc_id})")
        elif deps:
            if vpc.urn not in deps:
                out.append(f"droplet {droplet.name}'s vpcUuid comes from {', '.join(deps)}, "
                           f"not from the stack's VPC {vpc.name}")
        elif isinstance(value, Unknown):
            raise NotKnownYet(f"{droplet.name}.vpcUuid", value)
        else:
            # A literal id while the stack's VPC does not exist yet: some other VPC.
            out.append(f"droplet {droplet.name} is in VPC {value!r}, which is not the stack's VPC {vpc.name}")
    return out


# --- (b) cluster ports never open to addresses ----------------------------------

CLUSTER_PORTS: dict[str, dict[str, tuple[int, int]]] = {
    "tcp": CLUSTER_TCP_PORT_RANGES,
    "udp": CLUSTER_UDP_PORT_RANGES,
}


def parse_port_range(text: Any) -> tuple[int, int]:
    """DigitalOcean's port_range: "22", "8000-9000"; empty, "all" or "0" mean every port."""
    if text is None:
        return 1, 65535
    value = str(text).strip().lower()
    if value in ("", "all", "0"):
        return 1, 65535
    first, sep, last = value.partition("-")
    lo = int(first)
    hi = int(last) if sep else lo
    return min(lo, hi), max(lo, hi)


def firewall_cluster_ports_private(resource_type: str, props: Mapping[str, Any],
                                   options: Options | None = None) -> list[str]:
    """No inbound rule opens a cluster or database port to anything but tags."""
    if resource_type != types.FIREWALL:
        return []
    rules = known(prop(props, "inboundRules"), "inboundRules") or []
    out = []
    for i, rule in enumerate(rules):
        path = f"inboundRules[{i}]"
        protocol = str(known(prop(rule, "protocol"), f"{path}.protocol") or "").lower()
        if protocol not in CLUSTER_PORTS:
            continue  # icmp has no ports
        lo, hi = parse_port_range(known(prop(rule, "portRange"), f"{path}.portRange"))
        hits = [f"{name} {a}" + (f"-{b}" if b != a else "")
                for name, (a, b) in CLUSTER_PORTS[protocol].items() if a <= hi and lo <= b]
        if not hits:
            continue
        for source in NON_TAG_SOURCES:
            values = known(prop(rule, source), f"{path}.{source}")
            if values:
                shown = ", ".join(str(v) for v in values)
                out.append(f"inbound {protocol} {lo}" + (f"-{hi}" if hi != lo else "") +
                           f" covers cluster port(s) {', '.join(hits)} and is open to {_snake(source)} "
                           f"[{shown}]; cluster ports may only be opened to source_tags")
    return out


# --- (c) prod resources are protected ---------------------------------------------

def prod_resources_protected(resource_type: str, props: Mapping[str, Any], options: Options) -> list[str]:
    """On the prod stack every resource carries protect, but those the program
    re-derives by replacement, which must not (types.REPLACED_BY_DESIGN): a protected
    certificate would make the engine refuse every prod `up` once it is due for
    renewal, a protected node command every node replacement.

    The root Stack resource and provider resources are exempt: the program cannot
    set protect on the former, the engine creates the default providers itself,
    and deleting a provider deletes nothing in the cloud.
    """
    if options.stack != PROD_STACK:
        return []
    if resource_type == STACK_RESOURCE or resource_type.startswith(PROVIDER_PREFIX):
        return []
    if resource_type in types.REPLACED_BY_DESIGN:
        if options.protect:
            return [f"{resource_type} on the {PROD_STACK} stack is protected, but it is replaced by design "
                    "(renewal, node replacement): the engine would refuse that `up`"]
        return []
    if not options.protect:
        return [f"{resource_type} on the {PROD_STACK} stack is not protected; "
                "prod sets `protect: true` so that `pulumi destroy` cannot delete it"]
    return []


# --- (d) droplets are monitored -----------------------------------------------------

def droplet_monitoring(resource_type: str, props: Mapping[str, Any], options: Options | None = None) -> list[str]:
    """Droplets run the DigitalOcean metrics agent (the CPU, memory and disk alerts need it)."""
    if resource_type != types.DROPLET:
        return []
    if known(prop(props, "monitoring"), "monitoring") is not True:
        return ["droplet monitoring is not enabled; the stack's CPU, memory and disk alerts need the metrics agent"]
    return []


# --- (e) user-data: size and no secrets --------------------------------------------

SECRET_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("a private key", re.compile(r"PRIVATE KEY")),
    ("a DigitalOcean API token", re.compile(r"\bdo[opr]_v1_[0-9a-fA-F]{16,}")),
    # `password: x`, `db_passwd = x`, `- passphrase: x`; booleans such as
    # cloud-init's `lock_passwd: true` say nothing secret.
    ("a password line", re.compile(
        r"""^[ \t]*(?:-[ \t]+)?["']?[\w.-]*(?:password|passwd|passphrase)["']?[ \t]*[:=][ \t]*"""
        r"""(?!(?:true|false|yes|no|null|~|''|"")?[ \t]*(?:\#.*)?$)\S""",
        re.IGNORECASE | re.MULTILINE)),
]


def droplet_user_data(resource_type: str, props: Mapping[str, Any], options: Options | None = None) -> list[str]:
    """User-data fits DigitalOcean's 64 KiB and carries no obvious secret.

    User-data is readable by anyone with API or metadata access to the droplet,
    so a secret in it is a leaked secret.
    """
    if resource_type != types.DROPLET:
        return []
    text = known(prop(props, "userData"), "userData")
    if not text:
        return []
    out = []
    size = len(str(text).encode())
    if size > USER_DATA_LIMIT:
        out.append(f"user-data is {size} bytes, over DigitalOcean's limit of {USER_DATA_LIMIT}")
    for what, pattern in SECRET_PATTERNS:
        match = pattern.search(str(text))
        if match:
            line = str(text).count("\n", 0, match.start()) + 1
            out.append(f"user-data contains {what} (line {line}); user-data is readable through the API "
                       "and the metadata service, so secrets never belong in it")
    return out


# --- (f) backups: private, and prod's never emptied by a destroy ------------------

def backup_bucket(resource_type: str, props: Mapping[str, Any], options: Options) -> list[str]:
    """A Spaces bucket is private; on prod it is never force-destroyed (its objects,
    the stack's backups, would go with a `pulumi destroy`)."""
    if resource_type != types.SPACES_BUCKET:
        return []
    out = []
    acl = known(prop(props, "acl", "private"), "acl")
    if acl != "private":
        out.append(f"the Spaces bucket's acl is {acl!r}: backups are private")
    if options.stack == PROD_STACK and known(prop(props, "forceDestroy", False), "forceDestroy") is True:
        out.append(f"the Spaces bucket on the {PROD_STACK} stack has forceDestroy: a destroy would delete its backups")
    return out


def prod_has_backups(resources: Sequence[Resource]) -> list[str]:
    """The prod stack keeps backups (a Spaces bucket of its own)."""
    prod = [r for r in resources if stack_of(r.urn) == PROD_STACK]
    if prod and not any(r.type == types.SPACES_BUCKET for r in prod):
        return [f"the {PROD_STACK} stack has no backup bucket: set do-ha-stack:backups true"]
    return []


# --- the catalogue the pack and the tests share ------------------------------------

ResourceRule = Callable[[str, Mapping[str, Any], Options], list[str]]


@dataclass(frozen=True)
class RuleInfo:
    name: str
    description: str
    check: Callable[..., list[str]]


RESOURCE_RULES: list[RuleInfo] = [
    RuleInfo("firewall-cluster-ports-tags-only",
             "Cluster and database ports (corosync, pcsd, GlusterFS, MariaDB) are only opened to the stack's "
             "tagged droplets, never to source addresses.", firewall_cluster_ports_private),
    RuleInfo("prod-resources-protected",
             "Every resource of the prod stack is protected.", prod_resources_protected),
    RuleInfo("droplet-monitoring",
             "Droplets have monitoring enabled.", droplet_monitoring),
    RuleInfo("droplet-user-data",
             "Droplet user-data is within 64 KiB and carries no private key, API token or password.",
             droplet_user_data),
    RuleInfo("backup-bucket",
             "A Spaces bucket is private; prod's is never force-destroyed.", backup_bucket),
]

STACK_RULES: list[RuleInfo] = [
    RuleInfo("droplets-in-stack-vpc",
             "Every droplet is in the stack's own VPC.", droplets_in_stack_vpc),
    RuleInfo("prod-has-backups",
             "The prod stack has a backup bucket.", prod_has_backups),
]
