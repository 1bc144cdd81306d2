"""Parsers for the raw outputs tooling/status-gather.sh collects on a node. Each takes
one probe's text and returns plain data; none of them judges health (tooling/health.py
does). Formats: crm_mon's XML (pacemaker 3), `corosync-quorumtool -s`, MariaDB's
`-N -B` name/value rows and `SHOW SLAVE STATUS\\G`, `gluster volume heal VOL info`
and `info summary`, and the metadata service's v1.json.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree


def probe(fact: dict[str, Any], name: str) -> tuple[int | None, str]:
    """(exit code, stdout) of one probe; exit code None when it never ran."""
    entry = (fact.get("probes") or {}).get(name)
    if not entry:
        return None, ""
    return entry.get("rc"), entry.get("out") or ""


def probe_error(fact: dict[str, Any], name: str) -> str:
    """The last line of a probe's stderr (or its stdout when stderr is empty)."""
    entry = (fact.get("probes") or {}).get(name) or {}
    text = (entry.get("err") or "").strip() or (entry.get("out") or "").strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else f"exit code {entry.get('rc')}"


# --- pacemaker ---------------------------------------------------------------------------

@dataclass
class CrmNode:
    name: str
    online: bool
    standby: bool
    maintenance: bool
    unclean: bool
    pending: bool
    shutdown: bool


@dataclass
class CrmResource:
    id: str
    agent: str
    role: str
    active: bool
    failed: bool
    managed: bool
    nodes: list[str]
    parent: str | None = None  # the clone or group it belongs to


@dataclass
class CrmFailure:
    op_key: str
    node: str
    exit_status: str
    exit_reason: str
    when: str


@dataclass
class FenceEvent:
    action: str
    target: str
    status: str
    delegate: str
    origin: str
    completed: str  # as crm_mon prints it; empty while pending
    exit_reason: str = ""


@dataclass
class CrmOperation:
    node: str
    resource: str
    task: str
    rc: int
    last_rc_change: str


@dataclass
class CrmView:
    dc: str | None
    quorum: bool
    nodes: dict[str, CrmNode]
    resources: list[CrmResource]
    failures: list[CrmFailure]
    fence_events: list[FenceEvent]
    operations: list[CrmOperation] = field(default_factory=list)
    stonith_enabled: bool = True


def _bool(value: str | None) -> bool:
    return (value or "").lower() == "true"


def parse_crm_mon(xml: str) -> CrmView:
    """crm_mon --output-as=xml --inactive --fence-history=3 --include=operations."""
    root = ElementTree.fromstring(xml)
    summary = root.find("summary")
    dc_el = summary.find("current_dc") if summary is not None else None
    dc = dc_el.get("name") if dc_el is not None and _bool(dc_el.get("present")) else None
    quorum = dc_el is not None and _bool(dc_el.get("with_quorum"))
    nodes = {}
    for el in root.iterfind("nodes/node"):
        nodes[el.get("name", "")] = CrmNode(
            name=el.get("name", ""), online=_bool(el.get("online")), standby=_bool(el.get("standby")),
            maintenance=_bool(el.get("maintenance")), unclean=_bool(el.get("unclean")),
            pending=_bool(el.get("pending")), shutdown=_bool(el.get("shutdown")))
    resources: list[CrmResource] = []

    def walk(el: ElementTree.Element, parent: str | None) -> None:
        for child in el:
            if child.tag in ("clone", "group", "bundle"):
                walk(child, child.get("id"))
            elif child.tag == "resource":
                resources.append(CrmResource(
                    id=child.get("id", ""), agent=child.get("resource_agent", ""), role=child.get("role", ""),
                    active=_bool(child.get("active")), failed=_bool(child.get("failed")),
                    managed=_bool(child.get("managed", "true")),
                    nodes=[n.get("name", "") for n in child.iterfind("node")], parent=parent))

    section = root.find("resources")
    if section is not None:
        walk(section, None)
    failures = [CrmFailure(op_key=el.get("op_key", ""), node=el.get("node", ""),
                           exit_status=el.get("exitstatus", ""), exit_reason=el.get("exitreason", ""),
                           when=el.get("last-rc-change", ""))
                for el in root.iterfind("failures/failure")]
    fences = [FenceEvent(action=el.get("action", ""), target=el.get("target", ""), status=el.get("status", ""),
                         delegate=el.get("delegate", ""), origin=el.get("origin", ""),
                         completed=el.get("completed", ""), exit_reason=el.get("exit-reason", ""))
              for el in root.iterfind("fence_history/fence_event")]
    operations = []
    for node_el in root.iterfind("node_history/node"):
        for rsc_el in node_el.iterfind("resource_history"):
            for op in rsc_el.iterfind("operation_history"):
                rc = op.get("rc", "")
                operations.append(CrmOperation(
                    node=node_el.get("name", ""), resource=rsc_el.get("id", ""), task=op.get("task", ""),
                    rc=int(rc) if rc.lstrip("-").isdigit() else -1, last_rc_change=op.get("last-rc-change", "")))
    options = summary.find("cluster_options") if summary is not None else None
    return CrmView(dc=dc, quorum=quorum, nodes=nodes, resources=resources, failures=failures,
                   fence_events=fences, operations=operations,
                   stonith_enabled=options is None or _bool(options.get("stonith-enabled", "true")))


