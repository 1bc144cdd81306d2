"""`make switchover`: whom it picks, what it refuses, the order of what it does, and
how it backs out (fake operations answer like the nodes; the lab runs the real
thing, tests/lab/test_lab_switchover.py)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.unit.test_replace_node import Recorder
from tests.unit.test_replace_node import report as bare_report
from tooling.health import Report
from tooling.node_ops import OperationError, Operations, stack_config
from tooling.replace_node import plan, replace
from tooling.scale import scale
from tooling.switchover import PLANNED_READ_ONLY, app_hosts, choose, switch, take_over_script

HOSTS = {"app1": "do-ha-stack-prod-app1", "app2": "do-ha-stack-prod-app2", "app3": "do-ha-stack-prod-app3"}


def healthy(primary: str = "app1", replicas: dict[str, int] | None = None, *problems: str) -> Report:
    lags = {"app2": 0} if replicas is None else replicas
    nodes = {primary: {"role": "primary", "ok": True}} | {n: {"role": "replica", "ok": True, "lag_s": lag}
                                                           for n, lag in lags.items()}
    r = bare_report(*problems)
    r.database = {"primary": primary, "nodes": nodes}
    return r


class Nodes(Recorder):
    """Recorder whose nodes answer: the primary its last GTID, the target whether it caught up."""

    def __init__(self, health: list[Report], gtid: str = "0-1-42", catch_up_rc: int = 0) -> None:
        super().__init__(health)
        self.gtid, self.catch_up_rc = gtid, catch_up_rc

    def ops(self) -> Operations:
        ops = super().ops()

        def run_on(node: str, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
            self.calls.append(("ssh", node, *argv))
            script = argv[-1]
            if "read_only=ON" in script:
                return subprocess.CompletedProcess(argv, 0, self.gtid + "\n", "")
            if "MASTER_GTID_WAIT" in script:
                return subprocess.CompletedProcess(argv, self.catch_up_rc, "", "did not apply" * self.catch_up_rc)
            return subprocess.CompletedProcess(argv, 0, "", "")

        ops.run_on = run_on
        return ops

    def scripts(self) -> list[tuple[str, str]]:
        """(node, script) of each shell command but the connection warm-ups."""
        return [(c[1], c[-1]) for c in self.calls
                if c[0] == "ssh" and c[2:5] == ("sudo", "-n", "sh") and c[-1] != "true"]


def test_without_a_target_the_replica_that_lags_least_takes_over() -> None:
    assert choose(healthy("app2", {"app1": 3, "app3": 0}), None) == ("app2", "app3")
    assert choose(healthy("app1", {"app2": 0, "app3": 0}), None) == ("app1", "app2")


@pytest.mark.parametrize("to, message", [
    ("app1", "TO=app1: it is the primary already"),
    ("witness", "TO='witness' is not an app node of prod; allowed: app2"),
    ("app9", "TO='app9' is not an app node"),
])
def test_a_target_that_cannot_take_over_is_refused(to: str, message: str) -> None:
    with pytest.raises(OperationError, match=message):
        choose(healthy(), to)


def test_a_replica_out_of_sync_is_not_a_target() -> None:
    r = healthy("app1", {"app2": 0, "app3": 0})
    r.database["nodes"]["app3"]["ok"] = False
    with pytest.raises(OperationError, match="TO=app3: its replica is not in sync"):
        choose(r, "app3")
    r.database["nodes"]["app2"]["ok"] = False
    with pytest.raises(OperationError, match="no replica in sync to take over from app1"):
        choose(r, None)


def test_a_degraded_stack_is_refused_with_nothing_done() -> None:
    rec = Nodes([healthy("app1", None, "storage: brick on app2 has 4 entries to heal")])
    with pytest.raises(OperationError, match="refusing to switch over on prod: it is degraded"):
        switch("prod", HOSTS, rec.ops())
    assert rec.calls == [("health",)]


def test_the_primary_turns_read_only_and_the_target_catches_up_before_the_scores_move() -> None:
    rec = Nodes([healthy(), healthy("app2", {"app1": 0})])
    after = switch("prod", HOSTS, rec.ops())
    assert after.database["primary"] == "app2"
    (on1, freeze), (on2, move), (on3, wait) = rec.scripts()
    assert on1 == "app1" and "SET GLOBAL read_only=ON; SELECT @@gtid_binlog_pos" in freeze
    # the moment is noted first, for the check of the primary (not a crash: the role is moving)
    assert freeze.index(f"date +%s > {PLANNED_READ_ONLY}") < freeze.index("read_only=ON")
    assert on2 == "app2"
    assert move == take_over_script("0-1-42", "do-ha-stack-prod-app2", "do-ha-stack-prod-app1")
    assert on3 == "app2" and "running on: do-ha-stack-prod-app2 Promoted$" in wait and "reserved-ip" in wait
    # The commands are valid shell, whatever they quote.
    for _, script in rec.scripts():
        assert subprocess.run(["sh", "-n", "-c", script]).returncode == 0, script


def test_a_target_that_does_not_catch_up_leaves_the_primary_writable_and_in_place() -> None:
    rec = Nodes([healthy()], catch_up_rc=3)
    with pytest.raises(OperationError, match="app2 did not take over from app1; app1 is writable again"):
        switch("prod", HOSTS, rec.ops())
    scripts = rec.scripts()
    assert scripts[-1] == ("app1", f"mariadb -e 'SET GLOBAL read_only=OFF' && rm -f {PLANNED_READ_ONLY}")
    assert not any("crm_attribute" in s and "--update" in s and on == "app1" for on, s in scripts)


def test_a_garbled_gtid_is_never_pasted_into_sql() -> None:
    rec = Nodes([healthy()], gtid="0-1-42'); DROP TABLE x; --")
    with pytest.raises(OperationError, match="as its last transaction; it is writable again"):
        switch("prod", HOSTS, rec.ops())
    assert [on for on, _ in rec.scripts()] == ["app1", "app1"]  # frozen, then writable again; nothing else


def test_replacing_the_primary_switches_over_before_the_standby() -> None:
    rec = Nodes([healthy("app2", {"app1": 0}), healthy("app1", {"app2": 0}), healthy("app1", {"app2": 0})])
    replace(plan("staging", "app2"), rec.ops())
    scripts = [on for on, _ in rec.scripts()]
    assert scripts == ["app2", "app1", "app1"]
    standby = next(i for i, c in enumerate(rec.calls) if "standby" in c)
    assert standby > max(i for i, c in enumerate(rec.calls) if c[2:5] == ("sudo", "-n", "sh"))


def test_replacing_a_replica_needs_no_switchover() -> None:
    rec = Nodes([healthy("app1"), healthy("app1")])
    replace(plan("staging", "app2"), rec.ops())
    assert rec.scripts() == []


@pytest.mark.usefixtures("three_app_nodes")
def test_a_leaving_primary_hands_over_to_a_node_that_stays() -> None:
    rec = Nodes([healthy("app3", {"app1": 0, "app2": 0}), healthy("app1", {"app2": 0, "app3": 0}),
                 healthy("app1", {"app2": 0})])
    scale("prod", 2, rec.ops(), yes=True)
    move = next(s for on, s in rec.scripts() if "MASTER_GTID_WAIT" in s)
    assert "--node do-ha-stack-prod-app1 --update 100" in move
    first_standby = next(i for i, c in enumerate(rec.calls) if "standby" in c)
    assert first_standby > next(i for i, c in enumerate(rec.calls) if c[2:5] == ("sudo", "-n", "sh"))


def test_app_hosts_are_the_stacks_app_nodes() -> None:
    assert app_hosts(stack_config("prod")) == {"app1": "do-ha-stack-prod-app1", "app2": "do-ha-stack-prod-app2"}


def test_commands_reach_a_node_as_one_word_over_one_shared_connection(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse
    import json as json_

    from tooling import node_ops
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json_.dumps({"reservedIp": "198.51.100.10", "nodes": {
        "app1": {"role": "app", "publicIpv4": "198.51.100.11"}}}))
    seen: list[list[str]] = []
    monkeypatch.setattr(node_ops.subprocess, "run", lambda argv, **_: seen.append(argv) or
                        subprocess.CompletedProcess(argv, 0, "", ""))
    args = argparse.Namespace(stack="prod", outputs=str(outputs), user="deploy", identity=None, ssh_option=[])
    ops = node_ops.cli_operations(args, {})
    ops.run_on("app1", ["sudo", "-n", "sh", "-c", "mariadb -e 'SET GLOBAL read_only=ON'"])
    ops.run_on("app1", ["sudo", "-n", "true"])
    first, second = seen
    assert first[-1] == "sudo -n sh -c 'mariadb -e '\"'\"'SET GLOBAL read_only=ON'\"'\"''"
    assert first[-2] == "deploy@198.51.100.11"
    control = [o for o in first if o.startswith("ControlPath=")]
    assert control and control == [o for o in second if o.startswith("ControlPath=")]
    assert "ControlMaster=auto" in first


SYNCED = "mark-in-sync app2"


def _take_over(tmp_path: Path, waited: str, current: str, delete_rc: int = 0) -> tuple[int, list[str]]:
    """take_over_script under bash, MariaDB and crm_attribute stood in for."""
    (tmp_path / "mariadb").write_text(f"""#!/bin/sh
