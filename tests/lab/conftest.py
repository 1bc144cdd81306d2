"""The lab tier: one lab bring-up shared by every test that needs nodes, torn down at the end."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import pytest

from lab.bringup import down, up
from lab.containers import cloud_init_result, load_state
from lab.stack import lab_nodes
from lab.topology import LabNode

REPORT = Path(os.environ.get("LAB_REPORT", "build/lab-report.json"))


def _lab_is_up() -> bool:
    state = load_state()
    return "timings" in state and all(cloud_init_result(n) for n in lab_nodes())


@pytest.fixture(scope="session")
def nodes() -> Iterator[list[LabNode]]:
    if os.geteuid() != 0:
        pytest.fail("the lab tier needs root")
    reuse = _lab_is_up()
    if not reuse:
        up()
    yield lab_nodes()
    if not reuse and not os.environ.get("LAB_KEEP"):
        down()


@pytest.fixture(scope="session")
def report() -> Iterator[dict]:
    data: dict = {}
    yield data
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(data, indent=2))
