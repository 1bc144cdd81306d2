"""The fake account's state: droplets, their interfaces, reserved IPs, actions.

Actions behave as clients must cope with on DigitalOcean: they start
"in-progress" and finish `action_delay` seconds later (so clients must poll),
and a second action on a busy resource is refused with 422 "pending event".
When an action completes, the hook makes it real (one at a time) as
    HOOK assign IP DROPLET_ID | HOOK unassign IP | HOOK power_off ID | HOOK power_on ID | HOOK reboot ID
(shutdown runs power_off; power_cycle runs reboot, or power_on if the droplet is off).
Exit 0 -> the action is "completed" and the state changes; anything else -> "errored",
state unchanged. Hooks must be idempotent: power_off of an off droplet still runs it.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

JSON = dict[str, Any]

DEFAULT_ACTION_DELAY = 0.5
# What a fault answers: DigitalOcean's rate limit, its documented server error, and the
# 503 its edge gives while a backend is unavailable (not in the specification).
FAULT_STATUSES = (429, 500, 503)
HOOK_TIMEOUT = 120.0
DROPLET_ACTIONS = ("power_off", "power_on", "shutdown", "reboot", "power_cycle")
# Valid in DO's droplet action enum but not simulated here: answered 422, not "invalid type".
UNSUPPORTED_DROPLET_ACTIONS = ("enable_backups", "disable_backups", "change_backup_policy", "restore",
                               "password_reset", "resize", "rebuild", "rename", "change_kernel",
                               "enable_ipv6", "snapshot")


def now_iso() -> str:
    """ISO 8601 in UTC at whole seconds, as the API writes times."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def log_stderr(line: str) -> None:
    sys.stderr.write(f"{datetime.now(UTC).strftime('%H:%M:%S.%f')[:-3]} fake_do: {line}\n")
    sys.stderr.flush()


# --- errors ----------------------------------------------------------------------

