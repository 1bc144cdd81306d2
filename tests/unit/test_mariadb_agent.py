"""The wrapper over Debian's MariaDB agent (cloudinit/agents/mariadb): every action
is the packaged agent's, and after another node's demotion the replica election
(the packaged agent's monitor) runs at once instead of at the next monitor.

Here a stand-in plays the packaged agent (logging each call with its action), and
crm_node names this node. The lab runs the real agent through failovers
(tests/lab/test_lab_cluster.py)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from infra import tuning
from infra.paths import REPO_ROOT
from tooling.switchover import PLANNED_READ_ONLY
from tests.helpers.stubs import write_stubs

WRAPPER = REPO_ROOT / "cloudinit" / "agents" / "mariadb"
PLANNED_READ_ONLY_GRACE_S = tuning.SWITCHOVER_READ_ONLY_GRACE_S
SELF, OTHER = "stack-app2", "stack-app1"


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    scripts = {
        # the packaged agent: logs its action; $RC_<action> sets its exit code
        "distrib": 'echo "$1" >> "$LOG"; rc_var="RC_${1//-/_}"; exit "${!rc_var:-0}"',
        # --name: this node (a failure with $NO_NAME);
        # --list: "ID NAME STATE" for this node and the other, whose state is $OTHER_STATE
        # (nothing, and a failure, with $NO_LIST)
        "crm_node": (f'case "$1" in --name) [ -z "$NO_NAME" ] || exit 1; echo {SELF} ;; '
                     f'--list) [ -z "$NO_LIST" ] || exit 1; echo "1 {OTHER} $OTHER_STATE"; '
                     f'echo "2 {SELF} member" ;; esac'),
        # the sync guard's mark: $IN_SYNC_<node> or else $IN_SYNC ("" for none); --delete and --update
        # are logged; otherwise
        # a promotion score, $SCORE (100 unless set), exists for the nodes in $SCORED (this
        # node's, without --node)
        "crm_attribute": ('prev=""; n=' + SELF + '; for a; do [ "$prev" = --node ] && n=$a; prev=$a; done; '
                          'case " $* " in *" --name do-ha-db-in-sync "*) '
                          'mark="IN_SYNC_${n//-/_}"; mark=${!mark-$IN_SYNC}; [ -n "$mark" ] && echo "$mark"; exit 0 ;; '
                          '*" --delete "*) echo "delete-score $n" >> "$LOG"; exit 0 ;; '
                          '*" --update "*) echo "set-score $n ${*: -1}" >> "$LOG"; exit 0 ;; esac; '
                          '[[ " $SCORED " == *" $n "* ]] || exit 1; echo "${SCORE:-100}"'),
        # the server: logs each statement; SHOW SLAVE STATUS answers $SLAVE_STATUS (from
        # its second time on $SLAVE_STATUS_LATER, if set), the
        # wait for the relay log $GTID_WAIT; absent ($NO_SERVER) it fails
        # statements holding $FAIL_SQL fail
        "mariadb": ('[ -z "$NO_SERVER" ] || exit 1; sql="${*: -1}"; echo "sql: $sql" >> "$LOG"; '
                    '[[ -z "$FAIL_SQL" || "$sql" != *"$FAIL_SQL"* ]] || exit 1; '
                    'case "$sql" in "SHOW SLAVE STATUS"*) n=$(( $(cat "$LOG.shows" 2>/dev/null || echo 0) + 1 )); '
                    'echo "$n" > "$LOG.shows"; if [ -n "$SLAVE_STATUS_LATER" ] && [ "$n" -ge 2 ]; then '
                    'printf "%b" "$SLAVE_STATUS_LATER"; else printf "%b" "$SLAVE_STATUS"; fi ;; '
                    '*MASTER_GTID_WAIT*) echo "${GTID_WAIT:-0}" ;; esac'),
        "logger": 'echo "logger $*" >> "$LOG"',
        # the promotion's check of the sync marks: logged apart (it runs in the background);
        # $MARKS_REFUSE refuses, saying so
        "sync-marks": ('echo "$*" >> "$LOG.marks"; [ -z "$MARKS_REFUSE" ] || { echo "$MARKS_REFUSE"; exit 1; }'),
    }
    return write_stubs(d, scripts)


def run(bin_dir: Path, action: str, notify: tuple[str, str] | None = None, demoted: str = "",
        clone_max: int = 2, rc: dict[str, int] | None = None, other_state: str = "lost",
        scored: str = "", in_sync: str = "", slave_status: str | None = None,
        gtid_wait: str = "0", role: str = "", planned_read_only: str | None = None,
        marks: dict[str, str] | None = None, score: str = "100", fail_sql: str = "",
        no_list: bool = False, slave_status_later: str = "", on_node: str = "",
        no_name: bool = False, promoted: str = "", marks_refuse: str = "",
        sync_marks: str = "sync-marks") -> tuple[int, list[str]]:
    """The wrapper's exit code and the packaged agent's actions, in order."""
    log = bin_dir.parent / "log"
    log.write_text("")
    Path(f"{log}.shows").unlink(missing_ok=True)
    Path(f"{log}.marks").unlink(missing_ok=True)
    marker = bin_dir.parent / "planned-read-only"
    marker.unlink(missing_ok=True)
    if planned_read_only is not None:
        marker.write_text(planned_read_only)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LOG": str(log), "DO_HA_MARIADB_DISTRIB": str(bin_dir / "distrib"),
           "OCF_RESKEY_CRM_meta_clone_max": str(clone_max), "OCF_RESOURCE_INSTANCE": "mariadb",
           # app3: declared for a scale-out, not (yet) in the cluster
           "OCF_RESKEY_node_list": f"{OTHER} stack-app3 {SELF}", "OTHER_STATE": other_state, "SCORED": scored,
           "IN_SYNC": in_sync, "SLAVE_STATUS": slave_status or "", "NO_SERVER": "" if slave_status is not None else "1",
           "GTID_WAIT": gtid_wait, "OCF_RESKEY_CRM_meta_role": role, "DO_HA_PLANNED_READ_ONLY": str(marker),
           **{f"IN_SYNC_{node.replace('-', '_')}": mark for node, mark in (marks or {}).items()},
           "SCORE": score, "FAIL_SQL": fail_sql, "NO_LIST": "1" if no_list else "",
           "HA_RSCTMP": str(bin_dir.parent), "SLAVE_STATUS_LATER": slave_status_later,
           "OCF_RESKEY_CRM_meta_on_node": on_node, "NO_NAME": "1" if no_name else "",
           "DO_HA_SYNC_MARKS": str(bin_dir / sync_marks), "MARKS_REFUSE": marks_refuse,
           **{f"RC_{k.replace('-', '_')}": str(v) for k, v in (rc or {}).items()}}
    if notify:
        env |= {"OCF_RESKEY_CRM_meta_notify_type": notify[0], "OCF_RESKEY_CRM_meta_notify_operation": notify[1],
                "OCF_RESKEY_CRM_meta_notify_demote_uname": demoted,
                "OCF_RESKEY_CRM_meta_notify_promote_uname": promoted}
    result = subprocess.run(["bash", str(WRAPPER), action], env=env, capture_output=True, text=True, timeout=30)
    if action == "promote" and result.returncode == 0:
        # the elected score is set in the background: wait for it (so it cannot land in
        # the next call's log), and leave it out of the calls in order
        elected = f"set-score {SELF} 100"
        assert _logged_soon(bin_dir, elected), "a successful promotion did not take the elected score"
        return 0, [line for line in log.read_text().splitlines() if line != elected]
    return result.returncode, log.read_text().splitlines()


@pytest.mark.parametrize("action", ["start", "stop", "monitor", "demote", "meta-data"])
def test_every_other_action_is_the_packaged_agents_with_its_exit_code(bin_dir: Path, action: str) -> None:
    assert run(bin_dir, action) == (0, [action])
    assert run(bin_dir, action, rc={action: 7}) == (7, [action])


def test_a_promotion_ends_with_the_packaged_agents_and_its_exit_code(bin_dir: Path) -> None:
    # no server to ask (a stand-in that fails): said, then the packaged promotion as before
    rc, calls = run(bin_dir, "promote", rc={"promote": 7})
    assert rc == 7 and calls[-1] == "promote" and "could not hand semi-sync to the sync guard" in calls[0]


def test_after_another_nodes_demotion_the_election_runs_at_once(bin_dir: Path) -> None:
    # the old primary was fenced (or demoted): this replica elects after the
    # packaged agent has applied its relay log and left the old primary
    assert run(bin_dir, "notify", ("post", "demote"), f" {OTHER} ") == (0, ["notify", "monitor"])
    # with more replicas, too: their positions are final by now
    assert run(bin_dir, "notify", ("post", "demote"), OTHER, clone_max=3) == (0, ["notify", "monitor"])


def test_the_sole_replica_elects_itself_before_fencing_has_finished(bin_dir: Path) -> None:
    assert run(bin_dir, "notify", ("pre", "demote"), OTHER, clone_max=2) == (0, ["notify", "monitor"])
    # several replicas compare positions, which is right only after the relay logs
    assert run(bin_dir, "notify", ("pre", "demote"), OTHER, clone_max=3) == (0, ["notify"])


def _logged_soon(bin_dir: Path, line: str, seconds: float = 5.0) -> bool:
    """Whether `line` reaches the log within `seconds` (a background statement's)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if line in (bin_dir.parent / "log").read_text().splitlines():
            return True
        time.sleep(0.05)
    return False


def test_replication_from_a_lost_primary_ends_while_it_is_fenced(bin_dir: Path) -> None:
    # its IO thread's stop (a second's connect to the dead primary) starts at the
    # pre-demote, in the background: the notification does not wait for it
    for clone_max in (2, 3):
        rc, _ = run(bin_dir, "notify", ("pre", "demote"), OTHER, clone_max=clone_max, slave_status="")
        assert rc == 0
        assert _logged_soon(bin_dir, "sql: STOP SLAVE IO_THREAD"), clone_max
    # out of sync too: replication from a node being fenced is over whatever this one's state
    run(bin_dir, "notify", ("pre", "demote"), OTHER, in_sync="0", slave_status="")
    assert _logged_soon(bin_dir, "sql: STOP SLAVE IO_THREAD")


def test_replication_goes_on_through_a_planned_demotion_until_its_end(bin_dir: Path) -> None:
    # a switchover's primary is still a member: the replica keeps receiving until the
    # packaged agent's post-demote; nor does this node's own demotion stop anything
    for demoted, state in ((OTHER, "member"), (SELF, "lost")):
        run(bin_dir, "notify", ("pre", "demote"), demoted, other_state=state, slave_status="")
        assert not _logged_soon(bin_dir, "sql: STOP SLAVE IO_THREAD", 0.5), (demoted, state)
    run(bin_dir, "notify", ("post", "demote"), OTHER, slave_status="")
    assert not _logged_soon(bin_dir, "sql: STOP SLAVE IO_THREAD", 0.5)


def test_no_election_before_fencing_for_a_planned_demotion(bin_dir: Path) -> None:
    # the primary being demoted is still a member: a switchover, not a crash
    assert run(bin_dir, "notify", ("pre", "demote"), OTHER, other_state="member") == (0, ["notify"])
    # after the demotion the election runs as for a crash (if nothing is scored)
    assert run(bin_dir, "notify", ("post", "demote"), OTHER, other_state="member") == (0, ["notify", "monitor"])


def test_the_node_promoted_after_a_planned_demotion_leaves_replication_to_its_promotion(bin_dir: Path) -> None:
    # the old primary is still a member (a switchover); the same transition promotes
    # this node, in sync: the packaged post-demote (which would end replication) is
    # not run, nor an election
    caught_up = REPLICATING + "Gtid_IO_Pos: 0-1-42\n"
    planned = {"other_state": "member", "promoted": f" {SELF} ", "scored": SELF}
    rc, calls = run(bin_dir, "notify", ("post", "demote"), OTHER, slave_status=caught_up, **planned)
    assert rc == 0 and "notify" not in calls and "monitor" not in calls, calls
    assert any("this node is promoted next" in c for c in calls), calls
    # replicating from nobody: nothing for the packaged post-demote to end either
    assert "notify" not in run(bin_dir, "notify", ("post", "demote"), OTHER, slave_status="", **planned)[1]
    # as before: another node promoted (or none), a score but no promotion in this
    # transition (the replicas stop, say), out of sync, the SQL thread stopped or the
    # received position unreadable (the promotion could not finish replication), the
    # server not answering, the primary lost, or its own demotion
    for case in [dict(planned, promoted=OTHER), dict(planned, promoted=""),
                 dict(planned, in_sync="0"),
                 dict(planned, slave_status="Slave_IO_Running: Yes\nSlave_SQL_Running: No\nGtid_IO_Pos: 0-1-42\n"),
                 dict(planned, slave_status=REPLICATING + "Gtid_IO_Pos: \n"),
                 dict(planned, slave_status=None),
                 dict(planned, other_state="lost", slave_status=caught_up)]:
        assert "notify" in run(bin_dir, "notify", ("post", "demote"), OTHER, **case)[1], case
    assert run(bin_dir, "notify", ("post", "demote"), SELF, slave_status=caught_up,
               **planned) == (0, ["notify"])


def test_no_election_while_a_node_holds_a_promotion_score(bin_dir: Path) -> None:
    # a switchover has named its target (this node or another): nothing to elect
    for scored in (SELF, OTHER):
        assert run(bin_dir, "notify", ("post", "demote"), OTHER, scored=scored) == (0, ["notify"]), scored
        assert run(bin_dir, "notify", ("pre", "demote"), OTHER, scored=scored) == (0, ["notify"]), scored


def test_no_election_for_this_nodes_own_demotion_or_other_notifications(bin_dir: Path) -> None:
    assert run(bin_dir, "notify", ("post", "demote"), SELF) == (0, ["notify"])
    assert run(bin_dir, "notify", ("pre", "demote"), SELF) == (0, ["notify"])
    for kind in (("pre", "promote"), ("post", "promote")):
        assert run(bin_dir, "notify", kind, OTHER) == (0, ["notify"]), kind
    assert run(bin_dir, "notify", ("post", "demote"), "") == (0, ["notify"])


STARTS_AND_STOPS = [("pre", "start"), ("post", "start"), ("pre", "stop"), ("post", "stop")]


@pytest.mark.parametrize("kind", STARTS_AND_STOPS)
def test_start_and_stop_notifications_the_packaged_agent_ignores_are_answered_here(
        bin_dir: Path, kind: tuple[str, str]) -> None:
    # a lost primary's pre- and post-stop run between its fence and the promotion:
    # the packaged agent would load and check everything only to answer 0
    assert run(bin_dir, "notify", kind, OTHER) == (0, []), kind


@pytest.mark.parametrize("kind", STARTS_AND_STOPS)
def test_one_the_packaged_agent_names_is_its_own(bin_dir: Path, kind: tuple[str, str]) -> None:
    # an upgrade that acts on the event names it: the packaged agent answers again
    distrib = bin_dir / "distrib"
    distrib.write_text(distrib.read_text() + f"# '{kind[0]}-{kind[1]}') handled\n")
    assert run(bin_dir, "notify", kind, OTHER) == (0, ["notify"]), kind
    assert run(bin_dir, "notify", kind, OTHER, rc={"notify": 1}) == (1, ["notify"]), kind


def test_pacemakers_name_for_this_node_is_taken_without_asking(bin_dir: Path) -> None:
    # pacemaker names the node an action runs on (on_node): no crm_node call on the
    # failover's path; without it (ocf-tester, a forced action) crm_node is asked
    assert run(bin_dir, "notify", ("post", "demote"), OTHER, on_node=SELF, no_name=True) == (0, ["notify", "monitor"])
    assert run(bin_dir, "notify", ("post", "demote"), OTHER, no_name=True) == (0, ["notify"])
    assert run(bin_dir, "notify", ("post", "demote"), OTHER) == (0, ["notify", "monitor"])
    # and it is this node's own demotion when pacemaker says so
    assert run(bin_dir, "notify", ("post", "demote"), OTHER, on_node=OTHER) == (0, ["notify"])


def test_a_failed_notification_is_returned_and_elects_nothing(bin_dir: Path) -> None:
    assert run(bin_dir, "notify", ("post", "demote"), OTHER, rc={"notify": 1}) == (1, ["notify"])


def test_a_failed_election_is_logged_and_the_notification_still_succeeds(bin_dir: Path) -> None:
    rc, log = run(bin_dir, "notify", ("post", "demote"), OTHER, rc={"monitor": 1})
    assert rc == 0 and log[:2] == ["notify", "monitor"]
    assert "election after the post-demote of stack-app1 failed (rc 1)" in log[2]
    # a promoted answer (8) is not a failure
    assert run(bin_dir, "notify", ("post", "demote"), OTHER, rc={"monitor": 8}) == (0, ["notify", "monitor"])


def test_the_wrapper_is_executable_and_named_as_the_agent_it_replaces() -> None:
    assert os.access(WRAPPER, os.X_OK)
    text = WRAPPER.read_text()
    # the packaged agent keeps its name (its log tag) where cluster-node diverts it
    step = (REPO_ROOT / "cloudinit" / "steps" / "cluster-node.sh").read_text()
    assert "DISTRIB=${DO_HA_MARIADB_DISTRIB:-/usr/lib/do-ha-stack/ocf-distrib/mariadb}" in text
    assert "distrib=/usr/lib/do-ha-stack/ocf-distrib/mariadb" in step


def _slave(sql_running: str = "Yes", io_pos: str = "0-1-42") -> str:
    return (f"*** 1. row ***\\n  Slave_IO_Running: Yes\\n  Slave_SQL_Running: {sql_running}\\n"
            f"  Gtid_IO_Pos: {io_pos}\\n")


HAND_OVER = ("sql: SET GLOBAL rpl_semi_sync_master_timeout = 30000, rpl_semi_sync_master_wait_no_slave = ON")


def test_a_promotion_first_applies_everything_the_replica_received(bin_dir: Path) -> None:
    rc, calls = run(bin_dir, "promote", slave_status=_slave())
    # 120 s promotion timeout (pacemaker's default here), less the margin
    assert rc == 0 and calls == [HAND_OVER, "sql: SHOW SLAVE STATUS\\G", "sql: STOP SLAVE IO_THREAD",
                                 "sql: SHOW SLAVE STATUS\\G", "sql: SELECT MASTER_GTID_WAIT('0-1-42', 105)",
                                 # and, once promoted, replicates from nobody again (the packaged
                                 # promotion only stops)
                                 "promote", "sql: SHOW SLAVE STATUS\\G", "sql: STOP SLAVE; RESET SLAVE ALL"]
    # not applied in time: the promotion fails (pacemaker tries again), nothing is dropped
    rc, calls = run(bin_dir, "promote", slave_status=_slave(), gtid_wait="-1")
    assert rc == 1 and "promote" not in calls and any("was not applied up to 0-1-42" in c for c in calls)


def test_the_backstop_the_wrapper_sets_is_the_guards() -> None:
    from infra import tuning

    assert f"BACKSTOP_MS={tuning.SYNC_GUARD_BACKSTOP_MS}\n" in WRAPPER.read_text()


def test_a_promotion_never_restarts_a_stopped_sql_thread(bin_dir: Path) -> None:
    # START SLAVE would purge the relay log first: promote as the packaged agent did
    rc, calls = run(bin_dir, "promote", slave_status=_slave(sql_running="No"))
    assert rc == 0 and calls[:2] == [HAND_OVER, "sql: SHOW SLAVE STATUS\\G"] and "promote" in calls
    assert not any("IO_THREAD" in c or "START SLAVE" in c or "MASTER_GTID_WAIT" in c for c in calls)
    assert not any("RESET" in c for c in calls)  # its relay log stays, for a manual recovery
    assert any("SQL thread is not running" in c for c in calls)
    # a primary (no replication) and an empty position: straight to the promotion
    assert run(bin_dir, "promote", slave_status="")[1] == [HAND_OVER, "sql: SHOW SLAVE STATUS\\G", "promote"]
    assert "promote" in run(bin_dir, "promote", slave_status=_slave(io_pos=""))[1]
    assert not any("MASTER_GTID_WAIT" in c for c in run(bin_dir, "promote", slave_status=_slave(io_pos=""))[1])


def test_a_node_marked_out_of_sync_gives_up_its_promotion_score(bin_dir: Path) -> None:
    rc, calls = run(bin_dir, "monitor", in_sync="0", scored=SELF)
    assert rc == 0 and calls[:2] == ["monitor", f"delete-score {SELF}"] and "gives up its promotion score" in calls[2]
    assert run(bin_dir, "monitor", in_sync="1", scored=SELF) == (0, ["monitor"])
    assert run(bin_dir, "monitor", in_sync="", scored=SELF) == (0, ["monitor"])
    assert run(bin_dir, "monitor", in_sync="0", scored="") == (0, ["monitor"])  # no score to give up
    # the promoted node's monitor (8) keeps its score
    assert run(bin_dir, "monitor", in_sync="0", scored=SELF, rc={"monitor": 8}) == (8, ["monitor"])
    # after the primary's demotion it never elects (itself): it drops a score it holds
    rc, calls = run(bin_dir, "notify", ("post", "demote"), OTHER, in_sync="0", scored=SELF)
    assert rc == 0 and calls[:2] == ["notify", f"delete-score {SELF}"] and "monitor" not in calls
    assert run(bin_dir, "notify", ("post", "demote"), OTHER, in_sync="0") == (0, ["notify"])
    assert run(bin_dir, "notify", ("post", "demote"), OTHER, in_sync="1") == (0, ["notify", "monitor"])


def test_a_primary_whose_server_came_back_read_only_is_not_promoted_again(bin_dir: Path) -> None:
    # pacemaker's check of its primary finds a replica (0): mariadbd-safe restarted a
    # killed server. The check fails (pacemaker demotes in place) and the score goes,
    # so the replica is the one promoted next.
    for role in ("Promoted", "Master"):
        rc, log = run(bin_dir, "monitor", role=role, scored=SELF)
        assert rc == 0 and log[:2] == ["monitor", f"delete-score {SELF}"], (role, log)
        assert "came back read-only" in log[2]
    # a healthy primary (8) and a replica's own check (0) keep their scores
    assert run(bin_dir, "monitor", role="Promoted", scored=SELF, rc={"monitor": 8}) == (8, ["monitor"])
    assert run(bin_dir, "monitor", role="Unpromoted", scored=SELF) == (0, ["monitor"])
    # a failed check (7: not running) is pacemaker's to recover; nothing else changes
    assert run(bin_dir, "monitor", role="Promoted", scored=SELF, rc={"monitor": 7}) == (7, ["monitor"])


def test_a_primary_a_switchover_made_read_only_is_still_the_primary(bin_dir: Path) -> None:
    # the switchover noted the moment: pacemaker demotes it as asked, not as a failure
    now = int(time.time())
    assert run(bin_dir, "monitor", role="Promoted", scored=SELF, planned_read_only=f"{now - 3}\n") == (8, ["monitor"])
    # a stale note (a switchover that died half way) or a garbled one: the check fails
    for note in (f"{now - PLANNED_READ_ONLY_GRACE_S - 5}\n", "soon\n", ""):
        rc, log = run(bin_dir, "monitor", role="Promoted", scored=SELF, planned_read_only=note)
        assert rc == 0 and log[1] == f"delete-score {SELF}", (note, log)


def test_the_planned_read_only_note_is_the_switchovers() -> None:
    text = WRAPPER.read_text()
    assert f"PLANNED_READ_ONLY=${{DO_HA_PLANNED_READ_ONLY:-{PLANNED_READ_ONLY}}}\n" in text
    assert f"PLANNED_READ_ONLY_GRACE_S={tuning.SWITCHOVER_READ_ONLY_GRACE_S}\n" in text


REPLICATING = "Slave_IO_Running: Yes\nSlave_SQL_Running: Yes\n"


def test_the_one_replica_in_sync_holds_a_standing_promotion_score(bin_dir: Path) -> None:
    # so the scheduler plans its promotion (and the IP's move) with the fence itself
    rc, log = run(bin_dir, "monitor", role="Unpromoted", in_sync="1", slave_status=REPLICATING)
    assert rc == 0 and log[0] == "monitor" and f"set-score {SELF} 10" in log, log
    assert "standing promotion score 10" in log[-1]
    assert f"set-score {SELF} 10" in run(bin_dir, "monitor", role="Slave", slave_status=REPLICATING)[1]


@pytest.mark.parametrize("case", [
    {"clone_max": 3},  # positions must be compared: the election's
    {"scored": SELF},  # it has one (standing, elected, or a switchover's)
    {"in_sync": "0"},  # marked out of sync: never a candidate
    {"slave_status": "Slave_IO_Running: Connecting\nSlave_SQL_Running: Yes\n"},  # not replicating
    {"role": ""},  # a probe
], ids=lambda c: next(iter(c)))
def test_no_standing_score_otherwise(bin_dir: Path, case: dict) -> None:
    kwargs = {"role": "Unpromoted", "slave_status": REPLICATING} | case
    rc, log = run(bin_dir, "monitor", **kwargs)
    assert rc == 0 and not any(line.startswith("set-score") for line in log), log


def test_a_promoted_node_takes_the_elected_score(bin_dir: Path) -> None:
    rc, _ = run(bin_dir, "promote", slave_status="")  # run() asserts the score was set
    assert rc == 0 and f"set-score {SELF} 100" in (bin_dir.parent / "log").read_text()
    run(bin_dir, "promote", slave_status="", rc={"promote": 1})
    assert not _logged_soon(bin_dir, f"set-score {SELF} 100", 0.5)


def test_the_only_node_in_sync_elects_itself(bin_dir: Path) -> None:
    # the packaged election chose the node marked out of sync (even in this very
    # monitor: its score is there), which gives the score up: nothing would ever be
    # promoted; this one, in sync, takes the elected score
    for scored in ("", OTHER):
        rc, log = run(bin_dir, "monitor", role="Unpromoted", marks={OTHER: "0"}, slave_status="", scored=scored)
        assert rc == 0 and f"set-score {SELF} 100" in log and "elects itself" in log[-1], log
    # not once it holds a score, nor while the other node may be promoted too
    for case in ({"scored": SELF}, {"marks": {OTHER: "1"}}, {"marks": {OTHER: ""}}):
        rc, log = run(bin_dir, "monitor", role="Unpromoted", slave_status="", **{"marks": {OTHER: "0"}} | case)
        assert not any(line.startswith("set-score") for line in log), (case, log)
    # and never when this node is itself out of sync
    rc, log = run(bin_dir, "monitor", role="Unpromoted", marks={OTHER: "0", SELF: "0"}, slave_status="")
    assert not any(line.startswith("set-score") for line in log), log


def test_a_demotion_first_makes_the_server_read_only(bin_dir: Path) -> None:
    # a failed check's demotion (on-fail=demote) does not rest on the notification
    assert run(bin_dir, "demote", slave_status="") == (0, ["sql: SELECT 1", "sql: SET GLOBAL read_only = ON", "demote"])
    # a server that answers but cannot be made read-only: the demotion fails (pacemaker
    # stops it next, or fences the node)
    rc, log = run(bin_dir, "demote", slave_status="", fail_sql="read_only")
    assert rc == 1 and "demote" not in log and "could not be made read-only" in log[-1], log
    # no server at all: the packaged demotion, as before
    assert run(bin_dir, "demote") == (0, ["demote"])


def test_a_primary_still_on_its_standing_score_takes_the_elected_one(bin_dir: Path) -> None:
    rc, log = run(bin_dir, "monitor", role="Promoted", scored=SELF, score="10", rc={"monitor": 8})
    assert rc == 8 and log == ["monitor", f"set-score {SELF} 100"], log
    assert run(bin_dir, "monitor", role="Promoted", scored=SELF, rc={"monitor": 8}) == (8, ["monitor"])
    # without a score (a switchover moved it away) it takes none
    assert run(bin_dir, "monitor", role="Promoted", rc={"monitor": 8}) == (8, ["monitor"])


def test_after_a_scale_out_a_standing_score_goes(bin_dir: Path) -> None:
    rc, log = run(bin_dir, "monitor", role="Unpromoted", clone_max=3, scored=SELF, score="10", slave_status="")
    assert rc == 0 and f"delete-score {SELF}" in log, log
    # an elected or a switchover's score stays
    rc, log = run(bin_dir, "monitor", role="Unpromoted", clone_max=3, scored=SELF, slave_status="")
    assert not any(line.startswith("delete-score") for line in log), log


def test_an_unreadable_node_list_decides_nothing(bin_dir: Path) -> None:
    # no self-election for lack of peers seen...
    rc, log = run(bin_dir, "monitor", role="Unpromoted", marks={OTHER: "0"}, slave_status="", no_list=True)
    assert not any(line.startswith("set-score") for line in log), log
    # ...and no node counts as lost: no replication stopped, no election before fencing
    assert run(bin_dir, "notify", ("pre", "demote"), OTHER, no_list=True, slave_status="")[1] == ["notify"]
    assert not _logged_soon(bin_dir, "sql: STOP SLAVE IO_THREAD", 0.5)


LEAVE = ["sql: STOP SLAVE IO_THREAD", "sql: SHOW SLAVE STATUS\\G", "sql: SELECT MASTER_GTID_WAIT('0-1-42', 105)",
         "sql: SHOW SLAVE STATUS\\G", "sql: STOP SLAVE; RESET SLAVE ALL"]


def _left_marker(bin_dir: Path) -> Path:
    return bin_dir.parent / "do-ha-left-primary.mariadb"


def test_a_lost_primarys_replication_is_applied_and_reset_while_it_is_fenced(bin_dir: Path) -> None:
    # the packaged post-demote's work (stop, apply the relay log, reset), done in the
    # background at the pre-demote; the post-demote then skips the packaged agent
    rc, calls = run(bin_dir, "notify", ("pre", "demote"), OTHER, slave_status=_slave())
    assert rc == 0 and _logged_soon(bin_dir, LEAVE[-1]), calls
    assert _logged_soon(bin_dir, f"logger -t mariadb(mariadb) -p daemon.info -- replication from {OTHER} "
                                 "(being fenced) ended: its relay log applied up to 0-1-42, replication reset")
    log = (bin_dir.parent / "log").read_text().splitlines()
    assert [c for c in log if c.startswith("sql:")] == LEAVE, log
    assert _left_marker(bin_dir).read_text() == f"{OTHER}\n"
    assert Path(f"{_left_marker(bin_dir)}.started").read_text() == f"{OTHER}\n"
    rc, calls = run(bin_dir, "notify", ("post", "demote"), OTHER, slave_status="")
    assert rc == 0 and "notify" not in calls and calls[-1] == "monitor", calls  # the election still runs
    assert any("replication from it ended (or ends) while it was fenced" in c for c in calls)
    assert not _left_marker(bin_dir).exists()
    # the marker is used once: the next post-demote runs the packaged agent
    assert "notify" in run(bin_dir, "notify", ("post", "demote"), OTHER, slave_status="")[1]


@pytest.mark.parametrize("case", [
    {"slave_status": _slave(sql_running="No")},  # RESET would drop what was never applied
    {"slave_status": _slave(), "gtid_wait": "-1"},  # not applied in time
    {"slave_status": _slave(), "fail_sql": "RESET SLAVE"},  # the reset failed
], ids=["sql-stopped", "not-applied", "reset-failed"])
def test_otherwise_the_packaged_post_demote_ends_replication(bin_dir: Path, case: dict) -> None:
    run(bin_dir, "notify", ("pre", "demote"), OTHER, **case)
    assert _logged_soon(bin_dir, "sql: STOP SLAVE IO_THREAD")
    _job_done(bin_dir)
    log = (bin_dir.parent / "log").read_text()
    assert not _left_marker(bin_dir).exists(), log
    assert ("RESET SLAVE ALL" in log) == ("fail_sql" in case), log
    assert "notify" in run(bin_dir, "notify", ("post", "demote"), OTHER, slave_status="")[1]


def _job_done(bin_dir: Path) -> None:
    """Wait for the pre-demote's background job (it holds its lock while it works)."""
    lock = f"{_left_marker(bin_dir)}.lock"
    deadline = time.monotonic() + 5
    while not Path(lock).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    subprocess.run(["flock", "--wait", "10", lock, "true"], check=True)


def test_replication_that_has_ended_already_needs_nothing_more(bin_dir: Path) -> None:
    # a pre-demote sent again after the first one's job (or nothing replicating): the
    # post-demote does not run the packaged agent's reset again
    run(bin_dir, "notify", ("pre", "demote"), OTHER, slave_status="")
    _job_done(bin_dir)
    assert _left_marker(bin_dir).read_text() == f"{OTHER}\n"
    assert "notify" not in run(bin_dir, "notify", ("post", "demote"), OTHER, slave_status="")[1]


def test_a_marker_for_another_node_or_a_server_still_replicating_runs_the_packaged_post_demote(
        bin_dir: Path) -> None:
    _left_marker(bin_dir).write_text("stack-app3\n")
    assert "notify" in run(bin_dir, "notify", ("post", "demote"), OTHER, slave_status="")[1]
    assert not _left_marker(bin_dir).exists()  # a stale marker goes
    _left_marker(bin_dir).write_text(f"{OTHER}\n")  # but this server replicates (a planned switchover's)
    assert "notify" in run(bin_dir, "notify", ("post", "demote"), OTHER, slave_status=REPLICATING)[1]
    _left_marker(bin_dir).write_text(f"{OTHER}\n")  # the server does not answer
    assert "notify" in run(bin_dir, "notify", ("post", "demote"), OTHER)[1]


def test_a_post_demote_waits_for_the_pre_demotes_work_still_in_progress(bin_dir: Path) -> None:
    # against a dead primary the IO thread's stop takes a second: the post-demote may
    # come first, and waits for that work instead of doing it again
    marker = _left_marker(bin_dir)
    job = subprocess.Popen(["flock", f"{marker}.lock", "sh", "-c", f"sleep 1; echo {OTHER} > {marker}"])
    try:
        time.sleep(0.2)  # the lock is held
        rc, calls = run(bin_dir, "notify", ("post", "demote"), OTHER, slave_status="")
    finally:
        job.wait(timeout=10)
    assert rc == 0 and "notify" not in calls and calls[-1] == "monitor", calls


def test_the_node_to_be_promoted_does_not_wait_for_that_work(bin_dir: Path) -> None:
    # it holds a promotion score: nothing is elected, and its promotion applies the
    # relay log and resets replication itself, so the notifications go on meanwhile
    marker = _left_marker(bin_dir)
    Path(f"{marker}.started").write_text(f"{OTHER}\n")
    job = subprocess.Popen(["flock", f"{marker}.lock", "sleep", "3"])
    try:
        time.sleep(0.2)
        started = time.monotonic()
        rc, calls = run(bin_dir, "notify", ("post", "demote"), OTHER, slave_status="", scored=SELF)
        took = time.monotonic() - started
    finally:
        job.wait(timeout=10)
    assert rc == 0 and "notify" not in calls and "monitor" not in calls, calls
    assert took < 2, took  # the job holds its lock for 3 s
    assert not Path(f"{marker}.started").exists()
    # a node without a score (another replica: it may elect) does not take that
    # shortcut: with no finished work to find, the packaged post-demote runs
    Path(f"{marker}.started").write_text(f"{OTHER}\n")
    assert "notify" in run(bin_dir, "notify", ("post", "demote"), OTHER, slave_status="")[1]


def test_a_failed_promotion_leaves_replication_as_it_is(bin_dir: Path) -> None:
    rc, calls = run(bin_dir, "promote", slave_status=_slave(), rc={"promote": 7})
    assert rc == 7 and calls[-1] == "promote" and not any("RESET" in c for c in calls), calls


def test_the_job_resets_nothing_set_up_anew_or_not_applied(bin_dir: Path) -> None:
    # replication was set up again meanwhile (a post-promote's CHANGE MASTER): left alone
    run(bin_dir, "notify", ("pre", "demote"), OTHER, slave_status=_slave() + "  Master_Host: 10.0.0.1\\n",
        slave_status_later=_slave() + "  Master_Host: 10.0.0.3\\n")
    _job_done(bin_dir)
    log = (bin_dir.parent / "log").read_text()
    assert "MASTER_GTID_WAIT" in log and "RESET" not in log and not _left_marker(bin_dir).exists(), log
    # a position it cannot read: nothing is reset that may not have been applied
    run(bin_dir, "notify", ("pre", "demote"), OTHER, slave_status=_slave(io_pos="garbled"))
    _job_done(bin_dir)
    log = (bin_dir.parent / "log").read_text()
    assert "RESET" not in log and "MASTER_GTID_WAIT" not in log, log


def test_a_promotion_with_nothing_received_resets_and_one_it_cannot_read_does_not(bin_dir: Path) -> None:
    calls = run(bin_dir, "promote", slave_status=_slave(io_pos=""))[1]
    assert calls[-2:] == ["sql: SHOW SLAVE STATUS\\G", "sql: STOP SLAVE; RESET SLAVE ALL"], calls
    calls = run(bin_dir, "promote", slave_status=_slave(io_pos="garbled"))[1]
    assert calls[-1] == "promote" and not any("RESET" in c for c in calls), calls


def test_a_promotion_asks_the_majoritys_sync_marks_and_a_refusal_stops_it(bin_dir: Path) -> None:
    rc, calls = run(bin_dir, "promote", slave_status="")
    assert rc == 0 and "promote" in calls
    assert (bin_dir.parent / "log.marks").read_text() == f"check {SELF}\n"
    rc, calls = run(bin_dir, "promote", slave_status="", marks_refuse="stack-app2 was marked out of sync at X")
    assert rc == 1 and "promote" not in calls
    assert any("promote: stack-app2 was marked out of sync at X" in c for c in calls), calls
    # a replica refused goes on receiving (the promotion had stopped its IO thread)
    rc, calls = run(bin_dir, "promote", slave_status=_slave(), marks_refuse="refused")
    assert rc == 1 and "promote" not in calls
    assert calls.index("sql: STOP SLAVE IO_THREAD") < calls.index("sql: START SLAVE IO_THREAD")
    # pacemaker's node name when it gives one
    run(bin_dir, "promote", slave_status="", on_node="stack-app9")
    assert (bin_dir.parent / "log.marks").read_text() == "check stack-app9\n"
    # no name to check the marks for: refused, not promoted unchecked
    rc, calls = run(bin_dir, "promote", slave_status="", no_name=True)
    assert rc == 1 and "promote" not in calls and not (bin_dir.parent / "log.marks").exists()


def test_a_node_without_the_marks_store_promotes_as_before(bin_dir: Path) -> None:
    rc, calls = run(bin_dir, "promote", slave_status="", sync_marks="absent")
    assert rc == 0 and calls[-1] == "promote" and not (bin_dir.parent / "log.marks").exists()
