"""What the fake account answers: API requests routed to operations, DO's list
pagination, and the metadata service's plain-text and JSON views.

API (Bearer token, under /v2):
    GET  /v2/reserved_ips[/{ip}[/actions[/{action_id}]]]   (and /v2/floating_ips/...)
    POST /v2/reserved_ips/{ip}/actions      {"type": "assign", "droplet_id": N} | {"type": "unassign"}
    GET  /v2/droplets[?tag_name=T]           (a fence device's monitor; tag_name needs tag:read)
    GET  /v2/droplets/{id}[/actions[/{action_id}]]
    DELETE /v2/droplets/{id}                (204; a reserved IP it held is unassigned)
    POST /v2/droplets/{id}/actions          {"type": power_off|power_on|shutdown|reboot|power_cycle}
    GET  /v2/actions[/{action_id}]
    POST /_lab/faults {"status": 429|500|503, "count": N, "match": "POST /v2/droplets/"}
                                            (lab only: not a DO endpoint; match is optional)
    POST /_lab/faults {"clear": true}   (lab only: drops every queued fault)
    POST /_lab/action_delay {"seconds": S, "by_type": {"power_off": S, ...}}   (lab only)
    POST /_lab/droplets {"id": N, "name": ..., "public_ipv4": ..., ...}  (lab only: a droplet the
         lab booted; DO's own create chooses ids and addresses, the lab chooses them here)
Metadata (no auth, caller identified by source address): /metadata/v1/..., /metadata/v1.json

Views are plain functions of the account and the request; HTTP is server.py's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from lab.fake_do.account import JSON, ApiError, FakeAccount, not_found, unprocessable
from lab.fake_do.openapi import required_scopes
from lab.fake_do.shapes import action_json, droplet_json, ip_json, metadata_json, metadata_tree

Groups = dict[str, str]
Query = dict[str, list[str]]
# (account, path groups, parsed JSON body, query, this path's absolute URL) -> (status, body)
Operation = Callable[[FakeAccount, Groups, Any, Query, str], tuple[int, JSON]]


def paginate(items: list[JSON], key: str, query: Query, base: str) -> JSON:
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


# --- API operations: each returns (status, body) -------------------------------------------

def _ip_key(g: Groups) -> tuple[str, str]:
    """The resource type and list key: /v2/floating_ips answers in the old names."""
    return ("reserved_ip", "reserved_ips") if g["kind"] == "reserved" else ("floating_ip", "floating_ips")


def ip_list(account: FakeAccount, g: Groups, _b: Any, q: Query, base: str) -> tuple[int, JSON]:
    with account.lock:
        items = [ip_json(account, r) for r in account.ips.values()]
    return 200, paginate(items, _ip_key(g)[1], q, base)


def ip_get(account: FakeAccount, g: Groups, _b: Any, _q: Query, _base: str) -> tuple[int, JSON]:
    with account.lock:
        return 200, {_ip_key(g)[0]: ip_json(account, account.reserved_ip(g["ip"]))}


def ip_actions(account: FakeAccount, g: Groups, _b: Any, q: Query, base: str) -> tuple[int, JSON]:
    with account.lock:
        r = account.reserved_ip(g["ip"])
        items = [action_json(a) for a in reversed(account.actions.values()) if a.ip == r.ip]
    return 200, paginate(items, "actions", q, base)


def ip_action_post(account: FakeAccount, g: Groups, body: Any, _q: Query, _base: str) -> tuple[int, JSON]:
    with account.lock:
        a = account.start_ip_action(g["ip"], body, _ip_key(g)[0])
        return 201, {"action": action_json(a, with_project=True)}


def ip_action_get(account: FakeAccount, g: Groups, _b: Any, _q: Query, _base: str) -> tuple[int, JSON]:
    with account.lock:
        r = account.reserved_ip(g["ip"])
        a = account.action(g["aid"])
        if a.ip != r.ip:
            raise not_found()
        return 200, {"action": action_json(a, with_project=True)}


def droplet_list(account: FakeAccount, _g: Groups, _b: Any, q: Query, base: str) -> tuple[int, JSON]:
    tag = q.get("tag_name", [""])[0]
    with account.lock:
        items = [droplet_json(d) for _, d in sorted(account.droplets.items())]
    return 200, paginate([d for d in items if not tag or tag in d["tags"]], "droplets", q, base)


def droplet_get(account: FakeAccount, g: Groups, _b: Any, _q: Query, _base: str) -> tuple[int, JSON]:
    with account.lock:
        return 200, {"droplet": droplet_json(account.droplet(g["did"]))}


def droplet_delete(account: FakeAccount, g: Groups, _b: Any, _q: Query, _base: str) -> tuple[int, JSON]:
    account.delete_droplet(g["did"])
    return 204, None


def lab_droplet_create(account: FakeAccount, _g: Groups, body: Any, _q: Query, _base: str) -> tuple[int, JSON]:
    droplet = account.create_droplet(body)
    with account.lock:
        return 201, {"droplet": droplet_json(droplet)}


def droplet_actions(account: FakeAccount, g: Groups, _b: Any, q: Query, base: str) -> tuple[int, JSON]:
    with account.lock:
        d = account.droplet(g["did"])
        items = [action_json(a) for a in reversed(account.actions.values())
                 if a.resource_type == "droplet" and a.resource_id == d.id]
    return 200, paginate(items, "actions", q, base)


def droplet_action_post(account: FakeAccount, g: Groups, body: Any, _q: Query, _base: str) -> tuple[int, JSON]:
    with account.lock:
        return 201, {"action": action_json(account.start_droplet_action(g["did"], body))}


def droplet_action_get(account: FakeAccount, g: Groups, _b: Any, _q: Query, _base: str) -> tuple[int, JSON]:
    with account.lock:
        d = account.droplet(g["did"])
        a = account.action(g["aid"])
        if a.resource_type != "droplet" or a.resource_id != d.id:
            raise not_found()
        return 200, {"action": action_json(a)}


def action_list(account: FakeAccount, _g: Groups, _b: Any, q: Query, base: str) -> tuple[int, JSON]:
    with account.lock:
        items = [action_json(a) for a in reversed(account.actions.values())]
    return 200, paginate(items, "actions", q, base)


def action_get(account: FakeAccount, g: Groups, _b: Any, _q: Query, _base: str) -> tuple[int, JSON]:
    with account.lock:
        return 200, {"action": action_json(account.action(g["aid"]))}


def lab_faults(account: FakeAccount, _g: Groups, body: Any, _q: Query, _base: str) -> tuple[int, JSON]:
    usage = "expected {\"status\": 429|500|503, \"count\": N, \"match\": \"POST /v2/droplets/\" (optional)}"
    if (not isinstance(body, dict) or not isinstance(body.get("count", 1), int)
            or not isinstance(body.get("match", ""), str)):
        raise unprocessable(usage)
    if body.get("clear") is True:
        account.clear_faults()
        return 200, {"queued": 0}
    try:
        queued = account.inject_faults(int(body.get("status", 0)), int(body.get("count", 1)), body.get("match", ""))
    except (TypeError, ValueError) as e:
        raise unprocessable(str(e)) from None
    return 200, {"queued": queued}


def lab_action_delay(account: FakeAccount, _g: Groups, body: Any, _q: Query, _base: str) -> tuple[int, JSON]:
    usage = "expected {\"seconds\": S, \"by_type\": {\"power_off\": S, \"assign_ip\": S, ...}}"
    if not isinstance(body, dict) or not isinstance(body.get("by_type", {}), dict):
        raise unprocessable(usage)
    try:
        account.set_action_delays(body.get("seconds", account.action_delay), body.get("by_type", {}))
    except ValueError as e:
        raise unprocessable(f"{e}; {usage}") from None
    return 200, {"seconds": account.action_delay, "by_type": body.get("by_type", {})}


ROUTES: list[tuple[str, re.Pattern[str], Operation]] = [(m, re.compile("^" + p + "$"), op) for m, p, op in [
    ("GET", r"/v2/(?P<kind>reserved|floating)_ips", ip_list),
    ("GET", r"/v2/(?P<kind>reserved|floating)_ips/(?P<ip>[^/]+)", ip_get),
    ("GET", r"/v2/(?P<kind>reserved|floating)_ips/(?P<ip>[^/]+)/actions", ip_actions),
    ("POST", r"/v2/(?P<kind>reserved|floating)_ips/(?P<ip>[^/]+)/actions", ip_action_post),
    ("GET", r"/v2/(?P<kind>reserved|floating)_ips/(?P<ip>[^/]+)/actions/(?P<aid>[^/]+)", ip_action_get),
    ("GET", r"/v2/droplets", droplet_list),
    ("GET", r"/v2/droplets/(?P<did>[^/]+)", droplet_get),
    ("DELETE", r"/v2/droplets/(?P<did>[^/]+)", droplet_delete),
    ("GET", r"/v2/droplets/(?P<did>[^/]+)/actions", droplet_actions),
    ("POST", r"/v2/droplets/(?P<did>[^/]+)/actions", droplet_action_post),
    ("GET", r"/v2/droplets/(?P<did>[^/]+)/actions/(?P<aid>[^/]+)", droplet_action_get),
    ("GET", r"/v2/actions", action_list),
    ("GET", r"/v2/actions/(?P<aid>[^/]+)", action_get),
    ("POST", r"/_lab/faults", lab_faults),
    ("POST", r"/_lab/action_delay", lab_action_delay),
    ("POST", r"/_lab/droplets", lab_droplet_create),
]]


def api(account: FakeAccount, method: str, target: str, authorization: str, raw_body: bytes,
        host: str, scheme: str = "http") -> tuple[int, JSON]:
    """Answer one API request (target: path and query); errors raise ApiError.
    Checks run in this order: token, route, the token's scopes, injected fault, body."""
    scheme, _, presented = authorization.partition(" ")
    try:
        if scheme.lower() != "bearer":
            raise KeyError(scheme)
        granted = account.scopes_of(presented.strip())
    except KeyError:
        raise ApiError(401, "unauthorized", "Unable to authenticate you.") from None
    url = urlsplit(target)
    path = url.path.rstrip("/") or "/"
    matches = [(m, mo, op) for m, rx, op in ROUTES if (mo := rx.match(path))]
    if not matches:
        raise not_found()
    route = next(((mo, op) for m, mo, op in matches if m == method), None)
    if route is None:
        raise ApiError(405, "method_not_allowed", f"{method} is not supported here by the lab stand-in.")
    match, op = route
    if granted is not None:  # a custom-scoped token: what the specification requires, or 403
        needed = required_scopes(method, path)
        if needed is not None and "tag_name" in parse_qs(url.query):  # the parameter's own scope
            needed |= {"tag:read"}
        if needed is None or not needed <= granted:
            raise ApiError(403, "forbidden", "You do not have permission to perform this action.")
    if op not in (lab_faults, lab_action_delay):  # the lab's own knobs stay reachable
        fault = account.take_fault(f"{method} {path}")
        if fault == 429:
            raise ApiError(429, "too_many_requests", "API Rate limit exceeded.")
        if fault == 500:
            raise ApiError(500, "server_error", "Server Error (injected by the lab).")
        if fault == 503:
            raise ApiError(503, "service_unavailable", "Service Unavailable (injected by the lab).")
    body: Any = None
    if method == "POST":
        try:
            body = json.loads(raw_body or b"null")
        except ValueError:
            raise ApiError(400, "bad_request", "error parsing request body") from None
    return op(account, match.groupdict(), body, parse_qs(url.query), f"{scheme}://{host}{path}")


# --- metadata -------------------------------------------------------------------------------

TEXT = "text/plain; charset=utf-8"
NOT_FOUND = (404, b"not found\n", TEXT)


def metadata(account: FakeAccount, caller: str, target: str) -> tuple[int, bytes, str]:
    """(status, body, content type) for the droplet at address `caller`."""
    d = account.droplet_for_address(caller)
    path = urlsplit(target).path
    if d is None:
        return NOT_FOUND
    if path == "/metadata/v1.json":
        return 200, json.dumps(metadata_json(account, d)).encode(), "application/json"
    if not path.startswith("/metadata/v1"):
        return NOT_FOUND
    node: Any = metadata_tree(account, d)
    for part in [p for p in path.removeprefix("/metadata/v1").strip("/").split("/") if p]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return NOT_FOUND
    return 200, metadata_text(node).encode(), TEXT


def metadata_text(node: Any) -> str:
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
