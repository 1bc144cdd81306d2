"""HTTPS with a supplied certificate: what the config accepts and refuses (before any
resource), and what reaches the app nodes (the key root-only, through the step's
secret stdin, never user-data). The lab serves it for real and checks it with
testssl.sh (tests/lab/test_lab_https.py)."""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from infra.config import ConfigError, parse
from infra.web import TLS_DIR, site_cert_env
from tests.helpers.certs import CA, cert_pem, key_pem
from tests.helpers.stacks import bundle_files, plain_config
from tooling import resource_types as types
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
    assert (cfg.domain, cfg.tls, cfg.https) == ("", "none", False)


def test_a_domain_alone_gets_its_certificate_by_acme(ca: CA) -> None:
    cfg = _parse(domain=DOMAIN)
    assert (cfg.tls, cfg.https) == ("acme", True)
    assert cfg.acme_email == plain_config("staging")["alertEmail"]  # the account's address by default
    assert cfg.acme_directory_url == "https://acme-v02.api.letsencrypt.org/directory"
    own = _parse(domain=DOMAIN, acmeEmail="certs@example.com", acmeServerCa=cert_pem(ca.cert),
                 acmeDirectoryUrl="https://ca.internal:14000/dir", dnsZone="example.com")
    assert (own.acme_email, own.acme_server_ca, own.dns_zone) == ("certs@example.com", cert_pem(ca.cert),
                                                                  "example.com")


def _other_key() -> str:
    return key_pem(ec.generate_private_key(ec.SECP256R1()))


def _reversed(ca: CA) -> tuple[str, str]:
    chain, key = ca.site([DOMAIN])
    return cert_pem(ca.cert) + chain.split(cert_pem(ca.cert))[0], key


def _with_stranger(ca: CA) -> tuple[str, str]:
    cert, key = ca.issue([DOMAIN])
    return cert_pem(cert) + cert_pem(CA.new("another CA").cert), key_pem(key)


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
    ("ACME over plain HTTP", lambda ca: {"domain": DOMAIN, "acmeDirectoryUrl": "http://ca.example/dir"},
     "acmeDirectoryUrl", "is not an https URL"),
    ("ACME account address", lambda ca: {"domain": DOMAIN, "acmeEmail": "ops"}, "acmeEmail", "not an e-mail"),
    ("ACME server CA not PEM", lambda ca: {"domain": DOMAIN, "acmeServerCa": "ca.pem"}, "acmeServerCa",
     "is not PEM certificates"),
    ("ACME server CA not a CA", lambda ca: {"domain": DOMAIN, "acmeServerCa": ca.site([DOMAIN])[0]},
     "acmeServerCa", "not a CA"),
    ("zone without the domain", lambda ca: {"domain": DOMAIN, "dnsZone": "example.org"}, "dnsZone",
     "does not hold the domain www.example.com"),
    ("zone that only ends alike", lambda ca: {"domain": DOMAIN, "dnsZone": "ample.com"}, "dnsZone",
     "does not hold"),
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
    ("key pasted into the chain", lambda ca: _supplied(ca.site([DOMAIN])[0] + ca.site([DOMAIN])[1],
                                                       ca.site([DOMAIN])[1]), "tlsCertificate",
     "holds a PRIVATE KEY block besides certificates"),
    ("an unrelated intermediate", lambda ca: _supplied(*_with_stranger(ca)), "tlsCertificate",
     "which did not issue certificate 1"),
    ("a CA as the site's certificate", lambda ca: _supplied(cert_pem(ca.cert), key_pem(ca.key)), "tlsCertificate",
     "starts with a CA certificate"),
    ("a client certificate", lambda ca: _supplied(*ca.site([DOMAIN], usage=x509.ExtendedKeyUsageOID.CLIENT_AUTH)),
     "tlsCertificate", "not for TLS servers"),
    ("key in the server CA", lambda ca: {"domain": DOMAIN, "acmeServerCa": cert_pem(ca.cert) + key_pem(ca.key)},
     "acmeServerCa", "holds a PRIVATE KEY block"),
    ("bad domain", lambda ca: {"domain": "https://www.example.com"}, "domain", "is not a domain name"),
    ("directory URL with shell", lambda ca: {"domain": DOMAIN, "acmeDirectoryUrl": "https://ca.example/d;reboot"},
     "acmeDirectoryUrl", "is not an https URL"),
    ("site without 443", lambda ca: {"domain": DOMAIN, "publicTcpPorts": [80]}, "publicTcpPorts",
     "443"),
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
    """path -> (mode, content) of what the step's bundle writes."""
    files = bundle_files({c["name"]: c for c in commands(run, reveal=True)}[name]["stdin"])
    return {path: (mode, content) for path, (mode, _, content) in files.items()}


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
        assert "TLS=supplied" in shown[f"{node}-web-node"]["create"]
    everything_shown = repr(list(commands(run))) + repr([d.inputs for d in run.of_type(
        types.DROPLET)])
    for line in key.splitlines()[1:-1]:
        assert line not in everything_shown  # not in user-data, command text or any diff


def test_an_http_only_stack_gets_no_tls_files(staging: Run) -> None:
    # (web-node deletes any left from an earlier HTTPS site: tests/lab/test_lab_https.py)
    for node in ("app1", "app2"):
        files = _files(staging, f"{node}-web-node")
        assert not [p for p in files if p.startswith(TLS_DIR) or p.endswith("server-name.conf")]
        assert "listen 443" not in files["/etc/nginx/sites-available/do-ha-stack"][1]
        assert "TLS=none" in {c["name"]: c for c in commands(staging)}[f"{node}-web-node"]["create"]


