"""Fixtures every tier shares: the program evaluated under mocks for each real stack config."""

from __future__ import annotations

import pytest

from tooling.mocks import Run, run_program
from tooling.render import stack_config


@pytest.fixture(scope="session")
def prod() -> Run:
    return run_program("prod", stack_config("prod"))


@pytest.fixture(scope="session")
def staging() -> Run:
    return run_program("staging", stack_config("staging"))


@pytest.fixture(params=["prod", "staging"])
def stack_run(request: pytest.FixtureRequest, prod: Run, staging: Run) -> Run:
    return {"prod": prod, "staging": staging}[request.param]
