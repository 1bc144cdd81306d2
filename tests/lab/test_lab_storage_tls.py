"""GlusterFS over TLS on the lab's nodes: glusterd's management port and every brick
take only TLS connections whose client certificate the storage CA issued, the mounts
say both of their paths are encrypted, and the volume admits the members by name."""

from __future__ import annotations

import re
import shlex

import pytest

from lab.topology import LabNode
from tests.helpers.lab_support import Admin

pytestmark = pytest.mark.lab
GLUSTERD_PORT = 24007
MEMBERS = "do-ha-stack-lab-app1,do-ha-stack-lab-app2,do-ha-stack-lab-witness"

# Run on a node as root: a TLS connection to HOST:PORT verified against the storage
# CA (the server's certificate must name HOST), with the client certificate CERT/KEY
# ("-": none). A server that refuses the client closes or alerts; one that accepts
# waits for the client's first RPC.
PROBE = r"""
import socket, ssl, sys
host, port, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile="/etc/ssl/glusterfs.ca")
ctx.verify_flags &= ~ssl.VERIFY_X509_STRICT  # GlusterFS's OpenSSL verifies without it
if cert != "-":
    ctx.load_cert_chain(cert, key)
try:
    with socket.create_connection((host, port), 5) as raw, ctx.wrap_socket(raw, server_hostname=host) as tls:
        tls.settimeout(3)
        try:
            print("closed" if not tls.recv(1) else "answered")
        except TimeoutError:
            print("accepted")
except (ssl.SSLError, OSError) as e:
    print("refused", type(e).__name__, e)
"""


def _probe(node: LabNode, host: str, port: int, cert: str = "/etc/ssl/glusterfs.pem",
           key: str = "/etc/ssl/glusterfs.key") -> str:
    return Admin(node).sudo(f"python3 -c {shlex.quote(PROBE)} {host} {port} {cert} {key}").stdout.strip()


def _brick_port(node: LabNode, host: str) -> int:
    status = Admin(node).sudo("gluster volume status shared").stdout
    match = re.search(rf"^Brick {re.escape(host)}:\S*\s*\n?\s*\S*\s+(\d+)\s", status, re.MULTILINE)
    assert match, status
    return int(match.group(1))


def test_glusterfs_takes_only_tls_from_the_members_certificates(nodes: list[LabNode]) -> None:
    app1, witness = nodes[0], nodes[-1]
    info = Admin(app1).sudo("gluster volume info shared").stdout
    for option in ("client.ssl: on", "server.ssl: on", f"auth.ssl-allow: {MEMBERS}"):
        assert option in info, info
    for node in nodes:
        assert Admin(node).sudo("test -e /var/lib/glusterd/secure-access", check=False).returncode == 0, node.name
    for app in nodes[:-1]:
        line = Admin(app).sudo("grep -h 'SSL support' /var/log/glusterfs/srv-shared.log", check=False).stdout
        assert "SSL support for MGMT is ENABLED IO path is ENABLED" in line.splitlines()[-1], (app.name, line)

    # A throwaway certificate from another CA, for the refusal.
    Admin(witness).sudo("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 "
                        "-subj /CN=do-ha-stack-lab-app2 -keyout /root/other.key -out /root/other.pem")
    try:
        for port in (GLUSTERD_PORT, _brick_port(app1, app1.private_ip)):
            # a TLS handshake at all: a plain server would fail it
            assert _probe(witness, app1.private_ip, port) == "accepted", port
            assert _probe(witness, app1.private_ip, port, "-", "-").startswith(("refused", "closed")), port
            assert _probe(witness, app1.private_ip, port, "/root/other.pem", "/root/other.key").startswith(
                ("refused", "closed")), port
    finally:
        Admin(witness).sudo("rm -f /root/other.key /root/other.pem")
