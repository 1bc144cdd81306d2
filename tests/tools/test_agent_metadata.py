"""The agents' metadata against golden files, regenerated with Debian 13's own libraries.

What pacemaker reads from an agent (`reserved-ip meta-data`, `fence_digitalocean -o
metadata`) is its interface: parameter names, types, defaults, actions, timeouts.
A change to it must be deliberate, so the expected output is kept in
tests/data/metadata/<agent>.xml and compared in full.

The output depends on more than the agent: fence_digitalocean's parameters come
partly from fence-agents' fencing.py, and reserved-ip sources resource-agents'
ocf-shellfuncs. Both run here inside the cached trixie tools root (which carries
fence-agents-common and resource-agents), from a scratch copy of the agent.

After an intended change (to an agent, or a Debian update of those libraries),
refresh the golden files and review their diff before committing it:

    DO_HA_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/tools/test_agent_metadata.py
"""

from __future__ import annotations

import difflib
import os
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.paths import CLOUDINIT_DIR, REPO_ROOT
from tests.helpers.tools_root import chroot, scratch, tools_root

GOLDEN_DIR = REPO_ROOT / "tests" / "data" / "metadata"
UPDATE_ENV = "DO_HA_UPDATE_GOLDEN"
REFRESH = f"{UPDATE_ENV}=1 .venv/bin/python -m pytest -q tests/tools/test_agent_metadata.py"


@dataclass(frozen=True)
class Agent:
    name: str
    # how the agent is started inside the root; {path} is the scratch copy
    command: tuple[str, ...]
    # a file the library package installs, proving the root carries it
    library: str

    @property
    def source(self) -> Path:
        return CLOUDINIT_DIR / "agents" / self.name

    @property
    def golden(self) -> Path:
        return GOLDEN_DIR / f"{self.name}.xml"


AGENTS = {
    agent.name: agent
    for agent in (
        # As pacemaker runs an OCF agent: OCF_ROOT set, the action as the argument.
        Agent("reserved-ip", ("env", "OCF_ROOT=/usr/lib/ocf", "{path}", "meta-data"),
              "usr/lib/ocf/lib/heartbeat/ocf-shellfuncs"),
        # -B: no __pycache__ left in the root's /usr/share/fence.
        Agent("fence_digitalocean", ("python3", "-B", "{path}", "-o", "metadata"),
              "usr/share/fence/fencing.py"),
    )
}


def generate(root: Path, agent: Agent) -> str:
    """The agent's metadata output, run from a scratch copy inside the tools root."""
    assert (root / agent.library).is_file(), f"the tools root lacks /{agent.library} (see lab/image.py)"
    with scratch(root) as (host, inside):
        shutil.copy2(agent.source, host / agent.name)
        command = [part.format(path=f"{inside}/{agent.name}") for part in agent.command]
        result = chroot(root, *command)
    assert result.returncode == 0, f"{agent.name}: exit {result.returncode}\n{result.stdout}{result.stderr}"
    return result.stdout


def difference(agent: Agent, expected: str, actual: str) -> str:
    """A unified diff, golden file first; empty when they match."""
    return "".join(difflib.unified_diff(
        expected.splitlines(keepends=True), actual.splitlines(keepends=True),
        fromfile=f"{agent.golden.relative_to(REPO_ROOT)} (golden)",
        tofile=f"{agent.name} metadata on Debian 13 (now)"))


@pytest.fixture(scope="module")
def root() -> Path:
    return tools_root()


@pytest.fixture(scope="module")
def generated(root: Path) -> dict[str, str]:
    return {name: generate(root, agent) for name, agent in AGENTS.items()}


@pytest.mark.tools
@pytest.mark.parametrize("name", sorted(AGENTS))
def test_metadata_matches_the_golden_file(generated: dict[str, str], name: str) -> None:
    agent = AGENTS[name]
    actual = generated[name]
    if os.environ.get(UPDATE_ENV) == "1":
        agent.golden.parent.mkdir(parents=True, exist_ok=True)
        agent.golden.write_text(actual)
    assert agent.golden.is_file(), f"no golden file {agent.golden.relative_to(REPO_ROOT)}; create it: {REFRESH}"
    diff = difference(agent, agent.golden.read_text(), actual)
    assert not diff, (f"{name}: its metadata differs from the golden file. If the change is intended, "
                      f"refresh with `{REFRESH}` and commit the reviewed diff.\n{diff}")


@pytest.mark.tools
def test_the_comparison_catches_a_changed_golden_file(generated: dict[str, str]) -> None:
    agent = AGENTS["reserved-ip"]
    golden = agent.golden.read_text()
    changed = golden.replace('<action name="start" timeout="60s" />', '<action name="start" timeout="90s" />')
    assert changed != golden
    diff = difference(agent, changed, generated[agent.name])
    assert '-<action name="start" timeout="90s" />' in diff
    assert '+<action name="start" timeout="60s" />' in diff


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_golden_files_are_well_formed_agent_metadata(name: str) -> None:
    agent = AGENTS[name]
    try:
        doc = ET.fromstring(agent.golden.read_bytes())
    except ET.ParseError as exc:
        pytest.fail(f"{agent.golden.relative_to(REPO_ROOT)} is not well-formed XML: {exc}")
    assert doc.tag == "resource-agent" and doc.get("name") == name
    params = [p.get("name") for p in doc.iterfind("parameters/parameter")]
    actions = {a.get("name") for a in doc.iterfind("actions/action")}
    assert params and len(params) == len(set(params)), params
    assert {"monitor", "meta-data" if name == "reserved-ip" else "metadata"} <= actions, actions


def test_the_well_formedness_check_can_fail() -> None:
    broken = AGENTS["fence_digitalocean"].golden.read_text().replace("</parameters>", "", 1)
    with pytest.raises(ET.ParseError):
        ET.fromstring(broken)
