#!/usr/bin/python3
"""do-ha-canary: a tiny write endpoint behind nginx that proves the active node
takes writes. POST /canary/write?key=K inserts K once (a retry of an
acknowledged key is answered 200 again); GET /canary/health tells which node
answered and whether its database is writable. It talks to the local MariaDB
over the unix socket as the `do-ha-canary` user, which read_only confines:
on a replica every write is refused with 503.
"""

import json
import re
import socket
import subprocess
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LISTEN = ("127.0.0.1", 8081)
KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
NODE = socket.gethostname()
DUPLICATE = "ERROR 1062"


def sql(statement: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mariadb", "--batch", "--skip-column-names", "do_ha_canary", "-e", statement],
                          capture_output=True, text=True, timeout=10)


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
        if urlsplit(self.path).path != "/canary/health":
            return self.reply(404, {"error": "not found"})
        result = sql("SELECT @@read_only")
        if result.returncode != 0:
            return self.reply(503, {"database": "unreachable"})
        writable = result.stdout.strip() == "0"
        return self.reply(200 if writable else 503, {"database": "writable" if writable else "read-only"})

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        key = (parse_qs(url.query).get("key") or [""])[0]
        if url.path != "/canary/write" or not KEY.match(key):
            return self.reply(400, {"error": "POST /canary/write?key=[A-Za-z0-9_.-]{1,64}"})
        result = sql(f"INSERT INTO writes (client_key, node) VALUES ('{key}', '{NODE}')")
        if result.returncode == 0 or DUPLICATE in result.stderr:
            return self.reply(200, {"written": key})
        return self.reply(503, {"error": result.stderr.strip()[-200:]})

    def log_message(self, format: str, *args: object) -> None:
        pass  # nginx logs requests


if __name__ == "__main__":
    ThreadingHTTPServer(LISTEN, Handler).serve_forever()
