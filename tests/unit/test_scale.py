"""`make scale`: refusals, what it unprotects, and the order of what it does."""

from __future__ import annotations

import pytest

from tests.unit.test_replace_node import Recorder, report
from tooling import render, scale
from tooling.node_ops import OperationError


@pytest.mark.parametrize("count, message", [
    (1, "APP_NODES=1: .*appNodeCount"),
    (10, "APP_NODES=10: .*appNodeCount"),
    (2, "prod already has 2 app nodes"),
])
def test_bad_counts_are_refused_before_anything_runs(count: int, message: str) -> None:
    rec = Recorder([report()])
    with pytest.raises(OperationError, match=message):
        scale.scale("prod", count, rec.ops())
    assert rec.calls == []


def test_scale_in_refuses_to_remove_the_control_node(monkeypatch: pytest.MonkeyPatch) -> None:
    real = render.stack_config
    monkeypatch.setattr(scale.render, "stack_config", lambda stack, *a: real(stack, *a) | {
        "do-ha-stack:appNodeCount": 3, "do-ha-stack:controlNode": "app3"})
    rec = Recorder([report()])
    with pytest.raises(OperationError, match="APP_NODES=2: do-ha-stack:controlNode: app3 is not an app node"):
        scale.scale("prod", 2, rec.ops())
    assert rec.calls == []


def test_scale_in_unprotects_exactly_the_leaving_nodes_protected_resources(three_app_nodes: None) -> None:
    names = [u.rsplit("::", 1)[1] for u in scale.leaving_protected("prod", 2)]
    assert sorted(names) == ["app3", "app3-db-key", "app3-storage-key"]


def test_scale_in_drains_unprotects_then_ups(three_app_nodes: None) -> None:
    rec = Recorder([report(), report()])
    after = scale.scale("prod", 2, rec.ops(), yes=True)
    assert after.healthy
    kinds = [c[:4] for c in rec.calls]
    assert kinds[1] == ("ssh", "app1", "sudo", "-n")
    assert "do-ha-stack-prod-app3" in rec.calls[1] and "standby" in rec.calls[1]
    unprotected = [c[3].rsplit("::", 1)[1] for c in rec.calls if c[:3] == ("pulumi", "state", "unprotect")]
    assert sorted(unprotected) == ["app3", "app3-db-key", "app3-storage-key"]
    assert rec.calls[-3:-1] == [("pulumi", "config", "set", "do-ha-stack:appNodeCount", "2", "--stack", "prod"),
                                ("pulumi", "up", "--stack", "prod", "--yes")]


def test_scale_out_touches_no_protection() -> None:
    rec = Recorder([report(), report()])
    scale.scale("prod", 3, rec.ops())
    assert [c for c in rec.calls if c[0] == "pulumi"] == [
        ("pulumi", "config", "set", "do-ha-stack:appNodeCount", "3", "--stack", "prod"),
        ("pulumi", "up", "--stack", "prod")]


def test_a_degraded_stack_is_not_scaled() -> None:
    rec = Recorder([report("storage: brick on app2 has 4 entries to heal")])
    with pytest.raises(OperationError, match="refusing to scale prod: it is degraded"):
        scale.scale("prod", 3, rec.ops())
    assert rec.calls == [("health",)]
