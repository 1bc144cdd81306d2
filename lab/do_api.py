"""Stand-in for the DigitalOcean API and droplet metadata service, for the lab.

The lab's nodes run the same fencing and failover agents as production, and
those talk to api.digitalocean.com and 169.254.169.254. This server answers the
handful of endpoints they use, shaped as DigitalOcean's published OpenAPI
schemas say (shared/do-openapi; tests/test_do_api.py checks every response),
and with the behaviour clients must cope with: actions start "in-progress" and
finish later (so clients must poll), a second action on a busy resource gets
422 "pending event", and 429/500 can be injected to exercise retries.

API (Bearer token, under /v2):
    GET  /v2/reserved_ips[/{ip}[/actions[/{action_id}]]]   (and /v2/floating_ips/...)
    POST /v2/reserved_ips/{ip}/actions      {"type": "assign", "droplet_id": N} | {"type": "unassign"}
    GET  /v2/droplets/{id}[/actions[/{action_id}]]
    POST /v2/droplets/{id}/actions          {"type": power_off|power_on|shutdown|reboot|power_cycle}
    GET  /v2/actions[/{action_id}]
    POST /_lab/faults {"status": 429|500, "count": N}   (lab only: not a DO endpoint)
Metadata (no auth, caller identified by source address): /metadata/v1/..., /metadata/v1.json

Effects: when an action completes, `HOOK` runs (one at a time) as
    HOOK assign IP DROPLET_ID | HOOK unassign IP | HOOK power_off ID | HOOK power_on ID | HOOK reboot ID
(shutdown runs power_off; power_cycle runs reboot, or power_on if the droplet is off).
Exit 0 -> the action is "completed" and the state changes; anything else -> "errored",
state unchanged. Hooks must be idempotent: power_off of an off droplet still runs it.

    python -m lab.do_api --state FILE [--state-out FILE] [--token-file F] \
        --api-listen HOST:PORT --metadata-listen HOST:PORT [--hook PATH] [--action-delay S]
"""

from __future__ import annotations

import argparse
import collections
import hmac
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

JSON = dict[str, Any]
Address = tuple[str, int]

DEFAULT_ACTION_DELAY = 0.5
HOOK_TIMEOUT = 120.0
DROPLET_ACTIONS = ("power_off", "power_on", "shutdown", "reboot", "power_cycle")
# Valid in DO's droplet action enum but not simulated here: answered 422, not "invalid type".
UNSUPPORTED_DROPLET_ACTIONS = ("enable_backups", "disable_backups", "change_backup_policy", "restore",
                               "password_reset", "resize", "rebuild", "rename", "change_kernel",
                               "enable_ipv6", "snapshot")

REGION_NAMES = {"fra1": "Frankfurt 1", "ams3": "Amsterdam 3", "nyc1": "New York 1", "nyc3": "New York 3",
                "lon1": "London 1", "sfo3": "San Francisco 3", "sgp1": "Singapore 1", "tor1": "Toronto 1",
                "blr1": "Bangalore 1", "syd1": "Sydney 1"}
# slug -> (memory MiB, vcpus, disk GB, transfer TB, price_monthly)
SIZES = {"s-1vcpu-512mb-10gb": (512, 1, 10, 0.5, 4.0), "s-1vcpu-1gb": (1024, 1, 25, 1.0, 6.0),
         "s-1vcpu-2gb": (2048, 1, 50, 2.0, 12.0), "s-2vcpu-2gb": (2048, 2, 60, 3.0, 18.0),
         "s-2vcpu-4gb": (4096, 2, 80, 4.0, 24.0), "s-4vcpu-8gb": (8192, 4, 160, 5.0, 48.0)}
PROJECT_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "https://do-ha-stack.invalid/lab-project"))
CREATED_AT = "2025-01-01T00:00:00Z"


