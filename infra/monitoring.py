"""DigitalOcean monitoring alerts, uptime checks of an HTTPS site, and the project
that groups the stack."""

from __future__ import annotations

import pulumi
import pulumi_digitalocean as do

from infra import tuning
from infra.config import StackConfig
from infra.naming import child_opts, stack_tag

# metric name -> (DigitalOcean alert type, threshold percent)
ALERTS = {
    "cpu": ("v1/insights/droplet/cpu", 85),
    "memory": ("v1/insights/droplet/memory_utilization_percent", 90),
    "disk": ("v1/insights/droplet/disk_utilization_percent", 85),
}
# Where DigitalOcean's uptime checks probe from: all of its probe regions.
UPTIME_REGIONS = ["us_east", "us_west", "eu_west", "se_asia"]


class Monitoring(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, tag: do.Tag, resource_urns: list[pulumi.Output[str]],
                 reserved_ip: pulumi.Output[str], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("do-ha-stack:monitoring:Monitoring", name, None, opts)
        self.alerts = [
            do.MonitorAlert(
                f"{metric}-alert",
                type=kind,
                compare="GreaterThan",
                value=threshold,
                window="10m",
                enabled=True,
                tags=[tag.name],
                description=f"{stack_tag(cfg)}: {metric} above {threshold}% for 10 minutes",
                alerts=do.MonitorAlertAlertsArgs(emails=[cfg.alert_email]),
                opts=child_opts(cfg, self),
            )
            for metric, (kind, threshold) in ALERTS.items()
        ]
        if cfg.https:
            self._uptime(cfg)
        if cfg.backups:
            self._backup_freshness(cfg, reserved_ip)
        self.project = do.Project(
            "project",
            name=stack_tag(cfg),
            description=f"do-ha-stack, stack {cfg.stack}",
            purpose="Web Application",
            environment=cfg.environment,
            resources=resource_urns,
            opts=child_opts(cfg, self),
        )
        self.register_outputs({"projectId": self.project.id})

    def _uptime(self, cfg: StackConfig) -> None:
        """From outside: the site's HTTPS through the reserved IP, deep enough to see a
        read-only database (the canary's health is 200 only from a writable primary),
        with alerts when it is down, slow, or its certificate is about to expire."""
        check = do.UptimeCheck(
            "site-uptime", name=f"{stack_tag(cfg)}-https", type="https",
            target=f"https://{cfg.domain}/canary/health", regions=UPTIME_REGIONS, enabled=True,
            opts=child_opts(cfg, self))
        notify = [do.UptimeAlertNotificationArgs(emails=[cfg.alert_email])]
        alerts = {
            "down": {"period": "2m"},
            "latency": {"comparison": "greater_than", "threshold": tuning.UPTIME_LATENCY_ALERT_MS, "period": "5m"},
            "ssl_expiry": {"comparison": "less_than", "threshold": tuning.CERT_EXPIRY_ALERT_DAYS},
        }
        for kind, args in alerts.items():
            do.UptimeAlert(f"site-{kind.replace('_', '-')}-alert", name=f"{stack_tag(cfg)}: site {kind}",
                           check_id=check.id, type=kind, notifications=notify, opts=child_opts(cfg, self),
                           **args)

    def _backup_freshness(self, cfg: StackConfig, reserved_ip: pulumi.Output[str]) -> None:
        """The nodes have no mail: a failed or stale backup reaches the alert address
        as this check going down (the canary's /canary/backup answers 503, see
        cloudinit/app/db-backup check)."""
        scheme = "https" if cfg.https else "http"
        target = (f"https://{cfg.domain}/canary/backup" if cfg.https
                  else reserved_ip.apply(lambda ip: f"http://{ip}/canary/backup"))
        check = do.UptimeCheck(
            "backup-freshness", name=f"{stack_tag(cfg)}-backups", type=scheme, target=target,
            regions=UPTIME_REGIONS[:1], enabled=True, opts=child_opts(cfg, self))
        do.UptimeAlert("backup-failed-alert", name=f"{stack_tag(cfg)}: backup failed or stale",
                       check_id=check.id, type="down", period=tuning.BACKUP_ALERT_PERIOD,
                       notifications=[do.UptimeAlertNotificationArgs(emails=[cfg.alert_email])],
                       opts=child_opts(cfg, self))
