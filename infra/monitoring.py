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
                 opts: pulumi.ResourceOptions | None = None) -> None:
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
