"""Run the real Pulumi program under mocks and record what it registers.

Used by the unit tests, the offline render and the benchmark: no Pulumi CLI, no
credentials, no network. The recording monitor sees each registration as the
engine would (type, parent, dependencies, options, inputs with secrets still
marked), so tests assert on the same graph `pulumi up` would act on.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import runpy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from google.protobuf import json_format
from pulumi.runtime import mocks as pmocks
from pulumi.runtime import rpc, settings
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from infra.config import PROJECT
from infra.first_boot import GATE_SUFFIX
from infra.paths import REPO_ROOT
from tooling import mock_tls
from tooling import resource_types as types

SECRET_MARKER = "[secret]"
STACK_TYPE = "pulumi:pulumi:Stack"


@dataclass
class Registration:
    urn: str
    type: str
    name: str
    parent: str
    custom: bool
    dependencies: list[str]
    protect: bool
    ignore_changes: list[str]
    replace_on_changes: list[str]
    additional_secret_outputs: list[str]
    deleted_with: str
    inputs: dict[str, Any]  # secrets replaced by SECRET_MARKER
    secret_inputs: list[str]  # top-level input names that were secret
    raw_inputs: dict[str, Any] = field(repr=False, default_factory=dict)  # secrets unwrapped
    aliases: list[dict[str, Any]] = field(default_factory=list)  # the alias specs, as the engine gets them
    id: str = ""  # the provider's id (custom resources), as the mocks gave it
    delete_before_replace: bool = False
    custom_timeouts: dict[str, str] = field(default_factory=dict)  # create/update/delete, as given

    def to_json(self) -> dict[str, Any]:
        return {
            "urn": self.urn, "type": self.type, "name": self.name, "parent": self.parent,
            "custom": self.custom, "dependencies": sorted(self.dependencies), "protect": self.protect,
            "ignoreChanges": self.ignore_changes, "replaceOnChanges": self.replace_on_changes,
            "additionalSecretOutputs": self.additional_secret_outputs,
            "deletedWith": self.deleted_with, "secretInputs": self.secret_inputs,
            "aliases": self.aliases, "deleteBeforeReplace": self.delete_before_replace,
            "customTimeouts": self.custom_timeouts, "inputs": self.inputs,
        }


def _redact(value: Any) -> Any:
    if rpc.is_rpc_secret(value):
        return SECRET_MARKER
    if isinstance(value, dict):
        return {k: _redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def _unwrap(value: Any) -> Any:
    if rpc.is_rpc_secret(value):
        return _unwrap(rpc.unwrap_rpc_secret(value))
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


@dataclass(frozen=True)
class Addresses:
    """Addresses the mocked provider hands out (placeholders, or the lab's)."""

    public: dict[str, str]  # node -> public IPv4
    private: dict[str, str]  # node -> VPC IPv4
    reserved_ip: str
    droplet_ids: dict[str, int] = field(default_factory=dict)  # node -> droplet id (the lab's)
    spaces_key: tuple[str, str] | None = None  # the bucket key's id and secret (the lab's stand-in's)
    host_keys: dict[str, str] = field(default_factory=dict)  # node -> what its first-boot gate printed (the lab's)

    @staticmethod
    def placeholders(vpc_range: str, nodes: list[str]) -> Addresses:
        """Documentation ranges (RFC 5737): never routable, obviously fake in a diff. Each
        node's address follows from its name alone (appN: .10+N, the witness: .30), as a
        real node's does not change when others are added: a scaled render diffs cleanly."""
        vpc = ipaddress.IPv4Network(vpc_range)

        def host(node: str) -> int:
            return 30 if node == "witness" else 10 + int(node.removeprefix("app"))

        return Addresses(
            public={n: f"203.0.113.{host(n)}" for n in nodes},
            private={n: str(vpc.network_address + host(n)) for n in nodes},
            reserved_ip="198.51.100.10",
        )

    @staticmethod
    def from_file(path: Path) -> Addresses:
        data = json.loads(path.read_text())
        return Addresses(dict(data["public"]), dict(data["private"]), str(data["reservedIp"]))


@functools.cache
def _ed25519_openssh(seed: bytes) -> tuple[str, str]:
    """A real, deterministic ed25519 key pair (OpenSSH encodings) from a seed. Cached:
    the OpenSSH encoding carries a random check number, and two evaluations of one
    stack must agree byte for byte, as the engine's state keeps one value."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed).digest())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, public + "\n"


def mock_host_key(stack: str, node: str) -> str:
    """A node's host key as a placeholder: a real ed25519 public key (type and key),
    one per stack and node, what a gate's output would be."""
    return " ".join(_ed25519_openssh(f"{stack}/host-key/{node}".encode())[1].split()[:2])


class StackMocks(pulumi.runtime.Mocks):
    """Provider stand-ins returning plausible outputs, deterministic per stack.

    Generated secrets (keys, passwords) are real values derived from the stack
    name, so the lab can use them and renders do not change between runs. They
    exist only in renders and the lab, never in a real deployment.
    """

    def __init__(self, stack: str, addresses: Addresses) -> None:
        self.stack = stack
        self.addresses = addresses
        # resource name -> generated secret outputs (the lab needs the real values)
        self.generated: dict[str, dict[str, str]] = {}
        # remote command name -> the stdout the mock gave it (the lab's replay maps
        # it to what the command really printed)
        self.command_stdout: dict[str, str] = {}

    @staticmethod
    def _id(kind: str, name: str) -> str:
        # Derived from the resource, not registration order (which is concurrent),
        # so renders are byte-for-byte repeatable.
        return str(100000 + int(hashlib.sha256(f"{kind}::{name}".encode()).hexdigest()[:8], 16) % 900000)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        state = dict(args.inputs)
        kind = args.typ
        rid = self._id(kind, args.name)
        if kind == types.DROPLET:
            rid = str(self.addresses.droplet_ids.get(args.name, rid))
            state.update(
                ipv4Address=self.addresses.public[args.name],
                ipv4AddressPrivate=self.addresses.private[args.name],
                dropletUrn=f"do:droplet:{rid}",
                status="active",
            )
        elif kind == types.RESERVED_IP:
            rid = self.addresses.reserved_ip
            state.update(ipAddress=rid, reservedIpUrn=f"do:reservedip:{rid}")
        elif kind == types.SSH_KEY:
            digest = hashlib.md5(str(args.inputs.get("publicKey", "")).encode()).hexdigest()
            state["fingerprint"] = ":".join(digest[i:i + 2] for i in range(0, 32, 2))
        elif kind == types.VPC:
            rid = f"vpc-{hashlib.sha1(args.name.encode()).hexdigest()[:12]}"
            state["urn"] = f"do:vpc:{rid}"
        elif kind == types.TLS_PRIVATE_KEY and args.inputs.get("algorithm") == "ECDSA":
            pem = mock_tls.ecdsa_key_pem(f"{self.stack}/{args.name}")
            state.update(privateKeyPem=pem)
            self.generated[args.name] = {"privateKeyPem": pem}
        elif kind == types.TLS_PRIVATE_KEY:
            private, public = _ed25519_openssh(f"{self.stack}/{args.name}".encode())
            state.update(privateKeyOpenssh=private, publicKeyOpenssh=public)
            self.generated[args.name] = {"privateKeyOpenssh": private}
        elif kind == types.TLS_SELF_SIGNED_CERT:
            state["certPem"] = mock_tls.self_signed_cert_pem(f"{self.stack}/{args.name}", _unwrap(dict(args.inputs)))
        elif kind == types.TLS_CERT_REQUEST:
            state["certRequestPem"] = mock_tls.cert_request_pem(_unwrap(dict(args.inputs)))
        elif kind == types.TLS_LOCALLY_SIGNED_CERT:
            state["certPem"] = mock_tls.locally_signed_cert_pem(f"{self.stack}/{args.name}", _unwrap(dict(args.inputs)))
        elif kind == types.RANDOM_PASSWORD:
            length = int(args.inputs.get("length", 32))
            digest = hashlib.sha256(f"{self.stack}/{args.name}".encode()).hexdigest()
            state["result"] = (digest * 4)[:length]
            self.generated[args.name] = {"result": state["result"]}
        elif kind == types.RANDOM_ID:
            size = int(args.inputs.get("byteLength", 4))
            state["hex"] = hashlib.sha256(f"{self.stack}/{args.name}".encode()).hexdigest()[:2 * size]
        elif kind == types.REMOTE_COMMAND:
            # The first-boot gate prints its node's host key; other steps' output is not used.
            node = args.name.removesuffix(GATE_SUFFIX)
            if node != args.name:
                state["stdout"] = self.addresses.host_keys.get(node) or mock_host_key(self.stack, node)
                self.command_stdout[args.name] = state["stdout"]
        elif kind == types.SPACES_BUCKET:
            rid = str(args.inputs.get("name"))
            region = args.inputs.get("region", "nyc3")
            state.update(bucketDomainName=f"{rid}.{region}.digitaloceanspaces.com", bucketUrn=f"do:space:{rid}",
                         endpoint=f"{region}.digitaloceanspaces.com")
        elif kind == types.SPACES_KEY:
            access, secret = self.addresses.spaces_key or (
                "DO00" + hashlib.sha256(f"{self.stack}/{args.name}".encode()).hexdigest()[:16].upper(),
                hashlib.sha256(f"secret/{self.stack}/{args.name}".encode()).hexdigest())
            rid = access
            state.update(accessKey=access, secretKey=secret)
            self.generated[args.name] = {"secretKey": secret}
        return rid, state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list | None]:
        return {}, None


