"""The seeding wiring under mocks: every app node gets a db-seed step that finds the
primary among all app members at run time, and a donor bound to its private address."""

from __future__ import annotations

import subprocess

import pytest

from infra.database import SEED_PORT, donor_unit
from infra.paths import CLOUDINIT_DIR
from infra.ports import CLUSTER_TCP_PORT_RANGES
from tests.helpers.stacks import bundle_files, plain_config
from tests.unit.test_step_args import passed_args
from tooling.mocks import Run, run_program
from tooling.render import commands


@pytest.fixture(scope="module")
def three_apps() -> Run:
    return run_program("staging", plain_config("staging") | {"appNodeCount": 3})


def _plan(run: Run) -> dict[str, dict]:
    return {c["name"]: c for c in commands(run, reveal=True)}


def _apps(run: Run) -> dict[str, str]:
    """app node name -> private address."""
    return {n: a["privateIpv4"] for n, a in run.outputs["nodes"].items() if n.startswith("app")}


@pytest.mark.parametrize("which", ["staging", "three_apps"])
def test_every_app_node_is_seeded_from_the_members_not_a_fixed_primary(which: str, staging: Run,
                                                                      three_apps: Run) -> None:
    run = {"staging": staging, "three_apps": three_apps}[which]
    plan, apps = _plan(run), _apps(run)
    members = " ".join(f"do-ha-stack-staging-{n}={ip}" for n, ip in sorted(apps.items()))
    seeds = {name: c for name, c in plan.items() if name.endswith("-db-seed")}
    assert set(seeds) == {f"{n}-db-seed" for n in apps}  # the bootstrap node's too
    for name, cmd in seeds.items():
        step, args = passed_args(cmd["create"])
        assert step == "db-seed"
        assert args == {"APP_MEMBERS": members, "BOOTSTRAP": "do-ha-stack-staging-app1",
                        "SEED_PORT": str(SEED_PORT), "WAIT_S": args["WAIT_S"]}
        # every node's MariaDB is configured (and its donor running) before any seed
        assert {f"{n}-db-node" for n in apps} <= set(cmd["dependsOn"]), name
        assert "secret REPL_PASSWORD " in cmd["stdin"] and cmd["logging"] == "none"
    for n in apps:
        assert set(seeds) <= set(plan[f"{n}-db-handover"]["dependsOn"])


def test_each_donor_listens_on_its_own_private_address_with_mutual_tls(staging: Run) -> None:
    plan, apps = _plan(staging), _apps(staging)
    assert CLUSTER_TCP_PORT_RANGES["mariadb-seed"] == (SEED_PORT, SEED_PORT)
    for node, ip in apps.items():
        cmd = plan[f"{node}-db-node"]
        _, args = passed_args(cmd["create"])
        assert args["SEED_PORT"] == str(SEED_PORT) and args["VPC_RANGE"] == "10.120.0.0/20"
        files = {path: (mode, content) for path, (mode, _, content) in bundle_files(cmd["stdin"]).items()}
        mode, unit = files["/etc/systemd/system/do-ha-db-donor.service"]
        assert unit == donor_unit(ip)
        assert f"OPENSSL-LISTEN:{SEED_PORT},bind={ip}," in unit
        for option in ("verify=1", "cafile=/etc/mysql/tls/ca.pem", "openssl-min-proto-version=TLS1.3",
                       "max-children=1"):
            assert option in unit
        assert "User=mysql" in unit
        assert files["/usr/local/sbin/do-ha-db-donor"] == ("0755", (CLOUDINIT_DIR / "app/db-donor").read_text())


def _gtid_within(position: str, history: str) -> bool:
    """db-seed.sh's gtid_within, run by bash."""
    text = (CLOUDINIT_DIR / "steps/db-seed.sh").read_text()
    start = text.index("gtid_within() {")
    func = text[start:text.index("\n}\n", start) + 3]
    result = subprocess.run(["bash", "-c", f'set -euo pipefail\n{func}\ngtid_within "$1" "$2"', "t",
                             position, history], capture_output=True, text=True, timeout=10)
    assert result.stderr == ""
    return result.returncode == 0


@pytest.mark.parametrize("position, history, within", [
    ("", "0-1-100", True),                          # a fresh node knows nothing
    ("0-1-90", "0-1-100", True),                    # a lagging replica
    ("0-1-100", "0-1-100", True),
    ("0-2-40", "0-1-100,0-2-50", True),             # after a failover to app2 and back
    ("0-1-101", "0-1-100", False),                  # a transaction the primary never had
    ("0-3-5", "0-1-100,0-2-50", False),             # written locally by server 3
    ("0-1-10,1-1-3", "0-1-100", False),             # a domain the primary never had
    ("0-1-10,1-1-3", "1-1-3,0-1-100,0-2-7", True),
])
def test_gtid_prefix_check(position: str, history: str, within: bool) -> None:
    assert _gtid_within(position, history) is within
