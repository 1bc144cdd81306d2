"""Backups: a private Spaces bucket of the stack's own, a key limited to it, and
restic on every app node, which takes the nightly backup of MariaDB from a
replica (never the primary) and of the shared volume (cloudinit/app/db-backup).

restic encrypts and compresses on the node, deduplicates, and writes a
snapshot only once everything it refers to is uploaded, so an interrupted run
never looks like the latest backup. It keeps the backups for
backupRetentionDays (its `forget --prune`); the bucket's lifecycle rule only
expires what restic replaced or deleted, after as long again, and aborts
abandoned uploads. An expiry rule on current objects would delete packs that
newer snapshots still share.

The repository's password is a Pulumi secret of the stack (output
`backupRepositoryPassword`): without it the backups cannot be read. Staging's
bucket goes with `pulumi destroy`, its backups with it (force_destroy); prod's
is protected and never emptied by the program.
"""

from __future__ import annotations

from string import Template

import pulumi
import pulumi_digitalocean as do
import pulumi_random as random

from infra import tuning
from infra.config import StackConfig
from infra.naming import child_opts, stack_tag
from infra.nodes import Nodes
from infra.paths import read
from infra.remote import Bundle, Connector, NodeFile, settings_file, step_command
from infra.storage import MOUNTPOINT

BACKUP = "/usr/local/lib/do-ha-stack/db-backup"
ENV_FILE = "/etc/do-ha-stack/backup.env"  # the bucket's key and the repository (root only)
PASSWORD_FILE = "/etc/do-ha-stack/backup-repository.key"
SETTINGS_FILE = "/etc/do-ha-stack/backup.conf"
REPOSITORY_PATH = "restic"  # the repository's prefix in the bucket
RESTORE = "/usr/local/lib/do-ha-stack/db-restore"
UNITS = ("do-ha-backup.service", "do-ha-backup-check.service", "do-ha-backup-check.timer", "do-ha-binlog.service")


def repository_url(endpoint: str, bucket: str) -> str:
    """restic's name for the repository: its S3 backend at the endpoint."""
    return f"s3:{endpoint}/{bucket}/{REPOSITORY_PATH}"


def backup_env(repository: str, access_key: str, secret_key: str) -> str:
    """The environment restic runs with (systemd's EnvironmentFile syntax, and sourced
    by the script: quoted)."""
    values = {"RESTIC_REPOSITORY": repository, "RESTIC_PASSWORD_FILE": PASSWORD_FILE,
              "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}
    return settings_file(values)


def backup_settings(cfg: StackConfig) -> str:
    values = {"HOST": stack_tag(cfg), "RETENTION_DAYS": str(cfg.backup_retention_days),
              "STALE_AFTER_H": str(tuning.BACKUP_STALE_AFTER_H),
              "REACH_TIMEOUT_S": str(tuning.BACKUP_REACH_TIMEOUT_S), "SHARED": MOUNTPOINT,
              "BINLOG_ROTATE_MB": str(tuning.BINLOG_ROTATE_MB), "BINLOG_STALE_S": str(tuning.BINLOG_STALE_S)}
    return settings_file(values)


def backup_timer() -> str:
    return Template(read("app/templates/do-ha-backup.timer")).substitute(
        on_calendar=tuning.BACKUP_ON_CALENDAR, spread_s=tuning.BACKUP_SPREAD_S)


def binlog_timer() -> str:
    return Template(read("app/templates/do-ha-binlog.timer")).substitute(interval=tuning.BINLOG_SHIP_S)


class Backups(pulumi.ComponentResource):
    """`repository` (restic's URL) and `password` (a secret), with backups on;
    `installed[node]`: the node takes part in the stack's backups (or has none)."""

    def __init__(self, name: str, cfg: StackConfig, nodes: Nodes, connect: Connector,
                 after: dict[str, list[pulumi.Resource]], opts: pulumi.ResourceOptions) -> None:
        super().__init__("do-ha-stack:backups:Backups", name, None, opts)
        self.repository: pulumi.Output[str] | None = None
        self.password: pulumi.Output[str] | None = None
        files = self._storage(cfg) if cfg.backups else []
        # The control node makes the repository (once), then the others join it.
        control = nodes.control
        self.installed: dict[str, pulumi.Resource] = {}
        for node in sorted(nodes.app_nodes, key=lambda n: n is not control):
            first = [self.installed[control.name]] if node is not control else []
            self.installed[node.name] = step_command(
                f"{node.name}-backup-node", "backup-node", node,
                {"ENABLED": "yes" if cfg.backups else "no"},
                connect, Bundle(files=files), cfg, self, depends_on=[*after[node.name], *first])
        self.register_outputs({})

    def _storage(self, cfg: StackConfig) -> list[NodeFile]:
        """The bucket, its key and the repository's password; the files that bring
        them to the nodes."""
        if cfg.backup_bucket:
            bucket_name: pulumi.Input[str] = cfg.backup_bucket
        else:
            # Bucket names are unique across a region: the stack's name alone would
            # collide with another account's stack of the same name.
            suffix = random.RandomId("backup-bucket-suffix", byte_length=4, opts=child_opts(cfg, self))
            bucket_name = suffix.hex.apply(lambda h: f"{stack_tag(cfg)}-backups-{h}")
        bucket = do.SpacesBucket(
            "backup-bucket", name=bucket_name, region=cfg.backup_region, acl="private",
            versioning=do.SpacesBucketVersioningArgs(enabled=True),
            lifecycle_rules=[do.SpacesBucketLifecycleRuleArgs(
                id="expire-replaced", enabled=True,
                abort_incomplete_multipart_upload_days=tuning.BACKUP_ABORT_UPLOAD_DAYS,
                noncurrent_version_expiration=do.SpacesBucketLifecycleRuleNoncurrentVersionExpirationArgs(
                    days=cfg.backup_retention_days))],
            # Staging tears down with its backups; prod's bucket is protected and kept.
            force_destroy=not cfg.protect,
            # The provider cannot rename a bucket, yet does not mark the name ForceNew:
            # a new name would change nothing but the state. A new bucket it is (on
            # prod the engine refuses: the old one is protected).
            opts=child_opts(cfg, self, replace_on_changes=["name"]))
        key = do.SpacesKey(
            "backup-key", name=f"{stack_tag(cfg)}-backups",
            grants=[do.SpacesKeyGrantArgs(bucket=bucket.name, permission="readwrite")],
            opts=child_opts(cfg, self))
        self.password = random.RandomPassword("backup-repository-password", length=48, special=False,
                                              opts=child_opts(cfg, self)).result
        self.repository = bucket.name.apply(lambda b: repository_url(cfg.spaces_endpoint, b))
        env = pulumi.Output.all(self.repository, key.access_key, key.secret_key).apply(lambda v: backup_env(*v))
        units = "/etc/systemd/system"
        return [
            NodeFile(ENV_FILE, env, "0600", secret=True),
            NodeFile(PASSWORD_FILE, self.password, "0600", secret=True),
            NodeFile(SETTINGS_FILE, backup_settings(cfg)),
            NodeFile(BACKUP, read("app/db-backup"), "0755"),
            NodeFile(RESTORE, read("app/db-restore"), "0755"),
            NodeFile(f"{units}/do-ha-backup.timer", backup_timer()),
            NodeFile(f"{units}/do-ha-binlog.timer", binlog_timer()),
            *(NodeFile(f"{units}/{unit}", read(f"app/{unit}")) for unit in UNITS),
        ]
