"""What the kernel says about a directory tree: mounts in it, processes rooted in it.

Shared by the image builder (leftover daemons and mounts in a build root) and the
lab teardown (containers, overlays).
"""

from __future__ import annotations

import os
from pathlib import Path


def _inside(candidate: str, prefix: str) -> bool:
    return candidate == prefix or candidate.startswith(prefix + "/")


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path`, deepest first (the order to unmount them)."""
    prefix = str(path.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # mountinfo escapes spaces and the like as \\040
        point = line.split()[4].encode().decode("unicode_escape")
        if _inside(point, prefix):
            found.append(point)
    return sorted(found, key=len, reverse=True)


def pids_rooted_under(path: Path) -> list[int]:
    """Processes whose root directory is `path` or below (a chroot's or container's tree)."""
    prefix = str(path.resolve())
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            root = os.readlink(entry / "root")
        except OSError:
            continue
        if _inside(root, prefix):
            pids.append(int(entry.name))
    return pids


def pids_in_netns(netns_path: Path) -> list[int]:
    """Processes inside a network namespace (a lab node's container, whatever its root
    looks like from here: /proc/PID/root can read "/" when the container's root
    mount is not visible in this mount namespace)."""
    try:
        target = os.stat(netns_path).st_ino
    except FileNotFoundError:
        return []
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(entry / "ns" / "net").st_ino == target:
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids
