"""Cached Debian 13 "trixie" roots for the lab, kept outside the repo.

Two kinds:
  tools  small root whose trixie tools (cloud-init schema, sshd -t/-T, shellcheck,
         the agents' meta-data) validate the project's artifacts; the host's
         bookworm versions are too old.
  node   pristine root that lab nodes boot from (as an overlay lower dir): the base a
         DigitalOcean debian-13-x64 droplet has, plus every role package of
         cloudinit/firstboot/packages.yaml.

`python -m lab.image --kind tools|node` builds if needed and prints the root path as
the last stdout line; `--print-key` prints that path without building.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence

from infra.userdata import package_lists as first_boot_packages
from lab.procfs import mounts_under, pids_rooted_under

# Bump when the build steps change in a way the package lists do not show.
BUILDER_VERSION = "2"
RELEASE = "trixie"
HOST_RELEASE = "bookworm"  # the host's suite, used to find its configured mirror
HOST_APT_DIR = pathlib.Path("/etc/apt")
KINDS = ("tools", "node")


# debootstrap fails configuring python3-cryptography unless python3-cffi-backend is
# listed explicitly (see lab-feasibility notes).
TOOLS_PACKAGES: tuple[str, ...] = (
    "python3-cffi-backend",
    "cloud-init",
    "openssh-server",
    "shellcheck",
    "locales",
    # The libraries the node-side agents load (ocf-shellfuncs, fencing.py), for the
    # agents' meta-data golden files (tests/tools/test_agent_metadata.py).
    "resource-agents",
    "fence-agents-common",
    # pyflakes for the fence agent (a python script outside ruff's reach of Debian's python).
    "pyflakes3",
)

# What DigitalOcean's debian-13-x64 image already carries, plus lab-only checks.
NODE_BASE_PACKAGES: tuple[str, ...] = (
    "python3-cffi-backend",
    "cloud-init",
    "openssh-server",
    "sudo",
    "dbus",  # without it `systemctl` as non-root fails in a minbase root
    "iproute2",
    "ca-certificates",
    "locales",
    "systemd-sysv",
    # priority "important", so on every standard install but not in minbase: without
    # cron, logwatch's and rkhunter's cron.daily jobs would silently never run.
    "cron",
    "logrotate",
    # cloud-init tries renderers eni > netplan > networkd; ifupdown makes it pick eni
    # (/etc/network/interfaces.d/50-cloud-init, brought up by networking.service),
    # as on DigitalOcean's Debian images. Without it, networkd would be picked but
    # systemd-networkd is not enabled on Debian.
    "ifupdown",
    "procps",
    "iputils-ping",
    "lynis",
)

LOCALE = "en_US.UTF-8"
CHROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
    "DEBCONF_NONINTERACTIVE_SEEN": "true",
}
APT_OPTS = (
    "-y",
    "--no-install-recommends",
    "-o", "Dpkg::Options::=--force-confdef",
    "-o", "Dpkg::Options::=--force-confold",
)


def log(msg: str) -> None:
    print(f"[lab.image] {msg}", file=sys.stderr, flush=True)


def lab_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("DO_HA_LAB_DIR", "/var/lib/do-ha-stack-lab"))


def images_dir() -> pathlib.Path:
    return lab_dir() / "images"


def role_packages() -> list[str]:
    """Sorted union of every list in cloudinit/firstboot/packages.yaml."""
    return sorted({pkg for pkgs in first_boot_packages().values() for pkg in pkgs})


def package_lists(kind: str) -> dict[str, list[str]]:
    if kind == "tools":
        return {"base": sorted(TOOLS_PACKAGES)}
    if kind == "node":
        return {"base": sorted(NODE_BASE_PACKAGES), "roles": role_packages()}
    raise ValueError(f"unknown image kind {kind!r} (want one of {', '.join(KINDS)})")


def image_key(kind: str) -> str:
    blob = json.dumps(
        {"kind": kind, "release": RELEASE, "packages": package_lists(kind), "builder": BUILDER_VERSION},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def image_path(kind: str) -> pathlib.Path:
    return images_dir() / f"{kind}-{RELEASE}-{image_key(kind)}"


# --- host mirror discovery -------------------------------------------------------


def _host_apt_entries() -> Iterator[tuple[str, list[str]]]:
    """(uri, suites) of every enabled deb entry in the host's apt config."""
    root = HOST_APT_DIR
    files = [root / "sources.list", *sorted((root / "sources.list.d").glob("*"))]
    for f in files:
        if not f.is_file():
            continue
        text = f.read_text(errors="replace")
        if f.suffix == ".sources":  # deb822 stanzas
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line or line[:1].isspace():
                        continue
                    k, v = line.split(":", 1)
                    fields[k.strip().lower()] = v.strip()
                enabled = fields.get("enabled", "yes").lower() != "no"
                if not enabled or "deb" not in fields.get("types", "").split():
                    continue
                for uri in fields.get("uris", "").split():
                    yield uri, fields.get("suites", "").split()
        elif f.name == "sources.list" or f.suffix == ".list":  # apt ignores other names
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()  # drop [options]
                if len(words) >= 3 and words[0] == "deb":
                    yield words[1], [words[2]]


