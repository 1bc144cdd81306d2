"""Clients that write through the reserved IP without pause, for failover figures.

    python -m lab.writer URL OUT_JSON STOP_FILE [CLIENTS]

Runs in the lab's public namespace (an internet client). Each of CLIENTS (default 1)
concurrent clients sends POST URL/canary/write?key=wRUN-N, one after another; a key
is "acknowledged" only when the answer was 200. RUN is new for every run: the canary
answers a key it already holds with 200 without a commit, so a key from an earlier
run in the same lab would pass through a stalled commit path unnoticed. Like a
typical API client, each request gives the TCP connection CONNECT_TIMEOUT_S and the
answer READ_TIMEOUT_S: while the reserved IP still points at a dead node a connection
attempt goes unanswered, and the client tries again a quarter of a second later
instead of waiting out a whole second, so the first write after the IP moves is seen
within about that. Stops when STOP_FILE exists and writes every attempt (wall time, how
long it took, key, outcome, node) to OUT_JSON.
"""

from __future__ import annotations

import http.client
import itertools
import json
import secrets
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

CONNECT_TIMEOUT_S = 0.25
READ_TIMEOUT_S = 1.0
PAUSE_AFTER_FAILURE_S = 0.05


def _write(url: str, key: str) -> tuple[str, str]:
    """(outcome, node): "ok", an HTTP status, or "error"."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=CONNECT_TIMEOUT_S)
    try:
        conn.connect()
        conn.sock.settimeout(READ_TIMEOUT_S)
        conn.request("POST", f"{parts.path.rstrip('/')}/canary/write?key={key}", body=b"")
        reply = conn.getresponse()
        data = reply.read()
        if reply.status != 200:
            return str(reply.status), ""
        body = json.loads(data)
        return "ok", str(body.get("node", "")) if isinstance(body, dict) else ""
    except (OSError, ValueError, http.client.HTTPException):
        return "error", ""
    finally:
        conn.close()


def _client(url: str, stop: Path, run: str, keys: itertools.count, attempts: list[dict]) -> None:
    while not stop.exists():
        key = f"w{run}-{next(keys)}"  # itertools.count is atomic under the GIL: keys never repeat
        started = time.time()
        outcome, node = _write(url, key)
        attempts.append({"t": started, "took": time.time() - started, "key": key, "outcome": outcome, "node": node})
        if outcome != "ok":
            time.sleep(PAUSE_AFTER_FAILURE_S)


def main(url: str, out: Path, stop: Path, clients: int = 1) -> None:
    attempts: list[dict] = []
    keys, run = itertools.count(1), secrets.token_hex(4)
    threads = [threading.Thread(target=_client, args=(url, stop, run, keys, attempts)) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.write_text(json.dumps(sorted(attempts, key=lambda a: a["t"])))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 1)
