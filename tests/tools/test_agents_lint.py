"""The node-side agents (cloudinit/agents/) checked by Debian 13's own tools, without
running them: the fence agent compiled and linted by trixie's python, the resource
agent by trixie's shellcheck."""

from __future__ import annotations

import shutil

import pytest

from infra.paths import REPO_ROOT
from tests.helpers.tools_root import chroot, scratch, shellcheck, tools_root

pytestmark = pytest.mark.tools
FENCE_AGENT = REPO_ROOT / "cloudinit" / "agents" / "fence_digitalocean"
RESERVED_IP_AGENT = REPO_ROOT / "cloudinit" / "agents" / "reserved-ip"
MARIADB_WRAPPER = REPO_ROOT / "cloudinit" / "agents" / "mariadb"
OCF_LIB = REPO_ROOT / "cloudinit" / "agents" / "ocf-shellfuncs"


def test_reserved_ip_agent_passes_shellcheck() -> None:
    result = shellcheck(tools_root(), RESERVED_IP_AGENT)
    assert result.returncode == 0, result.stdout


def test_mariadb_agent_wrapper_passes_shellcheck() -> None:
    result = shellcheck(tools_root(), MARIADB_WRAPPER)
    assert result.returncode == 0, result.stdout


def test_the_ocf_library_the_wrapper_hands_the_packaged_agent_passes_shellcheck() -> None:
    result = shellcheck(tools_root(), OCF_LIB)
    assert result.returncode == 0, result.stdout


def test_fence_agent_compiles_with_debian_13s_python() -> None:
    root = tools_root()
    assert FENCE_AGENT.stat().st_mode & 0o111, "the agent must be executable"
    assert FENCE_AGENT.read_text().startswith("#!/usr/bin/python3")
    with scratch(root) as (host, inside):
        shutil.copy(FENCE_AGENT, host / "fence_digitalocean")
        result = chroot(root, "python3", "-m", "py_compile", f"{inside}/fence_digitalocean")
        assert result.returncode == 0, result.stderr
        # The check can fail: a syntax error is caught.
        (host / "broken").write_text(FENCE_AGENT.read_text().replace("def main():", "def main(:"))
        broken = chroot(root, "python3", "-m", "py_compile", f"{inside}/broken")
        assert broken.returncode != 0


def test_fence_agent_passes_pyflakes() -> None:
    root = tools_root()
    linters = [tool for tool in ("pyflakes3", "pyflakes", "flake8") if (root / "usr/bin" / tool).exists()]
    assert linters, "neither pyflakes nor flake8 is in the Debian 13 tools root (lab/image.py TOOLS_PACKAGES)"
    with scratch(root) as (host, inside):
        shutil.copy(FENCE_AGENT, host / "fence_digitalocean.py")
        for tool in linters:
            result = chroot(root, tool, f"{inside}/fence_digitalocean.py")
            assert result.returncode == 0, f"{tool}: {result.stdout}{result.stderr}"
