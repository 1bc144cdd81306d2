"""The lab's writer (lab/writer.py) against a stand-in canary on loopback: keys never
repeat, within a run or across runs in one lab (the canary answers a key it already
holds with 200 and no commit, which would hide a stalled commit path)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from lab import writer


def test_every_run_writes_keys_no_run_wrote_before(tmp_path: Path) -> None:
    seen: list[str] = []

    class Canary(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(parse_qs(urlsplit(self.path).query)["key"][0])
            body = b'{"node": "n1"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Canary)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        runs = []
        for n in range(2):
            out, stop = tmp_path / f"out{n}.json", tmp_path / f"stop{n}"
            threading.Timer(0.3, stop.touch).start()
            writer.main(url, out, stop, clients=3)
            runs.append([a["key"] for a in json.loads(out.read_text()) if a["outcome"] == "ok"])
    finally:
        server.shutdown()
    assert all(runs) and len(seen) == len(set(seen)) == sum(map(len, runs))
    assert not set(runs[0]) & set(runs[1])
    assert all(k.startswith("w") for k in seen)  # what the lab's checks select (LIKE 'w%')
