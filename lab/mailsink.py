"""The lab's SMTP relay stand-in (what alertSmtpHost names for a real stack): aiosmtpd
in the switch namespace on GATEWAY:SMTP_PORT, which, like a real submission relay,
offers STARTTLS (with the certificate the nodes trust for the API stand-in), takes a
login only over TLS and refuses mail without one. Each accepted message becomes a JSON
file in mail_dir(); while refuse_file() exists it answers 451, as a relay that is down.

Run as `python -m lab.mailsink LISTEN_HOST PORT CERT KEY USER PASSWORD_FILE OUT_DIR`.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lab.topology import GATEWAY, SWITCH_NS, run_dir

SMTP_PORT = 587
SMTP_USER = "alerts@lab.example"
START_TIMEOUT = 20.0


def mail_dir() -> Path:
    return run_dir() / "mail"


def refuse_file() -> Path:
    return run_dir() / "mail-refuse"


def password_file() -> Path:
    return run_dir() / "smtp_password"


def ensure_password() -> str:
    """The relay's password (what alertSmtpPassword holds for the lab stack)."""
    path = password_file()
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(os.urandom(18).hex())
    return path.read_text().strip()


def received() -> list[dict[str, Any]]:
    """Every message the relay took, oldest first."""
    return [json.loads(p.read_text()) for p in sorted(mail_dir().glob("*.json"))]


def start_mail() -> None:
    from lab.api_tls import ensure_api_tls, server_files

    ensure_api_tls()
    cert, key = server_files()
    ensure_password()
    mail_dir().mkdir(exist_ok=True)
    log = run_dir() / "mail.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{SWITCH_NS}", sys.executable, "-m", "lab.mailsink", GATEWAY,
             str(SMTP_PORT), str(cert), str(key), SMTP_USER, str(password_file()), str(mail_dir())],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            cwd=Path(__file__).resolve().parent.parent)
    (run_dir() / "mail.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + START_TIMEOUT
    while "listening" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the lab's SMTP relay did not start: {log.read_text()[-2000:]}")
        time.sleep(0.2)


def _serve(host: str, port: int, cert: str, key: str, user: str, password_path: str, out: str) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    password = Path(password_path).read_text().strip().encode()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.login == user.encode() and data.password == password
        return AuthResult(success=ok, handled=False, auth_data=data)

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            if (Path(out).parent / "mail-refuse").exists():
                return "451 4.3.0 lab: the relay is down"
            record = {"received": time.time(), "peer": session.peer[0], "tls": session.ssl is not None,
                      "login": session.auth_data.login.decode() if session.authenticated else None,
                      "mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
                      "data": envelope.content.decode("utf-8", "replace")}
            tmp = Path(out) / f".{time.time_ns()}.tmp"
            tmp.write_text(json.dumps(record))
            tmp.rename(Path(out) / f"{time.time_ns()}.json")
            return "250 2.0.0 OK"

    controller = Controller(Handler(), hostname=host, port=port, tls_context=context, require_starttls=True,
                            auth_required=True, auth_require_tls=True, authenticator=authenticate,
                            server_hostname="lab-relay")
    controller.start()
    print(f"listening on {host}:{port}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    host, port, cert, key, user, password_path, out = sys.argv[1:8]
    _serve(host, int(port), cert, key, user, password_path, out)
