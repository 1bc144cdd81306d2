"""HTTPS with a supplied certificate: what the config accepts and refuses (before any
resource), and what reaches the app nodes (the key root-only, through the step's
secret stdin, never user-data). The lab serves it for real and checks it with
testssl.sh (tests/lab/test_lab_https.py)."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from infra.config import ConfigError, parse
from infra.web import TLS_DIR
from tests.helpers.certs import CA, cert_pem, key_pem
from tests.helpers.stacks import plain_config
from tooling.mocks import Run, run_program
from tooling.render import commands

DOMAIN = "www.example.com"


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA.new()


def _parse(**settings: Any) -> Any:
    return parse("staging", plain_config("staging") | settings)


def _supplied(chain: str, key: str, domain: str = DOMAIN) -> dict[str, str]:
    return {"domain": domain, "tlsCertificate": chain, "tlsPrivateKey": key}


def test_a_matching_certificate_turns_https_on(ca: CA) -> None:
    chain, key = ca.site([DOMAIN, "example.com"])
    assert _parse(**_supplied(chain, key)).https
    wildcard_chain, wildcard_key = ca.site(["*.example.com"])
    assert _parse(**_supplied(wildcard_chain, wildcard_key)).https
    rsa_chain, rsa_key = ca.site([DOMAIN], key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    assert _parse(**_supplied(rsa_chain, rsa_key)).https


def test_without_domain_and_certificate_the_site_stays_http() -> None:
    cfg = _parse()
    assert (cfg.domain, cfg.https) == ("", False)


def _other_key() -> str:
    return key_pem(ec.generate_private_key(ec.SECP256R1()))


def _reversed(ca: CA) -> tuple[str, str]:
    chain, key = ca.site([DOMAIN])
    return cert_pem(ca.cert) + chain.split(cert_pem(ca.cert))[0], key


def _expired(ca: CA) -> tuple[str, str]:
    return ca.site([DOMAIN], not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=100), days=90)


def _future(ca: CA) -> tuple[str, str]:
    return ca.site([DOMAIN], not_before=dt.datetime.now(dt.UTC) + dt.timedelta(days=2))


def _encrypted(ca: CA) -> tuple[str, str]:
    cert, key = ca.issue([DOMAIN])
    return cert_pem(cert), key_pem(key, passphrase=b"correct horse")


def _small_rsa(ca: CA) -> tuple[str, str]:
    return ca.site([DOMAIN], key=rsa.generate_private_key(public_exponent=65537, key_size=1024))


BAD: list[tuple[str, Callable[[CA], dict[str, str]], str, str]] = [
    ("domain without certificate", lambda ca: {"domain": DOMAIN}, "domain", "no certificate is supplied"),
    ("certificate without domain", lambda ca: _supplied(*ca.site([DOMAIN]), domain=""), "domain", "is empty"),
    ("certificate without key", lambda ca: {"domain": DOMAIN, "tlsCertificate": ca.site([DOMAIN])[0]},
     "tlsPrivateKey", "is not set"),
    ("key without certificate", lambda ca: {"domain": DOMAIN, "tlsPrivateKey": ca.site([DOMAIN])[1]},
     "tlsCertificate", "is not set"),
    ("another key", lambda ca: _supplied(ca.site([DOMAIN])[0], _other_key()), "tlsCertificate",
     "does not belong to tlsPrivateKey"),
    ("chain in the wrong order", lambda ca: _supplied(*_reversed(ca)), "tlsCertificate", "after another one"),
    ("another name", lambda ca: _supplied(*ca.site(["shop.example.org"])), "tlsCertificate",
     "does not cover the domain www.example.com (it names: shop.example.org)"),
    ("wildcard two labels deep", lambda ca: _supplied(*ca.site(["*.com"])), "tlsCertificate", "does not cover"),
    ("no subjectAltName", lambda ca: _supplied(*ca.site([])), "tlsCertificate", "no DNS name"),
    ("expired", lambda ca: _supplied(*_expired(ca)), "tlsCertificate", "expired on"),
    ("not yet valid", lambda ca: _supplied(*_future(ca)), "tlsCertificate", "is not valid before"),
    ("encrypted key", lambda ca: _supplied(*_encrypted(ca)), "tlsPrivateKey", "passphrase"),
    ("small RSA key", lambda ca: _supplied(*_small_rsa(ca)), "tlsPrivateKey", "key type or size"),
    ("not PEM", lambda ca: _supplied("fullchain.pem", ca.site([DOMAIN])[1]), "tlsCertificate", "is not PEM"),
    ("broken PEM", lambda ca: _supplied("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                                        ca.site([DOMAIN])[1]), "tlsCertificate", "not a PEM certificate chain"),
    ("bad domain", lambda ca: {"domain": "https://www.example.com"}, "domain", "is not a domain name"),
    ("upper-case domain", lambda ca: {"domain": "WWW.example.com"}, "domain", "is not a domain name"),
    ("single label", lambda ca: {"domain": "localhost"}, "domain", "is not a domain name"),
    ("hyphen at a label's end", lambda ca: {"domain": "www-.example.com"}, "domain", "is not a domain name"),
]


@pytest.mark.parametrize(("case", "settings", "key", "fragment"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_certificate_or_domain_is_named_before_any_resource(
        ca: CA, case: str, settings: Callable[[CA], dict[str, str]], key: str, fragment: str) -> None:
    given = settings(ca)
    with pytest.raises(ConfigError) as err:
        _parse(**given)
    assert err.value.key == key and fragment in str(err.value), (case, str(err.value))
    assert "allowed:" in str(err.value)
    for secret in (given.get("tlsCertificate"), given.get("tlsPrivateKey")):
        for line in (secret or "").splitlines():
            if len(line) > 20:
                assert line not in str(err.value)  # the error never quotes the PEM


@pytest.fixture(scope="module")
def https_run(ca: CA) -> tuple[Run, str, str]:
    chain, key = ca.site([DOMAIN])
    raw = {f"do-ha-stack:{k}": v for k, v in plain_config("staging").items()}
    return run_program("staging", raw | {f"do-ha-stack:{k}": v for k, v in _supplied(chain, key).items()}), chain, key


def _files(run: Run, name: str) -> dict[str, tuple[str, str]]:
    real = {c["name"]: c for c in commands(run, reveal=True)}[name]
    files = {}
    for line in real["stdin"].splitlines():
        kind, *rest = line.split()
        if kind == "file":
            mode, _, path, content = rest
            files[path] = (mode, base64.b64decode(content).decode())
    return files


def test_every_app_node_gets_the_certificate_and_the_key_root_only(https_run: tuple[Run, str, str]) -> None:
    run, chain, key = https_run
    shown = {c["name"]: c for c in commands(run)}
    for node in ("app1", "app2"):
        files = _files(run, f"{node}-web-node")
        assert files[f"{TLS_DIR}/site.key"] == ("0600", key)
        assert files[f"{TLS_DIR}/site.pem"][1] == chain
        assert files["/etc/nginx/do-ha-stack/server-name.conf"][1] == f"server_name {DOMAIN};\n"
        site = files["/etc/nginx/sites-available/do-ha-stack"][1]
        assert "listen 443 ssl default_server;" in site and "return 301 https://$server_name$request_uri;" in site
        assert shown[f"{node}-web-node"]["stdin"] == "[secret]" and shown[f"{node}-web-node"]["logging"] == "none"
        assert "HTTPS=on" in shown[f"{node}-web-node"]["create"]
    everything_shown = repr(list(commands(run))) + repr([d.inputs for d in run.of_type(
        "digitalocean:index/droplet:Droplet")])
    for line in key.splitlines()[1:-1]:
        assert line not in everything_shown  # not in user-data, command text or any diff


def test_an_http_only_stack_gets_no_tls_files_and_removes_old_ones(staging: Run) -> None:
    for node in ("app1", "app2"):
        files = _files(staging, f"{node}-web-node")
        assert not [p for p in files if p.startswith(TLS_DIR) or p.endswith("server-name.conf")]
        assert "listen 443" not in files["/etc/nginx/sites-available/do-ha-stack"][1]
        assert "HTTPS=off" in {c["name"]: c for c in commands(staging)}[f"{node}-web-node"]["create"]
