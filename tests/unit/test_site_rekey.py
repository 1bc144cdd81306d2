"""`make rekey-site`: where it runs, what it refuses (fake operations; the lab
re-keys for real against pebble, tests/lab/test_lab_https.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from infra.config import parse
from infra.paths import REPO_ROOT
from infra.web import SITE_CERT
from tests.helpers.stacks import plain_config
from tests.unit.test_replace_node import Recorder, report
from tooling.health import Report
from tooling import render
from tooling.node_ops import OperationError, stack_config
from tooling.site_rekey import rekey

ACME = parse("prod", plain_config("prod") | {"domain": "www.example.com"})


def _held_by(*nodes: str) -> Report:
    r = report()
    r.holder = {"pacemaker": list(nodes)}
    return r


def test_the_node_holding_the_reserved_ip_rekeys() -> None:
    rec = Recorder([_held_by("app2")])
    after = rekey(ACME, rec.ops())
    assert ("ssh", "app2", "sudo", "-n", SITE_CERT, "rekey") in rec.calls
    assert [c for c in rec.calls if c[0] == "ssh"] == [("ssh", "app2", "sudo", "-n", SITE_CERT, "rekey")]
    assert after.healthy


@pytest.mark.parametrize("holders", [[], ["app1", "app2"]])
def test_no_single_holder_is_refused_with_nothing_run(holders: list[str]) -> None:
    rec = Recorder([_held_by(*holders)])
    with pytest.raises(OperationError, match="the node holding it re-keys"):
        rekey(ACME, rec.ops())
    assert not [c for c in rec.calls if c[0] == "ssh"]


def test_a_stack_without_acme_is_refused() -> None:
    rec = Recorder([_held_by("app1")])
    with pytest.raises(OperationError, match="has no ACME certificate.*tlsCertificate"):
        rekey(parse("prod", plain_config("prod")), rec.ops())
    assert rec.calls == []


def test_a_failed_rekey_says_what_the_node_said() -> None:
    rec = Recorder([_held_by("app1")])
    ops = rec.ops()

    def failing(node: str, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, 1, "", "certbot: rate limited\n")

    ops.run_on = failing
    with pytest.raises(OperationError, match="rekey on app1 failed.*rate limited"):
        rekey(ACME, ops)



def test_a_stack_with_a_supplied_certificate_is_not_taken_for_acme(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Its certificate is encrypted in Pulumi.<stack>.yaml: the tooling sees the key, not the value.
    config = yaml.safe_load((REPO_ROOT / "Pulumi.staging.yaml").read_text())
    config["config"] |= {"do-ha-stack:domain": "www.example.com",
                         "do-ha-stack:tlsCertificate": {"secure": "v1:AAAA"},
                         "do-ha-stack:tlsPrivateKey": {"secure": "v1:BBBB"}}
    (tmp_path / "Pulumi.staging.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setattr(render, "REPO_ROOT", tmp_path)
    cfg = stack_config("staging")
    assert cfg.tls == "supplied"
    rec = Recorder([_held_by("app1")])
    with pytest.raises(OperationError, match="has no ACME certificate.*certificate: supplied"):
        rekey(cfg, rec.ops())
    assert rec.calls == []
