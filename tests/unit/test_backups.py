"""Backups (issue 14): settings checked before any resource, the bucket and its key,
the repository's secrets reaching the nodes on stdin only, the freshness check and
db-backup's own verdict on a status file."""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from infra.backups import ENV_FILE, PASSWORD_FILE
from infra.config import ConfigError, check_spaces_credentials, parse
from infra.paths import CLOUDINIT_DIR
from tests.helpers.stacks import bundle_files, plain_config
from tests.helpers.node_scripts import load_node_script
from tooling import resource_types as types
from tooling.mocks import SECRET_MARKER, Run, run_program
from tooling.render import commands, stack_config

DB_BACKUP = CLOUDINIT_DIR / "app/db-backup"


def _parse(**settings: Any) -> Any:
    return parse("staging", plain_config("staging") | settings)


@pytest.mark.parametrize(("settings", "key", "says"), [
    ({"backupRetentionDays": 1}, "backupRetentionDays", "from 2 to 3650"),
    ({"backupRetentionDays": "two"}, "backupRetentionDays", "not an integer"),
    ({"region": "nyc1"}, "backupRegion", "nyc1 has no Spaces"),
    ({"backupRegion": "nyc2"}, "backupRegion", "has no DigitalOcean Spaces"),
    ({"backupBucket": "Backups"}, "backupBucket", "not a Spaces bucket name"),
    ({"backupBucket": "ab"}, "backupBucket", "3 to 63"),
    ({"backupBucket": "a" * 64}, "backupBucket", "3 to 63"),
    ({"backupBucket": "-backups"}, "backupBucket", "starting and ending"),
    ({"backupBucket": "my_backups"}, "backupBucket", "hyphens"),
    ({"spacesEndpoint": "fra1.digitaloceanspaces.com"}, "spacesEndpoint", "not an S3 endpoint URL"),
    ({"spacesEndpoint": "https://fra1.digitaloceanspaces.com/path"}, "spacesEndpoint", "without a path"),
])
def test_bad_backup_settings_are_named_before_any_resource(settings: dict[str, Any], key: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        _parse(**settings)
    assert err.value.key == key and says in str(err.value), str(err.value)


def test_backup_defaults_follow_the_stack() -> None:
    cfg = _parse()
    assert (cfg.backups, cfg.backup_retention_days, cfg.backup_region) == (True, 14, "fra1")
    assert cfg.spaces_endpoint == "https://fra1.digitaloceanspaces.com"
    assert _parse(region="nyc1", backupRegion="nyc3").spaces_endpoint == "https://nyc3.digitaloceanspaces.com"
    assert not _parse(region="nyc1", backups=False).backups  # no Spaces needed without backups


def test_without_spaces_credentials_the_provider_cannot_make_the_bucket() -> None:
    cfg = _parse()
    with pytest.raises(ConfigError) as err:
        check_spaces_credentials(cfg, lambda key: None, {})
    assert err.value.key == "backups" and "digitalocean:spacesAccessId" in str(err.value)
    with pytest.raises(ConfigError, match="digitalocean:spacesSecretKey"):
        check_spaces_credentials(cfg, {"digitalocean:spacesAccessId": "DO00X"}.get, {})
    check_spaces_credentials(cfg, lambda key: None,
                             {"SPACES_ACCESS_KEY_ID": "DO00X", "SPACES_SECRET_ACCESS_KEY": "s"})
    check_spaces_credentials(_parse(backups=False), lambda key: None, {})


def test_the_bucket_is_private_versioned_and_kept_on_prod_only(prod: Run, staging: Run) -> None:
    for run, protected in ((prod, True), (staging, False)):
        bucket = run.by_name("backup-bucket")
        assert bucket.protect is protected
        assert bucket.inputs["acl"] == "private" and bucket.inputs["region"] == "fra1"
        assert bucket.inputs["versioning"] == {"enabled": True}
        # Staging's destroy takes the backups with it; prod's bucket is never emptied.
        assert bucket.inputs["forceDestroy"] is (not protected)
        assert bucket.inputs["name"].startswith(f"do-ha-stack-{run.stack}-backups-")
        [rule] = bucket.inputs["lifecycleRules"]
        # Only what restic replaced expires: an expiry of current objects would delete
        # packs that newer snapshots share.
        assert "expiration" not in rule
        assert rule["noncurrentVersionExpiration"] == {"days": 14}
        assert rule["abortIncompleteMultipartUploadDays"] == 1 and rule["enabled"] is True


def test_a_named_bucket_and_its_retention_reach_the_bucket() -> None:
    run = run_program("staging", stack_config("staging") | {
        "do-ha-stack:backupBucket": "acme-site-backups", "do-ha-stack:backupRetentionDays": 30})
    bucket = run.by_name("backup-bucket")
    assert bucket.inputs["name"] == "acme-site-backups"
    assert bucket.inputs["lifecycleRules"][0]["noncurrentVersionExpiration"] == {"days": 30}
    assert not run.of_type(types.RANDOM_ID)
    settings = bundle_files(_stdin(run, "app1-backup-node"))["/etc/do-ha-stack/backup.conf"][2]
    assert "RETENTION_DAYS=30\n" in settings and "HOST=do-ha-stack-staging\n" in settings


def test_the_nodes_key_reaches_only_the_stacks_bucket(staging: Run) -> None:
    key = staging.by_name("backup-key")
    bucket = staging.by_name("backup-bucket")
    assert key.raw_inputs["grants"] == [{"bucket": bucket.raw_inputs["name"], "permission": "readwrite"}]
    assert bucket.urn in key.dependencies


def _stdin(run: Run, name: str) -> str:
    [command] = [c for c in commands(run, reveal=True) if c["name"] == name]
    return command["stdin"]


def test_the_key_and_the_repository_password_travel_as_secrets_on_stdin(staging: Run) -> None:
    secret = staging.generated_secrets["backup-key"]["secretKey"]
    password = staging.generated_secrets["backup-repository-password"]["result"]
    for node in ("app1", "app2"):
        step = staging.by_name(f"{node}-backup-node")
        assert "stdin" in step.secret_inputs and step.inputs["stdin"] == SECRET_MARKER
        assert step.raw_inputs["logging"] == "none"
        assert secret not in step.raw_inputs["create"] and password not in step.raw_inputs["create"]
        files = bundle_files(_stdin(staging, f"{node}-backup-node"))
        mode, owner, env = files[ENV_FILE]
        assert (mode, owner) == ("0600", "root:root")
        bucket = staging.by_name("backup-bucket").raw_inputs["name"]
        assert f"RESTIC_REPOSITORY=s3:https://fra1.digitaloceanspaces.com/{bucket}/restic\n" in env
        assert f"AWS_SECRET_ACCESS_KEY={secret}\n" in env
        assert files[PASSWORD_FILE] == ("0600", "root:root", password)
    # Nowhere else: not in user-data, not in any other command.
    for r in staging.registrations:
        if r.name.endswith("-backup-node"):
            continue
        text = repr(r.raw_inputs)
        assert secret not in text and password not in text, r.name
    assert staging.outputs["backupRepositoryPassword"] == SECRET_MARKER


def test_the_control_node_makes_the_repository_before_the_others_join(staging: Run) -> None:
    plan = {c["name"]: c for c in commands(staging)}
    assert "app1-backup-node" in plan["app2-backup-node"]["dependsOn"]
    assert "app2-backup-node" not in plan["app1-backup-node"]["dependsOn"]
    # After pacemaker runs the database (which node is a replica) and the shared mount.
    for node in ("app1", "app2"):
        deps = plan[f"{node}-backup-node"]["dependsOn"]
        assert {f"{node}-db-handover", f"{node}-shared-mount", "cluster-resources"} <= set(deps), deps


def test_backups_off_makes_no_bucket_and_stops_the_nodes_timers() -> None:
    run = run_program("staging", stack_config("staging") | {"do-ha-stack:backups": False})
    assert not run.of_type(types.SPACES_BUCKET) and not run.of_type(types.SPACES_KEY)
    assert "backupRepository" not in run.outputs
    step = run.by_name("app1-backup-node")
    assert "ENABLED=no" in step.raw_inputs["create"] and "stdin" not in step.secret_inputs
    assert not [r for r in run.of_type(types.UPTIME_CHECK) if r.name == "backup-freshness"]


def test_a_failed_or_stale_backup_reaches_the_alert_address(staging: Run) -> None:
    check = staging.by_name("backup-freshness")
    assert check.inputs["type"] == "http"
    assert check.raw_inputs["target"] == f"http://{staging.outputs['reservedIp']}/canary/backup"
    [alert] = [r for r in staging.of_type(types.UPTIME_ALERT) if r.raw_inputs["checkId"] == check.id]
    assert alert.inputs["type"] == "down"
    assert alert.inputs["notifications"][0]["emails"] == [plain_config("staging")["alertEmail"]]


# --- db-backup check: the verdict every node's timer and the canary give -----------

def _check(tmp_path: Path, status: str | None) -> subprocess.CompletedProcess[str]:
    if status is not None:
        (tmp_path / "status").write_text(status)
    return subprocess.run(["bash", str(DB_BACKUP), "check"], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "DO_HA_BACKUP_STATUS_DIR": str(tmp_path)})


