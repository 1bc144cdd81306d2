"""`make switchover STACK=… [TO=app2]`: move the active role (the MariaDB primary
and the reserved IP) to another app node on purpose, for maintenance; no fencing.

    python -m tooling.switchover --stack prod [--to app2] [status options]

1. the stack must be healthy (`make status`) and the target a replica in sync
   (without TO: the healthy replica that lags least);
2. the primary turns read-only (writes pause from here) and reports the last
   transaction it wrote; the target waits until it has applied that one
   (MASTER_GTID_WAIT). So the new primary starts with every write the old one
   acknowledged, whatever semi-sync did. If it does not catch up within
   SWITCHOVER_CATCH_UP_S the primary turns writable again and nothing moves;
3. on the target, now caught up, the sync guard's mark says in sync, and the
   promotion scores move (the target's set, the primary's
   removed: the same attribute the MariaDB agent sets when it elects a primary),
   and pacemaker demotes the old primary and promotes the target while the
   reserved IP moves (nginx already runs on every app node);
4. it waits until the target is promoted and holds the reserved IP, then until
   the stack is healthy (the old primary replicating from the new one).

Steps 2 and 3 are one SSH call to each node, so the read-only window is short. The
primary notes when it turned read-only (PLANNED_READ_ONLY): pacemaker's check of the
primary, which fails a read-only primary (one restarted after a crash), lets a planned
read-only window pass for SWITCHOVER_READ_ONLY_GRACE_S.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from collections.abc import Sequence

from infra import tuning
from infra.config import StackConfig
from infra.naming import droplet_name
from tooling.health import Report
from infra.cluster import SYNC_MARKS_PATH
from tooling.node_ops import (
    OperationError, Operations, add_ssh_options, cli_operations, run_operation, settled, stack_config,
)

# What @@gtid_binlog_pos can say (empty before the first transaction).
GTID_LIST = re.compile(r"^([0-9]+-[0-9]+-[0-9]+(,[0-9]+-[0-9]+-[0-9]+)*)?$")
# The agent's own promotion score for an elected primary (ocf_promotion_score -v 100).
PROMOTION_SCORE = 100
PROMOTION_ATTRIBUTE = "master-mariadb"
# The sync guard's mark (cloudinit/app/db-sync-guard): 0 forbids the node's promotion;
# otherwise the time (ms) the node was found in sync.
SYNC_ATTRIBUTE = "do-ha-db-in-sync"
# Written on the primary as it turns read-only: the MariaDB wrapper's check of the
# primary then reads "read-only on purpose" (the role is moving), not "restarted after
# a crash", for SWITCHOVER_READ_ONLY_GRACE_S (cloudinit/agents/mariadb).
PLANNED_READ_ONLY = "/run/do-ha-stack/planned-read-only"


def choose(report: Report, to: str | None) -> tuple[str, str]:
    """The primary and the node that takes over from it."""
    primary = report.database.get("primary")
    if not primary:
        raise OperationError("no primary to switch over from (make status shows why)")
    rows: dict[str, dict] = report.database.get("nodes") or {}
    in_sync = sorted((n for n, row in rows.items() if n != primary and row.get("ok")),
                     key=lambda n: (rows[n].get("lag_s") or 0, n))
    if to is None:
        if not in_sync:
            raise OperationError(f"no replica in sync to take over from {primary}")
        return primary, in_sync[0]
    if to == primary:
        raise OperationError(f"TO={to}: it is the primary already; nothing to do")
    if to not in rows:
        raise OperationError(f"TO={to!r} is not an app node of {report.stack}; allowed: "
                             f"{', '.join(n for n in sorted(rows) if n != primary)}")
    if to not in in_sync:
        raise OperationError(f"TO={to}: its replica is not in sync (make status), so it cannot take over")
    return primary, to


def _sudo_sh(ops: Operations, node: str, script: str) -> str:
    result = ops.run_on(node, ["sudo", "-n", "sh", "-c", script])
    if result.returncode != 0:
        raise OperationError(f"on {node}: {(result.stderr or result.stdout).strip()[-300:]}")
    return result.stdout.strip()


def switch(stack: str, hosts: dict[str, str], ops: Operations, to: str | None = None,
           before: Report | None = None) -> Report:
    """Move the active role; `hosts` maps app node names to pacemaker node names;
    `before` is the stack's health if the caller has just taken it."""
    before = before or ops.health()
    if before.problems:
        raise OperationError(f"refusing to switch over on {stack}: it is degraded; a switchover needs a "
                             "healthy stack:\n  " + "\n  ".join(before.problems))
    primary, target = choose(before, to)
    ops.say(f"switchover: {primary} -> {target} (writes pause until {target} is promoted)")
    for node in (primary, target):  # connections up before the pause starts
        _sudo_sh(ops, node, "true")
    try:
        last = _sudo_sh(ops, primary, f"install -d -m 0755 {PLANNED_READ_ONLY.rsplit('/', 1)[0]} && "
                                      f"date +%s > {PLANNED_READ_ONLY} && mariadb --batch --skip-column-names "
                                      "-e 'SET GLOBAL read_only=ON; SELECT @@gtid_binlog_pos'")
    except OperationError as e:
        _writable_again(ops, primary, best_effort=True)
        raise OperationError(f"{primary} could not be made read-only; nothing moved ({e})") from None
    if not GTID_LIST.match(last):
        _writable_again(ops, primary)
        raise OperationError(f"{primary} reported {last!r} as its last transaction; it is writable again")
    try:
        _sudo_sh(ops, target, take_over_script(last, hosts[target], hosts[primary]))
    except OperationError as e:
        _writable_again(ops, primary)
        raise OperationError(f"{target} did not take over from {primary}; {primary} is writable again and "
                             f"stays the primary ({e})") from None
    located = (f"crm_resource --resource mariadb-clone --locate | grep -q "
               f"{shlex.quote(f'running on: {hosts[target]} Promoted$')} && "
               f"crm_resource --resource reserved-ip --locate | grep -q "
               f"{shlex.quote(f'running on: {hosts[target]}$')}")
    try:
        _sudo_sh(ops, target, f"timeout {tuning.REPLACE_DRAIN_TIMEOUT_S} sh -c "
                              f"{shlex.quote(f'until {located}; do sleep 0.2; done')}")
    except OperationError:
        raise OperationError(f"pacemaker did not promote {target} and move the reserved IP there within "
                             f"{tuning.REPLACE_DRAIN_TIMEOUT_S} s; the promotion scores name {target}, and "
                             f"{primary} stays read-only until pacemaker demotes it (make status; `pcs status` "
                             f"on {target})") from None
    ops.say(f"switchover: {target} is the primary and holds the reserved IP")
    return settled(ops)


