"""Clients that write through the reserved IP without pause, for failover figures.

    python -m lab.writer URL OUT_JSON STOP_FILE [CLIENTS]

Runs in the lab's public namespace (an internet client). Each of CLIENTS (default 1)
concurrent clients sends POST URL/canary/write?key=N, one after another, each with a
1 s timeout; a key is "acknowledged" only when the answer was 200. Several clients
see the service return sooner than one: a single client's request that went out
just before the reserved IP moved waits out its timeout, while another's already
lands on the new node. Stops when STOP_FILE exists and writes every attempt (wall
time, how long it took, key, outcome, node) to OUT_JSON.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path


def _client(url: str, stop: Path, keys: itertools.count, attempts: list[dict]) -> None:
    while not stop.exists():
        key = f"w{next(keys)}"  # itertools.count is atomic under the GIL: keys never repeat
        started = time.time()
        node, outcome = "", "error"
        try:
            req = urllib.request.Request(f"{url}/canary/write?key={key}", method="POST", data=b"")
            with urllib.request.urlopen(req, timeout=1.0) as reply:
                body = json.loads(reply.read())
                node, outcome = body.get("node", ""), "ok" if reply.status == 200 else str(reply.status)
        except urllib.error.HTTPError as e:
            outcome = str(e.code)
        except (OSError, ValueError):
            outcome = "error"
        attempts.append({"t": started, "took": time.time() - started, "key": key, "outcome": outcome, "node": node})
        if outcome != "ok":
            time.sleep(0.05)


def main(url: str, out: Path, stop: Path, clients: int = 1) -> None:
    attempts: list[dict] = []
    keys = itertools.count(1)
    threads = [threading.Thread(target=_client, args=(url, stop, keys, attempts)) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.write_text(json.dumps(sorted(attempts, key=lambda a: a["t"])))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 1)
