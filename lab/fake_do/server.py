"""Stand-in for the DigitalOcean API and droplet metadata service, for the lab.

HTTP around the views: two listeners (API and metadata) over one FakeAccount,
keep-alive, DO's error body and rate-limit headers, one log line per request
with the token scrubbed. `running` serves on background threads (tests),
`serve` until a signal, `main` is the command line:

    python -m lab.fake_do --state FILE [--state-out FILE] [--token-file F] \\
        --api-listen HOST:PORT --metadata-listen HOST:PORT [--hook PATH] [--action-delay S] \\
        [--api-tls-listen HOST:PORT --tls-cert FILE --tls-key FILE] \\
        [--scoped-token FILE=SCOPE,...]...

With --api-tls-listen the API is served over HTTPS there too (the lab stack's
clusterApiUrl); the plain listener stays for the lab's own test clients.
"""

from __future__ import annotations

import argparse
import json
import signal
import ssl
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from lab.fake_do import views
from lab.fake_do.account import JSON, ApiError, FakeAccount, load_config

Address = tuple[str, int]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: Address, handler: type[BaseHTTPRequestHandler], account: FakeAccount) -> None:
        self.account = account
        super().__init__(addr, handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API; every answer has a length
    kind = "api"
    _t0 = 0.0  # set when a request starts, for the log line

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # one line per request is written by _respond instead, without headers

    def log_message(self, format: str, *args: Any) -> None:
        self._log(format % args)

    def _log(self, line: str) -> None:
        for token in self.server.account.secrets():
            line = line.replace(token, "[token]")
        self.server.account.log(line)

    def _respond(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        ms = (time.monotonic() - self._t0) * 1000
        self._log(f'{self.kind} {self.client_address[0]} "{self.command} {self.path}" {status} {ms:.0f}ms')

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True  # not supported; drop the connection after answering
            raise ApiError(400, "bad_request", "chunked request bodies are not supported")
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""


class ApiHandler(_Handler):
    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def _json(self, status: int, body: JSON, extra: dict[str, str] | None = None) -> None:
        headers = {"ratelimit-limit": "5000", "ratelimit-remaining": "4999" if status != 429 else "0",
                   "ratelimit-reset": str(int(time.time()) + 1)} | (extra or {})
        # 204 No Content (a DELETE) has no body at all.
        raw = b"" if status == 204 else json.dumps(body).encode()
        self._respond(status, raw, "application/json; charset=utf-8", headers)

    def _error(self, e: ApiError) -> None:
        rid = str(uuid.uuid4())
        self._json(e.status, {"id": e.error_id, "message": e.message, "request_id": rid}, {"x-request-id": rid})

    def _handle(self) -> None:
        self._t0 = time.monotonic()
        try:
            raw = self._read_body()  # always drain it, so keep-alive stays in step
            host = self.headers.get("Host") or _hostport(self.server)
            scheme = "https" if isinstance(self.connection, ssl.SSLSocket) else "http"
            self._json(*views.api(self.server.account, self.command, self.path,
                                  self.headers.get("Authorization", ""), raw, host, scheme))
        except ApiError as e:
            self._error(e)
        except Exception:  # a bug here must still answer in DO's error shape
            self._log(traceback.format_exc().rstrip())
            self._error(ApiError(500, "server_error", "Unexpected server-side error"))


class MetadataHandler(_Handler):
    kind = "metadata"

    def do_GET(self) -> None:
        self._t0 = time.monotonic()
        try:
            self._read_body()
            self._respond(*views.metadata(self.server.account, self.client_address[0], self.path))
        except Exception:
            self._log(traceback.format_exc().rstrip())
            self._respond(500, b"internal error\n", views.TEXT)

    do_HEAD = do_GET


# --- running ----------------------------------------------------------------------------------

def _hostport(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"{host.decode() if isinstance(host, bytes) else host}:{port}"


def parse_listen(value: str) -> Address:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def make_servers(account: FakeAccount, api: Address,
                 metadata: Address) -> tuple[ThreadingHTTPServer, ThreadingHTTPServer]:
    """Bind both listeners (port 0 picks a free port: see `.server_address`)."""
    api_server = _Server(api, ApiHandler, account)
    try:
        md_server = _Server(metadata, MetadataHandler, account)
    except BaseException:
        api_server.server_close()
        raise
    return api_server, md_server


def tls_api_server(account: FakeAccount, listen: Address, cert: Path, key: Path) -> ThreadingHTTPServer:
    """The API on an HTTPS listener (TLS 1.2 and up, as DigitalOcean's)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    server = _Server(listen, ApiHandler, account)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    return server


@contextmanager
def running(account: FakeAccount, api: Address = ("127.0.0.1", 0),
            metadata: Address = ("127.0.0.1", 0)) -> Iterator[tuple[ThreadingHTTPServer, ThreadingHTTPServer]]:
    """Both servers on background threads for the duration of a `with` (tests)."""
    servers = make_servers(account, api, metadata)
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
               for s in servers]
    for t in threads:
        t.start()
    try:
        yield servers
    finally:
        account.close()
        stoppers = [threading.Thread(target=s.shutdown) for s in servers]  # in parallel: each waits a poll
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()
        for s in servers:
            s.server_close()


def serve(account: FakeAccount, api: Address, metadata: Address,
          tls: ThreadingHTTPServer | None = None) -> None:
    """Serve until SIGTERM/SIGINT (`tls`: the API's HTTPS listener too)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if tls is not None:
        threading.Thread(target=tls.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    with running(account, api, metadata) as (a, m):
        account.log(f"listening api={_hostport(a)} metadata={_hostport(m)} "
                    f"api_tls={_hostport(tls) if tls else '-'} action_delay={account.action_delay}s "
                    f"hook={account.hook or '-'}")
        stop.wait()
    account.log("stopped")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.fake_do", description=__doc__.split("\n\n")[0])
    p.add_argument("--state", type=Path, required=True, help="initial state (JSON)")
    p.add_argument("--state-out", type=Path, help="rewritten on every change (no token in it)")
    p.add_argument("--token-file", type=Path, help="API token; overrides the state's 'token'")
    p.add_argument("--api-listen", type=parse_listen, required=True, metavar="HOST:PORT")
    p.add_argument("--metadata-listen", type=parse_listen, required=True, metavar="HOST:PORT")
    p.add_argument("--hook", help="program run as HOOK VERB ARGS... when an action completes")
    p.add_argument("--action-delay", type=float, help="seconds an action stays in-progress (default: state, 0.5)")
    p.add_argument("--scoped-token", action="append", default=[], metavar="FILE=SCOPE,...",
                   help="a custom-scoped token (in FILE) besides the full one, and its scopes; repeatable")
    p.add_argument("--api-tls-listen", type=parse_listen, metavar="HOST:PORT", help="the API over HTTPS too")
    p.add_argument("--tls-cert", type=Path, help="with --api-tls-listen: its certificate (PEM)")
    p.add_argument("--tls-key", type=Path, help="with --api-tls-listen: its key (PEM)")
    args = p.parse_args(argv)
    if args.api_tls_listen and not (args.tls_cert and args.tls_key):
        p.error("--api-tls-listen needs --tls-cert and --tls-key")
    cfg = load_config(args.state)
    token = args.token_file.read_text().strip() if args.token_file else str(cfg.get("token") or "")
    try:
        scoped = {Path(file).read_text().strip(): [s for s in scopes.split(",") if s]
                  for file, _, scopes in (item.partition("=") for item in args.scoped_token)}
        account = FakeAccount(cfg, token, hook=args.hook, state_out=args.state_out, action_delay=args.action_delay,
                              scoped_tokens=scoped)
    except (ValueError, KeyError) as e:
        p.error(f"{args.state}: {e}")
    tls = (tls_api_server(account, args.api_tls_listen, args.tls_cert, args.tls_key)
           if args.api_tls_listen else None)
    serve(account, args.api_listen, args.metadata_listen, tls)
    return 0