def test_the_check_fails_without_a_status(tmp_path: Path) -> None:
    result = _check(tmp_path, None)
    assert result.returncode == 1 and "no backup status" in result.stdout


def test_a_new_repository_is_fresh_until_a_night_is_missed(tmp_path: Path) -> None:
    now = int(time.time())
    assert _check(tmp_path, f"initialized={now - 3600}\nstale_after_h=26\n").returncode == 0
    late = _check(tmp_path, f"initialized={now - 27 * 3600}\nstale_after_h=26\n")
    assert late.returncode == 1 and "stale" in late.stdout


def test_a_good_backup_is_fresh_for_26_hours(tmp_path: Path) -> None:
    now = int(time.time())
    base = f"initialized={now - 90 * 86400}\nstale_after_h=26\nlast_result=ok\n"
    fresh = _check(tmp_path, base + f"last_success={now - 25 * 3600}\n")
    assert fresh.returncode == 0 and fresh.stdout == "ok: the newest good backup is 25 h old\n"
    stale = _check(tmp_path, base + f"last_success={now - 26 * 3600 - 60}\n")
    assert stale.returncode == 1 and "no good backup in the last 26 h" in stale.stdout


def test_a_failed_run_fails_the_check_at_once(tmp_path: Path) -> None:
    now = int(time.time())
    result = _check(tmp_path, f"stale_after_h=26\nlast_success={now - 3600}\nlast_result=failed\n"
                              f"last_attempt={now - 120}\nlast_attempt_node=app2\n"
                              "last_error=MariaDB: Fatal: wrong password or no key found\n")
    assert result.returncode == 1
    assert result.stdout.startswith("the last backup failed on app2 2 min ago: MariaDB: Fatal: wrong password")