def now_iso() -> str:
    """ISO 8601 in UTC at whole seconds, as the API writes times."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    """An error answer: HTTP status plus DO's error body {"id", "message", "request_id"}."""

    def __init__(self, status: int, error_id: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_id, self.message = status, error_id, message


def not_found() -> ApiError:
    return ApiError(404, "not_found", "The resource you were accessing could not be found.")


def unprocessable(message: str) -> ApiError:
    return ApiError(422, "unprocessable_entity", message)


# --- state ---------------------------------------------------------------------

@dataclass
class Iface:
    address: str
    netmask: str
    gateway: str


@dataclass
class Droplet:
    id: int
    name: str
    region: str
    public: Iface
    private: Iface
    anchor: Iface
    tags: list[str]
    status: str = "active"
    size_slug: str = "s-1vcpu-2gb"
    image_slug: str = "debian-13-x64"
    vpc_uuid: str = ""


@dataclass
class ReservedIP:
    ip: str
    region: str
    droplet_id: int | None


@dataclass
class Action:
    id: int
    type: str  # as DO reports it: assign_ip, unassign_ip, power_off, ...
    resource_type: str  # droplet | reserved_ip | floating_ip
    resource_id: int
    region: str
    started_at: str
    status: str = "in-progress"
    completed_at: str | None = None
    ip: str | None = None  # reserved-IP actions: the IP (also the lock key)
    droplet_id: int | None = None  # assign: the target; droplet actions: the droplet


def _iface(cfg: JSON, d: JSON, kind: str, default_mask: str) -> Iface:
    """An interface from `<kind>_ipv4` plus optional `<kind>_netmask`/`_gateway`
    (per droplet, else top level); the gateway defaults to the subnet's first host."""
    address = str(ipaddress.IPv4Address(d[f"{kind}_ipv4"]))
    netmask = str(d.get(f"{kind}_netmask", cfg.get(f"{kind}_netmask", default_mask)))
    net = ipaddress.IPv4Network(f"{address}/{netmask}", strict=False)
    first = next(net.hosts(), net.network_address)
    gateway = str(d.get(f"{kind}_gateway", cfg.get(f"{kind}_gateway", first)))
    return Iface(address, netmask, gateway)


def load_config(path: Path) -> JSON:
    with path.open() as f:
        cfg = json.load(f)
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return cfg


class Lab:
    """All mutable state; every public method is thread-safe."""

    def __init__(self, cfg: JSON, token: str, hook: str | None = None, state_out: Path | None = None,
                 action_delay: float | None = None, log: Callable[[str], None] | None = None) -> None:
        if not token:
            raise ValueError("an API token is required (state 'token' or --token-file)")
        self.token = token
        self._lock = threading.RLock()
        self._hook_lock = threading.Lock()  # hooks change the lab's network: one at a time
        self._timers: set[threading.Timer] = set()
        self._closed = False
        self._faults: collections.deque[int] = collections.deque()
        self.region = str(cfg.get("region", "fra1"))
        self.hook = hook
        self.state_out = state_out
        self.action_delay = float(cfg.get("action_delay", DEFAULT_ACTION_DELAY) if action_delay is None
                                  else action_delay)
        self.log = log or _stderr
        self.droplets: dict[int, Droplet] = {}
        for d in cfg.get("droplets", []):
            did = d["id"]
            if not isinstance(did, int) or isinstance(did, bool) or did < 1 or did in self.droplets:
                raise ValueError(f"droplet id {did!r}: must be a unique positive integer")
            if d.get("status", "active") not in ("active", "off"):
                raise ValueError(f"droplet {did}: status must be 'active' or 'off'")
            self.droplets[did] = Droplet(
                id=did, name=str(d["name"]), region=str(d.get("region", self.region)),
                public=_iface(cfg, d, "public", "255.255.255.0"),
                private=_iface(cfg, d, "private", "255.255.255.0"),
                anchor=_iface(cfg, d, "anchor", "255.255.0.0"),
                tags=[str(t) for t in d.get("tags", [])], status=d.get("status", "active"),
                size_slug=str(d.get("size_slug", "s-1vcpu-2gb")), image_slug=str(d.get("image", "debian-13-x64")),
                vpc_uuid=str(d.get("vpc_uuid", uuid.uuid5(uuid.NAMESPACE_URL, f"vpc:{d.get('region', self.region)}"))))
        self.ips: dict[str, ReservedIP] = {}
        for r in cfg.get("reserved_ips", []):
            ip = str(ipaddress.IPv4Address(r["ip"]))
            holder = r.get("droplet_id")
            if holder is not None and holder not in self.droplets:
                raise ValueError(f"reserved IP {ip}: droplet {holder} is not in the state")
            self.ips[ip] = ReservedIP(ip, str(r.get("region", self.region)), holder)
        self.actions: dict[int, Action] = {}
        self._next_action = int(cfg.get("first_action_id", 100001))
        for f in cfg.get("fail_next", []):
            self.inject_faults(int(f["status"]), int(f.get("count", 1)))
        self.persist()

    # --- faults, persistence, shutdown -----------------------------------------

    def inject_faults(self, status: int, count: int = 1) -> None:
        """Answer the next `count` authenticated API requests with `status` (429 or 500)."""
        if status not in (429, 500):
            raise ValueError("fault status must be 429 or 500")
        with self._lock:
            self._faults.extend([status] * count)

    def take_fault(self) -> int | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def snapshot(self) -> JSON:
        """What --state-out holds: who has each IP, power states, busy resources. No token."""
        with self._lock:
            busy = [a for a in self.actions.values() if a.status == "in-progress"]
            return {
                "region": self.region,
                "updated_at": now_iso(),
                "droplets": [{"id": d.id, "name": d.name, "region": d.region, "status": d.status,
                              "public_ipv4": d.public.address, "private_ipv4": d.private.address,
                              "anchor_ipv4": d.anchor.address, "tags": d.tags} for d in self.droplets.values()],
                "reserved_ips": [{"ip": r.ip, "region": r.region, "droplet_id": r.droplet_id,
                                  "locked": any(a.ip == r.ip for a in busy)} for r in self.ips.values()],
                "pending_actions": [{"id": a.id, "type": a.type, "resource_type": a.resource_type,
                                     "resource_id": a.resource_id} for a in busy],
            }

    def persist(self) -> None:
        """Atomically rewrite --state-out, so readers never see half a file."""
        if self.state_out is None:
            return
        with self._lock:
            data = json.dumps(self.snapshot(), indent=2) + "\n"
            self.state_out.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.state_out.parent, prefix=f".{self.state_out.name}.")
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(data)
                os.chmod(tmp, 0o644)
                os.replace(tmp, self.state_out)
            except BaseException:
                os.unlink(tmp)
                raise

    def close(self) -> None:
        """Stop pending completions (tests tear down between cases)."""
        with self._lock:
            self._closed = True
            for t in self._timers:
                t.cancel()
            self._timers.clear()

    # --- lookups -----------------------------------------------------------------

    def droplet(self, droplet_id: str | int) -> Droplet:
        try:
            return self.droplets[int(droplet_id)]
        except (KeyError, ValueError):
            raise not_found() from None

    def reserved_ip(self, ip: str) -> ReservedIP:
        r = self.ips.get(ip)
        if r is None:
            raise not_found()
        return r

    def action(self, action_id: str | int) -> Action:
        try:
            return self.actions[int(action_id)]
        except (KeyError, ValueError):
            raise not_found() from None

    def _busy(self, pred: Callable[[Action], bool]) -> bool:
        return any(a.status == "in-progress" and pred(a) for a in self.actions.values())

    # --- starting actions ----------------------------------------------------------

    def _new_action(self, **kw: Any) -> Action:
        action = Action(id=self._next_action, started_at=now_iso(), **kw)
        self._next_action += 1
        self.actions[action.id] = action
        timer = threading.Timer(self.action_delay, self._complete, (action.id,))
        timer.daemon = True
        self._timers.add(timer)
        timer.start()
        self.persist()
        return action

    def start_ip_action(self, ip: str, body: Any, resource_type: str = "reserved_ip") -> Action:
        with self._lock:
            r = self.reserved_ip(ip)
            noun = "Reserved IP" if resource_type == "reserved_ip" else "Floating IP"
            if not isinstance(body, dict):
                raise unprocessable("request payload validation failed: body must be a JSON object")
            kind = body.get("type")
            if kind not in ("assign", "unassign"):
                raise unprocessable(f"'{kind}' is not a valid action type; expected 'assign' or 'unassign'")
            target: int | None = None
            if kind == "assign":
                did = body.get("droplet_id")
                if did is None:
                    raise unprocessable("droplet_id is required to assign a " + noun.lower())
                if not isinstance(did, int) or isinstance(did, bool):
                    raise unprocessable("droplet_id must be an integer")
                d = self.droplets.get(did)
                if d is None:
                    raise unprocessable(f"Droplet {did} could not be found.")
                if d.region != r.region:
                    raise unprocessable(f"The Droplet must be in the same region as the {noun.lower()} "
                                        f"({r.region}); droplet {did} is in {d.region}.")
                other = next((o for o in self.ips.values() if o.droplet_id == did and o.ip != r.ip), None)
                if other is not None:
                    raise unprocessable(f"Droplet {did} already has a {noun.lower()} assigned ({other.ip}).")
                target = did
            elif r.droplet_id is None:
                raise unprocessable(f"The {noun.lower()} is not assigned to a Droplet.")
            if self._busy(lambda a: a.ip == r.ip):
                raise unprocessable(f"{noun} already has a pending event.")
            return self._new_action(type=f"{kind}_ip", resource_type=resource_type,
                                    resource_id=int(ipaddress.IPv4Address(r.ip)), region=r.region,
                                    ip=r.ip, droplet_id=target)

    def start_droplet_action(self, droplet_id: str, body: Any) -> Action:
        with self._lock:
            d = self.droplet(droplet_id)
            if not isinstance(body, dict):
                raise unprocessable("request payload validation failed: body must be a JSON object")
            kind = body.get("type")
            if kind in UNSUPPORTED_DROPLET_ACTIONS:
                raise unprocessable(f"The lab stand-in does not simulate '{kind}' actions.")
            if kind not in DROPLET_ACTIONS:
                raise unprocessable(f"'{kind}' is not a valid droplet action type.")
            if self._busy(lambda a: a.resource_type == "droplet" and a.droplet_id == d.id):
                raise unprocessable("Droplet already has a pending event.")
            return self._new_action(type=kind, resource_type="droplet", resource_id=d.id,
                                    region=d.region, droplet_id=d.id)

    # --- finishing actions ------------------------------------------------------------

    def _hook_args(self, a: Action) -> list[str]:
        if a.type == "assign_ip":
            return ["assign", str(a.ip), str(a.droplet_id)]
        if a.type == "unassign_ip":
            return ["unassign", str(a.ip)]
        verb = {"shutdown": "power_off", "power_cycle": "reboot"}.get(a.type, a.type)
        if a.type == "power_cycle" and self.droplets[a.resource_id].status == "off":
            verb = "power_on"  # a power cycle of an off droplet turns it on
        return [verb, str(a.resource_id)]

    def _run_hook(self, args: list[str], env_extra: dict[str, str]) -> bool:
        if not self.hook:
            return True
        with self._hook_lock:
            try:
                proc = subprocess.run([self.hook, *args], check=False, capture_output=True, text=True,
                                      timeout=HOOK_TIMEOUT, env=os.environ | env_extra, stdin=subprocess.DEVNULL)
            except (OSError, subprocess.TimeoutExpired) as e:
                self.log(f"hook {' '.join(args)}: {e}")
                return False
        for line in (proc.stdout + proc.stderr).splitlines():
            self.log(f"hook {args[0]}: {line}")
        if proc.returncode != 0:
            self.log(f"hook {' '.join(args)}: exit {proc.returncode}")
        return proc.returncode == 0

    def _complete(self, action_id: int) -> None:
        with self._lock:
            if self._closed:
                return
            self._timers = {t for t in self._timers if t.is_alive() and t is not threading.current_thread()}
            a = self.actions[action_id]
            args = self._hook_args(a)
            env = {"DO_API_ACTION_ID": str(a.id), "DO_API_ACTION_TYPE": a.type}
            if a.ip is not None:
                holder = self.ips[a.ip].droplet_id
                env["DO_API_PREVIOUS_DROPLET_ID"] = "" if holder is None else str(holder)
        ok = self._run_hook(args, env)  # outside the lock: the API keeps answering meanwhile
        with self._lock:
            if self._closed:
                return
            if ok:
                if a.type == "assign_ip":
                    self.ips[str(a.ip)].droplet_id = a.droplet_id
                elif a.type == "unassign_ip":
                    self.ips[str(a.ip)].droplet_id = None
                else:
                    self.droplets[a.resource_id].status = "off" if args[0] == "power_off" else "active"
            a.status = "completed" if ok else "errored"
            a.completed_at = now_iso()
            self.persist()
        self.log(f"action {a.id} {a.type} {a.resource_type}:{a.ip or a.resource_id} {a.status}")

    # --- JSON views -------------------------------------------------------------------

    def region_json(self, slug: str) -> JSON:
        return {"name": REGION_NAMES.get(slug, f"Lab {slug}"), "slug": slug,
                "features": ["backups", "ipv6", "metadata", "install_agent", "storage", "image_transfer"],
                "available": True, "sizes": list(SIZES)}

    def size_json(self, slug: str, region: str) -> JSON:
        m = re.fullmatch(r"s-(\d+)vcpu-(\d+)gb", slug)
        memory, vcpus, disk, transfer, monthly = SIZES.get(slug) or (
            (int(m.group(2)) * 1024, int(m.group(1)), 25 * int(m.group(2)), 1.0, 6.0 * int(m.group(2)))
            if m else (1024, 1, 25, 1.0, 6.0))
        return {"slug": slug, "memory": memory, "vcpus": vcpus, "disk": disk, "transfer": transfer,
                "price_monthly": monthly, "price_hourly": round(monthly / 672, 5), "regions": [region],
                "available": True, "description": "Basic",
                "disk_info": [{"type": "local", "size": {"amount": disk, "unit": "gib"}}]}

    def droplet_json(self, d: Droplet) -> JSON:
        size = self.size_json(d.size_slug, d.region)
        return {
            "id": d.id, "name": d.name, "memory": size["memory"], "vcpus": size["vcpus"], "disk": size["disk"],
            "disk_info": size["disk_info"], "locked": False, "status": d.status, "kernel": None,
            "created_at": CREATED_AT, "features": ["monitoring", "droplet_agent", "private_networking"],
            "backup_ids": [], "next_backup_window": None, "snapshot_ids": [],
            "image": {"id": 180000000, "name": "13 x64", "type": "base", "distribution": "Debian",
                      "slug": d.image_slug, "public": True, "regions": [d.region], "created_at": CREATED_AT,
                      "min_disk_size": 10, "size_gigabytes": 0.9, "description": "Debian 13 x64",
                      "tags": [], "status": "available", "error_message": ""},
            "volume_ids": [], "size": size, "size_slug": d.size_slug,
            "networks": {"v4": [
                # DO documents the private interface's missing gateway as the string "nil".
                {"ip_address": d.private.address, "netmask": d.private.netmask, "gateway": "nil", "type": "private"},
                {"ip_address": d.public.address, "netmask": d.public.netmask, "gateway": d.public.gateway,
                 "type": "public"}], "v6": []},
            "region": self.region_json(d.region), "tags": list(d.tags), "vpc_uuid": d.vpc_uuid,
        }

    def ip_json(self, r: ReservedIP) -> JSON:
        holder = self.droplets[r.droplet_id] if r.droplet_id is not None else None
        return {"ip": r.ip, "region": self.region_json(r.region),
                "droplet": self.droplet_json(holder) if holder else None,
                "locked": self._busy(lambda a: a.ip == r.ip), "project_id": PROJECT_ID}

    def action_json(self, a: Action, with_project: bool = False) -> JSON:
        out: JSON = {"id": a.id, "status": a.status, "type": a.type, "started_at": a.started_at,
                     "completed_at": a.completed_at, "resource_id": a.resource_id,
                     "resource_type": a.resource_type, "region": self.region_json(a.region),
                     "region_slug": a.region}
        if with_project:  # only the reserved-IP action responses document project_id
            out["project_id"] = PROJECT_ID
        return out

    # --- metadata -------------------------------------------------------------------------

    def droplet_for_address(self, address: str) -> Droplet | None:
        """The caller, by source address: public, private or anchor, or a reserved IP it holds."""
        address = address.removeprefix("::ffff:")
        with self._lock:
            for d in self.droplets.values():
                if address in (d.public.address, d.private.address, d.anchor.address):
                    return d
            r = self.ips.get(address)
            return self.droplets.get(r.droplet_id) if r and r.droplet_id is not None else None

    def metadata_json(self, d: Droplet) -> JSON:
        """/metadata/v1.json, shaped like DigitalOcean's."""
        with self._lock:
            held = next((r.ip for r in self.ips.values() if r.droplet_id == d.id), None)
            rip: JSON = {"ipv4": {"active": True, "ip_address": held} if held else {"active": False}}
            mac = ":".join(f"{b:02x}" for b in bytes((4, 1)) + (d.id % 2**32).to_bytes(4, "big"))
            return {
                "droplet_id": d.id, "hostname": d.name, "region": d.region, "tags": list(d.tags),
                "public_keys": [],
                "interfaces": {
                    "public": [{"ipv4": {"ip_address": d.public.address, "netmask": d.public.netmask,
                                         "gateway": d.public.gateway},
                                "anchor_ipv4": {"ip_address": d.anchor.address, "netmask": d.anchor.netmask,
                                                "gateway": d.anchor.gateway},
                                "mac": mac, "type": "public"}],
                    "private": [{"ipv4": {"ip_address": d.private.address, "netmask": d.private.netmask,
                                          "gateway": ""},
                                 "mac": mac[:-2] + "02", "type": "private"}],
                },
                "floating_ip": rip, "reserved_ip": json.loads(json.dumps(rip)),
                "features": {"dhcp_enabled": False},
            }

    def metadata_tree(self, d: Droplet) -> JSON:
        """The plain-text tree under /metadata/v1/: the JSON document renamed the way
        the text paths are (id, address instead of droplet_id, ip_address)."""
        doc = self.metadata_json(d)

        def iface(i: JSON) -> JSON:
            out: JSON = {k: {"address": v["ip_address"], "netmask": v["netmask"], "gateway": v["gateway"]}
                         for k, v in i.items() if k in ("ipv4", "anchor_ipv4")}
            return out | {"mac": i["mac"], "type": i["type"]}

        return {"id": str(d.id), "hostname": d.name, "region": d.region, "tags": doc["tags"],
                "public-keys": "", "features": {"dhcp_enabled": "false"},
                "interfaces": {k: [iface(i) for i in v] for k, v in doc["interfaces"].items()},
                "floating_ip": doc["floating_ip"], "reserved_ip": doc["reserved_ip"]}


