"""DigitalOcean monitoring alerts and the project that groups the stack."""

from __future__ import annotations

import pulumi
import pulumi_digitalocean as do

from infra.config import StackConfig
from infra.naming import child_opts, stack_tag

# metric name -> (DigitalOcean alert type, threshold percent)
ALERTS = {
    "cpu": ("v1/insights/droplet/cpu", 85),
    "memory": ("v1/insights/droplet/memory_utilization_percent", 90),
    "disk": ("v1/insights/droplet/disk_utilization_percent", 85),
}


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
