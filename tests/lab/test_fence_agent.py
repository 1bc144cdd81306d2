"""fence_digitalocean (cloudinit/agents/) against the DigitalOcean stand-in, run inside a
Debian 13 node root the way pacemaker's fencer runs it: options on the command line
or on stdin, the API token only in its root-only file."""

from __future__ import annotations

import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.paths import REPO_ROOT
from tests.helpers.agent_sandbox import AgentSandbox

pytestmark = pytest.mark.lab
AGENT_SRC = REPO_ROOT / "cloudinit" / "agents" / "fence_digitalocean"
AGENT = "/usr/sbin/fence_digitalocean"
TARGET = "app2"  # fenced from app1, as a peer would be
# Long enough that an action started just before the agent runs is still pending
# when the agent posts its own (the 422 "pending event" case).
ACTION_DELAY = 0.8

OWN_PARAMS = {"api_url": "https://api.digitalocean.com", "token_file": "/etc/do-ha-stack/do-api-token",
              "api_timeout": "10", "tag": None}


# --- helpers -------------------------------------------------------------------------------

def fence(sbx: AgentSandbox, *args: str, node: str = "app1",
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return sbx.run([AGENT, "--api-url", sbx.api_url, *args], node=node, env=env)


def fence_stdin(sbx: AgentSandbox, options: dict[str, str], node: str = "app1",
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """As pacemaker-fenced calls agents: no arguments, name=value lines on stdin."""
    text = "".join(f"{k}={v}\n" for k, v in options.items())
    return sbx.run([AGENT], node=node, input=text, env=env)


def out(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def droplet_status(sbx: AgentSandbox, droplet_id: int) -> str:
    code, body = sbx.api("GET", f"/v2/droplets/{droplet_id}")
    assert code == 200, body
    return body["droplet"]["status"]


def pending_actions(sbx: AgentSandbox) -> list[dict]:
    code, body = sbx.api("GET", "/v2/actions?per_page=200")
    assert code == 200, body
    return [a for a in body["actions"] if a["status"] == "in-progress"]


def wait_idle(sbx: AgentSandbox, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while pending_actions(sbx):
        assert time.monotonic() < deadline, "actions still in progress"
        time.sleep(0.2)


def set_power(sbx: AgentSandbox, droplet_id: int, status: str) -> None:
    """Put a droplet into `status` (active/off) through the API, without the agent."""
    wait_idle(sbx)
    if droplet_status(sbx, droplet_id) == status:
        return
    code, body = sbx.api("POST", f"/v2/droplets/{droplet_id}/actions",
                         {"type": "power_on" if status == "active" else "power_off"})
    assert code == 201, body
    wait_idle(sbx)
    assert droplet_status(sbx, droplet_id) == status


def queued_faults(sbx: AgentSandbox) -> int:
    code, body = sbx.api("POST", "/_lab/faults", {"status": 429, "count": 0})
    assert code == 200, body
    return body["queued"]


def metadata_params(xml_text: str) -> tuple[ET.Element, dict[str, ET.Element]]:
    root = ET.fromstring(xml_text.strip())
    assert root.tag == "resource-agent"
    return root, {p.get("name"): p for p in root.iter("parameter")}


def secret_pieces(token: str) -> list[str]:
    return [token, token[:16], token[-16:]]


def assert_no_token(token: str, *texts: str) -> None:
    for text in texts:
        for piece in secret_pieces(token):
            assert piece not in text, "the API token (or part of it) leaked"


# --- fixtures ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sbx() -> Iterator[AgentSandbox]:
    with AgentSandbox(name="fence", action_delay=ACTION_DELAY) as box:
        box.install(AGENT_SRC, AGENT)
        yield box


@pytest.fixture
def target(sbx: AgentSandbox) -> Iterator[int]:
    """The droplet to fence, powered on, with no action pending and no fault queued."""
    droplet_id = sbx.droplet_ids[TARGET]
    set_power(sbx, droplet_id, "active")
    assert queued_faults(sbx) == 0
    yield droplet_id
    assert queued_faults(sbx) == 0, "a test left injected faults behind"


class Hooks:
    """Hook runs (completed actions) since the test started."""

    def __init__(self, sbx: AgentSandbox) -> None:
        self.sbx, self.mark = sbx, len(sbx.hook_calls())

    def new(self) -> list[list[str]]:
        return self.sbx.hook_calls()[self.mark:]


@pytest.fixture
def hooks(sbx: AgentSandbox, target: int) -> Hooks:
    return Hooks(sbx)


# --- metadata ------------------------------------------------------------------------------

def test_metadata_is_valid_xml_with_the_agents_parameters(sbx: AgentSandbox) -> None:
    result = sbx.run([AGENT, "-o", "metadata"])
    assert result.returncode == 0, out(result)
    assert result.stdout.startswith("<?xml")
    root, params = metadata_params(result.stdout)
    assert root.get("name") == "fence_digitalocean"
    assert root.findtext("vendor-url", "").strip() == "https://www.digitalocean.com"
    for name, default in OWN_PARAMS.items():
        assert name in params, sorted(params)
        content = params[name].find("content")
        assert content is not None and content.get("default") == default, name
    assert params["api_timeout"].find("content").get("type") == "second"
    assert params["power_timeout"].find("content").get("default") == "60"
    assert params["plug"].get("required") == "1" and "Droplet id" in params["plug"].findtext("shortdesc", "")
    assert "missing_as_off" in params
    # The token is never a parameter: nothing that would put a secret into the CIB.
    assert not {n for n in params if n in {"token", "api_token", "password", "passwd", "passwd_script"}}
    actions = {a.get("name") for a in root.iter("action")}
    assert {"on", "off", "reboot", "status", "monitor", "list", "metadata", "validate-all"} <= actions


def test_pacemaker_reads_the_metadata(sbx: AgentSandbox) -> None:
    crm = sbx.run(["crm_resource", "--show-metadata", "stonith:fence_digitalocean"])
    assert crm.returncode == 0, out(crm)
    _, params = metadata_params(crm.stdout)
    assert set(OWN_PARAMS) <= set(params)
    # The fencer's own client reads it too, without a running cluster.
    admin = sbx.run(["stonith_admin", "--metadata", "--agent", "fence_digitalocean"])
    assert admin.returncode == 0, out(admin)
    _, params = metadata_params(admin.stdout)
    assert set(OWN_PARAMS) <= set(params)
    # An agent pacemaker does not know fails: the checks above can fail.
    missing = sbx.run(["crm_resource", "--show-metadata", "stonith:fence_no_such_agent"])
    assert missing.returncode != 0


# --- command line ------------------------------------------------------------------------------

def test_status_reports_on_and_off(sbx: AgentSandbox, target: int) -> None:
    result = fence(sbx, "-o", "status", "--plug", str(target))
    assert result.returncode == 0 and "Status: ON" in result.stdout, out(result)
    set_power(sbx, target, "off")
    result = fence(sbx, "-o", "status", "--plug", str(target))
    assert result.returncode == 2 and "Status: OFF" in result.stdout, out(result)  # 2: off, by convention


def test_off_powers_the_droplet_off_and_on_powers_it_on(sbx: AgentSandbox, target: int, hooks: Hooks) -> None:
    result = fence(sbx, "-o", "off", "--plug", str(target))
    assert result.returncode == 0 and "Success: Powered OFF" in result.stdout, out(result)
    assert droplet_status(sbx, target) == "off"
    assert hooks.new() == [["power_off", str(target)]]
    _, body = sbx.api("GET", f"/v2/droplets/{target}/actions")
    assert body["actions"][0]["type"] == "power_off"  # a hard power cut, not "shutdown"
    assert body["actions"][0]["status"] == "completed"
    assert droplet_status(sbx, sbx.droplet_ids["app1"]) == "active"  # the other droplet untouched

    result = fence(sbx, "-o", "on", "--plug", str(target))
    assert result.returncode == 0 and "Success: Powered ON" in result.stdout, out(result)
    assert droplet_status(sbx, target) == "active"
    assert hooks.new() == [["power_off", str(target)], ["power_on", str(target)]]


def test_off_of_an_off_droplet_posts_nothing(sbx: AgentSandbox, target: int) -> None:
    set_power(sbx, target, "off")
    hooks = Hooks(sbx)
    result = fence(sbx, "-o", "off", "--plug", str(target))
    assert result.returncode == 0 and "Already OFF" in result.stdout, out(result)
    assert hooks.new() == []


def test_reboot_is_off_then_on(sbx: AgentSandbox, target: int, hooks: Hooks) -> None:
    result = fence(sbx, "-o", "reboot", "--plug", str(target))
    assert result.returncode == 0 and "Success: Rebooted" in result.stdout, out(result)
    assert hooks.new() == [["power_off", str(target)], ["power_on", str(target)]]
    assert droplet_status(sbx, target) == "active"


def test_monitor_succeeds_with_and_without_a_plug(sbx: AgentSandbox, target: int, hooks: Hooks) -> None:
    for args in (["--plug", str(target)], []):
        result = fence(sbx, "-o", "monitor", *args)
        assert result.returncode == 0, out(result)
    # A droplet that does not exist is a broken configuration, not a healthy device.
    result = fence(sbx, "-o", "monitor", "--plug", "4999")
    assert result.returncode == 1 and "404" in result.stderr, out(result)
    assert hooks.new() == []


def test_list(sbx: AgentSandbox, target: int) -> None:
    name = sbx.droplet_names[TARGET]
    result = fence(sbx, "-o", "list", "--plug", str(target))
    assert result.returncode == 0 and f"{target},{name}" in result.stdout.splitlines(), out(result)
    result = fence(sbx, "-o", "list-status", "--plug", str(target))
    assert result.returncode == 0 and f"{target},{name},on" in result.stdout.splitlines(), out(result)
    result = fence(sbx, "-o", "list")
    code, _ = sbx.api("GET", "/v2/droplets")
    if code == 200:  # a stand-in with DigitalOcean's list endpoint: every droplet
        assert result.returncode == 0, out(result)
        assert {line.split(",")[0] for line in result.stdout.splitlines()} == {str(i) for i in sbx.droplet_ids.values()}
    else:  # without it (the stand-in today): a clear failure, not an empty list
        assert result.returncode == 1 and "no droplet list endpoint" in result.stderr, out(result)


def test_a_plug_that_is_not_a_droplet_id_is_refused(sbx: AgentSandbox, target: int, hooks: Hooks) -> None:
    result = fence(sbx, "-o", "off", "--plug", TARGET)
    assert result.returncode == 1 and "droplet id" in result.stderr, out(result)
    result = fence(sbx, "-o", "status", "--plug", "4999")
    assert result.returncode == 1 and "404" in result.stderr, out(result)
    result = fence(sbx, "-o", "status", "--plug", "4999", "--missing-as-off")
    assert result.returncode == 2 and "Status: OFF" in result.stdout, out(result)
    assert hooks.new() == []


# --- failures --------------------------------------------------------------------------------------

def test_a_bad_token_fails_clearly_and_leaks_nothing(sbx: AgentSandbox, target: int, hooks: Hooks,
                                                     tmp_path: Path) -> None:
    wrong = "wrong" + sbx.token[::-1][5:]
    (tmp_path / "wrong").write_text(wrong + "\n")
    sbx.install(tmp_path / "wrong", "/etc/do-ha-stack/wrong-token", mode=0o600)
    for action in ("off", "status", "monitor"):
        result = fence(sbx, "-o", action, "--plug", str(target), "--token-file", "/etc/do-ha-stack/wrong-token",
                       "-v")
        # 1, never 2: to pacemaker, a status of 2 means "off" and would count as fenced.
        assert result.returncode == 1, out(result)
        assert "HTTP 401" in result.stderr and "refused the token" in result.stderr, out(result)
        assert_no_token(wrong, result.stdout, result.stderr)
        assert_no_token(sbx.token, result.stdout, result.stderr)
    assert droplet_status(sbx, target) == "active"
    assert hooks.new() == []
    assert_no_token(wrong, sbx.syslog("app1"))


def test_a_missing_or_empty_token_file_fails_clearly(sbx: AgentSandbox, target: int, tmp_path: Path) -> None:
    result = fence(sbx, "-o", "status", "--plug", str(target), "--token-file", "/etc/do-ha-stack/absent")
    assert result.returncode == 1, out(result)
    assert "cannot open the API token file /etc/do-ha-stack/absent" in result.stderr, out(result)
    (tmp_path / "empty").write_text("\n")
    sbx.install(tmp_path / "empty", "/etc/do-ha-stack/empty-token", mode=0o600)
    result = fence(sbx, "-o", "status", "--plug", str(target),
                   "--token-file", "/etc/do-ha-stack/empty-token")
    assert result.returncode == 1 and "does not hold a single token" in result.stderr, out(result)


@pytest.mark.parametrize("status", [500, 429])
def test_injected_faults_are_retried(sbx: AgentSandbox, target: int, hooks: Hooks, status: int) -> None:
    sbx.inject_faults(status, 3)
    result = fence(sbx, "-o", "off", "--plug", str(target))
    assert result.returncode == 0 and "Success: Powered OFF" in result.stdout, out(result)
    assert result.stderr.count(f"HTTP {status}") == 3 and "retrying" in result.stderr, out(result)
    assert droplet_status(sbx, target) == "off"
    sbx.inject_faults(status, 2)
    result = fence(sbx, "-o", "on", "--plug", str(target))
    assert result.returncode == 0 and "Success: Powered ON" in result.stdout, out(result)
    assert result.stderr.count(f"HTTP {status}") == 2, out(result)
    assert hooks.new() == [["power_off", str(target)], ["power_on", str(target)]]


def test_a_pending_event_422_is_retried(sbx: AgentSandbox, target: int, hooks: Hooks) -> None:
    # Another action on the droplet is in progress when the agent posts power_off.
    code, body = sbx.api("POST", f"/v2/droplets/{target}/actions", {"type": "power_on"})
    assert code == 201, body
    result = fence(sbx, "-o", "off", "--plug", str(target))
    assert result.returncode == 0 and "Success: Powered OFF" in result.stdout, out(result)
    assert "HTTP 422 Droplet already has a pending event" in result.stderr, out(result)
    assert droplet_status(sbx, target) == "off"
    assert hooks.new() == [["power_on", str(target)], ["power_off", str(target)]]


def test_an_errored_action_fails_the_agent(sbx: AgentSandbox, target: int, hooks: Hooks) -> None:
    sbx.fail_hooks(1)
    result = fence(sbx, "-o", "off", "--plug", str(target))
    assert result.returncode == 1 and "power_off" in result.stderr and "'errored'" in result.stderr, out(result)
    assert droplet_status(sbx, target) == "active"
    assert hooks.new() == [["power_off", str(target)]]


def test_faults_beyond_the_power_timeout_fail(sbx: AgentSandbox, target: int, hooks: Hooks) -> None:
    sbx.inject_faults(500, 10)
    try:
        started = time.monotonic()
        result = fence(sbx, "-o", "off", "--plug", str(target), "--power-timeout", "3")
        assert result.returncode == 1 and "gave up" in result.stderr, out(result)
        assert time.monotonic() - started < 10
        assert queued_faults(sbx) > 0  # it stopped retrying while the API was still failing
        assert hooks.new() == []
    finally:
        while queued_faults(sbx):  # drain what is left
            sbx.api("GET", f"/v2/droplets/{target}")


# --- as the fencer calls it -------------------------------------------------------------------------

def test_stdin_options_as_pacemakers_fencer_passes_them(sbx: AgentSandbox, target: int, hooks: Hooks) -> None:
    env = {"PCMK_service": "pacemaker-fenced"}  # as the fencer's children see it: no agent-side timeout
    base = {"api_url": sbx.api_url, "nodename": "app1"}
    result = fence_stdin(sbx, base | {"action": "off", "plug": str(target)}, env=env)
    assert result.returncode == 0 and "Success: Powered OFF" in result.stdout, out(result)
    assert droplet_status(sbx, target) == "off"
    result = fence_stdin(sbx, base | {"action": "status", "port": str(target)}, env=env)
    assert result.returncode == 2 and "Status: OFF" in result.stdout, out(result)
    result = fence_stdin(sbx, base | {"action": "on", "port": str(target)}, env=env)
    assert result.returncode == 0 and "Success: Powered ON" in result.stdout, out(result)
    result = fence_stdin(sbx, base | {"action": "reboot", "plug": str(target)}, env=env)
    assert result.returncode == 0 and "Success: Rebooted" in result.stdout, out(result)
    result = fence_stdin(sbx, base | {"action": "monitor"}, env=env)  # the fencer's monitor has no plug
    assert result.returncode == 0, out(result)
    assert hooks.new() == [["power_off", str(target)], ["power_on", str(target)],
                           ["power_off", str(target)], ["power_on", str(target)]]
    assert droplet_status(sbx, target) == "active"


def test_stdin_cannot_carry_a_token(sbx: AgentSandbox, target: int) -> None:
    # No option takes a token: one on stdin is ignored (and not echoed), so the
    # CIB can never hold it; the agent still authenticates with the file.
    result = fence_stdin(sbx, {"api_url": sbx.api_url, "action": "status", "plug": str(target),
                               "token": "not-a-real-token-0123456789"})
    assert result.returncode == 0 and "Status: ON" in result.stdout, out(result)
    assert "Ignoring unknown option" in result.stderr and "not-a-real-token" not in result.stderr, out(result)


# --- the token ---------------------------------------------------------------------------------------

def test_the_token_never_appears_in_any_output(sbx: AgentSandbox, target: int) -> None:
    debug = "/var/log/fence-digitalocean-debug.log"
    runs = []
    for args in (["-o", "status", "--plug", str(target)], ["-o", "monitor"], ["-o", "list", "--plug", str(target)],
                 ["-o", "off", "--plug", str(target)], ["-o", "on", "--plug", str(target)]):
        runs.append(fence(sbx, *args, "-v", "-v", "--debug-file", debug))
    sbx.inject_faults(500, 2)
    runs.append(fence(sbx, "-o", "status", "--plug", str(target), "-v", "--debug-file", debug))
    runs.append(fence_stdin(sbx, {"api_url": sbx.api_url, "action": "status", "plug": str(target),
                                  "verbose": "1"}))
    for result in runs:
        assert result.returncode == 0, out(result)
        assert_no_token(sbx.token, result.stdout, result.stderr)
    logged = "".join(r.stderr for r in runs)
    assert "GET /v2/droplets" in logged and "POST /v2/droplets" in logged  # verbose really was verbose
    debug_text = (sbx.root("app1") / debug.lstrip("/")).read_text()
    assert "POST /v2/droplets" in debug_text
    syslog = sbx.syslog("app1")
    assert "fence_digitalocean: POST /v2/droplets" in syslog  # the library logs to syslog as well
    assert_no_token(sbx.token, debug_text, syslog)