# --- HTTP: API ---------------------------------------------------------------------------

def _stderr(line: str) -> None:
    sys.stderr.write(f"{datetime.now(UTC).strftime('%H:%M:%S.%f')[:-3]} do_api: {line}\n")
    sys.stderr.flush()


def paginate(items: list[JSON], key: str, query: dict[str, list[str]], base: str) -> JSON:
    """DO's list envelope: items, links.pages (first/prev/next/last) and meta.total."""
    def number(name: str, default: int) -> int:
        try:
            return int(query.get(name, [str(default)])[0])
        except ValueError:
            return default

    per_page = min(max(number("per_page", 20), 1), 200)
    page = max(number("page", 1), 1)
    last = max((len(items) + per_page - 1) // per_page, 1)

    def url(p: int) -> str:
        return f"{base}?page={p}&per_page={per_page}"

    pages: JSON = {}
    if page > 1:
        pages |= {"first": url(1), "prev": url(min(page - 1, last))}
    if page < last:
        pages |= {"next": url(page + 1), "last": url(last)}
    return {key: items[(page - 1) * per_page: page * per_page],
            "links": {"pages": pages} if pages else {}, "meta": {"total": len(items)}}


Route = tuple[str, "re.Pattern[str]", str]
_ROUTES: list[Route] = [(m, re.compile("^" + p + "$"), name) for m, p, name in [
    ("GET", r"/v2/(?P<kind>reserved|floating)_ips", "ip_list"),
    ("GET", r"/v2/(?P<kind>reserved|floating)_ips/(?P<ip>[^/]+)", "ip_get"),
    ("GET", r"/v2/(?P<kind>reserved|floating)_ips/(?P<ip>[^/]+)/actions", "ip_actions"),
    ("POST", r"/v2/(?P<kind>reserved|floating)_ips/(?P<ip>[^/]+)/actions", "ip_action_post"),
    ("GET", r"/v2/(?P<kind>reserved|floating)_ips/(?P<ip>[^/]+)/actions/(?P<aid>[^/]+)", "ip_action_get"),
    ("GET", r"/v2/droplets/(?P<did>[^/]+)", "droplet_get"),
    ("GET", r"/v2/droplets/(?P<did>[^/]+)/actions", "droplet_actions"),
    ("POST", r"/v2/droplets/(?P<did>[^/]+)/actions", "droplet_action_post"),
    ("GET", r"/v2/droplets/(?P<did>[^/]+)/actions/(?P<aid>[^/]+)", "droplet_action_get"),
    ("GET", r"/v2/actions", "action_list"),
    ("GET", r"/v2/actions/(?P<aid>[^/]+)", "action_get"),
    ("POST", r"/_lab/faults", "lab_faults"),
]]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: Address, handler: type[BaseHTTPRequestHandler], lab: Lab) -> None:
        self.lab = lab
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
        self.server.lab.log(line.replace(self.server.lab.token, "[token]"))

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
        self._respond(status, json.dumps(body).encode(), "application/json; charset=utf-8", headers)

    def _error(self, e: ApiError) -> None:
        rid = str(uuid.uuid4())
        self._json(e.status, {"id": e.error_id, "message": e.message, "request_id": rid}, {"x-request-id": rid})

    def _handle(self) -> None:
        self._t0 = time.monotonic()
        lab = self.server.lab
        try:
            raw = self._read_body()  # always drain it, so keep-alive stays in step
            auth = self.headers.get("Authorization", "")
            scheme, _, presented = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), lab.token.encode()):
                raise ApiError(401, "unauthorized", "Unable to authenticate you.")
            url = urlsplit(self.path)
            path = url.path.rstrip("/") or "/"
            matches = [(m, rx.match(path), name) for m, rx, name in _ROUTES]
            matches = [(m, mo, name) for m, mo, name in matches if mo]
            if not matches:
                raise not_found()
            route = next(((mo, name) for m, mo, name in matches if m == self.command), None)
            if route is None:
                raise ApiError(405, "method_not_allowed", f"{self.command} is not supported here by the lab stand-in.")
            if route[1] != "lab_faults":
                fault = lab.take_fault()
                if fault == 429:
                    raise ApiError(429, "too_many_requests", "API Rate limit exceeded.")
                if fault == 500:
                    raise ApiError(500, "server_error", "Server Error (injected by the lab).")
            body: Any = None
            if self.command == "POST":
                try:
                    body = json.loads(raw or b"null")
                except ValueError:
                    raise ApiError(400, "bad_request", "error parsing request body") from None
            base = f"http://{self.headers.get('Host') or _hostport(self.server)}{path}"
            match, op = route
            assert match is not None
            status, out = getattr(self, f"_op_{op}")(match.groupdict(), body, parse_qs(url.query), base)
            self._json(status, out)
        except ApiError as e:
            self._error(e)
        except Exception:  # a bug here must still answer in DO's error shape
            self._log(traceback.format_exc().rstrip())
            self._error(ApiError(500, "server_error", "Unexpected server-side error"))

    # --- operations: each returns (status, body) -----------------------------------------

    def _ip_key(self, g: dict[str, str]) -> tuple[str, str]:
        return ("reserved_ip", "reserved_ips") if g["kind"] == "reserved" else ("floating_ip", "floating_ips")

    def _op_ip_list(self, g: dict[str, str], _b: Any, q: dict[str, list[str]], base: str) -> tuple[int, JSON]:
        lab = self.server.lab
        with lab._lock:
            items = [lab.ip_json(r) for r in lab.ips.values()]
        return 200, paginate(items, self._ip_key(g)[1], q, base)

    def _op_ip_get(self, g: dict[str, str], _b: Any, _q: Any, _base: str) -> tuple[int, JSON]:
        lab = self.server.lab
        with lab._lock:
            return 200, {self._ip_key(g)[0]: lab.ip_json(lab.reserved_ip(g["ip"]))}

    def _op_ip_actions(self, g: dict[str, str], _b: Any, q: dict[str, list[str]], base: str) -> tuple[int, JSON]:
        lab = self.server.lab
        with lab._lock:
            r = lab.reserved_ip(g["ip"])
            items = [lab.action_json(a) for a in reversed(lab.actions.values()) if a.ip == r.ip]
        return 200, paginate(items, "actions", q, base)

    def _op_ip_action_post(self, g: dict[str, str], body: Any, _q: Any, _base: str) -> tuple[int, JSON]:
        lab = self.server.lab
        with lab._lock:
            a = lab.start_ip_action(g["ip"], body, self._ip_key(g)[0])
            return 201, {"action": lab.action_json(a, with_project=True)}

    def _op_ip_action_get(self, g: dict[str, str], _b: Any, _q: Any, _base: str) -> tuple[int, JSON]:
        lab = self.server.lab
        with lab._lock:
            r = lab.reserved_ip(g["ip"])
            a = lab.action(g["aid"])
            if a.ip != r.ip:
                raise not_found()
            return 200, {"action": lab.action_json(a, with_project=True)}

    def _op_droplet_get(self, g: dict[str, str], _b: Any, _q: Any, _base: str) -> tuple[int, JSON]:
        lab = self.server.lab
        with lab._lock:
            return 200, {"droplet": lab.droplet_json(lab.droplet(g["did"]))}

    def _op_droplet_actions(self, g: dict[str, str], _b: Any, q: dict[str, list[str]], base: str) -> tuple[int, JSON]:
        lab = self.server.lab
        with lab._lock:
            d = lab.droplet(g["did"])
            items = [lab.action_json(a) for a in reversed(lab.actions.values())
                     if a.resource_type == "droplet" and a.resource_id == d.id]
        return 200, paginate(items, "actions", q, base)

    def _op_droplet_action_post(self, g: dict[str, str], body: Any, _q: Any, _base: str) -> tuple[int, JSON]:
        lab = self.server.lab
        with lab._lock:
            return 201, {"action": lab.action_json(lab.start_droplet_action(g["did"], body))}

    def _op_droplet_action_get(self, g: dict[str, str], _b: Any, _q: Any, _base: str) -> tuple[int, JSON]:
        lab = self.server.lab
        with lab._lock:
            d = lab.droplet(g["did"])
            a = lab.action(g["aid"])
            if a.resource_type != "droplet" or a.resource_id != d.id:
                raise not_found()
            return 200, {"action": lab.action_json(a)}

    def _op_action_list(self, _g: Any, _b: Any, q: dict[str, list[str]], base: str) -> tuple[int, JSON]:
        lab = self.server.lab
        with lab._lock:
            items = [lab.action_json(a) for a in reversed(lab.actions.values())]
        return 200, paginate(items, "actions", q, base)

    def _op_action_get(self, g: dict[str, str], _b: Any, _q: Any, _base: str) -> tuple[int, JSON]:
        lab = self.server.lab
        with lab._lock:
            return 200, {"action": lab.action_json(lab.action(g["aid"]))}

    def _op_lab_faults(self, _g: Any, body: Any, _q: Any, _base: str) -> tuple[int, JSON]:
        if not isinstance(body, dict) or not isinstance(body.get("count", 1), int):
            raise unprocessable("expected {\"status\": 429|500, \"count\": N}")
        try:
            self.server.lab.inject_faults(int(body.get("status", 0)), int(body.get("count", 1)))
        except (TypeError, ValueError) as e:
            raise unprocessable(str(e)) from None
        return 200, {"queued": len(self.server.lab._faults)}


