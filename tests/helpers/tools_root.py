"""Run Debian 13's own tools on rendered artifacts, in the cached trixie tools root.

The host is Debian 12; its cloud-init, sshd and shellcheck are older than what the
nodes run, so every check happens inside `chroot TOOLS_ROOT` instead.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from lab.image import ensure_image
from tests.helpers.expect import parse_sshd_t


def tools_root() -> Path:
    return ensure_image("tools")


@contextmanager
def scratch(root: Path) -> Iterator[tuple[Path, str]]:
    """A private directory inside the root: (host path, path as seen in the chroot)."""
    inside = f"/tmp/test-{uuid.uuid4().hex[:10]}"
    host = root / inside.lstrip("/")
    host.mkdir(parents=True)
    try:
        yield host, inside
    finally:
        shutil.rmtree(host, ignore_errors=True)


def chroot(root: Path, *cmd: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["chroot", str(root), *cmd], capture_output=True, text=True, check=check,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})


def cloud_init_schema(root: Path, user_data: str) -> subprocess.CompletedProcess[str]:
    with scratch(root) as (host, inside):
        (host / "user-data").write_text(user_data)
        return chroot(root, "cloud-init", "schema", "--config-file", f"{inside}/user-data")


def sshd_effective(root: Path, dropins: dict[str, str],
                   extra: Sequence[str] = ()) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    """`sshd -T` over Debian 13's own sshd_config with the given drop-ins beside it.

    Debian's main file is copied with its Include pointed at a private
    sshd_config.d, so precedence is exactly as on a node.
    """
    main = (root / "etc/ssh/sshd_config").read_text()
    with scratch(root) as (host, inside):
        (host / "sshd_config.d").mkdir()
        for name, text in dropins.items():
            (host / "sshd_config.d" / name).write_text(text)
        (host / "sshd_config").write_text(
            main.replace("/etc/ssh/sshd_config.d/*.conf", f"{inside}/sshd_config.d/*.conf"))
        chroot(root, "mkdir", "-p", "/run/sshd")
        test = chroot(root, "/usr/sbin/sshd", "-t", "-f", f"{inside}/sshd_config")
        if test.returncode != 0:
            return test, {}
        effective = chroot(root, "/usr/sbin/sshd", "-T", "-f", f"{inside}/sshd_config", *extra)
    return effective, parse_sshd_t(effective.stdout)


def shellcheck(root: Path, script: Path) -> subprocess.CompletedProcess[str]:
    with scratch(root) as (host, inside):
        shutil.copy(script, host / script.name)
        return chroot(root, "shellcheck", "--severity=style", f"{inside}/{script.name}")
