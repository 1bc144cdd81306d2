"""The nodes' own alerts: pacemaker's alert agent (every failover, fence and failed
resource), a watch for degraded states no event repeats (a fenced droplet left off,
semi-sync off, broken replication, a heal backlog, no primary), and the sender that
mails both through the stack's SMTP relay (alertSmtpHost) with msmtp. Installed on
every node by cloudinit/steps/alert-mail.sh; cluster-resources.sh registers the agent
with pacemaker. DigitalOcean's own alerts (infra/monitoring.py) need no relay.
"""

from __future__ import annotations

import pulumi

from infra.config import StackConfig, secret_setting
from infra.naming import droplet_name
from infra.nodes import Nodes
from infra.paths import read
from infra.remote import Bundle, Connector, NodeFile, settings_file, step_command
from infra.storage import VOLUME

LIB = "/usr/local/lib/do-ha-stack"
ALERT_AGENT = f"{LIB}/alert-agent"  # the path pacemaker's alert do-ha-mail runs
CONF_FILE = "/etc/do-ha-stack/alerts.conf"
MSMTPRC = "/etc/do-ha-stack/msmtprc"
PASSWORD_FILE = "/etc/do-ha-stack/alert-smtp-password"
SCRIPTS = ("alert-agent", "alert-send", "health-watch")
UNITS = ("do-ha-alert-send.path", "do-ha-alert-send.service", "do-ha-alert-retry.timer",
         "do-ha-alert-retry.service", "do-ha-health-watch.timer", "do-ha-health-watch.service")
IMPLICIT_TLS_PORT = 465


def alerts_conf(cfg: StackConfig) -> str:
    """What the agent, the watch and the sender read: where mail goes, and each
    node's droplet name with the program's name for it (`make replace NODE=`)."""
    return settings_file({
        "STACK": cfg.stack, "ALERT_TO": cfg.alert_email, "ALERT_FROM": cfg.alert_from, "VOLUME": VOLUME,
        "NODES": " ".join(f"{droplet_name(cfg, n)}={n}" for n in cfg.node_names)})


def msmtprc(cfg: StackConfig) -> str:
    """msmtp's settings for the relay: TLS always (the login crosses the internet),
    checked against the system's CAs; the password from its own root-only file."""
    login = (f"auth on\nuser {cfg.alert_smtp_user}\npasswordeval cat {PASSWORD_FILE}\n"
             if cfg.alert_smtp_user else "auth off\n")
    return ("# do-ha-stack's alert relay (infra/alerts.py); alert-send mails with it.\n"
            "defaults\ntls on\n"
            f"tls_starttls {'off' if cfg.alert_smtp_port == IMPLICIT_TLS_PORT else 'on'}\n"
            "tls_trust_file /etc/ssl/certs/ca-certificates.crt\ntimeout 30\nsyslog LOG_MAIL\n\n"
            f"account default\nhost {cfg.alert_smtp_host}\nport {cfg.alert_smtp_port}\n"
            f"from {cfg.alert_from}\n{login}")


def alert_files(cfg: StackConfig) -> list[NodeFile]:
    files = [NodeFile(CONF_FILE, alerts_conf(cfg), "0644"),
             *(NodeFile(f"{LIB}/{s}", read(f"alerts/{s}"), "0755") for s in SCRIPTS),
             *(NodeFile(f"/etc/systemd/system/{u}", read(f"alerts/{u}")) for u in UNITS)]
    if cfg.alert_smtp_host:
        files.append(NodeFile(MSMTPRC, msmtprc(cfg), "0600"))
    if cfg.alert_smtp_user:
        files.append(NodeFile(PASSWORD_FILE, secret_setting("alertSmtpPassword"), "0600", secret=True))
    return files


class AlertMail(pulumi.ComponentResource):
    """`installed[node]`: the node's alert agent, watch and sender are in place (and,
    with a relay, a test mail went through it)."""

    def __init__(self, name: str, cfg: StackConfig, nodes: Nodes, connect: Connector,
                 ready: dict[str, pulumi.Resource], opts: pulumi.ResourceOptions) -> None:
        super().__init__("do-ha-stack:alerts:AlertMail", name, None, opts)
        files = alert_files(cfg)
        self.installed: dict[str, pulumi.Resource] = {
            node.name: step_command(f"{node.name}-alert-mail", "alert-mail", node,
                                    {"MAIL": "yes" if cfg.alert_smtp_host else "no"}, connect,
                                    Bundle(files=files), cfg, self, depends_on=[ready[node.name]])
            for node in nodes.nodes
        }
        self.register_outputs({})