def test_an_unreadable_status_is_not_taken_for_a_good_one(tmp_path: Path) -> None:
    result = _check(tmp_path, "last_success=yesterday\nstale_after_h=26\n")
    assert result.returncode == 1 and "unreadable" in result.stdout


# --- db-restore's choice of binlogs ------------------------------------------------

def _restore_module() -> Any:
    return load_node_script("app/db-restore", "db_restore")


def _source(restore: Any, node: str, starts_after: str, shipped: str) -> Any:
    return restore.Source(node, [Path(f"/x/{node}/mariadb-bin.000001")], starts_after, shipped)


def test_one_primary_all_along_applies_its_own_binlogs() -> None:
    restore = _restore_module()
    app1 = _source(restore, "app1", "", "2026-12-04T01:00:00Z")
    assert [(s.node, stop) for s, stop in restore.plan([app1], "0-1-120")] == [("app1", "")]
    assert restore.plan([], "0-1-120") == []


def test_after_a_failover_the_new_primary_decides() -> None:
    """app2 was seeded at 100 and became primary; app1's last shipment may hold a
    transaction no replica acknowledged (gone when it rejoined): never applied."""
    restore = _restore_module()
    app1 = _source(restore, "app1", "", "2026-12-04T01:00:00Z")
    app2 = _source(restore, "app2", "0-1-100", "2026-12-04T02:00:00Z")
    assert [(s.node, stop) for s, stop in restore.plan([app1, app2], "0-1-120")] == [("app2", "")]
    # A backup older than app2's binlogs: app1's bridge up to where app2's begin.
    assert [(s.node, stop) for s, stop in restore.plan([app1, app2], "0-1-50")] == [("app1", "0-1-100"),
                                                                                     ("app2", "")]


