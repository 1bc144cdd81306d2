"""The canary on real nodes: a write from an internet address outside the trusted
ranges is refused by nginx, the stack's token lets it through, untrusted sources
are rate-limited, and a database error is never echoed."""

from __future__ import annotations

import re

import pytest

from lab.topology import RESERVED_IP, STRANGER_IP, LabNode
from tests.helpers.day2 import apps, sql
from tests.helpers.lab_support import Admin, in_lab
from tests.lab.test_lab_cluster import _promoted

pytestmark = pytest.mark.lab


def _post(urls: str | list[str], *curl: str) -> list[tuple[str, str]]:
    """(body, status code) of each URL, posted one after the other by one curl."""
    out = in_lab("curl", "-s", "-m", "5", "-X", "POST", *curl, "-w", "\n@%{http_code}\n",
                 *([urls] if isinstance(urls, str) else urls)).stdout
    return re.findall(r"(.*)\n@(\d{3})", out)


def _token(node: LabNode) -> str:
    entry = Admin(node).sudo("cat /etc/nginx/do-ha-stack/canary-token.conf").stdout
    found = re.fullmatch(r'"([A-Za-z0-9]+)" 1;\n', entry)
    assert found, "the token file is not one nginx map entry"
    return found.group(1)


def _written(node: LabNode, key: str) -> bool:
    return sql(node, f"SELECT COUNT(*) FROM writes WHERE client_key = '{key}'") == "1"


def test_a_stranger_cannot_write_but_the_token_can(nodes: list[LabNode]) -> None:
    primary = _promoted(nodes)
    assert primary is not None
    stranger = ("--interface", STRANGER_IP)
    [(body, code)] = _post(f"http://{RESERVED_IP}/canary/write?key=stranger-1", *stranger)
    assert code == "403", body
    assert not _written(primary, "stranger-1")

    token = _token(primary)
    assert all(_token(n) == token for n in apps(nodes))  # every node knows the same token
    with_token = (*stranger, "-H", f"X-Canary-Token: {token}")
    [(body, code)] = _post(f"http://{RESERVED_IP}/canary/write?key=stranger-2", *with_token)
    assert code == "200", body
    assert _written(primary, "stranger-2")
    [(_, code)] = _post(f"http://{RESERVED_IP}/canary/write?key=stranger-3", *stranger, "-H",
                        f"X-Canary-Token: {token[:-1]}")
    assert code == "403"

    # Untrusted sources are rate-limited (5/s, a burst of 10), the token or not;
    # one curl sends 30 writes back to back.
    urls = [f"http://{RESERVED_IP}/canary/write?key=rate-{i}" for i in range(30)]
    codes = [code for _, code in _post(urls, *with_token)]
    assert len(codes) == 30 and "429" in codes and codes.count("200") >= 10, codes


def test_the_canary_checks_keys_exactly_and_echoes_no_database_error(nodes: list[LabNode]) -> None:
    primary = _promoted(nodes)
    replica = next(n for n in apps(nodes) if n != primary)
    [(_, code)] = _post(f"http://{RESERVED_IP}/canary/write?key=newline%0A")
    assert code == "400"
    # A replica's own address (trusted source): its read-only database refuses the write.
    [(body, code)] = _post(f"http://{replica.public_ip}/canary/write?key=on-a-replica")
    assert code == "503" and "ERROR" not in body and "read-only" not in body.lower(), body
    journal = Admin(replica).sudo("journalctl -u do-ha-canary --since -2min --no-pager").stdout
    assert "on-a-replica failed" in journal and "1290" in journal, journal[-2000:]
