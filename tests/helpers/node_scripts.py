"""The Python scripts that land on the nodes (no .py suffix), imported as modules for
unit tests of their functions."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from types import ModuleType

from infra.paths import CLOUDINIT_DIR


def load_node_script(relative: str, module_name: str) -> ModuleType:
    """cloudinit/<relative> as the module `module_name`."""
    loader = importlib.machinery.SourceFileLoader(module_name, str(CLOUDINIT_DIR / relative))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(module_name, loader))
    sys.modules[module_name] = module  # its dataclasses look their module up
    loader.exec_module(module)
    return module
