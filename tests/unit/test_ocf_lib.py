"""What the packaged MariaDB agent loads as its ocf-shellfuncs under the wrapper
(cloudinit/agents/ocf-shellfuncs): the packaged library, with the node's name taken
from pacemaker's on_node when an action has it. Stand-ins play the packaged
library and agent here; the lab loads the real ones (tests/lab/test_lab_cluster.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from infra.paths import REPO_ROOT

SHIM = REPO_ROOT / "cloudinit" / "agents" / "ocf-shellfuncs"
WRAPPER = REPO_ROOT / "cloudinit" / "agents" / "mariadb"

# The packaged agent's first lines, as far as loading goes.
AGENT = """: ${OCF_FUNCTIONS_DIR=${OCF_ROOT}/lib/heartbeat}
. ${OCF_FUNCTIONS_DIR}/ocf-shellfuncs
. ${OCF_FUNCTIONS_DIR}/mysql-common.sh
echo "$NODENAME $OCF_FUNCTIONS_DIR"
"""


@pytest.fixture
def ocf_root(tmp_path: Path) -> Path:
    lib = tmp_path / "ocf" / "lib" / "heartbeat"
    lib.mkdir(parents=True)
    (lib / "ocf-shellfuncs").write_text('ocf_local_nodename() { echo "asked-the-cluster"; }\n')
    (lib / "mysql-common.sh").write_text("NODENAME=$(ocf_local_nodename)\n")
    shim_dir = tmp_path / "shim"
    shim_dir.mkdir()
    (shim_dir / "ocf-shellfuncs").write_text(SHIM.read_text())
    return tmp_path


def load(root: Path, on_node: str | None) -> list[str]:
    env = {"PATH": os.environ["PATH"], "OCF_ROOT": str(root / "ocf"), "OCF_FUNCTIONS_DIR": str(root / "shim")}
    if on_node is not None:
        env["OCF_RESKEY_CRM_meta_on_node"] = on_node
    done = subprocess.run(["bash", "-c", AGENT], env=env, capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_an_action_pacemaker_runs_takes_its_node_name_from_pacemaker(ocf_root: Path) -> None:
    # and everything after ocf-shellfuncs loads from the packaged directory
    assert load(ocf_root, "s-app1") == ["s-app1", str(ocf_root / "ocf" / "lib" / "heartbeat")]


@pytest.mark.parametrize("on_node", [None, ""])
def test_a_call_pacemaker_does_not_make_asks_as_the_packaged_function_does(ocf_root: Path,
                                                                           on_node: str | None) -> None:
    assert load(ocf_root, on_node) == ["asked-the-cluster", str(ocf_root / "ocf" / "lib" / "heartbeat")]


def test_a_packaged_library_without_the_function_is_loaded_as_it_is(ocf_root: Path) -> None:
    (ocf_root / "ocf" / "lib" / "heartbeat" / "ocf-shellfuncs").write_text("LOADED=yes\n")
    (ocf_root / "ocf" / "lib" / "heartbeat" / "mysql-common.sh").write_text("NODENAME=$LOADED\n")
    assert load(ocf_root, "s-app1")[0] == "yes"


@pytest.mark.parametrize("installed", [True, False])
def test_the_wrapper_points_the_packaged_agent_at_it_when_installed(tmp_path: Path, installed: bool) -> None:
    lib = tmp_path / "ocf-lib"
    if installed:
        lib.mkdir()
        (lib / "ocf-shellfuncs").write_text(SHIM.read_text())
    distrib = tmp_path / "distrib"
    distrib.write_text('#!/bin/bash\necho "${OCF_FUNCTIONS_DIR:-unset}"\n')
    distrib.chmod(0o755)
    env = {"PATH": os.environ["PATH"], "DO_HA_MARIADB_DISTRIB": str(distrib), "DO_HA_OCF_LIB": str(lib)}
    done = subprocess.run(["bash", str(WRAPPER), "start"], env=env, capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (str(lib) if installed else "unset")
    # one its caller chose stays
    done = subprocess.run(["bash", str(WRAPPER), "start"], env=env | {"OCF_FUNCTIONS_DIR": "/chosen"},
                          capture_output=True, text=True, timeout=10)
    assert done.stdout.strip() == "/chosen"
