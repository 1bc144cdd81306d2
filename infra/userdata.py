"""Render the cloud-init user-data each droplet boots with.

Everything that lands on a node comes from files under `cloudinit/`; this module
only fills in per-stack values and assembles one `#cloud-config` document. The
result is plain text that anyone with API or metadata access can read, so it
carries public keys and addresses only, never a secret.
"""

from __future__ import annotations

from collections.abc import Sequence
from string import Template

import yaml

from infra import tuning
from infra.config import StackConfig
from infra.paths import read
from infra.ports import CLUSTER_TCP_PORT_RANGES, CLUSTER_UDP_PORT_RANGES, port_range

USER_DATA_LIMIT = 64 * 1024  # DigitalOcean's limit for user_data

# Post-quantum hybrids first. pulumi-command's Go client offers
# mlkem768x25519-sha256; curve25519 stays as a fallback for older admin clients
# unless the stack turns it off (sshClassicalKexFallback: false).
PQ_KEX = ("mlkem768x25519-sha256", "sntrup761x25519-sha512", "sntrup761x25519-sha512@openssh.com")
CLASSICAL_KEX = ("curve25519-sha256", "curve25519-sha256@libssh.org")

ROLES = ("app", "witness")


PACKAGES_FILE = "firstboot/packages.yaml"


def package_lists() -> dict[str, list[str]]:
    """cloudinit/firstboot/packages.yaml, checked: `common` and one list per role.

    The one parser of that file: first boot installs from it, and the lab image
    is built from it.
    """
    data = yaml.safe_load(read(PACKAGES_FILE)) or {}
    expected = ("common", *ROLES)
    if not isinstance(data, dict) or set(data) != set(expected):
        raise ValueError(f"cloudinit/{PACKAGES_FILE}: expected the keys {', '.join(expected)}")
    for group, pkgs in data.items():
        if not isinstance(pkgs, list | type(None)) or not all(isinstance(p, str) for p in pkgs or []):
            raise ValueError(f"cloudinit/{PACKAGES_FILE}: {group!r} must be a list of package names")
    return {group: list(data[group] or []) for group in expected}


