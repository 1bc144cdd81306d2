"""The verdict of `make status`: a stack's health from the facts tooling/status_gather.py
collected, and the one screen that shows it.

`assess(facts)` returns a Report: what each part of the stack looks like, and every
problem found. The stack is healthy only when there is none; any of these is one:
a node unreachable, a member offline, standby, pending or unclean, corosync or
pacemaker inactive, no quorum (as any member sees it), no promoted MariaDB or a
writable replica, a replica whose threads stopped, that lags more than
tuning.STATUS_MAX_REPLICA_LAG_S or replicates from elsewhere, semi-sync off, a
GlusterFS brick not connected or with entries to heal or in split-brain, a failed
resource action, a fencing device not running, a node fenced and still down, a
fencing in progress or failed, a droplet the API shows off, and a reserved IP not
on the primary or seen on different nodes by pacemaker, the nodes and the API.

The last failover comes from pacemaker's operation history (crm_mon
--include=operations): the `promote` of MariaDB and the `start` of the reserved IP
on the node that runs them now. Why this source: it is the cluster's replicated
record, so any member answers it, including after the old primary was fenced (the
reserved-IP agent's log lives in the journal of the node that ran it, which may be
powered off); it needs no API token; and it is exact for the current placement,
since the holder's history is reset only when that node leaves the cluster, which
would have moved the resources again. The API's assign actions of the reserved IP
(when a token is given) and the fencing history are shown beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from xml.etree import ElementTree

from infra import tuning
from infra.config import PROJECT
from tooling.health_parse import (
    BrickHeal, CrmView, gtid_gap, parse_crm_mon, parse_gtid, parse_heal_info, parse_host_map, parse_metadata,
    parse_name_values, parse_quorumtool, parse_vertical, probe, probe_error,
)

DB_RESOURCE = "mariadb"
RESERVED_IP_RESOURCE = "reserved-ip"
UNITS = ("corosync", "pacemaker", "glusterd")


def droplet_ids(nodes: dict[str, dict[str, Any]]) -> list[int]:
    """Every droplet id the nodes know of: the fence device's host map (any member
    answers it, so a powered-off droplet is included) and each node's metadata."""
    return sorted(_Names("", nodes, {}).by_droplet)


@dataclass
class Report:
    stack: str
    taken_at: float
    reserved_ip: str
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    cluster: dict[str, Any] = field(default_factory=dict)
    holder: dict[str, Any] = field(default_factory=dict)
    database: dict[str, Any] = field(default_factory=dict)
    storage: dict[str, Any] = field(default_factory=dict)
    fencing: dict[str, Any] = field(default_factory=dict)
    failed_actions: list[str] = field(default_factory=list)
    last_failover: dict[str, Any] = field(default_factory=dict)
    api: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__) | {"healthy": self.healthy}


# --- small helpers ---------------------------------------------------------------------