class RecordingMonitor(pmocks.MockMonitor):
    def __init__(self, mocks: StackMocks) -> None:
        super().__init__(mocks)
        self.registrations: list[Registration] = []

    def make_urn(self, parent: str, type_: str, name: str) -> str:
        """The URN as the engine builds it: the parent's whole type chain (all but the
        root stack's type), not only its last type as the SDK's mock monitor does, so a
        URN from a render is one a deployed stack's state really holds."""
        if parent:
            chain = parent.split("::")[2]
            if chain != STACK_TYPE:
                type_ = f"{chain}${type_}"
        return "urn:pulumi:" + "::".join([settings.get_stack(), settings.get_project(), type_, name])

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type != STACK_TYPE:
            inputs = rpc.deserialize_properties(request.object)
            self.registrations.append(Registration(
                urn=response.urn, type=request.type, name=request.name, parent=request.parent,
                custom=bool(request.custom), dependencies=list(request.dependencies),
                protect=bool(request.protect), ignore_changes=list(request.ignoreChanges),
                replace_on_changes=list(request.replaceOnChanges),
                additional_secret_outputs=list(request.additionalSecretOutputs),
                deleted_with=request.deletedWith, inputs=_redact(inputs),
                secret_inputs=sorted(k for k, v in inputs.items() if rpc.is_rpc_secret(v)),
                raw_inputs=_unwrap(inputs),
                aliases=[json_format.MessageToDict(a) for a in request.aliases]
                + [{"urn": u} for u in request.aliasURNs],
                id=response.id, delete_before_replace=bool(request.deleteBeforeReplace),
                custom_timeouts={k: v for k, v in json_format.MessageToDict(request.customTimeouts).items() if v},
            ))
        return response


