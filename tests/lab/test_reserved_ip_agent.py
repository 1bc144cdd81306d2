"""The reserved-IP resource agent (cloudinit/agents/reserved-ip) on Debian 13 node roots
against the DigitalOcean stand-in (tests/helpers/agent_sandbox.py): OCF compliance with
ocf-tester, failover between two droplets, retries, and the token's secrecy."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.paths import REPO_ROOT
from lab.procfs import pids_rooted_under
from tests.helpers.agent_sandbox import AgentSandbox

pytestmark = pytest.mark.lab
AGENT_SRC = REPO_ROOT / "cloudinit/agents/reserved-ip"
AGENT = "/usr/lib/ocf/resource.d/do-ha-stack/reserved-ip"
OCF_SUCCESS, OCF_ERR_GENERIC, OCF_ERR_UNIMPLEMENTED, OCF_ERR_PERM, OCF_ERR_INSTALLED, OCF_ERR_CONFIGURED, \
    OCF_NOT_RUNNING = 0, 1, 3, 4, 5, 6, 7

# ocf-tester checks meta-data with `xmllint --noout --valid -` against ra-api-1.dtd, but
# the node image has no libxml2-utils. This stand-in does the same DTD validation with
# the node's python3-lxml (the same libxml2); it is installed only where xmllint is missing.
XMLLINT_SHIM = '''#!/usr/bin/python3
import os, sys
from lxml import etree
args = sys.argv[1:]
files = [a for a in args if not a.startswith("--")] or ["-"]
if set(args) - set(files) != {"--noout", "--valid"} or len(files) != 1:
    sys.exit(f"xmllint (test shim): only --noout --valid FILE|- is supported, got {args}")
data = sys.stdin.buffer.read() if files[0] == "-" else open(files[0], "rb").read()
parser = etree.XMLParser(dtd_validation=True, load_dtd=True, no_network=True)
try:
    etree.fromstring(data, parser, base_url=os.path.join(os.getcwd(), "stdin"))
except etree.XMLSyntaxError as e:
    print(f"{files[0]}: {e}", file=sys.stderr)
    sys.exit(3)
'''

RNG_CHECK = '''
import sys
from lxml import etree
rng = etree.RelaxNG(etree.parse("/usr/share/resource-agents/metadata.rng"))
ok = rng.validate(etree.fromstring(sys.stdin.buffer.read()))
print(rng.error_log)
sys.exit(0 if ok else 1)
'''


@pytest.fixture(scope="module")
def sbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentSandbox]:
    if os.geteuid() != 0:
        pytest.fail("the agent sandbox needs root")
    with AgentSandbox(name="ocf") as sandbox:
        sandbox.install(AGENT_SRC, AGENT)
        if not (sandbox.root("app1") / "usr/bin/xmllint").exists():
            shim = tmp_path_factory.mktemp("xmllint") / "xmllint"
            shim.write_text(XMLLINT_SHIM)
            sandbox.install(shim, "/usr/local/bin/xmllint")
        yield sandbox


def ocf_env(sbx: AgentSandbox, interval_ms: int = 10000, timeout_ms: int = 60000, **params: str) -> dict[str, str]:
    """What pacemaker hands an agent; logs go to syslog and files under /run, not stderr."""
    env = {"OCF_ROOT": "/usr/lib/ocf", "OCF_RESOURCE_INSTANCE": "rip",
           "OCF_RESKEY_CRM_meta_interval": str(interval_ms), "OCF_RESKEY_CRM_meta_timeout": str(timeout_ms),
           "OCF_RESKEY_ip": sbx.reserved_ip, "OCF_RESKEY_api_url": sbx.api_url,
           "OCF_RESKEY_metadata_url": sbx.metadata_url,
           "HA_LOGFACILITY": "daemon", "HA_LOGFILE": "/run/ocf.log", "HA_DEBUGLOG": "/run/ocf-debug.log",
           "HA_debug": "1"}
    return env | {f"OCF_RESKEY_{k}": v for k, v in params.items()}


def agent(sbx: AgentSandbox, action: str, node: str = "app1", env: dict[str, str] | None = None,
          **params: str) -> subprocess.CompletedProcess[str]:
    return sbx.run([AGENT, action], node=node, env=env or ocf_env(sbx, **params))


def stop_everywhere(sbx: AgentSandbox) -> None:
    for node in sbx.node_names:
        assert agent(sbx, "stop", node).returncode == OCF_SUCCESS


def assign_from_host(sbx: AgentSandbox, node: str | None) -> None:
    """Put the reserved IP on `node` (None: unassign) behind the agents' backs."""
    sbx.wait_idle()
    if node is None:
        if sbx.holder() is None:
            return
        status, body = sbx.api("POST", f"/v2/reserved_ips/{sbx.reserved_ip}/actions", {"type": "unassign"})
    else:
        status, body = sbx.api("POST", f"/v2/reserved_ips/{sbx.reserved_ip}/actions",
                               {"type": "assign", "droplet_id": sbx.droplet_ids[node]})
    assert status == 201, body
    sbx.wait_idle()
    assert sbx.holder() == (None if node is None else sbx.droplet_ids[node])


