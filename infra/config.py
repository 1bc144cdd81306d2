"""Typed, validated stack configuration.

Every setting is read and checked here, before any resource is registered, so a
bad value stops `pulumi preview` with one message that names the setting and
what it accepts. `parse()` works on a plain mapping (unit tests, offline render);
`load()` reads the Pulumi config of the current stack.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import os
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pulumi

from infra.certificates import CertificateError, check_ca_bundle, check_supplied

PROJECT = "do-ha-stack"

# Regions where droplets, VPCs and reserved IPs are all offered.
REGIONS = (
    "ams3", "atl1", "blr1", "fra1", "lon1", "nyc1", "nyc2", "nyc3",
    "sfo2", "sfo3", "sgp1", "syd1", "tor1",
)
MIN_APP_NODES, MAX_APP_NODES = 2, 9
# Where DigitalOcean offers Spaces (the provider's own list).
SPACES_REGIONS = ("ams3", "atl1", "blr1", "fra1", "lon1", "nyc3", "sfo2", "sfo3", "sgp1", "syd1", "tor1")
# Backups are nightly and one is stale after 26 h: two days keep one to fall back on.
MIN_BACKUP_RETENTION_DAYS, MAX_BACKUP_RETENTION_DAYS = 2, 3650
# Key types OpenSSH 10 still accepts for user authentication.
SSH_KEY_TYPES = (
    "ssh-ed25519", "sk-ssh-ed25519@openssh.com",
    "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "sk-ecdsa-sha2-nistp256@openssh.com", "ssh-rsa",
)
MIN_RSA_BITS = 3072
# Accounts a node already has (Debian 13's cloud image, the packages the program
# installs and the accounts its steps make: the lab checks this against a
# node's own list), and the cloud image's conventional login names. A deploy
# user with one of these names would take over an existing account.
RESERVED_USERS = frozenset({
    "root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news",
    "uucp", "proxy", "www-data", "backup", "list", "irc", "_apt", "nobody",
    "systemd-network", "systemd-timesync", "dhcpcd", "systemd-resolve", "systemd-coredump", "messagebus",
    "polkitd", "tss", "uuidd", "tcpdump", "_chrony", "chrony", "Debian-exim", "_rpc", "statd",
    "dnsmasq", "sshd", "hacluster", "mysql", "gluster", "nginx", "admin", "debian", "ubuntu",
    "_aide",  # aide-common's, for the daily check
    "do-ha-canary",  # web-node's account for the canary service
})
# More of the internet than SSH may be opened to, with every range counted
# together (0.0.0.0/0 split into halves is still the internet): a /8 of IPv4,
# a /32 of IPv6.
MAX_SSH_ADDRESSES = {4: 2 ** 24, 6: 2 ** 96}
# A bound on any one setting's value (serialised): DigitalOcean's user_data
# limit, which every setting that reaches a node shares.
MAX_SETTING_BYTES = 64 * 1024
MAX_LIST_ITEMS = 64
ENVIRONMENTS = ("Development", "Staging", "Production")


class ConfigError(ValueError):
    """A setting holds a value the stack cannot use."""

    def __init__(self, key: str, problem: str, allowed: str) -> None:
        super().__init__(f"{PROJECT}:{key}: {problem}; allowed: {allowed}")
        self.key = key


@dataclass(frozen=True)
class StackConfig:
    stack: str
    region: str
    app_node_count: int
    witness: bool
    node_size: str
    witness_size: str
    image: str
    vpc_ip_range: str
    admin_ssh_keys: tuple[str, ...]
    ssh_allowed_cidrs: tuple[str, ...]
    canary_allowed_cidrs: tuple[str, ...]
    ssh_never_ban_cidrs: tuple[str, ...]
    public_tcp_ports: tuple[int, ...]
    deploy_user: str
    alert_email: str
    alert_smtp_host: str  # "": the nodes mail nothing (README, "Alerts")
    alert_smtp_port: int
    alert_smtp_user: str  # "": the relay takes the nodes' mail without a login
    alert_from: str  # "" in the raw settings: alertEmail (parse fills it in)
    protect: bool
    environment: str
    install_packages: bool
    ssh_classical_kex_fallback: bool
    replace_on_user_data_change: bool
    droplet_backups: bool
    register_admin_ssh_keys: bool
    cluster_api_url: str
    control_node: str
    domain: str
    acme_directory_url: str
    acme_email: str
    acme_server_ca: str
    dns_zone: str
    backups: bool
    backup_retention_days: int
    backup_region: str  # "" in the raw settings: the stack's region (parse fills it in)
    backup_bucket: str  # "": named by the program, unique (infra/backups.py)
    spaces_endpoint: str  # "": DigitalOcean Spaces in backup_region
    # Where the site's certificate comes from: "none" (HTTP only, no domain),
    # "supplied" (tlsCertificate and tlsPrivateKey, secrets) or "acme" (obtained
    # and renewed by the stack). With one, nginx serves HTTPS and redirects HTTP.
    tls: str = "none"

    @property
    def https(self) -> bool:
        return self.tls != "none"

    @property
    def node_names(self) -> tuple[str, ...]:
        return app_names(self.app_node_count) + (("witness",) if self.witness else ())


def app_names(count: int) -> tuple[str, ...]:
    """The first `count` app nodes' names: app1, app2, ..."""
    return tuple(f"app{i}" for i in range(1, count + 1))