def test_a_gap_in_the_binlogs_is_an_error_not_a_silent_skip() -> None:
    restore = _restore_module()
    app2 = _source(restore, "app2", "0-1-100", "2026-12-04T02:00:00Z")
    with pytest.raises(restore.RestoreError, match="binlogs are missing: the backup reaches GTID 0-1-50"):
        restore.plan([app2], "0-1-50")


def test_a_restore_point_is_a_utc_time() -> None:
    restore = _restore_module()
    assert restore.parse_time("2026-12-04 03:04:05").isoformat() == "2026-12-04T03:04:05+00:00"
    with pytest.raises(restore.RestoreError, match="'YYYY-MM-DD HH:MM:SS'"):
        restore.parse_time("yesterday")


def test_a_run_killed_outright_fails_the_check_once_it_could_not_still_be_running(tmp_path: Path) -> None:
    now = int(time.time())
    base = f"stale_after_h=26\nlast_success={now - 20 * 3600}\nlast_attempt_node=app2\nlast_result=running\n"
    assert _check(tmp_path, base + f"last_attempt={now - 3600}\n").returncode == 0
    killed = _check(tmp_path, base + f"last_attempt={now - 7 * 3600}\n")
    assert killed.returncode == 1 and "never finished" in killed.stdout


def test_binlog_shipping_ten_minutes_behind_fails_the_check(tmp_path: Path) -> None:
    now = int(time.time())
    status = f"initialized={now - 86400}\nstale_after_h=26\nbinlog_stale_after_s=600\nlast_success={now - 3600}\n"
    (tmp_path / "binlog").write_text(f"binlog_last_success={now - 60}\nbinlog_result=ok\n")
    assert _check(tmp_path, status).returncode == 0
    (tmp_path / "binlog").write_text(f"binlog_last_success={now - 900}\nbinlog_result=failed\n"
                                     "binlog_error=Access Denied\n")
    late = _check(tmp_path, status)
    assert late.returncode == 1 and late.stdout.startswith("binlog shipping is stale: nothing shipped for 15 min")
    assert "Access Denied" in late.stdout


# --- db-restore's restore point, base and rollbacks --------------------------------

def _snap(end: str, short: str) -> dict:
    return {"id": short * 8, "short_id": short, "time": end, "summary": {"backup_end": end}}


def _restic_answers(restore: Any, monkeypatch: pytest.MonkeyPatch, bases: list[dict],
                    rollback_tags: list[tuple[str, list[str]]] = ()) -> None:
    rollbacks = [{"time": at, "tags": ["rollback", *tags]} for at, tags in rollback_tags]

    def restic(env: dict, *args: str) -> str:
        return json.dumps(rollbacks if "rollback" in args else bases)

    monkeypatch.setattr(restore, "restic", restic)


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_a_restore_point_is_a_time_a_gtid_or_the_latest() -> None:
    restore = _restore_module()
    now = _utc("2026-12-04 09:00:00")
    assert restore.parse_point(None, now) == restore.Point() == restore.parse_point("latest", now)
    assert restore.parse_point("0-1-2345", now) == restore.Point(gtid="0-1-2345")
    assert restore.parse_point("2026-12-04 08:00:00", now) == restore.Point(time=_utc("2026-12-04 08:00:00"))
    with pytest.raises(restore.RestoreError, match="in the future; allowed: a time before now"):
        restore.parse_point("2026-12-04 09:00:01", now)
    with pytest.raises(restore.RestoreError, match="one GTID per replication domain"):
        restore.parse_point("0-1-5,0-2-9", now)
    with pytest.raises(restore.RestoreError, match="neither a time nor a GTID"):
        restore.parse_point("0-1-x", now)


