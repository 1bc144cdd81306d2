"""The lab tier: one lab bring-up shared by every test that needs nodes, torn down at the end."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import pytest

from lab import lab as lab_mod
from lab.topology import LabNode

REPORT = Path(os.environ.get("LAB_REPORT", "build/lab-report.json"))


def _lab_is_up() -> bool:
    state = lab_mod.load_state()
    return "timings" in state and all(lab_mod.cloud_init_result(n) for n in lab_mod.lab_nodes())


@pytest.fixture(scope="session")
def nodes() -> Iterator[list[LabNode]]:
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
