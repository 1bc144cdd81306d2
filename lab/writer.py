"""A client that writes through the reserved IP without pause, for failover figures.

    python -m lab.writer URL OUT_JSON STOP_FILE

Runs in the lab's public namespace (an internet client). Each write is
POST URL/canary/write?key=N with a 1 s timeout; a key is "acknowledged" only
when the answer was 200. Stops when STOP_FILE exists and writes every attempt
(monotonic time, key, outcome, node) to OUT_JSON.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def main(url: str, out: Path, stop: Path) -> None:
    attempts = []
    key = 0
    while not stop.exists():
        key += 1
        started = time.time()
        node, outcome = "", "error"
        try:
            req = urllib.request.Request(f"{url}/canary/write?key=w{key}", method="POST", data=b"")
            with urllib.request.urlopen(req, timeout=1.0) as reply:
                body = json.loads(reply.read())
                node, outcome = body.get("node", ""), "ok" if reply.status == 200 else str(reply.status)
        except urllib.error.HTTPError as e:
            outcome = str(e.code)
        except (OSError, ValueError):
            outcome = "error"
        attempts.append({"t": started, "took": time.time() - started, "key": f"w{key}",
                         "outcome": outcome, "node": node})
        if outcome != "ok":
            time.sleep(0.05)
    out.write_text(json.dumps(attempts))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