case "$*" in *MASTER_GTID_WAIT*) echo {waited} ;; *gtid_current_pos*) echo {current} ;; esac
""")
    (tmp_path / "crm_attribute").write_text(f"""#!/bin/sh
echo "$4 ${{6#do-ha-stack-prod-}} $7" >> "{tmp_path}/calls"
case "$6 $7" in *app1" --delete") exit {delete_rc} ;; esac
""")
    # the in-sync mark above every stored out-of-sync mark (cloudinit/app/sync-marks)
    (tmp_path / "sync-marks").write_text(f"""#!/bin/sh
echo "$1 ${{2#do-ha-stack-prod-}}" >> "{tmp_path}/calls"
""")
    for tool in ("mariadb", "crm_attribute", "sync-marks"):
        (tmp_path / tool).chmod(0o755)
    script = take_over_script("0-1-42", "do-ha-stack-prod-app2", "do-ha-stack-prod-app1")
    result = subprocess.run(["sh", "-c", script], env={"PATH": f"{tmp_path}:/usr/bin:/bin",
                                                       "DO_HA_SYNC_MARKS": str(tmp_path / "sync-marks")},
                            capture_output=True, text=True, timeout=10)
    calls = (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []
    return result.returncode, calls


@pytest.mark.parametrize("waited, current, delete_rc, rc, calls", [
    # caught up: in sync (the guard's mark), then the scores
    ("0", "0-2-7", 0, 0, [SYNCED, "master-mariadb app2 --update", "master-mariadb app1 --delete"]),
    ("-1", "0-2-7", 0, 3, []),  # not caught up: nothing moves
    ("-1", "0-1-42", 0, 0, [SYNCED, "master-mariadb app2 --update", "master-mariadb app1 --delete"]),  # led since
    ("0", "0-1-42", 1, 4, [SYNCED, "master-mariadb app2 --update", "master-mariadb app1 --delete",
                           "master-mariadb app2 --delete"]),  # scores put back
])
def test_the_target_moves_the_scores_only_once_caught_up_and_all_or_nothing(
        tmp_path: Path, waited: str, current: str, delete_rc: int, rc: int, calls: list[str]) -> None:
    got_rc, got_calls = _take_over(tmp_path, waited, current, delete_rc)
    assert (got_rc, got_calls) == (rc, calls)


def test_a_node_without_the_marks_store_is_marked_in_sync_with_the_time(tmp_path: Path) -> None:
    before_ms = time.time_ns() // 1_000_000
    script = take_over_script("0-1-42", "do-ha-stack-prod-app2", "do-ha-stack-prod-app1")
    (tmp_path / "mariadb").write_text("#!/bin/sh\necho 0\n")
    (tmp_path / "crm_attribute").write_text(f"""#!/bin/sh
[ "$4 $7" != "do-ha-db-in-sync --update" ] || echo "$8" > "{tmp_path}/in-sync-value"
""")
    for tool in ("mariadb", "crm_attribute"):
        (tmp_path / tool).chmod(0o755)
    result = subprocess.run(["sh", "-c", script], env={"PATH": f"{tmp_path}:/usr/bin:/bin",
                                                       "DO_HA_SYNC_MARKS": str(tmp_path / "absent")},
                            capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr
    # a time in ms, as the guard writes it (a mark of 1 is older than every stored mark)
    assert int((tmp_path / "in-sync-value").read_text()) >= before_ms
