"""`make lab-down` leaves nothing behind, also after an interrupted run.

It tears the session's lab down for real (fixture `lab_teardown`: tests/lab/conftest.py
runs it last, and a later test would bring the lab up again), after adding the debris
an interrupted bring-up can leave.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from lab.bringup import down, is_stale
from lab.procfs import mounts_under, pids_rooted_under
from lab.topology import PREFIX, LabNode, run_dir

pytestmark = pytest.mark.lab


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(PREFIX)]


def test_down_removes_everything_even_half_made_debris(lab_teardown: list[LabNode], report: dict) -> None:
    # Debris of an interrupted run: a namespace with a process in it, and a mount.
    subprocess.run(["ip", "netns", "add", f"{PREFIX}debris"], check=True)
    sleeper = subprocess.Popen(["ip", "netns", "exec", f"{PREFIX}debris", "sleep", "600"])
    debris = run_dir() / "nodes" / "debris" / "root"
    debris.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(debris)], check=True)
    assert is_stale()

    start = time.monotonic()
    down()
    report["lab_down_s"] = round(time.monotonic() - start, 2)

    assert _namespaces() == []
    assert mounts_under(run_dir()) == []
    assert not run_dir().exists()
    assert pids_rooted_under(run_dir()) == []
    assert sleeper.wait(timeout=10) != 0  # killed, not finished
    for node in lab_teardown:
        assert pids_rooted_under(node.root) == []
    assert not is_stale()
