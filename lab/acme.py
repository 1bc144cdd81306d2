"""A real ACME CA in the lab: Debian's pebble (Let's Encrypt's test CA) and its DNS
test server, in the switch namespace.

The DNS server answers every name with the reserved IP, as the site's A record
would; pebble's HTTP-01 checks then reach whichever node holds it. pebble serves
its ACME API over HTTPS with a certificate from a CA made here (the stack's
`acmeServerCa`), and issues from a root of its own, made at each start (served
on its management port: what a client verifying the site must trust).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lab.api_tls import gateway_certificate
from lab.topology import GATEWAY, RESERVED_IP, SWITCH_NS, run_dir

ACME_PORT, MANAGEMENT_PORT, DNS_PORT = 14000, 15000, 8053
DIRECTORY_URL = f"https://{GATEWAY}:{ACME_PORT}/dir"
START_TIMEOUT = 20.0


@dataclass(frozen=True)
class Pebble:
    directory_url: str
    server_ca: str  # PEM: the CA of pebble's own HTTPS certificate (acmeServerCa)
    server_ca_file: Path

    def issuing_roots(self) -> str:
        """PEM of the root pebble issues from now (it makes a new one at each start)."""
        return _fetch(f"https://{GATEWAY}:{MANAGEMENT_PORT}/roots/0", self.server_ca_file)


    def revoked(self, serial: int) -> bool:
        """Whether pebble has revoked the certificate with this serial."""
        status = _fetch(f"https://{GATEWAY}:{MANAGEMENT_PORT}/cert-status-by-serial/{serial:x}",
                        self.server_ca_file)
        return json.loads(status).get("Status") == "Revoked"


def _fetch(url: str, ca_file: Path) -> str:
    # From the switch namespace, where pebble listens.
    out = subprocess.run(["ip", "netns", "exec", SWITCH_NS, "curl", "-sSf", "-m", "5", "--cacert", str(ca_file),
                          url], capture_output=True, text=True, timeout=15)
    if out.returncode != 0:
        raise RuntimeError(f"{url}: {out.stderr.strip()}")
    return out.stdout


def _server_certificate(directory: Path) -> tuple[str, Path, Path]:
    """A CA and pebble's HTTPS certificate for GATEWAY from it: (CA PEM, cert file, key file)."""
    ca, cert, key = gateway_certificate("do-ha-stack lab ACME server CA")
    cert_file, key_file = directory / "pebble-cert.pem", directory / "pebble-key.pem"
    cert_file.write_bytes(cert)
    key_file.touch(mode=0o600)
    key_file.write_bytes(key)
    return ca.decode(), cert_file, key_file


def _start(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log, "w") as out:
        return subprocess.Popen(["ip", "netns", "exec", SWITCH_NS, *argv], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=os.environ | env, start_new_session=True)


@contextmanager
def pebble() -> Iterator[Pebble]:
    """pebble and its DNS server running for the duration of the block."""
    directory = run_dir() / "acme"
    directory.mkdir(exist_ok=True)
    server_ca, cert_file, key_file = _server_certificate(directory)
    ca_file = directory / "server-ca.pem"
    ca_file.write_text(server_ca)
    (directory / "pebble.json").write_text(json.dumps({"pebble": {
        "listenAddress": f"{GATEWAY}:{ACME_PORT}", "managementListenAddress": f"{GATEWAY}:{MANAGEMENT_PORT}",
        "certificate": str(cert_file), "privateKey": str(key_file),
        "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "", "externalAccountBindingRequired": False}}))
    dns = _start(["pebble-challtestsrv", "-defaultIPv4", RESERVED_IP, "-defaultIPv6", "",
                  "-dns01", f"{GATEWAY}:{DNS_PORT}", "-http01", "", "-https01", "", "-tlsalpn01", "",
                  "-management", f"{GATEWAY}:8055"], directory / "challtestsrv.log", {})
    # No random sleeps before validation and no rejected nonces: the lab measures the
    # stack, not pebble's chaos settings.
    ca = _start(["pebble", "-config", str(directory / "pebble.json"), "-dnsserver", f"{GATEWAY}:{DNS_PORT}"],
                directory / "pebble.log", {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"})
    try:
        running = Pebble(DIRECTORY_URL, server_ca, ca_file)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                _fetch(DIRECTORY_URL, ca_file)
                break
            except RuntimeError:
                if ca.poll() is not None or dns.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("pebble did not start: "
                                       + (directory / "pebble.log").read_text()[-1500:]
                                       + (directory / "challtestsrv.log").read_text()[-500:]) from None
                time.sleep(0.2)
        yield running
    finally:
        for proc in (ca, dns):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()

