"""The account's resources as JSON, shaped as DigitalOcean's OpenAPI schemas say
(tests/unit/test_do_api.py validates every answer against them), plus the
droplet metadata document. API shapes read several resources: callers hold
`account.lock` so one answer is consistent."""

from __future__ import annotations

import json
import re
import uuid

from lab.fake_do.account import JSON, Action, Droplet, FakeAccount, ReservedIP

REGION_NAMES = {"fra1": "Frankfurt 1", "ams3": "Amsterdam 3", "nyc1": "New York 1", "nyc3": "New York 3",
                "lon1": "London 1", "sfo3": "San Francisco 3", "sgp1": "Singapore 1", "tor1": "Toronto 1",
                "blr1": "Bangalore 1", "syd1": "Sydney 1"}
# slug -> (memory MiB, vcpus, disk GB, transfer TB, price_monthly)
SIZES = {"s-1vcpu-512mb-10gb": (512, 1, 10, 0.5, 4.0), "s-1vcpu-1gb": (1024, 1, 25, 1.0, 6.0),
         "s-1vcpu-2gb": (2048, 1, 50, 2.0, 12.0), "s-2vcpu-2gb": (2048, 2, 60, 3.0, 18.0),
         "s-2vcpu-4gb": (4096, 2, 80, 4.0, 24.0), "s-4vcpu-8gb": (8192, 4, 160, 5.0, 48.0)}
PROJECT_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "https://do-ha-stack.invalid/lab-project"))
CREATED_AT = "2025-01-01T00:00:00Z"


# --- API resources ----------------------------------------------------------------

def region_json(slug: str) -> JSON:
    return {"name": REGION_NAMES.get(slug, f"Lab {slug}"), "slug": slug,
            "features": ["backups", "ipv6", "metadata", "install_agent", "storage", "image_transfer"],
            "available": True, "sizes": list(SIZES)}


def size_json(slug: str, region: str) -> JSON:
    m = re.fullmatch(r"s-(\d+)vcpu-(\d+)gb", slug)
    memory, vcpus, disk, transfer, monthly = SIZES.get(slug) or (
        (int(m.group(2)) * 1024, int(m.group(1)), 25 * int(m.group(2)), 1.0, 6.0 * int(m.group(2)))
        if m else (1024, 1, 25, 1.0, 6.0))
    return {"slug": slug, "memory": memory, "vcpus": vcpus, "disk": disk, "transfer": transfer,
            "price_monthly": monthly, "price_hourly": round(monthly / 672, 5), "regions": [region],
            "available": True, "description": "Basic",
            "disk_info": [{"type": "local", "size": {"amount": disk, "unit": "gib"}}]}


def droplet_json(d: Droplet) -> JSON:
    size = size_json(d.size_slug, d.region)
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
        "region": region_json(d.region), "tags": list(d.tags), "vpc_uuid": d.vpc_uuid,
    }


def ip_json(account: FakeAccount, r: ReservedIP) -> JSON:
    holder = account.droplets[r.droplet_id] if r.droplet_id is not None else None
    return {"ip": r.ip, "region": region_json(r.region),
            "droplet": droplet_json(holder) if holder else None,
            "locked": account.ip_locked(r.ip), "project_id": PROJECT_ID}


def action_json(a: Action, with_project: bool = False) -> JSON:
    out: JSON = {"id": a.id, "status": a.status, "type": a.type, "started_at": a.started_at,
                 "completed_at": a.completed_at, "resource_id": a.resource_id,
                 "resource_type": a.resource_type, "region": region_json(a.region),
                 "region_slug": a.region}
    if with_project:  # only the reserved-IP action responses document project_id
        out["project_id"] = PROJECT_ID
    return out


# --- droplet metadata ------------------------------------------------------------------

def metadata_json(account: FakeAccount, d: Droplet) -> JSON:
    """/metadata/v1.json, shaped like DigitalOcean's."""
    with account.lock:
        held = next((r.ip for r in account.ips.values() if r.droplet_id == d.id), None)
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


def metadata_tree(account: FakeAccount, d: Droplet) -> JSON:
    """The plain-text tree under /metadata/v1/: the JSON document renamed the way
    the text paths are (id, address instead of droplet_id, ip_address)."""
    doc = metadata_json(account, d)

    def iface(i: JSON) -> JSON:
        out: JSON = {k: {"address": v["ip_address"], "netmask": v["netmask"], "gateway": v["gateway"]}
                     for k, v in i.items() if k in ("ipv4", "anchor_ipv4")}
        return out | {"mac": i["mac"], "type": i["type"]}

    return {"id": str(d.id), "hostname": d.name, "region": d.region, "tags": doc["tags"],
            "public-keys": "", "features": {"dhcp_enabled": "false"},
            "interfaces": {k: [iface(i) for i in v] for k, v in doc["interfaces"].items()},
            "floating_ip": doc["floating_ip"], "reserved_ip": doc["reserved_ip"]}
