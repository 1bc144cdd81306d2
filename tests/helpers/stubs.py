"""Stand-ins for the commands a step or node script calls: small bash scripts in a
directory a test puts first on PATH."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def write_stubs(bin_dir: Path, stubs: Mapping[str, str], prelude: str = "") -> Path:
    """Each `name: body` of `stubs` as an executable bash script in `bin_dir` (made if
    missing), `prelude` ahead of every body; returns `bin_dir`."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, body in stubs.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/bash\n{prelude}{body}\n")
        path.chmod(0o755)
    return bin_dir