class ApiError(Exception):
    """An error answer: HTTP status plus DO's error body {"id", "message", "request_id"}."""

    def __init__(self, status: int, error_id: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_id, self.message = status, error_id, message


def not_found() -> ApiError:
    return ApiError(404, "not_found", "The resource you were accessing could not be found.")


def unprocessable(message: str) -> ApiError:
    return ApiError(422, "unprocessable_entity", message)


# --- resources -------------------------------------------------------------------

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


# --- the account -----------------------------------------------------------------

class FakeAccount:
    """All mutable state; every public method is thread-safe. Readers that need
    several fields to agree (one answer) hold `lock` around them."""

    def __init__(self, cfg: JSON, token: str, hook: str | None = None, state_out: Path | None = None,
                 action_delay: float | None = None, log: Callable[[str], None] | None = None,
                 scoped_tokens: Mapping[str, Collection[str]] | None = None) -> None:
        if not token:
            raise ValueError("an API token is required (state 'token' or --token-file)")
        self.token = token  # full access: the account owner's
        # Custom-scoped tokens, as DigitalOcean issues them: token -> its scopes.
        self.scoped_tokens = {t: frozenset(scopes) for t, scopes in (scoped_tokens or {}).items()}
        self.lock = threading.RLock()
        # Hooks change the lab: the reserved IPs' routing one move at a time, the
        # droplets' power one change at a time. A move does not wait for another
        # droplet's power-off, as on DigitalOcean (a failover moves the IP while the
        # lost node is powered off).
        self._hook_locks = {"ip": threading.Lock(), "power": threading.Lock()}
        self._timers: set[threading.Timer] = set()
        self._closed = False
        # Queued faults: (status, "METHOD /path" prefix the request must start with, or "").
        self._faults: list[tuple[int, str]] = []
        self.region = str(cfg.get("region", "fra1"))
        self.hook = hook
        self.state_out = state_out
        self.action_delay = float(cfg.get("action_delay", DEFAULT_ACTION_DELAY) if action_delay is None
                                  else action_delay)
        self._delays_by_type: dict[str, float] = {}
        self.log = log or log_stderr
        self._cfg = cfg  # defaults for droplets added later (netmasks, gateways)
        self.droplets: dict[int, Droplet] = {}
        for d in cfg.get("droplets", []):
            self._add_droplet(d)
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
            self.inject_faults(int(f["status"]), int(f.get("count", 1)), str(f.get("match", "")))
        self.persist()

    def _add_droplet(self, d: JSON) -> Droplet:
        did = d["id"]
        if not isinstance(did, int) or isinstance(did, bool) or did < 1 or did in self.droplets:
            raise ValueError(f"droplet id {did!r}: must be a unique positive integer")
        if d.get("status", "active") not in ("active", "off"):
            raise ValueError(f"droplet {did}: status must be 'active' or 'off'")
        cfg = self._cfg
        droplet = Droplet(
            id=did, name=str(d["name"]), region=str(d.get("region", self.region)),
            public=_iface(cfg, d, "public", "255.255.255.0"),
            private=_iface(cfg, d, "private", "255.255.255.0"),
            anchor=_iface(cfg, d, "anchor", "255.255.0.0"),
            tags=[str(t) for t in d.get("tags", [])], status=d.get("status", "active"),
            size_slug=str(d.get("size_slug", "s-1vcpu-2gb")), image_slug=str(d.get("image", "debian-13-x64")),
            vpc_uuid=str(d.get("vpc_uuid", uuid.uuid5(uuid.NAMESPACE_URL, f"vpc:{d.get('region', self.region)}"))))
        self.droplets[did] = droplet
        return droplet

    # --- droplets created and destroyed -------------------------------------------

    def create_droplet(self, record: Any) -> Droplet:
        """Lab only: a droplet the lab has booted (id, name and addresses chosen by
        the lab, as DigitalOcean chooses them for a real one)."""
        if not isinstance(record, dict):
            raise unprocessable("expected a droplet record: {\"id\": N, \"name\": ..., \"public_ipv4\": ...}")
        with self.lock:
            try:
                droplet = self._add_droplet(record)
            except (KeyError, TypeError, ValueError) as e:
                raise unprocessable(f"bad droplet record: {e}") from None
            self.persist()
        self.log(f"droplet {droplet.id} {droplet.name} created")
        return droplet

    def delete_droplet(self, droplet_id: str | int) -> None:
        """DELETE /v2/droplets/{id}: the droplet is gone; a reserved IP it held is
        left unassigned (as DigitalOcean does)."""
        with self.lock:
            d = self.droplet(droplet_id)
            del self.droplets[d.id]
            for r in self.ips.values():
                if r.droplet_id == d.id:
                    r.droplet_id = None
            self.persist()
        self.log(f"droplet {d.id} {d.name} destroyed")

    # --- faults, persistence, shutdown -----------------------------------------

    def inject_faults(self, status: int, count: int = 1, match: str = "") -> int:
        """Answer the next `count` authenticated API requests with `status` (429, 500
        or 503); with `match` ("POST /v2/droplets/"), only requests whose method and path
        start with it, so a fault reaches the request it is aimed at and not a monitor's
        read that happens to come first. Returns how many are now queued."""
        if status not in FAULT_STATUSES:
            raise ValueError(f"fault status must be one of {', '.join(map(str, FAULT_STATUSES))}")
        if count < 0:
            raise ValueError("fault count must be 0 or more")
        with self.lock:
            self._faults.extend([(status, match)] * count)
            return len(self._faults)

    def set_action_delays(self, default: float, by_type: Mapping[str, float]) -> None:
        """How long new actions stay in-progress: `default` seconds, or per action type
        as DigitalOcean names it (power_off, assign_ip, ...). A real API takes seconds."""
        delays = {"": default, **by_type}
        if any(not isinstance(v, int | float) or isinstance(v, bool) or not 0 <= v <= 300 for v in delays.values()):
            raise ValueError("action delays must be numbers of seconds from 0 to 300")
        with self.lock:
            self.action_delay = float(default)
            self._delays_by_type = {str(k): float(v) for k, v in by_type.items()}

    def clear_faults(self) -> None:
        """Drop every queued fault (a test that ends early leaves none behind)."""
        with self.lock:
            self._faults.clear()

    def take_fault(self, request: str) -> int | None:
        """The status of the first queued fault aimed at `request` ("METHOD /path"), taken
        off the queue; None when none is."""
        with self.lock:
            for i, (status, match) in enumerate(self._faults):
                if request.startswith(match):
                    del self._faults[i]
                    return status
            return None

    def snapshot(self) -> JSON:
        """What --state-out holds: who has each IP, power states, busy resources. No token."""
        with self.lock:
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
        with self.lock:
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

    def scopes_of(self, presented: str) -> frozenset[str] | None:
        """A presented token's scopes (None: full access); KeyError for an unknown token."""
        if hmac.compare_digest(presented.encode(), self.token.encode()):
            return None
        for token, scopes in self.scoped_tokens.items():
            if hmac.compare_digest(presented.encode(), token.encode()):
                return scopes
        raise KeyError("unknown token")

    def secrets(self) -> list[str]:
        """Every token: scrubbed from the log."""
        return [self.token, *self.scoped_tokens]

    def close(self) -> None:
        """Stop pending completions (tests tear down between cases)."""
        with self.lock:
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

    def ip_locked(self, ip: str) -> bool:
        """An action on the reserved IP is still in progress."""
        with self.lock:
            return self._busy(lambda a: a.ip == ip)

    def droplet_for_address(self, address: str) -> Droplet | None:
        """The caller, by source address: public, private or anchor, or a reserved IP it holds."""
        address = address.removeprefix("::ffff:")
        with self.lock:
            for d in self.droplets.values():
                if address in (d.public.address, d.private.address, d.anchor.address):
                    return d
            r = self.ips.get(address)
            return self.droplets.get(r.droplet_id) if r and r.droplet_id is not None else None

    def _busy(self, pred: Callable[[Action], bool]) -> bool:
        return any(a.status == "in-progress" and pred(a) for a in self.actions.values())

    # --- starting actions ----------------------------------------------------------

    def _new_action(self, **kw: Any) -> Action:
        action = Action(id=self._next_action, started_at=now_iso(), **kw)
        self._next_action += 1
        self.actions[action.id] = action
        delay = self._delays_by_type.get(action.type, self.action_delay)
        timer = threading.Timer(delay, self._complete, (action.id,))
        timer.daemon = True
        self._timers.add(timer)
        timer.start()
        self.persist()
        return action

    def start_ip_action(self, ip: str, body: Any, resource_type: str = "reserved_ip") -> Action:
        with self.lock:
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
            if self.ip_locked(r.ip):
                raise unprocessable(f"{noun} already has a pending event.")
            return self._new_action(type=f"{kind}_ip", resource_type=resource_type,
                                    resource_id=int(ipaddress.IPv4Address(r.ip)), region=r.region,
                                    ip=r.ip, droplet_id=target)

    def start_droplet_action(self, droplet_id: str, body: Any) -> Action:
        with self.lock:
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

    # --- finishing actions: the power and assignment hooks ----------------------------

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
        with self._hook_locks["ip" if args[0] in ("assign", "unassign") else "power"]:
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
        with self.lock:
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
        with self.lock:
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
