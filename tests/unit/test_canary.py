"""The canary write endpoint: who nginx lets write (rendered per stack), the token
kept secret end to end, and the service's own checks (run in-process against a
fake database). The lab proves a stranger is refused on a real node
(tests/lab/test_lab_canary.py)."""

from __future__ import annotations

import importlib.util
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from subprocess import CompletedProcess
from types import ModuleType

import pytest

from infra.config import ConfigError, parse
from infra.paths import CLOUDINIT_DIR
from infra.web import canary_sources
from tests.helpers.stacks import bundle_files, plain_config
from tooling.mocks import MOCK_SECRETS, SECRET_MARKER, Run
from tooling.render import commands


def _files(run: Run, name: str) -> dict[str, tuple[str, str, str]]:
    return bundle_files({c["name"]: c for c in commands(run, reveal=True)}[name]["stdin"])


def test_every_app_node_gets_the_trusted_ranges_and_the_token_root_only(staging: Run) -> None:
    token = staging.generated_secrets["canary-token"]["result"]
    shown = {c["name"]: c for c in commands(staging)}
    for node in ("app1", "app2"):
        files = _files(staging, f"{node}-web-node")
        assert files["/etc/nginx/do-ha-stack/canary-token.conf"] == ("0600", "root:root", f'"{token}" 1;\n')
        mode, _, sources = files["/etc/nginx/do-ha-stack/canary-sources.conf"]
        assert sources == "".join(f"{c} 1;\n" for c in plain_config("staging")["sshAllowedCidrs"])
        assert files["/etc/do-ha-stack/canary.env"][2] == "CANARY_RETENTION_DAYS=7\n"
        # A step that carries the token keeps it out of the diff and the logs.
        assert shown[f"{node}-web-node"]["stdin"] == "[secret]" and shown[f"{node}-web-node"]["logging"] == "none"
    assert token.isalnum() and len(token) == 40
    assert staging.outputs["canaryToken"] == SECRET_MARKER


def test_monitoring_ranges_join_the_admins_once() -> None:
    raw = plain_config("staging") | MOCK_SECRETS
    cfg = parse("staging", raw | {"canaryAllowedCidrs": ["192.0.2.0/28", raw["sshAllowedCidrs"][0], "2001:db8::/64"]})
    assert canary_sources(cfg).splitlines() == [f"{c} 1;" for c in raw["sshAllowedCidrs"]] + [
        "192.0.2.0/28 1;", "2001:db8::/64 1;"]


@pytest.mark.parametrize("value, message", [
    (["0.0.0.0/0"], "opens the canary's write endpoint to 4294967296 IPv4 addresses"),
    (["::/1", "8000::/1"], "more than a /32"),
    (["192.0.2.1/24"], "not a valid CIDR"),
    ("nope", "is not a list"),
])
def test_canary_ranges_that_open_it_to_the_internet_are_refused(value: object, message: str) -> None:
    with pytest.raises(ConfigError, match="canaryAllowedCidrs") as e:
        parse("staging", plain_config("staging") | MOCK_SECRETS | {"canaryAllowedCidrs": value})
    assert message in str(e.value)


def _load_canary() -> ModuleType:
    spec = importlib.util.spec_from_file_location("canary_under_test", CLOUDINIT_DIR / "app/canary.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeDatabase:
    def __init__(self, error: str = "") -> None:
        self.statements: list[str] = []
        self.error = error

    def __call__(self, statement: str) -> CompletedProcess:
        self.statements.append(statement)
        failing = self.error and statement.startswith("INSERT")
        return CompletedProcess([], 1 if failing else 0, "0\n", self.error if failing else "")


@pytest.fixture
def canary() -> Iterator[tuple[ModuleType, str]]:
    module = _load_canary()
    server = ThreadingHTTPServer(("127.0.0.1", 0), module.Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield module, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def _post(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="POST", data=b""), timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.parametrize("query", [
    "key=abc%0A", "key=abc%0D%0A", "key=a&key=b", "key=", "key=a%27b", "key=" + "a" * 65])
def test_keys_match_exactly(canary: tuple[ModuleType, str], query: str) -> None:
    module, url = canary
    module.sql = FakeDatabase()
    assert _post(f"{url}/canary/write?{query}")[0] == 400
    assert module.sql.statements == []


def test_a_database_error_is_not_echoed(canary: tuple[ModuleType, str], capsys: pytest.CaptureFixture) -> None:
    module, url = canary
    # as the client writes it: the failed statement between dashed lines, then the error
    module.sql = FakeDatabase("--------------\nINSERT INTO writes (client_key, node) VALUES ('k1', 'n')\n"
                              "--------------\n\n"
                              "ERROR 1290 (HY000) at line 1: The MariaDB server is running with --read-only\n")
    status, body = _post(f"{url}/canary/write?key=k1")
    assert status == 503 and "1290" not in json.dumps(body) and "read-only" not in json.dumps(body)
    # the journal has it, one line per refused write
    assert capsys.readouterr().err.splitlines() == [
        "write k1 failed: ERROR 1290 (HY000) at line 1: The MariaDB server is running with --read-only"]


def test_old_rows_are_purged_at_most_hourly(canary: tuple[ModuleType, str]) -> None:
    module, url = canary
    module.sql = FakeDatabase()
    for i in range(3):
        assert _post(f"{url}/canary/write?key=k{i}") == (200, {"written": f"k{i}", "node": module.NODE})
    def purges() -> list[str]:
        return [s for s in module.sql.statements if s.startswith("DELETE")]
    for _ in range(100):  # the purge runs beside the reply; the first write started it
        if purges():
            break
        threading.Event().wait(0.05)
    assert purges() == [f"DELETE FROM writes WHERE at < NOW(6) - INTERVAL {module.RETENTION_DAYS} DAY"]
    assert module.RETENTION_DAYS == 7
