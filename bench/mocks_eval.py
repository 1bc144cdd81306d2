"""Benchmark (not a test): time to evaluate the program under mocks by app-node count.

    python -m bench.mocks_eval [--repeat 5]

Target: at most 2 s for 32 app nodes, growing linearly. 32 is above the
config's limit of 9, which is lifted here only, to show how the program scales.
"""

from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

from tooling.mocks import run_program
from tooling.render import stack_config
from tooling import resource_types as types

COUNTS = (2, 8, 32)


def measure(nodes: int, repeat: int) -> list[float]:
    raw = stack_config("staging") | {"do-ha-stack:appNodeCount": nodes}
    times = []
    with mock.patch("infra.config.MAX_APP_NODES", max(COUNTS)):
        for _ in range(repeat):
            start = time.perf_counter()
            run = run_program("staging", raw)
            times.append(time.perf_counter() - start)
            assert len(run.of_type(types.DROPLET)) == nodes + 1
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    measure(2, 1)  # warm-up: imports and provider module loading
    print(f"{'app nodes':>9}  {'median s':>8}  {'min s':>6}  {'max s':>6}  {'s/node':>7}")
    for nodes in COUNTS:
        t = measure(nodes, args.repeat)
        med = statistics.median(t)
        print(f"{nodes:>9}  {med:8.3f}  {min(t):6.3f}  {max(t):6.3f}  {med / (nodes + 1):7.4f}")


if __name__ == "__main__":
    main()
