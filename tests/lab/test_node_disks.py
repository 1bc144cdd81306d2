"""A lab node's disk of its own (lab.containers, node disks "memory", which the seeding
benchmark uses): the node's writable layer on a filesystem no other node and not the
host shares, behaving as a droplet's disk does for what the steps do, and gone with
the lab's teardown. Needs root, not the lab."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from lab.containers import memory_disk, mount_overlay, teardown
from lab.procfs import mounts_under
from lab.topology import LabNode

pytestmark = pytest.mark.lab

PREFIX = "dohsdisk-"  # not the lab's (dohs-): its namespaces, cgroups and disks are left alone


def loop_backing_files() -> list[str]:
    out = subprocess.run(["losetup", "--list", "--noheadings", "--output", "BACK-FILE"],
                         capture_output=True, text=True, check=True).stdout
    return [line.strip() for line in out.splitlines() if f"/{PREFIX}" in line]


def test_a_memory_disk_is_the_nodes_own_and_goes_with_teardown(tmp_path: Path) -> None:
    lower = tmp_path / "image"
    (lower / "var/lib/mysql").mkdir(parents=True)
    (lower / "var/lib/mysql/ibdata1").write_text("from the image")
    base = tmp_path / "run"
    base.mkdir()
    one, two = (LabNode(name=n, index=i, prefix=PREFIX, base=base) for i, n in enumerate(("app1", "app2")))
    try:
        for node in (one, two):
            mount_overlay(node, lower, "memory")
        (one.root / "written").write_text("on app1's disk")
        assert (one.dir / "disk/upper/written").read_text() == "on app1's disk"
        assert not (two.root / "written").exists()
        # three filesystems: each node's, and the host's under the run directory
        assert len({os.stat(one.dir / "disk").st_dev, os.stat(two.dir / "disk").st_dev, os.stat(base).st_dev}) == 3
        # db-seed swaps a seeded copy in by rename, over a directory from the image
        os.rename(one.root / "var/lib/mysql", one.root / "var/lib/mysql.old")
        (one.root / "var/lib/mysql.seed").mkdir()
        os.rename(one.root / "var/lib/mysql.seed", one.root / "var/lib/mysql")
        assert memory_disk(one).exists() and memory_disk(two).exists()
        assert len(loop_backing_files()) == 2
    finally:
        teardown(PREFIX, base)
    assert not memory_disk(one).exists() and not memory_disk(two).exists()
    assert not base.exists() and not mounts_under(tmp_path)
    # the loop devices let go with their last unmount (else the files' memory stays taken)
    deadline = time.monotonic() + 5
    while loop_backing_files():
        assert time.monotonic() < deadline, loop_backing_files()
        time.sleep(0.1)


def test_a_disk_kind_the_lab_does_not_have_is_refused(tmp_path: Path) -> None:
    node = LabNode(name="app1", index=0, prefix=PREFIX, base=tmp_path)
    with pytest.raises(ValueError, match="node disk 'ssd': one of host, memory"):
        mount_overlay(node, tmp_path, "ssd")
    assert not mounts_under(tmp_path)
