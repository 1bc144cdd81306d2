"""The real stacks' settings, as the unit tests feed them to config.parse."""

from __future__ import annotations

import copy
from typing import Any

from tooling.mocks import MOCK_SECRETS
from tooling.render import stack_config


def plain_config(stack: str) -> dict[str, Any]:
    """A stack's settings without the project prefix (as config.parse takes them),
    with the mock values of its secret settings."""
    return {k.split(":", 1)[1]: copy.deepcopy(v) for k, v in stack_config(stack).items()} | MOCK_SECRETS