@pytest.fixture(scope="module")
def acme_run(ca: CA) -> Run:
    raw = {f"do-ha-stack:{k}": v for k, v in plain_config("staging").items()}
    return run_program("staging", raw | {"do-ha-stack:domain": DOMAIN, "do-ha-stack:dnsZone": "example.com",
                                         "do-ha-stack:acmeServerCa": cert_pem(ca.cert)})


def test_acme_obtains_once_after_the_reserved_ip_then_every_app_node_installs(acme_run: Run) -> None:
    shown = {c["name"]: c for c in commands(acme_run)}
    obtain = acme_run.by_name("site-certificate")
    resources = acme_run.by_name("cluster-resources")
    assert resources.urn in obtain.dependencies  # the CA's check needs the reserved IP on the web tier
    assert "ACTION=obtain" in shown["site-certificate"]["create"]
    assert obtain.raw_inputs["connection"]["host"] == acme_run.by_name("app1-web-node").raw_inputs["connection"]["host"]
    for node in ("app1", "app2"):
        install = acme_run.by_name(f"{node}-site-tls")
        assert obtain.urn in install.dependencies and "ACTION=install" in shown[f"{node}-site-tls"]["create"]
        files = _files(acme_run, f"{node}-web-node")
        env = files["/etc/do-ha-stack/site-cert.env"][1]
        assert f"DOMAIN={DOMAIN}\n" in env
        assert f"ACME_EMAIL={plain_config('staging')['alertEmail']}\n" in env  # alertEmail by default
        assert "ACME_SERVER_CA=/etc/do-ha-stack/acme-server-ca.pem" in env
        assert files["/usr/local/lib/do-ha-stack/site-cert"][0] == "0755"
        assert "OnUnitActiveSec=60" in files["/etc/systemd/system/do-ha-site-cert-sync.timer"][1]
        assert not [p for p in files if p.startswith(TLS_DIR)]  # nothing secret in the program's hands
        assert "TLS=acme" in shown[f"{node}-web-node"]["create"]
    assert not [r for r in acme_run.registrations if r.name.endswith("-site-tls") and "witness" in r.name]


def test_no_acme_steps_without_acme(staging: Run, https_run: tuple[Run, str, str]) -> None:
    for run in (staging, https_run[0]):
        assert not [r for r in run.registrations if r.name == "site-certificate" or r.name.endswith("-site-tls")]


def test_an_https_site_is_watched_from_outside_and_its_name_points_at_the_reserved_ip(acme_run: Run,
                                                                                      staging: Run) -> None:
    check = acme_run.by_name("site-uptime")
    assert check.inputs["type"] == "https" and check.inputs["target"] == f"https://{DOMAIN}/canary/health"
    alerts = {r.inputs["type"]: r.inputs for r in acme_run.of_type(types.UPTIME_ALERT)}
    assert set(alerts) == {"down", "latency", "ssl_expiry"}
    assert alerts["ssl_expiry"]["comparison"] == "less_than" and alerts["ssl_expiry"]["threshold"] == 21
    assert all(a["notifications"][0]["emails"] == [plain_config("staging")["alertEmail"]] for a in alerts.values())
    record = acme_run.by_name("site-record")
    assert (record.inputs["domain"], record.inputs["name"], record.inputs["type"]) == ("example.com", "www", "A")
    assert record.raw_inputs["value"] == acme_run.outputs["reservedIp"]
    assert acme_run.outputs["siteUrl"] == f"https://{DOMAIN}/"
    # Without a domain only the backups are watched from outside (tests/unit/test_backups.py).
    assert [r.name for r in staging.of_type(types.UPTIME_CHECK)] == ["backup-freshness"]
    assert not staging.of_type(types.DNS_RECORD)
    assert staging.outputs["siteUrl"].startswith("http://")


def test_a_prod_stack_with_https_passes_the_policy_pack(ca: CA) -> None:
    # Every new resource (DNS record, uptime check and alerts, the ACME steps) is
    # protected on prod like the rest, or replaced by design.
    from tests.unit.test_policy import resource_violations

    raw = {f"do-ha-stack:{k}": v for k, v in plain_config("prod").items()}
    run = run_program("prod", raw | {"do-ha-stack:domain": DOMAIN, "do-ha-stack:dnsZone": "example.com"})
    assert run.of_type(types.UPTIME_CHECK) and run.of_type(types.DNS_RECORD)
    assert resource_violations(run) == []
    assert all(r.protect for r in run.of_type(types.UPTIME_ALERT) + run.of_type(types.DNS_RECORD))


@pytest.mark.parametrize("email", ["o'brien@example.com", "r&d@example.com", "ops$(reboot)@example.com"])
def test_the_acme_settings_file_reads_back_exactly_in_a_shell(email: str, tmp_path: Path) -> None:
    # site-cert sources it as root: a valid address with shell characters is data.
    cfg = parse("staging", plain_config("staging") | {"domain": DOMAIN, "acmeEmail": email})
    (tmp_path / "env").write_text(site_cert_env(cfg))
    out = subprocess.run(["bash", "-c", f'set -eu; . {tmp_path}/env; printf "%s|%s|%s" "$DOMAIN" "$ACME_EMAIL" '
                                        '"$ACME_DIRECTORY_URL"'], capture_output=True, text=True, check=True)
    assert out.stdout == f"{DOMAIN}|{email}|{cfg.acme_directory_url}"