def _utc(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _ago(epoch: float | None, now: float) -> str:
    if epoch is None:
        return ""
    seconds = max(0, int(now - epoch))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _node_zone(fact: dict[str, Any]) -> timezone:
    """The node's UTC offset (`date +%z`), for crm_mon's local timestamps; UTC when unknown."""
    rc, out = probe(fact, "clock")
    parts = out.split()
    if rc == 0 and len(parts) == 2 and len(parts[1]) == 5 and parts[1][1:].isdigit():
        sign = -1 if parts[1][0] == "-" else 1
        return timezone(sign * timedelta(hours=int(parts[1][1:3]), minutes=int(parts[1][3:5])))
    return UTC


def pcmk_time(text: str, zone: timezone = UTC) -> float | None:
    """Epoch seconds of a pacemaker timestamp: crm_mon's local `Thu Dec  3 10:25:33 2026`
    (in the node's zone) or the fence history's `2026-12-03 10:25:28.977539Z`."""
    text = " ".join(text.split())
    if not text:
        return None
    for fmt in ("%a %b %d %H:%M:%S %Y", "%Y-%m-%d %H:%M:%S.%fZ", "%Y-%m-%d %H:%M:%SZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            parsed = datetime.strptime(text, fmt)
        except ValueError:
            continue
        return parsed.replace(tzinfo=UTC if fmt.endswith("Z") else zone).timestamp()
    for fmt in ("%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M:%S.%f %z", "%Y-%m-%dT%H:%M:%S%z"):
        try:
            return datetime.strptime(text, fmt).timestamp()
        except ValueError:
            continue
    return None


class _Names:
    """Translate between the program's node names (app1), the cluster's (the droplet
    name, do-ha-stack-STACK-app1), private addresses and droplet ids."""

    def __init__(self, stack: str, nodes: dict[str, dict[str, Any]], outputs_private: dict[str, str]) -> None:
        short_stack = stack.rsplit("/", 1)[-1]
        self.cluster = {}
        for name, fact in nodes.items():
            rc, out = probe(fact, "host")
            self.cluster[name] = out.strip() if rc == 0 and out.strip() else f"{PROJECT}-{short_stack}-{name}"
        self.by_cluster = {v: k for k, v in self.cluster.items()}
        self.by_private = {ip: name for name, ip in outputs_private.items() if ip}
        self.by_droplet: dict[int, str] = {}
        for fact in nodes.values():
            rc, out = probe(fact, "host_map")
            if rc == 0:
                for cluster_name, droplet in parse_host_map(out).items():
                    self.by_droplet[droplet] = self.of(cluster_name)
        for name, fact in nodes.items():
            rc, out = probe(fact, "metadata")
            if rc == 0:
                try:
                    meta = parse_metadata(out)
                except ValueError:
                    continue
                if meta.droplet_id is not None:
                    self.by_droplet[meta.droplet_id] = name

    def of(self, cluster_name: str) -> str:
        return self.by_cluster.get(cluster_name, cluster_name)

    def droplet(self, droplet_id: Any) -> str:
        try:
            return self.by_droplet.get(int(droplet_id), f"droplet {droplet_id}")
        except (TypeError, ValueError):
            return f"droplet {droplet_id}"


def _views(nodes: dict[str, dict[str, Any]]) -> dict[str, CrmView]:
    views = {}
    for name, fact in nodes.items():
        rc, out = probe(fact, "crm_mon")
        if rc == 0 and out.strip():
            try:
                views[name] = parse_crm_mon(out)
            except (ElementTree.ParseError, ValueError):  # a garbled view is a missing view
                continue
    return views


def _chosen_view(views: dict[str, CrmView], names: _Names) -> tuple[str | None, CrmView | None]:
    """The view of a quorate member, the DC's first: the partition that may run resources."""
    def rank(item: tuple[str, CrmView]) -> tuple[bool, bool]:
        name, view = item
        return view.quorum, view.dc is not None and names.of(view.dc) == name
    if not views:
        return None, None
    name, view = max(views.items(), key=rank)
    return name, view


# --- the assessment ----------------------------------------------------------------------

def assess(facts: dict[str, Any], outputs: dict[str, Any] | None = None,
           max_lag_s: int = tuning.STATUS_MAX_REPLICA_LAG_S) -> Report:
    """The health of a stack from its gathered facts. `outputs` (the stack outputs)
    gives the private addresses, to name bricks and check replication sources."""
    nodes: dict[str, dict[str, Any]] = facts["nodes"]
    out_nodes = (outputs or {}).get("nodes") or {}
    private = {n: (out_nodes.get(n) or {}).get("privateIpv4", "") for n in nodes}
    report = Report(stack=facts["stack"], taken_at=facts["taken_at"], reserved_ip=facts["reserved_ip"])
    names = _Names(facts["stack"], nodes, private)
    views = _views(nodes)
    view_from, view = _chosen_view(views, names)
    reachable = {n for n, f in nodes.items() if f.get("ssh_rc") == 0 and f.get("probes")}

    _assess_nodes(report, nodes, names, views, view_from, view, reachable)
    primary = _assess_database(report, nodes, names, view, reachable, private, max_lag_s)
    _assess_storage(report, nodes, names, reachable)
    _assess_fencing(report, facts, names, view, view_from)
    _assess_reserved_ip(report, facts, nodes, names, view, reachable, primary)
    _assess_last_failover(report, facts, nodes, names, view, view_from, primary)
    return report


def _assess_nodes(report: Report, nodes: dict[str, dict[str, Any]], names: _Names, views: dict[str, CrmView],
                  view_from: str | None, view: CrmView | None, reachable: set[str]) -> None:
    report.cluster = {"view_from": view_from, "dc": names.of(view.dc) if view and view.dc else None,
                      "quorum": view.quorum if view else None}
    if view is None:
        report.problems.append("cluster: no node answered crm_mon (pacemaker down everywhere, or no node reachable)")
    elif not view.quorum:
        report.problems.append(f"cluster: no quorum (as {view_from} sees it)")
    for name, fact in nodes.items():
        row: dict[str, Any] = {"address": fact.get("address"), "role": fact.get("role")}
        issues = []
        if name not in reachable:
            row["ssh"] = fact.get("ssh_err") or f"ssh exit code {fact.get('ssh_rc')}"
            last = row["ssh"].splitlines()[-1]
            # ssh's own failures exit 255 (or never ended); anything else came from the node
            issues.append(f"unreachable over SSH ({last})" if fact.get("ssh_rc") in (None, 255)
                          else f"its facts could not be read ({last})")
        else:
            row["ssh"] = "ok"
            rc, out = probe(fact, "units")
            states = out.split()
            for unit, state in zip(UNITS, states, strict=False):
                row[unit] = state
                if state != "active":
                    issues.append(f"{unit} {state}")
            quorum_rc, quorum_out = probe(fact, "quorum")
            row["corosync_quorate"] = parse_quorumtool(quorum_out).quorate if quorum_rc == 0 else None
            own = views.get(name)
            row["sees_quorum"] = own.quorum if own else None
            if own is not None and not own.quorum:
                issues.append("sees no quorum")
        member = view.nodes.get(names.cluster[name]) if view else None
        if view is None:
            row["cluster"] = "unknown"
        elif member is None:
            row["cluster"] = "not a member"
            issues.append("not a cluster member")
        else:
            state = ("unclean" if member.unclean else "offline" if not member.online
                     else "pending" if member.pending else "standby" if member.standby
                     else "maintenance" if member.maintenance else "online")
            row["cluster"] = state
            if state != "online":
                issues.append(f"{state} in the cluster (as {view_from} sees it)")
        row["ok"] = not issues
        report.nodes[name] = row
        if issues:
            report.problems.append(f"{name}: " + ", ".join(issues))
    for failure in (view.failures if view else []):
        text = (f"{failure.op_key} on {names.of(failure.node)}: {failure.exit_status}"
                f"{' (' + failure.exit_reason + ')' if failure.exit_reason else ''} at {failure.when}")
        report.failed_actions.append(text)
        report.problems.append(f"failed action: {text}")


def _promoted(view: CrmView | None, names: _Names) -> list[str]:
    if view is None:
        return []
    return [names.of(n) for r in view.resources if r.id == DB_RESOURCE and r.role == "Promoted" and r.active
            for n in r.nodes]


def _assess_database(report: Report, nodes: dict[str, dict[str, Any]], names: _Names, view: CrmView | None,
                     reachable: set[str], private: dict[str, str], max_lag_s: int) -> str | None:
    promoted = _promoted(view, names)
    primary = promoted[0] if len(promoted) == 1 else None
    report.database = {"primary": primary, "max_lag_s": max_lag_s, "nodes": {}}
    if not promoted:
        report.problems.append("database: no promoted MariaDB (no primary)")
    elif len(promoted) > 1:
        report.problems.append(f"database: more than one promoted MariaDB: {', '.join(promoted)}")
    state: dict[str, dict[str, str]] = {}
    for name, fact in nodes.items():
        if fact.get("role") == "witness" or name not in reachable:
            continue
        rc, out = probe(fact, "mariadb")
        state[name] = parse_name_values(out) if rc == 0 else {}
    primary_gtid = parse_gtid(state.get(primary, {}).get("gtid_binlog_pos", "")) if primary else {}
    for name, fact in nodes.items():
        if fact.get("role") == "witness":
            continue
        row: dict[str, Any] = {"role": "primary" if name == primary else "replica"}
        report.database["nodes"][name] = row
        issues = []
        if name not in reachable:
            row["state"] = "unknown (unreachable)"
            report.problems.append(f"database on {name}: unknown (node unreachable)")
            continue
        values = state.get(name) or {}
        if not values:
            row["state"] = "down"
            report.problems.append(f"database on {name}: MariaDB does not answer ({probe_error(fact, 'mariadb')})")
            continue
        row["read_only"] = values.get("read_only")
        if name == primary:
            row["semi_sync"] = values.get("rpl_semi_sync_master_status", "?")
            row["semi_sync_clients"] = values.get("rpl_semi_sync_master_clients", "?")
            if row["read_only"] != "OFF":
                issues.append("the primary is read-only")
            if row["semi_sync"] != "ON":
                issues.append("semi-sync is OFF on the primary (commits are asynchronous: a failover can lose "
                              "acknowledged writes)")
        else:
            if row["read_only"] == "OFF":
                issues.append("writable, but not the primary")
            rc, out = probe(fact, "replica")
            status = parse_vertical(out) if rc == 0 else {}
            row["semi_sync"] = values.get("rpl_semi_sync_slave_status", "?")
            if not status:
                row["state"] = "not a replica"
                issues.append("not replicating (no replication configured)")
            else:
                row.update(io=status.get("Slave_IO_Running", "?"), sql=status.get("Slave_SQL_Running", "?"),
                           source=status.get("Master_Host", ""))
                lag = status.get("Seconds_Behind_Master", "NULL")
                row["lag_s"] = int(lag) if lag.isdigit() else None
                if primary_gtid:
                    row["gtid_gap"] = gtid_gap(primary_gtid, parse_gtid(values.get("gtid_current_pos", "")))
                if row["io"] != "Yes":
                    err = status.get("Last_IO_Error") or status.get("Slave_IO_State") or "stopped"
                    issues.append(f"replication IO thread not running ({err})")
                if row["sql"] != "Yes":
                    issues.append(f"replication SQL thread not running ({status.get('Last_SQL_Error') or 'stopped'})")
                if row["lag_s"] is not None and row["lag_s"] > max_lag_s:
                    issues.append(f"lags {row['lag_s']} s behind the primary (threshold {max_lag_s} s)")
                if primary and private.get(primary) and row["source"] != private[primary]:
                    issues.append(f"replicates from {row['source'] or 'nowhere'}, not from the primary "
                                  f"{primary} ({private[primary]})")
                if row["semi_sync"] != "ON":
                    issues.append("semi-sync replica is OFF")
        issues += _sync_guard_issues(fact, row, name == primary)
        row["ok"] = not issues
        if issues:
            report.problems.append(f"database on {name}: " + "; ".join(issues))
    return primary


def _sync_guard_issues(fact: dict[str, Any], row: dict[str, Any], is_primary: bool) -> list[str]:
    """The sync guard's view of one app node (facts from before the guard lack it)."""
    issues = []
    if "in_sync" in fact.get("probes", {}):
        rc, out = probe(fact, "in_sync")
        row["in_sync"] = out.strip() if rc == 0 else ("never marked" if rc == 105 else "?")
        if row["in_sync"] == "0" and not is_primary:
            issues.append("out of sync: the primary's commits went on without it, so it is not promoted "
                          "automatically (it is marked in sync again once it confirms commits)")
    if "sync_guard" in fact.get("probes", {}):
        row["sync_guard"] = probe(fact, "sync_guard")[1].strip() or "?"
        if row["sync_guard"] != "active":
            issues.append(f"the sync guard (do-ha-db-sync-guard.service) is {row['sync_guard']}")
    return issues


def _assess_storage(report: Report, nodes: dict[str, dict[str, Any]], names: _Names, reachable: set[str]) -> None:
    """Every reachable node's heal report, merged brick by brick, worst first."""
    merged: dict[str, BrickHeal] = {}
    seen_by = []
    for name, fact in nodes.items():
        rc, out = probe(fact, "heal")
        if name not in reachable or rc != 0:
            continue
        bricks = parse_heal_info(out)
        if not bricks:
            continue
        seen_by.append(name)
        for brick in bricks:
            known = merged.get(brick.brick)
            if known is None:
                merged[brick.brick] = brick
                continue
            if known.status == "Connected" and brick.status != "Connected":
                known.status = brick.status
            for attr in ("entries", "split_brain"):
                a, b = getattr(known, attr), getattr(brick, attr)
                setattr(known, attr, b if a is None else a if b is None else max(a, b))
    rows = []
    for brick in merged.values():
        host = brick.brick.split(":", 1)[0]
        node = names.by_private.get(host, host)
        rows.append({"brick": brick.brick, "node": node, "status": brick.status, "entries": brick.entries,
                     "split_brain": brick.split_brain})
        if brick.status != "Connected":
            report.problems.append(f"storage: brick on {node} not connected ({brick.status or 'no status'})")
        elif brick.entries is None:
            report.problems.append(f"storage: brick on {node} reports no count of entries to heal")
        elif brick.entries > 0:
            report.problems.append(f"storage: brick on {node} has {brick.entries} entries to heal")
        if brick.split_brain:
            report.problems.append(f"storage: brick on {node} has {brick.split_brain} entries in split-brain")
    report.storage = {"bricks": rows, "seen_by": seen_by}
    if not seen_by:
        report.problems.append("storage: no node reported the volume's heal state")


def _assess_fencing(report: Report, facts: dict[str, Any], names: _Names, view: CrmView | None,
                    view_from: str | None) -> None:
    nodes = facts["nodes"]
    zone = _node_zone(nodes[view_from]) if view_from else UTC
    devices = [r for r in (view.resources if view else []) if r.agent.startswith("stonith:")]
    running = [names.of(n) for r in devices if r.active for n in r.nodes]
    latest: dict[str, dict[str, Any]] = {}
    for event in (view.fence_events if view else []):
        target = names.of(event.target)
        when = pcmk_time(event.completed, zone)
        entry = {"target": target, "action": event.action, "status": event.status,
                 "by": names.of(event.delegate) if event.delegate else "", "at": when,
                 "reason": event.exit_reason}
        # per target: a pending action wins (it is the newest), else the latest completed one
        known = latest.get(target)
        if known is None or event.status == "pending" or (
                known["status"] != "pending" and (when or 0) >= (known["at"] or 0)):
            latest[target] = entry
    fenced = []
    for target, event in latest.items():
        down = report.nodes.get(target, {}).get("cluster") not in ("online", None)
        if event["status"] == "pending":
            report.problems.append(f"fencing: {event['action']} of {target} in progress")
        elif event["status"] == "success" and down:
            fenced.append(target)
            report.problems.append(f"fencing: {target} was fenced ({event['action']}) at {_utc(event['at'])} "
                                   f"by {event['by']} and has not rejoined")
        elif event["status"] != "success" and down:
            report.problems.append(f"fencing: {event['action']} of {target} failed at {_utc(event['at'])}"
                                   f"{' (' + event['reason'] + ')' if event['reason'] else ''}")
    if view is not None and not view.stonith_enabled:
        # a new cluster's, until cluster-resources adds the device (cluster-setup.sh)
        report.problems.append("fencing: turned off (stonith-enabled=false): a lost node would not be powered "
                               "off before its resources ran elsewhere; `pulumi up` (cluster-resources) turns it on")
    elif view is not None and not running:
        report.problems.append("fencing: no fence device is running (a failed node could not be fenced, "
                               "so nothing would fail over)")
    droplets = {}
    api = facts.get("api")
    if isinstance(api, dict) and "droplets" in api:
        for droplet_id, droplet in api["droplets"].items():
            node = names.droplet(droplet_id)
            status = droplet.get("status") or droplet.get("error") or "unknown"
            droplets[node] = status
            if status != "active":
                report.problems.append(f"fencing: droplet of {node} is {status} (API)")
                if status == "off" and node not in fenced:
                    fenced.append(node)
    report.fencing = {"device_on": running, "latest": list(latest.values()), "fenced": fenced,
                      "droplets": droplets}


def _assess_reserved_ip(report: Report, facts: dict[str, Any], nodes: dict[str, dict[str, Any]], names: _Names,
                        view: CrmView | None, reachable: set[str], primary: str | None) -> None:
    ip = facts["reserved_ip"]
    by_pacemaker = [names.of(n) for r in (view.resources if view else [])
                    if r.id == RESERVED_IP_RESOURCE and r.active for n in r.nodes]
    by_nodes = []
    for name in sorted(reachable):
        rc, out = probe(nodes[name], "metadata")
        if rc == 0:
            try:
                if parse_metadata(out).reserved_ip == ip:
                    by_nodes.append(name)
            except ValueError:
                continue
    api = facts.get("api")
    by_api: str | None = None
    if api is None:
        report.api = "no token (set DIGITALOCEAN_TOKEN to add the API's view)"
    elif "error" in api:
        report.api = f"error: {api['error']}"
        report.problems.append(f"API: {api['error']} (its view of the reserved IP and droplets is missing)")
    else:
        report.api = "ok"
        droplet = (api.get("reserved_ip") or {}).get("droplet")
        by_api = names.droplet(droplet.get("id")) if droplet else "unassigned"
    report.holder = {"pacemaker": by_pacemaker, "nodes": by_nodes, "api": by_api, "primary": primary}
    if not by_pacemaker:
        report.problems.append(f"reserved IP {ip}: pacemaker runs no reserved-ip resource")
    holders = set(by_pacemaker) | set(by_nodes) | ({by_api} if by_api else set())
    if len(holders) > 1 or len(by_nodes) > 1:
        report.problems.append(f"reserved IP {ip}: sources disagree (pacemaker: {', '.join(by_pacemaker) or '-'}; "
                               f"nodes' metadata: {', '.join(by_nodes) or '-'}; API: {by_api or '-'})")
    elif not by_nodes and reachable:
        report.problems.append(f"reserved IP {ip}: no reachable node holds it (metadata)")
    if primary and by_pacemaker and by_pacemaker != [primary]:
        report.problems.append(f"reserved IP {ip} is on {', '.join(by_pacemaker)}, but the primary is {primary}")


def _assess_last_failover(report: Report, facts: dict[str, Any], nodes: dict[str, dict[str, Any]], names: _Names,
                          view: CrmView | None, view_from: str | None, primary: str | None) -> None:
    zone = _node_zone(nodes[view_from]) if view_from else UTC
    out: dict[str, Any] = {"source": "pacemaker operation history"}
    holder = (report.holder.get("pacemaker") or [None])[0]
    for key, resource, task, node in (("promoted", DB_RESOURCE, "promote", primary),
                                      ("ip_started", RESERVED_IP_RESOURCE, "start", holder)):
        if view is None or node is None:
            continue
        times = [pcmk_time(op.last_rc_change, zone) for op in view.operations
                 if op.resource == resource and op.task == task and op.rc == 0 and names.of(op.node) == node]
        times = [t for t in times if t is not None]
        if times:
            out[key] = {"node": node, "at": max(times)}
    fences = [e for e in report.fencing.get("latest", []) if e["status"] == "success" and e["at"]]
    if fences:
        last = max(fences, key=lambda e: e["at"])
        out["fenced"] = {"node": last["target"], "action": last["action"], "at": last["at"], "by": last["by"]}
    api = facts.get("api")
    if isinstance(api, dict) and api.get("actions") is not None:
        done = [pcmk_time(a.get("completed_at") or "") for a in api["actions"]
                if a.get("status") == "completed" and a.get("type") in ("assign_ip", "assign")]
        done = [t for t in done if t is not None]
        out["api_assign"] = max(done) if done else None
    report.last_failover = out


# --- the screen --------------------------------------------------------------------------

def _db_cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    if row["role"] == "primary":
        return (f"PRIMARY read_only {row.get('read_only', '?')}, semi-sync {row.get('semi_sync', '?')} "
                f"({row.get('semi_sync_clients', '?')} acking)")
    if "io" not in row:
        return row.get("state", "-")
    lag = "-" if row.get("lag_s") is None else f"{row['lag_s']} s"
    return (f"replica io {row['io']}, sql {row['sql']}, lag {lag}, gap {row.get('gtid_gap', '?')}, "
            f"semi-sync {row.get('semi_sync', '?')}" + (", OUT OF SYNC" if row.get("in_sync") == "0" else ""))


def _brick_cell(bricks: list[dict[str, Any]], node: str) -> str:
    cells = []
    for b in bricks:
        if b["node"] != node:
            continue
        state = "ok" if b["status"] == "Connected" else "DOWN"
        heal = "?" if b["entries"] is None else str(b["entries"])
        cells.append(f"{state}, heal {heal}" + (f", split-brain {b['split_brain']}" if b["split_brain"] else ""))
    return "; ".join(cells) or "-"


def render(report: Report) -> str:
    """The one screen: a headline, the reserved IP, the last failover, the cluster, a row
    per node, and every problem."""
    now = report.taken_at
    count = len(report.problems)
    verdict = "HEALTHY" if report.healthy else f"DEGRADED ({count} problem{'s' if count != 1 else ''})"
    h, c, f, lf = report.holder, report.cluster, report.fencing, report.last_failover
    lines = [f"{PROJECT} {report.stack} at {_utc(now)}: {verdict}", ""]
    api = h.get("api") or "-"
    lines.append(f"reserved IP {report.reserved_ip}: pacemaker {','.join(h.get('pacemaker') or []) or 'NONE'}, "
                 f"metadata {','.join(h.get('nodes') or []) or 'NONE'}, API {api}"
                 + ("" if report.api == "ok" else f" ({report.api})"))
    parts = []
    if "promoted" in lf:
        parts.append(f"{_utc(lf['promoted']['at'])} ({_ago(lf['promoted']['at'], now)}) MariaDB promoted on "
                     f"{lf['promoted']['node']}")
    if "ip_started" in lf:
        parts.append(f"reserved IP started there {_utc(lf['ip_started']['at'])}")
    if "fenced" in lf:
        parts.append(f"{lf['fenced']['node']} fenced ({lf['fenced']['action']}) {_utc(lf['fenced']['at'])}"
                     f" by {lf['fenced']['by']}")
    if "api_assign" in lf:
        parts.append(f"API assign {_utc(lf['api_assign'])}" if lf["api_assign"] else "API: no assign yet")
    lines.append("last failover (promotion): " + ("; ".join(parts) or "unknown") + f" [{lf.get('source', '-')}]")
    quorum = {True: "yes", False: "NO", None: "unknown"}[c.get("quorum")]
    lines.append(f"cluster: quorum {quorum}, DC {c.get('dc') or '-'}, fence device on "
                 f"{','.join(f.get('device_on') or []) or 'NONE'}, failed actions {len(report.failed_actions)}"
                 f" (view of {c.get('view_from') or '-'})")
    lines.append("")
    header = ("node", "ssh", "corosync", "pacemaker", "member", "droplet", "brick", "database")
    rows = [header]
    bricks = report.storage.get("bricks", [])
    for name, row in report.nodes.items():
        rows.append((name, "ok" if row.get("ssh") == "ok" else "FAIL", row.get("corosync", "-"),
                     row.get("pacemaker", "-"), row.get("cluster", "-"), f.get("droplets", {}).get(name, "-"),
                     _brick_cell(bricks, name), _db_cell(report.database.get("nodes", {}).get(name))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
              for r in rows]
    if report.problems:
        lines += ["", "problems:"] + [f"  - {p}" for p in report.problems]
    return "\n".join(lines)
