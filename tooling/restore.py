"""`make restore STACK=… [AT=…]`: roll the stack's database back to a point in its
backups, in the running cluster: the primary takes the restored copy, the other app
nodes are re-seeded from it.

    python -m tooling.restore --stack prod [--at '2026-12-04 09:14:00' | --at 0-1-2345 | --at latest]
                              [--from OLD_STACK] [--files] [--yes] [status options]

1. the stack must keep backups, and have a primary (`make status`); a degraded
   replica is no reason to refuse, it is re-seeded anyway;
2. on the primary, `db-restore --into-cluster [--at AT]`: the restore is made and
   checked in a scratch server while the stack still serves; then the other app
   nodes are held off MariaDB, the database stops (writes and reads fail from here),
   the restored copy replaces the primary's data directory (the old one is kept
   beside it), and pacemaker starts and promotes it again. AT is a UTC time (the
   state just before that second), a GTID (up to and including it) or latest;
3. one `pulumi up --replace` of the `db-seed` step of every other app node: each
   is re-seeded from the primary (a streamed physical copy, as a new node is);
4. it waits until the stack is healthy, then starts a backup of the restored
   database (the nightly unit, now: the replica's run), so that later restores
   need not start from a backup older than the rollback.

With FROM, another stack's backups are restored (a fresh stack taking over from a
lost one): its repository and password come from its stack outputs, read access to
its bucket from SPACES_ACCESS_KEY_ID/SPACES_SECRET_ACCESS_KEY; all of it reaches the
primary on stdin, never in argv or a file.

With --files (FILES=1), the site's files (/srv/shared/www) are written back too, as
the newest backup of the shared volume before the point has them (files added
since stay).

Everything written after the point is gone from the database (the primary's old
data directory keeps it until you remove it). A restore only into a scratch server,
to look at the data, is `db-restore` on any app node (README, "Backups").
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from infra.backups import RESTORE
from infra.config import PROJECT
from tooling import render
from tooling.health import Report
from tooling.mocks import run_program
from tooling.node_ops import (
    OperationError, Operations, add_operation_options, cli_operations, run_operation, settled, stack_config,
)
from tooling.status import pulumi_outputs

GTID_LIST = re.compile(r"\d+-\d+-\d+(,\d+-\d+-\d+)*")
IN_PLACE = 3  # db-restore's exit: the restored copy is in place, its promotion unconfirmed
SSH_LOST = 255  # ssh's own failure: the unit on the node goes on without us


@dataclass(frozen=True)
class Restore:
    stack: str
    at: str  # as db-restore takes it: a UTC time, a GTID list or latest
    seed_urns: dict[str, str]  # app node -> the URN of its db-seed step
    source: str | None = None  # another stack's repository (NAME=value lines: secrets), or this stack's
    files: bool = False  # the site's files (/srv/shared/www) too


def source_settings(from_stack: str, outputs: Mapping[str, Any], env: Mapping[str, str]) -> str:
    """What db-restore --source reads: FROM's repository and password (its stack
    outputs), and a Spaces key that can read its bucket: the operator's own (the new
    stack's key is limited to the new stack's bucket)."""
    repository, password = outputs.get("backupRepository"), outputs.get("backupRepositoryPassword")
    if not repository or not password:
        raise OperationError(f"FROM={from_stack}: its outputs have no backupRepository and "
                             "backupRepositoryPassword (it kept no backups, or the outputs were read without "
                             "--show-secrets)")
    key, secret = env.get("SPACES_ACCESS_KEY_ID"), env.get("SPACES_SECRET_ACCESS_KEY")
    if not key or not secret:
        raise OperationError(f"FROM={from_stack}: set SPACES_ACCESS_KEY_ID and SPACES_SECRET_ACCESS_KEY to a Spaces "
                             f"key that can read {from_stack}'s bucket")
    values = {"RESTIC_REPOSITORY": repository, "RESTIC_PASSWORD": password, "AWS_ACCESS_KEY_ID": key,
              "AWS_SECRET_ACCESS_KEY": secret, "HOST": f"{PROJECT}-{from_stack}"}
    return "".join(f"{name}={shlex.quote(str(value))}\n" for name, value in values.items())


def check_point(at: str | None, now: datetime) -> str:
    """AT, checked before anything runs (db-restore checks it against the backups)."""
    text = (at or "latest").strip()
    if text == "latest" or GTID_LIST.fullmatch(text):
        return text
    try:
        when = datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        raise OperationError(f"AT={text!r}: allowed: a UTC time 'YYYY-MM-DD HH:MM:SS', a GTID such as 0-1-2345, "
                             "or latest") from None
    if when > now:
        raise OperationError(f"AT={text!r} is in the future; allowed: a time before now "
                             f"({now:%Y-%m-%d %H:%M:%S} UTC)")
    return text


def plan(stack: str, at: str | None, source: str | None = None, files: bool = False) -> Restore:
    cfg = stack_config(stack)
    if not cfg.backups:  # db-restore comes with them
        raise OperationError(f"{stack} keeps no backups (backups: false); there is nothing to restore from")
    point = check_point(at, datetime.now(UTC))
    # The mocks build URNs as the engine does (tooling/mocks.py), so these are the state's.
    program = run_program(stack, render.stack_config(stack))
    apps = [n for n in cfg.node_names if n != "witness"]
    return Restore(stack, point, {n: program.by_name(f"{n}-db-seed").urn for n in apps}, source, files)


def restore(r: Restore, ops: Operations, yes: bool = False) -> Report:
    before = ops.health()
    primary = before.database.get("primary")
    if not primary:
        raise OperationError(f"{r.stack} has no primary (make status shows why); the restore goes into the "
                             "primary, so fix that first")
    others = sorted(n for n in r.seed_urns if n != primary)
    ops.say(f"restore: {r.at} into {primary}, the primary; {', '.join(others)} re-seeded from it afterwards")
    # A service of its own (systemd-run): a dropped SSH session does not stop it
    # half-way; its progress is in the node's journal too (tag do-ha-restore).
    unit = f"do-ha-restore-{int(time.time())}"
    argv = ["sudo", "-n", "systemd-run", f"--unit={unit}", "--wait", "--pipe", "--collect", "--quiet",
            RESTORE, "--into-cluster", "--at", r.at, *(["--source", "-"] if r.source else []),
            *(["--files"] if r.files else [])]
    if ops.run_with_input is None:
        raise OperationError("these operations cannot send a command its input")
    result = ops.run_with_input(primary, argv, r.source or "")
    for line in (result.stderr + result.stdout).strip().splitlines():
        ops.say(f"restore: {line}")
    replace = [arg for node in others for arg in ("--replace", r.seed_urns[node])]
    reseed = f"pulumi up {' '.join(replace)} --stack {r.stack}"
    if result.returncode == IN_PLACE:
        raise OperationError(f"the restored copy is in place on {primary}, but it was not promoted in time (above); "
                             f"once `pcs status` shows it promoted, re-seed the others: {reseed}")
    if result.returncode == SSH_LOST:
        raise OperationError(f"the connection to {primary} was lost; the restore goes on there by itself (unit "
                             f"{unit}: journalctl -t do-ha-restore). Once it says it is restored into the cluster, "
                             f"re-seed the others: {reseed}")
    if result.returncode != 0:
        raise OperationError(f"db-restore on {primary} failed (above; journalctl -t do-ha-restore there): the "
                             "database is as it was")
    if others:
        ops.say(f"restore: re-seeding {', '.join(others)}: {reseed}")
        if ops.pulumi(["up", *replace, "--stack", r.stack, *(["--yes"] if yes else [])]) != 0:
            raise OperationError(f"pulumi up failed or was declined; {', '.join(others)} stay off MariaDB until "
                                 f"they are re-seeded: {reseed}")
    after = settled(ops)
    if after.healthy:
        # Until the next nightly, every restore would start from a backup older than the
        # rollback: one now (the unit on every app node; the replica's runs, in the background).
        for node in sorted(r.seed_urns):
            ops.run_on(node, ["sudo", "-n", "systemctl", "start", "--no-block", "do-ha-backup.service"])
        ops.say("restore: a backup of the restored database is running on the replica (journalctl -t do-ha-backup)")
    return after


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.restore", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", required=True)
    parser.add_argument("--at", help="a UTC time 'YYYY-MM-DD HH:MM:SS', a GTID, or latest (the default)")
    parser.add_argument("--from", dest="from_stack", help="restore another stack's backups (into a fresh stack)")
    parser.add_argument("--files", action="store_true", help="the site's files (/srv/shared/www) too")
    add_operation_options(parser)
    args = parser.parse_args(argv)

    def run() -> Report:
        source = None
        if args.from_stack:
            source = source_settings(args.from_stack, pulumi_outputs(args.from_stack, show_secrets=True), os.environ)
        return restore(plan(args.stack, args.at, source, args.files), cli_operations(args, os.environ), args.yes)

    return run_operation(run)


if __name__ == "__main__":
    sys.exit(main())
