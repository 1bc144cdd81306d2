"""The web tier on every app node: nginx's site and the canary write endpoint.

nginx serves /srv/shared/www, so each node's step waits for its shared mount.
Pacemaker runs nginx on every app node (cloudinit/steps/cluster-resources.sh).
The canary takes writes from the trusted ranges or with the stack's canary token
only (cloudinit/app/nginx-site.conf). With a domain and its certificate in the
config, every app node serves HTTPS with the same certificate and key, so a
failover changes nothing a browser sees.
"""

from __future__ import annotations

from string import Template

import pulumi
import pulumi_random as random

from infra import tuning
from infra.config import StackConfig, secret_setting
from infra.naming import child_opts
from infra.nodes import Nodes
from infra.paths import read
from infra.remote import Bundle, Connector, NodeFile, settings_file, step_command
from infra.storage import MOUNTPOINT

DOCUMENT_ROOT = f"{MOUNTPOINT}/www"
NGINX_INCLUDES = "/etc/nginx/do-ha-stack"
TLS_DIR = f"{NGINX_INCLUDES}/tls"  # web-node removes it when the site goes back to HTTP
SITE_CERT = "/usr/local/lib/do-ha-stack/site-cert"
ACME_SERVER_CA = "/etc/do-ha-stack/acme-server-ca.pem"


def site_file(https: bool) -> str:
    """nginx's site: the canary's http-level settings and the servers, HTTP-only or
    HTTPS with HTTP redirected to it."""
    return read("app/nginx-site.conf") + read(f"app/nginx-server-{'https' if https else 'http'}.conf")


def site_cert_env(cfg: StackConfig) -> str:
    """site-cert's settings (cloudinit/app/site-cert sources them as root: quoted)."""
    values = {"DOMAIN": cfg.domain, "ACME_DIRECTORY_URL": cfg.acme_directory_url, "ACME_EMAIL": cfg.acme_email,
              "ACME_SERVER_CA": ACME_SERVER_CA if cfg.acme_server_ca else ""}
    return settings_file(values)


def tls_files(cfg: StackConfig) -> list[NodeFile]:
    """What a node needs for the site's certificate: the supplied one itself, or
    the ACME client's script, timers and settings, and the plain site nginx serves
    until the first certificate is there."""
    if cfg.tls == "none":
        return []
    files = [NodeFile(f"{NGINX_INCLUDES}/server-name.conf", f"server_name {cfg.domain};\n")]
    if cfg.tls == "supplied":
        return files + [
            # The chain is public once served, but it arrives as a secret setting.
            NodeFile(f"{TLS_DIR}/site.pem", secret_setting("tlsCertificate"), secret=True),
            # nginx's master process (root) reads the key before it drops privileges.
            NodeFile(f"{TLS_DIR}/site.key", secret_setting("tlsPrivateKey"), "0600", secret=True),
        ]
    units = "/etc/systemd/system"
    sync_timer = Template(read("app/templates/do-ha-site-cert-sync.timer")).substitute(
        interval=tuning.SITE_CERT_SYNC_S)
    files += [
        # Served until this node has a certificate for the domain (site-cert switches).
        NodeFile("/etc/nginx/sites-available/do-ha-stack-plain", site_file(https=False)),
        NodeFile(SITE_CERT, read("app/site-cert"), "0755"),
        NodeFile("/etc/do-ha-stack/site-cert.env", site_cert_env(cfg)),
        NodeFile(f"{units}/do-ha-site-cert-renew.service", read("app/do-ha-site-cert-renew.service")),
        NodeFile(f"{units}/do-ha-site-cert-renew.timer", read("app/do-ha-site-cert-renew.timer")),
        NodeFile(f"{units}/do-ha-site-cert-sync.service", read("app/do-ha-site-cert-sync.service")),
        NodeFile(f"{units}/do-ha-site-cert-sync.timer", sync_timer),
    ]
    if cfg.acme_server_ca:
        files.append(NodeFile(ACME_SERVER_CA, cfg.acme_server_ca))
    return files


def canary_sources(cfg: StackConfig) -> str:
    """nginx `geo` entries: the ranges that may write to the canary without its token."""
    ranges = dict.fromkeys([*cfg.ssh_allowed_cidrs, *cfg.canary_allowed_cidrs])
    return "".join(f"{cidr} 1;\n" for cidr in ranges)


def canary_token_map(token: str) -> str:
    """The nginx `map` entry that recognises the token (letters and digits only)."""
    return f'"{token}" 1;\n'


# Named to sort after pacemaker's own drop-in for the units it runs (50-pacemaker.conf,
# in /run, which sets Restart=no): systemd applies drop-ins in name order, the last wins.
NGINX_RESTART_DROPIN = "/etc/systemd/system/nginx.service.d/90-do-ha-restart.conf"


def nginx_restart_dropin() -> str:
    """systemd starts a killed nginx again at once (infra/tuning.py WEB_RESTART_MS)."""
    return ("# do-ha-stack: a killed nginx is started again by systemd at once, not only at\n"
            "# pacemaker's next check. An explicit stop is never undone.\n"
            f"[Service]\nRestart=on-failure\nRestartSec={tuning.WEB_RESTART_MS}ms\n")


class Web(pulumi.ComponentResource):
    """`installed[node]`: the site and the canary are in place, nginx left to pacemaker."""

    def __init__(self, name: str, cfg: StackConfig, nodes: Nodes, connect: Connector,
                 mounts: dict[str, pulumi.Resource], opts: pulumi.ResourceOptions) -> None:
        super().__init__("do-ha-stack:web:Web", name, None, opts)
        # Lets monitoring outside the trusted ranges write to the canary (X-Canary-Token).
        self.canary_token = random.RandomPassword("canary-token", length=40, special=False,
                                                  opts=child_opts(cfg, self))
        files = [
            NodeFile("/usr/local/lib/do-ha-stack/canary.py", read("app/canary.py"), "0755"),
            NodeFile("/etc/systemd/system/do-ha-canary.service", read("app/do-ha-canary.service")),
            NodeFile(NGINX_RESTART_DROPIN, nginx_restart_dropin()),
            NodeFile("/etc/do-ha-stack/canary.env",
                     f"CANARY_RETENTION_DAYS={tuning.CANARY_RETENTION_DAYS}\n"),
            NodeFile("/etc/nginx/sites-available/do-ha-stack", site_file(cfg.https)),
            NodeFile(f"{NGINX_INCLUDES}/site-common.conf", read("app/nginx-site-common.conf")),
            NodeFile(f"{NGINX_INCLUDES}/canary-sources.conf", canary_sources(cfg)),
            # nginx reads its configuration as root: nobody else needs the token.
            NodeFile(f"{NGINX_INCLUDES}/canary-token.conf",
                     self.canary_token.result.apply(canary_token_map), "0600", secret=True),
        ]
        files += tls_files(cfg)
        self.installed: dict[str, pulumi.Resource] = {
            node.name: step_command(
                f"{node.name}-web-node", "web-node", node,
                {"DOCUMENT_ROOT": DOCUMENT_ROOT, "TLS": cfg.tls, "DOMAIN": cfg.domain or "-"}, connect,
                Bundle(files=files), cfg, self, depends_on=[mounts[node.name]])
            for node in nodes.app_nodes
        }
        self.register_outputs({})