# --- value checkers: each returns the clean value or raises ConfigError -----

def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(key, f"{value!r} is not a boolean", "true or false")


def _int(key: str, value: Any, lo: int, hi: int) -> int:
    try:
        number = int(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or str(number) != str(value).strip():
        raise ConfigError(key, f"{value!r} is not an integer", f"an integer from {lo} to {hi}")
    if not lo <= number <= hi:
        raise ConfigError(key, f"{number} is out of range", f"an integer from {lo} to {hi}")
    return number


def _list(key: str, value: Any) -> list[Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            raise ConfigError(key, "is not a list", "a YAML/JSON list") from None
    if not isinstance(value, list):
        raise ConfigError(key, "is not a list", "a YAML/JSON list")
    if len(value) > MAX_LIST_ITEMS:
        raise ConfigError(key, f"has {len(value)} entries", f"a list of at most {MAX_LIST_ITEMS}")
    return value


def _slug(key: str, value: Any, what: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]*[a-z0-9]", value):
        raise ConfigError(key, f"{value!r} is not a {what} slug", f"a {what} slug such as the defaults")
    return value


def _region(key: str, value: Any) -> str:
    if value not in REGIONS:
        raise ConfigError(key, f"unknown region {value!r}", ", ".join(REGIONS))
    return value


def _image(key: str, value: Any) -> str:
    # Numeric image ids change with every rebuild of an image; slugs are stable.
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        raise ConfigError(key, f"{value!r} is an image id", "an image slug such as debian-13-x64")
    return _slug(key, value, "image")


def _vpc_range(key: str, value: Any) -> str:
    allowed = "an RFC 1918 IPv4 network (10/8, 172.16/12, 192.168/16) with a prefix from /16 to /24"
    try:
        net = ipaddress.IPv4Network(str(value), strict=True)
    except ValueError as exc:
        raise ConfigError(key, f"{value!r} is not a valid network ({exc})", allowed) from None
    private = [ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]
    if not any(net.subnet_of(p) for p in private):
        raise ConfigError(key, f"{net} is not an RFC 1918 range", allowed)
    if not 16 <= net.prefixlen <= 24:
        raise ConfigError(key, f"prefix /{net.prefixlen} is out of range", allowed)
    return str(net)


def _cidr(key: str, value: Any) -> str:
    try:
        return str(ipaddress.ip_network(str(value), strict=True))
    except ValueError as exc:
        raise ConfigError(
            key, f"{value!r} is not a valid CIDR ({exc})",
            "IPv4 or IPv6 networks such as 198.51.100.0/24 or 2001:db8::/48",
        ) from None


def _trusted_cidrs(key: str, cidrs: list[str], opens: str, whose: str) -> list[str]:
    """Trusted source ranges, refused when together they cover the internet."""
    networks = [ipaddress.ip_network(c) for c in cidrs]
    for version, limit in MAX_SSH_ADDRESSES.items():
        nets = [n for n in networks if n.version == version]
        total = sum(n.num_addresses for n in ipaddress.collapse_addresses(nets))  # type: ignore[arg-type]
        if total > limit:
            widest = "/8" if version == 4 else "/32"
            raise ConfigError(key, f"opens {opens} to {total} IPv{version} addresses (the ranges counted together), "
                              f"more than a {widest}", f"{whose}: together at most a {widest} of IPv{version}")
    return cidrs


def _ssh_cidrs(key: str, value: Any) -> list[str]:
    """The ranges SSH is open to."""
    cidrs = [_cidr(key, x) for x in _non_empty(key, _list(key, value), "CIDR")]
    return _trusted_cidrs(key, cidrs, "SSH", "the admin and deploy networks")


def _never_ban_cidrs(key: str, value: Any) -> list[str]:
    """Sources fail2ban never bans (the deploying runner, a bastion): may be empty."""
    cidrs = [_cidr(key, x) for x in _list(key, value)]
    return _trusted_cidrs(key, cidrs, "SSH without fail2ban", "the deploy runners and bastions")


def _canary_cidrs(key: str, value: Any) -> list[str]:
    """Monitoring ranges that may write to the canary without its token (may be empty)."""
    cidrs = [_cidr(key, x) for x in _list(key, value)]
    return _trusted_cidrs(key, cidrs, "the canary's write endpoint", "the monitoring networks")


def _ssh_key(key: str, value: Any) -> str:
    allowed = "OpenSSH public keys ('TYPE BASE64 [comment]' on one line; TYPE one of " + ", ".join(SSH_KEY_TYPES) + \
        f"; RSA at least {MIN_RSA_BITS} bits)"
    parts = str(value).strip().split(None, 2)
    line = " ".join(parts)  # what goes into authorized_keys
    # Leading and trailing whitespace goes and fields are joined by one space; a
    # control character left after that (a newline in the comment) would put a
    # second, unchecked line into authorized_keys.
    if re.search(r"[\x00-\x1f\x7f]", line):
        raise ConfigError(key, f"the key {line[:40]!r}... contains a control character "
                          "(a newline starts another key)", allowed)
    if len(parts) < 2 or parts[0] not in SSH_KEY_TYPES:
        raise ConfigError(key, f"{str(value)[:40]!r}... is not a supported public key", allowed)
    try:
        blob = base64.b64decode(parts[1], validate=True)
        fields = _ssh_strings(blob)
    except (binascii.Error, ValueError):
        raise ConfigError(key, f"the {parts[0]} key's base64 body is malformed", allowed) from None
    if fields[0] != parts[0].encode():
        raise ConfigError(key, f"the key body says {fields[0][:40]!r}, not {parts[0]}", allowed)
    if parts[0] == "ssh-rsa":
        bits = int.from_bytes(fields[2], "big").bit_length() if len(fields) > 2 else 0
        if bits < MIN_RSA_BITS:
            raise ConfigError(key, f"RSA key has {bits} bits", allowed)
    return line


def _ssh_strings(blob: bytes) -> list[bytes]:
    """Split an SSH wire-format blob into its length-prefixed fields."""
    fields, pos = [], 0
    while pos < len(blob):
        if pos + 4 > len(blob):
            raise ValueError("truncated")
        (size,) = struct.unpack(">I", blob[pos:pos + 4])
        pos += 4
        if pos + size > len(blob):
            raise ValueError("truncated")
        fields.append(blob[pos:pos + size])
        pos += size
    if not fields:
        raise ValueError("empty")
    return fields


def _port(key: str, value: Any) -> int:
    from infra.ports import CLUSTER_TCP_PORT_RANGES, SSH_PORT

    port = _int(key, value, 1, 65535)
    if port == SSH_PORT:
        raise ConfigError(key, "port 22 is SSH, which has its own setting", "TCP ports other than 22 and cluster ports")
    if any(lo <= port <= hi for lo, hi in CLUSTER_TCP_PORT_RANGES.values()):
        raise ConfigError(key, f"port {port} is a cluster port and must stay private",
                          "TCP ports other than 22 and cluster ports")
    return port


def _user(key: str, value: Any) -> str:
    allowed = ("a lowercase login name (letter first; letters, digits, '_' or '-'; up to 32) "
               "that is not a system account")
    if not isinstance(value, str) or not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", value):
        raise ConfigError(key, f"{value!r} is not a valid user name", allowed)
    if value in RESERVED_USERS:
        raise ConfigError(key, f"{value!r} is a system account", allowed)
    return value


def _email(key: str, value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}", value):
        raise ConfigError(key, f"{value!r} is not an e-mail address", "an address such as ops@example.com")
    return value


def _environment(key: str, value: Any) -> str:
    if value not in ENVIRONMENTS:
        raise ConfigError(key, f"{value!r} is not a DigitalOcean project environment", ", ".join(ENVIRONMENTS))
    return value


def _api_url(key: str, value: Any) -> str:
    # https only: the agents send the account's token to it. No credentials or path either.
    allowed = "an https URL of the DigitalOcean API without credentials or a path, such as https://api.digitalocean.com"
    if not isinstance(value, str) or not re.fullmatch(r"https://[A-Za-z0-9.-]+(:[0-9]{1,5})?", value):
        raise ConfigError(key, f"{value!r} is not an API base URL", allowed)
    return value


def _token(key: str, value: Any) -> None:
    # Checked for shape only; the value is read as a Pulumi secret (secret_setting).
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.:-]{16,256}", value):
        raise ConfigError(key, "is not an API token", SECRET_SETTINGS[key].allowed)


def _smtp_password(key: str, value: Any) -> None:
    # msmtp reads the first line of the file it lands in (passwordeval).
    if not isinstance(value, str) or not re.fullmatch(r"[^\r\n\x00]{1,512}", value):
        raise ConfigError(key, "is not a one-line password", SECRET_SETTINGS[key].allowed
                          + " (one line of at most 512 characters)")


def _pem(key: str, value: Any) -> None:
    # What it holds is checked against the domain and its partner (_https).
    if not isinstance(value, str) or "-----BEGIN " not in value:
        raise ConfigError(key, "is not PEM text", SECRET_SETTINGS[key].allowed)


def _https_url(key: str, value: Any) -> str:
    # Path characters only: the URL lands in a settings file a root script reads.
    if not isinstance(value, str) or not re.fullmatch(r"https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~%/-]*)?",
                                                      value):
        raise ConfigError(key, f"{value!r} is not an https URL",
                          "an ACME directory URL such as https://acme-v02.api.letsencrypt.org/directory")
    return value


def _optional_email(key: str, value: Any) -> str:
    return value if value == "" else _email(key, value)


def _smtp_host(key: str, value: Any) -> str:
    if value == "":
        return value
    label = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
    if not isinstance(value, str) or len(value) > 253 or not re.fullmatch(rf"{label}(\.{label})*", value):
        raise ConfigError(key, f"{value!r} is not a host name or IPv4 address",
                          "the SMTP relay's name, such as smtp.example.com, or its IPv4 address; "
                          "empty for nodes that mail nothing")
    return value


def _smtp_port(key: str, value: Any) -> int:
    port = _int(key, value, 1, 65535)
    if port == 25:
        raise ConfigError(key, "port 25 is blocked out of DigitalOcean droplets",
                          "the relay's submission port: 587 (STARTTLS), 465 (TLS) or 2525")
    return port


def _smtp_user(key: str, value: Any) -> str:
    if value == "":
        return value
    if not isinstance(value, str) or len(value) > 254 or not re.fullmatch(r"[!-~]+", value):
        raise ConfigError(key, f"{value!r} is not an SMTP login",
                          "the relay's user name: printable ASCII without spaces, at most 254 characters; "
                          "empty for a relay that needs no login")
    return value


def _ca_pem(key: str, value: Any) -> str:
    if value == "":
        return value
    try:
        check_ca_bundle(value)
    except CertificateError as err:
        raise ConfigError(key, err.problem, err.allowed) from None
    return value


def _domain(key: str, value: Any) -> str:
    allowed = ("a DNS name of at least two labels in lowercase letters, digits and hyphens (punycode for "
               "other scripts), such as www.example.com; empty for a stack without HTTPS")
    if value == "":
        return value
    label = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
    if (not isinstance(value, str) or len(value) > 253
            or not re.fullmatch(rf"({label}\.)+(?!-)[a-z][a-z0-9-]{{0,62}}(?<!-)", value)):
        raise ConfigError(key, f"{value!r} is not a domain name", allowed)
    return value


def _app_node(key: str, value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"app[1-9][0-9]?", value):
        raise ConfigError(key, f"{value!r} is not an app node's name", "app1, app2, ... up to appNodeCount")
    return value


def _non_empty(key: str, items: list[Any], what: str) -> list[Any]:
    if not items:
        raise ConfigError(key, "is empty", f"at least one {what}")
    return items


# --- the settings table: key -> (default or REQUIRED, checker) ---------------

def _backup_region(key: str, value: Any) -> str:
    if value != "" and value not in SPACES_REGIONS:
        raise ConfigError(key, f"{value!r} has no DigitalOcean Spaces",
                          f"one of {', '.join(SPACES_REGIONS)}, or empty for the stack's region")
    return value


def _bucket(key: str, value: Any) -> str:
    # DigitalOcean's (and S3's) rules for a bucket name, which is public and unique
    # across a region: a DNS label's characters, so it works as a host name.
    if value == "":
        return value
    if not isinstance(value, str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", value) \
            or re.fullmatch(r"[0-9.]+", value):
        raise ConfigError(key, f"{value!r} is not a Spaces bucket name",
                          "3 to 63 lowercase letters, digits and hyphens, starting and ending with a letter "
                          "or digit; empty for a unique name the program picks")
    return value


def _endpoint(key: str, value: Any) -> str:
    if value == "":
        return value
    if not isinstance(value, str) or not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?", value):
        raise ConfigError(key, f"{value!r} is not an S3 endpoint URL",
                          "an http(s) URL without a path, such as https://fra1.digitaloceanspaces.com; "
                          "empty for Spaces in backupRegion")
    return value


REQUIRED = object()

def _default_environment(stack: str) -> str:
    return {"prod": "Production", "staging": "Staging"}.get(stack, "Development")


SETTINGS: dict[str, tuple[Any, Callable[[str, Any], Any]]] = {
    "region": ("fra1", _region),
    "appNodeCount": (2, lambda k, v: _int(k, v, MIN_APP_NODES, MAX_APP_NODES)),
    "witness": (True, _bool),
    "nodeSize": ("s-2vcpu-4gb", lambda k, v: _slug(k, v, "droplet size")),
    "witnessSize": ("s-1vcpu-1gb", lambda k, v: _slug(k, v, "droplet size")),
    "image": ("debian-13-x64", _image),
    "vpcIpRange": ("10.10.0.0/20", _vpc_range),
    "adminSshKeys": (REQUIRED, lambda k, v: [_ssh_key(k, x) for x in _non_empty(k, _list(k, v), "OpenSSH public key")]),
    "sshAllowedCidrs": (REQUIRED, _ssh_cidrs),
    # Besides sshAllowedCidrs, who may write to the canary without its token.
    "canaryAllowedCidrs": ([], _canary_cidrs),
    "sshNeverBanCidrs": ([], _never_ban_cidrs),
    "publicTcpPorts": ([80, 443], lambda k, v: sorted({_port(k, x) for x in _list(k, v)})),
    "deployUser": ("deploy", _user),
    "alertEmail": (REQUIRED, _email),
    # The SMTP relay the nodes send their alerts through (always over TLS: STARTTLS,
    # or implicit TLS on 465). DigitalOcean blocks port 25 out of droplets.
    "alertSmtpHost": ("", _smtp_host),
    "alertSmtpPort": (587, _smtp_port),
    "alertSmtpUser": ("", _smtp_user),
    "alertFrom": ("", _optional_email),  # empty: alertEmail
    "protect": (False, _bool),
    "environment": (None, _environment),
    "installPackages": (True, _bool),
    "sshClassicalKexFallback": (True, _bool),
    "replaceOnUserDataChange": (False, _bool),
    "dropletBackups": (False, _bool),
    "registerAdminSshKeys": (True, _bool),
    "clusterApiUrl": ("https://api.digitalocean.com", _api_url),
    # The app node that runs the cluster-wide steps (cluster-setup, storage-volume,
    # cluster-resources). Any healthy member can; it moves away from a node before
    # that node is replaced (make replace does it).
    "controlNode": ("app1", _app_node),
    # The site's name, served over HTTPS with the certificate supplied (tlsCertificate,
    # tlsPrivateKey) or else one the stack obtains by ACME.
    "domain": ("", _domain),
    "acmeDirectoryUrl": ("https://acme-v02.api.letsencrypt.org/directory", _https_url),
    "acmeEmail": ("", _optional_email),  # empty: alertEmail
    # A private ACME server's own HTTPS certificate authority (PEM); empty: the system's.
    "acmeServerCa": ("", _ca_pem),
    # The domain's zone when DigitalOcean hosts it: the program keeps its A record.
    "dnsZone": ("", _domain),
    # Nightly MariaDB and shared-volume backups to a Spaces bucket of the stack's own.
    "backups": (True, _bool),
    "backupRetentionDays": (14, lambda k, v: _int(k, v, MIN_BACKUP_RETENTION_DAYS, MAX_BACKUP_RETENTION_DAYS)),
    "backupRegion": ("", _backup_region),  # empty: the stack's region
    "backupBucket": ("", _bucket),  # empty: <stack>-backups-<random>
    # The S3 endpoint the nodes and the provider reach the bucket at (the lab points it
    # at its stand-in); empty: https://<backupRegion>.digitaloceanspaces.com.
    "spacesEndpoint": ("", _endpoint),
}

# Secret settings: validated like the others but never kept in StackConfig; the
# program reads them as Pulumi secrets (secret_setting), so they stay secret end to end.
@dataclass(frozen=True)
class SecretSetting:
    allowed: str
    check: Callable[[str, Any], None]
    required: bool = True


SECRET_SETTINGS: dict[str, SecretSetting] = {
    "failoverApiToken": SecretSetting(
        "a DigitalOcean API token with write scope (the cluster moves the reserved IP "
        f"and fences droplets with it), set with `pulumi config set --secret {PROJECT}:failoverApiToken`",
        _token),
    "tlsCertificate": SecretSetting(
        "the PEM certificate chain for `domain`, the site's certificate first, set with "
        f"`pulumi config set --secret {PROJECT}:tlsCertificate < fullchain.pem`", _pem, required=False),
    "tlsPrivateKey": SecretSetting(
        "the certificate's PEM private key, unencrypted, set with "
        f"`pulumi config set --secret {PROJECT}:tlsPrivateKey < privkey.pem`", _pem, required=False),
    "alertSmtpPassword": SecretSetting(
        "the SMTP relay's password for alertSmtpUser, set with "
        f"`pulumi config set --secret {PROJECT}:alertSmtpPassword`", _smtp_password, required=False),
}

def _field(key: str) -> str:
    """camelCase setting name -> snake_case StackConfig field."""
    return re.sub(r"([A-Z])", r"_\1", key).lower()




def parse(stack: str, raw: Mapping[str, Any]) -> StackConfig:
    """Validate raw settings (keys without the project prefix) into a StackConfig."""
    unknown = sorted(set(raw) - set(SETTINGS) - set(SECRET_SETTINGS))
    if unknown:
        raise ConfigError(unknown[0], "is not a setting of this project", ", ".join([*SETTINGS, *SECRET_SETTINGS]))
    for key, value in raw.items():
        try:
            size = len(value.encode()) if isinstance(value, str) else len(json.dumps(value, default=str).encode())
        except RecursionError:
            raise ConfigError(key, "is nested too deeply", "the value's documented shape (README)") from None
        if size > MAX_SETTING_BYTES:
            raise ConfigError(key, f"is {size} bytes long", f"a value of at most {MAX_SETTING_BYTES} bytes")
    values: dict[str, Any] = {}
    for key, (default, check) in SETTINGS.items():
        value = raw.get(key)
        if default is None and value == "":  # Pulumi.yaml's empty default: derive it
            value = None
        if value is None:
            if default is REQUIRED:
                raise ConfigError(key, "is not set", f"set it with `pulumi config set {PROJECT}:{key} ...`")
            if default is None:  # derived default
                values[_field(key)] = _default_environment(stack)
                continue
            value = default
        checked = check(key, value)
        values[_field(key)] = tuple(checked) if isinstance(checked, list) else checked
    for key, secret in SECRET_SETTINGS.items():
        if raw.get(key) in (None, ""):
            if secret.required:
                raise ConfigError(key, "is not set", secret.allowed)
            continue
        secret.check(key, raw[key])
    values["tls"] = _tls(values["domain"], raw.get("tlsCertificate") or "", raw.get("tlsPrivateKey") or "")
    values["acme_email"] = values["acme_email"] or values["alert_email"]
    values["alert_from"] = values["alert_from"] or values["alert_email"]
    _check_alert_mail(values, bool(raw.get("alertSmtpPassword")))
    missing = [p for p in (80, 443) if p not in values["public_tcp_ports"]]
    if values["tls"] != "none" and missing:
        raise ConfigError("publicTcpPorts", f"lacks {', '.join(map(str, missing))}, which an HTTPS site needs "
                          "(443 serves it; 80 redirects and answers the ACME CA's checks)",
                          "80 and 443 among the ports, or an empty domain")
    zone = values["dns_zone"]
    if zone and not (values["domain"] == zone or values["domain"].endswith(f".{zone}")):
        raise ConfigError("dnsZone", f"{zone} does not hold the domain {values['domain'] or '(empty)'}",
                          "the DigitalOcean-hosted zone the domain is in, such as example.com for www.example.com")
    if values["backups"] and not values["backup_region"]:
        if values["region"] not in SPACES_REGIONS:
            raise ConfigError("backupRegion", f"is empty, and the stack's region {values['region']} has no Spaces",
                              f"one of {', '.join(SPACES_REGIONS)} (or backups false)")
        values["backup_region"] = values["region"]
    values["spaces_endpoint"] = values["spaces_endpoint"] or (
        f"https://{values['backup_region']}.digitaloceanspaces.com" if values["backup_region"] else "")
    apps = app_names(values["app_node_count"])
    if values["control_node"] not in apps:
        raise ConfigError("controlNode", f"{values['control_node']} is not an app node of this stack "
                          f"(appNodeCount is {values['app_node_count']})", ", ".join(apps))
    return StackConfig(stack=stack, **values)


def _check_alert_mail(values: dict[str, Any], has_password: bool) -> None:
    if values["alert_smtp_user"] and not values["alert_smtp_host"]:
        raise ConfigError("alertSmtpUser", "is set, but alertSmtpHost is empty",
                          "alertSmtpHost set to the relay, or no alertSmtpUser")
    if values["alert_smtp_user"] and not has_password:
        raise ConfigError("alertSmtpPassword", "is not set, but alertSmtpUser is",
                          SECRET_SETTINGS["alertSmtpPassword"].allowed)
    if has_password and not values["alert_smtp_user"]:
        raise ConfigError("alertSmtpPassword", "is set, but alertSmtpUser is empty",
                          "alertSmtpUser set to the relay's login, or no alertSmtpPassword")


def _tls(domain: str, certificate: str, key: str) -> str:
    """Where the site's certificate comes from (StackConfig.tls), after checking that
    the domain, a supplied certificate and its key belong together."""
    if bool(certificate) != bool(key):
        missing = "tlsPrivateKey" if certificate else "tlsCertificate"
        raise ConfigError(missing, "is not set, but its partner is",
                          "both tlsCertificate and tlsPrivateKey, or neither")
    if not certificate:
        return "acme" if domain else "none"
    if not domain:
        raise ConfigError("domain", "is empty, but a certificate is supplied (tlsCertificate)",
                          "the DNS name the certificate is for")
    try:
        check_supplied(domain, certificate, key)
    except CertificateError as err:
        raise ConfigError(err.setting, err.problem, err.allowed) from None
    return "supplied"


def secret_setting(key: str) -> pulumi.Output[str]:
    """A secret setting as a Pulumi secret (validated by parse before any resource exists)."""
    if key not in SECRET_SETTINGS:
        raise KeyError(key)
    return pulumi.Config(PROJECT).require_secret(key)


# The provider manages a Spaces bucket with Spaces keys, not the API token: its own
# settings, or their environment variables.
SPACES_CREDENTIALS = {"digitalocean:spacesAccessId": "SPACES_ACCESS_KEY_ID",
                      "digitalocean:spacesSecretKey": "SPACES_SECRET_ACCESS_KEY"}


def check_spaces_credentials(cfg: StackConfig, setting: Callable[[str], Any],
                             environ: Mapping[str, str]) -> None:
    """With backups on, the provider must have Spaces credentials to create the bucket."""
    if not cfg.backups:
        return
    for key, variable in SPACES_CREDENTIALS.items():
        if not setting(key) and not environ.get(variable):
            raise ConfigError(
                "backups", f"is true, but the provider has no Spaces credentials ({key} is not set)",
                f"a Spaces access key of the account for the provider, `pulumi config set {SPACES_CREDENTIALS_ID}"
                f" <key id>` and `pulumi config set --secret {SPACES_CREDENTIALS_SECRET} <secret>` (or "
                f"{', '.join(SPACES_CREDENTIALS.values())} in the environment); or backups false")


SPACES_CREDENTIALS_ID, SPACES_CREDENTIALS_SECRET = SPACES_CREDENTIALS


def load() -> StackConfig:
    """Read and validate the current stack's `do-ha-stack:*` settings."""
    cfg = pulumi.Config(PROJECT)
    raw: dict[str, Any] = {}
    for key in SETTINGS:
        value = cfg.get(key)
        if value is not None:
            raw[key] = value
    for key in SECRET_SETTINGS:
        # Read raw for validation only (Config.get would warn about a secret).
        value = pulumi.runtime.get_config(f"{PROJECT}:{key}")
        if value is not None:
            raw[key] = value
    stack_config = parse(pulumi.get_stack(), raw)
    check_spaces_credentials(stack_config, pulumi.runtime.get_config, os.environ)
    return stack_config
