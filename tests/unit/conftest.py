"""Fixtures shared by the unit tests of the node operations."""

from __future__ import annotations

from typing import Any

import pytest

from tooling import render


@pytest.fixture
def three_app_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    """prod as it is after a scale-out to three app nodes."""
    real = render.stack_config

    def config(stack: str, *args: Any) -> dict[str, Any]:
        return real(stack, *args) | {"do-ha-stack:appNodeCount": 3}

    monkeypatch.setattr(render, "stack_config", config)
