"""Where the program's own files are: the one definition of the repository root.

Everything that lands on a node lives under cloudinit/, laid out by how it gets
there: firstboot/ (cloud-init's user-data), steps/ (the remote bootstrap steps),
agents/ (pacemaker and fence agents, shipped by a step) and app/ (the canary and
its nginx site). Templates sit apart from static files in each.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CLOUDINIT_DIR = REPO_ROOT / "cloudinit"


def read(relative: str) -> str:
    """A file under cloudinit/, as text."""
    return (CLOUDINIT_DIR / relative).read_text()
