"""`make restore`: what it checks before anything runs, where db-restore runs, which
steps re-seed the others (fake operations; the lab restores for real,
tests/lab/test_lab_backups.py)."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from infra.backups import RESTORE
from tests.unit.test_state_identity import deployed
from tests.unit.test_replace_node import Recorder, report
from tooling.health import Report
from tooling.node_ops import OperationError, Operations
from tooling.restore import Restore, check_point, plan, restore, source_settings

NOW = datetime(2026, 12, 4, 9, 0, 0, tzinfo=UTC)


def _primary(name: str | None) -> Report:
    r = report()
    r.database = {"primary": name}
    return r


def _restore_argv(call: tuple[str, ...]) -> list[str]:
    """db-restore's arguments, in a unit of its own (a dropped SSH session does not stop it)."""
    systemd_run = call[call.index("systemd-run"):call.index(RESTORE)]
    assert "--wait" in systemd_run and "--pipe" in systemd_run and "--collect" in systemd_run, call
    return list(call[call.index(RESTORE) + 1:])


def _restore(at: str = "latest") -> Restore:
    return Restore("prod", at, {"app1": "urn:app1-db-seed", "app2": "urn:app2-db-seed", "app3": "urn:app3-db-seed"})


@pytest.mark.parametrize("given, kept", [(None, "latest"), ("latest", "latest"), ("0-1-2345", "0-1-2345"),
                                         ("0-1-5,1-2-7", "0-1-5,1-2-7"),
                                         ("2026-12-04 08:59:59", "2026-12-04 08:59:59")])
def test_a_restore_point_is_a_time_a_gtid_or_latest(given: str | None, kept: str) -> None:
    assert check_point(given, NOW) == kept