def drain_faults(sbx: AgentSandbox) -> None:
    for _ in range(100):
        if sbx.api("GET", "/v2/reserved_ips")[0] == 200:
            return
    raise AssertionError("injected faults do not drain")


def post_statuses(sbx: AgentSandbox, node: str) -> list[int]:
    """Statuses the stand-in answered to `node`'s assign requests, in order."""
    pattern = re.compile(rf'api {re.escape(sbx.public_ips[node])} "POST /v2/reserved_ips/{re.escape(sbx.reserved_ip)}'
                         r'/actions" (\d{3}) ')
    return [int(m.group(1)) for m in pattern.finditer(sbx.api_log())]


def exit_reason(result: subprocess.CompletedProcess[str]) -> str:
    return "\n".join(line.split(":", 1)[1] for line in result.stderr.splitlines()
                     if line.startswith("ocf-exit-reason:"))


# --- tests -------------------------------------------------------------------------

def test_meta_data_is_valid_ocf_1_1(sbx: AgentSandbox) -> None:
    result = agent(sbx, "meta-data")
    assert result.returncode == OCF_SUCCESS, result.stderr
    xml = result.stdout
    lint = ["sh", "-c", "cd /usr/share/resource-agents && xmllint --noout --valid -"]
    assert sbx.run(lint, input=xml).returncode == 0
    assert sbx.run(lint, input=xml.replace('type="integer"', 'type="float"')).returncode != 0  # the check bites
    rng = sbx.run(["python3", "-c", RNG_CHECK], input=xml)
    assert rng.returncode == 0, rng.stdout
    doc = ET.fromstring(xml)
    assert doc.get("name") == "reserved-ip" and doc.findtext("version") == "1.1"
    params = {p.get("name"): p for p in doc.iter("parameter")}
    assert set(params) == {"ip", "api_url", "token_file", "metadata_url", "droplet_id", "api_timeout"}
    assert params["ip"].get("required") == "1" and params["ip"].get("unique") == "1"
    defaults = {name: p.find("content").get("default") for name, p in params.items()}
    assert defaults["api_url"] == "https://api.digitalocean.com"
    assert defaults["token_file"] == "/etc/do-ha-stack/do-api-token"
    assert defaults["metadata_url"] == "http://169.254.169.254" and defaults["api_timeout"] == "10"
    actions = {a.get("name"): a.attrib for a in doc.iter("action")}
    assert set(actions) == {"start", "stop", "monitor", "validate-all", "meta-data"}
    assert actions["start"]["timeout"] == "60s"
    assert (actions["monitor"]["interval"], actions["monitor"]["timeout"]) == ("10s", "30s")
    assert "never unassigns" in doc.findtext("longdesc")


