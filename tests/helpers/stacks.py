"""The real stacks' settings, as the unit tests feed them to config.parse."""

from __future__ import annotations

import base64
import copy
from typing import Any

from tooling.mocks import MOCK_SECRETS
from tooling.render import stack_config


def plain_config(stack: str) -> dict[str, Any]:
    """A stack's settings without the project prefix (as config.parse takes them),
    with the mock values of its secret settings."""
    return {k.split(":", 1)[1]: copy.deepcopy(v) for k, v in stack_config(stack).items()} | MOCK_SECRETS


def bundle_files(stdin: str) -> dict[str, tuple[str, str, str]]:
    """The files a step's stdin bundle carries: path -> (mode, owner, content)."""
    files = {}
    for line in stdin.splitlines():
        kind, *rest = line.split()
        if kind in ("file", "secretfile"):
            mode, owner, path, content = rest
            files[path] = (mode, owner, base64.b64decode(content).decode())
    return files
