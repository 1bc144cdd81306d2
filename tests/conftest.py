"""Shared fixtures: the program evaluated under mocks for each real stack config."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import pytest

from infra.mocks import Run, run_program
from infra.render import stack_config

if TYPE_CHECKING:
    from lab.topology import LabNode


def plain_config(stack: str) -> dict[str, Any]:
    """A stack's settings without the project prefix (as config.parse takes them),
    with the mock values of its secret settings."""
    from infra.mocks import MOCK_SECRETS

    return {k.split(":", 1)[1]: copy.deepcopy(v) for k, v in stack_config(stack).items()} | MOCK_SECRETS


@pytest.fixture(scope="session")
def prod() -> Run:
    return run_program("prod", stack_config("prod"))


@pytest.fixture(scope="session")
def staging() -> Run:
    return run_program("staging", stack_config("staging"))


@pytest.fixture(params=["prod", "staging"])
def stack_run(request: pytest.FixtureRequest, prod: Run, staging: Run) -> Run:
    return {"prod": prod, "staging": staging}[request.param]


# --- the lab tier --------------------------------------------------------------------

REPORT = Path(os.environ.get("LAB_REPORT", "build/lab-report.json"))


def _lab_is_up() -> bool:
    from lab import lab as lab_mod

    state = lab_mod.load_state()
    return "timings" in state and all(lab_mod.cloud_init_result(n) for n in lab_mod.lab_nodes())


@pytest.fixture(scope="session")
def nodes() -> Iterator[list["LabNode"]]:
    from lab import lab as lab_mod

    if os.geteuid() != 0:
        pytest.fail("the lab tier needs root")
    reuse = _lab_is_up()
    if not reuse:
        lab_mod.up()
    yield lab_mod.lab_nodes()
    if not reuse and not os.environ.get("LAB_KEEP"):
        lab_mod.down()


@pytest.fixture(scope="session")
def report() -> Iterator[dict]:
    data: dict = {}
    yield data
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(data, indent=2))