# --- HTTP: metadata ------------------------------------------------------------------------

class MetadataHandler(_Handler):
    kind = "metadata"

    def do_GET(self) -> None:
        self._t0 = time.monotonic()
        lab = self.server.lab
        text = "text/plain; charset=utf-8"
        try:
            self._read_body()
            d = lab.droplet_for_address(self.client_address[0])
            path = urlsplit(self.path).path
            if d is None:
                return self._respond(404, b"not found\n", text)
            if path == "/metadata/v1.json":
                return self._respond(200, json.dumps(lab.metadata_json(d)).encode(), "application/json")
            node: Any = lab.metadata_tree(d)
            parts = path.removeprefix("/metadata/v1").strip("/").split("/") if path.startswith("/metadata/v1") else None
            if parts is None:
                return self._respond(404, b"not found\n", text)
            for part in [p for p in parts if p]:
                if isinstance(node, dict) and part in node:
                    node = node[part]
                elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                    node = node[int(part)]
                else:
                    return self._respond(404, b"not found\n", text)
            self._respond(200, _metadata_text(node).encode(), text)
        except Exception:
            self._log(traceback.format_exc().rstrip())
            self._respond(500, b"internal error\n", text)

    do_HEAD = do_GET


def _metadata_text(node: Any) -> str:
    """A leaf as its value (booleans as true/false); a folder as its entries,
    sub-folders with a trailing slash, like DigitalOcean's index pages."""
    if isinstance(node, bool):
        return "true" if node else "false"
    if isinstance(node, dict):
        return "\n".join(k + ("/" if isinstance(v, (dict, list)) else "") for k, v in node.items())
    if isinstance(node, list):
        if all(not isinstance(v, (dict, list)) for v in node):
            return "\n".join(str(v) for v in node)
        return "\n".join(f"{i}/" for i in range(len(node)))
    return str(node)