@dataclass
class Run:
    stack: str
    registrations: list[Registration]
    outputs: dict[str, Any]
    generated_secrets: dict[str, dict[str, str]]
    command_stdout: dict[str, str] = field(default_factory=dict)

    def of_type(self, kind: str) -> list[Registration]:
        return [r for r in self.registrations if r.type == kind]

    def by_name(self, name: str) -> Registration:
        matches = [r for r in self.registrations if r.name == name]
        if len(matches) != 1:
            raise KeyError(f"{len(matches)} resources named {name!r}")
        return matches[0]


def config_values(raw: Mapping[str, Any]) -> dict[str, str]:
    """Encode settings the way the Pulumi CLI hands them to a program."""
    out = {}
    for key, value in raw.items():
        full = key if ":" in key else f"{PROJECT}:{key}"
        if isinstance(value, bool):
            out[full] = "true" if value else "false"
        elif isinstance(value, (list, dict)):
            out[full] = json.dumps(value)
        else:
            out[full] = str(value)
    return out


# Stand-ins for the secret settings a real stack keeps encrypted in its config file.
MOCK_SECRETS = {"failoverApiToken": "mock-failover-api-token-0000"}
# The provider's Spaces credentials, which a real stack has in its config or environment.
MOCK_PROVIDER_SETTINGS = {"digitalocean:spacesAccessId": "DO00MOCKSPACESKEY000",
                          "digitalocean:spacesSecretKey": "mock-spaces-secret-key-0000"}


def run_program(stack: str, raw_config: Mapping[str, Any], addresses: Addresses | None = None) -> Run:
    """Evaluate __main__.py under mocks with the given settings (keys with or without prefix).

    Secret settings the config lacks get MOCK_SECRETS values (as `pulumi preview`
    would get the stack's encrypted ones)."""
    raw_config = {**{f"{PROJECT}:{k}": v for k, v in MOCK_SECRETS.items()
                     if k not in raw_config and f"{PROJECT}:{k}" not in raw_config},
                  **MOCK_PROVIDER_SETTINGS, **raw_config}
    from infra.config import parse

    plain = {k.split(":", 1)[-1]: v for k, v in raw_config.items() if k.startswith(f"{PROJECT}:") or ":" not in k}
    if addresses is None:
        cfg = parse(stack, plain)  # config errors surface here, before anything runs
        addresses = Addresses.placeholders(cfg.vpc_ip_range, list(cfg.node_names))
    mocks = StackMocks(stack, addresses)
    monitor = RecordingMonitor(mocks)
    settings.ROOT.set(None)  # a fresh root Stack resource per run
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor)
    from infra.config import SECRET_SETTINGS

    values = config_values(raw_config)
    pulumi.runtime.set_all_config(values, [f"{PROJECT}:{k}" for k in SECRET_SETTINGS if f"{PROJECT}:{k}" in values])
    settings.SETTINGS.rpc_manager.clear()
    settings.SETTINGS.outputs.clear()

    def program() -> None:
        runpy.run_path(str(REPO_ROOT / "__main__.py"), run_name="__main__")

    _sync_await(run_pulumi_func(program))
    return Run(stack, monitor.registrations, _resolve_exports(), mocks.generated, mocks.command_stdout)


def _resolve_exports() -> dict[str, Any]:
    """The values exported with pulumi.export, secrets replaced by the marker.

    Under mocks the root Stack registered its (empty) outputs before the program
    ran, so the exports are read from it directly.
    """
    root = settings.get_root_resource()
    resolved = {}
    for key, value in getattr(root, "outputs", {}).items():
        output = pulumi.Output.from_input(value)
        secret = _sync_await(output.is_secret())
        resolved[key] = SECRET_MARKER if secret else _sync_await(output.future())
    return resolved
