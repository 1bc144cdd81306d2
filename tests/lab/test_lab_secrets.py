"""Secrets stay hidden when a step fails, on real nodes: every step that receives a
secret is run with a fault injected right after it read its bundle, one that
prints every secret it holds and fails (the worst a failing client could do). The
output pulumi-command would put into its error must hold none of the stack's
secrets. Nothing on the nodes changes: the fault comes before the step's work."""

from __future__ import annotations

import pytest

from lab import replay
from lab.stack import lab_nodes, lab_plan, lab_program
from lab.topology import LabNode, run_dir

pytestmark = pytest.mark.lab

# Double quotes only: the step text sits in single quotes (`sudo -n bash -c '...'`).
LEAK = 'for v in ${!SECRET_@}; do printf "%s\\n" "${!v}"; printf "%s\\n" "${!v}" >&2; done; die "injected fault"\n'


def test_a_failing_step_never_prints_a_secret(nodes: list[LabNode]) -> None:
    run = lab_program(lab_nodes())
    secrets = [v for values in run.generated_secrets.values() for v in values.values()]
    secrets.append((run_dir() / "api_token").read_text().strip())
    hidden = [line for s in secrets for line in s.splitlines() if len(line) >= 8]
    plan = lab_plan(lab_nodes())
    carrying = [c for c in plan if any(
        line.startswith(("secret ", "secretfile ")) for line in (c.get("stdin") or "").splitlines())]
    checked = []
    for cmd in carrying:
        assert cmd["create"].count("\nread_bundle\n") == 1, cmd["name"]
        leaking = cmd | {"create": cmd["create"].replace("\nread_bundle\n", "\nread_bundle\n" + LEAK)}
        result = replay.run_one(leaking, plan)
        output = result.stdout + result.stderr
        assert result.returncode == 1 and "injected fault" in output, (cmd["name"], output[-500:])
        assert "[secret]" in output, cmd["name"]
        leaked = [line[:6] + "..." for line in hidden if line in output]
        assert leaked == [], (cmd["name"], leaked)
        checked.append(cmd["name"])
    # the cluster, the database and the failover all hand secrets to their steps
    assert {"cluster-setup", "cluster-resources"} <= set(checked), checked
    assert any(name.endswith("-db-node") for name in checked), checked
    # secret files too: the backup key, the canary token
    assert {"app1-backup-node", "app1-web-node"} <= set(checked), checked
    assert replay.replay_all(lab_plan(lab_nodes())) == 0  # the faults changed nothing