def packages_for(role: str) -> list[str]:
    """Debian packages a node of `role` installs at first boot."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; allowed: {', '.join(ROLES)}")
    lists = package_lists()
    return lists["common"] + lists[role]


def kex_algorithms(cfg: StackConfig) -> str:
    return ",".join(PQ_KEX + (CLASSICAL_KEX if cfg.ssh_classical_kex_fallback else ()))


def sshd_dropin(cfg: StackConfig) -> str:
    return Template(read("firstboot/templates/sshd-hardening.conf")).substitute(
        deploy_user=cfg.deploy_user, kex_algorithms=kex_algorithms(cfg)
    )


def node_env(cfg: StackConfig, role: str) -> str:
    """Shell-sourceable settings for cloudinit/firstboot/harden.sh (values are all validated tokens
    or tuning values)."""
    ports = cfg.public_tcp_ports if role == "app" else ()
    values = {
        "ROLE": role,
        "DEPLOY_USER": cfg.deploy_user,
        "VPC_RANGE": cfg.vpc_ip_range,
        "SSH_CIDRS": " ".join(cfg.ssh_allowed_cidrs),
        "PUBLIC_PORTS": " ".join(str(p) for p in ports),
        "CLUSTER_TCP": " ".join(port_range(a, b, ":") for a, b in CLUSTER_TCP_PORT_RANGES.values()),
        "CLUSTER_UDP": " ".join(port_range(a, b, ":") for a, b in CLUSTER_UDP_PORT_RANGES.values()),
        "SSH_RATE_BURST": tuning.SSH_RATE_BURST,
        "SSH_RATE_PER_MINUTE": tuning.SSH_RATE_PER_MINUTE,
        "SSH_RATE_FORGET_MS": tuning.SSH_RATE_FORGET_MS,
        "LOGIN_UMASK": tuning.LOGIN_UMASK,
        "PASS_MAX_DAYS": tuning.PASS_MAX_DAYS,
        "PASS_MIN_DAYS": tuning.PASS_MIN_DAYS,
        "SHA_CRYPT_MIN_ROUNDS": tuning.SHA_CRYPT_MIN_ROUNDS,
    }
    return "".join(f'{k}="{v}"\n' for k, v in values.items())


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so user-data diffs read like the files."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _file(path: str, content: str, mode: str = "0644", defer: bool = False) -> dict:
    entry = {"path": path, "content": content, "owner": "root:root", "permissions": mode}
    if defer:  # written after packages, so package-owned directories exist
        entry["defer"] = True
    return entry


def render(cfg: StackConfig, hostname: str, role: str, authorized_keys: Sequence[str]) -> str:
    """The complete user-data for one node."""
    if not authorized_keys:
        raise ValueError("a node needs at least one authorized key")
    doc: dict = {
        "hostname": hostname,
        "preserve_hostname": False,
        "manage_etc_hosts": True,
        "users": [{
            "name": cfg.deploy_user,
            "gecos": "do-ha-stack deploy user",
            "groups": ["sudo", "adm", "systemd-journal"],
            "shell": "/bin/bash",
            "lock_passwd": True,
            # Keys only, no password exists: pulumi-command runs `sudo`
            # non-interactively, and a sudo password would have to be stored
            # somewhere reachable by automation.
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
            "ssh_authorized_keys": [k.strip() for k in authorized_keys],
        }],
        "disable_root": True,
        "ssh_pwauth": False,
        "ssh_deletekeys": True,
        "ssh_genkeytypes": ["ed25519"],
        "timezone": "Etc/UTC",
        "write_files": [
            _file("/etc/ssh/sshd_config.d/00-do-ha-stack.conf", sshd_dropin(cfg), "0600"),
            _file("/etc/do-ha-stack/node.env", node_env(cfg, role), "0600"),
            _file("/etc/sysctl.d/90-do-ha-stack.conf", read("firstboot/files/sysctl-hardening.conf")),
            _file("/usr/local/sbin/do-ha-harden", read("firstboot/harden.sh"), "0755"),
            # jail.local: the override file fail2ban reads last, untouched by upgrades
            _file("/etc/fail2ban/jail.local", read("firstboot/files/fail2ban-sshd.local"), defer=True),
            _file("/etc/modprobe.d/do-ha-stack.conf", read("firstboot/files/modprobe-blacklist.conf")),
            _file("/etc/systemd/coredump.conf.d/do-ha-stack.conf", read("firstboot/files/coredump.conf")),
            _file("/etc/security/limits.d/do-ha-stack.conf", read("firstboot/files/limits-core.conf")),
            _file("/etc/profile.d/do-ha-stack.sh", read("firstboot/files/profile.sh")),
            _file("/etc/issue", read("firstboot/files/issue.net")),
            _file("/etc/issue.net", read("firstboot/files/issue.net")),
            _file("/etc/apt/apt.conf.d/90do-ha-stack-upgrades", read("firstboot/files/apt-auto-upgrades.conf"),
                  defer=True),
            _file("/etc/needrestart/conf.d/do-ha-stack.conf", read("firstboot/files/needrestart.conf"), defer=True),
            _file("/etc/rkhunter.conf.local", read("firstboot/files/rkhunter.conf.local"), defer=True),
            _file("/etc/logwatch/conf/logwatch.conf", read("firstboot/files/logwatch.conf"), defer=True),
        ] + [
            _file(f"/etc/systemd/system/{unit}", read(f"firstboot/files/{unit}"), defer=True)
            for unit in ("do-ha-logwatch.service", "do-ha-logwatch.timer", "do-ha-rkhunter-baseline.service",
                         "do-ha-aide-baseline.service", "do-ha-hidepid.service")
        ],
        "runcmd": [["/usr/local/sbin/do-ha-harden"]],
    }
    if cfg.install_packages:
        doc["package_update"] = True
        doc["package_upgrade"] = True
        doc["packages"] = packages_for(role)
    text = "#cloud-config\n" + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1000)
    size = len(text.encode())
    if size > USER_DATA_LIMIT:
        raise ValueError(f"user-data for {hostname} is {size} bytes, over DigitalOcean's {USER_DATA_LIMIT}")
    return text