def take_over_script(last: str, target_host: str, primary_host: str) -> str:
    """Run on the target: wait until it has applied `last`, then move the promotion
    scores to it. Exit 3: not caught up; any failure leaves the scores as they were."""
    wait = tuning.SWITCHOVER_CATCH_UP_S
    score = f"crm_attribute --lifetime reboot --name {PROMOTION_ATTRIBUTE}"
    target, primary = shlex.quote(target_host), shlex.quote(primary_host)
    return (
        "set -e\n"
        f"caught=$(mariadb --batch --skip-column-names -e \"SELECT MASTER_GTID_WAIT('{last}', {wait})\")\n"
        # MASTER_GTID_WAIT follows replicated events only: a target that applied none
        # since it was the primary itself already holds `last` as its own position.
        f"if [ \"$caught\" != 0 ] && [ \"$(mariadb --batch --skip-column-names -e 'SELECT @@gtid_current_pos')\" "
        f"!= '{last}' ]; then\n"
        f"\techo \"did not apply {last} within {wait} s\" >&2\n\texit 3\nfi\n"
        # caught up: in sync as the guard means it, whatever a blip marked it before; the
        # mark is above every out-of-sync mark the nodes hold, or the promotion refuses
        f"marks=${{DO_HA_SYNC_MARKS:-{SYNC_MARKS_PATH}}}\n"
        f"if [ -x \"$marks\" ]; then \"$marks\" mark-in-sync {target} >/dev/null; else\n"
        f"\tcrm_attribute --lifetime forever --name {SYNC_ATTRIBUTE} --node {target} --update \"$(date +%s%3N)\"\nfi\n"
        f"{score} --node {target} --update {PROMOTION_SCORE}\n"
        f"if ! {score} --node {primary} --delete; then\n"
        f"\t{score} --node {target} --delete || true\n\texit 4\nfi\n")


def _writable_again(ops: Operations, primary: str, best_effort: bool = False) -> None:
    try:
        _sudo_sh(ops, primary, f"mariadb -e 'SET GLOBAL read_only=OFF' && rm -f {PLANNED_READ_ONLY}")
    except OperationError:
        if not best_effort:
            raise


def app_hosts(cfg: StackConfig) -> dict[str, str]:
    """The stack's app nodes and their pacemaker node names (what `switch` takes)."""
    return {n: droplet_name(cfg, n) for n in cfg.node_names if n != "witness"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.switchover", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", required=True)
    parser.add_argument("--to", help="the app node that takes over (default: the replica that lags least)")
    add_ssh_options(parser)
    args = parser.parse_args(argv)
    return run_operation(lambda: switch(args.stack, app_hosts(stack_config(args.stack)),
                                        cli_operations(args, os.environ), args.to))

if __name__ == "__main__":
    sys.exit(main())