def test_two_stops_make_the_earlier_per_domain() -> None:
    restore = _restore_module()
    assert restore.lower_stop("", "0-1-9") == "0-1-9" and restore.lower_stop("0-2-4", "") == "0-2-4"
    assert restore.lower_stop("0-1-100", "0-2-60") == "0-2-60"
    assert restore.lower_stop("0-1-100,1-1-5", "0-2-160") == "0-1-100,1-1-5"


def test_the_base_is_the_newest_backup_that_ended_before_the_point(monkeypatch: pytest.MonkeyPatch) -> None:
    restore = _restore_module()
    _restic_answers(restore, monkeypatch, [_snap("2026-12-02T02:40:00Z", "a"), _snap("2026-12-03T02:40:00Z", "b")])
    assert restore.choose_base({}, "h", None, [])["short_id"] == "b"
    assert restore.choose_base({}, "h", _utc("2026-12-03 02:40:00"), [])["short_id"] == "b"
    # A GTID's second: the backup must have ended before it began.
    assert restore.choose_base({}, "h", _utc("2026-12-03 02:40:00"), [], strictly=True)["short_id"] == "a"
    with pytest.raises(restore.RestoreError, match=r"before the oldest backup's end \(2026-12-02 02:40:00 UTC\)"):
        restore.choose_base({}, "h", _utc("2026-12-01 00:00:00"), [])