# --- corosync ----------------------------------------------------------------------------

@dataclass
class CorosyncQuorum:
    quorate: bool
    expected_votes: int | None
    total_votes: int | None


def parse_quorumtool(text: str) -> CorosyncQuorum:
    """`corosync-quorumtool -s`: its Votequorum information block."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip().lower()] = value.strip()

    def number(key: str) -> int | None:
        match = re.match(r"\d+", fields.get(key, ""))
        return int(match.group()) if match else None

    return CorosyncQuorum(quorate=fields.get("quorate", "").lower().startswith("yes"),
                          expected_votes=number("expected votes"), total_votes=number("total votes"))


# --- MariaDB -----------------------------------------------------------------------------

def parse_name_values(text: str) -> dict[str, str]:
    """`mariadb -N -B` rows of Variable_name<TAB>Value, names lowercased."""
    out = {}
    for line in text.splitlines():
        name, sep, value = line.partition("\t")
        if sep:
            out[name.strip().lower()] = value.strip()
    return out


def parse_vertical(text: str) -> dict[str, str]:
    """`SHOW SLAVE STATUS\\G`: `Field: value` lines; empty when not a replica."""
    out = {}
    for line in text.splitlines():
        if line.startswith("*"):
            continue
        key, sep, value = line.partition(":")
        if sep and key.strip() and " " not in key.strip():
            out[key.strip()] = value.strip()
    return out


def parse_gtid(text: str) -> dict[int, int]:
    """A GTID position (domain-server-seq, comma separated) -> domain: sequence."""
    out = {}
    for part in text.replace("\n", ",").split(","):
        pieces = part.strip().split("-")
        if len(pieces) == 3 and all(p.isdigit() for p in pieces):
            domain, seq = int(pieces[0]), int(pieces[2])
            out[domain] = max(seq, out.get(domain, 0))
    return out


def gtid_gap(primary: dict[int, int], replica: dict[int, int]) -> int:
    """Transactions the primary has that the replica has not applied, over all domains."""
    return sum(max(0, seq - replica.get(domain, 0)) for domain, seq in primary.items())


# --- GlusterFS ---------------------------------------------------------------------------

@dataclass
class BrickHeal:
    brick: str  # host:/path
    status: str  # Connected, or why not
    entries: int | None  # None: unknown (brick not connected)
    split_brain: int | None = None


def parse_heal_info(text: str) -> list[BrickHeal]:
    """`gluster volume heal VOL info` (and `info summary`, which adds split-brain counts)."""
    bricks: list[BrickHeal] = []
    for line in text.splitlines():
        line = line.strip()
        key, sep, value = line.partition(":")
        if line.startswith("Brick "):
            bricks.append(BrickHeal(brick=line[len("Brick "):].strip(), status="", entries=None))
        elif not bricks or not sep:
            continue
        elif key == "Status":
            bricks[-1].status = value.strip()
        elif key in ("Number of entries", "Total Number of entries"):
            bricks[-1].entries = int(value) if value.strip().isdigit() else None
        elif key == "Number of entries in split-brain":
            bricks[-1].split_brain = int(value) if value.strip().isdigit() else None
    return bricks


# --- droplet metadata --------------------------------------------------------------------

@dataclass
class Metadata:
    droplet_id: int | None
    reserved_ip: str | None  # the reserved IP this droplet holds, if any


def parse_metadata(text: str) -> Metadata:
    doc = json.loads(text)
    ipv4 = ((doc.get("reserved_ip") or doc.get("floating_ip") or {}).get("ipv4")) or {}
    held = ipv4.get("ip_address") if ipv4.get("active") else None
    droplet_id = doc.get("droplet_id")
    return Metadata(droplet_id=int(droplet_id) if isinstance(droplet_id, int) else None, reserved_ip=held)


def parse_host_map(text: str) -> dict[str, int]:
    """pcmk_host_map (name:id;name:id) -> cluster node name: droplet id."""
    out = {}
    for pair in re.split(r"[;\s,]+", text.strip()):
        name, sep, value = pair.partition(":")
        if sep and value.isdigit():
            out[name] = int(value)
    return out
