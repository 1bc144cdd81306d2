"""A throw-away sandbox for node-side agents (resource and fence agents) against the
DigitalOcean stand-in, without booting the lab.

    with AgentSandbox(name="ocf") as sbx:
        sbx.install(Path("cloudinit/agents/reserved-ip"), "/usr/lib/ocf/resource.d/do-ha-stack/reserved-ip")
        sbx.run(["/usr/lib/ocf/resource.d/do-ha-stack/reserved-ip", "start"], node="app1", env={...})

Layout (every name starts with `dohsbx-<name>-`, so it never meets the lab's `dohs-*`):

    dohsbx-<name>-sw   bridge br-pub: 203.0.113.1/24 (API stand-in on :8080) and
                       169.254.169.254/32 (metadata on :80)
      |-- dohsbx-<name>-app1  eth0 203.0.113.11/24, default via .1   droplet 5000
      |-- dohsbx-<name>-app2  eth0 203.0.113.12/24, default via .1   droplet 5001

The nodes are the lab's own (lab.topology.LabNode: same addresses and droplet ids,
under the sandbox's prefix and directory), made and removed by the lab's code
(lab.containers) with the stand-in started as the lab starts it (lab.standin); the
droplets are named and tagged as the lab stack's (infra.naming).

Each node is an overlay of the cached Debian 13 node image (never written to). A
command runs chrooted into the overlay, in the node's network namespace, in a new
mount and PID namespace with its own /proc, /sys (ro), a minimal /dev, a fresh
/tmp, and /run kept for the sandbox's lifetime (as on a running node, so state
markers survive between commands). /dev/log is a socket the sandbox reads, so
what an agent sends to syslog can be inspected (`syslog(node)`).

The stand-in runs with a hook that only records its arguments (`hook_calls()`):
there is nothing to move or power off here.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

from infra.naming import droplet_name
from lab import containers
from lab.image import ensure_image
from lab.standin import droplet_records, start_api
from lab.stack import lab_config
from lab.topology import API_URL, GATEWAY, METADATA_IP, RESERVED_IP, LabNode, nodes_for

PREFIX = "dohsbx-"
TOKEN_FILE_IN_NODE = "/etc/do-ha-stack/do-api-token"
NODE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Runs as PID 1 of the command's own PID namespace (host side), then chroots.
ENTER = r"""
set -eu
root=$1 syslog=$2
shift 2
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"
mount -t tmpfs -o mode=0755,nosuid tmpfs "$root/dev"
for dev in null zero full random urandom tty; do
    : > "$root/dev/$dev"
    mount --bind "/dev/$dev" "$root/dev/$dev"
done
mkdir -m 1777 "$root/dev/shm"
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
: > "$root/dev/log"
mount --bind "$syslog" "$root/dev/log"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/tmp"
exec chroot "$root" "$@"
"""

# The host-side API client: request on stdin (the token never enters an argv).
API_CLIENT = r"""
import json, sys, urllib.error, urllib.request
req = json.load(sys.stdin)
data = json.dumps(req["body"]).encode() if req["body"] is not None else None
r = urllib.request.Request(req["url"], method=req["method"], data=data, headers={
    "Authorization": "Bearer " + req["token"], "Content-Type": "application/json"})
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(r, timeout=10) as resp:
        status, raw = resp.status, resp.read()
except urllib.error.HTTPError as e:
    status, raw = e.code, e.read()
except OSError as e:
    status, raw = 0, json.dumps({"error": str(e)}).encode()
try:
    body = json.loads(raw or b"{}")
except ValueError:
    body = {"raw": raw.decode(errors="replace")}
print(json.dumps({"status": status, "body": body}))
"""

# Records what the stand-in would do. Test knobs: hook-hold (seconds, used once) keeps
# the action in progress longer; hook-fail (a count) makes actions end "errored".
HOOK = """#!{python}
import json, pathlib, sys, time
base = pathlib.Path({base!r})
with open(base / "hook.log", "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
hold = base / "hook-hold"
if hold.exists():
    seconds = float(hold.read_text() or 0)
    hold.unlink()
    time.sleep(seconds)
fail = base / "hook-fail"
left = int(fail.read_text() or 0) if fail.exists() else 0
if left > 0:
    fail.write_text(str(left - 1))
    print("failing on purpose (AgentSandbox.fail_hooks)")
    sys.exit(1)
"""


class _Syslog:
    """A datagram socket standing in for a node's /dev/log; lines go to a file."""

    def __init__(self, sock_path: Path, log_path: Path) -> None:
        self.path, self.log = sock_path, log_path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(sock_path))
        os.chmod(sock_path, 0o666)
        self.sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        with self.log.open("ab") as out:
            while not self._stop.is_set():
                try:
                    data = self.sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                out.write(data.rstrip(b"\0\n") + b"\n")
                out.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