def test_a_backup_of_history_a_restore_rolled_back_is_never_the_base(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rolled back at 12:00 to 09:00: backup b (10:00) holds transactions whose GTIDs the
    new history used again; only a and, once taken, c may be the base after that."""
    restore = _restore_module()
    discarded_after = int(_utc("2026-12-03 09:00:00").timestamp())
    at = int(_utc("2026-12-03 12:00:00").timestamp())  # when the restored copy went in
    _restic_answers(restore, monkeypatch,
                    [_snap("2026-12-03T08:00:00Z", "a"), _snap("2026-12-03T10:00:00Z", "b")],
                    [("2026-12-03T12:05:00Z",
                      [f"discarded-after:{discarded_after}", f"at:{at}", "reached:0-1-70+1-1-5"])])
    history = restore.rollbacks({}, "h")
    assert history == [restore.Rollback(_utc("2026-12-03 09:00:00"), _utc("2026-12-03 12:00:00"), "0-1-70,1-1-5")]
    assert restore.choose_base({}, "h", None, history)["short_id"] == "a"
    assert restore.choose_base({}, "h", _utc("2026-12-03 13:00:00"), history)["short_id"] == "a"
    # Before the rollback's point, the old history is the right one.
    assert restore.choose_base({}, "h", _utc("2026-12-03 08:30:00"), history)["short_id"] == "a"
    with pytest.raises(restore.RestoreError, match="was rolled back by the restore of 2026-12-03 12:00:00 UTC; "
                                                   "allowed: before 2026-12-03 09:00:00 or after"):
        restore.check_not_rolled_back(_utc("2026-12-03 10:30:00"), history, "the restore point")
    _restic_answers(restore, monkeypatch, [_snap("2026-12-03T10:00:00Z", "b")],
                    [("2026-12-03T12:00:00Z", [f"discarded-after:{discarded_after}", f"at:{at}", "reached:0-1-70"])])
    with pytest.raises(restore.RestoreError, match="every backup in the repository holds history a restore"):
        restore.choose_base({}, "h", None, history)


def test_a_gtid_point_is_found_in_the_newest_shipment_that_holds_it(monkeypatch: pytest.MonkeyPatch) -> None:
    restore = _restore_module()
    old = _source(restore, "app1", "", "2026-12-04T01:00:00Z")
    new = _source(restore, "app2", "0-1-100", "2026-12-04T02:00:00Z")
    events = {"app1": [(_utc("2026-12-04 00:10:00"), "0", "1", 101)],  # a rolled-back 0-1-101
              "app2": [(_utc("2026-12-04 01:30:00"), "0", "1", 101), (_utc("2026-12-04 01:31:00"), "0", "2", 102)]}
    monkeypatch.setattr(restore, "transactions", lambda files: iter(events[files[0].parent.name]))
    assert restore.gtid_time([old, new], "0-1-101") == _utc("2026-12-04 01:30:00")
    assert restore.gtid_time([old, new], "0-2-102") == _utc("2026-12-04 01:31:00")
    with pytest.raises(restore.RestoreError, match="no shipped binlog holds 0-2-103"):
        restore.gtid_time([old, new], "0-2-103")


def test_after_a_rollback_the_old_shipments_bridge_only_up_to_its_point(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    """app2 was primary, shipped rows up to 0-2-80, the cluster was rolled back to 0-2-70
    at 12:00 and app2 (primary again) wrote 0-2-71 anew. A restore to the latest takes
    the old shipment up to 0-2-70 only, then the new one: never the discarded 71-80."""
    restore = _restore_module()
    snaps = [
        {"id": "1" * 64, "short_id": "s1", "hostname": "h@app1", "time": "2026-12-03T08:00:00Z"},
        {"id": "2" * 64, "short_id": "s2", "hostname": "h@app2", "time": "2026-12-03T11:00:00Z"},
        {"id": "3" * 64, "short_id": "s3", "hostname": "h@app2", "time": "2026-12-03T12:10:00Z"},
        {"id": "4" * 64, "short_id": "s4", "hostname": "other@app1", "time": "2026-12-03T12:20:00Z"},
    ]
    firsts = {"s1": ("0", "1", 1), "s2": ("0", "2", 41), "s3": ("0", "2", 71)}

    def restic(env: dict, *args: str) -> str:
        if args[0] == "restore":
            target = Path(args[args.index("--target") + 1])
            (target / "var/lib/mysql").mkdir(parents=True)
            (target / "var/lib/mysql/mariadb-bin.000001").write_text("")
            (target / "var/lib/mysql/mariadb-bin.000001.idx").write_text("")
            return ""
        return json.dumps(snaps)

    monkeypatch.setattr(restore, "restic", restic)
    monkeypatch.setattr(restore, "first_gtid", lambda files: firsts[files[0].parents[3].name])
    history = [restore.Rollback(_utc("2026-12-03 10:00:00"), _utc("2026-12-03 12:00:00"), "0-2-70")]
    sources = restore.binlog_sources({}, "h", tmp_path, history)
    assert [(s.node, s.starts_after, s.limit) for s in sources] == [
        ("app1", "0-1-0", "0-2-70"), ("app2", "0-2-40", "0-2-70"), ("app2", "0-2-70", "")]
    assert all(len(s.files) == 1 for s in sources)  # the binlog, not its GTID index
    chain = restore.plan(sources, "0-2-50")
    assert [(s.shipped.hour, stop) for s, stop in chain] == [(11, "0-2-70"), (12, "")]
    # Without a rollback, only each node's newest shipment counts.
    assert [s.shipped.hour for s in restore.binlog_sources({}, "h", tmp_path / "again", [])] == [8, 12]


def test_a_restore_without_room_for_the_copy_is_refused_before_it_writes(monkeypatch: pytest.MonkeyPatch,
                                                                          tmp_path: Path) -> None:
    restore = _restore_module()
    snap = _snap("2026-12-04T02:31:00Z", "base") | {"summary": {"total_bytes_processed": 8 * 2**30}}
    free = {"bytes": 9 * 2**30}
    monkeypatch.setattr(restore.shutil, "disk_usage", lambda where: type("Usage", (), {"free": free["bytes"]}))
    with pytest.raises(restore.RestoreError, match=r"needs about 10\.0 GiB free .* 9\.0 GiB are"):
        restore.check_room(tmp_path / "work", snap)
    free["bytes"] = 11 * 2**30
    restore.check_room(tmp_path / "work", snap)  # room enough
    restore.check_room(tmp_path / "work", _snap("2026-12-04T02:31:00Z", "old"))  # size unknown: not refused
