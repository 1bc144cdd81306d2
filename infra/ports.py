"""Ports the stack uses, shared by the cloud firewalls and the nodes' ufw rules.

Cluster ports are only ever opened between the stack's own nodes (cloud firewall:
by stack tag; ufw: from the VPC range), never to the public side.
"""

SSH_PORT = 22

# name -> (first, last) inclusive
CLUSTER_TCP_PORT_RANGES: dict[str, tuple[int, int]] = {
    "pcsd": (2224, 2224),
    "mariadb": (3306, 3306),
    # do-ha-db-donor: a physical copy for a replica being seeded (mutual TLS)
    "mariadb-seed": (4444, 4444),
    # do-ha-sync-marks: the sync guard's out-of-sync marks (signed requests)
    "sync-marks": (7410, 7410),
    "glusterd": (24007, 24008),
    "gluster-bricks": (49152, 49251),
}
CLUSTER_UDP_PORT_RANGES: dict[str, tuple[int, int]] = {
    "corosync-knet": (5404, 5406),
}


def port_range(first: int, last: int, sep: str = "-") -> str:
    """Render a range the way DigitalOcean ("a-b") or ufw ("a:b") wants it."""
    return str(first) if first == last else f"{first}{sep}{last}"