def host_mirrors() -> tuple[str, str | None]:
    """The host's bookworm mirror and security mirror (None if not configured)."""
    main = security = None
    for uri, suites in _host_apt_entries():
        if main is None and HOST_RELEASE in suites:
            main = uri
        if security is None and f"{HOST_RELEASE}-security" in suites:
            security = uri
    if main is None:
        raise RuntimeError(f"no '{HOST_RELEASE}' entry in the host's apt sources: cannot pick a mirror")
    return main.rstrip("/"), security.rstrip("/") if security else None


def _reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=15):
            return True
    except (urllib.error.URLError, OSError):
        return False


def trixie_sources(main: str, security: str | None) -> str:
    out = (
        f"Types: deb\nURIs: {main}\nSuites: {RELEASE} {RELEASE}-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
    if security and _reachable(f"{security}/dists/{RELEASE}-security/InRelease"):
        out += (
            f"\nTypes: deb\nURIs: {security}\nSuites: {RELEASE}-security\nComponents: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        )
    else:
        log(f"no reachable security mirror ({security}); using {RELEASE} + {RELEASE}-updates only")
    return out


# --- mounts, processes and removal ----------------------------------------------


def _in_use(path: pathlib.Path) -> bool:
    """True if anything is mounted in the image or uses it (e.g. an overlay lower dir)."""
    mountinfo = pathlib.Path("/proc/self/mountinfo").read_text()
    return bool(mounts_under(path)) or str(path.resolve()) in mountinfo


def _kill_chroot_procs(root: pathlib.Path) -> None:
    """Stop daemons a maintainer script may have left running inside our build root."""
    for pid in pids_rooted_under(root):
        log(f"killing leftover process {pid} in build root")
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _remove_tree(path: pathlib.Path) -> None:
    # rmtree through a live /proc or /dev mount would hit the host: unmount first,
    # and refuse if anything is still mounted.
    _kill_chroot_procs(path)
    for mnt in mounts_under(path):
        subprocess.run(["umount", "-l", mnt], check=False)
    if mounts_under(path):
        raise RuntimeError(f"refusing to delete {path}: still has mounts")
    shutil.rmtree(path)


@contextlib.contextmanager
def _apt_session(root: pathlib.Path) -> Iterator[None]:
    """Mounts and policy for maintainer scripts run by apt in the root."""
    # /proc only: /dev stays debootstrap's own nodes (never bind the host's /dev: a
    # later rmtree would delete real device nodes).
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\n# lab image build: never start services in the chroot\nexit 101\n")
    policy.chmod(0o755)
    subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
    try:
        yield
    finally:
        _kill_chroot_procs(root)
        subprocess.run(["umount", "-l", str(root / "proc")], check=False)
        policy.unlink(missing_ok=True)


# --- build steps ----------------------------------------------------------------


def _run(cmd: Sequence[str], env: dict[str, str] | None = None, capture: bool = False) -> str:
    log("+ " + " ".join(cmd))
    # Child output goes to stderr: the CLI's stdout is reserved for the result path.
    res = subprocess.run(list(cmd), check=True, text=True, env=env,
                         stdout=subprocess.PIPE if capture else sys.stderr)
    return res.stdout if capture else ""


def _chroot(root: pathlib.Path, *cmd: str, capture: bool = False) -> str:
    return _run(["chroot", str(root), *cmd], env=CHROOT_ENV, capture=capture)


def _debootstrap(root: pathlib.Path, include: Sequence[str], mirror: str) -> None:
    _run(["debootstrap", "--variant=minbase", "--components=main",
          "--include=" + ",".join(include), RELEASE, str(root), mirror])


def _configure_apt(root: pathlib.Path, main: str, security: str | None) -> None:
    (root / "etc/apt/sources.list").unlink(missing_ok=True)  # debootstrap's one-line file
    (root / "etc/apt/sources.list.d/debian.sources").write_text(trixie_sources(main, security))
    _chroot(root, "apt-get", "update")
    # debootstrap only reads the release suite; a droplet has updates/security applied.
    with _apt_session(root):
        _chroot(root, "apt-get", "dist-upgrade", *APT_OPTS)


def _gen_locale(root: pathlib.Path) -> None:
    # cloud-init's locale module fails unless en_US.UTF-8 exists.
    (root / "etc/locale.gen").write_text(f"{LOCALE} UTF-8\n")
    _chroot(root, "locale-gen")
    (root / "etc/default/locale").write_text(f"LANG={LOCALE}\n")


def missing_packages(root: pathlib.Path, pkgs: Sequence[str]) -> list[str]:
    """Packages apt in the root has no installable candidate for."""
    out = _chroot(root, "apt-cache", "policy", *pkgs, capture=True)
    candidates: dict[str, str] = {}
    current = None
    for line in out.splitlines():
        if not line.startswith(" ") and line.endswith(":"):
            current = line[:-1]
        elif current and line.strip().startswith("Candidate:"):
            candidates[current] = line.split(":", 1)[1].strip()
    return [p for p in pkgs if candidates.get(p, "(none)") == "(none)"]


def _build_tools(root: pathlib.Path, main: str, security: str | None) -> None:
    _debootstrap(root, TOOLS_PACKAGES, main)
    _configure_apt(root, main, security)
    _gen_locale(root)
    # sshd -t/-T refuse to run without host keys and the privsep directory.
    _chroot(root, "ssh-keygen", "-A")
    (root / "run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
    _chroot(root, "apt-get", "clean")


def _build_node(root: pathlib.Path, main: str, security: str | None) -> None:
    roles = role_packages()
    _debootstrap(root, NODE_BASE_PACKAGES, main)
    _configure_apt(root, main, security)
    missing = missing_packages(root, roles)
    if missing:
        raise RuntimeError(f"not installable on {RELEASE} (fix cloudinit/firstboot/packages.yaml): {' '.join(missing)}")
    _gen_locale(root)
    with _apt_session(root):
        _chroot(root, "apt-get", "install", *APT_OPTS, *roles)
    (root / "etc/cloud/cloud.cfg.d/90-lab-datasource.cfg").write_text(
        "# The lab seeds every node through NoCloud (var/lib/cloud/seed/nocloud).\n"
        "datasource_list: [ NoCloud, None ]\n"
    )
    _make_pristine(root)


def _make_pristine(root: pathlib.Path) -> None:
    # Every node cloned from this root must look like a never-booted droplet.
    _chroot(root, "cloud-init", "clean", "--logs", "--machine-id")
    shutil.rmtree(root / "var/lib/cloud", ignore_errors=True)
    (root / "var/lib/cloud").mkdir(mode=0o755)
    (root / "etc/machine-id").write_text("")  # systemd makes a fresh id at first boot
    dbus_id = root / "var/lib/dbus/machine-id"
    if dbus_id.exists() and not dbus_id.is_symlink():
        dbus_id.unlink()
    for key in (root / "etc/ssh").glob("ssh_host_*"):  # cloud-init makes per-node keys
        key.unlink()
    # debootstrap copied the build host's identity; nodes get theirs from the seed.
    (root / "etc/hostname").write_text("localhost\n")
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    (root / "etc/resolv.conf").write_text("")
    _chroot(root, "apt-get", "clean")


BUILDERS = {"tools": _build_tools, "node": _build_node}


@contextlib.contextmanager
def _lock(kind: str) -> Iterator[None]:
    images_dir().mkdir(parents=True, exist_ok=True)
    with open(images_dir() / f".{kind}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def ensure_image(kind: str) -> pathlib.Path:
    """Return the root for `kind`, building it first if its key changed."""
    final = image_path(kind)
    if final.is_dir():  # complete images only ever appear by rename
        return final
    if os.geteuid() != 0:
        raise PermissionError("building a lab image needs root (debootstrap, chroot)")
    with _lock(kind):
        if final.is_dir():  # another builder finished while we waited
            return final
        prefix = f"{kind}-{RELEASE}-"
        for stale in images_dir().glob(f".{prefix}*.tmp"):  # interrupted earlier builds
            log(f"removing interrupted build {stale}")
            _remove_tree(stale)
        tmp = images_dir() / f".{final.name}.tmp"
        start = time.monotonic()
        main, security = host_mirrors()
        try:
            BUILDERS[kind](tmp, main, security)
            _kill_chroot_procs(tmp)
            os.rename(tmp, final)
        except BaseException:
            if tmp.exists():
                _remove_tree(tmp)
            raise
        log(f"built {final} in {time.monotonic() - start:.0f} s")
        for old in images_dir().glob(f"{prefix}*"):
            if old == final or not old.is_dir():
                continue
            if _in_use(old):  # a running lab node still has it as its lower dir
                log(f"keeping older image {old}: in use")
            else:
                log(f"removing older image {old}")
                _remove_tree(old)
    return final


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.image", description=__doc__.splitlines()[0])
    ap.add_argument("--kind", required=True, choices=KINDS)
    ap.add_argument("--print-key", action="store_true", help="print the image path without building")
    args = ap.parse_args(argv)
    # SIGTERM as an exception, so an interrupted build unmounts /proc and removes its
    # temp root instead of leaving both behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(image_path(args.kind) if args.print_key else ensure_image(args.kind))
    return 0


if __name__ == "__main__":
    sys.exit(main())
