"""Measure the primary's write latency while the replica is seeded (lab only).

Before the seed step the primary gets some ballast (so the copy takes a while;
bench/seed.py brings its own), then a loop of single-row commits runs on it,
each timing itself with SYSDATE(6), until the seed step has finished. The worst
latency is the figure.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from lab.topology import SSH_OPTS, SWITCH_NS, LabNode, run_dir

BALLAST_ROWS = 200_000  # ~45 MB of rows to stream

BALLAST = """
USE do_ha_canary;
CREATE TABLE IF NOT EXISTS do_ha_canary.ballast (id INT PRIMARY KEY, pad CHAR(200) NOT NULL);
INSERT IGNORE INTO do_ha_canary.ballast SELECT seq, REPEAT('x', 200) FROM seq_1_to_{rows};
"""
SETUP = """
USE do_ha_canary;
DROP TABLE IF EXISTS do_ha_canary.seed_probe, do_ha_canary.seed_probe_stop;
CREATE TABLE IF NOT EXISTS do_ha_canary.seed_probe (id INT AUTO_INCREMENT PRIMARY KEY, latency_us BIGINT NOT NULL,
  at DATETIME(6) NULL);
CREATE TABLE IF NOT EXISTS do_ha_canary.seed_probe_stop (id INT PRIMARY KEY);
INSERT INTO do_ha_canary.seed_probe (latency_us) VALUES (0);
"""

# Each INSERT is one commit; each row carries the latency of the commit before it
# (measured with SYSDATE(6) around it), so every commit of the loop is timed.
LOOP = """
DELIMITER //
BEGIN NOT ATOMIC
  DECLARE t0 DATETIME(6);
  DECLARE prev_at DATETIME(6) DEFAULT NULL;
  DECLARE prev BIGINT DEFAULT 0;
  WHILE NOT EXISTS (SELECT 1 FROM do_ha_canary.seed_probe_stop) DO
    SET t0 = SYSDATE(6);
    INSERT INTO do_ha_canary.seed_probe (latency_us, at) VALUES (prev, prev_at);
    SET prev = TIMESTAMPDIFF(MICROSECOND, t0, SYSDATE(6)), prev_at = t0;
  END WHILE;
END //
"""

RESULT = ("SELECT COUNT(*), COALESCE(MAX(latency_us), 0), COALESCE(SUM(latency_us > 50000), 0) "
          "FROM do_ha_canary.seed_probe WHERE latency_us > 0")
WORST = ("SELECT DATE_FORMAT(at, '%T.%f'), latency_us FROM do_ha_canary.seed_probe "
         "WHERE latency_us > 0 ORDER BY latency_us DESC LIMIT 5")
CLEANUP = """
DROP TABLE IF EXISTS do_ha_canary.ballast, do_ha_canary.seed_probe, do_ha_canary.seed_probe_stop;
"""


def ssh_args(node: LabNode, command: str) -> list[str]:
    # One multiplexed connection: new ones count against the nodes' SSH rate limit.
    return ["ip", "netns", "exec", SWITCH_NS, "ssh", "-i", str(run_dir() / "admin_key"), *SSH_OPTS,
            "-o", "ControlMaster=auto", "-o", f"ControlPath={run_dir()}/cm-%C", "-o", "ControlPersist=300",
            f"deploy@{node.public_ip}", command]


def sql(node: LabNode, text: str, timeout: float = 300) -> str:
    """Run SQL as root on a node's MariaDB; its tab-separated output."""
    result = subprocess.run(ssh_args(node, "sudo -n mariadb -N -B"), input=text, capture_output=True, text=True,
                            timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"seed probe on {node.name}: {result.stderr.strip()[-500:]}")
    return result.stdout


@contextmanager
def seed_probe(primary: LabNode, result: dict, ballast_rows: int = BALLAST_ROWS) -> Iterator[None]:
    if ballast_rows:
        sql(primary, BALLAST.format(rows=ballast_rows))
    sql(primary, SETUP)
    loop = subprocess.Popen(ssh_args(primary, "sudo -n mariadb -N -B"), stdin=subprocess.PIPE, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert loop.stdin is not None
    loop.stdin.write(LOOP)
    loop.stdin.close()
    try:
        yield
    finally:
        sql(primary, "INSERT IGNORE INTO do_ha_canary.seed_probe_stop VALUES (1);")
        loop.wait(timeout=60)
        err = loop.stderr.read() if loop.stderr else ""
        count, worst, slow = sql(primary, RESULT).split()
        slowest = [{"at": at, "ms": round(int(us) / 1000, 1)}
                   for at, us in (line.split("\t") for line in sql(primary, WORST).splitlines())]
        result.update(writes=int(count), max_ms=round(int(worst) / 1000, 1), over_50ms=int(slow), slowest=slowest,
                      errors=loop.returncode,
                      stderr=err.strip()[-300:], ballast_rows=ballast_rows)
        sql(primary, CLEANUP)