class AgentSandbox:
    """Two nodes (app1, app2) as overlay roots in their own network namespaces, and the
    DigitalOcean API/metadata stand-in in a switch namespace. Reusable by a module-scoped
    fixture; everything is removed on exit, also after a failure."""

    node_names = ("app1", "app2")

    def __init__(self, name: str = "sbx", action_delay: float = 0.2) -> None:
        if not re.fullmatch(r"[a-z0-9]{1,12}", name):
            raise ValueError("name: 1-12 lowercase letters or digits")
        self.name = name
        self.action_delay = action_delay
        self.api_url = API_URL
        self.metadata_url = f"http://{METADATA_IP}"
        self.token = ""
        self.token_file_in_node = TOKEN_FILE_IN_NODE
        self.prefix = f"{PREFIX}{name}-"
        self.base = Path(tempfile.gettempdir()) / f"{PREFIX}{name}"
        self.nodes = {n.name: n for n in nodes_for(list(self.node_names), prefix=self.prefix, base=self.base)}
        self.droplet_ids = {name: n.droplet_id for name, n in self.nodes.items()}
        self.public_ips = {name: n.public_ip for name, n in self.nodes.items()}
        self._cfg = lab_config()  # the droplets are named and tagged as the lab stack's
        self.droplet_names = {name: droplet_name(self._cfg, name) for name in self.node_names}
        self.reserved_ip = RESERVED_IP
        self.switch_ns = f"{self.prefix}sw"
        self.netns = {name: n.netns for name, n in self.nodes.items()}
        self._api: subprocess.Popen[bytes] | None = None
        self._syslogs: dict[str, _Syslog] = {}
        self._tools = {t: shutil.which(t) or t for t in ("nsenter", "unshare")}

    # --- paths ----------------------------------------------------------------------

    def root(self, node: str) -> Path:
        """The node's overlay root on the host (read files the agent wrote)."""
        return self.nodes[node].root

    # --- lifecycle ------------------------------------------------------------------

    def __enter__(self) -> AgentSandbox:
        if os.geteuid() != 0:
            raise RuntimeError("AgentSandbox needs root (namespaces, mounts)")
        self._cleanup()  # whatever an interrupted earlier run with this name left
        try:
            self._setup()
        except BaseException:
            self._cleanup()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._cleanup()

    def _setup(self) -> None:
        image = ensure_image("node")
        self.base.mkdir(mode=0o700)
        self.token = secrets.token_hex(24)
        token_file = self.base / "api-token"
        token_file.touch(mode=0o600)
        token_file.write_text(self.token)
        # A custom-scoped token without the reserved-IP scopes (the agent must say so).
        self.droplet_only_token = secrets.token_hex(24)
        (self.base / "droplet-only-token").touch(mode=0o600)
        (self.base / "droplet-only-token").write_text(self.droplet_only_token)
        self._make_network()
        for node in self.nodes.values():
            self._make_node(node, image)
        self._start_api()

    def _make_network(self) -> None:
        containers.add_switch(self.switch_ns, {"br-pub": [f"{GATEWAY}/24", f"{METADATA_IP}/32"]})
        for node in self.nodes.values():
            containers.add_namespace(node.netns)
            containers.plug(self.switch_ns, "br-pub", node.veth_pub, node.netns, "eth0")
            # No system runs in the node to configure it: the sandbox does.
            containers.configure(node.netns, "eth0", f"{node.public_ip}/24", via=GATEWAY)

    def _make_node(self, node: LabNode, image: Path) -> None:
        containers.mount_overlay(node, image)
        token = node.root / self.token_file_in_node.lstrip("/")
        token.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        token.touch(mode=0o600)
        os.chmod(token, 0o600)
        token.write_text(self.token + "\n")
        self._syslogs[node.name] = _Syslog(node.dir / "dev-log.sock", node.dir / "syslog")

    def _start_api(self) -> None:
        state = {
            "region": self._cfg.region,
            "droplets": droplet_records(self._cfg, list(self.nodes.values())),
            "reserved_ips": [{"ip": self.reserved_ip, "droplet_id": None}],
        }
        hook = self.base / "hook"
        hook.write_text(HOOK.format(python=sys.executable, base=str(self.base)))
        hook.chmod(0o700)
        (self.base / "hook.log").touch()
        self._api = start_api(self.base, self.switch_ns, state, self.base / "api-token", hook,
                              action_delay=self.action_delay,
                              scoped={self.base / "droplet-only-token": ("droplet:read", "droplet:update")})
        deadline = time.monotonic() + 20
        while True:  # its state is loaded; now until it answers
            if self._api.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the API stand-in did not start: {self.api_log()[-2000:]}")
            if self.api("GET", "/v2/reserved_ips")[0] == 200:
                return
            time.sleep(0.1)

    def _cleanup(self) -> None:
        """Idempotent teardown: the stand-in, syslog sockets, then everything the lab's
        teardown removes (processes, mounts, namespaces, files)."""
        if self._api is not None:
            try:
                os.killpg(self._api.pid, signal.SIGTERM)
                self._api.wait(timeout=5)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(self._api.pid, signal.SIGKILL)
                self._api.wait()
            self._api = None
        for syslog in self._syslogs.values():
            syslog.close()
        self._syslogs.clear()
        containers.teardown(self.prefix, self.base)

    # --- using the nodes ---------------------------------------------------------------

    def run(self, argv: list[str], node: str = "app1", env: dict[str, str] | None = None,
            input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run argv as root inside `node` (its overlay root and network namespace)."""
        if node not in self.netns:
            raise KeyError(f"no node {node!r}; nodes: {', '.join(self.node_names)}")
        cmd = [self._tools["nsenter"], f"--net=/run/netns/{self.netns[node]}", self._tools["unshare"],
               "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child",
               "/bin/sh", "-c", ENTER, "sh", str(self.root(node)), str(self._syslogs[node].path), *argv]
        full_env = {"PATH": NODE_PATH, "LANG": "C.UTF-8", "HOME": "/root", "USER": "root", "LOGNAME": "root",
                    "TERM": "dumb"} | (env or {})
        proc = subprocess.Popen(cmd, env=full_env, text=True, start_new_session=True,
                                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # --kill-child takes the whole PID namespace down
            out, err = proc.communicate()
            raise subprocess.TimeoutExpired(argv, timeout, out, err) from None
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def install(self, src: Path, dest: str, mode: int = 0o755) -> None:
        """Copy a file into every node's overlay (root-owned)."""
        for node in self.node_names:
            target = self.root(node) / dest.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
            os.chown(target, 0, 0)
            os.chmod(target, mode)

    def syslog(self, node: str = "app1") -> str:
        """Everything the node's processes sent to /dev/log so far (raw syslog lines)."""
        path = self.nodes[node].dir / "syslog"
        return path.read_text(errors="replace") if path.exists() else ""

    # --- the stand-in -------------------------------------------------------------------

    def api(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        """Call the stand-in from the switch side; status 0 means no HTTP answer."""
        request = json.dumps({"method": method, "url": self.api_url + path, "body": body, "token": self.token})
        result = subprocess.run([self._tools["nsenter"], f"--net=/run/netns/{self.switch_ns}", sys.executable,
                                 "-I", "-c", API_CLIENT], input=request, capture_output=True, text=True,
                                timeout=30, check=True)
        reply = json.loads(result.stdout)
        return reply["status"], reply["body"]

    def inject_faults(self, status: int, count: int = 1) -> None:
        """The next `count` authenticated API requests answer `status` (the stand-in takes 429 or 500)."""
        code, body = self.api("POST", "/_lab/faults", {"status": status, "count": count})
        if code != 200:
            raise ValueError(f"the stand-in refused the fault: {code} {body.get('message', body)}")

    def fail_hooks(self, count: int = 1) -> None:
        """The next `count` completing actions end "errored" (their hook exits 1)."""
        (self.base / "hook-fail").write_text(str(count))

    def hold_next_hook(self, seconds: float) -> None:
        """The next completing action stays in progress `seconds` longer (the IP answers
        422 "pending event" meanwhile), as a slow DigitalOcean action would."""
        (self.base / "hook-hold").write_text(str(seconds))

    def hook_calls(self) -> list[list[str]]:
        """Every hook run so far, as its argv: ["assign", IP, DROPLET_ID], ["power_off", ID], ..."""
        text = (self.base / "hook.log").read_text()
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def holder(self, ip: str | None = None) -> int | None:
        """The droplet id the API says holds the reserved IP (None: unassigned)."""
        status, body = self.api("GET", f"/v2/reserved_ips/{ip or self.reserved_ip}")
        if status != 200:
            raise RuntimeError(f"GET reserved IP: {status} {body}")
        droplet = body["reserved_ip"]["droplet"]
        return None if droplet is None else int(droplet["id"])

    def wait_idle(self, timeout: float = 30) -> None:
        """Until no action on the reserved IP is in progress (the API's `locked` flag)."""
        deadline = time.monotonic() + timeout
        while True:
            status, body = self.api("GET", f"/v2/reserved_ips/{self.reserved_ip}")
            if status == 200 and not body["reserved_ip"]["locked"]:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"reserved IP still locked: {status} {body}")
            time.sleep(0.1)

    def api_log(self) -> str:
        """The stand-in's request log (the token is masked there as [token])."""
        path = self.base / "api.log"
        return path.read_text(errors="replace") if path.exists() else ""
