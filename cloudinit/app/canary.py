#!/usr/bin/python3
"""do-ha-canary: a tiny write endpoint behind nginx that proves the active node
takes writes. POST /canary/write?key=K inserts K once (a retry of an
acknowledged key is answered 200 again); GET /canary/health tells which node
answered and whether its database is writable; GET /canary/backup whether the
stack's backups are good (for the uptime check). It talks to the local MariaDB
over the unix socket as the `do-ha-canary` user, which read_only confines:
on a replica every write is refused with 503. nginx decides who may write
(nginx-site.conf); this service trusts only 127.0.0.1. Database errors go to
the journal, never to the client. Rows older than CANARY_RETENTION_DAYS are
deleted, at most once an hour, by whichever node takes writes.
"""

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LISTEN = ("127.0.0.1", 8081)
KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
NODE = socket.gethostname()
DUPLICATE = "ERROR 1062"
RETENTION_DAYS = int(os.environ.get("CANARY_RETENTION_DAYS", "7"))
PURGE_EVERY_S = 3600
BACKUP = "/usr/local/lib/do-ha-stack/db-backup"
_purge = {"next": 0.0}
_purge_lock = threading.Lock()


def sql(statement: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mariadb", "--batch", "--skip-column-names", "do_ha_canary", "-e", statement],
                          capture_output=True, text=True, timeout=10)


def error_line(stderr: str) -> str:
    """The client's own error line: it also echoes the failed statement between
    dashed lines, which a burst of refused writes (a failover) multiplies in the
    journal."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or [""])[-1][:300]


class Handler(BaseHTTPRequestHandler):
    server_version = "do-ha-canary"

    def reply(self, status: int, body: dict) -> None:
        data = json.dumps(body | {"node": NODE}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/canary/backup":
            return self.backup()
        if path != "/canary/health":
            return self.reply(404, {"error": "not found"})
        result = sql("SELECT @@read_only")
        if result.returncode != 0:
            return self.reply(503, {"database": "unreachable"})
        writable = result.stdout.strip() == "0"
        return self.reply(200 if writable else 503, {"database": "writable" if writable else "read-only"})

    def backup(self) -> None:
        """The stack's backups as the uptime check sees them: 503 when the last run
        failed or the newest good backup is stale (db-backup check reads the status
        on the shared volume; the reason goes to the journal, not the client)."""
        if not os.path.exists(BACKUP):
            return self.reply(404, {"backup": "off"})
        try:
            result = subprocess.run([BACKUP, "check"], capture_output=True, text=True, timeout=10)
        except subprocess.TimeoutExpired:
            return self.reply(503, {"backup": "unknown"})
        if result.returncode == 0:
            return self.reply(200, {"backup": "ok"})
        print(f"backup check: {result.stdout.strip()[-300:]}", file=sys.stderr, flush=True)
        return self.reply(503, {"backup": "failed or stale"})

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        keys = parse_qs(url.query).get("key") or [""]
        # fullmatch: `match` with `$` would let a trailing newline through.
        if url.path != "/canary/write" or len(keys) != 1 or not KEY.fullmatch(keys[0]):
            return self.reply(400, {"error": "POST /canary/write?key=[A-Za-z0-9_.-]{1,64}"})
        key = keys[0]
        result = sql(f"INSERT INTO writes (client_key, node) VALUES ('{key}', '{NODE}')")
        if result.returncode == 0 or DUPLICATE in result.stderr:
            if purge_due():
                threading.Thread(target=purge_old_rows, daemon=True).start()  # off the write's path
            return self.reply(200, {"written": key})
        print(f"write {key} failed: {error_line(result.stderr)}", file=sys.stderr, flush=True)
        return self.reply(503, {"error": "the database did not take the write"})

    def log_message(self, format: str, *args: object) -> None:
        pass  # nginx logs requests


def purge_due() -> bool:
    """True at most once an hour: the caller then runs purge_old_rows."""
    with _purge_lock:
        if time.monotonic() < _purge["next"]:
            return False
        _purge["next"] = time.monotonic() + PURGE_EVERY_S
        return True


def purge_old_rows() -> None:
    """Keep the table bounded: delete what is older than the retention."""
    result = sql(f"DELETE FROM writes WHERE at < NOW(6) - INTERVAL {RETENTION_DAYS} DAY")
    if result.returncode != 0:
        print(f"purge failed: {error_line(result.stderr)}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    ThreadingHTTPServer(LISTEN, Handler).serve_forever()