@pytest.mark.parametrize("given, message", [
    ("yesterday", "AT='yesterday': allowed: a UTC time 'YYYY-MM-DD HH:MM:SS', a GTID"),
    ("2026-12-04T08:00:00", "allowed: a UTC time"),
    ("0-1", "allowed: a UTC time"),
    ("2026-12-04 09:00:01", "is in the future; allowed: a time before now (2026-12-04 09:00:00 UTC)"),
])
def test_a_bad_restore_point_is_refused(given: str, message: str) -> None:
    with pytest.raises(OperationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_point(given, NOW)


def test_plan_finds_every_app_nodes_seed_step_in_the_state() -> None:
    r = plan("prod", "2026-01-01 00:00:00")
    assert set(r.seed_urns) == {"app1", "app2"}
    assert all(urn.endswith(f"$command:remote:Command::{node}-db-seed") for node, urn in r.seed_urns.items())
    assert r.seed_urns["app2"] in deployed("prod")  # the URN a deployed stack has in its state


def test_a_bad_point_is_refused_before_the_program_runs() -> None:
    with pytest.raises(OperationError, match="AT='noon'"):
        plan("prod", "noon")


def test_the_primary_restores_and_every_other_app_node_is_reseeded_in_one_up() -> None:
    rec = Recorder([_primary("app2")])
    after = restore(_restore("0-1-99"), rec.ops(), yes=True)
    ssh = [c for c in rec.calls if c[0] == "ssh"][:1]
    assert ssh[0][:4] == ("ssh", "app2", "sudo", "-n") and _restore_argv(ssh[0]) == ["--into-cluster", "--at",
                                                                                       "0-1-99"]
    ups = [c for c in rec.calls if c[0] == "pulumi"]
    assert ups == [("pulumi", "up", "--replace", "urn:app1-db-seed", "--replace", "urn:app3-db-seed",
                    "--stack", "prod", "--yes")]
    assert rec.calls.index(ssh[0]) < rec.calls.index(ups[0])
    assert after.healthy
    # Then a backup of the restored database, on every app node (the replica's runs).
    assert [c for c in rec.calls if c[0] == "ssh"][1:] == [
        ("ssh", node, "sudo", "-n", "systemctl", "start", "--no-block", "do-ha-backup.service")
        for node in ("app1", "app2", "app3")]


def test_without_a_primary_nothing_runs() -> None:
    rec = Recorder([_primary(None)])
    with pytest.raises(OperationError, match="has no primary"):
        restore(_restore(), rec.ops())
    assert [c for c in rec.calls if c[0] != "health"] == []


def _primary_answers(code: int, stderr: str) -> tuple[Recorder, Operations]:
    """Operations whose restore on the primary (app1) exits `code`, saying `stderr`."""
    rec = Recorder([_primary("app1")])
    ops = rec.ops()

    def answer(node: str, argv: Sequence[str], text: str) -> subprocess.CompletedProcess[str]:
        rec.calls.append(("ssh", node, *argv))
        return subprocess.CompletedProcess(argv, code, "", stderr)

    ops.run_with_input = answer
    return rec, ops


def test_a_failed_restore_reseeds_nothing_and_shows_what_the_node_said() -> None:
    rec, ops = _primary_answers(1, "db-restore: the restore point is before the oldest backup\n")
    said: list[str] = []
    ops.say = said.append
    with pytest.raises(OperationError, match="db-restore on app1 failed.*the database is as it was"):
        restore(_restore(), ops)
    assert not [c for c in rec.calls if c[0] == "pulumi"]
    assert "restore: db-restore: the restore point is before the oldest backup" in said


def test_a_declined_up_says_how_to_finish_the_reseed() -> None:
    rec = Recorder([_primary("app1")], pulumi_rc=1)
    with pytest.raises(OperationError, match="app2, app3 stay off MariaDB.*pulumi up --replace urn:app2-db-seed "
                                             "--replace urn:app3-db-seed --stack prod"):
        restore(_restore(), rec.ops())


OUTPUTS = {"backupRepository": "s3:https://fra1.digitaloceanspaces.com/old-bucket/restic",
           "backupRepositoryPassword": "pa ss'word"}
KEYS = {"SPACES_ACCESS_KEY_ID": "DO00KEY", "SPACES_SECRET_ACCESS_KEY": "s3cr3t"}


def test_another_stacks_backups_reach_the_primary_on_stdin_only() -> None:
    source = source_settings("prod", OUTPUTS, KEYS)
    parsed = dict(line.split("=", 1) for line in source.splitlines())
    assert {k: shlex.split(v)[0] for k, v in parsed.items()} == {
        "RESTIC_REPOSITORY": OUTPUTS["backupRepository"], "RESTIC_PASSWORD": "pa ss'word",
        "AWS_ACCESS_KEY_ID": "DO00KEY", "AWS_SECRET_ACCESS_KEY": "s3cr3t", "HOST": "do-ha-stack-prod"}
    rec = Recorder([_primary("app1")])
    restore(Restore("staging", "latest", {"app1": "urn:a1", "app2": "urn:a2"}, source), rec.ops(), yes=True)
    ssh = [c for c in rec.calls if c[0] == "ssh"][:1]
    assert ssh[0][1] == "app1" and _restore_argv(ssh[0]) == ["--into-cluster", "--at", "latest", "--source", "-"]
    assert rec.inputs == [source]
    assert not any(secret in " ".join(call) for call in rec.calls for secret in ("s3cr3t", "pa ss'word"))


@pytest.mark.parametrize("outputs, env, message", [
    ({}, KEYS, "its outputs have no backupRepository"),
    ({"backupRepository": "s3:x"}, KEYS, "its outputs have no backupRepository"),
    (OUTPUTS, {}, "set SPACES_ACCESS_KEY_ID and SPACES_SECRET_ACCESS_KEY"),
])
def test_another_stacks_backups_need_its_repository_and_a_key(outputs: dict, env: dict, message: str) -> None:
    with pytest.raises(OperationError, match=message):
        source_settings("prod", outputs, env)


def test_a_copy_in_place_but_not_promoted_says_how_to_reseed_once_it_is() -> None:
    rec, ops = _primary_answers(3, "db-restore: the restored copy is in place\n")
    with pytest.raises(OperationError, match="in place on app1.*pulumi up --replace urn:app2-db-seed --replace "
                                             "urn:app3-db-seed --stack prod"):
        restore(_restore(), ops)
    assert not [c for c in rec.calls if c[0] == "pulumi"]


def test_the_sites_files_come_back_only_when_asked_for() -> None:
    rec = Recorder([_primary("app1")])
    restore(Restore("prod", "latest", {"app1": "urn:a1"}, files=True), rec.ops(), yes=True)
    assert _restore_argv([c for c in rec.calls if c[0] == "ssh"][0]) == ["--into-cluster", "--at", "latest",
                                                                         "--files"]
    assert plan("prod", None).files is False and plan("prod", None, files=True).files is True


def test_a_lost_connection_is_not_taken_for_a_failed_restore() -> None:
    rec, ops = _primary_answers(255, "Connection to app1 closed by remote host.\n")
    with pytest.raises(OperationError, match="connection to app1 was lost; the restore goes on there by itself "
                                             r"\(unit do-ha-restore-\d+.*pulumi up --replace urn:app2-db-seed"):
        restore(_restore(), ops)
    assert not [c for c in rec.calls if c[0] == "pulumi"]
