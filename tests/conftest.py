"""Shared fixtures: the program evaluated under mocks for each real stack config."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from infra.mocks import Run, run_program
from infra.render import stack_config


def plain_config(stack: str) -> dict[str, Any]:
    """A stack's settings without the project prefix (as config.parse takes them)."""
    return {k.split(":", 1)[1]: copy.deepcopy(v) for k, v in stack_config(stack).items()}


@pytest.fixture(scope="session")
def prod() -> Run:
    return run_program("prod", stack_config("prod"))


@pytest.fixture(scope="session")
def staging() -> Run:
    return run_program("staging", stack_config("staging"))


@pytest.fixture(params=["prod", "staging"])
def stack_run(request: pytest.FixtureRequest, prod: Run, staging: Run) -> Run:
    return {"prod": prod, "staging": staging}[request.param]