def test_ocf_tester_passes(sbx: AgentSandbox) -> None:
    stop_everywhere(sbx)
    assign_from_host(sbx, "app2")  # so that ocf-tester's start really moves the IP
    calls = len(sbx.hook_calls())
    result = sbx.run(["ocf-tester", "-n", "rip", "-o", f"ip={sbx.reserved_ip}", "-o", f"api_url={sbx.api_url}",
                      "-o", f"metadata_url={sbx.metadata_url}", AGENT], env={"OCF_ROOT": "/usr/lib/ocf"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{AGENT} passed all tests" in result.stdout
    assert sbx.hook_calls()[calls:] == [["assign", sbx.reserved_ip, "5000"]]  # later starts found it here
    assert sbx.holder() == 5000  # ocf-tester's stops left it in place


def test_start_assigns_then_failover_moves_and_stop_never_unassigns(sbx: AgentSandbox) -> None:
    stop_everywhere(sbx)
    assign_from_host(sbx, None)
    calls = len(sbx.hook_calls())
    assert agent(sbx, "monitor", "app1").returncode == OCF_NOT_RUNNING

    result = agent(sbx, "start", "app1")
    assert result.returncode == OCF_SUCCESS, result.stderr
    assert sbx.holder() == 5000
    assert sbx.hook_calls()[calls:] == [["assign", sbx.reserved_ip, "5000"]]
    assert agent(sbx, "monitor", "app1").returncode == OCF_SUCCESS
    assert agent(sbx, "monitor", "app2").returncode == OCF_NOT_RUNNING

    result = agent(sbx, "start", "app2")
    assert result.returncode == OCF_SUCCESS, result.stderr
    assert sbx.holder() == 5001
    assert sbx.hook_calls()[calls:] == [["assign", sbx.reserved_ip, "5000"], ["assign", sbx.reserved_ip, "5001"]]
    assert agent(sbx, "monitor", "app2").returncode == OCF_SUCCESS
    moved = agent(sbx, "monitor", "app1")
    assert moved.returncode == OCF_ERR_GENERIC
    assert "no longer assigned to this droplet" in exit_reason(moved)
    # A probe (interval 0) reports the stale copy as stopped, and forgets it.
    assert agent(sbx, "monitor", "app1", env=ocf_env(sbx, interval_ms=0)).returncode == OCF_NOT_RUNNING
    assert agent(sbx, "monitor", "app1").returncode == OCF_NOT_RUNNING

    stop_everywhere(sbx)
    stop_everywhere(sbx)  # stopping a stopped resource succeeds too
    assert sbx.holder() == 5001
    assert not any(call[0] == "unassign" for call in sbx.hook_calls()[calls:])
    assert agent(sbx, "monitor", "app2").returncode == OCF_NOT_RUNNING


def test_start_retries_a_busy_rate_limited_and_failing_api(sbx: AgentSandbox) -> None:
    stop_everywhere(sbx)
    assign_from_host(sbx, "app2")
    # Someone else's action keeps the IP busy (422 pending event) for ~2.5 s, and the
    # API fails once with 500 and once with 429 before that.
    sbx.hold_next_hook(2.5)
    status, body = sbx.api("POST", f"/v2/reserved_ips/{sbx.reserved_ip}/actions",
                           {"type": "assign", "droplet_id": 5001})
    assert status == 201, body
    before = len(post_statuses(sbx, "app1"))
    sbx.inject_faults(500, 1)
    sbx.inject_faults(429, 1)
    result = agent(sbx, "start", "app1")
    assert result.returncode == OCF_SUCCESS, result.stderr
    statuses = post_statuses(sbx, "app1")[before:]
    assert statuses[:2] == [500, 429], statuses
    assert statuses[2:-1] and set(statuses[2:-1]) == {422}, statuses
    assert statuses[-1] == 201, statuses
    assert sbx.holder() == 5000
    assert agent(sbx, "monitor", "app1").returncode == OCF_SUCCESS
    assert "retrying" in sbx.syslog("app1")


def test_start_gives_up_within_its_timeout_when_the_api_keeps_failing(sbx: AgentSandbox) -> None:
    stop_everywhere(sbx)
    assign_from_host(sbx, "app1")
    sbx.inject_faults(500, 50)
    try:
        t0 = time.monotonic()
        result = agent(sbx, "start", "app2", env=ocf_env(sbx, timeout_ms=4000))
        elapsed = time.monotonic() - t0
    finally:
        drain_faults(sbx)
    assert result.returncode == OCF_ERR_GENERIC
    assert "HTTP 500" in exit_reason(result) and "start timeout" in exit_reason(result)
    assert elapsed < 4.0, elapsed
    assert len(post_statuses(sbx, "app2")) >= 3  # it did retry
    assert sbx.holder() == 5000
    assert agent(sbx, "monitor", "app2").returncode == OCF_NOT_RUNNING


def test_an_errored_action_fails_start(sbx: AgentSandbox) -> None:
    stop_everywhere(sbx)
    assign_from_host(sbx, "app1")
    sbx.fail_hooks(1)
    result = agent(sbx, "start", "app2")
    assert result.returncode == OCF_ERR_GENERIC
    assert "errored" in exit_reason(result)
    assert sbx.holder() == 5000
    assert agent(sbx, "monitor", "app2").returncode == OCF_NOT_RUNNING


def test_a_rejected_token_fails_start_without_retrying(sbx: AgentSandbox) -> None:
    stop_everywhere(sbx)
    assign_from_host(sbx, "app1")
    token = sbx.root("app2") / sbx.token_file_in_node.lstrip("/")
    token.write_text("dop_v1_not_the_token\n")
    try:
        result = agent(sbx, "start", "app2")
    finally:
        token.write_text(sbx.token + "\n")
    assert result.returncode == OCF_ERR_GENERIC
    assert "HTTP 401" in exit_reason(result)
    assert post_statuses(sbx, "app2")[-1:] == [401]
    assert sbx.holder() == 5000


def test_a_token_without_the_reserved_ip_scopes_fails_start_and_says_which(sbx: AgentSandbox) -> None:
    stop_everywhere(sbx)
    assign_from_host(sbx, "app1")
    token = sbx.root("app2") / sbx.token_file_in_node.lstrip("/")
    token.write_text(sbx.droplet_only_token + "\n")  # droplet:read and droplet:update, as a fence token
    try:
        result = agent(sbx, "start", "app2")
    finally:
        token.write_text(sbx.token + "\n")
    assert result.returncode == OCF_ERR_GENERIC
    assert "HTTP 403" in exit_reason(result), exit_reason(result)
    assert "lacks a scope (this needs reserved_ip:read and reserved_ip:update)" in exit_reason(result)
    assert sbx.holder() == 5000


def test_the_token_never_shows_in_argv_output_logs_or_traces(sbx: AgentSandbox) -> None:
    stop_everywhere(sbx)
    assign_from_host(sbx, "app2")
    seen: list[str] = []
    leaks: list[str] = []
    done = threading.Event()

    def watch() -> None:  # every process in the node, while the agent runs
        root = sbx.root("app1")
        while not done.is_set():
            for pid in pids_rooted_under(root):
                for name in ("cmdline", "environ"):
                    try:
                        data = Path(f"/proc/{pid}/{name}").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    except OSError:
                        continue
                    if name == "cmdline":
                        seen.append(data)
                    if sbx.token in data:
                        leaks.append(f"{pid} {name}: {data}")

    watcher = threading.Thread(target=watch)
    watcher.start()
    sbx.inject_faults(500, 2)  # retries: more requests, more log lines
    try:
        env = ocf_env(sbx) | {"OCF_TRACE_RA": "1", "OCF_TRACE_FILE": "/run/trace-rip.log"}
        result = agent(sbx, "start", "app1", env=env)
    finally:
        done.set()
        watcher.join()
    assert result.returncode == OCF_SUCCESS, result.stderr
    assert leaks == []
    assert any(AGENT in cmd for cmd in seen)  # the watch did see the agent running
    root = sbx.root("app1")
    trace = (root / "run/trace-rip.log").read_text()
    assert "curl" in trace and "Authorization: Bearer" not in trace
    outputs = {"stdout": result.stdout, "stderr": result.stderr, "syslog": sbx.syslog("app1"),
               "trace": trace, "HA_LOGFILE": (root / "run/ocf.log").read_text(),
               "HA_DEBUGLOG": (root / "run/ocf-debug.log").read_text(), "stand-in log": sbx.api_log()}
    assert "assigning 203.0.113.100 to droplet 5000" in outputs["syslog"]
    assert [name for name, text in outputs.items() if sbx.token in text] == []


def test_validate_all_explains_what_is_wrong(sbx: AgentSandbox) -> None:
    assert agent(sbx, "validate-all").returncode == OCF_SUCCESS
    token = sbx.root("app1") / sbx.token_file_in_node.lstrip("/")
    os.chmod(token, 0o644)
    try:
        readable = agent(sbx, "validate-all")
        calls = len(sbx.hook_calls())
        start = agent(sbx, "start", "app1")
    finally:
        os.chmod(token, 0o600)
    assert readable.returncode == OCF_ERR_PERM
    assert "mode 644" in exit_reason(readable) and "group and others must have no access" in exit_reason(readable)
    assert start.returncode == OCF_ERR_PERM and len(sbx.hook_calls()) == calls
    cases = [({"ip": "203.0.113.300"}, OCF_ERR_CONFIGURED, "is not an IPv4 address"),
             ({"ip": ""}, OCF_ERR_CONFIGURED, "is not an IPv4 address"),
             ({"api_url": "ftp://203.0.113.1"}, OCF_ERR_CONFIGURED, "is not an http(s) URL"),
             ({"api_timeout": "0"}, OCF_ERR_CONFIGURED, "api_timeout"),
             ({"token_file": "/etc/do-ha-stack/missing"}, OCF_ERR_INSTALLED, "does not exist")]
    for params, rc, reason in cases:
        result = agent(sbx, "validate-all", **params)
        assert (result.returncode, reason in exit_reason(result)) == (rc, True), (params, result.stderr)
    assert agent(sbx, "reload").returncode == OCF_ERR_UNIMPLEMENTED
