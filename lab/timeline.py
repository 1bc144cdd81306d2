"""A picture of one failover: the writes acknowledged through the reserved IP per
100 ms, from a few seconds before the kill until after the first write on the new
node, with the phases (lab/failover_phases.py) as vertical markers.

`make bench-failover` and the lab tier's failover test draw one PNG per run next to
their figures (build/failover-*.png). matplotlib draws it (Agg: no display needed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

BUCKET_S = 0.1
BEFORE_S = 3.0  # shown before the kill
AFTER_FIRST_WRITE_S = 3.0  # shown after the first write on the new node


def acked_per_bucket(attempts: Sequence[Mapping], killed_at: float, start_s: float, end_s: float,
                     bucket_s: float = BUCKET_S) -> list[int]:
    """How many writes were acknowledged in each bucket, by the moment the answer came
    (lab/writer.py records the send time `t` and how long it `took`); buckets run from
    `start_s` to `end_s` seconds relative to the kill."""
    count = max(1, round((end_s - start_s) / bucket_s))
    buckets = [0] * count
    for a in attempts:
        if a.get("outcome") != "ok":
            continue
        i = int((a["t"] + a["took"] - killed_at - start_s) // bucket_s)
        if 0 <= i < count:
            buckets[i] += 1
    return buckets


def draw(path: Path, attempts: Sequence[Mapping], killed_at: float, phases: Mapping[str, float | None],
         title: str) -> Path:
    """Write the PNG to `path` (its folder is made) and return the path."""
    import matplotlib  # the lab's and the bench's only: kept out of the module's import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first_write = phases.get("first_write") or 0.0
    start_s, end_s = -BEFORE_S, first_write + AFTER_FIRST_WRITE_S
    buckets = acked_per_bucket(attempts, killed_at, start_s, end_s)
    fig, ax = plt.subplots(figsize=(11, 4), dpi=100)
    try:
        ax.bar([start_s + (i + 0.5) * BUCKET_S for i in range(len(buckets))], buckets, width=BUCKET_S * 0.9,
               color="tab:blue", label="writes acknowledged per 100 ms")
        ax.axvline(0, color="black", linewidth=1.5, label="kill")
        top = max(buckets + [1])
        for i, (phase, at) in enumerate(p for p in phases.items() if p[1] is not None):
            ax.axvline(at, color=f"C{(i + 1) % 10}", linestyle="--", linewidth=1)
            ax.text(at, top * (0.95 - 0.09 * (i % 6)), f" {phase} {at:.2f} s", fontsize=8,
                    color=f"C{(i + 1) % 10}", va="top")
        ax.set_xlim(start_s, end_s)
        ax.set_xlabel("seconds after the kill")
        ax.set_ylabel("acknowledged writes")
        ax.set_title(title, fontsize=10)
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