# --- running ----------------------------------------------------------------------------------

def _hostport(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"{host.decode() if isinstance(host, bytes) else host}:{port}"


def parse_listen(value: str) -> Address:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def make_servers(lab: Lab, api: Address, metadata: Address) -> tuple[ThreadingHTTPServer, ThreadingHTTPServer]:
    """Bind both listeners (port 0 picks a free port: see `.server_address`)."""
    api_server = _Server(api, ApiHandler, lab)
    try:
        md_server = _Server(metadata, MetadataHandler, lab)
    except BaseException:
        api_server.server_close()
        raise
    return api_server, md_server


@contextmanager
def running(lab: Lab, api: Address = ("127.0.0.1", 0),
            metadata: Address = ("127.0.0.1", 0)) -> Iterator[tuple[ThreadingHTTPServer, ThreadingHTTPServer]]:
    """Both servers on background threads for the duration of a `with` (tests)."""
    servers = make_servers(lab, api, metadata)
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
               for s in servers]
    for t in threads:
        t.start()
    try:
        yield servers
    finally:
        lab.close()
        stoppers = [threading.Thread(target=s.shutdown) for s in servers]  # in parallel: each waits a poll
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()
        for s in servers:
            s.server_close()


def serve(lab: Lab, api: Address, metadata: Address) -> None:
    """Serve until SIGTERM/SIGINT."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with running(lab, api, metadata) as (a, m):
        lab.log(f"listening api={_hostport(a)} metadata={_hostport(m)} action_delay={lab.action_delay}s "
                f"hook={lab.hook or '-'}")
        stop.wait()
    lab.log("stopped")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.do_api", description=__doc__.split("\n\n")[0])
    p.add_argument("--state", type=Path, required=True, help="initial state (JSON)")
    p.add_argument("--state-out", type=Path, help="rewritten on every change (no token in it)")
    p.add_argument("--token-file", type=Path, help="API token; overrides the state's 'token'")
    p.add_argument("--api-listen", type=parse_listen, required=True, metavar="HOST:PORT")
    p.add_argument("--metadata-listen", type=parse_listen, required=True, metavar="HOST:PORT")
    p.add_argument("--hook", help="program run as HOOK VERB ARGS... when an action completes")
    p.add_argument("--action-delay", type=float, help="seconds an action stays in-progress (default: state, 0.5)")
    args = p.parse_args(argv)
    cfg = load_config(args.state)
    token = args.token_file.read_text().strip() if args.token_file else str(cfg.get("token") or "")
    try:
        lab = Lab(cfg, token, hook=args.hook, state_out=args.state_out, action_delay=args.action_delay)
    except (ValueError, KeyError) as e:
        p.error(f"{args.state}: {e}")
    serve(lab, args.api_listen, args.metadata_listen)
    return 0


if __name__ == "__main__":
    sys.exit(main())
